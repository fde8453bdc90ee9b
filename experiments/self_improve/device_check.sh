#!/usr/bin/env bash
# The self-improvement measurements worth a lent GPU, in under ten minutes: the benchmark
# (KV-cache sampling against re-encoding, training and pair log-prob throughput, where an
# iteration's time goes), then the experiment at a larger scale than the CPU run: a 4-layer,
# d = 256 model on 4-digit addition, 512 prompts x 8 samples an iteration, 8 iterations, 5 seeds,
# the methods whose CPU results disagreed most (DPO, DPO + NLL, IPO, SPPO, GRPO, ReST-EM, SFT).
# Prints the benchmark and the results table; everything lands in $OUT (default: runs/device).
#
# Setup on this machine first: the `.whl` directory of experiments/cpl/device_check.sh (JAX's
# CUDA wheels are on the accelerator already; the dataset stack is carried).
source "$(dirname "$0")/../device_setup.sh"
timeout 150 python3 experiments/bench_self_improve.py --batch 1024 --out "$OUT/bench_self_improve_gpu.jsonl" 2>&1 | grep -v '^{' | tail -20
LARGER="--agent.num-layers 4 --agent.width 256 --agent.task-size 4 --agent.prompts-per-iteration 512 --agent.eval-prompts 1024 --agent.iterations 8"
timeout 420 python3 -m experiments.self_improve $LARGER --methods dpo rpo ipo sppo grpo rest sft --seeds 5 \
  --warm-start-max-steps 30000 --run-dir "$OUT/self_improve" 2>&1 | tr '\r' '\n' | grep -v 'step/s\|it/s' | tail -60
cp "$OUT/self_improve/results.md" "$OUT/self_improve_results_gpu.md" 2>/dev/null
