#!/bin/sh
# test_cli_train.sh: `likeness train ti|lora|dreambooth|custom` and `custom-merge` end to end on
# the golden model (../shared/golden): a few steps of each method at 64x64 on three images made
# by `likeness generate`, the output files, `likeness generate` using each output (--embedding,
# --lora, --model DIR, --model FILE.safetensors (DreamBooth single file), --custom), and one-line
# errors with the documented exit codes.
# Usage: test_cli_train.sh LIKENESS_BINARY GOLDEN_DIR
set -u
BIN=${1:?usage: test_cli_train.sh LIKENESS_BINARY GOLDEN_DIR}
GOLDEN=${2:?usage: test_cli_train.sh LIKENESS_BINARY GOLDEN_DIR}
. "$(dirname "$0")/cli_lib.sh"
cli_tmpdir lk_cli_train
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE} LK_PROGRESS=json
unset LK_TOKENIZER

# safetensors header as JSON (tensor names and __metadata__)
st_header() {
    "$PY" -c 'import json,struct,sys
b = open(sys.argv[1], "rb").read(); n, = struct.unpack("<Q", b[:8]); print(b[8:8 + n].decode())' "$1"
}
# st_has FILE PATTERN: the header matches the grep pattern
st_has() { st_header "$1" | grep -q -- "$2"; }

# expect_error DESCRIPTION EXIT_CODE PATTERN ARGS...: that exit code, exactly one stderr line
# (besides JSON progress) matching PATTERN, and OUT ($T/err.safetensors) not written.
expect_error() {
    d=$1; want=$2; pat=$3; shift 3
    rm -f "$T/err.safetensors"
    cli_run "$BIN" "$T/err" train "$@"
    if [ $rc -eq "$want" ] && [ "$nl" -eq 1 ] && printf '%s' "$msg" | grep -q -- "$pat" &&
        [ ! -e "$T/err.safetensors" ]; then
        ok "$d (exit $rc): $msg"
    else
        bad "$d: exit $rc (want $want), $nl lines: $msg"
    fi
}

# ---- three training images, made by the model itself ----
mkdir -p "$T/imgs"
for s in 1 2 3; do
    "$BIN" generate --model "$GOLDEN" --prompt "a photo of a cat" --steps 2 --sampler ddim --cfg 1 \
        --width 64 --height 64 --seed $s --out "$T/gen" >/dev/null 2>&1
done
cp "$T"/gen/*.png "$T/imgs/" 2>/dev/null
check "3 training images made" [ "$(ls "$T/imgs" | grep -c '\.png$')" -eq 3 ]

TR="--model $GOLDEN --images $T/imgs --resolution 64 --steps 3 --seed 1"
GEN="--steps 2 --sampler ddim --width 64 --height 64 --seed 7"
# the base model's image for comparisons
"$BIN" generate --model "$GOLDEN" --prompt "a photo of a cat" $GEN --out "$T/base" >/dev/null 2>&1
check "base image" [ -s "$T/base/00000-7.png" ]

# train_ok DESCRIPTION METHOD ARGS...: exit 0 and 3 JSON step lines
train_ok() {
    what=$1; shift
    "$BIN" train "$@" >"$T/train.out" 2>"$T/train.log"
    rc=$?
    check "$what: exit 0 (got $rc)" [ $rc -eq 0 ]
    [ $rc -eq 0 ] || tail -n 3 "$T/train.log"
    check "$what: 3 step lines" [ "$(grep -c '"event":"step"' "$T/train.log")" -eq 3 ]
}

# gen_ok DESCRIPTION DIR ARGS...: `likeness generate` writes DIR/00000-7.png
gen_ok() {
    what=$1; dir=$2; shift 2
    "$BIN" generate $GEN --out "$dir" "$@" >/dev/null 2>"$T/gen.log"
    rc=$?
    check "$what: generate exits 0 (got $rc) and writes a PNG" [ $rc -eq 0 -a -s "$dir/00000-7.png" ]
    [ $rc -eq 0 ] || tail -n 1 "$T/gen.log"
}

# ---- Textual Inversion ----
train_ok "ti" ti $TR --token "<tok>" --class cat --grad-accum 1 --out "$T/ti.safetensors"
check "ti: A1111 and diffusers files" [ -s "$T/ti.safetensors" -a -s "$T/ti.diffusers.safetensors" ]
check "ti: emb_params" st_has "$T/ti.safetensors" '"emb_params"'
gen_ok "ti" "$T/g_ti" --model "$GOLDEN" --prompt "a photo of <tok>" --embedding "$T/ti.safetensors"

# ---- LoRA ----
train_ok "lora" lora $TR --token sks --class cat --lr 1e-2 --out "$T/lora.safetensors"
check "lora: kohya and diffusers files" [ -s "$T/lora.safetensors" -a -s "$T/lora.diffusers.safetensors" ]
check "lora: lora_unet_* keys" st_has "$T/lora.safetensors" 'lora_unet_.*lora_down.weight'
gen_ok "lora" "$T/g_lora" --model "$GOLDEN" --prompt "a photo of a cat" --lora "$T/lora.safetensors"
check "lora: changes the image" png_pixels differ "$T/g_lora/00000-7.png" "$T/base/00000-7.png"

# ---- DreamBooth with prior preservation ----
train_ok "dreambooth" dreambooth $TR --token sks --class cat --lr 1e-3 --prior-preservation \
    --num-class-images 2 --class-steps 2 --out "$T/db/"
check "dreambooth: diffusers folder" [ -s "$T/db/model_index.json" -a -s "$T/db/unet/diffusion_pytorch_model.safetensors" \
    -a -s "$T/db/text_encoder/model.safetensors" -a -s "$T/db/vae/diffusion_pytorch_model.safetensors" \
    -a -s "$T/db/tokenizer/vocab.json" -a -s "$T/db/scheduler/scheduler_config.json" ]
check "dreambooth: 2 class images beside the output" [ "$(ls "$T/db_class_images" | grep -c '^class_.*\.png$')" -eq 2 ]
check "dreambooth: UNet records the method" st_has "$T/db/unet/diffusion_pytorch_model.safetensors" '"likeness.method":"dreambooth"'
gen_ok "dreambooth" "$T/g_db" --model "$T/db" --prompt "a photo of a cat"
check "dreambooth: the fine-tuned model makes another image" png_pixels differ "$T/g_db/00000-7.png" "$T/base/00000-7.png"
cp "$T/db_class_images/class_00000.png" "$T/class0.png"
train_ok "dreambooth again (class images cached)" dreambooth $TR --token sks --class cat --lr 1e-3 \
    --prior-preservation --num-class-images 2 --class-steps 2 --out "$T/db"
check "dreambooth: cached class image reused as is" cmp -s "$T/class0.png" "$T/db_class_images/class_00000.png"

# ---- DreamBooth to a CompVis / A1111 single file ----
train_ok "dreambooth single file" dreambooth $TR --token sks --class cat --lr 1e-3 --out "$T/db1.safetensors"
check "dreambooth single file: written, no folder" [ -f "$T/db1.safetensors" -a ! -e "$T/db1" ]
check "dreambooth single file: CompVis keys" st_has "$T/db1.safetensors" '"model.diffusion_model.input_blocks.0.0.weight"'
check "dreambooth single file: records the method" st_has "$T/db1.safetensors" '"likeness.method":"dreambooth"'
gen_ok "dreambooth single file" "$T/g_db1" --model "$T/db1.safetensors" --tokenizer "$GOLDEN/tokenizer" \
    --prompt "a photo of a cat"
check "dreambooth single file: the fine-tuned model makes another image" \
    png_pixels differ "$T/g_db1/00000-7.png" "$T/base/00000-7.png"

# ---- Custom Diffusion, a second concept, the merge ----
train_ok "custom" custom $TR --class cat --lr 1e-3 --out "$T/cd.safetensors"
check "custom: the file" [ -s "$T/cd.safetensors" ]
check "custom: token <new1> and attn2.to_k weights" sh -c \
    "'$PY' -c 'import json,struct,sys
b = open(sys.argv[1], \"rb\").read(); n, = struct.unpack(\"<Q\", b[:8]); h = json.loads(b[8:8 + n])
sys.exit(0 if \"<new1>\" in h and any(k.endswith(\"attn2.to_k.weight\") for k in h) else 1)' '$T/cd.safetensors'"
gen_ok "custom" "$T/g_cd" --model "$GOLDEN" --prompt "a photo of <new1> cat" --custom "$T/cd.safetensors"
check "custom: recorded in the PNG parameters" sh -c \
    "grep -q 'Custom hashes: ..cd: $(sha256sum "$T/cd.safetensors" | cut -c1-12)' '$T/g_cd/00000-7.json'"
check "custom: sidecar lists the tokens" grep -q '"tokens":.*"<new1>"' "$T/g_cd/00000-7.json"
gen_ok "custom, plain prompt" "$T/g_cd2" --model "$GOLDEN" --prompt "a photo of a cat" --custom "$T/cd.safetensors"
check "custom: K/V weights change the image" png_pixels differ "$T/g_cd2/00000-7.png" "$T/base/00000-7.png"
train_ok "custom <new2>" custom $TR --token "<new2>" --class dog --lr 1e-3 --out "$T/cd2.safetensors"
"$BIN" train custom-merge --model "$GOLDEN" "$T/cd.safetensors" "$T/cd2.safetensors" --out "$T/merged.safetensors" \
    >/dev/null 2>"$T/merge.log"
rc=$?
check "custom-merge: exit 0 (got $rc) and the file" [ $rc -eq 0 -a -s "$T/merged.safetensors" ]
check "custom-merge: <new1> and <new2> in the file" sh -c \
    "'$PY' -c 'import json,struct,sys
b = open(sys.argv[1], \"rb\").read(); n, = struct.unpack(\"<Q\", b[:8]); h = json.loads(b[8:8 + n])
sys.exit(0 if \"<new1>\" in h and \"<new2>\" in h else 1)' '$T/merged.safetensors'"
gen_ok "custom merged" "$T/g_cdm" --model "$GOLDEN" --prompt "<new1> cat and <new2> dog" --custom "$T/merged.safetensors"

# ---- errors: one line, exit 1 (runtime) / 2 (usage), nothing written ----
E="--resolution 64 --steps 2 --out $T/err.safetensors"
expect_error "missing images folder" 1 "nofolder" ti --model "$GOLDEN" --images "$T/nofolder" --token "<x>" $E
expect_error "ti token already in the vocabulary" 1 "already in the vocabulary" ti --model "$GOLDEN" --images "$T/imgs" --token cat $E
expect_error "--resume without a checkpoint" 1 "checkpoint" lora --model "$GOLDEN" --images "$T/imgs" --token sks --resume $E
expect_error "dreambooth refuses --half" 2 "float32" dreambooth --model "$GOLDEN" --images "$T/imgs" --token sks --half $E
expect_error "custom option on lora" 2 "option of custom" lora --model "$GOLDEN" --images "$T/imgs" --token sks --train-q-out $E
expect_error "prior preservation without a class" 2 "needs --class" custom --model "$GOLDEN" --images "$T/imgs" --prior-preservation $E
expect_error "custom-merge with one file" 2 "custom-merge" custom-merge --model "$GOLDEN" "$T/cd.safetensors" --out "$T/err.safetensors"
expect_error "custom-merge of a file with itself (same token)" 1 "<new1>" custom-merge --model "$GOLDEN" "$T/cd.safetensors" "$T/cd.safetensors" --out "$T/err.safetensors"

# ---- the bundled emoji model (no --model) and no --class: its learned vocabulary splits the
# default init words "object" and "ktn"; TI and Custom Diffusion start from the mean of the pieces,
# while an init word the user gives must still be one token ----
train_ok "ti on the emoji model, default init word" ti --images "$T/imgs" --token "<e1>" --steps 3 --seed 1 --out "$T/eti.safetensors"
train_ok "custom on the emoji model, default init word" custom --images "$T/imgs" --steps 3 --seed 1 --out "$T/ecd.safetensors"
expect_error "an explicit init word of several tokens" 1 "single token" ti --images "$T/imgs" --token "<e2>" --init-word object $E

"$BIN" train --help >"$T/h.out" 2>&1
check "--help exits 0 and documents every method" sh -c "grep -q 'dreambooth' '$T/h.out' && grep -q -- '--num-class-images' '$T/h.out' && grep -q -- '--concept DIR:TOKEN:CLASS' '$T/h.out' && grep -q 'custom-merge' '$T/h.out'"

check "--help documents the dreambooth single-file output" grep -q 'CompVis/A1111 single-file' "$T/h.out"

cli_done
