"""SPR: the replay buffer (frames once, stacks as views, priorities), the network's two conv lowerings
and noisy layers, a learning check on an image probe, the host-driven pieces, and bad input."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrl_si.agents.spr import SPR, SPRConfig, SPRHyperparams
from jaxrl_si.data.replay import (
    SequenceReplay,
    Step,
    importance_weights,
    replay_bytes,
    stacked_frames,
)
from jaxrl_si.envs.core import Box, Wrapper
from jaxrl_si.envs.probes import ObservationActionEnv
from jaxrl_si.errors import ConfigError
from jaxrl_si.nets.spr import Conv, NoisyDense


def test_stacked_frames_zero_the_frames_from_before_the_episode():
    frames = jnp.arange(1.0, 7.0).reshape(1, 6, 1, 1, 1)  # frame i holds i + 1
    dones = jnp.array([[False, True, False, False, True, False]])  # episodes: [0, 1], [2, 3, 4], [5]
    stacks = stacked_frames(frames, dones, (2, 3, 4, 5), stack=3)[0, :, 0, 0]  # [4 positions, 3 frames]
    np.testing.assert_array_equal(stacks, [[0, 0, 3], [0, 3, 4], [3, 4, 5], [0, 0, 6]])
    np.testing.assert_array_equal(stacked_frames(frames, dones, (1,), stack=1)[0, 0, 0, 0], [2])
    with pytest.raises(ValueError, match="positions"):
        stacked_frames(frames, dones, (1,), stack=3)


def _filled_replay(steps: int, capacity: int = 64, num_envs: int = 2):
    replay = SequenceReplay(capacity, num_envs, batch_size=256, sequence_length=4)
    state = replay.init(Step(jnp.zeros((1,), jnp.uint8), jnp.zeros((), jnp.int32), jnp.zeros(()), jnp.zeros((), bool)))
    add = jax.jit(replay.add, donate_argnums=0)
    for t in range(steps):  # env e's frame at time t is 10 t + e
        frames = jnp.array([[10 * t + e] for e in range(num_envs)], jnp.uint8)
        state = add(state, Step(frames, jnp.full((num_envs,), t), jnp.zeros((num_envs,)), jnp.zeros((num_envs,), bool)))
    return replay, state


def test_replay_samples_contiguous_windows_of_one_env_and_follows_priorities():
    replay, state = _filled_replay(20)
    sample = replay.sample(state, jax.random.key(0))
    frames = np.asarray(sample.steps.frame[..., 0], np.int64)  # [256, 4]
    np.testing.assert_array_equal(np.diff(frames, axis=1), 10)  # consecutive steps of the same env
    np.testing.assert_array_equal(np.diff(np.asarray(sample.steps.action), axis=1), 1)
    favourite = sample.indices[0]
    state = replay.set_priorities(state, sample.indices, jnp.where(sample.indices == favourite, 1e3, 1e-3), exponent=1.0)
    again = replay.sample(state, jax.random.key(1))
    assert np.mean(np.asarray(again.indices) == int(favourite)) > 0.9
    flat = replay.set_priorities(state, sample.indices, jnp.where(sample.indices == favourite, 1e3, 1e-3), exponent=0.0)
    assert np.mean(np.asarray(replay.sample(flat, jax.random.key(1)).indices) == int(favourite)) < 0.2  # α = 0: uniform


def test_importance_weights_are_normalised_by_the_largest():
    weights = importance_weights(jnp.array([0.5, 0.25, 0.125]), 4, beta=1.0)
    np.testing.assert_allclose(weights, [0.25, 0.5, 1.0])
    np.testing.assert_allclose(importance_weights(jnp.array([0.5, 0.25]), 4, beta=0.0), [1.0, 1.0])


def test_atari_frames_are_stored_once():
    capacity = 2_000
    replay = SequenceReplay(capacity, 1, batch_size=32, sequence_length=14)
    example = Step(jnp.zeros((84, 84, 1), jnp.uint8), jnp.zeros((), jnp.int32), jnp.zeros(()), jnp.zeros((), bool))
    state = jax.eval_shape(replay.init, example)
    raw_frames = capacity * 84 * 84
    assert raw_frames <= replay_bytes(state) < 1.01 * raw_frames  # not 4x (stacks) nor 15x (sequences)


@pytest.mark.parametrize(("kernel", "stride", "padding", "size"), [(8, 4, "VALID", 84), (4, 2, "VALID", 20), (3, 1, "SAME", 7)])
def test_the_patches_lowering_equals_xla_convolution(kernel, stride, padding, size):
    x = jax.random.normal(jax.random.key(0), (2, size, size, 3))
    xla, patches = (Conv(5, kernel, stride, padding, impl=impl) for impl in ("xla", "patches"))
    params = xla.init(jax.random.key(1), x)
    np.testing.assert_allclose(patches.apply(params, x), xla.apply(params, x), rtol=1e-4, atol=1e-4)
    grads = [jax.grad(lambda p, m=m: (m.apply(p, x) ** 2).sum())(params) for m in (xla, patches)]
    jax.tree.map(functools.partial(np.testing.assert_allclose, rtol=1e-3, atol=1e-3), *grads)


def test_noisy_dense_mean_noise_and_plain_forms():
    x = jnp.ones((3, 4))
    layer = NoisyDense(2, sigma0=0.5)
    params = layer.init({"params": jax.random.key(0), "noise": jax.random.key(1)}, x, noise=True)
    assert set(params["params"]) == {"kernel", "bias", "kernel_sigma", "bias_sigma"}
    mean = layer.apply(params, x, noise=False)
    np.testing.assert_allclose(mean, x @ params["params"]["kernel"] + params["params"]["bias"], rtol=1e-6)
    noisy = [layer.apply(params, x, noise=True, rngs={"noise": jax.random.key(k)}) for k in (2, 2, 3)]
    np.testing.assert_array_equal(noisy[0], noisy[1])
    assert not np.allclose(noisy[0], mean) and not np.allclose(noisy[0], noisy[2])
    np.testing.assert_allclose(noisy[0][0], noisy[0][1])  # one noise sample for the whole batch
    plain = NoisyDense(2, sigma0=0.0).init({"params": jax.random.key(0)}, x, noise=True)
    assert set(plain["params"]) == {"kernel", "bias"}


class ImageObservation(Wrapper):
    """The probe's ±1 observation as a 4x4 image with two channels: the sign, one-hot."""

    @property
    def observation_space(self) -> Box:
        return Box(0.0, 1.0, (4, 4, 2))

    def _image(self, ts):
        channels = jnp.stack([ts.obs[0] < 0, ts.obs[0] > 0]).astype(jnp.float32)
        return ts.replace(obs=jnp.broadcast_to(channels, (4, 4, 2)), final_obs=jnp.broadcast_to(channels, (4, 4, 2)))

    def reset(self, key):
        state, ts = self.env.reset(key)
        return state, self._image(ts)

    def step(self, state, action, key):
        state, ts = self.env.step(state, action, key)
        return state, self._image(ts)


PROBE = SPRConfig(
    env="", num_envs=8, total_env_steps=8 * 200, steps_per_update=20, learning_starts=168, updates_per_step=1,
    batch_size=32, hidden=32, n_step=3, spr_steps=2, shift_pad=1, epsilon_decay_steps=400, eval_envs=16, eval_steps=20,
)  # fmt: skip


@pytest.mark.parametrize("arm", ["spr", "no_spr_no_aug"])
def test_spr_learns_to_act_on_what_it_sees(arm):
    """Reward 1 iff the action matches the image's sign (random: 0.5): the evaluation policy gets it right."""
    config = PROBE if arm == "spr" else dataclasses.replace(PROBE, use_spr=False, augment=False)
    agent = SPR.build(config, base_env=ImageObservation(ObservationActionEnv()))
    _, metrics = jax.jit(agent.train)(SPRHyperparams(learning_rate=1e-3), jax.random.key(0))
    assert float(metrics["eval/return"][-1]) > 0.95, metrics["eval/return"]
    assert float(metrics["eval/return"][0]) < 0.8  # it was not right from the start
    if config.use_spr:
        np.testing.assert_array_equal(metrics["loss/spr"], 0.0)  # one-step episodes: every future latent is masked
    else:
        assert "loss/spr" not in metrics
    batched_steps = range(1, PROBE.total_env_steps // PROBE.num_envs + 1)  # learning follows the step that reaches the start
    assert float(metrics["learn/gradient_steps"].sum()) == sum(PROBE.num_envs * k >= PROBE.learning_starts for k in batched_steps)


def test_host_driven_pieces_observe_learn_and_act():
    config = SPRConfig(env="", num_envs=2, frame_stack=4, n_step=3, spr_steps=2, batch_size=4, hidden=16, capacity=64,
                       encoder="minatar", shift_pad=1)  # fmt: skip
    agent = SPR.build(config, spaces=((8, 8, 1), 3))
    hparams = SPRHyperparams()
    state = agent.init(hparams, jax.random.key(0))
    observe = jax.jit(agent.observe, donate_argnums=0)
    frames = jax.random.randint(jax.random.key(1), (12, 2, 8, 8, 1), 0, 255).astype(jnp.uint8)
    for t in range(12):
        state = observe(state, frames[t], jnp.full((2,), t % 3), jnp.ones((2,)), jnp.full((2,), t == 5))
    assert int(state.env_steps) == 24
    with pytest.raises(ValueError, match=r"frames must have shape \(2, 8, 8, 1\), got \(2, 8, 4, 1\)"):
        agent.observe(state, frames[0][:, :, :4], jnp.zeros((2,)), jnp.zeros((2,)), jnp.zeros((2,), bool))
    state, metrics = jax.jit(agent.learn)(hparams, state)
    assert int(state.grad_steps) == config.updates_per_step and all(np.isfinite(float(v)) for v in metrics.values())
    obs = jax.random.randint(jax.random.key(3), (64, 8, 8, 4), 0, 255).astype(jnp.uint8)
    greedy = [agent.act(hparams, state.params, obs, jax.random.key(k), epsilon=0.0, noise=False) for k in (4, 5)]
    assert greedy[0].shape == (64,) and greedy[0].dtype == jnp.int32 and set(np.asarray(greedy[0])) <= {0, 1, 2}
    np.testing.assert_array_equal(*greedy)  # acting neither augments nor, without noise, draws anything
    noisy = [agent.act(hparams, state.params, obs, jax.random.key(k), epsilon=0.0, noise=True) for k in (4, 5)]
    assert not np.array_equal(*noisy)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: SPRConfig.from_dict({"n_steps": 3}), "unknown SPRConfig keys"),
        (lambda: SPRConfig(conv_impl="cudnn"), "conv_impl"),
        (lambda: SPRConfig(total_env_steps=10, steps_per_update=100), "less than one update"),
        (lambda: SPR.build(SPRConfig(frame_stack=4)), "frame_stack must be 1"),
        (lambda: SPR.build(SPRConfig(env="gymnax:CartPole-v1")), r"\[H, W, C\] observations"),
        (lambda: SPR.build(SPRConfig(env="gymnax:Breakout-MinAtarr")), "unknown gymnax environment"),
    ],
)
def test_bad_configs_are_errors_naming_the_problem(build, message):
    with pytest.raises(ConfigError, match=message):
        build()
