"""MuJoCo Playground adapter: the DeepMind Control suite in MJX (CheetahRun, WalkerWalk, ...).

`mujoco_playground.registry.load(name, config_overrides={"impl": "jax", ...})`; the default
`impl="warp"` also runs on CPU but far slower (measured on a 2-core CPU with playground 0.2.0:
58 s to compile a reset, about 200 steps/s at 8 envs). Playground envs follow Brax's `State`
interface, with `done` meaning natural termination only (NaN physics for DM Control); episodes
end by the time limit `config.episode_length` (1000 for the suite), which
`make("playground:...")` adds as a `TimeLimit`, so it is reported as `truncated`.

Playground's `reset` returns `data.time` weakly typed and `step` strongly typed, which makes
the second jitted `step` recompile; the adapter casts state leaves to fixed dtypes (`cast_like`).
Slow on CPU (tens of seconds to compile): CPU tests use tiny budgets.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax

from jaxrl_si.envs.brax_env import BraxStyleEnv
from jaxrl_si.envs.core import import_backend
from jaxrl_si.errors import ConfigError

_DEFAULT_OVERRIDES = {"impl": "jax"}


def _registry():
    # `registry` is an attribute of the package (re-exported from `_src`), not a submodule.
    return import_backend("mujoco_playground", backend="MuJoCo Playground", extra="playground").registry


def playground_env_names() -> list[str]:
    """Names in MuJoCo Playground's registry (DM Control suite, locomotion, manipulation)."""
    return list(getattr(_registry(), "ALL_ENVS", ()))


class PlaygroundEnv(BraxStyleEnv):
    """A MuJoCo Playground environment behind the `Env` protocol.

    Args:
      name: e.g. "CheetahRun", "WalkerWalk", "HopperHop", "CartpoleBalance".
      config_overrides: merged over `{"impl": "jax"}` and passed to `registry.load`.

    Attributes:
      episode_length: the config's `episode_length` (used by `make` for the `TimeLimit`).
    """

    def __init__(self, name: str, *, config_overrides: Mapping[str, Any] | None = None):
        registry = _registry()
        valid = playground_env_names()
        if valid and name not in valid:
            raise ConfigError(f"unknown MuJoCo Playground environment {name!r}; choose one of {sorted(valid)}")
        overrides = {**_DEFAULT_OVERRIDES, **(config_overrides or {})}
        with jax.ensure_compile_time_eval():  # concrete model arrays even when traced
            env = registry.load(name, config_overrides=overrides)
        config = getattr(env, "_config", None)
        get = (lambda k, d: config.get(k, d)) if config is not None else (lambda k, d: d)  # noqa: E731
        if int(get("action_repeat", 1)) != 1:
            raise NotImplementedError(f"{name}: action_repeat != 1 is not supported by this adapter.")
        self.episode_length = int(get("episode_length", 1000))
        super().__init__(env, name)
