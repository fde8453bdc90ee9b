"""Sequence tasks and their judges: vocabulary, arithmetic and sorting problems, golden verifier
scores, a Condorcet cycle over real responses, win rates, bad input."""

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrl_si import sequence
from jaxrl_si._checks import ArgumentTypeError, ArgumentValueError
from jaxrl_si.errors import ConfigError
from jaxrl_si.sequence import VOCAB

ANSWER = VOCAB.encode("0579")  # 123 + 456 at digits=3: A = 4


def _response(text: str, *, eos: bool = True, width: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """Tokens `[width]` of `text` (then EOS), PAD after; mask True up to and including the first EOS."""
    tokens = np.full(width, VOCAB.pad_id, np.int32)
    body = np.concatenate([VOCAB.encode(text), [VOCAB.eos_id] if eos else []]).astype(np.int32)
    tokens[: body.size] = body
    is_eos = tokens == VOCAB.eos_id
    return tokens, (np.cumsum(is_eos) - is_eos) == 0


def _responses(*rows) -> tuple[jax.Array, jax.Array]:
    tokens, mask = zip(*rows)
    return jnp.asarray(np.stack(tokens)), jnp.asarray(np.stack(mask))


def _texts(ids) -> list[str]:
    return [VOCAB.decode(row) for row in np.asarray(ids)]


# --- vocabulary ---


@pytest.mark.parametrize("text", ["", "0123456789+=>,", "12+34=", "31415>"])
def test_encode_decode_round_trip(text):
    ids = VOCAB.encode(text)
    assert ids.dtype == np.int32 and ids.shape == (len(text),)
    assert VOCAB.decode(ids) == text
    assert VOCAB.size == 16


def test_decode_stops_at_eos_and_skips_pad():
    ids = [VOCAB.pad_id, *VOCAB.encode("12"), VOCAB.pad_id, *VOCAB.encode("3"), VOCAB.eos_id, *VOCAB.encode("99")]
    assert VOCAB.decode(ids) == "123"


def test_unknown_characters_and_ids_are_refused():
    with pytest.raises(ValueError, match=r"`text`.*\['\*'\]"):
        VOCAB.encode("12*3")
    with pytest.raises(ValueError, match="`ids`"):
        VOCAB.decode([2, 16])


# --- tasks ---


@pytest.mark.parametrize("digits", [1, 3, 8])
def test_addition_problems_are_right_sums_at_fixed_width(digits):
    task = sequence.AdditionTask(digits)
    problems = task.sample(jax.random.key(0), 200)
    assert problems.prompts.shape == (200, task.prompt_length) == (200, 2 * digits + 2)
    assert problems.answers.shape == (200, task.answer_length) == (200, digits + 1)
    assert problems.prompts.dtype == problems.answers.dtype == jnp.int32
    assert bool(problems.prompt_valid.all()) and problems.prompt_valid.shape == problems.prompts.shape
    assert task.max_new_tokens == digits + 2
    pattern = re.compile(rf"(\d{{{digits}}})\+(\d{{{digits}}})=")
    for prompt, answer in zip(_texts(problems.prompts), _texts(problems.answers), strict=True):
        a, b = pattern.fullmatch(prompt).groups()
        assert answer == f"{int(a) + int(b):0{digits + 1}d}"
    leading = np.asarray(problems.prompts[:, [0, digits + 1]])
    assert (leading == VOCAB.token_id("0")).any(), "operands below 10^(digits-1) are zero-padded"


def test_sort_answers_are_the_prompt_digits_sorted():
    task = sequence.SortTask(length=6)
    problems = task.sample(jax.random.key(1), 200)
    assert problems.prompts.shape == (200, 7) and problems.answers.shape == (200, 6)
    for prompt, answer in zip(_texts(problems.prompts), _texts(problems.answers), strict=True):
        assert prompt.endswith(">") and answer == "".join(sorted(prompt[:-1]))


@pytest.mark.parametrize("task", [sequence.AdditionTask(3), sequence.SortTask(5)])
def test_sample_is_a_pure_function_of_the_key_and_jit_vmaps(task):
    key = jax.random.key(2)
    first, again = task.sample(key, 8), task.sample(key, 8)
    np.testing.assert_array_equal(first.prompts, again.prompts)
    assert not np.array_equal(first.prompts, task.sample(jax.random.key(3), 8).prompts)
    keys = jax.random.split(key, 3)
    batched = jax.jit(jax.vmap(lambda k: task.sample(k, 4)))(keys)
    assert batched.prompts.shape == (3, 4, task.prompt_length)
    for i in range(3):
        np.testing.assert_array_equal(batched.answers[i], task.sample(keys[i], 4).answers)


def test_make_task_and_sizes():
    assert sequence.make_task("addition", 2) == sequence.AdditionTask(digits=2)
    assert sequence.make_task("sort") == sequence.SortTask()
    assert sequence.make_task("sort").name == "sort"
    with pytest.raises(ConfigError, match=r"'multiply'.*\['addition', 'sort'\]"):
        sequence.make_task("multiply")
    for bad in (0, 9, True, 2.0):
        with pytest.raises(ConfigError, match="AdditionTask.digits"):
            sequence.AdditionTask(bad)
    for bad in (1, 13):
        with pytest.raises(ConfigError, match="SortTask.length"):
            sequence.make_task("sort", bad)


def test_supervised_targets_are_the_answer_then_eos():
    problems = sequence.AdditionTask(3).sample(jax.random.key(4), 5)
    tokens, mask = sequence.supervised_targets(problems)
    assert tokens.shape == mask.shape == (5, 5) and bool(mask.all())
    np.testing.assert_array_equal(tokens[:, :4], problems.answers)
    assert bool((tokens[:, 4] == VOCAB.eos_id).all())
    np.testing.assert_array_equal(sequence.exact_match(tokens, mask, problems.answers), np.ones(5))


# --- verifiers ---


def test_golden_scores():
    tokens, mask = _responses(
        _response("0579"),  # right
        _response("0578"),  # last digit wrong
        _response("0579", eos=False),  # no EOS: runs on into PAD
        _response("05799"),  # an extra token before EOS
        _response("", eos=False),  # all PAD (mask all True: no EOS)
        _response("057"),  # EOS one token early
    )
    hidden_mask = mask.at[0, 2].set(False)  # the right tokens, but "7" masked out
    padded = jnp.zeros_like(tokens), jnp.zeros_like(mask)
    # exact: only row 0. digit accuracy: 4/4, 3/4, 4/4, 4/4, 0/4, 3/4 (EOS at position 3 != "9").
    np.testing.assert_array_equal(sequence.exact_match(tokens, mask, ANSWER), [1, 0, 0, 0, 0, 0])
    np.testing.assert_allclose(sequence.digit_accuracy(tokens, mask, ANSWER), [1, 0.75, 1, 1, 0, 0.75])
    # masked-out tokens count as PAD: row 0 loses its "7" (3/4) and is no longer exact.
    assert float(sequence.digit_accuracy(tokens, hidden_mask, ANSWER)[0]) == 0.75
    assert float(sequence.exact_match(tokens, hidden_mask, ANSWER)[0]) == 0.0
    np.testing.assert_array_equal(sequence.exact_match(*padded, ANSWER), np.zeros(6))
    np.testing.assert_array_equal(sequence.digit_accuracy(*padded, ANSWER), np.zeros(6))
    # features (leading "05", trailing "79", format = digit slots 0..3 + EOS at 4, out of 5):
    # row 1: (1, 1/2, 1); row 2: slot 4 is PAD, 4/5; row 3: slot 4 is "9", 4/5; row 4: nothing;
    # row 5: "057" then EOS in a digit slot and PAD at slot 4, 3/5.
    expected = [[1, 1, 1], [1, 0.5, 1], [1, 1, 0.8], [1, 1, 0.8], [0, 0, 0], [1, 0.5, 0.6]]
    np.testing.assert_allclose(sequence.response_features(tokens, mask, ANSWER), expected, rtol=1e-6)


def test_scores_agree_on_random_responses_under_jit():
    """exact = (accuracy = 1) ∧ (format = 1); accuracy is the size-weighted mean of the two halves."""
    key_t, key_l = jax.random.split(jax.random.key(5))
    tokens = jax.random.randint(key_t, (512, 5), 0, VOCAB.size)
    tokens = jnp.where(jax.random.bernoulli(key_l, 0.7, (512, 4)), ANSWER, tokens[:, :4])  # mostly right digits
    tokens = jnp.concatenate([tokens, jnp.full((512, 1), VOCAB.eos_id)], -1)
    mask = jnp.cumsum(tokens == VOCAB.eos_id, -1) - (tokens == VOCAB.eos_id) == 0
    exact = jax.jit(sequence.exact_match)(tokens, mask, ANSWER)
    accuracy = jax.jit(sequence.digit_accuracy)(tokens, mask, ANSWER)
    features = jax.jit(sequence.response_features)(tokens, mask, ANSWER)
    assert 0 < float(exact.mean()) < 1
    np.testing.assert_array_equal(exact, (accuracy == 1) & (features[:, 2] == 1))
    np.testing.assert_allclose(accuracy, features[:, :2].mean(-1), rtol=1e-6)  # halves of 2 and 2
    np.testing.assert_array_equal(exact, sequence.exact_match(tokens, mask, ANSWER))


# --- oracles ---


def test_majority_oracle_cycles_on_real_responses():
    tokens, mask = _responses(
        _response("05111", eos=False),  # (leading, trailing, format) = (1, 0, 4/5)
        _response("0,79,", eos=False),  # (1/2, 1, 3/5)
        _response("1171"),  # (0, 1/2, 1)
    )
    np.testing.assert_allclose(
        sequence.response_features(tokens, mask, ANSWER), [[1, 0, 0.8], [0.5, 1, 0.6], [0, 0.5, 1]], rtol=1e-6
    )
    p = sequence.response_preference_matrix(sequence.response_oracle("majority"), tokens, mask, ANSWER)
    # y0 ≻ y1 (leading, format), y1 ≻ y2 (leading, trailing), y2 ≻ y0 (trailing, format).
    assert float(p[0, 1]) == float(p[1, 2]) == float(p[2, 0]) == 1.0
    np.testing.assert_allclose(p + p.T, 1.0)


def test_bradley_terry_preset_is_calibrated_to_one_digit():
    tokens, mask = _responses(_response("0579"), _response("0578"))
    p = sequence.response_preference_matrix(sequence.response_oracle("bt"), tokens, mask, ANSWER)
    np.testing.assert_allclose(p[0, 1], jax.nn.sigmoid(1.0), rtol=1e-6)  # (1 - 0.75) / 0.25 = 1


def test_hard_win_rates_include_the_diagonal_half():
    tokens, mask = _responses(_response("0579"), _response("0578"), _response("0478"), _response("1478"))
    rates = sequence.response_win_rates(sequence.response_oracle("hard"), tokens, mask, ANSWER)
    # accuracies 1, 3/4, 1/2, 1/4 are strictly ordered: (½ + responses beaten) / 4.
    np.testing.assert_allclose(rates, [3.5 / 4, 2.5 / 4, 1.5 / 4, 0.5 / 4])
    assert int(jnp.argmax(rates)) == 0


@pytest.mark.parametrize("name", sorted(sequence.RESPONSE_ORACLES))
def test_identical_responses_win_half_and_every_preset_vmaps_over_prompts(name):
    oracle = sequence.response_oracle(name)
    tokens, mask = _responses(*[_response("0478")] * 3)
    np.testing.assert_allclose(sequence.response_win_rates(oracle, tokens, mask, ANSWER), [0.5] * 3)
    problems = sequence.AdditionTask(3).sample(jax.random.key(6), 2)
    samples = jax.random.randint(jax.random.key(7), (2, 4, 6), 0, VOCAB.size)
    samples_mask = jnp.ones(samples.shape, bool)
    rates = jax.jit(jax.vmap(functools.partial(sequence.response_win_rates, oracle)))(
        samples, samples_mask, problems.answers
    )
    for i in range(2):
        np.testing.assert_allclose(
            rates[i], sequence.response_win_rates(oracle, samples[i], samples_mask[i], problems.answers[i]), rtol=1e-6
        )


def test_as_trajectories_has_one_step():
    trajectories = sequence.as_trajectories(jnp.array([0.5, 1.0]), jnp.ones((2, 3)))
    assert trajectories.reward.shape == (2, 1) and trajectories.features.shape == (2, 1, 3)
    np.testing.assert_allclose(trajectories.returns, [0.5, 1.0])


# --- bad input ---


def test_unknown_oracle_name():
    with pytest.raises(ConfigError, match=r"'pairrm'.*\['bt', 'flip', 'hard', 'majority', 'mixture', 'thurstone'\]"):
        sequence.response_oracle("pairrm")


def test_mismatched_shapes_name_the_argument():
    tokens, mask = _responses(_response("0579"), _response("0578"))
    with pytest.raises(ArgumentValueError, match="`answers`"):
        sequence.exact_match(tokens, mask, jnp.stack([ANSWER] * 3))  # 3 answers for 2 responses
    with pytest.raises(ArgumentValueError, match="`mask`"):
        sequence.digit_accuracy(tokens, mask[:, :5], ANSWER)
    with pytest.raises(ArgumentValueError, match="`responses`.*N must be >= A \\+ 1"):
        sequence.response_features(tokens[:, :4], mask[:, :4], ANSWER)
    with pytest.raises(ArgumentTypeError, match="`responses`"):
        sequence.exact_match(tokens.astype(jnp.float32), mask, ANSWER)
    with pytest.raises(ArgumentValueError, match="`responses` must be \\[K, N\\]"):
        sequence.response_win_rates(sequence.response_oracle("hard"), tokens[None], mask[None], ANSWER)
    with pytest.raises(ArgumentValueError, match="`features`"):
        sequence.as_trajectories(jnp.zeros(2), jnp.zeros((3, 3)))
