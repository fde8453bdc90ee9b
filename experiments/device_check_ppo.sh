#!/usr/bin/env bash
# The PPO measurements worth a lent GPU, in under ten minutes: compile time and env-steps/s
# beside PureJaxRL (1 and 8 CartPole seeds), then a 16-member sweep against 16 single runs.
# Prints JSON lines (experiments/bench_ppo.py) and tees them to $OUT (default: runs/device).
#
# The accelerator machine has JAX with CUDA but no package index. Before the call, on this
# machine, from the repository root:
#   echo /.whl/ >> .git/info/exclude; echo /.gpu/ >> .git/info/exclude
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 -d .whl \
#     beartype==0.23.1 gymnax==1.0.1 gymnasium==1.3.0 farama-notifications tyro==1.0.17 \
#     typeguard==4.6.1 docstring-parser shtab tensorboardX distrax tensorflow-probability \
#     dm-tree gast decorator
#   mkdir -p .gpu/pjr && cp <PureJaxRL ppo.py and wrappers.py, adapted as in experiments/README.md> .gpu/pjr/
# then run this script there with `.whl` and `.gpu` carried along.
source "$(dirname "$0")/device_setup.sh"
timeout 300 python3 experiments/bench_ppo.py --purejaxrl .gpu/pjr --reference-python python3 --brax '' \
  --rounds 1 --repeats 2 --timeout 150 2>&1 | tee "$OUT/bench_ppo_gpu.jsonl"
timeout 230 python3 experiments/bench_ppo.py --sweep --run-only --rounds 1 --repeats 1 --timeout 220 2>&1 \
  | tee "$OUT/bench_sweep_gpu.jsonl"
