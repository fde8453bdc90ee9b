"""One Orbax checkpoint per training iteration, verified on restore, with exact resume.

A thin wrapper over `orbax.checkpoint.CheckpointManager` (async, atomic, `max_to_keep`). Each
step holds three items: `state` (any pytree of arrays, typed PRNG keys included, saved sharded
as it lies on the mesh), `history` (host metric arrays) and `meta` (JSON: the run's config,
caller extras, the shapes of the history, and a digest of the state).

Why our own digest: Orbax has no checksum. Measured on orbax-checkpoint 0.12.8, zeroing 16
bytes inside a data file restores with no error and wrong values. `state_digest` is computed on
device at save time and checked after every restore. It sums the state's 32-bit words, each
times an odd multiplier derived from its position, with uint32 wraparound; integer addition is
associative and commutative, so the value does not depend on how the state is sharded, on the
device count, or on the reduction order, and a checkpoint written on 8 devices verifies on 1.

Failure modes of `restore_latest`: an unfinished save (`<step>.orbax-checkpoint-tmp`) is never
listed; a step that fails to restore (missing metadata, truncated files) or fails the digest is
reported with `warnings.warn` and the previous step is tried; if every step fails,
`CorruptCheckpointError`. A checkpoint whose config differs from the requested one raises
`ConfigMismatchError` naming every differing field, and is never silently used.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import warnings
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

logger = logging.getLogger(__name__)


class CheckpointError(Exception):
    """Base class of checkpoint errors."""


class ConfigMismatchError(CheckpointError):
    """The checkpoint was written by a run with another config."""


class CorruptCheckpointError(CheckpointError):
    """No step of the checkpoint directory could be restored and verified."""


@dataclasses.dataclass(frozen=True)
class Restored:
    step: int  # the iteration number saved
    state: Any  # pytree like the target, arrays placed with the target's shardings
    history: dict[str, np.ndarray]  # host arrays exactly as saved
    extra: dict  # the JSON-able dict saved alongside


class Checkpointer:
    """Saves and restores `(state, history, config, extra)` per step in `directory`."""

    def __init__(self, directory, *, max_to_keep: int | None = 3, async_save: bool = True):
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, enable_async_checkpointing=async_save, cleanup_tmp_directories=True
        )
        self.directory = os.path.abspath(directory)
        self._manager = ocp.CheckpointManager(self.directory, options=options)

    def save(self, step: int, state, *, config: dict, history: dict[str, np.ndarray] | None = None, extra: dict | None = None) -> None:
        """Start saving step `step`; returns once the arrays are copied off the devices."""
        history = {name: np.asarray(value) for name, value in (history or {}).items()}
        meta = {
            "config": config,
            "extra": extra or {},
            "digest": state_digest(state),
            "history": [[name, list(value.shape), value.dtype.str] for name, value in history.items()],
        }
        items = {"state": ocp.args.StandardSave(_keys_to_data(state)), "meta": ocp.args.JsonSave(meta)}
        if history:  # Orbax refuses an empty item
            items["history"] = ocp.args.StandardSave(_numbered(history.values()))
        self._manager.save(step, args=ocp.args.Composite(**items))

    def restore_latest(self, target, *, config: dict | None) -> Restored | None:
        """The newest step that restores and verifies, placed like `target`; None if there is none.

        Args:
          target: pytree of arrays or `jax.ShapeDtypeStruct`s with shardings (see `abstract_target`).
          config: the requesting run's config; it must equal the saved one (None: not checked,
            e.g. to inspect a checkpoint).
        """
        self.wait()
        failures = []
        for step in sorted(self._manager.all_steps(), reverse=True):
            try:
                meta = self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
            except Exception as error:  # noqa: BLE001 (Orbax raises many types for damaged steps)
                failures.append(self._report(step, f"unreadable metadata ({_one_line(error)})"))
                continue
            if config is not None:
                _check_config(meta["config"], config)
            try:
                restored = self._restore_step(step, target, meta)
            except Exception as error:  # noqa: BLE001
                failures.append(self._report(step, f"restore failed ({_one_line(error)})"))
                continue
            if state_digest(restored.state) != meta["digest"]:
                failures.append(self._report(step, "state digest mismatch: the data on disk changed after saving"))
                continue
            return restored
        if failures:
            raise CorruptCheckpointError(f"no checkpoint in {self.directory} could be restored: " + "; ".join(failures))
        return None

    def _restore_step(self, step: int, target, meta: dict) -> Restored:
        requests = {"state": ocp.args.StandardRestore(_keys_to_data(abstract_target(target)))}
        if meta["history"]:
            history_target = _numbered(np.zeros(shape, np.dtype(dtype)) for _, shape, dtype in meta["history"])
            requests["history"] = ocp.args.StandardRestore(history_target)
        items = self._manager.restore(step, args=ocp.args.Composite(**requests))
        state = jax.tree.map(_data_to_keys, target, items["state"], is_leaf=_is_key)
        history = {name: np.asarray(items["history"][f"{i}"]) for i, (name, _, _) in enumerate(meta["history"])}
        return Restored(step, state, history, meta["extra"])

    def _report(self, step: int, reason: str) -> str:
        steps = [s for s in self._manager.all_steps() if s < step]
        fallback = f"falling back to step {max(steps)}" if steps else "no older step left"
        message = f"checkpoint step {step} in {self.directory}: {reason}; {fallback}"
        warnings.warn(message, stacklevel=3)
        logger.warning(message)
        return f"step {step}: {reason}"

    def all_steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def wait(self) -> None:
        """Block until pending async saves are on disk."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        self.wait()
        self._manager.close()

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def abstract_target(tree, shardings=None):
    """`jax.ShapeDtypeStruct`s (typed keys kept) for a concrete or abstract pytree.

    `shardings` (one `Sharding` or a matching pytree) overrides the leaves' own: this is how a
    checkpoint restores onto another mesh or device count.
    """
    if shardings is None:
        return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)), tree)
    if isinstance(shardings, jax.sharding.Sharding):
        shardings = jax.tree.map(lambda _: shardings, tree)
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)


def state_digest(tree) -> str:
    """A hex digest of a pytree's values, independent of sharding and device count.

    Per leaf, two uint32 sums of `word_i * odd(i)` over its 32-bit words (see module docstring),
    combined on host with the leaf's path, shape and dtype by SHA-256.
    """
    tree = _keys_to_data(tree)
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    sums = np.asarray(_leaf_sums([jnp.asarray(x) for _, x in leaves])) if leaves else np.zeros((0, 2), np.uint32)
    digest = hashlib.sha256()
    for (path, leaf), pair in zip(leaves, sums, strict=True):
        digest.update(f"{jax.tree_util.keystr(path)}|{np.shape(leaf)}|{jnp.asarray(leaf).dtype}|{pair[0]}|{pair[1]}\n".encode())
    return digest.hexdigest()


@jax.jit
def _leaf_sums(leaves: list[jax.Array]) -> jax.Array:
    """`[n_leaves, 2]` uint32 position-weighted word sums."""
    return jnp.stack([_word_sums(x) for x in leaves]) if leaves else jnp.zeros((0, 2), jnp.uint32)


def _word_sums(x: jax.Array) -> jax.Array:
    words = _uint32_words(x)
    index = sum(
        (jax.lax.broadcasted_iota(jnp.uint32, words.shape, d) * np.uint32(int(np.prod(words.shape[d + 1 :])) % 2**32))
        for d in range(words.ndim)
    ) if words.ndim else jnp.uint32(0)
    sums = []
    for salt in (np.uint32(0x9E3779B1), np.uint32(0x85EBCA77)):
        h = (index + np.uint32(1)) * salt
        h = h ^ (h >> np.uint32(15))
        h = h * np.uint32(0x2C1B3C6D)
        sums.append(jnp.sum(words * (h | np.uint32(1)), dtype=jnp.uint32))
    return jnp.stack(sums)


def _uint32_words(x: jax.Array) -> jax.Array:
    """The bits of `x` as uint32 words (64-bit values give a trailing axis of 2)."""
    width = x.dtype.itemsize
    if x.dtype == jnp.bool_:
        return x.astype(jnp.uint32)
    if width == 8:
        return jax.lax.bitcast_convert_type(x, jnp.uint32)
    unsigned = {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32}[width]
    return jax.lax.bitcast_convert_type(x, unsigned).astype(jnp.uint32)


def _is_key(x) -> bool:
    return hasattr(x, "dtype") and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def _keys_to_data(tree):
    """Typed PRNG keys (or their abstract shapes) as their uint32 key data."""

    def convert(x):
        if not _is_key(x):
            return x
        if isinstance(x, jax.ShapeDtypeStruct):
            data = jax.eval_shape(jax.random.key_data, x)
            return jax.ShapeDtypeStruct(data.shape, data.dtype, sharding=x.sharding)
        return jax.random.key_data(x)

    return jax.tree.map(convert, tree, is_leaf=_is_key)


def _data_to_keys(target_leaf, value):
    if _is_key(target_leaf):
        return jax.random.wrap_key_data(value, impl=_impl_name(target_leaf.dtype))
    return value


def _impl_name(key_dtype) -> str:
    """The PRNG implementation of a key dtype, found through public API only."""
    for name in ("threefry2x32", "rbg", "unsafe_rbg"):
        if jax.eval_shape(lambda n=name: jax.random.key(0, impl=n)).dtype == key_dtype:
            return name
    raise CheckpointError(f"unknown PRNG key dtype {key_dtype}")


def _numbered(values) -> dict[str, Any]:
    """Metric names hold '/', which Orbax would read as nesting: store the arrays by index."""
    return {f"{i}": v for i, v in enumerate(values)}


def _check_config(saved: dict, requested: dict) -> None:
    saved_flat, requested_flat = _flatten(saved), _flatten(requested)
    differences = []
    for field in sorted(set(saved_flat) | set(requested_flat)):
        old, new = saved_flat.get(field, "<missing>"), requested_flat.get(field, "<missing>")
        if old != new:
            differences.append(f"config field '{field}': checkpoint has {_short(old)}, this run has {_short(new)}")
    if differences:
        raise ConfigMismatchError("the checkpoint was written by a different run; " + "; ".join(differences))


def _flatten(config: dict, prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def _one_line(error: Exception, limit: int = 300) -> str:
    text = " ".join(f"{type(error).__name__}: {error}".split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."
