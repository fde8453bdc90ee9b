r"""Episodes of any deterministic policy with Gaussian action noise, collected on device as `Episodes`.

Used to make offline datasets (`data.generate`, from PPO snapshots, as CPL rolls out its SAC
checkpoints with σ = 0.3; Hejna et al. 2023, arXiv 2310.13639, Sec. 5.1) and to collect a
self-improvement round's new data from the current policy. Pure: a key in, arrays out.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, PRNGKeyArray

from jaxrl_si import envs
from jaxrl_si.data.offline import Episodes


def acting_env(base_env: envs.Env) -> envs.Env:
    """One episode at a time, as PPO's agent acts (`envs.wrap_for_training` without auto-reset or
    vectorisation): continuous actions in [−1, 1], clipped and rescaled to the env's bounds."""
    return envs.RescaleAction(base_env, clip=True)


class _Carry(flax.struct.PyTreeNode):
    env_state: Any
    obs: Array
    alive: Array  # bool []: the episode has not ended before this step


class _Step(flax.struct.PyTreeNode):
    observation: Array
    action: Array
    reward: Array
    terminated: Array
    done: Array
    next_observation: Array  # s_{t+1} before any reset: the bootstrap state at a time limit
    features: Array
    alive: Array


def rollout_episodes(
    env: envs.Env,
    policy: Callable[[Array], Array],
    key: PRNGKeyArray,
    *,
    num_episodes: int,
    max_length: int,
    action_noise: float | Array = 0.0,
    value: Callable[[Array], Array] | None = None,
    advantage_discount: float | Array = 1.0,
    policy_index: int | Array = 0,
) -> Episodes:
    r"""`num_episodes` episodes of a deterministic policy with Gaussian action noise, as `Episodes`.

    Pure and jittable (`env`, `policy`, `value` and the two counts are static): one `lax.scan`
    of `max_length` steps over `num_episodes` vmapped copies of `env`, each reset once.

    `env` takes actions in [−1, 1] (`acting_env`) and has no auto-reset; `policy(obs [*obs])
    -> [A]` and `value(obs) -> []` see one raw observation. The action taken is
    a_t = clip(policy(s_t) + σ ε_t, −1, 1), ε_t ~ N(0, I), σ = `action_noise`. An episode ends at
    its first terminated or truncated step, or is cut (truncated) after `max_length` steps; the
    steps after its end are padding (zeros, flags False) and `length[e]` counts the real ones.
    `oracle_advantage` is A_t = r_t + γ_A (1 − terminal_t) V(s_{t+1}) − V(s_t) with γ_A =
    `advantage_discount` and s_{t+1} the observation the step reached (the bootstrap state where
    the episode was truncated); without `value`, V ≡ 0 and A_t = r_t. `features` is the env's
    `info['features']` (`RewardFeatures`), else `[E, T, 0]`. Shapes as in `Episodes`, E =
    `num_episodes`, T = `max_length`; `policy[e] = policy_index`.
    """
    if not isinstance(env.action_space, envs.Box) or np.any(env.action_space.low != -1) or np.any(env.action_space.high != 1):
        raise ValueError(f"`env` must take continuous actions in [-1, 1] (see acting_env), got {env.action_space!r}.")
    keys = jax.random.split(key, num_episodes)
    steps = jax.vmap(functools.partial(_episode, env, policy, max_length, action_noise))(keys)  # [E, T, ...]
    if value is None:
        advantage = steps.reward
    else:
        values = jax.vmap(jax.vmap(value))
        bootstrap = advantage_discount * (1.0 - steps.terminated) * values(steps.next_observation)
        advantage = steps.reward + bootstrap - values(steps.observation)
    alive = steps.alive
    last_step = jnp.arange(max_length) == max_length - 1
    real = lambda x: jnp.where(alive.reshape(alive.shape + (1,) * (x.ndim - 2)), x, jnp.zeros((), x.dtype))
    return Episodes(
        observation=real(steps.observation),
        action=real(steps.action),
        reward=real(steps.reward),
        discount=real(1.0 - steps.terminated.astype(jnp.float32)),
        is_first=alive & (jnp.arange(max_length) == 0),
        is_last=alive & (steps.done | last_step),
        is_terminal=alive & steps.terminated,
        features=real(steps.features),
        oracle_advantage=real(advantage.astype(jnp.float32)),
        length=alive.sum(-1).astype(jnp.int32),
        policy=jnp.full((num_episodes,), policy_index, jnp.int32),
    )


def _episode(env: envs.Env, policy, max_length: int, action_noise, key: PRNGKeyArray) -> _Step:
    """One episode's `max_length` steps `[T, ...]`; `alive` marks those before its end."""
    key_reset, key_steps = jax.random.split(key)
    env_state, ts = env.reset(key_reset)
    carry = _Carry(env_state, ts.obs, jnp.ones((), jnp.bool_))
    return jax.lax.scan(functools.partial(_step, env, policy, action_noise), carry, jax.random.split(key_steps, max_length))[1]


def _step(env: envs.Env, policy, action_noise, carry: _Carry, key: PRNGKeyArray) -> tuple[_Carry, _Step]:
    key_noise, key_env = jax.random.split(key)
    mode = jnp.asarray(policy(carry.obs), jnp.float32)
    action = jnp.clip(mode + action_noise * jax.random.normal(key_noise, mode.shape), -1.0, 1.0)
    env_state, ts = env.step(carry.env_state, action, key_env)
    features = ts.info.get("features", jnp.zeros((0,), jnp.float32))
    step = _Step(carry.obs, action, ts.reward, ts.terminated, ts.done, ts.final_obs, features, carry.alive)
    return _Carry(env_state, ts.obs, carry.alive & ~ts.done), step
