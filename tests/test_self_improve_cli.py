"""`python -m experiments.self_improve` on a tiny config: artifacts, datasets per iteration, resume, mistakes."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from cpu_devices import FAST_COMPILE_FLAGS, cpu_devices_env

from experiments import cli
from experiments.self_improve.experiment import RunConfig, main
from jaxrl_si.data import read_tables, versions

TARGET_ACCURACY = 0.05
TINY = [
    "--agent.task-size", "1", "--agent.num-layers", "1", "--agent.width", "32", "--agent.num-heads", "2",
    "--agent.prompts-per-iteration", "8", "--agent.samples-per-prompt", "4", "--agent.eval-prompts", "16",
    "--agent.iterations", "2", "--agent.minibatches", "2", "--agent.warm-start-batch", "16",
    "--methods", "rpo", "rest", "--seeds", "2", "--target-accuracy", str(TARGET_ACCURACY), "--warm-start-chunk", "25",
]  # fmt: skip


def _run(run_dir, *args) -> dict:
    """The command line in a fresh process; its `results.json`. Compilation dominates these runs:
    no LLVM optimisation, and the runs share the session's compile cache (`cpu_devices_env`)."""
    command = [sys.executable, "-m", "experiments.self_improve", *TINY, *args, "--run-dir", str(run_dir)]
    out = subprocess.run(command, capture_output=True, text=True, env=cpu_devices_env(1, xla_flags=FAST_COMPILE_FLAGS), timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads((run_dir / "results.json").read_text())


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A whole run: its directory (read-only for the tests: copy it to change it) and results."""
    run_dir = tmp_path_factory.mktemp("self_improve") / "run"
    return run_dir, _run(run_dir)


def test_a_run_writes_the_table_plot_and_one_dataset_per_iteration(finished):
    run_dir, summary = finished
    rows = summary["table"]
    assert [(r["method"], r["iteration"]) for r in rows] == [(m, i) for m in ("rpo", "rest") for i in range(3)]
    assert all(r["eval/greedy_accuracy"]["n"] == 2 for r in rows)
    assert min(summary["warm_start"]["accuracy"]) >= TARGET_ACCURACY
    for name in ("results.json", "results.md", "self_improve.png", "self_improve_logps.png", "config.json"):
        assert (run_dir / name).stat().st_size > 0
    directory = run_dir / "rest" / "datasets" / "member_1"
    assert versions(directory) == ["1.1.0", "1.2.0"]
    tables, metadata = read_tables(directory, dataset_name="self_improvement_samples", version="1.2.0")
    assert metadata["iteration"] == 2 and metadata["method"] == "rest"
    samples, pairs = tables["samples"], tables["pairs"]
    assert len(samples["reward"]) == 8 * 4 and len(pairs["chosen"]) == 8
    np.testing.assert_array_equal(samples["reward"], samples["correct"])  # the verifier's reward is exact match
    assert np.all(samples["response_mask"].sum(-1) >= 1)


def test_resuming_a_finished_run_recomputes_nothing_and_reports_the_same(finished, tmp_path):
    run_dir, summary = finished
    shutil.copytree(run_dir, tmp_path / "run")
    (tmp_path / "run" / "results.json").unlink()  # so that the results compared are the resumed run's
    again = _run(tmp_path / "run", "--resume")
    assert again["table"] == summary["table"]


def test_another_run_reuses_the_warm_start_of_a_first(finished, tmp_path):
    run_dir, summary = finished
    reused = _run(tmp_path, "--methods", "sft", "--warm-start-dir", str(run_dir / "warm_start"), "--no-write-datasets")
    assert reused["warm_start"]["steps"] == summary["warm_start"]["steps"]
    assert reused["table"][0]["eval/greedy_accuracy"] == summary["table"][0]["eval/greedy_accuracy"]  # the same iteration 0


def test_a_second_fresh_run_into_the_same_directory_is_refused(finished, capsys):
    run_dir, _ = finished
    with pytest.raises(SystemExit) as exit_info:
        cli.main(RunConfig, main, args=["--run-dir", str(run_dir), "--seeds", "1"])
    assert exit_info.value.code == 2
    assert "--resume" in capsys.readouterr().err


@pytest.mark.parametrize(
    "args, words",
    [
        (["--methods", "dpo", "ppo"], "--methods must name"),
        (["--seeds", "0"], "--seeds must be >= 1"),
        (["--target-accuracy", "1.5"], "--target-accuracy"),
        (["--agent.samples-per-prompt", "1"], "samples_per_prompt must be >= 2"),
        (["--warm-start-dir", "/nonexistent/warm_start"], "holds no warm start"),
    ],
)
def test_mistakes_are_one_line(args, words, capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(RunConfig, main, args=[*args, "--run-dir", str(tmp_path)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert words in err and "Traceback" not in err
