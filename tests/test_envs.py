"""Environments: protocol, wrappers, probe envs, and the gymnax / Brax / Playground adapters."""

import sys

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrl_si import envs
from jaxrl_si.envs import Box, Discrete, Env, initial_timestep, transition_timestep


def _rollout(env: Env, actions, key):
    """jit(reset + lax.scan(step)) -> (first TimeStep, stacked TimeSteps [T, ...], final state)."""
    reset_key, step_key = jax.random.split(key)
    state, ts0 = env.reset(reset_key)

    def body(state, xs):
        action, k = xs
        state, ts = env.step(state, action, k)
        return state, ts

    state, tss = jax.lax.scan(body, state, (actions, jax.random.split(step_key, actions.shape[0])))
    return ts0, tss, state


_jit_rollout = jax.jit(_rollout, static_argnums=0)


def _assert_protocol(env: Env, ts, batch=()):
    assert ts.obs.shape == batch + env.observation_shape and ts.obs.dtype == jnp.float32
    assert ts.final_obs.shape == ts.obs.shape and ts.final_obs.dtype == jnp.float32
    assert ts.reward.shape == batch and ts.reward.dtype == jnp.float32
    assert ts.terminated.shape == batch and ts.terminated.dtype == jnp.bool_
    assert ts.truncated.shape == batch and ts.truncated.dtype == jnp.bool_


# ---------------------------------------------------------------- test-only environments


class _CountState(flax.struct.PyTreeNode):
    horizon: jax.Array
    t: jax.Array


class _RampEnv(Env):
    """Horizon h in {2, 3} drawn at reset (obs = [h, t]); reward at step t is t (1, 2, 3).

    Episode return h (h + 1) / 2: 3 for h = 2, 6 for h = 3; length h.
    """

    observation_space = Box(0.0, 3.0, (2,))
    action_space = Discrete(2)

    def reset(self, key):
        h = jnp.where(jax.random.bernoulli(key), 3, 2).astype(jnp.int32)
        state = _CountState(h, jnp.zeros((), jnp.int32))
        return state, initial_timestep(jnp.stack([h, 0]).astype(jnp.float32))

    def step(self, state, action, key):
        t = state.t + 1
        obs = jnp.stack([state.horizon, t]).astype(jnp.float32)
        return _CountState(state.horizon, t), transition_timestep(obs, t, t >= state.horizon, False)


class _GaussianObsEnv(Env):
    """Never ends; every observation is 5 + 3 N(0, I_3), drawn from the step key."""

    observation_space = Box(-np.inf, np.inf, (3,))
    action_space = Discrete(2)

    def reset(self, key):
        return (), initial_timestep(5.0 + 3.0 * jax.random.normal(key, (3,)))

    def step(self, state, action, key):
        return (), transition_timestep(5.0 + 3.0 * jax.random.normal(key, (3,)), 0.0, False, False)


class _EchoActionEnv(Env):
    """The observation is the action the env received; bounds low = (-2, 0), high = (2, 10)."""

    observation_space = Box(-np.inf, np.inf, (2,))
    action_space = Box(np.array([-2.0, 0.0]), np.array([2.0, 10.0]), (2,))

    def reset(self, key):
        return (), initial_timestep(jnp.zeros(2))

    def step(self, state, action, key):
        return (), transition_timestep(action.astype(jnp.float32), 0.0, False, False)


# ---------------------------------------------------------------- probes


def test_probe_envs_rewards_and_optimal_values():
    key = jax.random.key(0)
    keys = jax.random.split(key, 64)
    gamma = 0.9

    def one_step(env, action_fn):
        state, ts0 = jax.vmap(env.reset)(keys)
        state, ts = jax.vmap(env.step)(state, action_fn(ts0.obs), keys)
        _assert_protocol(env, ts, (64,))
        return ts0, ts

    _, ts = one_step(envs.ConstantRewardEnv(), lambda o: jnp.zeros(64, jnp.int32))
    np.testing.assert_array_equal(ts.reward, 1.0)
    assert bool(ts.terminated.all()) and not bool(ts.truncated.any())

    ts0, ts = one_step(envs.ObservationRewardEnv(), lambda o: jnp.zeros(64, jnp.int32))
    assert set(np.unique(ts0.obs).tolist()) == {-1.0, 1.0}  # both signs drawn
    np.testing.assert_array_equal(ts.reward, ts0.obs[:, 0])  # V(o) = o
    assert bool(ts.terminated.all())

    best = lambda o: (o[:, 0] > 0).astype(jnp.int32)  # noqa: E731
    _, ts = one_step(envs.ObservationActionEnv(), best)
    np.testing.assert_array_equal(ts.reward, 1.0)
    _, ts = one_step(envs.ObservationActionEnv(), lambda o: 1 - best(o))
    np.testing.assert_array_equal(ts.reward, 0.0)

    _, ts = one_step(envs.ActionRewardEnv(), lambda o: jnp.ones(64, jnp.int32))
    np.testing.assert_array_equal(ts.reward, 1.0)
    _, ts = one_step(envs.ActionRewardEnv(), lambda o: jnp.zeros(64, jnp.int32))
    np.testing.assert_array_equal(ts.reward, 0.0)

    cont = envs.ContinuousActionEnv()
    assert isinstance(cont.action_space, Box) and cont.action_size == 1
    _, ts = one_step(cont, lambda o: 0.5 * o)  # pi*(o) = o / 2 -> reward 0
    np.testing.assert_allclose(ts.reward, 0.0)
    _, ts = one_step(cont, lambda o: jnp.zeros((64, 1)))  # -(0 - (+-1/2))^2 = -1/4
    np.testing.assert_allclose(ts.reward, -0.25)

    # Two steps: rewards (0, 1), terminal only at the second; sum_t gamma^t r_t = gamma.
    env = envs.TwoStepEnv(continuous_actions=True)
    assert env.action_space.shape == (1,)
    state, ts0 = env.reset(key)
    state, ts1 = env.step(state, jnp.zeros(1), key)
    state, ts2 = env.step(state, jnp.zeros(1), key)
    assert (float(ts0.obs[0]), float(ts1.obs[0])) == (0.0, 1.0)
    assert (bool(ts1.terminated), bool(ts2.terminated)) == (False, True)
    np.testing.assert_allclose(float(ts1.reward) + gamma * float(ts2.reward), gamma)


# ---------------------------------------------------------------- wrappers


def test_autoreset_keeps_final_obs_and_vector_env_scans():
    env = envs.vectorize(envs.AutoReset(envs.TwoStepEnv()), 3)
    ts0, tss, _ = _jit_rollout(env, jnp.zeros((4, 3), jnp.int32), jax.random.key(1))
    _assert_protocol(env, ts0, (3,))
    _assert_protocol(env, tss, (4, 3))
    # obs after steps 1..4: 1, 0 (reset), 1, 0; final_obs: 1, 2 (terminal obs), 1, 2.
    np.testing.assert_array_equal(tss.obs[:, :, 0], [[1] * 3, [0] * 3, [1] * 3, [0] * 3])
    np.testing.assert_array_equal(tss.final_obs[:, :, 0], [[1] * 3, [2] * 3, [1] * 3, [2] * 3])
    np.testing.assert_array_equal(tss.terminated[:, 0], [False, True, False, True])
    assert not bool(tss.truncated.any())


def test_vector_env_uses_distinct_keys_per_env():
    env = envs.vectorize(envs.AutoReset(envs.ObservationRewardEnv()), 32)
    ts0, tss, _ = _jit_rollout(env, jnp.zeros((2, 32), jnp.int32), jax.random.key(2))
    for obs in (ts0.obs, tss.obs[0], tss.obs[1]):
        assert set(np.unique(obs).tolist()) == {-1.0, 1.0}
    assert not np.array_equal(tss.obs[0], tss.obs[1])  # fresh draws after every auto-reset


def test_cached_autoreset_restarts_from_first_initial_state():
    env = envs.vectorize(envs.CachedAutoReset(_RampEnv()), 16)
    ts0, tss, _ = _jit_rollout(env, jnp.zeros((9, 16), jnp.int32), jax.random.key(12))
    horizons = np.asarray(ts0.obs[:, 0])
    assert set(horizons.tolist()) == {2.0, 3.0}  # initial states differ across envs ...
    done = np.asarray(tss.done)
    np.testing.assert_array_equal(tss.final_obs[..., 0], np.broadcast_to(horizons, (9, 16)))  # ... not episodes
    np.testing.assert_array_equal(np.asarray(tss.obs)[done], np.broadcast_to(ts0.obs, (9, 16, 2))[done])
    np.testing.assert_array_equal(done.sum(0), 9 // horizons.astype(int))  # every h steps
    # wrap_for_training picks it for envs that declare an expensive reset.
    expensive = type("ExpensiveTwoStep", (envs.TwoStepEnv,), {"expensive_reset": True})()
    assert isinstance(envs.wrap_for_training(expensive, 2).env.env, envs.CachedAutoReset)
    assert isinstance(envs.wrap_for_training(envs.TwoStepEnv(), 2).env.env, envs.AutoReset)


def test_time_limit_truncates_without_terminating():
    env = envs.vectorize(envs.AutoReset(envs.TimeLimit(envs.TwoStepEnv(), 1)), 2)
    _, tss, _ = _jit_rollout(env, jnp.zeros((2, 2), jnp.int32), jax.random.key(3))
    assert bool(tss.truncated.all()) and not bool(tss.terminated.any())
    np.testing.assert_array_equal(tss.final_obs[..., 0], 1.0)  # bootstrap from V(obs = 1)
    np.testing.assert_array_equal(tss.obs[..., 0], 0.0)  # already reset
    # Limit equal to the horizon: both flags; terminated is what blocks the bootstrap.
    env = envs.vectorize(envs.AutoReset(envs.TimeLimit(envs.TwoStepEnv(), 2)), 2)
    _, tss, _ = _jit_rollout(env, jnp.zeros((2, 2), jnp.int32), jax.random.key(3))
    np.testing.assert_array_equal(tss.terminated[:, 0], [False, True])
    np.testing.assert_array_equal(tss.truncated[:, 0], [False, True])
    with pytest.raises(ValueError, match="max_steps"):
        envs.TimeLimit(envs.TwoStepEnv(), 0)


def test_episode_statistics_on_known_returns():
    env = envs.vectorize(envs.EpisodeStatistics(envs.AutoReset(_RampEnv())), 16)
    ts0, tss, state = _jit_rollout(env, jnp.zeros((12, 16), jnp.int32), jax.random.key(4))
    np.testing.assert_array_equal(ts0.info["episode_return"], 0.0)
    horizons = np.asarray(ts0.obs[:, 0]).astype(int)
    assert set(horizons.tolist()) == {2, 3}
    ret, length = np.asarray(tss.info["episode_return"]), np.asarray(tss.info["episode_length"])
    for i in range(16):
        h, done, expected_return = horizons[i], np.asarray(tss.done[:, i]), 0.0
        first_done = int(np.argmax(done))
        assert first_done == h - 1  # the first episode ends after h steps
        np.testing.assert_array_equal(ret[:first_done, i], 0.0)  # nothing finished yet
        for t in range(12):
            if done[t]:
                h_t = int(tss.final_obs[t, i, 0])  # this episode's horizon
                expected_return, expected_length = h_t * (h_t + 1) / 2, h_t  # 1 + 2 (+ 3)
                assert length[t, i] == expected_length
            if t >= first_done:
                assert ret[t, i] == expected_return  # persists until the next episode ends
    # Running counters are reset at done: the current episode's partial return is 1 + .. + t.
    t_now = np.asarray(state.env_state.t)
    np.testing.assert_array_equal(state.episode_length, t_now)
    np.testing.assert_array_equal(state.episode_return, t_now * (t_now + 1) / 2)


def test_observation_normalization_matches_numpy():
    base = envs.vectorize(envs.AutoReset(_GaussianObsEnv()), 8)
    norm = envs.NormalizeObservation(base)
    actions, key = jnp.zeros((10, 8), jnp.int32), jax.random.key(5)
    raw0, raw, _ = _jit_rollout(base, actions, key)
    ts0, tss, state = _jit_rollout(norm, actions, key)  # same keys -> same raw observations
    seen = np.concatenate([np.asarray(raw0.obs)[None], np.asarray(raw.obs)]).reshape(-1, 3)
    stats = state.obs_stats
    np.testing.assert_allclose(stats.mean, seen.mean(0), rtol=1e-5)
    np.testing.assert_allclose(stats.var, seen.var(0), rtol=1e-4)
    assert float(stats.count) == 88.0
    expected = (np.asarray(raw.obs[-1]) - seen.mean(0)) / np.sqrt(seen.var(0) + 1e-8)
    np.testing.assert_allclose(tss.obs[-1], expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(tss.final_obs[-1], expected, rtol=1e-4, atol=1e-5)
    first = np.asarray(raw0.obs)  # reset obs are normalised with the reset batch's statistics
    np.testing.assert_allclose(ts0.obs, (first - first.mean(0)) / np.sqrt(first.var(0) + 1e-8), rtol=1e-4)

    # Frozen statistics (evaluation): start from the training stats and never change them.
    frozen = envs.NormalizeObservation(base, update_stats=False)
    s, ts = frozen.reset_with_stats(key, stats)
    s, ts = frozen.step(s, actions[0], key)
    np.testing.assert_array_equal(s.obs_stats.mean, stats.mean)
    np.testing.assert_array_equal(s.obs_stats.count, stats.count)
    clipped = envs.NormalizeObservation(base, clip=0.5)
    _, ts = clipped.reset(key)
    assert float(jnp.abs(ts.obs).max()) == 0.5


def test_action_rescaling_and_clipping():
    env = envs.RescaleAction(_EchoActionEnv())
    assert isinstance(env.action_space, Box)
    np.testing.assert_array_equal(env.action_space.low, -1.0)
    state, _ = env.reset(jax.random.key(0))
    step = lambda a: np.asarray(env.step(state, jnp.asarray(a), jax.random.key(0))[1].obs)  # noqa: E731
    np.testing.assert_allclose(step([-1.0, -1.0]), [-2.0, 0.0])  # -1 -> low
    np.testing.assert_allclose(step([1.0, 1.0]), [2.0, 10.0])  # +1 -> high
    np.testing.assert_allclose(step([0.0, 0.5]), [0.0, 7.5])  # affine in between
    np.testing.assert_allclose(step([3.0, -7.0]), [2.0, 0.0])  # clipped to [-1, 1] first
    clip = envs.ClipAction(_EchoActionEnv())
    np.testing.assert_allclose(clip.step((), jnp.array([-9.0, 11.0]), jax.random.key(0))[1].obs, [-2.0, 10.0])
    with pytest.raises(ValueError, match="bounded Box"):
        envs.RescaleAction(envs.ActionRewardEnv())
    with pytest.raises(ValueError, match="bounded Box"):
        envs.RescaleAction(_GaussianObsEnv())


def test_wrap_for_training_stack():
    env = envs.wrap_for_training(envs.make("probe:continuous_action"), 4, normalize_observations=True)
    assert env.num_envs == 4 and env.action_space.shape == (1,) and env.unwrapped.__class__ is envs.ContinuousActionEnv
    ts0, tss, _ = _jit_rollout(env, jnp.zeros((3, 4, 1)), jax.random.key(6))
    _assert_protocol(env, tss, (3, 4))
    assert set(tss.info) == {"episode_return", "episode_length"}
    np.testing.assert_allclose(tss.info["episode_return"], -0.25)  # a = 0: -(0 -+ 1/2)^2
    with pytest.raises(ValueError, match="already vectorised"):
        envs.vectorize(env, 2)


# ---------------------------------------------------------------- registry and lazy imports


def test_make_rejects_unknown_names():
    with pytest.raises(ValueError, match="gymnax.*brax.*playground"):
        envs.make("CartPole-v1")
    with pytest.raises(ValueError, match="'probe', 'gymnax'"):
        envs.make("atari:Pong")
    with pytest.raises(ValueError, match="two_step"):
        envs.make("probe:three_step")
    assert isinstance(envs.make("probe:two_step"), envs.TwoStepEnv)
    assert envs.env_names("probe") == sorted(envs.PROBES)


@pytest.mark.parametrize(
    "name, modules, extra",
    [
        ("gymnax:CartPole-v1", ["gymnax"], "envs"),
        ("brax:ant", ["brax", "brax.envs"], "envs"),
        ("playground:CheetahRun", ["mujoco_playground"], "playground"),
    ],
)
def test_missing_backend_names_the_extra(monkeypatch, name, modules, extra):
    for module in modules:
        monkeypatch.setitem(sys.modules, module, None)  # makes `import module` raise ImportError
    with pytest.raises(ImportError, match=rf"pip install 'jaxrl_si\[{extra}\]'"):
        envs.make(name)


# ---------------------------------------------------------------- gymnax


def test_gymnax_cartpole_matches_raw_gymnax_step():
    pytest.importorskip("gymnax")
    env = envs.make("gymnax:CartPole-v1", params={"max_steps_in_episode": 15})
    assert env.observation_shape == (4,) and env.action_space == Discrete(2)
    raw, params = env.gymnax_env, env.params
    ours = envs.AutoReset(env)
    steps, key = 120, jax.random.key(7)
    actions = jax.random.bernoulli(jax.random.key(8), 0.7, (steps,)).astype(jnp.int32)  # drifts right

    @jax.jit
    def both(key):
        reset_key, step_key = jax.random.split(key)
        keys = jax.random.split(step_key, steps)
        _, raw_out = jax.lax.scan(
            lambda s, x: (lambda o: (o[1], (o[0], o[2], o[3], o[4], o[5]["final_observation"])))(
                raw.step(x[1], s, x[0], params)
            ),
            raw.reset(reset_key, params)[1],
            (actions, keys),
        )
        _, ts = jax.lax.scan(lambda s, x: ours.step(s, x[0], x[1]), ours.reset(reset_key)[0], (actions, keys))
        return raw_out, ts

    (obs, reward, terminated, truncated, final_obs), ts = both(key)
    _assert_protocol(env, ts, (steps,))
    # AutoReset splits the key exactly as gymnax's own auto-reset does: identical trajectories.
    np.testing.assert_array_equal(ts.obs, obs)
    np.testing.assert_array_equal(ts.final_obs, final_obs)
    np.testing.assert_array_equal(ts.reward, reward)
    np.testing.assert_array_equal(ts.terminated, terminated)
    np.testing.assert_array_equal(ts.truncated, truncated)
    # Both kinds of episode end happened (a fall on the limit's step sets both flags).
    assert bool((ts.terminated & ~ts.truncated).any()) and bool((ts.truncated & ~ts.terminated).any())


def test_gymnax_cartpole_500_step_limit_is_truncation():
    pytest.importorskip("gymnax")
    env = envs.AutoReset(envs.make("gymnax:CartPole-v1"))
    assert env.unwrapped.params.max_steps_in_episode == 500
    state, ts0 = env.reset(jax.random.key(0))
    state = state.replace(time=jnp.int32(499))  # one step before the limit, pole still upright
    new_state, ts = jax.jit(env.step)(state, jnp.int32(1), jax.random.key(1))
    assert bool(ts.truncated) and not bool(ts.terminated)
    assert int(new_state.time) == 0  # auto-reset
    assert not np.array_equal(ts.final_obs, ts.obs)  # the pre-reset observation is kept
    with pytest.raises(ValueError, match="max_steps_in_episode"):
        envs.make("gymnax:CartPole-v1", params={"max_steps": 5})
    with pytest.raises(ValueError, match="CartPole-v1"):
        envs.make("gymnax:CartPole-v9")


def test_make_is_safe_inside_a_trace():
    pytest.importorskip("gymnax")
    made = []

    @jax.jit
    def reset_obs(key):  # gymnax builds CartPole's observation space with jnp
        made.append(envs.make("gymnax:CartPole-v1"))
        return made[-1].reset(key)[1].obs

    assert reset_obs(jax.random.key(0)).shape == (4,)
    np.testing.assert_array_equal(made[0].observation_space.high[[1, 3]], np.finfo(np.float32).max)


def test_gymnax_minatar_protocol():
    pytest.importorskip("gymnax")
    single = envs.make("gymnax:Breakout-MinAtar")
    assert single.observation_shape == (10, 10, 4) and single.action_space == Discrete(3)
    env = envs.wrap_for_training(single, 2)
    ts0, tss, _ = _jit_rollout(env, jnp.ones((3, 2), jnp.int32), jax.random.key(9))
    _assert_protocol(env, ts0, (2,))
    _assert_protocol(env, tss, (3, 2))
    assert float(ts0.obs.sum()) > 0  # paddle, ball and bricks are on the grid


# ---------------------------------------------------------------- brax and playground


def test_brax_inverted_pendulum_protocol_and_time_limit():
    pytest.importorskip("brax")
    single = envs.make("brax:inverted_pendulum", episode_length=3)
    assert single.observation_shape == (4,) and single.action_space.shape == (1,)
    env = envs.wrap_for_training(single, 2)
    ts0, tss, _ = _jit_rollout(env, jnp.zeros((4, 2, 1)), jax.random.key(10))
    _assert_protocol(env, ts0, (2,))
    _assert_protocol(env, tss, (4, 2))
    # Balanced with zero force for 3 steps: the time limit truncates, nothing terminates.
    np.testing.assert_array_equal(tss.truncated[:, 0], [False, False, True, False])
    assert not bool(tss.terminated.any())
    np.testing.assert_array_equal(tss.info["episode_length"][2], 3)
    np.testing.assert_allclose(tss.info["episode_return"][2], 3.0)  # reward 1 per step


def test_playground_cartpole_balance_protocol():
    single = envs.make("playground:CartpoleBalance", episode_length=2)
    assert single.env.episode_length == 1000  # the config's, overridden by make
    env = envs.wrap_for_training(single, 2)
    ts0, tss, _ = _jit_rollout(env, jnp.zeros((3, 2, single.action_size)), jax.random.key(11))
    _assert_protocol(env, tss, (3, 2))
    np.testing.assert_array_equal(tss.truncated[:, 0], [False, True, False])
    assert not bool(tss.terminated.any())
