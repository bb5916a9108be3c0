#!/bin/sh
# EmojiBench data-set builder entry point (issue 5, "Data set"): installs the pinned Debian and
# npm sources, then runs build.py with Debian's /usr/bin/python3. Idempotent; output is outside git.
#
# Usage: scripts/emoji_dataset/build.sh [--force] [--jobs N]
# Env:   LK_DATA  output folder (default ~/.cache/likeness/emoji); npm cache goes to $LK_DATA/npm.
set -eu

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
OUT=${LK_DATA:-${HOME:-/tmp}/.cache/likeness/emoji}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
case "$OUT/" in
  "$REPO"/*) echo "build.sh: output folder $OUT is inside the repository; set LK_DATA elsewhere" >&2; exit 2 ;;
esac
NPM_PREFIX="$OUT/npm"

DEB_PKGS="python3-fonttools python3-pil librsvg2-bin fonts-noto-color-emoji unicode-data unicode-cldr-core"
missing=""
for p in $DEB_PKGS; do
  dpkg-query -W -f '${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  echo "build.sh: installing Debian packages:$missing"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq || true
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends $missing
fi
command -v npm >/dev/null 2>&1 || {
  echo "build.sh: installing npm"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends npm
}

# Pinned npm packages (exact versions), installed outside the repository.
NPM_PKGS="@lobehub/fluent-emoji-3d@1.1.0 @twemoji/svg@15.0.0 openmoji@17.0.0"
need_npm=0
for spec in $NPM_PKGS; do
  name=${spec%@*}; ver=${spec##*@}
  pj="$NPM_PREFIX/node_modules/$name/package.json"
  if [ ! -f "$pj" ] || ! grep -q "\"version\": *\"$ver\"" "$pj"; then need_npm=1; fi
done
if [ "$need_npm" -eq 1 ]; then
  echo "build.sh: installing npm packages into $NPM_PREFIX"
  mkdir -p "$NPM_PREFIX"
  npm install --no-save --no-audit --no-fund --save-exact --prefix "$NPM_PREFIX" $NPM_PKGS
fi

exec /usr/bin/python3 "$HERE/build.py" --out "$OUT" --npm "$NPM_PREFIX" --heldout "$HERE/heldout.txt" "$@"
