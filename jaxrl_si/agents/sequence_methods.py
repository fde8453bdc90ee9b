r"""How each self-improvement method turns one iteration's judged samples into a loss.

An iteration of `self_improve.SelfImprove` samples K responses to each of P prompts from the
current policy π_t, asks the judge about them (`Judged`), and then trains on rows built from
them. Two kinds of rows exist:

* **pairs** (`PairRows`, one per prompt: the best and the worst of its K samples by win rate;
  DPO, IPO, INPO, SPPO);
* **sequences** (`SequenceRows`, one per sample or per supervised example; RLOO, GRPO, LOOP,
  rejection-sampling fine-tuning, and the supervised baseline).

Every method takes the same number of gradient steps per iteration (`epochs x minibatches`), so
the supervised baseline `sft` (training on fresh ground-truth answers) is the equal-compute
control. All the maths is in `jaxrl_si.losses`; this module chooses the inputs:

| method | rows | loss (per row) | reference |
|---|---|---|---|
| `dpo`  | pairs | `dpo_loss` (β) + ν · NLL(y_w) / \|y_w\| (RPO, Pang et al. 2024, arXiv 2404.19733, Eq. 1, when ν > 0) | π_ref |
| `ipo`  | pairs | `ipo_loss` (τ) | π_ref |
| `inpo` | pairs | `inpo_loss` (η, τ) | π_ref and π_t |
| `sppo` | pairs | mean of `sppo_loss` on y_w and y_l with P̂ = win rate (η) | π_t |
| `rloo` | samples | `ppo_clip_loss` on sequence log-probs, `rloo_advantages` of r − β_KL · Σ_t (log π_t − log π_ref) | π_ref in the reward |
| `grpo` | samples | `grpo_loss` (ε, β_KL), `grpo_advantages` | π_ref (k3 KL) |
| `loop` | samples | `loop_loss` (ε), `loop_advantages` | none |
| `rest` | samples | token-mean NLL of the samples the verifier accepts (ReST-EM, Singh et al. 2023, arXiv 2312.06585, Sec. 3) | none |
| `sft`  | answers | token-mean NLL of fresh ground-truth answers (the equal-compute control) | none |

π_ref is the warm-started policy of iteration 0 (`reference="initial"`) or π_t
(`reference="previous"`, for DPO and IPO); π_t is the policy that sampled the iteration's data.
"""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array, Bool, Float, Int

from jaxrl_si import losses, nets, sequence

PAIRWISE = ("dpo", "ipo", "inpo", "sppo")
POLICY_GRADIENT = ("rloo", "grpo", "loop")
SUPERVISED = ("rest", "sft")
METHODS = PAIRWISE + POLICY_GRADIENT + SUPERVISED


class Judged(flax.struct.PyTreeNode):
    """One iteration's prompts, the K samples of each, and the judge's verdicts.

    prompts `[P, Lp]`, prompt_valid `[P, Lp]`, answers `[P, A]`; responses, response_mask and
    behaviour_logps (log π_t of each sampled token) `[P, K, N]`; rewards (the judge's scalar:
    verifier exact match, reward-model score, or oracle win rate) and win_rates (row means of the
    judge's preference matrix, self included) `[P, K]`; correct (the verifier's exact match,
    whatever the judge) `[P, K]`; chosen / rejected (argmax / argmin win rate) and pair_valid
    (the chosen one beats the rejected one, P(y_w ≻ y_l) > 1/2) `[P]`.
    """

    prompts: Int[Array, "P Lp"]
    prompt_valid: Bool[Array, "P Lp"]
    answers: Int[Array, "P A"]
    responses: Int[Array, "P K N"]
    response_mask: Bool[Array, "P K N"]
    behaviour_logps: Float[Array, "P K N"]
    rewards: Float[Array, "P K"]
    win_rates: Float[Array, "P K"]
    correct: Float[Array, "P K"]
    chosen: Int[Array, "P"]
    rejected: Int[Array, "P"]
    pair_valid: Bool[Array, "P"]


class SequenceRows(flax.struct.PyTreeNode):
    """Rows of single responses: prompt `[R, Lp]`, response / mask / behaviour and reference
    token log-probs `[R, N]`, one advantage and one weight per row `[R]`."""

    prompts: Int[Array, "R Lp"]
    prompt_valid: Bool[Array, "R Lp"]
    responses: Int[Array, "R N"]
    mask: Bool[Array, "R N"]
    behaviour_logps: Float[Array, "R N"]
    ref_logps: Float[Array, "R N"]
    advantages: Float[Array, "R"]
    weights: Float[Array, "R"]


class PairRows(flax.struct.PyTreeNode):
    """Rows of (chosen, rejected) pairs, one per prompt: `chosen` / `rejected` are `SequenceRows`
    (advantages unused; `weights` = pair_valid), `win_rates` `[R, 2]` their P̂, `prev_logps` and
    `ref_logps` `[R, 2]` summed log-probs under π_t and π_ref."""

    chosen: SequenceRows
    rejected: SequenceRows
    win_rates: Float[Array, "R 2"]
    prev_logps: Float[Array, "R 2"]
    ref_logps: Float[Array, "R 2"]


def take_sample(x: Array, index: Int[Array, "P"]) -> Array:
    """`x[p, index[p]]` for `[P, K, ...]` arrays: one sample per prompt."""
    return jnp.take_along_axis(x, index.reshape(-1, 1, *([1] * (x.ndim - 2))), axis=1)[:, 0]


def flatten_samples(judged: Judged) -> tuple[Array, Array, Array, Array]:
    """Prompts repeated K times and the samples, flattened to `[P K, ...]` rows (row = p K + k)."""
    k = judged.responses.shape[1]
    prompts = jnp.repeat(judged.prompts, k, axis=0)
    prompt_valid = jnp.repeat(judged.prompt_valid, k, axis=0)
    flat = lambda x: x.reshape(-1, *x.shape[2:])  # noqa: E731
    return prompts, prompt_valid, flat(judged.responses), flat(judged.response_mask)


def sample_advantages(method: str, rewards: Float[Array, "P K"], kl: Float[Array, "P K"], kl_coef) -> Float[Array, "P K"]:
    """Group advantages of the K samples of each prompt: RLOO with the KL in the reward, GRPO, LOOP."""
    if method == "rloo":
        return losses.rloo_advantages(rewards - kl_coef * kl)
    if method == "grpo":
        return losses.grpo_advantages(rewards)
    return losses.loop_advantages(rewards)


def token_mean(x: Float[Array, "R N"], mask: Bool[Array, "R N"]) -> Float[Array, "R"]:
    """(1 / |y|) Σ_t mask_t x_t per row (0 for an empty row)."""
    return jnp.sum(jnp.where(mask, x, 0.0), -1) / jnp.maximum(mask.sum(-1), 1)


def weighted_mean(x: Float[Array, "R"], weights: Float[Array, "R"]) -> Float[Array, ""]:
    """Σ w x / Σ w (0 when every weight is 0)."""
    return jnp.sum(weights * x) / jnp.maximum(weights.sum(), 1e-8)


def pair_loss(method: str, hparams, logps: Float[Array, "R 2"], rows: PairRows, chosen_length: Float[Array, "R"]) -> Float[Array, "R"]:
    """Per-pair loss of a pairwise method from the policy's summed log-probs `[R, 2]` (chosen, rejected)."""
    policy_c, policy_r = logps[:, 0], logps[:, 1]
    ref_c, ref_r = rows.ref_logps[:, 0], rows.ref_logps[:, 1]
    prev_c, prev_r = rows.prev_logps[:, 0], rows.prev_logps[:, 1]
    if method == "dpo":
        nll = -policy_c / jnp.maximum(chosen_length, 1.0)
        return losses.dpo_loss(policy_c, policy_r, ref_c, ref_r, beta=hparams.beta) + hparams.nll_coef * nll
    if method == "ipo":
        return losses.ipo_loss(policy_c, policy_r, ref_c, ref_r, tau=hparams.tau)
    if method == "inpo":
        return losses.inpo_loss(policy_c, policy_r, ref_c, ref_r, prev_c, prev_r, eta=hparams.eta, tau=hparams.tau)
    sppo = lambda policy, prev, p: losses.sppo_loss(policy, prev, p, eta=hparams.eta)  # noqa: E731
    return 0.5 * (sppo(policy_c, prev_c, rows.win_rates[:, 0]) + sppo(policy_r, prev_r, rows.win_rates[:, 1]))


def sequence_loss(method: str, hparams, token_logps: Float[Array, "R N"], rows: SequenceRows) -> Float[Array, "R"]:
    """Per-row loss of a policy-gradient or supervised method from the policy's token log-probs."""
    if method == "rloo":
        seq = lambda x: jnp.sum(jnp.where(rows.mask, x, 0.0), -1)  # noqa: E731
        return losses.ppo_clip_loss(seq(token_logps), seq(rows.behaviour_logps), rows.advantages, clip_eps=hparams.clip_eps)
    if method == "grpo":
        return losses.grpo_loss(
            token_logps, rows.behaviour_logps, rows.ref_logps, rows.advantages, rows.mask, clip_eps=hparams.clip_eps, kl_coef=hparams.kl_coef
        )
    if method == "loop":
        return losses.loop_loss(token_logps, rows.behaviour_logps, rows.advantages, rows.mask, clip_eps=hparams.clip_eps)
    return -token_mean(token_logps, rows.mask)


def uses_reference(method: str, reference: str) -> bool:
    """Whether the method reads log π_ref (so the iteration computes it)."""
    return method in ("dpo", "ipo", "inpo", "rloo", "grpo") and not (method in ("dpo", "ipo") and reference == "previous")


def sample_rows(judged: Judged, index) -> SequenceRows:
    """One sample per prompt (`index [P]`) as sequence rows (log-probs and weights filled later)."""
    responses, mask = take_sample(judged.responses, index), take_sample(judged.response_mask, index)
    zeros = jnp.zeros(responses.shape, jnp.float32)
    return SequenceRows(judged.prompts, judged.prompt_valid, responses, mask, zeros, zeros, zeros[:, 0], zeros[:, 0] + 1.0)


def supervised_rows(problems: sequence.Problems) -> SequenceRows:
    """Ground-truth answers + EOS as sequence rows (the NLL of `sft` and of the warm start)."""
    responses, mask = sequence.supervised_targets(problems)
    zeros = jnp.zeros(responses.shape, jnp.float32)
    return SequenceRows(problems.prompts, problems.prompt_valid, responses, mask, zeros, zeros, zeros[:, 0], zeros[:, 0] + 1.0)


def descend(model: nets.TransformerConfig, method: str, optimizer, hparams, params, opt_state, rows: PairRows | SequenceRows):
    """One Adam step on `method`'s weighted mean loss over `rows`; `(params, opt_state, loss)`."""

    def loss_fn(params):
        if isinstance(rows, PairRows):
            both = jax.tree.map(lambda a, b: jnp.concatenate([a, b]), rows.chosen, rows.rejected)
            summed = jnp.sum(nets.token_logps(params, model, both.prompts, both.prompt_valid, both.responses, both.mask), -1)
            logps = summed.reshape(2, -1).T
            per_row = pair_loss(method, hparams, logps, rows, rows.chosen.mask.sum(-1).astype(jnp.float32))
            return weighted_mean(per_row, rows.chosen.weights)
        token_logps = nets.token_logps(params, model, rows.prompts, rows.prompt_valid, rows.responses, rows.mask)
        return weighted_mean(sequence_loss(method, hparams, token_logps, rows), rows.weights)

    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss
