"""SPR against the same agent without the SPR loss, on MinAtar, every run one jitted program.

    python -m experiments.spr                                        # 4 games x 4 arms x 6 seeds (CPU budget)
    python -m experiments.spr --games Breakout-MinAtar --arms spr no_spr --seeds 2
    python -m experiments.spr --config.total-env-steps 100000 --config.updates-per-step 2 --config.num-envs 1
    python -m experiments.spr --sweep "spr_weight=1,5"               # an ablation crossed with each arm
    python -m experiments.spr --resume                               # continue every run from its checkpoint

Arms (the static switches of `SPRConfig`; the rest of the config is shared):

| arm             | SPR loss | augmentation | target τ |
|-----------------|----------|--------------|----------|
| `spr`           | yes      | yes          | 1.0      |
| `spr_no_aug`    | yes      | no           | 0.01     |
| `no_spr`        | no       | yes          | -        |
| `no_spr_no_aug` | no       | no           | -        |

Each (game, arm) is one `jaxrl_si.sweep` run: its seeds (and `--sweep` settings) are members
of one vmapped program, checkpointed every iteration, in `<run-dir>/<game>/<arm>/`. The score
of a member is `eval/return`: after every update, `eval_envs` fresh environments play
`eval_steps` steps with ε = 0.001 and no noise (the paper's evaluation policy), averaged over
the last `final_window` updates. Writes to `--run-dir`: `results.json` and `results.md` (per
game and arm: mean and 95 % t-interval over seeds; SPR's final cosine similarity), `eval.png`
(evaluation return against env steps, one panel per game), `final.png` (the final evaluation
return per game and arm, bars with intervals), `cosine.png` (the SPR cosine similarity over
training). A mistake in the flags is one line on stderr and exit status 2.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import pathlib

import numpy as np
from etils import epath

from experiments import cli, report
from jaxrl_si import envs, plots, sweep
from jaxrl_si.agents.spr import SPR, SPRConfig, SPRHyperparams
from jaxrl_si.errors import ConfigError

ARMS = {  # arm -> (use_spr, augment, target_momentum)
    "spr": (True, True, 1.0),
    "spr_no_aug": (True, False, 0.01),
    "no_spr": (False, True, 1.0),
    "no_spr_no_aug": (False, False, 1.0),
}
MINATAR_GAMES = ("Breakout-MinAtar", "Asterix-MinAtar", "Freeway-MinAtar", "SpaceInvaders-MinAtar")
CPU_BUDGET = SPRConfig(
    env="",  # set per game
    num_envs=4,
    total_env_steps=10_000,
    steps_per_update=125,  # 500 env steps per update: 20 points per curve
    learning_starts=1000,
    updates_per_step=1,  # replay ratio 0.25 (the paper: 2)
    hidden=128,
    shift_pad=1,  # 4 px of 84 is about 1 cell of 10
    eval_envs=8,
    eval_steps=2600,  # a Freeway-MinAtar episode is 2500 steps: shorter windows finish none of them
)


@dataclasses.dataclass(frozen=True)
class RunConfig:
    config: SPRConfig = CPU_BUDGET  # static settings shared by every game and arm (env is set per game)
    hparams: SPRHyperparams = SPRHyperparams()  # base hyperparameters; each arm sets target_momentum
    games: tuple[str, ...] = MINATAR_GAMES  # gymnax MinAtar ids
    arms: tuple[str, ...] = ("spr", "spr_no_aug", "no_spr", "no_spr_no_aug")  # see the module docstring
    sweep: str = ""  # more axes crossed with every (game, arm), e.g. "spr_weight=1,5"
    seeds: int = 6  # seeds per setting (6 members divide 2 cores)
    seed: int = 0  # base PRNG seed
    mesh: tuple[int, int] | None = None  # (sweep, data) mesh sizes; default: members over the devices that divide them
    cpu_devices: int = 0  # XLA:CPU host devices when run as a script; 0: one per core
    iterations: int = 10  # about this many iterations (checkpoints) per run
    resume: bool = False  # continue every run from its latest complete checkpoint
    run_dir: cli.RunDir = epath.Path("runs/spr")  # outputs (created)
    final_window: int = 4  # updates averaged for the final evaluation return

    def __post_init__(self):
        if unknown := [arm for arm in self.arms if arm not in ARMS]:
            raise ConfigError(f"unknown arms {unknown}; choose from {sorted(ARMS)}")
        if not self.games or not self.arms:
            raise ConfigError("--games and --arms must each name at least one")


def arm_config(config: SPRConfig, game: str, arm: str) -> SPRConfig:
    use_spr, augment, _ = ARMS[arm]
    return dataclasses.replace(config, env=f"gymnax:{game}", use_spr=use_spr, augment=augment)


def main(run: RunConfig) -> dict:
    spec = sweep.parse_spec(run.sweep)
    if "target_momentum" in sweep.swept_names(spec):
        raise ConfigError("target_momentum is set by each arm, not by --sweep")
    members = len(sweep.settings(spec)) * run.seeds
    sweep.member_hparams(run.hparams, sweep.settings(spec), run.seeds)  # every name checked before anything is written
    for game in run.games:
        envs.make(f"gymnax:{game}")
    histories = {}
    cli.write_run_config(run)
    for game in run.games:
        for arm in run.arms:
            print(f"== {game} / {arm}")
            config = arm_config(run.config, game, arm)
            trainer = cli.trainer_for(SPR.build, config, members=members, mesh=run.mesh, iterations=run.iterations)
            result = sweep.run(
                trainer,
                spec,
                base_hparams=run.hparams.replace(target_momentum=ARMS[arm][2]),
                run_dir=run.run_dir / game / arm,
                seeds=run.seeds,
                seed=run.seed,
                final_window=run.final_window,
                resume=run.resume,
                run_config={"final_window": run.final_window},
                on_start=functools.partial(_write_arm_config, run.run_dir / game / arm, config),
            )
            histories[game, arm] = result.history
            del trainer  # frees the compiled programs before the next arm
    summary = _summarise(run, histories)
    print(_markdown(summary["table"]), end="")
    return summary


def _write_arm_config(run_dir: pathlib.Path, config: SPRConfig) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "arm_config.json").write_text(json.dumps(dataclasses.asdict(config), indent=2, default=str))


def _final(history: dict[str, np.ndarray], name: str, window: int) -> np.ndarray:
    """`[M]` the mean of metric `name` over each member's last `window` updates (NaN-aware)."""
    return np.nanmean(history[name][:, -window:], axis=1)


def _summarise(run: RunConfig, histories) -> dict:
    env_steps = (np.arange(run.config.num_updates) + 1) * run.config.env_steps_per_update
    rows = []
    for (game, arm), history in histories.items():
        cosine = _final(history, "spr/cosine", run.final_window) if "spr/cosine" in history else [None]
        rows.append({
            "game": game,
            "arm": arm,
            "eval_return": report.mean_interval(_final(history, "eval/return", run.final_window)),
            "train_return": report.mean_interval(_final(history, "episode/return", run.final_window)),
            "spr_cosine": report.mean_interval(cosine),
        })  # fmt: skip
    summary = {
        "games": list(run.games),
        "arms": list(run.arms),
        "seeds": run.seeds,
        "env_steps_per_member": run.config.num_updates * run.config.env_steps_per_update,
        "replay_ratio": run.config.replay_ratio,
        "table": rows,
    }
    (run.run_dir / "results.json").write_text(json.dumps(summary, indent=2))
    (run.run_dir / "results.md").write_text(_markdown(rows))
    for metric, name, label in (("eval/return", "eval.png", "evaluation return"), ("spr/cosine", "cosine.png", "SPR cosine")):
        panels = {
            game: {arm: _learning(histories[game, arm], metric) for arm in run.arms if metric in histories[game, arm]}
            for game in run.games
        }
        if any(panels.values()):
            plots.plot_interval_panels(
                env_steps, panels, run.run_dir / name, xlabel="env steps", ylabel=label, sharey=False,
                title=f"{label}: mean and 95 % interval over {run.seeds} seeds",
            )  # fmt: skip
    plots.plot_interval_bars(
        {game: {row["arm"]: row["eval_return"] for row in rows if row["game"] == game} for game in run.games},
        run.run_dir / "final.png", ylabel="final evaluation return",
        title=f"mean of the last {run.final_window} evaluations, 95 % interval over {run.seeds} seeds",
    )  # fmt: skip
    return summary


def _learning(history: dict[str, np.ndarray], metric: str) -> np.ndarray:
    """`[M, updates]` values of `metric`; a learning metric is NaN in updates before learning started."""
    values = np.asarray(history[metric], np.float64)
    if metric.startswith(("loss/", "spr/")):
        values = np.where(history["learn/gradient_steps"] > 0, values, np.nan)
    return values


def _markdown(rows: list[dict]) -> str:
    lines = ["| game | arm | eval return | train return | SPR cosine |", "|---|---|---|---|---|"]
    for row in rows:
        cells = (report.format_interval(row[name], 2) for name in ("eval_return", "train_return", "spr_cosine"))
        lines.append(f"| {row['game']} | {row['arm']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
