"""Exploratory datasets (`data.explore`): every task's reward, random actions held, RND, files, configs.

Tiny sizes on the cheapest Playground envs (CartpoleBalance: 4 tasks; PointMass for RND).
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

pytest.importorskip("mujoco_playground")

from jaxrl_si import nets
from jaxrl_si.data import explore, tfds_io
from jaxrl_si.errors import ConfigError

CARTPOLE_TASKS = ("CartpoleBalance", "CartpoleBalanceSparse", "CartpoleSwingup", "CartpoleSwingupSparse")
TINY_RND = explore.RNDConfig(
    num_envs=2, rollout_length=5, num_epochs=1, num_minibatches=1, hidden_sizes=(16,), rnd_hidden_sizes=(16,),
    embedding_size=8, predictor_steps=2, predictor_batch_size=8, cache_initial_state=True,
)


@pytest.fixture(scope="module")
def cartpole():
    """CartpoleBalance's physics and reset, 12-step episodes, the 4 cartpole tasks' rewards as features."""
    return explore.domain_env("CartpoleBalance", episode_length=12)


def test_domains_group_tasks_of_one_model():
    assert explore.DOMAIN_TASKS["walker"] == ("WalkerStand", "WalkerWalk", "WalkerRun")
    assert explore.domain_of("CartpoleSwingupSparse") == "cartpole"
    registry = pytest.importorskip("mujoco_playground").registry
    listed = [t for tasks in explore.DOMAIN_TASKS.values() for t in tasks]
    assert sorted(listed) == sorted(registry.dm_control_suite.ALL_ENVS)  # every DM Control task, once
    with pytest.raises(ConfigError, match="Nope"):
        explore.domain_of("Nope")


def test_features_equal_each_task_envs_own_reward_from_the_same_state_and_action(cartpole):
    featured = cartpole.env  # RewardFeatures(PlaygroundEnv)
    task_envs = featured.features.task_envs

    def run(key):
        state, _ = featured.reset(key)
        actions = jax.random.uniform(key, (6, 1), minval=-1.0, maxval=1.0)

        def body(state, action):
            next_state, ts = featured.step(state, action, key)
            own = [task.step(state.replace(metrics=dict(state.metrics)), action) for task in task_envs]
            rewards = jnp.stack([o.reward for o in own]).astype(jnp.float32)
            obs_gap = jnp.stack([jnp.abs(o.obs - next_state.obs).max() for o in own])
            return next_state, (ts.info["features"], rewards, ts.reward, obs_gap)

        return jax.lax.scan(body, state, actions)[1]

    features, own, reward, obs_gap = jax.jit(jax.vmap(run))(jax.random.split(jax.random.key(0), 2))
    assert features.shape == (2, 6, 4)
    np.testing.assert_allclose(features, own, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(obs_gap, 0.0)  # one physics and observation for the 4 tasks
    np.testing.assert_array_equal(features[..., 0], reward)  # the env's own reward is its task's
    assert not np.allclose(features[..., 0], features[..., 1])  # dense and sparse differ


def test_random_episodes_of_any_box_env_end_at_termination_and_pad():
    # TwoStepEnv terminates after 2 steps: episodes of 2 real steps, then padding.
    env = explore.envs.TwoStepEnv(continuous_actions=True)
    collect = functools.partial(explore.random_episodes, env, num_episodes=2, max_length=4, action_repeat=3)
    episodes = jax.device_get(jax.jit(collect)(jax.random.key(1)))
    np.testing.assert_array_equal(episodes.length, [2, 2])
    np.testing.assert_array_equal(episodes.is_terminal[0], [False, True, False, False])
    np.testing.assert_array_equal(episodes.is_last[0], [False, True, False, False])
    np.testing.assert_array_equal(episodes.discount[0], [1, 0, 0, 0])
    np.testing.assert_array_equal(episodes.reward, [[0, 1, 0, 0]] * 2)
    np.testing.assert_array_equal(episodes.observation[:, :, 0], [[0, 1, 0, 0]] * 2)
    assert episodes.features.shape == (2, 4, 0)
    assert np.all(episodes.action[:, 1] == episodes.action[:, 0]) and np.all(episodes.action[:, 2:] == 0)


@pytest.fixture(scope="module")
def random_dataset():
    """4 cartpole episodes of 12 steps, actions held for 4 steps, in 2 chunks."""
    config = explore.ExploreConfig(env="playground:CartpoleBalance", num_episodes=4, episode_length=12, action_repeat=4, chunks=2, coverage_bins=4)
    calls = []
    data, metadata = explore.generate_exploratory(config, progress=lambda *a: calls.append(a))
    return data, metadata, calls


def test_random_dataset_holds_each_action_for_action_repeat_steps(random_dataset):
    data, metadata, calls = random_dataset
    episodes = data.episodes
    assert [c[:2] for c in calls] == [(1, 2), (2, 2)]
    assert episodes.observation.shape == (4, 12, 5) and episodes.action.shape == (4, 12, 1)
    assert episodes.features.shape == (4, 12, 4) and episodes.features.dtype == np.float32
    np.testing.assert_array_equal(episodes.length, 12)
    np.testing.assert_array_equal(episodes.is_first, np.arange(12)[None].repeat(4, 0) == 0)
    np.testing.assert_array_equal(episodes.is_last, np.arange(12)[None].repeat(4, 0) == 11)
    assert not episodes.is_terminal.any() and np.all(episodes.discount == 1)
    blocks = episodes.action[..., 0].reshape(4, 3, 4)  # 3 held actions of 4 steps each
    np.testing.assert_array_equal(blocks, np.repeat(blocks[..., :1], 4, axis=-1))
    assert np.all(blocks[:, 1:, 0] != blocks[:, :-1, 0]) and np.all(np.abs(blocks) <= 1)
    assert not episodes.reward.any() and not episodes.oracle_advantage.any()  # unlabelled
    assert np.any(episodes.features != 0)
    assert not np.array_equal(episodes.observation[:2], episodes.observation[2:])  # chunks draw different keys
    assert data.segments.num_segments == 0 and data.pairs.num_pairs == 0 and data.segments.length == 1
    assert metadata.feature_names == CARTPOLE_TASKS and metadata.generator == "random" and metadata.segment_length == 1
    assert metadata.policies == ({"method": "random", "action_repeat": 4},)
    assert 0 < metadata.extra["coverage"]["visited"] <= 1 and metadata.extra["env_steps"] == 48


def test_rnd_math_by_hand():
    # e = mean_f (f̂ − f)²: ((1 − 0)² + (3 − 1)²) / 2 = 2.5.
    np.testing.assert_allclose(explore.rnd_prediction_error(jnp.array([[1.0, 3.0]]), jnp.array([[0.0, 1.0]])), [2.5])
    # R_t = γ R_{t−1} + r_t from R_{−1} = 2, γ = 0.5: 0.5·2 + 1 = 2, 0.5·2 + 0 = 1, 0.5·1 + 3 = 3.5.
    returns, last = explore.discounted_returns(jnp.array([[1.0], [0.0], [3.0]]), jnp.array([2.0]), gamma=0.5)
    np.testing.assert_allclose(returns[:, 0], [2.0, 1.0, 3.5])
    np.testing.assert_allclose(last, [3.5])
    # Returns with variance 4 halve the reward; inputs are clipped at ±5 standard deviations.
    stats = explore.envs.RunningMeanStd(jnp.zeros(()), jnp.full((), 4.0), jnp.ones(()))
    np.testing.assert_allclose(explore.normalized_intrinsic_reward(jnp.array([1.0, 3.0]), stats), [0.5, 1.5], rtol=1e-6)
    obs_stats = explore.envs.RunningMeanStd(jnp.ones(2), jnp.full(2, 0.25), jnp.ones(()))
    np.testing.assert_allclose(explore.normalized_rnd_input(jnp.array([2.0, 9.0]), obs_stats), [2.0, 5.0], rtol=1e-6)


def test_rnd_predictor_loss_falls_on_a_fixed_batch():
    key_x, key_target, key_predictor, key_fit = jax.random.split(jax.random.key(2), 4)
    target, predictor = nets.MLP((32,), 8, activation="relu"), nets.MLP((32,), 8, activation="relu")
    x = jax.random.normal(key_x, (64, 5))
    y = target.apply(target.init(key_target, x), x)
    params = predictor.init(key_predictor, x)
    optimizer = optax.adam(3e-3)
    fit = jax.jit(functools.partial(explore.fit_predictor, predictor, optimizer, steps=60, batch_size=64))
    _, _, losses = fit(params, optimizer.init(params), x, y, key_fit)
    assert losses.shape == (60,)
    assert float(losses[-5:].mean()) < 0.3 * float(losses[0])


def test_random_dataset_round_trips_through_files(random_dataset, tmp_path):
    data, metadata, _ = random_dataset
    tfds_io.write_dataset(tmp_path, data, metadata)
    read, read_metadata = tfds_io.read_dataset(tmp_path)
    assert read_metadata == metadata
    for name, value in dataclasses.asdict(data.episodes).items():
        np.testing.assert_array_equal(getattr(read.episodes, name), value, err_msg=name)
    assert read.segments.num_segments == 0 and read.pairs.num_pairs == 0


def test_rnd_dataset_keeps_every_episode_of_the_exploration_run():
    config = explore.ExploreConfig(env="playground:PointMass", method="rnd", num_episodes=8, episode_length=10, chunks=2, rnd=TINY_RND)
    calls = []
    data, metadata = explore.generate_exploratory(config, progress=lambda *a: calls.append(a))
    episodes = data.episodes
    # A round is lcm(5, 10) = 10 steps of 2 envs: 2 episodes; 4 rounds in 2 chunks.
    assert episodes.observation.shape == (8, 10, 4) and episodes.features.shape == (8, 10, 1)
    np.testing.assert_array_equal(episodes.policy, [0, 0, 1, 1, 2, 2, 3, 3])
    np.testing.assert_array_equal(episodes.length, 10)
    assert episodes.is_first[:, 0].all() and episodes.is_last[:, -1].all() and episodes.is_last.sum() == 8
    assert np.all(np.abs(episodes.action) <= 1) and not episodes.reward.any()
    # Each stored episode is one env's contiguous steps: the point mass integrates
    # x_{t+1} = x_t + dt v_{t+1} (obs = [x, y, v_x, v_y], dt = 0.02).
    obs = episodes.observation
    np.testing.assert_allclose(obs[:, 1:, :2], obs[:, :-1, :2] + 0.02 * obs[:, 1:, 2:], atol=1e-5)
    assert [c[:2] for c in calls] == [(1, 2), (2, 2)]
    assert all(np.isfinite(c[2]["rnd/prediction_error"]) and c[2]["rnd/aligned"] == 1 for c in calls)
    assert [p["round"] for p in metadata.policies] == [0, 1, 2, 3]
    assert [p["env_steps"] for p in metadata.policies] == [0, 20, 40, 60]
    assert metadata.generator == "rnd" and metadata.feature_names == ("PointMass",)
    assert metadata.extra["coverage"]["dims"] == [0, 1] and metadata.extra["coverage"]["bounds"] == [[-0.3, 0.3], [-0.3, 0.3]]


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"num_episodes": 0}, "num_episodes"),
        ({"method": "dqn"}, "method"),
        ({"action_repeat": 0}, "action_repeat"),
        ({"method": "rnd", "action_repeat": 2}, "action_repeat"),
        ({"num_episodes": 10, "chunks": 3}, "chunks"),
        ({"episode_length": -1}, "episode_length"),
        ({"seed": 1.5}, "seed"),
        ({"env": "PointMass"}, "env"),
        ({"coverage_dims": (1, 1)}, "coverage_dims"),
        ({"coverage_bounds": ((0.0, 0.0), (0.0, 1.0))}, "coverage_bounds"),
        ({"rnd": {"num_minibatches": 3}}, "num_minibatches"),
        ({"rnd": {"gamma": 1.5}}, "gamma"),
        ({"rnd": {"bogus": 1}}, "bogus"),
        ({"bogus": 1}, "bogus"),
    ],
)
def test_bad_config_values_name_the_field(fields, named):
    with pytest.raises(ConfigError, match=named):
        explore.ExploreConfig.from_dict(fields)


def test_rnd_episode_count_must_fill_whole_rounds():
    config = explore.ExploreConfig(env="playground:PointMass", method="rnd", num_episodes=3, episode_length=10, rnd=TINY_RND)
    with pytest.raises(ConfigError, match="num_episodes"):
        explore.generate_exploratory(config)
