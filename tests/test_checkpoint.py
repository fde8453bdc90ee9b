"""Checkpoints: exact round trip, fallback past corrupt steps, config refusal, other meshes."""

import os
import pathlib
import shutil
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxrl_si import checkpoint as ckpt

CONFIG = {"algorithm": "PPOConfig", "config": {"num_envs": 4, "hidden_sizes": [64, 64]}, "hparams": {"learning_rate": [3e-4]}}


def _state(scale: float = 1.0) -> dict:
    params = {"w": scale * jax.random.normal(jax.random.key(0), (16, 32)), "b": jnp.full((32,), scale)}
    return {
        "params": params,
        "opt_state": optax.adam(1e-3).init(params),
        "key": jax.random.split(jax.random.key(3), 4),
        "step": jnp.int32(7),
        "done": jnp.array([True, False]),
    }


HISTORY = {"episode/return": np.array([[1.5, np.nan, 3.0]], np.float32), "episode/count": np.arange(3, dtype=np.int32)}


def _save_steps(directory, steps=(1, 2, 3), max_to_keep=None) -> None:
    with ckpt.Checkpointer(directory, max_to_keep=max_to_keep) as saver:
        for step in steps:
            saver.save(step, _state(float(step)), config=CONFIG, history=HISTORY, extra={"iteration": step})


def _restore(directory, config=CONFIG):
    with ckpt.Checkpointer(directory) as saver:
        return saver.restore_latest(ckpt.abstract_target(_state()), config=config)


def _assert_tree_equal(a, b) -> None:
    a, b = ckpt._keys_to_data(a), ckpt._keys_to_data(b)
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_round_trip_is_exact_and_keeps_the_newest(tmp_path):
    assert _restore(tmp_path) is None  # nothing saved yet
    _save_steps(tmp_path, max_to_keep=2)
    with ckpt.Checkpointer(tmp_path) as saver:
        assert saver.all_steps() == [2, 3] and saver.latest_step() == 3
    restored = _restore(tmp_path)
    assert restored.step == 3 and restored.extra == {"iteration": 3}
    _assert_tree_equal(restored.state, _state(3.0))
    assert jax.dtypes.issubdtype(restored.state["key"].dtype, jax.dtypes.prng_key)
    assert restored.history.keys() == HISTORY.keys()
    for name, value in HISTORY.items():
        np.testing.assert_array_equal(restored.history[name], value)  # NaN included
        assert restored.history[name].dtype == value.dtype


def test_digest_sees_one_changed_element():
    state = _state()
    changed = jax.tree.map(lambda x: x, state)
    changed["params"]["w"] = state["params"]["w"].at[3, 5].add(1e-6)
    assert ckpt.state_digest(state) == ckpt.state_digest(_state())
    assert ckpt.state_digest(changed) != ckpt.state_digest(state)
    swapped = {**state, "params": {"w": state["params"]["w"], "b": state["params"]["b"][::-1] + 1}}
    assert ckpt.state_digest(swapped) != ckpt.state_digest(state)


def _largest_data_file(step_dir: pathlib.Path) -> pathlib.Path:
    files = [p for p in (step_dir / "state").rglob("*") if p.is_file() and "ocdbt" in str(p.relative_to(step_dir))]
    return max(files, key=lambda p: p.stat().st_size)


def _zero_bytes(step_dir):
    path = _largest_data_file(step_dir)
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 16] = bytes(16)
    path.write_bytes(bytes(data))


def _truncate(step_dir):
    path = _largest_data_file(step_dir)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])


def _delete_metadata(step_dir):
    (step_dir / "state" / "_METADATA").unlink()


def _empty_step(step_dir):
    for child in step_dir.iterdir():
        shutil.rmtree(child) if child.is_dir() else child.unlink()


@pytest.mark.parametrize("corrupt", [_zero_bytes, _truncate, _delete_metadata, _empty_step])
def test_corrupt_latest_step_is_reported_and_the_previous_one_used(tmp_path, corrupt):
    _save_steps(tmp_path)
    corrupt(tmp_path / "3")
    with pytest.warns(UserWarning, match="checkpoint step 3 .*falling back to step 2"):
        restored = _restore(tmp_path)
    assert restored.step == 2
    _assert_tree_equal(restored.state, _state(2.0))


def test_every_step_corrupt_is_an_error(tmp_path):
    _save_steps(tmp_path, steps=(1, 2))
    for step in ("1", "2"):
        _zero_bytes(tmp_path / step)
    with pytest.warns(UserWarning), pytest.raises(ckpt.CorruptCheckpointError, match="step 2: .*digest.*step 1: .*digest"):
        _restore(tmp_path)


def test_unfinished_save_is_ignored(tmp_path):
    _save_steps(tmp_path, steps=(1, 2))
    (tmp_path / "5.orbax-checkpoint-tmp").mkdir()  # what a kill during an async save leaves
    assert _restore(tmp_path).step == 2


def test_config_mismatch_names_every_differing_field(tmp_path):
    _save_steps(tmp_path, steps=(1,))
    other = {**CONFIG, "config": {"num_envs": 8, "hidden_sizes": [64, 64]}, "seeds": 4}
    with pytest.raises(ckpt.ConfigMismatchError) as error:
        _restore(tmp_path, other)
    message = str(error.value)
    assert "'config.num_envs': checkpoint has 4, this run has 8" in message
    assert "'seeds': checkpoint has '<missing>', this run has 4" in message
    assert "hidden_sizes" not in message and "learning_rate" not in message


ACROSS_DEVICES = textwrap.dedent(
    """
    import os, sys
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=" + sys.argv[1]
    import jax, jax.numpy as jnp, numpy as np
    from jax.sharding import NamedSharding, SingleDeviceSharding, PartitionSpec as P
    from jaxrl_si import checkpoint as ckpt
    from jaxrl_si.parallel import make_mesh, shard_members

    devices, mode, directory = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    state = {"w": jnp.arange(8 * 6, dtype=jnp.float32).reshape(8, 6) / 7, "key": jax.random.split(jax.random.key(1), 8),
             "n": jnp.arange(8, dtype=jnp.int32)}
    sharding = NamedSharding(make_mesh(devices, 1), P("sweep")) if devices > 1 else SingleDeviceSharding(jax.devices()[0])
    if devices > 1:
        state = shard_members(state, make_mesh(devices, 1))
        assert state["w"].sharding.spec == P("sweep")
    print(ckpt.state_digest(state))
    with ckpt.Checkpointer(directory) as saver:
        if mode == "save":
            saver.save(1, state, config={"run": 1})
        else:
            restored = saver.restore_latest(ckpt.abstract_target(jax.eval_shape(lambda: state), sharding), config={"run": 1})
            for a, b in zip(jax.tree.leaves(ckpt._keys_to_data(restored.state)), jax.tree.leaves(ckpt._keys_to_data(state))):
                np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
                assert a.sharding == sharding or a.sharding.is_equivalent_to(sharding, a.ndim), (a.sharding, sharding)
    print("OK")
    """
)


def _across(devices: int, mode: str, directory) -> str:
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    out = subprocess.run([sys.executable, "-c", ACROSS_DEVICES, str(devices), mode, str(directory)], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0 and out.stdout.strip().endswith("OK"), out.stderr[-3000:]
    return out.stdout.split()[0]


def test_checkpoint_moves_between_eight_devices_and_one(tmp_path):
    digests = {
        _across(8, "save", tmp_path / "from8"),
        _across(1, "restore", tmp_path / "from8"),  # written sharded on 8, restored on 1
        _across(1, "save", tmp_path / "from1"),
        _across(8, "restore", tmp_path / "from1"),  # and the reverse, restored sharded P('sweep')
    }
    assert len(digests) == 1  # the digest does not depend on the layout
