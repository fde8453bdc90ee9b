"""Iterations and checkpoints end to end, through the PPO command line in real subprocesses.

A run killed with SIGKILL after iteration k and resumed equals an uninterrupted run; a
checkpoint whose config differs is refused naming the fields; a sweep checkpointed on 8 fake
devices resumes on 1; without `--mesh`, members spread over one host device per core.
"""

import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np

from jaxrl_si.logging import read_jsonl

TINY = [
    "--config.env", "probe:action_reward", "--config.num-envs", "8", "--config.rollout-length", "4",
    "--config.num-minibatches", "2", "--config.hidden-sizes", "16", "--seeds", "2",
]  # fmt: skip
LONG = [*TINY, "--config.total-env-steps", str(32 * 120), "--iterations", "40"]  # 40 iterations of 3 updates


def _cli(run_dir, *args) -> list[str]:
    return [sys.executable, "-m", "experiments.ppo", *args, "--run-dir", str(run_dir)]


def _env(devices: int = 1) -> dict:
    return {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}", "JAX_PLATFORMS": "cpu"}


def _run(run_dir, *args, devices: int = 1, check: bool = True) -> subprocess.CompletedProcess:
    out = subprocess.run(_cli(run_dir, *args), capture_output=True, text=True, env=_env(devices), timeout=600)
    if check:
        assert out.returncode == 0, out.stderr[-3000:]
    return out


def _metric_rows(run_dir) -> list[dict]:
    return read_jsonl(run_dir / "metrics.jsonl")


def _kill_after_checkpoint(run_dir, step: int, *args) -> None:
    """Start a run and SIGKILL it as soon as checkpoint `step` is complete on disk."""
    process = subprocess.Popen(_cli(run_dir, *args), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env())
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

    refused = _run(killed, *LONG, "--resume", "--hparams.learning-rate", "0.01", check=False)
    assert refused.returncode != 0
    assert "hparams.learning_rate" in refused.stderr and "config.total_env_steps" not in refused.stderr, refused.stderr[-2000:]


def _final_params(run_dir) -> np.ndarray:
    """The latest checkpoint's parameters (both seeds), flattened, restored in this process."""
    import jax

    from jaxrl_si import checkpoint, loop, sweep
    from jaxrl_si.agents.ppo import PPOConfig, PPOHyperparams, make_trainer

    config = PPOConfig(env="probe:action_reward", num_envs=8, rollout_length=4, num_minibatches=2, hidden_sizes=(16,), total_env_steps=32 * 120)
    init_members, _ = loop.compiled_members(make_trainer(config, 3))
    target = jax.eval_shape(init_members, sweep.member_hparams(PPOHyperparams(), [{}], 2), sweep.member_keys(0, 1, 2))
    with checkpoint.Checkpointer(run_dir / "checkpoints") as saver:
        restored = saver.restore_latest(target, config=None)
    assert restored.step == 40
    return np.concatenate([np.ravel(x) for x in jax.tree.leaves(restored.state.params)])


def test_sweep_checkpoint_from_eight_devices_resumes_on_one(tmp_path):
    args = [*TINY, "--config.total-env-steps", str(32 * 8), "--iterations", "4", "--sweep", "learning_rate=1e-3,3e-3",
            "--seeds", "4", "--max-to-keep", "0"]  # fmt: skip
    eight, one = tmp_path / "eight", tmp_path / "one"
    _run(eight, *args, "--mesh", "8", "1", devices=8)
    for step in (3, 4):  # back to the state after iteration 2, as if the run had stopped there
        shutil.rmtree(eight / "checkpoints" / str(step))
    _run(eight, *args, "--resume")  # one device, no mesh
    _run(one, *args)
    rows_resumed, rows_one = _metric_rows(eight), _metric_rows(one)
    assert len(rows_resumed) == len(rows_one) == 8 * 8
    for a, b in zip(rows_resumed, rows_one, strict=True):
        assert a.keys() == b.keys()
        np.testing.assert_allclose([a[k] for k in a if a[k] is not None], [b[k] for k in b if b[k] is not None], rtol=1e-5, atol=1e-6)


def test_members_spread_over_host_devices_without_deadlock(tmp_path):
    """No `--mesh`: 2 CartPole seeds on `--cpu-devices 2` get one device each and finish 16
    checkpointed iterations. (The state digest once launched small all-reduce programs, which
    deadlocked XLA:CPU's 2 host devices within a few iterations; it now sums shards per device.)
    """
    env = {name: value for name, value in _env().items() if name != "XLA_FLAGS"}
    args = ["--seeds", "2", "--config.total-env-steps", str(512 * 32), "--iterations", "16", "--cpu-devices", "2"]
    out = subprocess.run(_cli(tmp_path, *args), capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "mesh: {'sweep': 2, 'data': 1} of 2 cpu devices" in out.stdout
    assert len(_metric_rows(tmp_path)) == 2 * 32
