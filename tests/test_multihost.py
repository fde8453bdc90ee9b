"""Two JAX processes of 4 CPU devices, joined on localhost, against one process of 8 devices.

Each multi-process run is the PPO command line started as a pod's workers start it (the same
command in every process, plus `--coordinator-address --num-processes --process-id`; see
`cpu_devices.run_joined`), on a tiny probe task: 8 envs, rollouts of 4, 3 iterations of one
update. LLVM's optimisation is off in every run (compile time; the same flags build the
reference), and every comparison is against a one-process run with the same flags.

- A sweep of 8 seeds on a (sweep 8, data 1) mesh, 4 members per process: every metric of
  every update and member, and the final checkpoint's state (by its sharding-independent
  digest: parameters, optimiser, environments, keys), equal the 8-device run bit for bit.
  Members never communicate and each device runs the program it runs in one process.
- Data-parallel PPO on (sweep 1, data 8): the 8 envs of each member are split over the devices
  of both processes and the gradients all-reduced across them. Not bitwise: gloo's all-reduce
  between processes adds the partial sums in another order than XLA's all-reduce inside one
  process. Measured: at most 1.4e-8 absolute (loss/policy, a mean near zero) and 6e-8 on a
  gradient norm of 0.78; compared at rtol 1e-5, atol 1e-6 as in test_data_parallel.py.
- The sweep's checkpoint of iteration 2, written by both processes, is restored by one process
  on one device, which finishes the run: it ends like the uninterrupted 8-device run (measured
  bitwise here; compared at rtol 1e-5 / atol 1e-6 because another layout may sum in another
  order, see jaxrl_si/sweep.py).
- A process whose peer never arrives aborts after `--init-timeout` instead of hanging.
"""

import json
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest
from cpu_devices import FAST_COMPILE_FLAGS, cpu_devices_env, free_port, run_joined

from experiments import cli
from experiments.ppo import RunConfig, main
from jaxrl_si import checkpoint, loop, sweep
from jaxrl_si.agents.ppo import PPO, PPOConfig, PPOHyperparams
from jaxrl_si.sinks import read_jsonl

TINY = [
    "--config.env", "probe:action_reward", "--config.num-envs", "8", "--config.rollout-length", "4",
    "--config.num-minibatches", "2", "--config.hidden-sizes", "16", "--config.total-env-steps", "96", "--iterations", "3",
]  # fmt: skip
PPO_CLI = [sys.executable, "-m", "experiments.ppo", *TINY]


def _start_one_process(run_dir, *args, devices: int) -> subprocess.Popen:
    return subprocess.Popen(
        [*PPO_CLI, *args, "--run-dir", str(run_dir)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cpu_devices_env(devices, xla_flags=FAST_COMPILE_FLAGS),
    )  # fmt: skip


def _finish(process: subprocess.Popen) -> str:
    out, err = process.communicate(timeout=600)
    assert process.returncode == 0, err[-3000:]
    return err


def _run_two_and_one(tmp_path, *args) -> tuple:
    """The same run as 2 processes x 4 devices (`two/`) and as 1 process x 8 devices (`one/`), at once."""
    one = _start_one_process(tmp_path / "one", *args, devices=8)
    joined = run_joined([*PPO_CLI, *args, "--run-dir", str(tmp_path / "two")], devices=4, xla_flags=FAST_COMPILE_FLAGS)
    _finish(one)
    for process in joined:
        assert process.returncode == 0, process.stderr[-3000:]
    return tmp_path / "two", tmp_path / "one", joined


def _state_digest(run_dir, step: int = 3) -> str:
    """The final checkpoint's state digest, as saved (jaxrl_si.checkpoint's `meta` item)."""
    return json.loads((run_dir / "checkpoints" / str(step) / "meta" / "metadata").read_text())["state_digest"]


def _assert_rows_close(actual: list[dict], expected: list[dict]) -> None:
    assert len(actual) == len(expected)
    for a, b in zip(actual, expected, strict=True):
        assert a.keys() == b.keys() and [k for k in a if a[k] is None] == [k for k in b if b[k] is None]
        np.testing.assert_allclose([a[k] for k in a if a[k] is not None], [b[k] for k in b if b[k] is not None], rtol=1e-5, atol=1e-6)


def _final_params(run_dir, members: int) -> np.ndarray:
    """The last checkpoint's parameters of every member, flattened, restored on this process's first device."""
    config = PPOConfig(env="probe:action_reward", num_envs=8, rollout_length=4, num_minibatches=2, hidden_sizes=(16,), total_env_steps=96)
    init_members, _ = loop.Trainer(PPO.build(config), 1).compiled
    shapes = jax.eval_shape(init_members, sweep.member_hparams(PPOHyperparams(), [{}], members), sweep.member_keys(0, 1, members))
    target = checkpoint.abstract_target(shapes, jax.sharding.SingleDeviceSharding(jax.devices()[0]))
    with checkpoint.Checkpointer(run_dir / "checkpoints") as saver:
        restored = saver.restore_latest(target, config=None)
    assert restored.step == 3
    return np.concatenate([np.ravel(x) for x in jax.tree.leaves(restored.state.params)])


def test_sweep_over_two_processes_equals_one_process_and_resumes_on_one_device(tmp_path):
    two, one, joined = _run_two_and_one(tmp_path, "--seeds", "8", "--mesh", "8", "1")
    main_out, other = joined
    assert "mesh: {'sweep': 8, 'data': 1} of 8 cpu devices in 2 processes (8 members)" in main_out.stdout
    assert "final_return_per_member" in main_out.stdout and "final_return_per_member" not in other.stdout  # process 0 prints
    assert "sweep:" in main_out.stderr and "sweep:" not in other.stderr  # and shows the progress bar
    assert {p.name for p in two.iterdir()} == {p.name for p in one.iterdir()}  # config, metrics, tb, table, plots, summary
    assert read_jsonl(two / "metrics.jsonl") == read_jsonl(one / "metrics.jsonl")  # bitwise, 8 members x 3 updates
    assert _state_digest(two) == _state_digest(one)

    resumed = tmp_path / "resumed"
    shutil.copytree(two, resumed)
    shutil.rmtree(resumed / "checkpoints" / "3")  # as if the pod had been preempted after iteration 2
    err = _finish(_start_one_process(resumed, "--seeds", "8", "--resume", devices=1))
    assert "resumed" in err and "iteration 2/3" in err, err[-2000:]
    _assert_rows_close(read_jsonl(resumed / "metrics.jsonl"), read_jsonl(one / "metrics.jsonl"))
    np.testing.assert_allclose(_final_params(resumed, 8), _final_params(one, 8), rtol=1e-5, atol=1e-6)


def test_data_parallel_ppo_over_two_processes_equals_one_process(tmp_path):
    two, one, joined = _run_two_and_one(tmp_path, "--seeds", "2", "--mesh", "1", "8")
    assert "mesh: {'sweep': 1, 'data': 8} of 8 cpu devices in 2 processes (2 members)" in joined[0].stdout
    _assert_rows_close(read_jsonl(two / "metrics.jsonl"), read_jsonl(one / "metrics.jsonl"))
    np.testing.assert_allclose(_final_params(two, 2), _final_params(one, 2), rtol=1e-5, atol=1e-6)


def test_a_missing_peer_aborts_after_the_init_timeout(tmp_path):
    command = [*PPO_CLI, "--run-dir", str(tmp_path / "run"), "--coordinator-address", f"localhost:{free_port()}",
               "--num-processes", "2", "--process-id", "0", "--init-timeout", "2"]  # fmt: skip
    out = subprocess.run(command, capture_output=True, text=True, env=cpu_devices_env(1), timeout=120)
    assert out.returncode != 0 and "RegisterTask" in out.stderr, out.stderr[-2000:]
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--num-processes", "2"], "--num-processes also needs --coordinator-address, --process-id (or --distributed"),
        (["--coordinator-address", "localhost:1", "--num-processes", "2", "--process-id", "2"], "--process-id 2 is not in [0, 2)"),
        (["--coordinator-address", "localhost", "--num-processes", "2", "--process-id", "0"], "must be HOST:PORT, got 'localhost'"),
        (["--distributed", "--init-timeout", "0"], "--init-timeout must be a positive number of seconds, got 0"),
    ],
)
def test_bad_launch_flags_are_one_line_before_jax_starts(args, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(RunConfig, main, args=[*args, "--run-dir", str(tmp_path)])
    lines = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines


def test_launch_flags_are_in_every_commands_help(capsys):
    with pytest.raises(SystemExit):
        cli.main(RunConfig, main, args=["--help"])
    shown = capsys.readouterr().out
    for flag in ("--distributed", "--coordinator-address", "--num-processes", "--process-id", "--init-timeout", "--config.num-envs"):
        assert flag in shown
