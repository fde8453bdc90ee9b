r"""The SPR network: convolutional encoder, C51 dueling head with noisy layers, transition model,
projection and prediction heads (Schwarzer et al. 2021, arXiv 2007.05929, Sec. 2 and App. B).

    z_t      = renorm(conv(o_t))                         encoder, [B, h, w, c]
    Q(z, ·)  = V(z) + A(z, ·) − mean_a A(z, a)           per atom, in logit space (dueling C51)
    ẑ_{t+1}  = renorm(relu(conv(BN(relu(conv([ẑ_t, onehot(a_t)]))))))  transition model
    g(z)     = [W_v flat(z), W_a flat(z)]                projection: the Q head's first layers
    q(g)     = W_p g                                     prediction head (online only)

`renorm` is the per-sample min-max rescaling to [0, 1] of the official code. The projection is
the first (value and advantage) layer of the Q head without its noise and without the ReLU, as
the official code's `q_l1` classifier. The transition model's BatchNorm always normalises with
the statistics of its batch: the model only runs in training (the SPR loss), never when acting,
so there are no running averages to keep. Noisy layers are factorised Gaussian (Fortunato et al.
2018, "Noisy Networks for Exploration", arXiv 1706.10295, Eq. 10-11), σ0 = 0.5 as in SPR; one
noise sample per forward pass, shared by the batch, drawn from the `noise` RNG stream.

Convolutions (`Conv`) are one module with two lowerings of the same `[k, k, C_in, C_out]` kernel:
XLA's convolution, or "patches": the k·k strided slices concatenated on the channel axis and one
matrix product. On XLA:CPU an SPR gradient step (convolutions and their gradients) inside a
`while` loop (a `lax.scan` over environment steps) runs 4.5x (Atari-sized) to 7x (MinAtar-sized)
slower than the same step outside one, while the patches lowering runs as fast inside as outside
(`experiments/bench_spr.py`, `update_ms`); outside loops XLA's convolution is 20-25 % faster.
So `conv_impl="auto"` picks patches on CPU, where the whole run is a scan, and XLA's convolution
(cuDNN) elsewhere. The parameters are the same either way: a checkpoint moves between
backends.

Call the methods through `apply(params, ..., method=SPRNetwork.<name>)`; `init` with
`method=SPRNetwork.initialize` touches every part.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

NATURE_ENCODER = ((32, 8, 4), (64, 4, 2), (64, 3, 1))  # (channels, kernel, stride): Mnih et al. 2015
MINATAR_ENCODER = ((16, 3, 1),)  # one 3x3 layer of 16 channels: MinAtar's DQN (Young & Tian 2019)


CONV_IMPLS = ("auto", "xla", "patches")


def conv_impl_for_backend(impl: str) -> str:
    """`auto` -> "patches" on the CPU backend, "xla" elsewhere (module docstring)."""
    if impl not in CONV_IMPLS:
        raise ValueError(f"unknown conv_impl {impl!r}; choose one of {CONV_IMPLS}")
    if impl != "auto":
        return impl
    return "patches" if jax.default_backend() == "cpu" else "xla"


def _patches(x: Float[Array, "B H W C"], kernel: int, stride: int) -> Float[Array, "B h w KKC"]:
    """im2col by slicing: the `kernel²` strided windows of `x`, concatenated as (row, column, channel)."""
    out_h, out_w = (x.shape[1] - kernel) // stride + 1, (x.shape[2] - kernel) // stride + 1
    span_h, span_w = stride * (out_h - 1) + 1, stride * (out_w - 1) + 1
    windows = [x[:, i : i + span_h : stride, j : j + span_w : stride] for i in range(kernel) for j in range(kernel)]
    return jnp.concatenate(windows, axis=-1)


class Conv(nn.Module):
    """A square 2-D convolution, `padding` "VALID" or "SAME" (odd kernel, stride 1), lowered per `impl`."""

    features: int
    kernel: int
    stride: int = 1
    padding: str = "VALID"
    impl: str = "xla"  # "xla" | "patches" (resolve "auto" with `conv_impl_for_backend` first)

    @nn.compact
    def __call__(self, x: Float[Array, "B H W C"]) -> Float[Array, "B h w F"]:
        k = self.kernel
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (k, k, x.shape[-1], self.features))
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        if self.impl == "xla":
            y = jax.lax.conv_general_dilated(
                x, kernel, (self.stride, self.stride), self.padding, dimension_numbers=("NHWC", "HWIO", "NHWC")
            )
            return y + bias
        if self.padding == "SAME":
            x = jnp.pad(x, ((0, 0), (k // 2, k // 2), (k // 2, k // 2), (0, 0)))
        return _patches(x, k, self.stride) @ kernel.reshape(-1, self.features) + bias


def renormalize(x: Float[Array, "B ..."]) -> Float[Array, "B ..."]:
    """Min-max rescaling of each sample to [0, 1] over all its features (SPR's `renormalize`)."""
    flat = x.reshape(x.shape[0], -1)
    low, high = flat.min(axis=1, keepdims=True), flat.max(axis=1, keepdims=True)
    return ((flat - low) / (high - low + 1e-5)).reshape(x.shape)


def _scaled_noise(key, size: int) -> Array:
    """f(ε) = sign(ε) sqrt(|ε|), ε ~ N(0, 1): the factorised noise of Fortunato et al. Eq. 11."""
    eps = jax.random.normal(key, (size,))
    return jnp.sign(eps) * jnp.sqrt(jnp.abs(eps))


class NoisyDense(nn.Module):
    """y = (μ_w + σ_w ⊙ ε_w) x + μ_b + σ_b ⊙ ε_b with factorised ε_w = f(ε_out) f(ε_in)ᵀ.

    μ ~ U(±1/√p), σ = σ0/√p for p inputs (Fortunato et al. 2018, Sec. 3.2). `noise=False`
    gives the mean layer (evaluation, the projection). `sigma0 = 0` makes a plain dense layer
    with the same initialisation, so the noisy and plain heads are one module.
    """

    features: int
    sigma0: float = 0.5

    @nn.compact
    def __call__(self, x: Float[Array, "... P"], *, noise: bool) -> Float[Array, "... F"]:
        fan_in = x.shape[-1]
        bound = 1.0 / fan_in**0.5
        uniform = lambda key, shape: jax.random.uniform(key, shape, minval=-bound, maxval=bound)  # noqa: E731
        kernel = self.param("kernel", uniform, (fan_in, self.features))
        bias = self.param("bias", uniform, (self.features,))
        y = x @ kernel + bias
        if not noise or self.sigma0 == 0.0:
            return y
        sigma = nn.initializers.constant(self.sigma0 * bound)
        kernel_sigma = self.param("kernel_sigma", sigma, (fan_in, self.features))
        bias_sigma = self.param("bias_sigma", sigma, (self.features,))
        key_in, key_out = jax.random.split(self.make_rng("noise"))
        eps_in, eps_out = _scaled_noise(key_in, fan_in), _scaled_noise(key_out, self.features)
        return y + ((x * eps_in) @ kernel_sigma) * eps_out + bias_sigma * eps_out


def _batch_norm_in_training(x: Array, scale: Array, bias: Array) -> Array:
    """BatchNorm with the batch's own statistics over every axis but the channels (Ioffe & Szegedy 2015)."""
    axes = tuple(range(x.ndim - 1))
    mean, var = x.mean(axes), x.var(axes)
    return (x - mean) * jax.lax.rsqrt(var + 1e-5) * scale + bias


class TransitionModel(nn.Module):
    """ẑ' = renorm(relu(conv3(BN(relu(conv3([z, onehot(a) planes])))))) (SPR App. B; official code)."""

    num_actions: int
    hidden_channels: int
    conv_impl: str = "xla"

    @nn.compact
    def __call__(self, latent: Float[Array, "B h w c"], action: Int[Array, "B"]) -> Float[Array, "B h w c"]:
        planes = jnp.broadcast_to(
            jax.nn.one_hot(action, self.num_actions)[:, None, None, :], (*latent.shape[:3], self.num_actions)
        )
        conv = functools.partial(Conv, kernel=3, padding="SAME", impl=self.conv_impl)
        x = nn.relu(conv(self.hidden_channels)(jnp.concatenate([latent, planes], -1)))
        scale = self.param("bn_scale", nn.initializers.ones, (self.hidden_channels,))
        bias = self.param("bn_bias", nn.initializers.zeros, (self.hidden_channels,))
        x = _batch_norm_in_training(x, scale, bias)
        x = nn.relu(conv(latent.shape[-1])(x))
        return renormalize(x)


class SPRNetwork(nn.Module):
    """Encoder, C51 dueling head, transition model, projection and prediction (module docstring).

    Shapes: observations `[B, H, W, C]` float (already scaled to [0, 1]); latents
    `[B, h, w, c]`; Q logits `[B, num_actions, num_atoms]`; projections and predictions
    `[B, 2 * hidden]` (`[B, hidden]` without dueling).
    """

    num_actions: int
    num_atoms: int = 51
    encoder_layers: Sequence[tuple[int, int, int]] = NATURE_ENCODER
    hidden: int = 256  # width of each of the value and advantage streams
    dueling: bool = True
    noisy_sigma0: float = 0.5  # 0: plain (non-noisy) head
    conv_impl: str = "xla"  # "xla" | "patches": same parameters, see the module docstring

    def setup(self):
        self.convs = [Conv(channels, kernel, stride, impl=self.conv_impl) for channels, kernel, stride in self.encoder_layers]
        self.transition_model = TransitionModel(self.num_actions, self.encoder_layers[-1][0], self.conv_impl)
        self.advantage_hidden = NoisyDense(self.hidden, self.noisy_sigma0)
        self.advantage_out = NoisyDense(self.num_actions * self.num_atoms, self.noisy_sigma0)
        if self.dueling:
            self.value_hidden = NoisyDense(self.hidden, self.noisy_sigma0)
            self.value_out = NoisyDense(self.num_atoms, self.noisy_sigma0)
        self.predictor = nn.Dense(self.projection_size)

    @property
    def projection_size(self) -> int:
        return self.hidden * (2 if self.dueling else 1)

    def encode(self, obs: Float[Array, "B H W C"]) -> Float[Array, "B h w c"]:
        x = obs
        for conv in self.convs:
            x = nn.relu(conv(x))
        return renormalize(x)

    def q_logits(self, latent: Float[Array, "B h w c"], *, noise: bool) -> Float[Array, "B A N"]:
        flat = latent.reshape(latent.shape[0], -1)
        advantage = self.advantage_out(nn.relu(self.advantage_hidden(flat, noise=noise)), noise=noise)
        advantage = advantage.reshape(-1, self.num_actions, self.num_atoms)
        if not self.dueling:
            return advantage
        value = self.value_out(nn.relu(self.value_hidden(flat, noise=noise)), noise=noise)
        return value[:, None, :] + advantage - advantage.mean(axis=1, keepdims=True)

    def project(self, latent: Float[Array, "B h w c"]) -> Float[Array, "B D"]:
        flat = latent.reshape(latent.shape[0], -1)
        parts = [self.value_hidden(flat, noise=False)] if self.dueling else []
        return jnp.concatenate([*parts, self.advantage_hidden(flat, noise=False)], axis=-1)

    def predict(self, projection: Float[Array, "B D"]) -> Float[Array, "B D"]:
        return self.predictor(projection)

    def transition(self, latent: Float[Array, "B h w c"], action: Int[Array, "B"]) -> Float[Array, "B h w c"]:
        return self.transition_model(latent, action)

    def initialize(self, obs: Float[Array, "B H W C"], action: Int[Array, "B"]) -> Float[Array, "B A N"]:
        """Touch every part (for `init`): Q logits with noise, transition, projection, prediction."""
        latent = self.encode(obs)
        self.predict(self.project(self.transition(latent, action)))
        return self.q_logits(latent, noise=True)
