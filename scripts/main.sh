#!/bin/sh
# main.sh: set everything up, build, and run the main job. Until the generation issue lands,
# the main job is the engine benchmark: every kernel against PyTorch on Stable Diffusion 1.5
# shapes, forward and backward, on 2 threads.
set -eu
cd "$(dirname "$0")/.."
./scripts/setup.sh
./scripts/build.sh build
OMP_NUM_THREADS=2 ./build/bench/lk_bench_ops "$@"
