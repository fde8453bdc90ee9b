"""Preference losses: DPO (+cDPO), IPO, SPPO, INPO, CPL and the Bradley-Terry reward-model loss.

Conventions (shared by every function here):

* Arrays are positional, hyperparameters keyword-only; the output is per example, shape `[B]`
  (callers reduce, e.g. with `.mean()`).
* `*_logps` are sequence log-probabilities log pi(y | x), summed over the response's tokens
  (or, for CPL, per-step log pi(a_t | s_t) of shape `[B, T]`). `chosen` = preferred = y_w.
* With r(y) = log pi(y) - log pi_ref(y), the log-ratio margin is z = r(y_w) - r(y_l).
* The annotations are contracts (`jaxrl_si._contracts`): shapes and dtypes are checked on every
  call, at trace time under `jit`; hyperparameter ranges are checked when the value is concrete
  (a traced hyperparameter, e.g. one vmapped over a sweep, is not checked).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Bool, Float

from jaxrl_si import _checks
from jaxrl_si._contracts import RealScalar, contract

_PAIR_NAMES = ("policy_chosen_logps", "policy_rejected_logps", "ref_chosen_logps", "ref_rejected_logps")


def _log_ratio_margin(policy_chosen, policy_rejected, ref_chosen, ref_rejected):
    """z = [log pi(y_w) - log ref(y_w)] - [log pi(y_l) - log ref(y_l)], after checking shapes."""
    arrays = (policy_chosen, policy_rejected, ref_chosen, ref_rejected)
    _checks.check_float_arrays(list(zip(_PAIR_NAMES, arrays)), rank=1)
    return (policy_chosen - ref_chosen) - (policy_rejected - ref_rejected)


def _squared_target_loss(h, target):
    """(h - target)^2: the regression form shared by IPO, INPO and SPPO."""
    return jnp.square(h - target)


@contract
def dpo_loss(
    policy_chosen_logps: Float[ArrayLike, "B"],
    policy_rejected_logps: Float[ArrayLike, "B"],
    ref_chosen_logps: Float[ArrayLike, "B"],
    ref_rejected_logps: Float[ArrayLike, "B"],
    *,
    beta: RealScalar,
    label_smoothing: RealScalar = 0.0,
) -> Float[Array, "B"]:
    r"""Direct Preference Optimization loss, with conservative label smoothing (cDPO).

    Rafailov et al. 2023, "Direct Preference Optimization", arXiv 2305.18290, Eq. 7:

    .. math:: \ell = -\log \sigma(\beta z),\qquad
              z = \log\frac{\pi(y_w)}{\pi_{ref}(y_w)} - \log\frac{\pi(y_l)}{\pi_{ref}(y_l)}.

    With `label_smoothing` = eps (Mitchell 2023, "A note on DPO with noisy preferences", Eq. 3),
    the label is assumed flipped with probability eps:

    .. math:: \ell = -(1-\epsilon)\log\sigma(\beta z) - \epsilon\log\sigma(-\beta z).

    At eps = 0.5 the loss is symmetric in chosen/rejected (no preference information is left).
    Paper defaults: beta = 0.1 (0.5 for TL;DR summarisation), eps = 0. Note that TRL >= 0.29
    dropped eps from its "sigmoid" DPO loss; this function keeps the paper's cDPO.

    Args:
      policy_chosen_logps, policy_rejected_logps: `[B]` log pi(y_w | x), log pi(y_l | x).
      ref_chosen_logps, ref_rejected_logps: `[B]` the same under the frozen reference policy.
      beta: inverse temperature of the implicit reward, > 0.
      label_smoothing: assumed label-flip rate eps in [0, 0.5].

    Returns:
      `[B]` per-example loss.

    >>> import jax.numpy as jnp
    >>> zeros = jnp.zeros(2)
    >>> dpo_loss(zeros, zeros, zeros, zeros, beta=0.1)  # z = 0: loss = log 2
    Array([0.6931472, 0.6931472], dtype=float32)
    """
    z = _log_ratio_margin(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
    _checks.check_scalar_hyperparameter("beta", beta)
    _checks.check_positive("beta", beta)
    _checks.check_scalar_hyperparameter("label_smoothing", label_smoothing)
    _checks.check_in_interval("label_smoothing", label_smoothing, 0.0, 0.5)
    logits = beta * z
    return -(1.0 - label_smoothing) * jax.nn.log_sigmoid(logits) - label_smoothing * jax.nn.log_sigmoid(-logits)


@contract
def ipo_loss(
    policy_chosen_logps: Float[ArrayLike, "B"],
    policy_rejected_logps: Float[ArrayLike, "B"],
    ref_chosen_logps: Float[ArrayLike, "B"],
    ref_rejected_logps: Float[ArrayLike, "B"],
    *,
    tau: RealScalar,
) -> Float[Array, "B"]:
    r"""Identity Preference Optimisation loss.

    Azar et al. 2023, "A General Theoretical Paradigm to Understand Learning from Human
    Preferences", arXiv 2310.12036, Eq. 17 (sampled form of the IPO objective, Eq. 13):

    .. math:: \ell = \Big(z - \frac{1}{2\tau}\Big)^2,\qquad
              z = \log\frac{\pi(y_w)\,\pi_{ref}(y_l)}{\pi(y_l)\,\pi_{ref}(y_w)}.

    Unlike DPO, the optimum is a finite margin 1/(2 tau), so the KL regularisation to the
    reference survives deterministic preferences (the paper's argument, Sec. 4.2).

    Summed vs length-averaged log-probs: the paper (and the official DPO repository's
    `loss=ipo`) uses summed sequence log-probs, as this function does with whatever it is given.
    TRL's IPO divides each log-ratio by its completion length; to obtain it, pass
    `policy_chosen_logps / chosen_lengths` (and likewise for the other three arrays). The same
    tau then means a very different pull: with summed log-probs the target margin 1/(2 tau) is
    spread over the whole sequence, with averaged ones over a single token. TRL passes tau as
    its `beta` (default 0.1, target margin 5).

    Args:
      policy_chosen_logps, policy_rejected_logps: `[B]` log pi(y_w | x), log pi(y_l | x).
      ref_chosen_logps, ref_rejected_logps: `[B]` the same under the reference policy.
      tau: KL-regularisation strength, > 0 (no default in the paper).

    Returns:
      `[B]` per-example loss.

    >>> import jax.numpy as jnp
    >>> zeros = jnp.zeros(1)
    >>> ipo_loss(zeros, zeros, zeros, zeros, tau=0.5)  # (0 - 1/(2*0.5))^2 = 1
    Array([1.], dtype=float32)
    """
    z = _log_ratio_margin(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
    _checks.check_scalar_hyperparameter("tau", tau)
    _checks.check_positive("tau", tau)
    return _squared_target_loss(z, 1.0 / (2.0 * tau))


@contract
def sppo_loss(
    policy_logps: Float[ArrayLike, "B"],
    prev_logps: Float[ArrayLike, "B"],
    win_prob: Float[ArrayLike, "B"],
    *,
    eta: RealScalar,
) -> Float[Array, "B"]:
    r"""Self-Play Preference Optimization loss, one response at a time.

    Wu et al. 2024, "Self-Play Preference Optimization for Language Model Alignment",
    arXiv 2405.00675, Eq. 3.6 / Algorithm 1 (Eq. 3.7): the square-loss approximation of the
    multiplicative-weights update pi_{t+1}(y) ∝ pi_t(y) exp(eta P(y ≻ pi_t | x)) (Eq. 3.2),
    with the log-partition approximated by eta / 2:

    .. math:: \ell = \Big(\log\frac{\pi(y)}{\pi_t(y)} - \eta\big(\hat P(y \succ \pi_t) - \tfrac12\big)\Big)^2.

    The official code averages this loss over the chosen and rejected response of each prompt
    (`loss_type="sppo"`), with beta = 1 / eta = 1e-3 (eta = 1000) for LLMs; average the
    per-response output the same way. P-hat is typically the mean preference probability of y
    against K samples of pi_t (including y itself, which counts 1/2).

    Args:
      policy_logps: `[B]` log pi(y | x) under the policy being trained.
      prev_logps: `[B]` log pi_t(y | x) under the previous iterate (the fixed reference).
      win_prob: `[B]` estimated P(y ≻ pi_t | x), in [0, 1].
      eta: step size of the multiplicative-weights update, > 0.

    Returns:
      `[B]` per-response loss.
    """
    names = ("policy_logps", "prev_logps", "win_prob")
    _checks.check_float_arrays(list(zip(names, (policy_logps, prev_logps, win_prob))), rank=1)
    _checks.check_in_interval("win_prob", win_prob, 0.0, 1.0)
    _checks.check_scalar_hyperparameter("eta", eta)
    _checks.check_positive("eta", eta)
    return _squared_target_loss(policy_logps - prev_logps, eta * (win_prob - 0.5))


@contract
def inpo_loss(
    policy_chosen_logps: Float[ArrayLike, "B"],
    policy_rejected_logps: Float[ArrayLike, "B"],
    ref_chosen_logps: Float[ArrayLike, "B"],
    ref_rejected_logps: Float[ArrayLike, "B"],
    prev_chosen_logps: Float[ArrayLike, "B"],
    prev_rejected_logps: Float[ArrayLike, "B"],
    *,
    eta: RealScalar,
    tau: RealScalar,
) -> Float[Array, "B"]:
    r"""Iterative Nash Policy Optimization loss.

    Zhang et al. 2024, "Iterative Nash Policy Optimization: Aligning LLMs with General
    Preferences via No-Regret Learning", arXiv 2407.00617, Eq. 8 (Algorithm 1, line 5). Online
    mirror descent with step 1/eta on the KL(tau)-regularised preference game has the closed form
    (Eq. 5) pi_{t+1} ∝ exp(P(y ≻ pi_t) / eta) pi_ref^{tau/eta} pi_t^{1 - tau/eta}, which the
    loss regresses on pairs (y_w, y_l) ~ pi_t labelled by the preference oracle:

    .. math::
        h = \log\frac{\pi(y_w)}{\pi(y_l)} - \frac{\tau}{\eta}\log\frac{\pi_{ref}(y_w)}{\pi_{ref}(y_l)}
            - \frac{\eta-\tau}{\eta}\log\frac{\pi_t(y_w)}{\pi_t(y_l)},\qquad
        \ell = \Big(h - \frac{1}{2\eta}\Big)^2.

    Paper setting (App. B): eta = 0.005, tau = eta / 3, three iterations. With tau = eta the
    previous iterate drops out and the loss is IPO with tau_IPO = eta; tau = 0 is the
    paper's "w/o KL" ablation (SPPO-like, anchored only to pi_t).

    Args:
      policy_chosen_logps, policy_rejected_logps: `[B]` under the policy being trained.
      ref_chosen_logps, ref_rejected_logps: `[B]` under the fixed reference pi_ref.
      prev_chosen_logps, prev_rejected_logps: `[B]` under the previous iterate pi_t.
      eta: inverse OMD step size (1/eta is the learning rate of the game), > 0.
      tau: KL-regularisation strength towards pi_ref, in [0, eta] (so both weights are >= 0).

    Returns:
      `[B]` per-pair loss.
    """
    names = _PAIR_NAMES + ("prev_chosen_logps", "prev_rejected_logps")
    arrays = (
        policy_chosen_logps,
        policy_rejected_logps,
        ref_chosen_logps,
        ref_rejected_logps,
        prev_chosen_logps,
        prev_rejected_logps,
    )
    _checks.check_float_arrays(list(zip(names, arrays)), rank=1)
    for name, value in (("eta", eta), ("tau", tau)):
        _checks.check_scalar_hyperparameter(name, value)
    _checks.check_positive("eta", eta)
    if _checks.is_concrete(eta):
        _checks.check_in_interval("tau", tau, 0.0, float(eta))
    ref_weight = tau / eta
    h = (
        (policy_chosen_logps - policy_rejected_logps)
        - ref_weight * (ref_chosen_logps - ref_rejected_logps)
        - (1.0 - ref_weight) * (prev_chosen_logps - prev_rejected_logps)
    )
    return _squared_target_loss(h, 1.0 / (2.0 * eta))


def _discounted_masked_sum(logps, discount, mask):
    """sum_t discount^t * mask_t * logps_t over the last axis: `[B, T] -> [B]`."""
    steps = jnp.arange(logps.shape[-1], dtype=logps.dtype)
    weights = jnp.power(jnp.asarray(discount, logps.dtype), steps)
    if mask is not None:
        weights = weights * mask.astype(logps.dtype)
    return jnp.sum(weights * logps, axis=-1)


@contract
def cpl_loss(
    chosen_logps: Float[ArrayLike, "B T"],
    rejected_logps: Float[ArrayLike, "B T"],
    *,
    alpha: RealScalar,
    conservative_bias: RealScalar,
    discount: RealScalar = 1.0,
    mask: Bool[ArrayLike, "B T"] | Float[ArrayLike, "B T"] | None = None,
) -> Float[Array, "B"]:
    r"""Contrastive Preference Learning loss.

    Hejna et al. 2023, "Contrastive Preference Learning: Learning from Human Feedback without
    RL", arXiv 2310.13639, Sec. 3 (the regret preference model with the optimal advantage
    A*(s, a) = alpha log pi*(a | s), and its conservative-bias variant). With segment scores
    S = alpha sum_t gamma^t log pi(a_t | s_t):

    .. math:: \ell = -\log\frac{e^{S^+}}{e^{S^+} + e^{\lambda S^-}} = \operatorname{softplus}(\lambda S^- - S^+),

    where lambda in (0, 1] (`conservative_bias`) down-weights the rejected segment; lambda = 1
    is the unbiased loss. Official defaults (`configs/mw_state_dense/cpl.yaml`): alpha = 0.1,
    lambda = 0.5. The official code sums log-probs without discount (gamma = 1, the default
    here) and, for its deterministic actor, uses log pi := -||mu(s) - a||^2.

    Args:
      chosen_logps: `[B, T]` per-step log pi(a_t | s_t) along the preferred segment.
      rejected_logps: `[B, T]` the same along the other segment.
      alpha: temperature of the optimal advantage, > 0.
      conservative_bias: lambda in (0, 1].
      discount: gamma in (0, 1].
      mask: optional `[B, T]` (bool or 0/1 float), 1 on valid steps of both segments. Segments of
        different lengths can instead be zero-padded in the log-prob arrays.

    Returns:
      `[B]` per-pair loss.
    """
    names = ("chosen_logps", "rejected_logps")
    _checks.check_float_arrays(list(zip(names, (chosen_logps, rejected_logps))), rank=2)
    if mask is not None:
        _checks.check_flag_array("mask", mask, "chosen_logps", chosen_logps)
    for name, value in (("alpha", alpha), ("conservative_bias", conservative_bias), ("discount", discount)):
        _checks.check_scalar_hyperparameter(name, value)
    _checks.check_positive("alpha", alpha)
    _checks.check_in_interval("conservative_bias", conservative_bias, 0.0, 1.0, low_open=True)
    _checks.check_in_interval("discount", discount, 0.0, 1.0, low_open=True)
    score_chosen = alpha * _discounted_masked_sum(chosen_logps, discount, mask)
    score_rejected = alpha * _discounted_masked_sum(rejected_logps, discount, mask)
    return jax.nn.softplus(conservative_bias * score_rejected - score_chosen)


@contract
def bradley_terry_loss(
    chosen_rewards: Float[ArrayLike, "B"],
    rejected_rewards: Float[ArrayLike, "B"],
) -> Float[Array, "B"]:
    r"""Negative log-likelihood of the Bradley-Terry preference model, for reward models.

    Bradley & Terry 1952; as the RLHF reward-model loss in Ouyang et al. 2022 (InstructGPT),
    arXiv 2203.02155, Eq. 1:

    .. math:: \ell = -\log\sigma(r(y_w) - r(y_l)).

    Args:
      chosen_rewards, rejected_rewards: `[B]` scalar rewards of the preferred / other response.

    Returns:
      `[B]` per-pair loss.
    """
    names = ("chosen_rewards", "rejected_rewards")
    _checks.check_float_arrays(list(zip(names, (chosen_rewards, rejected_rewards))), rank=1)
    return -jax.nn.log_sigmoid(chosen_rewards - rejected_rewards)


@contract
def preference_metrics(
    policy_chosen_logps: Float[ArrayLike, "B"],
    policy_rejected_logps: Float[ArrayLike, "B"],
    ref_chosen_logps: Float[ArrayLike, "B"],
    ref_rejected_logps: Float[ArrayLike, "B"],
    *,
    beta: RealScalar,
) -> dict[str, Float[Array, ""]]:
    """The usual diagnostics of a pairwise preference update, as a flat dict of scalars.

    Implicit rewards (Rafailov et al. 2023, Sec. 5) r = beta (log pi(y) - log pi_ref(y)),
    gradient-stopped and averaged over the batch:

    * ``rewards/chosen``, ``rewards/rejected``: mean implicit reward of y_w and y_l;
    * ``rewards/margin``: mean of r(y_w) - r(y_l);
    * ``rewards/accuracy``: fraction of pairs with r(y_w) > r(y_l);
    * ``logps/chosen``, ``logps/rejected``: mean policy log-probabilities.
    """
    z = _log_ratio_margin(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
    _checks.check_scalar_hyperparameter("beta", beta)
    _checks.check_positive("beta", beta)
    sg = jax.lax.stop_gradient
    chosen = sg(beta * (policy_chosen_logps - ref_chosen_logps))
    rejected = sg(beta * (policy_rejected_logps - ref_rejected_logps))
    return {
        "rewards/chosen": chosen.mean(),
        "rewards/rejected": rejected.mean(),
        "rewards/margin": sg(beta * z).mean(),
        "rewards/accuracy": (sg(z) > 0).astype(z.dtype).mean(),
        "logps/chosen": sg(policy_chosen_logps).mean(),
        "logps/rejected": sg(policy_rejected_logps).mean(),
    }
