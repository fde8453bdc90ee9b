r"""Categorical (C51) distributional RL: the support, the projection, n-step returns, the loss.

Bellemare, Dabney & Munos 2017, "A Distributional Perspective on Reinforcement Learning",
arXiv 1707.06887. The return distribution Z(s, a) is a categorical over N fixed atoms
z_j = v_min + j Δz (`categorical_support`), with probabilities softmax(logits); Q = Σ_j z_j p_j
(`categorical_q_values`). The distributional Bellman target r + γ z lands between the atoms and is
projected back onto them (Eq. 7, Alg. 1: `categorical_l2_project`); the network is trained by
cross-entropy to the projected target (`categorical_double_q_loss`), here with the double-Q
action choice of Rainbow (Hessel et al. 2017) and SPR: the online net picks a*, the target net
evaluates it (van Hasselt, Guez & Silver 2016).

`n_step_returns` builds the multi-step reward and discount of Rainbow/SPR from a window of n
rewards. Arrays here are batch-major, `[B, n]` and `[B, A, N]`, as sampled from a replay buffer.
The annotations are contracts (`jaxrl_si._contracts`); hyperparameter ranges are checked when
concrete.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Bool, Float

from jaxrl_si import _checks
from jaxrl_si._contracts import RealScalar, contract


def _check_value_range(v_min, v_max) -> None:
    for name, value in (("v_min", v_min), ("v_max", v_max)):
        _checks.check_scalar_hyperparameter(name, value)
    if _checks.is_concrete(v_min) and _checks.is_concrete(v_max) and not float(v_min) < float(v_max):
        raise _checks.ArgumentValueError(f"`v_min` must be < `v_max`, got v_min={float(v_min)!r}, v_max={float(v_max)!r}.")


def _check_num_atoms(num_atoms) -> None:
    if isinstance(num_atoms, bool) or not isinstance(num_atoms, int):
        raise _checks.ArgumentTypeError(f"`num_atoms` must be a Python int, got {type(num_atoms).__name__}.")
    if num_atoms < 2:
        raise _checks.ArgumentValueError(f"`num_atoms` must be >= 2, got {num_atoms}.")


@contract
def categorical_support(num_atoms: int, v_min: RealScalar, v_max: RealScalar) -> Float[Array, "N"]:
    r"""The N evenly spaced atoms z_j = v_min + j (v_max − v_min) / (N − 1), j = 0 … N − 1.

    C51 (Bellemare et al. 2017, Sec. 4) uses N = 51 on [−10, 10], as do Rainbow and SPR.

    Args:
      num_atoms: N >= 2, a Python int.
      v_min, v_max: the end atoms, v_min < v_max (may be traced).

    Returns:
      `[N]` the atoms, in JAX's default float dtype.

    >>> categorical_support(5, -1.0, 1.0)
    Array([-1. , -0.5,  0. ,  0.5,  1. ], dtype=float32)
    """
    _check_num_atoms(num_atoms)
    _check_value_range(v_min, v_max)
    dtype = jnp.result_type(float)
    return jnp.linspace(jnp.asarray(v_min, dtype), jnp.asarray(v_max, dtype), num_atoms)


@contract
def categorical_q_values(logits: Float[ArrayLike, "*B A N"], support: Float[ArrayLike, "N"]) -> Float[Array, "*B A"]:
    r"""Q(s, a) = Σ_j z_j softmax(logits[a])_j: the mean of each action's return distribution.

    Args:
      logits: `[..., A, N]` per-action logits over the atoms.
      support: `[N]` the atoms z.

    Returns:
      `[..., A]` the Q-values.

    >>> import jax.numpy as jnp
    >>> categorical_q_values(jnp.log(jnp.array([[0.5, 0.5, 0.0], [0.0, 0.0, 1.0]])), jnp.array([0.0, 1.0, 2.0]))
    Array([0.5, 2. ], dtype=float32)
    """
    _checks.check_float_array("logits", logits, min_rank=2)
    _checks.check_float_array("support", support, rank=1)
    if logits.shape[-1] != support.shape[0]:
        raise _checks.ArgumentValueError(
            f"`logits` has {logits.shape[-1]} atoms on its last axis but `support` has {support.shape[0]}; they must match."
        )
    return jnp.sum(jax.nn.softmax(jnp.asarray(logits), axis=-1) * jnp.asarray(support), axis=-1)


def _neighbour_gaps(support_q: Array) -> tuple[Array, Array]:
    """(z_i − z_{i−1}, z_{i+1} − z_i) per atom; 1 at the ends, where no clipped atom looks past them."""
    gaps = jnp.diff(support_q)
    one = jnp.ones((1,), support_q.dtype)
    return jnp.concatenate([one, gaps]), jnp.concatenate([gaps, one])


@contract
def categorical_l2_project(
    support_p: Float[ArrayLike, "B M"] | Float[ArrayLike, "M"],
    probs: Float[ArrayLike, "B M"],
    support_q: Float[ArrayLike, "N"],
) -> Float[Array, "B N"]:
    r"""Project a categorical distribution onto a fixed support (C51, Eq. 7 / Alg. 1).

    Each atom y_j (clipped to [z_0, z_{N−1}]) gives its mass p_j to its two neighbours on the
    support z, in proportion to closeness (the projection that minimises the Cramér distance,
    Rowland et al. 2018):

    .. math:: (\Phi p)_i = \sum_j \Big[1 - \frac{|\operatorname{clip}(y_j, z_0, z_{N-1}) - z_i|}
              {z_{i \pm 1} - z_i}\Big]_0^1\, p_j,

    with the gap to the neighbour on y_j's side. For the evenly spaced C51 support this is
    Eq. 7's [1 − |ŷ_j − z_i| / Δz]₀¹. An atom on a grid point gives all its mass to that point; an
    atom beyond the range gives it to the end atom; total mass is preserved. The support must be
    strictly increasing (checked when concrete); it need not be evenly spaced. O(B M N) work, no
    matrix product (so no TF32 rounding on GPUs).

    Args:
      support_p: `[B, M]` or `[M]` the atoms y of the distribution to project (e.g. r + γ z).
      probs: `[B, M]` their probabilities.
      support_q: `[N]` the fixed support z, strictly increasing.

    Returns:
      `[B, N]` the projected probabilities.

    >>> import jax.numpy as jnp
    >>> z = jnp.array([0.0, 1.0, 2.0])
    >>> categorical_l2_project(z + 0.5, jnp.array([[0.2, 0.4, 0.4]]), z)  # 0.5 -> 0 and 1; 2.5 -> 2
    Array([[0.1, 0.3, 0.6]], dtype=float32)
    """
    _checks.check_float_array("probs", probs, rank=2)
    _checks.check_float_array("support_q", support_q, rank=1)
    _checks.check_float_array("support_p", support_p)
    if support_p.ndim not in (1, 2) or support_p.shape != probs.shape[-support_p.ndim :]:
        raise _checks.ArgumentValueError(
            f"`support_p` must have shape [B, M] or [M] matching `probs` {tuple(probs.shape)}, got {tuple(support_p.shape)}."
        )
    support_q = jnp.asarray(support_q)
    if _checks.is_concrete(support_q) and not bool(jnp.all(jnp.diff(support_q) > 0)):
        raise _checks.ArgumentValueError(f"`support_q` must be strictly increasing, got {support_q}.")
    probs = jnp.asarray(probs)
    atoms = jnp.clip(jnp.broadcast_to(jnp.asarray(support_p), probs.shape), support_q[0], support_q[-1])
    offset = atoms[:, None, :] - support_q[None, :, None]  # [B, N, M]: y_j − z_i
    gap_below, gap_above = (gap[None, :, None] for gap in _neighbour_gaps(support_q))
    closeness = jnp.where(offset < 0, 1.0 + offset / gap_below, 1.0 - offset / gap_above)
    return jnp.sum(jnp.clip(closeness, 0.0, 1.0) * probs[:, None, :], axis=-1)


@contract
def n_step_returns(
    rewards: Float[ArrayLike, "B n"], dones: Bool[ArrayLike, "B n"] | Float[ArrayLike, "B n"], *, gamma: RealScalar
) -> tuple[Float[Array, "B"], Float[Array, "B"]]:
    r"""The n-step return and bootstrap discount of a window of n rewards (Rainbow, SPR).

    .. math:: R = \sum_{i=0}^{n-1} \gamma^i\, r_i \prod_{j<i} (1 - d_j),
              \qquad \gamma_R = \gamma^n \prod_{j<n} (1 - d_j),

    so the sum stops after the first step with d = 1 (its reward counted) and the target
    R + γ_R Q(s_{t+n}) does not bootstrap across an episode end. A time-limit truncation must be
    passed as a done too and is then treated as a termination, as in the Dopamine and SPR Atari
    code (a small bias, since a truncated state still has value).

    Args:
      rewards: `[B, n]` r_t … r_{t+n−1}.
      dones: `[B, n]` bool or 0/1 float, 1 where the episode ended at that step.
      gamma: γ in [0, 1].

    Returns:
      `(returns, discounts)`, each `[B]`, dtype of `rewards`.

    >>> import jax.numpy as jnp
    >>> n_step_returns(jnp.array([[1.0, 1.0, 1.0]]), jnp.array([[False, True, False]]), gamma=0.5)
    (Array([1.5], dtype=float32), Array([0.], dtype=float32))
    """
    _checks.check_float_array("rewards", rewards, rank=2)
    _checks.check_flag_array("dones", dones, "rewards", rewards)
    _checks.check_scalar_hyperparameter("gamma", gamma)
    _checks.check_in_interval("gamma", gamma, 0.0, 1.0)
    rewards = jnp.asarray(rewards)
    gamma = jnp.asarray(gamma, rewards.dtype)
    alive_after = jnp.cumprod(1.0 - jnp.asarray(dones).astype(rewards.dtype), axis=-1)  # Π_{j<=i}(1 − d_j)
    alive_before = jnp.concatenate([jnp.ones_like(alive_after[:, :1]), alive_after[:, :-1]], axis=-1)
    n = rewards.shape[-1]
    powers = gamma ** jnp.arange(n, dtype=rewards.dtype)
    return jnp.sum(powers * alive_before * rewards, axis=-1), gamma**n * alive_after[:, -1]


@contract
def categorical_double_q_loss(
    logits: Float[ArrayLike, "B N"],
    next_online_logits: Float[ArrayLike, "B A N"],
    next_target_logits: Float[ArrayLike, "B A N"],
    returns: Float[ArrayLike, "B"],
    discounts: Float[ArrayLike, "B"],
    *,
    v_min: RealScalar,
    v_max: RealScalar,
) -> Float[Array, "B"]:
    r"""C51 cross-entropy to the projected double-Q target, per example (Rainbow's and SPR's loss).

    With z = `categorical_support(N, v_min, v_max)` and p = softmax over the atoms:

    .. math:: a^* = \arg\max_a \sum_j z_j\, p^{online}_j(s', a), \qquad
              m = \Phi_z\big(R + \gamma_R z,\ p^{target}(s', a^*)\big), \qquad
              L = -\sum_i \operatorname{sg}[m_i] \log p_i(s, a),

    (Bellemare et al. 2017, Alg. 1, with van Hasselt et al. 2016's action choice), Φ being
    `categorical_l2_project`. Every input except `logits` is gradient-stopped.

    Args:
      logits: `[B, N]` online logits at (s, a), the taken action.
      next_online_logits: `[B, A, N]` online logits at s' (choose a*).
      next_target_logits: `[B, A, N]` target-network logits at s' (evaluate a*).
      returns: `[B]` n-step returns R (`n_step_returns`).
      discounts: `[B]` bootstrap discounts γ_R (0 after an episode end).
      v_min, v_max: the support's end atoms, v_min < v_max.

    Returns:
      `[B]` per-example cross-entropy (float32 or wider).

    >>> import jax.numpy as jnp
    >>> next_logits = jnp.zeros((1, 2, 3))  # z = [-1, 0, 1]; R = 0, γ_R = 0: the target is [0, 1, 0]
    >>> categorical_double_q_loss(jnp.log(jnp.array([[0.25, 0.5, 0.25]])), next_logits, next_logits,
    ...                           jnp.zeros(1), jnp.zeros(1), v_min=-1.0, v_max=1.0)  # −log 0.5
    Array([0.6931472], dtype=float32)
    """
    _checks.check_float_array("logits", logits, rank=2)
    _checks.check_float_arrays([("next_online_logits", next_online_logits), ("next_target_logits", next_target_logits)], rank=3)
    batch, num_atoms = logits.shape
    if next_online_logits.shape[0] != batch or next_online_logits.shape[-1] != num_atoms:
        raise _checks.ArgumentValueError(
            f"`next_online_logits` has shape {tuple(next_online_logits.shape)}; it must be [B, A, N] "
            f"with B = {batch} and N = {num_atoms} from `logits`."
        )
    _checks.check_float_arrays([("returns", returns), ("discounts", discounts)], rank=1)
    if returns.shape[0] != batch:
        raise _checks.ArgumentValueError(f"`returns` has shape {tuple(returns.shape)} but `logits` has batch size {batch}.")
    support = categorical_support(num_atoms, v_min, v_max)
    greedy = jnp.argmax(categorical_q_values(jax.lax.stop_gradient(next_online_logits), support), axis=-1)  # [B]
    next_probs = jax.nn.softmax(jnp.take_along_axis(jnp.asarray(next_target_logits), greedy[:, None, None], axis=1)[:, 0], axis=-1)
    atoms = jnp.asarray(returns)[:, None] + jnp.asarray(discounts)[:, None] * support
    target = jax.lax.stop_gradient(categorical_l2_project(atoms, next_probs, support))
    logits = jnp.asarray(logits)
    log_probs = jax.nn.log_softmax(logits.astype(jnp.promote_types(logits.dtype, jnp.float32)), axis=-1)
    return -jnp.sum(target * log_probs, axis=-1)
