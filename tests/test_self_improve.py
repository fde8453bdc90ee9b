"""The self-improvement agent: each method's update moves log-probabilities the way its loss says,
the warm start, resume, compile-once, and clear errors."""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrl_si import checkpoint, loop, nets
from jaxrl_si.agents import sequence_methods as methods
from jaxrl_si.agents.self_improve import (
    SelfImprove,
    SelfImproveConfig,
    SelfImproveHyperparams,
)
from jaxrl_si.errors import ConfigError

TINY = SelfImproveConfig(
    task_size=2, num_layers=1, width=32, num_heads=2, prompts_per_iteration=8, samples_per_prompt=4,
    epochs=1, minibatches=2, eval_prompts=8, warm_start_batch=8, reward_model_prompts=8, reward_model_steps=4,
    judge="bt", iterations=2,
)  # fmt: skip


@functools.cache
def _agent(method: str, **changes) -> SelfImprove:
    return SelfImprove.build(dataclasses.replace(TINY, method=method, **changes))


@functools.cache
def _judged(judge: str = "bt"):
    """One iteration's judged samples of a random policy (digit-accuracy oracle: pairs differ)."""
    agent = _agent("dpo", judge=judge)
    hparams = SelfImproveHyperparams()
    state = jax.jit(agent.init)(hparams, jax.random.key(0))
    keys = jax.random.split(jax.random.key(1), 3)
    return state, jax.jit(agent._judge)(hparams, state.params, state.reward_params, *keys)


def _objective(method: str, params, judged, rows) -> float:
    """What the method's update should raise: the chosen-minus-rejected margin (pairwise), the
    advantage-weighted log-likelihood (policy gradient), or the kept samples' log-likelihood."""
    model = TINY.model
    if method in methods.PAIRWISE:
        both = jax.tree.map(lambda a, b: jnp.concatenate([a, b]), rows.chosen, rows.rejected)
        summed = jnp.sum(nets.token_logps(params, model, both.prompts, both.prompt_valid, both.responses, both.mask), -1).reshape(2, -1)
        w = rows.chosen.weights
        return float(jnp.sum(w * (summed[0] - summed[1])) / w.sum())
    summed = jnp.sum(nets.token_logps(params, model, rows.prompts, rows.prompt_valid, rows.responses, rows.mask), -1)
    weights = rows.advantages if method in methods.POLICY_GRADIENT else rows.weights
    return float(jnp.sum(weights * summed))


@pytest.mark.parametrize("method", ["dpo", "ipo", "inpo", "sppo", "rloo", "grpo", "loop", "rest", "sft"])
def test_update_moves_log_probs_the_way_the_loss_says(method):
    agent = _agent(method, judge="bt" if method != "rest" else "verifier")
    state, judged = _judged()
    if method == "rest":  # a random policy is never right: mark some samples correct by hand
        judged = judged.replace(correct=(jnp.arange(judged.correct.size).reshape(judged.correct.shape) % 3 == 0).astype(jnp.float32))
    hparams = SelfImproveHyperparams.for_method(method, learning_rate=3e-3)
    key = jax.random.key(2)
    rows = agent._rows(hparams, state, judged, key)
    params, _, loss = jax.jit(agent._train)(hparams, state.params, state.opt_state, rows, key)
    assert np.isfinite(float(loss))
    if method == "sppo":  # SPPO regresses log π/π_t onto η (P̂ − ½): the higher P̂, the more log π rises
        before, after = agent._pair_logps(state.params, judged), agent._pair_logps(params, judged)
        gap = rows.win_rates[:, 0] - rows.win_rates[:, 1]
        assert float(jnp.sum(gap * ((after - before)[:, 0] - (after - before)[:, 1]))) > 0
        return
    assert _objective(method, params, judged, rows) > _objective(method, state.params, judged, rows)


def test_pairs_are_best_against_worst_and_valid_only_when_the_best_wins():
    _, judged = _judged()
    best = jnp.take_along_axis(judged.win_rates, judged.chosen[:, None], 1)[:, 0]
    worst = jnp.take_along_axis(judged.win_rates, judged.rejected[:, None], 1)[:, 0]
    np.testing.assert_allclose(best, judged.win_rates.max(-1))
    np.testing.assert_allclose(worst, judged.win_rates.min(-1))
    assert not np.any(np.asarray(judged.pair_valid) & np.asarray(best == worst))


def test_warm_start_steps_only_move_active_members():
    agent = _agent("sft")
    hparams = SelfImproveHyperparams()
    state = agent.init(hparams, jax.random.key(0))
    run = jax.jit(functools.partial(agent.warm_start_steps, steps=3))
    frozen, _ = run(hparams, state, jnp.asarray(False))
    moved, accuracy = run(hparams, state, jnp.asarray(True))
    assert checkpoint.state_digest(frozen) == checkpoint.state_digest(state)
    assert int(moved.warm_start_steps) == 3 and 0.0 <= float(accuracy) <= 1.0
    assert checkpoint.state_digest(moved.params) != checkpoint.state_digest(state.params)


def test_reward_model_learns_the_annotator():
    agent = _agent("dpo", judge="reward_model", reward_model_prompts=32, reward_model_steps=60)
    hparams = SelfImproveHyperparams(reward_model_learning_rate=3e-3)
    state = agent.init(hparams, jax.random.key(3))
    state, metrics = jax.jit(agent.begin)(hparams, state)
    assert float(metrics["reward_model/accuracy"]) > 0.6  # held-out pairs of π_0's samples (chance: 0.5)


class _Killed(Exception):
    pass


def _kill_at(iteration):
    def hook(done, state):
        if done == iteration:
            raise _Killed

    return hook


def test_resume_after_a_kill_equals_an_uninterrupted_run_and_compiles_once(tmp_path):
    trainer = loop.Trainer(_agent("grpo"), 1, return_metric="eval/greedy_accuracy", count_metric=None)
    hparams = jax.tree.map(lambda x: jnp.asarray([x], jnp.float32), SelfImproveHyperparams.for_method("grpo"))
    keys = jax.random.split(jax.random.key(0), 1)
    whole = loop.run(trainer, hparams, keys, run_dir=tmp_path / "whole", async_checkpoints=False)
    _, iterate = trainer.compiled
    assert iterate._cache_size() == 1  # the second iteration reused the first one's program
    with pytest.raises(_Killed):  # dies after iteration 2 is computed, before its checkpoint
        loop.run(trainer, hparams, keys, run_dir=tmp_path / "killed", async_checkpoints=False, after_iteration=_kill_at(2))
    resumed = loop.run(trainer, hparams, keys, run_dir=tmp_path / "killed", resume=True, async_checkpoints=False)
    assert resumed.resumed_from == 1
    assert checkpoint.state_digest(resumed.state) == checkpoint.state_digest(whole.state)
    np.testing.assert_array_equal(resumed.history["eval/greedy_accuracy"], whole.history["eval/greedy_accuracy"])


@pytest.mark.parametrize(
    "changes, words",
    [
        ({"method": "ppo"}, "method"),
        ({"samples_per_prompt": 1}, "samples_per_prompt"),
        ({"judge": "oracle"}, "judge"),
        ({"method": "rest", "judge": "bt"}, "verifier"),
        ({"minibatches": 3}, "minibatches"),
        ({"task": "parity"}, "parity"),
    ],
)
def test_bad_configs_are_refused_with_the_field_named(changes, words):
    with pytest.raises(ConfigError, match=words):
        dataclasses.replace(TINY, **changes)


def test_unknown_config_keys_are_refused():
    with pytest.raises(ConfigError, match="unknown SelfImproveConfig keys"):
        SelfImproveConfig.from_dict({"methd": "dpo"})
