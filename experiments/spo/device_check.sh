#!/usr/bin/env bash
# The SPO measurements worth a lent GPU, in under ten minutes: the benchmark (SPO's cost per env
# step against PPO, and the 54-member comparison as one program against its members one by one),
# then the whole Pendulum comparison (3 methods x 4 oracles x 6 seeds, 10^6 env steps each).
# Prints JSON lines and the results table; everything lands in $OUT (default: runs/device).
#
# Setup on this machine first (the accelerator has JAX with CUDA but no package index): the
# `.whl` directory of experiments/device_check_ppo.sh, carried along with this call.
source "$(dirname "$0")/../device_setup.sh"
timeout 240 python3 experiments/bench_spo.py --rounds 1 --updates 16 --out "$OUT/bench_spo_gpu.jsonl" 2>&1 | tail -4
timeout 320 python3 -m experiments.spo --seeds 6 --run-dir "$OUT/spo" 2>&1 | tr '\r' '\n' | grep -v '^sweep' | tail -20
cp "$OUT/spo/results.md" "$OUT/spo_results_gpu.md" 2>/dev/null
