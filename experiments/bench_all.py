"""Every benchmark's most informative measurement, within a time budget, on whatever backend is here.

    python -m experiments.bench_all --budget-s 540 --out runs/device/bench_all   # a lent accelerator
    python -m experiments.bench_all --budget-s 300 --out runs/bench_all          # CPU, quick sizes
    python -m experiments.bench_all --tiny --budget-s 150 --out /tmp/bench_all   # CI: the first entries that fit

`ENTRIES` lists one measurement per benchmark in `experiments/`, most informative first: its
flags and estimated seconds at three sizes (`tiny` for CI, `cpu` the quick sizes, `accelerator`
the device_check scripts' sizes, some trimmed), and the headline figures to read from the JSON
lines it writes. The size follows the backend (found by a probe process) unless `--tiny` or
`--size` says otherwise. Each entry runs as a subprocess writing to `OUT/raw/` (never to the
committed `experiments/results/`), with a timeout of twice its estimate plus 30 s or what is
left of the budget, whichever is less. An entry whose estimate exceeds what is left is skipped
and one that runs over is killed (its whole process group); both are recorded with the reason,
and the run goes on to the next. The budget covers everything, this script's own work included:
it stops before `--budget-s`.

Writes `OUT/bench_all.json` (the machine, budget, and every entry with its command, status,
seconds and figures) and `OUT/bench_all.md` (a header and one table: bench, figure, value,
unit), and prints a progress line per entry. A bad budget or entry name is one line
`error: ...` on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from typing import NoReturn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESERVE_S = 5.0  # kept back for killing a process, reading its lines and writing the outputs
PROBE_TIMEOUT_S = 60.0
SIZES = ("tiny", "cpu", "accelerator")


@dataclasses.dataclass(frozen=True)
class Figure:
    """A number read from a bench's JSON lines: the last line matching `where`, the value at the
    dotted `path`; `label` may name fields of that line (`{devices}`)."""

    label: str
    where: Mapping[str, object]
    path: str
    unit: str

    def read(self, lines: list[dict]) -> dict:
        """`{"figure", "value", "unit"}`; value None when no line has it."""
        for line in reversed(lines):
            if all(line.get(k) == v for k, v in self.where.items()):
                value = _at(line, self.path)
                if value is not None:
                    return {"figure": self.label.format(**line), "value": value, "unit": self.unit}
        return {"figure": self.label, "value": None, "unit": self.unit}


def _at(line: dict, path: str):
    for key in path.split("."):
        if not isinstance(line, dict) or key not in line:
            return None
        line = line[key]
    return line


@dataclasses.dataclass(frozen=True)
class Entry:
    """One benchmark's measurement: its command, and per size its flags and estimated seconds."""

    name: str
    command: tuple[str, ...]  # after the interpreter; `--out FILE` is appended
    sizes: Mapping[str, tuple[tuple[str, ...], float]]  # size -> (flags, estimated seconds)
    figures: tuple[Figure, ...]

    def argv(self, size: str, out: str) -> list[str]:
        return [sys.executable, *self.command, *self.sizes[size][0], "--out", out]


PPO_MEDIAN = {"name": "jaxrl_si/cartpole", "round": "median"}
SCALING = {"measure": "scaling"}
# Estimates: tiny and cpu measured on a 2-core CPU shared with other jobs (load average ~10) on
# 2026-11-30; accelerator: guesses from the device_check scripts' timeouts, not yet measured.
ENTRIES = (
    Entry("ppo", ("experiments/bench_ppo.py",), {
        "tiny": (("--brax", "", "--rounds", "1", "--repeats", "1", "--total-env-steps", "4096"), 70),
        "cpu": (("--brax", "", "--rounds", "1", "--repeats", "1", "--total-env-steps", "65536"), 80),
        "accelerator": (("--brax", "", "--rounds", "1", "--repeats", "2"), 90),
    }, (
        Figure("CartPole env-steps/s, 1 seed", {**PPO_MEDIAN, "seeds": 1}, "env_steps_per_s", "env-steps/s"),
        Figure("CartPole env-steps/s, 8 seeds vmapped", {**PPO_MEDIAN, "seeds": 8}, "env_steps_per_s", "env-steps/s"),
        Figure("compile, 1 seed", {**PPO_MEDIAN, "seeds": 1}, "compile_s", "s"),
        Figure("compile, 8 seeds", {**PPO_MEDIAN, "seeds": 8}, "compile_s", "s"),
        Figure("env-steps/s over PureJaxRL's, 1 seed", {"name": "ratio jaxrl_si/purejaxrl cartpole", "seeds": 1}, "env_steps_per_s", "x"),
        Figure("env-steps/s over PureJaxRL's, 8 seeds", {"name": "ratio jaxrl_si/purejaxrl cartpole", "seeds": 8}, "env_steps_per_s", "x"),
    )),
    Entry("scaling", ("-m", "experiments.bench_scaling"), {
        "tiny": (("--size", "tiny", "--devices", "1", "2", "--no-processes", "--repeats", "2"), 100),
        "cpu": (("--size", "cpu", "--devices", "1", "8", "--repeats", "2"), 230),  # the headline is at 8 devices
        "accelerator": (("--size", "accelerator", "--repeats", "3"), 150),
    }, (
        Figure("sweep: efficiency / device at {devices} devices ({backend})", {**SCALING, "workload": "sweep"}, "efficiency", "fraction"),
        Figure("data-parallel: efficiency / device at {devices} devices ({backend})", {**SCALING, "workload": "data"}, "efficiency", "fraction"),
        Figure("sweep: env-steps/s on 1 device ({backend})", {**SCALING, "workload": "sweep", "devices": 1}, "env_steps_per_s", "env-steps/s"),
        Figure("data-parallel: env-steps/s on 1 device ({backend})", {**SCALING, "workload": "data", "devices": 1}, "env_steps_per_s", "env-steps/s"),
        Figure("sweep: 2 x 4 over 1 x 8 devices (cpu)", {"measure": "processes", "workload": "sweep"}, "two_over_one", "x"),
        Figure("data-parallel: 2 x 4 over 1 x 8 devices (cpu)", {"measure": "processes", "workload": "data"}, "two_over_one", "x"),
    )),
    Entry("sweep", ("experiments/bench_ppo.py", "--sweep", "--run-only"), {  # fixed sizes: 16 members x 5e5 steps, every size
        "tiny": (("--rounds", "1", "--repeats", "1"), 300),
        "cpu": (("--rounds", "1", "--repeats", "1"), 300),
        "accelerator": (("--rounds", "1", "--repeats", "1"), 150),
    }, (
        Figure("16-member sweep env-steps/s", {"name": "sweep/run-only", "round": "median"}, "sweep_env_steps_per_s", "env-steps/s"),
        Figure("sweep over 16 single runs, time", {"name": "sweep/run-only", "round": "median"}, "ratio_sweep_to_sixteen_runs", "x"),
    )),
    Entry("spr", ("experiments/bench_spr.py",), {
        "tiny": (("--only", "update_ms,full_protocol_hours", "--cases", "atari", "--modes", "scan", "--atari-size", "36", "--batch", "4",
                  "--capacity", "64", "--fill", "40", "--steps", "2", "--rounds", "1"), 100),
        "cpu": (("--only", "update_ms,full_protocol_hours", "--cases", "atari", "--impls", "patches", "--modes", "scan",
                 "--capacity", "2000", "--fill", "200", "--steps", "2", "--rounds", "1"), 120),
        "accelerator": (("--only", "update_ms,full_protocol_hours", "--rounds", "2"), 90),
    }, (
        Figure("Atari 100k protocol, hours of gradient steps per game and seed ({headline})", {"measure": "full_protocol_hours"}, "headline_hours", "h"),
        Figure("Atari gradient step, patches in a scan", {"measure": "update_ms"}, "atari.ms_per_step.patches/scan", "ms"),
        Figure("Atari gradient step, XLA convolutions in a scan", {"measure": "update_ms"}, "atari.ms_per_step.xla/scan", "ms"),
    )),
    Entry("hilp", ("experiments/bench_hilp.py",), {
        "tiny": (("--quick", "--rounds", "1", "--steps", "2"), 80),
        "cpu": (("--quick", "--rounds", "1"), 120),
        "accelerator": (("--rounds", "2", "--steps", "50"), 90),
    }, (
        Figure("phi's share of a gradient step", {"measure": "gradient_steps"}, "phi_share", "fraction"),
        Figure("HILP gradient steps/s", {"measure": "gradient_steps"}, "steps_per_s.hilbert", "steps/s"),
        Figure("vmapped seeds over separate runs, seed-steps/s", {"measure": "seeds"}, "vmapped_over_separate", "x"),
    )),
    Entry("cpl", ("experiments/bench_cpl.py",), {
        "tiny": (("--rounds", "1", "--steps", "2", "--hidden", "32", "--episodes-per-stage", "4"), 90),
        "cpu": (("--rounds", "1", "--steps", "5", "--hidden", "256", "--episodes-per-stage", "25"), 120),
        "accelerator": (("--rounds", "2", "--steps", "50"), 90),
    }, (
        Figure("CPL over P-IQL, time to the same policy steps", {"measure": "cpl_vs_piql"}, "cpl_over_piql_same_policy_steps", "x"),
        Figure("dataset bytes on device over raw steps", {"measure": "dataset"}, "memory_over_raw", "x"),
        Figure("dataset read into the device", {"measure": "dataset"}, "segments_per_s_into_device", "segments/s"),
    )),
    Entry("self_improve", ("experiments/bench_self_improve.py",), {
        "tiny": (("--quick", "--batch", "8", "--new-tokens", "4", "--repeats", "1"), 110),
        "cpu": (("--batch", "32", "--repeats", "2"), 150),
        "accelerator": (("--batch", "256", "--repeats", "3"), 90),
    }, (
        Figure("KV-cache sampling over re-encoding", {"measure": "self_improve"}, "sampling.cache_speedup", "x"),
        Figure("training throughput", {"measure": "self_improve"}, "training.tokens_per_s", "tokens/s"),
        Figure("one iteration, update as one program", {"measure": "self_improve"}, "iteration.update_one_program_s", "s"),
    )),
    Entry("spo", ("experiments/bench_spo.py",), {  # a 54-member program and 9 one-method programs compile at any size
        "tiny": (("--rounds", "1", "--updates", "1", "--members", "2"), 400),
        "cpu": (("--rounds", "1", "--updates", "2", "--members", "4"), 450),
        "accelerator": (("--rounds", "1", "--updates", "16"), 200),
    }, (
        Figure("SPO over PPO, time per env step", {"measurement": "spo_vs_ppo"}, "spo_over_ppo_time", "x"),
        Figure("54-member comparison as one program over one by one, run", {"measurement": "sweep_vs_one_by_one"}, "ratio_run", "x"),
        Figure("the same, with compilation", {"measurement": "sweep_vs_one_by_one"}, "ratio_with_compile", "x"),
    )),
)  # fmt: skip


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget-s", type=float, required=True, help="seconds for everything; stops before")
    parser.add_argument("--out", default="runs/bench_all", help="directory: bench_all.json, bench_all.md, raw/ (each bench's lines and log)")
    parser.add_argument("--size", choices=("auto", *SIZES), default="auto", help="auto: cpu on CPU, accelerator otherwise")
    parser.add_argument("--tiny", dest="size", action="store_const", const="tiny", help="the CI sizes (= --size tiny)")
    parser.add_argument("--only", default=",".join(e.name for e in ENTRIES), help="comma list of entries, in ENTRIES' order")
    parser.add_argument("--purejaxrl", default=None, help="PureJaxRL's scratch directory, passed to bench_ppo for the ratio")
    parser.add_argument("--reference-python", default=sys.executable, help="the interpreter for PureJaxRL")
    args = parser.parse_args(argv)
    if not (args.budget_s > 0 and math.isfinite(args.budget_s)):
        _refuse(f"--budget-s must be a positive, finite number of seconds, got {args.budget_s}")
    args.only = [name for name in args.only.split(",") if name]
    unknown = sorted(set(args.only) - {e.name for e in ENTRIES})
    if unknown:
        _refuse(f"--only: unknown entries {unknown}; choose from {[e.name for e in ENTRIES]}")
    return args


def _refuse(message: str) -> NoReturn:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def main(argv: list[str] | None = None) -> dict:
    start = time.monotonic()
    args = _parse(argv)
    deadline = start + args.budget_s - RESERVE_S
    load = round(os.getloadavg()[0], 2)  # other jobs on the machine slow every measurement
    raw = os.path.join(args.out, "raw")
    os.makedirs(raw, exist_ok=True)
    machine = _probe(min(PROBE_TIMEOUT_S, deadline - time.monotonic()))
    size = args.size if args.size != "auto" else ("cpu" if machine.get("backend", "cpu") == "cpu" else "accelerator")
    chosen = [e for e in ENTRIES if e.name in args.only]
    results = []
    for index, entry in enumerate(chosen, 1):
        results.append(_run(entry, size, raw, deadline, args))
        r = results[-1]
        print(f"[{index}/{len(chosen)}] {entry.name}: {r['status']}" + (f" ({r['reason']})" if r.get("reason") else "")
              + f", {len(r['figures'])} figures; {max(0, deadline - time.monotonic()):.0f} s of the budget left", file=sys.stderr, flush=True)  # fmt: skip
    report = {"machine": machine, "size": size, "budget_s": args.budget_s, "used_s": round(time.monotonic() - start, 1),
              "load_1m": [load, round(os.getloadavg()[0], 2)], "entries": results}  # fmt: skip
    _write(report, args.out)
    return report


def _probe(timeout: float) -> dict:
    """`experiments.report.machine()` from a subprocess, so that this process never holds the accelerator."""
    code = "import json; from experiments.report import machine; print(json.dumps(machine('flax', 'optax')))"
    try:
        out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=max(timeout, 1), check=True)
    except (subprocess.TimeoutExpired, subprocess.CalledProcessError) as error:
        return {"probe_failed": str(error)[-300:]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def _run(entry: Entry, size: str, raw: str, deadline: float, args) -> dict:
    """Run one entry within what is left of the budget: its record (status, reason, seconds, figures)."""
    estimate = entry.sizes[size][1]
    out = os.path.join(raw, f"bench_{entry.name}.jsonl")
    argv = entry.argv(size, out)
    if entry.name == "ppo" and args.purejaxrl:
        argv += ["--purejaxrl", args.purejaxrl, "--reference-python", args.reference_python]
    record = {"name": entry.name, "command": shlex.join(argv[1:]), "estimate_s": estimate, "figures": []}
    left = deadline - time.monotonic()
    if estimate > left:
        return {**record, "status": "skipped", "reason": f"estimated {estimate:.0f} s, {max(left, 0):.0f} s left"}
    if os.path.exists(out):
        os.remove(out)  # the benches append: keep only this run's lines
    timeout = min(left, 2 * estimate + 30)
    started = time.monotonic()
    status, reason = _run_killing_group(argv, timeout, os.path.join(raw, f"bench_{entry.name}.log"))
    lines = _json_lines(out)
    figures = [f.read(lines) for f in entry.figures]
    return {**record, "status": status, "reason": reason, "seconds": round(time.monotonic() - started, 1),
            "figures": [f for f in figures if f["value"] is not None]}  # fmt: skip


def _run_killing_group(argv: list[str], timeout: float, log: str) -> tuple[str, str | None]:
    """Run `argv` (output to `log`) in its own process group; kill the group after `timeout` s."""
    with open(log, "w", encoding="utf-8") as f:
        process = subprocess.Popen(argv, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            code = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)  # the bench and the workers it started
            process.wait()
            return "killed", f"ran over its {timeout:.0f} s"
    if code != 0:
        with open(log, encoding="utf-8") as f:
            tail = f.read()[-300:].strip().splitlines()
        return "failed", f"exit status {code}: {tail[-1] if tail else ''}"
    return "ran", None


def _json_lines(path: str) -> list[dict]:
    """The JSON lines of `path` (none if it is missing); a line cut off by a kill is left out."""
    if not os.path.exists(path):
        return []
    lines = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                lines.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return lines


# --- output ------------------------------------------------------------------------------------------------


def _write(report: dict, out: str) -> None:
    with open(os.path.join(out, "bench_all.json"), "w", encoding="utf-8") as f:
        json.dump(report, f, indent=1)
    with open(os.path.join(out, "bench_all.md"), "w", encoding="utf-8") as f:
        f.write(markdown(report))


def markdown(report: dict) -> str:
    """A header (machine, backend, device, versions, budget) and one table: bench, figure, value, unit."""
    m = report["machine"]
    versions = ", ".join(f"{k} {m[k]}" for k in ("jax", "jaxlib", "flax", "optax", "python") if k in m)
    lines = [
        (f"Measured {m.get('date', '?')} on {m.get('machine', '?')} ({m.get('cpus', '?')} cores, {m.get('platform', '?')}); "
         f"backend {m.get('backend', '?')}, {m.get('devices', '?')} x {m.get('device_kind', '?')}; {versions}."),
        (f"Sizes: {report['size']}; budget {report['budget_s']:.0f} s, used {report['used_s']} s; load average "
         f"{report['load_1m'][0]} at the start, {report['load_1m'][1]} at the end (over {m.get('cpus', '?')} cores)."),
        "",
        "| bench | figure | value | unit |",
        "|---|---|---|---|",
    ]  # fmt: skip
    for entry in report["entries"]:
        for f in entry["figures"]:
            lines.append(f"| {entry['name']} | {f['figure']} | {_format(f['value'])} | {f['unit']} |")
        if entry["status"] != "ran" or not entry["figures"]:
            lines.append(f"| {entry['name']} | {entry['status']}{': ' + entry['reason'] if entry.get('reason') else ''} | | |")
    return "\n".join(lines) + "\n"


def _format(value) -> str:
    """Three significant digits below 100, thousands separated above."""
    if not isinstance(value, (int, float)):
        return str(value)
    return f"{value:.3g}" if abs(value) < 100 else f"{value:,.0f}"


if __name__ == "__main__":
    main()
