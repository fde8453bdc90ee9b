"""Plots a researcher looks at: learning curves per setting, sweep heat maps, score vs a swept value,
curves with confidence intervals in panels, and win-rate matrices.

Matplotlib is imported on first use (Agg backend), so importing this module costs nothing.
Figures are saved through `jaxrl_si.paths`, so a run directory on `gs://` receives them too;
the image format follows the file's suffix (`.png`, `.pdf`, `.svg`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np
from etils import epath

from jaxrl_si.paths import run_path


def plot_learning_curves(
    curves: Mapping[str, tuple[np.ndarray, np.ndarray]],
    path: str | os.PathLike,
    *,
    xlabel: str = "environment steps",
    ylabel: str = "episode return",
    title: str = "",
) -> epath.Path:
    """One line per setting: the mean over seeds, with a min-max band.

    Args:
      curves: name -> (x `[U]`, y `[S, U]`); NaN entries of y (no episode ended) are skipped.
      path: output PNG.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7 + 3 * (len(curves) > 6), 4.2), dpi=120)  # room for a legend beside
    colors = plt.get_cmap("tab10" if len(curves) <= 10 else "tab20" if len(curves) <= 20 else "viridis")
    for index, (name, (x, y)) in enumerate(curves.items()):
        color = colors(index if len(curves) <= 20 else index / (len(curves) - 1))
        y = np.atleast_2d(np.asarray(y, dtype=np.float64))
        valid = ~np.all(np.isnan(y), axis=0)
        mean = np.nanmean(y[:, valid], axis=0)
        ax.plot(np.asarray(x)[valid], mean, color=color, label=f"{name} (n={y.shape[0]})")
        if y.shape[0] > 1:
            ax.fill_between(np.asarray(x)[valid], np.nanmin(y[:, valid], 0), np.nanmax(y[:, valid], 0), color=color, alpha=0.15)
    return _finish(fig, ax, path, xlabel=xlabel, ylabel=ylabel, title=title)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_heatmap(
    values: np.ndarray,
    row_values: Sequence[float],
    column_values: Sequence[float],
    names: Sequence[str],
    path: str | os.PathLike,
    *,
    label: str = "final return (mean over seeds)",
) -> epath.Path:
    """A 2-D grid sweep as a heat map, each cell annotated with its value.

    Args:
      values: `[R, C]` one score per grid cell (NaN drawn blank).
      row_values, column_values: the swept values of `names[0]` (rows) and `names[1]` (columns).
    """
    plt = _pyplot()
    values = np.asarray(values, dtype=np.float64)
    fig, ax = plt.subplots(figsize=(1.2 * len(column_values) + 2.5, 0.8 * len(row_values) + 1.8), dpi=120)
    image = ax.imshow(values, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(column_values)), [f"{v:.3g}" for v in column_values])
    ax.set_yticks(range(len(row_values)), [f"{v:.3g}" for v in row_values])
    ax.set_xlabel(names[1])
    ax.set_ylabel(names[0])
    finite = values[np.isfinite(values)]
    middle = (finite.min() + finite.max()) / 2 if finite.size else 0.0
    for (r, c), v in np.ndenumerate(values):
        if np.isfinite(v):
            ax.text(c, r, f"{v:.3g}", ha="center", va="center", color="black" if v > middle else "white", fontsize=8)
    fig.colorbar(image, ax=ax, label=label)
    fig.tight_layout()
    return _save(fig, path)


def plot_metric_vs_value(
    values: Sequence[float], scores: np.ndarray, name: str, path: str | os.PathLike, *, label: str = "final return"
) -> epath.Path:
    """A 1-D sweep: score against the swept value, mean over seeds with each seed as a dot.

    Args:
      values: `[S]` the swept values (log x axis when all positive and spanning > 10x).
      scores: `[S, seeds]`.
    """
    plt = _pyplot()
    values, scores = np.asarray(values, np.float64), np.asarray(scores, np.float64)
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for seed in range(scores.shape[1]):
        ax.scatter(values, scores[:, seed], color="gray", s=10, alpha=0.6)
    ax.plot(values, np.nanmean(scores, axis=1), marker="o", label=f"mean over {scores.shape[1]} seed(s)")
    if values.min() > 0 and values.max() > 10 * values.min():
        ax.set_xscale("log")
    return _finish(fig, ax, path, xlabel=name, ylabel=label)


def plot_interval_panels(
    x: np.ndarray,
    panels: Mapping[str, Mapping[str, np.ndarray]],
    path: str | os.PathLike,
    *,
    xlabel: str,
    ylabel: str,
    title: str = "",
    sharey: bool = True,
) -> epath.Path:
    """One panel per group, one line per curve: the mean over seeds with a 95 % Student-t band.

    Args:
      x: `[U]` shared x values.
      panels: panel title -> curve name -> `[S, U]` values (NaN skipped per column).
    """
    from scipy import stats

    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels) + 1, 3.8), dpi=120, sharey=sharey, squeeze=False)
    names = list(dict.fromkeys(name for curves in panels.values() for name in curves))
    colors = plt.get_cmap("tab10")
    for ax, (panel, curves) in zip(axes[0], panels.items(), strict=True):
        for name, y in curves.items():
            y = np.atleast_2d(np.asarray(y, np.float64))
            n = np.sum(np.isfinite(y), axis=0)
            valid = n > 0
            mean = np.nanmean(y[:, valid], axis=0)
            color = colors(names.index(name) % 10)
            ax.plot(np.asarray(x)[valid], mean, color=color, label=f"{name} (n={y.shape[0]})")
            if y.shape[0] > 1:
                half = stats.t.ppf(0.975, np.maximum(n[valid] - 1, 1)) * np.nanstd(y[:, valid], axis=0, ddof=1) / np.sqrt(n[valid])
                ax.fill_between(np.asarray(x)[valid], mean - half, mean + half, color=color, alpha=0.2)
        ax.set_title(panel)
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(ylabel)
    axes[0][-1].legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def plot_win_rate_matrices(matrices: Mapping[str, np.ndarray], path: str | os.PathLike, *, title: str = "") -> epath.Path:
    """Heat maps of W[i, j] = P(iterate i ≻ iterate j), one per name, and the final iterate's row.

    Args:
      matrices: name -> `[K, K]` win rates between the K iterates (W + W^T = 1).
    """
    plt = _pyplot()
    count = len(matrices)
    fig, axes = plt.subplots(1, count + 1, figsize=(4.0 * count + 4.5, 3.8), dpi=120, squeeze=False)
    for ax, (name, matrix) in zip(axes[0], matrices.items(), strict=False):
        k = matrix.shape[0]
        image = ax.imshow(matrix, cmap="RdBu_r", vmin=0.0, vmax=1.0, origin="lower", extent=(0.5, k + 0.5, 0.5, k + 0.5))
        ax.set_title(name)
        ax.set_xlabel("iterate j")
        ax.set_ylabel("iterate i")
        fig.colorbar(image, ax=ax, fraction=0.046)
    last = axes[0][-1]
    for name, matrix in matrices.items():
        last.plot(np.arange(1, matrix.shape[0] + 1), matrix[-1], marker=".", label=name)
    last.axhline(0.5, color="gray", lw=0.8)
    last.set_ylim(0.0, 1.0)
    last.set_title("final iterate vs iterate j")
    last.set_xlabel("iterate j")
    last.set_ylabel("P(final ≻ iterate j)")
    last.grid(alpha=0.3)
    last.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def plot_interval_bars(
    panels: Mapping[str, Mapping[str, Mapping[str, float | None]]],
    path: str | os.PathLike,
    *,
    ylabel: str,
    title: str = "",
) -> epath.Path:
    """One panel per group, one bar per name: a mean with its interval (`experiments.report.mean_interval` cells).

    Args:
      panels: panel title -> bar name -> `{"mean", "low", "high"}` (None: no bar, or no error bar).
    """
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(2.6 * len(panels) + 1, 3.6), dpi=120, squeeze=False)
    names = list(dict.fromkeys(name for bars in panels.values() for name in bars))
    colors = plt.get_cmap("tab10")
    for ax, (panel, bars) in zip(axes[0], panels.items(), strict=True):
        for index, (name, cell) in enumerate(bars.items()):
            if cell["mean"] is None:
                continue
            error = None if cell["low"] is None else [[cell["mean"] - cell["low"]], [cell["high"] - cell["mean"]]]
            ax.bar(index, cell["mean"], yerr=error, capsize=3, color=colors(names.index(name) % 10), label=name)
        ax.set_xticks(range(len(bars)), list(bars), rotation=30, ha="right", fontsize=8)
        ax.set_title(panel, fontsize=9)
        ax.grid(alpha=0.3, axis="y")
    axes[0][0].set_ylabel(ylabel)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def _finish(fig, ax, path, *, xlabel: str, ylabel: str, title: str = "") -> epath.Path:
    """Labels, grid and legend on a line plot, then save it."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if len(ax.get_lines()) > 6:  # many lines: the legend goes beside the axes, not over the curves
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7)
    else:
        ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def _save(fig, path: str | os.PathLike) -> epath.Path:
    path = run_path(path)
    with path.open("wb") as f:  # a file object: matplotlib would write a gs:// name as a local path
        fig.savefig(f, format=path.suffix.lstrip(".") or "png", bbox_inches="tight")  # bbox: keeps a legend placed outside the axes
    fig.clf()
    _pyplot().close(fig)
    return path
