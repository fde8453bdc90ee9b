"""The HILP agent: bad input, goal prompting on a small maze, and the loop's exact resume."""

import dataclasses
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from trees import leaf_arrays, member

from jaxrl_si import envs, loop, sweep
from jaxrl_si.agents.hilp import HILP, HILPConfig, HILPHyperparams, sample_batch
from jaxrl_si.checkpoint import ConfigMismatchError
from jaxrl_si.data import rollout_episodes
from jaxrl_si.errors import ConfigError

TINY = {"env": "maze:umaze", "hidden_sizes": (64, 64), "latent_dim": 8, "batch_size": 256, "eval_episodes": 8, "eval_horizon": 60,
        "reward_samples": 500, "planning_states": 500, "num_neighbours": 10, "num_recursions": 0}


@pytest.fixture(scope="module")
def data():
    """Random-walk episodes on the U-maze, every task's reward in `features`."""
    env = envs.make("maze:umaze", episode_length=None)
    collect = jax.jit(lambda key: rollout_episodes(env, lambda obs: jnp.zeros(2), key, num_episodes=64, max_length=100, action_noise=1.0))
    return collect(jax.random.key(0))


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"representation": "pca"}, "representation"), ({"reward_features": "x"}, "reward_features"), ({"batch_size": 0}, "batch_size"),
     ({"steps_per_update": 3, "total_steps": 10}, "steps_per_update"), ({"trajectory_goal_fraction": 1.5}, "trajectory_goal_fraction")],
)
def test_bad_configs_are_errors_naming_the_field(kwargs, field):
    with pytest.raises(ConfigError, match=field):
        HILPConfig(**kwargs)
    with pytest.raises(ConfigError, match="unknown"):
        HILPConfig.from_dict({"latent_size": 3})


def test_data_that_does_not_fit_is_an_error_naming_it(data):
    with pytest.raises(ConfigError, match="observations"):
        HILP.build(HILPConfig(**TINY), data=data.replace(observation=data.observation[..., :1]))
    with pytest.raises(ConfigError, match="tasks"):
        HILP.build(HILPConfig(**TINY), data=data.replace(features=data.features[..., :0]))
    with pytest.raises(ConfigError, match="reward_samples"):
        HILP.build(HILPConfig(**{**TINY, "reward_samples": 4}), data=data)  # fewer samples than d = 8
    with pytest.raises(ConfigError, match="env with tasks"):
        HILP.build(HILPConfig(**{**TINY, "env": "gymnax:Pendulum-v1"}), data=data)


def test_goals_come_from_the_future_of_the_episode_or_anywhere(data):
    """Trajectory goals lie 1 + Geometric steps ahead in the same episode (capped at its end); the
    rest are dataset states; `reached` only where the goal is the state itself."""
    batch = jax.jit(lambda key: sample_batch(data, key, 4096, 1.0, 0.9))(jax.random.key(3))
    assert float(batch.reached.mean()) == 0.0  # a future goal is at least one step ahead
    gaps = np.linalg.norm(np.asarray(batch.goal - batch.observation), axis=-1)
    assert 0.5 < float(np.median(gaps)) < 3.0  # ~10 steps of a random walk at 0.5 cells per step
    mixed = jax.jit(lambda key: sample_batch(data, key, 4096, 0.0, 0.9))(jax.random.key(3))
    assert float(np.median(np.linalg.norm(np.asarray(mixed.goal - mixed.observation), axis=-1))) > float(np.median(gaps))


def test_goal_prompting_reaches_the_goal_far_more_often_than_random_latents(data):
    """3,000 gradient steps on 6,400 random-walk steps: the goal prompt reaches the U-maze's far
    end, 6 cells around the wall, in most episodes; random latents rarely do."""
    agent = HILP.build(HILPConfig(**TINY, total_steps=3000, steps_per_update=3000), data=data)
    state, metrics = jax.jit(agent.train)(HILPHyperparams(learning_rate=1e-3), jax.random.key(1))
    evaluate = jax.jit(lambda state, key: {p: agent.evaluate(HILPHyperparams(), state, key, p)["success"] for p in ("goal", "random")})
    success = evaluate(state, jax.random.key(2))
    goal = agent.env.goal_observations[:1]
    np.testing.assert_allclose(jnp.linalg.norm(agent.goal_prompt(state, data.observation[0, :1], goal), axis=-1), 1.0, rtol=1e-5)
    with pytest.raises(ConfigError, match="goal"):
        agent.goal_prompt(state, data.observation[0, :1], goal[:, :1])
    assert float(success["goal"]) >= 0.75, success
    assert float(success["random"]) <= 0.4, success
    assert float(metrics["loss/phi"][-1]) < 1.0


def test_under_the_loop_members_equal_their_runs_alone_and_resume_exactly(data, tmp_path):
    """Each of 2 vmapped members equals its run alone; resuming equals not stopping; a checkpoint
    of another latent size is refused."""
    config = HILPConfig(**{**TINY, "hidden_sizes": (16,), "batch_size": 32, "eval_episodes": 2, "eval_horizon": 5}, total_steps=20, steps_per_update=10)
    trainer = loop.Trainer(HILP.build(config, data=data), 1)
    hparams = sweep.member_hparams(HILPHyperparams(), [{"learning_rate": 1e-3}, {"expectile": 0.7}], seeds=1)
    keys = jax.random.split(jax.random.key(7), 2)
    whole = loop.run(trainer, hparams, keys, run_dir=tmp_path / "whole", async_checkpoints=False, max_to_keep=None)
    alone = jax.jit(trainer.agent.init)(member(hparams, 1), keys[1])
    update_alone = jax.jit(trainer.agent.update)  # one program for both updates
    for update in range(2):
        alone, row = update_alone(member(hparams, 1), alone)
        for metric in ("loss/phi", "loss/actor", "goal/success", "random/success", "phi/spearman", "episode/return"):
            np.testing.assert_allclose(whole.history[metric][1, update], row[metric], rtol=1e-4, atol=1e-5, err_msg=metric)
    shutil.copytree(tmp_path / "whole", tmp_path / "resumed")
    shutil.rmtree(tmp_path / "resumed" / "checkpoints" / "2")
    resumed = loop.run(trainer, hparams, keys, run_dir=tmp_path / "resumed", async_checkpoints=False, resume=True)
    assert resumed.resumed_from == 1
    for a, b in zip(leaf_arrays(whole.state), leaf_arrays(resumed.state), strict=True):
        np.testing.assert_array_equal(a, b)
    other = loop.Trainer(HILP.build(dataclasses.replace(config, latent_dim=4), data=data), 1)
    with pytest.raises(ConfigMismatchError, match="latent_dim"):  # refused before anything compiles
        loop.run(other, hparams, keys, run_dir=tmp_path / "resumed", async_checkpoints=False, resume=True)

