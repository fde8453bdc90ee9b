"""Action distributions as small pytrees: sample, log_prob, entropy, mode.

Pytrees (flax.struct) so they can cross `jit`/`vmap`/`scan` boundaries; every method is pure.
Shapes: a batch of `...` distributions over `A` actions (categorical) or `A` action dimensions
(Gaussians); `log_prob` and `entropy` reduce the action axis and return `[...]`.
"""

from __future__ import annotations

import math

import flax.struct
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int, PRNGKeyArray

from jaxrl_si.losses.policy_gradient import categorical_entropy, gaussian_entropy

_LOG_2PI = math.log(2.0 * math.pi)


class Categorical(flax.struct.PyTreeNode):
    """Softmax distribution over `A` discrete actions, from unnormalised `logits [..., A]`."""

    logits: Float[Array, "... A"]

    def sample(self, key: PRNGKeyArray) -> Int[Array, "..."]:
        return jax.random.categorical(key, self.logits)

    def log_prob(self, action: Int[Array, "..."]) -> Float[Array, "..."]:
        log_p = jax.nn.log_softmax(self.logits)
        return jnp.take_along_axis(log_p, action[..., None].astype(jnp.int32), axis=-1)[..., 0]

    def entropy(self) -> Float[Array, "..."]:
        """H = -sum_a pi(a) log pi(a)."""
        return categorical_entropy(self.logits)

    def mode(self) -> Int[Array, "..."]:
        return jnp.argmax(self.logits, axis=-1)


class DiagGaussian(flax.struct.PyTreeNode):
    """Gaussian with diagonal covariance: `mean [..., A]`, `log_std` broadcastable to it."""

    mean: Float[Array, "... A"]
    log_std: Float[Array, "... A"]

    def sample(self, key: PRNGKeyArray) -> Float[Array, "... A"]:
        noise = jax.random.normal(key, self.mean.shape, self.mean.dtype)
        return self.mean + jnp.exp(self.log_std) * noise

    def log_prob(self, action: Float[Array, "... A"]) -> Float[Array, "..."]:
        """log N(a; mu, sigma^2) = -sum_i [ (a_i - mu_i)^2 / (2 sigma_i^2) + log sigma_i + log(2 pi)/2 ]."""
        z = (action - self.mean) * jnp.exp(-self.log_std)
        return -jnp.sum(0.5 * jnp.square(z) + self.log_std + 0.5 * _LOG_2PI, axis=-1)

    def entropy(self) -> Float[Array, "..."]:
        """H = sum_i [ log sigma_i + (1 + log 2 pi) / 2 ]."""
        return gaussian_entropy(jnp.broadcast_to(self.log_std, self.mean.shape))

    def mode(self) -> Float[Array, "... A"]:
        return self.mean


class TanhGaussian(flax.struct.PyTreeNode):
    """a = tanh(u), u ~ N(mean, diag(exp(log_std))^2): actions in (-1, 1) (SAC-style squashing).

    log pi(a) = log N(u) - sum_i log(1 - tanh(u_i)^2) (Haarnoja et al. 2018, arXiv 1801.01290,
    App. C, Eq. 21), computed with the stable form 2 (log 2 - u - softplus(-2u)). There is no
    closed-form entropy; `entropy()` returns the Gaussian's entropy plus the expected
    log-Jacobian at the mean, a cheap deterministic surrogate (documented, not exact).
    """

    mean: Float[Array, "... A"]
    log_std: Float[Array, "... A"]
    eps: float = flax.struct.field(pytree_node=False, default=1e-6)

    def _base(self) -> DiagGaussian:
        return DiagGaussian(self.mean, self.log_std)

    def sample(self, key: PRNGKeyArray) -> Float[Array, "... A"]:
        return jnp.tanh(self._base().sample(key))

    def log_prob(self, action: Float[Array, "... A"]) -> Float[Array, "..."]:
        pre_tanh = jnp.arctanh(jnp.clip(action, -1.0 + self.eps, 1.0 - self.eps))
        return self._base().log_prob(pre_tanh) - jnp.sum(_log_tanh_jacobian(pre_tanh), axis=-1)

    def entropy(self) -> Float[Array, "..."]:
        return self._base().entropy() + jnp.sum(_log_tanh_jacobian(self.mean), axis=-1)

    def mode(self) -> Float[Array, "... A"]:
        return jnp.tanh(self.mean)


def _log_tanh_jacobian(u: Float[Array, "..."]) -> Float[Array, "..."]:
    """log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u)), stable for large |u|."""
    return 2.0 * (math.log(2.0) - u - jax.nn.softplus(-2.0 * u))
