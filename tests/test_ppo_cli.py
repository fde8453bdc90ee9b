"""The PPO entry point: a tiny run writes its metrics, TensorBoard events, table, plots, summary."""

import json

import numpy as np
import pytest

from experiments.ppo import RunConfig, main
from jaxrl_si.agents.ppo import PPOConfig, PPOHyperparams
from jaxrl_si.loop import updates_per_iteration
from jaxrl_si.metrics import final_episode_return
from jaxrl_si.sinks import read_jsonl


def test_tiny_run_writes_every_artifact(tmp_path):
    config = PPOConfig(env="probe:action_reward", num_envs=8, rollout_length=4, num_minibatches=2, total_env_steps=32 * 12, hidden_sizes=(16,))
    run = RunConfig(config=config, hparams=PPOHyperparams(learning_rate=3e-3), seeds=2, run_dir=tmp_path, iterations=4)
    summary = main(run)
    rows = read_jsonl(tmp_path / "metrics.jsonl")
    assert len(rows) == 2 * 12  # one row per update and seed
    assert {row["seed"] for row in rows} == {0, 1}
    assert rows[-1]["env_steps"] == 12 * 32 and rows[-1]["iteration"] == 4
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))
    assert (tmp_path / "curves.png").stat().st_size > 10_000
    assert sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir()) == [2, 3, 4]  # max_to_keep=3
    assert json.loads((tmp_path / "summary.json").read_text()) == summary
    assert len(summary["final_return_per_member"]) == 2 and len(summary["final_return_mean_per_setting"]) == 1
    assert json.loads((tmp_path / "config.json").read_text())["seeds"] == 2


def test_iterations_divide_the_run():
    assert updates_per_iteration(976, 20) == 61  # 976 = 16 * 61: 16 iterations of one compiled size
    assert updates_per_iteration(7, 20) == 1
    assert updates_per_iteration(12, 4) == 3


def test_final_episode_return_weights_by_episode_count():
    returns = np.array([[10.0, np.nan, 30.0]])
    counts = np.array([[1.0, 0.0, 3.0]])
    np.testing.assert_allclose(final_episode_return(returns, counts, 3), [(10 + 90) / 4])
    assert np.isnan(final_episode_return(np.array([[np.nan]]), np.array([[0.0]]), 1)[0])


def test_unknown_flag_is_an_error():
    import tyro

    with pytest.raises(SystemExit):
        tyro.cli(RunConfig, args=["--config.learning-rat", "1e-3"])
    parsed = tyro.cli(RunConfig, args=["--config.num-envs", "8", "--hparams.gamma", "0.9", "--mesh", "4", "2", "--resume"])
    assert parsed.config.num_envs == 8 and parsed.hparams.gamma == 0.9
    assert parsed.mesh == (4, 2) and parsed.resume


BAD_INPUTS = [
    (["--sweep", "learning_rate"], "expected name=values in the sweep spec, got 'learning_rate'"),
    (["--sweep", "learning_rate=1e-3,abc"], "learning_rate: 'abc' is not a number"),
    (["--sweep", "random:4 learning_rate=normal(0,1)"], "unknown distribution 'normal'"),
    (["--sweep", "random:x learning_rate=uniform(0,1)"], "'x' is not an integer"),
    (["--sweep", "lr=1e-3,3e-3"], "unknown hyperparameter 'lr' in the sweep"),
    (["--sweep", "missing.json"], "cannot read the sweep file missing.json"),
    (["--seeds", "4", "--mesh", "64", "1"], "mesh (sweep=64, data=1) needs 64 devices"),
    (["--config.env", "gymnax:NoSuchEnv-v0"], "unknown gymnax environment 'NoSuchEnv-v0'"),
    (["--config.env", "nobackend:x"], "must be '<backend>:<env>'"),
    (["--iterations", "0"], "iterations must be a positive int, got 0"),
]
PARSE_ERRORS = [  # found by tyro while it builds the config: its own framed message, no traceback
    (["--config.num-minibatches", "3"], "PPOConfig.num_minibatches=3 must divide num_envs * rollout_length = 512"),
    (["--config.learning-rat", "1e-3"], "Unrecognized options: --config.learning-rat"),
]


def _cli_error(args, run_dir, capsys) -> str:
    from experiments import cli

    with pytest.raises(SystemExit) as exit_info:
        cli.main(RunConfig, main, args=[*args, "--run-dir", str(run_dir)])
    assert exit_info.value.code == 2
    assert not run_dir.exists()  # nothing written before the mistake was found
    return capsys.readouterr().err


@pytest.mark.parametrize("args, message", BAD_INPUTS, ids=[" ".join(a) for a, _ in BAD_INPUTS])
def test_a_users_mistake_is_one_line_without_traceback(args, message, tmp_path, capsys):
    lines = _cli_error(args, tmp_path / "run", capsys).strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines


@pytest.mark.parametrize("args, message", PARSE_ERRORS, ids=[" ".join(a) for a, _ in PARSE_ERRORS])
def test_a_bad_flag_is_reported_by_the_parser_without_traceback(args, message, tmp_path, capsys):
    err = _cli_error(args, tmp_path / "run", capsys)
    assert "Traceback" not in err and message in " ".join(err.replace("│", " ").split()), err
