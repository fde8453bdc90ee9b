"""`python -m experiments.cpl` and `python -m experiments.cpl.iterate` end to end, on a tiny dataset:
every artifact; iterated self-improvement killed in the middle of a round resumes at that round
with its dataset snapshot as it was and ends equal to an uninterrupted run; mistakes in one line."""

import json
import signal
import subprocess
import sys
import time

import pytest
from cpu_devices import FAST_COMPILE_FLAGS, cpu_devices_env

from jaxrl_si.sinks import read_jsonl

DATA = [
    "--data.stages", "0.5", "1.0", "--data.episodes-per-stage", "8", "--data.ppo.total-env-steps", "6400",
    "--data.ppo.hidden-sizes", "16", "--data.segment-length", "16", "--data.segment-stride", "16",
]  # fmt: skip
TINY = {
    name: [
        f"--{name}.total-steps", "40", f"--{name}.steps-per-update", "10", f"--{name}.hidden-sizes", "32",
        f"--{name}.eval-episodes", "2", f"--{name}.batch-size", "8",
    ]  # fmt: skip
    for name in ("cpl", "piql", "bc")
}
SMALL = [
    *TINY["cpl"], "--cpl.bc-steps", "20", "--cpl.lr-warmup-steps", "5",
    *TINY["piql"], "--piql.critic-hidden-sizes", "32", "--piql.reward-model-hidden-sizes", "32", "--piql.reward-model-steps", "10",
    *TINY["bc"], "--bc.bc-steps", "20", "--seeds", "2", "--iterations", "2",
]  # fmt: skip
ITERATE = [*TINY["cpl"], "--cpl.bc-steps", "20", "--rounds", "2", "--round-updates", "2", "--episodes-per-round", "3", "--seeds", "2"]


def _env() -> dict[str, str]:
    """Compilation dominates these runs: no LLVM optimisation, and the session's compile cache,
    so that a killed run's resume (and the runs of a config already run) load their programs."""
    return cpu_devices_env(1, xla_flags=FAST_COMPILE_FLAGS)


def _run(module, run_dir, *args, check=True) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", module, *args, "--run-dir", str(run_dir)]
    out = subprocess.run(command, capture_output=True, text=True, env=_env(), timeout=900)
    if check:
        assert out.returncode == 0, out.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def table_run(tmp_path_factory):
    """The comparison on a freshly generated dataset (which the iterate tests reuse)."""
    run_dir = tmp_path_factory.mktemp("cpl")
    _run("experiments.cpl", run_dir, *DATA, *SMALL)
    return run_dir


def test_table_run_writes_every_artifact(table_run):
    for name in ("config.json", "results.json", "results.md", "returns.png", "dataset/oracle.msgpack"):
        assert (table_run / name).stat().st_size > 0, name
    results = json.loads((table_run / "results.json").read_text())
    rows = [(r["method"], r["pair_mode"]) for r in results["table"]]
    assert rows == [("cpl", "dense"), ("cpl", "sparse"), ("piql", "dense"), ("piql", "sparse"), ("sft", "dense"), ("sft", "sparse"), ("percent_bc", "-")]
    assert all(r["final_return"]["n"] == 2 and r["final_return"]["mean"] < 0 for r in results["table"])
    cpl, piql = results["table"][0], results["table"][2]
    assert piql["parameters"] > cpl["parameters"] > 0
    rows = read_jsonl(table_run / "cpl-dense" / "metrics.jsonl")
    assert {"preference/accuracy", "loss/cpl", "episode/return"} <= set(rows[0]) and len(rows) == 2 * 4


def test_a_second_fresh_run_into_the_same_directory_is_refused_in_one_line(table_run):
    out = _run("experiments.cpl", table_run, *DATA, *SMALL, check=False)
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "--resume" in out.stderr


@pytest.mark.parametrize(("args", "message"), [(["--methods", "dpo"], "--methods"), (["--pair-modes", "all"], "--pair-modes"), (["--seeds", "0"], "--seeds")])
def test_mistakes_are_one_line(tmp_path, args, message):
    out = _run("experiments.cpl", tmp_path, *DATA, *SMALL, *args, check=False)
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and message in out.stderr, out.stderr
    assert not (tmp_path / "dataset").exists()  # found before any work


def test_a_config_that_does_not_divide_is_reported_by_the_parser_without_traceback(tmp_path):
    out = _run("experiments.cpl", tmp_path, *DATA, *SMALL, "--cpl.total-steps", "55", check=False)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "steps_per_update=10 must divide total_steps=55" in " ".join(out.stderr.replace("│", " ").split())


def _final_state_digest(run_dir) -> str:
    """The digest of the last round's checkpointed state (parameters, optimiser, keys, step)."""
    meta = sorted((run_dir / "round_02" / "checkpoints").glob("*/meta/metadata"))[-1]
    return json.loads(meta.read_text())["state_digest"]


def test_iterate_killed_mid_round_resumes_on_its_snapshot_equal_to_uninterrupted(table_run, tmp_path):
    dataset = ["--dataset", str(table_run / "dataset")]
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    _run("experiments.cpl.iterate", whole, *dataset, *ITERATE)
    results = json.loads((whole / "results.json").read_text())
    assert [r["episodes_per_member"] for r in results["rounds"]] == [16, 19, 22]
    assert (whole / "rounds.png").stat().st_size > 0

    command = [sys.executable, "-m", "experiments.cpl.iterate", *dataset, *ITERATE, "--run-dir", str(killed)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env())
    snapshot = killed / "datasets" / "member_1" / "1.2.0"
    deadline = time.monotonic() + 600
    while not snapshot.is_dir():  # round 2's data is written; its training has not finished
        assert process.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (killed / "results.json").exists()
    written = {p: p.stat().st_mtime_ns for p in (killed / "datasets").rglob("*") if p.is_file()}
    out = _run("experiments.cpl.iterate", killed, *dataset, *ITERATE, "--resume")
    assert {p: p.stat().st_mtime_ns for p in written} == written  # the snapshots were read, not made again
    assert json.loads((killed / "results.json").read_text()) == results
    assert _final_state_digest(killed) == _final_state_digest(whole)
    assert "round 2" in out.stdout


def test_iterate_control_without_new_data_trains_on_the_base_dataset(table_run, tmp_path):
    """`--episodes-per-round 0`: the same rounds of extra steps, no rollouts and no dataset snapshots."""
    control = [*ITERATE[: ITERATE.index("--episodes-per-round")], "--episodes-per-round", "0", *ITERATE[ITERATE.index("--episodes-per-round") + 2 :]]
    _run("experiments.cpl.iterate", tmp_path, "--dataset", str(table_run / "dataset"), *control)
    results = json.loads((tmp_path / "results.json").read_text())
    assert [r["episodes_per_member"] for r in results["rounds"]] == [16, 16, 16]
    assert not (tmp_path / "datasets").exists()
