"""Gateway benchmark: latency and throughput over real HTTP vs calling the model in-process.

Run: ``python -m evals.bench.gateway``. Starts its own redis-server and a uvicorn gateway in a
separate process on loopback, with the Electricity model (HistGradientBoosting, first 2,000 rows).
The named alternative is ``model.predict`` on a one-row array in the benchmark's own process.
"""

from __future__ import annotations

import multiprocessing as mp
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import redis

from evals.bench.table import show
from fleet.datasets import load_elec
from fleet.embedded_redis import EmbeddedRedis, free_port
from fleet.keys import Keys
from fleet.registry import ArtifactStore, Registry
from fleet.schema import FeatureSchema
from fleet.trainer.pipeline import fit

PREFIX = "bench"


def _serve(url: str, artifacts: str, port: int) -> None:
    import uvicorn

    from fleet.gateway import Gateway
    from fleet.gateway.app import create_gateway_app
    from fleet.telemetry import TelemetryBuffer, TelemetryWriter

    r = redis.Redis.from_url(url, decode_responses=True)
    keys = Keys(PREFIX)
    gw = Gateway(Registry(r, keys, ArtifactStore(artifacts)),
                 TelemetryBuffer(TelemetryWriter(r, keys)))
    uvicorn.run(create_gateway_app(gw), host="127.0.0.1", port=port, log_level="warning",
                access_log=False)


def _pct(a: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(a), q))


def run(n: int = 3_000, batch: int = 100) -> list[dict[str, Any]]:
    """Time ``n`` single predictions and ``n // 10`` batches each way; return table rows."""
    elec = load_elec()
    names = list(elec.feature_names)
    model = fit(elec.X[:2000], elec.y[:2000], task="classification", seed=0)
    rows_np = elec.X[2000 : 2000 + n]
    rows = [dict(zip(names, map(float, x), strict=True)) for x in rows_np]
    out: list[dict[str, Any]] = []
    with EmbeddedRedis(appendonly=False) as server, tempfile.TemporaryDirectory() as tmp:
        r = redis.Redis.from_url(server.url, decode_responses=True)
        reg = Registry(r, Keys(PREFIX), ArtifactStore(Path(tmp)))
        reg.register_service("elec", task="classification", schema=FeatureSchema.numeric(names))
        reg.add_version("elec", model, created_by="bench")
        reg.promote("elec", 1, actor="bench", reason="bench")
        port = free_port()
        proc = mp.get_context("spawn").Process(target=_serve, args=(server.url, tmp, port),
                                               daemon=True)
        proc.start()
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as c:
                _wait(c)
                for row in rows[:200]:  # warm up both paths
                    c.post("/v1/models/elec/predict", json={"features": row})
                    model.predict(rows_np[:1])
                inproc = _time(lambda i: model.predict(rows_np[i : i + 1]), n)
                http = _time(lambda i: c.post("/v1/models/elec/predict",
                                              json={"features": rows[i]}).raise_for_status(), n)
                nb = max(n // batch, 10)
                b_in = _time(lambda i: model.predict(rows_np[:batch]), nb)
                b_http = _time(lambda i: c.post(
                    "/v1/models/elec/predict", json={"instances": rows[:batch]}
                ).raise_for_status(), nb)
        finally:
            proc.terminate()
            proc.join(5)
        r.close()
    for name, lat, k in (("in-process model.predict (1 row)", inproc, 1),
                         ("gateway over HTTP (1 row)", http, 1),
                         (f"in-process model.predict ({batch} rows)", b_in, batch),
                         (f"gateway over HTTP ({batch} rows)", b_http, batch)):
        out.append({"path": name, "p50 ms": _pct(lat, 50), "p99 ms": _pct(lat, 99),
                    "predictions/s": k * len(lat) / (sum(lat) / 1000.0)})
    out.append({"path": "gateway overhead, 1 row (HTTP - in-process)",
                "p50 ms": _pct(http, 50) - _pct(inproc, 50),
                "p99 ms": _pct(http, 99) - _pct(inproc, 99),
                "predictions/s": out[1]["predictions/s"] / out[0]["predictions/s"]})
    return out


def _wait(c: httpx.Client, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if c.get("/healthz").status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.1)
    raise RuntimeError("gateway did not start")


def _time(fn: Any, n: int) -> list[float]:
    lat = []
    for i in range(n):
        t0 = time.perf_counter()
        fn(i)
        lat.append((time.perf_counter() - t0) * 1000.0)
    return lat


def main() -> None:
    """Print the table (the last row's predictions/s column is the HTTP/in-process ratio)."""
    show("Gateway vs in-process model call (Electricity HGB model, loopback HTTP)", run())


if __name__ == "__main__":
    main()
