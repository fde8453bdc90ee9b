"""The benchmark runner and the scaling benchmark: the budget (entries skipped, overruns killed, a
bad budget refused), both output files, and the scaling table's arithmetic (timings are never
asserted)."""

import json
import os
import pathlib
import subprocess
import sys
import time

from cpu_devices import FAST_COMPILE_FLAGS

from experiments import bench_all
from experiments.bench_scaling import process_rows, scaling_rows, speedup_and_efficiency

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _bench_all(*flags: str) -> subprocess.CompletedProcess:
    # LLVM's optimisation passes are most of XLA:CPU's compile time; this checks the plumbing, not
    # the speed, so they are turned down (inherited by every process the runner starts).
    env = {**os.environ, "XLA_FLAGS": FAST_COMPILE_FLAGS, "JAX_PLATFORMS": "cpu"}
    command = [sys.executable, "-m", "experiments.bench_all", *flags]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)


def test_speedup_and_efficiency():
    # 2 devices at 150 env-steps/s against 100 on one: 1.5x faster, 0.75 of each device used.
    assert speedup_and_efficiency(150.0, 100.0, 2) == (1.5, 0.75)
    assert speedup_and_efficiency(100.0, 100.0, 1) == (1.0, 1.0)
    assert speedup_and_efficiency(200.0, 100.0, 8) == (2.0, 0.25)


def _worker_rows(rates: dict[str, float]) -> dict:
    rows = [{"workload": name, "env_steps_per_s": rate, "size": "tiny", "mesh": [1, 1]} for name, rate in rates.items()]
    return {"rows": rows, "machine": {"backend": "cpu"}}


def test_scaling_rows_are_against_each_workloads_one_device_row():
    results = {
        1: _worker_rows({"sweep": 100, "data": 50}),
        4: _worker_rows({"sweep": 300, "data": 40}),
        8: {"not_run": "only 4 gpu device(s)", "machine": {"backend": "gpu"}},
    }
    rows = scaling_rows(results)
    measured = {(r["workload"], r["devices"]): (r["speedup"], r["efficiency"]) for r in rows if "speedup" in r}
    # sweep on 4: 300 / 100 = 3x, 3 / 4 = 0.75; data on 4: 40 / 50 = 0.8x, 0.8 / 4 = 0.2.
    assert measured == {("sweep", 1): (1.0, 1.0), ("data", 1): (1.0, 1.0), ("sweep", 4): (3.0, 0.75), ("data", 4): (0.8, 0.2)}
    assert rows[-1] == {"measure": "scaling", "devices": 8, "processes": 1, "not_run": "only 4 gpu device(s)"}


def test_process_rows_ratio_and_a_failed_layout():
    (sweep, data) = process_rows(_worker_rows({"sweep": 200, "data": 100}), _worker_rows({"sweep": 180, "data": 25}))
    assert (sweep["two_over_one"], data["two_over_one"]) == (0.9, 0.25)
    assert process_rows(_worker_rows({"sweep": 1}), {"failed": "timed out after 5 s"}) == [
        {"measure": "processes", "one_process": "1 x 8", "two_processes": "2 x 4", "failed": "timed out after 5 s"}
    ]


def test_bad_budget_is_refused_in_one_line():
    for budget in ("0", "-5", "nan"):
        out = _bench_all("--budget-s", budget, "--out", "/nonexistent/never/written")
        assert out.returncode == 2 and out.stdout == ""
        assert out.stderr.startswith("error: --budget-s") and len(out.stderr.strip().splitlines()) == 1, out.stderr


def _alive(pid: int) -> bool:
    """Whether process `pid` exists and is not a zombie (Linux)."""
    try:
        return pathlib.Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_an_overrun_is_killed_with_its_workers(tmp_path):
    # A "bench" that starts a worker and both sleep: killed at the budget, the worker with it.
    pid_file = tmp_path / "worker.pid"
    code = (
        "import pathlib, subprocess, sys, time; "
        "worker = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
        f"pathlib.Path({str(pid_file)!r}).write_text(str(worker.pid)); time.sleep(60)"
    )
    entry = bench_all.Entry("sleeper", ("-c", code), {"tiny": ((), 1.0)}, ())
    start = time.monotonic()
    record = bench_all._run(entry, "tiny", str(tmp_path), start + 3.0, None)
    assert record["status"] == "killed" and 2.5 < time.monotonic() - start < 10
    assert "ran over" in record["reason"] and record["figures"] == []
    worker = int(pid_file.read_text())
    deadline = time.monotonic() + 5
    while _alive(worker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(worker)


def test_tiny_run_writes_both_files_and_skips_what_does_not_fit(tmp_path):
    # The scaling entry (tiny: 1 and 2 devices) fits; the sweep's estimate exceeds the whole budget.
    out = _bench_all("--tiny", "--budget-s", "150", "--only", "scaling,sweep", "--out", str(tmp_path))
    assert out.returncode == 0, out.stderr[-2000:]
    assert [line.split(":")[0] for line in out.stderr.splitlines()] == ["[1/2] scaling", "[2/2] sweep"]  # the progress lines
    report = json.loads((tmp_path / "bench_all.json").read_text())
    assert {"backend", "device_kind", "devices", "jax", "jaxlib", "flax", "cpus"} <= set(report["machine"])
    assert report["size"] == "tiny" and report["used_s"] < 150
    scaling, sweep = report["entries"]
    assert scaling["status"] == "ran" and sweep["status"] == "skipped" and sweep["reason"].startswith("estimated 300 s")
    figures = {f["figure"]: f["value"] for f in scaling["figures"]}
    assert set(figures) == {
        "sweep: efficiency / device at 2 devices (cpu)", "data-parallel: efficiency / device at 2 devices (cpu)",
        "sweep: env-steps/s on 1 device (cpu)", "data-parallel: env-steps/s on 1 device (cpu)",
    }  # fmt: skip
    assert all(value > 0 for value in figures.values())

    rows = [json.loads(line) for line in (tmp_path / "raw" / "bench_scaling.jsonl").read_text().splitlines()]
    assert [(r["workload"], r["devices"]) for r in rows] == [("sweep", 1), ("data", 1), ("sweep", 2), ("data", 2)]
    for row in rows[2:]:
        one = next(r for r in rows if r["workload"] == row["workload"] and r["devices"] == 1)
        assert row["speedup"] == round(row["env_steps_per_s"] / one["env_steps_per_s"], 3)
        assert abs(row["efficiency"] - row["speedup"] / 2) < 1e-3
        assert row["mesh"] == ([2, 1] if row["workload"] == "sweep" else [1, 2]) and row["backend"] == "cpu"

    table = (tmp_path / "bench_all.md").read_text()
    assert "backend cpu" in table and "jax 0.10" in table and "| bench | figure | value | unit |" in table
    assert "| scaling | sweep: efficiency / device at 2 devices (cpu) |" in table
    assert "| sweep | skipped: estimated 300 s" in table
