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
    trajectory, losses = minimize_logits_recorded(
        loss_fn, logits, steps=steps, record_every=steps, learning_rate=learning_rate
    )
    return trajectory[-1], losses


def minimize_logits_recorded(
    loss_fn: Callable[[Float[Array, "N"]], Float[Array, ""]],
    logits: Float[Array, "N"],
    *,
    steps: int,
    record_every: int,
    learning_rate: float | Float[Array, ""] | optax.Schedule,
) -> tuple[Float[Array, "R N"], Float[Array, "steps"]]:
    """`minimize_logits` that also records the logits every `record_every` steps.

    One Adam state runs through all `steps` (restarting Adam per chunk would kick a converged
    run off its optimum). Returns the logits trajectory, `R = steps // record_every + 1` rows
    (row k = logits after k * record_every steps; row 0 = the initial logits), and the loss
    before each step. `steps` and `record_every` are static; `steps % record_every` must be 0.
    `learning_rate` may be traced, or an optax schedule (which may close over a traced value).
    """
    if steps < 1 or record_every < 1 or steps % record_every:
        raise ValueError(f"`record_every` ({record_every}) must divide `steps` ({steps}), both >= 1.")
    optimizer = optax.adam(learning_rate)

    def step(carry, _):
        params, opt_state = carry
        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), loss

    def chunk(carry, _):
        carry, losses = jax.lax.scan(step, carry, None, length=record_every)
        return carry, (carry[0], losses)

    init = (logits, optimizer.init(logits))
    _, (recorded, losses) = jax.lax.scan(chunk, init, None, length=steps // record_every)
    return jnp.concatenate([logits[None], recorded]), losses.reshape(-1)
