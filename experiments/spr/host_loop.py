"""The host side of SPR on Atari 100k (`experiments.spr.atari`): jitted per-seed programs and the training loop.

ale-py's emulators are not jittable, so the games cannot run inside a compiled program: a Python loop on
the host steps them and calls jitted programs to act and learn. The command line, the checks of
`--resume`, the evaluation and the summary are `experiments.spr.atari`'s.

Seeds train together: one `AtariEnvs` of `seeds` games (env i is seed i's), the seeds' agent states
stacked on a leading axis, and per env step one `jit(vmap(act))` (ε from `epsilon_at`, noisy
nets on), one `jit(vmap(observe))` (the newest frame of the observation acted on, the action, the
clipped reward and `terminal | truncated` as the learner's episode end) and, once `learning_starts`
steps are stored and the buffer can sample a sequence (the agent's own rule), one
`jit(vmap(learn))`; observe and learn donate the state, so the buffer is updated in place.

Checkpoints: after each of about `iterations` iterations, an Orbax checkpoint (`jaxrl_si.checkpoint`,
verified by digest on restore) of the stacked agent state (parameters, both targets, optimiser,
replay buffer with priorities, key, counters), the metric history and the host counters. `--resume`
restores the latest complete one: the learner state, buffer included, continues exactly, but the
ALE emulators' states are NOT in the checkpoint: every env starts a new game, and the game each
seed was playing ends in its buffer at the last stored step (its `done` set, as a time limit would;
otherwise n-step returns and frame stacks would run from the old game into the new one).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import pathlib
import time
from typing import TYPE_CHECKING, Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import SingleDeviceSharding
from tqdm import tqdm

from jaxrl_si import checkpoint as ckpt
from jaxrl_si.agents.spr import SPR, SPRHyperparams, epsilon_at
from jaxrl_si.envs import atari
from jaxrl_si.loop import updates_per_iteration
from jaxrl_si.sinks import MetricWriter, metric_row

if TYPE_CHECKING:
    from experiments.spr.atari import RunConfig

FRAME_SHAPE = (84, 84, 1)  # one stored grey frame (AtariEnvs' frames are always 84x84)


class SeedKeys(NamedTuple):
    """Typed PRNG keys `[S]`, one per seed, named by purpose."""

    init: jax.Array
    act: jax.Array  # folded with the env step to act
    evaluate: jax.Array  # folded with the evaluation step


def seed_keys(run: RunConfig, game: str) -> SeedKeys:
    """Seed i's keys: `fold_in(purpose key, i)`, so that a seed's draws do not depend on the seed count."""
    game_key = jax.random.fold_in(jax.random.key(run.seed), list(atari.ATARI_100K_GAMES).index(game))
    per_seed = jax.vmap(jax.random.fold_in, in_axes=(None, 0))
    keys = SeedKeys(*(per_seed(key, jnp.arange(run.seeds)) for key in jax.random.split(game_key, 3)))
    return jax.device_put(keys, _device())


def _seed_actions(agent: SPR, hparams: SPRHyperparams, params, step, obs, key, *, training: bool):
    """One seed's actions `[N]` on `obs [N, 84, 84, stack]`: ε-greedy with noise (training) or the evaluation policy."""
    epsilon = epsilon_at(agent.config, hparams, step) if training else hparams.epsilon_eval
    return agent.act(hparams, params, obs, jax.random.fold_in(key, step), epsilon=epsilon, noise=training)


@dataclasses.dataclass(frozen=True, eq=False)
class SeedPrograms:
    """One agent's methods over a leading seed axis `S` (states, keys, observations), jitted."""

    agent: SPR

    @functools.cached_property
    def init(self):  # (hparams, keys [S]) -> state [S]
        return jax.jit(jax.vmap(self.agent.init, in_axes=(None, 0)))

    @functools.cached_property
    def act(self):  # (hparams, params [S], env_steps [S], obs [S, 1, ...], keys [S]) -> actions [S, 1]
        return jax.jit(jax.vmap(functools.partial(_seed_actions, self.agent, training=True), in_axes=(None, 0, 0, 0, 0)))

    @functools.cached_property
    def act_eval(self):  # (hparams, params [S], step, obs [S, E, ...], keys [S]) -> actions [S, E]
        return jax.jit(jax.vmap(functools.partial(_seed_actions, self.agent, training=False), in_axes=(None, 0, None, 0, 0)))

    @functools.cached_property
    def observe(self):  # (state [S], frames [S, 1, 84, 84, 1], actions, rewards, dones [S, 1]) -> state
        return jax.jit(jax.vmap(self.agent.observe), donate_argnums=0)

    @functools.cached_property
    def learn(self):  # (hparams, state [S]) -> (state, metrics [S])
        return jax.jit(jax.vmap(self.agent.learn, in_axes=(None, 0)), donate_argnums=1)


@dataclasses.dataclass
class Progress:
    """Host-side counters of one game's training, saved as JSON with each checkpoint."""

    iteration: int = 0
    env_steps: int = 0  # per seed
    gradient_steps: int = 0  # per seed
    restarts: int = 0  # resumes so far (each restart's envs get their own seed)
    train_seconds: float = 0.0  # wall time of training: compilation, steps, metrics, checkpoints
    compile_seconds: float = 0.0
    loop_seconds: float = 0.0  # time in env steps (act, env, observe, learn) only
    learn_seconds: float = 0.0  # time in learn calls, waited for
    learn_calls: int = 0
    scores: list = dataclasses.field(default_factory=list)  # [S][games] unclipped training game scores


@dataclasses.dataclass(frozen=True)
class GameRun:
    """One game's training (and evaluation, unless the run stopped early)."""

    agent: SPR
    state: Any  # stacked SPRState [S, ...]: the one saved in the last checkpoint
    progress: Progress
    history: dict[str, np.ndarray]  # metric -> [S, rows]
    num_iterations: int
    eval_scores: np.ndarray | None = None  # [S, eval_episodes]
    eval_seconds: float = 0.0


def env_config(run: RunConfig, game: str, *, num_envs: int, seed: int) -> atari.AtariConfig:
    return atari.AtariConfig(
        game, num_envs=num_envs, stack=run.config.frame_stack, noop_max=run.noop_max,
        max_episode_steps=run.max_episode_steps, seed=seed,
    )  # fmt: skip


def env_seed(run: RunConfig, game: str, stream: int) -> int:
    """A seed for the envs of `stream` (a restart count, or -1 for evaluation), apart for each run seed and game."""
    entropy = [run.seed, list(atari.ATARI_100K_GAMES).index(game), stream + 1]
    return int(np.random.SeedSequence(entropy).generate_state(1)[0] % 2**30)


def train_game(run: RunConfig, game: str) -> GameRun:
    """Train `run.seeds` agents on `game` until the end or `stop_after_iterations`, checkpointing every iteration."""
    started = time.perf_counter()
    rows = updates_per_iteration(run.config.num_updates, run.iterations)  # metric rows per iteration
    num_iterations = run.config.num_updates // rows
    stop = min(num_iterations, run.stop_after_iterations or num_iterations)
    with atari.AtariEnvs(env_config(run, game, num_envs=run.seeds, seed=0)) as envs:
        programs = SeedPrograms(SPR.build(run.config, spaces=(FRAME_SHAPE, envs.num_actions)))
        # synchronous saves: the state is donated right after each one
        with ckpt.Checkpointer(run.run_dir / game / "checkpoints", max_to_keep=2, async_save=False) as saver:
            state, progress, history = _starting_point(run, game, programs, saver, num_iterations)
            if progress.restarts and progress.iteration < stop:
                state = _end_stored_episodes(programs.agent, state)
            obs = envs.reset(seed=env_seed(run, game, progress.restarts))
            if obs.shape != (run.seeds, *FRAME_SHAPE[:2], run.config.frame_stack) or obs.dtype != np.uint8:
                raise ValueError(f"AtariEnvs returned {obs.dtype} {obs.shape}; the agents need uint8 [seeds, 84, 84, frame_stack]")
            session = _Session(run, envs, programs, state, progress, obs, clock=started)
            if progress.iteration < stop:
                session.compile()
            history = session.train(saver, history, rows, (stop, num_iterations), run.run_dir / game)
    return GameRun(programs.agent, session.state, session.progress, history, num_iterations)


def _starting_point(run: RunConfig, game: str, programs: SeedPrograms, saver: ckpt.Checkpointer, num_iterations: int):
    """`(state, progress, history)`: restored (with `--resume` and a checkpoint; newer, corrupt steps deleted) or fresh."""
    restored = restore_latest(run, game, programs, saver) if run.resume else None
    if restored is None:
        # committed to the device, as a restored state is: fresh and resumed runs then compile the same programs
        return jax.device_put(programs.init(run.hparams, seed_keys(run, game).init), _device()), Progress(), {}
    state, progress, history = restored
    saver.delete_steps_after(progress.iteration)
    progress.restarts += 1
    print(
        f"resumed {game} from the checkpoint of iteration {progress.iteration}/{num_iterations}: the learner state "
        "(parameters, optimiser, replay buffer) continues exactly; the Atari emulators are not in the checkpoint, "
        "so every env starts a new game (the interrupted games end in the buffer)"
    )
    return state, progress, history


def restore_latest(run: RunConfig, game: str, programs: SeedPrograms, saver: ckpt.Checkpointer):
    """`(state, progress, history)` of the latest good checkpoint of `game` (as saved), or None if there is none."""
    target = jax.eval_shape(programs.init, run.hparams, seed_keys(run, game).init)
    restored = saver.restore_latest(ckpt.abstract_target(target, _device()), config=_checkpoint_config(run, game))
    if restored is None:
        return None
    return restored.state, Progress(**restored.extra), restored.history


def _device() -> SingleDeviceSharding:
    return SingleDeviceSharding(jax.devices()[0])


def _checkpoint_config(run: RunConfig, game: str) -> dict:
    return {"game": game, **{name: value for name, value in run.identity.items() if name != "games"}}


def _end_stored_episodes(agent: SPR, state):
    """Each seed's newest stored step marked `done`: its game was cut by the restart (the envs start new games)."""
    return jax.jit(jax.vmap(agent.end_episodes))(state)


class _Session:
    """One game's training loop on the host: the envs, the stacked state, the counters."""

    def __init__(self, run: RunConfig, envs: atari.AtariEnvs, programs: SeedPrograms, state, progress: Progress, obs, *, clock: float):
        self.run, self.envs, self.programs, self.keys = run, envs, programs, seed_keys(run, envs.config.game)
        self.state, self.progress, self.obs = state, progress, obs
        self.clock = clock  # perf_counter when train_seconds was last brought up to date
        if not progress.scores:
            progress.scores = [[] for _ in range(run.seeds)]
        config = run.config
        self.learning_starts = config.first_learning_step
        self.learn_names = sorted(jax.eval_shape(programs.learn, run.hparams, state)[1])

    def compile(self) -> None:
        """Compile act, observe and learn ahead of the loop, so that its timings hold no compilation."""
        started, s, hparams = time.perf_counter(), self.run.seeds, self.run.hparams
        self.programs.act.lower(hparams, self.state.params, self.state.env_steps, self.obs[:, None], self.keys.act).compile()
        step = [np.zeros((s, 1, *shape), dtype) for shape, dtype in ((FRAME_SHAPE, np.uint8), ((), np.int32), ((), np.float32), ((), bool))]
        self.programs.observe.lower(self.state, *step).compile()
        self.programs.learn.lower(hparams, self.state).compile()
        self.progress.compile_seconds += time.perf_counter() - started

    def train(self, saver: ckpt.Checkpointer, history: dict, rows: int, iterations: tuple[int, int], game_dir: pathlib.Path) -> dict:
        """Iterations `progress.iteration + 1 .. stop` of `rows` metric rows each, a checkpoint after each;
        `iterations = (stop, num_iterations)`. Returns the metric history."""
        run, progress, (stop, num_iterations) = self.run, self.progress, iterations
        writer = MetricWriter(game_dir, group="seed", resume_env_steps=progress.env_steps if progress.restarts else None)
        writer.write(_rows(history, rows, run.config.steps_per_update), tensorboard=False)
        bar = tqdm(total=run.env_steps, initial=progress.env_steps, unit="step", unit_scale=True, desc=game_dir.name)
        config = _checkpoint_config(run, game_dir.name)
        for iteration in range(progress.iteration, stop):
            for _ in range(rows):
                metrics = self._row(bar)
                history = {k: np.column_stack([history[k], v]) if k in history else v[:, None] for k, v in metrics.items()}
                writer.write(_rows(history, rows, run.config.steps_per_update, last=True))
                latest = [scores[-1] for scores in progress.scores if scores]  # each seed's latest training game
                writer.write_summary(progress.env_steps, {"episode/return": float(np.mean(latest)) if latest else math.nan})
                bar.set_postfix(it=f"{iteration + 1}/{num_iterations}", score=f"{np.mean(latest):.1f}" if latest else "-")
            progress.iteration = iteration + 1
            self._tick()
            saver.save(progress.iteration, self.state, config=config, history=history, extra=dataclasses.asdict(progress))
        bar.close()
        writer.close()
        self._tick()
        return history

    def _tick(self) -> None:
        now = time.perf_counter()
        self.progress.train_seconds += now - self.clock
        self.clock = now

    def _row(self, bar: tqdm) -> dict[str, np.ndarray]:
        """`steps_per_update` env steps of every seed; the row's metrics `{name: [S]}`."""
        started, steps_before, grads_before = time.perf_counter(), self.progress.env_steps, self.progress.gradient_steps
        learned, ended = [], [[] for _ in range(self.run.seeds)]
        for _ in range(self.run.config.steps_per_update):
            metrics, step = self._env_step()
            if metrics is not None:
                learned.append(metrics)
            for i in np.flatnonzero(step.episode_end):
                ended[i].append(float(step.episode_score[i]))
                self.progress.scores[i].append(float(step.episode_score[i]))
            bar.update(1)
        seconds = time.perf_counter() - started
        s, nan = self.run.seeds, np.full(self.run.seeds, np.nan)
        learned = jax.device_get(learned)
        row = {name: np.mean([m[name] for m in learned], axis=0) if learned else nan for name in self.learn_names}
        row["episode/return"] = np.array([np.mean(e) if e else np.nan for e in ended])
        row["episode/count"] = np.array([len(e) for e in ended], np.float64)
        row["explore/epsilon"] = np.full(s, float(epsilon_at(self.run.config, self.run.hparams, self.progress.env_steps)))
        row["learn/gradient_steps"] = np.full(s, float(self.progress.gradient_steps - grads_before))
        row["perf/env_steps_per_s"] = np.full(s, s * (self.progress.env_steps - steps_before) / seconds)
        row["perf/gradient_steps_per_s"] = np.full(s, s * (self.progress.gradient_steps - grads_before) / seconds)
        return row

    def _env_step(self):
        """Act, step the games, store the step and learn once learning has started; `(learn metrics or None, HostStep)`."""
        started, hparams, progress = time.perf_counter(), self.run.hparams, self.progress
        actions = np.asarray(self.programs.act(hparams, self.state.params, self.state.env_steps, self.obs[:, None], self.keys.act))
        step = self.envs.step(actions[:, 0])
        dones = step.terminal | step.truncated  # the learner's episode end: life loss, game over, time limit
        self.state = self.programs.observe(self.state, self.obs[:, None, ..., -1:], actions, step.reward[:, None], dones[:, None])
        self.obs = step.obs
        progress.env_steps += 1
        metrics = None
        if progress.env_steps >= self.learning_starts:
            learn_started = time.perf_counter()
            self.state, metrics = self.programs.learn(hparams, self.state)
            jax.block_until_ready(metrics)  # the next act waits for it anyway; this times it
            progress.learn_seconds += time.perf_counter() - learn_started
            progress.learn_calls += 1
            progress.gradient_steps += self.run.config.updates_per_step
        progress.loop_seconds += time.perf_counter() - started
        return metrics, step


def _rows(history: dict[str, np.ndarray], rows_per_iteration: int, steps_per_row: int, *, last: bool = False) -> list[dict]:
    """Metric rows (one per seed and row) of the whole `history`, or of its last row only."""
    if not history:
        return []
    seeds, count = next(iter(history.values())).shape
    return [
        metric_row(
            {"seed": seed, "iteration": r // rows_per_iteration + 1, "update": r + 1, "env_steps": (r + 1) * steps_per_row},
            {name: values[seed, r] for name, values in history.items()},
        )
        for r in range(count - 1 if last else 0, count)
        for seed in range(seeds)
    ]
