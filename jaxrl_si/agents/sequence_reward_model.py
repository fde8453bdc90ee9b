r"""A Bradley-Terry reward model over responses, fitted to an annotator's labels of a policy's samples.

The reward model is a `nets.CausalTransformer` with a scalar head, read at the last real token
(`nets.sequence_scores`). It learns from pairs of two different samples of one prompt, labelled
by one query each to the "bt" annotator of `jaxrl_si.sequence` (Bradley-Terry on digit
accuracy), with `losses.bradley_terry_loss` (InstructGPT, Ouyang et al. 2022, arXiv 2203.02155,
Eq. 1): ℓ = −log σ(r(x, y_w) − r(x, y_l)). `self_improve.SelfImprove.begin` fits it on π_0's
samples when the judge is `reward_model`.
"""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array, Bool, Float, Int, PRNGKeyArray

from jaxrl_si import losses, nets, preferences, sequence
from jaxrl_si.layout import Constrain


class LabelledPairs(flax.struct.PyTreeNode):
    """`n` labelled pairs: the prompts, the preferred and the other response `[n, N]` with their
    masks, and the digit-accuracy gap of preferred over other `[n]` (0: the annotator guessed)."""

    problems: sequence.Problems
    chosen: Int[Array, "n N"]
    chosen_mask: Bool[Array, "n N"]
    rejected: Int[Array, "n N"]
    rejected_mask: Bool[Array, "n N"]
    accuracy_gap: Float[Array, "n"]


def labelled_pairs(problems: sequence.Problems, responses: Int[Array, "P K N"], mask: Bool[Array, "P K N"], key: PRNGKeyArray, n: int) -> LabelledPairs:
    """`n` pairs of two different samples of a random prompt, each labelled by one "bt" query."""
    prompts, samples = responses.shape[:2]
    key_rows, key_i, key_j, key_label = jax.random.split(key, 4)
    rows = jax.random.randint(key_rows, (n,), 0, prompts)
    i = jax.random.randint(key_i, (n,), 0, samples)
    j = (i + jax.random.randint(key_j, (n,), 1, samples)) % samples
    chosen_problems = jax.tree.map(lambda x: x[rows], problems)
    trajectories = lambda s: sequence.response_trajectories(responses[rows, s], mask[rows, s], chosen_problems.answers)  # noqa: E731
    first_wins = preferences.sample_preferences(sequence.response_oracle("bt"), key_label, trajectories(i), trajectories(j)) > 0.5
    chosen, rejected = jnp.where(first_wins, i, j), jnp.where(first_wins, j, i)
    gap = trajectories(chosen).returns - trajectories(rejected).returns
    return LabelledPairs(chosen_problems, responses[rows, chosen], mask[rows, chosen], responses[rows, rejected], mask[rows, rejected], gap)


def score_margins(params, model: nets.TransformerConfig, pairs: LabelledPairs) -> Float[Array, "n"]:
    """r(x, y_w) − r(x, y_l) for every pair."""
    score = lambda y, m: nets.sequence_scores(params, model, pairs.problems.prompts, pairs.problems.prompt_valid, y, m)  # noqa: E731
    return score(pairs.chosen, pairs.chosen_mask) - score(pairs.rejected, pairs.rejected_mask)


def ranking_accuracy(params, model: nets.TransformerConfig, pairs: LabelledPairs) -> Float[Array, ""]:
    """Of the pairs whose digit accuracies differ, the fraction the model ranks the more accurate higher (chance: ½)."""
    decided = pairs.accuracy_gap != 0
    agrees = (score_margins(params, model, pairs) > 0) == (pairs.accuracy_gap > 0)
    return jnp.sum(decided & agrees) / jnp.maximum(decided.sum(), 1)


def fit_reward_model(
    model: nets.TransformerConfig,
    params,
    problems: sequence.Problems,
    responses: Int[Array, "P K N"],
    mask: Bool[Array, "P K N"],
    key_steps: PRNGKeyArray,
    key_held_out: PRNGKeyArray,
    *,
    learning_rate,
    max_grad_norm,
    steps: int,
    batch_size: int,
    constrain: Constrain,
) -> tuple[object, dict[str, Array]]:
    """`steps` Adam steps on fresh labelled pairs of the samples (`batch_size` a step), then the
    ranking accuracy on as many held-out pairs as prompts; `(params, metrics)`."""
    optimizer = optax.chain(optax.clip_by_global_norm(max_grad_norm), optax.adam(learning_rate))

    def step(carry, key):
        params, opt_state = carry
        pairs = constrain(labelled_pairs(problems, responses, mask, key, batch_size))
        loss_fn = lambda p: losses.bradley_terry_loss(score_margins(p, model, pairs), jnp.zeros(batch_size)).mean()  # noqa: E731
        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), loss

    (params, _), loss = jax.lax.scan(step, (params, optimizer.init(params)), jax.random.split(key_steps, steps))
    held_out = labelled_pairs(problems, responses, mask, key_held_out, responses.shape[0])
    return params, {"reward_model/loss": loss[-1], "reward_model/accuracy": ranking_accuracy(params, model, held_out)}
