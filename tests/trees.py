"""Pytree helpers the agent tests share: one member of a vmapped tree, and leaves as comparable arrays."""

import jax
import jax.numpy as jnp
import numpy as np


def member(tree, index: int):
    """Member `index` of a tree whose leaves carry a leading member axis."""
    return jax.tree.map(lambda x: x[index], tree)


def leaf_arrays(tree) -> list[np.ndarray]:
    """The leaves as NumPy arrays (typed PRNG keys as their key data), for exact comparison."""
    as_data = lambda x: jax.random.key_data(x) if jnp.issubdtype(x.dtype, jax.dtypes.prng_key) else x  # noqa: E731
    return [np.asarray(as_data(x)) for x in jax.tree.leaves(tree)]
