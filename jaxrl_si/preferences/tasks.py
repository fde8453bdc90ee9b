"""Tasks for preference experiments: each env's reward features and the oracles set to its scale.

A `PreferenceTask` names an env with a fixed horizon (every episode lasts `episode_length`
steps, so whole trajectories line up with a rollout), the per-step features φ its reward is
made of (r = φ · w_true), and one preset per oracle name, with temperatures and limits chosen
for the task's return scale. `TASKS[env].oracle(name)` is what a command line selects.

gymnax `Pendulum-v1` (Brockman et al. 2016's Pendulum, 200 steps, no termination): φ = (θ², θ̇²,
u²) with θ the angle from upright in [−π, π), θ̇ the angular speed (|θ̇| ≤ 8) and u the applied
torque (|u| ≤ 2), all before the step; r = −(θ² + 0.1 θ̇² + 0.001 u²), so w_true = (−1, −0.1,
−0.001). Returns run from about −1,500 (flailing) to about −150 (a swing-up and balance); two
random starts of one good policy differ by up to ~100, so the Bradley-Terry temperature 20 makes
a difference of 20 a 73 % preference. The presets:

- `bt`, `hard`, `thurstone` (σ = 20): Markovian, on the return.
- `flip`: the perfect annotator with 20 % of labels flipped.
- `mixture`: one of three annotators at random, each with a reward weighting of its own: the
  task's (−1, −0.1, −0.001), a speed-averse one (−1, −1, −0.001) and an effort-averse one
  (−1, −0.1, −0.1); temperature 20.
- `constrained` (non-Markovian): never spin faster than 6 rad/s (θ̇² ≤ 36 at every step; a
  swing-up needs torque on the way up to stay under it, and a motor or a joint has such a
  limit), then the return. Pendulum's own speed clip is 8 rad/s.
- `majority` (intransitive): the three annotators of `mixture`, deterministic, by majority.

Brax `reacher` with a 200-step time limit (a two-link arm reaching a random target; no
termination): φ = (distance from fingertip to target, ‖a‖², fingertip speed²) after the step,
r = −distance − ‖a‖², so w_true = (−1, −1, 0). Returns run from about −240 (random) to about
−10 (PPO after 1.3·10^5 steps); the temperatures are 2. `constrained`: never move the
fingertip faster than 1 m/s (speed² ≤ 1; PPO's trained episodes peak at 0.15–3.6).
Annotators: the task's weights, a distance-focused (−1, −0.1, 0) and a gentle one
(−1, −1, −0.05).

MuJoCo Playground `CartpoleSwingup` with a 200-step time limit (DM Control's cart-pole, the pole
hanging down at the start with 0.01 noise: near-fixed starts, as the paper's MuJoCo tasks): the
reward is a product, r = upright · centred · small_control · small_velocity (each in [0, 1];
Tassa et al. 2018), so it is a feature of its own: φ = (r, upright, cart position², pole angular
speed²) after the step, w_true = (1, 0, 0, 0). Returns run from about 20 (flailing) to about 65
(PPO after 5·10^5 steps) and beyond 100 (a swing-up held upright); the temperatures are 5.
`constrained`: never move the cart more than 0.5 m from the centre of its ±1.8 m rail
(x² ≤ 0.25 at every step; a short lab rail), so a swing-up must pump within a narrow span.
Annotators: the task's reward, an upright-only one (0, 1, 0, 0) that ignores centring, effort
and speed, and a centring one (1, 0, −0.5, 0).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

import jax.numpy as jnp
from jaxtyping import Array

from jaxrl_si import envs
from jaxrl_si.errors import ConfigError
from jaxrl_si.preferences.oracles import (
    AnnotatorMixture,
    BradleyTerry,
    ConstrainedReturn,
    HardLabels,
    LabelFlip,
    MajorityVote,
    Oracle,
    Thurstone,
)


@dataclasses.dataclass(frozen=True, eq=False)
class PreferenceTask:
    """An env with a fixed horizon, its reward features and its oracle presets."""

    env: str
    episode_length: int
    feature_names: tuple[str, ...]
    true_weights: tuple[float, ...]  # r = features · true_weights
    features: Callable[[object, Array, object], Array]  # (state, action, next_state) of the backend env -> [K]
    oracles: Mapping[str, Oracle]
    make_kwargs: Mapping[str, object] = dataclasses.field(default_factory=dict)  # for `envs.make` (e.g. the time limit)

    def make_env(self) -> envs.Env:
        """The backend env with `info['features']` on every step."""
        return envs.RewardFeatures(envs.make(self.env, **self.make_kwargs), self.features, len(self.feature_names))

    def oracle(self, name: str) -> Oracle:
        """The preset oracle `name`, or `ConfigError` listing this task's."""
        if name not in self.oracles:
            raise ConfigError(f"unknown oracle {name!r} for {self.env}; choose from {sorted(self.oracles)}")
        return self.oracles[name]


def task(env: str) -> PreferenceTask:
    """The preference task of `env`, or `ConfigError` listing the envs that have one."""
    if env not in TASKS:
        raise ConfigError(f"no preference task for {env!r} (reward features and oracle presets); known: {sorted(TASKS)}")
    return TASKS[env]


def _oracle_presets(*, scale: float, annotators, capped_feature: int, cap: float) -> dict[str, Oracle]:
    """The seven presets of a task: `scale` is the BT temperature and Thurstone noise (a return
    difference that decides 73 % of labels), `annotators` the three weightings of `mixture` and
    `majority`, and `constrained` caps feature `capped_feature` at `cap` on every step."""
    return {
        "bt": BradleyTerry(temperature=scale),
        "hard": HardLabels(),
        "thurstone": Thurstone(noise_std=scale),
        "flip": LabelFlip(flip_rate=0.2),
        "mixture": AnnotatorMixture(annotators, (1.0, 1.0, 1.0), temperature=scale),
        "constrained": ConstrainedReturn(feature=capped_feature, limit=cap, temperature=scale),
        "majority": MajorityVote(annotators),
    }


def _pendulum_features(state, action: Array, next_state) -> Array:
    """(θ², θ̇², u²) of gymnax's Pendulum before the step; u is the torque it applied (clipped)."""
    angle = jnp.mod(state.theta + jnp.pi, 2.0 * jnp.pi) - jnp.pi
    return jnp.stack([angle**2, state.theta_dot**2, next_state.last_u**2])


_PENDULUM_TRUE = (-1.0, -0.1, -0.001)
_PENDULUM_ANNOTATORS = (_PENDULUM_TRUE, (-1.0, -1.0, -0.001), (-1.0, -0.1, -0.1))

PENDULUM = PreferenceTask(
    env="gymnax:Pendulum-v1",
    episode_length=200,
    feature_names=("angle_sq", "speed_sq", "torque_sq"),
    true_weights=_PENDULUM_TRUE,
    features=_pendulum_features,
    oracles=_oracle_presets(scale=20.0, annotators=_PENDULUM_ANNOTATORS, capped_feature=1, cap=36.0),
)


def _reacher_features(state, action: Array, next_state) -> Array:
    """(distance to target, ‖a‖², fingertip speed²) after the step, from Brax's own metrics and
    observation (the last 3 entries are tip − target, entries 6:8 the tip's planar velocity)."""
    brax_state = next_state.env_state  # under the TimeLimit
    tip_velocity = brax_state.obs[6:8]
    return jnp.stack([-brax_state.metrics["reward_dist"], -brax_state.metrics["reward_ctrl"], jnp.sum(tip_velocity**2)])


_REACHER_TRUE = (-1.0, -1.0, 0.0)
_REACHER_ANNOTATORS = (_REACHER_TRUE, (-1.0, -0.1, 0.0), (-1.0, -1.0, -0.05))

REACHER = PreferenceTask(
    env="brax:reacher",
    episode_length=200,
    feature_names=("distance", "torque_sq", "tip_speed_sq"),
    true_weights=_REACHER_TRUE,
    features=_reacher_features,
    oracles=_oracle_presets(scale=2.0, annotators=_REACHER_ANNOTATORS, capped_feature=2, cap=1.0),
    make_kwargs={"episode_length": 200},
)


def _cartpole_features(state, action: Array, next_state) -> Array:
    """(reward, upright, cart position², pole angular speed²) after the step, from Playground's
    state (qpos = (cart x, pole angle), qvel likewise) and its reward terms."""
    playground_state = next_state.env_state  # under the TimeLimit
    data = playground_state.data
    upright = playground_state.metrics["reward/upright"]
    return jnp.stack([playground_state.reward, upright, data.qpos[0] ** 2, data.qvel[1] ** 2])


_CARTPOLE_TRUE = (1.0, 0.0, 0.0, 0.0)
_CARTPOLE_ANNOTATORS = (_CARTPOLE_TRUE, (0.0, 1.0, 0.0, 0.0), (1.0, 0.0, -0.5, 0.0))

CARTPOLE_SWINGUP = PreferenceTask(
    env="playground:CartpoleSwingup",
    episode_length=200,
    feature_names=("reward", "upright", "cart_position_sq", "pole_speed_sq"),
    true_weights=_CARTPOLE_TRUE,
    features=_cartpole_features,
    oracles=_oracle_presets(scale=5.0, annotators=_CARTPOLE_ANNOTATORS, capped_feature=2, cap=0.25),
    make_kwargs={"episode_length": 200},
)

TASKS: dict[str, PreferenceTask] = {t.env: t for t in (PENDULUM, REACHER, CARTPOLE_SWINGUP)}
