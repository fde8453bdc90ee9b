"""gymnax adapter: classic control, MinAtar, bsuite and misc environments (gymnax >= 1.0).

gymnax 1.x's `env.step` auto-resets internally and returns `(obs, state, reward, terminated,
truncated, info)`. This adapter calls the raw `step_env` plus `is_truncated` instead, so there
is no hidden reset (the `AutoReset` wrapper does it, once, keeping `final_obs`) and the time
limit (`params.max_steps_in_episode`, e.g. 500 for CartPole-v1) is reported as `truncated`,
never as `terminated`. Env params are fixed at construction and closed over (not traced).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
from jaxtyping import Array, PRNGKeyArray

from jaxrl_si.envs.core import (
    BackendEnv,
    Box,
    Discrete,
    Space,
    TimeStep,
    cast_like,
    import_backend,
    initial_timestep,
    strong_dtypes,
    transition_timestep,
)
from jaxrl_si.errors import ConfigError


def gymnax_env_names() -> list[str]:
    """Names accepted by `GymnaxEnv` (gymnax's registry)."""
    gymnax = import_backend("gymnax", backend="gymnax")
    return list(gymnax.registered_envs)


def _convert_space(space, what: str) -> Space:
    kind = type(space).__name__
    if kind == "Discrete":
        return Discrete(int(space.n))
    if kind == "Box":
        return Box(space.low, space.high, tuple(space.shape))
    raise NotImplementedError(f"gymnax {what} space {kind} is not supported (only Discrete and Box).")


class GymnaxEnv(BackendEnv):
    """A gymnax environment behind the `Env` protocol.

    Args:
      name: a gymnax id, e.g. "CartPole-v1", "Breakout-MinAtar", "Catch-bsuite".
      params: overrides of fields of the env's default `EnvParams`, e.g.
        `{"max_steps_in_episode": 100}`; unknown fields raise.
      **env_kwargs: passed to `gymnax.make` (the env constructor).

    Observations are cast to float32 (MinAtar's boolean grids included); rewards to float32.
    """

    def __init__(self, name: str, *, params: Mapping[str, Any] | None = None, **env_kwargs):
        valid = gymnax_env_names()
        if name not in valid:
            raise ConfigError(f"unknown gymnax environment {name!r}; choose one of {sorted(valid)}")
        gymnax = import_backend("gymnax", backend="gymnax")
        # gymnax builds spaces and tables with jnp: keep them concrete if we are being traced.
        with jax.ensure_compile_time_eval():
            self.gymnax_env, default_params = gymnax.make(name, **env_kwargs)
            self.params = _override_params(default_params, params or {})
            obs_space = _convert_space(self.gymnax_env.observation_space(self.params), "observation")
            action_space = _convert_space(self.gymnax_env.action_space(self.params), "action")
        if not isinstance(obs_space, Box):
            raise NotImplementedError(f"{name}: only Box observations are supported.")
        super().__init__(name, obs_space, action_space)

    def reset(self, key: PRNGKeyArray) -> tuple[Any, TimeStep]:
        obs, state = self.gymnax_env.reset_env(key, self.params)
        # Strong dtypes (gymnax keeps e.g. `time` as a Python int) so reset and step states match.
        return strong_dtypes(state), initial_timestep(obs.astype(jnp.float32))

    def step(self, state, action: Array, key: PRNGKeyArray) -> tuple[Any, TimeStep]:
        obs, new_state, reward, terminated, _ = self.gymnax_env.step_env(key, state, action, self.params)
        truncated = self.gymnax_env.is_truncated(new_state, self.params)
        return cast_like(new_state, state), transition_timestep(obs.astype(jnp.float32), reward, terminated, truncated)


def _override_params(default_params, overrides: Mapping[str, Any]):
    names = {f.name for f in dataclasses.fields(default_params)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise ConfigError(f"unknown gymnax params {unknown}; valid fields: {sorted(names)}")
    return default_params.replace(**overrides) if overrides else default_params
