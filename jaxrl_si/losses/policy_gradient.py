"""Policy-gradient losses and advantages: REINFORCE, PPO, RLOO, GRPO, LOOP.

Conventions (shared by every function here):

* Arrays positional, hyperparameters keyword-only; outputs are per example (per action for
  PPO/REINFORCE, per sequence for GRPO/LOOP); callers reduce. Every loss is to be minimised.
* `logp` are log pi(a | s) (per token for the `[..., T]` sequence losses). Gradients flow only
  through `logp` (and `values` in the value losses): old/reference log-probs, advantages,
  returns and baselines are wrapped in `jax.lax.stop_gradient`, as in rlax. So
  `grpo_loss(logp, logp, ...)` is the usual one-update-per-sample case (ratio 1, gradient A).
* Group-based advantages (RLOO, GRPO, LOOP) take rewards `[..., K]`, K samples per prompt on
  the last axis.
* The annotations are contracts (`jaxrl_si._contracts`): shapes and dtypes are checked on every
  call, at trace time under `jit`; hyperparameter ranges only when concrete (traced
  hyperparameters, e.g. vmapped over a sweep, are not checked).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Bool, Float

from jaxrl_si import _checks
from jaxrl_si._contracts import RealScalar, contract

_Mask = Bool[ArrayLike, "*B T"] | Float[ArrayLike, "*B T"]
_LOWER_BOUNDS = ("paper", "reciprocal")


def _check_matching_floats(named, *, min_rank: int | None = None) -> None:
    """Every array floating-point (rank >= `min_rank`), all of the first one's shape."""
    for name, x in named:
        _checks.check_float_array(name, x, min_rank=min_rank)
    _checks.check_same_shape(named)


def _check_clip_eps(clip_eps) -> None:
    _checks.check_scalar_hyperparameter("clip_eps", clip_eps)
    _checks.check_in_interval("clip_eps", clip_eps, 0.0, float("inf"), high_open=True)


def _check_group(rewards) -> None:
    _checks.check_float_array("rewards", rewards, min_rank=1)
    if rewards.shape[-1] < 2:
        raise _checks.ArgumentValueError(
            f"`rewards` must hold K >= 2 samples per group on its last axis, got shape "
            f"{tuple(rewards.shape)}; a group of one has no baseline."
        )


def _clipped_surrogate(ratio, advantages, low, high):
    """min(rho A, clip(rho, low, high) A): the pessimistic PPO surrogate (to maximise)."""
    return jnp.minimum(ratio * advantages, jnp.clip(ratio, low, high) * advantages)


def _standardize(x, *, axis, ddof, eps, mask=None):
    """(x - mean) / (std + eps) over `axis`, restricted to `mask` (zeros outside it)."""
    weight = jnp.ones_like(x) if mask is None else mask.astype(x.dtype)
    x = jnp.where(weight > 0, x, 0.0)
    count = jnp.sum(weight, axis=axis, keepdims=True)
    mean = jnp.sum(weight * x, axis=axis, keepdims=True) / count
    var = jnp.sum(weight * jnp.square(x - mean), axis=axis, keepdims=True) / (count - ddof)
    return weight * (x - mean) / (jnp.sqrt(var) + eps)


def _check_ddof_eps(ddof, eps) -> None:
    if not isinstance(ddof, int) or ddof < 0:
        raise _checks.ArgumentValueError(f"`ddof` must be a non-negative Python int, got {ddof!r}.")
    _checks.check_scalar_hyperparameter("eps", eps)
    _checks.check_in_interval("eps", eps, 0.0, float("inf"), high_open=True)


@contract
def ppo_clip_loss(
    logp: Float[ArrayLike, "*B"],
    logp_old: Float[ArrayLike, "*B"],
    advantages: Float[ArrayLike, "*B"],
    *,
    clip_eps: RealScalar,
) -> Float[Array, "*B"]:
    r"""PPO clipped surrogate loss, per action.

    Schulman et al. 2017, "Proximal Policy Optimization Algorithms", arXiv 1707.06347, Eq. 7:

    .. math:: \ell = -\min\big(\rho A,\ \mathrm{clip}(\rho, 1-\epsilon, 1+\epsilon) A\big),
              \qquad \rho = \exp(\log\pi - \log\pi_{old}).

    The gradient is zero where the clipped term is the active minimum (rho > 1 + eps with A > 0,
    or rho < 1 - eps with A < 0). Paper default: eps = 0.2.

    Args:
      logp, logp_old: `[...]` log pi(a | s) under the current and the behaviour policy.
      advantages: `[...]` advantage estimates (e.g. `gae_advantages`, normalised or not).
      clip_eps: clip range eps >= 0.

    Returns:
      `[...]` per-action loss.

    >>> import jax.numpy as jnp
    >>> ppo_clip_loss(jnp.log(jnp.array([1.5])), jnp.zeros(1), jnp.ones(1), clip_eps=0.2)
    Array([-1.2], dtype=float32)
    """
    _check_matching_floats([("logp", logp), ("logp_old", logp_old), ("advantages", advantages)])
    _check_clip_eps(clip_eps)
    ratio = jnp.exp(logp - jax.lax.stop_gradient(logp_old))
    return -_clipped_surrogate(ratio, jax.lax.stop_gradient(advantages), 1.0 - clip_eps, 1.0 + clip_eps)


@contract
def value_loss(values: Float[ArrayLike, "*B"], returns: Float[ArrayLike, "*B"]) -> Float[Array, "*B"]:
    r"""Squared-error value loss 0.5 (V - R)^2, per state (the unclipped PPO value loss)."""
    _check_matching_floats([("values", values), ("returns", returns)])
    return 0.5 * jnp.square(values - jax.lax.stop_gradient(returns))


@contract
def clipped_value_loss(
    values: Float[ArrayLike, "*B"],
    values_old: Float[ArrayLike, "*B"],
    returns: Float[ArrayLike, "*B"],
    *,
    clip_eps: RealScalar,
) -> Float[Array, "*B"]:
    r"""PPO's clipped value loss, per state.

    .. math:: \ell = \tfrac12 \max\big((V - R)^2,\
              (V_{old} + \mathrm{clip}(V - V_{old}, -\epsilon, \epsilon) - R)^2\big).

    Not in the PPO paper's equations (Eq. 9 uses the plain (V - R)^2); it is the OpenAI
    baselines / PureJaxRL / CleanRL (`clip_vloss`) form, with the policy's eps. Use `value_loss`
    for the paper's loss.

    Args:
      values, values_old: `[...]` V(s) under the current and the behaviour-time critic.
      returns: `[...]` value targets (e.g. the `returns` of `gae_advantages`).
      clip_eps: clip range eps >= 0 on the value change.

    Returns:
      `[...]` per-state loss.
    """
    _check_matching_floats([("values", values), ("values_old", values_old), ("returns", returns)])
    _check_clip_eps(clip_eps)
    values_old, returns = jax.lax.stop_gradient((values_old, returns))
    clipped = values_old + jnp.clip(values - values_old, -clip_eps, clip_eps)
    return 0.5 * jnp.maximum(jnp.square(values - returns), jnp.square(clipped - returns))


@contract
def normalize_advantages(
    advantages: Float[ArrayLike, "*B"],
    mask: Bool[ArrayLike, "*B"] | Float[ArrayLike, "*B"] | None = None,
    *,
    ddof: int = 0,
    eps: RealScalar = 1e-8,
) -> Float[Array, "*B"]:
    r"""Standardise advantages over all their entries: (A - mean A) / (std A + eps).

    Per-minibatch normalisation used by PPO implementations (not in the paper). Defaults follow
    PureJaxRL (`jnp.std`, ddof = 0, eps = 1e-8); CleanRL's `torch.std` is ddof = 1.

    Args:
      advantages: `[...]` advantages; the statistics are taken over every entry.
      mask: optional `[...]` bool or 0/1 float; statistics over masked-in entries only, and
        masked-out entries of the output are 0.
      ddof: delta degrees of freedom of the std (0 or 1 in practice).
      eps: added to the std, >= 0.

    Returns:
      `[...]` normalised advantages.
    """
    _checks.check_float_array("advantages", advantages)
    if mask is not None:
        _checks.check_flag_array("mask", mask, "advantages", advantages)
    _check_ddof_eps(ddof, eps)
    if mask is None and advantages.size <= ddof:
        raise _checks.ArgumentValueError(
            f"`advantages` needs more than ddof={ddof} entries, got shape {advantages.shape}."
        )
    axes = tuple(range(advantages.ndim))
    return _standardize(advantages, axis=axes, ddof=ddof, eps=eps, mask=mask)


@contract
def categorical_entropy(logits: Float[ArrayLike, "*B A"]) -> Float[Array, "*B"]:
    r"""Entropy H = -sum_a pi(a) log pi(a) of softmax(logits) over the last axis.

    Entries with logit -inf (masked actions) contribute 0, with finite gradients.
    """
    _checks.check_float_array("logits", logits, min_rank=1)
    log_p = jax.nn.log_softmax(logits, axis=-1)
    p = jnp.exp(log_p)
    return -jnp.sum(p * jnp.where(p > 0, log_p, 0.0), axis=-1)


@contract
def gaussian_entropy(log_std: Float[ArrayLike, "*B A"]) -> Float[Array, "*B"]:
    r"""Entropy of a diagonal Gaussian: H = sum_i [log sigma_i + (1 + log 2 pi) / 2] (last axis)."""
    _checks.check_float_array("log_std", log_std, min_rank=1)
    return jnp.sum(log_std + 0.5 * (1.0 + math.log(2.0 * math.pi)), axis=-1)


@contract
def reinforce_loss(
    logp: Float[ArrayLike, "*B"],
    returns: Float[ArrayLike, "*B"],
    baseline: Float[ArrayLike, "*B"] | None = None,
) -> Float[Array, "*B"]:
    r"""REINFORCE with a baseline, per action: -(R - b) log pi(a | s).

    Williams 1992, "Simple statistical gradient-following algorithms for connectionist
    reinforcement learning", Machine Learning 8 (1992), the reinforcement baseline b:
    grad = (R - b) grad log pi. `R - b` is not differentiated, so a learned baseline must be
    trained by its own loss (e.g. `value_loss`). `baseline=None` means b = 0.

    Args:
      logp: `[...]` log pi(a | s).
      returns: `[...]` the return R following the action.
      baseline: optional `[...]` state-dependent baseline b(s).

    Returns:
      `[...]` per-action loss.
    """
    named = [("logp", logp), ("returns", returns)]
    _check_matching_floats(named if baseline is None else named + [("baseline", baseline)])
    advantages = returns if baseline is None else returns - baseline
    return -jax.lax.stop_gradient(advantages) * logp


@contract
def rloo_advantages(rewards: Float[ArrayLike, "*B K"]) -> Float[Array, "*B K"]:
    r"""REINFORCE leave-one-out advantages within each group of K samples (last axis).

    Kool et al. 2019, "Buy 4 REINFORCE samples, get a baseline for free!" (ICLR workshop);
    Ahmadian et al. 2024, "Back to Basics", arXiv 2402.14740 (RLOO):

    .. math:: A_i = R_i - \frac{1}{K-1}\sum_{j \ne i} R_j = \frac{K}{K-1}(R_i - \bar R).

    Args:
      rewards: `[..., K]` rewards of K >= 2 samples per prompt.

    Returns:
      `[..., K]` advantages (they sum to 0 over each group).

    >>> import jax.numpy as jnp
    >>> rloo_advantages(jnp.array([1.0, 2.0, 6.0]))
    Array([-3. , -1.5,  4.5], dtype=float32)
    """
    _check_group(rewards)
    k = rewards.shape[-1]
    return k / (k - 1) * (rewards - jnp.mean(rewards, axis=-1, keepdims=True))


@contract
def loop_advantages(rewards: Float[ArrayLike, "*B K"]) -> Float[Array, "*B K"]:
    r"""LOOP's leave-one-out advantages: the same estimator as `rloo_advantages` (an alias).

    Chen et al. 2025, "Reinforcement Learning for Long-Horizon Interactive LLM Agents", arXiv
    2502.01600, Eq. 3: A_i = R_i - 1/(K-1) sum_{j != i} R_j, without std normalisation (the
    paper reports that normalising, as GRPO does, hurts).
    """
    return rloo_advantages(rewards)


@contract
def grpo_advantages(
    rewards: Float[ArrayLike, "*B G"], *, ddof: int = 1, eps: RealScalar = 1e-4
) -> Float[Array, "*B G"]:
    r"""GRPO outcome-supervision advantages: rewards standardised within each group (last axis).

    Shao et al. 2024, "DeepSeekMath", arXiv 2402.03300, Sec. 4.1.2:
    A_i = (r_i - mean(r)) / std(r), given to every token of output i. The paper does not say
    which std or epsilon; the defaults follow TRL's `GRPOTrainer` (Bessel-corrected std,
    ddof = 1, and (r - mean) / (std + 1e-4)). A group of equal rewards gives A = 0 for eps > 0.

    Args:
      rewards: `[..., G]` rewards of G >= 2 outputs per question.
      ddof: delta degrees of freedom of the std.
      eps: added to the std, >= 0.

    Returns:
      `[..., G]` advantages.
    """
    _check_group(rewards)
    _check_ddof_eps(ddof, eps)
    return _standardize(rewards, axis=-1, ddof=ddof, eps=eps)


@contract
def k3_kl(logp: Float[ArrayLike, "*B"], logp_ref: Float[ArrayLike, "*B"]) -> Float[Array, "*B"]:
    r"""Per-token k3 estimate of KL(pi || pi_ref) from samples of pi: always >= 0, unbiased.

    DeepSeekMath (arXiv 2402.03300) Eq. 4, after Schulman's "Approximating KL divergence" (2020):

    .. math:: \hat D = \frac{\pi_{ref}}{\pi} - \log\frac{\pi_{ref}}{\pi} - 1.

    Args:
      logp, logp_ref: `[...]` log-probabilities of the sampled tokens under pi and pi_ref.

    Returns:
      `[...]` per-token estimate (0 where logp == logp_ref).
    """
    _check_matching_floats([("logp", logp), ("logp_ref", logp_ref)])
    log_ratio = jax.lax.stop_gradient(logp_ref) - logp
    return jnp.expm1(log_ratio) - log_ratio


def _check_sequence_inputs(named_logps, advantages, mask) -> None:
    """`[..., T]` token log-probs of one shape, `[...]` advantages, `[..., T]` mask."""
    _check_matching_floats(named_logps, min_rank=1)
    first_name, first = named_logps[0]
    _checks.check_float_array("advantages", advantages)
    if advantages.shape != first.shape[:-1]:
        raise _checks.ArgumentValueError(
            f"`advantages` must have shape {tuple(first.shape[:-1])} (one per sequence of "
            f"`{first_name}` {tuple(first.shape)}), got {tuple(advantages.shape)}."
        )
    _checks.check_flag_array("mask", mask, first_name, first)


def _masked_token_mean(per_token, mask):
    """(1 / |o_i|) sum_t mask_t x_t over the last axis; 0 for an all-masked sequence."""
    mask = mask.astype(per_token.dtype)
    return jnp.sum(mask * per_token, axis=-1) / jnp.maximum(jnp.sum(mask, axis=-1), 1.0)


def _token_surrogate(logp, logp_old, advantages, mask, low, high):
    """Per-token clipped surrogate with a sequence-level advantage; padded tokens give 0."""
    valid = mask.astype(bool)
    log_ratio = jnp.where(valid, logp - jax.lax.stop_gradient(logp_old), 0.0)
    adv = jax.lax.stop_gradient(advantages)[..., None]
    return _clipped_surrogate(jnp.exp(log_ratio), adv, low, high)


@contract
def grpo_loss(
    logp: Float[ArrayLike, "*B T"],
    logp_old: Float[ArrayLike, "*B T"],
    logp_ref: Float[ArrayLike, "*B T"],
    advantages: Float[ArrayLike, "*B"],
    mask: _Mask,
    *,
    clip_eps: RealScalar,
    kl_coef: RealScalar,
) -> Float[Array, "*B"]:
    r"""GRPO loss per sequence: token-mean clipped surrogate minus a k3 KL penalty, negated.

    Shao et al. 2024, "DeepSeekMath", arXiv 2402.03300, Eq. 3 (the summand for output o_i):

    .. math:: \ell_i = -\frac{1}{|o_i|}\sum_{t=1}^{|o_i|}\Big[\min\big(\rho_t A_i,\
              \mathrm{clip}(\rho_t, 1-\epsilon, 1+\epsilon) A_i\big) - \beta\, \hat D_t\Big],

    with rho_t = pi(o_t) / pi_old(o_t) and D_t the k3 estimate (`k3_kl`, Eq. 4). The mean over
    the G outputs of a group (1/G sum_i) is left to the caller. Paper: beta = 0.04; eps is not
    stated (TRL: 0.2). TRL's default `loss_type="dapo"` instead divides the token sum by the
    number of tokens in the batch: compute it from `k3_kl` and `ppo_clip_loss` if wanted.

    Args:
      logp, logp_old, logp_ref: `[..., T]` token log-probs under pi, pi_old and pi_ref.
      advantages: `[...]` one advantage per sequence (e.g. `grpo_advantages`).
      mask: `[..., T]` bool or 0/1 float, 1 on completion tokens; padding may hold any value.
      clip_eps: clip range eps >= 0.
      kl_coef: KL coefficient beta >= 0.

    Returns:
      `[...]` per-sequence loss.
    """
    named = [("logp", logp), ("logp_old", logp_old), ("logp_ref", logp_ref)]
    _check_sequence_inputs(named, advantages, mask)
    _check_clip_eps(clip_eps)
    _checks.check_scalar_hyperparameter("kl_coef", kl_coef)
    _checks.check_in_interval("kl_coef", kl_coef, 0.0, float("inf"), high_open=True)
    surrogate = _token_surrogate(logp, logp_old, advantages, mask, 1.0 - clip_eps, 1.0 + clip_eps)
    valid = mask.astype(bool)
    kl = k3_kl(jnp.where(valid, logp, 0.0), jnp.where(valid, logp_ref, 0.0))
    return -_masked_token_mean(surrogate - kl_coef * kl, mask)


@contract
def loop_loss(
    logp: Float[ArrayLike, "*B T"],
    logp_old: Float[ArrayLike, "*B T"],
    advantages: Float[ArrayLike, "*B"],
    mask: _Mask,
    *,
    clip_eps: RealScalar,
    lower_bound: str = "paper",
) -> Float[Array, "*B"]:
    r"""LOOP loss per rollout: per-token PPO clipped surrogate, averaged over the rollout's tokens.

    Chen et al. 2025, arXiv 2502.01600, Eq. 5 (no KL term, no value network):

    .. math:: \ell_i = -\frac{1}{|y_i|}\sum_t \min\big(\rho_t A_i,\
              \mathrm{clip}(\rho_t, l, 1+\epsilon) A_i\big),

    with l = 1 - eps (`lower_bound="paper"`) or l = 1 / (1 + eps) (`lower_bound="reciprocal"`,
    what the official code `apple/ml-loop` uses: a ratio bound symmetric in log space).
    The official code uses eps = 0.1.

    Args:
      logp, logp_old: `[..., T]` token log-probs under pi and the sampling policy.
      advantages: `[...]` one advantage per rollout (e.g. `loop_advantages`).
      mask: `[..., T]` bool or 0/1 float, 1 on the policy's own tokens.
      clip_eps: clip range eps >= 0.
      lower_bound: `"paper"` or `"reciprocal"`.

    Returns:
      `[...]` per-rollout loss.
    """
    _check_sequence_inputs([("logp", logp), ("logp_old", logp_old)], advantages, mask)
    _check_clip_eps(clip_eps)
    if lower_bound not in _LOWER_BOUNDS:
        raise _checks.ArgumentValueError(
            f"`lower_bound` must be one of {_LOWER_BOUNDS}, got {lower_bound!r}."
        )
    low = 1.0 - clip_eps if lower_bound == "paper" else 1.0 / (1.0 + clip_eps)
    surrogate = _token_surrogate(logp, logp_old, advantages, mask, low, 1.0 + clip_eps)
    return -_masked_token_mean(surrogate, mask)
