"""`make("backend:name", **kwargs)`: one constructor for every environment backend.

| prefix        | example                          | kwargs                                           |
|---------------|----------------------------------|--------------------------------------------------|
| `probe:`      | `probe:two_step`                 | `continuous_actions` (first three probes)        |
| `gymnax:`     | `gymnax:CartPole-v1`             | `params={...}` (EnvParams overrides), env kwargs |
| `brax:`       | `brax:inverted_pendulum`         | `episode_length=1000`, brax env kwargs           |
| `playground:` | `playground:CheetahRun`          | `episode_length` (config's), `config_overrides`  |
| `maze:`       | `maze:medium`                    | `episode_length=500`, `task`, `step_size`, ...   |

`make` returns a single environment with its time limit (truncation) but WITHOUT auto-reset;
compose the rest with the wrappers, e.g. `wrap_for_training(make(...), num_envs)`. Backends
other than the probes are imported only when asked for, and a missing one raises an
`ImportError` naming the extra to install.
"""

from __future__ import annotations

from collections.abc import Callable

from jaxrl_si.envs.core import Env
from jaxrl_si.envs.probes import PROBES
from jaxrl_si.envs.wrappers import TimeLimit
from jaxrl_si.errors import ConfigError


def _make_probe(name: str, **kwargs) -> Env:
    if name not in PROBES:
        raise ConfigError(f"unknown probe environment {name!r}; choose one of {sorted(PROBES)}")
    return PROBES[name](**kwargs)


def _make_gymnax(name: str, **kwargs) -> Env:
    from jaxrl_si.envs.gymnax_env import GymnaxEnv

    return GymnaxEnv(name, **kwargs)


def _make_brax(name: str, *, episode_length: int | None = 1000, **kwargs) -> Env:
    from jaxrl_si.envs.brax_env import BraxEnv

    env = BraxEnv(name, **kwargs)
    return env if episode_length is None else TimeLimit(env, episode_length)


def _make_playground(name: str, *, episode_length: int | None = None, **kwargs) -> Env:
    from jaxrl_si.envs.playground_env import PlaygroundEnv

    env = PlaygroundEnv(name, **kwargs)
    return TimeLimit(env, env.episode_length if episode_length is None else episode_length)


def _make_maze(name: str, *, episode_length: int | None = 500, **kwargs) -> Env:
    from jaxrl_si.envs.maze import PointMaze

    env = PointMaze(name, **kwargs)
    return env if episode_length is None else TimeLimit(env, episode_length)


_FACTORIES: dict[str, Callable[..., Env]] = {
    "probe": _make_probe,
    "gymnax": _make_gymnax,
    "brax": _make_brax,
    "playground": _make_playground,
    "maze": _make_maze,
}
BACKENDS = tuple(_FACTORIES)


def make(name: str, **kwargs) -> Env:
    """Build the environment `"<backend>:<env name>"`; see the module docstring for kwargs.

    Unknown backends or names raise `ValueError` listing the valid choices. Safe to call
    while tracing (e.g. inside a jitted `init`): the adapters build backend constants (spaces,
    action tables, physics models) under `jax.ensure_compile_time_eval`, so no tracer is
    stored on the env object.
    """
    backend, sep, env_name = name.partition(":")
    if not sep or backend not in _FACTORIES:
        raise ConfigError(f"environment name {name!r} must be '<backend>:<env>' with backend one of {list(BACKENDS)}")
    return _FACTORIES[backend](env_name, **kwargs)


def env_names(backend: str) -> list[str]:
    """The environment names `make` accepts after `"<backend>:"` (imports that backend)."""
    if backend == "probe":
        return sorted(PROBES)
    if backend == "gymnax":
        from jaxrl_si.envs.gymnax_env import gymnax_env_names as names
    elif backend == "brax":
        from jaxrl_si.envs.brax_env import brax_env_names as names
    elif backend == "playground":
        from jaxrl_si.envs.playground_env import playground_env_names as names
    elif backend == "maze":
        from jaxrl_si.envs.maze import LAYOUTS

        return sorted(LAYOUTS)
    else:
        raise ConfigError(f"unknown backend {backend!r}; choose one of {list(BACKENDS)}")
    return names()
