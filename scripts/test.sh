#!/bin/sh
# test.sh: set everything up, build, and run the whole test suite twice: the Release build
# (which also regenerates the PyTorch reference outputs), then an ASan+UBSan build of the same
# tests against those references. Exits non-zero if anything fails.
set -eu
cd "$(dirname "$0")/.."
./scripts/setup.sh
./scripts/build.sh build
(cd build && ctest --output-on-failure -j2 --timeout 900)
./scripts/build.sh build-asan -DLK_SANITIZE=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DLK_BUILD_BENCH=OFF -DLK_REF_DIR_EXTERNAL="$PWD/build/ref"
(cd build-asan && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
    ctest --output-on-failure -j2 --timeout 900)
echo "test.sh: all tests passed (Release and ASan+UBSan)"
