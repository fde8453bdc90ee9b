"""Wrappers: time limit, auto-reset, episode statistics, observation normalisation, action
rescaling/clipping, and a vmapped batch of environments.

All are pure and add no Python work per step: under `jit` they trace to a handful of `where`s.
The usual stack for on-policy training (see `wrap_for_training`) is

    NormalizeObservation(                       # optional; statistics shared by the batch
        VectorEnv(                              # vmap over num_envs, per-env keys split inside
            EpisodeStatistics(                  # return/length of the last finished episode
                AutoReset(                      # keeps final_obs; terminated/truncated kept apart
                                                # (CachedAutoReset where reset is expensive)
                    RescaleAction(env)))),      # continuous actions only: [-1, 1] -> bounds
        num_envs)

`EpisodeStatistics` must sit outside `AutoReset` (a reset from inside would wipe the
statistics it is about to report) and `NormalizeObservation` outside `VectorEnv` (so the
statistics are pooled over the batch, as in PPO implementations).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int, PRNGKeyArray

from jaxrl_si._checks import check_positive
from jaxrl_si.envs.core import Box, Env, TimeStep, Wrapper, check_positive_int


def _select(pred: Array, on_true, on_false):
    """`where(pred, a, b)` over matching pytrees; `pred` is a scalar (vmap batches it)."""
    return jax.tree.map(lambda a, b: jnp.where(pred, a, b), on_true, on_false)


class RewardFeatures(Wrapper):
    """Adds `info['features']`: `[K]` per-step quantities the reward is made of, for preference oracles.

    `features(state, action, next_state) -> [K]` sees the wrapped env's states before and after
    the step and the action as that env receives it (wrap the backend env directly, inside
    `RescaleAction`, so actions are in its own units). `reset` reports zeros. The state is the
    wrapped env's: nothing to declare for data parallelism.
    """

    def __init__(self, env: Env, features: Callable[[Any, Array, Any], Array], num_features: int):
        super().__init__(env)
        self.features = features
        self.num_features = check_positive_int("num_features", num_features)

    def reset(self, key: PRNGKeyArray) -> tuple[Any, TimeStep]:
        state, ts = self.env.reset(key)
        return state, ts.replace(info={**ts.info, "features": jnp.zeros((self.num_features,), jnp.float32)})

    def step(self, state, action: Array, key: PRNGKeyArray) -> tuple[Any, TimeStep]:
        next_state, ts = self.env.step(state, action, key)
        features = jnp.asarray(self.features(state, action, next_state), jnp.float32).reshape(self.num_features)
        return next_state, ts.replace(info={**ts.info, "features": features})

    def env_axis_leaves(self, state):
        return self.env.env_axis_leaves(state)


class TimeLimitState(flax.struct.PyTreeNode):
    env_state: object
    steps: Int[Array, ""]


class TimeLimit(Wrapper):
    """Sets `truncated` once `max_steps` steps have been taken in the episode.

    Backends without their own time limit (Brax, Playground) get it from here, so truncation
    never masquerades as termination. Put it inside `AutoReset`, whose reset restarts the count.
    """

    def __init__(self, env: Env, max_steps: int):
        super().__init__(env)
        self.max_steps = check_positive_int("max_steps", max_steps)

    def reset(self, key: PRNGKeyArray) -> tuple[TimeLimitState, TimeStep]:
        env_state, ts = self.env.reset(key)
        return TimeLimitState(env_state, jnp.zeros((), jnp.int32)), ts

    def step(self, state: TimeLimitState, action: Array, key: PRNGKeyArray):
        env_state, ts = self.env.step(state.env_state, action, key)
        steps = state.steps + 1
        ts = ts.replace(truncated=ts.truncated | (steps >= self.max_steps))
        return TimeLimitState(env_state, steps), ts

    def env_axis_leaves(self, state: TimeLimitState) -> TimeLimitState:
        return TimeLimitState(self.env.env_axis_leaves(state.env_state), self.env.num_envs is not None)


class AutoReset(Wrapper):
    """Resets the inner env when an episode ends (terminated or truncated) within the same step.

    The returned `TimeStep` keeps the inner step's `reward`, `terminated`, `truncated` and
    `final_obs` (the observation the episode ended on); only `obs` (and the state) are
    replaced by the fresh episode's. Adds no state of its own. The reset is computed every step
    and selected with `where`, which is what `lax.cond` becomes under `vmap` anyway.
    """

    def step(self, state, action: Array, key: PRNGKeyArray):
        key_step, key_reset = jax.random.split(key)
        env_state, ts = self.env.step(state, action, key_step)
        reset_state, reset_ts = self.env.reset(key_reset)
        done = ts.terminated | ts.truncated
        env_state = _select(done, reset_state, env_state)
        return env_state, ts.replace(obs=_select(done, reset_ts.obs, ts.obs))


class CachedResetState(flax.struct.PyTreeNode):
    env_state: object
    initial_state: object  # the state `reset` produced, restored whenever an episode ends
    initial_obs: Array


class CachedAutoReset(Wrapper):
    """Like `AutoReset`, but an ended episode restarts from the env's first initial state.

    Each env draws one initial state at `reset` and returns to it after every episode, so a
    step costs one `where` per state leaf instead of a full `reset` (under `vmap` a reset
    cannot be skipped per env: `lax.cond` becomes `select` and both branches run). Use it when
    `reset` is expensive: MuJoCo Playground's DM Control `reset` runs 200 physics steps to
    settle the model, and Playground's and Brax's own training wrappers reset this way by
    default. The price is less diversity: initial states differ across envs (per-env keys)
    but not across episodes of one env. `TimeStep` semantics are those of `AutoReset`.
    """

    def reset(self, key: PRNGKeyArray) -> tuple[CachedResetState, TimeStep]:
        env_state, ts = self.env.reset(key)
        return CachedResetState(env_state, env_state, ts.obs), ts

    def step(self, state: CachedResetState, action: Array, key: PRNGKeyArray):
        env_state, ts = self.env.step(state.env_state, action, key)
        done = ts.terminated | ts.truncated
        env_state = _select(done, state.initial_state, env_state)
        new_state = state.replace(env_state=env_state)
        return new_state, ts.replace(obs=jnp.where(done, state.initial_obs, ts.obs))

    def env_axis_leaves(self, state: CachedResetState) -> CachedResetState:
        inner = self.env.env_axis_leaves
        return CachedResetState(inner(state.env_state), inner(state.initial_state), self.env.num_envs is not None)


class EpisodeStatsState(flax.struct.PyTreeNode):
    env_state: object
    episode_return: Float[Array, ""]  # running undiscounted return of the current episode
    episode_length: Int[Array, ""]  # steps taken in the current episode
    last_return: Float[Array, ""]  # return of the last finished episode (0 before the first)
    last_length: Int[Array, ""]


class EpisodeStatistics(Wrapper):
    """Tracks the undiscounted return and length of episodes.

    Adds to `TimeStep.info`: `episode_return` and `episode_length` of the last FINISHED
    episode (0 until one finishes; on the step that ends an episode they are that episode's).
    Mean return over a rollout: `sum(where(done, info['episode_return'], 0)) / sum(done)`.
    Wrap an `AutoReset` env (it resets its counters where `terminated | truncated`).
    """

    def reset(self, key: PRNGKeyArray) -> tuple[EpisodeStatsState, TimeStep]:
        env_state, ts = self.env.reset(key)
        zero_f, zero_i = jnp.zeros((), jnp.float32), jnp.zeros((), jnp.int32)
        state = EpisodeStatsState(env_state, zero_f, zero_i, zero_f, zero_i)
        return state, self._with_info(ts, state)

    def step(self, state: EpisodeStatsState, action: Array, key: PRNGKeyArray):
        env_state, ts = self.env.step(state.env_state, action, key)
        ret = state.episode_return + ts.reward
        length = state.episode_length + 1
        done = ts.terminated | ts.truncated
        new_state = EpisodeStatsState(
            env_state=env_state,
            episode_return=jnp.where(done, 0.0, ret),
            episode_length=jnp.where(done, 0, length),
            last_return=jnp.where(done, ret, state.last_return),
            last_length=jnp.where(done, length, state.last_length),
        )
        return new_state, self._with_info(ts, new_state)

    @staticmethod
    def _with_info(ts: TimeStep, state: EpisodeStatsState) -> TimeStep:
        info = {**ts.info, "episode_return": state.last_return, "episode_length": state.last_length}
        return ts.replace(info=info)

    def env_axis_leaves(self, state: EpisodeStatsState) -> EpisodeStatsState:
        own = self.env.num_envs is not None
        return EpisodeStatsState(self.env.env_axis_leaves(state.env_state), own, own, own, own)


class RescaleAction(Wrapper):
    """The agent acts in [-1, 1]^A; actions are mapped affinely onto the env's bounds.

    a_env = low + (a + 1) / 2 * (high - low); with `clip=True` (default) `a` is first clipped
    to [-1, 1], so an unbounded Gaussian sample never leaves the env's range.
    """

    def __init__(self, env: Env, *, clip: bool = True):
        super().__init__(env)
        space = env.action_space
        if not isinstance(space, Box) or not space.bounded:
            raise ValueError(f"RescaleAction needs a bounded Box action space, got {space!r}.")
        self.clip = clip
        self._low, self._high = space.low, space.high

    @property
    def action_space(self) -> Box:
        return Box(-1.0, 1.0, self.env.action_space.shape)

    def step(self, state, action: Float[Array, "*A"], key: PRNGKeyArray):
        if self.clip:
            action = jnp.clip(action, -1.0, 1.0)
        return self.env.step(state, self._low + 0.5 * (action + 1.0) * (self._high - self._low), key)


class ClipAction(Wrapper):
    """Clips continuous actions to the env's `Box` bounds (no rescaling)."""

    def __init__(self, env: Env):
        super().__init__(env)
        if not isinstance(env.action_space, Box):
            raise ValueError(f"ClipAction needs a Box action space, got {env.action_space!r}.")

    def step(self, state, action: Float[Array, "*A"], key: PRNGKeyArray):
        space = self.env.action_space
        return self.env.step(state, jnp.clip(action, space.low, space.high), key)


class VectorEnv(Wrapper):
    """`num_envs` independent copies of `env`, vmapped; every array gains a leading axis.

    `reset(key)` and `step(state, actions [num_envs, ...], key)` take ONE key and split it into
    per-env keys inside. The spaces still describe one environment.
    """

    def __init__(self, env: Env, num_envs: int):
        super().__init__(env)
        if env.num_envs is not None:
            raise ValueError("`env` is already vectorised; wrap the single environment instead.")
        self._num_envs = check_positive_int("num_envs", num_envs)

    @property
    def num_envs(self) -> int:
        return self._num_envs

    def reset(self, key: PRNGKeyArray):
        return jax.vmap(self.env.reset)(jax.random.split(key, self._num_envs))

    def step(self, state, action: Array, key: PRNGKeyArray):
        return jax.vmap(self.env.step)(state, action, jax.random.split(key, self._num_envs))

    def env_axis_leaves(self, state):
        """Every leaf: each is the stack of `num_envs` single-env leaves."""
        return jax.tree.map(lambda _: True, state)


def vectorize(env: Env, num_envs: int) -> VectorEnv:
    """`VectorEnv(env, num_envs)`."""
    return VectorEnv(env, num_envs)


class RunningMeanStd(flax.struct.PyTreeNode):
    """Running mean and (population) variance of observations, merged batch by batch.

    Update (Chan, Golub & LeVeque 1979, the parallel form of Welford's algorithm) with a batch
    of `m` samples with mean `mu_b` and variance `var_b`, `delta = mu_b - mu`, `n' = n + m`:
        mu'  = mu + delta * m / n'
        var' = (var * n + var_b * m + delta^2 * n * m / n') / n'
    Starting from `count = 0`, the statistics equal the mean and variance of all samples seen.
    """

    mean: Float[Array, "*obs_shape"]
    var: Float[Array, "*obs_shape"]
    count: Float[Array, ""]

    @classmethod
    def zeros(cls, shape: tuple[int, ...]) -> RunningMeanStd:
        return cls(jnp.zeros(shape, jnp.float32), jnp.ones(shape, jnp.float32), jnp.zeros((), jnp.float32))

    def update(self, batch: Float[Array, "... *obs_shape"]) -> RunningMeanStd:
        """Merge a batch; every axis before the observation axes is a sample axis."""
        axes = tuple(range(batch.ndim - self.mean.ndim))
        batch = batch.astype(jnp.float32)
        m = jnp.asarray(batch.size // max(self.mean.size, 1), jnp.float32)
        b_mean, b_var = jnp.mean(batch, axis=axes), jnp.var(batch, axis=axes)
        total = self.count + m
        delta = b_mean - self.mean
        mean = self.mean + delta * m / total
        var = (self.var * self.count + b_var * m + jnp.square(delta) * self.count * m / total) / total
        return RunningMeanStd(mean, var, total)

    def normalize(self, x: Array, *, clip: float = 10.0, epsilon: float = 1e-8) -> Array:
        """clip((x - mean) / sqrt(var + epsilon), -clip, clip)."""
        return jnp.clip((x - self.mean) / jnp.sqrt(self.var + epsilon), -clip, clip)


class NormalizeObsState(flax.struct.PyTreeNode):
    env_state: object
    obs_stats: RunningMeanStd


class NormalizeObservation(Wrapper):
    """Normalises `obs` and `final_obs` with running statistics held in the state.

    Statistics are updated from every `obs` the agent will act on (reset and post-step, i.e.
    including first observations after auto-resets), then applied. Put it outside `VectorEnv`
    so one set of statistics is pooled over the whole batch (wrapped around a single env it
    keeps per-env statistics, which is also correct, just noisier). Under an outer `vmap`
    (seeds, hyperparameters) each member keeps its own statistics.

    `update_stats=False` freezes the statistics, e.g. for evaluation: start the episode with
    `reset_with_stats(key, train_state.obs_stats)` to normalise with the training statistics.
    """

    def __init__(self, env: Env, *, clip: float = 10.0, epsilon: float = 1e-8, update_stats: bool = True):
        super().__init__(env)
        check_positive("clip", clip)
        check_positive("epsilon", epsilon)
        self.clip, self.epsilon, self.update_stats = float(clip), float(epsilon), bool(update_stats)

    def reset(self, key: PRNGKeyArray) -> tuple[NormalizeObsState, TimeStep]:
        return self.reset_with_stats(key, RunningMeanStd.zeros(self.observation_shape))

    def reset_with_stats(self, key: PRNGKeyArray, obs_stats: RunningMeanStd):
        """Reset the inner env, starting from the given statistics (updated unless frozen)."""
        env_state, ts = self.env.reset(key)
        return self._normalized(env_state, ts, obs_stats)

    def step(self, state: NormalizeObsState, action: Array, key: PRNGKeyArray):
        env_state, ts = self.env.step(state.env_state, action, key)
        return self._normalized(env_state, ts, state.obs_stats)

    def env_axis_leaves(self, state: NormalizeObsState) -> NormalizeObsState:
        """The inner env's leaves as it says; the statistics are pooled over the environments."""
        return NormalizeObsState(self.env.env_axis_leaves(state.env_state), jax.tree.map(lambda _: False, state.obs_stats))

    def _normalized(self, env_state, ts: TimeStep, stats: RunningMeanStd):
        if self.update_stats:
            stats = stats.update(ts.obs)
        norm = lambda x: stats.normalize(x, clip=self.clip, epsilon=self.epsilon)  # noqa: E731
        ts = ts.replace(obs=norm(ts.obs), final_obs=norm(ts.final_obs))
        return NormalizeObsState(env_state, stats), ts


def wrap_for_training(
    env: Env,
    num_envs: int,
    *,
    normalize_observations: bool = False,
    rescale_actions: bool = True,
    obs_clip: float = 10.0,
    cache_initial_state: bool | None = None,
) -> Env:
    """The standard on-policy stack (module docstring): auto-reset, episode statistics,
    `num_envs` vmapped copies, optional observation normalisation; continuous actions are
    clipped to [-1, 1] and rescaled to the env's bounds when `rescale_actions`.

    `cache_initial_state` picks `CachedAutoReset` over `AutoReset`; `None` follows the
    innermost env's `expensive_reset` (True for the Brax and Playground adapters).
    """
    if rescale_actions and isinstance(env.action_space, Box):
        env = RescaleAction(env, clip=True)
    if cache_initial_state is None:
        cache_initial_state = env.unwrapped.expensive_reset
    env = (CachedAutoReset if cache_initial_state else AutoReset)(env)
    env = VectorEnv(EpisodeStatistics(env), num_envs)
    if normalize_observations:
        env = NormalizeObservation(env, clip=obs_clip)
    return env
