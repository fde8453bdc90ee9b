"""`python -m experiments.self_improve` on a tiny config: artifacts, datasets per iteration, resume, mistakes."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from experiments import cli
from experiments.self_improve.experiment import RunConfig, main
from jaxrl_si.agents.self_improve import SelfImproveConfig
from jaxrl_si.data import read_tables, versions

TINY = RunConfig(
    agent=SelfImproveConfig(
        task_size=1, num_layers=1, width=32, num_heads=2, prompts_per_iteration=8, samples_per_prompt=4,
        eval_prompts=16, iterations=2, minibatches=2, warm_start_batch=16,
    ),
    methods=("rpo", "rest"), seeds=2, target_accuracy=0.05, warm_start_chunk=25,
)  # fmt: skip


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    run = dataclasses.replace(TINY, run_dir=tmp_path_factory.mktemp("self_improve"))
    return run, main(run)


def test_a_run_writes_the_table_plot_and_one_dataset_per_iteration(finished):
    run, summary = finished
    rows = summary["table"]
    assert [(r["method"], r["iteration"]) for r in rows] == [(m, i) for m in ("rpo", "rest") for i in range(3)]
    assert all(r["eval/greedy_accuracy"]["n"] == 2 for r in rows)
    assert min(summary["warm_start"]["accuracy"]) >= run.target_accuracy
    for name in ("results.json", "results.md", "self_improve.png", "self_improve_logps.png", "config.json"):
        assert (run.run_dir / name).stat().st_size > 0
    directory = run.run_dir / "rest" / "datasets" / "member_1"
    assert versions(directory) == ["1.1.0", "1.2.0"]
    tables, metadata = read_tables(directory, dataset_name="self_improvement_samples", version="1.2.0")
    assert metadata["iteration"] == 2 and metadata["method"] == "rest"
    samples, pairs = tables["samples"], tables["pairs"]
    assert len(samples["reward"]) == 8 * 4 and len(pairs["chosen"]) == 8
    np.testing.assert_array_equal(samples["reward"], samples["correct"])  # the verifier's reward is exact match
    assert np.all(samples["response_mask"].sum(-1) >= 1)


def test_resuming_a_finished_run_recomputes_nothing_and_reports_the_same(finished):
    run, summary = finished
    again = main(dataclasses.replace(run, resume=True))
    assert again["table"] == summary["table"]


def test_another_run_reuses_the_warm_start_of_a_first(finished, tmp_path):
    run, summary = finished
    other = dataclasses.replace(run, run_dir=tmp_path, methods=("sft",), warm_start_dir=run.run_dir / "warm_start", write_datasets=False)
    reused = main(other)
    assert reused["warm_start"]["steps"] == summary["warm_start"]["steps"]
    assert reused["table"][0]["eval/greedy_accuracy"] == summary["table"][0]["eval/greedy_accuracy"]  # the same iteration 0


def test_a_second_fresh_run_into_the_same_directory_is_refused(finished, capsys):
    run, _ = finished
    with pytest.raises(SystemExit) as exit_info:
        cli.main(RunConfig, main, args=["--run-dir", str(run.run_dir), "--seeds", "1"])
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
