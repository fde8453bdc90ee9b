"""`python -m experiments.spr.atari` end to end on Pong: a run stopped after its first iteration, the
checkpoint restored bitwise as it was saved, `--resume` finishing the run with every artifact, and
mistakes (another game, capacity or seed count on resume, an unknown game, a missing extra) in one line.

The two command-line runs compile without LLVM optimisation and share the session's persistent XLA
compilation cache, so that the resumed process loads the programs the first one compiled (a speed-up
of the test only, ~30 s on a busy 2-core CPU; the runner's code path is the same).
"""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from cpu_devices import FAST_COMPILE_FLAGS, cpu_devices_env

from jaxrl_si.envs.atari import human_normalized_score
from jaxrl_si.sinks import read_jsonl

pytest.importorskip("ale_py")

TINY = [
    "--games", "Pong", "--seeds", "2", "--iterations", "2",
    "--config.total-env-steps", "120", "--config.steps-per-update", "30", "--config.learning-starts", "40",
    "--config.batch-size", "4", "--config.capacity", "64", "--config.hidden", "16", "--config.n-step", "3",
    "--config.spr-steps", "2", "--eval-episodes", "2", "--eval-max-steps", "50",
]  # fmt: skip
# learning from env step 40: 21 learn calls of 2 gradient steps by the end of iteration 1 (step 60), 81 by step 120
GRADIENT_STEPS = {1: 2 * (60 - 40 + 1), 2: 2 * (120 - 40 + 1)}


@pytest.fixture(scope="module")
def cli_env() -> dict[str, str]:
    return cpu_devices_env(1, xla_flags=FAST_COMPILE_FLAGS) | {"JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}


def _run(run_dir, env, *args) -> str:
    command = [sys.executable, "-m", "experiments.spr.atari", *TINY, *args, "--run-dir", str(run_dir)]
    out = subprocess.run(command, check=False, capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


@pytest.fixture(scope="module")
def stopped_run(tmp_path_factory, cli_env):
    """A run directory after iteration 1 of 2 (read-only for the tests: copy it to change it)."""
    run_dir = tmp_path_factory.mktemp("atari") / "run"
    stdout = _run(run_dir, cli_env, "--stop-after-iterations", "1")
    assert "stopped after iteration 1/2 of Pong" in stdout
    assert sorted(p.name for p in (run_dir / "Pong" / "checkpoints").iterdir()) == ["1"]
    assert not (run_dir / "results.json").exists()
    return run_dir


def _snapshot(directory) -> dict:
    return {str(p): p.stat().st_mtime_ns for p in directory.rglob("*")}


def test_the_checkpoint_restores_bitwise_as_saved(stopped_run):
    import tyro

    from experiments.spr import atari, host_loop
    from jaxrl_si import checkpoint as ckpt
    from jaxrl_si.agents.spr import SPR

    run = tyro.cli(atari.RunConfig, args=[*TINY, "--run-dir", str(stopped_run), "--resume"])
    programs = host_loop.SeedPrograms(SPR.build(run.config, spaces=(host_loop.FRAME_SHAPE, 6)))  # Pong: 6 actions
    with ckpt.Checkpointer(stopped_run / "Pong" / "checkpoints", async_save=False) as saver:
        state, progress, history = host_loop.restore_latest(run, "Pong", programs, saver)
    # The saving process hashed every bit of every leaf of the state in its memory (the one it went on with).
    meta = json.loads((stopped_run / "Pong" / "checkpoints" / "1" / "meta" / "metadata").read_text())
    assert ckpt.state_digest(state) == meta["state_digest"]
    assert (progress.iteration, progress.env_steps, progress.gradient_steps) == (1, 60, GRADIENT_STEPS[1])
    np.testing.assert_array_equal(state.env_steps, [60, 60])
    np.testing.assert_array_equal(state.grad_steps, [GRADIENT_STEPS[1]] * 2)
    frames = np.asarray(state.replay.experience.frame)  # [seeds, 1, capacity, 84, 84, 1]
    assert frames.shape == (2, 1, 64, 84, 84, 1) and frames.any()
    assert not np.array_equal(*np.asarray(state.params["params"]["convs_0"]["kernel"]))  # two seeds, two networks
    assert history["loss/total"].shape == (2, 2) and np.isnan(history["loss/total"][:, 0]).all() and np.isfinite(history["loss/total"][:, 1]).all()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--games", "Breakout", "--resume"], 'holds a run with other settings: games: it has ["Pong"], this run has ["Breakout"]'),
        (["--config.capacity", "32", "--resume"], "config.capacity: it has 64, this run has 32"),
        (["--seeds", "3", "--resume"], "seeds: it has 2, this run has 3"),
        ([], "holds an earlier run's checkpoints; --resume it or choose another --run-dir"),
        (["--games", "Pongg", "--resume"], "'Pongg' is not one of the 26 Atari 100k games"),
    ],
)
def test_mistakes_are_one_line_and_write_nothing(stopped_run, capsys, args, message):
    from experiments import cli
    from experiments.spr.atari import RunConfig, main

    before = _snapshot(stopped_run)
    with pytest.raises(SystemExit) as exit_info:
        cli.main(RunConfig, main, args=[*TINY, *args, "--run-dir", str(stopped_run)])
    lines = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines
    assert _snapshot(stopped_run) == before


def test_a_missing_atari_extra_is_one_line(tmp_path, capsys, monkeypatch):
    from experiments import cli
    from experiments.spr.atari import RunConfig, main

    monkeypatch.setitem(sys.modules, "ale_py", None)  # `import ale_py` now fails as if it were not installed
    with pytest.raises(SystemExit) as exit_info:
        cli.main(RunConfig, main, args=[*TINY, "--run-dir", str(tmp_path / "run")])
    lines = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and len(lines) == 1 and "pip install 'jaxrl_si[atari]'" in lines[0], lines
    assert not (tmp_path / "run").exists()


def test_resume_finishes_the_run_with_every_artifact(stopped_run, cli_env, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(stopped_run, run_dir)
    stdout = _run(run_dir, cli_env, "--resume")
    assert "resumed Pong from the checkpoint of iteration 1/2" in stdout and "every env starts a new game" in stdout
    for name in ("config.json", "results.json", "results.md", "Pong/metrics.jsonl", "Pong/evaluation.json", "Pong/checkpoints/2"):
        assert (run_dir / name).exists(), name
    assert any((run_dir / "Pong" / "tb").iterdir())

    results = json.loads((run_dir / "results.json").read_text())
    pong = results["per_game"]["Pong"]
    assert len(pong["scores"]) == 2 and np.asarray(pong["episode_scores"]).shape == (2, 2)
    np.testing.assert_allclose(pong["hns"], [human_normalized_score("Pong", s) for s in pong["scores"]])
    assert pong["paper"] == {"SPR": -5.9, "DER": -19.3, "DrQ": -8.5}
    assert results["gradient_steps_per_seed"] == {"Pong": GRADIENT_STEPS[2]}  # the host counters resumed too
    timing = pong["timing"]
    assert timing["ms_per_gradient_step"] > 0 and timing["env_steps_per_s"] > 0 and timing["protocol_hours_per_seed"] > 0
    assert results["aggregate"] is None  # one game
    assert "| Pong | 1 |" in (run_dir / "results.md").read_text()

    rows = read_jsonl(run_dir / "Pong" / "metrics.jsonl")  # iteration 1 replayed from the checkpoint, then iteration 2
    assert [(r["seed"], r["update"], r["env_steps"]) for r in rows] == [(s, u, 30 * u) for u in (1, 2, 3, 4) for s in (0, 1)]
    assert all(r["learn/gradient_steps"] == 60 for r in rows[4:]) and all(np.isfinite(r["loss/total"]) for r in rows[2:])
