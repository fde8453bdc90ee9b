"""PPO throughput benchmark: compile time and env-steps/s, side by side, one JSON line each.

    python experiments/bench_ppo.py                          # jaxrl_si only
    python experiments/bench_ppo.py --purejaxrl /tmp/pjr --reference-python /tmp/pjr/venv/bin/python
    python experiments/bench_ppo.py --baseline /tmp/before   # beside an earlier checkout of jaxrl_si
    python experiments/bench_ppo.py --sweep --rounds 2       # the sweep benchmarks below

Every measurement runs in a fresh subprocess (so compile times include no warm caches) and the
measurements are interleaved over `--rounds` rounds; the summary reports medians and the
ratio to PureJaxRL measured in the same run (this machine's speed drifts over minutes).

`--purejaxrl DIR` points at a scratch copy of PureJaxRL's `purejaxrl/` directory (with
`ppo.py` and `wrappers.py`) adapted to gymnax 1.x; it is never part of this repository.
`--sweep` measures a 16-setting learning-rate sweep instead (`--sweep --run-only`: the second
measurement alone, on one device, as on an accelerator):
- end to end: the sweep launched once from the command line (`python -m experiments.ppo
  --sweep ...`) against the same 16 settings launched one by one (each compiling and running);
- run only: the compiled sweep program (members over 2 host devices, and on 1) against 16 calls
  of the compiled single run, in one process;
- devices: the compiled sweep's env-steps/s with its members sharded over 1, 2, 4 and 8 fake CPU
  devices (`--xla_force_host_platform_device_count`).

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


COMPILE_EVENTS = {  # what JAX reports (jax.monitoring) for each program it builds
    "/jax/core/compile/jaxpr_trace_duration": "trace_s",
    "/jax/core/compile/jaxpr_to_mlir_module_duration": "lower_s",
    "/jax/core/compile/backend_compile_duration": "xla_compile_s",
}


def _time_compiled(train, args, env_steps: int, repeats: int) -> dict:
    """First call (compile + run), then `repeats` timed runs.

    `compile_s` is the time JAX reports spending on tracing, lowering and XLA compilation during
    the first call (`jax.monitoring` duration events), so run-time noise does not leak into it;
    `first_call_s - run_s`, the earlier measure, is kept beside it. Everything the first call
    does counts, e.g. an environment backend imported while tracing. Goes through `jax.jit`'s
    dispatch, as users do.
    """
    import jax

    durations = dict.fromkeys(COMPILE_EVENTS.values(), 0.0)

    def record(event, seconds, **_):
        if event in COMPILE_EVENTS:
            durations[COMPILE_EVENTS[event]] += seconds

    jitted = jax.jit(train)
    jax.monitoring.register_event_duration_secs_listener(record)
    start = time.perf_counter()
    jax.block_until_ready(jitted(*args))
    first_s = time.perf_counter() - start
    jax.monitoring.unregister_event_duration_listener(record)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(jitted(*args))
        times.append(time.perf_counter() - start)
    run_s = statistics.median(times)
    return {
        "compile_s": round(sum(durations.values()), 2),
        **{name: round(value, 2) for name, value in durations.items()},
        "first_call_minus_run_s": round(first_s - run_s, 2),
        "run_s": round(run_s, 3),
        "env_steps_per_s": round(env_steps / run_s),
    }


def _ppo_train(env: str, settings: dict):
    """`train(hparams, key)` of the jaxrl_si on the path, and its config.

    Checkouts from before the agent bundle (`--baseline` of an earlier commit) have
    `make_train(config)` instead of `PPO.build(config).train`.
    """
    from jaxrl_si.agents import ppo

    config = ppo.PPOConfig(env=env, **settings)
    return (ppo.PPO.build(config).train if hasattr(ppo, "PPO") else ppo.make_train(config)), config


def worker_jaxrl_si(env: str, settings: dict, seeds: int, repeats: int) -> dict:
    import jax
    import jax.numpy as jnp

    from jaxrl_si.agents.ppo import PPOHyperparams

    train, config = _ppo_train(env, settings)
    # float32 leaves, as a sweep passes them (weak-typed Python floats would specialise the trace).
    hparams = jax.tree.map(jnp.float32, PPOHyperparams())
    if seeds == 1:
        args = (hparams, jax.random.key(0))
    else:
        train = jax.vmap(train, in_axes=(None, 0))
        args = (hparams, jax.random.split(jax.random.key(0), seeds))
    env_steps = config.num_updates * config.batch_size * seeds
    return _time_compiled(train, args, env_steps, repeats)


SWEEP_LEARNING_RATES = [round(1e-4 * 10 ** (i / 10), 8) for i in range(16)]  # 1e-4 .. 3.2e-3


def worker_sweep(settings: dict, repeats: int, devices: int, single: bool) -> dict:
    """The 16-member sweep compiled once; with `single`, also 16 calls of the compiled single run."""
    import jax
    import jax.numpy as jnp

    from jaxrl_si.agents.ppo import PPO, PPOConfig, PPOHyperparams
    from jaxrl_si.parallel import make_mesh, shard_members

    config = PPOConfig(**settings)
    train = PPO.build(config).train
    members = len(SWEEP_LEARNING_RATES)
    hparams = jax.tree.map(lambda x: jnp.full((members,), x, jnp.float32), PPOHyperparams())
    hparams = hparams.replace(learning_rate=jnp.asarray(SWEEP_LEARNING_RATES, jnp.float32))
    keys = jax.random.split(jax.random.key(0), members)
    args = shard_members((hparams, keys), make_mesh(devices, 1)) if devices > 1 else (hparams, keys)
    env_steps = config.num_updates * config.batch_size * members
    result = {f"sweep_{k}": v for k, v in _time_compiled(jax.vmap(train), args, env_steps, repeats).items()}
    if single and devices > 1:  # the same sweep on one device, in this process, for the ratio
        one_device = _time_compiled(jax.vmap(train), (hparams, keys), env_steps, repeats)
        result["sweep_one_device_run_s"] = one_device["run_s"]
    if single:
        one = jax.jit(train)
        member = lambda m: (jax.tree.map(lambda x: x[m], hparams), keys[m])  # noqa: E731
        jax.block_until_ready(one(*member(0)))
        start = time.perf_counter()
        for m in range(members):
            jax.block_until_ready(one(*member(m)))
        result["sixteen_single_run_s"] = round(time.perf_counter() - start, 3)
        result["ratio_sweep_to_sixteen_runs"] = round(result["sweep_run_s"] / result["sixteen_single_run_s"], 3)
        if "sweep_one_device_run_s" in result:
            result["ratio_one_device_sweep_to_sixteen_runs"] = round(result["sweep_one_device_run_s"] / result["sixteen_single_run_s"], 3)
    return result


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
    cartpole = {**CARTPOLE, "total_env_steps": args.total_env_steps}
    plan = [
        {"name": "jaxrl_si/cartpole", "impl": "jaxrl_si", "env": "gymnax:CartPole-v1", "settings": cartpole, "seeds": 1},
        {"name": "jaxrl_si/cartpole", "impl": "jaxrl_si", "env": "gymnax:CartPole-v1", "settings": cartpole, "seeds": 8},
    ]
    if args.baseline:
        plan += [
            {"name": "baseline/cartpole", "impl": "jaxrl_si", "checkout": args.baseline, "env": "gymnax:CartPole-v1", "settings": cartpole, "seeds": seeds}
            for seeds in (1, 8)
        ]
    if args.purejaxrl:
        plan += [
            {"name": "purejaxrl/cartpole", "impl": "purejaxrl", "settings": cartpole, "seeds": 1},
            {"name": "purejaxrl/cartpole", "impl": "purejaxrl", "settings": cartpole, "seeds": 8},
        ]
    if args.brax:
        plan += [
            {"name": f"jaxrl_si/brax-{args.brax}", "impl": "jaxrl_si", "env": f"brax:{args.brax}", "settings": BRAX, "seeds": 1},
        ]
    return plan


def _sweep_measurements(args) -> list[dict]:
    small = {**CARTPOLE, "total_env_steps": 131_072}  # 32 updates a member: the device table
    # Two host devices: the sweep's members over both cores (XLA:CPU runs one device's small ops
    # on one core), against one device and 16 single runs, all in one process. On an
    # accelerator the host device count is moot: one device.
    run_only = {"name": "sweep/run-only", "impl": "sweep", "settings": CARTPOLE, "seeds": 16, "devices": 1 if args.run_only else 2, "single": True}
    if args.run_only:
        return [run_only]
    plan = [{"name": "sweep/end-to-end", "impl": "cli", "seeds": 16}, run_only]
    return plan + [
        {"name": f"sweep/devices-{d}", "impl": "sweep", "settings": small, "seeds": 16, "devices": d, "single": False}
        for d in (1, 2, 4, 8)
    ]


def _time_cli_launches(timeout: float) -> dict:
    """Wall time of the sweep launched once vs the 16 settings launched one by one (CLI)."""
    import tempfile

    def launch(*flags):
        with tempfile.TemporaryDirectory() as run_dir:
            start = time.perf_counter()
            subprocess.run([sys.executable, "-m", "experiments.ppo", *flags, "--run-dir", run_dir], check=True,
                           capture_output=True, timeout=timeout)  # fmt: skip
            return time.perf_counter() - start

    sweep_s = launch("--sweep", "learning_rate=" + ",".join(map(str, SWEEP_LEARNING_RATES)))
    separate_s = sum(launch("--hparams.learning-rate", str(lr)) for lr in SWEEP_LEARNING_RATES)
    return {"sweep_wall_s": round(sweep_s, 1), "sixteen_launches_wall_s": round(separate_s, 1),
            "ratio": round(sweep_s / separate_s, 3)}  # fmt: skip


def _run_in_subprocess(measurement: dict, args) -> dict:
    if measurement["impl"] == "cli":
        return _time_cli_launches(args.timeout)
    python = args.reference_python if measurement["impl"] == "purejaxrl" else sys.executable
    spec = json.dumps({**measurement, "purejaxrl": args.purejaxrl, "repeats": args.repeats})
    # A baseline checkout is measured by this file's worker, importing the checkout's package.
    checkout = os.path.abspath(measurement.get("checkout", os.getcwd()))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [checkout, os.environ.get("PYTHONPATH")]))}
    if measurement["impl"] == "sweep":
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={measurement['devices']}"
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
    elif spec["impl"] == "sweep":
        result = worker_sweep(spec["settings"], spec["repeats"], spec["devices"], spec["single"])
    else:
        result = worker_purejaxrl(spec["purejaxrl"], spec["settings"], spec["seeds"], spec["repeats"])
    import jax

    print(json.dumps({**result, "device": f"{jax.default_backend()}: {jax.devices()[0].device_kind}", "jax": jax.__version__}))


def _emit(line: dict, out: str | None) -> None:
    """Print one JSON line, and append it to `out` when given."""
    print(json.dumps(line), flush=True)
    if out:
        os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
        with open(out, "a", encoding="utf-8") as f:
            f.write(json.dumps(line) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--purejaxrl", default=None, help="scratch directory holding PureJaxRL's ppo.py (adapted)")
    parser.add_argument("--reference-python", default=sys.executable, help="interpreter with PureJaxRL's deps")
    parser.add_argument("--baseline", default=None, help="another jaxrl_si checkout (e.g. a git worktree of an earlier commit) to time beside this one")
    parser.add_argument("--brax", default="inverted_pendulum", help="Brax env to time ('' to skip)")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds; medians are reported")
    parser.add_argument("--total-env-steps", type=int, default=CARTPOLE["total_env_steps"],
                        help="CartPole run length; the compiled program does not depend on it, so a short run times compilation in many quick rounds")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per compiled program")
    parser.add_argument("--timeout", type=float, default=900, help="seconds before a measurement is declared hung")
    parser.add_argument("--sweep", action="store_true", help="run the sweep benchmarks instead")
    parser.add_argument("--run-only", action="store_true", help="with --sweep: only the compiled sweep against 16 compiled runs, on one device")
    parser.add_argument("--out", default=None, help="also append the JSON lines to this file")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return _worker(args.worker)

    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    results: dict[tuple, list[dict]] = {}
    for round_index in range(args.rounds):
        for m in _sweep_measurements(args) if args.sweep else _measurements(args):
            try:
                r = _run_in_subprocess(m, args)
            except subprocess.TimeoutExpired:
                _emit({"name": m["name"], "seeds": m["seeds"], "round": round_index, "hung_after_s": args.timeout}, args.out)
                continue
            except RuntimeError as error:  # a worker failed: say so, measure the rest
                _emit({"name": m["name"], "seeds": m["seeds"], "round": round_index, "failed": str(error)[-600:]}, args.out)
                continue
            key = (m["name"], m["seeds"])
            results.setdefault(key, []).append(r)
            _emit({"name": m["name"], "seeds": m["seeds"], "round": round_index, **r, "machine": machine}, args.out)

    summary = {}
    for (name, seeds), runs in results.items():
        fields = [k for k, v in runs[0].items() if isinstance(v, (int, float))]
        summary[(name, seeds)] = {field: statistics.median(r[field] for r in runs) for field in fields}
        _emit({"name": name, "seeds": seeds, "round": "median", **summary[(name, seeds)]}, args.out)
    for seeds in (1, 8):
        for other in ("purejaxrl", "baseline"):
            ours, ref = summary.get(("jaxrl_si/cartpole", seeds)), summary.get((f"{other}/cartpole", seeds))
            if ours and ref:
                _emit({
                    "name": f"ratio jaxrl_si/{other} cartpole", "seeds": seeds,
                    "env_steps_per_s": round(ours["env_steps_per_s"] / ref["env_steps_per_s"], 3),
                    "compile_s": round(ours["compile_s"] / ref["compile_s"], 3),
                }, args.out)


if __name__ == "__main__":
    main()
