"""The self-improvement benchmark's command line runs end to end at tiny sizes and records every
measurement (timings are printed, never asserted)."""

import json
import os
import pathlib
import subprocess
import sys

from cpu_devices import FAST_COMPILE_FLAGS

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_quick_run_appends_one_record_with_every_measurement(tmp_path):
    out = tmp_path / "bench.jsonl"
    # LLVM's optimisation passes are most of XLA:CPU's compile time; this test checks the plumbing,
    # not the speed, so it turns them down (a fresh process: XLA_FLAGS is read at backend start).
    env = {**os.environ, "XLA_FLAGS": FAST_COMPILE_FLAGS, "JAX_PLATFORMS": "cpu"}
    command = [sys.executable, "experiments/bench_self_improve.py", "--quick", "--batch", "8", "--new-tokens", "4", "--repeats", "1", "--out", str(out)]
    printed = subprocess.run(command, cwd=ROOT, env=env, check=True, capture_output=True, text=True).stdout
    (record,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert json.loads(printed.splitlines()[-1]) == record
    assert "ratio" in printed and "sum of parts" in printed and "update (1 jit)" in printed
    assert set(record["sampling"]["tokens_per_s"]) == {"cache", "naive"} and record["sampling"]["cache_speedup"] > 0
    assert record["training"]["tokens_per_s"] > 0 and record["pair_logps"]["pairs_per_s"] > 0
    pieces = {"sampling", "judging", "reference_logps", "updates", "logp_metrics", "evaluation", "checkpoint"}
    assert set(record["iteration"]["seconds"]) == pieces
    assert abs(sum(record["iteration"]["share"].values()) - 1) < 0.01
    assert record["compile"]["cache_size_after_first_call"] == record["compile"]["cache_size_after_all_calls"] == 1
    assert {"platform", "cpus", "jax", "backend", "device_kind"} <= set(record)
