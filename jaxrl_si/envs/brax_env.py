"""Brax adapter (`brax.envs`): cheap continuous control that runs on CPU.

Brax environments return a `State(pipeline_state, obs, reward, done, metrics, info)` whose
`done` is only natural termination (Brax's own `EpisodeWrapper` would fold the time limit into
it). The adapter maps `done` to `terminated` and never truncates; `make("brax:...")` adds a
`TimeLimit` so truncation stays separate. Brax's trainers do not run on jax 0.10; its
environments do. Actions are in [-1, 1] (Brax envs rescale to actuator ranges themselves).
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
from jaxtyping import Array, PRNGKeyArray

from jaxrl_si.envs.core import (
    BackendEnv,
    Box,
    TimeStep,
    cast_like,
    import_backend,
    initial_timestep,
    strong_dtypes,
    transition_timestep,
)
from jaxrl_si.errors import ConfigError


class BraxStyleEnv(BackendEnv):
    """Adapter for envs with brax's `reset(rng) -> State` / `step(State, action) -> State`.

    `state.done` (float 0/1) becomes `terminated`; `truncated` is always False here (add a
    `TimeLimit`). `step` ignores its key: these envs are deterministic given the state.
    """

    expensive_reset = True  # pipeline init; Playground's DM Control also settles for 200 steps

    def __init__(self, env, name: str):
        self.backend_env = env
        # Shape from an abstract reset: the backends' `observation_size` runs a real reset.
        obs = jax.eval_shape(env.reset, jax.random.PRNGKey(0)).obs
        if not hasattr(obs, "shape"):
            raise NotImplementedError(f"{name}: dict observations are not supported; only array observations.")
        super().__init__(name, Box(-math.inf, math.inf, obs.shape), Box(-1.0, 1.0, (int(env.action_size),)))

    def reset(self, key: PRNGKeyArray) -> tuple[Any, TimeStep]:
        state = strong_dtypes(self.backend_env.reset(key))
        return state, initial_timestep(state.obs.astype(jnp.float32))

    def step(self, state, action: Array, key: PRNGKeyArray) -> tuple[Any, TimeStep]:
        del key
        new_state = cast_like(self.backend_env.step(state, action), state)
        ts = transition_timestep(new_state.obs.astype(jnp.float32), new_state.reward, new_state.done > 0.5, False)
        return new_state, ts


def brax_env_names() -> list[str]:
    """Names in `brax.envs`' registry."""
    envs = import_backend("brax.envs", backend="brax")
    return sorted(getattr(envs, "_envs", {}))


class BraxEnv(BraxStyleEnv):
    """`brax.envs.get_environment(name, **env_kwargs)` behind the `Env` protocol.

    e.g. `BraxEnv("inverted_pendulum")`, `BraxEnv("ant", backend="positional")`. No time limit:
    use `make("brax:ant")` (adds `TimeLimit(episode_length=1000)`) or wrap it yourself.
    """

    def __init__(self, name: str, **env_kwargs):
        envs = import_backend("brax.envs", backend="brax")
        valid = brax_env_names()
        if valid and name not in valid:
            raise ConfigError(f"unknown brax environment {name!r}; choose one of {valid}")
        with jax.ensure_compile_time_eval():  # concrete system arrays even when traced
            env = envs.get_environment(name, **env_kwargs)
        super().__init__(env, name)
