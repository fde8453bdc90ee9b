"""CPL against P-IQL, SFT and %BC on offline preference data made by the project's own PPO.

    python -m experiments.cpl                                    # the table: 4 methods x dense/sparse x 6 seeds
    python -m experiments.cpl --methods cpl --sweep "alpha=0.02,0.1,0.5"   # an ablation of one method
    python -m experiments.cpl --dataset runs/cpl/dataset         # reuse a dataset (any `data.tfds_io` one)
    python -m experiments.cpl --resume                           # continue from the latest checkpoints

First the dataset: unless `--dataset` names one, `--data` (a `data.generate.GenerationConfig`)
trains PPO, rolls out its snapshots with σ = 0.3 action noise, cuts 64-step segments and labels
pairs with the regret oracle; it is written once to `run_dir/dataset` (TFDS `array_record`) and
read back from there, also on `--resume`. Then every method with every pair mode (`dense`: pairs
drawn from all segments and labelled per batch; `sparse`: the dataset's fixed pairs) runs as one
vmapped program over `--seeds` (and `--sweep`), checkpointed every iteration, in
`run_dir/<method>-<mode>/`; %BC clones the top episodes by true return and ignores the pair
mode, so it runs once. The methods are separate programs: their networks and losses differ
(CPL: one actor; P-IQL: a reward model, twin Q, V and an actor), and one program computing all of
them for every member would cost their sum.

Writes `results.json` / `results.md` (the table: final return of the deterministic policy, mean
and 95 % interval over seeds, per method and pair mode; parameter counts; wall time of each
program) and `returns.png` (evaluation return against gradient steps, one panel per pair mode).
The env and pair mode of each method's config come from the dataset and `--pair-modes`.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import pathlib
from typing import Any

import jax
import numpy as np
from etils import epath

from experiments import cli
from experiments.report import format_interval, mean_interval
from jaxrl_si import loop, plots, sweep
from jaxrl_si.agents.bc import BC, BCConfig, BCHyperparams
from jaxrl_si.agents.cpl import CPL, CPLConfig, CPLHyperparams
from jaxrl_si.agents.offline import PAIR_MODES
from jaxrl_si.agents.piql import PIQL, PIQLConfig, PIQLHyperparams
from jaxrl_si.data.generate import GenerationConfig
from jaxrl_si.errors import ConfigError
from jaxrl_si.metrics import smoothed_episode_return

METHODS = ("cpl", "piql", "sft", "bc", "percent_bc")
MODE_FREE = ("percent_bc",)  # methods that read no pairs

# CPU scale: the paper's 500k steps (200k of them BC, 10k warm-up; P-IQL's reward model 50k) on
# 512 x 2 MLPs with 96 segments a step, scaled to 10k steps (4k BC, 1k warm-up; reward model 2k)
# on 128 x 2 with 32 segments (16 pairs); everything else as in the paper.
_CPU = {"hidden_sizes": (128, 128), "batch_size": 32, "total_steps": 10_000, "steps_per_update": 1_000, "eval_episodes": 10}
CPU_CPL = CPLConfig(**_CPU, bc_steps=4_000, lr_warmup_steps=1_000)
CPU_PIQL = PIQLConfig(**_CPU, critic_hidden_sizes=(128, 128), reward_model_hidden_sizes=(128, 128), reward_model_steps=2_000)
CPU_BC = BCConfig(**_CPU, bc_steps=4_000)


@dataclasses.dataclass(frozen=True)
class RunConfig:
    data: GenerationConfig = GenerationConfig()  # how the dataset is made when --dataset is not given
    dataset: pathlib.Path | None = None  # an existing dataset directory (data.tfds_io) to learn from
    methods: tuple[str, ...] = ("cpl", "piql", "sft", "percent_bc")  # from METHODS
    pair_modes: tuple[str, ...] = PAIR_MODES  # dense | sparse
    cpl: CPLConfig = CPU_CPL
    cpl_hparams: CPLHyperparams = CPLHyperparams()
    piql: PIQLConfig = CPU_PIQL
    piql_hparams: PIQLHyperparams = PIQLHyperparams()
    bc: BCConfig = CPU_BC  # sft, bc and percent_bc (its `method` is set per run)
    bc_hparams: BCHyperparams = BCHyperparams()
    sweep: str = ""  # hyperparameters crossed with the seeds of every method run (names must fit each)
    seeds: int = 6  # seeds per method (and setting); 6 makes the members divide 2 cores
    seed: int = 0
    mesh: tuple[int, int] | None = None  # (sweep, data) mesh sizes; default: members over the devices that divide them
    cpu_devices: int = 0  # XLA:CPU host devices when run as a script; 0: one per core
    iterations: int = 10  # checkpoints per method run
    resume: bool = False
    run_dir: cli.RunDir = epath.Path("runs/cpl")
    final_window: int = 3  # evaluations averaged for the final return


@dataclasses.dataclass(frozen=True)
class MethodRun:
    """One program: a method, its pair mode, its agent's config, hyperparameters and build."""

    method: str
    mode: str
    config: Any
    hparams: Any
    build: Any

    @property
    def name(self) -> str:
        return self.method if self.method in MODE_FREE else f"{self.method}-{self.mode}"


def main(run: RunConfig) -> dict:
    unknown = set(run.methods) - set(METHODS)
    if unknown or not run.methods:
        raise ConfigError(f"--methods must name some of {METHODS}, got {list(run.methods)}")
    if set(run.pair_modes) - set(PAIR_MODES) or not run.pair_modes:
        raise ConfigError(f"--pair-modes must name some of {PAIR_MODES}, got {list(run.pair_modes)}")
    if run.seeds < 1:
        raise ConfigError(f"--seeds must be >= 1, got {run.seeds}")  # before a dataset is made
    data, metadata = load_or_generate(run)
    device_data = jax.device_put(data)
    rows, curves = [], {}
    for index, method_run in enumerate(method_runs(run, metadata.env_name)):
        trainer = cli.trainer_for(
            functools.partial(method_run.build, data=device_data),
            method_run.config,
            members=len(sweep.settings(sweep.parse_spec(run.sweep))) * run.seeds,
            mesh=run.mesh,
            iterations=run.iterations,
        )
        result = sweep.run(
            trainer,
            sweep.parse_spec(run.sweep),
            base_hparams=method_run.hparams,
            run_dir=run.run_dir / method_run.name,
            seeds=run.seeds,
            seed=run.seed,
            final_window=run.final_window,
            resume=run.resume,
            run_config={"dataset": metadata.to_json(), "final_window": run.final_window},
            on_start=functools.partial(cli.write_run_config, run) if index == 0 else None,
        )
        rows += _rows(method_run, trainer, result, run)
        curves[method_run.name] = _curves(trainer, result, run)
    summary = _write(run, metadata, rows, curves)
    print(markdown(rows), end="")
    return summary


def load_or_generate(run: RunConfig):
    """The dataset: `--dataset`, or the one this run made in `run_dir/dataset`, or a new one."""
    return cli.read_or_make_dataset(run, functools.partial(_generate, run.data))


def _generate(config: GenerationConfig, directory: pathlib.Path) -> None:
    from jaxrl_si.data import generate, tfds_io

    made = generate.generate(config)
    generate.save_oracle(directory, made.oracle)  # first: a dataset version is never without its oracle
    tfds_io.write_dataset(directory, made.data, made.metadata)


def method_runs(run: RunConfig, env: str) -> list[MethodRun]:
    """Every (method, pair mode) program, configs set to the dataset's env and the mode."""
    runs = []
    for method in run.methods:
        for mode in run.pair_modes[:1] if method in MODE_FREE else run.pair_modes:
            if method == "cpl":
                config, hparams, build = run.cpl, run.cpl_hparams, CPL.build
            elif method == "piql":
                config, hparams, build = run.piql, run.piql_hparams, PIQL.build
            else:
                config, hparams, build = dataclasses.replace(run.bc, method=method), run.bc_hparams, BC.build
            runs.append(MethodRun(method, mode, dataclasses.replace(config, env=env, pair_mode=mode), hparams, build))
    schedules = {(r.config.total_steps, r.config.steps_per_update) for r in runs}
    if len(schedules) > 1:
        raise ConfigError(f"every method must take the same total_steps and steps_per_update (one x axis); got {sorted(schedules)}")
    return runs


def _rows(method_run: MethodRun, trainer: loop.Trainer, result: sweep.SweepResult, run: RunConfig) -> list[dict[str, Any]]:
    rows = []
    for index, setting in enumerate(result.settings):
        members = result.table[index * run.seeds : (index + 1) * run.seeds]
        rows.append(
            {
                "method": method_run.method,
                "pair_mode": "-" if method_run.method in MODE_FREE else method_run.mode,
                "setting": ", ".join(f"{k}={v:g}" for k, v in setting.items()),
                "final_return": mean_interval([m["final_return"] for m in members]),
                "parameters": trainer.agent.parameter_count(),
                "gradient_steps": trainer.agent.config.total_steps,
                "wall_s_including_compile": round(result.seconds, 1),
            }
        )
    return rows


def _curves(trainer: loop.Trainer, result: sweep.SweepResult, run: RunConfig) -> dict[str, np.ndarray]:
    returns, counts = loop.returns_and_counts(trainer, result.history)
    smooth = smoothed_episode_return(returns, counts, 1)
    return {"steps": np.arange(1, returns.shape[1] + 1) * trainer.env_steps_per_update, "returns": smooth}


def markdown(rows: list[dict[str, Any]]) -> str:
    header = "| method | pairs | setting | return of the final policy | parameters | wall s (with compile) |"
    lines = [header, "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['method']} | {r['pair_mode']} | {r['setting'] or '-'} | {format_interval(r['final_return'])} "
            f"| {r['parameters']:,} | {r['wall_s_including_compile']} |"
        )
    return "\n".join(lines) + "\n"


def _write(run: RunConfig, metadata, rows, curves) -> dict[str, Any]:
    summary = {
        "env": metadata.env_name,
        "seeds": run.seeds,
        "dataset_policies": list(metadata.policies),
        "table": rows,
    }
    (run.run_dir / "results.json").write_text(json.dumps(summary, indent=1))
    (run.run_dir / "results.md").write_text(markdown(rows))
    _plot(run, metadata, curves)
    return summary


def _plot(run: RunConfig, metadata, curves: dict[str, dict[str, np.ndarray]]) -> None:
    """One panel per pair mode: evaluation return against gradient steps, mean and 95 % interval."""
    panels: dict[str, dict[str, np.ndarray]] = {}
    for name, curve in curves.items():
        method, _, mode = name.partition("-")
        for panel in [mode] if mode else run.pair_modes:
            panels.setdefault(f"{panel} pairs", {})[method] = curve["returns"]
    steps = next(iter(curves.values()))["steps"]
    plots.plot_interval_panels(
        steps, panels, run.run_dir / "returns.png", xlabel="gradient steps", ylabel="return of the deterministic policy",
        title=f"{metadata.env_name}: offline preference learning, mean and 95% interval over {run.seeds} seeds",
    )  # fmt: skip

