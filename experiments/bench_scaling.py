"""Scaling benchmark: a sharded PPO sweep and data-parallel PPO over 1, 2, 4 and 8 devices, and
2 processes x 4 devices against 1 process x 8 devices.

    python -m experiments.bench_scaling                          # the backend's sizes, 1 2 4 8 devices, 2 x 4
    python -m experiments.bench_scaling --size tiny --devices 1 2 --no-processes   # the smoke test

Two workloads, each PPO on CartPole advanced by `jaxrl_si.loop.Trainer`'s compiled iteration
(`jit(vmap(iterate))`, `--size` sets their sizes, `SIZES`):
- **sweep**: M members over a `(D, 1)` mesh, members split over `sweep`;
- **data**: one member over a `(1, D)` mesh, its env batch and minibatches split over `data`
  (the gradients all-reduced).

Each device count D runs in a fresh process: on CPU with D fake host devices
(`--xla_force_host_platform_device_count`, which share the machine's cores), on an accelerator
with its first D devices (a count above what it has is a row marked not run). In each, every
program is called until a call compiles nothing (compile seconds and programs compiled
reported apart), then timed `--repeats` times to `block_until_ready`; the median gives env
steps/s, the speed-up over the same workload on 1 device, and the efficiency per device
(speed-up / D).

**Processes**: two processes of 4 fake CPU devices each, joined by `jax.distributed.initialize`
(localhost, a free port, gloo), run the same workloads on the same 8-device global mesh as one
process of 8 fake CPU devices; both throughputs and their ratio (2 x 4 over 1 x 8). Always on
CPU (a 2 x 4 run on accelerators would need 8 of them). Nothing is fetched from non-addressable
shards: only process 0 reports, after `block_until_ready`.

Rows (with the machine, backend and versions) are appended to `--out` as JSON lines; the
tables are written to the same path with `.md`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROCESSES, DEVICES_PER_PROCESS = 2, 4  # the multi-process layout, against 1 x 8
PEER_TIMEOUT_S = 60  # a missing peer aborts its partner after this long (jax.distributed)


@dataclasses.dataclass(frozen=True)
class Workload:
    """One timed program: `members` PPO CartPole members of `num_envs` envs, `updates` updates per call."""

    name: str  # "sweep": members over the mesh's `sweep` axis; "data": the env batch over `data`
    members: int
    num_envs: int
    rollout_length: int
    num_minibatches: int
    hidden_sizes: tuple[int, ...]
    updates: int  # updates per timed call (one iteration of the trainer)

    def mesh_shape(self, devices: int) -> tuple[int, int]:
        return (devices, 1) if self.name == "sweep" else (1, devices)

    @property
    def env_steps_per_call(self) -> int:
        return self.members * self.num_envs * self.rollout_length * self.updates


SIZES = {  # sizes divide 8 devices: members (sweep), num_envs and minibatch rows (data)
    "tiny": (Workload("sweep", 8, 2, 8, 1, (16,), 2), Workload("data", 1, 8, 8, 2, (16,), 2)),
    "cpu": (Workload("sweep", 16, 4, 128, 4, (64, 64), 4), Workload("data", 1, 64, 32, 4, (64, 64), 4)),
    "accelerator": (Workload("sweep", 64, 16, 128, 4, (64, 64), 8), Workload("data", 1, 4096, 32, 4, (64, 64), 8)),
}


def speedup_and_efficiency(rate: float, one_device_rate: float, devices: int) -> tuple[float, float]:
    """Speed-up `rate / one_device_rate` and efficiency per device `speed-up / devices`.

    >>> speedup_and_efficiency(300.0, 100.0, 4)
    (3.0, 0.75)
    """
    speedup = rate / one_device_rate
    return speedup, speedup / devices


# --- the worker: one process of one layout ----------------------------------------------------------


def _time_workload(workload: Workload, devices: int, repeats: int) -> dict:
    """Env steps/s of `workload` on the first `devices` devices (all processes' devices together)."""
    import jax
    import jax.numpy as jnp

    from jaxrl_si import loop
    from jaxrl_si.agents.ppo import PPO, PPOConfig, PPOHyperparams
    from jaxrl_si.parallel import make_mesh, shard_members

    batch = workload.num_envs * workload.rollout_length
    calls = repeats + 4  # the run is long enough for every call (the learning rate anneals over it)
    config = PPOConfig(num_envs=workload.num_envs, rollout_length=workload.rollout_length, num_minibatches=workload.num_minibatches,
                       hidden_sizes=workload.hidden_sizes, total_env_steps=batch * workload.updates * calls)  # fmt: skip
    mesh = make_mesh(*workload.mesh_shape(devices), devices=jax.devices()[:devices])
    trainer = loop.Trainer.build(PPO.build, config, workload.updates, mesh=mesh)
    init, iterate = trainer.compiled
    hparams = jax.tree.map(lambda x: jnp.full((workload.members,), x, jnp.float32), PPOHyperparams())
    hparams, keys = shard_members((hparams, jax.random.split(jax.random.key(0), workload.members)), mesh)
    state, compile_s, programs = _warm_up(iterate, hparams, init(hparams, keys))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        state = jax.block_until_ready(iterate(hparams, state)[0])
        times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    return {
        "workload": workload.name, "mesh": list(workload.mesh_shape(devices)), "members": workload.members,
        "num_envs": workload.num_envs, "rollout_length": workload.rollout_length, "updates_per_call": workload.updates,
        "env_steps_per_call": workload.env_steps_per_call, "run_s": round(seconds, 4),
        "env_steps_per_s": round(workload.env_steps_per_call / seconds), "compile_s": round(compile_s, 2), "programs_compiled": programs,
    }  # fmt: skip


def _warm_up(iterate, hparams, state, max_calls: int = 4):
    """Call `iterate` until a call compiles nothing: `(state, compile seconds, programs compiled)`.

    The first call's output can be laid out unlike its input (a sweep's `init` returns its state
    replicated, `iterate` member-sharded), so the second call may compile another program, as
    in `loop.run`.
    """
    import jax

    compiled: list[float] = []

    def record(event, seconds, **_):
        if event == "/jax/core/compile/backend_compile_duration":
            compiled.append(seconds)

    jax.monitoring.register_event_duration_secs_listener(record)
    try:
        for _ in range(max_calls):
            before = len(compiled)
            state = jax.block_until_ready(iterate(hparams, state)[0])
            if len(compiled) == before:
                break
    finally:
        jax.monitoring.unregister_event_duration_listener(record)
    return state, sum(compiled), len(compiled)


def _worker(spec: dict) -> None:
    """Time every workload of `spec["size"]` on `spec["devices"]` devices; print one JSON line (process 0)."""
    import jax

    if spec.get("process_id") is not None:  # must precede any other JAX call
        jax.distributed.initialize(f"localhost:{spec['port']}", num_processes=PROCESSES, process_id=spec["process_id"],
                                   initialization_timeout=PEER_TIMEOUT_S)  # fmt: skip
    from experiments.report import machine

    described = machine("flax", "optax", "gymnax")
    if jax.device_count() < spec["devices"]:
        result = {"not_run": f"only {jax.device_count()} {jax.default_backend()} device(s)", "machine": described}
    else:
        size = spec["size"] if spec["size"] != "auto" else ("cpu" if jax.default_backend() == "cpu" else "accelerator")
        rows = [{**_time_workload(w, spec["devices"], spec["repeats"]), "size": size} for w in SIZES[size]]
        result = {"rows": rows, "machine": described}
    if jax.process_index() == 0:
        print(json.dumps(result), flush=True)
    if spec.get("process_id") is not None:
        jax.distributed.shutdown()


# --- the parent: one subprocess per layout -------------------------------------------------------------


def _worker_env(devices_per_process: int, *, cpu: bool) -> dict[str, str]:
    """This environment with `devices_per_process` XLA:CPU host devices (other XLA flags kept)."""
    flags = re.sub(r"--xla_force_host_platform_device_count=\S+", "", os.environ.get("XLA_FLAGS", "")).split()
    env = {**os.environ, "XLA_FLAGS": " ".join([f"--xla_force_host_platform_device_count={devices_per_process}", *flags])}
    return {**env, "JAX_PLATFORMS": "cpu"} if cpu else env


def _command(spec: dict) -> list[str]:
    return [sys.executable, "-m", "experiments.bench_scaling", "--worker", json.dumps(spec)]


def _result(stdout: str, stderr: str, returncode: int) -> dict:
    """The worker's JSON line, or `{"failed": ...}` with the end of its stderr."""
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    if returncode != 0 or not lines:
        return {"failed": f"exit status {returncode}: {stderr.strip()[-600:]}"}
    return json.loads(lines[-1])


def _cpu_size(size: str) -> str:
    """The sizes of the CPU-only runs (2 x 4 against 1 x 8): the accelerator's would take too long."""
    return "tiny" if size == "tiny" else "cpu"


def _run_one_process(devices: int, args, *, cpu: bool = False) -> dict:
    """The worker on `devices` devices in one fresh process (`cpu`: on CPU host devices)."""
    spec = {"devices": devices, "size": _cpu_size(args.size) if cpu else args.size, "repeats": args.repeats}
    try:
        out = subprocess.run(_command(spec), cwd=ROOT, env=_worker_env(devices, cpu=cpu), capture_output=True, text=True, timeout=args.timeout, check=False)
    except subprocess.TimeoutExpired:
        return {"failed": f"timed out after {args.timeout} s"}
    return _result(out.stdout, out.stderr, out.returncode)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _run_two_processes(args) -> dict:
    """The worker as 2 processes x 4 CPU devices joined into one 8-device runtime; process 0's result."""
    port = _free_port()
    env = _worker_env(DEVICES_PER_PROCESS, cpu=True)
    specs = [{"devices": PROCESSES * DEVICES_PER_PROCESS, "size": _cpu_size(args.size), "repeats": args.repeats, "process_id": i, "port": port} for i in range(PROCESSES)]
    procs = [subprocess.Popen(_command(s), cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for s in specs]
    try:
        outputs = [p.communicate(timeout=args.timeout) for p in procs]
    except subprocess.TimeoutExpired:
        return {"failed": f"timed out after {args.timeout} s"}
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    failed = [_result(*out, p.returncode) for out, p in zip(outputs, procs, strict=True) if p.returncode]
    return failed[0] if failed else _result(*outputs[0], procs[0].returncode)


def scaling_rows(results: dict[int, dict]) -> list[dict]:
    """One row per (workload, device count) from each count's worker result, with speed-up and efficiency.

    Speed-up is against the same workload's 1-device row; a count that was not run (or failed)
    gives a row saying why.
    """
    rows, base = [], {}
    for devices, result in sorted(results.items()):
        if "rows" not in result:
            rows.append({"measure": "scaling", "devices": devices, "processes": 1, **{k: v for k, v in result.items() if k != "machine"}})
            continue
        for row in result["rows"]:
            base.setdefault(row["workload"], row["env_steps_per_s"] if devices == 1 else None)
            row = {"measure": "scaling", "devices": devices, "processes": 1, "backend": result["machine"]["backend"], **row}
            if base[row["workload"]]:
                speedup, efficiency = speedup_and_efficiency(row["env_steps_per_s"], base[row["workload"]], devices)
                row.update(speedup=round(speedup, 3), efficiency=round(efficiency, 3))
            rows.append(row)
    return rows


def process_rows(one: dict, two: dict) -> list[dict]:
    """Per workload: 1 x 8 against 2 x 4 env steps/s and their ratio (or why it is missing)."""
    layout = {"one_process": f"1 x {PROCESSES * DEVICES_PER_PROCESS}", "two_processes": f"{PROCESSES} x {DEVICES_PER_PROCESS}"}
    if "rows" not in one or "rows" not in two:
        why = one.get("failed") or one.get("not_run") or two.get("failed") or two.get("not_run")
        return [{"measure": "processes", **layout, "failed": why}]
    rows = []
    for a, b in zip(one["rows"], two["rows"], strict=True):
        rows.append({
            "measure": "processes", "workload": a["workload"], **layout, "backend": "cpu", "mesh": a["mesh"],
            "one_process_env_steps_per_s": a["env_steps_per_s"], "two_processes_env_steps_per_s": b["env_steps_per_s"],
            "two_over_one": round(b["env_steps_per_s"] / a["env_steps_per_s"], 3),
        })  # fmt: skip
    return rows


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=("auto", *SIZES), default="auto", help="workload sizes (auto: cpu on CPU, accelerator otherwise)")
    parser.add_argument("--devices", type=int, nargs="+", default=[1, 2, 4, 8], help="device counts (1 is the speed-ups' base)")
    parser.add_argument("--no-processes", dest="processes", action="store_false", help="skip 2 processes x 4 devices against 1 x 8")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per program (median)")
    parser.add_argument("--timeout", type=float, default=600, help="seconds before a layout's process is killed")
    parser.add_argument("--out", default="experiments/results/bench_scaling.jsonl", help="JSON lines appended here; the tables go to .md beside it")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if 1 not in args.devices:
        parser.error("--devices must include 1 (the base of the speed-ups)")
    return args


def main(argv: list[str] | None = None) -> list[dict]:
    args = _parse(argv)
    if args.worker:
        _worker(json.loads(args.worker))
        return []
    load = os.getloadavg()[0]
    results: dict[int, dict] = {}
    for devices in sorted(set(args.devices)):
        fewer = next((r for r in results.values() if "not_run" in r), None)  # an accelerator with fewer devices
        results[devices] = fewer or _run_one_process(devices, args)
        print(f"{devices} device(s): {_summary(results[devices])}", file=sys.stderr, flush=True)
    rows = scaling_rows(results)
    if args.processes:
        eight = PROCESSES * DEVICES_PER_PROCESS
        one = results.get(eight, {})
        if "rows" not in one or one["machine"]["backend"] != "cpu" or one["rows"][0]["size"] != _cpu_size(args.size):
            one = _run_one_process(eight, args, cpu=True)  # no 1 x 8 CPU row of these sizes to compare with
        two = _run_two_processes(args)
        print(f"{PROCESSES} x {DEVICES_PER_PROCESS} devices: {_summary(two)}", file=sys.stderr, flush=True)
        rows += process_rows(one, two)
    described = next((r["machine"] for r in results.values() if "machine" in r), {})
    described = {k: v for k, v in described.items() if k not in ("devices", "xla_flags")}  # each worker had its own
    context = {**described, "load_1m_before": round(load, 2), "load_1m_after": round(os.getloadavg()[0], 2), "repeats": args.repeats}
    _write(rows, context, args.out)
    return rows


def _summary(result: dict) -> str:
    if "rows" not in result:
        return result.get("failed") or result.get("not_run", "")
    return ", ".join(f"{r['workload']} {r['env_steps_per_s']:,} env-steps/s" for r in result["rows"])


# --- output ----------------------------------------------------------------------------------------------


def _write(rows: list[dict], context: dict, out: str) -> None:
    """Append the rows (with the context) to `out` as JSON lines; write the tables to `out` with `.md`."""
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    with open(out, "a", encoding="utf-8") as f:
        f.writelines(json.dumps({**context, **row}) + "\n" for row in rows)
    markdown = os.path.splitext(out)[0] + ".md"
    with open(markdown, "w", encoding="utf-8") as f:
        f.write(markdown_tables(rows, context))
    print(markdown_tables(rows, context))


def markdown_tables(rows: list[dict], context: dict) -> str:
    """The scaling table and the processes table, under a header naming the machine."""
    c = context
    lines = [
        (f"Measured {c.get('date', '?')} on {c.get('machine', '?')} ({c.get('cpus', '?')} cores), backend {c.get('backend', '?')} "
         f"({c.get('device_kind', '?')}), jax {c.get('jax', '?')}, jaxlib {c.get('jaxlib', '?')}, flax {c.get('flax', '?')}, "
         f"gymnax {c.get('gymnax', '?')}; load average {c['load_1m_before']} before, {c['load_1m_after']} after; "
         f"median of {c['repeats']} calls after compilation."),
        ("On CPU the devices are fake host devices sharing the machine's cores: the table shows the script "
         "and the overheads, not the speed-up real devices would give."),
        "",
        "| workload | backend | processes x devices | mesh (sweep, data) | env steps / call | env-steps/s | speed-up | efficiency / device | iterate's compile s (programs) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    for r in (r for r in rows if r["measure"] == "scaling"):
        if "env_steps_per_s" not in r:
            lines.append(f"| - | - | 1 x {r['devices']} | - | - | not run: {r.get('not_run') or r.get('failed')} | | | |")
            continue
        lines.append(
            f"| {r['workload']} ({r['members']} x {r['num_envs']} envs) | {r['backend']} | 1 x {r['devices']} | {tuple(r['mesh'])} | {r['env_steps_per_call']:,} "
            f"| {r['env_steps_per_s']:,} | {r.get('speedup', '-')} | {r.get('efficiency', '-')} | {r['compile_s']} ({r['programs_compiled']}) |"
        )
    processes = [r for r in rows if r["measure"] == "processes"]
    if processes:
        lines += ["", f"| workload (CPU host devices) | 1 x 8 env-steps/s | {PROCESSES} x {DEVICES_PER_PROCESS} env-steps/s | {PROCESSES} x {DEVICES_PER_PROCESS} / 1 x 8 |", "|---|---|---|---|"]
        for r in processes:
            if "failed" in r:
                lines.append(f"| - | failed: {r['failed']} | | |")
            else:
                lines.append(f"| {r['workload']} | {r['one_process_env_steps_per_s']:,} | {r['two_processes_env_steps_per_s']:,} | {r['two_over_one']} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
