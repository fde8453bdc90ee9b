r"""HILP: a Hilbert representation and a latent-conditioned policy from unlabelled data, prompted zero-shot.

Park, Kreiman & Levine 2024, "Foundation Policies with Hilbert Representations", arXiv
2402.15567; the goal-reaching variant of the official code (`hilp_gcrl/src/agents/hilp.py`,
github.com/seohongpark/HILP). Every gradient step, on one batch of (s, a, s') from the data:

1. φ (twin MLPs with target copies): the goal-conditioned value V(s, g) = −‖φ(s) − φ(g)‖ by
   `losses.hilbert_value_loss` (Eq. 5; expectile 0.95, γ 0.99). Goals (`sample_batch`): with
   probability 0.625 a future state of the same episode, t + k with k ~ Geometric(1 − γ)
   clipped to the episode's last step; else a state drawn uniformly from the whole dataset.
2. The latent-conditioned policy by IQL on the intrinsic reward r = ⟨φ(s') − φ(s), z⟩ (Eq. 6),
   z uniform on the unit sphere (the code normalises Gaussians; its `reproduce` branch drew
   them with NumPy inside `jax.jit`, one fixed batch; here `jax.random`, fresh every step):
   V(s, z) the 0.9-expectile of the twin target critics' min Q(s, a, z); Q(s, a, z) regresses
   r + γ V(s', z) with no termination; the actor by AWR, weights min(e^{10 A}, 100).
   φ is read with a stop-gradient (the policy never shapes the representation) from the first
   twin's online parameters, as the code's `get_phi`.

One Adam (3e-4) steps all networks on the summed loss; target networks (φ, critics) move by
Polyak averaging with rate 0.005 from the parameters *before* the step, as the code does.

Representations (`HILPConfig.representation`), the baselines of the HILP experiment:
`hilbert` (the above), `random` (φ at its random initialisation, never trained), `identity`
(φ(s) = s: no representation; the latent space is the observation space).

Every update ends with an evaluation of every prompt (metrics `<prompt>/success`, `<prompt>/return`,
per task `<prompt>/success/task<k>`; `episode/return` is the reward prompt's) and, where the env
knows true temporal distances, `phi/spearman` (`distance_correlation`).

Prompting (`evaluate`), on an env with tasks (`envs.maze.PointMaze`: `reset_to_task`,
`goal_observations`, per-task rewards in `info["features"]` and the data's `features`):

- `goal`: z = normalise(φ(g) − φ(s)) at every step (Eq. 8); `plan` first moves g to a waypoint
  (`losses.plan_subgoal`) among `planning_states` dataset states;
- `reward`: z = the least-squares fit of task k's rewards on φ(s') − φ(s) over `reward_samples`
  dataset transitions (Eq. 9; the rewards come from the data's `features`, used for nothing
  else), held fixed for the episode;
- `random`: z uniform on the sphere, fixed for the episode (the floor).

Deviations: network layers are Dense → LayerNorm → GELU (`nets.MLP`) where the code has Dense →
GELU → LayerNorm; the actor's log-std is state-independent as in the code (`Policy(...,
state_dependent_std=False)`) and its mean is used for evaluation (temperature 0).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, Float, Int, PRNGKeyArray

from jaxrl_si import envs, nets
from jaxrl_si.agents.offline import (
    EVAL_STREAM,
    TRAIN_STREAM,
    OfflineAgent,
    check_int,
    parameter_count,
    run_episodes,
    sample_steps,
    scan_gradient_steps,
    step_key,
    vmapped_step,
)
from jaxrl_si.data import Episodes
from jaxrl_si.errors import ConfigError, check_known_keys
from jaxrl_si.layout import Constrain, unconstrained
from jaxrl_si.losses import (
    awr_loss,
    goal_latent,
    hilbert_value,
    hilbert_value_loss,
    intrinsic_reward,
    iql_critic_loss,
    iql_value_loss,
    plan_subgoal,
    reward_latent,
    sample_latents,
    spearman_correlation,
)

REPRESENTATIONS = ("hilbert", "random", "identity")
REWARD_FEATURES = ("diff", "state")
PROMPTS = ("goal", "plan", "reward", "random")
LOG_STD_RANGE = (-5.0, 2.0)  # the code's Policy: log_std_min -5; log_std_max 2


@dataclasses.dataclass(frozen=True)
class HILPConfig:
    """Static settings; defaults are the goal-reaching code's (`hilp_gcrl/main.py`) on AntMaze."""

    env: str = "maze:medium"  # an env with tasks (envs.maze); the data's
    representation: str = "hilbert"  # one of REPRESENTATIONS
    latent_dim: int = 32  # d of φ (code: 32); `identity` uses the observation size instead
    hidden_sizes: tuple[int, ...] = (512, 512, 512)  # every MLP (code: 512 x 3)
    batch_size: int = 1024
    total_steps: int = 1_000_000
    steps_per_update: int = 50_000  # gradient steps per update (one evaluation each)
    trajectory_goal_fraction: float = 0.625  # P(goal from the same episode's future); else a random dataset state
    eval_episodes: int = 10  # episodes per task and prompt
    eval_horizon: int = 200  # steps per evaluation episode
    reward_samples: int = 10_000  # reward-labelled transitions per reward prompt (code: 10,000)
    reward_features: str = "diff"  # what rewards are regressed on: φ(s') − φ(s) (paper Eq. 9) or φ(s') centred ("state", zero-shot code)
    planning_states: int = 50_000  # dataset states the planner picks waypoints from (code: 50,000)
    num_neighbours: int = 50  # waypoint = mean of this many states (code: 50)
    num_recursions: int = 3  # waypoint refinements of the `plan` prompt (code: 3)

    def __post_init__(self):
        object.__setattr__(self, "hidden_sizes", tuple(self.hidden_sizes))
        for name in ("latent_dim", "batch_size", "total_steps", "steps_per_update", "eval_episodes", "eval_horizon",
                     "reward_samples", "planning_states", "num_neighbours"):
            check_int(self, name)
        check_int(self, "num_recursions", least=0)
        for name, valid in (("representation", REPRESENTATIONS), ("reward_features", REWARD_FEATURES)):
            if getattr(self, name) not in valid:
                raise ConfigError(f"HILPConfig.{name} must be one of {valid}, got {getattr(self, name)!r}.")
        if self.total_steps % self.steps_per_update:
            raise ConfigError(f"HILPConfig.steps_per_update={self.steps_per_update} must divide total_steps={self.total_steps}.")
        if not 0.0 <= self.trajectory_goal_fraction <= 1.0:
            raise ConfigError(f"HILPConfig.trajectory_goal_fraction must be in [0, 1], got {self.trajectory_goal_fraction}.")
        if self.num_neighbours > self.planning_states or not all(isinstance(w, int) and w > 0 for w in self.hidden_sizes):
            raise ConfigError("HILPConfig: num_neighbours must be <= planning_states, and hidden_sizes positive ints.")

    @property
    def num_updates(self) -> int:
        return self.total_steps // self.steps_per_update

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> HILPConfig:
        check_known_keys(cls.__name__, values, (f.name for f in dataclasses.fields(cls)))
        return cls(**values)


class HILPHyperparams(flax.struct.PyTreeNode):
    """Traced hyperparameters; defaults from the goal-reaching code (`create_learner`)."""

    learning_rate: float = 3e-4
    discount: float = 0.99  # γ of φ's value, and of the geometric future-goal offsets
    expectile: float = 0.95  # τ of φ's value
    target_rate: float = 0.005  # Polyak rate of the target φ and critics
    skill_discount: float = 0.99  # γ of the latent-conditioned IQL
    skill_expectile: float = 0.9  # τ of V(s, z)
    skill_temperature: float = 10.0  # AWR inverse temperature (weights capped at 100)
    reward_ridge: float = 0.0  # ridge of the reward prompt's regression, relative to tr(FᵀF)/d (paper: 0, least squares)


class HILPParams(flax.struct.PyTreeNode):
    phi: Any  # twin: every leaf has a leading axis of 2
    value: Any  # V(s, z)
    critic: Any  # twin Q(s, a, z)
    actor: Any


class HILPState(flax.struct.PyTreeNode):
    params: HILPParams
    target_phi: Any
    target_critic: Any
    opt_state: Any
    key: PRNGKeyArray  # fixed; each step draws from step_key(key, stream, step)
    step: Array  # int32 [], gradient steps done


class Batch(flax.struct.PyTreeNode):
    """`B` transitions with a goal each: observation, action, next observation, goal `[B, ...]`,
    `reached` `[B]` (1 where the goal is the state itself)."""

    observation: Array
    action: Array
    next_observation: Array
    goal: Array
    reached: Array


class GaussianActor(nn.Module):
    """π(a | s, z) = N(μ(s, z), diag σ²): a ReLU MLP mean, a state-independent log σ (the code's `Policy`)."""

    action_size: int
    hidden_sizes: tuple[int, ...]

    @nn.compact
    def __call__(self, inputs: Float[Array, "... I"]) -> tuple[Float[Array, "... A"], Float[Array, "A"]]:
        mean = nets.MLP(self.hidden_sizes, self.action_size, activation="relu")(inputs)
        log_std = self.param("log_std", nn.initializers.zeros, (self.action_size,))
        return mean, jnp.clip(log_std, *LOG_STD_RANGE)


def future_offsets(key: PRNGKeyArray, shape: tuple[int, ...], discount) -> Int[Array, "..."]:
    """k = ⌈log(1 − u) / log γ⌉, u ~ U[0, 1): Geometric(1 − γ) on {1, 2, ...} (the code's `geom_sample`)."""
    u = jax.random.uniform(key, shape)
    return jnp.maximum(jnp.ceil(jnp.log1p(-u) / jnp.log(discount)), 1.0).astype(jnp.int32)


def sample_batch(episodes: Episodes, key: PRNGKeyArray, batch_size: int, trajectory_goal_fraction: float, discount) -> Batch:
    """Transitions (s_t, a_t, s_{t+1}) uniform over the steps that have a successor in their episode,
    and goals: the same episode's step min(t + k, last) with probability `trajectory_goal_fraction`
    (k from `future_offsets`), else a uniformly drawn dataset step."""
    key_step, key_offset, key_random, key_choice = jax.random.split(key, 4)
    episode, t = sample_steps(key_step, jnp.maximum(episodes.length - 1, 0), batch_size)
    future = jnp.minimum(t + future_offsets(key_offset, (batch_size,), discount), episodes.length[episode] - 1)
    random_episode, random_t = sample_steps(key_random, episodes.length, batch_size)
    from_trajectory = jax.random.uniform(key_choice, (batch_size,)) < trajectory_goal_fraction
    goal_episode = jnp.where(from_trajectory, episode, random_episode)
    goal_t = jnp.where(from_trajectory, future, random_t)
    obs = episodes.observation
    return Batch(
        observation=obs[episode, t],
        action=episodes.action[episode, t],
        next_observation=obs[episode, t + 1],
        goal=obs[goal_episode, goal_t],
        reached=((goal_episode == episode) & (goal_t == t)).astype(jnp.float32),
    )


def phi_loss(phi_net: nn.Module, phi_params, target_phi, batch: Batch, *, discount, expectile) -> tuple[Array, dict[str, Array]]:
    """`hilbert_value_loss` of the twin φ (leaves `[2, ...]`) and its target on `batch`, averaged."""
    twin = lambda params, obs: jax.vmap(phi_net.apply, in_axes=(0, None))(params, obs)
    target_goal = twin(target_phi, batch.goal)
    value = hilbert_value(twin(phi_params, batch.observation), twin(phi_params, batch.goal))
    target_value = hilbert_value(twin(target_phi, batch.observation), target_goal)
    next_target_value = hilbert_value(twin(target_phi, batch.next_observation), target_goal)
    loss = hilbert_value_loss(value, target_value, next_target_value, batch.reached, discount=discount, expectile=expectile).mean()
    return loss, {"loss/phi": loss, "phi/distance": -value.mean()}


def polyak(params, target, rate):
    """target ← rate · params + (1 − rate) · target, leaf-wise."""
    return jax.tree.map(lambda p, t: rate * p + (1.0 - rate) * t, params, target)


@dataclasses.dataclass(frozen=True, eq=False)
class HILP(OfflineAgent):
    """Config, the dataset (`Episodes`, device arrays), the networks and the task env; never traced."""

    config: HILPConfig
    data: Episodes
    env: envs.Env  # unwrapped env with `reset_to_task` and `goal_observations`
    latent_size: int
    phi_net: nets.MLP
    value_net: nets.MLP
    actor: GaussianActor
    constrain: Constrain = unconstrained

    @classmethod
    def build(cls, config: HILPConfig, *, data: Episodes, constrain: Constrain = unconstrained) -> HILP:
        """Networks and the task env for `config`; `ConfigError` if `data` does not fit the env."""
        with jax.ensure_compile_time_eval():
            env = envs.make(config.env).unwrapped  # evaluations run a fixed horizon: no time limit
        check_task_env(config, env)
        check_data(config, data, env)
        latent_size = int(np.prod(env.observation_shape)) if config.representation == "identity" else config.latent_dim
        mlp = lambda size: nets.MLP(config.hidden_sizes, size, activation="gelu", layer_norm=True)
        return cls(config, data, env, latent_size, mlp(latent_size), mlp(1), GaussianActor(env.action_size, config.hidden_sizes), constrain)

    @property
    def data_parallel_sizes(self) -> dict[str, int]:
        return {"batch_size": self.config.batch_size}

    def parameter_count(self) -> int:
        return parameter_count(jax.eval_shape(self.init, HILPHyperparams(), jax.random.key(0)).params)

    # ---- networks ----------------------------------------------------------------------------

    def represent(self, params: HILPParams, obs: Float[Array, "... D"]) -> Float[Array, "... d"]:
        """φ(s) the policy and the prompts read: the first twin's (`hilbert`, `random`), or s (`identity`)."""
        if self.config.representation == "identity":
            return obs.reshape(*obs.shape[: obs.ndim - len(self.env.observation_shape)], -1)
        return self.phi_net.apply(jax.tree.map(lambda leaf: leaf[0], params.phi), obs)

    def twin_critic(self, critic_params, obs, action, latent) -> Float[Array, "2 B"]:
        inputs = jnp.concatenate([obs, action, latent], axis=-1)
        return jax.vmap(self.value_net.apply, in_axes=(0, None))(critic_params, inputs)[..., 0]

    def skill_value(self, value_params, obs, latent) -> Float[Array, "B"]:
        return self.value_net.apply(value_params, jnp.concatenate([obs, latent], axis=-1))[..., 0]

    def act(self, state: HILPState, obs: Float[Array, "... D"], latent: Float[Array, "... d"]) -> Float[Array, "... A"]:
        """The policy's mean action for latent prompts, clipped to [−1, 1] (evaluation: temperature 0)."""
        mean, _ = self.actor.apply(state.params.actor, jnp.concatenate([obs, latent], axis=-1))
        return jnp.clip(mean, -1.0, 1.0)

    # ---- training -----------------------------------------------------------------------------

    def init(self, hparams: HILPHyperparams, key: PRNGKeyArray) -> HILPState:
        del hparams
        keys = jax.random.split(key, 5)
        obs = jnp.zeros((1, *self.env.observation_shape), jnp.float32)
        latent = jnp.zeros((1, self.latent_size), jnp.float32)
        action = jnp.zeros((1, self.env.action_size), jnp.float32)
        params = HILPParams(
            phi=jax.vmap(self.phi_net.init, in_axes=(0, None))(jax.random.split(keys[0]), obs),
            value=self.value_net.init(keys[1], jnp.concatenate([obs, latent], -1)),
            critic=jax.vmap(self.value_net.init, in_axes=(0, None))(jax.random.split(keys[2]), jnp.concatenate([obs, action, latent], -1)),
            actor=self.actor.init(keys[3], jnp.concatenate([obs, latent], -1)),
        )
        return HILPState(params, params.phi, params.critic, optax.adam(1.0).init(params), keys[4], jnp.zeros((), jnp.int32))

    def gradient_step(self, hparams: HILPHyperparams, state: HILPState) -> tuple[HILPState, dict[str, Array]]:
        """One Adam step of every network on one batch, then the target networks' Polyak step."""
        key_batch, key_latent = jax.random.split(step_key(state.key, TRAIN_STREAM, state.step))
        config = self.config
        batch = self.constrain(sample_batch(self.data, key_batch, config.batch_size, config.trajectory_goal_fraction, hparams.discount))
        latents = self.constrain(sample_latents(key_latent, (config.batch_size,), self.latent_size))
        grads, metrics = jax.grad(self._loss, has_aux=True)(state.params, hparams, state, batch, latents)
        updates, opt_state = optax.adam(hparams.learning_rate).update(grads, state.opt_state, state.params)
        metrics["optim/grad_norm"] = optax.tree.norm(grads)
        return HILPState(
            params=optax.apply_updates(state.params, updates),
            target_phi=polyak(state.params.phi, state.target_phi, hparams.target_rate),
            target_critic=polyak(state.params.critic, state.target_critic, hparams.target_rate),
            opt_state=opt_state,
            key=state.key,
            step=state.step + 1,
        ), metrics

    def _loss(self, params: HILPParams, hparams: HILPHyperparams, state: HILPState, batch: Batch, latents: Array):
        metrics = {}
        total = jnp.zeros((), jnp.float32)
        if self.config.representation == "hilbert":
            loss, metrics = phi_loss(self.phi_net, params.phi, state.target_phi, batch, discount=hparams.discount, expectile=hparams.expectile)
            total += loss
        frozen = jax.lax.stop_gradient(params)
        reward = intrinsic_reward(self.represent(frozen, batch.observation), self.represent(frozen, batch.next_observation), latents)
        target_q = self.twin_critic(state.target_critic, batch.observation, batch.action, latents).min(0)
        value = self.skill_value(params.value, batch.observation, latents)
        value_loss = iql_value_loss(target_q, value, expectile=hparams.skill_expectile).mean()
        next_value = self.skill_value(frozen.value, batch.next_observation, latents)
        q = self.twin_critic(params.critic, batch.observation, batch.action, latents)
        discount = jnp.full_like(reward, hparams.skill_discount)
        critic_loss = sum(iql_critic_loss(q[i], reward, discount, next_value) for i in range(2)).mean()
        mean, log_std = self.actor.apply(params.actor, jnp.concatenate([batch.observation, latents], -1))
        log_prob = nets.DiagGaussian(mean, log_std).log_prob(batch.action)
        advantage = target_q - self.skill_value(frozen.value, batch.observation, latents)
        actor_loss = awr_loss(log_prob, advantage, inverse_temperature=hparams.skill_temperature).mean()
        total += value_loss + critic_loss + actor_loss
        metrics.update({
            "loss/total": total, "loss/skill_value": value_loss, "loss/critic": critic_loss, "loss/actor": actor_loss,
            "skill/reward": reward.mean(), "skill/advantage": advantage.mean(), "skill/log_prob": log_prob.mean(),
        })
        return total, jax.lax.stop_gradient(metrics)

    def update(self, hparams: HILPHyperparams, state: HILPState) -> tuple[HILPState, dict[str, Array]]:
        """`steps_per_update` gradient steps in a `lax.scan`, then the goal- and reward-prompted evaluations."""
        state, metrics = scan_gradient_steps(self, hparams, state, self.gradient_step)
        keys = jax.random.split(step_key(state.key, EVAL_STREAM, state.step), len(PROMPTS) + 1)
        prompts = PROMPTS if self.config.num_recursions else tuple(p for p in PROMPTS if p != "plan")
        for prompt, key in zip(prompts, keys):
            metrics.update({f"{prompt}/{name}": value for name, value in self.evaluate(hparams, state, key, prompt).items()})
        if hasattr(self.env, "temporal_distance"):
            metrics["phi/spearman"] = self.distance_correlation(state, keys[-1])
        count = jnp.asarray(self.num_tasks * self.config.eval_episodes, jnp.float32)
        return state, {**metrics, "episode/return": metrics["reward/return"], "episode/count": count}

    def distance_correlation(self, state: HILPState, key: PRNGKeyArray) -> Float[Array, ""]:
        """Spearman ρ of ‖φ(s) − φ(g)‖ against the env's true temporal distance over `reward_samples`
        pairs of dataset states (HILP's claim: distance in φ is temporal distance)."""
        episode, t = sample_steps(key, self.data.length, 2 * self.config.reward_samples)
        obs, goal = jnp.split(self.data.observation[episode, t], 2)
        phi_distance = -hilbert_value(self.represent(state.params, obs), self.represent(state.params, goal))
        return spearman_correlation(phi_distance, self.env.temporal_distance(obs, goal))


    # ---- prompting ----------------------------------------------------------------------------

    @property
    def num_tasks(self) -> int:
        return self.env.num_tasks

    def goal_prompt(self, state: HILPState, obs: Float[Array, "... D"], goal: Float[Array, "... D"]) -> Float[Array, "... d"]:
        """z = normalise(φ(g) − φ(s)) for your own goals (Eq. 8); `ConfigError` if `goal` is not shaped like `obs`."""
        if jnp.shape(goal) != jnp.shape(obs) or jnp.shape(obs)[jnp.ndim(obs) - len(self.env.observation_shape) :] != tuple(self.env.observation_shape):
            raise ConfigError(f"a goal is an observation of {self.config.env} {tuple(self.env.observation_shape)}, shaped like `obs` {jnp.shape(obs)}; got {jnp.shape(goal)}")
        return goal_latent(self.represent(state.params, obs), self.represent(state.params, goal))

    def reward_prompts(self, state: HILPState, key: PRNGKeyArray, ridge=0.0) -> Float[Array, "K d"]:
        """z_k for every task k: `reward_latent` of the data's task-k rewards on φ(s') − φ(s) (Eq. 9),
        or on φ(s') minus its mean over the samples (`reward_features="state"`)."""
        episode, t = sample_steps(key, jnp.maximum(self.data.length - 1, 0), self.config.reward_samples)
        obs = self.data.observation
        phi_next = self.represent(state.params, obs[episode, t + 1])
        if self.config.reward_features == "diff":
            features = phi_next - self.represent(state.params, obs[episode, t])
        else:
            features = phi_next - phi_next.mean(0)
        rewards = self.data.features[episode, t]  # [N, K]: r_k after a_t
        return jax.vmap(lambda r: reward_latent(features, r, ridge=ridge), in_axes=1)(rewards)

    def evaluate(self, hparams: HILPHyperparams, state: HILPState, key: PRNGKeyArray, prompt: str) -> dict[str, Array]:
        """Success rate and return of every task under `prompt` (one of PROMPTS), `eval_episodes` each.

        Metrics: `success`, `return` (means over tasks) and `success/task<k>`, `return/task<k>`.
        """
        if prompt not in PROMPTS:
            raise ConfigError(f"prompt must be one of {PROMPTS}, got {prompt!r}")
        key_prompt, key_reset, key_states, key_steps = jax.random.split(key, 4)
        n, horizon = self.config.eval_episodes, self.config.eval_horizon
        tasks = jnp.repeat(jnp.arange(self.num_tasks), n)  # [K n]
        env_state, ts = jax.vmap(self.env.reset_to_task)(jax.random.split(key_reset, tasks.shape[0]), tasks)
        latent_of = self._prompt(hparams, state, key_prompt, key_states, prompt, tasks)

        act = lambda obs: self.act(state, obs, latent_of(obs))
        returns, success = run_episodes(vmapped_step(self.env), env_state, ts, act, key_steps, horizon)
        per_task = lambda x: x.reshape(self.num_tasks, n).mean(1)
        metrics = {"success": success.mean(), "return": returns.mean()}
        for k, (s, r) in enumerate(zip(per_task(success.astype(jnp.float32)), per_task(returns))):
            metrics.update({f"success/task{k}": s, f"return/task{k}": r})
        return metrics

    def _prompt(self, hparams: HILPHyperparams, state: HILPState, key: PRNGKeyArray, key_states: PRNGKeyArray, prompt: str, tasks: Array):
        """`obs [N, D] -> z [N, d]` for the episodes of `tasks` under `prompt`."""
        if prompt == "random":
            latents = sample_latents(key, tasks.shape, self.latent_size)
            return lambda obs: latents
        if prompt == "reward":
            latents = self.reward_prompts(state, key, hparams.reward_ridge)[tasks]
            return lambda obs: latents
        phi_goal = self.represent(state.params, self.env.goal_observations[tasks])
        if prompt == "goal":
            return lambda obs: goal_latent(self.represent(state.params, obs), phi_goal)
        episode, t = sample_steps(key_states, self.data.length, self.config.planning_states)
        phi_states = self.represent(state.params, self.data.observation[episode, t])
        plan = lambda phi_s, phi_g: plan_subgoal(
            phi_s, phi_g, phi_states, num_neighbours=self.config.num_neighbours, num_recursions=self.config.num_recursions
        )

        def planned(obs):
            phi_s = self.represent(state.params, obs)
            return goal_latent(phi_s, jax.vmap(plan)(phi_s, phi_goal))

        return planned


def check_task_env(config: HILPConfig, env: envs.Env) -> None:
    """`ConfigError` unless the env can be prompted per task (`reset_to_task`, `goal_observations`)."""
    if not all(hasattr(env, name) for name in ("reset_to_task", "goal_observations", "num_tasks")):
        raise ConfigError(f"HILP's prompted evaluation needs an env with tasks (e.g. 'maze:medium'); {config.env} has none")
    if not isinstance(env.action_space, envs.Box) or not env.action_space.bounded:
        raise ConfigError(f"HILP needs a bounded continuous action space; {config.env} has {env.action_space!r}")


def check_data(config: HILPConfig, data: Episodes, env: envs.Env) -> None:
    """`ConfigError` naming what does not fit: spaces, the task rewards, the sample counts."""
    obs_shape, action_shape = tuple(data.observation.shape[2:]), tuple(data.action.shape[2:])
    if obs_shape != tuple(env.observation_shape) or action_shape != (env.action_size,):
        raise ConfigError(
            f"data has observations {obs_shape} and actions {action_shape}, but {config.env} has {tuple(env.observation_shape)} and ({env.action_size},)"
        )
    if data.features.shape[-1] != env.num_tasks:
        raise ConfigError(f"data holds the rewards of {data.features.shape[-1]} tasks in `features`; {config.env} has {env.num_tasks}")
    transitions = int(np.maximum(np.asarray(data.length) - 1, 0).sum())
    latent = int(np.prod(env.observation_shape)) if config.representation == "identity" else config.latent_dim
    if transitions < max(config.reward_samples, 1) or config.reward_samples < latent:
        raise ConfigError(
            f"reward prompting fits d = {latent} from reward_samples={config.reward_samples} transitions; "
            f"it needs reward_samples >= d and the data holds {transitions}"
        )
    if np.any(np.abs(np.asarray(data.action)) > 1.0):
        raise ConfigError("data: `action` must lie in [-1, 1]")
