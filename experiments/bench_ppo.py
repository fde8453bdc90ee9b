"""PPO throughput benchmark: compile time and env-steps/s, side by side, one JSON line each.

    python experiments/bench_ppo.py                          # jaxrl_si only
    python experiments/bench_ppo.py --purejaxrl /tmp/pjr --reference-python /tmp/pjr/venv/bin/python

Every measurement runs in a fresh subprocess (so compile times include no warm caches) and the
measurements are interleaved over `--rounds` rounds; the summary reports medians and the
ratio to PureJaxRL measured in the same run (this machine's speed drifts over minutes).

`--purejaxrl DIR` points at a scratch copy of PureJaxRL's `purejaxrl/` directory (with
`ppo.py` and `wrappers.py`) adapted to gymnax 1.x; it is never part of this repository.
This file imports nothing from jaxrl_si at module level, so the reference interpreter (which
need not have jaxrl_si installed) can run its workers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

CARTPOLE = dict(num_envs=4, rollout_length=128, num_epochs=4, num_minibatches=4, total_env_steps=500_000)
BRAX = dict(num_envs=64, rollout_length=32, num_epochs=4, num_minibatches=4, total_env_steps=65_536)


def _time_compiled(train, args, env_steps: int, repeats: int) -> dict:
    """First call (compile + run), then `repeats` timed runs; compile_s = first - median run.

    Goes through `jax.jit`'s dispatch rather than `.lower().compile()`: the AOT path hung
    (0 % CPU, in block_until_ready) on 2 of 3 eight-seed runs on jax 0.10.2 / CPU.
    """
    import jax

    jitted = jax.jit(train)
    start = time.perf_counter()
    jax.block_until_ready(jitted(*args))
    first_s = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(jitted(*args))
        times.append(time.perf_counter() - start)
    run_s = statistics.median(times)
    return {
        "compile_s": round(first_s - run_s, 2),
        "run_s": round(run_s, 3),
        "env_steps_per_s": round(env_steps / run_s),
    }


def worker_jaxrl_si(env: str, settings: dict, seeds: int, repeats: int) -> dict:
    import jax
    import jax.numpy as jnp

    from jaxrl_si.agents.ppo import PPOConfig, PPOHyperparams, make_train

    config = PPOConfig(env=env, **settings)
    train = make_train(config)
    # float32 leaves, as a sweep passes them (weak-typed Python floats would specialise the trace).
    hparams = jax.tree.map(jnp.float32, PPOHyperparams())
    if seeds == 1:
        args = (hparams, jax.random.key(0))
    else:
        train = jax.vmap(train, in_axes=(None, 0))
        args = (hparams, jax.random.split(jax.random.key(0), seeds))
    env_steps = config.num_updates * config.batch_size * seeds
    return _time_compiled(train, args, env_steps, repeats)


def worker_purejaxrl(directory: str, settings: dict, seeds: int, repeats: int) -> dict:
    import jax

    sys.path.insert(0, directory)
    from ppo import make_train  # noqa: PLC0415 (the scratch reference)

    config = {
        "LR": 2.5e-4, "NUM_ENVS": settings["num_envs"], "NUM_STEPS": settings["rollout_length"],
        "TOTAL_TIMESTEPS": settings["total_env_steps"], "UPDATE_EPOCHS": settings["num_epochs"],
        "NUM_MINIBATCHES": settings["num_minibatches"], "GAMMA": 0.99, "GAE_LAMBDA": 0.95, "CLIP_EPS": 0.2,
        "ENT_COEF": 0.01, "VF_COEF": 0.5, "MAX_GRAD_NORM": 0.5, "ACTIVATION": "tanh",
        "ENV_NAME": "CartPole-v1", "ANNEAL_LR": True, "DEBUG": False,
    }
    train = make_train(config)
    key = jax.random.PRNGKey(0)
    args = (key,) if seeds == 1 else (jax.random.split(key, seeds),)
    if seeds > 1:
        train = jax.vmap(train)
    steps = settings["total_env_steps"] // (settings["num_envs"] * settings["rollout_length"])
    env_steps = steps * settings["num_envs"] * settings["rollout_length"] * seeds
    return _time_compiled(train, args, env_steps, repeats)


def _measurements(args) -> list[dict]:
    plan = [
        {"name": "jaxrl_si/cartpole", "impl": "jaxrl_si", "env": "gymnax:CartPole-v1", "settings": CARTPOLE, "seeds": 1},
        {"name": "jaxrl_si/cartpole", "impl": "jaxrl_si", "env": "gymnax:CartPole-v1", "settings": CARTPOLE, "seeds": 8},
    ]
    if args.purejaxrl:
        plan += [
            {"name": "purejaxrl/cartpole", "impl": "purejaxrl", "settings": CARTPOLE, "seeds": 1},
            {"name": "purejaxrl/cartpole", "impl": "purejaxrl", "settings": CARTPOLE, "seeds": 8},
        ]
    if args.brax:
        plan += [
            {"name": f"jaxrl_si/brax-{args.brax}", "impl": "jaxrl_si", "env": f"brax:{args.brax}", "settings": BRAX, "seeds": 1},
        ]
    return plan


def _run_in_subprocess(measurement: dict, args) -> dict:
    python = args.reference_python if measurement["impl"] == "purejaxrl" else sys.executable
    spec = json.dumps({**measurement, "purejaxrl": args.purejaxrl, "repeats": args.repeats})
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    out = subprocess.run(
        [python, __file__, "--worker", spec], capture_output=True, text=True, env=env, check=False, timeout=args.timeout
    )
    if out.returncode != 0:
        raise RuntimeError(f"{measurement['name']} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _worker(spec_json: str) -> None:
    spec = json.loads(spec_json)
    if spec["impl"] == "jaxrl_si":
        result = worker_jaxrl_si(spec["env"], spec["settings"], spec["seeds"], spec["repeats"])
    else:
        result = worker_purejaxrl(spec["purejaxrl"], spec["settings"], spec["seeds"], spec["repeats"])
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--purejaxrl", default=None, help="scratch directory holding PureJaxRL's ppo.py (adapted)")
    parser.add_argument("--reference-python", default=sys.executable, help="interpreter with PureJaxRL's deps")
    parser.add_argument("--brax", default="inverted_pendulum", help="Brax env to time ('' to skip)")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds; medians are reported")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per compiled program")
    parser.add_argument("--timeout", type=float, default=900, help="seconds before a measurement is declared hung")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return _worker(args.worker)

    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    results: dict[tuple, list[dict]] = {}
    for round_index in range(args.rounds):
        for m in _measurements(args):
            try:
                r = _run_in_subprocess(m, args)
            except subprocess.TimeoutExpired:
                print(json.dumps({"name": m["name"], "seeds": m["seeds"], "round": round_index, "hung_after_s": args.timeout}), flush=True)
                continue
            key = (m["name"], m["seeds"])
            results.setdefault(key, []).append(r)
            print(json.dumps({"name": m["name"], "seeds": m["seeds"], "round": round_index, **r, "machine": machine}), flush=True)

    summary = {}
    for (name, seeds), runs in results.items():
        summary[(name, seeds)] = {
            field: statistics.median(r[field] for r in runs) for field in ("compile_s", "env_steps_per_s")
        }
        print(json.dumps({"name": name, "seeds": seeds, "round": "median", **summary[(name, seeds)]}))
    for seeds in (1, 8):
        ours, ref = summary.get(("jaxrl_si/cartpole", seeds)), summary.get(("purejaxrl/cartpole", seeds))
        if ours and ref:
            print(json.dumps({
                "name": "ratio jaxrl_si/purejaxrl cartpole", "seeds": seeds,
                "env_steps_per_s": round(ours["env_steps_per_s"] / ref["env_steps_per_s"], 3),
                "compile_s": round(ours["compile_s"] / ref["compile_s"], 3),
            }))


if __name__ == "__main__":
    main()
