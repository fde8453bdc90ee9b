"""`python -m experiments.spr` end to end: every artifact, SIGKILL then resume equals an
uninterrupted run (metrics of every arm and the results table), mistakes in one line."""

import json
import signal
import subprocess
import sys
import time

import pytest
from cpu_devices import FAST_COMPILE_FLAGS, cpu_devices_env

from jaxrl_si.sinks import read_jsonl

TINY = [
    "--games", "Breakout-MinAtar", "--arms", "spr", "--seeds", "1", "--iterations", "4",
    "--config.total-env-steps", "800", "--config.steps-per-update", "25", "--config.learning-starts", "200",
    "--config.hidden", "16", "--config.eval-steps", "20", "--config.eval-envs", "4", "--final-window", "2",
]  # fmt: skip
# Compile time dominates these runs: no LLVM optimisation, and the three runs (whole, killed, resumed)
# share a persistent compilation cache, so that only the first compiles.
FAST_COMPILE = cpu_devices_env(1, xla_flags=FAST_COMPILE_FLAGS) | {"JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}
ARMS = ("spr",)  # the other arms differ by static switches, run in tests/test_spr.py


def _cli(run_dir, *args) -> list[str]:
    return [sys.executable, "-m", "experiments.spr", *args, "--run-dir", str(run_dir)]


def _env(run_dir) -> dict[str, str]:
    return FAST_COMPILE | {"JAX_COMPILATION_CACHE_DIR": str(run_dir.parent / "xla_cache")}


def _run(run_dir, *args) -> None:
    out = subprocess.run(_cli(run_dir, *args), capture_output=True, text=True, env=_env(run_dir), timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]


def test_artifacts_and_sigkill_then_resume_equals_an_uninterrupted_run(tmp_path):
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    _run(whole, *TINY)
    for name in ("config.json", "results.json", "results.md", "eval.png", "cosine.png", "final.png"):
        assert (whole / name).stat().st_size > 0, name
    for arm in ARMS:
        for name in ("metrics.jsonl", "table.csv", "arm_config.json", "curves.png"):
            assert (whole / "Breakout-MinAtar" / arm / name).stat().st_size > 0, (arm, name)
    results = json.loads((whole / "results.json").read_text())
    assert [(row["game"], row["arm"]) for row in results["table"]] == [("Breakout-MinAtar", arm) for arm in ARMS]
    assert results["table"][0]["spr_cosine"]["n"] == 1 and 0 < results["table"][0]["spr_cosine"]["mean"] <= 1
    assert results["env_steps_per_member"] == 800

    process = subprocess.Popen(_cli(killed, *TINY), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env(killed))
    deadline = time.monotonic() + 300
    while not (killed / "Breakout-MinAtar" / "spr" / "checkpoints" / "2").is_dir():
        assert process.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (killed / "results.json").exists()
    _run(killed, *TINY, "--resume")
    for arm in ARMS:  # the buffer, both targets and the envs were in the checkpoint: bitwise the same run
        assert read_jsonl(killed / "Breakout-MinAtar" / arm / "metrics.jsonl") == read_jsonl(whole / "Breakout-MinAtar" / arm / "metrics.jsonl")
    assert json.loads((killed / "results.json").read_text()) == results


def _cli_error(args, run_dir, capsys) -> str:
    from experiments import cli
    from experiments.spr.experiment import RunConfig, main

    with pytest.raises(SystemExit) as exit_info:
        cli.main(RunConfig, main, args=[*TINY, *args, "--run-dir", str(run_dir)])
    assert exit_info.value.code == 2
    assert not run_dir.exists()  # nothing written before the mistake was found
    return capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--games", "Breakout-MinAtarr"], "unknown gymnax environment 'Breakout-MinAtarr'"),
        (["--sweep", "target_momentum=0.1,1"], "target_momentum is set by each arm"),
        (["--sweep", "spr_wieght=1,5"], "unknown hyperparameter 'spr_wieght'"),
    ],
)
def test_mistakes_found_while_running_are_one_line(tmp_path, capsys, args, message):
    lines = _cli_error(args, tmp_path / "run", capsys).strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--arms", "spr", "drq"], "unknown arms ['drq']"),
        (["--config.n-step", "0"], "SPRConfig.n_step must be a positive int"),
        (["--config.conv-impl", "cudnn"], "SPRConfig.conv_impl must be one of"),
    ],
)
def test_mistakes_in_the_config_are_reported_by_the_parser_without_traceback(tmp_path, capsys, args, message):
    err = _cli_error(args, tmp_path / "run", capsys)
    assert "Traceback" not in err and message in " ".join(err.replace("│", " ").split()), err
