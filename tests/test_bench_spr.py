"""The SPR benchmark's command line runs end to end at tiny sizes and records its measurements
(timings are printed, never asserted)."""

import json
import math
import os
import pathlib
import subprocess
import sys

from cpu_devices import FAST_COMPILE_FLAGS

ROOT = pathlib.Path(__file__).resolve().parent.parent
MACHINE_KEYS = {"machine", "platform", "cpus", "backend", "device_kind", "jax", "jaxlib", "flashbax", "rounds", "date"}


def _positive(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def test_tiny_run_appends_one_row_per_section(tmp_path):
    out = tmp_path / "bench.jsonl"
    # LLVM's optimisation passes are most of XLA:CPU's compile time; this test checks the plumbing,
    # not the speed, so it turns them down (a fresh process: XLA_FLAGS is read at backend start).
    env = {**os.environ, "XLA_FLAGS": FAST_COMPILE_FLAGS, "JAX_PLATFORMS": "cpu"}
    command = [
        sys.executable, "experiments/bench_spr.py", "--only", "update_ms,full_protocol_hours,replay_memory",
        "--cases", "atari", "--impls", "xla,patches", "--modes", "scan", "--atari-size", "36", "--batch", "4", "--capacity", "64",
        "--fill", "40", "--replay-steps", "1000", "--steps", "2", "--rounds", "1", "--out", str(out),
    ]  # fmt: skip
    printed = subprocess.run(command, cwd=ROOT, env=env, check=True, capture_output=True, text=True, timeout=300).stdout
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [row["measure"] for row in rows] == ["update_ms", "replay_memory", "full_protocol_hours"]
    assert [json.loads(line) for line in printed.splitlines() if line.startswith("{")] == rows
    assert "update_ms" in printed and "full_protocol_hours" in printed and "replay_memory" in printed  # the table
    update, memory, hours = rows
    for row in rows:
        assert MACHINE_KEYS <= set(row) and row["backend"] == "cpu"

    programs = {"xla/scan", "patches/scan"}  # the jit mode's compiles would double the test's time
    assert "minatar" not in update and update["atari"]["network"]["frame_shape"] == [36, 36, 1]
    for key in ("ms_per_step", "compile_s"):
        assert set(update["atari"][key]) == programs and all(map(_positive, update["atari"][key].values()))
    assert set(update["atari"]["xla_over_patches"]) == {"scan"} and _positive(update["atari"]["xla_over_patches"]["scan"])

    assert hours["gradient_steps"] == 200_000 and set(hours["hours_of_gradient_steps"]) == programs
    assert all(map(_positive, hours["hours_of_gradient_steps"].values())) and hours["headline"] == "patches/scan"
    assert "measured_here" not in hours  # taken from update_ms

    raw = 1000 * 84 * 84
    assert memory["raw_frame_bytes"] == raw and memory["frame_bytes"] == raw
    assert raw < memory["buffer_bytes"] < 1.1 * raw and _positive(memory["buffer_over_raw"])
    assert memory["computed_not_allocated"] == {"stacks_of_4_bytes": 4 * raw, "sequences_of_k_plus_1_bytes": 6 * raw}
