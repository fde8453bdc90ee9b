r"""Preference IQL: a Bradley-Terry reward model from segment preferences, then Implicit Q-Learning.

The CPL paper's reward-model baseline (Hejna et al. 2023, arXiv 2310.13639, Sec. 5; official
`research/algs/piql.py`, `configs/mw_state_dense/piql.yaml`), in two phases:

1. `init` trains r̂(s, a) for `reward_model_steps` Adam steps (paper 50k) on pair batches, with
   the Bradley-Terry loss on the segment sums R̂(σ) = Σ_t r̂(s_t, a_t) (`losses.bradley_terry_loss`;
   a soft label y weights both orders, y ℓ(first ≻ second) + (1 − y) ℓ(second ≻ first)), measures
   its accuracy on fresh pairs, and relabels every step of the dataset once with r̂, standardised
   over the dataset's real steps. The `[E, T]` rewards stay in the state. (The official code
   trains r̂ during the first 50k IQL steps instead; training it first and relabelling once is
   the same model without retraining IQL on moving rewards.)
2. `update` runs IQL (Kostrikov et al. 2021, arXiv 2110.06169, Eqs. 5-7; `losses.iql`) on single
   transitions (s_t, a_t, r̂_t, s_{t+1}) drawn uniformly from the dataset: twin critics with an
   EMA target (τ 0.005), the value as the 0.7-expectile of the target's min-Q, and advantage-
   weighted regression of the actor with weights min(exp(A / awr_temperature), 100)
   (awr_temperature 1/3: the official config's `beta: 0.3333`, which divides A; IQL's inverse
   temperature β = 3). Adam 3e-4 for all three, the actor's on a cosine schedule over the run.
   A step batch holds `batch_size × segment_length` transitions (the official code runs IQL on
   the transitions of its segment batch). The three losses read one set of parameters and are
   stepped together (the official code steps V, then π, then Q with the new V; the difference is
   one step of staleness in Q's target).

Transitions: a step t with a successor in its episode (t < length − 1), or the last step of an
episode that terminated (its target is r̂ alone, `discount` 0); a time-limited episode's last step
is left out, since its next observation is not stored.

Metrics: `loss/value`, `loss/critic` (summed over the twin heads), `loss/actor`, `iql/q`,
`iql/value`, `iql/advantage`, `iql/weight` (mean AWR weight), `optim/grad_norm`,
`optim/learning_rate` (the actor's), `reward_model/accuracy` and `reward_model/loss` (of r̂, measured
in `init` on pair batches drawn after its training — in sparse mode from its own training
pairs — and reported by every update), and the evaluation's `episode/return`,
`episode/count`. `env_steps_per_update` is gradient steps per update.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array, Float, PRNGKeyArray

from jaxrl_si import envs, nets
from jaxrl_si.agents.offline import (
    TRAIN_STREAM,
    Actor,
    ObservationStats,
    OfflineAgent,
    OfflineConfig,
    actor_log_prob,
    check_int,
    checked_actor,
    deterministic_action,
    gather_steps,
    masked_mean,
    observation_stats,
    parameter_count,
    preference_pairs,
    sample_steps,
    step_key,
)
from jaxrl_si.agents.preference_ppo import RewardModel
from jaxrl_si.data import Episodes, OfflineData, PairBatch
from jaxrl_si.errors import ConfigError
from jaxrl_si.layout import Constrain, unconstrained
from jaxrl_si.losses import (
    awr_loss,
    awr_weights,
    bradley_terry_loss,
    iql_critic_loss,
    iql_value_loss,
)

REWARD_MODEL_EVAL_BATCHES = 8  # fresh pair batches r̂'s accuracy is measured on after training


@dataclasses.dataclass(frozen=True)
class PIQLConfig(OfflineConfig):
    """`OfflineConfig`, the critics' and reward model's sizes, and the reward model's steps."""

    critic_hidden_sizes: tuple[int, ...] = (512, 512)  # twin Q and V MLPs (paper 512 x 2)
    reward_model_hidden_sizes: tuple[int, ...] = (512, 512)  # r̂(s, a) MLP
    reward_model_steps: int = 50_000  # Adam steps of r̂ in `init` (paper 50k)

    def __post_init__(self):
        super().__post_init__()
        object.__setattr__(self, "critic_hidden_sizes", tuple(self.critic_hidden_sizes))
        object.__setattr__(self, "reward_model_hidden_sizes", tuple(self.reward_model_hidden_sizes))
        check_int(self, "reward_model_steps")
        for name in ("critic_hidden_sizes", "reward_model_hidden_sizes"):
            if not all(isinstance(w, int) and w > 0 for w in getattr(self, name)):
                raise ConfigError(f"PIQLConfig.{name} must be positive ints, got {getattr(self, name)!r}.")


class PIQLHyperparams(flax.struct.PyTreeNode):
    """Traced hyperparameters; defaults from the CPL paper's P-IQL and the IQL paper."""

    learning_rate: float = 3e-4  # Adam of actor, critics and value
    reward_model_learning_rate: float = 3e-4  # Adam of r̂
    expectile: float = 0.7  # τ of the value's expectile regression
    awr_temperature: float = 1 / 3  # AWR weights exp(A / awr_temperature)
    max_weight: float = 100.0  # AWR weight clip
    discount: float = 0.99  # γ
    target_update_rate: float = 0.005  # EMA step of the target critics


class TwinCritic(nn.Module):
    """Two independent Q(s, a) MLPs (ReLU) on the concatenated (s, a): `[..., D], [..., A] -> [2, ...]`."""

    hidden_sizes: tuple[int, ...]

    @nn.compact
    def __call__(self, obs: Array, action: Array) -> Float[Array, "2 ..."]:
        twins = nn.vmap(nets.MLP, variable_axes={"params": 0}, split_rngs={"params": True}, in_axes=None, out_axes=0, axis_size=2)
        return twins(self.hidden_sizes, 1, activation="relu")(jnp.concatenate([obs, action], axis=-1))[..., 0]


class Value(nn.Module):
    """V(s): an MLP (ReLU), `[..., D] -> [...]`."""

    hidden_sizes: tuple[int, ...]

    @nn.compact
    def __call__(self, obs: Array) -> Array:
        return nets.MLP(self.hidden_sizes, 1, activation="relu")(obs)[..., 0]


class IQLParams(flax.struct.PyTreeNode):
    actor: Any
    critic: Any
    value: Any


class PIQLState(flax.struct.PyTreeNode):
    """Everything to continue exactly: IQL's networks and optimiser, the relabelled rewards, r̂."""

    params: IQLParams
    target_critic: Any
    opt_state: Any
    observation: ObservationStats
    reward: Float[Array, "E T"]  # r̂ of every step, standardised over the real steps (0 on padding)
    reward_model: Any  # r̂'s parameters after training
    reward_model_metrics: dict[str, Array]  # its accuracy and loss on fresh pairs
    key: PRNGKeyArray  # fixed; each step draws from step_key(key, stream, step)
    step: Array  # int32 [], IQL gradient steps done


class _RewardModelCarry(flax.struct.PyTreeNode):
    params: Any
    opt_state: Any


@dataclasses.dataclass(frozen=True, eq=False)
class PIQL(OfflineAgent):
    """Config, the shared dataset, the four networks and the evaluation env; never traced."""

    config: PIQLConfig
    data: OfflineData
    actor: Actor
    critic: TwinCritic
    value: Value
    reward_model: RewardModel
    eval_env: envs.VectorEnv
    constrain: Constrain = unconstrained

    @classmethod
    def build(cls, config: PIQLConfig, *, data: OfflineData, constrain: Constrain = unconstrained) -> PIQL:
        actor, eval_env = checked_actor(config, data)
        critic, value = TwinCritic(config.critic_hidden_sizes), Value(config.critic_hidden_sizes)
        return cls(config, data, actor, critic, value, RewardModel(config.reward_model_hidden_sizes), eval_env, constrain)

    @property
    def transition_batch_size(self) -> int:
        """IQL's transitions per gradient step: batch_size × segment_length."""
        return self.config.batch_size * self.data.segments.length

    @property
    def data_parallel_sizes(self) -> dict[str, int]:
        sizes = {"num_pairs": self.config.num_pairs, "transition_batch_size": self.transition_batch_size}
        return {**sizes, "eval_episodes": self.config.eval_episodes}

    def parameter_count(self) -> int:
        """Trainable parameters: actor, twin critics, value and reward model (not the target critics)."""
        shapes = jax.eval_shape(self._init_networks, jax.random.key(0))
        return parameter_count(shapes)

    def init(self, hparams: PIQLHyperparams, key: PRNGKeyArray) -> PIQLState:
        """Train r̂, relabel the dataset, and start IQL's networks, target and optimiser."""
        key_networks, key_reward, key = jax.random.split(key, 3)
        params, reward_params = self._init_networks(key_networks)
        stats = observation_stats(self.data.episodes, self.config.normalize_observations)
        reward_params, reward_metrics = self.train_reward_model(hparams, reward_params, stats, key_reward)
        reward = relabel(self.reward_model, reward_params, stats, self.data.episodes)
        opt_state = _optimizer(self.config, hparams, jnp.zeros((), jnp.int32)).init(params)
        return PIQLState(params, params.critic, opt_state, stats, reward, reward_params, reward_metrics, key, jnp.zeros((), jnp.int32))

    def act(self, state: PIQLState, obs: Array) -> Array:
        return deterministic_action(self.actor, state.params.actor, state.observation, obs)

    def gradient_step(self, hparams: PIQLHyperparams, state: PIQLState) -> tuple[PIQLState, dict[str, Array]]:
        """One Adam step of the three IQL losses on a transition batch, then the target's EMA."""
        key_batch, key_dropout = jax.random.split(step_key(state.key, TRAIN_STREAM, state.step))
        batch = self._transitions(hparams, state, key_batch)
        grads, metrics = jax.grad(self._iql_loss, has_aux=True)(state.params, hparams, state.target_critic, batch, key_dropout)
        optimizer = _optimizer(self.config, hparams, state.step)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        target = optax.incremental_update(params.critic, state.target_critic, hparams.target_update_rate)
        metrics.update(state.reward_model_metrics)
        metrics["optim/grad_norm"] = optax.tree.norm(grads)
        metrics["optim/learning_rate"] = actor_learning_rate(self.config, hparams, state.step)
        return state.replace(params=params, target_critic=target, opt_state=opt_state, step=state.step + 1), metrics

    def _init_networks(self, key: PRNGKeyArray) -> tuple[IQLParams, Any]:
        keys = jax.random.split(key, 4)
        obs = jnp.zeros(self.eval_env.observation_shape, jnp.float32)
        action = jnp.zeros((self.eval_env.action_size,), jnp.float32)
        params = IQLParams(self.actor.init(keys[0], obs), self.critic.init(keys[1], obs, action), self.value.init(keys[2], obs))
        return params, self.reward_model.init(keys[3], obs, action)

    def train_reward_model(self, hparams: PIQLHyperparams, params, stats: ObservationStats, key: PRNGKeyArray):
        """`reward_model_steps` Adam steps of the BT loss; r̂'s loss and accuracy on fresh pairs after them."""
        key_steps, key_eval = jax.random.split(key)
        optimizer = optax.adam(hparams.reward_model_learning_rate)

        def step(carry: _RewardModelCarry, key):
            pairs = self.constrain(preference_pairs(self.config, self.data, key))
            grads, _ = jax.grad(_reward_model_loss, has_aux=True)(carry.params, self.reward_model, stats, pairs)
            updates, opt_state = optimizer.update(grads, carry.opt_state, carry.params)
            return _RewardModelCarry(optax.apply_updates(carry.params, updates), opt_state), None

        carry = _RewardModelCarry(params, optimizer.init(params))
        carry, _ = jax.lax.scan(step, carry, jax.random.split(key_steps, self.config.reward_model_steps))

        def measure(key):
            pairs = self.constrain(preference_pairs(self.config, self.data, key))
            return _reward_model_loss(carry.params, self.reward_model, stats, pairs)

        losses, accuracies = jax.lax.map(measure, jax.random.split(key_eval, REWARD_MODEL_EVAL_BATCHES))
        return carry.params, {"reward_model/loss": losses.mean(), "reward_model/accuracy": accuracies.mean()}

    def _transitions(self, hparams: PIQLHyperparams, state: PIQLState, key: PRNGKeyArray) -> dict[str, Array]:
        """`transition_batch_size` transitions (s, a, r̂, γ_t, s'), normalised observations."""
        episodes = self.data.episodes
        episode, t = self.constrain(sample_steps(key, transition_counts(episodes), self.transition_batch_size))
        following = jnp.minimum(t + 1, episodes.max_length - 1)  # a terminal last step: any s', discount 0
        return {
            "obs": state.observation.normalize(gather_steps(episodes.observation, episode, t)),
            "action": gather_steps(episodes.action, episode, t),
            "reward": gather_steps(state.reward, episode, t),
            "discount": hparams.discount * gather_steps(episodes.discount, episode, t),
            "next_obs": state.observation.normalize(gather_steps(episodes.observation, episode, following)),
        }

    def _iql_loss(self, params: IQLParams, hparams: PIQLHyperparams, target_critic, batch, key: PRNGKeyArray):
        """L_V + L_Q (both heads) + L_π (IQL Eqs. 5-7), each on its own parameters."""
        target_q = self.critic.apply(target_critic, batch["obs"], batch["action"]).min(axis=0)
        q = self.critic.apply(params.critic, batch["obs"], batch["action"])  # [2, N]
        value = self.value.apply(params.value, batch["obs"])
        next_value = self.value.apply(params.value, batch["next_obs"])
        value_loss = iql_value_loss(target_q, value, expectile=hparams.expectile).mean()
        twin = lambda x: jnp.broadcast_to(x, q.shape)  # noqa: E731
        critic_loss = iql_critic_loss(q, twin(batch["reward"]), twin(batch["discount"]), twin(next_value)).mean(axis=1).sum()
        advantage = jax.lax.stop_gradient(target_q - value)
        output = self.actor.apply(params.actor, batch["obs"], train=True, rngs={"dropout": key})
        logp = actor_log_prob(self.actor.kind, output, batch["action"])
        options = {"inverse_temperature": 1.0 / hparams.awr_temperature, "max_weight": hparams.max_weight}
        actor_loss = awr_loss(logp, advantage, **options).mean()
        metrics = {
            "loss/value": value_loss,
            "loss/critic": critic_loss,
            "loss/actor": actor_loss,
            "iql/q": q.mean(),
            "iql/value": value.mean(),
            "iql/advantage": advantage.mean(),
            "iql/weight": awr_weights(advantage, **options).mean(),
        }
        return value_loss + critic_loss + actor_loss, jax.lax.stop_gradient(metrics)


def _reward_model_loss(params, model: RewardModel, stats: ObservationStats, pairs: PairBatch):
    """Soft-labelled Bradley-Terry loss on the segment sums of r̂, and the accuracy on decided pairs."""

    def segment_sum(segment):
        reward = model.apply(params, stats.normalize(segment.observation), segment.action)
        return jnp.sum(jnp.where(segment.mask, reward, 0.0), axis=-1)

    first, second = segment_sum(pairs.first), segment_sum(pairs.second)
    label = pairs.label
    loss = jnp.mean(label * bradley_terry_loss(first, second) + (1.0 - label) * bradley_terry_loss(second, first))
    accuracy = masked_mean(((first > second) == (label > 0.5)).astype(jnp.float32), label != 0.5)
    return loss, accuracy


def relabel(model: RewardModel, params, stats: ObservationStats, episodes: Episodes) -> Float[Array, "E T"]:
    """r̂(s_t, a_t) of every step, standardised over the real steps; 0 on padding.

    Episodes go through the model a few at a time (`lax.map`), so memory stays that of a batch.
    """
    def episode_rewards(steps):
        observation, action = steps
        return model.apply(params, stats.normalize(observation), action)

    reward = jax.lax.map(episode_rewards, (episodes.observation, episodes.action), batch_size=16)
    real = episodes.real_steps
    mean = masked_mean(reward, real)
    std = jnp.sqrt(masked_mean(jnp.square(reward - mean), real))
    return jnp.where(real, (reward - mean) / jnp.maximum(std, 1e-6), 0.0)


def transition_counts(episodes: Episodes) -> Array:
    """Per episode, the steps with a usable successor: length − 1, plus the last one if it is terminal."""
    last = jnp.maximum(episodes.length - 1, 0)
    terminal_last = jnp.take_along_axis(episodes.is_terminal, last[:, None], axis=1)[:, 0]
    return (last + terminal_last).astype(jnp.int32)


def actor_learning_rate(config: PIQLConfig, hparams: PIQLHyperparams, step: Array) -> Array:
    """lr · ½ (1 + cos(π step / total_steps)): the official P-IQL actor's cosine schedule."""
    progress = jnp.minimum(step, config.total_steps) / config.total_steps
    return (hparams.learning_rate * 0.5 * (1.0 + jnp.cos(math.pi * progress))).astype(jnp.float32)


def _optimizer(config: PIQLConfig, hparams: PIQLHyperparams, step: Array) -> optax.GradientTransformation:
    """Adam per network: the actor's at `actor_learning_rate(step)`, the critics' and value's at lr."""
    transforms = {"actor": optax.adam(actor_learning_rate(config, hparams, step)), "critic": optax.adam(hparams.learning_rate)}
    return optax.multi_transform(transforms, IQLParams("actor", "critic", "critic"))
