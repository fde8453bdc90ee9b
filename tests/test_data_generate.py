"""Generating offline preference data: PPO snapshots, noisy rollouts, oracle advantages, pairs.

Hand-made cases first (a counter env whose advantages are computed in the comments), then one
tiny generation on Pendulum (2 PPO updates, 2 stages x 4 episodes, 16-step segments) checked
against NumPy recomputations of the same quantities.
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrl_si import envs
from jaxrl_si.agents.ppo import PPO, PPOConfig
from jaxrl_si.data import STEP_FIELDS, Episodes, Segments, gather_segments, label_pairs
from jaxrl_si.data import generate as gen
from jaxrl_si.data import rollout
from jaxrl_si.errors import ConfigError
from jaxrl_si.preferences import HardLabels
from jaxrl_si.preferences.tasks import PENDULUM


class CounterEnv(envs.Env):
    """obs_t = [t], r_t = t + a_t, terminal after `horizon` steps (never if None); actions in [-1, 1]."""

    def __init__(self, horizon=None):
        self.horizon = horizon

    observation_space = envs.Box(0.0, 100.0, (1,))
    action_space = envs.Box(-1.0, 1.0, (1,))

    def reset(self, key):
        return jnp.zeros((), jnp.int32), envs.initial_timestep(jnp.zeros((1,), jnp.float32))

    def step(self, t, action, key):
        terminal = False if self.horizon is None else t + 1 >= self.horizon
        obs = jnp.full((1,), t + 1, jnp.float32)
        return t + 1, envs.transition_timestep(obs, t + action[0], terminal, False)


def _value(obs):
    return 2.0 * obs[0] + 1.0  # V(s_t) = 2t + 1


def _constant(obs):
    return jnp.full((1,), 0.25)


def _rollout(env, policy=_constant, *, num_episodes=1, max_length=4, **kwargs):
    run = functools.partial(rollout.rollout_episodes, env, policy, num_episodes=num_episodes, max_length=max_length, **kwargs)
    return jax.jit(run)(jax.random.key(0))


def test_oracle_advantage_by_hand_and_its_sum_telescopes():
    # r_t = t + 0.25, V(t) = 2t + 1, cut after 4 steps (a time limit: bootstrap from s_4):
    # gamma_A = 1:   A_t = t + 0.25 + (2t + 3) - (2t + 1) = t + 2.25 -> 2.25, 3.25, 4.25, 5.25;
    #                sum 15 = sum r (7) + V(s_4) (9) - V(s_0) (1).
    # gamma_A = 0.5: A_t = t + 0.25 + (t + 1.5) - (2t + 1) = 0.75 at every step.
    ep = _rollout(CounterEnv(), value=_value)
    np.testing.assert_allclose(ep.oracle_advantage[0], [2.25, 3.25, 4.25, 5.25])
    np.testing.assert_allclose(ep.reward[0], [0.25, 1.25, 2.25, 3.25])
    assert float(ep.oracle_advantage.sum()) == pytest.approx(float(ep.reward.sum()) + 9.0 - 1.0)
    np.testing.assert_allclose(_rollout(CounterEnv(), value=_value, advantage_discount=0.5).oracle_advantage[0], [0.75] * 4)
    np.testing.assert_allclose(_rollout(CounterEnv()).oracle_advantage, _rollout(CounterEnv()).reward)  # no V: A = r
    assert ep.is_last[0].tolist() == [False, False, False, True] and not ep.is_terminal.any()


def test_termination_ends_the_episode_without_bootstrap_and_pads():
    # Terminal after 3 steps of at most 5: A_2 = r_2 - V(s_2) = 2.25 - 5 = -2.75 (no V(s_3));
    # a segment's sum telescopes with V(terminal) = 0: A_1 + A_2 = r_1 + r_2 - V(s_1) = 3.5 - 3.
    ep = _rollout(CounterEnv(horizon=3), num_episodes=2, max_length=5, value=_value)
    np.testing.assert_allclose(ep.oracle_advantage[0], [2.25, 3.25, -2.75, 0.0, 0.0])
    assert ep.length.tolist() == [3, 3]
    assert ep.is_first[0].tolist() == [True, False, False, False, False]
    assert ep.is_last[0].tolist() == ep.is_terminal[0].tolist() == [False, False, True, False, False]
    np.testing.assert_array_equal(ep.discount[0], [1.0, 1.0, 0.0, 0.0, 0.0])
    np.testing.assert_array_equal(ep.observation[0, :, 0], [0.0, 1.0, 2.0, 0.0, 0.0])  # padding is zeros
    assert ep.features.shape == (2, 5, 0)
    segments = Segments(jnp.array([0]), jnp.array([1]), length=2)
    assert float(gather_segments(ep, segments, jnp.array([0])).oracle_advantage.sum()) == pytest.approx(3.5 - 3.0)


def _policy(obs):
    return 0.05 * jnp.sin(obs[:1])  # near 0: noise of 0.3 is clipped at 1 only beyond 3 sigma


def test_noise_is_gaussian_around_the_mode_in_action_units():
    env, kwargs = CounterEnv(), {"num_episodes": 64, "max_length": 64}
    exact = _rollout(env, _policy, **kwargs)
    np.testing.assert_array_equal(exact.action, jax.vmap(jax.vmap(_policy))(exact.observation))
    noisy = _rollout(env, _policy, action_noise=0.3, **kwargs)
    residual = np.asarray(noisy.action - jax.vmap(jax.vmap(_policy))(noisy.observation))[..., 0]
    inside = np.abs(np.asarray(noisy.action[..., 0])) < 1.0
    assert inside.mean() > 0.99
    assert residual[inside].std() == pytest.approx(0.3, abs=0.015)
    assert abs(residual[inside].mean()) < 0.02
    assert not np.allclose(residual[0], residual[1])  # every episode draws its own noise
    assert np.abs(np.asarray(_rollout(env, lambda obs: jnp.full((1,), 0.9), action_noise=2.0).action)).max() == 1.0


def test_regret_labels_of_hand_built_segments_ties_half():
    # Three 2-step segments of one episode with advantage sums 3, 1, 3 and reward sums 0, 9, 0:
    # the regret oracle prefers by advantage (0 over 1, 1 under 0) and ties 0 with 2.
    adv = jnp.array([[1.0, 2.0, 0.5, 0.5, 2.0, 1.0]])
    reward = jnp.array([[0.0, 0.0, 4.0, 5.0, 0.0, 0.0]])
    zeros, flags = jnp.zeros((1, 6)), jnp.zeros((1, 6), bool)
    ep = Episodes(jnp.zeros((1, 6, 1)), jnp.zeros((1, 6, 1)), reward, zeros + 1, flags, flags, flags, jnp.zeros((1, 6, 0)), adv, jnp.array([6]), jnp.array([0]))
    segments = Segments(jnp.array([0, 0, 0]), jnp.array([0, 2, 4]), length=2)
    labels = label_pairs(ep, segments, jnp.array([0, 1, 0]), jnp.array([1, 0, 2]), HardLabels(), regret=True)
    np.testing.assert_array_equal(labels, [1.0, 0.0, 0.5])
    np.testing.assert_array_equal(label_pairs(ep, segments, jnp.array([0]), jnp.array([1]), HardLabels(), regret=False), [0.0])


def test_sparse_pairs_use_each_segment_once_then_reuse_evenly():
    first, second = gen.sparse_pairs(jax.random.key(0), 11, 5)
    used = np.concatenate([first, second])
    assert len(set(used.tolist())) == 10 and (first != second).all()
    first, second = gen.sparse_pairs(jax.random.key(0), 10, 25)  # 5 permutations of 10
    assert (first != second).all() and np.bincount(np.concatenate([first, second]), minlength=10).tolist() == [5] * 10


TINY_PPO = PPOConfig(
    env="gymnax:Pendulum-v1", num_envs=4, rollout_length=200, num_epochs=1, num_minibatches=4, total_env_steps=1600, hidden_sizes=(16,), normalize_observations=True
)
TINY = gen.GenerationConfig(ppo=TINY_PPO, stages=(0.5, 1.0), episodes_per_stage=4, segment_length=16, segment_stride=16, num_pairs=8)


@pytest.fixture(scope="module")
def generated():
    return gen.generate(TINY, progress=False)


def test_shapes_dtypes_and_flags(generated):
    data = generated.data
    ep = data.episodes
    assert ep.observation.shape == (8, 200, 3) and ep.observation.dtype == np.float32
    assert ep.action.shape == (8, 200, 1) and ep.features.shape == (8, 200, 3)
    assert ep.reward.dtype == ep.oracle_advantage.dtype == np.float32 and ep.is_first.dtype == np.bool_
    assert ep.length.tolist() == [200] * 8 and ep.policy.tolist() == [0] * 4 + [1] * 4
    assert np.abs(ep.action).max() <= 1.0 and np.abs(ep.observation[..., 2]).max() <= 8.0  # raw obs, agent's actions
    np.testing.assert_array_equal(ep.is_first, np.arange(200)[None].repeat(8, 0) == 0)
    np.testing.assert_array_equal(ep.is_last, np.arange(200)[None].repeat(8, 0) == 199)
    assert not ep.is_terminal.any() and (ep.discount == 1).all()
    np.testing.assert_allclose(ep.features @ np.asarray(PENDULUM.true_weights), ep.reward, rtol=1e-5, atol=1e-5)
    assert data.segments.num_segments == 8 * 12 and data.segments.length == 16  # starts 0, 16, ..., 176


def test_segment_views_equal_the_raw_steps(generated):
    data = generated.data
    seg = data.segments
    batch = gather_segments(jax.device_put(data.episodes), seg, jnp.arange(seg.num_segments))
    for name in STEP_FIELDS:
        raw = np.stack([getattr(data.episodes, name)[e, s : s + 16] for e, s in zip(seg.episode, seg.start, strict=True)])
        np.testing.assert_array_equal(getattr(batch, name), raw, err_msg=name)


def test_sparse_pairs_carry_hard_regret_labels(generated):
    data = generated.data
    pairs, seg, ep = data.pairs, data.segments, data.episodes
    score = np.array([ep.oracle_advantage[e, s : s + 16].sum() for e, s in zip(seg.episode, seg.start, strict=True)])
    np.testing.assert_array_equal(pairs.label, np.sign(score[pairs.first] - score[pairs.second]) / 2 + 0.5)
    assert len(set(np.concatenate([pairs.first, pairs.second]).tolist())) == 16  # 8 pairs, 16 distinct segments
    hard = dataclasses.replace(TINY, pair_oracle="hard")
    labels = gen.label_sparse_pairs(hard, jax.device_put(ep), seg, jax.random.key(1), jax.random.key(2)).label
    returns = np.array([ep.reward[e, s : s + 16].sum() for e, s in zip(seg.episode, seg.start, strict=True)])
    first, second = gen.sparse_pairs(jax.random.key(1), seg.num_segments, 8)
    np.testing.assert_array_equal(labels, returns[first] > returns[second])


def test_metadata(generated):
    data, meta, _ = generated
    assert [p["env_steps"] for p in meta.policies] == [800, 1600] and [p["stage"] for p in meta.policies] == [0.5, 1.0]
    for index, policy in enumerate(meta.policies):
        assert policy["mean_return"] == pytest.approx(data.episodes.reward[data.episodes.policy == index].sum(-1).mean(), rel=1e-5)
    assert meta.observation_shape == (3,) and meta.action_low == (-1.0,) and meta.extra["env_action_high"] == [2.0]
    assert meta.feature_names == PENDULUM.feature_names and meta.segment_length == 16
    assert (meta.action_noise, meta.oracle, meta.extra["num_pairs"], meta.seed) == (0.3, "regret", 8, 0)


def test_same_seed_same_data(generated):
    again = gen.generate(TINY, progress=False).data
    for a, b in zip(jax.tree.leaves(generated[0]), jax.tree.leaves(again), strict=True):
        np.testing.assert_array_equal(a, b)


def test_snapshots_follow_one_uninterrupted_run_and_act_by_their_mode():
    agent = PPO.build(TINY_PPO, base_env=PENDULUM.make_env())
    hparams = TINY.ppo_hparams
    snapshots, final, _ = gen.train_snapshots(agent, hparams, (1, 2), jax.random.key(3), chunk=1)
    state, _ = jax.jit(agent.train)(hparams, jax.random.key(3))
    for a, b in zip(jax.tree.leaves(snapshots[1]), jax.tree.leaves(gen.snapshot_of(agent, state)), strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.allclose(snapshots[0].params["params"]["actor"]["Dense_0"]["kernel"], final.params["params"]["actor"]["Dense_0"]["kernel"])
    policy = functools.partial(gen.policy_mode, agent, snapshots[0])
    ep = _rollout(rollout.acting_env(PENDULUM.make_env()), policy, num_episodes=2, max_length=8)
    # sigma = 0: the mode itself (to float rounding: the scan is compiled, the reference eager)
    np.testing.assert_allclose(ep.action, jnp.clip(jax.vmap(jax.vmap(policy))(ep.observation), -1.0, 1.0), rtol=1e-6, atol=1e-8)


def test_defaults_stages_chunks_and_sizes():
    config = gen.GenerationConfig()
    assert config.ppo.num_updates == 160 and config.stage_updates == (16, 32, 48, 80) and config.chunk_updates == 16
    assert gen.GenerationConfig(stages=(0.0, 0.25, 1.0)).chunk_updates == 40
    assert (config.num_segments, config.pair_count) == (4 * 125 * 5, 1250)  # starts 0, 32, ..., 128
    reacher = gen.GenerationConfig.for_env("brax:reacher", stages=(0.5, 1.0))  # the task's measured PPO run
    assert reacher.env == "brax:reacher" and reacher.ppo_hparams.gamma == 0.95 and reacher.stages == (0.5, 1.0)
    with pytest.raises(ConfigError, match="CartPole"):
        gen.GenerationConfig.for_env("gymnax:CartPole-v1")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("ppo", dataclasses.replace(TINY_PPO, env="gymnax:CartPole-v1")),  # no preference task
        ("ppo_hparams", None),
        ("stages", (0.5, 0.25)),
        ("stages", ()),
        ("stages", (0.5, 1.5)),
        ("stages", (0.1, 0.2)),  # both round to update 0 of 2
        ("episodes_per_stage", 0),
        ("action_noise", -0.1),
        ("segment_length", 201),
        ("segment_stride", 0),
        ("num_pairs", -1),
        ("pair_oracle", "oracle"),
        ("advantage_discount", 1.5),
        ("segment", 200),  # one 200-step segment of one episode: no pair
    ],
)
def test_bad_settings_name_the_field(field, value):
    changes = {"stages": (1.0,), "episodes_per_stage": 1, "segment_length": value} if field == "segment" else {field: value}
    with pytest.raises(ConfigError, match=field):
        dataclasses.replace(TINY, **changes)


def test_from_dict_refuses_unknown_keys_and_reads_nested_dicts():
    with pytest.raises(ConfigError, match="noise"):
        gen.GenerationConfig.from_dict({"noise": 0.3})
    with pytest.raises(ConfigError, match="lr"):
        gen.GenerationConfig.from_dict({"ppo_hparams": {"lr": 1.0}})
    config = gen.GenerationConfig.from_dict({"ppo": dataclasses.asdict(TINY_PPO), "ppo_hparams": {"gamma": 0.5}, "stages": [0.5, 1.0]})
    assert config.ppo == TINY_PPO and config.ppo_hparams.gamma == 0.5 and config.stages == (0.5, 1.0)


def test_generated_data_round_trips_through_tfds(generated, tmp_path):
    from jaxrl_si.data import tfds_io

    tfds_io.write_dataset(tmp_path, generated.data, generated.metadata)
    data, metadata = tfds_io.read_dataset(tmp_path, expect=PENDULUM.make_env())
    assert metadata == generated.metadata
    for a, b in zip(jax.tree.leaves(generated.data), jax.tree.leaves(data), strict=True):
        np.testing.assert_array_equal(a, b)


def test_oracle_saved_with_the_dataset_loads_and_values_alike(generated, tmp_path):
    gen.save_oracle(tmp_path, generated.oracle)
    agent, oracle = gen.load_oracle(tmp_path, generated.metadata)
    obs = jnp.asarray(generated.data.episodes.observation[0, :5])
    expected = jax.vmap(functools.partial(gen.critic_value, agent, generated.oracle))(obs)
    np.testing.assert_array_equal(jax.vmap(functools.partial(gen.critic_value, agent, oracle))(obs), expected)
    (tmp_path / gen.ORACLE_FILE).write_bytes(b"\x00garbage")
    with pytest.raises(ConfigError, match="oracle"):
        gen.load_oracle(tmp_path, generated.metadata)
