r"""Shared pieces of the offline preference agents (CPL, P-IQL, BC / SFT / %BC).

The agents learn from an `OfflineData` (`jaxrl_si.data`) alone and are evaluated in the task's
env on device. What they share lives here, in the order an update uses it:

- `OfflineConfig`: the static settings every offline agent has (env, actor, batch, pair mode,
  step counts, evaluation); each agent's config subclasses it.
- `Actor`: the policy network of the CPL paper's official code (Hejna et al. 2023, arXiv
  2310.13639; `ContinuousMLPActor`): an MLP with dropout after each hidden layer, ReLU,
  orthogonal initialisation (gain 1) and a tanh on the action. Three kinds
  (`ACTOR_KINDS`), all with the deterministic action tanh(μ(s)) used for evaluation:

  | kind            | log π(a \| s)                                               |
  |-----------------|-------------------------------------------------------------|
  | `deterministic` | −‖tanh(μ(s)) − a‖² (the official CPL / SFT / P-IQL actor)   |
  | `gaussian`      | N(a; tanh(μ(s)), σ(s)²)                                     |
  | `tanh_gaussian` | a = tanh(u), u ~ N(μ(s), σ(s)²); a clipped to ±(1 − 1e-5)   |

  with log σ(s) squashed into [−5, 2] (the official `DiagonalGaussianMLPActor`).
- `ObservationStats`: the dataset's observation mean and standard deviation, computed inside
  `init` (so `data` stays an argument of the program) and kept in the state.
- batches: `preference_pairs` (dense pairs labelled by the regret oracle `HardLabels` on
  `oracle_advantage`, or the dataset's sparse fixed pairs), `sample_steps` / `gather_steps`
  (single steps drawn uniformly from the real steps of chosen episodes).
- the optimiser pieces: `warmup_factor` (linear learning-rate warm-up), `tree_select` (the
  optimiser reset at a phase switch), `parameter_count`.
- `evaluate`: the deterministic policy's undiscounted return over `eval_episodes` episodes of
  `eval_horizon` steps in the env, with actions in [−1, 1] rescaled onto the env's bounds (as
  PPO's training env does); `episode/success` too where the env reports `info["success"]`.
- `run_update`: one update = `steps_per_update` gradient steps in a `lax.scan`, then one
  evaluation. Every random draw comes from `step_key(state.key, stream, step)` (the gradient
  steps' stream apart from the evaluations'), so a resumed run draws what an uninterrupted one
  would.

An agent holds the dataset as its field `data` (device arrays) and derives nothing array-valued
from it when built, so `loop.Trainer` can hand it to its programs as one unbatched argument
(members of a sweep share it; `dataclasses.replace(agent, data=traced)` is all it takes):

    build = functools.partial(CPL.build, data=data)
    trainer = loop.Trainer.build(build, CPLConfig(), updates_per_iteration=10)
    sweep.run(trainer, sweep.parse_spec("alpha=0.02,0.1,0.5"), base_hparams=CPLHyperparams(), seeds=4, run_dir=...)
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int, PRNGKeyArray

from jaxrl_si import data as offline_data
from jaxrl_si import envs, nets
from jaxrl_si.errors import ConfigError, check_known_keys
from jaxrl_si.layout import Constrain
from jaxrl_si.nets.initializers import orthogonal
from jaxrl_si.preferences import HardLabels

ACTOR_KINDS = ("deterministic", "gaussian", "tanh_gaussian")
PAIR_MODES = ("dense", "sparse")
ACTION_LIMIT = 1.0 - 1e-5  # |a| bound before arctanh in tanh-Gaussian log-probs (official CPL code)
LOG_STD_RANGE = (-5.0, 2.0)
TRAIN_STREAM, EVAL_STREAM = 0, 1  # fold_in tags: the gradient steps' keys and the evaluations' never meet


@dataclasses.dataclass(frozen=True)
class OfflineConfig:
    """Static settings every offline agent has. Defaults: the CPL paper's state-based MetaWorld runs
    (batch 96 segments, 500k steps, evaluation every 5k steps over 25 episodes), on Pendulum."""

    env: str = "gymnax:Pendulum-v1"  # evaluation env ("<backend>:<name>", envs.make); the data's task
    actor_kind: str = "deterministic"  # one of ACTOR_KINDS
    hidden_sizes: tuple[int, ...] = (512, 512)  # actor MLP widths (paper 512 x 2; smaller on CPU)
    dropout: float = 0.25  # actor dropout rate during training (paper 0.25)
    batch_size: int = 96  # segments per gradient step: batch_size // 2 pairs
    pair_mode: str = "dense"  # dense: fresh pairs labelled by the regret oracle; sparse: the data's fixed pairs
    total_steps: int = 500_000  # gradient steps of the whole run
    steps_per_update: int = 5_000  # gradient steps per update (one evaluation each)
    eval_episodes: int = 25  # episodes per evaluation
    eval_horizon: int = 200  # steps per evaluation episode (gymnax Pendulum: 200)
    normalize_observations: bool = True  # standardise observations by the dataset's statistics

    def __post_init__(self):
        object.__setattr__(self, "hidden_sizes", tuple(self.hidden_sizes))
        for name in ("batch_size", "total_steps", "steps_per_update", "eval_episodes", "eval_horizon"):
            check_int(self, name)
        if self.batch_size % 2:
            raise ConfigError(f"{type(self).__name__}.batch_size must be even (two segments a pair), got {self.batch_size}.")
        if self.total_steps % self.steps_per_update:
            raise ConfigError(
                f"{type(self).__name__}.steps_per_update={self.steps_per_update} must divide total_steps={self.total_steps}."
            )
        for name, valid in (("actor_kind", ACTOR_KINDS), ("pair_mode", PAIR_MODES)):
            if getattr(self, name) not in valid:
                raise ConfigError(f"{type(self).__name__}.{name} must be one of {valid}, got {getattr(self, name)!r}.")
        if not 0.0 <= self.dropout < 1.0 or not all(isinstance(w, int) and w > 0 for w in self.hidden_sizes):
            raise ConfigError(f"{type(self).__name__}: dropout must be in [0, 1) and hidden_sizes positive ints.")

    @property
    def num_pairs(self) -> int:
        return self.batch_size // 2

    @property
    def num_updates(self) -> int:
        return self.total_steps // self.steps_per_update

    @classmethod
    def from_dict(cls, values: dict[str, Any]):
        """Build from a dict; unknown keys are an error naming them and the valid ones."""
        check_known_keys(cls.__name__, values, (f.name for f in dataclasses.fields(cls)))
        return cls(**values)


def check_int(config, name: str, least: int = 1) -> None:
    """`ConfigError` unless `config.<name>` is an int >= `least`."""
    value = getattr(config, name)
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ConfigError(f"{type(config).__name__}.{name} must be an int >= {least}, got {value!r}.")


class ObservationStats(flax.struct.PyTreeNode):
    """Per-feature mean and standard deviation of the dataset's observations."""

    mean: Array
    std: Array

    def normalize(self, obs: Array) -> Array:
        return (obs - self.mean) / self.std


def observation_stats(episodes: offline_data.Episodes, enabled: bool) -> ObservationStats:
    """Mean and std (floored at 1e-3) over the real steps of `episodes`; (0, 1) when not `enabled`."""
    shape = episodes.observation.shape[2:]
    if not enabled:
        return ObservationStats(jnp.zeros(shape, jnp.float32), jnp.ones(shape, jnp.float32))
    real = episodes.real_steps.reshape(episodes.reward.shape + (1,) * len(shape))
    count = real.sum()
    mean = jnp.sum(jnp.where(real, episodes.observation, 0.0), axis=(0, 1)) / count
    var = jnp.sum(jnp.where(real, jnp.square(episodes.observation - mean), 0.0), axis=(0, 1)) / count
    return ObservationStats(mean, jnp.maximum(jnp.sqrt(var), 1e-3))


class Actor(nn.Module):
    """μ(s) (and log σ(s) for the Gaussian kinds): Dense → Dropout → ReLU per hidden layer.

    The CPL paper's official actor (module docstring); orthogonal weights with gain 1 and zero
    biases (its `ortho_init: True`). Shapes: `obs [..., D] -> [..., A]` (deterministic) or
    `[..., 2A]` (mean and raw log-std).
    """

    action_size: int
    kind: str = "deterministic"
    hidden_sizes: tuple[int, ...] = (512, 512)
    dropout: float = 0.25

    @nn.compact
    def __call__(self, obs: Float[Array, "... D"], *, train: bool = False) -> Float[Array, "... O"]:
        x = obs.reshape(-1, obs.shape[-1])  # one batch axis: on XLA:CPU dropout over [2, P, L, D] took 1.8x as long
        for width in self.hidden_sizes:
            x = nn.Dense(width, kernel_init=orthogonal(1.0), bias_init=nn.initializers.zeros)(x)
            if self.dropout > 0:
                x = nn.Dropout(self.dropout, deterministic=not train)(x)
            x = nn.relu(x)
        outputs = self.action_size * (1 if self.kind == "deterministic" else 2)
        x = nn.Dense(outputs, kernel_init=orthogonal(1.0), bias_init=nn.initializers.zeros)(x)
        return x.reshape(*obs.shape[:-1], outputs)


def actor_log_prob(kind: str, output: Float[Array, "... O"], action: Float[Array, "... A"]) -> Float[Array, "..."]:
    """log π(a | s) of the `Actor`'s `output` (module docstring's table); `[..., A] -> [...]`."""
    size = action.shape[-1]
    if kind == "deterministic":
        return -jnp.sum(jnp.square(jnp.tanh(output) - action), axis=-1)
    mean, raw_log_std = output[..., :size], output[..., size:]
    low, high = LOG_STD_RANGE
    log_std = low + 0.5 * (high - low) * (jnp.tanh(raw_log_std) + 1.0)
    if kind == "gaussian":
        return nets.DiagGaussian(jnp.tanh(mean), log_std).log_prob(action)
    return nets.TanhGaussian(mean, log_std, eps=1.0 - ACTION_LIMIT).log_prob(action)


def actor_mode(output: Float[Array, "... O"], action_size: int) -> Float[Array, "... A"]:
    """The deterministic action tanh(μ(s)) of every kind: the mean, or the tanh of the Gaussian's mean."""
    return jnp.tanh(output[..., :action_size])


class PolicyState(flax.struct.PyTreeNode):
    """What a policy-only agent (CPL, BC) needs to continue exactly."""

    params: Any  # the actor's
    opt_state: Any
    observation: ObservationStats
    key: PRNGKeyArray  # fixed; each step draws from step_key(key, stream, step)
    step: Array  # int32 [], gradient steps done


def deterministic_action(actor: Actor, params, stats: ObservationStats, obs: Array) -> Array:
    """tanh(μ(s)) for raw observations `[..., D] -> [..., A]` (dropout off)."""
    return actor_mode(actor.apply(params, stats.normalize(obs)), actor.action_size)


def pair_log_probs(
    actor: Actor, params, stats: ObservationStats, pairs: offline_data.PairBatch, key: PRNGKeyArray
) -> Float[Array, "2 P L"]:
    """log π(a_t | s_t) along both segments of every pair, in one forward pass (dropout on)."""
    obs = jnp.stack([pairs.first.observation, pairs.second.observation])
    action = jnp.stack([pairs.first.action, pairs.second.action])
    output = actor.apply(params, stats.normalize(obs), train=True, rngs={"dropout": key})
    return actor_log_prob(actor.kind, output, action)


def step_key(key: PRNGKeyArray, stream: int, step: Array) -> PRNGKeyArray:
    """The key of `step` in `stream`: fold_in(fold_in(key, stream), step). (Under JAX's partitionable
    threefry, split(k, n)[i] == fold_in(k, i), so streams are told apart before steps are.)"""
    return jax.random.fold_in(jax.random.fold_in(key, stream), step)


def masked_mean(x: Array, weight: Array) -> Float[Array, ""]:
    """Σ w x / Σ w (0 when every weight is 0)."""
    weight = jnp.broadcast_to(weight, x.shape).astype(x.dtype)
    return jnp.sum(weight * x) / jnp.maximum(weight.sum(), 1.0)


def preference_pairs(config: OfflineConfig, data: offline_data.OfflineData, key: PRNGKeyArray) -> offline_data.PairBatch:
    """`config.num_pairs` labelled pairs: dense (two fresh segments a pair, labelled by `HardLabels`
    on the sums of `oracle_advantage`, the CPL paper's regret oracle) or sparse (the fixed pairs)."""
    if config.pair_mode == "dense":
        return offline_data.dense_pair_batch(data, key, config.num_pairs, HardLabels(), regret=True)
    return offline_data.pair_batch(data, key, config.num_pairs)


def sample_steps(key: PRNGKeyArray, counts: Int[Array, "E"], batch_size: int) -> tuple[Int[Array, "B"], Int[Array, "B"]]:
    """`(episode, t)` of `batch_size` steps drawn uniformly from the first `counts[e]` steps of each episode.

    A uniform integer u in [0, Σ counts) is located in the running sums of `counts`: episode e
    holds u in [C_{e-1}, C_e) and step t = u − C_{e-1}, so every counted step is equally likely.
    """
    ends = jnp.cumsum(counts)
    u = jax.random.randint(key, (batch_size,), 0, jnp.maximum(ends[-1], 1))
    episode = jnp.searchsorted(ends, u, side="right").astype(jnp.int32)
    return episode, (u - (ends[episode] - counts[episode])).astype(jnp.int32)


def gather_steps(field: Array, episode: Int[Array, "B"], t: Int[Array, "B"]) -> Array:
    """`field[episode, t]`: `[E, T, ...] -> [B, ...]`."""
    return field[episode, t]


def warmup_factor(steps: Array, warmup_steps: int) -> Float[Array, ""]:
    """min(1, steps / warmup_steps): the official CPL code's `linear_warmup` (1 when warmup_steps = 0)."""
    if warmup_steps == 0:
        return jnp.ones((), jnp.float32)
    return jnp.clip(steps / warmup_steps, 0.0, 1.0).astype(jnp.float32)


def tree_select(pred: Bool[Array, ""], on_true, on_false):
    """Leaf-wise `where(pred, on_true, on_false)` over two pytrees of one structure."""
    return jax.tree.map(lambda a, b: jnp.where(pred, a, b), on_true, on_false)


def parameter_count(params) -> int:
    """Number of scalars in a pytree of parameters (concrete or `jax.eval_shape`d)."""
    return int(sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(params)))


def make_eval_env(config: OfflineConfig) -> envs.VectorEnv:
    """`eval_episodes` copies of `envs.make(config.env)`, actions in [−1, 1] rescaled onto its bounds."""
    with jax.ensure_compile_time_eval():
        env = envs.make(config.env)
    if not isinstance(env.action_space, envs.Box) or not env.action_space.bounded:
        raise ConfigError(f"the offline agents need a bounded continuous action space; {config.env} has {env.action_space!r}.")
    return envs.vectorize(envs.RescaleAction(env), config.eval_episodes)


def run_episodes(
    step: Callable, env_state, ts, act: Callable[[Array], Array], key: PRNGKeyArray, horizon: int, *, reward_of: Callable = lambda ts: ts.reward
) -> tuple[Float[Array, " N"], Bool[Array, " N"]]:
    """Return and success of N batched episodes run `horizon` steps from `(env_state, ts)`.

    `step(env_state, actions [N, A], key) -> (env_state, ts)` advances all N episodes (a
    `VectorEnv.step`, or `vmapped_step(env)`); `act(obs [N, *obs]) -> [N, A]`; `reward_of(ts) -> [N]`
    (default: the env's reward). An episode counts the rewards up to its first `done`
    (`terminated | truncated`) and succeeds if `info["success"]` is ever true up to then (never,
    when the env reports none). The one evaluation scan of the offline agents and of HILP's.
    """
    n = ts.obs.shape[0]
    no_success = jnp.zeros(n, bool)

    def advance(carry, key):
        env_state, obs, alive, returns, success = carry
        env_state, ts = step(env_state, act(obs), key)
        success = success | (alive & ts.info.get("success", no_success).astype(bool))
        returns = returns + jnp.where(alive, reward_of(ts), 0.0)
        return (env_state, ts.obs, alive & ~ts.done, returns, success), None

    init = (env_state, ts.obs, jnp.ones(n, bool), jnp.zeros(n), ts.info.get("success", no_success).astype(bool))
    (_, _, _, returns, success), _ = jax.lax.scan(advance, init, jax.random.split(key, horizon))
    return returns, success


def vmapped_step(env: envs.Env) -> Callable:
    """`step(env_state [N], actions [N, A], key)` for `run_episodes`: `env.step` vmapped, one key per episode."""
    return lambda env_state, actions, key: jax.vmap(env.step)(env_state, actions, jax.random.split(key, actions.shape[0]))


def evaluate(
    env: envs.VectorEnv, horizon: int, act: Callable[[Array], Array], key: PRNGKeyArray, constrain: Constrain
) -> dict[str, Array]:
    """Return (and success, where the env reports one) of `act` over `env.num_envs` episodes.

    Each episode runs `horizon` steps or to its first `terminated | truncated` (`run_episodes`).
    `act` maps observations `[N, *obs]` to actions in [−1, 1] `[N, A]`.
    """
    key_reset, key_steps = jax.random.split(key)
    env_state, ts = env.reset(key_reset)

    def step(env_state, actions, key):
        env_state, ts = env.step(env_state, actions, key)
        return envs.constrain_env_state(env, env_state, constrain), ts

    returns, success = run_episodes(step, envs.constrain_env_state(env, env_state, constrain), ts, act, key_steps, horizon)
    metrics = {"episode/return": returns.mean(), "episode/count": jnp.asarray(env.num_envs, jnp.float32)}
    if "success" in ts.info:
        metrics["episode/success"] = success.mean()
    return metrics


def run_update(agent, hparams, state, gradient_step: Callable, act: Callable) -> tuple[Any, dict[str, Array]]:
    """`agent.config.steps_per_update` gradient steps in a `lax.scan`, then one evaluation.

    `gradient_step(hparams, state) -> (state, metrics)` advances `state.step`; `act(state, obs)`
    is the deterministic policy. Metrics: the steps' means (`optim/learning_rate`: the last
    step's) and the evaluation's. The evaluation key is `step_key(state.key, EVAL_STREAM,
    state.step)` after the steps: fresh start states every update, the same ones on a resume.
    """
    state, metrics = scan_gradient_steps(agent, hparams, state, gradient_step)
    key = step_key(state.key, EVAL_STREAM, state.step)
    metrics.update(evaluate(agent.eval_env, agent.config.eval_horizon, lambda obs: act(state, obs), key, agent.constrain))
    return state, metrics


def scan_gradient_steps(agent, hparams, state, gradient_step: Callable) -> tuple[Any, dict[str, Array]]:
    """`agent.config.steps_per_update` calls of `gradient_step(hparams, state)` in a `lax.scan`; the
    final state and the steps' mean metrics (`optim/learning_rate`: the last step's)."""
    state, steps = jax.lax.scan(lambda s, _: gradient_step(hparams, s), state, None, length=agent.config.steps_per_update)
    return state, {name: values[-1] if name == "optim/learning_rate" else values.mean() for name, values in steps.items()}


class OfflineAgent:
    """What the offline agents share; each is a frozen dataclass with `config`, `data`,
    `eval_env` and `constrain`, and defines `init`, `gradient_step(hparams, state)` and
    `act(state, obs)`. An update is `steps_per_update` gradient steps and one evaluation (HILP's
    agents override `update` with their prompted evaluations)."""

    @property
    def num_updates(self) -> int:
        return self.config.num_updates

    @property
    def env_steps_per_update(self) -> int:
        """Gradient steps per update (an offline agent takes no env steps)."""
        return self.config.steps_per_update

    def update(self, hparams, state):
        """`steps_per_update` gradient steps, then an evaluation of the deterministic policy (`run_update`)."""
        return run_update(self, hparams, state, self.gradient_step, self.act)

    def train(self, hparams, key: PRNGKeyArray):
        """A whole run: `init`, then `num_updates` updates in one `lax.scan`; metrics `[num_updates]`."""
        return jax.lax.scan(lambda s, _: self.update(hparams, s), self.init(hparams, key), None, length=self.num_updates)


def checked_actor(config: OfflineConfig, data: offline_data.OfflineData) -> tuple[Actor, envs.VectorEnv]:
    """The actor and evaluation env of `config`, once `data` is checked against them (`check_data`)."""
    eval_env = make_eval_env(config)
    check_data(config, data, eval_env)
    return Actor(eval_env.action_size, config.actor_kind, config.hidden_sizes, config.dropout), eval_env


def check_data(config: OfflineConfig, data: offline_data.OfflineData, env: envs.Env) -> None:
    """`ConfigError` unless `data` fits the env's spaces and the config's pair mode."""
    episodes = data.episodes
    obs_shape, action_shape = tuple(episodes.observation.shape[2:]), tuple(episodes.action.shape[2:])
    if obs_shape != tuple(env.observation_shape) or action_shape != (env.action_size,):
        raise ConfigError(
            f"data has observations {obs_shape} and actions {action_shape}, but {config.env} has "
            f"{tuple(env.observation_shape)} and ({env.action_size},)"
        )
    if config.pair_mode == "sparse" and data.pairs.num_pairs == 0:
        raise ConfigError("pair_mode='sparse' needs the dataset's fixed pairs, and data.pairs is empty; use pair_mode='dense'")
    if data.segments.num_segments < 2:
        raise ConfigError(f"data has {data.segments.num_segments} segments; preference pairs need at least 2")
    offline_data.check_views(data, where="data")
    if np.any(np.abs(np.asarray(episodes.action)) > 1.0):
        raise ConfigError("data: `episodes.action` must lie in [-1, 1] (the agent's units; the evaluation rescales onto the env's bounds)")
