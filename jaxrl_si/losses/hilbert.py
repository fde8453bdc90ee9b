r"""Hilbert representations: temporal distance as Euclidean distance, and prompting in that space.

Park, Kreiman & Levine 2024, "Foundation Policies with Hilbert Representations" (HILP),
arXiv 2402.15567. A representation φ: S → R^d is trained so that

.. math:: V(s, g) = -\lVert \phi(s) - \phi(g) \rVert

is the goal-conditioned value of reaching g with reward −1 per step (Sec. 4.1, Eq. 4-5): the
temporal distance. A policy π(a | s, z) then learns to move in latent direction z with the
intrinsic reward r(s, a, s') = ⟨φ(s') − φ(s), z⟩ (Eq. 6), and is prompted zero-shot (Sec. 4.3):
for a goal, z = (φ(g) − φ(s)) / ‖φ(g) − φ(s)‖ (Eq. 8); for a reward, z is the least-squares
fit of the reward on φ(s') − φ(s) (Eq. 9); with test-time planning, g is first replaced by a
waypoint among the dataset's states (Sec. 4.3, "test-time planning").

Conventions as in `losses.iql`: arrays positional, hyperparameters keyword-only, per-example
outputs; targets gradient-stopped inside the loss. Where the paper and the official code
(github.com/seohongpark/HILP, `hilp_gcrl/src/agents/hilp.py`, `hilp_zsrl/url_benchmark/agent/sf.py`)
are more specific than the paper, these follow the code and say so.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, Int, PRNGKeyArray

from jaxrl_si import _checks
from jaxrl_si._contracts import RealScalar, contract
from jaxrl_si.losses.iql import expectile_weight

DISTANCE_FLOOR = 1e-6  # ‖·‖² floor before the square root: the official code's, keeps the gradient finite at s = g


@contract
def hilbert_value(phi_s: Float[ArrayLike, "*B D"], phi_g: Float[ArrayLike, "*B D"]) -> Float[Array, "*B"]:
    r"""V(s, g) = −√max(‖φ(s) − φ(g)‖², 10⁻⁶) (HILP Eq. 5 with the official code's floor).

    >>> import jax.numpy as jnp
    >>> hilbert_value(jnp.array([[0.0, 0.0]]), jnp.array([[3.0, 4.0]]))
    Array([-5.], dtype=float32)
    """
    _checks.check_same_shape([("phi_s", phi_s), ("phi_g", phi_g)])
    squared = jnp.sum(jnp.square(jnp.asarray(phi_s) - jnp.asarray(phi_g)), axis=-1)
    return -jnp.sqrt(jnp.maximum(squared, DISTANCE_FLOOR))


@contract
def hilbert_value_loss(
    value: Float[ArrayLike, "2 *B"],
    target_value: Float[ArrayLike, "2 *B"],
    next_target_value: Float[ArrayLike, "2 *B"],
    reached: Float[ArrayLike, "*B"],
    *,
    discount: RealScalar,
    expectile: RealScalar,
) -> Float[Array, "*B"]:
    r"""The goal-conditioned IQL value loss that trains φ, for twin heads i = 1, 2 (HILP Eq. 5).

    Reward r = −1 per step and 0 with the episode ended when the goal is reached (`reached` = 1;
    mask m = 1 − reached). As in the official code (`compute_value_loss`), each head regresses
    its own target q_i = r + γ m V̄_i(s', g), weighted by the sign of the *target networks'*
    advantage A = r + γ m min_i V̄_i(s', g) − ½ Σ_i V̄_i(s, g):

    .. math:: L = \sum_{i=1}^{2} |\tau - \mathbb{1}(A < 0)|\,\big(q_i - V_i(s, g)\big)^2 .

    With τ = 0.5 this is half the squared TD error; τ > 0.5 values the best outcome the data
    shows (an in-sample maximum over the data's actions, as IQL's expectile does).

    Args:
      value: `[2, ...]` V_i(s, g) of the twin online heads (being trained).
      target_value: `[2, ...]` V̄_i(s, g) of the target heads (gradient-stopped).
      next_target_value: `[2, ...]` V̄_i(s', g) of the target heads (gradient-stopped).
      reached: `[...]` 1 where g is s itself (the goal is reached), else 0.
      discount: γ in [0, 1] (code: 0.99 goal reaching, 0.96 walker / 0.98 others zero-shot).
      expectile: τ in (0, 1) (code: 0.95 goal reaching, 0.5 zero-shot).

    Returns:
      `[...]` per-example loss, summed over the two heads (the code sums the heads' means).
    """
    _checks.check_same_shape([("value", value), ("target_value", target_value), ("next_target_value", next_target_value)])
    _checks.check_float_array("reached", reached)
    if jnp.shape(value)[0] != 2 or jnp.shape(value)[1:] != jnp.shape(reached):
        raise _checks.ArgumentError(f"`value` must be [2, *B] for `reached` [*B] = {jnp.shape(reached)}, got {jnp.shape(value)}")
    _checks.check_scalar_hyperparameter("discount", discount)
    _checks.check_in_interval("discount", discount, 0.0, 1.0)
    target_value, next_target_value = jax.lax.stop_gradient((jnp.asarray(target_value), jnp.asarray(next_target_value)))
    reward, mask = jnp.asarray(reached) - 1.0, 1.0 - jnp.asarray(reached)
    advantage = reward + discount * mask * next_target_value.min(0) - target_value.mean(0)
    targets = reward + discount * mask * next_target_value
    return jnp.sum(expectile_weight(advantage, expectile=expectile) * jnp.square(targets - jnp.asarray(value)), axis=0)


@contract
def intrinsic_reward(phi_s: Float[ArrayLike, "*B D"], phi_next: Float[ArrayLike, "*B D"], latent: Float[ArrayLike, "*B D"]) -> Float[Array, "*B"]:
    r"""r(s, a, s') = ⟨φ(s') − φ(s), z⟩ (HILP Eq. 6): progress along direction z in latent space.

    >>> import jax.numpy as jnp
    >>> intrinsic_reward(jnp.zeros((1, 2)), jnp.array([[1.0, 2.0]]), jnp.array([[0.0, 1.0]]))
    Array([2.], dtype=float32)
    """
    _checks.check_same_shape([("phi_s", phi_s), ("phi_next", phi_next), ("latent", latent)])
    return jnp.sum((jnp.asarray(phi_next) - jnp.asarray(phi_s)) * jnp.asarray(latent), axis=-1)


def _on_sphere(x: Array, radius) -> Array:
    return radius * x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), DISTANCE_FLOOR)


@contract
def sample_latents(key: PRNGKeyArray, shape: tuple[int, ...], dim: int, *, radius: RealScalar = 1.0) -> Float[Array, "..."]:
    """Latents uniform on the sphere of `radius` in R^dim (normalised Gaussians): the training
    prompts. The goal-reaching code uses radius 1, the zero-shot code √d."""
    return _on_sphere(jax.random.normal(key, (*shape, dim)), radius)


@contract
def goal_latent(phi_s: Float[ArrayLike, "*B D"], phi_g: Float[ArrayLike, "*B D"], *, radius: RealScalar = 1.0) -> Float[Array, "*B D"]:
    r"""The goal prompt z = r (φ(g) − φ(s)) / ‖φ(g) − φ(s)‖ (HILP Eq. 8), recomputed at every step."""
    _checks.check_same_shape([("phi_s", phi_s), ("phi_g", phi_g)])
    return _on_sphere(jnp.asarray(phi_g) - jnp.asarray(phi_s), radius)


@contract
def reward_latent(
    features: Float[ArrayLike, "N D"], rewards: Float[ArrayLike, "N"], *, radius: RealScalar = 1.0, ridge: RealScalar = 0.0
) -> Float[Array, "D"]:
    r"""The reward prompt: z* = argmin_z Σ_n (r_n − ⟨f_n, z⟩)², rescaled onto the sphere of `radius`.

    HILP Eq. 9 with f_n = φ(s'_n) − φ(s_n) (the paper) or a centred φ(s'_n) (the zero-shot
    code's `feature_type='state'`); the code fits 10,000 reward-labelled samples
    (`num_inference_steps`) and rescales z to norm √d. A reward that the features explain as
    ⟨f, z⟩ is recovered up to that scale.

    Solved by the normal equations (FᵀF + λI) z = Fᵀr with λ = (ridge + 10⁻⁶) tr(FᵀF)/d: the
    paper's least squares at `ridge` = 0 (the 10⁻⁶ only keeps a rank-deficient fit finite, and is
    cheaper to compile than an SVD). Where φ spans fewer directions than d (a 2-D maze in
    d = 16), least squares puts z's weight on the directions the data barely varies in; a ridge
    of 0.1 to 1 keeps it on the ones that carry the reward. Raises `ArgumentError` with fewer
    samples than dimensions (the fit would not be unique) or a negative ridge.
    """
    features, rewards = jnp.asarray(features), jnp.asarray(rewards)
    if features.shape[0] != rewards.shape[0]:
        raise _checks.ArgumentError(f"`features` has {features.shape[0]} rows but `rewards` {rewards.shape[0]}")
    if features.shape[0] < features.shape[1]:
        raise _checks.ArgumentError(
            f"the reward regression needs at least as many samples as latent dimensions: {features.shape[0]} reward-labelled samples for d = {features.shape[1]}"
        )
    _checks.check_scalar_hyperparameter("ridge", ridge)
    _checks.check_in_interval("ridge", ridge, 0.0, float("inf"), high_open=True)
    gram = features.T @ features
    strength = (ridge + 1e-6) * jnp.trace(gram) / gram.shape[0] + 1e-12
    solution = jnp.linalg.solve(gram + strength * jnp.eye(gram.shape[0]), features.T @ rewards)
    return _on_sphere(solution, radius)


@contract
def plan_subgoal(
    phi_s: Float[ArrayLike, "D"], phi_g: Float[ArrayLike, "D"], phi_states: Float[ArrayLike, "N D"], *, num_neighbours: int, num_recursions: int
) -> Float[Array, "D"]:
    r"""HILP's test-time planning: replace φ(g) by a waypoint, `num_recursions` times (Sec. 4.3).

    The waypoint is the mean of the `num_neighbours` dataset states w that minimise
    max(‖φ(s) − φ(w)‖, ‖φ(w) − φ(g)‖), the states closest to the midpoint of the latent
    geodesic; recursing moves the waypoint towards s (official code: 50 neighbours among 50,000
    states, 3 recursions on the longest mazes). Returns φ(waypoint) `[D]`.
    """
    phi_s, phi_states = jnp.asarray(phi_s), jnp.asarray(phi_states)
    if not 1 <= num_neighbours <= phi_states.shape[0] or num_recursions < 0:
        raise _checks.ArgumentError(f"num_neighbours must be in [1, {phi_states.shape[0]}] and num_recursions >= 0, got {num_neighbours}, {num_recursions}")
    to_states = jnp.linalg.norm(phi_states - phi_s, axis=-1)

    def recurse(phi_goal, _):
        detour = jnp.maximum(to_states, jnp.linalg.norm(phi_states - phi_goal, axis=-1))
        _, nearest = jax.lax.top_k(-detour, num_neighbours)
        return phi_states[nearest].mean(0), None

    return jax.lax.scan(recurse, jnp.asarray(phi_g), None, length=num_recursions)[0]


def _average_ranks(x: Float[Array, "N"]) -> Float[Array, "N"]:
    """Ranks 0..N−1 of `x`, ties given the mean of the ranks they span."""
    ordered = jnp.sort(x)
    return (jnp.searchsorted(ordered, x, side="left") + jnp.searchsorted(ordered, x, side="right") - 1) / 2.0


@contract
def spearman_correlation(x: Float[ArrayLike, "N"], y: Float[ArrayLike, "N"] | Int[ArrayLike, "N"]) -> Float[Array, ""]:
    """Spearman's ρ: the Pearson correlation of the average ranks (ties shared), jittable.

    HILP's check that ‖φ(s) − φ(g)‖ orders pairs as the true temporal distance does.

    >>> import jax.numpy as jnp
    >>> spearman_correlation(jnp.array([1.0, 2.0, 3.0, 4.0]), jnp.array([1.0, 4.0, 9.0, 16.0]))
    Array(1., dtype=float32)
    """
    rx, ry = _average_ranks(jnp.asarray(x, jnp.float32)), _average_ranks(jnp.asarray(y, jnp.float32))
    rx, ry = rx - rx.mean(), ry - ry.mean()
    return jnp.sum(rx * ry) / jnp.sqrt(jnp.maximum(jnp.sum(rx * rx) * jnp.sum(ry * ry), 1e-12))
