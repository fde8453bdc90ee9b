"""Multi-layer perceptrons with the initialisation PPO implementations rely on."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import flax.linen as nn
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from jaxrl_si.nets.initializers import orthogonal

ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
    "tanh": nn.tanh,
    "relu": nn.relu,
    "gelu": nn.gelu,
    "silu": nn.silu,
}


def activation_by_name(name: str) -> Callable[[Array], Array]:
    """Look up an activation; unknown names raise a `ValueError` listing the choices."""
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; choose one of {sorted(ACTIVATIONS)}") from None


class MLP(nn.Module):
    """`x -> act(W_1 x) -> ... -> act(W_n .) -> W_out .`, orthogonal weights, zero biases.

    Hidden layers use orthogonal init (`jaxrl_si.nets.initializers.orthogonal`, QR-free, so it
    is safe under `vmap` on CPU) with gain sqrt(2); the output layer's gain is
    `output_scale` (PPO uses 0.01 for the policy logits and 1.0 for the value), following
    Engstrom et al. 2020 / Andrychowicz et al. 2021 (arXiv 2006.05990, Sec. 3.2).

    Shapes: `[..., D_in] -> [..., output_size]`.
    """

    hidden_sizes: Sequence[int]
    output_size: int
    activation: str = "tanh"
    output_scale: float = 1.0
    layer_norm: bool = False
    output_bias: bool = True  # False where the loss cannot see a constant shift of the output

    @nn.compact
    def __call__(self, x: Float[Array, "... D"]) -> Float[Array, "... O"]:
        act = activation_by_name(self.activation)
        for width in self.hidden_sizes:
            x = nn.Dense(width, kernel_init=orthogonal(np.sqrt(2.0)), bias_init=nn.initializers.zeros)(x)
            if self.layer_norm:
                x = nn.LayerNorm()(x)
            x = act(x)
        return nn.Dense(
            self.output_size,
            kernel_init=orthogonal(self.output_scale),
            bias_init=nn.initializers.zeros,
            use_bias=self.output_bias,
        )(x)


def flatten_observation(obs: Float[Array, "... *obs_shape"], obs_ndim: int) -> Float[Array, "... D"]:
    """Merge the trailing `obs_ndim` axes into one feature axis (e.g. MinAtar's 10x10xC)."""
    if obs_ndim <= 1:
        return obs
    return jnp.reshape(obs, obs.shape[: obs.ndim - obs_ndim] + (-1,))
