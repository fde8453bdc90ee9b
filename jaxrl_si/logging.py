"""Metric sinks for long runs: JSONL and TensorBoard in the run directory, and learning curves.

Rows are flat dicts of scalars (namespaced keys such as `episode/return`, `loss/value`) plus
the bookkeeping keys `update`, `env_steps` and, for multi-seed runs, `seed`.
"""

from __future__ import annotations

import json
import math
import pathlib
from collections.abc import Iterable, Mapping

import numpy as np


class MetricWriter:
    """Appends metric rows to `run_dir/metrics.jsonl` and to TensorBoard (`run_dir/tb`).

    TensorBoard uses tensorboardX (no TensorFlow needed). Per-seed rows go to the tag
    `seed<k>/<key>`; `write_summary` writes cross-seed means under the plain key.
    """

    def __init__(self, run_dir: str | pathlib.Path, *, tensorboard: bool = True):
        self.run_dir = pathlib.Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._jsonl = open(self.run_dir / "metrics.jsonl", "a", encoding="utf-8")
        self._tb = None
        if tensorboard:
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(str(self.run_dir / "tb"))

    def write(self, rows: Iterable[Mapping[str, float]]) -> None:
        """Write rows (each with `env_steps`) to JSONL and, per seed, to TensorBoard."""
        for row in rows:
            clean = {k: _jsonable(v) for k, v in row.items()}
            self._jsonl.write(json.dumps(clean) + "\n")
            if self._tb is not None:
                prefix = f"seed{int(row['seed'])}/" if "seed" in row else ""
                for key, value in clean.items():
                    if key not in ("seed", "update", "env_steps") and value is not None:
                        self._tb.add_scalar(prefix + key, value, int(row["env_steps"]))
        self._jsonl.flush()

    def write_summary(self, env_steps: int, metrics: Mapping[str, float]) -> None:
        """Cross-seed aggregate scalars, TensorBoard only."""
        if self._tb is not None:
            for key, value in metrics.items():
                if value is not None and math.isfinite(value):
                    self._tb.add_scalar(key, float(value), int(env_steps))

    def close(self) -> None:
        self._jsonl.close()
        if self._tb is not None:
            self._tb.close()


def _jsonable(value) -> float | None:
    """A scalar as a JSON number; NaN / inf (e.g. no episode ended) become null."""
    value = float(value)
    return value if math.isfinite(value) else None


def final_episode_return(returns: np.ndarray, counts: np.ndarray, window: int) -> np.ndarray:
    """Mean return of the episodes that ended in the last `window` updates, per seed.

    Args:
      returns: `[S, U]` mean return of the episodes that ended in each update (NaN: none did).
      counts: `[S, U]` how many episodes ended in each update.

    Returns:
      `[S]` episode-weighted means; NaN for a seed with no finished episode in the window.
    """
    r, c = np.asarray(returns)[:, -window:], np.asarray(counts)[:, -window:]
    total = c.sum(axis=1)
    weighted = np.sum(np.where(c > 0, r, 0.0) * c, axis=1)
    return np.where(total > 0, weighted / np.maximum(total, 1), np.nan)


def read_jsonl(path: str | pathlib.Path) -> list[dict]:
    """All rows of a metrics.jsonl file."""
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def plot_learning_curves(
    curves: Mapping[str, tuple[np.ndarray, np.ndarray]],
    path: str | pathlib.Path,
    *,
    xlabel: str = "environment steps",
    ylabel: str = "episode return",
    title: str = "",
) -> pathlib.Path:
    """One line per setting: the mean over seeds, with a min-max band.

    Args:
      curves: name -> (x `[U]`, y `[S, U]`); NaN entries of y (no episode ended) are skipped.
      path: output PNG.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    for name, (x, y) in curves.items():
        y = np.atleast_2d(np.asarray(y, dtype=np.float64))
        valid = ~np.all(np.isnan(y), axis=0)
        mean = np.nanmean(y[:, valid], axis=0)
        line = ax.plot(np.asarray(x)[valid], mean, label=f"{name} (n={y.shape[0]})")[0]
        if y.shape[0] > 1:
            ax.fill_between(np.asarray(x)[valid], np.nanmin(y[:, valid], 0), np.nanmax(y[:, valid], 0), color=line.get_color(), alpha=0.2)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    path = pathlib.Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path
