"""Self-play rewards from pairwise preferences (SPO)."""

from __future__ import annotations

import jax.numpy as jnp
from jaxtyping import Array, Float

from jaxrl_si import _checks


def win_rates(preference_matrix: Float[Array, "*batch N N"]) -> Float[Array, "*batch N"]:
    r"""Each trajectory's average win probability against the other N - 1: SPO's reward.

    Swamy et al. 2024, "A Minimaximalist Approach to Reinforcement Learning from Human
    Feedback" (SPO), arXiv 2401.04056: sample N trajectories from the current policy, compare
    them with the preference function, and reward trajectory i with the proportion of its wins,

    .. math:: r_i = \frac{1}{N-1}\sum_{j \neq i} P_{ij},\qquad P_{ij} = P(\xi_i \succ \xi_j).

    The diagonal (a trajectory against itself) is ignored. `P` may hold probabilities or 0/1
    outcomes of sampled comparisons; it need not be skew-symmetric (e.g. two independent
    annotators for (i, j) and (j, i)).

    Args:
      preference_matrix: `[..., N, N]`, entries in [0, 1], N >= 2.

    Returns:
      `[..., N]` win rates in [0, 1].

    >>> import jax.numpy as jnp
    >>> win_rates(jnp.array([[0.5, 1.0, 1.0], [0.0, 0.5, 0.5], [0.0, 0.5, 0.5]]))
    Array([1.  , 0.25, 0.25], dtype=float32)
    """
    _checks.check_float_array("preference_matrix", preference_matrix, min_rank=2)
    n, m = preference_matrix.shape[-2:]
    if n != m or n < 2:
        raise ValueError(
            f"`preference_matrix` must be square [..., N, N] with N >= 2, got shape "
            f"{tuple(preference_matrix.shape)}."
        )
    _checks.check_in_interval("preference_matrix", preference_matrix, 0.0, 1.0)
    off_diagonal = 1.0 - jnp.eye(n, dtype=preference_matrix.dtype)
    return jnp.sum(preference_matrix * off_diagonal, axis=-1) / (n - 1)
