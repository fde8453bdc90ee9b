#!/usr/bin/env bash
# The CPL measurements worth a lent GPU, in under ten minutes: the compute comparison at the
# paper's sizes (CPL against P-IQL per gradient step, 512 x 2 MLPs, 96 segments of 64 steps; the
# paper reports CPL 1.62x faster on its GPU) and the dataset's read rate, then the comparison
# table at the paper's network sizes and batch on the CPU-scale schedule (6 seeds each).
# Prints JSON lines and the results table; everything lands in $OUT (default: runs/device).
#
# Setup on this machine first (the accelerator has JAX with CUDA but no package index): the
# `.whl` directory of experiments/device_check_ppo.sh plus the dataset stack, carried along:
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 -d .whl \
#     tensorflow-datasets==4.9.10 array-record==0.8.6 etils promise toml simple-parsing \
#     tensorflow-metadata protobuf wrapt immutabledict dm-tree
source "$(dirname "$0")/../device_setup.sh"
timeout 180 python3 experiments/bench_cpl.py --rounds 3 --steps 100 --out "$OUT/bench_cpl_gpu.jsonl" 2>&1 | tail -3
PAPER="--cpl.hidden-sizes 512 512 --cpl.batch-size 96 --piql.hidden-sizes 512 512 --piql.critic-hidden-sizes 512 512 --piql.reward-model-hidden-sizes 512 512 --piql.batch-size 96 --bc.hidden-sizes 512 512 --bc.batch-size 96"
timeout 380 python3 -m experiments.cpl $PAPER --run-dir "$OUT/cpl" 2>&1 | tr '\r' '\n' | grep -v '^sweep\|^PPO\|^rollouts' | tail -12
cp "$OUT/cpl/results.md" "$OUT/cpl_results_gpu.md" 2>/dev/null
