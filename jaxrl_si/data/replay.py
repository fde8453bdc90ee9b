r"""Prioritised replay of fixed-length sequences, each frame stored once, add and sample inside jit.

The storage is flashbax's prioritised trajectory buffer (`flashbax.make_prioritised_trajectory_buffer`:
a circular `[num_envs, capacity / num_envs]` array of steps and a sum tree over sequence starts),
which runs under `jit`, `vmap` and `lax.scan`. What it does not do, and this module adds:

* **Frame stacks as index views.** A step holds one frame (`[84, 84, 1]` on Atari, the whole
  `[10, 10, C]` grid on MinAtar). A stack of `S` frames ending at position `j` of a sampled
  sequence is `frames[j - S + 1 .. j]` with the frames from before the episode's first step
  zeroed (`stacked_frames`), so 100k Atari steps take 100k x 84 x 84 bytes (0.7 GB), not 4x
  that. A sampled sequence therefore starts `S - 1` steps before the step it is about.
* **A traced priority exponent.** flashbax raises priorities to a fixed exponent α when it
  builds the buffer; here the buffer is built with α = 1 and `set_priorities` is given
  p^α, so α is a hyperparameter that a sweep can vmap (Schaul et al. 2016, Eq. 1:
  P(i) = p_i^α / Σ_k p_k^α).
* **Importance weights** `w_i = (N · P(i))^{-β} / max_batch w` (Schaul et al. 2016, Sec. 3.4;
  normalised by the batch's largest weight, as Dopamine and rlpyt do).

Why flashbax rather than our own: it is kept up by InstaDeep, works with the JAX in use
(`platform.md` §8) and its sum tree is the part worth not rewriting. Call `add` on a buffer that
is donated to the jitted function (or carried through a `lax.scan`): without donation XLA copies
the whole buffer on every add.

Step semantics: step `t` of a row holds `frame_t` (the observation acted on), `action_t`,
`reward_t` and `done_t` (the transition ended the episode: terminal, or a time limit; the next
stored frame is then the first of a new episode).
"""

from __future__ import annotations

import dataclasses
import math

import flax.struct
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int, PRNGKeyArray

from jaxrl_si.envs import strong_dtypes
from jaxrl_si.errors import ConfigError

PRIORITY_FLOOR = 1e-6  # added to every priority: a sequence with zero loss stays sampleable


class Step(flax.struct.PyTreeNode):
    """One stored environment step; the buffer holds `[num_envs, capacity / num_envs]` of them."""

    frame: Array  # [*frame_shape] uint8 (or any dtype): the newest frame of the observation acted on
    action: Int[Array, ""]
    reward: Float[Array, ""]
    done: Bool[Array, ""]  # the episode ended with this transition


class Sample(flax.struct.PyTreeNode):
    """A batch of sequences and what `set_priorities` and the importance weights need."""

    steps: Step  # [batch_size, sequence_length, ...]
    indices: Int[Array, "B"]  # sum-tree items, for `set_priorities`
    probabilities: Float[Array, "B"]  # P(i) under the current priorities


@dataclasses.dataclass(frozen=True)
class SequenceReplay:
    """A prioritised buffer of `capacity` steps sampled as `[batch_size, sequence_length]` windows.

    Args:
      capacity: steps kept (rounded down to a multiple of `num_envs`); the oldest are overwritten.
      num_envs: steps added per `add` (one per environment, each env its own row).
      batch_size: sequences per `sample`.
      sequence_length: steps per sequence.
      device: "cpu" | "gpu" | "tpu", flashbax's choice of sum-tree kernels.
    """

    capacity: int
    num_envs: int
    batch_size: int
    sequence_length: int
    device: str = "cpu"

    def __post_init__(self):
        for name in ("capacity", "num_envs", "batch_size", "sequence_length"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"SequenceReplay.{name} must be a positive int, got {value!r}.")
        if self.rows_length < self.sequence_length + 1:
            raise ConfigError(
                f"SequenceReplay.capacity={self.capacity} leaves {self.rows_length} steps per env, fewer than "
                f"sequence_length + 1 = {self.sequence_length + 1}."
            )

    @property
    def rows_length(self) -> int:
        """Steps kept per environment."""
        return self.capacity // self.num_envs

    @property
    def buffer(self):
        """The flashbax buffer (pure functions; built on each access, which is cheap)."""
        import flashbax

        return flashbax.make_prioritised_trajectory_buffer(
            add_batch_size=self.num_envs,
            sample_batch_size=self.batch_size,
            sample_sequence_length=self.sequence_length,
            period=1,
            min_length_time_axis=self.sequence_length,
            max_length_time_axis=self.rows_length,
            priority_exponent=1.0,  # α is applied in `set_priorities`, so that it can be traced
            device=self.device,
        )

    def init(self, example: Step):
        """An empty buffer for steps shaped like `example` (one step, no batch axis).

        Strongly typed: flashbax leaves `max_recorded_priority` weakly typed until the first
        `set_priorities`, which would compile a jitted caller twice.
        """
        return strong_dtypes(self.buffer.init(example))

    def end_episodes(self, state):
        """Set `done` on each env's newest stored step (no-op for an empty buffer): its episode was cut."""
        newest = (state.current_index - 1) % self.rows_length
        stored = state.is_full | (state.current_index > 0)
        done = state.experience.done.at[:, newest].set(state.experience.done[:, newest] | stored)
        return dataclasses.replace(state, experience=state.experience.replace(done=done))

    def add(self, state, steps: Step):
        """Append one step per environment (`steps` leaves `[num_envs, ...]`); new items get the max priority."""
        return self.buffer.add(state, jax.tree.map(lambda x: x[:, None], steps))

    def sample(self, state, key: PRNGKeyArray) -> Sample:
        """`batch_size` sequences by stratified prioritised sampling (Schaul et al. 2016, App. B.2.1)."""
        drawn = self.buffer.sample(state, key)
        return Sample(drawn.experience, drawn.indices, drawn.probabilities)

    def set_priorities(self, state, indices: Int[Array, "B"], priorities: Float[Array, "B"], *, exponent):
        """Priorities p (e.g. the per-sequence loss) become p^exponent in the sum tree."""
        return self.buffer.set_priorities(state, indices, (priorities + PRIORITY_FLOOR) ** exponent)

    def num_items(self, state) -> Int[Array, ""]:
        """Sequence starts that can be sampled now (the N of the importance weights)."""
        per_row = jnp.where(state.is_full, self.rows_length, state.current_index)
        return jnp.maximum(per_row - self.sequence_length + 1, 1) * self.num_envs

    def can_sample(self, state) -> Bool[Array, ""]:
        return self.buffer.can_sample(state)


def importance_weights(probabilities: Float[Array, "B"], num_items, *, beta) -> Float[Array, "B"]:
    r"""Schaul et al. 2016, Sec. 3.4: :math:`w_i = (N P(i))^{-\beta} / \max_j w_j` over the batch."""
    weights = (num_items * jnp.maximum(probabilities, 1e-12)) ** (-beta)
    return weights / weights.max()


def stacked_frames(frames: Array, dones: Bool[Array, "B L"], positions: tuple[int, ...], stack: int) -> Array:
    r"""Observations of `stack` frames ending at each of `positions` of the sampled sequences.

    The stack ending at `j` is `frames[j - stack + 1 .. j]` along the sequence axis, frames
    concatenated on the last (channel) axis, oldest first; a frame from before the episode of
    frame `j` (a `done` at or after it, before `j`) is zeroed, as in the DQN and Dopamine
    replay buffers.

    Args:
      frames: `[B, L, H, W, C]` the sampled sequences' frames.
      dones: `[B, L]` their `done` flags.
      positions: indices `j` into the sequence, each `>= stack - 1`.
      stack: frames per observation (1: the frame itself).

    Returns:
      `[B, len(positions), H, W, stack * C]`.
    """
    if min(positions) < stack - 1 or max(positions) >= frames.shape[1]:
        raise ValueError(f"positions {positions} must lie in [{stack - 1}, {frames.shape[1] - 1}] for stack={stack}.")
    out = []
    for j in positions:
        window = frames[:, j - stack + 1 : j + 1]  # [B, stack, H, W, C]
        # frame j - i is in frame j's episode iff no done in positions j - i .. j - 1
        ended_after = jnp.flip(jnp.cumsum(jnp.flip(dones[:, j - stack + 1 : j], axis=1), axis=1), axis=1) > 0
        alive = jnp.concatenate([~ended_after, jnp.ones_like(dones[:, :1])], axis=1)  # [B, stack]
        window = window * alive[:, :, None, None, None].astype(window.dtype)
        out.append(jnp.concatenate(list(jnp.moveaxis(window, 1, 0)), axis=-1))
    return jnp.stack(out, axis=1)


def replay_bytes(state) -> int:
    """Bytes held by a buffer state (frames, actions, rewards, flags and the sum tree)."""
    return sum(math.prod(x.shape) * x.dtype.itemsize for x in jax.tree.leaves(state))
