r"""Self-Predictive Representations on a data-efficient Rainbow, as a frozen agent with pure methods.

Schwarzer, Anand, Goel, Hjelm, Courville & Bachman 2021, "Data-Efficient Reinforcement Learning
with Self-Predictive Representations", arXiv 2007.05929. The learner is the paper's (and the
official code's) data-efficient Rainbow: C51 (51 atoms on [−10, 10]; Bellemare et al. 2017),
dueling heads, double Q, factorised noisy nets (σ0 0.5), n-step returns (n = 10, γ = 0.99),
prioritised replay (α 0.5, β 0.4 → 1 over the run), 2 gradient steps per environment step,
Adam (lr 1e-4, eps 1.5e-4) with global-norm clipping at 10, learning from step 2000 with ε
decaying 1 → 0 over the first 2001 steps; the Q target is the online network (target period 1).
SPR adds (Sec. 2.2, Eq. 4): the transition model unrolled K = 5 steps from the encoded,
augmented observation, each predicted latent projected and predicted, compared by cosine with
the target encoder's projection of the observed future, weight λ = 5 in the code's scale
(`losses.spr_loss`, 2 − 2cos per step). The target encoder and projection are an EMA with
weight τ on the online parameters: τ = 1 with augmentation (the target is the online network,
gradient-stopped; the code's `momentum_tau` 1.0), τ = 0.01 without (the paper's 0.99 decay).
Augmentation: random shift (replicate pad 4, or 1 on 10x10 grids) then intensity jitter, on
every network input in training (independent draws), never when acting.

Deviations, said here so that nobody has to find them: the no-augmentation target of the code
also applies dropout 0.5 in the target encoder; this agent does not. Time-limit truncation ends
the n-step return without a bootstrap (the Dopamine / SPR Atari runners count it as terminal).

    agent = SPR.build(SPRConfig(env="gymnax:Breakout-MinAtar", ...))
    state = agent.init(hparams, key)
    state, metrics = agent.update(hparams, state)          # steps_per_update env steps + learning
    state, metrics = jax.jit(agent.train)(hparams, key)    # a whole run, one program

One `update` is `steps_per_update` batched environment steps, each followed (once the buffer
holds `learning_starts` steps) by `updates_per_step` gradient steps. Everything a run needs to
continue (parameters, both target networks, optimiser, the replay buffer with its priorities, the
environments, the key, counters) is in `SPRState`, so a checkpoint per iteration resumes exactly.

Host-side environments (Atari through ale-py) drive the same pieces from Python: `act`,
`observe` (add one step to the buffer), `learn` (the gradient steps, from
`config.first_learning_step` on) and `end_episodes` (games cut by a restart), each jittable;
build the agent with `spaces=(frame_shape, num_actions)` and no JAX environment.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array, PRNGKeyArray

from jaxrl_si import envs
from jaxrl_si.data.replay import (
    SequenceReplay,
    Step,
    importance_weights,
    stacked_frames,
)
from jaxrl_si.errors import ConfigError, check_known_keys
from jaxrl_si.layout import Constrain, unconstrained
from jaxrl_si.losses import (
    augment,
    categorical_double_q_loss,
    categorical_q_values,
    categorical_support,
    n_step_returns,
    spr_cosine,
    spr_loss,
)
from jaxrl_si.metrics import episode_mean
from jaxrl_si.nets.spr import (
    CONV_IMPLS,
    MINATAR_ENCODER,
    NATURE_ENCODER,
    SPRNetwork,
    conv_impl_for_backend,
)

ENCODERS = {"nature": NATURE_ENCODER, "minatar": MINATAR_ENCODER}


@dataclasses.dataclass(frozen=True)
class SPRConfig:
    """Static settings. Defaults: the paper's Atari 100k agent (one env, 2 updates per step)."""

    env: str = "gymnax:Breakout-MinAtar"  # a JAX env ("<backend>:<name>"), or "" for a host-driven agent
    num_envs: int = 1  # environments stepped together
    total_env_steps: int = 100_000  # environment steps of a run (all envs together)
    steps_per_update: int = 1000  # batched env steps per `update` (one row of metrics)
    learning_starts: int = 2000  # env steps before the first gradient step
    updates_per_step: int = 2  # gradient steps after each batched env step (replay ratio x num_envs)
    batch_size: int = 32
    capacity: int = 0  # replay capacity in steps; 0: total_env_steps (the paper keeps everything)
    frame_stack: int = 1  # frames per observation (4 on Atari; JAX envs: 1)
    n_step: int = 10
    spr_steps: int = 5  # K, the transition model's unroll
    use_spr: bool = True  # False: the same agent without the SPR loss
    augment: bool = True  # random shift + intensity on training inputs
    shift_pad: int = 4  # replicate padding of the random shift (1 suits 10x10 grids)
    num_atoms: int = 51
    v_max: float = 10.0  # support [-v_max, v_max]
    encoder: str = "auto"  # nature | minatar | auto (nature for frames of 84 px or more)
    hidden: int = 256  # width of the value and advantage streams
    dueling: bool = True
    double_q: bool = True
    noisy: bool = True  # factorised noisy layers in the Q head
    conv_impl: str = "auto"  # xla | patches | auto (patches on CPU, where XLA's convolutions in loops are slow)
    epsilon_decay_steps: int = 2001  # ε decays linearly 1 -> epsilon_final over these env steps
    target_update_period: int = 1  # gradient steps between copies of the Q target (1: online network)
    eval_envs: int = 8  # environments of `evaluate`
    eval_steps: int = 1000  # batched steps of `evaluate` after every update; 0: no evaluation

    def __post_init__(self):
        for name in (
            "num_envs", "total_env_steps", "steps_per_update", "updates_per_step", "batch_size", "frame_stack",
            "n_step", "spr_steps", "num_atoms", "epsilon_decay_steps", "target_update_period", "eval_envs",
        ):  # fmt: skip
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"SPRConfig.{name} must be a positive int, got {value!r}.")
        for name in ("learning_starts", "capacity", "shift_pad", "eval_steps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"SPRConfig.{name} must be a non-negative int, got {value!r}.")
        if self.encoder not in ("auto", *ENCODERS):
            raise ConfigError(f"SPRConfig.encoder must be one of {('auto', *ENCODERS)}, got {self.encoder!r}.")
        if self.num_updates < 1:
            raise ConfigError(
                f"SPRConfig.total_env_steps={self.total_env_steps} is less than one update "
                f"(num_envs * steps_per_update = {self.env_steps_per_update})."
            )
        if self.replay_capacity < self.num_envs * (self.sequence_length + 1):
            raise ConfigError(f"SPRConfig.capacity={self.capacity} cannot hold one sequence of {self.sequence_length} steps per env.")
        if self.conv_impl not in CONV_IMPLS:
            raise ConfigError(f"SPRConfig.conv_impl must be one of {CONV_IMPLS}, got {self.conv_impl!r}.")
        if self.v_max <= 0:
            raise ConfigError(f"SPRConfig.v_max must be positive, got {self.v_max!r}.")

    @property
    def env_steps_per_update(self) -> int:
        return self.num_envs * self.steps_per_update

    @property
    def num_updates(self) -> int:
        return self.total_env_steps // self.env_steps_per_update

    @property
    def replay_capacity(self) -> int:
        return self.capacity or self.total_env_steps

    @property
    def sequence_length(self) -> int:
        """Steps per sampled sequence: the stack's older frames, then max(n, K) steps and one more frame."""
        return self.frame_stack - 1 + max(self.n_step, self.spr_steps) + 1

    @property
    def first_learning_step(self) -> int:
        """Env steps after which every batched step learns: `learning_starts`, or once each env's row holds a sequence."""
        return max(self.learning_starts, self.num_envs * self.sequence_length)

    @property
    def replay_ratio(self) -> float:
        """Gradient steps per environment step (the paper: 2)."""
        return self.updates_per_step / self.num_envs

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> SPRConfig:
        check_known_keys("SPRConfig", values, (f.name for f in dataclasses.fields(cls)))
        return cls(**values)


class SPRHyperparams(flax.struct.PyTreeNode):
    """Continuous hyperparameters (pytree leaves: traced, vmapped, swept). Defaults: the paper's code."""

    learning_rate: float = 1e-4
    adam_eps: float = 1.5e-4
    gamma: float = 0.99
    max_grad_norm: float = 10.0
    spr_weight: float = 5.0  # λ in the code's scale (2 - 2cos per step; the paper's λ = 2 on -cos)
    target_momentum: float = 1.0  # τ, weight on the online parameters per step (1.0 with augmentation, 0.01 without)
    priority_exponent: float = 0.5  # α
    importance_beta_start: float = 0.4  # β, annealed linearly to 1 over the run
    epsilon_final: float = 0.0  # ε after the decay (noisy nets explore)
    epsilon_eval: float = 0.001


class SPRState(flax.struct.PyTreeNode):
    """Everything a run needs to continue exactly."""

    params: Any
    target_params: Any  # EMA of params: the SPR target encoder and projection
    q_target_params: Any  # the Q-learning target (a copy every `target_update_period` gradient steps)
    opt_state: Any
    replay: Any  # flashbax prioritised trajectory buffer state
    env_state: Any  # None for a host-driven agent
    obs: Array  # [num_envs, *obs_shape] to act on next (a placeholder for a host-driven agent)
    key: PRNGKeyArray
    env_steps: Array  # int32 [], environment steps taken (all envs)
    grad_steps: Array  # int32 [], gradient steps taken


@dataclasses.dataclass(frozen=True, eq=False)
class SPR:
    """The static parts: config, training and evaluation envs, network, replay layout, layout hook."""

    config: SPRConfig
    env: envs.Env | None
    eval_env: envs.Env | None
    network: SPRNetwork
    replay: SequenceReplay
    frame_shape: tuple[int, ...]  # [H, W, C] of one stored frame
    frame_scale: float  # network input = frame / frame_scale
    constrain: Constrain = unconstrained

    @classmethod
    def build(
        cls,
        config: SPRConfig,
        *,
        constrain: Constrain = unconstrained,
        spaces: tuple[tuple[int, ...], int] | None = None,
        base_env: envs.Env | None = None,
    ) -> SPR:
        """The env (`config.env`, or `base_env` in its place), or `spaces = (frame_shape, num_actions)`
        for host-driven envs."""
        env = eval_env = None
        if spaces is None:
            if not config.env and base_env is None:
                raise ConfigError("SPRConfig.env is empty: name a JAX env, or build with spaces=(frame_shape, num_actions).")
            if config.frame_stack != 1:
                raise ConfigError("SPRConfig.frame_stack must be 1 with a JAX env (its observation is the state).")
            with jax.ensure_compile_time_eval():
                base = envs.make(config.env) if base_env is None else base_env
                env = envs.wrap_for_training(base, config.num_envs)
                eval_env = envs.wrap_for_training(base, config.eval_envs)
            if not env.discrete_actions or len(env.observation_shape) != 3:
                raise ConfigError(f"SPR needs discrete actions and [H, W, C] observations; {config.env!r} has not.")
            frame_shape, num_actions = env.observation_shape, env.action_size
            frame_scale = 255.0 if float(base.observation_space.high.max()) > 1.0 else 1.0
        else:
            frame_shape, num_actions = tuple(spaces[0]), int(spaces[1])
            frame_scale = 255.0
        encoder = config.encoder if config.encoder != "auto" else ("nature" if frame_shape[0] >= 84 else "minatar")
        network = SPRNetwork(
            num_actions=num_actions,
            num_atoms=config.num_atoms,
            encoder_layers=ENCODERS[encoder],
            hidden=config.hidden,
            dueling=config.dueling,
            noisy_sigma0=0.5 if config.noisy else 0.0,
            conv_impl=conv_impl_for_backend(config.conv_impl),
        )
        replay = SequenceReplay(config.replay_capacity, config.num_envs, config.batch_size, config.sequence_length)
        return cls(config, env, eval_env, network, replay, tuple(frame_shape), frame_scale, constrain)

    @property
    def num_updates(self) -> int:
        return self.config.num_updates

    @property
    def env_steps_per_update(self) -> int:
        return self.config.env_steps_per_update

    @property
    def data_parallel_sizes(self) -> dict[str, int]:
        """The rows of each sampled batch are split over devices (the buffer and envs are replicated)."""
        return {"batch_size": self.config.batch_size}

    @property
    def support(self) -> Array:
        return categorical_support(self.config.num_atoms, -self.config.v_max, self.config.v_max)

    def init(self, hparams: SPRHyperparams, key: PRNGKeyArray) -> SPRState:
        """Parameters (targets equal to them), Adam, an empty buffer, and the envs (if JAX envs)."""
        key, key_params, key_noise, key_env = jax.random.split(key, 4)
        stacked = (*self.frame_shape[:-1], self.frame_shape[-1] * self.config.frame_stack)
        params = self.network.init(
            {"params": key_params, "noise": key_noise},
            jnp.zeros((1, *stacked)),
            jnp.zeros((1,), jnp.int32),
            method=SPRNetwork.initialize,
        )
        example = Step(jnp.zeros(self.frame_shape, jnp.uint8), jnp.zeros((), jnp.int32), jnp.zeros(()), jnp.zeros((), bool))
        if self.env is None:
            env_state, obs = None, jnp.zeros((self.config.num_envs, *stacked), jnp.uint8)
        else:
            env_state, timestep = self.env.reset(key_env)
            obs = timestep.obs
        return SPRState(
            params=params,
            target_params=jax.tree.map(jnp.copy, params),  # own buffers: a donated state must not alias them
            q_target_params=jax.tree.map(jnp.copy, params),
            opt_state=make_optimizer(hparams).init(params),
            replay=self.replay.init(example),
            env_state=env_state,
            obs=obs,
            key=key,
            env_steps=jnp.zeros((), jnp.int32),
            grad_steps=jnp.zeros((), jnp.int32),
        )

    def update(self, hparams: SPRHyperparams, state: SPRState) -> tuple[SPRState, dict[str, Array]]:
        """`steps_per_update` batched env steps, each followed by the gradient steps once learning starts.

        Metrics: `episode/return` and `episode/count` (training episodes that ended, ε-greedy with
        noise), the loss parts averaged over the gradient steps taken (`loss/c51`, `loss/spr`,
        `loss/total`; 0 in an update before learning starts, see `learn/gradient_steps`), `spr/cosine` (mean cosine of predicted and target latents, unmasked steps),
        `q/mean`, `optim/grad_norm`, `optim/learning_rate`, `explore/epsilon`, `replay/beta`,
        `learn/gradient_steps` taken in this update, and (when `eval_steps > 0`) `eval/return` and
        `eval/count` of `evaluate` after the update (ε = epsilon_eval, no noise: the paper's
        evaluation policy).
        """
        key, key_eval = jax.random.split(state.key)
        state, (step_info, learned) = jax.lax.scan(
            functools.partial(_env_and_learn_step, self, hparams), state.replace(key=key), None, length=self.config.steps_per_update
        )
        taken = learned.pop("taken")
        metrics = {name: (value * taken).sum() / jnp.maximum(taken.sum(), 1) for name, value in learned.items()}
        metrics["episode/return"] = episode_mean(step_info["episode_return"], step_info["done"])
        metrics["episode/count"] = step_info["done"].sum().astype(jnp.float32)
        metrics["explore/epsilon"] = epsilon_at(self.config, hparams, state.env_steps)
        metrics["replay/beta"] = beta_at(self.config, hparams, state.env_steps)
        metrics["optim/learning_rate"] = jnp.asarray(hparams.learning_rate, jnp.float32)
        metrics["learn/gradient_steps"] = taken.sum().astype(jnp.float32) * self.config.updates_per_step
        if self.config.eval_steps:
            evaluation = self.evaluate(hparams, state.params, key_eval)
            metrics |= {"eval/return": evaluation["episode/return"], "eval/count": evaluation["episode/count"]}
        return state, metrics

    def train(self, hparams: SPRHyperparams, key: PRNGKeyArray) -> tuple[SPRState, dict[str, Array]]:
        """A whole run: `init`, then `num_updates` updates in one `lax.scan`."""
        return jax.lax.scan(lambda state, _: self.update(hparams, state), self.init(hparams, key), None, length=self.num_updates)

    def act(self, hparams: SPRHyperparams, params, obs: Array, key: PRNGKeyArray, *, epsilon, noise: bool) -> Array:
        """ε-greedy on the mean of the C51 distribution: `obs [N, H, W, C]` raw frames -> actions `[N]` int32."""
        key_noise, key_explore, key_random = jax.random.split(key, 3)
        logits = self.network.apply(
            params, obs.astype(jnp.float32) / self.frame_scale, noise=noise, rngs={"noise": key_noise}, method=_q_logits_of
        )
        greedy = jnp.argmax(categorical_q_values(logits, self.support), axis=-1).astype(jnp.int32)
        random = jax.random.randint(key_random, greedy.shape, 0, self.network.num_actions)
        return jnp.where(jax.random.uniform(key_explore, greedy.shape) < epsilon, random, greedy)

    def observe(self, state: SPRState, frames: Array, actions: Array, rewards: Array, dones: Array) -> SPRState:
        """Add one step per env to the buffer (`frames [num_envs, *frame_shape]`: the newest frame acted on)."""
        if tuple(frames.shape) != (self.config.num_envs, *self.frame_shape):
            raise ValueError(f"frames must have shape {(self.config.num_envs, *self.frame_shape)}, got {tuple(frames.shape)}.")
        step = Step(frames.astype(jnp.uint8), actions.astype(jnp.int32), rewards.astype(jnp.float32), dones.astype(bool))
        return state.replace(replay=self.replay.add(state.replay, step), env_steps=state.env_steps + self.config.num_envs)

    def end_episodes(self, state: SPRState) -> SPRState:
        """Mark each env's newest stored step as an episode end (host envs restarted, e.g. after a resume)."""
        return state.replace(replay=self.replay.end_episodes(state.replay))

    def learn(self, hparams: SPRHyperparams, state: SPRState) -> tuple[SPRState, dict[str, Array]]:
        """`updates_per_step` gradient steps; metrics averaged over them."""
        state, metrics = jax.lax.scan(
            lambda s, _: _gradient_step(self, hparams, s), state, None, length=self.config.updates_per_step
        )
        return state, jax.tree.map(jnp.mean, metrics)

    def evaluate(self, hparams: SPRHyperparams, params, key: PRNGKeyArray) -> dict[str, Array]:
        """`eval_steps` steps of `eval_envs` fresh envs, ε = epsilon_eval, no noise, no augmentation.

        Returns `episode/return` (mean over the episodes that ended) and `episode/count`.
        """
        key_reset, key_steps = jax.random.split(key)
        env_state, timestep = self.eval_env.reset(key_reset)

        def step(carry, key):
            env_state, obs = carry
            key_act, key_env = jax.random.split(key)
            action = self.act(hparams, params, obs, key_act, epsilon=hparams.epsilon_eval, noise=False)
            env_state, ts = self.eval_env.step(env_state, action, key_env)
            return (env_state, ts.obs), (ts.info["episode_return"], ts.done)

        _, (returns, dones) = jax.lax.scan(step, (env_state, timestep.obs), jax.random.split(key_steps, self.config.eval_steps))
        return {"episode/return": episode_mean(returns, dones), "episode/count": dones.sum().astype(jnp.float32)}


def _q_logits_of(network: SPRNetwork, obs, *, noise: bool):
    return network.q_logits(network.encode(obs), noise=noise)


def make_optimizer(hparams: SPRHyperparams) -> optax.GradientTransformation:
    """Global-norm clipping, then Adam with the paper's eps (built from traced hyperparameters)."""
    return optax.chain(
        optax.clip_by_global_norm(hparams.max_grad_norm), optax.adam(hparams.learning_rate, eps=hparams.adam_eps)
    )


def epsilon_at(config: SPRConfig, hparams: SPRHyperparams, env_steps) -> Array:
    """Linear 1 -> epsilon_final over `epsilon_decay_steps` env steps, then constant."""
    fraction = jnp.minimum(env_steps / config.epsilon_decay_steps, 1.0)
    return 1.0 + fraction * (hparams.epsilon_final - 1.0)


def beta_at(config: SPRConfig, hparams: SPRHyperparams, env_steps) -> Array:
    """The importance exponent β, linear from `importance_beta_start` to 1 over the run."""
    fraction = jnp.minimum(env_steps / config.total_env_steps, 1.0)
    return hparams.importance_beta_start + fraction * (1.0 - hparams.importance_beta_start)


def _env_and_learn_step(agent: SPR, hparams: SPRHyperparams, state: SPRState, _):
    """One batched env step (act, step, store), then the gradient steps if learning has started."""
    key, key_act, key_env = jax.random.split(state.key, 3)
    epsilon = epsilon_at(agent.config, hparams, state.env_steps)
    action = agent.act(hparams, state.params, state.obs, key_act, epsilon=epsilon, noise=agent.config.noisy)
    env_state, ts = agent.env.step(state.env_state, action, key_env)
    state = agent.observe(state, state.obs, action, ts.reward, ts.done).replace(env_state=env_state, obs=ts.obs, key=key)

    def learn(state):
        state, metrics = agent.learn(hparams, state)
        return state, {**metrics, "taken": jnp.ones(())}

    def wait(state):
        return state, {**jax.tree.map(jnp.zeros_like, _metrics_shape(agent, hparams, state)), "taken": jnp.zeros(())}

    state, learned = jax.lax.cond(state.env_steps >= agent.config.first_learning_step, learn, wait, state)
    return state, ({"episode_return": ts.info["episode_return"], "done": ts.done}, learned)


def _metrics_shape(agent: SPR, hparams: SPRHyperparams, state: SPRState) -> dict[str, Array]:
    """The metrics of `learn`, as zero-cost shapes (for the branch that does not learn)."""
    shapes = jax.eval_shape(lambda s: agent.learn(hparams, s)[1], state)
    return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)


def _gradient_step(agent: SPR, hparams: SPRHyperparams, state: SPRState) -> tuple[SPRState, dict[str, Array]]:
    """Sample, compute the loss and its gradient, step Adam, move the targets, reset the priorities."""
    key, key_sample, key_loss = jax.random.split(state.key, 3)
    sample = agent.replay.sample(state.replay, key_sample)
    steps = agent.constrain(sample.steps)
    weights = importance_weights(
        sample.probabilities, agent.replay.num_items(state.replay), beta=beta_at(agent.config, hparams, state.env_steps)
    )
    grad_fn = jax.grad(functools.partial(_loss, agent, hparams), has_aux=True)
    grads, (aux, priorities) = grad_fn(state.params, state.target_params, state.q_target_params, steps, weights, key_loss)
    updates, opt_state = make_optimizer(hparams).update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    grad_steps = state.grad_steps + 1
    target_params = optax.incremental_update(params, state.target_params, hparams.target_momentum)
    copy_q_target = grad_steps % agent.config.target_update_period == 0
    q_target_params = jax.tree.map(lambda new, old: jnp.where(copy_q_target, new, old), params, state.q_target_params)
    replay = agent.replay.set_priorities(state.replay, sample.indices, priorities, exponent=hparams.priority_exponent)
    aux["optim/grad_norm"] = optax.tree.norm(grads)
    next_state = state.replace(
        params=params,
        target_params=target_params,
        q_target_params=q_target_params,
        opt_state=opt_state,
        replay=replay,
        key=key,
        grad_steps=grad_steps,
    )
    return next_state, aux


def _augmented(agent: SPR, key: PRNGKeyArray, obs: Array) -> Array:
    """Random shift + intensity on `[..., H, W, C]` (leading axes flattened for the draw), or `obs` itself."""
    if not agent.config.augment:
        return obs
    flat = obs.reshape(-1, *obs.shape[-3:])
    return augment(key, flat, pad=agent.config.shift_pad, intensity_scale=0.05).reshape(obs.shape)


def _loss(agent: SPR, hparams: SPRHyperparams, params, target_params, q_target_params, steps: Step, weights, key):
    """Σ_b w_b (C51_b + λ SPR_b) / B, and the per-sequence C51 loss as the new priorities (SPR, Sec. 2.2).

    The sequence's anchor is position `t = frame_stack - 1`: the stack ending there is the
    observation, `n_step` rewards follow it, the stack at `t + n` bootstraps, and the stacks at
    `t + 1 .. t + K` are the SPR targets.
    """
    config = agent.config
    t, n, k = config.frame_stack - 1, config.n_step, config.spr_steps
    key_noise, key_next_online, key_next_target, *keys_aug = jax.random.split(key, 6)
    frames = steps.frame.astype(jnp.float32) / agent.frame_scale
    obs, next_obs = (stacked_frames(frames, steps.done, (j,), config.frame_stack)[:, 0] for j in (t, t + n))
    apply = functools.partial(agent.network.apply, method=_q_logits_of)

    latent = agent.network.apply(params, _augmented(agent, keys_aug[0], obs), method=SPRNetwork.encode)
    logits = agent.network.apply(params, latent, noise=config.noisy, rngs={"noise": key_noise}, method=SPRNetwork.q_logits)
    taken = logits[jnp.arange(logits.shape[0]), steps.action[:, t]]  # [B, N] at the actions taken
    next_obs = jax.lax.stop_gradient(_augmented(agent, keys_aug[1], next_obs))
    next_target = apply(q_target_params, next_obs, noise=config.noisy, rngs={"noise": key_next_target})
    next_online = apply(params, next_obs, noise=config.noisy, rngs={"noise": key_next_online}) if config.double_q else next_target
    returns, discounts = n_step_returns(steps.reward[:, t : t + n], steps.done[:, t : t + n], gamma=hparams.gamma)
    c51 = categorical_double_q_loss(
        taken, jax.lax.stop_gradient(next_online), jax.lax.stop_gradient(next_target), returns, discounts,
        v_min=-config.v_max, v_max=config.v_max,
    )  # fmt: skip
    aux = {"loss/c51": c51.mean(), "q/mean": (jax.nn.softmax(taken) @ agent.support).mean()}
    spr = jnp.zeros_like(c51)
    if config.use_spr:
        predictions, targets = _spr_latents(agent, params, target_params, latent, steps, frames, keys_aug[2])
        alive = jnp.cumprod(1 - steps.done[:, t : t + k].astype(jnp.float32), axis=1)  # no episode end before t + j
        spr = spr_loss(predictions, targets, alive)
        aux["loss/spr"] = spr.mean()
        aux["spr/cosine"] = spr_cosine(predictions, targets, alive).mean()
    total = (weights * (c51 + hparams.spr_weight * spr)).mean()
    aux["loss/total"] = total
    return total, (aux, jax.lax.stop_gradient(c51))


def _spr_latents(agent: SPR, params, target_params, latent, steps: Step, frames, key) -> tuple[Array, Array]:
    """Predictions `[B, K, D]` from the unrolled transition model and targets `[B, K, D]` from the target encoder."""
    config = agent.config
    t, k = config.frame_stack - 1, config.spr_steps
    predictions = []
    for j in range(k):  # unrolled: a rolled scan over convolutions is several times slower on CPU
        latent = agent.network.apply(params, latent, steps.action[:, t + j], method=SPRNetwork.transition)
        projection = agent.network.apply(params, latent, method=SPRNetwork.project)
        predictions.append(agent.network.apply(params, projection, method=SPRNetwork.predict))
    future = stacked_frames(frames, steps.done, tuple(range(t + 1, t + k + 1)), config.frame_stack)  # [B, K, H, W, C]
    future = _augmented(agent, key, future).reshape(-1, *future.shape[2:])
    target_latent = agent.network.apply(target_params, future, method=SPRNetwork.encode)
    targets = agent.network.apply(target_params, target_latent, method=SPRNetwork.project)
    return jnp.stack(predictions, axis=1), jax.lax.stop_gradient(targets.reshape(*frames.shape[:1], k, -1))
