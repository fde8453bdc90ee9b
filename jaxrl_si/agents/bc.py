r"""Behaviour cloning baselines of the CPL paper: BC, SFT and the oracle %BC.

Hejna et al. 2023, "Contrastive Preference Learning", arXiv 2310.13639, Sec. 5 (baselines) and
the official `research/algs/bc.py`, `configs/*/sft.yaml`, `configs/oracle/percent_bc.yaml`. All
three maximise log π(a | s) of the `offline.Actor` (for the deterministic actor, minimise
‖tanh(μ(s)) − a‖²) with Adam at a constant learning rate; they differ in the data:

- `bc`: every segment (both segments of `batch_size // 2` pairs, drawn as CPL draws them).
- `sft`: as `bc` for `bc_steps`, then only the preferred segment of each pair (both on a tie),
  the paper's supervised fine-tuning baseline (200k of 500k steps). The phase is selected by
  the step inside one program; the optimiser carries over (as in the official code).
- `percent_bc`: single steps drawn uniformly from the episodes whose true return
  (`Episodes.returns`) is in the top `top_fraction` (paper: 10 %), the oracle-informed ceiling
  the paper reports. A step batch holds `batch_size × segment_length` steps, the steps of a
  segment batch, so that a gradient step costs what the other methods' does.

Metrics: `loss/bc`, `bc/phase` (sft: 0 all data, 1 preferred), `bc/top_episodes` (percent_bc:
how many episodes are sampled), `optim/grad_norm`, `optim/learning_rate`, and the evaluation's
`episode/return`, `episode/count`. `env_steps_per_update` is gradient steps per update.
"""

from __future__ import annotations

import dataclasses

import flax.struct
import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array, Int, PRNGKeyArray

from jaxrl_si import envs
from jaxrl_si.agents.offline import (
    TRAIN_STREAM,
    Actor,
    OfflineAgent,
    OfflineConfig,
    PolicyState,
    actor_log_prob,
    check_int,
    checked_actor,
    deterministic_action,
    gather_steps,
    masked_mean,
    observation_stats,
    pair_log_probs,
    parameter_count,
    preference_pairs,
    sample_steps,
    step_key,
)
from jaxrl_si.data import Episodes, OfflineData
from jaxrl_si.errors import ConfigError
from jaxrl_si.layout import Constrain, unconstrained

METHODS = ("bc", "sft", "percent_bc")


@dataclasses.dataclass(frozen=True)
class BCConfig(OfflineConfig):
    """`OfflineConfig`, which data to clone, and SFT's all-data phase."""

    method: str = "sft"  # one of METHODS
    bc_steps: int = 200_000  # sft only: steps on all data before the preferred segments (paper 200k of 500k)

    def __post_init__(self):
        super().__post_init__()
        if self.method not in METHODS:
            raise ConfigError(f"BCConfig.method must be one of {METHODS}, got {self.method!r}.")
        check_int(self, "bc_steps", least=0)
        if self.method == "sft" and self.bc_steps > self.total_steps:
            raise ConfigError(f"BCConfig.bc_steps={self.bc_steps} exceeds total_steps={self.total_steps}.")

    @property
    def all_data_steps(self) -> int:
        """Steps on all segments before cloning only preferred ones (`bc`: the whole run)."""
        return self.bc_steps if self.method == "sft" else self.total_steps


class BCHyperparams(flax.struct.PyTreeNode):
    learning_rate: float = 1e-4  # Adam (paper)
    top_fraction: float = 0.1  # percent_bc: fraction of episodes, best by true return, that are cloned


class BCState(PolicyState):
    """`PolicyState` and, per episode, how many of its steps may be drawn (percent_bc: 0 outside the top)."""

    step_counts: Int[Array, "E"]


@dataclasses.dataclass(frozen=True, eq=False)
class BC(OfflineAgent):
    """Config, the shared dataset, the actor and the evaluation env; built once, never traced."""

    config: BCConfig
    data: OfflineData
    actor: Actor
    eval_env: envs.VectorEnv
    constrain: Constrain = unconstrained

    @classmethod
    def build(cls, config: BCConfig, *, data: OfflineData, constrain: Constrain = unconstrained) -> BC:
        actor, eval_env = checked_actor(config, data)
        return cls(config, data, actor, eval_env, constrain)

    @property
    def step_batch_size(self) -> int:
        """percent_bc's steps per gradient step: batch_size × segment_length."""
        return self.config.batch_size * self.data.segments.length

    @property
    def data_parallel_sizes(self) -> dict[str, int]:
        if self.config.method == "percent_bc":
            return {"step_batch_size": self.step_batch_size, "eval_episodes": self.config.eval_episodes}
        return {"num_pairs": self.config.num_pairs, "eval_episodes": self.config.eval_episodes}

    def parameter_count(self) -> int:
        obs = jnp.zeros(self.eval_env.observation_shape, jnp.float32)
        return parameter_count(jax.eval_shape(self.actor.init, jax.random.key(0), obs))

    def init(self, hparams: BCHyperparams, key: PRNGKeyArray) -> BCState:
        """Fresh actor and Adam, the observation statistics and (percent_bc) the top episodes."""
        key_params, key = jax.random.split(key)
        params = self.actor.init(key_params, jnp.zeros(self.eval_env.observation_shape, jnp.float32))
        stats = observation_stats(self.data.episodes, self.config.normalize_observations)
        opt_state = optax.adam(hparams.learning_rate).init(params)
        counts = top_episode_steps(self.data.episodes, hparams.top_fraction)
        return BCState(params, opt_state, stats, key, jnp.zeros((), jnp.int32), counts)

    def act(self, state: BCState, obs: Array) -> Array:
        return deterministic_action(self.actor, state.params, state.observation, obs)

    def gradient_step(self, hparams: BCHyperparams, state: BCState) -> tuple[BCState, dict[str, Array]]:
        """One Adam step of −mean log π on the method's batch."""
        key_batch, key_dropout = jax.random.split(step_key(state.key, TRAIN_STREAM, state.step))
        loss = self._top_steps_loss if self.config.method == "percent_bc" else self._segments_loss
        grads, metrics = jax.grad(loss, has_aux=True)(state.params, state, key_batch, key_dropout)
        updates, opt_state = optax.adam(hparams.learning_rate).update(grads, state.opt_state, state.params)
        metrics["optim/grad_norm"] = optax.tree.norm(grads)
        metrics["optim/learning_rate"] = jnp.asarray(hparams.learning_rate, jnp.float32)
        return state.replace(params=optax.apply_updates(state.params, updates), opt_state=opt_state, step=state.step + 1), metrics

    def _segments_loss(self, params, state: BCState, key_batch, key_dropout):
        """bc / sft: −mean log π over both segments of each pair, or (sft, later) the preferred ones."""
        pairs = self.constrain(preference_pairs(self.config, self.data, key_batch))
        logp = pair_log_probs(self.actor, params, state.observation, pairs, key_dropout)  # [2, P, L]
        preferred = jnp.stack([pairs.label >= 0.5, pairs.label <= 0.5])  # a tie keeps both (official code)
        all_data = state.step < self.config.all_data_steps
        weight = (all_data | preferred)[..., None] & jnp.stack([pairs.first.mask, pairs.second.mask])
        loss = -masked_mean(logp, weight)
        return loss, {"loss/bc": loss, "bc/phase": 1.0 - all_data}

    def _top_steps_loss(self, params, state: BCState, key_batch, key_dropout):
        """percent_bc: −mean log π over steps drawn from the top episodes."""
        episode, t = self.constrain(sample_steps(key_batch, state.step_counts, self.step_batch_size))
        obs = state.observation.normalize(gather_steps(self.data.episodes.observation, episode, t))
        output = self.actor.apply(params, obs, train=True, rngs={"dropout": key_dropout})
        loss = -actor_log_prob(self.actor.kind, output, gather_steps(self.data.episodes.action, episode, t)).mean()
        return loss, {"loss/bc": loss, "bc/top_episodes": (state.step_counts > 0).sum().astype(jnp.float32)}


def top_episode_steps(episodes: Episodes, top_fraction) -> Int[Array, "E"]:
    """Each episode's length if its true return is among the top `top_fraction` of returns, else 0.

    The threshold is the (1 − top_fraction) quantile of the returns (linear interpolation), so
    with E episodes about ⌈top_fraction · E⌉ are kept, and always the best one.
    """
    returns = episodes.returns
    threshold = jnp.minimum(jnp.quantile(returns, 1.0 - top_fraction), returns.max())
    return jnp.where(returns >= threshold, episodes.length, 0).astype(jnp.int32)
