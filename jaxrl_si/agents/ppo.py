"""Proximal Policy Optimization as pure functions: `init`, `update`, and `train(hparams, key)`.

Schulman et al. 2017, "Proximal Policy Optimization Algorithms", arXiv 1707.06347 (Alg. 1,
Eq. 7 and 9), with the implementation details of the PureJaxRL / CleanRL lineage
(orthogonal init, advantage normalisation per minibatch, clipped value loss, global-norm
gradient clipping, linear learning-rate annealing, Adam eps 1e-5).

Static settings (shapes, counts) live in the frozen, hashable `PPOConfig`; continuous
hyperparameters live in the `PPOHyperparams` pytree, so

    train = make_train(config)                       # cached per config
    state, metrics = jax.jit(train)(hparams, key)    # one XLA program: scans inside
    jax.jit(jax.vmap(train))(stacked_hparams, keys)  # a sweep: same program, no recompiles

One `update` is one PPO iteration: a rollout of `rollout_length` steps in `num_envs`
environments, GAE, then `num_epochs` passes of `num_minibatches` minibatch steps.

Data parallelism: given a mesh (`make_train(config, mesh=...)`), the environments and every
minibatch are split over its `data` axis by sharding constraints, so each device steps its
environments and differentiates its slice, and XLA all-reduces the gradients; parameters and
optimiser state are replicated. The algorithm is unchanged: results equal the single-device run
up to the order of floating-point sums. `jit(parallel.vmap_members(train, mesh))` runs a sweep
with members over the mesh's `sweep` axis and each member's batch over `data`.
Termination and truncation are kept apart: a truncated step bootstraps from V(final_obs).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh
from jaxtyping import Array, Float, PRNGKeyArray

from jaxrl_si import envs, loop
from jaxrl_si.losses.policy_gradient import clipped_value_loss, normalize_advantages, ppo_clip_loss
from jaxrl_si.losses.returns import gae_advantages
from jaxrl_si.nets import ActorCritic
from jaxrl_si.parallel import check_divides_data_axis, shard_batch_axis

POLICY_KINDS = ("auto", "categorical", "gaussian", "tanh_gaussian")


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
                raise ValueError(f"PPOConfig.{name} must be a positive int, got {value!r}.")
        if self.batch_size % self.num_minibatches:
            raise ValueError(
                f"PPOConfig.num_minibatches={self.num_minibatches} must divide num_envs * rollout_length "
                f"= {self.batch_size}."
            )
        if self.num_updates < 1:
            raise ValueError(
                f"PPOConfig.total_env_steps={self.total_env_steps} is less than one rollout "
                f"(num_envs * rollout_length = {self.batch_size})."
            )
        if self.policy_kind not in POLICY_KINDS:
            raise ValueError(f"PPOConfig.policy_kind must be one of {POLICY_KINDS}, got {self.policy_kind!r}.")
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
        unknown = set(values) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown PPOConfig keys {sorted(unknown)}; valid keys: {[f.name for f in dataclasses.fields(cls)]}")
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
    episode_return: Array


@functools.cache
def build_env_and_network(config: PPOConfig) -> tuple[envs.Env, ActorCritic]:
    """The vectorised training env and the actor-critic for `config` (cached: static objects).

    Built under `ensure_compile_time_eval`: backends compute their spaces with jnp, which must
    stay concrete even when the first call happens while tracing.
    """
    with jax.ensure_compile_time_eval():
        env = envs.wrap_for_training(
            envs.make(config.env), config.num_envs, normalize_observations=config.normalize_observations
        )
    kind = config.policy_kind
    if kind == "auto":
        kind = "categorical" if env.discrete_actions else "gaussian"
    if (kind == "categorical") != env.discrete_actions:
        raise ValueError(f"policy_kind={kind!r} does not fit the action space of {config.env!r}.")
    network = ActorCritic(
        action_size=env.action_size,
        policy_kind=kind,
        hidden_sizes=config.hidden_sizes,
        activation=config.activation,
        obs_ndim=len(env.observation_shape),
    )
    return env, network


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


def init(config: PPOConfig, hparams: PPOHyperparams, key: PRNGKeyArray, *, mesh: Mesh | None = None) -> PPOState:
    """Initial parameters, optimiser state and environments (split over `mesh`'s `data` axis)."""
    _check_data_axis(config, mesh)
    env, network = build_env_and_network(config)
    key, key_params, key_env = jax.random.split(key, 3)
    env_state, timestep = _shard_envs(mesh, *env.reset(key_env))
    params = network.init(key_params, timestep.obs[0])
    opt_state = make_optimizer(config, hparams).init(params)
    return PPOState(params, opt_state, env_state, timestep.obs, key, jnp.zeros((), jnp.int32))


def _check_data_axis(config: PPOConfig, mesh: Mesh | None) -> None:
    """Raise `ValueError` unless the mesh's `data` axis divides the env batch and the minibatch."""
    check_divides_data_axis(mesh, num_envs=config.num_envs, minibatch_size=config.minibatch_size)


def _shard_envs(mesh: Mesh | None, env_state, timestep: envs.TimeStep):
    """Split the environments over `data` (a layout hint, see `shard_batch_axis`).

    `VectorEnv` gives every leaf of its state and of the timestep a leading env axis; the
    observation statistics of `NormalizeObservation` (outside it) are pooled and stay whole.
    """
    if isinstance(env_state, envs.NormalizeObsState):
        env_state = env_state.replace(env_state=shard_batch_axis(env_state.env_state, mesh))
    else:
        env_state = shard_batch_axis(env_state, mesh)
    return env_state, shard_batch_axis(timestep, mesh)


def _rollout_step(env, network, mesh, carry, key):
    params, env_state, obs = carry
    key_action, key_env = jax.random.split(key)
    dist, value = network.apply(params, obs)
    action = dist.sample(key_action)
    env_state, ts = _shard_envs(mesh, *env.step(env_state, action, key_env))
    transition = Transition(
        obs=obs,
        action=action,
        logp=dist.log_prob(action),
        value=value,
        reward=ts.reward,
        terminated=ts.terminated,
        truncated=ts.truncated,
        final_obs=ts.final_obs,
        episode_return=ts.info["episode_return"],
    )
    return (params, env_state, ts.obs), transition


def _next_values(config, network, params, traj: Transition, last_obs) -> Float[Array, "T N"]:
    """V(s_{t+1}) per step: the next step's value, or V(final_obs) where the episode was truncated."""
    _, last_value = network.apply(params, last_obs)
    following = jnp.concatenate([traj.value[1:], last_value[None]], axis=0)
    if not config.bootstrap_truncation:
        return following
    _, final_values = network.apply(params, traj.final_obs)
    return jnp.where(traj.truncated, final_values, following)


def _loss(network, hparams, params, batch):
    """PPO's total loss (Eq. 9) on a minibatch, and its parts."""
    transitions, advantages, targets = batch
    dist, value = network.apply(params, transitions.obs)
    logp = dist.log_prob(transitions.action)
    policy_loss = ppo_clip_loss(logp, transitions.logp, normalize_advantages(advantages), clip_eps=hparams.clip_eps).mean()
    value_loss = clipped_value_loss(value, transitions.value, targets, clip_eps=hparams.clip_eps).mean()
    entropy = dist.entropy().mean()
    total = policy_loss + hparams.vf_coef * value_loss - hparams.ent_coef * entropy
    log_ratio = logp - transitions.logp
    aux = {
        "loss/policy": policy_loss,
        "loss/value": value_loss,
        "loss/entropy": entropy,
        "loss/approx_kl": jnp.mean(jnp.expm1(log_ratio) - log_ratio),  # k3 estimate of KL(old||new)
        "loss/clip_fraction": jnp.mean(jnp.abs(jnp.exp(log_ratio) - 1.0) > hparams.clip_eps),
    }
    return total, aux


def _minibatch_step(network, optimizer, hparams, carry, batch):
    params, opt_state = carry
    grads, aux = jax.grad(functools.partial(_loss, network, hparams), has_aux=True)(params, batch)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    aux["optim/grad_norm"] = optax.tree.norm(grads)
    return (optax.apply_updates(params, updates), opt_state), aux


def _epoch(config, network, optimizer, hparams, mesh, carry, key):
    """One pass over the rollout in `num_minibatches` shuffled minibatches.

    With a `data` axis each minibatch is split over it: every device computes the loss
    and gradient of its slice and XLA all-reduces the gradients (the same mean as on one device).
    """
    params, opt_state, batch = carry
    # The shuffle is global, as on one device, so the rollout is all-gathered over `data`; split
    # the indices too, so that each device then gathers only its own rows of each minibatch.
    indices = jax.random.permutation(key, config.batch_size).reshape(config.num_minibatches, -1)
    indices = shard_batch_axis(indices, mesh, axis=1)
    minibatches = shard_batch_axis(jax.tree.map(lambda x: jnp.take(x, indices, axis=0), batch), mesh, axis=1)
    step = functools.partial(_minibatch_step, network, optimizer, hparams)
    (params, opt_state), aux = jax.lax.scan(step, (params, opt_state), minibatches)
    return (params, opt_state, batch), aux


def update(
    config: PPOConfig, hparams: PPOHyperparams, state: PPOState, *, mesh: Mesh | None = None
) -> tuple[PPOState, dict[str, Array]]:
    """One PPO iteration: rollout, GAE, `num_epochs` x `num_minibatches` gradient steps.

    Metrics (scalars): `episode/return` (mean undiscounted return of the episodes that ended
    in this rollout, NaN if none did), `episode/count`, the loss parts averaged over the
    minibatch steps, `optim/learning_rate`. With `mesh`, environments and minibatches are split
    over its `data` axis (`num_envs` and the minibatch size must divide it: `ValueError`).
    """
    _check_data_axis(config, mesh)
    env, network = build_env_and_network(config)
    optimizer = make_optimizer(config, hparams)
    key, key_rollout, key_epochs = jax.random.split(state.key, 3)

    rollout = functools.partial(_rollout_step, env, network, mesh)
    (_, env_state, last_obs), traj = jax.lax.scan(
        rollout, (state.params, state.env_state, state.obs), jax.random.split(key_rollout, config.rollout_length)
    )
    done = traj.terminated | traj.truncated
    terminated = traj.terminated if config.bootstrap_truncation else done
    advantages, targets = gae_advantages(
        traj.reward,
        traj.value,
        _next_values(config, network, state.params, traj, last_obs),
        terminated,
        done,
        gamma=hparams.gamma,
        lambda_=hparams.gae_lambda,
    )

    flat = jax.tree.map(lambda x: x.reshape((config.batch_size,) + x.shape[2:]), (traj, advantages, targets))
    epoch = functools.partial(_epoch, config, network, optimizer, hparams, mesh)
    (params, opt_state, _), aux = jax.lax.scan(
        epoch, (state.params, state.opt_state, flat), jax.random.split(key_epochs, config.num_epochs)
    )

    episodes = done.sum()
    metrics = {name: value.mean() for name, value in aux.items()}
    metrics["episode/return"] = jnp.where(
        episodes > 0, jnp.sum(jnp.where(done, traj.episode_return, 0.0)) / jnp.maximum(episodes, 1), jnp.nan
    )
    metrics["episode/count"] = episodes.astype(jnp.float32)
    metrics["optim/learning_rate"] = learning_rate_at(config, hparams, state.update_step)
    new_state = PPOState(params, opt_state, env_state, last_obs, key, state.update_step + 1)
    return new_state, metrics


def run_updates(config: PPOConfig, hparams: PPOHyperparams, state: PPOState, num_updates: int, *, mesh: Mesh | None = None):
    """`num_updates` updates in one `lax.scan`; metrics stacked to `[num_updates]`."""
    return jax.lax.scan(lambda s, _: update(config, hparams, s, mesh=mesh), state, None, length=num_updates)


@functools.cache
def make_train(
    config: PPOConfig, *, mesh: Mesh | None = None
) -> Callable[[PPOHyperparams, PRNGKeyArray], tuple[PPOState, dict[str, Array]]]:
    """`train(hparams, key) -> (final state, metrics [num_updates])` for `config` (cached).

    With `mesh`, environments and minibatches are split over its `data` axis; vmap the
    result with `parallel.vmap_members(train, mesh)` to lay members over its `sweep` axis.
    """

    def train(hparams: PPOHyperparams, key: PRNGKeyArray):
        return run_updates(config, hparams, init(config, hparams, key, mesh=mesh), config.num_updates, mesh=mesh)

    return train


@functools.cache
def make_trainer(config: PPOConfig, updates_per_iteration: int, *, mesh: Mesh | None = None) -> loop.Trainer:
    """PPO for the iteration loop and sweeps: iterations of `updates_per_iteration` updates.

    `updates_per_iteration` must divide `config.num_updates`, so that every iteration runs the
    same compiled program and a checkpoint falls on each iteration boundary. `mesh`: members
    over its `sweep` axis (the loop), environments and minibatches over its `data` axis.
    """
    if updates_per_iteration < 1 or config.num_updates % updates_per_iteration:
        divisors = [d for d in range(1, config.num_updates + 1) if config.num_updates % d == 0]
        raise ValueError(
            f"updates_per_iteration={updates_per_iteration} must divide the run's {config.num_updates} updates; "
            f"choose one of {divisors}"
        )
    return loop.Trainer(
        config=config,
        init=functools.partial(init, config, mesh=mesh),
        iterate=functools.partial(run_updates, config, num_updates=updates_per_iteration, mesh=mesh),
        num_iterations=config.num_updates // updates_per_iteration,
        updates_per_iteration=updates_per_iteration,
        env_steps_per_update=config.batch_size,
        mesh=mesh,
    )
