r"""Implicit Q-Learning losses: expectile value regression, the TD critic, advantage weighting.

Kostrikov, Nair & Levine 2021, "Offline Reinforcement Learning with Implicit Q-Learning",
arXiv 2110.06169, Sec. 4, Eqs. 5-7. IQL never queries Q at actions outside the dataset:

* V(s) regresses an upper expectile of Q(s, a) over the data's actions (Eq. 5, `iql_value_loss`);
* Q(s, a) regresses r + γ V(s') (Eq. 6, `iql_critic_loss`);
* the policy is extracted by advantage-weighted regression onto the data's actions (Eq. 7,
  `awr_weights`, `awr_loss`).

Conventions as in `losses.preference`: arrays positional, hyperparameters keyword-only, per-example
outputs (callers reduce), contracts on the annotations (`jaxrl_si._contracts`); targets are
gradient-stopped inside the loss, so a caller can pass its own network's outputs as targets. These
losses serve the offline preference agents (P-IQL, `agents/piql.py`) and HILP.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

from jaxrl_si import _checks
from jaxrl_si._contracts import RealScalar, contract


def _check_matching_floats(named) -> None:
    for name, x in named:
        _checks.check_float_array(name, x)
    _checks.check_same_shape(named)


def _check_expectile(expectile) -> None:
    _checks.check_scalar_hyperparameter("expectile", expectile)
    _checks.check_in_interval("expectile", expectile, 0.0, 1.0, low_open=True, high_open=True)


@contract
def expectile_loss(diff: Float[ArrayLike, "*B"], *, expectile: RealScalar) -> Float[Array, "*B"]:
    r"""The asymmetric squared loss of expectile regression, element-wise.

    IQL Eq. 5 (Kostrikov et al. 2021; Newey & Powell 1987):

    .. math:: L_2^\tau(u) = |\tau - \mathbb{1}(u < 0)|\, u^2,\qquad u = \text{target} - \text{prediction}.

    Minimising E[L_2^τ(y − m)] over m gives the τ-expectile of y: τ = 0.5 is half the squared
    error (the mean); τ > 0.5 weights targets above the prediction more (τ → 1: the maximum).

    Args:
      diff: `[...]` u = target − prediction.
      expectile: τ in (0, 1) (IQL: 0.7 on locomotion and the CPL paper's P-IQL, 0.9 on AntMaze).

    Returns:
      `[...]` the loss of each element, same shape as `diff`.

    >>> import jax.numpy as jnp
    >>> expectile_loss(jnp.array([2.0, -4.0]), expectile=0.75)  # 0.75 * 2², 0.25 * 4²
    Array([3., 4.], dtype=float32)
    """
    _checks.check_float_array("diff", diff)
    diff = jnp.asarray(diff)
    return expectile_weight(diff, expectile=expectile) * jnp.square(diff)


@contract
def expectile_weight(sign_of: Float[ArrayLike, "*B"], *, expectile: RealScalar) -> Float[Array, "*B"]:
    r"""|τ − 𝟙(u < 0)|: τ where `sign_of` ≥ 0, 1 − τ where it is negative (no gradient).

    The weight of `expectile_loss`; HIQL and HILP weight one squared error by the sign of
    another quantity (the target networks' advantage, `losses.hilbert.hilbert_value_loss`).
    """
    _checks.check_float_array("sign_of", sign_of)
    _check_expectile(expectile)
    return jnp.where(jax.lax.stop_gradient(jnp.asarray(sign_of)) < 0, 1.0 - expectile, expectile)


@contract
def iql_value_loss(q: Float[ArrayLike, "*B"], value: Float[ArrayLike, "*B"], *, expectile: RealScalar) -> Float[Array, "*B"]:
    r"""IQL's value loss (Eq. 5): V(s) as the τ-expectile of Q(s, a) over the dataset's actions.

    .. math:: L_V = L_2^\tau\big(\operatorname{sg}[Q_{\hat\theta}(s, a)] - V_\psi(s)\big),

    with Q from the target critic (the minimum of the twin targets, as in the official code).

    Args:
      q: `[...]` target-network Q(s, a) at the data's (s, a) (gradient-stopped here).
      value: `[...]` V(s) being trained.
      expectile: τ in (0, 1).

    Returns:
      `[...]` per-example loss.
    """
    _check_matching_floats([("q", q), ("value", value)])
    return expectile_loss(jax.lax.stop_gradient(q) - value, expectile=expectile)


@contract
def iql_critic_loss(
    q: Float[ArrayLike, "*B"],
    reward: Float[ArrayLike, "*B"],
    discount: Float[ArrayLike, "*B"],
    next_value: Float[ArrayLike, "*B"],
) -> Float[Array, "*B"]:
    r"""IQL's critic loss (Eq. 6): Q(s, a) regresses the one-step target through V.

    .. math:: L_Q = \big(r + \gamma_t\, \operatorname{sg}[V_\psi(s')] - Q_\theta(s, a)\big)^2,

    with γ_t = γ (1 − terminal) given per example, so termination stops the bootstrap. The
    official code's squared error, without a factor ½; for twin critics call it once per head
    (the official code sums the heads' losses).

    Args:
      q: `[...]` Q(s, a) being trained.
      reward: `[...]` r after (s, a).
      discount: `[...]` γ_t = γ (1 − terminal) in [0, 1].
      next_value: `[...]` V(s') (gradient-stopped here).

    Returns:
      `[...]` per-example loss.
    """
    _check_matching_floats([("q", q), ("reward", reward), ("discount", discount), ("next_value", next_value)])
    target = reward + discount * jax.lax.stop_gradient(next_value)
    return jnp.square(jax.lax.stop_gradient(target) - q)


@contract
def awr_weights(
    advantage: Float[ArrayLike, "*B"], *, inverse_temperature: RealScalar, max_weight: RealScalar = 100.0
) -> Float[Array, "*B"]:
    r"""Advantage weights of IQL's policy extraction (Eq. 7), clipped as in the official code.

    .. math:: w = \min\big(e^{\beta A},\ w_{max}\big),\qquad A = Q(s, a) - V(s).

    β is the inverse temperature (IQL: 3 on locomotion, 10 on AntMaze). The CPL paper's P-IQL
    config writes `beta: 0.3333` and divides by it, exp(A / 0.3333): the same β = 3.

    Args:
      advantage: `[...]` A(s, a) (gradient-stopped here).
      inverse_temperature: β >= 0 (0: plain behaviour cloning).
      max_weight: w_max > 0 (100 in the official IQL and CPL code).

    Returns:
      `[...]` the weights, without gradient.
    """
    _checks.check_float_array("advantage", advantage)
    for name, value in (("inverse_temperature", inverse_temperature), ("max_weight", max_weight)):
        _checks.check_scalar_hyperparameter(name, value)
    _checks.check_in_interval("inverse_temperature", inverse_temperature, 0.0, float("inf"), high_open=True)
    _checks.check_positive("max_weight", max_weight)
    advantage = jax.lax.stop_gradient(jnp.asarray(advantage))
    return jnp.minimum(jnp.exp(inverse_temperature * advantage), max_weight)


@contract
def awr_loss(
    log_prob: Float[ArrayLike, "*B"],
    advantage: Float[ArrayLike, "*B"],
    *,
    inverse_temperature: RealScalar,
    max_weight: RealScalar = 100.0,
) -> Float[Array, "*B"]:
    r"""Advantage-weighted regression onto the data's actions (IQL Eq. 7), per example.

    .. math:: L_\pi = -\min\big(e^{\beta (Q(s,a) - V(s))},\ w_{max}\big)\, \log \pi_\phi(a \mid s).

    For a deterministic actor pass log π = −‖μ(s) − a‖² (the official CPL code's P-IQL).

    Args:
      log_prob: `[...]` log π(a | s) of the data's actions under the policy being trained.
      advantage: `[...]` Q(s, a) − V(s) (gradient-stopped).
      inverse_temperature, max_weight: as in `awr_weights`.

    Returns:
      `[...]` per-example loss.
    """
    _check_matching_floats([("log_prob", log_prob), ("advantage", advantage)])
    return -awr_weights(advantage, inverse_temperature=inverse_temperature, max_weight=max_weight) * log_prob
