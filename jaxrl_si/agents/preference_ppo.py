r"""PPO that learns from preferences: SPO's self-play win rates, reward-model RLHF, or the true reward.

One agent, three ways to turn a rollout into rewards, all on the PPO of `agents/ppo.py`
(`PPO.rollout`, then the rewards are replaced, then `PPO.learn`):

- `spo` (Swamy et al. 2024, "A Minimaximalist Approach to Reinforcement Learning from Human
  Feedback", arXiv 2401.04056): the E whole trajectories of the rollout are compared
  by the oracle, one sampled label per unordered pair (E (E − 1) / 2 queries), and trajectory
  i is rewarded with its win rate w_i = (1 / (E − 1)) Σ_{j≠i} 1[i ≻ j]. No reward model.
- `rlhf` (Christiano et al. 2017, arXiv 1706.03741, Sec. 2.2): the same pairs and labels train
  a Bradley-Terry reward model r̂(s, a), an MLP whose mean over a trajectory is the BT logit
  (`losses.bradley_terry_loss`; the mean, not the sum, keeps the logit O(1) at initialisation
  for L = 200; the two differ by the constant factor L), with its own Adam in the state and
  `reward_model_steps` full-batch steps per iteration on that iteration's pairs (the model
  carries over between iterations); PPO then maximises r̂. Same query budget as SPO.
- `ppo`: the env's own reward, the ceiling.

Whole trajectories inside one jitted update: the task has a fixed horizon L
(`preferences.tasks`), `rollout_length` is a multiple of L, and all envs start together, so
every rollout holds E = num_envs · rollout_length / L complete episodes. The metric
`preference/aligned` (fraction of episodes that end exactly at a rollout's episode boundary)
checks it and must be 1.

Choices where the paper could not be read here (see `../shared/reference/experiments.md` §4),
each a hyperparameter, so that a sweep ablates it:
- `spo_reward_at_end`: 0 (default) spreads w_i over the steps, r_t = w_i at every step of
  trajectory i (the trajectory-level reward split equally, times L); 1 gives r = L · w_i at its
  last step and 0 elsewhere. Both have the same undiscounted total.
- `spo_queue`: 0 (default) compares within the batch; 1 also compares each trajectory with
  the `queue_size` most recent trajectories of earlier batches (E · queue_size more queries).

Several methods and oracles can be compiled into one program (`methods`, `oracles` in the
config) and chosen per member by the hyperparameters `method` and `oracle` (indices), so that
a sweep crosses methods x oracles x seeds in one vmapped program. Under `vmap` every compiled
method's rewards are computed for every member and the member's are selected: the reward
model is trained in every member of a program that includes `rlhf` (a one-method program
pays for nothing it does not use).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, Float, PRNGKeyArray

from jaxrl_si import nets, preferences
from jaxrl_si.agents.ppo import PPO, PPOConfig, PPOHyperparams, PPOState, Transition
from jaxrl_si.errors import ConfigError, check_known_keys
from jaxrl_si.layout import Constrain, unconstrained
from jaxrl_si.losses import bradley_terry_loss
from jaxrl_si.preferences import Trajectories

METHODS = ("ppo", "spo", "rlhf")

PENDULUM_PPO = PPOConfig(
    env="gymnax:Pendulum-v1",
    num_envs=16,
    rollout_length=200,
    num_epochs=10,
    num_minibatches=32,
    total_env_steps=1_000_000,
    normalize_observations=True,
)
"""The PPO setting measured to learn Pendulum on CPU (experiments.md §4), one episode per rollout."""


@dataclasses.dataclass(frozen=True)
class PreferencePPOConfig:
    """Static settings: the PPO learner's, and which methods and oracles the program holds."""

    ppo: PPOConfig = PENDULUM_PPO
    methods: tuple[str, ...] = ("spo",)  # compiled in; `hparams.method` indexes them
    oracles: tuple[str, ...] = ("bt",)  # presets of the env's task (preferences.tasks); `hparams.oracle` indexes them
    queue_size: int = 0  # earlier trajectories kept for SPO's win rates (used when hparams.spo_queue = 1)
    reward_model_hidden_sizes: tuple[int, ...] = (64, 64)  # r̂(s, a) MLP
    reward_model_steps: int = 8  # full-batch Adam steps on each iteration's pairs

    def __post_init__(self):
        object.__setattr__(self, "methods", tuple(self.methods))
        object.__setattr__(self, "oracles", tuple(self.oracles))
        object.__setattr__(self, "reward_model_hidden_sizes", tuple(self.reward_model_hidden_sizes))
        for field, valid in (("methods", METHODS), ("oracles", tuple(self.task.oracles))):
            names = getattr(self, field)
            unknown = [n for n in names if n not in valid]
            if not names or unknown or len(set(names)) != len(names):
                raise ConfigError(f"PreferencePPOConfig.{field} must be distinct names from {valid}, got {names!r}.")
        if self.ppo.rollout_length % self.episode_length:
            raise ConfigError(
                f"PreferencePPOConfig: ppo.rollout_length={self.ppo.rollout_length} must be a multiple of the "
                f"episode length {self.episode_length} of {self.ppo.env}, so that rollouts hold whole trajectories."
            )
        for name, least in (("queue_size", 0), ("reward_model_steps", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ConfigError(f"PreferencePPOConfig.{name} must be an int >= {least}, got {value!r}.")

    @property
    def env(self) -> str:
        return self.ppo.env

    @property
    def task(self) -> preferences.PreferenceTask:
        return preferences.task(self.ppo.env)

    @property
    def episode_length(self) -> int:
        return self.task.episode_length

    @property
    def num_updates(self) -> int:
        return self.ppo.num_updates

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> PreferencePPOConfig:
        """Build from a dict (`ppo` may be a dict); unknown keys are an error naming them."""
        check_known_keys("PreferencePPOConfig", values, (f.name for f in dataclasses.fields(cls)))
        ppo = values.get("ppo", PENDULUM_PPO)
        return cls(**{**values, "ppo": PPOConfig.from_dict(ppo) if isinstance(ppo, dict) else ppo})


class PreferencePPOHyperparams(PPOHyperparams):
    """PPO's hyperparameters (Pendulum's tuned values) and the preference ones, all traced leaves."""

    learning_rate: float = 1e-3
    gamma: float = 0.9
    ent_coef: float = 0.0
    method: float = 0.0  # index into config.methods
    oracle: float = 0.0  # index into config.oracles
    spo_reward_at_end: float = 0.0  # 0: r_t = w_i at every step; 1: r = L w_i at the last step
    spo_queue: float = 0.0  # 1: win rates also against the queue of earlier trajectories
    reward_model_learning_rate: float = 1e-3  # Adam step size of r̂


class RewardModelState(flax.struct.PyTreeNode):
    params: Any
    opt_state: Any


class TrajectoryQueue(flax.struct.PyTreeNode):
    """The `queue_size` most recent trajectories of earlier batches, newest first."""

    trajectories: Trajectories  # [Q, L]
    count: Array  # int32 [], how many slots hold a trajectory


class PreferencePPOState(flax.struct.PyTreeNode):
    ppo: PPOState
    reward_model: RewardModelState
    queue: TrajectoryQueue
    key: PRNGKeyArray  # labels' stream, apart from PPO's


class RewardModel(flax.linen.Module):
    """r̂(s, a): an MLP on the concatenated (observation, action); `[..., D] x [..., A] -> [...]`.

    No output bias: the Bradley-Terry loss cannot see a constant shift of r̂, so a bias would get
    no gradient but rounding noise, which Adam rescales into full-size steps.
    """

    hidden_sizes: tuple[int, ...]

    @flax.linen.compact
    def __call__(self, obs: Array, action: Array) -> Array:
        x = jnp.concatenate([obs.reshape(*action.shape[:-1], -1), action], axis=-1)
        return nets.MLP(self.hidden_sizes, 1, activation="tanh", output_bias=False)(x)[..., 0]


@dataclasses.dataclass(frozen=True, eq=False)
class PreferencePPO:
    """The static parts: config, the PPO learner on the task's env, the oracles, the reward model."""

    config: PreferencePPOConfig
    ppo: PPO
    oracles: tuple[preferences.Oracle, ...]
    reward_model: RewardModel
    constrain: Constrain = unconstrained

    @classmethod
    def build(cls, config: PreferencePPOConfig, *, constrain: Constrain = unconstrained) -> PreferencePPO:
        task = config.task
        with jax.ensure_compile_time_eval():
            base_env = task.make_env()
        ppo = PPO.build(config.ppo, constrain=constrain, base_env=base_env)
        if ppo.env.discrete_actions:
            raise ConfigError(f"PreferencePPO needs continuous actions; {config.ppo.env} has discrete ones.")
        oracles = tuple(task.oracle(name) for name in config.oracles)
        return cls(config, ppo, oracles, RewardModel(config.reward_model_hidden_sizes), constrain)

    @property
    def num_updates(self) -> int:
        return self.ppo.num_updates

    @property
    def env_steps_per_update(self) -> int:
        return self.ppo.env_steps_per_update

    @property
    def data_parallel_sizes(self) -> dict[str, int]:
        return self.ppo.data_parallel_sizes

    def init(self, hparams: PreferencePPOHyperparams, key: PRNGKeyArray) -> PreferencePPOState:
        """PPO's state from `key` itself (so `method=ppo` is PPO's run), the rest from a fold of it."""
        ppo_state = self.ppo.init(hparams, key)
        key_model, key_labels = jax.random.split(jax.random.fold_in(key, 1))
        obs, action = ppo_state.obs[0], jnp.zeros((self.ppo.env.action_size,), jnp.float32)
        params = self.reward_model.init(key_model, obs, action)
        model = RewardModelState(params, _reward_model_optimizer(hparams).init(params))
        queue = _empty_queue(self.config)
        return PreferencePPOState(ppo_state, model, queue, key_labels)

    def update(self, hparams: PreferencePPOHyperparams, state: PreferencePPOState):
        """One iteration: roll out, label all pairs, relabel rewards by the member's method, PPO."""
        rollout = self.ppo.rollout(state.ppo)
        key, key_batch, key_queue = jax.random.split(state.key, 3)
        episodes = episodes_of(self.config, rollout.transitions)
        labels = self._labels(hparams, key_batch, episodes)
        rewards, model, metrics = {}, state.reward_model, {}
        if "ppo" in self.config.methods:
            rewards["ppo"] = rollout.transitions.reward
        if "spo" in self.config.methods:
            queue_labels = self._queue_labels(hparams, key_queue, episodes, state.queue)
            win = spo_win_rates(labels, queue_labels, state.queue.count, hparams.spo_queue)
            rewards["spo"] = trajectory_rewards_to_steps(self.config, win, hparams.spo_reward_at_end)
            metrics["spo/win_rate_std"] = win.std()
        if "rlhf" in self.config.methods:
            model, predicted, model_metrics = self._train_reward_model(hparams, state.reward_model, rollout.transitions, labels)
            rewards["rlhf"] = predicted
            metrics.update(model_metrics)
        reward = _select(hparams.method, [rewards[m] for m in self.config.methods])
        relabelled = rollout.replace(transitions=rollout.transitions.replace(reward=reward))
        ppo_state, ppo_metrics = self.ppo.learn(hparams, state.ppo, relabelled)
        metrics.update(ppo_metrics)
        metrics.update(_label_metrics(self.config, rollout.transitions, episodes, labels))
        queue = push(state.queue, episodes, self.config.queue_size)
        return PreferencePPOState(ppo_state, model, queue, key), metrics

    def train(self, hparams: PreferencePPOHyperparams, key: PRNGKeyArray):
        """A whole run in one `lax.scan`; metrics `[num_updates]`."""
        return jax.lax.scan(lambda s, _: self.update(hparams, s), self.init(hparams, key), None, length=self.num_updates)

    def episodes(self, state: PreferencePPOState, key: PRNGKeyArray) -> Trajectories:
        """E fresh whole trajectories of the current policy (for evaluation; the state is not advanced)."""
        rollout = self.ppo.rollout(state.ppo.replace(key=key))
        return episodes_of(self.config, rollout.transitions)

    def cross_play(self, hparams: PreferencePPOHyperparams, iterates: PreferencePPOState, key: PRNGKeyArray) -> Float[Array, "K K"]:
        """W[i, j] = P(a trajectory of iterate i ≻ one of iterate j) under the member's oracle.

        `iterates` stacks K states of one member (e.g. every iteration's checkpoint). Each
        iterate rolls out E fresh trajectories; W[i, j] averages the oracle's probability over
        all E x E cross pairs (the expectation, no sampled labels), so W + W^T = 1.
        """
        count = jax.tree.leaves(iterates)[0].shape[0]
        episodes = jax.vmap(self.episodes)(iterates, jax.random.split(key, count))  # [K, E, L]

        def mean_probability(oracle, a, b):
            return oracle.probability(*preferences.cross_pairs(a, b)).mean()

        def matrix(oracle, episodes):
            pair = functools.partial(mean_probability, oracle)
            return jax.vmap(jax.vmap(pair, (None, 0)), (0, None))(episodes, episodes)

        return _switch(hparams.oracle, [functools.partial(matrix, oracle) for oracle in self.oracles], episodes)

    def _labels(self, hparams, key, episodes: Trajectories) -> Float[Array, "E E"]:
        """One sampled label per unordered pair of the batch, from the member's oracle."""
        branches = [functools.partial(preferences.sample_preference_matrix, oracle) for oracle in self.oracles]
        return _switch(hparams.oracle, branches, key, episodes)

    def _queue_labels(self, hparams, key, episodes: Trajectories, queue: TrajectoryQueue) -> Float[Array, "E Q"]:
        """L[i, q]: sampled label of batch trajectory i against queued trajectory q."""
        if self.config.queue_size == 0:
            return jnp.zeros((episodes.reward.shape[0], 0), jnp.float32)
        branches = [functools.partial(preferences.sample_preferences, oracle) for oracle in self.oracles]
        return _switch(hparams.oracle, branches, key, *preferences.cross_pairs(episodes, queue.trajectories))

    def _train_reward_model(self, hparams, model: RewardModelState, traj: Transition, labels):
        """`reward_model_steps` Adam steps of the BT loss on the batch's pairs; r̂ `[T, N]` after them."""
        first, second = np.triu_indices(labels.shape[0], k=1)
        pair_labels = labels[first, second]
        optimizer = _reward_model_optimizer(hparams)

        def predicted_returns(params):
            step_rewards = self.reward_model.apply(params, traj.obs, traj.action)
            return step_rewards, _to_episodes(self.config, step_rewards).mean(-1)

        def loss(params):
            _, returns = predicted_returns(params)
            chosen = jnp.where(pair_labels > 0.5, returns[first], returns[second])
            rejected = jnp.where(pair_labels > 0.5, returns[second], returns[first])
            return bradley_terry_loss(chosen, rejected).mean(), (chosen > rejected).mean()

        def step(carry, _):
            params, opt_state = carry
            grads = jax.grad(lambda p: loss(p)[0])(params)
            updates, opt_state = optimizer.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), None

        before_loss, before_accuracy = loss(model.params)
        (params, opt_state), _ = jax.lax.scan(step, (model.params, model.opt_state), None, length=self.config.reward_model_steps)
        step_rewards, _ = predicted_returns(params)
        metrics = {"reward_model/loss": before_loss, "reward_model/accuracy": before_accuracy}
        return RewardModelState(params, opt_state), step_rewards, metrics


def episodes_of(config: PreferencePPOConfig, traj: Transition) -> Trajectories:
    """The rollout `[T, N]` cut into its E = N T / L whole episodes `[E, L]` (episode-major: k N + n)."""
    return Trajectories(_to_episodes(config, traj.reward), _to_episodes(config, traj.info["features"]))


def _to_episodes(config: PreferencePPOConfig, x: Array) -> Array:
    """`[T, N, ...]` -> `[E, L, ...]`, episode index k * N + n for the k-th episode of env n."""
    t, n = x.shape[:2]
    length = config.episode_length
    x = x.reshape(t // length, length, n, *x.shape[2:])
    return jnp.swapaxes(x, 1, 2).reshape(t // length * n, length, *x.shape[3:])


def trajectory_rewards_to_steps(config: PreferencePPOConfig, values: Float[Array, "E"], at_end) -> Float[Array, "T N"]:
    """Per-trajectory values as per-step rewards `[T, N]`: w at every step, or L w at the last one."""
    t, n, length = config.ppo.rollout_length, config.ppo.num_envs, config.episode_length
    per_episode = values.reshape(t // length, 1, n)
    spread = jnp.broadcast_to(per_episode, (t // length, length, n))
    last = jnp.zeros_like(spread).at[:, -1].set(length * per_episode[:, 0])
    return jnp.where(at_end > 0.5, last, spread).reshape(t, n)


def spo_win_rates(labels: Float[Array, "E E"], queue_labels: Float[Array, "E Q"], queue_count, use_queue) -> Float[Array, "E"]:
    """SPO's reward: each trajectory's fraction of wins, within the batch or also against the queue.

    Within the batch it is `preferences.win_rates(labels)`; with the queue, the wins against its
    `queue_count` filled slots join the mean.
    """
    e, q = queue_labels.shape
    batch_wins = preferences.win_rates(labels) * (e - 1)
    filled = (jnp.arange(q) < queue_count) & (use_queue > 0.5)
    queue_wins = jnp.sum(jnp.where(filled[None], queue_labels, 0.0), axis=-1)
    return (batch_wins + queue_wins) / (e - 1 + filled.sum())


def push(queue: TrajectoryQueue, episodes: Trajectories, capacity: int) -> TrajectoryQueue:
    """The batch enters at the front; the oldest trajectories leave. Capacity 0: no queue."""
    size = queue.trajectories.reward.shape[0]
    if capacity == 0:
        return queue
    merged = jax.tree.map(lambda new, old: jnp.concatenate([new, old])[:size], episodes, queue.trajectories)
    return TrajectoryQueue(merged, jnp.minimum(queue.count + episodes.reward.shape[0], size))


def _empty_queue(config: PreferencePPOConfig) -> TrajectoryQueue:
    """`queue_size` empty slots (one unused slot when there is no queue: Orbax saves no empty arrays)."""
    q, length, k = max(config.queue_size, 1), config.episode_length, len(config.task.feature_names)
    empty = Trajectories(jnp.zeros((q, length), jnp.float32), jnp.zeros((q, length, k), jnp.float32))
    return TrajectoryQueue(empty, jnp.zeros((), jnp.int32))


def _label_metrics(config, traj: Transition, episodes: Trajectories, labels) -> dict[str, Array]:
    """How often labels agree with the true return's order, and whether episodes fill rollouts."""
    first, second = np.triu_indices(labels.shape[0], k=1)
    returns = episodes.returns
    agree = (labels[first, second] > 0.5) == (returns[first] > returns[second])
    done = _to_episodes(config, traj.terminated | traj.truncated)  # [E, L]
    aligned = done[:, -1] & ~jnp.any(done[:, :-1], axis=-1)
    return {"preference/agreement": agree.mean(), "preference/aligned": aligned.mean()}


def _reward_model_optimizer(hparams: PreferencePPOHyperparams) -> optax.GradientTransformation:
    return optax.adam(hparams.reward_model_learning_rate)


def _index(value, count: int) -> Array:
    """A traced float hyperparameter as an index in [0, count)."""
    return jnp.clip(jnp.round(jnp.asarray(value)).astype(jnp.int32), 0, count - 1)


def _switch(value, branches, *args):
    """`branches[value](*args)`; with one branch, a plain call (nothing to select)."""
    if len(branches) == 1:
        return branches[0](*args)
    return jax.lax.switch(_index(value, len(branches)), branches, *args)


def _select(value, arrays: list[Array]) -> Array:
    """`arrays[value]` for a traced index (the arrays are already computed)."""
    if len(arrays) == 1:
        return arrays[0]
    return jnp.stack(arrays)[_index(value, len(arrays))]
