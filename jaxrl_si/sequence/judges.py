r"""Verifiers and preference oracles over sampled responses to `sequence.tasks` problems.

A response is a row of N sampled tokens, `responses [..., N]` int, with `mask [..., N]` True up
to and including its first EOS and False after; the right answer is `answers [..., A]` (no EOS),
and N ≥ A + 1 (a task's `max_new_tokens`). Only the first A + 1 tokens can decide a score: a
right response is the A answer tokens then EOS, so anything later is after a wrong token.
Masked-out tokens count as PAD, which is never right.

The verifiers are per-response scores in [0, 1]:

| function           | score                                                              |
|--------------------|--------------------------------------------------------------------|
| `exact_match`      | 1 iff the response is the answer then EOS                          |
| `digit_accuracy`   | the fraction of the A answer positions that hold the right token   |
| `response_features`| (leading-half accuracy, trailing-half accuracy, well-formedness)   |

The preference oracles are `jaxrl_si.preferences`' own, unchanged: a response becomes a
length-1 trajectory (T = 1) whose return is its digit accuracy and whose features are
`response_features` (`as_trajectories`), so `preference_matrix`, `sample_preferences` and
every oracle apply as they do to env rollouts. `RESPONSE_ORACLES` holds presets at this
scale; `response_win_rates` is SPPO's estimate of P(y ≻ π_t | x) from K samples.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Bool, Float, Int

from jaxrl_si import _checks
from jaxrl_si.errors import ConfigError
from jaxrl_si.preferences.oracles import (
    AnnotatorMixture,
    BradleyTerry,
    HardLabels,
    LabelFlip,
    MajorityVote,
    Oracle,
    Thurstone,
    Trajectories,
    preference_matrix,
)
from jaxrl_si.sequence.tasks import VOCAB

_DIGIT_0 = VOCAB.token_id("0")
_DIGIT_9 = VOCAB.token_id("9")

FEATURE_NAMES = ("leading_accuracy", "trailing_accuracy", "well_formed")


def _check_integer(name: str, x) -> None:
    if not hasattr(x, "dtype") or not hasattr(x, "shape") or not jnp.issubdtype(x.dtype, jnp.integer):
        raise _checks.ArgumentTypeError(f"`{name}` must be an integer array of token ids, got {getattr(x, 'dtype', type(x).__name__)}.")
    if x.ndim < 1:
        raise _checks.ArgumentValueError(f"`{name}` must have a token axis last, got a scalar.")


def _check_responses(responses, mask, answers) -> None:
    """Integer tokens, a flag mask shaped like `responses`, N ≥ A + 1, answers broadcasting to the batch."""
    _check_integer("responses", responses)
    _check_integer("answers", answers)
    _checks.check_flag_array("mask", mask, "responses", responses)
    n, a = responses.shape[-1], answers.shape[-1]
    if n < a + 1:
        raise _checks.ArgumentValueError(
            f"`responses` has N = {n} tokens but the answers have A = {a}: N must be >= A + 1 "
            f"(the answer then EOS; sample the task's max_new_tokens)."
        )
    batch = responses.shape[:-1]
    try:
        fits = np.broadcast_shapes(answers.shape[:-1], batch) == batch
    except ValueError:
        fits = False
    if not fits:
        raise _checks.ArgumentValueError(
            f"`answers` has shape {tuple(answers.shape)}; its batch shape must broadcast to the responses' "
            f"batch shape {tuple(batch)} (responses {tuple(responses.shape)})."
        )


def _visible(responses, mask, answers) -> Int[Array, "*batch A+1"]:
    """The first A + 1 tokens of each response, PAD where masked out (after checking the arguments)."""
    _check_responses(responses, mask, answers)
    width = answers.shape[-1] + 1
    return jnp.where(jnp.asarray(mask[..., :width], bool), responses[..., :width], VOCAB.pad_id)


def exact_match(
    responses: Int[ArrayLike, "*batch N"], mask: Bool[ArrayLike, "*batch N"], answers: Int[ArrayLike, "*#batch A"]
) -> Float[Array, "*batch"]:
    """1.0 iff the response is exactly the A answer tokens then EOS, else 0.0.

    A response without EOS, with EOS early, or with an extra token before EOS is wrong.

    Args:
      responses: `[..., N]` sampled token ids, N ≥ A + 1.
      mask: `[..., N]` True up to and including the first EOS.
      answers: `[..., A]` the right answers (batch dims broadcast to the responses').

    Returns:
      `[...]` float32 in {0, 1}.

    >>> import jax.numpy as jnp
    >>> answer = jnp.array([2, 7])                                  # "05"
    >>> responses = jnp.array([[2, 7, 1, 0], [2, 7, 7, 1]])        # "05"EOS, "055"EOS
    >>> exact_match(responses, jnp.array([[1, 1, 1, 0], [1, 1, 1, 1]], bool), answer)
    Array([1., 0.], dtype=float32)
    """
    tokens = _visible(responses, mask, answers)
    right = jnp.all(tokens[..., :-1] == answers, axis=-1) & (tokens[..., -1] == VOCAB.eos_id)
    return right.astype(jnp.float32)


def digit_accuracy(
    responses: Int[ArrayLike, "*batch N"], mask: Bool[ArrayLike, "*batch N"], answers: Int[ArrayLike, "*#batch A"]
) -> Float[Array, "*batch"]:
    r"""Partial credit: the fraction of the A answer positions whose token is right,

    .. math:: s = \frac{1}{A} \sum_{i < A} 1[m_i \wedge y_i = a_i].

    Position i of the response is compared with answer position i; a masked-out or PAD token is
    wrong. EOS is not required: s = 1 iff the first A tokens are the answer, whatever follows
    (`exact_match` also asks for the EOS). Shapes as in `exact_match`; `[...]` float32 in [0, 1].
    """
    tokens = _visible(responses, mask, answers)
    return jnp.mean(tokens[..., :-1] == answers, axis=-1, dtype=jnp.float32)


def response_features(
    responses: Int[ArrayLike, "*batch N"], mask: Bool[ArrayLike, "*batch N"], answers: Int[ArrayLike, "*#batch A"]
) -> Float[Array, "*batch 3"]:
    """Three criteria a grader may judge a response by, each in [0, 1] (`FEATURE_NAMES`):

    0. leading accuracy: the fraction right of the first ⌊A/2⌋ answer positions (for addition
       the most significant digits, the magnitude a skimming grader checks; for sort the
       smallest elements);
    1. trailing accuracy: the same over the other ⌈A/2⌉ positions (the units and carries a
       grader adding by hand from the right checks first; the largest elements);
    2. well-formedness: the fraction of the A + 1 format slots that are right, a digit at each
       answer position and EOS right after; 1 iff the response is A digits then EOS, so a
       response cut short, padded with other symbols or running on loses credit.

    Each criterion ranks responses transitively, but a majority vote of three annotators, each
    preferring the larger value of one of them (`response_oracle("majority")`), cycles: with
    answer `0579`, y_1 = `05111` (no EOS) has features (1, 0, 0.8), y_2 = `0,79,` (½, 1, 0.6)
    and y_3 = `1171`EOS (0, ½, 1). y_1 ≻ y_2 (leading, format), y_2 ≻ y_3 (leading, trailing),
    y_3 ≻ y_1 (trailing, format): a Condorcet cycle over responses each right in its own way.
    Shapes as in `exact_match`; returns `[..., 3]` float32.
    """
    tokens = _visible(responses, mask, answers)
    digits = tokens[..., :-1]
    right = digits == answers
    half = answers.shape[-1] // 2
    slots = jnp.concatenate([(digits >= _DIGIT_0) & (digits <= _DIGIT_9), tokens[..., -1:] == VOCAB.eos_id], axis=-1)
    criteria = (right[..., :half], right[..., half:], slots)
    return jnp.stack([jnp.mean(c, axis=-1, dtype=jnp.float32) for c in criteria], axis=-1)


def as_trajectories(score: Float[ArrayLike, "*batch"], features: Float[ArrayLike, "*batch F"]) -> Trajectories:
    """Responses as length-1 trajectories: reward `[..., 1]` = score, features `[..., 1, F]`."""
    _checks.check_float_array("score", score)
    _checks.check_float_array("features", features, rank=jnp.ndim(score) + 1)
    if features.shape[:-1] != score.shape:
        raise _checks.ArgumentValueError(
            f"`features` has shape {tuple(features.shape)}; it must be score's shape {tuple(score.shape)} plus a feature axis."
        )
    return Trajectories(reward=score[..., None], features=features[..., None, :])


def response_trajectories(
    responses: Int[ArrayLike, "*batch N"], mask: Bool[ArrayLike, "*batch N"], answers: Int[ArrayLike, "*#batch A"]
) -> Trajectories:
    """Responses as the trajectories the oracles compare: return = `digit_accuracy`, features =
    `response_features` (T = 1)."""
    return as_trajectories(digit_accuracy(responses, mask, answers), response_features(responses, mask, answers))


_ANNOTATORS = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))  # one criterion each

# Scores are in [0, 1]; one more right digit out of four (+0.25) is a 73 % preference: σ(1).
_SCALE = 0.25

RESPONSE_ORACLES: dict[str, Oracle] = {
    "bt": BradleyTerry(temperature=_SCALE),
    "hard": HardLabels(),
    "thurstone": Thurstone(noise_std=_SCALE),
    "flip": LabelFlip(flip_rate=0.2),
    "mixture": AnnotatorMixture(_ANNOTATORS, (1.0, 1.0, 1.0), temperature=_SCALE),
    "majority": MajorityVote(_ANNOTATORS),
}
"""Preset oracles over responses: Markovian on digit accuracy (`bt`, `hard`, `thurstone`), noisy
(`flip`: 20 % of hard labels flipped; `mixture`: one of the three criteria of
`response_features`, at random, Bradley-Terry at 0.25), intransitive (`majority` of the three)."""


def response_oracle(name: str) -> Oracle:
    """The preset oracle `name` of `RESPONSE_ORACLES`, or `ConfigError` listing them."""
    if name not in RESPONSE_ORACLES:
        raise ConfigError(f"unknown response oracle {name!r}; choose from {sorted(RESPONSE_ORACLES)}")
    return RESPONSE_ORACLES[name]


def response_preference_matrix(
    oracle: Oracle, responses: Int[ArrayLike, "K N"], mask: Bool[ArrayLike, "K N"], answers: Int[ArrayLike, " A"]
) -> Float[Array, "K K"]:
    """P[i, j] = P(y_i ≻ y_j) over K responses to one prompt (diagonal ½); vmap over prompts."""
    if jnp.ndim(responses) != 2 or jnp.ndim(answers) != 1:
        raise _checks.ArgumentValueError(
            f"`responses` must be [K, N] and `answers` [A] (one prompt; vmap over more), got shapes "
            f"{tuple(np.shape(responses))} and {tuple(np.shape(answers))}."
        )
    return preference_matrix(oracle, response_trajectories(responses, mask, answers))


def response_win_rates(
    oracle: Oracle, responses: Int[ArrayLike, "K N"], mask: Bool[ArrayLike, "K N"], answers: Int[ArrayLike, " A"]
) -> Float[Array, " K"]:
    r"""SPPO's estimated win rate of each of K responses against the policy that sampled them,

    .. math:: \hat P(y_i \succ \pi_t \mid x) = \frac{1}{K} \sum_{j=1}^{K} P(y_i \succ y_j),

    the row mean of `response_preference_matrix` *including* the diagonal ½ (Wu et al. 2024,
    "Self-Play Preference Optimization for Language Model Alignment", arXiv 2405.00675; the
    official code, uclaml/SPPO `scripts/compute_prob.py`, sums each row of the K x K matrix,
    σ(0) = ½ on the diagonal, and divides by K). It equals ½ + (K − 1)/K · (w_i − ½) with w_i
    SPO's `preferences.win_rates`, which leaves the diagonal out. K identical responses get ½.
    """
    return jnp.mean(response_preference_matrix(oracle, responses, mask, answers), axis=-1)
