"""Statistics of runs: episode-weighted mean returns over rollouts, updates, iterations, windows.

An update (one rollout) reports the mean return of the episodes that ended in it and how many
did. Averaging those means over several updates must weight each by its episode count, or an
update in which one short episode ended would count as much as one in which fifty did:

    mean over updates u of (R_u, c_u) = sum_u c_u R_u / sum_u c_u       (NaN when sum_u c_u = 0)

`episode_mean` is that formula, for NumPy arrays (histories on the host) and for JAX arrays
(inside a jitted update, where `c` is the 0/1 `done` flag of each step and `R` the return
`EpisodeStatistics` reports on it). Everything else here is built on it. No IO, no plotting:
agents, the loop, sweeps and tests import it.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np


def _namespace(*arrays):
    """jax.numpy when any input is a JAX array (or tracer), else numpy: host stays on host."""
    return jnp if any(isinstance(a, jax.Array) for a in arrays) else np


def episode_mean(returns, counts, axis=None):
    """sum(c * R) / sum(c) over `axis`: the mean return per episode; NaN where no episode ended.

    Args:
      returns: mean return of the episodes counted in `counts` (entries with count 0 are ignored,
        NaN included).
      counts: episodes behind each entry, int, float or bool (a step's `done` flag).
      axis: axes to reduce (None: all).

    >>> float(episode_mean(np.array([10.0, np.nan, 30.0]), np.array([1, 0, 3])))
    25.0
    """
    xp = _namespace(returns, counts)
    weighted = xp.sum(xp.where(counts > 0, returns, 0.0) * counts, axis=axis)
    total = xp.sum(counts, axis=axis)
    return xp.where(total > 0, weighted / xp.maximum(total, 1), xp.nan)


def final_episode_return(returns: np.ndarray, counts: np.ndarray, window: int) -> np.ndarray:
    """`[S]` episode-weighted mean return over the last `window` updates of each row of `[S, U]`."""
    return episode_mean(np.asarray(returns)[:, -window:], np.asarray(counts)[:, -window:], axis=1)


def iteration_returns(returns: np.ndarray, counts: np.ndarray, updates_per_iteration: int) -> np.ndarray:
    """`[S, U // updates_per_iteration]` episode-weighted mean return of each iteration's updates."""
    split = lambda x: np.asarray(x).reshape(x.shape[0], -1, updates_per_iteration)  # noqa: E731
    return episode_mean(split(returns), split(counts), axis=-1)


def smoothed_episode_return(returns: np.ndarray, counts: np.ndarray, window: int) -> np.ndarray:
    """`[S, U]`: entry u is the episode-weighted mean over updates u - window + 1 .. u (NaN if none).

    The moving version of `final_episode_return` (whose value is the last column), in float64
    with running sums: one pass, whatever the window.
    """
    c = np.asarray(counts, np.float64)
    weighted = np.where(c > 0, np.asarray(returns, np.float64), 0.0) * c

    def trailing_sum(x):
        total = np.cumsum(x, axis=1)
        total[:, window:] = total[:, window:] - total[:, :-window]
        return total

    episodes = trailing_sum(c)
    return np.where(episodes > 0, trailing_sum(weighted) / np.maximum(episodes, 1), np.nan)


def returns_and_counts(history: Mapping[str, np.ndarray], return_metric: str, count_metric: str | None) -> tuple[np.ndarray, np.ndarray]:
    """`[M, U]` returns and the episode counts that weight them (1 per finite return if uncounted)."""
    returns = history[return_metric]
    if count_metric is None:
        return returns, np.isfinite(returns).astype(np.float32)
    return returns, history[count_metric]


def mean_of_finite(values: np.ndarray) -> float:
    """Mean over the finite entries; NaN (without a warning) when there are none."""
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else float("nan")
