"""Environments: one pure, jittable `Env` protocol, backend adapters, wrappers, probe envs.

`make("gymnax:CartPole-v1")`, `make("brax:ant")`, `make("playground:CheetahRun")`,
`make("probe:two_step")`; then `wrap_for_training(env, num_envs)`. See `core` for the exact
meaning of `obs`, `final_obs`, `terminated` and `truncated`. The gymnax, Brax and Playground
adapters import their backends lazily (extras: `pip install 'jaxrl_si[envs]'` for gymnax and
Brax, `'jaxrl_si[playground]'` for MuJoCo Playground).
"""

from jaxrl_si.envs.brax_env import BraxEnv, BraxStyleEnv
from jaxrl_si.envs.core import (
    Box,
    Discrete,
    Env,
    MissingBackendError,
    Space,
    TimeStep,
    Wrapper,
    cast_like,
    constrain_env_state,
    initial_timestep,
    strong_dtypes,
    transition_timestep,
)
from jaxrl_si.envs.gymnax_env import GymnaxEnv
from jaxrl_si.envs.playground_env import PlaygroundEnv
from jaxrl_si.envs.probes import (
    PROBES,
    ActionRewardEnv,
    ConstantRewardEnv,
    ContinuousActionEnv,
    ObservationActionEnv,
    ObservationRewardEnv,
    ProbeState,
    TwoStepEnv,
)
from jaxrl_si.envs.registry import BACKENDS, env_names, make
from jaxrl_si.envs.wrappers import (
    AutoReset,
    CachedAutoReset,
    CachedResetState,
    ClipAction,
    EpisodeStatistics,
    EpisodeStatsState,
    NormalizeObservation,
    NormalizeObsState,
    RescaleAction,
    RewardFeatures,
    RunningMeanStd,
    TimeLimit,
    TimeLimitState,
    VectorEnv,
    vectorize,
    wrap_for_training,
)

__all__ = [
    "BACKENDS",
    "PROBES",
    "ActionRewardEnv",
    "AutoReset",
    "Box",
    "CachedAutoReset",
    "CachedResetState",
    "BraxEnv",
    "BraxStyleEnv",
    "ClipAction",
    "ConstantRewardEnv",
    "ContinuousActionEnv",
    "Discrete",
    "Env",
    "EpisodeStatistics",
    "EpisodeStatsState",
    "GymnaxEnv",
    "MissingBackendError",
    "NormalizeObsState",
    "NormalizeObservation",
    "ObservationActionEnv",
    "ObservationRewardEnv",
    "PlaygroundEnv",
    "ProbeState",
    "RescaleAction",
    "RewardFeatures",
    "RunningMeanStd",
    "Space",
    "TimeLimit",
    "TimeLimitState",
    "TimeStep",
    "TwoStepEnv",
    "VectorEnv",
    "Wrapper",
    "cast_like",
    "constrain_env_state",
    "env_names",
    "initial_timestep",
    "make",
    "strong_dtypes",
    "transition_timestep",
    "vectorize",
    "wrap_for_training",
]
