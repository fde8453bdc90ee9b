"""Tabular preference games: preference matrices, their minimax winner and the duality gap.

A preference matrix over N responses has P[i, j] = P(y_i ≻ y_j) and P + P^T = 1 (so the
diagonal is 1/2). The symmetric two-player zero-sum game with payoff P - 1/2 has value 0; its
equilibrium strategy is the minimax (von Neumann) winner that SPO, SPPO and INPO target
(Swamy et al. 2024, arXiv 2401.04056, Sec. 3; Wu et al. 2024, arXiv 2405.00675, Sec. 3).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from jaxrl_si import _checks


def _check_preference_matrix(preference_matrix):
    _checks.check_float_array("preference_matrix", preference_matrix, rank=2)
    n, m = preference_matrix.shape
    if n != m:
        raise ValueError(f"`preference_matrix` must be square, got shape {(n, m)}.")
    _checks.check_in_interval("preference_matrix", preference_matrix, 0.0, 1.0)


def bradley_terry_matrix(utilities: Float[Array, "N"]) -> Float[Array, "N N"]:
    """P[i, j] = sigmoid(u_i - u_j): a transitive preference matrix whose winner is argmax u."""
    _checks.check_float_array("utilities", utilities, rank=1)
    return jax.nn.sigmoid(utilities[:, None] - utilities[None, :])


def cyclic_preference_matrix(a: float, b: float, c: float) -> tuple[np.ndarray, np.ndarray]:
    r"""A rock-paper-scissors preference over 3 responses and its closed-form minimax winner.

    Response 0 beats 1 with probability 1/2 + a, 1 beats 2 with 1/2 + c, 2 beats 0 with
    1/2 + b. With A = P - 1/2 = [[0, a, -b], [-a, 0, c], [b, -c, 0]], the equilibrium x
    solves A x = 0: x = (c, b, a) / (a + b + c), the unique Nash policy when a, b, c > 0.

    Returns:
      `(P, nash)`: float32 arrays of shape `[3, 3]` and `[3]`.
    """
    for name, value in (("a", a), ("b", b), ("c", c)):
        _checks.check_in_interval(name, value, 0.0, 0.5, low_open=True)
    advantage = np.array([[0.0, a, -b], [-a, 0.0, c], [b, -c, 0.0]])
    nash = np.array([c, b, a]) / (a + b + c)
    return (0.5 + advantage).astype(np.float32), nash.astype(np.float32)


def win_probabilities(preference_matrix: Float[Array, "N N"], policy: Float[Array, "N"]) -> Float[Array, "N"]:
    """P(y_i ≻ pi) = sum_j P[i, j] pi_j: each response's win probability against the policy."""
    return preference_matrix @ policy


def duality_gap(preference_matrix: Float[Array, "N N"], policy: Float[Array, "N"]) -> Float[Array, ""]:
    r"""Exploitability of a policy in the preference game: max_y P(y ≻ pi) - 1/2.

    For a skew-symmetric game (P + P^T = 1) this is >= 0 and is 0 exactly at a minimax winner;
    it is the best response's win rate against pi, minus the 1/2 that pi scores against itself.
    """
    return jnp.max(win_probabilities(preference_matrix, policy)) - 0.5


def minimax_winner(preference_matrix: np.ndarray) -> np.ndarray:
    r"""Solve max_pi min_y P(pi ≻ y) by linear programming (host-side, SciPy's HiGHS).

    LP: maximise v s.t. sum_i pi_i P[i, j] >= v for every j, pi in the simplex. For a
    skew-symmetric P the value is 1/2. Use this for games without a closed form; the result is
    one equilibrium when several exist.

    Returns:
      `[N]` float64 equilibrium policy.
    """
    from scipy.optimize import linprog

    p = np.asarray(preference_matrix, dtype=np.float64)
    _check_preference_matrix(p)
    n = p.shape[0]
    cost = np.zeros(n + 1)
    cost[-1] = -1.0  # maximise v
    a_ub = np.hstack([-p.T, np.ones((n, 1))])  # v - sum_i pi_i P[i, j] <= 0
    a_eq = np.hstack([np.ones((1, n)), np.zeros((1, 1))])
    bounds = [(0.0, 1.0)] * n + [(None, None)]
    result = linprog(cost, A_ub=a_ub, b_ub=np.zeros(n), A_eq=a_eq, b_eq=[1.0], bounds=bounds, method="highs")
    if not result.success:
        raise RuntimeError(f"minimax_winner: the LP failed ({result.message}).")
    policy = np.clip(result.x[:n], 0.0, None)
    return policy / policy.sum()
