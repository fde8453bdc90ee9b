"""Iterations and checkpoints end to end, through the PPO command line in real subprocesses.

A run killed with SIGKILL after iteration k and resumed equals an uninterrupted run; a
checkpoint whose config differs is refused naming the fields, leaving the run directory as it
was; corrupt newest checkpoints are replaced by the resumed run; a sweep checkpointed on 8 fake
devices resumes on 1 and one checkpointed on 1 resumes on 8; without `--mesh`, members spread
over one host device per core.
"""

import dataclasses
import shutil
import signal
import subprocess
import sys
import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from cpu_devices import FAST_COMPILE_FLAGS, cpu_devices_env, run_on_cpu_devices

from jaxrl_si import checkpoint, loop, sweep
from jaxrl_si.agents.ppo import PPO, PPOConfig, PPOHyperparams
from jaxrl_si.sinks import read_jsonl

TINY = [
    "--config.env", "probe:action_reward", "--config.num-envs", "8", "--config.rollout-length", "4",
    "--config.num-minibatches", "2", "--config.hidden-sizes", "16", "--seeds", "2",
]  # fmt: skip
LONG = [*TINY, "--config.total-env-steps", str(32 * 120), "--iterations", "40"]  # 40 iterations of 3 updates


def _cli(run_dir, *args) -> list[str]:
    return [sys.executable, "-m", "experiments.ppo", *args, "--run-dir", str(run_dir)]


def _run(run_dir, *args, devices: int = 1, check: bool = True) -> subprocess.CompletedProcess:
    out = subprocess.run(_cli(run_dir, *args), capture_output=True, text=True, env=cpu_devices_env(devices), timeout=600)
    if check:
        assert out.returncode == 0, out.stderr[-3000:]
    return out


def _metric_rows(run_dir) -> list[dict]:
    return read_jsonl(run_dir / "metrics.jsonl")


def _kill_after_checkpoint(run_dir, step: int, *args) -> None:
    """Start a run and SIGKILL it as soon as checkpoint `step` is complete on disk."""
    process = subprocess.Popen(_cli(run_dir, *args), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=cpu_devices_env(1))
    deadline = time.monotonic() + 300
    while not (run_dir / "checkpoints" / str(step)).is_dir():
        assert process.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL


def test_sigkill_then_resume_equals_an_uninterrupted_run(tmp_path):
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    _run(whole, *LONG)
    _kill_after_checkpoint(killed, 3, *LONG)
    last = max(int(p.name) for p in (killed / "checkpoints").iterdir() if p.name.isdigit())
    assert last < 40, "the kill must interrupt the run"
    resumed = _run(killed, *LONG, "--resume")
    assert "restored" in resumed.stderr.lower() or "resum" in resumed.stderr.lower(), resumed.stderr[-2000:]
    assert _metric_rows(killed) == _metric_rows(whole)  # bitwise: every metric of every update and member
    np.testing.assert_array_equal(_final_params(killed), _final_params(whole))

    config_json = (killed / "config.json").read_text()
    refused = _run(killed, *LONG, "--resume", "--hparams.learning-rate", "0.01", check=False)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr, refused.stderr[-2000:]
    assert "hparams.learning_rate" in refused.stderr and "config.total_env_steps" not in refused.stderr, refused.stderr[-2000:]
    assert (killed / "config.json").read_text() == config_json  # the refused run changed nothing

    fresh = _run(killed, *LONG, check=False)  # a fresh run into a directory that holds checkpoints
    assert fresh.returncode == 2 and "holds checkpoints up to iteration 40" in fresh.stderr, fresh.stderr[-2000:]


def _final_params(run_dir) -> np.ndarray:
    """The latest checkpoint's parameters (both seeds), flattened, restored in this process."""
    with checkpoint.Checkpointer(run_dir / "checkpoints") as saver:
        restored = saver.restore_latest(_abstract_state(32 * 120, 3), config=None)
    assert restored.step == 40
    return np.concatenate([np.ravel(x) for x in jax.tree.leaves(restored.state.params)])


def _abstract_state(total_env_steps: int, updates_per_iteration: int):
    """Shapes and dtypes of the CLI's 2-seed state for the TINY config."""
    config = PPOConfig(env="probe:action_reward", num_envs=8, rollout_length=4, num_minibatches=2, hidden_sizes=(16,), total_env_steps=total_env_steps)
    init_members, _ = loop.Trainer(PPO.build(config), updates_per_iteration).compiled
    return jax.eval_shape(init_members, sweep.member_hparams(PPOHyperparams(), [{}], 2), sweep.member_keys(0, 1, 2))


def test_corrupt_newest_checkpoints_are_replaced_on_resume(tmp_path):
    """Corrupt the last two of three kept steps of a finished run: `--resume` falls back to the
    oldest, deletes the corrupt ones and saves the recomputed iterations in their place, so the
    next `--resume` restores the final state at once, equal to the uninterrupted run's."""
    args = [*TINY, "--config.total-env-steps", str(32 * 6), "--iterations", "6"]
    whole, damaged = tmp_path / "whole", tmp_path / "damaged"
    _run(whole, *args)
    _run(damaged, *args)
    for step in (5, 6):
        for data in (damaged / "checkpoints" / str(step)).rglob("*"):
            if data.is_file() and data.parent.name == "d":  # the OCDBT data files
                data.write_bytes(bytes(len(data.read_bytes())))
    repaired = _run(damaged, *args, "--resume")
    assert "checkpoint step 6" in repaired.stderr and "falling back to step 5" in repaired.stderr, repaired.stderr[-2000:]
    assert "iteration 4/6" in repaired.stderr
    again = _run(damaged, *args, "--resume")
    assert "falling back" not in again.stderr and "iteration 6/6" in again.stderr, again.stderr[-2000:]
    with checkpoint.Checkpointer(damaged / "checkpoints") as saver:
        assert saver.all_steps() == [4, 5, 6]
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # every kept step restores and verifies
            for step in (6, 5):
                assert saver.restore_latest(_abstract_state(32 * 6, 1), config=None).step == step
                saver.delete_steps_after(step - 1)
    assert _metric_rows(damaged) == _metric_rows(whole)


@pytest.mark.parametrize("saved_on, resumed_on", [(8, 1), pytest.param(1, 8, marks=pytest.mark.slow)])  # 8 -> 1 in CI; test_multihost restores 2 x 4 on 1 too
def test_sweep_checkpoint_resumes_on_another_device_count(tmp_path, saved_on, resumed_on):
    args = [*TINY, "--config.total-env-steps", str(32 * 8), "--iterations", "4", "--sweep", "learning_rate=1e-3,3e-3",
            "--seeds", "4", "--max-to-keep", "0"]  # fmt: skip
    mesh = lambda devices: ["--mesh", str(devices), "1"]  # noqa: E731
    moved, one = tmp_path / "moved", tmp_path / "one"
    _run(moved, *args, *mesh(saved_on), devices=saved_on)
    for step in (3, 4):  # back to the state after iteration 2, as if the run had stopped there
        shutil.rmtree(moved / "checkpoints" / str(step))
    _run(moved, *args, *mesh(resumed_on), "--resume", devices=resumed_on)
    _run(one, *args)
    rows_resumed, rows_one = _metric_rows(moved), _metric_rows(one)
    assert len(rows_resumed) == len(rows_one) == 8 * 8
    for a, b in zip(rows_resumed, rows_one, strict=True):
        assert a.keys() == b.keys()
        np.testing.assert_allclose([a[k] for k in a if a[k] is not None], [b[k] for k in b if b[k] is not None], rtol=1e-5, atol=1e-6)


def test_members_spread_over_host_devices_without_deadlock(tmp_path):
    """No `--mesh`: 2 CartPole seeds on `--cpu-devices 2` get one device each and finish 16
    checkpointed iterations. (The state digest once launched small all-reduce programs, which
    deadlocked XLA:CPU's 2 host devices within a few iterations; it now sums shards per device.)
    """
    env = {name: value for name, value in cpu_devices_env(1).items() if name != "XLA_FLAGS"}
    args = ["--seeds", "2", "--config.total-env-steps", str(512 * 32), "--iterations", "16", "--cpu-devices", "2"]
    out = subprocess.run(_cli(tmp_path, *args), capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "mesh: {'sweep': 2, 'data': 1} of 2 cpu devices" in out.stdout
    assert len(_metric_rows(tmp_path)) == 2 * 32


ONE_COMPILE = """
import sys
import jax, numpy as np
from jaxrl_si import loop
from jaxrl_si.agents.ppo import PPO, PPOConfig, PPOHyperparams
from jaxrl_si.parallel import make_mesh, shard_members

mesh = make_mesh(int(sys.argv[1]), int(sys.argv[2]))
config = PPOConfig(env="probe:action_reward", num_envs=8, rollout_length=4, num_minibatches=2, hidden_sizes=(16,), total_env_steps=96)
init, iterate = loop.Trainer.build(PPO.build, config, 1, mesh=mesh).compiled
hparams = jax.tree.map(lambda x: np.full((2,), x, np.float32), PPOHyperparams())
hparams, keys = shard_members((hparams, jax.random.split(jax.random.key(0), 2)), mesh)
state = init(hparams, keys)
for _ in range(2):
    state, _ = iterate(hparams, state)
assert iterate._cache_size() == 1, iterate._cache_size()
print("OK")
"""


@pytest.mark.parametrize("mesh", [(2, 1), (1, 2)])
def test_iterate_compiles_once_over_a_mesh(mesh):
    """init's state is laid out as an iteration leaves it, so the second iteration reuses the first's program."""
    run_on_cpu_devices(ONE_COMPILE, *mesh, devices=2, xla_flags=FAST_COMPILE_FLAGS)


def test_members_that_do_not_divide_the_mesh_are_one_line(tmp_path):
    out = _run(tmp_path / "run", *TINY, "--seeds", "3", "--mesh", "2", "1", devices=2, check=False)
    assert out.returncode == 2 and out.stderr.strip().splitlines() == [
        "error: 3 members do not divide over the mesh's sweep axis (2 devices); change the seeds, the sweep or the mesh"
    ], out.stderr[-2000:]
    assert not (tmp_path / "run").exists()


def test_a_dropped_trainer_frees_its_agent_and_compiled_programs(tmp_path):
    """No global cache holds programs: a notebook that sweeps configs keeps only the trainers it keeps."""
    import gc
    import weakref

    config = PPOConfig(env="probe:action_reward", num_envs=8, rollout_length=4, num_minibatches=2, total_env_steps=32 * 2, hidden_sizes=(16,))
    trainer = loop.Trainer(PPO.build(config), 1)
    loop.run(trainer, sweep.member_hparams(PPOHyperparams(), [{}], 2), sweep.member_keys(0, 1, 2), run_dir=tmp_path)
    held = [weakref.ref(trainer), weakref.ref(trainer.agent), *map(weakref.ref, trainer.compiled)]
    del trainer
    gc.collect()
    assert [ref() for ref in held] == [None] * len(held)


@dataclasses.dataclass(frozen=True)
class _MeanOfDataConfig:
    kind: str = "mean-of-data"


@dataclasses.dataclass(frozen=True, eq=False)
class _MeanOfData:
    """A minimal agent with shared `data`: each update adds the mean of a random row of it."""

    data: jax.Array  # [R, D]
    config: _MeanOfDataConfig = _MeanOfDataConfig()
    num_updates: int = 4
    env_steps_per_update: int = 1
    data_parallel_sizes: dict = dataclasses.field(default_factory=dict)

    def init(self, hparams, key):
        return {"total": jnp.zeros(()), "key": key}

    def update(self, hparams, state):
        key, key_row = jax.random.split(state["key"])
        row = self.data[jax.random.randint(key_row, (), 0, self.data.shape[0])]
        total = state["total"] + hparams * row.mean()
        return {"total": total, "key": key}, {"episode/return": total, "episode/count": jnp.ones(())}


def test_shared_data_is_an_argument_of_the_programs_not_a_constant(tmp_path):
    data = jnp.arange(100_000.0).reshape(5000, 20)  # as a constant: over 10^5 characters of program text
    trainer = loop.Trainer(_MeanOfData(data), updates_per_iteration=2)
    hparams, keys = jnp.array([1.0, 2.0]), jax.random.split(jax.random.key(0), 2)
    init, iterate = trainer.compiled
    program = iterate.func.lower(iterate.args[0], hparams, init(hparams, keys)).as_text()
    assert len(program) < 100_000
    result = loop.run(trainer, hparams, keys, run_dir=tmp_path, async_checkpoints=False)
    solo = jax.jit(trainer.agent.update)
    state = trainer.agent.init(2.0, keys[1])
    for _ in range(4):
        state, _ = solo(2.0, state)
    np.testing.assert_allclose(result.state["total"][1], state["total"], rtol=1e-6)


def test_data_per_member_gives_each_member_its_own_rows(tmp_path):
    data = jnp.stack([jnp.ones((50, 4)), 3 * jnp.ones((50, 4))])  # member 0 reads ones, member 1 threes
    trainer = loop.Trainer(_MeanOfData(data), updates_per_iteration=2, data_per_member=True)
    result = loop.run(trainer, jnp.array([1.0, 1.0]), jax.random.split(jax.random.key(0), 2), run_dir=tmp_path, async_checkpoints=False)
    np.testing.assert_allclose(result.state["total"], [4.0, 12.0])
