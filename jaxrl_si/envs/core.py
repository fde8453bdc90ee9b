"""The environment protocol: pure `reset(key)` / `step(state, action, key)` on pytrees.

An `Env` is a plain Python object holding only static configuration (sizes, bounds, time
limits, backend objects); everything that changes lives in the state pytree it returns. Both
methods are pure, so they can be jitted, vmapped and scanned; the env object is closed over
(never traced).

Time-step semantics (the contract every adapter and wrapper keeps)::

    state, ts = env.reset(key)            # ts.obs = o_0, reward 0, not terminated/truncated
    state, ts = env.step(state, a_t, key)
    ts.reward      r_t      reward of the transition (float32 [])
    ts.terminated  bool []  s_{t+1} is terminal: its value is 0, do NOT bootstrap
    ts.truncated   bool []  the episode was cut (time limit) at a non-terminal s_{t+1}:
                            DO bootstrap from V(ts.final_obs)
    ts.final_obs   o_{t+1}  the observation the transition reached, before any reset
    ts.obs         the observation to act on next: o_{t+1}, or, after an `AutoReset` ended an
                   episode (terminated | truncated), the first observation of the next episode

So without auto-reset `obs` and `final_obs` are the same array. A one-step value target that
keeps termination and truncation apart is

    y_t = r_t + gamma * (1 - terminated_t) * V(final_obs_t),

and a GAE trace is cut where `terminated_t | truncated_t`; since `final_obs_t == obs_t` on
steps that did not end an episode, an agent can evaluate `V(final_obs)` once per rollout, or
equivalently add `gamma * truncated_t * V(final_obs_t)` to `r_t` and cut the trace at done.
When both flags are set (the time limit hit a terminal state), `terminated` wins: no bootstrap.
"""

from __future__ import annotations

import abc
import dataclasses
import importlib
import math
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, PRNGKeyArray

from jaxrl_si.layout import Constrain


class TimeStep(flax.struct.PyTreeNode):
    """What the agent sees after `reset` or `step`; see the module docstring for semantics.

    `info` holds extra per-step arrays added by wrappers (e.g. `episode_return`); keep it small,
    every key is carried through every scan.
    """

    obs: Array
    reward: Float[Array, ""]
    terminated: Bool[Array, ""]
    truncated: Bool[Array, ""]
    final_obs: Array
    info: dict[str, Array] = flax.struct.field(default_factory=dict)

    @property
    def done(self) -> Bool[Array, ""]:
        """`terminated | truncated`: the episode ended at this step."""
        return self.terminated | self.truncated


def initial_timestep(obs: Array) -> TimeStep:
    """The `TimeStep` returned by `reset`: reward 0, neither flag set, `final_obs = obs`."""
    return TimeStep(
        obs=obs,
        reward=jnp.zeros((), jnp.float32),
        terminated=jnp.zeros((), jnp.bool_),
        truncated=jnp.zeros((), jnp.bool_),
        final_obs=obs,
    )


def transition_timestep(obs: Array, reward, terminated, truncated) -> TimeStep:
    """A `TimeStep` for a step without reset, with float32 reward and bool flags."""
    return TimeStep(
        obs=obs,
        reward=jnp.asarray(reward, jnp.float32),
        terminated=jnp.asarray(terminated, jnp.bool_),
        truncated=jnp.asarray(truncated, jnp.bool_),
        final_obs=obs,
    )


@dataclasses.dataclass(frozen=True)
class Discrete:
    """`num_actions` discrete actions `0 .. num_actions - 1`, as int32 scalars."""

    num_actions: int

    shape: tuple[int, ...] = dataclasses.field(default=(), init=False)
    dtype: Any = dataclasses.field(default=np.dtype("int32"), init=False)

    def __post_init__(self):
        if not isinstance(self.num_actions, int) or self.num_actions < 1:
            raise ValueError(f"`num_actions` must be a positive int, got {self.num_actions!r}.")


@dataclasses.dataclass(frozen=True, eq=False)
class Box:
    """float32 arrays of `shape` with element-wise bounds `low <= x <= high` (may be infinite)."""

    low: np.ndarray
    high: np.ndarray
    shape: tuple[int, ...]
    dtype: Any = np.dtype("float32")

    def __init__(self, low, high, shape, dtype=np.float32):
        shape = tuple(int(d) for d in shape)
        low = np.broadcast_to(np.asarray(low, np.float32), shape).copy()
        high = np.broadcast_to(np.asarray(high, np.float32), shape).copy()
        if np.any(low > high):
            raise ValueError(f"Box bounds must satisfy low <= high, got low={low}, high={high}.")
        object.__setattr__(self, "low", low)
        object.__setattr__(self, "high", high)
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "dtype", np.dtype(dtype))

    @property
    def bounded(self) -> bool:
        """True when every bound is finite (so actions can be rescaled into it)."""
        return bool(np.all(np.isfinite(self.low)) and np.all(np.isfinite(self.high)))


Space = Discrete | Box


class Env(abc.ABC):
    """The protocol: `reset(key) -> (state, TimeStep)`, `step(state, action, key) -> (state, TimeStep)`.

    Subclasses define both methods and the two spaces. `observation_space` and `action_space`
    describe ONE environment; a `VectorEnv` adds a leading `[num_envs]` axis to every array.
    """

    # True when `reset` costs much more than `step` (physics settling): `wrap_for_training`
    # then auto-resets to a cached initial state instead of computing a reset every step.
    expensive_reset: bool = False

    @abc.abstractmethod
    def reset(self, key: PRNGKeyArray) -> tuple[Any, TimeStep]:
        """Start an episode: the initial state and its `TimeStep`."""

    @abc.abstractmethod
    def step(self, state: Any, action: Array, key: PRNGKeyArray) -> tuple[Any, TimeStep]:
        """Advance one step. `key` drives any randomness (dynamics noise, auto-reset)."""

    @property
    @abc.abstractmethod
    def observation_space(self) -> Box:
        """Shape and bounds of one observation."""

    @property
    @abc.abstractmethod
    def action_space(self) -> Space:
        """`Discrete(num_actions)` or a `Box` of continuous actions."""

    @property
    def unwrapped(self) -> Env:
        """The innermost environment under all wrappers."""
        return self

    def env_axis_leaves(self, state: Any) -> Any:
        """A pytree like `state`: True for each leaf with a leading env axis `[num_envs, ...]`.

        Data parallelism splits those leaves over devices and keeps the others (statistics
        pooled over the environments) whole. A single environment has no env axis: all False.
        """
        return jax.tree.map(lambda _: False, state)

    @property
    def num_envs(self) -> int | None:
        """Batch size of a vectorised env, `None` for a single environment."""
        return None

    @property
    def observation_shape(self) -> tuple[int, ...]:
        """Shape of one observation (without the `num_envs` axis)."""
        return self.observation_space.shape

    @property
    def discrete_actions(self) -> bool:
        """True when actions are integers in `range(num_actions)`."""
        return isinstance(self.action_space, Discrete)

    @property
    def action_size(self) -> int:
        """Number of discrete actions, or the number of continuous action dimensions."""
        space = self.action_space
        return space.num_actions if isinstance(space, Discrete) else math.prod(space.shape)


class BackendEnv(Env):
    """An adapter around a backend environment whose spaces are fixed at construction."""

    def __init__(self, name: str, observation_space: Box, action_space: Space):
        self.name = name
        self._obs_space = observation_space
        self._action_space = action_space

    @property
    def observation_space(self) -> Box:
        return self._obs_space

    @property
    def action_space(self) -> Space:
        return self._action_space

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


class Wrapper(Env):
    """An `Env` around another one; by default it changes nothing."""

    def __init__(self, env: Env):
        if not isinstance(env, Env):
            raise TypeError(f"`env` must be a jaxrl_si.envs.Env, got {type(env).__name__}.")
        self.env = env

    def reset(self, key: PRNGKeyArray) -> tuple[Any, TimeStep]:
        return self.env.reset(key)

    def step(self, state: Any, action: Array, key: PRNGKeyArray) -> tuple[Any, TimeStep]:
        return self.env.step(state, action, key)

    @property
    def observation_space(self) -> Box:
        return self.env.observation_space

    @property
    def action_space(self) -> Space:
        return self.env.action_space

    @property
    def unwrapped(self) -> Env:
        return self.env.unwrapped

    def env_axis_leaves(self, state: Any) -> Any:
        """The inner env's answer, for a wrapper whose state is its inner env's.

        A wrapper that overrides `reset` returns a state of its own, whose leaves only it knows:
        it must override this method too, or data parallelism could split a pooled statistic.
        """
        if type(self).reset is not Wrapper.reset:
            raise NotImplementedError(
                f"{type(self).__name__} keeps a state of its own (it overrides reset): define "
                f"env_axis_leaves(state) to say which of its leaves carry the env axis"
            )
        return self.env.env_axis_leaves(state)

    @property
    def num_envs(self) -> int | None:
        return self.env.num_envs

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.env!r})"


class MissingBackendError(ImportError):
    """An optional environment backend is not installed; the message names the extra to install."""


def import_backend(module: str, *, backend: str, extra: str = "envs"):
    """Import an optional backend module, or raise `MissingBackendError` naming the extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise MissingBackendError(
            f"The {backend} environments need the optional package `{module.split('.')[0]}`, "
            f"which is not installed; install it with: pip install 'jaxrl_si[{extra}]'"
        ) from err


def check_positive_int(name: str, value) -> int:
    """Raise `ValueError` unless `value` is a positive Python int (a static size)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"`{name}` must be a positive int, got {value!r}.")
    return int(value)


def constrain_env_state(env: Env, state: Any, constrain: Constrain) -> Any:
    """`constrain` (the layout hook) applied to the leaves of `state` that carry the env axis.

    `env.env_axis_leaves(state)` says which; pooled leaves are left as they are.
    """
    return jax.tree.map(lambda leaf, batched: constrain(leaf) if batched else leaf, state, env.env_axis_leaves(state))


def strong_dtypes(tree):
    """Every leaf as a strongly typed array of its own dtype.

    Python scalars and weakly typed leaves (e.g. `reward = 1.0`, MJX `data.time`, gymnax's
    `time` counter) would give the state a different type after `reset` than after `step`:
    `lax.scan` then refuses the carry, or `jit` recompiles on the second call.
    """
    return jax.tree.map(lambda x: _cast(x, x), tree)


def cast_like(tree, ref):
    """Cast `tree`'s leaves to the dtypes of `ref`'s (same structure), strongly typed."""
    if jax.tree.structure(tree) != jax.tree.structure(ref):
        return strong_dtypes(tree)
    return jax.tree.map(_cast, tree, ref)


def _cast(x, ref):
    """`x` as a strongly typed array of `ref`'s dtype; typed PRNG keys pass through."""
    dtype = jnp.result_type(ref)
    if jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
        return x
    return jax.lax.convert_element_type(x, dtype)
