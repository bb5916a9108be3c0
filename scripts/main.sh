#!/bin/sh
# main.sh: set everything up, build the command, and run the main job: `likeness demo`, the
# whole loop out of the box on likeness's own emoji model (models/emoji): learn a subject it
# never saw from the two pictures in examples/emoji-fox (LoRA), draw it in three styles with
# several seeds, rank the drawings with the evaluator (models/emoji-evaluator), and write
# demo-out/index.html. Extra arguments go to `likeness demo` (see `likeness demo --help`).
set -eu
cd "$(dirname "$0")/.."
./scripts/setup.sh --runtime
cmake -S . -B build-main -DCMAKE_BUILD_TYPE=Release -DLK_BUILD_TESTS=OFF -DLK_BUILD_BENCH=OFF >/dev/null
cmake --build build-main -j"$(nproc)" --target likeness_cli >/dev/null
./build-main/likeness demo --out demo-out "$@"
echo "open demo-out/index.html"
