"""Train PPO, one run or a sweep: `python -m experiments.ppo [--config.env ...] [--seeds 8] ...`.

    python -m experiments.ppo --seeds 8                                          # one setting
    python -m experiments.ppo --seeds 4 --sweep "learning_rate=1e-4,3e-4,1e-3 clip_eps=0.1,0.2"
    python -m experiments.ppo --sweep "random:16:0 learning_rate=loguniform(1e-5,1e-2)"
    python -m experiments.ppo ... --mesh 4 2          # (sweep, data) device mesh
    python -m experiments.ppo ... --cpu-devices 8     # XLA:CPU host devices (default: one per core)
    python -m experiments.ppo ... --resume            # continue from the latest checkpoint
    python -m experiments.ppo ... --distributed --run-dir gs://BUCKET/ppo   # every worker of a pod slice

Every (setting, seed) member runs in one vmapped, jitted program (`jaxrl_si.sweep`), in
iterations of updates (`jaxrl_si.loop`): after each, metrics go to JSONL and TensorBoard, the
progress bar advances and an Orbax checkpoint is saved. Every field of the config and the
hyperparameters is a flag (`--help` lists them); unknown flags are errors.

Without `--mesh`, members are spread over as many devices as divide their number
(`parallel.default_mesh`). On CPU, XLA runs one device's small ops on one core, so the CLI
exposes one host device per core (`--cpu-devices`, unless `XLA_FLAGS` sets
`--xla_force_host_platform_device_count`): an 8-seed run then uses every core.

Writes to `--run-dir`: `config.json`, `metrics.jsonl` (one row per update and member), `tb/`,
`checkpoints/`, `table.csv` / `table.json` (one row per member), `curves.png`, `heatmap.png`
(2-D grids), `final_return.png` (1-D grids) and `summary.json` (final return per member).
`config.json` is written once the run is known to fit the directory: a refused `--resume`
leaves it as it was. A mistake in the flags is one line on stderr and exit status 2.

`--run-dir` may be a `gs://` URL. With several processes (`--distributed`, or
`--coordinator-address`, `--num-processes`, `--process-id`; see `experiments/cli.py`) every
process runs this same command; process 0 writes the files and prints.
"""

from __future__ import annotations

import dataclasses
import functools
import json

import numpy as np
from etils import epath

from experiments import cli
from jaxrl_si import sweep
from jaxrl_si.agents.ppo import PPO, PPOConfig, PPOHyperparams
from jaxrl_si.distributed import is_main_process
from jaxrl_si.parallel import expose_cpu_cores


@dataclasses.dataclass(frozen=True)
class RunConfig:
    config: PPOConfig = PPOConfig()  # static settings (env, sizes, counts)
    hparams: PPOHyperparams = PPOHyperparams()  # base hyperparameters (traced pytree leaves)
    sweep: str = ""  # grid "name=v1,v2 name2=..", random "random:<n>[:<seed>] name=loguniform(a,b)", or a .json; empty: one setting
    seeds: int = 1  # seeds per setting
    seed: int = 0  # base PRNG seed
    mesh: tuple[int, int] | None = None  # (sweep, data) mesh sizes, one may be -1; default: members over the devices that divide them
    cpu_devices: int = 0  # XLA:CPU host devices when run as a script; 0: one per core (ignored if XLA_FLAGS sets them)
    members_per_chunk: int = 0  # members per compiled program; 0: all at once
    iterations: int = 20  # about this many iterations (checkpoints); rounded so that they divide the updates
    resume: bool = False  # continue from the latest complete checkpoint in run_dir
    max_to_keep: int = 3  # checkpoints kept; 0 keeps all
    run_dir: cli.RunDir = epath.Path("runs/ppo")  # outputs (created); a local path or gs://BUCKET/PATH
    final_window: int = 20  # updates averaged for the final return


def main(run: RunConfig) -> dict:
    config = run.config
    spec = sweep.parse_spec(run.sweep)
    members = run.members_per_chunk or len(sweep.settings(spec)) * run.seeds
    trainer = cli.trainer_for(PPO.build, config, members=members, mesh=run.mesh, iterations=run.iterations)
    result = sweep.run(
        trainer,
        spec,
        base_hparams=run.hparams,
        run_dir=run.run_dir,
        seeds=run.seeds,
        seed=run.seed,
        members_per_chunk=run.members_per_chunk or None,
        final_window=run.final_window,
        resume=run.resume,
        max_to_keep=run.max_to_keep or None,
        run_config={"final_window": run.final_window},
        on_start=functools.partial(cli.write_run_config, run),
    )
    finals = np.array([np.nan if r["final_return"] is None else r["final_return"] for r in result.table])
    summary = {
        "env": config.env,
        "settings": len(result.settings),
        "seeds": run.seeds,
        "env_steps_per_member": config.num_updates * config.batch_size,
        "final_return_per_member": [r["final_return"] for r in result.table],
        "final_return_mean_per_setting": [round(float(x), 2) for x in np.nanmean(finals.reshape(-1, run.seeds), axis=1)],
        "wall_s_including_compile": round(result.seconds, 1),
    }
    if is_main_process():
        (run.run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
        print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    cli.main(RunConfig, main, before_run=lambda run: expose_cpu_cores(run.cpu_devices))
