"""SPO against reward-model RLHF and PPO on the true reward, for each oracle, as one vmapped program.

    python -m experiments.spo                                   # the comparison: 3 methods x 4 oracles x 6 seeds
    python -m experiments.spo --config.oracles bt majority --seeds 3
    python -m experiments.spo --sweep "spo_reward_at_end=0,1"   # an ablation crossed with the comparison
    python -m experiments.spo --resume                          # continue from the latest checkpoint

The members are `ppo` once (it ignores the oracle) and `spo` and `rlhf` with each oracle of
`--config.oracles`, crossed with `--sweep` and `--seeds`: all of them run in one jitted,
vmapped program (`jaxrl_si.sweep`, `jaxrl_si.loop`), checkpointed every iteration. Then, on
device and in one program per oracle, every iteration's policy plays every other's under the
oracle (the win-rate matrices), and the final policies roll out fresh episodes.

Writes to `--run-dir`: `config.json`, `metrics.jsonl`, `tb/`, `checkpoints/` (all kept: the
matrices read every iteration), the sweep's `table.csv` / `table.json` / `curves.png`, and
`results.json` (final return per method and oracle: mean and 95 % t-interval over seeds; the
constraint's satisfaction rate; the matrices), `results.md` (the table), `returns.png` (return
against env steps, one panel per oracle, mean and 95 % interval) and `win_rates_<oracle>.png`.
A mistake in the flags is one line on stderr and exit status 2.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
from etils import epath

from experiments import cli
from experiments.spo import analysis
from jaxrl_si import checkpoint, loop, sweep
from jaxrl_si.agents.preference_ppo import METHODS, PreferencePPO, PreferencePPOConfig, PreferencePPOHyperparams
from jaxrl_si.errors import ConfigError

COMPARISON = PreferencePPOConfig(methods=METHODS, oracles=("bt", "flip", "constrained", "majority"))


@dataclasses.dataclass(frozen=True)
class RunConfig:
    config: PreferencePPOConfig = COMPARISON  # static settings: learner, methods and oracles in the program
    hparams: PreferencePPOHyperparams = PreferencePPOHyperparams()  # base hyperparameters (traced leaves)
    sweep: str = ""  # more axes crossed with the comparison, e.g. "spo_reward_at_end=0,1" (grid, random or .json)
    seeds: int = 6  # seeds per (method, oracle, setting); 6 makes the 54 members divide 2 cores
    seed: int = 0  # base PRNG seed
    mesh: tuple[int, int] | None = None  # (sweep, data) mesh sizes; default: members over the devices that divide them
    cpu_devices: int = 0  # XLA:CPU host devices when run as a script; 0: one per core
    iterations: int = 20  # about this many iterations (checkpoints, points of the win-rate matrices)
    resume: bool = False  # continue from the latest complete checkpoint in run_dir
    run_dir: cli.RunDir = epath.Path("runs/spo")  # outputs (created)
    final_window: int = 20  # updates averaged for the final return
    matrices: bool = True  # compute the iterate-vs-iterate win-rate matrices (intransitive and non-Markovian oracles)


def comparison_settings(config: PreferencePPOConfig) -> list[dict[str, float]]:
    """`ppo` once (oracle 0: it ignores it), then every (preference method, oracle)."""
    settings = []
    for index, method in enumerate(config.methods):
        oracles = [0] if method == "ppo" else range(len(config.oracles))
        settings += [{"method": float(index), "oracle": float(o)} for o in oracles]
    return settings


def main(run: RunConfig) -> dict:
    config = run.config
    extra = sweep.parse_spec(run.sweep)
    if {"method", "oracle"} & set(sweep.swept_names(extra)) or (run.hparams.method, run.hparams.oracle) != (0.0, 0.0):
        raise ConfigError("method and oracle are set by --config.methods and --config.oracles, not by --sweep or --hparams")
    spec = sweep.cross(sweep.Listed(tuple(comparison_settings(config))), extra)
    members = len(sweep.settings(spec)) * run.seeds
    trainer = cli.trainer_for(PreferencePPO.build, config, members=members, mesh=run.mesh, iterations=run.iterations)
    result = sweep.run(
        trainer,
        spec,
        base_hparams=run.hparams,
        run_dir=run.run_dir,
        seeds=run.seeds,
        seed=run.seed,
        final_window=run.final_window,
        resume=run.resume,
        max_to_keep=None,
        run_config={"final_window": run.final_window},
        on_start=functools.partial(cli.write_run_config, run),
    )
    hparams = sweep.member_hparams(run.hparams, result.settings, run.seeds)
    states = _iterate_states(trainer, hparams, run)
    evaluation = analysis.evaluate(trainer, hparams, states, result, run)
    summary = analysis.write(trainer, result, evaluation, run)
    print(analysis.markdown(summary["table"]), end="")
    return summary


def _iterate_states(trainer: loop.Trainer, hparams, run: RunConfig):
    """The member states stacked `[K, M, ...]` from the checkpoints: every iteration's for the
    win-rate matrices, else the last one only (K = 1)."""
    init_members, _ = trainer.compiled
    keys = sweep.member_keys(run.seed, len(jax.tree.leaves(hparams)[0]) // run.seeds, run.seeds)
    abstract = jax.eval_shape(init_members, hparams, keys)
    with checkpoint.Checkpointer(run.run_dir / "checkpoints", max_to_keep=None) as saver:
        steps = saver.all_steps() if run.matrices else saver.all_steps()[-1:]
        states = [saver.restore(step, abstract).state for step in steps]
    return jax.tree.map(lambda *xs: jax.numpy.stack(xs), *states)
