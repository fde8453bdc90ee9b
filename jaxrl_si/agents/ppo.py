"""Proximal Policy Optimization as a frozen agent with pure `init`, `update` and `train`.

Schulman et al. 2017, "Proximal Policy Optimization Algorithms", arXiv 1707.06347 (Alg. 1,
Eq. 7 and 9), with the implementation details of the PureJaxRL / CleanRL lineage
(orthogonal init, advantage normalisation per minibatch, clipped value loss, global-norm
gradient clipping, linear learning-rate annealing, Adam eps 1e-5).

Where to start: `PPO.build(config)` makes the static parts once (the vectorised training env,
the actor-critic, the layout hook); its methods are pure functions of hyperparameters and keys:

    agent = PPO.build(PPOConfig())                            # env + network, built once
    state, metrics = jax.jit(agent.train)(hparams, key)       # one XLA program: scans inside
    jax.jit(jax.vmap(agent.train))(stacked_hparams, keys)     # a sweep: same program, no recompiles
    state, metrics = agent.update(hparams, agent.init(hparams, key))   # one iteration

Static settings (shapes, counts) live in the frozen, hashable `PPOConfig`; continuous
hyperparameters live in the `PPOHyperparams` pytree, so they can be traced and vmapped. One
`update` is one PPO iteration: a rollout of `rollout_length` steps in `num_envs`
environments, GAE, then `num_epochs` passes of `num_minibatches` minibatch steps.
Termination and truncation are kept apart: a truncated step bootstraps from V(final_obs).

Data parallelism: `PPO.build(config, constrain=parallel.batch_constraint(mesh))`. The agent
marks its batch axes with the hook (the env axis of the env state, as the env declares it,
and the rows of every minibatch) and never sees the mesh: each device steps its environments
and differentiates its slice, XLA all-reduces the gradients, and the results equal the
one-device run up to the order of float sums.

The module reads top down: config, hyperparameters, state, the agent and its public methods,
then the pieces of an update in the order they run (rollout, advantages, epochs, loss).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array, Float, PRNGKeyArray

from jaxrl_si import envs, nets
from jaxrl_si.errors import ConfigError, check_known_keys
from jaxrl_si.layout import Constrain, unconstrained
from jaxrl_si.losses import (
    clipped_value_loss,
    gae_advantages,
    k3_kl,
    normalize_advantages,
    ppo_clip_loss,
)
from jaxrl_si.metrics import episode_mean

POLICY_KINDS = ("auto", *nets.POLICY_KINDS)  # auto: categorical or gaussian from the action space


@dataclasses.dataclass(frozen=True)
class PPOConfig:
    """Static (shape-determining) settings. Defaults: PureJaxRL's CartPole configuration."""

    env: str = "gymnax:CartPole-v1"  # "<backend>:<name>", see jaxrl_si.envs.make
    num_envs: int = 4  # parallel environments in a rollout
    rollout_length: int = 128  # steps per environment per update
    num_epochs: int = 4  # passes over each rollout
    num_minibatches: int = 4  # minibatches per pass; must divide num_envs * rollout_length
    total_env_steps: int = 500_000  # environment steps of a whole run
    hidden_sizes: tuple[int, ...] = (64, 64)  # actor and critic MLP widths
    activation: str = "tanh"  # tanh | relu | gelu | silu
    policy_kind: str = "auto"  # auto (categorical / gaussian from the action space) | tanh_gaussian
    normalize_observations: bool = False  # running mean/std of observations, in the env state
    anneal_learning_rate: bool = True  # linear decay to 0 over the run
    bootstrap_truncation: bool = True  # V(final_obs) at time limits; False = PureJaxRL's done-as-terminal

    def __post_init__(self):
        for name in ("num_envs", "rollout_length", "num_epochs", "num_minibatches", "total_env_steps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"PPOConfig.{name} must be a positive int, got {value!r}.")
        if self.batch_size % self.num_minibatches:
            raise ConfigError(
                f"PPOConfig.num_minibatches={self.num_minibatches} must divide num_envs * rollout_length "
                f"= {self.batch_size}."
            )
        if self.num_updates < 1:
            raise ConfigError(
                f"PPOConfig.total_env_steps={self.total_env_steps} is less than one rollout "
                f"(num_envs * rollout_length = {self.batch_size})."
            )
        if self.policy_kind not in POLICY_KINDS:
            raise ConfigError(f"PPOConfig.policy_kind must be one of {POLICY_KINDS}, got {self.policy_kind!r}.")
        object.__setattr__(self, "hidden_sizes", tuple(self.hidden_sizes))

    @property
    def batch_size(self) -> int:
        """Transitions per update: num_envs * rollout_length."""
        return self.num_envs * self.rollout_length

    @property
    def minibatch_size(self) -> int:
        return self.batch_size // self.num_minibatches

    @property
    def num_updates(self) -> int:
        """Updates in a run: total_env_steps // batch_size (the remainder is not run)."""
        return self.total_env_steps // self.batch_size

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> PPOConfig:
        """Build from a dict; unknown keys are an error naming them and the valid ones."""
        check_known_keys("PPOConfig", values, (f.name for f in dataclasses.fields(cls)))
        return cls(**values)


class PPOHyperparams(flax.struct.PyTreeNode):
    """Continuous hyperparameters: pytree leaves, so they can be traced, vmapped and swept.

    Annotated `float` (what a CLI parses); any leaf may be a scalar array, traced or not, and a
    sweep stacks them along a leading axis.
    """

    learning_rate: float = 2.5e-4  # Adam step size (initial, if annealed)
    gamma: float = 0.99  # discount
    gae_lambda: float = 0.95  # GAE trace parameter
    clip_eps: float = 0.2  # ratio clip of the surrogate and the value loss
    ent_coef: float = 0.01  # entropy bonus weight
    vf_coef: float = 0.5  # value loss weight
    max_grad_norm: float = 0.5  # global-norm gradient clip (optax.clip_by_global_norm)


class PPOState(flax.struct.PyTreeNode):
    """Everything a run needs to continue exactly: params, optimiser, envs, observation, key."""

    params: Any
    opt_state: Any
    env_state: Any
    obs: Array  # [num_envs, *obs_shape] observation to act on next
    key: PRNGKeyArray
    update_step: Array  # int32 [], updates done so far


class Transition(flax.struct.PyTreeNode):
    """One rollout step for all envs; stacked to `[T, num_envs, ...]` by the scan."""

    obs: Array
    action: Array
    logp: Array
    value: Array
    reward: Array
    terminated: Array
    truncated: Array
    final_obs: Array
    info: dict[str, Array]  # the env's per-step extras (`episode_return`, ...; see `envs.TimeStep.info`)


class Rollout(flax.struct.PyTreeNode):
    """What `PPO.rollout` collected, for `PPO.learn`: the trajectory and where the envs stand.

    An agent that relabels rewards (e.g. from preferences) replaces `transitions.reward` between
    the two. `key` is the state's next key; `key_epochs` shuffles the minibatches.
    """

    transitions: Transition  # [rollout_length, num_envs, ...]
    env_state: Any
    last_obs: Array  # [num_envs, *obs_shape] observation after the last step
    key: PRNGKeyArray
    key_epochs: PRNGKeyArray


@dataclasses.dataclass(frozen=True, eq=False)
class PPO:
    """The static parts of a PPO run, built once: config, training env, network, layout hook.

    Never traced: jitted functions close over it. Compared and hashed by identity, so build
    one agent per configuration and keep it (each new agent is a new program to compile).
    """

    config: PPOConfig
    env: envs.Env  # `num_envs` vectorised copies, wrapped for training
    network: nets.ActorCritic
    constrain: Constrain = unconstrained  # layout hook for the env axis and minibatch rows

    @classmethod
    def build(cls, config: PPOConfig, *, constrain: Constrain = unconstrained, base_env: envs.Env | None = None) -> PPO:
        """Make the training env and the actor-critic for `config`.

        `base_env` replaces `envs.make(config.env)` under the training wrappers (e.g. the env
        with a `RewardFeatures` wrapper). Built under `ensure_compile_time_eval`: backends
        compute their spaces with jnp, which must stay concrete even when `build` is called
        while tracing.
        """
        with jax.ensure_compile_time_eval():
            env = envs.wrap_for_training(
                envs.make(config.env) if base_env is None else base_env,
                config.num_envs,
                normalize_observations=config.normalize_observations,
            )
        return cls(config, env, _network_for(config, env), constrain)

    @property
    def num_updates(self) -> int:
        """Updates in a whole run."""
        return self.config.num_updates

    @property
    def env_steps_per_update(self) -> int:
        return self.config.batch_size

    @property
    def data_parallel_sizes(self) -> dict[str, int]:
        """The sizes the layout hook splits over devices: the env batch and each minibatch."""
        return {"num_envs": self.config.num_envs, "minibatch_size": self.config.minibatch_size}

    def init(self, hparams: PPOHyperparams, key: PRNGKeyArray) -> PPOState:
        """Initial parameters, optimiser state and environments."""
        key, key_params, key_env = jax.random.split(key, 3)
        env_state, timestep = self.env.reset(key_env)
        params = self.network.init(key_params, timestep.obs[0])
        opt_state = make_optimizer(self.config, hparams).init(params)
        env_state = envs.constrain_env_state(self.env, env_state, self.constrain)
        return PPOState(params, opt_state, env_state, self.constrain(timestep.obs), key, jnp.zeros((), jnp.int32))

    def update(self, hparams: PPOHyperparams, state: PPOState) -> tuple[PPOState, dict[str, Array]]:
        """One PPO iteration: rollout, GAE, `num_epochs` x `num_minibatches` gradient steps.

        `learn(hparams, state, rollout(state))`. Metrics (scalars): `episode/return` (mean
        undiscounted return of the episodes that ended in this rollout, NaN if none did),
        `episode/count`, the loss parts averaged over the minibatch steps (`loss/policy`,
        `loss/value`, `loss/entropy`, `loss/approx_kl`, `loss/clip_fraction`),
        `optim/grad_norm` and `optim/learning_rate`.
        """
        return self.learn(hparams, state, self.rollout(state))

    def rollout(self, state: PPOState) -> Rollout:
        """`rollout_length` steps of every env with the current policy."""
        key, key_rollout, key_epochs = jax.random.split(state.key, 3)
        transitions, env_state, last_obs = _rollout(self, state, key_rollout)
        return Rollout(transitions, env_state, last_obs, key, key_epochs)

    def learn(self, hparams: PPOHyperparams, state: PPOState, rollout: Rollout) -> tuple[PPOState, dict[str, Array]]:
        """GAE on `rollout.transitions.reward`, then the epochs; the metrics of `update`.

        `episode/return` is the env's own return (`info['episode_return']`) whatever reward
        the rollout was relabelled with.
        """
        traj = rollout.transitions
        advantages, targets = _advantages(self, hparams, state.params, traj, rollout.last_obs)
        batch = (traj.replace(info={}), advantages, targets)  # the loss needs no env extras
        flat = jax.tree.map(lambda x: x.reshape((self.config.batch_size,) + x.shape[2:]), batch)
        epoch = functools.partial(_epoch, self, make_optimizer(self.config, hparams), hparams)
        (params, opt_state, _), aux = jax.lax.scan(
            epoch, (state.params, state.opt_state, flat), jax.random.split(rollout.key_epochs, self.config.num_epochs)
        )
        done = traj.terminated | traj.truncated
        metrics = {name: value.mean() for name, value in aux.items()}
        metrics["episode/return"] = episode_mean(traj.info["episode_return"], done)
        metrics["episode/count"] = done.sum().astype(jnp.float32)
        metrics["optim/learning_rate"] = learning_rate_at(self.config, hparams, state.update_step)
        next_state = PPOState(params, opt_state, rollout.env_state, rollout.last_obs, rollout.key, state.update_step + 1)
        return next_state, metrics

    def train(self, hparams: PPOHyperparams, key: PRNGKeyArray) -> tuple[PPOState, dict[str, Array]]:
        """A whole run: `init`, then `num_updates` updates in one `lax.scan`; metrics `[num_updates]`."""
        return jax.lax.scan(lambda state, _: self.update(hparams, state), self.init(hparams, key), None, length=self.num_updates)


def make_optimizer(config: PPOConfig, hparams: PPOHyperparams) -> optax.GradientTransformation:
    """Global-norm clipping then Adam (eps 1e-5), with the learning rate annealed per update.

    Built from (possibly traced) hyperparameters inside the traced function, so one compiled
    program serves every learning rate of a sweep.
    """
    steps_per_update = config.num_epochs * config.num_minibatches

    def learning_rate(count):
        return learning_rate_at(config, hparams, count // steps_per_update)

    return optax.chain(optax.clip_by_global_norm(hparams.max_grad_norm), optax.adam(learning_rate, eps=1e-5))


def learning_rate_at(config: PPOConfig, hparams: PPOHyperparams, update_step) -> Float[Array, ""]:
    """lr * (1 - update_step / num_updates) when annealing (PureJaxRL's schedule), else lr."""
    if not config.anneal_learning_rate:
        return jnp.asarray(hparams.learning_rate, jnp.float32)
    return hparams.learning_rate * (1.0 - update_step / config.num_updates)


def _network_for(config: PPOConfig, env: envs.Env) -> nets.ActorCritic:
    """The actor-critic for `env`'s spaces; `ConfigError` if `policy_kind` does not fit them."""
    kind = config.policy_kind
    if kind == "auto":
        kind = "categorical" if env.discrete_actions else "gaussian"
    if (kind == "categorical") != env.discrete_actions:
        raise ConfigError(f"policy_kind={kind!r} does not fit the action space of {config.env!r}.")
    return nets.ActorCritic(
        action_size=env.action_size,
        policy_kind=kind,
        hidden_sizes=config.hidden_sizes,
        activation=config.activation,
        obs_ndim=len(env.observation_shape),
    )


def _rollout(agent: PPO, state: PPOState, key: PRNGKeyArray) -> tuple[Transition, Any, Array]:
    """`rollout_length` steps of every env: the trajectory `[T, N, ...]`, env state, next observation."""
    step = functools.partial(_rollout_step, agent, state.params)
    (env_state, last_obs), traj = jax.lax.scan(
        step, (state.env_state, state.obs), jax.random.split(key, agent.config.rollout_length)
    )
    return traj, env_state, last_obs


def _rollout_step(agent: PPO, params, carry, key):
    env_state, obs = carry
    key_action, key_env = jax.random.split(key)
    dist, value = agent.network.apply(params, obs)
    action = dist.sample(key_action)
    env_state, ts = agent.env.step(env_state, action, key_env)
    env_state, ts = envs.constrain_env_state(agent.env, env_state, agent.constrain), agent.constrain(ts)
    transition = Transition(
        obs=obs,
        action=action,
        logp=dist.log_prob(action),
        value=value,
        reward=ts.reward,
        terminated=ts.terminated,
        truncated=ts.truncated,
        final_obs=ts.final_obs,
        info=ts.info,
    )
    return (env_state, ts.obs), transition


def _advantages(agent: PPO, hparams: PPOHyperparams, params, traj: Transition, last_obs) -> tuple[Array, Array]:
    """GAE advantages and value targets `[T, N]`; truncated steps bootstrap from V(final_obs)."""
    done = traj.terminated | traj.truncated
    terminated = traj.terminated if agent.config.bootstrap_truncation else done
    next_values = _next_values(agent, params, traj, last_obs)
    return gae_advantages(traj.reward, traj.value, next_values, terminated, done, gamma=hparams.gamma, lambda_=hparams.gae_lambda)


def _next_values(agent: PPO, params, traj: Transition, last_obs) -> Float[Array, "T N"]:
    """V(s_{t+1}) per step: the next step's value, or V(final_obs) where the episode was truncated."""
    _, last_value = agent.network.apply(params, last_obs)
    following = jnp.concatenate([traj.value[1:], last_value[None]], axis=0)
    if not agent.config.bootstrap_truncation:
        return following
    _, final_values = agent.network.apply(params, traj.final_obs)
    return jnp.where(traj.truncated, final_values, following)


def _epoch(agent: PPO, optimizer, hparams, carry, key):
    """One pass over the rollout in `num_minibatches` shuffled minibatches.

    Under a data-parallel layout each minibatch is split over devices: every device computes
    the loss and gradient of its rows and XLA all-reduces the gradients (the same mean as on
    one device). The shuffle is global, as on one device; the indices are split too, so that
    each device gathers only its own rows of each minibatch.
    """
    params, opt_state, batch = carry
    indices = jax.random.permutation(key, agent.config.batch_size).reshape(agent.config.num_minibatches, -1)
    indices = agent.constrain(indices, axis=1)
    minibatches = agent.constrain(jax.tree.map(lambda x: jnp.take(x, indices, axis=0), batch), axis=1)
    step = functools.partial(_minibatch_step, agent.network, optimizer, hparams)
    (params, opt_state), aux = jax.lax.scan(step, (params, opt_state), minibatches)
    return (params, opt_state, batch), aux


def _minibatch_step(network, optimizer, hparams, carry, batch):
    params, opt_state = carry
    grads, aux = jax.grad(functools.partial(_loss, network, hparams), has_aux=True)(params, batch)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    aux["optim/grad_norm"] = optax.tree.norm(grads)
    return (optax.apply_updates(params, updates), opt_state), aux


def _loss(network, hparams, params, batch):
    """PPO's total loss (Eq. 9) on a minibatch, and its parts."""
    transitions, advantages, targets = batch
    dist, value = network.apply(params, transitions.obs)
    logp = dist.log_prob(transitions.action)
    policy_loss = ppo_clip_loss(logp, transitions.logp, normalize_advantages(advantages), clip_eps=hparams.clip_eps).mean()
    value_loss = clipped_value_loss(value, transitions.value, targets, clip_eps=hparams.clip_eps).mean()
    entropy = dist.entropy().mean()
    total = policy_loss + hparams.vf_coef * value_loss - hparams.ent_coef * entropy
    aux = {
        "loss/policy": policy_loss,
        "loss/value": value_loss,
        "loss/entropy": entropy,
        "loss/approx_kl": k3_kl(transitions.logp, logp).mean(),  # KL(old || new), from the old policy's samples
        "loss/clip_fraction": jnp.mean(jnp.abs(jnp.exp(logp - transitions.logp) - 1.0) > hparams.clip_eps),
    }
    return total, aux
