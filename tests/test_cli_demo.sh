#!/bin/sh
# test_cli_demo.sh: `likeness demo` end to end: a synthetic EmojiBench data set written here, a
# tiny generator and evaluator made with `likeness pretrain` (1 step per stage), then the demo
# with every method (HTML page, candidate PNGs with A1111 "parameters", the method's file), its
# usage errors (exit 2) and a missing image folder (exit 1), and `likeness bench emoji` (--help,
# usage errors, a real-row-only run writing its JSON). About 30 s in Release.
# Usage: test_cli_demo.sh LIKENESS_BINARY
set -u
BIN=${1:?usage: test_cli_demo.sh LIKENESS_BINARY}
. "$(dirname "$0")/cli_lib.sh"
cli_tmpdir lk_cli_demo
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE} LK_PROGRESS=json
unset LK_MODEL LK_EVALUATOR LK_DATA

# ---- the synthetic data set: 6 concepts (coloured shapes) in 4 styles, the fox held out ----
D="$T/emoji"
"$PY" - "$D" <<'EOF' || { echo "FAIL cannot write the data set"; exit 1; }
import json, math, os, struct, sys, zlib
d = sys.argv[1]
styles = ["noto", "fluent3d", "twemoji", "openmoji"]
concepts = [  # key, name, keywords, colour, held out
    ("1f34e", "red apple", ["apple", "fruit"], (220, 30, 30), False),
    ("1f431", "cat face", ["cat", "pet"], (240, 170, 40), False),
    ("1f436", "dog face", ["dog", "pet"], (150, 100, 60), False),
    ("1f697", "automobile", ["car"], (40, 90, 220), False),
    ("1f98a", "fox", ["fox", "face"], (230, 120, 30), True),
    ("2b50", "star", ["star"], (250, 210, 0), False),
]
def png(path, w, h, rows):
    raw = b"".join(b"\0" + bytes(r) for r in rows)
    def chunk(t, b):
        return struct.pack(">I", len(b)) + t + b + struct.pack(">I", zlib.crc32(t + b) & 0xffffffff)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
                + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
def image(ci, si):
    rgb = concepts[ci][3]
    rows = []
    for y in range(64):
        row = []
        for x in range(64):
            u, v = (x + 0.5) / 32 - 1, (y + 0.5) / 32 - 1
            r = math.hypot(u, v)
            inside = [0.7 - r, 0.6 - max(abs(u), abs(v)), 0.15 - abs(r - 0.5),
                      0.7 - abs(u) - abs(v), min(0.6 - abs(u), 0.3 - abs(v)), 0.6 - r][ci]
            c = (255, 255, 255)
            if inside > 0:
                c = rgb
                if si == 1: c = tuple(int(k * (0.65 + 0.35 * (1 - (u + v + 2) / 4))) for k in rgb)
                if si == 3: c = tuple(int(255 - 0.25 * (255 - k)) for k in rgb)
            if si in (2, 3) and abs(inside) < 0.04: c = (20, 20, 20)
            row += c
        rows.append(row)
    return rows
os.makedirs(d)
for si, s in enumerate(styles):
    os.makedirs(os.path.join(d, s, "64"))
    for ci, c in enumerate(concepts):
        png(os.path.join(d, s, "64", c[0] + ".png"), 64, 64, image(ci, si))
n = len(concepts)
manifest = {
    "name": "EmojiBench", "format": 1, "key_rule": "synthetic", "sizes": [64], "styles": styles,
    "generator_training_styles": styles[:3], "emoji_version": "15.0",
    "counts": {"per_style": {s: n for s in styles}, "all_four": n, "concepts": n,
               "heldout": sum(c[4] for c in concepts)},
    "heldout": [c[0] for c in concepts if c[4]],
    "concepts": {c[0]: {"key": c[0], "codepoints": c[0], "name": c[1], "group": "Synthetic",
                        "subgroup": "shapes", "keywords": c[2], "styles": styles,
                        "heldout": c[4]} for c in concepts},
}
json.dump(manifest, open(os.path.join(d, "manifest.json"), "w"), indent=1)
EOF
ok "synthetic data set written"

# ---- the tiny generator and evaluator, with `likeness pretrain` ----
pt() { # pt DESCRIPTION ARGS...
    d=$1; shift
    if "$BIN" pretrain "$@" >"$T/pt.out" 2>"$T/pt.err"; then ok "pretrain $d"
    else bad "pretrain $d: $(grep -v '^{' "$T/pt.err" | tail -1)"; fi
}
S="--data $D --steps 1 --batch 2 --seed 3"
pt tokenizer tokenizer --data "$D" --out "$T/tok" --vocab-size 600
pt text text $S --run "$T/text" --tokenizer "$T/tok"
pt vae vae $S --run "$T/vae"
pt unet unet $S --run "$T/unet" --tokenizer "$T/tok" --text "$T/text/export" --vae "$T/vae/export"
pt assemble assemble --tokenizer "$T/tok" --text "$T/text/export" --vae "$T/vae/export" \
    --unet "$T/unet/export" --out "$T/model"
pt "text --evaluator" text --evaluator $S --run "$T/eval" --tokenizer "$T/tok"
M="$T/model"
E="$T/eval/export"
if [ ! -f "$M/model_index.json" ] || [ ! -f "$E/clip/config.json" ]; then
    echo "FAIL no model to run the demo with"
    exit 1
fi

# the demo's inputs: the held-out fox in two styles, with its name
mkdir "$T/fox"
cp "$D/noto/64/1f98a.png" "$T/fox/a.png"
cp "$D/twemoji/64/1f98a.png" "$T/fox/b.png"
echo "fox" >"$T/fox/name.txt"

# every candidate PNG of OUT (want of them) has a parameters chunk (prompt with the token, the
# sampling settings); index.html ranks want candidates and embeds them and the 2 inputs
check_candidates() { # check_candidates DESCRIPTION OUT WANT TOKEN
    n=$(ls "$2" | grep -c '^candidate-[0-9][0-9]\.png$')
    good=0
    for f in "$2"/candidate-*.png; do
        [ -f "$f" ] || continue
        p=$(png_params "$f") || continue
        printf '%s' "$p" | head -1 | grep -q -- "$4 emoji" &&
            printf '%s' "$p" | grep -q "Steps: 2, Sampler: DPM++ 2M" &&
            printf '%s' "$p" | grep -q "Size: 64x64" && good=$((good + 1))
    done
    ranked=$(grep -o 'data-rank="[0-9]*"' "$2/index.html" 2>/dev/null | sort -u | wc -l)
    imgs=$(grep -o '<img src="data:image/png;base64,' "$2/index.html" 2>/dev/null | wc -l)
    if [ "$n" -eq "$3" ] && [ "$good" -eq "$3" ] && [ "$ranked" -eq "$3" ] && [ "$imgs" -eq $(($3 + 2)) ]; then
        ok "$1: $n candidates with parameters, $ranked ranked in index.html, $imgs images"
    else
        bad "$1: $n candidate PNGs, $good with parameters, $ranked ranked, $imgs images in index.html (want $3, $3 + 2)"
    fi
}

DEMO="--model $M --evaluator $E --images $T/fox --sample-steps 2"

# ---- the default method (LoRA): 3 prompts x 2 seeds ----
"$BIN" demo $DEMO --steps 2 --seeds 2 --out "$T/out" >"$T/demo.out" 2>"$T/demo.err"
rc=$?
check "demo (lora) exits 0" [ $rc -eq 0 ]
[ $rc -eq 0 ] || tail -5 "$T/demo.err"
check "demo writes index.html" [ -s "$T/out/index.html" ]
check "demo writes the LoRA file" [ -s "$T/out/lora.safetensors" ]
check_candidates "demo (lora)" "$T/out" 6 sks
for s in "fluent 3d" noto twemoji; do
    check "prompt '{token} emoji, $s style' drawn" grep -q "sks emoji, $s style" "$T/out/index.html"
done
check "index.html names the subject" grep -q "fox" "$T/out/index.html"

# ---- the other methods, one step, one seed, one prompt ----
for m in ti dreambooth custom; do
    o="$T/out_$m"
    "$BIN" demo $DEMO --method $m --steps 1 --seeds 1 --prompt "{token} emoji, noto style" \
        --prompt "a {token} emoji" --out "$o" >"$T/m.out" 2>"$T/m.err"
    rc=$?
    check "demo --method $m exits 0" [ $rc -eq 0 ]
    [ $rc -eq 0 ] || tail -3 "$T/m.err"
    check "demo --method $m writes index.html" [ -s "$o/index.html" ]
    case $m in ti) tok="<subject>" ;; custom) tok="<new1>" ;; *) tok=sks ;; esac
    check_candidates "demo --method $m" "$o" 2 "$tok"
done
check "ti writes its embedding" [ -s "$T/out_ti/ti.safetensors" ]
check "dreambooth writes a model folder" [ -f "$T/out_dreambooth/dreambooth/unet/config.json" ]
check "custom writes its deltas" [ -s "$T/out_custom/custom.safetensors" ]
check "ti draws with its token" grep -q "&lt;subject&gt; emoji, noto style" "$T/out_ti/index.html"

# ---- errors: usage errors exit 2 with a message, a missing folder exits 1 naming it ----
expect_rc() { # expect_rc DESCRIPTION RC PATTERN ARGS...
    d=$1; want=$2; pat=$3; shift 3
    cli_run "$BIN" "$T/err" "$@"
    msg=$(printf '%s\n' "$msg" | grep -- "$pat" | head -1)
    [ -n "$msg" ] || msg=$(grep -v '^{' "$T/err.log" | tail -1)
    if [ $rc -eq "$want" ] && printf '%s' "$msg" | grep -q -- "$pat"; then
        ok "$d (exit $rc): $msg"
    else
        bad "$d: exit $rc (want $want): $msg"
    fi
}
expect_rc "demo --steps 0" 2 "bad value '0' for --steps" demo $DEMO --steps 0 --out "$T/e1"
expect_rc "demo --seeds x" 2 "bad value 'x' for --seeds" demo $DEMO --seeds x --out "$T/e1"
expect_rc "demo --cfg -1" 2 "for --cfg" demo $DEMO --cfg -1 --out "$T/e1"
expect_rc "demo unknown option" 2 "unknown option '--bogus'" demo $DEMO --bogus 1 --out "$T/e1"
expect_rc "demo option without a value" 2 "'--steps'" demo $DEMO --steps
expect_rc "demo unknown method" 2 "unknown method 'bogus'" demo $DEMO --method bogus --out "$T/e1"
expect_rc "demo missing images folder" 1 "$T/nofolder" demo --model "$M" --evaluator "$E" \
    --images "$T/nofolder" --steps 1 --seeds 1 --out "$T/e1"
mkdir "$T/noimages"
expect_rc "demo folder without PNGs" 1 "no PNG images" demo --model "$M" --evaluator "$E" \
    --images "$T/noimages" --steps 1 --seeds 1 --out "$T/e1"
expect_rc "demo missing evaluator" 1 "$T/noeval" demo --model "$M" --evaluator "$T/noeval" \
    --images "$T/fox" --steps 1 --seeds 1 --sample-steps 2 --out "$T/e2"
check "usage errors write nothing" [ ! -e "$T/e1" ]
check "a missing evaluator fails before training (nothing written)" [ ! -e "$T/e2" ]
mkdir "$T/big"
"$PY" -c 'import struct, sys, zlib
def chunk(t, b): return struct.pack(">I", len(b)) + t + b + struct.pack(">I", zlib.crc32(t + b) & 0xffffffff)
raw = b"".join(b"\0" + b"\xc8" * 384 for _ in range(128))
open(sys.argv[1], "wb").write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 128, 128, 8, 2, 0, 0, 0))
                              + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))' "$T/big/x.png"
"$BIN" demo --model "$M" --evaluator "$E" --images "$T/big" --steps 1 --seeds 1 \
    --sample-steps 2 --out "$T/e3" >"$T/big.out" 2>&1
check "a 128x128 input is scaled to 64x64: exit 0" [ $? -eq 0 ]
check "a 128x128 input is scaled to 64x64: the page is written" [ -s "$T/e3/index.html" ]
"$BIN" demo --help >"$T/h.out" 2>&1
check "demo --help exits 0" [ $? -eq 0 ]
check "demo --help names the methods" grep -q "lora|ti|dreambooth|custom" "$T/h.out"

# ---- likeness bench emoji ----
"$BIN" bench emoji --help >"$T/h.out" 2>&1
check "bench emoji --help exits 0" [ $? -eq 0 ]
check "bench emoji --help documents --methods" grep -q -- "--methods LIST" "$T/h.out"
"$BIN" bench --help >/dev/null 2>&1
check "bench --help exits 0" [ $? -eq 0 ]
expect_rc "bench without a benchmark" 2 "usage: likeness bench emoji" bench
expect_rc "bench emoji unknown option" 2 "unknown option '--bogus'" bench emoji --bogus 1
expect_rc "bench emoji unknown method" 2 "bad value 'real,foo' for --methods" bench emoji --methods real,foo
expect_rc "bench emoji --train-steps real=3" 2 "for --train-steps" bench emoji --train-steps real=3
expect_rc "bench emoji --seeds 0" 2 "for --seeds" bench emoji --seeds 0
expect_rc "bench emoji option without a value" 2 "needs a value" bench emoji --json
expect_rc "bench emoji missing data" 1 "$T/nodata" bench emoji --model "$M" --evaluator "$E" \
    --data "$T/nodata" --work "$T/bw" --json "$T/nodata.json"
"$BIN" bench emoji --model "$M" --evaluator "$E" --data "$D" --work "$T/bw" --json "$T/eb.json" \
    --methods real,baseline --concepts 1 --style-concepts 0 --t2i-concepts 0 --seeds 1 --steps 2 \
    >"$T/bench.out" 2>"$T/bench.err"
rc=$?
check "bench emoji (real, baseline) exits 0" [ $rc -eq 0 ]
[ $rc -eq 0 ] || tail -3 "$T/bench.err"
check "bench emoji prints the table" sh -c "grep -q '| real | 2 |' '$T/bench.out' && grep -q '| baseline | 1 |' '$T/bench.out'"
check "bench emoji writes its JSON" "$PY" -c 'import json,sys
j = json.load(open(sys.argv[1]))
s = j["subject"]
assert set(s) == {"real", "baseline"}, s
assert s["real"]["images"] == 2 and s["baseline"]["images"] == 1, s
assert j["settings"]["subject_concepts"] == 1 and j["settings"]["sample_steps"] == 2, j["settings"]
assert -1 <= s["real"]["subject_fidelity"] <= 1' "$T/eb.json"

cli_done
