#!/usr/bin/env bash
# The SPR measurements worth a lent GPU, in under ten minutes: the benchmark's update times
# (Atari- and MinAtar-sized, XLA convolutions against patches, in and out of a scan), the
# full-protocol extrapolation and vmapped seeds; then the MinAtar comparison at the paper's
# replay ratio (one env, 2 gradient steps per step) and 8 vmapped seeds on two games; then the
# Atari protocol on Pong for as many steps as fit, 4 seeds through one vmapped policy call.
# Prints the tables; everything lands in $OUT (default: runs/device).
#
# Setup on this machine first: the `.whl` directory of experiments/cpl/device_check.sh, with
# flashbax, ale-py and rliable (+ pandas<3) added to it.
source "$(dirname "$0")/../device_setup.sh"
timeout 150 python3 experiments/bench_spr.py --only update_ms,full_protocol_hours,vmap_seeds --rounds 2 \
  --out "$OUT/bench_spr_gpu.jsonl" 2>&1 | grep -v '^{' | tail -20
PAPER_RATIO="--config.num-envs 1 --config.updates-per-step 2 --config.total-env-steps 30000 --config.steps-per-update 1000 --config.learning-starts 2000"
timeout 270 python3 -m experiments.spr --games Breakout-MinAtar SpaceInvaders-MinAtar --arms spr no_spr --seeds 8 \
  $PAPER_RATIO --run-dir "$OUT/spr_minatar" 2>&1 | tr '\r' '\n' | grep -v 'step/s' | tail -12
timeout 150 python3 -m experiments.spr.atari --games Pong --seeds 4 --config.total-env-steps 10000 \
  --eval-episodes 8 --run-dir "$OUT/spr_atari" 2>&1 | tr '\r' '\n' | grep -v 'step/s' | tail -12
