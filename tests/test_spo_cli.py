"""`python -m experiments.spo` end to end: every artifact, SIGKILL then resume equals an
uninterrupted run (training metrics, the table and the win-rate matrices), mistakes in one line."""

import json
import signal
import subprocess
import sys
import time

import pytest
from cpu_devices import FAST_COMPILE_FLAGS, cpu_devices_env

from jaxrl_si.sinks import read_jsonl

TINY = [
    "--config.ppo.num-envs", "4", "--config.ppo.num-minibatches", "4", "--config.ppo.num-epochs", "1",
    "--config.ppo.hidden-sizes", "16", "--config.reward-model-hidden-sizes", "16",
    "--config.ppo.total-env-steps", str(8 * 800), "--iterations", "8", "--seeds", "1",
    "--config.oracles", "bt", "majority",
]  # fmt: skip


def _cli(run_dir, *args) -> list[str]:
    return [sys.executable, "-m", "experiments.spo", *args, "--run-dir", str(run_dir)]


def _run(run_dir, *args, check=True) -> subprocess.CompletedProcess:
    # Compile time dominates these runs: no LLVM optimisation, and the session's compile cache, so
    # that the killed run and its resume load the programs the whole run compiled.
    out = subprocess.run(_cli(run_dir, *args), capture_output=True, text=True, env=cpu_devices_env(1, xla_flags=FAST_COMPILE_FLAGS), timeout=600)
    if check:
        assert out.returncode == 0, out.stderr[-3000:]
    return out


def _results(run_dir) -> dict:
    results = json.loads((run_dir / "results.json").read_text())
    results.pop("wall_s_training_including_compile")
    return results


def test_artifacts_and_sigkill_then_resume_equals_an_uninterrupted_run(tmp_path):
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    _run(whole, *TINY)
    for name in ("config.json", "metrics.jsonl", "table.csv", "results.json", "results.md", "returns.png", "win_rates_majority.png"):
        assert (whole / name).stat().st_size > 0, name
    results = _results(whole)
    assert [(r["method"], r["oracle"]) for r in results["table"]] == [
        ("ppo", "true reward"), ("spo", "bt"), ("spo", "majority"), ("rlhf", "bt"), ("rlhf", "majority")
    ]  # fmt: skip
    matrices = results["win_rates"]["majority"]
    assert set(matrices) == {"spo", "rlhf"} and len(matrices["spo"]) == 8

    process = subprocess.Popen(_cli(killed, *TINY), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=cpu_devices_env(1, xla_flags=FAST_COMPILE_FLAGS))
    deadline = time.monotonic() + 300
    while not (killed / "checkpoints" / "2").is_dir():
        assert process.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (killed / "results.json").exists()
    _run(killed, *TINY, "--resume")
    assert read_jsonl(killed / "metrics.jsonl") == read_jsonl(whole / "metrics.jsonl")
    assert _results(killed) == results


def _cli_error(args, run_dir, capsys) -> str:
    from experiments import cli
    from experiments.spo.experiment import RunConfig, main

    with pytest.raises(SystemExit) as exit_info:
        cli.main(RunConfig, main, args=[*TINY, *args, "--run-dir", str(run_dir)])
    assert exit_info.value.code == 2
    assert not run_dir.exists()  # nothing written before the mistake was found
    return capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--sweep", "method=0,1"], "set by --config.methods"),
        (["--hparams.oracle", "7"], "set by --config.methods and --config.oracles, not by --sweep or --hparams"),
        (["--sweep", "spo_queue=0,abc"], "spo_queue: 'abc' is not a number"),
        (["--sweep", "spo_quue=0,1"], "unknown hyperparameter 'spo_quue'"),
    ],
)
def test_mistakes_found_while_running_are_one_line(tmp_path, capsys, args, message):
    lines = _cli_error(args, tmp_path / "run", capsys).strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--config.oracles", "nope"], "PreferencePPOConfig.oracles must be distinct names"),
        (["--config.ppo.rollout-length", "150"], "must be a multiple of the episode length 200"),
        (["--config.ppo.env", "gymnax:CartPole-v1"], "no preference task for 'gymnax:CartPole-v1'"),
    ],
)
def test_mistakes_in_the_config_are_reported_by_the_parser_without_traceback(tmp_path, capsys, args, message):
    err = _cli_error(args, tmp_path / "run", capsys)
    assert "Traceback" not in err and message in " ".join(err.replace("│", " ").split()), err
