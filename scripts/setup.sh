#!/bin/sh
# setup.sh: install what likeness needs to build and test, from Debian's apt, idempotently
# (quiet and quick when everything is already there). Run as root on Debian 12.
# setup.sh --runtime: only what building and running the command needs (no PyTorch, no clang).
set -eu
PKGS="build-essential cmake pkg-config libopenblas-openmp-dev libcjson-dev libpng-dev libjpeg62-turbo-dev libwebp-dev"
if [ "${1:-}" != "--runtime" ]; then
    PKGS="$PKGS python3-torch python3-numpy python3-pil clang libclang-rt-14-dev"
fi
missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    echo "setup: installing$missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # shellcheck disable=SC2086
    apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi
