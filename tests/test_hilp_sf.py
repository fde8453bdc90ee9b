"""HILP's zero-shot agent (successor features + TD3-style actor) on the point maze: its pieces by hand,
bad input, a learning check, and the loop's exact resume."""

import math
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from trees import leaf_arrays, member

from jaxrl_si import envs, loop, sweep
from jaxrl_si.agents.hilp_sf import HILPSF, HILPSFConfig, HILPSFHyperparams
from jaxrl_si.data.explore import random_episodes
from jaxrl_si.errors import ConfigError

TINY = {"env": "maze:umaze", "latent_dim": 4, "phi_hidden_sizes": (32, 32), "hidden_sizes": (64, 64), "batch_size": 128,
        "reward_samples": 500, "eval_episodes": 8, "eval_horizon": 40}


@pytest.fixture(scope="module")
def data():
    env = envs.make("maze:umaze", episode_length=None)
    return jax.jit(lambda key: random_episodes(env, key, num_episodes=64, max_length=100, action_repeat=4))(jax.random.key(0))


def test_bad_input_is_an_error_naming_it(data):
    with pytest.raises(ConfigError, match="feature_type"):
        HILPSFConfig(feature_type="concat")
    with pytest.raises(ConfigError, match="mix_ratio"):
        HILPSFConfig(mix_ratio=2.0)
    with pytest.raises(ConfigError, match="features"):
        HILPSF.build(HILPSFConfig(**TINY), data=data.replace(features=data.features[..., :0]))
    with pytest.raises(ConfigError, match="observations"):
        HILPSF.build(HILPSFConfig(**TINY), data=data.replace(observation=data.observation[..., :1]))
    with pytest.raises(ConfigError, match="reward_samples"):
        HILPSF.build(HILPSFConfig(**{**TINY, "reward_samples": 2}), data=data)


def test_training_latents_lie_on_the_sqrt_d_sphere_and_mix_transformed_features(data):
    """Every latent has norm √d; with mix_ratio 1 each is √d · normalise(Σ⁻¹ f) for a feature row
    f of the batch (Σ = E[f fᵀ]), the code's `inv_cov` latents; with 0 they are uniform."""
    agent = HILPSF.build(HILPSFConfig(**TINY, mix_ratio=1.0), data=data)
    key_a, key_b = jax.random.split(jax.random.key(0))
    features = jax.random.normal(key_a, (8, 4)) @ jnp.array([[3.0, 0.5, 0, 0], [0, 1, 0, 0], [0, 0, 0.3, 0.1], [0, 0, 0, 1]])
    latents = agent.training_latents(key_b, features)
    np.testing.assert_allclose(jnp.linalg.norm(latents, axis=-1), math.sqrt(4), rtol=1e-5)
    back = latents @ (features.T @ features / features.shape[0])  # Σ z ∝ the feature row it came from
    unit = lambda x: x / jnp.linalg.norm(x, axis=-1, keepdims=True)  # noqa: E731
    np.testing.assert_allclose(jnp.max(unit(back) @ unit(features).T, axis=1), 1.0, atol=1e-3)
    uniform = HILPSF.build(HILPSFConfig(**TINY, mix_ratio=0.0), data=data).training_latents(key_b, features)
    unmixed = HILPSF.build(HILPSFConfig(**TINY, mix_ratio=0.0), data=data).training_latents(key_b, 2.0 * features + 1.0)
    np.testing.assert_array_equal(uniform, unmixed)  # uniform latents ignore the features


def test_successor_features_learn_and_reward_prompts_beat_random_latents(data):
    """4,000 steps on 6,400 random steps of the U-maze: ψ's TD loss falls, and prompting each
    "reach the region" task with its regressed z earns more reward than random z."""
    agent = HILPSF.build(HILPSFConfig(**TINY, total_steps=4000, steps_per_update=1000), data=data)
    hparams = HILPSFHyperparams(learning_rate=1e-3, phi_learning_rate=1e-3, reward_ridge=0.1)
    _, metrics = jax.jit(agent.train)(hparams, jax.random.key(1))
    assert np.all(np.isfinite(metrics["loss/sf"]))
    assert float(metrics["episode/return"][-1]) > float(metrics["random/return"][-1]) + 2.0, (metrics["episode/return"], metrics["random/return"])


def test_under_the_loop_members_equal_their_runs_alone_and_resume_exactly(data, tmp_path):
    config = HILPSFConfig(**{**TINY, "hidden_sizes": (16, 16), "phi_hidden_sizes": (16, 16), "batch_size": 32, "eval_episodes": 2, "eval_horizon": 5},
                          total_steps=20, steps_per_update=10)
    trainer = loop.Trainer(HILPSF.build(config, data=data), 1)
    hparams = sweep.member_hparams(HILPSFHyperparams(), [{"learning_rate": 1e-3}, {"discount": 0.9}], seeds=1)
    keys = jax.random.split(jax.random.key(7), 2)
    whole = loop.run(trainer, hparams, keys, run_dir=tmp_path / "whole", async_checkpoints=False, max_to_keep=None)
    second = member(hparams, 1)
    alone = jax.jit(trainer.agent.init)(second, keys[1])
    update_alone = jax.jit(trainer.agent.update)  # one program for both updates
    for update in range(2):
        alone, row = update_alone(second, alone)
        for metric in ("loss/phi", "loss/sf", "loss/actor", "episode/return"):
            np.testing.assert_allclose(whole.history[metric][1, update], row[metric], rtol=1e-4, atol=1e-5, err_msg=metric)
    shutil.copytree(tmp_path / "whole", tmp_path / "resumed")
    shutil.rmtree(tmp_path / "resumed" / "checkpoints" / "2")
    resumed = loop.run(trainer, hparams, keys, run_dir=tmp_path / "resumed", async_checkpoints=False, resume=True)
    assert resumed.resumed_from == 1
    for a, b in zip(leaf_arrays(whole.state), leaf_arrays(resumed.state), strict=True):
        np.testing.assert_array_equal(a, b)
