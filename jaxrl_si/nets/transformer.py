"""A small pre-LayerNorm causal transformer over token sequences, with an explicit KV cache.

The layout is GPT-2's (Radford et al. 2019): `x + attn(LN(x))`, `x + mlp(LN(x))`, a final
LayerNorm and an untied projection to vocabulary logits (`head="logits"`), or to one scalar per
position (`head="scalar"`, a sequence reward model read at the last real token). Positions are
rotary (Su et al. 2021, arXiv 2104.09864) or learned absolute embeddings.

Prompts are LEFT-padded, so every call takes explicit `positions` (the count of real tokens
before a token, `positions_from_valid`) and a `valid` mask: a key is attended to iff it is valid
and not in the future. A masked score is the finite `finfo.min`, never -inf, so a row with no
valid key (a padding query) gets a uniform, finite average instead of NaN.

The KV cache is a pytree passed in and returned (not flax's mutable "cache" collection): a call
with `cache` writes its tokens' keys and values into slots `[length, length + L)` and attends
to every valid filled slot. A prefill is a call on the prompt with an empty cache
(`init_cache`); a decode step is a call on one token.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int, PRNGKeyArray

from jaxrl_si.errors import ConfigError

POSITION_KINDS = ("rotary", "learned")
HEADS = ("logits", "scalar")
_ROTARY_BASE = 10_000.0  # theta_i = base^(-2i/d), Su et al. 2021 eq. 15
_INIT_STD = 0.02  # GPT-2's normal(0, 0.02) initialisation


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
    """Static (shape-determining) settings of a `CausalTransformer`; hashable, so `jit`-static."""

    vocab_size: int  # tokens 0 .. vocab_size - 1 (pad and EOS included)
    num_layers: int = 2  # transformer blocks
    width: int = 128  # residual stream width d_model
    num_heads: int = 4  # attention heads; must divide width
    max_length: int = 32  # context: prompt + response tokens (cache slots, learned positions)
    positions: str = "rotary"  # rotary | learned
    mlp_ratio: int = 4  # MLP hidden width = mlp_ratio * width

    def __post_init__(self):
        for name in ("vocab_size", "num_layers", "width", "num_heads", "max_length", "mlp_ratio"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"TransformerConfig.{name} must be a positive int, got {value!r}.")
        if self.width % self.num_heads:
            raise ConfigError(
                f"TransformerConfig.num_heads={self.num_heads} must divide width={self.width}."
            )
        if self.positions not in POSITION_KINDS:
            raise ConfigError(f"TransformerConfig.positions must be one of {POSITION_KINDS}, got {self.positions!r}.")
        if self.positions == "rotary" and self.head_dim % 2:
            raise ConfigError(
                f"TransformerConfig.width / num_heads = {self.head_dim} (the head dim) must be even "
                "for rotary positions."
            )

    @property
    def head_dim(self) -> int:
        """Width of one attention head: width / num_heads."""
        return self.width // self.num_heads


class KVCache(flax.struct.PyTreeNode):
    """Keys and values of the tokens seen so far, one slot per token, filled left to right.

    `keys`, `values`: `[layers, B, max_length, heads, head_dim]` (keys already rotated);
    `valid`: `[B, max_length]` (False for padding and for slots not yet filled);
    `length`: int32 scalar, the number of filled slots (the next write goes to slot `length`).
    """

    keys: Float[Array, "layers B M H D"]
    values: Float[Array, "layers B M H D"]
    valid: Bool[Array, "B M"]
    length: Int[Array, ""]


def init_cache(config: TransformerConfig, batch_size: int, dtype=jnp.float32) -> KVCache:
    """An empty cache for `batch_size` sequences of up to `config.max_length` tokens."""
    shape = (config.num_layers, batch_size, config.max_length, config.num_heads, config.head_dim)
    return KVCache(
        keys=jnp.zeros(shape, dtype),
        values=jnp.zeros(shape, dtype),
        valid=jnp.zeros((batch_size, config.max_length), bool),
        length=jnp.zeros((), jnp.int32),
    )


def positions_from_valid(valid: Bool[Array, "B L"]) -> Int[Array, "B L"]:
    """Position of each token among the real ones: `p_t = sum_{s <= t} valid_s - 1`, 0 on left padding.

    >>> positions_from_valid(jnp.array([[False, False, True, True], [True, True, True, True]]))
    Array([[0, 0, 0, 1],
           [0, 1, 2, 3]], dtype=int32)
    """
    return jnp.maximum(jnp.cumsum(valid, axis=1, dtype=jnp.int32) - 1, 0)


def _rotary(x: Float[Array, "B L H D"], positions: Int[Array, "B L"]) -> Float[Array, "B L H D"]:
    """Rotate feature pairs of `x` by angles `p * theta_i`, `theta_i = 10000^(-2i/D)` (Su et al. 2021, eq. 34).

    Pairs are `(x_i, x_{i + D/2})` (the GPT-NeoX layout) rather than the paper's adjacent
    `(x_{2i}, x_{2i+1})`: a fixed permutation of the features, so the same model up to the
    learned projections. `q_m . k_n` then depends on positions only through `m - n`.
    """
    half = x.shape[-1] // 2
    theta = _ROTARY_BASE ** (-jnp.arange(half, dtype=jnp.float32) / half)
    angle = positions[..., None, None].astype(jnp.float32) * theta  # [B, L, 1, D/2]
    cos, sin = jnp.cos(angle).astype(x.dtype), jnp.sin(angle).astype(x.dtype)
    x1, x2 = x[..., :half], x[..., half:]
    return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)


def _attention_mask(key_valid: Bool[Array, "B M"], start, length: int) -> Bool[Array, "B L M"]:
    """Query `i` (in slot `start + i`) sees key slot `j` iff `j <= start + i` and key `j` is valid."""
    query_slot = start + jnp.arange(length)
    causal = jnp.arange(key_valid.shape[1])[None, :] <= query_slot[:, None]
    return causal[None] & key_valid[:, None, :]


def _attend(
    q: Float[Array, "B L H D"], k: Float[Array, "B M H D"], v: Float[Array, "B M H D"], mask: Bool[Array, "B L M"]
) -> Float[Array, "B L H D"]:
    """Scaled dot-product attention `softmax(q k^T / sqrt(D), masked) v` (Vaswani et al. 2017, eq. 1).

    Masked scores are `finfo.min`: a row with no visible key averages `v` uniformly (finite).
    """
    scores = jnp.einsum("blhd,bmhd->bhlm", q, k) / jnp.sqrt(q.shape[-1]).astype(q.dtype)
    scores = jnp.where(mask[:, None], scores, jnp.finfo(scores.dtype).min)
    return jnp.einsum("bhlm,bmhd->blhd", jax.nn.softmax(scores, axis=-1), v)


def _dense(features, std=_INIT_STD, **kwargs) -> nn.Module:
    return nn.Dense(features, kernel_init=nn.initializers.normal(std), **kwargs)


class _Block(nn.Module):
    """`x + attn(LN(x))`, then `x + mlp(LN(x))`; returns the layer's keys/values (cache-sized with a cache)."""

    config: TransformerConfig

    @nn.compact
    def __call__(self, x, positions, mask, past):
        cfg = self.config
        # GPT-2 scales the residual branches' output weights by 1/sqrt(2 * layers).
        out_std = _INIT_STD / (2 * cfg.num_layers) ** 0.5
        h = nn.LayerNorm(name="attn_norm")(x)
        qkv = nn.DenseGeneral((3, cfg.num_heads, cfg.head_dim), kernel_init=nn.initializers.normal(_INIT_STD), name="qkv")(h)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        if cfg.positions == "rotary":
            q, k = _rotary(q, positions), _rotary(k, positions)
        if past is not None:
            keys, values, start = past
            k = jax.lax.dynamic_update_slice(keys, k.astype(keys.dtype), (0, start, 0, 0))
            v = jax.lax.dynamic_update_slice(values, v.astype(values.dtype), (0, start, 0, 0))
        h = _attend(q, k, v, mask)
        x = x + nn.DenseGeneral(cfg.width, axis=(-2, -1), kernel_init=nn.initializers.normal(out_std), name="attn_out")(h)
        h = nn.gelu(_dense(cfg.mlp_ratio * cfg.width, name="mlp_in")(nn.LayerNorm(name="mlp_norm")(x)))
        return x + _dense(cfg.width, out_std, name="mlp_out")(h), (k, v)


class CausalTransformer(nn.Module):
    """Decoder-only transformer: `tokens [B, L]` -> logits `[B, L, V]` or scalars `[B, L]`.

    `__call__(tokens, positions, valid, cache=None) -> (outputs, new_cache)`; `new_cache` is
    None without a cache. With one, the `L` tokens fill slots `[cache.length, cache.length + L)`
    and the caller must keep `cache.length + L <= max_length` (a write past the end is clamped
    by `dynamic_update_slice`, so it would overwrite the last slots).
    """

    config: TransformerConfig
    head: str = "logits"  # one of HEADS

    @nn.compact
    def __call__(self, tokens, positions, valid, cache: KVCache | None = None):
        cfg = self.config
        if self.head not in HEADS:
            raise ConfigError(f"CausalTransformer.head must be one of {HEADS}, got {self.head!r}.")
        embed_init = nn.initializers.normal(_INIT_STD)
        x = nn.Embed(cfg.vocab_size, cfg.width, embedding_init=embed_init, name="embed")(tokens)
        if cfg.positions == "learned":
            x = x + nn.Embed(cfg.max_length, cfg.width, embedding_init=embed_init, name="position_embed")(positions)
        start = 0 if cache is None else cache.length
        key_valid = valid if cache is None else jax.lax.dynamic_update_slice(cache.valid, valid, (0, start))
        mask = _attention_mask(key_valid, start, tokens.shape[1])
        layer_kv = []
        for layer in range(cfg.num_layers):
            past = None if cache is None else (cache.keys[layer], cache.values[layer], start)
            x, kv = _Block(cfg, name=f"block_{layer}")(x, positions, mask, past)
            layer_kv.append(kv)
        x = nn.LayerNorm(name="final_norm")(x)
        if self.head == "logits":
            out = _dense(cfg.vocab_size, name="logits")(x)
        else:
            out = _dense(1, name="score")(x)[..., 0]
        if cache is None:
            return out, None
        keys, values = (jnp.stack(parts) for parts in zip(*layer_kv, strict=True))
        return out, KVCache(keys, values, key_valid, cache.length + tokens.shape[1])


def init_params(config: TransformerConfig, key: PRNGKeyArray, head: str = "logits"):
    """Initial parameters of `CausalTransformer(config, head)` (the `params` collection)."""
    tokens = jnp.zeros((1, 1), jnp.int32)
    return CausalTransformer(config, head).init(key, tokens, tokens, jnp.ones((1, 1), bool))["params"]


def forward(params, config: TransformerConfig, tokens, positions, valid, cache: KVCache | None = None, *, head: str = "logits"):
    """`CausalTransformer(config, head).apply`: `(outputs, new_cache)`, see `CausalTransformer`."""
    return CausalTransformer(config, head).apply({"params": params}, tokens, positions, valid, cache)
