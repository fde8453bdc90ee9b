"""Probe environments with known optimal values, for fast correctness tests of agents.

Each isolates one piece of an RL agent (after Andy Jones' "Debugging RL, Without the Agonizing
Pain", and rejax's tests/environments.py); a bug in value fitting, reward sign, discounting,
the policy gradient or the continuous-action head shows up in seconds. Observations are
float32 of shape `[1]`; episodes end by termination (no truncation) after one or two steps.

| env                        | obs          | reward                         | optimum                     |
|----------------------------|--------------|--------------------------------|-----------------------------|
| ConstantRewardEnv          | 0            | 1                              | V = 1                       |
| ObservationRewardEnv       | +-1 random   | obs                            | V(o) = o                    |
| TwoStepEnv                 | 0, then 1    | 0, then 1                      | V(0) = gamma, V(1) = 1      |
| ActionRewardEnv            | 0            | 1 iff action == 1              | pi* = 1, V* = 1             |
| ObservationActionEnv       | +-1 random   | 1 iff action == (obs > 0)      | pi*(o) = [o > 0], V* = 1    |
| ContinuousActionEnv        | +-1 random   | -(a - obs / 2)^2               | pi*(o) = o / 2, V* = 0      |

The first three ignore the action; `continuous_actions=True` gives them a `Box(-1, 1, (1,))`
action space so the value path of Gaussian-policy agents can be probed too.
"""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int, PRNGKeyArray

from jaxrl_si.envs.core import Box, Discrete, Env, Space, TimeStep, initial_timestep, transition_timestep


class ProbeState(flax.struct.PyTreeNode):
    obs: Float[Array, "1"]
    t: Int[Array, ""]  # steps taken in the episode


class _ProbeEnv(Env):
    """Shared plumbing: obs drawn at reset, fixed horizon, `_reward(state, action)`."""

    horizon: int = 1
    random_obs: bool = False

    def __init__(self, *, continuous_actions: bool = False):
        self._action_space: Space = Box(-1.0, 1.0, (1,)) if continuous_actions else Discrete(2)

    @property
    def observation_space(self) -> Box:
        return Box(-1.0, float(self.horizon), (1,))

    @property
    def action_space(self) -> Space:
        return self._action_space

    def reset(self, key: PRNGKeyArray) -> tuple[ProbeState, TimeStep]:
        if self.random_obs:
            obs = jnp.where(jax.random.bernoulli(key, 0.5, (1,)), 1.0, -1.0).astype(jnp.float32)
        else:
            obs = jnp.zeros((1,), jnp.float32)
        return ProbeState(obs, jnp.zeros((), jnp.int32)), initial_timestep(obs)

    def step(self, state: ProbeState, action: Array, key: PRNGKeyArray) -> tuple[ProbeState, TimeStep]:
        del key
        t = state.t + 1
        obs = self._next_obs(state, t)
        reward = self._reward(state, action)
        return ProbeState(obs, t), transition_timestep(obs, reward, t >= self.horizon, False)

    def _next_obs(self, state: ProbeState, t: Array) -> Array:
        del t
        return state.obs

    def _reward(self, state: ProbeState, action: Array) -> Array:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(action_space={self._action_space})"


class ConstantRewardEnv(_ProbeEnv):
    """One step, reward 1, any action: V(s_0) = 1. Probes value-target / loss plumbing."""

    def _reward(self, state, action):
        return jnp.ones((), jnp.float32)


class ObservationRewardEnv(_ProbeEnv):
    """One step, obs uniform in {-1, +1}, reward = obs: V(o) = o. Probes obs -> value."""

    random_obs = True

    def _reward(self, state, action):
        return state.obs[0]


class TwoStepEnv(_ProbeEnv):
    """Two steps, obs = [t] (0, 1, then terminal 2), reward 0 then 1.

    V(obs=0) = gamma, V(obs=1) = 1: probes discounting and bootstrapping from the next state.
    """

    horizon = 2

    def _next_obs(self, state, t):
        return jnp.full((1,), t, jnp.float32)

    def _reward(self, state, action):
        return (state.t == 1).astype(jnp.float32)


class ActionRewardEnv(_ProbeEnv):
    """One step, obs 0, Discrete(2), reward 1 iff action == 1: pi* = 1, V* = 1 (uniform: 0.5).

    Probes the sign and wiring of the policy gradient.
    """

    def __init__(self):
        super().__init__(continuous_actions=False)

    def _reward(self, state, action):
        return (action == 1).astype(jnp.float32)


class ObservationActionEnv(_ProbeEnv):
    """One step, obs uniform in {-1, +1}, reward 1 iff action == (obs > 0): V* = 1.

    Probes that the policy conditions on the observation (batch/axis mix-ups break it).
    """

    random_obs = True

    def __init__(self):
        super().__init__(continuous_actions=False)

    def _reward(self, state, action):
        return (action == (state.obs[0] > 0).astype(jnp.int32)).astype(jnp.float32)


class ContinuousActionEnv(_ProbeEnv):
    """One step, obs uniform in {-1, +1}, Box(-1, 1, (1,)), reward -(a - obs/2)^2.

    pi*(o) = o / 2 (inside the action bounds), V* = 0; a policy that ignores obs gets at best
    -1/4. Probes Gaussian heads, log-probs and action scaling.
    """

    random_obs = True

    def __init__(self):
        super().__init__(continuous_actions=True)

    def _reward(self, state, action):
        return -jnp.sum(jnp.square(action - 0.5 * state.obs))


PROBES: dict[str, type[_ProbeEnv]] = {
    "constant_reward": ConstantRewardEnv,
    "observation_reward": ObservationRewardEnv,
    "two_step": TwoStepEnv,
    "action_reward": ActionRewardEnv,
    "observation_action": ObservationActionEnv,
    "continuous_action": ContinuousActionEnv,
}
