"""Weight initialisers that stay safe inside `vmap`-ed programs on CPU."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp


def _polar_factor(a: jax.Array, iterations: int) -> jax.Array:
    """U V^T of a = U S V^T, `[n, m]` with n >= m, by the Newton-Schulz iteration.

    X_0 = a / ||a||_F (all singular values in (0, 1]), X <- 1.5 X - 0.5 X (X^T X): every
    singular value converges to 1 (grows x1.5 per step while small, quadratically near 1),
    the singular vectors are untouched (Higham 2008, "Functions of Matrices", Sec. 8.3).
    Matmuls only: no LAPACK call.
    """
    x = a / jnp.linalg.norm(a)
    return jax.lax.fori_loop(0, iterations, lambda _, x: 1.5 * x - 0.5 * x @ (x.T @ x), x)


def orthogonal(scale: float = 1.0, *, iterations: int = 80):
    """Orthogonal initialiser (Saxe et al. 2014, arXiv 1312.6120) without a QR decomposition.

    Returns W = scale * Q with Q the polar factor of a Gaussian matrix, which is distributed
    uniformly (Haar) on the matrices with orthonormal columns (or rows, if wider than tall):
    the same distribution as `flax.linen.initializers.orthogonal`. The trailing axis is the
    output axis; leading axes are flattened into the input axis, as in flax.

    Why not flax's QR-based initialiser: under `vmap` (a batch of seeds) it becomes a batched
    LAPACK `geqrf` whose kernel waits for XLA's CPU thread pool from inside that same pool;
    with two cores, the 8-seed PPO program deadlocked in about half of the fresh-process runs
    (jax 0.10.2; both pool threads blocked in `ParallelBatchMap`). Newton-Schulz is matmuls only.
    """

    def init(key, shape, dtype=jnp.float32):
        rows, cols = math.prod(shape[:-1]), shape[-1]
        tall = (max(rows, cols), min(rows, cols))
        q = _polar_factor(jax.random.normal(key, tall, jnp.float32), iterations)
        q = q if rows >= cols else q.T
        return (scale * q).reshape(shape).astype(dtype)

    return init
