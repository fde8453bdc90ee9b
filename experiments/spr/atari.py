r"""SPR on Atari 100k, driven from the host: ale-py steps the games, jitted programs act and learn for every seed.

    python -m experiments.spr.atari                                     # Pong, 1 seed, the paper's protocol
    python -m experiments.spr.atari --games Pong Breakout Boxing --seeds 5
    python -m experiments.spr.atari --games Pong --seeds 2 --config.total-env-steps 1250 \
        --config.steps-per-update 250 --config.learning-starts 1000 --eval-episodes 2   # a smoke run: 8 min on a CPU
    python -m experiments.spr.atari --resume                            # continue from the latest checkpoints

Cost on a CPU (2 shared cores, of which the run got one, 2026-11-30): one vmapped gradient step of
2 seeds at batch 32 took 790 ms, so the paper's protocol would take ~22 hours per game and seed;
it is meant for an accelerator. `results.json` reports the extrapolation of each run.

The protocol (Kaiser et al. 2020, as SPR ran it; `jaxrl_si.envs.atari`): per game and seed 100k
agent steps (400k frames), rewards clipped and a life loss terminal for the learner, learning from
step 2000 with 2 gradient steps per env step (`PAPER_ATARI`, `jaxrl_si.agents.spr`); the score is
the mean of `eval_episodes` (100) full games after training, played by the ε = 0.001, noise-free
policy, unclipped, at most 27k steps (108k frames) each; HNS = (score − random) / (human − random).

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
otherwise n-step returns and frame stacks would run from the old game into the new one). A
resume under other settings (game list, seeds, buffer capacity, any learner setting) is refused
with one line naming each difference; a fresh run into a directory that holds checkpoints too.

Writes to `--run-dir`: `config.json`; per game `<game>/metrics.jsonl` and `<game>/tb/` (one row per
`steps_per_update` env steps and seed: `episode/return` of the training games that ended, the learn
metrics averaged, `perf/env_steps_per_s` and `perf/gradient_steps_per_s` of all seeds together),
`<game>/checkpoints/`, `<game>/evaluation.json`; `results.json` and `results.md`: per game and seed
the score, its HNS and SPR's Table 1 scores of SPR, DER and DrQ; per game the wall time, ms per
(vmapped) gradient step, env steps/s and the hours the full protocol would take per seed at the
measured rates; with several games, `aggregate_scores` (mean, median, IQM of HNS with intervals).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import itertools
import json
import math
import pathlib
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import SingleDeviceSharding
from tqdm import tqdm

from experiments import cli
from experiments.spr.aggregate import aggregate_scores, paper_table
from jaxrl_si import checkpoint as ckpt
from jaxrl_si.agents.spr import SPR, SPRConfig, SPRHyperparams, epsilon_at
from jaxrl_si.envs import atari
from jaxrl_si.envs.core import import_backend
from jaxrl_si.errors import ConfigError
from jaxrl_si.loop import updates_per_iteration
from jaxrl_si.sinks import MetricWriter, metric_row

FRAME_SHAPE = (84, 84, 1)  # one stored grey frame (AtariEnvs' frames are always 84x84)
PAPER_ATARI = SPRConfig(
    env="", num_envs=1, frame_stack=4, total_env_steps=100_000, learning_starts=2000, updates_per_step=2, eval_steps=0
)
COMPARED = ("SPR", "DER", "DrQ")  # SPR's Table 1 columns reported next to each score
IDENTITY = ("games", "seeds", "seed", "iterations", "noop_max", "max_episode_steps", "config", "hparams")


@dataclasses.dataclass(frozen=True)
class RunConfig:
    config: SPRConfig = PAPER_ATARI  # each seed's agent: host-driven (env ""), one game (num_envs 1)
    hparams: SPRHyperparams = SPRHyperparams()  # the paper's; ε_eval = 0.001 plays the evaluation games
    games: tuple[str, ...] = ("Pong",)  # Atari 100k games (paper names or ROM ids), trained one after another
    seeds: int = 1  # seeds per game, trained together (one env and one stacked agent state each)
    seed: int = 0  # base seed of the PRNG keys and of the envs
    iterations: int = 10  # about this many checkpoints per game
    resume: bool = False  # continue from the latest complete checkpoints in run_dir
    stop_after_iterations: int = 0  # stop the run once a game has this many iterations checkpointed; 0: never
    eval_episodes: int = 100  # evaluation games per seed (the paper: 100)
    eval_max_steps: int = 27_000  # agent steps per evaluation game (27k = 108k frames)
    eval_envs: int = 10  # evaluation games per seed played at once (capped at eval_episodes, which it must divide)
    noop_max: int = 30  # random no-ops at each reset
    max_episode_steps: int = 27_000  # training time limit per game (an episode end for the learner)
    run_dir: pathlib.Path = pathlib.Path("runs/spr_atari")  # outputs (created)

    def __post_init__(self):
        if self.config.env:
            raise ConfigError(f"--config.env must be empty: the Atari games are stepped on the host, got {self.config.env!r}")
        if self.config.num_envs != 1:
            raise ConfigError("--config.num-envs must be 1: each seed's agent plays one game (--seeds runs seeds together)")
        for name in ("seeds", "iterations", "eval_episodes", "eval_max_steps", "eval_envs", "max_episode_steps"):
            _check_int(name, getattr(self, name), minimum=1)
        for name in ("seed", "stop_after_iterations", "noop_max"):
            _check_int(name, getattr(self, name), minimum=0)
        if not self.games:
            raise ConfigError("--games must name at least one game")
        if self.eval_episodes % self.eval_envs_per_seed:
            raise ConfigError(f"--eval-envs {self.eval_envs} must divide --eval-episodes {self.eval_episodes}")

    @property
    def game_names(self) -> tuple[str, ...]:
        """The games as the papers name them; `ConfigError` (one line, from `main`) for one not among the 26 or named twice."""
        names = tuple(atari.atari_100k_game(game) for game in self.games)
        if len(set(names)) != len(names):
            raise ConfigError(f"--games names a game twice: {list(self.games)}")
        return names

    @property
    def eval_envs_per_seed(self) -> int:
        return min(self.eval_envs, self.eval_episodes)

    @property
    def env_steps(self) -> int:
        """Env steps per game and seed (whole updates of `steps_per_update`, as the agent counts them)."""
        return self.config.num_updates * self.config.steps_per_update


def _check_int(name: str, value, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"--{name.replace('_', '-')} must be an int >= {minimum}, got {value!r}")


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


def main(run: RunConfig) -> dict:
    """Train and evaluate every game; returns `{"results": summary or None if stopped, "games": {game: GameRun}}`."""
    names = run.game_names  # checked here, not in __post_init__: a mistake is then one line, not tyro's box
    import_backend("ale_py", backend="Atari", extra="atari")
    if len(run.games) > 1 and importlib.util.find_spec("rliable") is None:
        raise ConfigError("the aggregates of several games need rliable; install it with: pip install 'jaxrl_si[analysis]'")
    _check_run_dir(run)
    cli.write_run_config(run)
    games = {}
    for game in names:
        print(f"== {game}: {run.seeds} seed(s) x {run.env_steps} env steps, replay ratio {run.config.replay_ratio:g}")
        games[game] = trained = train_game(run, game)
        if trained.progress.iteration < trained.num_iterations:
            print(f"stopped after iteration {trained.progress.iteration}/{trained.num_iterations} of {game}; continue with --resume")
            return {"results": None, "games": games}
        games[game] = _evaluated(run, game, games[game])
    summary = _summarise(run, games)
    print(_markdown(summary), end="")
    return {"results": summary, "games": games}


def _check_run_dir(run: RunConfig) -> None:
    """Before anything is written: a resume must match the saved run; a fresh run must not overwrite checkpoints."""
    saved_path = run.run_dir / "config.json"
    if not run.resume:
        for game in run.game_names:
            checkpoints = run.run_dir / game / "checkpoints"
            if checkpoints.is_dir() and any(checkpoints.iterdir()):
                raise ckpt.ExistingRunError(f"{checkpoints} holds an earlier run's checkpoints; --resume it or choose another --run-dir")
    elif saved_path.exists():
        saved = json.loads(saved_path.read_text())
        saved["games"] = [atari.atari_100k_game(g) for g in saved.get("games", [])]
        ours, theirs = _flat(_identity(run)), _flat({name: saved.get(name) for name in IDENTITY})
        differences = [
            f"{name}: it has {json.dumps(theirs.get(name))}, this run has {json.dumps(ours.get(name))}"
            for name in sorted(set(ours) | set(theirs))
            if json.dumps(ours.get(name)) != json.dumps(theirs.get(name))
        ]
        if differences:
            raise ConfigError(f"--resume: {run.run_dir} holds a run with other settings: " + "; ".join(differences))


def _identity(run: RunConfig) -> dict:
    """The settings a resumed run must share with the checkpointed one, as JSON reads them back."""
    values = dataclasses.asdict(run) | {"games": list(run.game_names)}
    return ckpt.json_value({name: values[name] for name in IDENTITY}, stringify=True)


def _flat(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        flat |= _flat(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value}
    return flat


def _env_config(run: RunConfig, game: str, *, num_envs: int, seed: int) -> atari.AtariConfig:
    return atari.AtariConfig(
        game, num_envs=num_envs, stack=run.config.frame_stack, noop_max=run.noop_max,
        max_episode_steps=run.max_episode_steps, seed=seed,
    )  # fmt: skip


def _env_seed(run: RunConfig, game: str, stream: int) -> int:
    """A seed for the envs of `stream` (a restart count, or -1 for evaluation), apart for each run seed and game."""
    entropy = [run.seed, list(atari.ATARI_100K_GAMES).index(game), stream + 1]
    return int(np.random.SeedSequence(entropy).generate_state(1)[0] % 2**30)


def train_game(run: RunConfig, game: str) -> GameRun:
    """Train `run.seeds` agents on `game` until the end or `stop_after_iterations`, checkpointing every iteration."""
    started = time.perf_counter()
    rows = updates_per_iteration(run.config.num_updates, run.iterations)  # metric rows per iteration
    num_iterations = run.config.num_updates // rows
    stop = min(num_iterations, run.stop_after_iterations or num_iterations)
    with atari.AtariEnvs(_env_config(run, game, num_envs=run.seeds, seed=0)) as envs:
        programs = SeedPrograms(SPR.build(run.config, spaces=(FRAME_SHAPE, envs.num_actions)))
        # synchronous saves: the state is donated right after each one
        with ckpt.Checkpointer(run.run_dir / game / "checkpoints", max_to_keep=2, async_save=False) as saver:
            state, progress, history = _starting_point(run, game, programs, saver, num_iterations)
            if progress.restarts and progress.iteration < stop:
                state = _end_stored_episodes(programs.agent, state)
            obs = envs.reset(seed=_env_seed(run, game, progress.restarts))
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
    identity = _identity(run)
    return {"game": game, **{name: value for name, value in identity.items() if name != "games"}}


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


def _evaluated(run: RunConfig, game: str, trained: GameRun) -> GameRun:
    """`trained` with its evaluation scores: read from `evaluation.json` if it holds this evaluation, else played."""
    path = run.run_dir / game / "evaluation.json"
    settings = {"eval_episodes": run.eval_episodes, "eval_max_steps": run.eval_max_steps, "eval_envs": run.eval_envs_per_seed,
                "epsilon_eval": run.hparams.epsilon_eval, "iteration": trained.progress.iteration}  # fmt: skip
    if run.resume and path.exists() and (saved := json.loads(path.read_text()))["settings"] == settings:
        print(f"{game}: evaluation read from {path}")
        return dataclasses.replace(trained, eval_scores=np.array(saved["scores"]), eval_seconds=saved["seconds"])
    started = time.perf_counter()
    scores = evaluate_seeds(run, game, SeedPrograms(trained.agent), trained.state.params)
    seconds = time.perf_counter() - started
    path.write_text(json.dumps({"settings": settings, "scores": scores.tolist(), "seconds": seconds}))
    return dataclasses.replace(trained, eval_scores=scores, eval_seconds=seconds)


def evaluate_seeds(run: RunConfig, game: str, programs: SeedPrograms, params) -> np.ndarray:
    """`[S, eval_episodes]` unclipped scores of full games by each seed's evaluation policy (ε_eval, no noise).

    One `atari.evaluate` of `S x E` envs, env i seed `i // E`'s; its fixed per-env quotas (E divides
    `eval_episodes`) keep each seed's games its own and the sample unbiased.
    """
    s, e = run.seeds, run.eval_envs_per_seed
    keys, counter = seed_keys(run, game).evaluate, itertools.count()

    def act(obs: np.ndarray) -> np.ndarray:
        obs = obs.reshape(s, e, *obs.shape[1:])
        return np.asarray(programs.act_eval(run.hparams, params, np.int32(next(counter)), obs, keys)).reshape(-1)

    config = _env_config(run, game, num_envs=s * e, seed=_env_seed(run, game, -1))
    scores = atari.evaluate(config, act, num_episodes=s * run.eval_episodes, max_steps=run.eval_max_steps)
    return scores.reshape(s, run.eval_episodes)


def _timing(run: RunConfig, progress: Progress, eval_seconds: float) -> dict:
    """Wall times, rates, and the paper's protocol in hours at those rates (a game's seeds run together).

    `ms_per_gradient_step` is one vmapped gradient step of all seeds; env steps/s count every seed's
    steps and leave out compilation and checkpoints. The protocol's hours: 100k env steps (act, env,
    observe at the measured rate) and 2 x (100k - 2000 + 1) gradient steps, at this run's batch size.
    """
    if not progress.learn_calls:
        grad_s = hours = None
    else:
        grad_s = progress.learn_seconds / (progress.learn_calls * run.config.updates_per_step)
        step_s = (progress.loop_seconds - progress.learn_seconds) / progress.env_steps
        paper = PAPER_ATARI
        gradient_steps = paper.updates_per_step * (paper.total_env_steps - paper.learning_starts + 1)
        hours = (paper.total_env_steps * step_s + gradient_steps * grad_s) / 3600
    return {
        "train_seconds": progress.train_seconds,
        "compile_seconds": progress.compile_seconds,
        "eval_seconds": eval_seconds,
        "ms_per_gradient_step": None if grad_s is None else 1000 * grad_s,
        "ms_per_gradient_step_per_seed": None if grad_s is None else 1000 * grad_s / run.seeds,
        "env_steps_per_s": run.seeds * progress.env_steps / progress.loop_seconds,
        "protocol_hours_per_game": hours,
        "protocol_hours_per_seed": None if hours is None else hours / run.seeds,
    }


def _summarise(run: RunConfig, games: dict[str, GameRun]) -> dict:
    """`results.json` and `results.md` in `run_dir`; returns the summary."""
    paper = paper_table()
    per_game = {}
    for game, result in games.items():
        scores = result.eval_scores.mean(axis=1)
        per_game[game] = {
            "scores": scores.tolist(),
            "hns": [atari.human_normalized_score(game, score) for score in scores],
            "episode_scores": result.eval_scores.tolist(),
            "train_scores_last_10": [s[-10:] for s in result.progress.scores],
            "paper": {method: paper[method][game] for method in COMPARED},
            "timing": _timing(run, result.progress, result.eval_seconds),
        }
    summary = {
        "games": list(games),
        "seeds": run.seeds,
        "env_steps_per_seed": run.env_steps,
        "gradient_steps_per_seed": {game: r.progress.gradient_steps for game, r in games.items()},
        "eval_episodes": run.eval_episodes,
        "eval_max_steps": run.eval_max_steps,
        "per_game": per_game,
        "aggregate": aggregate_scores({g: np.asarray(v["scores"]) for g, v in per_game.items()}) if len(games) > 1 else None,
    }
    (run.run_dir / "results.json").write_text(json.dumps(summary, indent=2))
    (run.run_dir / "results.md").write_text(_markdown(summary))
    return summary


def _markdown(summary: dict) -> str:
    lines = [
        (
            f"{summary['env_steps_per_seed']} env steps per seed; score: the mean of {summary['eval_episodes']} evaluation games "
            "per seed; SPR, DER, DrQ: SPR's Table 1. ms / grad step: one vmapped step of all seeds; protocol h / seed: 100k "
            "env steps and ~196k gradient steps at the measured rates, this batch size."
        ),
        "",
        "| game | seed | score | HNS | SPR | DER | DrQ | train min | ms / grad step | env steps/s | protocol h / seed |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for game, result in summary["per_game"].items():
        t = result["timing"]
        paper = [f"{result['paper'][m]:g}" for m in COMPARED]
        timing = [f"{t['train_seconds'] / 60:.1f}", _number(t["ms_per_gradient_step"]), f"{t['env_steps_per_s']:.0f}"]
        timing.append(_number(t["protocol_hours_per_seed"]))
        for seed, (score, hns) in enumerate(zip(result["scores"], result["hns"], strict=True)):
            lines.append("| " + " | ".join([game, str(seed), f"{score:.1f}", f"{hns:.3f}", *paper, *timing]) + " |")
    if (a := summary["aggregate"]) is not None:
        lines += ["", "| HNS | point | 95 % CI |", "|---|---|---|"]
        for m in ("mean", "median", "iqm", "optimality_gap"):
            lines.append(f"| {m} | {a[m]:.3f} | [{a[f'{m}_ci'][0]:.3f}, {a[f'{m}_ci'][1]:.3f}] |")
    return "\n".join(lines) + "\n"


def _number(value) -> str:
    return "n/a" if value is None else f"{value:.1f}"


if __name__ == "__main__":
    cli.main(RunConfig, main)
