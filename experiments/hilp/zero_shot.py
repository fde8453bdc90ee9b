"""HILP's zero-shot RL on DM Control (MuJoCo Playground): successor features on φ, prompted by rewards.

    python -m experiments.hilp.zero_shot                           # cartpole's 4 tasks, 4 seeds, CPU scale
    python -m experiments.hilp.zero_shot --data.env playground:WalkerRun --data.method rnd --sf.env playground:WalkerRun

The dataset (unless `--dataset` names one): `--data` (`data.explore.ExploreConfig`), exploration
on one task's physics with every task of its domain's reward kept in `features`, written to
`run_dir/dataset` and read back. Then `agents.hilp_sf` learns φ, ψ and the actor from it as one
vmapped program over `--seeds` (and `--sweep`), checkpointed every iteration in `run_dir/sf/`;
every update prompts each task with z fitted on its rewards (`reward_samples` transitions) and,
as the floor, with random z. Writes `results.json` / `results.md` (final return per task, mean
and 95 % interval over seeds) and `curves.png`.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import pathlib

import jax
import numpy as np
from etils import epath

from experiments import cli
from experiments.hilp.experiment import load_or_generate
from experiments.report import format_interval, mean_interval
from jaxrl_si import plots, sweep
from jaxrl_si.agents.hilp_sf import HILPSF, HILPSFConfig, HILPSFHyperparams
from jaxrl_si.data.explore import ExploreConfig
from jaxrl_si.errors import ConfigError

# CPU scale: the code's 1M steps at batch 1024 (ψ and actor 1024 x 2, φ 512 x 2, d = 50) scaled
# to 10k steps at batch 256 on 256 x 2 (φ 128 x 2, d = 16); data: 200 episodes of 500 steps of
# random actions held 4 steps (ExORL: 5000 episodes of 1000 steps of RND).
CPU_SF = HILPSFConfig(
    env="playground:CartpoleSwingup", latent_dim=16, phi_hidden_sizes=(128, 128), hidden_sizes=(256, 256), batch_size=256,
    total_steps=10_000, steps_per_update=1_000, reward_samples=10_000, eval_episodes=5, eval_horizon=500,
)  # fmt: skip
CPU_DATA = ExploreConfig(env="playground:CartpoleSwingup", method="random", num_episodes=200, episode_length=500, action_repeat=4)


@dataclasses.dataclass(frozen=True)
class RunConfig:
    data: ExploreConfig = CPU_DATA
    dataset: pathlib.Path | None = None  # an existing dataset (data.tfds_io) with the domain's task rewards in `features`
    sf: HILPSFConfig = CPU_SF
    hparams: HILPSFHyperparams = HILPSFHyperparams(reward_ridge=0.1)
    sweep: str = ""
    seeds: int = 4
    seed: int = 0
    mesh: tuple[int, int] | None = None
    cpu_devices: int = 0
    iterations: int = 10
    resume: bool = False
    run_dir: cli.RunDir = epath.Path("runs/hilp_zero_shot")


def main(run: RunConfig) -> dict:
    if run.seeds < 1:
        raise ConfigError(f"--seeds must be >= 1, got {run.seeds}")
    data, metadata = load_or_generate(run)
    if metadata.env_name != run.sf.env and metadata.env_name.partition(":")[2] not in _domain_tasks(run.sf.env):
        raise ConfigError(f"the dataset was made on {metadata.env_name}; --sf.env {run.sf.env} is not of its domain")
    spec = sweep.parse_spec(run.sweep)
    trainer = cli.trainer_for(
        functools.partial(HILPSF.build, data=jax.device_put(data.episodes)), run.sf, members=len(sweep.settings(spec)) * run.seeds,
        mesh=run.mesh, iterations=run.iterations,
    )  # fmt: skip
    result = sweep.run(
        trainer, spec, base_hparams=run.hparams, run_dir=run.run_dir / "sf", seeds=run.seeds, seed=run.seed, final_window=1,
        resume=run.resume, run_config={"dataset": metadata.to_json()}, on_start=functools.partial(cli.write_run_config, run),
    )  # fmt: skip
    tasks = metadata.feature_names
    rows = [_row(name, result.history, f"return/task{k}", f"random/return/task{k}", run.seeds) for k, name in enumerate(tasks)]
    rows.append(_row("mean over tasks", result.history, "episode/return", "random/return", run.seeds))
    table = markdown(rows, trainer.agent.config.total_steps)
    (run.run_dir / "results.json").write_text(json.dumps({"dataset": metadata.to_json(), "seeds": run.seeds, "table": rows}, indent=1))
    (run.run_dir / "results.md").write_text(table)
    steps = np.arange(1, result.history["episode/return"].shape[1] + 1) * run.sf.steps_per_update
    panels = {name: {"reward prompt": result.history[f"return/task{k}"], "random z": result.history[f"random/return/task{k}"]} for k, name in enumerate(tasks)}
    plots.plot_interval_panels(
        steps, panels, run.run_dir / "curves.png", xlabel="gradient steps", ylabel=f"return over {run.sf.eval_horizon} steps", sharey=False,
        title=f"HILP zero-shot on {metadata.env_name}'s domain ({metadata.generator} data), mean and 95% interval over {run.seeds} seeds",
    )  # fmt: skip
    print(table, end="")
    return {"table": rows}


def _domain_tasks(env: str) -> tuple[str, ...]:
    from jaxrl_si.data.explore import DOMAIN_TASKS, domain_of

    return DOMAIN_TASKS[domain_of(env.partition(":")[2])]


def _row(task: str, history, prompted: str, random: str, seeds: int) -> dict:
    return {"task": task, "reward_prompt": mean_interval(history[prompted][:seeds, -1]), "random_z": mean_interval(history[random][:seeds, -1])}


def markdown(rows: list[dict], steps: int) -> str:
    lines = [f"| task | reward prompt (after {steps:,} steps) | random z |", "|---|---|---|"]
    lines += [f"| {r['task']} | {format_interval(r['reward_prompt'])} | {format_interval(r['random_z'])} |" for r in rows]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    from jaxrl_si.parallel import expose_cpu_cores

    cli.main(RunConfig, main, before_run=lambda run: expose_cpu_cores(run.cpu_devices))
