#!/usr/bin/env bash
# The HILP measurements worth a lent GPU, in under ten minutes: the benchmark at the paper's sizes
# (batch 1024, 512 x 3 MLPs, d = 32: gradient steps/s of φ + policy and of the policy alone,
# vmapped seeds against separate runs, data generation, compile times), then the maze comparison
# (HILP against a random φ and no representation) at the paper's network sizes and batch on a
# 100k-step schedule, 4 seeds each. Prints JSON lines and the results table; everything lands in
# $OUT (default: runs/device). Setup: experiments/device_setup.sh (the `.whl` directory of
# experiments/device_check_ppo.sh plus the dataset stack of experiments/cpl/device_check.sh).
source "$(dirname "$0")/../device_setup.sh"
timeout 150 python3 experiments/bench_hilp.py --rounds 3 --out "$OUT/bench_hilp_gpu.jsonl" 2>&1 | tail -9
PAPER="--hilp.hidden-sizes 512 512 512 --hilp.batch-size 1024 --hilp.total-steps 100000 --hilp.steps-per-update 10000"
timeout 420 python3 -m experiments.hilp $PAPER --run-dir "$OUT/hilp" 2>&1 | tr '\r' '\n' | grep -v '^sweep' | tail -8
cp "$OUT/hilp/results.md" "$OUT/hilp_results_gpu.md" 2>/dev/null
