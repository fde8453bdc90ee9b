"""CPL benchmark: its compute against P-IQL's, and the dataset's read throughput and memory.

    python experiments/bench_cpl.py                  # paper sizes, 3 interleaved rounds
    python experiments/bench_cpl.py --steps 50 --rounds 5 --hidden 256

1. **CPL against P-IQL** (`cpl_vs_piql`): the two agents on the same dataset with the paper's
   sizes (MLPs 512 x 2, actor dropout 0.25, 96 segments of 64 steps per gradient step), their
   trainable parameter counts, and seconds per gradient step after compilation: CPL's step,
   P-IQL's reward-model step and its IQL step (twin Q, V and actor). Wall time to the same
   number N of policy gradient steps on the paper's schedule is CPL N steps against P-IQL's
   N / 10 reward-model steps (50k of 500k) plus N IQL steps. Target: CPL <= 0.6x P-IQL.
2. **Reading the dataset** (`dataset`): `data.tfds_io.read_dataset` of the generated dataset
   (TFDS `array_record`) and its `jax.device_put`, in segments per second; then the bytes on
   device against the raw size of its steps (every step field of every real step: what the
   episodes hold before any segment or pair is cut). Target: within 1.1x. For information, the
   rate at which a jitted update gathers segment batches from it (`data.segment_batch`).

Timings run in one process, interleaved over `--rounds`, medians reported as JSON lines (also
written to `--out`) with the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20, help="gradient steps timed per call")
    parser.add_argument("--hidden", type=int, default=512, help="MLP width (paper: 512)")
    parser.add_argument("--episodes-per-stage", type=int, default=125, help="dataset size: 4 stages x this many 200-step episodes")
    parser.add_argument("--out", default="experiments/results/bench_cpl.jsonl")
    return parser.parse_args()


def main() -> None:
    args = _parse()
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository root
    import jax
    import numpy as np

    from jaxrl_si import data as offline
    from jaxrl_si.agents.cpl import CPL, CPLConfig
    from jaxrl_si.agents.piql import PIQL, PIQLConfig
    from jaxrl_si.data import generate, tfds_io

    made = generate.generate(generate.GenerationConfig(episodes_per_stage=args.episodes_per_stage), progress=False)
    with tempfile.TemporaryDirectory() as directory:
        tfds_io.write_dataset(directory, made.data, made.metadata)
        reads = [_read(tfds_io, jax, directory) for _ in range(args.rounds)]
    data = jax.device_put(made.data)
    machine = {
        "machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(), "devices": jax.device_count(),
        "backend": jax.default_backend(), "jax": jax.__version__, "date": time.strftime("%Y-%m-%d"),
    }  # fmt: skip
    lines = [{"measure": "dataset", **_dataset_numbers(offline, jax, np, data, reads, args), **machine}]

    sizes = {"hidden_sizes": (args.hidden, args.hidden), "total_steps": args.steps, "steps_per_update": args.steps}
    cpl = CPL.build(CPLConfig(**sizes, bc_steps=0, lr_warmup_steps=0), data=data)
    piql = PIQL.build(
        PIQLConfig(**sizes, critic_hidden_sizes=sizes["hidden_sizes"], reward_model_hidden_sizes=sizes["hidden_sizes"], reward_model_steps=args.steps),
        data=data,
    )
    per_step = _seconds_per_step(jax, cpl, piql, args)
    cpl_run = per_step["cpl"]
    piql_run = per_step["piql_reward_model"] / 10 + per_step["piql_iql"]
    lines.append(
        {
            "measure": "cpl_vs_piql",
            "parameters": {"cpl": cpl.parameter_count(), "piql": piql.parameter_count()},
            "ms_per_step": {k: round(1e3 * v, 2) for k, v in per_step.items()},
            "cpl_over_piql_same_policy_steps": round(cpl_run / piql_run, 3),
            "hidden": args.hidden,
            "steps_timed": args.steps,
            "rounds": args.rounds,
            **machine,
        }
    )
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "a") as out:
        for line in lines:
            print(json.dumps(line))
            out.write(json.dumps(line) + "\n")


def _read(tfds_io, jax, directory) -> float:
    """Seconds to read the dataset from its files and put it on the device."""
    start = time.perf_counter()
    data, _ = tfds_io.read_dataset(directory)
    jax.block_until_ready(jax.device_put(data))
    return time.perf_counter() - start


def _dataset_numbers(offline, jax, np, data, reads: list[float], args) -> dict:
    episodes = data.episodes
    real = int(np.asarray(episodes.length).sum())
    per_step = sum(np.dtype(getattr(episodes, name).dtype).itemsize * int(np.prod(getattr(episodes, name).shape[2:])) for name in offline.STEP_FIELDS)
    raw = real * per_step
    gather = jax.jit(lambda data, key: offline.segment_batch(data, key, 96).observation.sum())  # data: an argument, not a constant
    jax.block_until_ready(gather(data, jax.random.key(0)))
    keys = jax.random.split(jax.random.key(1), 200)
    start = time.perf_counter()
    for key in keys:
        gather(data, key)
    jax.block_until_ready(gather(data, keys[-1]))
    gathered = 96 * len(keys) / (time.perf_counter() - start)
    read = statistics.median(reads)
    return {
        "segments": data.segments.num_segments,
        "pairs": data.pairs.num_pairs,
        "read_and_device_put_s": round(read, 3),
        "segments_per_s_into_device": round(data.segments.num_segments / read),
        "device_bytes": offline.nbytes(data),
        "raw_step_bytes": raw,
        "memory_over_raw": round(offline.nbytes(data) / raw, 3),
        "segments_per_s_gathered_in_jit": round(gathered),
    }


def _seconds_per_step(jax, cpl, piql, args) -> dict[str, float]:
    """Medians over interleaved rounds of seconds per gradient step, each program compiled first."""
    from jaxrl_si.agents.cpl import CPLHyperparams
    from jaxrl_si.agents.piql import PIQLHyperparams

    cpl_hparams, piql_hparams = CPLHyperparams(), PIQLHyperparams()
    cpl_state = jax.jit(cpl.init)(cpl_hparams, jax.random.key(0))
    piql_state = jax.jit(piql.init)(piql_hparams, jax.random.key(0))

    def steps(agent, hparams, state):
        return jax.lax.scan(lambda s, _: agent.gradient_step(hparams, s), state, None, length=args.steps)[0].params

    programs = {
        "cpl": (jax.jit(lambda s: steps(cpl, cpl_hparams, s)), cpl_state),
        "piql_reward_model": (
            jax.jit(lambda p: piql.train_reward_model(piql_hparams, p, piql_state.observation, jax.random.key(1))[0]),
            piql_state.reward_model,
        ),
        "piql_iql": (jax.jit(lambda s: steps(piql, piql_hparams, s)), piql_state),
    }
    for fn, arg in programs.values():
        jax.block_until_ready(fn(arg))
    times: dict[str, list[float]] = {name: [] for name in programs}
    for _ in range(args.rounds):
        for name, (fn, arg) in programs.items():
            start = time.perf_counter()
            jax.block_until_ready(fn(arg))
            times[name].append((time.perf_counter() - start) / args.steps)
    return {name: statistics.median(values) for name, values in times.items()}


if __name__ == "__main__":
    main()
