"""SPO benchmark: its cost per env step against plain PPO, and the comparison sweep as one program.

    python experiments/bench_spo.py                 # both measurements, 3 interleaved rounds
    python experiments/bench_spo.py --rounds 5 --updates 16

1. **Cost per env step** (`spo_vs_ppo`): the same Pendulum learner (`PENDULUM_PPO`), the same
   member count, `jit(vmap(U updates))`, run after compilation: PreferencePPO with only `spo`
   compiled in against PPO, and (for information) with only `rlhf`. Target: SPO <= 1.15x PPO.
2. **The comparison as one program** (`sweep_vs_one_by_one`): the 54 members of `python -m
   experiments.spo` (ppo, and spo and rlhf under 4 oracles, 6 seeds) as one vmapped program
   with all three methods compiled in, members over the host devices, against the same 45
   members run one by one, each with the one-method, one-oracle program that is all it needs
   (each distinct program compiled once and reused for its 6 seeds). Reported with and
   without compilation. Target: <= 0.5x.

All of it runs in one process on `--devices` XLA:CPU host devices (default: one per core), the
measurements interleaved over `--rounds` rounds so that drifts of the machine's speed hit both
sides; medians and the ratios of medians are printed as JSON lines and written to `--out`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--updates", type=int, default=8, help="updates timed per call")
    parser.add_argument("--members", type=int, default=8, help="members of the SPO vs PPO measurement")
    parser.add_argument("--devices", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out", default="experiments/results/bench_spo.jsonl")
    return parser.parse_args()


def main() -> None:
    args = _parse()
    if "XLA_FLAGS" not in os.environ and not os.environ.get("JAX_PLATFORMS", "cpu").startswith(("gpu", "cuda", "tpu")):
        os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={args.devices}"
    import dataclasses

    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository root, for `experiments`
    import jax
    import jax.numpy as jnp

    from experiments.spo.experiment import COMPARISON, comparison_settings
    from jaxrl_si import loop, sweep
    from jaxrl_si.agents.ppo import PPO, PPOHyperparams
    from jaxrl_si.agents.preference_ppo import PreferencePPO, PreferencePPOConfig, PreferencePPOHyperparams
    from jaxrl_si.parallel import default_mesh

    updates = args.updates
    config = dataclasses.replace(COMPARISON.ppo, total_env_steps=updates * COMPARISON.ppo.batch_size)

    def program(agent, members: int):
        """(init, run): jit(vmap) of init and of `updates` updates, members over the devices."""
        trainer = loop.Trainer(agent, updates, mesh=default_mesh(members))
        return trainer.compiled

    def timed(fn, *fn_args) -> float:
        start = time.perf_counter()
        jax.block_until_ready(fn(*fn_args))
        return time.perf_counter() - start

    # 1. Cost per env step: SPO (and RLHF) against PPO, same learner and member count.
    members = args.members
    keys = jax.random.split(jax.random.key(0), members)
    agents = {
        "ppo": (PPO.build(config), PPOHyperparams(learning_rate=1e-3, gamma=0.9, ent_coef=0.0)),
        "spo": (PreferencePPO.build(PreferencePPOConfig(ppo=config, methods=("spo",))), PreferencePPOHyperparams()),
        "rlhf": (PreferencePPO.build(PreferencePPOConfig(ppo=config, methods=("rlhf",))), PreferencePPOHyperparams()),
    }
    compiled = {}
    for name, (agent, hparams) in agents.items():
        init, run = program(agent, members)
        stacked = jax.tree.map(lambda x: jnp.full((members,), x, jnp.float32), hparams)
        state = init(stacked, keys)
        jax.block_until_ready(run(stacked, state))  # compile and warm up
        compiled[name] = (run, stacked, state)

    # 2. The comparison: one program against the members one by one.
    settings = comparison_settings(COMPARISON)
    seeds = 6  # as the CLI: 54 members divide 2 cores
    comparison = PreferencePPOConfig(ppo=config, methods=COMPARISON.methods, oracles=COMPARISON.oracles)
    member_hparams = sweep.member_hparams(PreferencePPOHyperparams(), settings, seeds)
    member_keys = sweep.member_keys(0, len(settings), seeds)
    total = len(member_keys)
    zeros = jnp.zeros((1,), jnp.float32)

    def one_program() -> dict:
        start = time.perf_counter()
        init, run = program(PreferencePPO.build(comparison), total)  # a new agent: compiled afresh
        state = init(member_hparams, member_keys)
        jax.block_until_ready(run(member_hparams, state))
        with_compile = time.perf_counter() - start
        return {"with_compile_s": with_compile, "run_s": timed(run, member_hparams, state)}

    def one_by_one() -> dict:
        """Each member with its own one-method, one-oracle program; a program is built and
        compiled once per (method, oracle) and reused for that setting's seeds."""
        with_compile, run_only = 0.0, 0.0
        for index, setting in enumerate(settings):
            method = comparison.methods[int(setting["method"])]
            oracle = comparison.oracles[int(setting["oracle"])]
            start = time.perf_counter()
            init, run = program(PreferencePPO.build(dataclasses.replace(comparison, methods=(method,), oracles=(oracle,))), 1)
            for seed in range(seeds):
                m = index * seeds + seed
                own = jax.tree.map(lambda x, m=m: x[m : m + 1], member_hparams).replace(method=zeros, oracle=zeros)  # its only method and oracle
                state = jax.block_until_ready(init(own, member_keys[m : m + 1]))
                if seed == 0:  # the first call compiles; its time counts with the build
                    jax.block_until_ready(run(own, state))
                    with_compile += time.perf_counter() - start
                seconds = timed(run, own, state)
                with_compile += seconds if seed else 0.0
                run_only += seconds
        return {"with_compile_s": with_compile, "run_s": run_only}

    samples: dict[str, list[float]] = {}
    for round_ in range(args.rounds):
        for name, (run, stacked, state) in compiled.items():
            samples.setdefault(f"{name}_run_s", []).append(timed(run, stacked, state))
        for label, fn in (("sweep", one_program), ("one_by_one", one_by_one)):
            for key, value in fn().items():
                samples.setdefault(f"{label}_{key}", []).append(value)
        print(f"round {round_ + 1}/{args.rounds}: " + json.dumps({k: round(v[-1], 3) for k, v in samples.items()}), file=sys.stderr)

    median = {k: statistics.median(v) for k, v in samples.items()}
    env_steps = updates * config.batch_size * members
    machine = {"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(), "devices": jax.device_count(), "backend": jax.default_backend(), "jax": jax.__version__}
    lines = [
        {
            "measurement": "spo_vs_ppo",
            "members": members,
            "updates": updates,
            "env_steps_per_s": {name: round(env_steps / median[f"{name}_run_s"]) for name in compiled},
            "spo_over_ppo_time": round(median["spo_run_s"] / median["ppo_run_s"], 3),
            "rlhf_over_ppo_time": round(median["rlhf_run_s"] / median["ppo_run_s"], 3),
        },
        {
            "measurement": "sweep_vs_one_by_one",
            "members": total,
            "updates": updates,
            "sweep_s": {"with_compile": round(median["sweep_with_compile_s"], 2), "run": round(median["sweep_run_s"], 2)},
            "one_by_one_s": {"with_compile": round(median["one_by_one_with_compile_s"], 2), "run": round(median["one_by_one_run_s"], 2)},
            "ratio_with_compile": round(median["sweep_with_compile_s"] / median["one_by_one_with_compile_s"], 3),
            "ratio_run": round(median["sweep_run_s"] / median["one_by_one_run_s"], 3),
        },
    ]
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "a", encoding="utf-8") as f:
        for line in lines:
            line = {**line, **machine, "rounds": args.rounds, "date": time.strftime("%Y-%m-%d")}
            print(json.dumps(line))
            f.write(json.dumps(line) + "\n")


if __name__ == "__main__":
    main()
