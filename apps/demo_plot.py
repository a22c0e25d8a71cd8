"""The demo's plot: accuracy over the stream, supervised vs static, with action markers."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

STYLE = {
    "incident.open": ("incident", "tab:red", ":"),
    "registry.add_version": ("retrain", "tab:blue", "--"),
    "registry.promote": ("promotion", "tab:green", "-"),
    "registry.rollback": ("rollback", "tab:orange", "-."),
    "registry.clear_challenger": ("rollback", "tab:orange", "-."),
}


@dataclass
class Markers:
    """Stream rows at which notable actions happened."""

    rows: dict[str, list[int]] = field(default_factory=dict)

    def add(self, action: str, row: int) -> None:
        """Remember ``action`` at stream row ``row`` (only plotted kinds are kept)."""
        if action in STYLE:
            self.rows.setdefault(action, []).append(row)


def plot(served: list[tuple[int, float, float]], static: np.ndarray, markers: Markers,
         path: Path, *, block: int = 500) -> Path:
    """Write the accuracy plot to ``path`` (PNG) and return it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = np.array([r for r, _, _ in served])
    ok = np.array([p == y for _, p, y in served], dtype=np.float64)
    n = len(ok) // block
    x = rows[: n * block].reshape(n, block)[:, 0]
    sup = ok[: n * block].reshape(n, block).mean(axis=1)
    sta = static[: n * block].reshape(n, block).mean(axis=1)
    fig, ax = plt.subplots(figsize=(12, 4.5))
    ax.plot(x, sup, label=f"flywheel (mean {ok.mean():.3f})", color="black", lw=1.4)
    ax.plot(x, sta, label=f"static v1 (mean {static.mean():.3f})", color="grey", lw=1, alpha=0.8)
    seen: set[str] = set()
    for action, at in markers.rows.items():
        name, color, ls = STYLE[action]
        for r in at:
            ax.axvline(r, color=color, ls=ls, lw=1, alpha=0.7,
                       label=None if name in seen else name)
            seen.add(name)
    ax.set_xlabel("stream row")
    ax.set_ylabel(f"accuracy per {block} rows")
    ax.set_title("Electricity stream: supervised model vs never-retrained model")
    ax.set_ylim(0.3, 1.0)
    ax.legend(loc="lower left", ncol=4, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
