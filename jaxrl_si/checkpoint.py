"""One Orbax checkpoint per training iteration, verified on restore, for exact resume.

A thin wrapper over `orbax.checkpoint.CheckpointManager` (async, atomic, `max_to_keep`). Each
step directory holds up to three `ocp.args.Composite` items:

- `state`: any pytree of arrays (typed PRNG keys and Python scalars included), written sharded
  as it lies on the mesh and restored onto the shardings of the caller's target; Orbax refuses
  zero-size arrays (MJX's `Data` holds several, e.g. `act` of a model without activations), so
  they are written as empty nodes and rebuilt from the target's shape, dtype and sharding (they
  hold no values; the digest still covers their paths, shapes and dtypes);
- `history`: the host metric arrays of non-zero size, stored by index (metric names hold `/`,
  which Orbax would read as nesting);
- `meta` (JSON): the run's config, the caller's `extra`, every history array's name, shape and
  dtype, and digests of the state and of the history.

Why our own digest: Orbax has no checksum. Measured on orbax-checkpoint 0.12.8, zeroing 16
bytes inside a data file restores with no error and wrong values. `state_digest` reads each
leaf's bits as uint32 words, xors each word with a key derived from its flat position in the
whole leaf, scrambles it with MurmurHash3's finalizer and sums the results with uint32
wraparound (twice, with two salts: 64 bits per leaf). Integer addition is associative and
commutative, so each shard is summed by a one-device `jax.jit` program on its own device and the
partial sums are added on host (and across processes): the digest does not depend on how the
leaf is sharded or on the device count (float sums would), a checkpoint written on 8 devices
verifies on 1, only two words per shard reach the host, and no collective runs. The finalizer
is there because a bare `word * odd_multiplier(position)` lets bit k of a word reach only bits
>= k of the sum: sign flips of an even number of elements (negating a leaf) would cancel out.

Failure modes of `Checkpointer.restore_latest`, newest step first:
- an unfinished save (`<step>.orbax-checkpoint-tmp`, e.g. after kill -9) is not a step;
- a step that fails to restore (emptied directory, missing `_METADATA` or `manifest.ocdbt`,
  truncated data) or fails a digest is reported (`warnings.warn` and `logging`) and the previous
  step is tried; when none is left, `CorruptCheckpointError` lists every step's reason;
- a saved config that differs from the requested one raises `ConfigMismatchError` at once,
  naming every differing field: another run's checkpoint is never used, nor skipped silently.

After a fallback the caller deletes the steps newer than the restored one
(`delete_steps_after`): Orbax's `CheckpointManager.save` silently skips a step that is not
newer than its latest, so corrupt steps left on disk would never be replaced. `save` refuses
such a step instead of skipping it (`CheckpointError`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import warnings
from functools import partial
from typing import Any, Self

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from jaxrl_si.paths import run_path

logger = logging.getLogger(__name__)

_FORMAT = 1  # version of the `meta` item's layout; bump when it changes
_META_FIELDS = ("format", "config", "extra", "state_digest", "history", "history_digest")
_SALTS = (np.uint32(0x9E3779B9), np.uint32(0x85EBCA77))  # two position keys per word: 64 bits per leaf


class CheckpointError(Exception):
    """Base class of checkpoint errors."""


class ConfigMismatchError(CheckpointError):
    """The checkpoint was written by a run with another config; the message names each field."""


class CorruptCheckpointError(CheckpointError):
    """No step in the directory could be restored and verified; the message gives each reason."""


class ExistingRunError(CheckpointError):
    """A fresh run was pointed at a directory that holds another run's checkpoints."""


@dataclasses.dataclass(frozen=True)
class Restored:
    """One verified step, as returned by `Checkpointer.restore_latest`."""

    step: int  # the iteration number saved
    state: Any  # pytree like the target, arrays placed with the target's shardings
    history: dict[str, np.ndarray]  # host arrays exactly as saved (bitwise, NaN included)
    extra: dict  # the JSON-able dict saved alongside


class Checkpointer:
    """Saves `(state, history, config, extra)` once per step in `directory`; restores the newest good one.

    Every process of a multi-process run constructs it and calls `save` / `restore_latest` /
    `delete_steps_after` in the same order: Orbax writes each process's shards and joins the
    processes at its barriers; the metadata is written once.

    Args:
      directory: where the step directories `<step>/` go: a local path (made absolute, created
        if missing) or a `gs://` URL (`jaxrl_si.paths`).
      max_to_keep: newest steps kept on disk (None: all).
      async_save: write in a background thread; `save` returns after the device-to-host copy.
    """

    def __init__(self, directory, *, max_to_keep: int | None = 3, async_save: bool = True):
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, enable_async_checkpointing=async_save, cleanup_tmp_directories=True
        )
        self.directory = run_path(directory)
        self._manager = ocp.CheckpointManager(self.directory, options=options)
        # Orbax removes unfinished saves (`<step>.orbax-checkpoint-tmp*`) in a background thread
        # that only its next `save` waits for (orbax-checkpoint 0.12.8): a restore or a `close`
        # before then races with it. Wait here, so the directory is settled before it is read.
        # (A private hook: if a later Orbax drops it, the race comes back, and the only cost is a
        # temporary directory left until the next save.)
        settle = getattr(self._manager, "_maybe_await_cleanup_tmp_directory", None)
        if settle is not None:
            settle()

    def save(self, step: int, state, *, config: dict, history: dict[str, np.ndarray] | None = None, extra: dict | None = None) -> None:
        """Start saving `step`; returns once the arrays are off the devices, without waiting for the write.

        Waits for the previous save to finish first (Orbax runs one at a time) and for `state`
        to be computed (its digest is taken now). `config` and `extra` must be JSON-able
        (`TypeError` otherwise, before anything is written); `history` arrays must be numeric
        or bool, of any shape.
        """
        latest = self.latest_step()
        if latest is not None and step <= latest:
            raise CheckpointError(f"step {step} is not newer than step {latest} in {self.directory}; delete_steps_after({step - 1}) first")
        history = _host_history(history or {})
        meta = {
            "format": _FORMAT,
            "config": json_value(config, what="config"),
            "extra": json_value(extra or {}, what="extra"),
            "state_digest": state_digest(state),
            "history": [[name, list(value.shape), value.dtype.str] for name, value in history.items()],
            "history_digest": _history_digest(history),
        }
        items = {"state": ocp.args.StandardSave(_without_empty_leaves(state)), "meta": ocp.args.JsonSave(meta)}
        stored = _stored_history(history.values())
        if stored:  # Orbax refuses an empty item and zero-size arrays; meta alone rebuilds those
            items["history"] = ocp.args.StandardSave(stored)
        self._manager.save(step, args=ocp.args.Composite(**items))

    def restore_latest(self, target, *, config: dict | None) -> Restored | None:
        """The newest step that restores and verifies, placed like `target`; None if no step exists.

        Args:
          target: pytree of arrays or `jax.ShapeDtypeStruct`s with shardings (see
            `abstract_target`); Python scalar leaves restore as Python scalars. A leaf without a
            sharding gets the one recorded at save time, which exists only on the same devices.
          config: the requesting run's config; it must equal the saved one (None: not checked,
            e.g. to inspect a checkpoint).

        Raises `ConfigMismatchError` and `CorruptCheckpointError` as in the module docstring.
        """
        self.wait()
        abstract = abstract_target(target)  # outside the loop: a bad target is not a bad step
        requested = None if config is None else json_value(config, what="config")
        failures = []
        for step in reversed(self.all_steps()):
            outcome = self._verified_step(step, abstract, requested)
            if isinstance(outcome, Restored):
                return outcome
            failures.append(self._report(step, outcome))
        if failures:
            raise CorruptCheckpointError(f"no step in {self.directory} could be restored: " + "; ".join(failures))
        return None

    def restore(self, step: int, target) -> Restored:
        """Step `step`, verified and placed like `target` (see `restore_latest`); no config check.

        For reading a finished run's iterates (e.g. to compare the policies of every iteration).
        Raises `CorruptCheckpointError` if the step is missing, does not restore or does not verify.
        """
        self.wait()
        abstract = abstract_target(target)
        steps = self.all_steps()
        if step not in steps:
            raise CorruptCheckpointError(f"no checkpoint step {step} in {self.directory} (steps: {steps})")
        outcome = self._verified_step(step, abstract, None)
        if not isinstance(outcome, Restored):
            raise CorruptCheckpointError(f"checkpoint step {step} in {self.directory}: {outcome}")
        return outcome

    def _verified_step(self, step: int, abstract, requested: dict | None) -> Restored | str:
        """Step `step` restored and verified, or the reason it is not (`ConfigMismatchError` if
        `requested` is given and differs from the saved config)."""
        try:
            meta = self._read_meta(step)
        except Exception as error:  # noqa: BLE001 (Orbax raises many types for damaged steps)
            return f"unreadable meta item ({_one_line(error)})"
        if requested is not None:
            _check_config(meta["config"], requested)
        try:
            restored = self._restore_step(step, abstract, meta)
        except Exception as error:  # noqa: BLE001
            return f"restore failed ({_one_line(error)})"
        return _integrity_problem(restored, meta) or restored

    def _read_meta(self, step: int) -> dict:
        meta = self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
        if not isinstance(meta, dict) or meta.get("format") != _FORMAT or set(meta) != set(_META_FIELDS):
            raise CheckpointError(f"not a format-{_FORMAT} meta item: {_short(meta)}")
        return meta

    def _restore_step(self, step: int, abstract, meta: dict) -> Restored:
        requests = {"state": ocp.args.StandardRestore(_without_empty_leaves(abstract))}
        layout = [(name, tuple(shape), np.dtype(dtype)) for name, shape, dtype in meta["history"]]
        stored = _stored_history(np.zeros(shape, dtype) for _, shape, dtype in layout)
        if stored:
            requests["history"] = ocp.args.StandardRestore(stored)
        items = self._manager.restore(step, args=ocp.args.Composite(**requests))
        history = {
            name: np.asarray(items["history"][f"{i}"]) if f"{i}" in stored else np.zeros(shape, dtype)
            for i, (name, shape, dtype) in enumerate(layout)
        }
        return Restored(step, _with_empty_leaves(items["state"], abstract), history, meta["extra"])

    def _report(self, step: int, reason: str) -> str:
        older = [s for s in self.all_steps() if s < step]
        fallback = f"falling back to step {older[-1]}" if older else "no older step left"
        message = f"checkpoint step {step} in {self.directory}: {reason}; {fallback}"
        warnings.warn(message, stacklevel=3)
        logger.warning(message)
        return f"step {step}: {reason}"

    def delete_steps_after(self, step: int) -> list[int]:
        """Delete every step newer than `step` (e.g. the corrupt ones a restore fell back past); returns them."""
        self.wait()
        newer = [s for s in self.all_steps() if s > step]
        for s in newer:
            self._manager.delete(s)
        return newer

    def all_steps(self) -> list[int]:
        """The finished steps on disk, oldest first."""
        return sorted(self._manager.all_steps())

    def latest_step(self) -> int | None:
        """The newest finished step on disk (not necessarily a restorable one), or None."""
        return self._manager.latest_step()

    def wait(self) -> None:
        """Block until pending async saves are on disk."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        """Finish pending saves and release Orbax's threads."""
        self.wait()
        self._manager.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def abstract_target(tree, shardings=None):
    """A restore target of `jax.ShapeDtypeStruct`s (typed keys kept) for a concrete or abstract pytree.

    `shardings` (one `Sharding` for every leaf, or a pytree matching `tree`) replaces the leaves'
    own: this is how a checkpoint restores onto another mesh or device count. Python scalar
    leaves stay as they are (they restore as Python scalars, placed nowhere).
    """
    if shardings is None or isinstance(shardings, jax.sharding.Sharding):
        return jax.tree.map(lambda x: _abstract_leaf(x, shardings), tree)
    return jax.tree.map(_abstract_leaf, tree, shardings)


def _abstract_leaf(x, sharding):
    if type(x) in (int, float, bool):
        return x
    return jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=sharding or getattr(x, "sharding", None))


def _is_empty(leaf) -> bool:
    return type(leaf) not in (int, float, bool) and math.prod(np.shape(leaf)) == 0


def _without_empty_leaves(tree):
    """`tree` with its zero-size array leaves replaced by None (an empty node to Orbax)."""
    return jax.tree.map(lambda x: None if _is_empty(x) else x, tree)


def _with_empty_leaves(restored, abstract):
    """`restored` (from `_without_empty_leaves(abstract)`) with the zero-size leaves of `abstract` rebuilt."""
    abstract_leaves, treedef = jax.tree_util.tree_flatten(abstract)
    restored_leaves = iter(jax.tree_util.tree_leaves(restored))
    leaves = [_empty_array(x) if _is_empty(x) else next(restored_leaves) for x in abstract_leaves]
    return jax.tree_util.tree_unflatten(treedef, leaves)


def _empty_array(spec: jax.ShapeDtypeStruct) -> jax.Array:
    empty = jnp.zeros(spec.shape, spec.dtype)
    return empty if spec.sharding is None else jax.device_put(empty, spec.sharding)


def state_digest(tree) -> str:
    """A SHA-256 hex digest of a pytree's values, paths, shapes and dtypes, independent of sharding.

    Per leaf: two uint32 sums of `fmix32(word_i ^ fmix32(i ^ salt))` over the leaf's 32-bit words
    `i` (global row-major position; see the module docstring). Each distinct shard is summed on
    its own device by a one-device program, the partial sums are added on host (and across
    processes), then SHA-256 runs over each leaf's path, shape, dtype and sums. No cross-device
    collective is launched: on XLA:CPU host devices, many small all-reduce programs in flight at
    once can deadlock. Typed PRNG keys hash their key data; Python scalars hash as
    `jnp.asarray` holds them.
    """
    leaves = [(path, jnp.asarray(leaf)) for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]]
    partials = jax.device_get([[_shard_sums(leaf, shard) for shard in _distinct_shards(leaf)] for _, leaf in leaves])
    # A process may hold no distinct shard of a leaf (a replicated leaf's replica 0 lies on process 0): it adds zeros.
    sums = np.array([np.sum(np.reshape(parts, (-1, 2)), axis=0, dtype=np.uint32) for parts in partials], np.uint32).reshape(-1, 2)
    if jax.process_count() > 1:  # each process summed its own shards
        sums = np.sum(multihost_utils.process_allgather(sums), axis=0, dtype=np.uint32)
    digest = hashlib.sha256()
    for (path, leaf), (low, high) in zip(leaves, sums, strict=True):
        digest.update(f"{jax.tree_util.keystr(path)}|{np.shape(leaf)}|{jnp.result_type(leaf)}|{low}|{high}\n".encode())
    return digest.hexdigest()


def _distinct_shards(leaf: jax.Array) -> list:
    """The addressable shards holding each element once (replicas dropped)."""
    return [shard for shard in leaf.addressable_shards if shard.replica_id == 0]


def _shard_sums(leaf: jax.Array, shard) -> jax.Array:
    """`[2]` uint32 sums of one shard's words, keyed by their positions in the whole leaf."""
    starts = np.array([index.start or 0 for index in shard.index], np.uint32)
    return _word_sums(shard.data, starts, global_shape=leaf.shape)


@partial(jax.jit, static_argnames="global_shape")
def _word_sums(block: jax.Array, starts: jax.Array, *, global_shape: tuple[int, ...]) -> jax.Array:
    """`[2]` uint32: for each salt, `sum_i fmix32(word_i ^ fmix32(i ^ salt)) mod 2**32`.

    `block` is the slice of a `global_shape` leaf starting at `starts` [ndim]; `i` is a word's
    row-major position in the whole leaf (64-bit elements and PRNG keys add a trailing word axis).
    """
    words = _uint32_words(block)
    trailing = words.shape[len(global_shape) :]
    position = _flat_index(words.shape, jnp.concatenate([starts, jnp.zeros(len(trailing), jnp.uint32)]), global_shape + trailing)
    return jnp.stack([jnp.sum(_fmix32(words ^ _fmix32(position ^ salt)), dtype=jnp.uint32) for salt in _SALTS])


def _uint32_words(x: jax.Array) -> jax.Array:
    """The bits of `x` as uint32: one word per element, or a trailing axis of 2 for 64-bit dtypes."""
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
        x = jax.random.key_data(x)
    if x.dtype == jnp.bool_:
        return x.astype(jnp.uint32)
    if x.dtype.itemsize == 8:
        return jax.lax.bitcast_convert_type(x, jnp.uint32)
    unsigned = {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32}[x.dtype.itemsize]
    return jax.lax.bitcast_convert_type(x, unsigned).astype(jnp.uint32)


def _flat_index(block_shape: tuple[int, ...], starts: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """Row-major flat index in `shape` (mod 2**32) of each element of the block at `starts`."""
    index = jnp.zeros(block_shape, jnp.uint32)
    stride = 1
    for axis in reversed(range(len(shape))):
        coordinate = jax.lax.broadcasted_iota(jnp.uint32, block_shape, axis) + starts[axis]
        index = index + coordinate * np.uint32(stride % 2**32)
        stride *= shape[axis]
    return index


def _fmix32(h: jax.Array) -> jax.Array:
    """MurmurHash3's 32-bit finalizer: a cheap bijection whose every output bit depends on every input bit."""
    h = h ^ (h >> np.uint32(16))
    h = h * np.uint32(0x85EBCA6B)
    h = h ^ (h >> np.uint32(13))
    h = h * np.uint32(0xC2B2AE35)
    return h ^ (h >> np.uint32(16))


def _integrity_problem(restored: Restored, meta: dict) -> str | None:
    """Why a restored step differs from what was saved, or None."""
    if state_digest(restored.state) != meta["state_digest"]:
        return "state digest mismatch: the data on disk changed after saving"
    if _history_digest(restored.history) != meta["history_digest"]:
        return "history digest mismatch: the data on disk changed after saving"
    return None


def _host_history(history: dict) -> dict[str, np.ndarray]:
    """The history as host numpy arrays, refusing dtypes that are not numbers or bools."""
    arrays = {str(name): np.asarray(value) for name, value in history.items()}
    bad = {name: str(a.dtype) for name, a in arrays.items() if a.dtype.kind not in "biuf"}
    if bad:
        raise TypeError(f"history arrays must be numeric or bool, got {bad}")
    return arrays


def _stored_history(arrays) -> dict[str, np.ndarray]:
    """The arrays Orbax stores, keyed by index; zero-size ones are skipped."""
    return {f"{i}": a for i, a in enumerate(arrays) if a.size}


def _history_digest(history: dict[str, np.ndarray]) -> str:
    """SHA-256 over the history's names, shapes, dtypes and bytes, in order (all on host)."""
    digest = hashlib.sha256()
    for name, value in history.items():
        digest.update(f"{name}|{value.shape}|{value.dtype.str}\n".encode())
        digest.update(np.ascontiguousarray(value).tobytes())
    return digest.hexdigest()


def json_value(value, *, what: str = "value", stringify: bool = False):
    """`value` as JSON reads it back: tuples become lists, keys strings, so configs compare equal.

    Objects JSON cannot hold (paths, dtypes, numpy scalars) become their `str` with
    `stringify`, and raise `TypeError` naming `what` without it.
    """
    try:
        return json.loads(json.dumps(value, default=str if stringify else None))
    except (TypeError, ValueError) as error:
        raise TypeError(f"checkpoint {what} must be JSON-able: {error}") from None


def _check_config(saved: dict, requested: dict) -> None:
    """Raise `ConfigMismatchError` naming every flattened field where the two configs differ."""
    saved_flat, requested_flat = _flatten(saved), _flatten(requested)
    differences = [
        f"config field '{field}': checkpoint has {_shown(saved_flat, field)}, this run has {_shown(requested_flat, field)}"
        for field in sorted(set(saved_flat) | set(requested_flat))
        if _json_text(saved_flat, field) != _json_text(requested_flat, field)
    ]
    if differences:
        raise ConfigMismatchError("the checkpoint was written by a different run; " + "; ".join(differences))


def _flatten(config: dict, prefix: str = "") -> dict[str, Any]:
    """Nested dicts as one dict with keys joined by '.'."""
    flat = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _json_text(flat: dict, field: str) -> str | None:
    """A field's value as JSON text, so NaN equals NaN and 4 differs from 4.0; None if missing."""
    return json.dumps(flat[field], sort_keys=True) if field in flat else None


def _shown(flat: dict, field: str) -> str:
    return _short(flat[field]) if field in flat else "(missing)"


def _short(value, limit: int = 120) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _one_line(error: Exception, limit: int = 300) -> str:
    text = " ".join(f"{type(error).__name__}: {error}".split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
