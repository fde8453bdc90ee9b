"""Atari 100k host envs (ale-py) and the HNS / rliable aggregates."""

import importlib.util
import sys

import numpy as np
import pytest

from experiments.spr import aggregate
from jaxrl_si.envs.atari import (
    ATARI_100K_GAMES,
    HUMAN_SCORES,
    RANDOM_SCORES,
    AtariConfig,
    AtariEnvs,
    evaluate,
    human_normalized_score,
)
from jaxrl_si.envs.core import MissingBackendError
from jaxrl_si.errors import ConfigError

needs_ale = pytest.mark.skipif(importlib.util.find_spec("ale_py") is None, reason="needs ale-py (the atari extra)")
needs_rliable = pytest.mark.skipif(importlib.util.find_spec("rliable") is None, reason="needs rliable")


def _random_actions(rng, envs):
    return rng.integers(0, envs.num_actions, envs.num_envs)


@needs_ale
def test_pong_shapes_stack_order_and_clipped_rewards():
    rng = np.random.default_rng(0)
    with AtariEnvs(AtariConfig("Pong", num_envs=2)) as envs:
        obs = envs.reset()
        assert obs.shape == (2, 84, 84, 4) and obs.dtype == np.uint8 and envs.num_actions == 6
        assert (obs[..., :3] == 0).all() and (obs[..., 3] > 0).any()  # reset: only the newest frame
        for _ in range(40):
            step = envs.step(_random_actions(rng, envs))
            assert step.obs.shape == (2, 84, 84, 4) and step.reward.dtype == np.float32
            assert {step.terminal.dtype, step.episode_end.dtype, step.truncated.dtype} == {np.dtype(bool)}
            assert not step.episode_end.any() and np.isnan(step.episode_score).all()
            np.testing.assert_array_equal(step.obs[..., :-1], obs[..., 1:])  # shifted by one, newest last
            np.testing.assert_array_equal(step.final_obs, step.obs)
            assert (np.abs(step.reward) <= 1).all()
            obs = step.obs


@needs_ale
def test_breakout_life_loss_is_terminal_but_the_game_goes_on():
    rng = np.random.default_rng(1)
    with AtariEnvs(AtariConfig("Breakout", num_envs=1, clip_rewards=False, seed=3)) as envs:
        envs.reset()
        assert envs.lives[0] == 5
        total, life_losses = 0.0, 0
        for _ in range(5000):
            lives_before = envs.lives[0]
            step = envs.step(_random_actions(rng, envs))
            total += float(step.reward[0])
            if step.episode_end[0]:
                break
            if step.terminal[0]:  # a life lost: one fewer life, same game, stack restarted
                life_losses += 1
                assert envs.lives[0] == lives_before - 1
                assert (step.obs[0, ..., :3] == 0).all() and (step.final_obs[0, ..., :3] > 0).any()
        assert step.episode_end[0] and step.terminal[0] and not step.truncated[0]
        assert life_losses == 4 and envs.lives[0] == 5  # the 5th life ends the game; a new one began
        assert step.episode_score[0] == total  # the whole game's unclipped score, never reset on a life loss


@needs_ale
def test_clipped_rewards_are_the_sign_of_the_game_rewards():
    runs = {}
    for clip in (True, False):
        rng = np.random.default_rng(2)  # same seed, same actions: the same trajectory
        with AtariEnvs(AtariConfig("Asterix", num_envs=2, clip_rewards=clip)) as envs:
            envs.reset()
            runs[clip] = np.stack([envs.step(_random_actions(rng, envs)).reward for _ in range(40)])
    assert runs[False].max() >= 50  # an Asterix item is worth 50 or more
    np.testing.assert_array_equal(runs[True], np.sign(runs[False]))


@needs_ale
def test_max_episode_steps_truncates_and_restarts():
    rng = np.random.default_rng(3)
    with AtariEnvs(AtariConfig("Pong", num_envs=2, max_episode_steps=5)) as envs:
        envs.reset()
        for _ in range(2):  # two games of exactly 5 steps
            for _ in range(4):
                assert not envs.step(_random_actions(rng, envs)).episode_end.any()
            step = envs.step(_random_actions(rng, envs))
            assert step.truncated.all() and step.episode_end.all() and not step.terminal.any()
            assert np.isfinite(step.episode_score).all()
            assert (step.obs[..., :3] == 0).all() and (step.final_obs[..., :3] > 0).any()


@needs_ale
def test_evaluate_returns_num_episodes_scores():
    rng = np.random.default_rng(4)
    calls = []

    def act(obs):
        calls.append(obs.shape)
        return rng.integers(0, 6, obs.shape[0])

    scores = evaluate(AtariConfig("Pong", num_envs=3), act, num_episodes=5, max_steps=10)
    assert scores.shape == (5,) and np.isfinite(scores).all() and (np.abs(scores) <= 21).all()
    assert calls[0] == (3, 84, 84, 4) and len(calls) == 20  # quotas 2, 2, 1 games of 10 steps


def test_unknown_game_and_bad_fields_raise_config_error():
    with pytest.raises(ConfigError, match="'Pongg'.*Pong"):
        AtariConfig("Pongg")
    with pytest.raises(ConfigError, match="num_envs"):
        AtariConfig("Pong", num_envs=0)
    with pytest.raises(ConfigError, match="repeat_action_probability"):
        AtariConfig("Pong", repeat_action_probability=1.5)
    assert AtariConfig("SpaceInvaders").game == "SpaceInvaders"  # any ROM ale-py ships


@needs_ale
def test_every_atari_100k_game_loads():
    assert len(ATARI_100K_GAMES) == 26
    for game in ATARI_100K_GAMES:
        with AtariEnvs(AtariConfig(game)) as envs:
            assert envs.reset().shape == (1, 84, 84, 4) and envs.num_actions >= 3


@needs_ale
def test_missing_ale_py_names_the_atari_extra(monkeypatch):
    config = AtariConfig("Pong")  # the 26 games need no ale-py to configure
    monkeypatch.setitem(sys.modules, "ale_py.vector_env", None)
    with pytest.raises(MissingBackendError, match=r"jaxrl_si\[atari\]"):
        AtariEnvs(config)


def test_human_normalized_score_is_0_for_random_and_1_for_human():
    assert set(RANDOM_SCORES) == set(HUMAN_SCORES) == set(ATARI_100K_GAMES)
    for game in ATARI_100K_GAMES:
        assert human_normalized_score(game, RANDOM_SCORES[game]) == pytest.approx(0.0, abs=1e-12)
        assert human_normalized_score(game, HUMAN_SCORES[game]) == pytest.approx(1.0)
    # anchors: (14.6 - -20.7) / 2 / 35.3 = 0.5 halfway; ROM ids are accepted
    np.testing.assert_allclose(human_normalized_score("pong", np.array([-20.7, -3.05])), [0.0, 0.5])
    with pytest.raises(ConfigError, match="Tetris"):
        human_normalized_score("Tetris", 1.0)


def _raw(game, hns):
    return RANDOM_SCORES[game] + np.asarray(hns, float) * (HUMAN_SCORES[game] - RANDOM_SCORES[game])


@needs_rliable
def test_aggregate_scores_by_hand():
    # HNS per run: Pong [0, 1], Breakout [1, 1], Boxing [2, 4], Freeway [0, 0]
    scores = {"Pong": _raw("Pong", [0, 1]), "Breakout": _raw("Breakout", [1, 1]),
              "Boxing": _raw("Boxing", [2, 4]), "Freeway": _raw("Freeway", [0, 0])}  # fmt: skip
    state = np.random.get_state()
    out = aggregate.aggregate_scores(scores, reps=300, seed=1)
    assert (np.random.get_state()[1] == state[1]).all()  # the global RNG is left as it was
    assert out["mean"] == pytest.approx((0.5 + 1 + 3 + 0) / 4)  # mean over seeds, then over games
    assert out["median"] == pytest.approx((0.5 + 1) / 2)
    assert out["iqm"] == pytest.approx(0.75)  # sorted 0 0 | 0 1 1 1 | 2 4: middle half's mean
    assert out["optimality_gap"] == pytest.approx(1 - 5 / 8)  # min(x, 1) sums to 5 over 8 runs
    assert out["superhuman_games"] == 1 and out["num_runs"] == 2
    for name in ("mean", "median", "iqm", "optimality_gap"):
        low, high = out[f"{name}_ci"]
        assert low <= out[name] <= high
    assert aggregate.aggregate_scores(scores, reps=300, seed=1) == out  # seeded: reproducible


def test_aggregate_scores_rejects_ragged_runs():
    with pytest.raises(ValueError, match="same"):
        aggregate.normalized_score_matrix({"Pong": [1.0, 2.0], "Boxing": [1.0]})


def test_paper_table_reproduces_the_papers_aggregates():
    table = aggregate.paper_table()
    assert set(table) == {"SimPLe", "DER", "CURL", "DrQ", "SPR"}
    assert all(set(column) == set(ATARI_100K_GAMES) for column in table.values())
    got = aggregate.paper_aggregates()
    # SPR Table 1's rows (mean, median, games above human); SPR's mean prints 0.704 from unrounded scores
    paper = {"SimPLe": (0.443, 0.144, 2), "DER": (0.285, 0.161, 2), "CURL": (0.381, 0.175, 2),
             "DrQ": (0.357, 0.268, 2), "SPR": (0.704, 0.415, 7)}  # fmt: skip
    for method, (mean, median, superhuman) in paper.items():
        assert got[method]["mean"] == pytest.approx(mean, abs=1.1e-3)
        assert got[method]["median"] == pytest.approx(median, abs=5e-4)
        assert got[method]["superhuman_games"] == superhuman


def test_missing_rliable_names_the_analysis_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "rliable", None)
    with pytest.raises(ImportError, match=r"jaxrl_si\[analysis\]"):
        aggregate.aggregate_scores({"Pong": [0.0]})
