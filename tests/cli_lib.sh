# cli_lib.sh: the shell helpers of the end-to-end CLI tests (test_cli_*.sh), sourced by them:
# counted checks, a temporary folder removed on exit, and readers of PNG / JSON files.
# Sets PY (Debian's python3 if there, else the first on PATH), checks and failures.

PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3
checks=0
failures=0

# cli_tmpdir NAME: T = a new folder ${TMPDIR:-/tmp}/NAME.XXXXXX, removed when the script exits;
# exits the script if it cannot be made.
cli_tmpdir() {
    T=$(mktemp -d "${TMPDIR:-/tmp}/$1.XXXXXX") || exit 1
    trap 'rm -rf "$T"' EXIT
}

ok() { checks=$((checks + 1)); echo "ok   $1"; }
bad() { checks=$((checks + 1)); failures=$((failures + 1)); echo "FAIL $1"; }
check() { # check DESCRIPTION COMMAND...
    d=$1; shift
    if "$@"; then ok "$d"; else bad "$d"; fi
}

# cli_done: print the counts; its status (the script's last command) is 0 only if none failed
cli_done() {
    echo "$checks checks, $failures failures"
    [ $failures -eq 0 ]
}

# cli_run BIN OUT_BASE ARGS...: run BIN ARGS with stdout to OUT_BASE.out and stderr to
# OUT_BASE.log; sets rc (its exit status), msg (stderr less the JSON progress lines) and nl
# (msg's line count)
cli_run() {
    _bin=$1; _base=$2; shift 2
    "$_bin" "$@" >"$_base.out" 2>"$_base.log"
    rc=$?
    msg=$(grep -v '^{' "$_base.log")
    nl=$(printf '%s\n' "$msg" | grep -c .)
}

# png_params PNG: print the "parameters" text chunk of a PNG (tEXt / zTXt / iTXt; CRCs
# verified); fails if there is none
png_params() {
    "$PY" - "$1" <<'EOF'
import struct, sys, zlib
b = open(sys.argv[1], 'rb').read()
assert b[:8] == b'\x89PNG\r\n\x1a\n', 'not a PNG'
o = 8
while o < len(b):
    n, = struct.unpack('>I', b[o:o + 4]); typ = b[o + 4:o + 8]; data = b[o + 8:o + 8 + n]
    crc, = struct.unpack('>I', b[o + 8 + n:o + 12 + n])
    assert crc == zlib.crc32(typ + data) & 0xffffffff, 'bad CRC'
    if typ in (b'tEXt', b'zTXt', b'iTXt'):
        key, rest = data.split(b'\0', 1)
        if key == b'parameters':
            if typ == b'tEXt': v = rest.decode('latin-1')
            elif typ == b'zTXt': v = zlib.decompress(rest[1:]).decode('latin-1')
            else:
                comp, rest = rest[0], rest[2:]
                lang, rest = rest.split(b'\0', 1); tk, rest = rest.split(b'\0', 1)
                v = (zlib.decompress(rest) if comp else rest).decode('utf-8')
            sys.stdout.write(v); sys.exit(0)
    o += 12 + n
sys.exit(1)
EOF
}

# png_pixels same|differ A B: succeeds if the decoded pixels (IDAT streams) of the PNGs A and B
# are the same / differ; fails if either cannot be read
png_pixels() {
    "$PY" - "$@" <<'EOF'
import struct, sys, zlib
def idat(p):
    b = open(p, 'rb').read(); o = 8; d = b''
    while o < len(b):
        n, = struct.unpack('>I', b[o:o + 4]); t = b[o + 4:o + 8]
        if t == b'IDAT': d += b[o + 8:o + 8 + n]
        o += 12 + n
    return zlib.decompress(d)
same = idat(sys.argv[2]) == idat(sys.argv[3])
sys.exit(0 if same == (sys.argv[1] == 'same') else 1)
EOF
}
