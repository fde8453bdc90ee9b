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

Training (`experiments.spr.host_loop`): a game's seeds train together, ale-py stepping the games on
the host and jitted programs acting and learning, with a checkpoint after each of about `iterations`
iterations; `--resume` restores the latest complete one. A resume under other settings (game list,
seeds, buffer capacity, any learner setting) is refused with one line naming each difference; a
fresh run into a directory that holds checkpoints too.

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
import importlib.util
import itertools
import json
import time

import numpy as np
from etils import epath

from experiments import cli
from experiments.spr.aggregate import aggregate_scores, paper_table
from experiments.spr.host_loop import (
    GameRun,
    Progress,
    SeedPrograms,
    env_config,
    env_seed,
    seed_keys,
    train_game,
)
from jaxrl_si import checkpoint as ckpt
from jaxrl_si.agents.spr import SPRConfig, SPRHyperparams
from jaxrl_si.envs import atari
from jaxrl_si.envs.core import import_backend
from jaxrl_si.errors import ConfigError

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
    run_dir: cli.RunDir = epath.Path("runs/spr_atari")  # outputs (created)

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

    @property
    def identity(self) -> dict:
        """The settings a resumed run must share with the checkpointed one, as JSON reads them back."""
        values = dataclasses.asdict(self) | {"games": list(self.game_names)}
        return ckpt.json_value({name: values[name] for name in IDENTITY}, stringify=True)


def _check_int(name: str, value, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"--{name.replace('_', '-')} must be an int >= {minimum}, got {value!r}")


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
        ours, theirs = _flat(run.identity), _flat({name: saved.get(name) for name in IDENTITY})
        differences = [
            f"{name}: it has {json.dumps(theirs.get(name))}, this run has {json.dumps(ours.get(name))}"
            for name in sorted(set(ours) | set(theirs))
            if json.dumps(ours.get(name)) != json.dumps(theirs.get(name))
        ]
        if differences:
            raise ConfigError(f"--resume: {run.run_dir} holds a run with other settings: " + "; ".join(differences))


def _flat(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        flat |= _flat(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value}
    return flat


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

    config = env_config(run, game, num_envs=s * e, seed=env_seed(run, game, -1))
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
