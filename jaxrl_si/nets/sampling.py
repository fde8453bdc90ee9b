"""Sampling responses from a `CausalTransformer`, and teacher-forced log-probabilities and scores.

`sample` runs one prefill over the left-padded prompts, then a `lax.scan` of single-token decode
steps on the KV cache; `sample_naive` re-encodes the whole sequence at every step instead, for
the equality test and the cache-vs-naive benchmark. Both draw step `t` with the key
`fold_in(key, t)`, so they return the same `Samples` for the same key.

Every function is jittable with `config` / `sampling` static (e.g.
`jax.jit(sample, static_argnums=(1, 5))`) and vmappable over a leading member axis of `params`
and `key`. Layout: prompt slots `[0, Lp)`, response slots `[Lp, Lp + N)`; a response token is
real while its mask is True, which `Samples.mask` makes a prefix (up to and including EOS).
"""

from __future__ import annotations

import dataclasses
import functools

import flax.struct
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int, PRNGKeyArray

from jaxrl_si import _checks
from jaxrl_si.errors import ConfigError
from jaxrl_si.nets.transformer import (
    KVCache,
    TransformerConfig,
    forward,
    init_cache,
    positions_from_valid,
)


@dataclasses.dataclass(frozen=True, kw_only=True)
class SamplingConfig:
    """Static settings of `sample` / `sample_naive`. Filters apply in order temperature, top-k, top-p."""

    max_new_tokens: int  # response length N (scan steps)
    temperature: float = 1.0  # logits / temperature; 0 = greedy argmax
    top_k: int = 0  # keep the k most likely tokens; 0 = off
    top_p: float = 1.0  # keep the smallest set with probability mass >= top_p; 1 = off
    eos_id: int  # end of sequence: the last token a row emits
    pad_id: int  # emitted after EOS (mask False)

    def __post_init__(self):
        for name, low in (("max_new_tokens", 1), ("top_k", 0), ("eos_id", 0), ("pad_id", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"SamplingConfig.{name} must be an int >= {low}, got {value!r}.")
        if not 0.0 <= self.temperature < float("inf"):
            raise ConfigError(f"SamplingConfig.temperature must be finite and >= 0, got {self.temperature!r}.")
        if not 0.0 < self.top_p <= 1.0:
            raise ConfigError(f"SamplingConfig.top_p must lie in (0, 1], got {self.top_p!r}.")


class Samples(flax.struct.PyTreeNode):
    """Sampled responses, `[B, N]` each.

    `tokens`: int32, `pad_id` after the first EOS; `mask`: True for generated tokens up to and
    including the first EOS; `logps`: log pi(y_t | x, y_<t) under the untempered, unfiltered
    policy (the `logp_old` of policy-gradient losses), 0 where `mask` is False.
    """

    tokens: Int[Array, "B N"]
    mask: Bool[Array, "B N"]
    logps: Float[Array, "B N"]


class _CachedCarry(flax.struct.PyTreeNode):
    cache: KVCache
    logits: Float[Array, "B V"]  # next-token logits
    done: Bool[Array, " B"]  # EOS already emitted


class _NaiveCarry(flax.struct.PyTreeNode):
    tokens: Int[Array, "B S"]  # prompt and response so far, S = Lp + N
    valid: Bool[Array, "B S"]
    done: Bool[Array, " B"]


def filter_logits(logits: Float[Array, "B V"], sampling: SamplingConfig) -> Float[Array, "B V"]:
    """Tempered logits `z / T` with tokens outside the top-k, then outside the top-p nucleus, at -inf.

    Top-p (Holtzman et al. 2020, arXiv 1904.09751) keeps the most likely tokens, in order, while
    the mass before them is < top_p: the smallest set with mass >= top_p, never empty. A token
    tied with the k-th largest logit is kept too. `temperature == 0` returns the raw logits
    (greedy decoding takes their argmax).
    """
    if sampling.temperature > 0:
        logits = logits / sampling.temperature
    if 0 < sampling.top_k < logits.shape[-1]:
        kth = jax.lax.top_k(logits, sampling.top_k)[0][..., -1:]
        logits = jnp.where(logits < kth, -jnp.inf, logits)
    if sampling.top_p < 1.0:
        order = jnp.argsort(-logits, axis=-1)
        probs = jax.nn.softmax(jnp.take_along_axis(logits, order, axis=-1), axis=-1)
        keep_sorted = jnp.cumsum(probs, axis=-1) - probs < sampling.top_p
        keep = jnp.take_along_axis(keep_sorted, jnp.argsort(order, axis=-1), axis=-1)
        logits = jnp.where(keep, logits, -jnp.inf)
    return logits


def _emit(sampling: SamplingConfig, key: PRNGKeyArray, t, logits: Float[Array, "B V"], done: Bool[Array, " B"]):
    """Step `t`'s `(token, mask, logp, done)`; rows already done emit `pad_id` with mask False."""
    if sampling.temperature == 0:
        choice = jnp.argmax(logits, axis=-1).astype(jnp.int32)
    else:
        choice = jax.random.categorical(jax.random.fold_in(key, t), filter_logits(logits, sampling)).astype(jnp.int32)
    logp = jnp.take_along_axis(jax.nn.log_softmax(logits), choice[:, None], axis=-1)[:, 0]
    mask = ~done
    token = jnp.where(mask, choice, sampling.pad_id)
    return token, mask, jnp.where(mask, logp, 0.0), done | (choice == sampling.eos_id)


def _check_tokens(name: str, tokens, mask_name: str, mask) -> None:
    """`[B, L]` integer `tokens` (L >= 1) and a bool `mask` of the same shape, or a named error."""
    if not hasattr(tokens, "dtype") or not jnp.issubdtype(tokens.dtype, jnp.integer):
        raise _checks.ArgumentTypeError(f"`{name}` must be an integer array, got {getattr(tokens, 'dtype', type(tokens))}.")
    if tokens.ndim != 2 or tokens.shape[1] < 1:
        raise _checks.ArgumentValueError(f"`{name}` must have shape [B, L] with L >= 1, got {tuple(tokens.shape)}.")
    if getattr(mask, "dtype", None) != jnp.bool_:
        raise _checks.ArgumentTypeError(f"`{mask_name}` must be a bool array, got {getattr(mask, 'dtype', type(mask))}.")
    _checks.check_same_shape([(name, tokens), (mask_name, mask)])


def _check_context(config: TransformerConfig, prompt_length: int, response_length: int, response_name: str) -> None:
    """`ConfigError` unless prompt and response fit in the context (cache slots, learned positions)."""
    total = prompt_length + response_length
    if total > config.max_length:
        raise ConfigError(
            f"prompt length {prompt_length} + {response_name} {response_length} = {total} exceeds the context, "
            f"TransformerConfig.max_length={config.max_length}; shorten the prompts or raise max_length."
        )


def _check_sampling(config: TransformerConfig, prompts, prompt_valid, sampling: SamplingConfig) -> None:
    _check_tokens("prompts", prompts, "prompt_valid", prompt_valid)
    _check_context(config, prompts.shape[1], sampling.max_new_tokens, "max_new_tokens")
    for name in ("eos_id", "pad_id"):
        if getattr(sampling, name) >= config.vocab_size:
            raise ConfigError(f"SamplingConfig.{name}={getattr(sampling, name)} is not below vocab_size={config.vocab_size}.")


def _check_responses(config: TransformerConfig, prompts, prompt_valid, responses, response_mask) -> None:
    _check_tokens("prompts", prompts, "prompt_valid", prompt_valid)
    _check_tokens("responses", responses, "response_mask", response_mask)
    if responses.shape[0] != prompts.shape[0]:
        raise _checks.ArgumentValueError(f"`responses` has batch {responses.shape[0]} but `prompts` has {prompts.shape[0]}.")
    _check_context(config, prompts.shape[1], responses.shape[1], "response length")


def _cached_step(params, config: TransformerConfig, sampling: SamplingConfig, key, next_position, carry: _CachedCarry, t):
    """Emit token `t` from the carried logits, then decode it (one slot) for step `t + 1`'s logits."""
    token, mask, logp, done = _emit(sampling, key, t, carry.logits, carry.done)
    logits, cache = forward(params, config, token[:, None], (next_position + t)[:, None], mask[:, None], carry.cache)
    return _CachedCarry(cache, logits[:, -1], done), (token, mask, logp)


def sample(
    params,
    config: TransformerConfig,
    key: PRNGKeyArray,
    prompts: Int[Array, "B Lp"],
    prompt_valid: Bool[Array, "B Lp"],
    sampling: SamplingConfig,
) -> Samples:
    """Sample `N = sampling.max_new_tokens` tokens per left-padded prompt with the KV cache.

    `y_t ~ filter(pi(. | x, y_<t))` drawn with `fold_in(key, t)`; one prefill over `x`, then a
    scan of `N` one-token decode steps. `ConfigError` if `Lp + N > config.max_length`.
    Shapes: `prompts, prompt_valid [B, Lp]` -> `Samples` of `[B, N]`.
    """
    _check_sampling(config, prompts, prompt_valid, sampling)
    prompts = prompts.astype(jnp.int32)
    cache = init_cache(config, prompts.shape[0])
    logits, cache = forward(params, config, prompts, positions_from_valid(prompt_valid), prompt_valid, cache)
    carry = _CachedCarry(cache, logits[:, -1], jnp.zeros(prompts.shape[0], bool))
    next_position = jnp.sum(prompt_valid, axis=1, dtype=jnp.int32)  # first response token's position
    step = functools.partial(_cached_step, params, config, sampling, key, next_position)
    _, (tokens, mask, logps) = jax.lax.scan(step, carry, jnp.arange(sampling.max_new_tokens))
    return Samples(tokens.T, mask.T, logps.T)


def _naive_step(
    params, config: TransformerConfig, sampling: SamplingConfig, key, positions, prompt_length: int, carry: _NaiveCarry, t
):
    """Emit token `t` from a full forward pass over all `Lp + N` slots (causal: later slots are unseen)."""
    logits, _ = forward(params, config, carry.tokens, positions, carry.valid)
    next_logits = jax.lax.dynamic_index_in_dim(logits, prompt_length - 1 + t, axis=1, keepdims=False)
    token, mask, logp, done = _emit(sampling, key, t, next_logits, carry.done)
    slot = (0, prompt_length + t)
    tokens = jax.lax.dynamic_update_slice(carry.tokens, token[:, None], slot)
    valid = jax.lax.dynamic_update_slice(carry.valid, mask[:, None], slot)
    return _NaiveCarry(tokens, valid, done), (token, mask, logp)


def sample_naive(
    params,
    config: TransformerConfig,
    key: PRNGKeyArray,
    prompts: Int[Array, "B Lp"],
    prompt_valid: Bool[Array, "B Lp"],
    sampling: SamplingConfig,
) -> Samples:
    """`sample` without a cache: every step re-encodes all `Lp + N` slots with the full model.

    Same draws (`fold_in(key, t)`), so the same `Samples` up to float rounding; `O(N)` times the
    compute of `sample`. For tests and the KV-cache benchmark.
    """
    _check_sampling(config, prompts, prompt_valid, sampling)
    batch, prompt_length = prompts.shape
    steps = sampling.max_new_tokens
    next_position = jnp.sum(prompt_valid, axis=1, dtype=jnp.int32)
    response_positions = next_position[:, None] + jnp.arange(steps)
    positions = jnp.concatenate([positions_from_valid(prompt_valid), response_positions], axis=1)
    carry = _NaiveCarry(
        tokens=jnp.concatenate([prompts.astype(jnp.int32), jnp.full((batch, steps), sampling.pad_id, jnp.int32)], axis=1),
        valid=jnp.concatenate([prompt_valid, jnp.zeros((batch, steps), bool)], axis=1),
        done=jnp.zeros(batch, bool),
    )
    step = functools.partial(_naive_step, params, config, sampling, key, positions, prompt_length)
    _, (tokens, mask, logps) = jax.lax.scan(step, carry, jnp.arange(steps))
    return Samples(tokens.T, mask.T, logps.T)


def _teacher_forced(params, config: TransformerConfig, prompts, prompt_valid, responses, response_mask, head: str):
    """Outputs of one forward pass over `concat(prompts, responses)`, and its `valid` mask."""
    _check_responses(config, prompts, prompt_valid, responses, response_mask)
    tokens = jnp.concatenate([prompts, responses], axis=1).astype(jnp.int32)
    valid = jnp.concatenate([prompt_valid, response_mask], axis=1)
    outputs, _ = forward(params, config, tokens, positions_from_valid(valid), valid, head=head)
    return outputs, valid


def _response_log_probs(params, config: TransformerConfig, prompts, prompt_valid, responses, response_mask) -> Float[Array, "B N V"]:
    """log pi(. | x, y_<t) over the vocabulary at every response position, teacher-forced."""
    logits, _ = _teacher_forced(params, config, prompts, prompt_valid, responses, response_mask, "logits")
    return jax.nn.log_softmax(logits[:, prompts.shape[1] - 1 : -1])


def token_logps(
    params,
    config: TransformerConfig,
    prompts: Int[Array, "B Lp"],
    prompt_valid: Bool[Array, "B Lp"],
    responses: Int[Array, "B N"],
    response_mask: Bool[Array, "B N"],
) -> Float[Array, "B N"]:
    """`log pi(y_t | x, y_<t)` of each response token, teacher-forced in one forward pass; 0 where masked.

    The logits at slot `Lp - 1 + t` predict `y_t`. Shapes: `[B, Lp]`, `[B, N]` -> `[B, N]`.
    """
    log_probs = _response_log_probs(params, config, prompts, prompt_valid, responses, response_mask)
    logps = jnp.take_along_axis(log_probs, responses[..., None].astype(jnp.int32), axis=-1)[..., 0]
    return jnp.where(response_mask, logps, 0.0)


def sequence_logps(params, config: TransformerConfig, prompts, prompt_valid, responses, response_mask) -> Float[Array, " B"]:
    """`log pi(y | x) = sum_t mask_t log pi(y_t | x, y_<t)`, the sequence log-probability DPO/IPO take."""
    return token_logps(params, config, prompts, prompt_valid, responses, response_mask).sum(axis=1)


def sequence_scores(params, config: TransformerConfig, prompts, prompt_valid, responses, response_mask) -> Float[Array, " B"]:
    """Reward-model score `r(x, y)`: a `head="scalar"` model's output at the last real token of `x ++ y`."""
    scores, valid = _teacher_forced(params, config, prompts, prompt_valid, responses, response_mask, "scalar")
    last = valid.shape[1] - 1 - jnp.argmax(valid[:, ::-1], axis=1)
    return jnp.take_along_axis(scores, last[:, None], axis=1)[:, 0]


def self_certainty(params, config: TransformerConfig, prompts, prompt_valid, responses, response_mask) -> Float[Array, " B"]:
    r"""Self-certainty of each response: its tokens' mean KL divergence from uniform to the policy.

    Kang et al. 2025, "Scalable Best-of-N Selection for Large Language Models via
    Self-Certainty", arXiv 2502.18581, Eq. 3 (V = vocabulary size, n = response length):

    .. math:: SC(y) = -\frac{1}{nV}\sum_{t=1}^{n}\sum_{j=1}^{V}\log\big(V\,\pi(j \mid x, y_{<t})\big).

    Higher is more confident; a uniform next-token distribution scores 0. Best-of-N picks the
    response with the highest score, with no verifier or reward model. Shapes as `token_logps`,
    `-> [B]` (0 for an empty response).
    """
    log_probs = _response_log_probs(params, config, prompts, prompt_valid, responses, response_mask)
    per_token = -jnp.mean(log_probs, axis=-1) - jnp.log(log_probs.shape[-1])
    return jnp.sum(jnp.where(response_mask, per_token, 0.0), -1) / jnp.maximum(response_mask.sum(-1), 1)
