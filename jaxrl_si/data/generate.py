r"""Offline preference datasets from the project's own PPO policies, as CPL makes its data.

CPL (Hejna et al. 2023, arXiv 2310.13639, Sec. 5.1 and its official scripts) rolls out SAC
checkpoints of mediocre skill with Gaussian action noise (σ = 0.3), cuts 64-step segments and
labels them with the regret oracle of the fully trained agent. Here, scaled down to a CPU:

1. train PPO (`agents.ppo`) on the task's env (`preferences.task(env).make_env()`, reward
   features in `info['features']`) and keep its policy at several `stages` (fractions of the
   run); the critic at the end of the run is the oracle V*;
2. roll out `episodes_per_stage` whole episodes of each stage's policy, acting with its mode
   plus N(0, σ²) noise in the agent's [−1, 1] action units (`rollout_episodes`), and store
   per step the oracle advantage

   .. math:: A^*(s_t, a_t) = r_t + \gamma_A (1 - \mathrm{terminal}_t) V^*(s_{t+1}) - V^*(s_t),

   so that a segment's sum telescopes, for :math:`\gamma_A = 1` (the default), to the label of
   the issue and of the official code (`rl_sum` of its `scripts/add_pref_labels.py`):
   :math:`\sum_{t<L} A^*_t = \sum_{t<L} r_t + V^*(s_L) - V^*(s_0)` (no bootstrap after a
   terminal step; the official sum stops one step earlier, at the segment's last observation,
   and its V* averages the SAC critic over 64 policy samples where ours is PPO's V critic);
3. cut segments of `segment_length` every `segment_stride` steps (`offline.segment_starts`);
   *dense* preferences are drawn at train time from all of them (`offline.dense_pair_batch`);
4. draw `num_pairs` fixed *sparse* pairs of distinct segments (CPL's sparse data: each segment
   in one pair, 10k pairs of 20k segments) and label them with the regret oracle (hard labels
   on Σ A*, ties ½, as in the paper) or with one of the task's oracle presets (sampled 0/1, as
   a person answers).

`generate(config)` returns the data as NumPy (`offline.OfflineData`) and a plain dict of
metadata; `data.tfds_io` writes them. `rollout_episodes` is reusable on its own: it collects
episodes of any deterministic policy, e.g. the CPL policy of a self-improvement round.

Why γ_A = 1 and not the critic's γ: only then does the undiscounted segment sum (what the
oracles of `jaxrl_si.preferences` and the official labels compare) telescope to Σ r + V*(s_L)
− V*(s_0); with γ_A = γ the sum is Σ_t A_γ(s_t, a_t) undiscounted, the official `rl_dir`.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
import os
import pathlib
from collections.abc import Callable
from typing import Any, NamedTuple

import flax.serialization
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int, PRNGKeyArray

from jaxrl_si import envs, preferences
from jaxrl_si.agents.ppo import PPO, PPOConfig, PPOHyperparams, PPOState
from jaxrl_si.agents.preference_ppo import PENDULUM_PPO, PreferencePPOHyperparams
from jaxrl_si.data.offline import (
    Episodes,
    OfflineData,
    Pairs,
    Segments,
    label_pairs,
    segment_starts,
)
from jaxrl_si.data.rollout import acting_env, rollout_episodes
from jaxrl_si.data.tfds_io import DatasetError, DatasetMetadata
from jaxrl_si.errors import ConfigError, check_known_keys
from jaxrl_si.metrics import episode_mean

REGRET = "regret"  # the pair oracle of the CPL paper: hard labels on Σ_t A*(s_t, a_t)


def _tuned_pendulum_hparams() -> PPOHyperparams:
    """PPO's fields of `PreferencePPOHyperparams` (lr 1e-3, γ 0.9, no entropy bonus): Pendulum's tuned values."""
    tuned = PreferencePPOHyperparams()
    return PPOHyperparams(**{f.name: getattr(tuned, f.name) for f in dataclasses.fields(PPOHyperparams)})


# Per task: the PPO run whose checkpoints make the data, and the critic at its end the oracle.
# Pendulum: the measured setting at half its 10^6 steps (160 updates; the noisy episodes of its
# policies return about −1,050 at 10 % of the run, −590 at 20 %, −490 at 30 %, −195 at 50 %);
# reacher: the SPO experiment's reduced budget and γ 0.95 (experiments/spo/README.md).
DEFAULT_PPO: dict[str, tuple[PPOConfig, PPOHyperparams]] = {
    "gymnax:Pendulum-v1": (dataclasses.replace(PENDULUM_PPO, total_env_steps=512_000), _tuned_pendulum_hparams()),
    "brax:reacher": (
        dataclasses.replace(PENDULUM_PPO, env="brax:reacher", total_env_steps=256_000),
        _tuned_pendulum_hparams().replace(gamma=0.95),
    ),
}


@dataclasses.dataclass(frozen=True)
class GenerationConfig:
    """How a dataset is made. Defaults: Pendulum, 4 mediocre-to-good stages x 125 noisy
    episodes, 2,500 segments of 64 steps (CPL's dense size), 1,250 fixed pairs.

    The env is the PPO run's (`ppo.env`, one with a `preferences` task); `for_env(env)` starts
    from that task's measured PPO run (`DEFAULT_PPO`).
    """

    ppo: PPOConfig = DEFAULT_PPO["gymnax:Pendulum-v1"][0]  # the PPO run whose snapshots act; its env is the data's
    ppo_hparams: PPOHyperparams = DEFAULT_PPO["gymnax:Pendulum-v1"][1]  # its hyperparameters
    stages: tuple[float, ...] = (0.1, 0.2, 0.3, 0.5)  # fractions of the run after which policies act
    episodes_per_stage: int = 125  # noisy episodes of each stage's policy
    action_noise: float = 0.3  # σ of the Gaussian added to the policy's mode, in [−1, 1] action units
    segment_length: int = 64  # steps of a segment
    segment_stride: int = 32  # steps between segment starts in an episode
    num_pairs: int = 0  # fixed (sparse) pairs; 0: half the segments, each segment in one pair
    pair_oracle: str = REGRET  # "regret", or a preset of the task's oracles (e.g. "bt", "majority")
    advantage_discount: float = 1.0  # γ_A in A* (module docstring); 1: the official label Σr + V(s_L) − V(s_0)
    seed: int = 0

    @classmethod
    def for_env(cls, env: str, **fields) -> GenerationConfig:
        """The config for `env` with its task's PPO run (`DEFAULT_PPO`) and `fields`."""
        if env not in DEFAULT_PPO:
            raise ConfigError(f"GenerationConfig: no default PPO run for {env!r} (known: {sorted(DEFAULT_PPO)}); give `ppo` and `ppo_hparams`.")
        ppo, hparams = DEFAULT_PPO[env]
        return cls(**{"ppo": ppo, "ppo_hparams": hparams, **fields})

    def __post_init__(self):
        if not isinstance(self.ppo, PPOConfig) or not isinstance(self.ppo_hparams, PPOHyperparams):
            raise ConfigError(f"GenerationConfig.ppo / ppo_hparams must be PPOConfig / PPOHyperparams, got {self.ppo!r}, {self.ppo_hparams!r}.")
        try:
            task = preferences.task(self.env)
        except ConfigError as err:
            raise ConfigError(f"GenerationConfig.ppo.env: {err}") from None
        object.__setattr__(self, "stages", tuple(float(s) for s in self.stages))
        for name in ("episodes_per_stage", "segment_length", "segment_stride"):
            _positive_int(name, getattr(self, name))
        if self.num_pairs < 0:
            raise ConfigError(f"GenerationConfig.num_pairs must be >= 0 (0: half the segments), got {self.num_pairs!r}.")
        if self.segment_length > task.episode_length:
            raise ConfigError(
                f"GenerationConfig.segment_length={self.segment_length} exceeds the episode length "
                f"{task.episode_length} of {self.env}."
            )
        if not (math.isfinite(self.action_noise) and self.action_noise >= 0):
            raise ConfigError(f"GenerationConfig.action_noise must be a finite σ >= 0, got {self.action_noise!r}.")
        if not 0.0 <= self.advantage_discount <= 1.0:
            raise ConfigError(f"GenerationConfig.advantage_discount must lie in [0, 1], got {self.advantage_discount!r}.")
        if self.pair_oracle != REGRET and self.pair_oracle not in task.oracles:
            choices = [REGRET, *sorted(task.oracles)]
            raise ConfigError(f"GenerationConfig.pair_oracle must be one of {choices}, got {self.pair_oracle!r}.")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ConfigError(f"GenerationConfig.seed must be an int, got {self.seed!r}.")
        self._check_stages()
        if self.num_segments < 2:
            raise ConfigError(
                f"GenerationConfig: {self.num_segments} segment(s) (episodes_per_stage x stages x segments per episode); pairs need 2."
            )

    def _check_stages(self) -> None:
        stages, updates = self.stages, self.stage_updates
        increasing = all(a < b for a, b in itertools.pairwise(stages))
        if not stages or not increasing or stages[0] < 0 or stages[-1] > 1 or len(set(updates)) != len(updates):
            raise ConfigError(
                f"GenerationConfig.stages must be strictly increasing fractions in [0, 1] that fall on distinct "
                f"updates of the {self.ppo.num_updates}-update PPO run, got {stages!r} (updates {updates})."
            )

    @property
    def env(self) -> str:
        return self.ppo.env

    @property
    def task(self) -> preferences.PreferenceTask:
        return preferences.task(self.env)

    @property
    def stage_updates(self) -> tuple[int, ...]:
        """The PPO update after which each stage's policy is kept: round(fraction x num_updates)."""
        return tuple(round(s * self.ppo.num_updates) for s in self.stages)

    @property
    def chunk_updates(self) -> int:
        """Updates per compiled training chunk: the gcd of the stages' updates and the run's length."""
        return math.gcd(self.ppo.num_updates, *self.stage_updates)

    @property
    def num_segments(self) -> int:
        """Segments in the dataset (every episode of a task lasts its `episode_length` steps)."""
        per_episode = (self.task.episode_length - self.segment_length) // self.segment_stride + 1
        return len(self.stages) * self.episodes_per_stage * per_episode

    @property
    def pair_count(self) -> int:
        """Fixed pairs: `num_pairs`, or half the segments (each segment in one pair, as CPL's sparse data)."""
        return self.num_pairs or self.num_segments // 2

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> GenerationConfig:
        """Build from a dict (`ppo`, `ppo_hparams` may be dicts); unknown keys are an error naming them."""
        check_known_keys("GenerationConfig", values, (f.name for f in dataclasses.fields(cls)))
        values = dict(values)
        if isinstance(values.get("ppo"), dict):
            values["ppo"] = PPOConfig.from_dict(values["ppo"])
        hparams = values.get("ppo_hparams")
        if isinstance(hparams, dict):
            check_known_keys("GenerationConfig.ppo_hparams", hparams, (f.name for f in dataclasses.fields(PPOHyperparams)))
            values["ppo_hparams"] = PPOHyperparams(**hparams)
        return cls(**values)


def _positive_int(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"GenerationConfig.{name} must be a positive int, got {value!r}.")


class PolicySnapshot(flax.struct.PyTreeNode):
    """A PPO actor-critic as it was at one stage: its parameters and observation statistics."""

    params: Any
    obs_stats: envs.RunningMeanStd | None  # None when the run does not normalise observations


class Generated(NamedTuple):
    """A generated dataset: the arrays (NumPy), their metadata, and the oracle (the fully trained
    PPO policy whose critic is V*), which labels later data the same way (self-improvement)."""

    data: OfflineData
    metadata: DatasetMetadata
    oracle: PolicySnapshot


def generate(config: GenerationConfig, *, progress: bool = True) -> Generated:
    """Train PPO, roll out each stage's noisy policy, segment and label pairs (module docstring).

    Returns `OfflineData` of NumPy arrays (`E = len(stages) * episodes_per_stage` episodes of
    the task's `episode_length` steps, `episodes.policy[e]` the stage index), its
    `dataset_metadata` and the oracle snapshot. Deterministic in `config.seed`.
    """
    from tqdm.auto import tqdm  # a host-side tool: never imported with the package

    key_ppo, key_rollout, key_pairs, key_labels = jax.random.split(jax.random.key(config.seed), 4)
    agent = PPO.build(config.ppo, base_env=config.task.make_env())
    env = acting_env(config.task.make_env())
    num_chunks = agent.num_updates // config.chunk_updates
    with tqdm(total=num_chunks + len(config.stages), disable=not progress, desc="PPO") as bar:
        snapshots, oracle, train_returns = train_snapshots(
            agent, config.ppo_hparams, config.stage_updates, key_ppo, chunk=config.chunk_updates, on_chunk=bar.update
        )
        bar.set_description("rollouts")
        collect = jax.jit(functools.partial(_stage_episodes, agent, env, config))
        stage_episodes = []
        for index, snapshot in enumerate(snapshots):
            stage_episodes.append(collect(snapshot, oracle, jax.random.fold_in(key_rollout, index), jnp.int32(index)))
            bar.update()
    episodes = jax.tree.map(lambda *x: jnp.concatenate(x), *stage_episodes)
    episode, start = segment_starts(np.asarray(episodes.length), config.segment_length, config.segment_stride)
    segments = Segments(jnp.asarray(episode), jnp.asarray(start), length=config.segment_length)
    pairs = label_sparse_pairs(config, episodes, segments, key_pairs, key_labels)
    data = jax.tree.map(np.asarray, OfflineData(episodes, segments, pairs))
    returns = [float(np.mean(np.asarray(e.returns))) for e in stage_episodes]
    return Generated(data, dataset_metadata(config, env, returns, train_returns), jax.tree.map(np.asarray, oracle))


def train_snapshots(
    agent: PPO,
    hparams: PPOHyperparams,
    stage_updates: tuple[int, ...],
    key: PRNGKeyArray,
    *,
    chunk: int,
    on_chunk: Callable[[], Any] = lambda: None,
) -> tuple[list[PolicySnapshot], PolicySnapshot, list[float]]:
    """A whole PPO run in jitted chunks of `chunk` updates (one program, compiled once).

    Returns the snapshots after `stage_updates` updates (each a multiple of `chunk`; 0 is the
    initial policy), the final snapshot (the oracle), and PPO's own mean training return over
    the chunk before each stage (NaN for the initial policy).
    """
    run_chunk = jax.jit(functools.partial(_train_chunk, agent, length=chunk))
    state = jax.jit(agent.init)(hparams, key)
    snapshots, returns, done = {}, {}, 0
    if 0 in stage_updates:
        snapshots[0], returns[0] = snapshot_of(agent, state), float("nan")
    while done < agent.num_updates:
        state, metrics = run_chunk(hparams, state)
        done += chunk
        on_chunk()
        if done in stage_updates:
            snapshots[done] = snapshot_of(agent, state)
            returns[done] = float(episode_mean(np.asarray(metrics["episode/return"]), np.asarray(metrics["episode/count"])))
    return [snapshots[u] for u in stage_updates], snapshot_of(agent, state), [returns[u] for u in stage_updates]


def _train_chunk(agent: PPO, hparams: PPOHyperparams, state: PPOState, *, length: int):
    return jax.lax.scan(lambda s, _: agent.update(hparams, s), state, None, length=length)


def snapshot_of(agent: PPO, state: PPOState) -> PolicySnapshot:
    """The actor-critic of `state`, with the normalisation statistics it acts with, if any."""
    stats = state.env_state.obs_stats if isinstance(agent.env, envs.NormalizeObservation) else None
    return PolicySnapshot(state.params, stats)


def _network_input(agent: PPO, snapshot: PolicySnapshot, obs: Array) -> Array:
    """A raw observation as the network saw it in training (frozen statistics, same clip)."""
    if snapshot.obs_stats is None:
        return obs
    return snapshot.obs_stats.normalize(obs, clip=agent.env.clip, epsilon=agent.env.epsilon)


def policy_mode(agent: PPO, snapshot: PolicySnapshot, obs: Float[Array, "*obs"]) -> Float[Array, "A"]:
    """The snapshot's deterministic action (its distribution's mode) on a raw observation."""
    dist, _ = agent.network.apply(snapshot.params, _network_input(agent, snapshot, obs))
    return dist.mode()


def critic_value(agent: PPO, snapshot: PolicySnapshot, obs: Float[Array, "*obs"]) -> Float[Array, ""]:
    """The snapshot's critic V(s) on a raw observation."""
    _, value = agent.network.apply(snapshot.params, _network_input(agent, snapshot, obs))
    return value


def _stage_episodes(agent: PPO, env: envs.Env, config: GenerationConfig, snapshot, oracle, key, index) -> Episodes:
    return rollout_episodes(
        env,
        functools.partial(policy_mode, agent, snapshot),
        key,
        num_episodes=config.episodes_per_stage,
        max_length=config.task.episode_length,
        action_noise=config.action_noise,
        value=functools.partial(critic_value, agent, oracle),
        advantage_discount=config.advantage_discount,
        policy_index=index,
    )


def sparse_pairs(key: PRNGKeyArray, num_segments: int, num_pairs: int) -> tuple[Int[Array, "P"], Int[Array, "P"]]:
    """`num_pairs` pairs of distinct segments: consecutive entries of random permutations.

    CPL's sparse data (10k pairs of 20k segments) puts each segment in exactly one pair: so do
    the first ⌊S/2⌋ pairs here (one permutation; an odd segment out is left over); further
    pairs come from fresh permutations, so every segment is used about equally often.
    """
    if num_segments < 2:
        raise ValueError(f"`num_segments` must be >= 2 to form pairs, got {num_segments}.")
    per_permutation = num_segments // 2
    rounds = -(-num_pairs // per_permutation)
    draw = lambda k: jax.random.permutation(k, num_segments)[: 2 * per_permutation]
    perms = jax.vmap(draw)(jax.random.split(key, rounds))
    pairs = perms.reshape(-1, 2)[:num_pairs].astype(jnp.int32)
    return pairs[:, 0], pairs[:, 1]


def label_sparse_pairs(
    config: GenerationConfig, episodes: Episodes, segments: Segments, key_pairs: PRNGKeyArray, key_labels: PRNGKeyArray
) -> Pairs:
    """`config.pair_count` fixed pairs and their labels: hard regret labels (1, 0, ½ on ties) on
    Σ A*, or a sampled 0/1 answer of the task's oracle `config.pair_oracle` on the segments."""
    first, second = sparse_pairs(key_pairs, segments.num_segments, config.pair_count)
    if config.pair_oracle == REGRET:
        label = label_pairs(episodes, segments, first, second, preferences.HardLabels(), regret=True)
    else:
        oracle = config.task.oracle(config.pair_oracle)
        label = label_pairs(episodes, segments, first, second, oracle, key_labels, regret=False)
    return Pairs(first, second, jnp.asarray(label, jnp.float32))


def dataset_metadata(config: GenerationConfig, env: envs.Env, returns: list[float], train_returns: list[float]) -> DatasetMetadata:
    """What the dataset records besides its arrays (`tfds_io.DatasetMetadata`).

    Actions are stored in the agent's units [−1, 1]; `extra` holds the env's own action bounds
    (`env_action_low` / `env_action_high`), the observation bounds (±inf where unbounded), the
    task's true reward weights, the PPO config and hyperparameters that made the policies, and
    the generation settings. `policies[i]` describes stage i (`Episodes.policy == i`).
    """
    task, base = config.task, env.unwrapped
    floats = lambda x: [float(v) for v in np.ravel(x)]
    steps = config.ppo.batch_size
    policies = [
        {"stage": stage, "updates": updates, "env_steps": updates * steps, "mean_return": ret, "train_return": train}
        for stage, updates, ret, train in zip(config.stages, config.stage_updates, returns, train_returns, strict=True)
    ]
    extra = {
        "observation_low": floats(env.observation_space.low),
        "observation_high": floats(env.observation_space.high),
        "env_action_low": floats(base.action_space.low),
        "env_action_high": floats(base.action_space.high),
        "true_weights": list(task.true_weights),
        "episode_length": task.episode_length,
        "segment_stride": config.segment_stride,
        "ppo_gamma": float(config.ppo_hparams.gamma),
        "oracle_env_steps": config.ppo.num_updates * config.ppo.batch_size,
        "num_pairs": config.pair_count,
        "episodes_per_stage": config.episodes_per_stage,
        "ppo": {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(config.ppo).items()},
        "ppo_hparams": {f.name: float(getattr(config.ppo_hparams, f.name)) for f in dataclasses.fields(PPOHyperparams)},
    }
    return DatasetMetadata(
        env_name=config.env,
        observation_shape=env.observation_shape,
        action_shape=env.action_space.shape,
        action_low=floats(env.action_space.low),
        action_high=floats(env.action_space.high),
        feature_names=task.feature_names,
        segment_length=config.segment_length,
        discount=config.advantage_discount,
        policies=policies,
        action_noise=config.action_noise,
        seed=config.seed,
        oracle=config.pair_oracle,
        pair_mode="sparse",
        generator="jaxrl_si.data.generate (PPO snapshots)",
        extra=extra,
    )


ORACLE_FILE = "oracle.msgpack"  # next to a generated dataset's versions


def save_oracle(directory, oracle: PolicySnapshot) -> pathlib.Path:
    """Write the oracle snapshot (flax msgpack) into a dataset directory, atomically (temp file, rename)."""
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    temporary = directory / f".{ORACLE_FILE}.{os.getpid()}"
    temporary.write_bytes(flax.serialization.to_bytes(oracle))
    return temporary.replace(directory / ORACLE_FILE)


def load_oracle(directory, metadata: DatasetMetadata) -> tuple[PPO, PolicySnapshot]:
    """The PPO agent (from `metadata.extra['ppo']`) and the oracle snapshot saved with a generated
    dataset; `DatasetError` naming the file when it is missing or does not fit the agent."""
    path = pathlib.Path(directory) / ORACLE_FILE
    if "ppo" not in metadata.extra or not path.is_file():
        raise DatasetError(f"{path}: no oracle saved with this dataset (made by data.generate with its oracle?)")
    agent = PPO.build(PPOConfig.from_dict(dict(metadata.extra["ppo"])), base_env=preferences.task(metadata.env_name).make_env())
    target = snapshot_of(agent, jax.eval_shape(agent.init, PPOHyperparams(), jax.random.key(0)))
    try:
        return agent, flax.serialization.from_bytes(target, path.read_bytes())
    except (ValueError, KeyError, TypeError) as error:
        raise DatasetError(f"{path}: cannot be read as the oracle of this dataset's PPO run: {error}") from None
