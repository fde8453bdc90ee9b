"""The causal transformer and its samplers: cache == naive, teacher forcing == per-prefix loop.

One tiny model (2 layers, width 32, vocab 16, context 14) with random parameters far from
GPT-2's small init, so that attention is far from uniform and positions and padding matter.
Jitted functions are module-level, so a shape and config compile once for the whole file.
"""

import functools
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from cpu_devices import FAST_COMPILE_FLAGS, run_on_cpu_devices

from jaxrl_si import _checks, nets
from jaxrl_si.errors import ConfigError
from jaxrl_si.nets import (
    SamplingConfig,
    TransformerConfig,
    filter_logits,
    forward,
    init_params,
    positions_from_valid,
    sample,
    sample_naive,
    sequence_logps,
    sequence_scores,
    token_logps,
)

EOS, PAD = 1, 0
CONFIG = TransformerConfig(vocab_size=16, num_layers=2, width=32, num_heads=2, max_length=14)
LEARNED = TransformerConfig(vocab_size=16, num_layers=1, width=32, num_heads=2, max_length=14, positions="learned")
# Left-padded prompts [B=3, Lp=5] with 3, 5 and 1 real tokens.
PROMPTS = jnp.array([[PAD, PAD, 3, 4, 5], [2, 9, 3, 4, 5], [PAD, PAD, PAD, PAD, 7]], jnp.int32)
PROMPT_VALID = jnp.array([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1], [0, 0, 0, 0, 1]], bool)
N = 6  # new tokens: Lp + N = 11 <= 14
TEMPERATURE_1 = SamplingConfig(max_new_tokens=N, eos_id=EOS, pad_id=PAD)
GREEDY = SamplingConfig(max_new_tokens=N, temperature=0.0, eos_id=EOS, pad_id=PAD)

SAMPLE = jax.jit(sample, static_argnums=(1, 5))
SAMPLE_NAIVE = jax.jit(sample_naive, static_argnums=(1, 5))
TOKEN_LOGPS = jax.jit(token_logps, static_argnums=1)
SEQUENCE_SCORES = jax.jit(sequence_scores, static_argnums=1)
FORWARD = jax.jit(forward, static_argnums=1, static_argnames="head")


def _random_params(config, seed, head="logits"):
    """Parameters of `init_params`'s shapes drawn N(0, 0.3^2) (LayerNorm scales around 1) on the host.

    Far from GPT-2's small init, so attention is peaked and positions and padding matter; no
    compilation (shapes from `eval_shape`, values from NumPy).
    """
    shapes = jax.eval_shape(functools.partial(init_params, config, head=head), jax.random.key(0))
    rng = np.random.default_rng(seed)
    draw = lambda path, leaf: (path[-1].key == "scale") + 0.3 * rng.standard_normal(leaf.shape, np.float32)
    return jax.tree.map(jnp.asarray, jax.tree.map_with_path(draw, shapes))


@pytest.fixture(scope="module")
def params():
    return _random_params(CONFIG, 0)


@pytest.fixture(scope="module")
def samples(params):
    return SAMPLE(params, CONFIG, jax.random.key(1), PROMPTS, PROMPT_VALID, TEMPERATURE_1)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"vocab_size": 0}, "vocab_size"),
        ({"vocab_size": 16, "num_layers": 0}, "num_layers"),
        ({"vocab_size": 16, "width": 30, "num_heads": 4}, "num_heads"),
        ({"vocab_size": 16, "width": 12, "num_heads": 4}, "head dim"),  # head_dim 3: odd, rotary
        ({"vocab_size": 16, "positions": "absolute"}, "positions"),
    ],
)
def test_transformer_config_errors_name_the_field(kwargs, field):
    with pytest.raises(ConfigError, match=field):
        TransformerConfig(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"max_new_tokens": 0}, "max_new_tokens"),
        ({"temperature": -1.0}, "temperature"),
        ({"top_k": -1}, "top_k"),
        ({"top_p": 0.0}, "top_p"),
        ({"eos_id": -1}, "eos_id"),
    ],
)
def test_sampling_config_errors_name_the_field(kwargs, field):
    with pytest.raises(ConfigError, match=field):
        SamplingConfig(**{"max_new_tokens": 4, "eos_id": EOS, "pad_id": PAD, **kwargs})


def test_prompt_longer_than_context_and_bad_inputs_are_clear_errors(params):
    too_long = SamplingConfig(max_new_tokens=10, eos_id=EOS, pad_id=PAD)  # 5 + 10 > 14
    with pytest.raises(ConfigError, match="max_length=14"):
        sample(params, CONFIG, jax.random.key(0), PROMPTS, PROMPT_VALID, too_long)
    responses = jnp.zeros((3, 10), jnp.int32)
    with pytest.raises(ConfigError, match="exceeds the context"):
        token_logps(params, CONFIG, PROMPTS, PROMPT_VALID, responses, responses > 0)
    with pytest.raises(_checks.ArgumentTypeError, match="prompts"):
        sample(params, CONFIG, jax.random.key(0), PROMPTS.astype(jnp.float32), PROMPT_VALID, TEMPERATURE_1)
    with pytest.raises(_checks.ArgumentTypeError, match="prompt_valid"):
        sample(params, CONFIG, jax.random.key(0), PROMPTS, PROMPT_VALID.astype(jnp.int32), TEMPERATURE_1)
    with pytest.raises(ConfigError, match="eos_id"):
        sample(params, CONFIG, jax.random.key(0), PROMPTS, PROMPT_VALID, SamplingConfig(max_new_tokens=2, eos_id=16, pad_id=PAD))


def _per_prefix_logps(params, config, prompts, prompt_valid, responses, response_mask):
    """For each t, the model on prompt ++ responses[:, :t] alone, log-softmax at its last slot."""
    columns = []
    for t in range(responses.shape[1]):
        tokens = jnp.concatenate([prompts, responses[:, :t]], axis=1)
        valid = jnp.concatenate([prompt_valid, response_mask[:, :t]], axis=1)
        logits, _ = FORWARD(params, config, tokens, positions_from_valid(valid), valid)
        log_probs = jax.nn.log_softmax(logits[:, -1])
        columns.append(jnp.take_along_axis(log_probs, responses[:, t, None], axis=1)[:, 0])
    return jnp.where(response_mask, jnp.stack(columns, axis=1), 0.0)


def test_token_logps_equal_a_per_prefix_loop(params):
    responses = jax.random.randint(jax.random.key(2), (3, 4), 0, 16)
    response_mask = jnp.arange(4)[None, :] < jnp.array([[4], [1], [3]])
    expected = _per_prefix_logps(params, CONFIG, PROMPTS, PROMPT_VALID, responses, response_mask)
    got = TOKEN_LOGPS(params, CONFIG, PROMPTS, PROMPT_VALID, responses, response_mask)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert np.all(np.asarray(got)[~np.asarray(response_mask)] == 0.0)


@functools.partial(jax.jit, static_argnums=2)
def _logps_and_scores(params, score_params, config, prompts, prompt_valid, responses, response_mask):
    args = (config, prompts, prompt_valid, responses, response_mask)
    return token_logps(params, *args), sequence_logps(params, *args), sequence_scores(score_params, *args)


@pytest.mark.parametrize("config", [CONFIG, LEARNED], ids=["rotary", "learned"])
def test_left_padding_does_not_change_logps_or_scores(config):
    params = _random_params(config, 3)
    score_params = _random_params(config, 4, "scalar")
    responses, response_mask = jnp.array([[6, 7, 8, 9]]), jnp.array([[True, True, True, False]])
    outputs = []
    for pads in (0, 2):
        prompts = jnp.array([[PAD] * pads + [3, 4, 5]])
        outputs.append(_logps_and_scores(params, score_params, config, prompts, prompts != PAD, responses, response_mask))
    (logps, sequence, scores), padded = outputs
    assert logps.shape == (1, 4) and sequence.shape == scores.shape == (1,)
    np.testing.assert_allclose(sequence, logps.sum(axis=1), rtol=1e-6)
    for got, expected in zip(padded, outputs[0], strict=True):
        np.testing.assert_allclose(got, expected, atol=1e-5)


def test_sequence_scores_read_the_last_real_token():
    params = _random_params(CONFIG, 5, "scalar")
    responses = jnp.array([[6, 7, 8], [6, 7, 8], [6, 7, 8]])
    response_mask = jnp.array([[True, True, True], [True, False, False], [False, False, False]])
    scores = SEQUENCE_SCORES(params, CONFIG, PROMPTS, PROMPT_VALID, responses, response_mask)
    valid = jnp.concatenate([PROMPT_VALID, response_mask], axis=1)
    tokens = jnp.concatenate([PROMPTS, responses], axis=1)
    per_position, _ = FORWARD(params, CONFIG, tokens, positions_from_valid(valid), valid, head="scalar")
    assert per_position.shape == (3, 8) and scores.shape == (3,)
    np.testing.assert_allclose(scores, per_position[jnp.arange(3), jnp.array([7, 5, 4])], rtol=1e-6)


def test_rotary_attention_depends_only_on_relative_positions(params):
    logits, _ = FORWARD(params, CONFIG, PROMPTS, positions_from_valid(PROMPT_VALID), PROMPT_VALID)
    shifted, _ = FORWARD(params, CONFIG, PROMPTS, positions_from_valid(PROMPT_VALID) + 3, PROMPT_VALID)
    reversed_positions, _ = FORWARD(params, CONFIG, PROMPTS, positions_from_valid(PROMPT_VALID)[:, ::-1], PROMPT_VALID)
    np.testing.assert_allclose(shifted, logits, atol=1e-4)
    assert float(jnp.abs(reversed_positions - logits)[1].max()) > 1e-2  # positions do matter


def test_padding_only_rows_stay_finite(params):
    logits, _ = FORWARD(params, CONFIG, PROMPTS, positions_from_valid(PROMPT_VALID), jnp.zeros_like(PROMPT_VALID))
    assert bool(jnp.all(jnp.isfinite(logits)))


@pytest.mark.parametrize(
    "sampling",
    [
        TEMPERATURE_1,
        SamplingConfig(max_new_tokens=N, temperature=0.7, top_k=4, eos_id=EOS, pad_id=PAD),
        SamplingConfig(max_new_tokens=N, top_p=0.8, eos_id=EOS, pad_id=PAD),
        GREEDY,
    ],
    ids=["temperature_1", "top_k", "top_p", "greedy"],
)
def test_cached_sample_equals_naive_and_teacher_forcing(params, sampling):
    key = jax.random.key(7)
    cached = SAMPLE(params, CONFIG, key, PROMPTS, PROMPT_VALID, sampling)
    naive = SAMPLE_NAIVE(params, CONFIG, key, PROMPTS, PROMPT_VALID, sampling)
    np.testing.assert_array_equal(cached.tokens, naive.tokens)
    np.testing.assert_array_equal(cached.mask, naive.mask)
    np.testing.assert_allclose(cached.logps, naive.logps, atol=1e-5)
    # logps are under the untempered, unfiltered policy: what teacher forcing computes.
    forced = TOKEN_LOGPS(params, CONFIG, PROMPTS, PROMPT_VALID, cached.tokens, cached.mask)
    np.testing.assert_allclose(cached.logps, forced, atol=1e-5)


def test_sampling_is_a_function_of_the_key(params, samples):
    again = SAMPLE(params, CONFIG, jax.random.key(1), PROMPTS, PROMPT_VALID, TEMPERATURE_1)
    other = SAMPLE(params, CONFIG, jax.random.key(2), PROMPTS, PROMPT_VALID, TEMPERATURE_1)
    np.testing.assert_array_equal(again.tokens, samples.tokens)
    assert not np.array_equal(other.tokens, samples.tokens)


def _with_eos_bias(params, bias):
    head = {**params["logits"], "bias": params["logits"]["bias"].at[EOS].add(bias)}
    return {**params, "logits": head}


def test_eos_ends_a_row_and_is_in_its_mask(params):
    forced = SAMPLE(_with_eos_bias(params, 100.0), CONFIG, jax.random.key(0), PROMPTS, PROMPT_VALID, TEMPERATURE_1)
    np.testing.assert_array_equal(forced.tokens, np.array([[EOS] + [PAD] * (N - 1)] * 3))
    np.testing.assert_array_equal(forced.mask, np.arange(N)[None, :].repeat(3, 0) == 0)
    ends = []
    for seed in range(4):  # EOS likely but not certain: rows end at different steps
        out = SAMPLE(_with_eos_bias(params, 2.0), CONFIG, jax.random.key(seed), PROMPTS, PROMPT_VALID, TEMPERATURE_1)
        tokens, mask, logps = map(np.asarray, (out.tokens, out.mask, out.logps))
        for row in range(3):
            is_eos = tokens[row] == EOS
            end = int(np.argmax(is_eos)) if is_eos.any() else N - 1
            ends.append(end if is_eos.any() else N)
            np.testing.assert_array_equal(mask[row], np.arange(N) <= end)
            assert np.all(tokens[row, end + 1 :] == PAD) and np.all(logps[row, end + 1 :] == 0.0)
            assert np.all(logps[row, : end + 1] < 0.0)
    assert len(set(ends)) >= 3


def test_greedy_picks_the_argmax(params):
    greedy = SAMPLE(params, CONFIG, jax.random.key(0), PROMPTS, PROMPT_VALID, GREEDY)
    tokens = jnp.concatenate([PROMPTS, greedy.tokens], axis=1)
    valid = jnp.concatenate([PROMPT_VALID, greedy.mask], axis=1)
    logits, _ = FORWARD(params, CONFIG, tokens, positions_from_valid(valid), valid)
    argmax = jnp.argmax(logits[:, PROMPTS.shape[1] - 1 : -1], axis=-1)
    np.testing.assert_array_equal(jnp.where(greedy.mask, argmax, PAD), greedy.tokens)


def _kept(logits, **kwargs):
    sampling = SamplingConfig(max_new_tokens=1, eos_id=0, pad_id=0, **kwargs)
    return np.isfinite(np.asarray(filter_logits(logits, sampling)))


def test_filter_logits_golden():
    # Probabilities 0.25, 0.5, 0.1, 0.15; in order 0.5, 0.25, 0.15, 0.1, the mass before each
    # is 0, 0.5, 0.75, 0.9: top-p keeps a token while that mass is < top_p.
    logits = jnp.log(jnp.array([[0.25, 0.5, 0.1, 0.15]]))
    np.testing.assert_array_equal(_kept(logits, top_p=0.5), [[False, True, False, False]])
    np.testing.assert_array_equal(_kept(logits, top_p=0.6), [[True, True, False, False]])
    np.testing.assert_array_equal(_kept(logits, top_p=0.8), [[True, True, False, True]])
    np.testing.assert_array_equal(_kept(logits, top_k=2), [[True, True, False, False]])
    # top-p on the renormalised top 3 (0.5, 0.25, 0.15) / 0.9: masses before 0, 0.56, 0.83.
    np.testing.assert_array_equal(_kept(logits, top_k=3, top_p=0.8), [[True, True, False, False]])
    tempered = filter_logits(logits, SamplingConfig(max_new_tokens=1, temperature=0.5, eos_id=0, pad_id=0))
    np.testing.assert_allclose(tempered, 2 * logits, rtol=1e-6)


def test_top_k_1_is_greedy():
    logits = jax.random.normal(jax.random.key(0), (64, 16))
    top_1 = filter_logits(logits, SamplingConfig(max_new_tokens=1, top_k=1, eos_id=0, pad_id=0))
    draws = jax.vmap(lambda key: jax.random.categorical(key, top_1))(jax.random.split(jax.random.key(1), 8))
    np.testing.assert_array_equal(draws, np.broadcast_to(np.argmax(logits, axis=-1), draws.shape))


def test_learned_positions_and_members_under_vmap_equal_each_alone():
    members = jax.tree.map(lambda *leaves: np.stack(leaves), _random_params(LEARNED, 8), _random_params(LEARNED, 9))
    keys = jnp.stack([jax.random.key(1), jax.random.key(2)])
    sample_members = jax.jit(jax.vmap(sample, in_axes=(0, None, 0, None, None, None)), static_argnums=(1, 5))
    batched = sample_members(members, LEARNED, keys, PROMPTS, PROMPT_VALID, TEMPERATURE_1)
    for member in range(2):
        params = jax.tree.map(lambda leaf, m=member: leaf[m], members)
        alone = SAMPLE_NAIVE(params, LEARNED, keys[member], PROMPTS, PROMPT_VALID, TEMPERATURE_1)
        np.testing.assert_array_equal(batched.tokens[member], alone.tokens)
        np.testing.assert_allclose(batched.logps[member], alone.logps, atol=1e-5)


SHARDED_SAMPLE = textwrap.dedent(
    """
    import jax, jax.numpy as jnp, numpy as np
    from jax.sharding import NamedSharding, PartitionSpec as P
    from jaxrl_si.nets import SamplingConfig, TransformerConfig, init_params, sample
    from jaxrl_si.parallel import make_mesh

    config = TransformerConfig(vocab_size=16, num_layers=1, width=32, num_heads=2, max_length=12)
    sampling = SamplingConfig(max_new_tokens=5, top_p=0.9, eos_id=1, pad_id=0)
    params = jax.jit(init_params, static_argnums=0)(config, jax.random.key(0))
    prompts = jax.random.randint(jax.random.key(1), (8, 4), 2, 16)
    prompt_valid = jnp.arange(4)[None, :] >= jnp.arange(8)[:, None] % 3  # 0-2 pads on the left
    prompts = jnp.where(prompt_valid, prompts, 0)
    run = jax.jit(sample, static_argnums=(1, 5))
    reference = run(params, config, jax.random.key(2), prompts, prompt_valid, sampling)
    mesh = make_mesh(sweep=1, data=4)
    data, replicated = NamedSharding(mesh, P("data")), NamedSharding(mesh, P())
    out = run(jax.device_put(params, replicated), config, jax.random.key(2),
              jax.device_put(prompts, data), jax.device_put(prompt_valid, data), sampling)
    assert len(out.tokens.sharding.device_set) == 4, out.tokens.sharding
    np.testing.assert_array_equal(out.tokens, reference.tokens)
    np.testing.assert_array_equal(out.mask, reference.mask)
    np.testing.assert_allclose(out.logps, reference.logps, atol=1e-5)
    print("OK")
    """
)


def test_sample_with_prompts_split_over_data_equals_one_device():
    run_on_cpu_devices(SHARDED_SAMPLE, devices=4, xla_flags=FAST_COMPILE_FLAGS)  # compile-bound


def test_self_certainty_is_zero_for_a_uniform_policy_and_grows_with_confidence():
    """SC = mean over tokens of KL(U || pi) (Kang et al. 2025, Eq. 3): 0 when every next-token
    distribution is uniform (all weights zero), > 0 for a peaked one, 0 for an empty response."""
    config = nets.TransformerConfig(vocab_size=8, num_layers=1, width=16, num_heads=2, max_length=8)
    params = jax.tree.map(jnp.zeros_like, nets.init_params(config, jax.random.key(0)))
    prompts, valid = jnp.ones((2, 3), jnp.int32), jnp.ones((2, 3), bool)
    responses = jnp.array([[2, 3, 1], [2, 0, 0]], jnp.int32)
    mask = jnp.array([[True, True, True], [False, False, False]])
    np.testing.assert_allclose(nets.self_certainty(params, config, prompts, valid, responses, mask), [0.0, 0.0], atol=1e-6)
    peaked = jax.tree.map(lambda x: x, params)  # a copy of the dicts
    peaked["logits"]["bias"] = jnp.zeros(8).at[2].set(5.0)
    # KL(U || pi) = -log V - (1/V) sum_j log pi_j; with logits 5 e_2, sum_j log pi_j = 5 - 8 log Z,
    # Z = e^5 + 7, so KL = log Z - 5/8 - log 8, the same at every position.
    expected = np.log(np.exp(5.0) + 7.0) - 5.0 / 8 - np.log(8.0)
    np.testing.assert_allclose(nets.self_certainty(peaked, config, prompts, valid, responses, mask)[0], expected, rtol=1e-5)
