"""Advantage and return estimators over time-major rollouts: GAE and TD(lambda) returns.

Conventions (shared by every function here):

* Arrays are time-major, `[T, ...]` (rlax style): entry t describes the transition
  s_t --a_t--> s_{t+1} with reward r_t. Any trailing batch axes (e.g. `[T, B]` for B envs)
  are carried along element-wise.
* `next_values[t]` is V(s_{t+1}). For a truncated step it is the value of the final observation
  *before* the auto-reset, which is why it is a separate array and not `values[t + 1]`.
* Termination and truncation are kept apart. `terminated[t]` = 1 where s_{t+1} is terminal: it
  cuts the bootstrap (V(s_{t+1}) := 0). `done[t]` = 1 where an episode ends at step t for any
  reason (terminated OR truncated): it cuts the recursion across the episode boundary but not the
  bootstrap of a truncated step. A terminated step is always treated as a boundary, whether or
  not `done` marks it too.
* Flags are bool or 0/1 float. `gamma` and `lambda_` are scalars, possibly traced (so a vector
  of them can be swept with `jax.vmap` without recompiling); their range [0, 1] is checked only
  when they are concrete. No gradient is stopped: differentiate through the targets (e.g. for
  meta-gradients on gamma) or wrap them in `jax.lax.stop_gradient` yourself.
* The annotations are contracts (`jaxrl_si._contracts`), checked on every call (at trace time
  under `jit`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Bool, Float

from jaxrl_si import _checks
from jaxrl_si._contracts import RealScalar, contract

_Flags = Bool[ArrayLike, "T *batch"] | Float[ArrayLike, "T *batch"]


def _check_rollout(rewards, next_values, terminated, done, values=None) -> None:
    """Trace-time contract shared by `gae_advantages` and `lambda_returns`."""
    named = [("rewards", rewards), ("next_values", next_values)]
    if values is not None:
        named.insert(1, ("values", values))
    for name, x in named:
        _checks.check_float_array(name, x, min_rank=1)
    _checks.check_same_shape(named)
    _checks.check_flag_array("terminated", terminated, "rewards", rewards)
    _checks.check_flag_array("done", done, "rewards", rewards)


def _check_gamma_lambda(gamma, lambda_) -> None:
    for name, value in (("gamma", gamma), ("lambda_", lambda_)):
        _checks.check_scalar_hyperparameter(name, value)
        _checks.check_in_interval(name, value, 0.0, 1.0)


def _backward_linear_recursion(
    bias: Float[Array, "T *batch"], decay: Float[Array, "T *batch"], last: Float[Array, "*batch"]
) -> Float[Array, "T *batch"]:
    """x_t = bias_t + decay_t * x_{t+1}, with x_T = `last`, by a reverse `lax.scan` over axis 0.

    The one recursion behind both GAE (bias = TD error) and TD(lambda) returns.
    """

    def step(next_x, inputs):
        b, d = inputs
        x = b + d * next_x
        return x, x

    _, xs = jax.lax.scan(step, last, (bias, decay), reverse=True)
    return xs


def _continuation(terminated, done, dtype):
    """(1 - terminated) and (1 - boundary) as floats, boundary = done OR terminated."""
    not_terminal = 1.0 - terminated.astype(dtype)
    not_boundary = not_terminal * (1.0 - done.astype(dtype))
    return not_terminal, not_boundary


@contract
def gae_advantages(
    rewards: Float[ArrayLike, "T *batch"],
    values: Float[ArrayLike, "T *batch"],
    next_values: Float[ArrayLike, "T *batch"],
    terminated: _Flags,
    done: _Flags,
    *,
    gamma: RealScalar,
    lambda_: RealScalar,
) -> tuple[Float[Array, "T *batch"], Float[Array, "T *batch"]]:
    r"""Generalized Advantage Estimation: per-step advantages and their value targets.

    Schulman et al. 2016, "High-Dimensional Continuous Control Using Generalized Advantage
    Estimation", arXiv 1506.02438, Eq. 16, with episode boundaries inside the rollout:

    .. math:: \delta_t = r_t + \gamma (1 - \text{term}_t) V(s_{t+1}) - V(s_t),\qquad
              A_t = \delta_t + \gamma\lambda (1 - \text{done}_t) A_{t+1},\quad A_T = 0,

    and returns R_t = A_t + V(s_t) (the value-function target of PPO, arXiv 1707.06347).
    lambda = 0 gives the one-step TD error, lambda = 1 the bootstrapped Monte-Carlo return
    minus V. Paper / PureJaxRL defaults: gamma = 0.99, lambda = 0.95 (Atari PPO).

    PureJaxRL and CleanRL cut both the bootstrap and the recursion with a single `done` flag, so
    a time-limit truncation is treated as a termination; this function follows the paper's
    definition (truncation is not a terminal state) and bootstraps a truncated step from
    `next_values`. Pass `terminated = done` to reproduce those codes.

    Args:
      rewards: `[T, ...]` r_t.
      values: `[T, ...]` V(s_t).
      next_values: `[T, ...]` V(s_{t+1}); for a truncated step, the value of the final
        observation before the reset.
      terminated: `[T, ...]` 1 where s_{t+1} is terminal (no bootstrap).
      done: `[T, ...]` 1 where the episode ends at step t (terminated or truncated).
      gamma: discount in [0, 1].
      lambda_: GAE trace parameter in [0, 1].

    Returns:
      `(advantages, returns)`, each `[T, ...]`, with returns = advantages + values.

    >>> import jax.numpy as jnp
    >>> flags = jnp.array([False, False])
    >>> adv, ret = gae_advantages(jnp.ones(2), jnp.zeros(2), jnp.zeros(2), flags, flags,
    ...                           gamma=0.5, lambda_=1.0)
    >>> adv  # A_1 = 1, A_0 = 1 + 0.5 * 1
    Array([1.5, 1. ], dtype=float32)
    """
    _check_rollout(rewards, next_values, terminated, done, values=values)
    _check_gamma_lambda(gamma, lambda_)
    not_terminal, not_boundary = _continuation(terminated, done, rewards.dtype)
    deltas = rewards + gamma * not_terminal * next_values - values
    decay = gamma * lambda_ * not_boundary
    advantages = _backward_linear_recursion(deltas, decay, jnp.zeros_like(deltas[0]))
    return advantages, advantages + values


@contract
def lambda_returns(
    rewards: Float[ArrayLike, "T *batch"],
    next_values: Float[ArrayLike, "T *batch"],
    terminated: _Flags,
    done: _Flags,
    *,
    gamma: RealScalar,
    lambda_: RealScalar,
) -> Float[Array, "T *batch"]:
    r"""TD(lambda) returns: the lambda-return targets (Sutton & Barto 2018, Sec. 12.1).

    Written recursively (as in rlax's `lambda_returns`), with the conventions of this module:

    .. math:: G_t = r_t + \gamma (1 - \text{term}_t)\big[(1 - \lambda c_t) V(s_{t+1})
              + \lambda c_t G_{t+1}\big],\qquad c_t = 1 - \text{done}_t,\quad G_T = V(s_T),

    so a truncated step bootstraps fully from `next_values` and a terminated one not at all.
    When `values[t + 1] == next_values[t]` wherever the episode continues, G_t equals the
    `returns` of `gae_advantages` (Schulman et al. 2016, arXiv 1506.02438, Eq. 16-18); this
    form needs no V(s_t). Common defaults: gamma = 0.99, lambda = 0.95.

    Args:
      rewards: `[T, ...]` r_t.
      next_values: `[T, ...]` V(s_{t+1}) (final observation's value for a truncated step).
      terminated: `[T, ...]` 1 where s_{t+1} is terminal.
      done: `[T, ...]` 1 where the episode ends at step t (terminated or truncated).
      gamma: discount in [0, 1].
      lambda_: mixing parameter in [0, 1] (0: one-step TD target, 1: Monte-Carlo return).

    Returns:
      `[T, ...]` lambda-returns G_t.

    >>> import jax.numpy as jnp
    >>> flags = jnp.array([False, False])
    >>> lambda_returns(jnp.ones(2), jnp.zeros(2), flags, flags, gamma=0.5, lambda_=1.0)
    Array([1.5, 1. ], dtype=float32)
    """
    _check_rollout(rewards, next_values, terminated, done)
    _check_gamma_lambda(gamma, lambda_)
    not_terminal, not_boundary = _continuation(terminated, done, rewards.dtype)
    trace = lambda_ * not_boundary
    bias = rewards + gamma * not_terminal * (1.0 - trace) * next_values
    # G_T = V(s_T): the rollout's last step bootstraps fully, as in GAE.
    return _backward_linear_recursion(bias, gamma * not_terminal * trace, next_values[-1])
