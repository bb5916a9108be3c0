#!/bin/sh
# test_cli_generate.sh: `likeness generate` end to end on the golden model (../shared/golden):
# PNG + JSON sidecar with A1111 "parameters" read back from the PNG chunk, --json, --count,
# LoRA/embedding hashes, img2img, the fp16 single file, one-line errors that write nothing, and
# Ctrl-C stopping cleanly. Usage: test_cli_generate.sh LIKENESS_BINARY GOLDEN_DIR
set -u
BIN=${1:?usage: test_cli_generate.sh LIKENESS_BINARY GOLDEN_DIR}
GOLDEN=${2:?usage: test_cli_generate.sh LIKENESS_BINARY GOLDEN_DIR}
. "$(dirname "$0")/cli_lib.sh"
cli_tmpdir lk_cli_generate
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE} LK_PROGRESS=json
unset LK_TOKENIZER

# params_has PNG PATTERN: the parameters chunk matches the grep pattern
params_has() { png_params "$1" | grep -q -- "$2"; }

# json_get FILE KEY -> value (nested keys with dots)
json_get() {
    "$PY" -c 'import json,sys
v = json.load(open(sys.argv[1]))
for k in sys.argv[2].split("."): v = v[int(k)] if isinstance(v, list) else v[k]
print(v if not isinstance(v, float) else repr(v))' "$1" "$2"
}

# expect_error DESCRIPTION PATTERN ARGS...: exit code != 0, exactly one stderr line matching
# PATTERN (after any JSON progress lines), nothing on stdout, nothing written into the out dir.
expect_error() {
    d=$1; pat=$2; shift 2
    rm -rf "$T/err"
    cli_run "$BIN" "$T/err" generate "$@"
    if [ $rc -ne 0 ] && [ "$nl" -eq 1 ] && printf '%s' "$msg" | grep -q -- "$pat" &&
        [ ! -s "$T/err.out" ] && [ -z "$(ls -A "$T/err" 2>/dev/null)" ]; then
        ok "$d (exit $rc): $msg"
    else
        bad "$d: exit $rc, $nl lines: $msg"
    fi
}

M="--model $GOLDEN"
BASE="--steps 4 --sampler ddim --width 64 --height 64"

# ---- the OpenMP wait policy: the user's is kept, otherwise the command picks one ----
v=$("$BIN" version)
check "version keeps OMP_WAIT_POLICY from the environment: $v" \
    sh -c 'printf "%s" "$1" | grep -q "OMP_WAIT_POLICY PASSIVE"' _ "$v"
v=$(env -u OMP_WAIT_POLICY "$BIN" version)
check "version picks active or passive when unset: $v" \
    sh -c 'printf "%s" "$1" | grep -Eq "OMP_WAIT_POLICY (active|passive)\)"' _ "$v"

# ---- txt2img: PNG, sidecar, parameters ----
"$BIN" generate $M --prompt "a photo of a cat" $BASE --seed 31337 --out "$T/a" >"$T/a.out" 2>"$T/a.log"
check "txt2img exits 0" [ $? -eq 0 ]
check "stdout is the PNG path" [ "$(cat "$T/a.out")" = "$T/a/00000-31337.png" ]
check "PNG and JSON written" [ -s "$T/a/00000-31337.png" -a -s "$T/a/00000-31337.json" ]
check "no temporary files left" [ "$(ls "$T/a" | wc -l)" -eq 2 ]
check "progress: 4 JSON step lines" [ "$(grep -c '"event":"step"' "$T/a.log")" -eq 4 ]
HASH=$(sha256sum "$GOLDEN/unet/diffusion_pytorch_model.safetensors" | cut -c1-10)
P=$(png_params "$T/a/00000-31337.png")
WANT="a photo of a cat
Steps: 4, Sampler: DDIM, CFG scale: 7.5, Seed: 31337, Size: 64x64, Model hash: $HASH, Model: golden"
check "A1111 parameters chunk: $(printf '%s' "$P" | tail -n 1)" [ "$P" = "$WANT" ]
check "sidecar: parameters" [ "$(json_get "$T/a/00000-31337.json" parameters)" = "$WANT" ]
check "sidecar: seed, steps, sampler, cfg" \
    [ "$(json_get "$T/a/00000-31337.json" seed),$(json_get "$T/a/00000-31337.json" steps),$(json_get "$T/a/00000-31337.json" sampler),$(json_get "$T/a/00000-31337.json" cfg_scale)" = "31337,4,ddim,7.5" ]
check "sidecar: model hash" [ "$(json_get "$T/a/00000-31337.json" model_hash)" = "$HASH" ]
check "sidecar: timings" [ -n "$(json_get "$T/a/00000-31337.json" timings.sample_s)" ]

# the same seed again: the next sequence number, the same pixels
"$BIN" generate $M --prompt "a photo of a cat" $BASE --seed 31337 --out "$T/a" >/dev/null 2>&1
check "second run: 00001-31337.png" [ -s "$T/a/00001-31337.png" ]
check "same seed, same pixels" png_pixels same "$T/a/00000-31337.png" "$T/a/00001-31337.png"

# ---- --count and --json, negative prompt, emphasis ----
"$BIN" generate $M --prompt "a (photo:1.3) of a cat" --negative "blurry, dark" $BASE --seed 5 --count 2 \
    --cfg 6 --json --out "$T/b" >"$T/b.out" 2>"$T/b.log"
check "--count 2 --json exits 0" [ $? -eq 0 ]
check "two JSON lines on stdout" [ "$(wc -l <"$T/b.out")" -eq 2 ]
check "seeds 5 and 6, no sidecars" [ -s "$T/b/00000-5.png" -a -s "$T/b/00001-6.png" -a "$(ls "$T/b" | wc -l)" -eq 2 ]
sed -n 2p "$T/b.out" >"$T/b2.json"
check "--json record of image 2" [ "$(json_get "$T/b2.json" seed),$(json_get "$T/b2.json" file)" = "6,00001-6.png" ]
P=$(png_params "$T/b/00001-6.png")
WANT="a (photo:1.3) of a cat
Negative prompt: blurry, dark
Steps: 4, Sampler: DDIM, CFG scale: 6.0, Seed: 6, Size: 64x64, Model hash: $HASH, Model: golden"
check "negative prompt line, CFG 6.0" [ "$P" = "$WANT" ]
check "progress names image 2 of 2" grep -q '"image":2,"images":2' "$T/b.log"

# ---- a UTF-8 prompt goes into an iTXt chunk and reads back ----
"$BIN" generate $M --prompt "un café, 猫" $BASE --seed 2 --cfg 1 --clip-skip 2 --out "$T/u" >/dev/null 2>&1
check "UTF-8 prompt read back from the PNG (no guidance, CFG 1.0)" \
    [ "$(png_params "$T/u/00000-2.png" | head -n 1)" = "un café, 猫" ]
check "Clip skip recorded" params_has "$T/u/00000-2.png" "CFG scale: 1.0, .*, Clip skip: 2$"

# ---- LoRA and embedding ----
LORA="$GOLDEN/lora/kohya_unet_lora.safetensors"
EMB="$GOLDEN/embeddings/cat-toy.safetensors"
"$BIN" generate $M --prompt "a photo of <cat-toy>" $BASE --seed 31337 --lora "$LORA:0.8" --embedding "$EMB" \
    --sampler dpmpp_2m_karras --out "$T/c" >/dev/null 2>"$T/c.log"
check "LoRA + embedding exits 0" [ $? -eq 0 ]
LH=$("$PY" -c 'import hashlib,struct,sys
b = open(sys.argv[1], "rb").read(); n, = struct.unpack("<Q", b[:8])
print(hashlib.sha256(b[8 + n:]).hexdigest()[:12])' "$LORA")
TH=$(sha256sum "$EMB" | cut -c1-12)
P=$(png_params "$T/c/00000-31337.png")
WANT="a photo of <cat-toy> <lora:kohya_unet_lora:0.8>
Steps: 4, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7.5, Seed: 31337, Size: 64x64, Model hash: $HASH, Model: golden, Lora hashes: \"kohya_unet_lora: $LH\", TI hashes: \"cat-toy: $TH\""
check "parameters with LoRA tag, Karras, Lora/TI hashes" [ "$P" = "$WANT" ]
[ "$P" = "$WANT" ] || printf 'got:  %s\nwant: %s\n' "$P" "$WANT"
check "sidecar lists the embedding tokens" [ "$(json_get "$T/c/00000-31337.json" embeddings.0.tokens)" = "cat-toy, <cat-toy>" ]
check "sidecar lists the LoRA weight" [ "$(json_get "$T/c/00000-31337.json" loras.0.weight)" = "0.8" ]
"$BIN" generate $M --prompt "a photo of a cat" $BASE --seed 31337 --lora "$LORA" --out "$T/c1" >/dev/null 2>&1
check "--lora FILE without weight = 1.0" params_has "$T/c1/00000-31337.png" "<lora:kohya_unet_lora:1.0>"

# ---- img2img ----
"$BIN" generate $M --prompt "a photo of a cat" --steps 4 --sampler ddim --seed 1 --init-image "$T/a/00000-31337.png" \
    --strength 0.5 --out "$T/d" >/dev/null 2>"$T/d.log"
check "img2img exits 0" [ $? -eq 0 ]
check "img2img: size from the init image, 2 of 4 steps" \
    [ "$(json_get "$T/d/00000-1.json" width)x$(json_get "$T/d/00000-1.json" height),$(json_get "$T/d/00000-1.json" steps_run)" = "64x64,2" ]
check "img2img: Denoising strength recorded" params_has "$T/d/00000-1.png" "Size: 64x64, Model hash: $HASH, Model: golden, Denoising strength: 0.5$"
"$BIN" generate $M --prompt "a photo of a cat" $BASE --seed 31337 --init-image "$T/a/00000-31337.png" \
    --strength 1 --out "$T/d1" >/dev/null 2>&1
check "img2img strength 1 = txt2img pixels" png_pixels same "$T/d1/00000-31337.png" "$T/a/00000-31337.png"

# ---- the fp16 single file ----
"$BIN" generate --model "$GOLDEN/single_file_fp16.safetensors" --tokenizer "$GOLDEN/tokenizer" --half \
    --prompt "a photo of a cat" $BASE --seed 31337 --out "$T/e" >/dev/null 2>"$T/e.log"
rc=$?
check "single file --half --tokenizer exits 0" [ $rc -eq 0 -a -s "$T/e/00000-31337.png" ]
check "single file: Model hash of the file" params_has "$T/e/00000-31337.png" "Model hash: $(sha256sum "$GOLDEN/single_file_fp16.safetensors" | cut -c1-10), Model: single_file_fp16$"

# ---- errors: one line, non-zero, nothing written ----
"$PY" - "$T" <<'EOF'
import json, struct, sys
def save(path, tensors):
    hdr, data, off = {}, b'', 0
    for name, shape, vals in tensors:
        raw = struct.pack('<%df' % len(vals), *vals)
        hdr[name] = {'dtype': 'F32', 'shape': shape, 'data_offsets': [off, off + len(raw)]}
        data += raw; off += len(raw)
    h = json.dumps(hdr).encode(); h += b' ' * (-len(h) % 8)
    open(path, 'wb').write(struct.pack('<Q', len(h)) + h + data)
save(sys.argv[1] + '/other_arch.safetensors', [
    ('lora_unet_conv_in.alpha', [], [4.0]),
    ('lora_unet_conv_in.lora_down.weight', [4, 7, 3, 3], [0.0] * (4 * 7 * 9)),
    ('lora_unet_conv_in.lora_up.weight', [32, 4, 1, 1], [0.0] * 128)])
save(sys.argv[1] + '/wide.safetensors', [('emb_params', [1, 16], [0.0] * 16)])
EOF
A="--prompt cat $BASE --out $T/err"
expect_error "missing model" "nonexistent" --model "$T/nonexistent" $A
expect_error "width not divisible by 8" "width 60 is not divisible by 8" $M --prompt cat --width 60 --out "$T/err"
expect_error "width not a multiple of 64" "multiple of 64" $M --prompt cat --width 72 --height 64 --steps 1 --out "$T/err"
expect_error "unknown sampler lists the valid ones" "dpmpp_2m_karras" $M $A --sampler plms
expect_error "LoRA for another architecture" "another architecture" $M $A --lora "$T/other_arch.safetensors:0.5"
expect_error "bad --lora syntax" "not a number" $M $A --lora "$LORA:x0.8"
expect_error "missing LoRA file" "No such file" $M $A --lora "$T/missing.safetensors:1"
expect_error "embedding dim mismatch" "16-dim vectors" $M $A --embedding "$T/wide.safetensors"
expect_error "strength 0" "strength" $M $A --init-image "$T/a/00000-31337.png" --strength 0
expect_error "strength 1.5" "strength" $M $A --init-image "$T/a/00000-31337.png" --strength 1.5
expect_error "strength without init image" "needs --init-image" $M $A --strength 0.5
expect_error "missing init image" "init image" $M $A --init-image "$T/missing.png"
expect_error "init image that is not an image" "" $M $A --init-image "$T/wide.safetensors"
expect_error "bad --steps" "--steps" $M $A --steps 0
expect_error "unknown option" "unknown option '--bogus'" $M $A --bogus
expect_error "missing --prompt" "prompt" $M --out "$T/err"
expect_error "single file without tokenizer" "tokenizer" --model "$GOLDEN/single_file_fp16.safetensors" $A

# ---- Ctrl-C: stops after a step, exits 130, writes nothing ----
"$BIN" generate $M --prompt cat --steps 500 --sampler ddim --width 64 --height 64 --seed 3 \
    --out "$T/f" >"$T/f.out" 2>"$T/f.log" &
pid=$!
i=0
while [ $i -lt 600 ] && ! grep -q '"event":"step"' "$T/f.log" 2>/dev/null; do sleep 0.05; i=$((i + 1)); done
kill -INT $pid
wait $pid
rc=$?
check "Ctrl-C: exit 130" [ $rc -eq 130 ]
check "Ctrl-C: one-line message" grep -q "interrupted; image 1 of 1 (seed 3) not written" "$T/f.log"
check "Ctrl-C: nothing written" [ -z "$(ls -A "$T/f")" -a ! -s "$T/f.out" ]

# ---- the terminal bar (forced) ----
LK_PROGRESS=bar "$BIN" generate $M --prompt cat $BASE --seed 9 --out "$T/g" >/dev/null 2>"$T/g.log"
check "bar mode: steps, rate and ETA drawn" grep -Eq '4/4 \[[^]]*(it/s|s/it), ETA' "$T/g.log"

"$BIN" generate --help >"$T/h.out" 2>&1
check "--help exits 0 and documents the defaults" grep -q "default dpmpp_2m" "$T/h.out"

cli_done
