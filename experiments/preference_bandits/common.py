"""Pieces shared by the preference-bandit experiments: tabular softmax policies and their fitting."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array, Float


def kl_divergence(p: Float[Array, "... N"], q: Float[Array, "... N"]) -> Float[Array, "..."]:
    """KL(p || q) = sum_i p_i log(p_i / q_i) for categorical distributions (0 log 0 = 0)."""
    return jnp.sum(jnp.where(p > 0, p * (jnp.log(jnp.where(p > 0, p, 1.0)) - jnp.log(q)), 0.0), axis=-1)


def total_variation(p: Float[Array, "... N"], q: Float[Array, "... N"]) -> Float[Array, "..."]:
    """TV(p, q) = 1/2 sum_i |p_i - q_i|."""
    return 0.5 * jnp.sum(jnp.abs(p - q), axis=-1)


def minimize_logits(
    loss_fn: Callable[[Float[Array, "N"]], Float[Array, ""]],
    logits: Float[Array, "N"],
    *,
    steps: int,
    learning_rate: float | Float[Array, ""],
) -> tuple[Float[Array, "N"], Float[Array, "steps"]]:
    """Run `steps` Adam steps on `loss_fn(logits)` inside one `lax.scan`.

    Returns the final logits and the loss before each step. `learning_rate` may be traced, so a
    vmapped sweep over it compiles once.
    """
    optimizer = optax.adam(learning_rate)

    def step(carry, _):
        params, opt_state = carry
        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), loss

    (logits, _), losses = jax.lax.scan(step, (logits, optimizer.init(logits)), None, length=steps)
    return logits, losses
