"""Offline preference agents (CPL, P-IQL, BC / SFT / %BC) on a small scripted-Pendulum dataset.

The dataset (`pendulum_data`): 12 episodes of 200 steps of gymnax Pendulum driven by a scripted
controller (energy pumping to swing up, a PD law near the top; it scores about -120 alone). In
the episodes of group k each action is the controller's with probability 1 - eps_k and uniform in
[-1, 1] otherwise, eps = (0, 0.3, 0.6, 1): returns from about -120 to about -1,100, so segment
quality varies. `oracle_advantage` is the proxy -||a_t - a_ctrl(s_t)||^2 for the optimal
advantage A*(s_t, a_t): the controller stands in for the optimal policy, A* is 0 at the optimal
action and falls quadratically away from it. The regret oracle then prefers the segment that
left the controller less (ties, both 0, are labelled 1/2). Segments of 16 steps every 8, and 64
fixed pairs for the sparse mode.
"""

import math
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from trees import leaf_arrays, member

from jaxrl_si import envs, loop, sweep
from jaxrl_si.agents import offline
from jaxrl_si.agents.bc import BC, BCConfig, BCHyperparams, top_episode_steps
from jaxrl_si.agents.cpl import CPL, CPLConfig, CPLHyperparams
from jaxrl_si.agents.piql import PIQL, PIQLConfig, PIQLHyperparams
from jaxrl_si.data import (
    Episodes,
    OfflineData,
    Pairs,
    Segments,
    label_pairs,
    segment_starts,
)
from jaxrl_si.errors import ConfigError
from jaxrl_si.preferences import HardLabels

EPSILONS = (0.0, 0.3, 0.6, 1.0)
EPISODES_PER_EPSILON, HORIZON, SEGMENT, STRIDE, PAIRS = 3, 200, 16, 8, 64
TINY = {"hidden_sizes": (32, 32), "dropout": 0.0, "batch_size": 32, "eval_episodes": 2}


def controller(obs):
    """Energy-based swing-up (pump towards the upright energy), PD balance near the top; in [-1, 1]."""
    cos, sin, speed = obs[..., 0], obs[..., 1], obs[..., 2]
    energy = speed**2 / 6.0 + 5.0 * cos  # per unit mass: (ml^2/3) w^2 / 2 + m g (l/2) cos
    pump = jnp.clip(2.0 * (5.0 - energy) * jnp.sign(speed + 1e-3), -2.0, 2.0)
    balance = jnp.clip(-(10.0 * jnp.arctan2(sin, cos) + 2.0 * speed), -2.0, 2.0)
    return (jnp.where(cos > 0.85, balance, pump) / 2.0)[..., None]


def _episode(env, key, epsilon):
    key_reset, key = jax.random.split(key)
    env_state, ts = env.reset(key_reset)

    def step(carry, key):
        env_state, obs = carry
        key_explore, key_action, key_env = jax.random.split(key, 3)
        expert = controller(obs)
        random_action = jax.random.uniform(key_action, (1,), minval=-1.0, maxval=1.0)
        action = jnp.where(jax.random.uniform(key_explore) < epsilon, random_action, expert)
        env_state, ts = env.step(env_state, action, key_env)
        return (env_state, ts.obs), (obs, action, ts.reward, -jnp.sum(jnp.square(action - expert)))

    _, steps = jax.lax.scan(step, (env_state, ts.obs), jax.random.split(key, HORIZON))
    return steps


def pendulum_data(seed: int = 0) -> OfflineData:
    env = envs.RescaleAction(envs.make("gymnax:Pendulum-v1"))
    epsilon = jnp.repeat(jnp.asarray(EPSILONS), EPISODES_PER_EPSILON)
    count = epsilon.shape[0]
    keys = jax.random.split(jax.random.key(seed), count)
    obs, action, reward, advantage = jax.jit(jax.vmap(lambda k, e: _episode(env, k, e)))(keys, epsilon)
    t = jnp.broadcast_to(jnp.arange(HORIZON), (count, HORIZON))
    episodes = Episodes(
        observation=obs,
        action=action,
        reward=reward,
        discount=jnp.ones((count, HORIZON)),
        is_first=t == 0,
        is_last=t == HORIZON - 1,
        is_terminal=jnp.zeros((count, HORIZON), bool),
        features=jnp.zeros((count, HORIZON, 0)),
        oracle_advantage=advantage,
        length=jnp.full((count,), HORIZON, jnp.int32),
        policy=jnp.repeat(jnp.arange(len(EPSILONS), dtype=jnp.int32), EPISODES_PER_EPSILON),
    )
    episode, start = segment_starts(np.full(count, HORIZON), SEGMENT, STRIDE)
    segments = Segments(jnp.asarray(episode), jnp.asarray(start), SEGMENT)
    rng = np.random.default_rng(seed)
    first = rng.integers(0, len(episode), PAIRS)
    second = (first + rng.integers(1, len(episode), PAIRS)) % len(episode)
    label = label_pairs(episodes, segments, first, second, HardLabels())
    return OfflineData(episodes, segments, Pairs(jnp.asarray(first, jnp.int32), jnp.asarray(second, jnp.int32), label))


@pytest.fixture(scope="module")
def data():
    return pendulum_data()


def _steps(agent, hparams, key, count):
    """`count` gradient steps from `init` without evaluations: (state, per-step metrics)."""
    def run(hparams, key):
        return jax.lax.scan(lambda s, _: agent.gradient_step(hparams, s), agent.init(hparams, key), None, length=count)

    return jax.jit(run)(hparams, key)


# --- configuration and data checks -------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "kwargs", "field"),
    [
        (CPLConfig, {"actor_kind": "beta"}, "actor_kind"),
        (CPLConfig, {"pair_mode": "all"}, "pair_mode"),
        (CPLConfig, {"batch_size": 33}, "batch_size"),
        (CPLConfig, {"total_steps": 100, "steps_per_update": 30}, "steps_per_update"),
        (CPLConfig, {"total_steps": 100, "steps_per_update": 10, "bc_steps": 200}, "bc_steps"),
        (BCConfig, {"method": "dpo"}, "method"),
        (BCConfig, {"method": "sft", "total_steps": 100, "steps_per_update": 10, "bc_steps": 200}, "bc_steps"),
        (PIQLConfig, {"reward_model_steps": 0}, "reward_model_steps"),
    ],
)
def test_bad_configs_are_errors_naming_the_field(config, kwargs, field):
    with pytest.raises(ConfigError, match=field):
        config(**kwargs)


def test_from_dict_refuses_unknown_keys():
    assert CPLConfig.from_dict({"bc_steps": 0}).bc_steps == 0
    with pytest.raises(ConfigError, match="bc_stepz"):
        CPLConfig.from_dict({"bc_stepz": 0})


def test_data_that_does_not_fit_is_a_config_error(data):
    with pytest.raises(ConfigError, match="observations"):
        CPL.build(CPLConfig(env="gymnax:MountainCarContinuous-v0"), data=data)
    no_pairs = data.replace(pairs=Pairs(jnp.zeros(0, jnp.int32), jnp.zeros(0, jnp.int32), jnp.zeros(0)))
    with pytest.raises(ConfigError, match="sparse"):
        BC.build(BCConfig(pair_mode="sparse"), data=no_pairs)


def test_sample_steps_draws_the_counted_steps_uniformly():
    counts = jnp.array([0, 3, 1, 0])
    episode, t = offline.sample_steps(jax.random.key(0), counts, 20_000)
    pairs, frequency = np.unique(np.stack([episode, t], 1), axis=0, return_counts=True)
    np.testing.assert_array_equal(pairs, [[1, 0], [1, 1], [1, 2], [2, 0]])
    np.testing.assert_allclose(frequency / 20_000, 0.25, atol=0.02)


def test_top_episode_steps_keep_the_best_returns(data):
    returns = np.asarray(data.episodes.returns)
    counts = np.asarray(top_episode_steps(data.episodes, 0.25))  # 12 episodes: the best 3
    np.testing.assert_array_equal(np.flatnonzero(counts), np.sort(np.argsort(returns)[-3:]))
    assert set(counts[counts > 0]) == {HORIZON}


def test_parameter_counts_by_hand(data):
    # obs 3, action 1, hidden (8,). Actor: 3*8 + 8 + 8*1 + 1 = 41. One Q head on (s, a):
    # 4*8 + 8 + 8 + 1 = 49, two heads 98. V: 41. Reward model (no output bias): 4*8 + 8 + 8 = 48.
    sizes = {"hidden_sizes": (8,), "critic_hidden_sizes": (8,), "reward_model_hidden_sizes": (8,)}
    assert CPL.build(CPLConfig(hidden_sizes=(8,)), data=data).parameter_count() == 41
    assert PIQL.build(PIQLConfig(**sizes), data=data).parameter_count() == 41 + 98 + 41 + 48
    assert CPL.build(CPLConfig(hidden_sizes=(8,), actor_kind="gaussian"), data=data).parameter_count() == 3 * 8 + 8 + 8 * 2 + 2


# --- CPL ---------------------------------------------------------------------------------------


def test_cpl_switch_resets_adam_and_warms_up_the_learning_rate(data):
    config = CPLConfig(**TINY, total_steps=8, steps_per_update=8, bc_steps=3, lr_warmup_steps=4)
    agent = CPL.build(config, data=data)
    hparams = CPLHyperparams(learning_rate=1e-3)
    step = jax.jit(agent.gradient_step)
    state, counts, rows = agent.init(hparams, jax.random.key(0)), [], []
    for _ in range(6):
        state, row = step(hparams, state)
        counts.append(int(state.opt_state[0].count))
        rows.append(row)
    metrics = {name: np.array([row[name] for row in rows]) for name in rows[0]}
    assert counts == [1, 2, 3, 1, 2, 3]  # Adam's count restarts at the first CPL step
    np.testing.assert_array_equal(metrics["cpl/phase"], [0, 0, 0, 1, 1, 1])
    np.testing.assert_allclose(metrics["optim/learning_rate"], [1e-3, 1e-3, 1e-3, 0.0, 2.5e-4, 5e-4], rtol=1e-6)
    selected = np.where(np.asarray(metrics["cpl/phase"]) > 0, metrics["loss/cpl"], metrics["loss/bc"])
    np.testing.assert_allclose(metrics["loss/total"], selected, rtol=1e-6)


@pytest.mark.parametrize("actor_kind", offline.ACTOR_KINDS)
def test_cpl_runs_with_every_actor_kind_and_its_loss_falls(data, actor_kind):
    config = CPLConfig(**TINY, actor_kind=actor_kind, total_steps=200, steps_per_update=100, bc_steps=0, lr_warmup_steps=0)
    agent = CPL.build(config, data=data)
    state, metrics = jax.jit(agent.train)(CPLHyperparams(learning_rate=3e-3), jax.random.key(1))
    assert all(np.isfinite(np.asarray(v)).all() for v in metrics.values())
    assert metrics["loss/cpl"][1] < metrics["loss/cpl"][0]
    np.testing.assert_array_equal(metrics["episode/count"], [2, 2])
    assert np.all(np.asarray(metrics["episode/return"]) < 0)  # Pendulum's rewards are <= 0
    assert int(state.step) == 200


def test_cpl_preference_accuracy_rises_above_0_8(data):
    """The same program with lr 0 measures the untrained policy's ranking; with lr 3e-3 it learns."""
    config = CPLConfig(**{**TINY, "batch_size": 64}, total_steps=300, steps_per_update=300, bc_steps=0, lr_warmup_steps=0)
    agent = CPL.build(config, data=data)
    run = jax.jit(lambda h: _steps(agent, h, jax.random.key(0), 300)[1]["preference/accuracy"])
    before = float(run(CPLHyperparams(learning_rate=0.0)).mean())
    after = float(run(CPLHyperparams(learning_rate=3e-3))[-50:].mean())
    assert after > 0.85 and after > before + 0.08, (before, after)


# --- BC, SFT, %BC ------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["bc", "sft", "percent_bc"])
def test_bc_methods_clone_their_data(data, method):
    config = BCConfig(**TINY, method=method, total_steps=200, steps_per_update=50, bc_steps=100)
    agent = BC.build(config, data=data)
    _, metrics = jax.jit(agent.train)(BCHyperparams(learning_rate=3e-3, top_fraction=0.25), jax.random.key(0))
    loss = np.asarray(metrics["loss/bc"])
    phase_start = 2 if method == "sft" else 0  # sft clones other data (the preferred segments) from update 2
    assert loss[1] < loss[0] and loss[3] < loss[phase_start], loss
    if method == "sft":
        np.testing.assert_array_equal(metrics["bc/phase"], [0, 0, 1, 1])
    if method == "percent_bc":
        np.testing.assert_array_equal(metrics["bc/top_episodes"], [3, 3, 3, 3])
        assert agent.data_parallel_sizes["step_batch_size"] == 32 * SEGMENT


# --- P-IQL -------------------------------------------------------------------------------------


def test_piql_reward_model_ranks_pairs_and_iql_losses_fall(data):
    sizes = {"critic_hidden_sizes": (32, 32), "reward_model_hidden_sizes": (32, 32)}
    config = PIQLConfig(**TINY, **sizes, total_steps=300, steps_per_update=100, reward_model_steps=300)
    agent = PIQL.build(config, data=data)
    hparams = PIQLHyperparams(learning_rate=1e-3, reward_model_learning_rate=3e-3)
    state, metrics = jax.jit(agent.train)(hparams, jax.random.key(0))
    assert float(state.reward_model_metrics["reward_model/accuracy"]) > 0.75
    np.testing.assert_allclose(metrics["reward_model/accuracy"], state.reward_model_metrics["reward_model/accuracy"], rtol=1e-6)
    reward, advantage = np.asarray(state.reward).ravel(), np.asarray(data.episodes.oracle_advantage).ravel()
    assert abs(reward.mean()) < 1e-4 and reward.std() == pytest.approx(1.0, rel=1e-3)  # standardised
    assert np.corrcoef(reward, advantage)[0, 1] > 0.5  # r̂ follows the oracle's advantage
    for name in ("loss/critic", "loss/actor"):
        assert metrics[name][-1] < metrics[name][0], (name, metrics[name])
    lr = np.asarray(metrics["optim/learning_rate"])  # the actor's cosine schedule, at steps 99, 199, 299
    np.testing.assert_allclose(lr, [1e-3 * 0.5 * (1 + math.cos(math.pi * s / 300)) for s in (99, 199, 299)], rtol=1e-5, atol=1e-10)


# --- under the loop ----------------------------------------------------------------------------


def _trainer(data, name: str):
    """CPL (tanh-Gaussian actor, BC then CPL) or P-IQL (Gaussian actor, dropout): 2 updates of 10 steps."""
    if name == "cpl":
        config = CPLConfig(**TINY, actor_kind="tanh_gaussian", total_steps=20, steps_per_update=10, bc_steps=10, lr_warmup_steps=5)
        return loop.Trainer(CPL.build(config, data=data), 1), CPLHyperparams()
    sizes = {"critic_hidden_sizes": (32, 32), "reward_model_hidden_sizes": (16,)}
    steps = {"total_steps": 20, "steps_per_update": 10, "reward_model_steps": 20}
    config = PIQLConfig(**{**TINY, "dropout": 0.25}, **sizes, **steps, actor_kind="gaussian")
    return loop.Trainer(PIQL.build(config, data=data), 1), PIQLHyperparams()


@pytest.mark.parametrize("name", ["cpl", "piql"])
def test_under_the_loop_members_equal_their_runs_alone_and_resume_exactly(data, tmp_path, name):
    """The loop passes the dataset to its programs as an unbatched argument: each of 2 vmapped
    members equals its run alone; the state holds all a resume needs (P-IQL: the relabelled
    rewards, the target critics, the reward model's metrics), so resuming equals not stopping."""
    trainer, base = _trainer(data, name)
    hparams = sweep.member_hparams(base, [{"learning_rate": 1e-3}, {"learning_rate": 3e-3}], seeds=1)
    keys = jax.random.split(jax.random.key(7), 2)
    whole = loop.run(trainer, hparams, keys, run_dir=tmp_path / "whole", async_checkpoints=False, max_to_keep=None)
    solo_init, solo_update = jax.jit(trainer.agent.init), jax.jit(trainer.agent.update)
    for index in range(2):
        member_hparams = member(hparams, index)
        alone = solo_init(member_hparams, keys[index])
        for update in range(2):
            alone, row = solo_update(member_hparams, alone)
            for metric in ("loss/bc" if name == "cpl" else "loss/critic", "episode/return", "optim/grad_norm"):
                np.testing.assert_allclose(whole.history[metric][index, update], row[metric], rtol=1e-4, atol=1e-5, err_msg=metric)
        for a, b in zip(leaf_arrays(member(whole.state.params, index)), leaf_arrays(alone.params), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)

    shutil.copytree(tmp_path / "whole", tmp_path / "resumed")
    shutil.rmtree(tmp_path / "resumed" / "checkpoints" / "2")
    resumed = loop.run(trainer, hparams, keys, run_dir=tmp_path / "resumed", async_checkpoints=False, resume=True)
    assert resumed.resumed_from == 1
    for a, b in zip(leaf_arrays(whole.state), leaf_arrays(resumed.state), strict=True):
        np.testing.assert_array_equal(a, b)

