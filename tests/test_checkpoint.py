"""Checkpoints: exact round trip, fallback past corrupt steps, config refusal, other device counts."""

import json
import pathlib
import shutil
import textwrap
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from cpu_devices import run_on_cpu_devices

from jaxrl_si import checkpoint as ckpt

CONFIG = {"algorithm": "PPOConfig", "config": {"num_envs": 4, "hidden_sizes": [64, 64]}, "hparams": {"learning_rate": [3e-4]}}
HISTORY = {
    "episode/return": np.array([[1.5, np.nan, -0.0]], np.float32),
    "episode/count": np.arange(3, dtype=np.int32),
    "loss/total": np.float64(2.0) ** -40 * np.ones((2, 2)),
    "done": np.array([True, False]),
    "empty": np.zeros((2, 0), np.float32),
    "scalar": np.array(7, np.int64),
}


def _state(scale: float = 1.0) -> dict:
    params = {"w": scale * jax.random.normal(jax.random.key(0), (16, 32)), "b": jnp.full((32,), scale)}
    return {
        "params": params,
        "opt_state": optax.adam(1e-3).init(params),
        "key": jax.random.split(jax.random.key(3), 4),
        "done": jnp.array([True, False]),
        "iteration": int(scale),  # a Python scalar leaf
        "mjx_act": jnp.zeros((4, 0), jnp.float32),  # zero-size leaves (MJX Data has them), which Orbax refuses
    }


def _save_steps(directory, steps=(1, 2, 3), max_to_keep=None, async_save=True) -> None:
    with ckpt.Checkpointer(directory, max_to_keep=max_to_keep, async_save=async_save) as saver:
        for step in steps:
            saver.save(step, _state(float(step)), config=CONFIG, history=HISTORY, extra={"iteration": step, "tag": "x"})


def _restore(directory, config=CONFIG):
    with ckpt.Checkpointer(directory) as saver:
        return saver.restore_latest(ckpt.abstract_target(_state()), config=config)


def _bits(tree) -> list[tuple]:
    """Every leaf as (shape, dtype, raw bytes): equality is bitwise, NaN included."""
    leaves = jax.tree.leaves(jax.tree.map(lambda x: jax.random.key_data(x) if _is_key(x) else x, tree))
    return [(np.shape(x), np.asarray(x).dtype, np.asarray(x).tobytes()) for x in leaves]


def _is_key(x) -> bool:
    return jax.dtypes.issubdtype(jnp.result_type(x), jax.dtypes.prng_key)


def test_round_trip_is_exact_and_keeps_the_newest(tmp_path):
    assert _restore(tmp_path) is None  # nothing saved yet
    _save_steps(tmp_path, max_to_keep=2)
    with ckpt.Checkpointer(tmp_path) as saver:
        assert saver.all_steps() == [2, 3] and saver.latest_step() == 3
    restored = _restore(tmp_path)
    assert restored.step == 3 and restored.extra == {"iteration": 3, "tag": "x"}
    assert jax.tree.structure(restored.state) == jax.tree.structure(_state(3.0))
    assert _bits(restored.state) == _bits(_state(3.0))
    assert restored.state["key"].dtype == jax.random.key(0).dtype and restored.state["iteration"] == 3
    assert list(restored.history) == list(HISTORY)
    assert _bits(restored.history) == _bits(HISTORY)


def test_digest_sees_one_changed_element_of_every_dtype():
    leaves = {
        "f32": jnp.linspace(-1, 1, 12).reshape(3, 4),
        "bf16": jnp.linspace(-1, 1, 12, dtype=jnp.bfloat16),
        "f16": jnp.linspace(-1, 1, 12, dtype=jnp.float16),
        "i8": jnp.arange(12, dtype=jnp.int8),
        "u32": jnp.arange(12, dtype=jnp.uint32) * 1000003,
        "bool": jnp.arange(12) % 3 == 0,
        "key": jax.random.split(jax.random.key(1), 3),
    }
    digest = ckpt.state_digest(leaves)
    assert ckpt.state_digest(jax.tree.map(jnp.copy, leaves)) == digest
    for name, leaf in leaves.items():
        assert ckpt.state_digest({**leaves, name: _flip_one_bit(leaf)}) != digest, name
        assert ckpt.state_digest({**leaves, name: jnp.roll(leaf, 1)}) != digest, name  # same words, other places
    x, y = leaves["f32"], -leaves["f32"]  # 12 sign flips: cancel in a bare sum of word * odd multiplier
    assert ckpt.state_digest({"a": x}) != ckpt.state_digest({"a": y})
    assert ckpt.state_digest({"a": x, "b": y}) != ckpt.state_digest({"a": y, "b": x})  # paths count
    assert ckpt.state_digest({"n": 7}) == ckpt.state_digest({"n": jnp.int32(7)})  # Python scalars as jnp holds them


def _flip_one_bit(leaf):
    """`leaf` with the lowest bit of its element 5 (of key 1's first word for keys) flipped."""
    if _is_key(leaf):
        data = jax.random.key_data(leaf)
        return jax.random.wrap_key_data(data.at[1, 0].set(data[1, 0] ^ 1))
    if leaf.dtype == jnp.bool_:
        return leaf.at[5].set(~leaf[5])
    bits = jax.lax.bitcast_convert_type(leaf.ravel(), jnp.dtype(f"uint{8 * leaf.dtype.itemsize}"))
    return jax.lax.bitcast_convert_type(bits.at[5].set(bits[5] ^ 1), leaf.dtype).reshape(leaf.shape)


def test_leaf_sums_follow_the_documented_formula():
    """Each sum is Σ_i fmix32(word_i ^ fmix32(i ^ salt)) mod 2³², recomputed here in numpy."""

    def fmix32(h):  # MurmurHash3's finalizer, in uint64 arithmetic reduced mod 2**32
        for shift, mult in ((16, 0x85EBCA6B), (13, 0xC2B2AE35)):
            h = ((h ^ (h >> shift)) * mult) % 2**32
        return h ^ (h >> 16)

    words = np.array([[3, 0xFFFFFFFF, 5], [0, 1, 2**31]], np.uint32)
    flat, position = words.ravel().astype(np.uint64), np.arange(words.size, dtype=np.uint64)
    expected = [int(fmix32(flat ^ fmix32(position ^ salt)).sum() % 2**32) for salt in (0x9E3779B9, 0x85EBCA77)]
    whole = ckpt._word_sums(jnp.asarray(words), np.zeros(2, np.uint32), global_shape=words.shape)
    assert np.asarray(whole).tolist() == expected
    blocks = [((r, c), words[r : r + 1, c : c + w]) for r in (0, 1) for c, w in ((0, 2), (2, 1))]  # 2 x 2 uneven blocks
    parts = [ckpt._word_sums(jnp.asarray(block), np.array(start, np.uint32), global_shape=words.shape) for start, block in blocks]
    assert np.sum(np.stack(parts), axis=0, dtype=np.uint32).tolist() == expected  # per-shard sums add up to the leaf's


def _largest_data_files(step_dir: pathlib.Path) -> list[pathlib.Path]:
    """The largest files in the OCDBT `d/` folders; ties are all returned (Orbax may write a copy)."""
    files = [p for p in step_dir.rglob("*") if p.is_file() and p.parent.name == "d"]
    largest = max(p.stat().st_size for p in files)
    return [p for p in files if p.stat().st_size == largest]


def _zero_16_bytes(step_dir):
    for path in _largest_data_files(step_dir):
        data = bytearray(path.read_bytes())
        middle = len(data) // 2
        data[middle : middle + 16] = bytes(16)
        path.write_bytes(bytes(data))


def _wrong_history_digest(step_dir):
    """Stands in for a silent change of the history data, which zeroed bytes do not reliably give."""
    path = step_dir / "meta" / "metadata"
    meta = json.loads(path.read_text())
    path.write_text(json.dumps({**meta, "history_digest": "0" * 64}))


def _truncate(step_dir):
    for path in _largest_data_files(step_dir):
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])


def _delete_named(name):
    def delete(step_dir):
        found = list(step_dir.rglob(name))
        assert found, f"no {name} in {step_dir}"
        for path in found:
            path.unlink()

    delete.__name__ = f"delete_{name}"
    return delete


def _empty_step(step_dir):
    for child in step_dir.iterdir():
        shutil.rmtree(child) if child.is_dir() else child.unlink()


@pytest.mark.parametrize(
    ("corrupt", "reason"),
    [
        (_zero_16_bytes, "state digest mismatch"),  # Orbax restores this without error
        (_wrong_history_digest, "history digest mismatch"),
        (_truncate, "restore failed"),
        (_delete_named("_METADATA"), "restore failed"),
        (_delete_named("manifest.ocdbt"), "restore failed"),
        (_delete_named("process_0"), "state digest mismatch"),  # typed keys come back as raw uint32
        (_empty_step, "unreadable meta item"),
    ],
    ids=lambda x: getattr(x, "__name__", ""),
)
def test_corrupt_latest_step_is_reported_and_the_previous_one_used(tmp_path, corrupt, reason):
    _save_steps(tmp_path)
    corrupt(tmp_path / "3")
    with pytest.warns(UserWarning, match=f"checkpoint step 3 in .*: {reason}.*; falling back to step 2"):
        restored = _restore(tmp_path)
    assert restored.step == 2 and restored.extra["iteration"] == 2
    assert _bits(restored.state) == _bits(_state(2.0))


def test_a_chosen_step_restores_exactly_and_a_bad_one_is_an_error(tmp_path):
    _save_steps(tmp_path)
    _zero_16_bytes(tmp_path / "3")
    with ckpt.Checkpointer(tmp_path) as saver:
        restored = saver.restore(1, ckpt.abstract_target(_state()))
        assert restored.step == 1 and _bits(restored.state) == _bits(_state(1.0))
        with pytest.raises(ckpt.CorruptCheckpointError, match="step 3 .*: state digest mismatch"):
            saver.restore(3, ckpt.abstract_target(_state()))
        with pytest.raises(ckpt.CorruptCheckpointError, match=r"no checkpoint step 7 .*steps: \[1, 2, 3\]"):
            saver.restore(7, ckpt.abstract_target(_state()))


def test_every_step_corrupt_is_an_error_listing_each_reason(tmp_path):
    _save_steps(tmp_path, steps=(1, 2))
    _zero_16_bytes(tmp_path / "2")
    _truncate(tmp_path / "1")
    with pytest.warns(UserWarning) as reports, pytest.raises(ckpt.CorruptCheckpointError) as error:
        _restore(tmp_path)
    messages = [str(report.message) for report in reports]
    assert messages[0].startswith("checkpoint step 2") and messages[1].startswith("checkpoint step 1")
    assert [m.rsplit("; ", 1)[1] for m in messages] == ["falling back to step 1", "no older step left"]
    assert "step 2: state digest mismatch" in str(error.value) and "step 1: restore failed" in str(error.value)


def test_unfinished_save_is_ignored(tmp_path):
    _save_steps(tmp_path, steps=(1, 2))
    leftover = tmp_path / "5.orbax-checkpoint-tmp"
    shutil.copytree(tmp_path / "2", leftover)  # complete files: were it listed, step 5 would restore
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        restored = _restore(tmp_path)
    assert restored.step == 2
    assert not leftover.exists()  # cleanup_tmp_directories=True removes it


def test_config_mismatch_names_every_differing_field_and_does_not_fall_back(tmp_path):
    _save_steps(tmp_path, steps=(1,), async_save=False)
    with ckpt.Checkpointer(tmp_path) as saver:  # a newer step from another run
        saver.save(2, _state(2.0), config={**CONFIG, "config": {"num_envs": 8, "hidden_sizes": (64, 64)}}, history=HISTORY)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # a mismatch is not reported as corruption
        with pytest.raises(ckpt.ConfigMismatchError, match=r"^the checkpoint was written by a different run; config field 'config\.num_envs': checkpoint has 8, this run has 4$"):
            _restore(tmp_path, CONFIG)  # step 1 matches, but is never silently used instead
    other = {"algorithm": "PPOConfig", "config": {"num_envs": 2, "hidden_sizes": (64, 64)}, "seeds": 4}
    with pytest.raises(ckpt.ConfigMismatchError) as error:
        _restore(tmp_path, other)
    fields = [part.split("'")[1] for part in str(error.value).split("config field ")[1:]]
    assert fields == ["config.num_envs", "hparams.learning_rate", "seeds"]  # a tuple equals the saved list
    assert "'config.num_envs': checkpoint has 8, this run has 2" in str(error.value)
    assert "'hparams.learning_rate': checkpoint has [0.0003], this run has (missing)" in str(error.value)
    assert "'seeds': checkpoint has (missing), this run has 4" in str(error.value)


def test_bad_arguments_fail_before_anything_is_written_or_restored(tmp_path):
    with ckpt.Checkpointer(tmp_path) as saver:
        with pytest.raises(TypeError, match="config must be JSON-able"):
            saver.save(1, _state(), config={"lr": np.float32(1e-3)})
        with pytest.raises(TypeError, match="numeric or bool"):
            saver.save(1, _state(), config=CONFIG, history={"names": np.array(["a"])})
        saver.wait()
        assert saver.all_steps() == []
        saver.save(1, _state(), config=CONFIG)
        with pytest.raises(AttributeError):  # a malformed target is the caller's error, not a corrupt step
            saver.restore_latest({"params": object()}, config=CONFIG)


def test_target_without_shardings_restores_as_saved_on_the_same_devices(tmp_path):
    _save_steps(tmp_path, steps=(1,))
    with ckpt.Checkpointer(tmp_path) as saver:
        restored = saver.restore_latest(jax.eval_shape(_state), config=CONFIG)
    assert _bits(restored.state) == _bits(jax.tree.map(jnp.asarray, _state(1.0)))  # the Python int as int32
    assert restored.state["params"]["w"].sharding == jax.sharding.SingleDeviceSharding(jax.devices()[0])


ACROSS_DEVICES = textwrap.dedent(
    """
    import sys
    import jax, jax.numpy as jnp, numpy as np
    from jax.sharding import NamedSharding, SingleDeviceSharding, PartitionSpec as P
    from jaxrl_si import checkpoint as ckpt
    from jaxrl_si.parallel import make_mesh, shard_members

    devices, save_dir, restore_dir = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    assert len(jax.devices()) == devices
    state = {"w": jnp.arange(8 * 6, dtype=jnp.float32).reshape(8, 6) / 7, "key": jax.random.split(jax.random.key(1), 8),
             "n": jnp.arange(8, dtype=jnp.int32), "mask": jnp.arange(8) % 2 == 0}
    history = {"loss": np.linspace(0, 1, 24, dtype=np.float32).reshape(8, 3)}
    mesh = make_mesh(devices, 1)
    sharding = NamedSharding(mesh, P("sweep")) if devices > 1 else SingleDeviceSharding(jax.devices()[0])
    bits = lambda tree: [np.asarray(x).tobytes() for x in jax.tree.leaves(jax.tree.map(
        lambda x: jax.random.key_data(x) if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key) else x, tree))]
    digests = [ckpt.state_digest(state)]
    if save_dir != "-":
        placed = shard_members(state, mesh)
        assert all(x.sharding.spec == P("sweep") for x in jax.tree.leaves(placed)) or devices == 1
        digests.append(ckpt.state_digest(placed))
        with ckpt.Checkpointer(save_dir) as saver:
            saver.save(1, placed, config={"run": 1}, history=history)
    if restore_dir != "-":
        with ckpt.Checkpointer(restore_dir) as saver:
            restored = saver.restore_latest(ckpt.abstract_target(jax.eval_shape(lambda: state), sharding), config={"run": 1})
        assert bits(restored.state) == bits(state) and bits(restored.history) == bits(history)
        for leaf in jax.tree.leaves(restored.state):
            assert leaf.sharding.spec == P("sweep") if devices > 1 else leaf.sharding == sharding, leaf.sharding
        digests.append(ckpt.state_digest(restored.state))
    print(" ".join(digests))
    print("OK")
    """
)


def _run_on(devices: int, save_dir, restore_dir) -> list[str]:
    return run_on_cpu_devices(ACROSS_DEVICES, devices, save_dir, restore_dir, devices=devices, timeout=300).split()[:-1]


def test_checkpoint_moves_between_eight_devices_and_one(tmp_path):
    digests = [
        *_run_on(1, tmp_path / "from1", "-"),
        *_run_on(8, tmp_path / "from8", tmp_path / "from1"),  # written on 1, restored sharded P('sweep') on 8
        *_run_on(1, "-", tmp_path / "from8"),  # written sharded on 8, restored on 1
    ]
    assert len(digests) == 7 and len(set(digests)) == 1  # the digest does not depend on the layout
