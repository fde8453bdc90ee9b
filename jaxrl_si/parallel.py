"""Device meshes for sweeps: a `sweep` axis (independent members) and a `data` axis (batch).

No `pmap`: a mesh from `jax.make_mesh`, arrays placed with `NamedSharding`, `jax.jit` does the
rest. The pmap idioms map as follows:

| pmap idiom                         | here                                                          |
|------------------------------------|---------------------------------------------------------------|
| `device_put_replicated(params)`    | `jax.device_put(params, NamedSharding(mesh, P()))`            |
| per-device batch `x[n_dev, ...]`   | `jax.device_put(x, NamedSharding(mesh, P("data")))`           |
| `pmap(vmap(train))` over members   | `jit(vmap_members(train, mesh))` with members sharded `P("sweep")` (`shard_members`) |
| `lax.pmean(grads, "i")`            | implicit in `jit` (GSPMD), or `jax.shard_map` + `lax.pmean(loss, "data")` |

A dimension that does not divide its mesh axis is an error, never a silent replication.

Several processes (a pod slice, `jaxrl_si.distributed`): `jax.devices()` lists every process's
devices and a mesh spans them all; each process holds only the shards on its own devices. Host
values reach such a mesh through `place` (each process fills its own shards, never a
`device_put` of a whole host array onto another host's devices) and come back through
`to_host` (an all-gather over processes when other processes hold some shards).

Algorithms never see the mesh: they get the layout hook `batch_constraint(mesh)` (see
`jaxrl_si.layout`) and mark their batch axes with it; members go over `sweep` by
`vmap_members` and `shard_members`, outside the algorithm.
"""

from __future__ import annotations

import functools
import math
import os
import warnings

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import AxisType, Mesh, NamedSharding, Sharding
from jax.sharding import PartitionSpec as P

from jaxrl_si.errors import ConfigError
from jaxrl_si.layout import Constrain, unconstrained

AXES = ("sweep", "data")


def expose_cpu_cores(count: int = 0) -> None:
    """Have XLA:CPU expose `count` host devices (0: one per core this process may use).

    XLA:CPU runs one device's small ops on one core, so sweep members spread over one host device
    per core use every core (`default_mesh`; measured in experiments/README.md#sweeps). Only the
    CPU backend changes; on GPU/TPU the accelerators stay the default devices. Call it right
    after `import jax`: once JAX has run something the devices are fixed, and a later call (e.g. a
    re-run notebook cell) keeps them, warning if they differ. An `XLA_FLAGS` that sets
    `--xla_force_host_platform_device_count` wins.
    """
    if "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", ""):
        return
    if not count:
        count = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    try:
        jax.config.update("jax_num_cpu_devices", count)
    except RuntimeError:  # JAX has started: its CPU devices can no longer change
        if len(jax.devices("cpu")) != count:
            warnings.warn(f"JAX already runs with {len(jax.devices('cpu'))} CPU devices; call expose_cpu_cores({count}) before JAX runs anything", stacklevel=2)


def make_mesh(sweep: int = -1, data: int = 1, *, devices=None) -> Mesh:
    """A `(sweep, data)` mesh over `devices` (default: all); one size may be -1 (filled in).

    Axes are `Auto` (GSPMD propagation), so jitted code needs no mesh context.
    """
    devices = list(jax.devices() if devices is None else devices)
    sizes = [sweep, data]
    if sizes.count(-1) > 1:
        raise ConfigError("at most one of `sweep`, `data` may be -1")
    if -1 in sizes:
        known = math.prod(s for s in sizes if s != -1)
        if known < 1 or len(devices) % known:
            raise ConfigError(f"{len(devices)} devices cannot be split into a mesh with an axis of size {known}")
        sizes[sizes.index(-1)] = len(devices) // known
    if any(s < 1 for s in sizes) or math.prod(sizes) != len(devices):
        raise ConfigError(f"mesh (sweep={sizes[0]}, data={sizes[1]}) needs {math.prod(sizes)} devices, have {len(devices)}")
    return jax.make_mesh(tuple(sizes), AXES, axis_types=(AxisType.Auto,) * 2, devices=devices)


def default_mesh(members: int, devices=None) -> Mesh | None:
    """Members over as many devices as divide them: a `(gcd(members, devices), 1)` mesh.

    The mesh a sweep gets when none is asked for. `None` (one device, no sharding) when the
    greatest common divisor is 1, e.g. for a single run. On CPU the devices are XLA's host
    devices (`jax_num_cpu_devices`); one per core lets members use every core. With several
    processes every process contributes the same number of its own devices (each must hold
    part of the run); a `ConfigError` when the members cannot be spread so.
    """
    devices = list(jax.devices() if devices is None else devices)
    processes = sorted({d.process_index for d in devices})
    size = math.gcd(members, len(devices))
    if size % len(processes):
        raise ConfigError(
            f"{members} members do not spread evenly over the devices of {len(processes)} processes "
            f"({len(devices)} devices); change the seeds or the sweep, or choose a mesh (--mesh)"
        )
    if size == 1:
        return None
    per_process = size // len(processes)
    chosen = [d for p in processes for d in [d for d in devices if d.process_index == p][:per_process]]
    return make_mesh(size, 1, devices=chosen)


def check_spans_processes(mesh: Mesh | None) -> None:
    """Raise `ConfigError` unless every process has devices in `mesh`.

    In a multi-process run every process executes every program, on its own devices: a process
    without devices in the mesh (or a run without a mesh) would have nothing to compute.
    """
    count = jax.process_count()
    held = set() if mesh is None else {d.process_index for d in mesh.devices.flat}
    if count > 1 and len(held) < count:
        layout = "no mesh" if mesh is None else f"a mesh on the devices of processes {sorted(held)}"
        raise ConfigError(f"a run over {count} processes needs a mesh over every process's devices, got {layout}")


def place(tree, sharding: Sharding):
    """A pytree of host values or arrays placed on `sharding`; typed PRNG keys stay typed.

    With every device of `sharding` addressable this is `jax.device_put`. Otherwise (several
    processes) each process builds only the shards on its own devices from its copy of the
    values, which must be the same on every process (they come from the same config and seeds):
    a `device_put` of a whole host array onto another host's devices is not possible. Arrays
    already spread over processes are resharded.
    """
    if sharding.is_fully_addressable:
        return jax.device_put(tree, sharding)
    return jax.tree.map(lambda x: _global_array(x, sharding), tree)


def _global_array(x, sharding: Sharding) -> jax.Array:
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        return jax.device_put(x, sharding)
    if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
        return jax.random.wrap_key_data(_global_array(jax.random.key_data(x), sharding), impl=jax.random.key_impl(x))
    host = np.asarray(x)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def to_host(tree):
    """Every array leaf as a numpy array of its whole (global) value, on every process.

    Arrays with shards on other processes are all-gathered (`multihost_utils.process_allgather`,
    a collective: every process must call this in the same order); others are copied.
    """
    return jax.tree.map(_host_value, tree)


def _host_value(x) -> np.ndarray:
    if isinstance(x, jax.Array) and not (x.is_fully_addressable or x.is_fully_replicated):
        return multihost_utils.process_allgather(x, tiled=True)
    return np.asarray(x)


def shard_members(tree, mesh: Mesh):
    """Place a pytree whose leaves share a leading member axis `[M, ...]` over the `sweep` axis (`place`).

    Raises `ConfigError` naming the leaf when M does not divide the `sweep` axis size.
    """
    size = mesh.shape["sweep"]
    sharding = NamedSharding(mesh, P("sweep"))

    def checked(path, leaf):
        if leaf.ndim == 0 or leaf.shape[0] % size:
            raise ConfigError(
                f"leaf {jax.tree_util.keystr(path)} with shape {leaf.shape} has a member axis that the "
                f"mesh's sweep axis ({size} devices) does not divide; pad or chunk the sweep"
            )
        return place(leaf, sharding)

    return jax.tree_util.tree_map_with_path(checked, tree)


def data_parallel_size(mesh: Mesh | None) -> int:
    """Devices on the mesh's `data` axis (1 without a mesh)."""
    return 1 if mesh is None else mesh.shape["data"]


def check_divides_data_axis(mesh: Mesh | None, **sizes: int) -> None:
    """Raise `ConfigError` naming each size that the `data` axis does not divide."""
    devices = data_parallel_size(mesh)
    bad = {name: size for name, size in sizes.items() if size % devices}
    if bad:
        raise ConfigError(f"the mesh's data axis ({devices} devices) must divide {bad}; change them or the mesh")


def batch_constraint(mesh: Mesh | None) -> Constrain:
    """The layout hook for `mesh`: split batch axes over its `data` axis (`unconstrained` if it has one device)."""
    if data_parallel_size(mesh) == 1:
        return unconstrained
    return functools.partial(shard_batch_axis, mesh=mesh)


def shard_batch_axis(tree, axis: int = 0, *, mesh: Mesh):
    """Constrain every leaf with more than `axis` dims to be split over `data` along `axis`.

    A layout hint for GSPMD (`with_sharding_constraint`), never a change of values: each device
    computes on its slice and XLA inserts the collectives (e.g. the all-reduce of gradients
    of a loss averaged over the batch). Under `vmap_members` the member axis is added as
    `sweep`. A leaf whose `axis` the `data` axis does not divide is a `ConfigError` naming it.
    """
    devices = data_parallel_size(mesh)
    sharding = NamedSharding(mesh, P(*([None] * axis), "data"))

    def constrain(path, x):
        if x.ndim <= axis:
            return x
        if x.shape[axis] % devices:
            raise ConfigError(
                f"batch axis {axis} of {jax.tree_util.keystr(path) or 'the array'} (shape {x.shape}) does not "
                f"split over the mesh's data axis ({devices} devices)"
            )
        return jax.lax.with_sharding_constraint(x, sharding)

    return jax.tree_util.tree_map_with_path(constrain, tree)


def vmap_members(fn, mesh: Mesh | None = None, in_axes=0):
    """`jax.vmap(fn)` over a leading member axis, laid over the mesh's `sweep` axis.

    With a mesh this is `jax.vmap(fn, spmd_axis_name="sweep")`: each sharding constraint inside
    `fn` (e.g. `shard_batch_axis`) gains the member axis as `sweep`, so the whole program keeps
    members on `sweep` and batches on `data`. (A plain `vmap` leaves the member axis
    unconstrained, and XLA may replicate members, e.g. when the inputs are not yet sharded.)
    `in_axes` as for `jax.vmap` (None for an argument all members share, e.g. a dataset).
    """
    return jax.vmap(fn, in_axes) if mesh is None else jax.vmap(fn, in_axes, spmd_axis_name="sweep")


def constrain_members(tree, mesh: Mesh | None):
    """Every leaf `[M, ...]` with its member axis over `sweep` and its other axes left to XLA.

    For the output of a vmapped `init`: a leaf that does not depend on the members' inputs
    (e.g. a zero counter) is broadcast by `vmap` after every sharding constraint inside, so it
    comes out replicated, while the same leaf leaves an iteration sharded over `sweep`. The
    iteration would then compile twice (measured: 30 of PPO's leaves, +8-17 s on a CPU sweep).
    """
    if mesh is None:
        return tree
    spec = lambda x: P("sweep", *[P.UNCONSTRAINED] * (x.ndim - 1))  # noqa: E731
    return jax.tree.map(lambda x: jax.lax.with_sharding_constraint(x, NamedSharding(mesh, spec(x))), tree)

