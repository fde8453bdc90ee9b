r"""Unlabelled exploratory datasets, as ExORL makes them, from MuJoCo Playground's DM Control suite.

HILP (Park, Kreiman & Levine 2024, arXiv 2402.15567) learns from ExORL (Yarats et al. 2022,
arXiv 2201.13425): transitions of an exploration run on DM Control, stored without rewards and
relabelled per task only to evaluate. ExORL's files cannot be downloaded here, so this module
makes our own, each dataset ONE jitted program per chunk:

- `random`: uniform actions in [−1, 1]^A, each held for `action_repeat` env steps (action
  *persistence*: every env step is a dataset step; a held action drifts further than white
  noise, whose pushes cancel out). Works on any `envs.Env` with a bounded `Box` action space.
- `rnd`: Random Network Distillation (Burda et al. 2018, arXiv 1810.12894), ExORL's main
  explorer: intrinsic reward = error of a trained predictor against a fixed random network,
  maximised by the project's PPO (`PPO.rollout`, relabel, `PPO.learn`, as `preference_ppo`).
  The data is every episode the exploring policy played while it learned (ExORL's replay
  buffer), `Episodes.policy[e]` the round it was played in.

A *domain* is a set of Playground tasks with the same physics, observation and reset
(`DOMAIN_TASKS`); `TaskRewards` evaluates every task's reward on the state a step reached, so
`Episodes.features[e, t, k]` is task k's reward r_k(s_t, a_t, s_{t+1}), exactly what task k's
own `step` returns from that state and action (tested). `Episodes.reward` is 0: the data is
unlabelled (`features` is for evaluation only); `oracle_advantage` is 0; there are no
segments or pairs (`segment_length` 1). `DatasetMetadata.extra["coverage"]` is the fraction of a
`coverage_bins`² grid over two observation dimensions that the data visits, to compare methods.

    data, metadata = generate_exploratory(ExploreConfig(env="playground:WalkerRun", method="rnd"))
    tfds_io.write_dataset(directory, data, metadata)
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, Bool, Float, PRNGKeyArray

from jaxrl_si import envs, nets
from jaxrl_si.agents.ppo import PPO, PPOConfig, PPOHyperparams, PPOState
from jaxrl_si.data.offline import DatasetError, Episodes, OfflineData, Pairs, Segments
from jaxrl_si.data.tfds_io import DatasetMetadata, write_dataset
from jaxrl_si.envs.core import import_backend
from jaxrl_si.errors import ConfigError, check_known_keys

METHODS = ("random", "rnd")

# Playground tasks sharing one model, observation and reset (checked in playground 0.2.0's
# sources; no quadruped there). Cartpole's Balance and Swingup differ only in reset (their
# rewards are the same functions): one domain, reset by the config's task. FingerSpin has
# another model (hinge damping) and observation than FingerTurn*, and TurnEasy / TurnHard
# observe the distance to targets of different radii: three domains of one task each.
DOMAIN_TASKS: dict[str, tuple[str, ...]] = {
    "acrobot": ("AcrobotSwingup", "AcrobotSwingupSparse"),
    "ball_in_cup": ("BallInCup",),
    "cartpole": ("CartpoleBalance", "CartpoleBalanceSparse", "CartpoleSwingup", "CartpoleSwingupSparse"),
    "cheetah": ("CheetahRun",),
    "finger_spin": ("FingerSpin",),
    "finger_turn_easy": ("FingerTurnEasy",),
    "finger_turn_hard": ("FingerTurnHard",),
    "fish": ("FishSwim",),
    "hopper": ("HopperStand", "HopperHop"),
    "humanoid": ("HumanoidStand", "HumanoidWalk", "HumanoidRun"),
    "pendulum": ("PendulumSwingup",),
    "point_mass": ("PointMass",),
    "reacher": ("ReacherEasy", "ReacherHard"),  # the target's radius differs; contacts are off
    "swimmer": ("SwimmerSwimmer6",),
    "walker": ("WalkerStand", "WalkerWalk", "WalkerRun"),
}
# Observation dimensions and bounds of the coverage grid where known: the point mass's (x, y).
_COVERAGE = {"point_mass": ((0, 1), ((-0.3, 0.3), (-0.3, 0.3)))}


def domain_of(task: str) -> str:
    """The domain whose `DOMAIN_TASKS` lists `task` (a Playground name), or `ConfigError`."""
    for domain, tasks in DOMAIN_TASKS.items():
        if task in tasks:
            return domain
    raise ConfigError(f"{task!r} is in no DM Control domain; known tasks: {sorted(t for ts in DOMAIN_TASKS.values() for t in ts)}")


class TaskRewards:
    """`(state, action, next_state) -> [K]`: every task's reward for a step of the domain's env.

    Playground's DM Control envs compute the reward in `step` as `_get_reward(next_data,
    action, state.info, state.metrics)` from the data the step reached (the metrics dict is
    written into, never read); calling each task env's `_get_reward` on the domain env's states
    is therefore the reward that task's own `step` returns, at no extra physics. For
    `envs.RewardFeatures` wrapped directly around the `PlaygroundEnv` (env-unit actions).
    """

    def __init__(self, domain: str):
        if domain not in DOMAIN_TASKS:
            raise ConfigError(f"unknown DM Control domain {domain!r}; choose one of {sorted(DOMAIN_TASKS)}")
        registry = import_backend("mujoco_playground", backend="MuJoCo Playground", extra="playground").registry
        self.domain, self.names = domain, DOMAIN_TASKS[domain]
        with jax.ensure_compile_time_eval():
            self.task_envs = tuple(registry.load(name, config_overrides={"impl": "jax"}) for name in self.names)

    def __call__(self, state, action: Float[Array, " A"], next_state) -> Float[Array, " K"]:
        rewards = [env._get_reward(next_state.data, action, state.info, dict(state.metrics)) for env in self.task_envs]
        return jnp.stack([jnp.asarray(r, jnp.float32) for r in rewards])


def domain_env(task: str, *, episode_length: int | None = None) -> envs.Env:
    """`TimeLimit(RewardFeatures(PlaygroundEnv(task), TaskRewards(domain)))`: the task's physics and
    reset, `info['features']` every task's reward of the domain; no auto-reset."""
    rewards = TaskRewards(domain_of(task))
    base = envs.PlaygroundEnv(task)
    featured = envs.RewardFeatures(base, rewards, len(rewards.names))
    return envs.TimeLimit(featured, base.episode_length if episode_length is None else episode_length)


def _check_positive_int(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ConfigError(f"{name} must be a positive int, got {value!r}.")


# ---------------------------------------------------------------- episodes from steps


class _Steps(flax.struct.PyTreeNode):
    """Steps `[E, T, ...]` (or `[T, N, ...]` before cutting into episodes)."""

    observation: Array  # s_t, acted on
    action: Array  # a_t in [−1, 1]
    reward: Array  # r_t of the env (its task's)
    terminated: Array
    done: Array  # terminated | truncated
    features: Array  # [.., K] every task's reward (RewardFeatures), K = 0 without


def _episodes(steps: _Steps, policy: Array) -> Episodes:
    """`Episodes` from `[E, T]` steps that each begin an episode; steps after an episode's end are padding."""
    done = steps.done
    alive = (jnp.cumsum(done, axis=1) - done) == 0  # no done before t
    last_step = jnp.arange(done.shape[1]) == done.shape[1] - 1
    real = lambda x: jnp.where(alive.reshape(alive.shape + (1,) * (x.ndim - 2)), x, jnp.zeros((), x.dtype))
    zeros = jnp.zeros(done.shape, jnp.float32)
    return Episodes(
        observation=real(steps.observation.astype(jnp.float32)),
        action=real(steps.action.astype(jnp.float32)),
        reward=real(steps.reward.astype(jnp.float32)),
        discount=real(1.0 - steps.terminated.astype(jnp.float32)),
        is_first=alive & (jnp.arange(done.shape[1]) == 0),
        is_last=alive & (done | last_step),
        is_terminal=alive & steps.terminated,
        features=real(steps.features.astype(jnp.float32)),
        oracle_advantage=zeros,
        length=alive.sum(-1).astype(jnp.int32),
        policy=jnp.broadcast_to(jnp.asarray(policy, jnp.int32), done.shape[:1]),
    )


# ---------------------------------------------------------------- random actions


def random_episodes(
    env: envs.Env, key: PRNGKeyArray, *, num_episodes: int, max_length: int, action_repeat: int = 1, policy_index: int | Array = 0
) -> Episodes:
    """`num_episodes` episodes of uniform random actions, each held for `action_repeat` steps.

    a_t = u_⌊t / k⌋, u_j ~ U[−1, 1]^A i.i.d., k = `action_repeat`; actions are in [−1, 1] and
    rescaled to `env`'s bounded `Box` (`envs.RescaleAction`). Pure and jittable (`env` and the
    counts static): `num_episodes` vmapped copies, each reset once, one `lax.scan` of
    `max_length` steps; an episode ends at its first terminated or truncated step or after
    `max_length` steps, later steps are padding. `features` is `info['features']` (`[E, T, 0]`
    without). Shapes as in `Episodes`, E = `num_episodes`, T = `max_length`.
    """
    space = env.action_space
    if not isinstance(space, envs.Box) or not space.bounded:
        raise ConfigError(f"random exploration needs a bounded Box action space, got {space!r}")
    acting = envs.RescaleAction(env, clip=True)
    one = functools.partial(_random_episode, acting, max_length, action_repeat)
    return _episodes(jax.vmap(one)(jax.random.split(key, num_episodes)), policy_index)


def _random_episode(env: envs.Env, max_length: int, action_repeat: int, key: PRNGKeyArray) -> _Steps:
    key_reset, key_actions, key_steps = jax.random.split(key, 3)
    env_state, ts = env.reset(key_reset)
    held = jax.random.uniform(key_actions, (-(-max_length // action_repeat), *env.action_space.shape), minval=-1.0, maxval=1.0)
    actions = jnp.repeat(held, action_repeat, axis=0)[:max_length]

    def step(carry, xs):
        env_state, obs = carry
        action, key = xs
        env_state, ts = env.step(env_state, action, key)
        features = ts.info.get("features", jnp.zeros((0,), jnp.float32))
        return (env_state, ts.obs), _Steps(obs, action, ts.reward, ts.terminated, ts.done, features)

    return jax.lax.scan(step, (env_state, ts.obs), (actions, jax.random.split(key_steps, max_length)))[1]


# ---------------------------------------------------------------- RND: the math


def rnd_prediction_error(predicted: Float[Array, "*B F"], target: Float[Array, "*B F"]) -> Float[Array, "*B"]:
    r"""The intrinsic reward before normalisation: e = mean_f (f̂(x)_f − f(x)_f)².

    Burda et al. 2018, Sec. 2.2: ‖f̂(x; θ) − f(x)‖², as the official code, the mean over the
    F embedding features rather than the sum (a constant factor F). x is s_{t+1}, normalised.

    >>> float(rnd_prediction_error(jnp.array([1.0, 3.0]), jnp.array([0.0, 0.0])))
    5.0
    """
    if predicted.shape != target.shape:
        raise ValueError(f"`predicted` {predicted.shape} and `target` {target.shape} must have the same shape")
    return jnp.mean(jnp.square(predicted - target), axis=-1)


def discounted_returns(r_t: Float[Array, "T N"], initial: Float[Array, " N"], *, gamma: float | Array) -> tuple[Float[Array, "T N"], Float[Array, " N"]]:
    r"""The running discounted sums R_t = γ R_{t−1} + r_t per env, across episode ends.

    The "reward forward filter" of Burda et al. (Sec. 2.4 and official code): intrinsic
    returns are non-episodic, so the sum is never cut. Returns `(R [T, N], R_{T−1} [N])`.

    >>> R, last = discounted_returns(jnp.ones((3, 1)), jnp.zeros(1), gamma=0.5)
    >>> R[:, 0].tolist(), last.tolist()
    ([1.0, 1.5, 1.75], [1.75])
    """
    def step(previous, r):
        current = gamma * previous + r
        return current, current

    last, returns = jax.lax.scan(step, initial, r_t)
    return returns, last


def normalized_intrinsic_reward(error_t: Float[Array, "*B"], return_stats: envs.RunningMeanStd, *, epsilon: float = 1e-8) -> Float[Array, "*B"]:
    r"""r^i_t = e_t / sqrt(Var[R^i] + ε): "dividing [the intrinsic reward] by a running estimate of
    the standard deviations of the intrinsic returns" (Burda et al. 2018, Sec. 2.4)."""
    return error_t / jnp.sqrt(return_stats.var + epsilon)


def normalized_rnd_input(obs: Float[Array, "*B D"], obs_stats: envs.RunningMeanStd, *, clip: float = 5.0) -> Float[Array, "*B D"]:
    r"""x = clip((s − μ) / σ, −5, 5), running statistics of s (Burda et al. 2018, Sec. 2.4)."""
    return obs_stats.normalize(obs, clip=clip)


def fit_predictor(
    predictor: nn.Module, optimizer: optax.GradientTransformation, params, opt_state, x: Float[Array, "B D"], y: Float[Array, "B F"],
    key: PRNGKeyArray, *, steps: int, batch_size: int,
) -> tuple[Any, Any, Float[Array, " steps"]]:
    """`steps` optimiser steps on E[rnd_prediction_error(f̂(x), y)] over random minibatches of `batch_size` rows.

    `y = f(x)`, the fixed target's embedding. Returns the new params, optimiser state and each
    step's minibatch loss (before that step).
    """
    def loss(params, rows):
        return rnd_prediction_error(predictor.apply(params, x[rows]), y[rows]).mean()

    def step(carry, key):
        params, opt_state = carry
        rows = jax.random.randint(key, (batch_size,), 0, x.shape[0])
        value, grads = jax.value_and_grad(loss)(params, rows)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), value

    (params, opt_state), losses = jax.lax.scan(step, (params, opt_state), jax.random.split(key, steps))
    return params, opt_state, losses


# ---------------------------------------------------------------- RND: the explorer


@dataclasses.dataclass(frozen=True)
class RNDConfig:
    """RND's exploring agent: PPO on the normalised intrinsic reward alone (Burda et al. 2018).

    Departures from the paper, for CPU-sized continuous control: one value head on the
    intrinsic reward (no extrinsic reward, so no second head), with PPO's episodic GAE and
    bootstrap at time limits while the reward normaliser's returns run across episodes;
    PPO's raw observations (stored as they are); the predictor trained on random minibatches
    of each rollout instead of a fixed fraction of PPO's.
    """

    num_envs: int = 16  # PPO's parallel envs
    rollout_length: int = 100  # steps per env per PPO update; a round is lcm(this, episode_length) steps
    num_epochs: int = 4
    num_minibatches: int = 4
    hidden_sizes: tuple[int, ...] = (256, 256)  # actor and critic
    learning_rate: float = 3e-4  # PPO's Adam step size (constant)
    gamma: float = 0.99  # PPO's discount and the intrinsic returns' (Burda's γ_I = 0.99)
    gae_lambda: float = 0.95
    ent_coef: float = 0.01
    rnd_hidden_sizes: tuple[int, ...] = (256, 256)  # target f and predictor f̂ MLPs (ReLU)
    embedding_size: int = 64  # F, the output of f and f̂
    predictor_learning_rate: float = 1e-4  # Burda et al.'s Adam step size
    predictor_steps: int = 16  # predictor Adam steps per PPO update
    predictor_batch_size: int = 256
    obs_clip: float = 5.0  # normalised inputs of f and f̂ are clipped to [−clip, clip]
    cache_initial_state: bool = False  # True: episodes restart from each env's first initial state (CheetahRun's reset settles 200 physics steps)

    def __post_init__(self):
        for name in ("hidden_sizes", "rnd_hidden_sizes"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        for name in ("num_envs", "rollout_length", "num_epochs", "num_minibatches", "embedding_size", "predictor_steps", "predictor_batch_size"):
            _check_positive_int(f"RNDConfig.{name}", getattr(self, name))
        if (self.num_envs * self.rollout_length) % self.num_minibatches:
            raise ConfigError(f"RNDConfig.num_minibatches={self.num_minibatches} must divide num_envs * rollout_length = {self.num_envs * self.rollout_length}.")
        for name, low, high in (("learning_rate", 0, math.inf), ("predictor_learning_rate", 0, math.inf), ("obs_clip", 0, math.inf), ("gamma", 0, 1), ("gae_lambda", 0, 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not low < value <= high:
                raise ConfigError(f"RNDConfig.{name} must be a number in ({low}, {high}], got {value!r}.")
        if isinstance(self.ent_coef, bool) or not isinstance(self.ent_coef, (int, float)) or not self.ent_coef >= 0:
            raise ConfigError(f"RNDConfig.ent_coef must be a number >= 0, got {self.ent_coef!r}.")


class RNDState(flax.struct.PyTreeNode):
    ppo: PPOState
    target_params: Any  # f, fixed at its random initialisation
    predictor_params: Any  # f̂
    predictor_opt_state: Any
    obs_stats: envs.RunningMeanStd  # of s_{t+1}, for the inputs of f and f̂
    return_stats: envs.RunningMeanStd  # of the intrinsic returns, for the reward's scale
    intrinsic_return: Float[Array, " N"]  # the running non-episodic return per env
    key: PRNGKeyArray


@dataclasses.dataclass(frozen=True, eq=False)
class RNDExplorer:
    """The static parts: PPO on the env, the target and predictor networks, the round's sizes.

    One `update` is PPO's: `rollout`, rewards replaced by RND's, `learn`; then the predictor
    fits the rollout. A *round* is `updates_per_round` updates, lcm(rollout_length,
    episode_length) steps, which hold `episodes_per_round` whole episodes when every episode
    lasts `episode_length` steps (the envs start together and nothing terminates).
    """

    config: RNDConfig
    ppo: PPO
    target: nets.MLP
    predictor: nets.MLP
    episode_length: int

    @classmethod
    def build(cls, config: RNDConfig, base_env: envs.Env, *, episode_length: int, num_rounds: int) -> RNDExplorer:
        """PPO on `base_env` (no auto-reset, with its time limit) for `num_rounds` rounds."""
        round_length = math.lcm(config.rollout_length, episode_length)
        ppo_config = PPOConfig(
            env=repr(base_env), num_envs=config.num_envs, rollout_length=config.rollout_length, num_epochs=config.num_epochs,
            num_minibatches=config.num_minibatches, hidden_sizes=config.hidden_sizes, anneal_learning_rate=False,
            total_env_steps=num_rounds * round_length * config.num_envs,
        )
        ppo = PPO.build(ppo_config, base_env=base_env)
        if ppo.env.discrete_actions:
            raise ConfigError("ExploreConfig.env: RND exploration here needs continuous actions.")
        with jax.ensure_compile_time_eval():  # `build` chose cached resets from `expensive_reset`; the config decides
            env = envs.wrap_for_training(base_env, config.num_envs, cache_initial_state=config.cache_initial_state)
        mlp = functools.partial(nets.MLP, config.rnd_hidden_sizes, config.embedding_size, activation="relu")
        return cls(config, dataclasses.replace(ppo, env=env), mlp(), mlp(), episode_length)

    @property
    def hparams(self) -> PPOHyperparams:
        c = self.config
        return PPOHyperparams(learning_rate=c.learning_rate, gamma=c.gamma, gae_lambda=c.gae_lambda, ent_coef=c.ent_coef)

    @property
    def updates_per_round(self) -> int:
        return math.lcm(self.config.rollout_length, self.episode_length) // self.config.rollout_length

    @property
    def episodes_per_round(self) -> int:
        return self.updates_per_round * self.config.rollout_length // self.episode_length * self.config.num_envs

    @property
    def env_steps_per_round(self) -> int:
        return self.episodes_per_round * self.episode_length

    def init(self, key: PRNGKeyArray) -> RNDState:
        key_ppo, key_target, key_predictor, key = jax.random.split(key, 4)
        ppo_state = self.ppo.init(self.hparams, key_ppo)
        x = self._flat(ppo_state.obs)
        predictor_params = self.predictor.init(key_predictor, x)
        return RNDState(
            ppo=ppo_state,
            target_params=self.target.init(key_target, x),
            predictor_params=predictor_params,
            predictor_opt_state=self._optimizer.init(predictor_params),
            obs_stats=envs.RunningMeanStd.zeros(x.shape[-1:]),
            return_stats=envs.RunningMeanStd.zeros(()),
            intrinsic_return=jnp.zeros((self.config.num_envs,), jnp.float32),
            key=key,
        )

    def update(self, state: RNDState) -> tuple[RNDState, _Steps, dict[str, Array]]:
        """One PPO update on RND's reward; the rollout's steps `[T, N]` for the dataset."""
        c = self.config
        rollout = self.ppo.rollout(state.ppo)
        traj = rollout.transitions
        next_obs = self._flat(traj.final_obs)  # s_{t+1} before any reset
        obs_stats = state.obs_stats.update(next_obs)
        x = normalized_rnd_input(next_obs, obs_stats, clip=c.obs_clip)
        y = self.target.apply(state.target_params, x)
        error = rnd_prediction_error(self.predictor.apply(state.predictor_params, x), y)  # [T, N]
        returns, intrinsic_return = discounted_returns(error, state.intrinsic_return, gamma=c.gamma)
        return_stats = state.return_stats.update(returns)
        reward = normalized_intrinsic_reward(error, return_stats)
        ppo_state, metrics = self.ppo.learn(self.hparams, state.ppo, rollout.replace(transitions=traj.replace(reward=reward)))
        key, key_fit = jax.random.split(state.key)
        params, opt_state, losses = fit_predictor(
            self.predictor, self._optimizer, state.predictor_params, state.predictor_opt_state,
            x.reshape(-1, x.shape[-1]), y.reshape(-1, y.shape[-1]), key_fit, steps=c.predictor_steps, batch_size=c.predictor_batch_size,
        )
        metrics = {**metrics, "rnd/prediction_error": error.mean(), "rnd/intrinsic_reward": reward.mean(), "rnd/predictor_loss": losses.mean()}
        features = traj.info.get("features", jnp.zeros(traj.reward.shape + (0,), jnp.float32))
        done = traj.terminated | traj.truncated
        steps = _Steps(traj.obs, jnp.clip(traj.action, -1.0, 1.0), traj.reward, traj.terminated, done, features)
        state = RNDState(ppo_state, state.target_params, params, opt_state, obs_stats, return_stats, intrinsic_return, key)
        return state, steps, metrics

    def round(self, state: RNDState, round_index: int | Array) -> tuple[RNDState, Episodes, dict[str, Array]]:
        """`updates_per_round` updates; their episodes `[episodes_per_round, L]` (episode k N + n: the
        k-th of env n) with `policy = round_index`, and the metrics averaged over the updates."""
        def body(state, _):
            state, steps, metrics = self.update(state)
            return state, (steps, metrics)

        state, (steps, metrics) = jax.lax.scan(body, state, None, length=self.updates_per_round)
        length, n = self.episode_length, self.config.num_envs

        def to_episodes(x):  # [U, R, N, ...] -> [k N, L, ...]
            x = x.reshape(-1, length, n, *x.shape[3:])
            return jnp.swapaxes(x, 1, 2).reshape(-1, length, *x.shape[3:])

        episodes = _episodes(jax.tree.map(to_episodes, steps), round_index)
        aligned = (episodes.length == length) & to_episodes(steps.done)[:, -1]
        metrics = {name: jnp.nanmean(value) for name, value in metrics.items()}
        return state, episodes, {**metrics, "rnd/aligned": aligned.mean()}

    def chunk(self, state: RNDState, first_round: int | Array, *, rounds: int) -> tuple[RNDState, Episodes, dict[str, Array]]:
        """`rounds` rounds in one `lax.scan`: episodes `[rounds x episodes_per_round, L]`, metrics `[rounds]`."""
        def body(state, index):
            state, episodes, metrics = self.round(state, index)
            return state, (episodes, metrics)

        state, (episodes, metrics) = jax.lax.scan(body, state, first_round + jnp.arange(rounds))
        return state, jax.tree.map(lambda x: x.reshape(-1, *x.shape[2:]), episodes), metrics

    @property
    def _optimizer(self) -> optax.GradientTransformation:
        return optax.adam(self.config.predictor_learning_rate)

    def _flat(self, obs: Array) -> Array:
        return nets.flatten_observation(obs, len(self.ppo.env.observation_shape)).astype(jnp.float32)


# ---------------------------------------------------------------- coverage


def grid_coverage(
    points: Float[Array, "N 2"], valid: Bool[Array, " N"], *, low: tuple[float, float], high: tuple[float, float], bins: int
) -> tuple[Float[Array, ""], Float[Array, ""]]:
    """(fraction of the `bins` x `bins` cells of [low, high] holding a valid point, fraction of valid points outside).

    >>> pts = jnp.array([[0.1, 0.1], [0.9, 0.9], [0.15, 0.1], [2.0, 0.0]])
    >>> [round(float(v), 3) for v in grid_coverage(pts, jnp.ones(4, bool), low=(0, 0), high=(1, 1), bins=2)]
    [0.5, 0.25]
    """
    low, high = jnp.asarray(low, jnp.float32), jnp.asarray(high, jnp.float32)
    cell = jnp.floor((points - low) / (high - low) * bins).astype(jnp.int32)
    inside = valid & jnp.all((points >= low) & (points <= high), axis=-1)
    cell = jnp.clip(cell, 0, bins - 1)  # a point on `high` belongs to the last cell
    visited = jnp.zeros(bins * bins, jnp.bool_).at[cell[:, 0] * bins + cell[:, 1]].max(inside)
    outside = jnp.sum(valid & ~inside) / jnp.maximum(jnp.sum(valid), 1)
    return visited.mean(), outside


# ---------------------------------------------------------------- the dataset


@dataclasses.dataclass(frozen=True)
class ExploreConfig:
    """How an exploratory dataset is made. Defaults: 64 episodes of uniform random actions on PointMass."""

    env: str = "playground:PointMass"  # a Playground DM Control task: its domain's tasks are the features; else any `envs.make` name
    method: str = "random"  # random | rnd
    num_episodes: int = 64  # episodes stored (rnd: a multiple of the explorer's episodes per round)
    episode_length: int | None = None  # None: the env's time limit (1000 for DM Control)
    seed: int = 0
    action_repeat: int = 1  # random: each uniform action held for this many env steps (rnd: 1)
    chunks: int = 1  # jitted calls the run is split into, `progress` called after each
    coverage_dims: tuple[int, int] | None = None  # observation dims of the grid; None: the domain's (point mass: x, y), else (0, 1)
    coverage_bounds: tuple[tuple[float, float], tuple[float, float]] | None = None  # None: the domain's, else the data's range
    coverage_bins: int = 20  # cells per dimension (10 saturates on PointMass: random resets alone fill it)
    rnd: RNDConfig = RNDConfig()

    def __post_init__(self):
        if not isinstance(self.env, str) or ":" not in self.env:
            raise ConfigError(f"ExploreConfig.env must be '<backend>:<name>', got {self.env!r}.")
        if self.method not in METHODS:
            raise ConfigError(f"ExploreConfig.method must be one of {METHODS}, got {self.method!r}.")
        for name in ("num_episodes", "action_repeat", "chunks", "coverage_bins"):
            _check_positive_int(f"ExploreConfig.{name}", getattr(self, name))
        if self.episode_length is not None:
            _check_positive_int("ExploreConfig.episode_length", self.episode_length)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ConfigError(f"ExploreConfig.seed must be an int, got {self.seed!r}.")
        if self.method == "rnd" and self.action_repeat != 1:
            raise ConfigError(f"ExploreConfig.action_repeat must be 1 for method 'rnd' (PPO acts every step), got {self.action_repeat}.")
        if self.method == "random" and self.num_episodes % self.chunks:
            raise ConfigError(f"ExploreConfig.chunks={self.chunks} must divide num_episodes={self.num_episodes}.")
        if self.coverage_dims is not None:
            dims = tuple(self.coverage_dims)
            if len(dims) != 2 or any(isinstance(d, bool) or not isinstance(d, int) or d < 0 for d in dims) or dims[0] == dims[1]:
                raise ConfigError(f"ExploreConfig.coverage_dims must be two distinct ints >= 0, got {self.coverage_dims!r}.")
            object.__setattr__(self, "coverage_dims", dims)
        if self.coverage_bounds is not None:
            bounds = tuple(tuple(float(v) for v in pair) for pair in self.coverage_bounds)
            if len(bounds) != 2 or any(len(b) != 2 or not b[0] < b[1] for b in bounds):
                raise ConfigError(f"ExploreConfig.coverage_bounds must be ((low, high), (low, high)) with low < high, got {self.coverage_bounds!r}.")
            object.__setattr__(self, "coverage_bounds", bounds)
        if not isinstance(self.rnd, RNDConfig):
            raise ConfigError(f"ExploreConfig.rnd must be an RNDConfig, got {type(self.rnd).__name__}.")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ExploreConfig:
        """Build from a dict (`rnd` may be a dict); unknown keys are an error naming them."""
        check_known_keys("ExploreConfig", values, (f.name for f in dataclasses.fields(cls)))
        rnd = values.get("rnd", {})
        if isinstance(rnd, dict):
            check_known_keys("RNDConfig", rnd, (f.name for f in dataclasses.fields(RNDConfig)))
            rnd = RNDConfig(**rnd)
        return cls(**{**values, "rnd": rnd})


Progress = Callable[[int, int, dict[str, float]], None]  # (chunks done, chunks, the last chunk's mean metrics)


def generate_exploratory(config: ExploreConfig, *, progress: Progress | None = None) -> tuple[OfflineData, DatasetMetadata]:
    """The dataset of `config` as host (NumPy) `OfflineData` and its `DatasetMetadata`.

    `Episodes.reward` and `oracle_advantage` are 0 (unlabelled); `features[e, t, k]` is task
    k's reward (`metadata.feature_names`); segments and pairs have no rows. Write it with
    `tfds_io.write_dataset(directory, data, metadata)`.
    """
    env, names, domain = exploration_env(config)
    length = _episode_length(config, env)
    key = jax.random.key(config.seed)
    if config.method == "random":
        episodes, policies = _generate_random(config, env, length, key, progress)
    else:
        episodes, policies = _generate_rnd(config, env, length, key, progress, names)
    episodes = episodes.replace(reward=np.zeros_like(episodes.reward), oracle_advantage=np.zeros_like(episodes.reward))
    coverage = _coverage(config, domain, episodes)
    empty = np.zeros(0, np.int32)
    data = OfflineData(episodes, Segments(empty, empty, length=1), Pairs(empty, empty, np.zeros(0, np.float32)))
    size = int(np.prod(env.action_space.shape))
    metadata = DatasetMetadata(
        env_name=config.env, observation_shape=env.observation_shape, action_shape=env.action_space.shape,
        action_low=(-1.0,) * size, action_high=(1.0,) * size, feature_names=names, segment_length=1,
        discount=config.rnd.gamma, policies=policies, seed=config.seed, generator=config.method,
        notes=(
            f"Unlabelled exploratory data ({config.method}; ExORL-style, for HILP): reward and oracle_advantage are 0; "
            "features[..., k] is the reward of task feature_names[k] at each step (evaluation only); "
            "actions in [-1, 1], rescaled to the env's bounds; no segments or pairs."
        ),
        extra={"domain": domain, "coverage": coverage, "env_steps": int(episodes.length.sum()), "config": dataclasses.asdict(config)},
    )
    return data, metadata


def exploration_env(config: ExploreConfig) -> tuple[envs.Env, tuple[str, ...], str | None]:
    """The env to explore (with its time limit, no auto-reset), its feature names and its domain.

    A Playground DM Control task: `domain_env` (every task of the domain as features).
    Otherwise `envs.make(config.env)`, with `TimeLimit(episode_length)` if given, and features
    named `feature_k` when it reports `info['features']`.
    """
    backend, _, name = config.env.partition(":")
    if backend == "playground" and any(name in tasks for tasks in DOMAIN_TASKS.values()):
        env = domain_env(name, episode_length=config.episode_length)
        return env, DOMAIN_TASKS[domain_of(name)], domain_of(name)
    env = envs.make(config.env)
    if config.episode_length is not None:
        env = envs.TimeLimit(env, config.episode_length)
    features = jax.eval_shape(env.reset, jax.random.key(0))[1].info.get("features")
    count = 0 if features is None else int(features.shape[-1])
    return env, tuple(f"feature_{k}" for k in range(count)), None


def _generate_random(config: ExploreConfig, env: envs.Env, length: int, key, progress) -> tuple[Episodes, tuple[dict, ...]]:
    per_chunk = config.num_episodes // config.chunks
    collect = jax.jit(functools.partial(random_episodes, env, num_episodes=per_chunk, max_length=length, action_repeat=config.action_repeat))
    parts = []
    for chunk in range(config.chunks):
        parts.append(jax.device_get(collect(jax.random.fold_in(key, chunk))))
        if progress is not None:
            progress(chunk + 1, config.chunks, {"env_steps": float(sum(int(p.length.sum()) for p in parts))})
    return _concatenate(parts), ({"method": "random", "action_repeat": config.action_repeat},)


def _generate_rnd(config: ExploreConfig, env: envs.Env, length: int, key, progress, names) -> tuple[Episodes, tuple[dict, ...]]:
    probe = RNDExplorer.build(config.rnd, env, episode_length=length, num_rounds=1)
    per_round = probe.episodes_per_round
    if config.num_episodes % per_round:
        raise ConfigError(
            f"ExploreConfig.num_episodes={config.num_episodes} must be a multiple of the {per_round} episodes of one RND round "
            f"(rnd.num_envs x lcm(rnd.rollout_length, episode_length) / episode_length)."
        )
    rounds = config.num_episodes // per_round
    if rounds % config.chunks:
        raise ConfigError(f"ExploreConfig.chunks={config.chunks} must divide the {rounds} RND rounds.")
    explorer = RNDExplorer.build(config.rnd, env, episode_length=length, num_rounds=rounds)
    per_chunk = rounds // config.chunks
    run = jax.jit(functools.partial(explorer.chunk, rounds=per_chunk))
    state = jax.jit(explorer.init)(key)
    parts, policies = [], []
    for chunk in range(config.chunks):
        state, episodes, metrics = run(state, chunk * per_chunk)
        episodes, metrics = jax.device_get((episodes, metrics))
        if not np.all(metrics["rnd/aligned"] == 1.0):
            raise DatasetError(
                f"{config.env}: an episode ended before its time limit ({length} steps), so RND's rollouts no longer cut into "
                "whole episodes; use method 'random' for envs that terminate."
            )
        parts.append(episodes)
        for r in range(per_chunk):
            returns = episodes.features[r * per_round : (r + 1) * per_round].sum(1).mean(0)
            policies.append({
                "method": "rnd", "round": chunk * per_chunk + r, "env_steps": (chunk * per_chunk + r) * explorer.env_steps_per_round,
                "prediction_error": float(metrics["rnd/prediction_error"][r]), "task_returns": dict(zip(names, map(float, returns))),
            })
        if progress is not None:
            means = {name: float(np.nanmean(value)) for name, value in metrics.items()}
            progress(chunk + 1, config.chunks, {**means, "env_steps": float((chunk + 1) * per_chunk * explorer.env_steps_per_round)})
    return _concatenate(parts), tuple(policies)


def _episode_length(config: ExploreConfig, env: envs.Env) -> int:
    if config.episode_length is not None:
        return config.episode_length
    if isinstance(env, envs.TimeLimit):
        return env.max_steps
    raise ConfigError(f"ExploreConfig.episode_length is needed: {config.env} has no TimeLimit to take it from.")


def _coverage(config: ExploreConfig, domain: str | None, episodes: Episodes) -> dict[str, Any]:
    """`grid_coverage` over the real steps' two chosen observation dims, and what it was computed on."""
    default_dims, default_bounds = _COVERAGE.get(domain, ((0, 1), None))
    dims = config.coverage_dims or default_dims
    obs = np.asarray(episodes.observation).reshape(*episodes.reward.shape, -1)
    if max(dims) >= obs.shape[-1]:
        raise ConfigError(f"ExploreConfig.coverage_dims {dims} out of range for {obs.shape[-1]} observation dims.")
    points, valid = obs[..., list(dims)].reshape(-1, 2), np.asarray(episodes.real_steps).reshape(-1)
    bounds = config.coverage_bounds or default_bounds
    if bounds is None:  # the data's own range: comparable only between datasets given the same bounds
        bounds = tuple((float(points[valid, i].min()), float(points[valid, i].max()) + 1e-6) for i in range(2))
    visited, outside = grid_coverage(points, valid, low=tuple(b[0] for b in bounds), high=tuple(b[1] for b in bounds), bins=config.coverage_bins)
    return {"dims": list(dims), "bounds": [list(b) for b in bounds], "bins": config.coverage_bins, "visited": float(visited), "outside": float(outside)}


def _concatenate(parts: list[Episodes]) -> Episodes:
    return jax.tree.map(lambda *xs: np.concatenate([np.asarray(x) for x in xs]), *parts)



def main(argv: list[str] | None = None) -> None:
    """`python -m jaxrl_si.data.explore --config '{"env": "playground:WalkerRun", "method": "rnd"}' --out DIR`."""
    import argparse
    import json
    import time

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="{}", help="ExploreConfig as JSON (rnd: a nested object)")
    parser.add_argument("--out", default=None, help="directory to write the dataset to (tfds_io); omit to only measure")
    args = parser.parse_args(argv)
    config = ExploreConfig.from_dict(json.loads(args.config))
    start = last = time.perf_counter()
    last_steps = 0.0

    def report(done, total, metrics):  # a chunk's rate: the first one's includes compiling
        nonlocal last, last_steps
        now, steps = time.perf_counter(), metrics["env_steps"]
        shown = ", ".join(f"{k}={v:.4g}" for k, v in sorted(metrics.items()) if k.startswith(("rnd/", "episode/", "env_steps")))
        print(f"chunk {done}/{total} ({now - start:.1f} s, {(steps - last_steps) / (now - last):.0f} env steps/s): {shown}", flush=True)
        last, last_steps = now, steps

    data, metadata = generate_exploratory(config, progress=report)
    seconds = time.perf_counter() - start
    steps = metadata.extra["env_steps"]
    print(json.dumps({"env_steps": steps, "seconds": round(seconds, 2), "env_steps_per_s": round(steps / seconds, 1), "coverage": metadata.extra["coverage"]}))
    if args.out:
        print(write_dataset(args.out, data, metadata))


if __name__ == "__main__":
    main()
