r"""HILP for zero-shot RL: successor features on the Hilbert representation, with a TD3-style actor.

Park, Kreiman & Levine 2024 (arXiv 2402.15567, Sec. 4.2 and 5.1), as the official zero-shot code
runs it (`hilp_zsrl/url_benchmark/agent/sf.py`, `feature_learner=hilp`): from unlabelled data,

1. φ exactly as in `agents.hilp` (`phi_loss`: twin φ, target copies, geometric future goals),
   with the zero-shot code's settings (expectile 0.5, γ 0.98, lr 5e-4), and its features
   f(s') = φ(s') − μ with μ a running mean of φ over batches (rate 0.005) (`feature_type="state"`),
   or f = φ(s') − φ(s) (`"diff"`, the paper's text);
2. successor features ψ(s, a, z) ∈ R^d (twin, with a Polyak target at rate 0.01) so that
   Q(s, a, z) = ⟨ψ(s, a, z), z⟩ for the reward ⟨f, z⟩ (Barreto et al. 2017):

   .. math:: \psi(s, a, z) \leftarrow f(s') + \gamma\, \bar\psi_{i^*}(s', a', z),\quad a' = \pi(s', z) + \operatorname{clip}(\sigma\epsilon, \pm c),

   i* the target twin with the smaller Q (σ 0.2, c 0.3, γ 0.98), squared error summed over both
   twins; optionally also on Q (`q_loss`: quadruped and jaco in the code);
3. a deterministic actor π(s, z) = tanh(·) maximising min_i ⟨ψ_i(s, π(s, z) + noise, z), z⟩.

Latents z are on the sphere of radius √d: half uniform, half (`mix_ratio`) the features of
dataset states mapped through the inverse second moment, √d · normalise(Σ⁻¹ f(s_goal)) with
Σ = E[f fᵀ] over the batch (the code's `inv_cov`, by `pinv`; here a solve with a 10⁻⁶ ridge). A task is prompted by `losses.reward_latent` on
`reward_samples` reward-labelled transitions (rescaled to √d), and its return is measured with
that z fixed for the episode. Every task of the data's domain is evaluated at once: the env's
`info["features"]` holds every task's reward (`data.explore.domain_env`).

Deviations from the code, for brevity: ψ and the actor are MLPs on the concatenated inputs (the
code embeds (s, a) and (s, z) separately first), with LayerNorm and tanh after the first layer
as its preprocessing does; φ is `nets.MLP` with LayerNorm and tanh (the code: Dense, LayerNorm,
tanh, Dense, ReLU, Dense).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, Float, PRNGKeyArray

from jaxrl_si import envs, nets
from jaxrl_si.agents.hilp import Batch, phi_loss, polyak, sample_batch
from jaxrl_si.agents.offline import (
    EVAL_STREAM,
    TRAIN_STREAM,
    OfflineAgent,
    check_int,
    parameter_count,
    run_episodes,
    sample_steps,
    scan_gradient_steps,
    step_key,
    vmapped_step,
)
from jaxrl_si.data import Episodes
from jaxrl_si.errors import ConfigError, check_known_keys
from jaxrl_si.layout import Constrain, unconstrained
from jaxrl_si.losses import reward_latent, sample_latents

FEATURE_TYPES = ("state", "diff")


@dataclasses.dataclass(frozen=True)
class HILPSFConfig:
    """Static settings; defaults are the zero-shot code's (`SFAgentConfig`, README commands)."""

    env: str = "playground:WalkerRun"  # a Playground DM Control task (its domain's tasks are evaluated), or an env with info["features"] (maze:)
    latent_dim: int = 50  # d (code: z_dim 50)
    phi_hidden_sizes: tuple[int, ...] = (512, 512)  # code: phi_hidden_dim 512
    hidden_sizes: tuple[int, ...] = (1024, 1024)  # ψ and the actor (code: hidden_dim 1024)
    feature_type: str = "state"  # state: φ(s') − running mean; diff: φ(s') − φ(s)
    q_loss: bool = False  # also regress Q = ⟨ψ, z⟩ (code: on for quadruped and jaco)
    mix_ratio: float = 0.5  # fraction of training latents from the data's transformed features
    batch_size: int = 1024
    total_steps: int = 1_000_000
    steps_per_update: int = 50_000
    trajectory_goal_fraction: float = 0.625
    reward_samples: int = 10_000  # code: num_inference_steps
    eval_episodes: int = 10  # per task (paper: 50 at the end)
    eval_horizon: int = 1000

    def __post_init__(self):
        for name in ("phi_hidden_sizes", "hidden_sizes"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        for name in ("latent_dim", "batch_size", "total_steps", "steps_per_update", "reward_samples", "eval_episodes", "eval_horizon"):
            check_int(self, name)
        if self.feature_type not in FEATURE_TYPES:
            raise ConfigError(f"HILPSFConfig.feature_type must be one of {FEATURE_TYPES}, got {self.feature_type!r}.")
        if self.total_steps % self.steps_per_update:
            raise ConfigError(f"HILPSFConfig.steps_per_update={self.steps_per_update} must divide total_steps={self.total_steps}.")
        for name in ("mix_ratio", "trajectory_goal_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"HILPSFConfig.{name} must be in [0, 1], got {getattr(self, name)}.")

    @property
    def num_updates(self) -> int:
        return self.total_steps // self.steps_per_update

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> HILPSFConfig:
        check_known_keys(cls.__name__, values, (f.name for f in dataclasses.fields(cls)))
        return cls(**values)


class HILPSFHyperparams(flax.struct.PyTreeNode):
    """Traced hyperparameters; defaults from the zero-shot code (walker: phi_discount 0.96)."""

    learning_rate: float = 1e-4  # ψ and the actor
    phi_learning_rate: float = 5e-4  # lr · lr_coef 5
    discount: float = 0.98  # γ of ψ
    phi_discount: float = 0.98  # γ of φ's value and of the future-goal offsets
    phi_expectile: float = 0.5
    phi_target_rate: float = 0.005
    target_rate: float = 0.01  # ψ's target (sf_target_tau)
    feature_mean_rate: float = 0.005  # running mean of φ
    policy_noise: float = 0.2  # stddev_schedule
    noise_clip: float = 0.3  # stddev_clip
    reward_ridge: float = 0.0  # of the reward prompt's regression (code: least squares)


class SFParams(flax.struct.PyTreeNode):
    phi: Any  # twin, leaves [2, ...]
    successor: Any  # twin ψ, leaves [2, ...]
    actor: Any


class HILPSFState(flax.struct.PyTreeNode):
    params: SFParams
    target_phi: Any
    target_successor: Any
    feature_mean: Array  # [d] running mean of φ(s)
    phi_opt_state: Any
    opt_state: Any  # ψ and the actor's
    key: PRNGKeyArray
    step: Array


class PreprocessedMLP(nn.Module):
    """Dense → LayerNorm → tanh, then `nets.MLP` (ReLU): the code's `ntanh` preprocessing, then its MLP."""

    hidden_sizes: tuple[int, ...]
    output_size: int

    @nn.compact
    def __call__(self, x: Float[Array, "... I"]) -> Float[Array, "... O"]:
        x = jnp.tanh(nn.LayerNorm()(nn.Dense(self.hidden_sizes[0])(x)))
        return nets.MLP(self.hidden_sizes[1:], self.output_size, activation="relu")(x)


@dataclasses.dataclass(frozen=True, eq=False)
class HILPSF(OfflineAgent):
    """Config, the dataset, the networks and the domain env; never traced."""

    config: HILPSFConfig
    data: Episodes
    env: envs.Env  # the domain's env, every task's reward in info["features"], no time limit
    phi_net: nn.Module
    successor_net: nn.Module
    actor: nn.Module
    constrain: Constrain = unconstrained

    @classmethod
    def build(cls, config: HILPSFConfig, *, data: Episodes, constrain: Constrain = unconstrained) -> HILPSF:
        from jaxrl_si.data.explore import domain_env

        backend, _, task = config.env.partition(":")
        with jax.ensure_compile_time_eval():
            env = domain_env(task) if backend == "playground" else envs.make(config.env)
            env = envs.RescaleAction(env, clip=True)  # actions in [-1, 1], as the data's
        check_data(config, data, env)
        phi_net = PreprocessedMLP(config.phi_hidden_sizes, config.latent_dim)
        successor_net = PreprocessedMLP(config.hidden_sizes, config.latent_dim)
        actor = PreprocessedMLP(config.hidden_sizes, env.action_size)
        return cls(config, data, env, phi_net, successor_net, actor, constrain)

    @property
    def data_parallel_sizes(self) -> dict[str, int]:
        return {"batch_size": self.config.batch_size}

    def parameter_count(self) -> int:
        return parameter_count(jax.eval_shape(self.init, HILPSFHyperparams(), jax.random.key(0)).params)

    # ---- networks ----------------------------------------------------------------------------

    def features(self, phi_params, mean: Array, obs: Array, next_obs: Array) -> Float[Array, "B d"]:
        """f: φ(s') − μ (`state`) or φ(s') − φ(s) (`diff`), from the first twin."""
        phi = lambda x: self.phi_net.apply(jax.tree.map(lambda leaf: leaf[0], phi_params), x)
        return phi(next_obs) - (mean if self.config.feature_type == "state" else phi(obs))

    def successors(self, params, obs, action, latent) -> Float[Array, "2 B d"]:
        inputs = jnp.concatenate([obs, action, latent], -1)
        return jax.vmap(self.successor_net.apply, in_axes=(0, None))(params, inputs)

    def act(self, state: HILPSFState, obs: Array, latent: Array) -> Array:
        """The deterministic action tanh(π(s, z)) (evaluation: no noise)."""
        return jnp.tanh(self.actor.apply(state.params.actor, jnp.concatenate([obs, latent], -1)))

    def noisy_action(self, actor_params, obs, latent, key, hparams: HILPSFHyperparams) -> Array:
        """tanh(π(s, z)) + clip(σ ε, ±c), clipped to [−1, 1] (TD3's target-policy smoothing)."""
        mean = jnp.tanh(self.actor.apply(actor_params, jnp.concatenate([obs, latent], -1)))
        noise = jnp.clip(hparams.policy_noise * jax.random.normal(key, mean.shape), -hparams.noise_clip, hparams.noise_clip)
        return jnp.clip(mean + noise, -1.0, 1.0)

    # ---- training -----------------------------------------------------------------------------

    def init(self, hparams: HILPSFHyperparams, key: PRNGKeyArray) -> HILPSFState:
        keys = jax.random.split(key, 4)
        d, obs = self.config.latent_dim, jnp.zeros((1, *self.env.observation_shape), jnp.float32)
        action, latent = jnp.zeros((1, self.env.action_size)), jnp.zeros((1, d))
        twin = lambda net, k, x: jax.vmap(net.init, in_axes=(0, None))(jax.random.split(k), x)
        params = SFParams(
            phi=twin(self.phi_net, keys[0], obs),
            successor=twin(self.successor_net, keys[1], jnp.concatenate([obs, action, latent], -1)),
            actor=self.actor.init(keys[2], jnp.concatenate([obs, latent], -1)),
        )
        rest = {"successor": params.successor, "actor": params.actor}
        return HILPSFState(params, params.phi, params.successor, jnp.zeros(d), optax.adam(1.0).init(params.phi), optax.adam(1.0).init(rest), keys[3], jnp.zeros((), jnp.int32))

    def training_latents(self, key: PRNGKeyArray, features: Float[Array, "B d"]) -> Float[Array, "B d"]:
        """√d-sphere latents, a `mix_ratio` share of them √d · normalise(Σ⁻¹ f) of the batch's features."""
        key_sphere, key_perm, key_mix = jax.random.split(key, 3)
        d, radius = self.config.latent_dim, math.sqrt(self.config.latent_dim)
        uniform = sample_latents(key_sphere, (features.shape[0],), d, radius=radius)
        goals = jax.lax.stop_gradient(features[jax.random.permutation(key_perm, features.shape[0])])
        covariance = goals.T @ goals / goals.shape[0]
        transformed = jnp.linalg.solve(covariance + 1e-6 * jnp.eye(d), goals.T).T
        transformed = radius * transformed / jnp.maximum(jnp.linalg.norm(transformed, axis=-1, keepdims=True), 1e-6)
        mixed = jax.random.uniform(key_mix, (features.shape[0], 1)) < self.config.mix_ratio
        return jnp.where(mixed, transformed, uniform)

    def gradient_step(self, hparams: HILPSFHyperparams, state: HILPSFState) -> tuple[HILPSFState, dict[str, Array]]:
        """φ's step, then ψ's and the actor's on the same batch (φ frozen for them), then the targets."""
        key_batch, key_latent, key_next, key_actor = jax.random.split(step_key(state.key, TRAIN_STREAM, state.step), 4)
        config = self.config
        batch = self.constrain(sample_batch(self.data, key_batch, config.batch_size, config.trajectory_goal_fraction, hparams.phi_discount))
        phi_grads, metrics = jax.grad(lambda p: phi_loss(self.phi_net, p, state.target_phi, batch, discount=hparams.phi_discount, expectile=hparams.phi_expectile), has_aux=True)(state.params.phi)
        phi_updates, phi_opt_state = optax.adam(hparams.phi_learning_rate).update(phi_grads, state.phi_opt_state)
        features = jax.lax.stop_gradient(self.features(state.params.phi, state.feature_mean, batch.observation, batch.next_observation))
        latents = self.constrain(self.training_latents(key_latent, features))
        rest = {"successor": state.params.successor, "actor": state.params.actor}
        grads, sf_metrics = jax.grad(self._sf_loss, has_aux=True)(rest, hparams, state, batch, features, latents, (key_next, key_actor))
        updates, opt_state = optax.adam(hparams.learning_rate).update(grads, state.opt_state)
        rest = optax.apply_updates(rest, updates)
        phi_mean = self.phi_net.apply(jax.tree.map(lambda leaf: leaf[0], state.params.phi), batch.observation).mean(0)
        params = SFParams(optax.apply_updates(state.params.phi, phi_updates), rest["successor"], rest["actor"])
        metrics.update(sf_metrics)
        metrics["optim/grad_norm"] = optax.tree.norm(grads)
        return HILPSFState(
            params=params,
            target_phi=polyak(params.phi, state.target_phi, hparams.phi_target_rate),
            target_successor=polyak(params.successor, state.target_successor, hparams.target_rate),
            feature_mean=(1.0 - hparams.feature_mean_rate) * state.feature_mean + hparams.feature_mean_rate * jax.lax.stop_gradient(phi_mean),
            phi_opt_state=phi_opt_state,
            opt_state=opt_state,
            key=state.key,
            step=state.step + 1,
        ), metrics

    def _sf_loss(self, rest, hparams: HILPSFHyperparams, state: HILPSFState, batch: Batch, features, latents, keys):
        """ψ's TD loss (and Q's with `q_loss`) plus the actor's −min_i Q_i; each sees only its own parameters' gradient."""
        key_next, key_actor = keys
        next_action = self.noisy_action(state.params.actor, batch.next_observation, latents, key_next, hparams)
        next_psi = self.successors(state.target_successor, batch.next_observation, next_action, latents)  # [2, B, d]
        next_q = jnp.einsum("ibd,bd->ib", next_psi, latents)
        target_psi = features + hparams.discount * jnp.where((next_q[0] < next_q[1])[:, None], next_psi[0], next_psi[1])
        psi = self.successors(rest["successor"], batch.observation, batch.action, latents)
        sf_loss = jnp.sum(jnp.mean(jnp.square(psi - target_psi), axis=(1, 2)))
        q = jnp.einsum("ibd,bd->ib", psi, latents)
        target_q = jnp.sum(features * latents, -1) + hparams.discount * next_q.min(0)
        q_loss = jnp.sum(jnp.mean(jnp.square(q - target_q), axis=1))
        action = self.noisy_action(rest["actor"], batch.observation, latents, key_actor, hparams)
        frozen = jax.lax.stop_gradient(rest["successor"])
        actor_q = jnp.einsum("ibd,bd->ib", self.successors(frozen, batch.observation, action, latents), latents).min(0)
        actor_loss = -actor_q.mean()
        total = sf_loss + actor_loss + (q_loss if self.config.q_loss else 0.0)
        metrics = {"loss/sf": sf_loss, "loss/q": q_loss, "loss/actor": actor_loss, "sf/q": q.mean(), "sf/feature_norm": jnp.linalg.norm(features, axis=-1).mean()}
        return total, jax.lax.stop_gradient(metrics)

    def update(self, hparams: HILPSFHyperparams, state: HILPSFState) -> tuple[HILPSFState, dict[str, Array]]:
        """`steps_per_update` gradient steps, then the zero-shot evaluation of every task (`episode/return`,
        `return/task<k>`) and the same with random latents (`random/return`, `random/return/task<k>`)."""
        state, metrics = scan_gradient_steps(self, hparams, state, self.gradient_step)
        key_prompt, key_random = jax.random.split(step_key(state.key, EVAL_STREAM, state.step))
        metrics.update(self.evaluate(hparams, state, key_prompt))
        random = self.evaluate(hparams, state, key_random, random_latents=True)
        metrics.update({f"random/{name.removeprefix('episode/')}": value for name, value in random.items() if name != "episode/count"})
        return state, metrics


    # ---- zero-shot prompting ------------------------------------------------------------------

    def reward_prompts(self, hparams: HILPSFHyperparams, state: HILPSFState, key: PRNGKeyArray) -> Float[Array, "K d"]:
        """z_k = √d · normalise(least squares of task k's rewards on f) over `reward_samples` transitions."""
        episode, t = sample_steps(key, jnp.maximum(self.data.length - 1, 0), self.config.reward_samples)
        obs = self.data.observation
        features = self.features(state.params.phi, state.feature_mean, obs[episode, t], obs[episode, t + 1])
        fit = lambda r: reward_latent(features, r, radius=math.sqrt(self.config.latent_dim), ridge=hparams.reward_ridge)
        return jax.vmap(fit, in_axes=1)(self.data.features[episode, t])

    def evaluate(self, hparams: HILPSFHyperparams, state: HILPSFState, key: PRNGKeyArray, *, random_latents: bool = False) -> dict[str, Array]:
        """Return of every task k with its reward prompt z_k (or a random z), `eval_episodes` each.

        Metrics: `episode/return` (mean over tasks), `episode/count`, `return/<k>` per task.
        """
        key_prompt, key_reset, key_steps = jax.random.split(key, 3)
        num_tasks, n = self.data.features.shape[-1], self.config.eval_episodes
        tasks = jnp.repeat(jnp.arange(num_tasks), n)
        if random_latents:
            latents = sample_latents(key_prompt, tasks.shape, self.config.latent_dim, radius=math.sqrt(self.config.latent_dim))
        else:
            latents = self.reward_prompts(hparams, state, key_prompt)[tasks]
        env_state, ts = jax.vmap(self.env.reset)(jax.random.split(key_reset, tasks.shape[0]))
        reward_of = lambda ts: jnp.take_along_axis(ts.info["features"], tasks[:, None], axis=1)[:, 0]
        act = lambda obs: self.act(state, obs, latents)
        returns, _ = run_episodes(vmapped_step(self.env), env_state, ts, act, key_steps, self.config.eval_horizon, reward_of=reward_of)
        per_task = returns.reshape(num_tasks, n).mean(1)
        metrics = {"episode/return": returns.mean(), "episode/count": jnp.asarray(tasks.shape[0], jnp.float32)}
        metrics.update({f"return/task{k}": per_task[k] for k in range(num_tasks)})
        return metrics


def check_data(config: HILPSFConfig, data: Episodes, env: envs.Env) -> None:
    """`ConfigError` naming what does not fit: spaces, the domain's task rewards, the sample counts."""
    obs_shape, action_shape = tuple(data.observation.shape[2:]), tuple(data.action.shape[2:])
    if obs_shape != tuple(env.observation_shape) or action_shape != (env.action_size,):
        raise ConfigError(
            f"data has observations {obs_shape} and actions {action_shape}, but {config.env} has {tuple(env.observation_shape)} and ({env.action_size},)"
        )
    _, ts = jax.eval_shape(env.reset, jax.random.key(0))
    if "features" not in ts.info or data.features.shape[-1] != ts.info["features"].shape[-1]:
        env_tasks = ts.info["features"].shape[-1] if "features" in ts.info else 0
        raise ConfigError(f"data holds the rewards of {data.features.shape[-1]} tasks in `features`; {config.env} reports {env_tasks} in info['features']")
    transitions = int(np.maximum(np.asarray(data.length) - 1, 0).sum())
    if config.reward_samples < config.latent_dim or transitions < config.reward_samples:
        raise ConfigError(
            f"reward prompting fits d = {config.latent_dim} from reward_samples={config.reward_samples} transitions; it needs reward_samples >= d and the data holds {transitions}"
        )
