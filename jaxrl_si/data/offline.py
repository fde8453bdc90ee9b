r"""Offline data on device: episodes of steps, segments as views into them, preference pairs.

The layout follows RLDS (Ramos et al. 2021, arXiv 2111.02767): a dataset is episodes of steps,
each step an observation, the action taken there, the reward and discount that followed, and
the flags `is_first` / `is_last` / `is_terminal`. One departure: RLDS ends an episode with an
observation-only step; here `is_last` marks the last step that acted, and the observation after
it is not stored (a learner bootstrapping from s_{t+1} loses each time-limited episode's last
transition, 1 of 200 on Pendulum). Episodes are padded to a common length `T`
(`length[e]` steps are real), so the whole dataset is a handful of `[E, T, ...]` arrays put on
device once.

A *segment* is a view, never a copy: `(episode, start)` with a static `segment_length` `L`,
the steps `start .. start + L - 1` of that episode. A *pair* is two segment indices and the
probability `label = P(first ≻ second)` of the oracle that compared them (1, 0, or ½ for a tie
under hard labels). So memory is one copy of the steps plus a few int32 per segment and pair.

Batches are gathered by index inside jitted code (`segment_batch`, `pair_batch`): no host
round trip per batch. Two ways to draw preference pairs, as in CPL (Hejna et al. 2023, arXiv
2310.13639, Sec. 5.1 and its official `mode: rank` data loader):

- *sparse*: a fixed set of labelled pairs (`OfflineData.pairs`), sampled uniformly;
- *dense*: two segments drawn uniformly from all of them at every batch and labelled on the
  fly by a deterministic oracle on the scores the dataset stores (`dense_pair_batch`).

The oracle the CPL paper labels with is the *regret* oracle: segment σ is preferred when its
sum of optimal advantages is larger,

.. math:: \sum_{t=0}^{L-1} \gamma^t A^*(s_t, a_t) = \sum_{t=0}^{L-1} \gamma^t r_t + \gamma^L V^*(s_L) - V^*(s_0),

which the dataset stores per step as `oracle_advantage` (A*(s_t, a_t) = r_t + γ_A V*(s_{t+1})
(1 − terminal) − V*(s_t), V* the critic of the fully trained data policy; Hejna et al. 2023,
Eq. 3 and App. on data). Oracles compare undiscounted sums over the segment, which telescope to
the formula above for γ_A = 1, the default of `data.generate` and the official code's `rl_sum`.
"""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int, PRNGKeyArray

from jaxrl_si.errors import ConfigError
from jaxrl_si.preferences.oracles import (
    Oracle,
    Trajectories,
    preference_probability,
    sample_preferences,
)


class DatasetError(ConfigError):
    """A dataset that cannot be used, written or read as asked; the message names the file or field."""


STEP_FIELDS = ("observation", "action", "reward", "discount", "is_first", "is_last", "is_terminal", "features", "oracle_advantage")


class Episodes(flax.struct.PyTreeNode):
    """`E` episodes of up to `T` steps (padded; `length[e]` are real), RLDS step fields.

    observation:      `[E, T, *obs]` s_t
    action:           `[E, T, A]` a_t (float; continuous control)
    reward:           `[E, T]` r_t after a_t
    discount:         `[E, T]` 0 after a terminal step, else 1
    is_first / is_last / is_terminal: `[E, T]` bool
    features:         `[E, T, K]` the task's reward features φ_t (`preferences.tasks`; K may be 0)
    oracle_advantage: `[E, T]` A*(s_t, a_t) from the data policy's critic (the regret oracle)
    length:           `[E]` int32 real steps
    policy:           `[E]` int32 which data-generating policy (e.g. the checkpoint's stage)
    """

    observation: Float[Array, "E T ..."]
    action: Float[Array, "E T A"]
    reward: Float[Array, "E T"]
    discount: Float[Array, "E T"]
    is_first: Bool[Array, "E T"]
    is_last: Bool[Array, "E T"]
    is_terminal: Bool[Array, "E T"]
    features: Float[Array, "E T K"]
    oracle_advantage: Float[Array, "E T"]
    length: Int[Array, "E"]
    policy: Int[Array, "E"]

    @property
    def num_episodes(self) -> int:
        return self.reward.shape[0]

    @property
    def max_length(self) -> int:
        return self.reward.shape[1]

    @property
    def real_steps(self) -> Bool[Array, "E T"]:
        """True on the `length[e]` real steps of each episode, False on its padding."""
        return jnp.arange(self.max_length) < self.length[:, None]

    @property
    def returns(self) -> Float[Array, "E"]:
        """Undiscounted return of each episode (padding is zero-reward)."""
        return jnp.where(self.real_steps, self.reward, 0.0).sum(-1)


class Segments(flax.struct.PyTreeNode):
    """`S` segment views: `episode[s]` and `start[s]`, each `length` (static) steps long."""

    episode: Int[Array, "S"]
    start: Int[Array, "S"]
    length: int = flax.struct.field(pytree_node=False)

    @property
    def num_segments(self) -> int:
        return self.episode.shape[0]


class Pairs(flax.struct.PyTreeNode):
    """`P` labelled pairs of segment indices: `label[p] = P(first[p] ≻ second[p])` in [0, 1]."""

    first: Int[Array, "P"]
    second: Int[Array, "P"]
    label: Float[Array, "P"]

    @property
    def num_pairs(self) -> int:
        return self.label.shape[0]


class OfflineData(flax.struct.PyTreeNode):
    """Everything an offline agent reads: the steps, their segment views and the fixed pairs."""

    episodes: Episodes
    segments: Segments
    pairs: Pairs


class SegmentBatch(flax.struct.PyTreeNode):
    """`B` segments gathered from the steps: every step field `[B, L, ...]`, plus `mask` `[B, L]`."""

    observation: Float[Array, "B L ..."]
    action: Float[Array, "B L A"]
    reward: Float[Array, "B L"]
    discount: Float[Array, "B L"]
    is_first: Bool[Array, "B L"]
    is_last: Bool[Array, "B L"]
    is_terminal: Bool[Array, "B L"]
    features: Float[Array, "B L K"]
    oracle_advantage: Float[Array, "B L"]
    mask: Bool[Array, "B L"]  # real steps (a segment never crosses its episode's end, so all True)

    def trajectories(self, *, regret: bool = False) -> Trajectories:
        """The segments as oracle input: ground-truth reward (or A*, for the regret oracle) and features."""
        return Trajectories(self.oracle_advantage if regret else self.reward, self.features)


class PairBatch(flax.struct.PyTreeNode):
    """`B` pairs: both segments' steps and `label = P(first ≻ second)` `[B]`."""

    first: SegmentBatch
    second: SegmentBatch
    label: Float[Array, "B"]


def check_views(data: OfflineData, *, where: str) -> None:
    """`DatasetError` naming the field unless the views fit the steps and the values are sane.

    Jitted gathers clamp out-of-range indices without a word, so a dataset is checked before
    any program reads it: episode lengths in [1, T], segments inside their episodes, pair indices
    within the segments, labels in [0, 1], every float step field finite. Host-side (NumPy).
    """
    episodes, segments, pairs = jax.tree.map(np.asarray, (data.episodes, data.segments, data.pairs))
    check_range(where, "episodes.length", episodes.length, 1, episodes.reward.shape[1] + 1)
    check_range(where, "segments.episode", segments.episode, 0, episodes.length.shape[0])
    check_range(where, "segments.start", segments.start, 0, episodes.reward.shape[1])
    if np.any(late := segments.start + segments.length > episodes.length[segments.episode]):
        s = np.flatnonzero(late)[0]
        raise DatasetError(
            f"{where}: segment {s} (`segments.start` {segments.start[s]}, length {segments.length}) runs past the end of episode {segments.episode[s]}"
        )
    for name in ("first", "second"):
        check_range(where, f"pairs.{name}", getattr(pairs, name), 0, segments.episode.shape[0])
    if np.any(bad := ~((pairs.label >= 0) & (pairs.label <= 1))):
        raise DatasetError(f"{where}: `pairs.label` must lie in [0, 1], got {pairs.label[bad][0]} at pair {np.flatnonzero(bad)[0]}")
    for name in STEP_FIELDS:
        values = getattr(episodes, name)
        if values.dtype.kind == "f" and not np.all(np.isfinite(values)):
            raise DatasetError(f"{where}: `episodes.{name}` holds a non-finite value (episode {np.argwhere(~np.isfinite(values))[0][0]})")


def check_range(where: str, name: str, values: np.ndarray, low: int, high: int) -> None:
    """`DatasetError` naming `name` and the first row outside [low, high)."""
    if np.any(bad := (values < low) | (values >= high)):
        raise DatasetError(f"{where}: `{name}` must lie in [{low}, {high}), got {values[bad][0]} at row {np.flatnonzero(bad)[0]}")


def segment_starts(length: np.ndarray, segment_length: int, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """Every segment that fits inside its episode, starting every `stride` steps: `(episode, start)`.

    Host-side, when a dataset is made. An episode shorter than `segment_length` has none.
    """
    if segment_length < 1 or stride < 1:
        raise ConfigError(f"segment_length ({segment_length}) and stride ({stride}) must be >= 1")
    episodes, starts = [], []
    for e, n in enumerate(np.asarray(length)):
        s = np.arange(0, int(n) - segment_length + 1, stride)
        episodes.append(np.full(s.shape, e))
        starts.append(s)
    return np.concatenate(episodes).astype(np.int32), np.concatenate(starts).astype(np.int32)


def gather_segments(episodes: Episodes, segments: Segments, index: Int[Array, "B"]) -> SegmentBatch:
    """The steps of segments `index` (`[B]` into `segments`) as a `SegmentBatch` `[B, L, ...]`."""
    length = segments.length
    episode, start = segments.episode[index], segments.start[index]

    def view(field: Array) -> Array:
        def one(e, s):
            row = jnp.asarray(field)[e]
            return jax.lax.dynamic_slice_in_dim(row, s, length, axis=0)

        return jax.vmap(one)(episode, start)

    steps = {name: view(getattr(episodes, name)) for name in STEP_FIELDS}
    mask = (start[:, None] + jnp.arange(length)) < jnp.asarray(episodes.length)[episode][:, None]
    return SegmentBatch(**steps, mask=mask)


def segment_batch(data: OfflineData, key: PRNGKeyArray, batch_size: int) -> SegmentBatch:
    """`batch_size` segments drawn uniformly (with replacement) from all of them."""
    index = jax.random.randint(key, (batch_size,), 0, data.segments.num_segments)
    return gather_segments(data.episodes, data.segments, index)


def pair_batch(data: OfflineData, key: PRNGKeyArray, batch_size: int) -> PairBatch:
    """Sparse preferences: `batch_size` of the dataset's fixed labelled pairs, drawn uniformly."""
    index = jax.random.randint(key, (batch_size,), 0, data.pairs.num_pairs)
    first = gather_segments(data.episodes, data.segments, data.pairs.first[index])
    second = gather_segments(data.episodes, data.segments, data.pairs.second[index])
    return PairBatch(first, second, data.pairs.label[index])


def dense_pair_batch(data: OfflineData, key: PRNGKeyArray, batch_size: int, oracle: Oracle, *, regret: bool = True) -> PairBatch:
    """Dense preferences: two segments drawn uniformly per pair, labelled now by `oracle`.

    The label is the oracle's probability P(first ≻ second) (for a deterministic oracle such as
    `HardLabels`, 1 / 0 / ½). With `regret=True` the oracle compares sums of `oracle_advantage`
    (the CPL paper's regret oracle), else of the ground-truth reward.
    """
    key_first, key_second = jax.random.split(key)
    count = data.segments.num_segments
    first_index = jax.random.randint(key_first, (batch_size,), 0, count)
    offset = jax.random.randint(key_second, (batch_size,), 1, max(count, 2))  # a different segment
    second_index = (first_index + offset) % count
    first = gather_segments(data.episodes, data.segments, first_index)
    second = gather_segments(data.episodes, data.segments, second_index)
    label = preference_probability(oracle, first.trajectories(regret=regret), second.trajectories(regret=regret))
    return PairBatch(first, second, label)


def label_pairs(
    episodes: Episodes, segments: Segments, first, second, oracle: Oracle, key: PRNGKeyArray | None = None, *, regret: bool = True
) -> Float[Array, "P"]:
    """Labels for fixed pairs (`first`, `second` `[P]` segment indices) from `oracle`.

    With `key`, sampled 0/1 labels (`oracle` as a noisy annotator); without, the probability
    itself (exact for deterministic oracles; the paper's hard regret labels, ties ½).
    """
    a = gather_segments(episodes, segments, jnp.asarray(first)).trajectories(regret=regret)
    b = gather_segments(episodes, segments, jnp.asarray(second)).trajectories(regret=regret)
    if key is None:
        return preference_probability(oracle, a, b)
    return sample_preferences(oracle, key, a, b)


def nbytes(tree) -> int:
    """Bytes held by the arrays of a pytree (e.g. `OfflineData` on device)."""
    return int(sum(np.asarray(x).nbytes if not isinstance(x, jax.Array) else x.nbytes for x in jax.tree.leaves(tree)))
