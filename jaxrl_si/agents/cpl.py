r"""Contrastive Preference Learning: a policy from segment preferences, without a reward or RL.

Hejna et al. 2023, "Contrastive Preference Learning: Learning from Human Feedback without RL",
arXiv 2310.13639, Sec. 3-4. Under the regret preference model the optimal advantage is
A*(s, a) = α log π*(a | s), so a pair of segments (σ⁺ preferred to σ⁻) is scored by the
policy alone, and the policy is trained by the contrastive loss (`losses.cpl_loss`)

.. math:: \ell = -\log \frac{e^{S^+}}{e^{S^+} + e^{\lambda S^-}},\qquad S = \alpha \sum_t \log\pi(a_t \mid s_t),

with the conservative bias λ ∈ (0, 1] (paper: α 0.1, λ 0.5). A soft label y = P(first ≻ second)
(½ for a tie) weights the two orders: y ℓ(first ≻ second) + (1 − y) ℓ(second ≻ first), as the
official code's `biased_bce_with_logits` does.

The official recipe (`configs/mw_state_dense/cpl.yaml`, `research/algs/cpl.py`), kept here:
`bc_steps` of behaviour cloning (−mean log π over both segments of every pair, i.e. all the
data) at a constant learning rate, then the CPL loss with a fresh Adam and a linear learning-rate
warm-up over `lr_warmup_steps`. Both losses come from one forward pass on the same pair batch
and the step selects one (`step < bc_steps`), so there is one program for both phases; at the
switch the optimiser state is replaced by a fresh one (its count restarts at 0).

Metrics of an update (means over its gradient steps): `loss/cpl`, `loss/bc` (both computed in
either phase; the optimised one is `loss/total`), `preference/accuracy` (fraction of non-tied
pairs the policy's segment scores S rank as the label does), `cpl/phase` (0 BC, 1 CPL),
`logps/step` (mean log π per step), `optim/grad_norm`, `optim/learning_rate`, and the
evaluation's `episode/return`, `episode/count`. `env_steps_per_update` is the number of gradient
steps per update (an offline agent takes no env steps; the loop's `env_steps` column then counts
gradient steps).
"""

from __future__ import annotations

import dataclasses

import flax.struct
import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array, PRNGKeyArray

from jaxrl_si import envs
from jaxrl_si.agents.offline import (
    TRAIN_STREAM,
    Actor,
    OfflineAgent,
    OfflineConfig,
    PolicyState,
    check_int,
    checked_actor,
    deterministic_action,
    masked_mean,
    observation_stats,
    pair_log_probs,
    parameter_count,
    preference_pairs,
    step_key,
    tree_select,
    warmup_factor,
)
from jaxrl_si.data import OfflineData, PairBatch
from jaxrl_si.errors import ConfigError
from jaxrl_si.layout import Constrain, unconstrained
from jaxrl_si.losses import cpl_loss


@dataclasses.dataclass(frozen=True)
class CPLConfig(OfflineConfig):
    """`OfflineConfig` and CPL's two phases (paper: 200k BC steps of 500k, 10k warm-up steps)."""

    bc_steps: int = 200_000  # behaviour cloning on all data before the CPL loss (0: none)
    lr_warmup_steps: int = 10_000  # linear learning-rate warm-up of the CPL phase (0: none)

    def __post_init__(self):
        super().__post_init__()
        for name in ("bc_steps", "lr_warmup_steps"):
            check_int(self, name, least=0)
        if self.bc_steps > self.total_steps:
            raise ConfigError(f"CPLConfig.bc_steps={self.bc_steps} exceeds total_steps={self.total_steps}.")


class CPLHyperparams(flax.struct.PyTreeNode):
    """Traced hyperparameters; defaults from the paper's state-based runs."""

    learning_rate: float = 1e-4  # Adam, both phases
    alpha: float = 0.1  # α, temperature of the advantage α log π
    conservative_bias: float = 0.5  # λ in (0, 1], weight of the rejected segment's score


@dataclasses.dataclass(frozen=True, eq=False)
class CPL(OfflineAgent):
    """Config, the shared dataset, the actor and the evaluation env; built once, never traced."""

    config: CPLConfig
    data: OfflineData  # device arrays; the loop passes them to its programs as an argument
    actor: Actor
    eval_env: envs.VectorEnv
    constrain: Constrain = unconstrained  # layout hook for the pair and evaluation batches

    @classmethod
    def build(cls, config: CPLConfig, *, data: OfflineData, constrain: Constrain = unconstrained) -> CPL:
        """The actor and evaluation env for `config`; `ConfigError` if `data` does not fit them."""
        actor, eval_env = checked_actor(config, data)
        return cls(config, data, actor, eval_env, constrain)

    @property
    def data_parallel_sizes(self) -> dict[str, int]:
        return {"num_pairs": self.config.num_pairs, "eval_episodes": self.config.eval_episodes}

    def parameter_count(self) -> int:
        """Trainable parameters: the actor's."""
        obs = jnp.zeros(self.eval_env.observation_shape, jnp.float32)
        return parameter_count(jax.eval_shape(self.actor.init, jax.random.key(0), obs))

    def init(self, hparams: CPLHyperparams, key: PRNGKeyArray) -> PolicyState:
        """Fresh actor and Adam; the dataset's observation statistics."""
        key_params, key = jax.random.split(key)
        params = self.actor.init(key_params, jnp.zeros(self.eval_env.observation_shape, jnp.float32))
        stats = observation_stats(self.data.episodes, self.config.normalize_observations)
        return PolicyState(params, optax.adam(hparams.learning_rate).init(params), stats, key, jnp.zeros((), jnp.int32))

    def act(self, state: PolicyState, obs: Array) -> Array:
        """The deterministic policy tanh(μ(s)) on raw observations."""
        return deterministic_action(self.actor, state.params, state.observation, obs)

    def gradient_step(self, hparams: CPLHyperparams, state: PolicyState) -> tuple[PolicyState, dict[str, Array]]:
        """One Adam step on a pair batch: BC before `bc_steps`, CPL from it (a fresh Adam at the switch)."""
        key_pairs, key_dropout = jax.random.split(step_key(state.key, TRAIN_STREAM, state.step))
        pairs = self.constrain(preference_pairs(self.config, self.data, key_pairs))
        in_bc = state.step < self.config.bc_steps
        opt_state = tree_select(state.step == self.config.bc_steps, optax.adam(0.0).init(state.params), state.opt_state)
        grads, metrics = jax.grad(_loss, has_aux=True)(state.params, self.actor, hparams, state.observation, pairs, key_dropout, in_bc)
        learning_rate = learning_rate_at(self.config, hparams, state.step)
        updates, opt_state = optax.adam(learning_rate).update(grads, opt_state, state.params)
        metrics.update({"optim/grad_norm": optax.tree.norm(grads), "optim/learning_rate": learning_rate, "cpl/phase": 1.0 - in_bc})
        return state.replace(params=optax.apply_updates(state.params, updates), opt_state=opt_state, step=state.step + 1), metrics


def learning_rate_at(config: CPLConfig, hparams: CPLHyperparams, step: Array) -> Array:
    """lr during BC; lr · min(1, (step − bc_steps) / lr_warmup_steps) in the CPL phase."""
    warm = hparams.learning_rate * warmup_factor(step - config.bc_steps, config.lr_warmup_steps)
    return jnp.where(step < config.bc_steps, hparams.learning_rate, warm).astype(jnp.float32)


def _loss(params, actor: Actor, hparams: CPLHyperparams, stats, pairs: PairBatch, key: PRNGKeyArray, in_bc: Array):
    """The phase's loss (BC or CPL) from one forward pass over both segments, and the metrics."""
    mask = jnp.stack([pairs.first.mask, pairs.second.mask])
    logp = jnp.where(mask, pair_log_probs(actor, params, stats, pairs, key), 0.0)  # [2, P, L], 0 off the segments
    bc = -masked_mean(logp, mask)
    first, second = logp
    options = {"alpha": hparams.alpha, "conservative_bias": hparams.conservative_bias}
    label = pairs.label
    cpl = jnp.mean(label * cpl_loss(first, second, **options) + (1.0 - label) * cpl_loss(second, first, **options))
    score = logp.sum(-1)  # [2, P]: S / α
    decided = label != 0.5
    agree = (score[0] > score[1]) == (label > 0.5)
    total = jnp.where(in_bc, bc, cpl)
    metrics = {
        "loss/total": total,
        "loss/bc": bc,
        "loss/cpl": cpl,
        "preference/accuracy": masked_mean(agree.astype(jnp.float32), decided),
        "logps/step": -bc,
    }
    return total, jax.lax.stop_gradient(metrics)
