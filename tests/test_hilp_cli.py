"""`python -m experiments.hilp` end to end on a tiny maze dataset: every artifact, a resume that
reads the same dataset back and trains nothing new, and mistakes in one line."""

import json
import subprocess
import sys

import pytest
from cpu_devices import FAST_COMPILE_FLAGS, cpu_devices_env

from jaxrl_si.sinks import read_jsonl

TINY = [
    "--data.env", "maze:umaze", "--data.num-episodes", "16", "--data.episode-length", "50",
    "--hilp.env", "maze:umaze", "--hilp.total-steps", "20", "--hilp.steps-per-update", "10", "--hilp.hidden-sizes", "16",
    "--hilp.latent-dim", "2", "--hilp.batch-size", "16", "--hilp.eval-episodes", "2", "--hilp.eval-horizon", "5",
    "--hilp.reward-samples", "100", "--hilp.planning-states", "50", "--hilp.num-neighbours", "5", "--hilp.num-recursions", "1",
    "--seeds", "2", "--iterations", "2", "--representations", "hilbert", "identity",
]  # fmt: skip


def _run(run_dir, *args, check=True) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "experiments.hilp", *args, "--run-dir", str(run_dir)]
    env = cpu_devices_env(1, xla_flags=FAST_COMPILE_FLAGS)
    out = subprocess.run(command, capture_output=True, text=True, env=env, timeout=900)
    if check:
        assert out.returncode == 0, out.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("hilp")
    _run(run_dir, *TINY)
    return run_dir


def test_a_run_writes_every_artifact(run_dir):
    for name in ("config.json", "results.json", "results.md", "curves.png", "phi.png", "hilbert/metrics.jsonl", "identity/table.csv"):
        assert (run_dir / name).stat().st_size > 0, name
    results = json.loads((run_dir / "results.json").read_text())
    assert [r["representation"] for r in results["table"]] == ["hilbert", "identity"]
    assert all(r["phi/spearman"]["n"] == 2 for r in results["table"])
    assert results["dataset"]["env_name"] == "maze:umaze" and results["dataset"]["feature_names"]
    rows = read_jsonl(run_dir / "hilbert" / "metrics.jsonl")
    assert {"loss/phi", "goal/success", "plan/success", "reward/return", "random/success", "phi/spearman"} <= set(rows[0])


def test_resume_reads_the_dataset_back_and_a_second_fresh_run_is_refused(run_dir):
    before = (run_dir / "results.json").read_text()
    _run(run_dir, *TINY, "--resume")  # everything is checkpointed: nothing to train, the same table
    results = lambda text: [{k: v for k, v in row.items() if not k.startswith("wall_s")} for row in json.loads(text)["table"]]  # noqa: E731
    assert results((run_dir / "results.json").read_text()) == results(before)
    refused = _run(run_dir, *TINY, check=False)
    assert refused.returncode == 2 and refused.stderr.strip().startswith("error:") and "--resume" in refused.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--representations", "pca"], "--representations"), (["--seeds", "0"], "--seeds"), (["--dataset", "/nonexistent"], "/nonexistent")],
)
def test_mistakes_are_one_line(tmp_path, args, message):
    out = _run(tmp_path, *args, check=False)
    assert out.returncode == 2 and message in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr
