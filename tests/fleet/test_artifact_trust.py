"""Artifacts never run code: the type allowlist, and the artifact root as the one place to load.

The payload files here are hand-made fixtures: a real sklearn pipeline whose first step calls a
function the attacker chose. Each test first shows the payload is live (skops, told to trust what
the file names, loads it and a predict runs it), then that flywheel refuses it and nothing ran.
"""

from __future__ import annotations

import functools
import io
import json
import os
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import skops.io as sio
from sklearn.dummy import DummyClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer

from fleet.errors import IntegrityError
from fleet.registry import ArtifactStore, Registry
from fleet.registry.artifacts import sha256_bytes
from fleet.registry.trust import ALLOWED, allowed_types, check_types, load_trusted, named_types
from fleet.schema import FeatureSchema
from fleet.trainer import pipeline
from fleet.trainer.job import load_artifact

X = np.zeros((4, 2))


def _payload_model(func: Callable[..., Any]) -> Pipeline:
    """A model whose predict calls ``func(X)`` first (fixture: what an attacker would ship)."""
    steps = Pipeline([("payload", FunctionTransformer(func, validate=False)),
                      ("model", DummyClassifier())])
    steps.steps[0][1].fit(X)
    steps.steps[1][1].fit(X, np.array([0, 1, 0, 1]))
    return steps


def _eval_payload(mark: Path) -> bytes:
    """A skops file whose tree calls ``builtins.eval``: predict creates ``mark``."""
    # Inside a lambda, names resolve in the globals given to eval, so the locals eval gets (the
    # feature array) do not get in the way.
    code = f"(lambda: __import__('pathlib').Path({str(mark)!r}).touch())()"
    return sio.dumps(_payload_model(functools.partial(eval, code, {})))


def _rewrite_schema(data: bytes, edit: Callable[[dict[str, Any]], None]) -> bytes:
    """Edit the schema.json inside a skops zip, the way a crafted file is made."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(out, "w") as dst:
        for item in src.infolist():
            body = src.read(item)
            if item.filename == "schema.json":
                schema = json.loads(body)
                edit(schema)
                body = json.dumps(schema).encode()
            dst.writestr(item, body)
    return out.getvalue()


def _fleet_payload(made: Path) -> bytes:
    """A skops file naming a ``fleet.*`` callable: its step holds ``partial(ArtifactStore, made)``,
    which creates the directory ``made`` when called."""
    data = sio.dumps(_payload_model(functools.partial(len, str(made))))

    def swap(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("__module__") == "builtins" and node.get("__class__") == "len":
                node["__module__"], node["__class__"] = "fleet.registry.artifacts", "ArtifactStore"
            for v in node.values():
                swap(v)
        elif isinstance(node, list):
            for v in node:
                swap(v)

    return _rewrite_schema(data, swap)


def _run_permissively(data: bytes) -> None:
    """Load as skops would if told to trust every type the file names, then predict."""
    model = sio.loads(data, trusted=sio.get_untrusted_types(data=data))
    with pytest.raises(Exception):  # noqa: B017 - the payload returns no array; it ran first
        model.predict(X)


def _store_as_version(store: ArtifactStore, data: bytes) -> tuple[str, str]:
    """Write ``data`` where version 1 of ``svc`` would live (an attacker with file access)."""
    path = store.root / "svc" / "v1.skops"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path.resolve().as_uri(), sha256_bytes(data)


def test_a_file_calling_builtins_eval_is_refused_without_running(tmp_path: Path,
                                                                artifacts_dir: Path) -> None:
    mark = tmp_path / "eval-ran"
    data = _eval_payload(mark)
    _run_permissively(data)
    assert mark.exists(), "fixture check: the payload runs when its types are trusted"
    mark.unlink()

    store = ArtifactStore(artifacts_dir)
    uri, sha = _store_as_version(store, data)
    with pytest.raises(IntegrityError, match=r"not on the artifact allowlist: \['builtins.eval', "
                                             r"'functools.partial'\]"):
        store.load(uri, sha)
    with pytest.raises(IntegrityError, match=r"builtins\.eval"):
        load_artifact(data)  # the trainer's path for the champion
    assert not mark.exists()


def test_a_file_naming_a_fleet_function_is_refused_without_running(tmp_path: Path,
                                                                  artifacts_dir: Path) -> None:
    made = tmp_path / "fleet-ran"
    data = _fleet_payload(made)
    assert "fleet.registry.artifacts.ArtifactStore" in named_types(data)
    model = sio.loads(data, trusted=sio.get_untrusted_types(data=data))
    model.steps[0][1].func()
    assert made.is_dir(), "fixture check: the callable runs when its types are trusted"
    made.rmdir()

    store = ArtifactStore(artifacts_dir)
    uri, sha = _store_as_version(store, data)
    with pytest.raises(IntegrityError, match=r"fleet\.registry\.artifacts\.ArtifactStore"):
        store.load(uri, sha)
    with pytest.raises(IntegrityError, match=r"fleet\.registry\.artifacts\.ArtifactStore"):
        load_artifact(data)
    assert not made.exists()


def test_an_extra_allowlist_admits_a_type_and_nothing_else(tmp_path: Path) -> None:
    data = _eval_payload(tmp_path / "never")
    with pytest.raises(IntegrityError, match=r"\['functools.partial'\]"):
        check_types(data, what="x", extra=["builtins.eval"])
    assert check_types(data, what="x", extra=["builtins.eval", "functools.partial"]) == [
        "builtins.eval", "functools.partial"]


@pytest.mark.parametrize(("task", "family"), [
    (task, family) for task, families in pipeline.MODELS.items() for family in families])
def test_every_flywheel_model_family_loads(task: str, family: str) -> None:
    rng = np.random.default_rng(0)
    Xf = rng.normal(size=(120, 3))
    Xf[0, 0] = np.nan
    y = (Xf[:, 1] > 0).astype(int) if task == "classification" else Xf[:, 1] * 2
    model = pipeline.build_pipeline(task, {"model": family}).fit(Xf, y)
    back = load_trusted(sio.dumps(model), what=family)
    assert np.array_equal(back.predict(Xf), model.predict(Xf))


def test_the_allowlist_names_no_code_runner_and_no_fleet_type() -> None:
    allowed = allowed_types()
    for name in ("builtins.eval", "builtins.exec", "builtins.open", "builtins.getattr",
                 "builtins.__import__", "functools.partial", "operator.methodcaller",
                 "os.system", "subprocess.Popen"):
        assert name not in allowed
    assert not [n for n in allowed if n.startswith(("fleet.", "os.", "subprocess."))]
    assert len(ALLOWED) == len(set(ALLOWED)), "a name is listed twice"


def test_not_a_skops_file_is_an_integrity_error() -> None:
    with pytest.raises(IntegrityError, match="not a skops file"):
        load_trusted(b"\x80\x04pickle", what="artifact 'x'")


# --- where artifacts may be ----------------------------------------------------------------------
def _model() -> DummyClassifier:
    return DummyClassifier().fit(X, np.array([0, 1, 0, 1]))


def test_an_artifact_outside_the_root_is_refused(tmp_path: Path, artifacts_dir: Path) -> None:
    store = ArtifactStore(artifacts_dir)
    outside = tmp_path / "elsewhere.skops"
    data = sio.dumps(_model())
    outside.write_bytes(data)
    sha = sha256_bytes(data)
    for uri in (outside.as_uri(), str(outside),
                f"file://{artifacts_dir}/svc/../../elsewhere.skops"):
        with pytest.raises(IntegrityError, match="outside the artifact directory"):
            store.load(uri, sha)
    # A symlink inside the root that points outside it is followed, then refused.
    link = artifacts_dir / "svc" / "v9.skops"
    link.parent.mkdir()
    os.symlink(outside, link)
    with pytest.raises(IntegrityError, match="outside the artifact directory"):
        store.load(link.as_uri(), sha)
    with pytest.raises(IntegrityError, match="not a file:// URI"):
        store.load("http://127.0.0.1:9/v1.skops", sha)
    with pytest.raises(IntegrityError, match="not a usable path"):
        store.load(f"{artifacts_dir}/svc/v1\x00.skops", sha)
    # ``..`` that stays inside the root is fine.
    inside_uri, inside_sha = store.save("svc2", 1, _model())
    dotted = inside_uri.replace("/svc2/", "/svc/../svc2/")
    assert "/../" in dotted
    assert store.load(dotted, inside_sha).predict(X).tolist() == [0, 0, 0, 0]


def test_registering_through_a_symlinked_service_dir_is_refused(r, keys, clock, tmp_path: Path,
                                                                artifacts_dir: Path) -> None:
    registry = Registry(r, keys, ArtifactStore(artifacts_dir), clock=clock)
    registry.register_service("svc", task="classification",
                              schema=FeatureSchema.numeric(["a", "b"]))
    (tmp_path / "out").mkdir()
    os.symlink(tmp_path / "out", artifacts_dir / "svc")
    with pytest.raises(IntegrityError, match="outside the artifact directory"):
        registry.add_version("svc", _model(), created_by="test")
    assert registry.versions("svc") == []


def test_a_redis_write_pointing_a_version_outside_the_root_is_refused(
        r, keys, clock, tmp_path: Path, artifacts_dir: Path) -> None:
    registry = Registry(r, keys, ArtifactStore(artifacts_dir), clock=clock)
    registry.register_service("svc", task="classification",
                              schema=FeatureSchema.numeric(["a", "b"]))
    v = registry.add_version("svc", _model(), created_by="test")
    outside = tmp_path / "evil.skops"
    data = sio.dumps(_model())
    outside.write_bytes(data)
    r.hset(keys.version("svc", v.number),
           mapping={"artifact_uri": outside.as_uri(), "sha256": sha256_bytes(data)})
    with pytest.raises(IntegrityError, match="outside the artifact directory"):
        registry.load_model("svc", v.number)
