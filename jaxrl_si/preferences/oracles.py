r"""Preference oracles over whole trajectories: who answers "is trajectory a better than b?".

An oracle is a small frozen config (hashable, so it is static under `jit`) with one pure method,

    oracle.probability(a, b) -> P(a ≻ b)     # [*batch], from two batches of `Trajectories`

and the module-level functions turn any oracle into sampled 0/1 labels (`sample_preferences`),
or into an N x N matrix over all pairs of one batch (`preference_matrix`,
`sample_preference_matrix`). Every oracle here is skew-symmetric: P(a ≻ b) + P(b ≻ a) = 1.

Trajectories carry the ground-truth per-step reward and per-step reward *features* (named
quantities the task defines, e.g. the pendulum's squared angle, squared speed and squared
torque; see `preferences.tasks`). The oracles look only at three summaries of a trajectory:
its return R = Σ_t r_t, its feature sums F = Σ_t φ_t and its feature maxima M = max_t φ_t.

| name           | P(a ≻ b)                                                           | kind                 |
|----------------|--------------------------------------------------------------------|----------------------|
| `bt`           | σ((R_a − R_b) / T)                                                 | Markovian (Bradley-Terry) |
| `hard`         | 1[R_a > R_b] (½ on ties)                                           | Markovian, deterministic |
| `thurstone`    | Φ((R_a − R_b) / (σ√2)): R + σ·N(0, 1) compared                     | Markovian (probit)   |
| `flip`         | ε + (1 − 2ε) · hard                                                | noisy labels         |
| `mixture`      | Σ_k π_k σ(w_k · (F_a − F_b) / T)                                   | noisy, annotators disagree |
| `constrained`  | satisfied beats violated, else σ((R_a − R_b) / T); satisfied ⇔ max_t φ_c ≤ limit | non-Markovian |
| `majority`     | majority of 1[w_k · F_a > w_k · F_b], k = 1, 2, 3                  | intransitive         |

Bradley & Terry 1952; Thurstone 1927; the oracle families follow the preference types of
Swamy et al. 2024 (SPO), arXiv 2401.04056 (its abstract): Markovian, non-Markovian, intransitive
and stochastic preferences.

Why `constrained` is non-Markovian: whether a trajectory ever exceeded the limit is a max over
time, and satisfied trajectories win regardless of return. A per-step penalty can only count
violations (it would prefer one violation with a low return to two with a high one, where this
oracle compares those two by return), so no reward r(s, a) reproduces these preferences.
Why `majority` is intransitive: three annotators with different criteria each rank
trajectories transitively, but their majority vote has Condorcet cycles (a ≻ b ≻ c ≻ a).
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import flax.struct
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from jaxrl_si import _checks
from jaxrl_si.errors import ConfigError


class Trajectories(flax.struct.PyTreeNode):
    """A batch of whole trajectories: time is the last axis of `reward`, features follow it.

    reward:   `[*batch, T]` ground-truth reward of each step.
    features: `[*batch, T, K]` the task's per-step reward features (`preferences.tasks`).
    """

    reward: Float[Array, "*batch T"]
    features: Float[Array, "*batch T K"]

    @property
    def returns(self) -> Float[Array, "*batch"]:
        return self.reward.sum(-1)

    @property
    def feature_sums(self) -> Float[Array, "*batch K"]:
        return self.features.sum(-2)

    @property
    def feature_max(self) -> Float[Array, "*batch K"]:
        return self.features.max(-2)


def check_trajectories(name: str, trajectories: Trajectories) -> None:
    """`ArgumentValueError` naming `name` unless reward is `[*batch, T]` and features `[*batch, T, K]`."""
    if not isinstance(trajectories, Trajectories):
        raise _checks.ArgumentTypeError(f"`{name}` must be Trajectories, got {type(trajectories).__name__}.")
    _checks.check_float_array(f"{name}.reward", trajectories.reward, min_rank=1)
    _checks.check_float_array(f"{name}.features", trajectories.features, rank=trajectories.reward.ndim + 1)
    if trajectories.features.shape[:-1] != trajectories.reward.shape:
        raise _checks.ArgumentValueError(
            f"`{name}.features` has shape {tuple(trajectories.features.shape)}; it must be "
            f"reward's shape {tuple(trajectories.reward.shape)} plus a feature axis."
        )


def check_pair(a: Trajectories, b: Trajectories) -> None:
    """Both valid, with the same batch shape, length and feature count (`b` named if not)."""
    check_trajectories("a", a)
    check_trajectories("b", b)
    if b.features.shape != a.features.shape:
        raise _checks.ArgumentValueError(
            f"`b` has reward/features shapes {tuple(b.reward.shape)}/{tuple(b.features.shape)} but `a` has "
            f"{tuple(a.reward.shape)}/{tuple(a.features.shape)}: trajectories compared must have the same "
            f"batch shape, length T and feature count K."
        )


def _positive(owner: str, name: str, value: float) -> None:
    if not value > 0:
        raise ConfigError(f"{owner}.{name} must be > 0, got {value!r}.")


def _weights(owner: str, weights) -> tuple[tuple[float, ...], ...]:
    rows = tuple(tuple(float(w) for w in row) for row in weights)
    if not rows or len({len(row) for row in rows}) != 1 or not rows[0]:
        raise ConfigError(f"{owner}.weights must be a non-empty K-column table, got {weights!r}.")
    return rows


def _check_feature_count(owner: str, weights: tuple[tuple[float, ...], ...], trajectories: Trajectories) -> None:
    count = trajectories.features.shape[-1]
    if len(weights[0]) != count:
        raise _checks.ArgumentValueError(f"{owner} weighs {len(weights[0])} features but the trajectories have {count}.")


@dataclasses.dataclass(frozen=True)
class BradleyTerry:
    """P(a ≻ b) = σ((R_a − R_b) / temperature)."""

    temperature: float = 1.0
    kind: ClassVar[str] = "markovian"

    def __post_init__(self):
        _positive("BradleyTerry", "temperature", self.temperature)

    def probability(self, a: Trajectories, b: Trajectories) -> Array:
        return jax.nn.sigmoid((a.returns - b.returns) / self.temperature)


@dataclasses.dataclass(frozen=True)
class HardLabels:
    """P(a ≻ b) = 1 if R_a > R_b, 0 if R_a < R_b, ½ on a tie: a deterministic, perfect annotator."""

    kind: ClassVar[str] = "markovian"

    def probability(self, a: Trajectories, b: Trajectories) -> Array:
        return _step(a.returns - b.returns)


@dataclasses.dataclass(frozen=True)
class Thurstone:
    r"""Each return is seen with Gaussian noise: P(a ≻ b) = Φ((R_a − R_b) / (σ√2)) (Thurstone Case V)."""

    noise_std: float = 1.0
    kind: ClassVar[str] = "markovian"

    def __post_init__(self):
        _positive("Thurstone", "noise_std", self.noise_std)

    def probability(self, a: Trajectories, b: Trajectories) -> Array:
        return jax.scipy.stats.norm.cdf((a.returns - b.returns) / (self.noise_std * jnp.sqrt(2.0)))


@dataclasses.dataclass(frozen=True)
class LabelFlip:
    """A perfect annotator whose label is flipped with probability `flip_rate` in [0, 0.5]."""

    flip_rate: float = 0.1
    kind: ClassVar[str] = "noisy"

    def __post_init__(self):
        if not 0.0 <= self.flip_rate <= 0.5:
            raise ConfigError(f"LabelFlip.flip_rate must lie in [0, 0.5], got {self.flip_rate!r}.")

    def probability(self, a: Trajectories, b: Trajectories) -> Array:
        return self.flip_rate + (1.0 - 2.0 * self.flip_rate) * _step(a.returns - b.returns)


@dataclasses.dataclass(frozen=True)
class AnnotatorMixture:
    """A random annotator k ~ π answers, Bradley-Terry on its own weighting: Σ_k π_k σ(w_k·(F_a − F_b)/T).

    weights: `K_annotators x K_features` reward weights; probabilities: π (normalised here).
    """

    weights: tuple[tuple[float, ...], ...] = ((1.0,),)
    probabilities: tuple[float, ...] = (1.0,)
    temperature: float = 1.0
    kind: ClassVar[str] = "noisy"

    def __post_init__(self):
        object.__setattr__(self, "weights", _weights("AnnotatorMixture", self.weights))
        probs = tuple(float(p) for p in self.probabilities)
        if len(probs) != len(self.weights) or min(probs) < 0 or sum(probs) <= 0:
            raise ConfigError(
                f"AnnotatorMixture.probabilities must be {len(self.weights)} non-negative numbers "
                f"(one per annotator) with a positive sum, got {self.probabilities!r}."
            )
        object.__setattr__(self, "probabilities", tuple(p / sum(probs) for p in probs))
        _positive("AnnotatorMixture", "temperature", self.temperature)

    def probability(self, a: Trajectories, b: Trajectories) -> Array:
        _check_feature_count("AnnotatorMixture", self.weights, a)
        margins = (a.feature_sums - b.feature_sums) @ jnp.asarray(self.weights).T  # [*batch, annotators]
        return jax.nn.sigmoid(margins / self.temperature) @ jnp.asarray(self.probabilities)


@dataclasses.dataclass(frozen=True)
class ConstrainedReturn:
    """Non-Markovian: a trajectory that keeps feature `feature` ≤ `limit` at every step beats one
    that does not; between two that both do (or both do not), Bradley-Terry on the return."""

    feature: int = 0
    limit: float = 0.0
    temperature: float = 1.0
    kind: ClassVar[str] = "non-markovian"

    def __post_init__(self):
        if isinstance(self.feature, bool) or not isinstance(self.feature, int) or self.feature < 0:
            raise ConfigError(f"ConstrainedReturn.feature must be a feature index >= 0, got {self.feature!r}.")
        _positive("ConstrainedReturn", "temperature", self.temperature)

    def satisfied(self, trajectories: Trajectories) -> Array:
        """`[*batch]` bool: the constraint held at every step."""
        count = trajectories.features.shape[-1]
        if self.feature >= count:
            raise _checks.ArgumentValueError(f"ConstrainedReturn.feature={self.feature} but the trajectories have {count} features.")
        return trajectories.feature_max[..., self.feature] <= self.limit

    def probability(self, a: Trajectories, b: Trajectories) -> Array:
        sat_a, sat_b = self.satisfied(a), self.satisfied(b)
        by_return = jax.nn.sigmoid((a.returns - b.returns) / self.temperature)
        return jnp.where(sat_a == sat_b, by_return, sat_a.astype(by_return.dtype))


@dataclasses.dataclass(frozen=True)
class MajorityVote:
    """Intransitive: three (or any odd number of) deterministic annotators, each preferring the
    larger w_k · F, vote; the majority wins. P ∈ {0, 1} (ties within an annotator count ½)."""

    weights: tuple[tuple[float, ...], ...] = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))
    kind: ClassVar[str] = "intransitive"

    def __post_init__(self):
        object.__setattr__(self, "weights", _weights("MajorityVote", self.weights))
        if len(self.weights) % 2 == 0:
            raise ConfigError(f"MajorityVote needs an odd number of annotators, got {len(self.weights)}.")

    def probability(self, a: Trajectories, b: Trajectories) -> Array:
        _check_feature_count("MajorityVote", self.weights, a)
        votes = _step((a.feature_sums - b.feature_sums) @ jnp.asarray(self.weights).T)  # [*batch, annotators]
        return _step(votes.sum(-1) - len(self.weights) / 2)


Oracle = BradleyTerry | HardLabels | Thurstone | LabelFlip | AnnotatorMixture | ConstrainedReturn | MajorityVote

ORACLE_TYPES: dict[str, type] = {
    "bt": BradleyTerry,
    "hard": HardLabels,
    "thurstone": Thurstone,
    "flip": LabelFlip,
    "mixture": AnnotatorMixture,
    "constrained": ConstrainedReturn,
    "majority": MajorityVote,
}


def _step(x: Array) -> Array:
    """1 where x > 0, 0 where x < 0, ½ where x == 0."""
    return 0.5 * (1.0 + jnp.sign(x))


def preference_probability(oracle: Oracle, a: Trajectories, b: Trajectories) -> Float[Array, "*batch"]:
    """P(a_i ≻ b_i) for each pair of the two batches (same batch shape, length and features)."""
    check_pair(a, b)
    return oracle.probability(a, b)


def sample_preferences(oracle: Oracle, key: PRNGKeyArray, a: Trajectories, b: Trajectories) -> Float[Array, "*batch"]:
    """Sampled labels, float 0/1: 1 where the annotator preferred a_i, each pair independently."""
    probability = preference_probability(oracle, a, b)
    return jax.random.bernoulli(key, probability).astype(probability.dtype)


def cross_pairs(a: Trajectories, b: Trajectories) -> tuple[Trajectories, Trajectories]:
    """`[Na, Nb, ...]` views (i, j) -> (a_i, b_j) of two batches of trajectories, by broadcasting."""
    rows = jax.tree.map(lambda x: jnp.broadcast_to(x[:, None], (x.shape[0], b.reward.shape[0], *x.shape[1:])), a)
    cols = jax.tree.map(lambda x: jnp.broadcast_to(x[None], (a.reward.shape[0], *x.shape)), b)
    return rows, cols


def _all_pairs(trajectories: Trajectories) -> tuple[Trajectories, Trajectories]:
    """`[N, N, ...]` views (i, j) -> (trajectory i, trajectory j) of one `[N, T]` batch."""
    check_trajectories("trajectories", trajectories)
    if trajectories.reward.ndim != 2:
        raise _checks.ArgumentValueError(
            f"`trajectories` must be one batch [N, T], got reward shape {tuple(trajectories.reward.shape)}; vmap over more."
        )
    return cross_pairs(trajectories, trajectories)


def preference_matrix(oracle: Oracle, trajectories: Trajectories) -> Float[Array, "N N"]:
    """P[i, j] = P(trajectory i ≻ trajectory j) over all pairs of `[N, T]` trajectories (diagonal ½)."""
    rows, cols = _all_pairs(trajectories)
    matrix = oracle.probability(rows, cols)
    return jnp.where(jnp.eye(matrix.shape[0], dtype=bool), 0.5, matrix)


def sample_preference_matrix(oracle: Oracle, key: PRNGKeyArray, trajectories: Trajectories) -> Float[Array, "N N"]:
    """One sampled comparison per unordered pair: L[i, j] ∈ {0, 1} for i < j, L[j, i] = 1 − L[i, j].

    N (N − 1) / 2 queries to the annotator; the diagonal is ½ (`win_rates` ignores it).
    """
    probability = preference_matrix(oracle, trajectories)
    n = probability.shape[0]
    upper = jnp.triu(jnp.ones((n, n), bool), k=1)
    labels = jax.random.bernoulli(key, probability).astype(probability.dtype)
    upper_labels = jnp.where(upper, labels, 0.0)
    return upper_labels + jnp.where(upper.T, 1.0 - upper_labels.T, 0.0) + 0.5 * jnp.eye(n, dtype=probability.dtype)
