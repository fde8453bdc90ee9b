"""The layout hook: the one thing an algorithm knows about devices.

An agent marks the batch axes of its arrays (environments, minibatch rows) by calling
`constrain(tree, axis)` on them, and nothing else: it holds no mesh and never asks how many
devices there are. On one device the hook is `unconstrained`, the identity; for data
parallelism `jaxrl_si.parallel.batch_constraint(mesh)` returns a hook that splits that axis
over the mesh's `data` axis. A constraint is a layout hint to XLA, never a change of values:
an agent computes the same numbers under any hook (up to the order of float sums where a
reduction crosses devices).

Environment states mix leaves with an env axis and leaves pooled over environments (e.g.
observation statistics); `jaxrl_si.envs.constrain_env_state` asks the env which is which.
"""

from __future__ import annotations

from typing import Protocol, TypeVar

Tree = TypeVar("Tree")


class Constrain(Protocol):
    """`constrain(tree, axis=0) -> tree`: every leaf with more than `axis` dims has a batch axis at `axis`."""

    def __call__(self, tree: Tree, axis: int = 0) -> Tree: ...


def unconstrained(tree: Tree, axis: int = 0) -> Tree:
    """The hook on one device: returns `tree` unchanged."""
    del axis
    return tree
