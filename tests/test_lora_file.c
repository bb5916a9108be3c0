/* test_lora_file.c: kohya/A1111 LoRA files. The golden LoRA must map every module onto the golden
 * UNet; merged weights are checked against W + m * alpha/rank * up @ down computed here in double;
 * merge + unmerge restores F32 weights to 1e-6 (several files, any order); F16 weights to
 * half-precision rounding; conv 3x3 and text-encoder modules; refusals (LyCORIS, SDXL, other
 * architectures' shapes, unknown names, broken modules). The end-to-end UNet output check
 * (lora_cases.safetensors) needs the UNet network and is not done here. */
#define _POSIX_C_SOURCE 200809L
#include "harness.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "likeness/lora_file.h"
#include "likeness/sd_model.h"

static char golden[2048], tmpdir[256];

static const char *tpath(const char *rel, char *buf, size_t n) {
    snprintf(buf, n, "%s/%s", tmpdir, rel);
    return buf;
}

static lk_sd_model *load_model(lk_dtype store) {
    lk_sd_load_opts o;
    lk_sd_load_opts_default(&o);
    o.store = store;
    o.load_tokenizer = false;
    lk_sd_model *m = NULL;
    CHECK_OK(lk_sd_model_load(&m, golden, &o));
    return m;
}

/* f32 copies of every target of l */
static float **snapshot(const lk_lora *l) {
    int n = lk_lora_count(l);
    float **s = calloc((size_t)n, sizeof *s);
    for (int i = 0; s && i < n; i++) {
        lk_lora_module_info mi;
        lk_lora_module(l, i, &mi);
        int64_t k = lk_numel(mi.target);
        s[i] = malloc((size_t)k * sizeof(float));
        for (int64_t j = 0; s[i] && j < k; j++) s[i][j] = lk_get_f32(mi.target, j);
    }
    return s;
}

static void snapshot_free(float **s, int n) {
    for (int i = 0; s && i < n; i++) free(s[i]);
    free(s);
}

/* expected[i] = base[i] + m * alpha/rank * up @ down, from the file, in double */
static float **expected_merge(const lk_lora *l, float **base, double mult, const char *file) {
    lk_safetensors *st = NULL;
    CHECK_OK(lk_safetensors_open(&st, file));
    if (!st) return NULL;
    int n = lk_lora_count(l);
    float **e = calloc((size_t)n, sizeof *e);
    char name[512];
    for (int i = 0; i < n; i++) {
        lk_lora_module_info mi;
        lk_lora_module(l, i, &mi);
        snprintf(name, sizeof name, "%s.lora_up.weight", mi.name);
        float *up = lk_t_load(st, name, NULL);
        snprintf(name, sizeof name, "%s.lora_down.weight", mi.name);
        int64_t dn;
        float *down = lk_t_load(st, name, &dn);
        int64_t rows = mi.target->shape[0], cols = lk_numel(mi.target) / rows, r = mi.rank;
        CHECK(dn == r * cols);
        e[i] = malloc((size_t)(rows * cols) * sizeof(float));
        double scale = mult * (double)mi.alpha / (double)r;
        for (int64_t a = 0; up && down && a < rows; a++)
            for (int64_t b = 0; b < cols; b++) {
                double acc = 0;
                for (int64_t k = 0; k < r; k++) acc += (double)up[a * r + k] * (double)down[k * cols + b];
                e[i][a * cols + b] = (float)((double)base[i][a * cols + b] + scale * acc);
            }
        free(up);
        free(down);
    }
    lk_safetensors_close(st);
    return e;
}

/* max |target - want| over all modules; also checks within atol + rtol |want| */
static void compare_targets(const char *what, const lk_lora *l, float **want, float atol, float rtol) {
    int n = lk_lora_count(l);
    double max_abs = 0, max_rel = 0;
    int64_t bad = 0, total = 0;
    for (int i = 0; i < n; i++) {
        lk_lora_module_info mi;
        lk_lora_module(l, i, &mi);
        for (int64_t j = 0; j < lk_numel(mi.target); j++) {
            double g = lk_get_f32(mi.target, j), w = want[i][j], d = fabs(g - w);
            if (d > max_abs) max_abs = d;
            if (fabs(w) > 1e-3 && d / fabs(w) > max_rel) max_rel = d / fabs(w);
            if (!(d <= (double)atol + (double)rtol * fabs(w))) bad++;
            total++;
        }
    }
    lk_t_checks++;
    if (bad) lk_t_failures++;
    printf("%s %s: %d modules, %lld values, max_abs=%.3g max_rel=%.3g (atol=%g rtol=%g) bad=%lld\n",
           bad ? "FAIL" : "ok  ", what, n, (long long)total, max_abs, max_rel, (double)atol,
           (double)rtol, (long long)bad);
}

/* F16 unmerge: each element within one half-precision rounding of |W + delta| of the original
 * (the merged weight itself was rounded at that magnitude) */
static void compare_unmerged_half(const lk_lora *l, float **orig, float **merged) {
    double max_abs = 0, max_ulps = 0;
    int64_t bad = 0;
    for (int i = 0; i < lk_lora_count(l); i++) {
        lk_lora_module_info mi;
        lk_lora_module(l, i, &mi);
        for (int64_t j = 0; j < lk_numel(mi.target); j++) {
            double g = lk_get_f32(mi.target, j), o = orig[i][j];
            double mag = fmax(fabs(o), fabs((double)merged[i][j]));
            double bound = mag / 1024.0 + 6e-8, d = fabs(g - o);
            if (d > max_abs) max_abs = d;
            if (d / bound > max_ulps) max_ulps = d / bound;
            if (d > bound) bad++;
        }
    }
    lk_t_checks++;
    if (bad) lk_t_failures++;
    printf("%s F16 merge + unmerge: max_abs=%.3g, worst = %.3g of the bound 2^-10 max(|W|, |W+delta|) "
           "bad=%lld\n", bad ? "FAIL" : "ok  ", max_abs, max_ulps, (long long)bad);
}

static void test_golden_lora(void) {
    char file[4096];
    snprintf(file, sizeof file, "%s/lora/kohya_unet_lora.safetensors", golden);
    lk_sd_model *m = load_model(LK_F32);
    if (!m) return;
    lk_weights *unet = m->part[LK_SD_UNET].weights, *te = m->part[LK_SD_TEXT_ENCODER].weights;
    lk_lora *l = NULL, *l2 = NULL;
    CHECK_OK(lk_lora_open(&l, file, unet, te));
    if (!l) {
        lk_sd_model_free(m);
        return;
    }
    /* every module of the file resolves to a UNet weight: 528 tensors = 176 modules */
    lk_safetensors *st = NULL;
    CHECK_OK(lk_safetensors_open(&st, file));
    CHECK(st && lk_lora_count(l) * 3 == lk_safetensors_count(st));
    lk_safetensors_close(st);
    int n = lk_lora_count(l), n_ff = 0, n_proj_in = 0, n_attn = 0;
    for (int i = 0; i < n; i++) {
        lk_lora_module_info mi;
        CHECK_OK(lk_lora_module(l, i, &mi));
        CHECK(mi.target && !mi.text_encoder && mi.rank == 4 && mi.alpha == 2.0f);
        CHECK(lk_weights_get(unet, mi.target->name) == mi.target);
        n_ff += strstr(mi.target->name, ".ff.net.") != NULL;
        n_proj_in += strstr(mi.target->name, ".proj_in.") != NULL;
        n_attn += strstr(mi.target->name, ".to_") != NULL;
    }
    printf("golden LoRA: %d modules (%d attention, %d feed-forward, %d proj_in)\n", n, n_attn, n_ff, n_proj_in);
    CHECK(n_ff > 0 && n_proj_in > 0 && n_attn > 0 && n_ff + n_proj_in + n_attn == n);
    lk_lora_module_info m0;
    lk_lora_module(l, 0, &m0);
    CHECK(!strcmp(m0.name, "lora_unet_down_blocks_0_attentions_0_proj_in") &&
          !strcmp(m0.target->name, "down_blocks.0.attentions.0.proj_in.weight"));

    float **orig = snapshot(l);
    float **want = expected_merge(l, orig, 0.8, file);
    double t0 = lk_t_now();
    CHECK_OK(lk_lora_merge(l, 0.8f));
    printf("merge: %.4f s\n", lk_t_now() - t0);
    CHECK(lk_lora_merged(l) == 0.8f);
    compare_targets("merged (m=0.8) vs W + m*alpha/rank*up@down in double", l, want, 1e-6f, 1e-5f);
    /* lk_lora_delta agrees */
    float *d = malloc((size_t)lk_numel(m0.target) * sizeof(float));
    CHECK_OK(lk_lora_delta(l, 0, 0.8f, d));
    float *wd = malloc((size_t)lk_numel(m0.target) * sizeof(float));
    for (int64_t j = 0; j < lk_numel(m0.target); j++) wd[j] = want[0][j] - orig[0][j];
    lk_t_close("lk_lora_delta module 0", d, wd, (size_t)lk_numel(m0.target), 1e-6f, 1e-5f);
    free(d);
    free(wd);
    CHECK_OK(lk_lora_unmerge(l));
    CHECK(lk_lora_merged(l) == 0.0f);
    compare_targets("merge + unmerge restores F32", l, orig, 1e-6f, 0.0f);

    /* two files with their own multipliers, unmerged in the other order */
    CHECK_OK(lk_lora_open(&l2, file, unet, te));
    CHECK_OK(lk_lora_merge(l, 0.5f));
    CHECK_OK(lk_lora_merge(l2, -0.3f));
    float **want2 = expected_merge(l, orig, 0.2, file);
    compare_targets("two LoRAs (0.5 and -0.3)", l, want2, 1e-6f, 1e-5f);
    CHECK_OK(lk_lora_unmerge(l));
    float **want3 = expected_merge(l, orig, -0.3, file);
    compare_targets("first unmerged, second kept", l, want3, 1e-6f, 1e-5f);
    CHECK_OK(lk_lora_unmerge(l2));
    compare_targets("both unmerged", l, orig, 1e-6f, 0.0f);
    /* repeated merges add up */
    CHECK_OK(lk_lora_merge(l, 0.4f));
    CHECK_OK(lk_lora_merge(l, 0.4f));
    compare_targets("merge 0.4 twice == 0.8", l, want, 1e-6f, 1e-5f);
    CHECK_OK(lk_lora_unmerge(l));
    compare_targets("and unmerged", l, orig, 1e-6f, 0.0f);
    snapshot_free(want, n);
    snapshot_free(want2, n);
    snapshot_free(want3, n);
    snapshot_free(orig, n);
    lk_lora_free(l2);
    lk_lora_free(l);
    lk_sd_model_free(m);

    /* F16 weights: accumulate in f32, store rounded */
    m = load_model(LK_F16);
    if (!m) return;
    CHECK_OK(lk_lora_open(&l, file, m->part[LK_SD_UNET].weights, NULL));
    if (l) {
        orig = snapshot(l);
        want = expected_merge(l, orig, 0.8, file);
        CHECK_OK(lk_lora_merge(l, 0.8f));
        compare_targets("F16 merged (fp16 rounding)", l, want, 1e-7f, 1.0f / 1024);
        CHECK_OK(lk_lora_unmerge(l));
        compare_unmerged_half(l, orig, want);
        snapshot_free(want, n);
        snapshot_free(orig, n);
    }
    lk_lora_free(l);
    lk_sd_model_free(m);
}

/* ---- synthetic files ---- */

typedef struct tens {
    const char *name;
    int ndim;
    int64_t shape[4];
} tens;

static lk_status open_synthetic(const tens *ts, int n, const char *fname, lk_weights *unet,
                                lk_weights *te, lk_lora **out) {
    lk_st_writer *w = lk_st_writer_new();
    for (int i = 0; i < n; i++) {
        int64_t k = 1;
        for (int d = 0; d < ts[i].ndim; d++) k *= ts[i].shape[d];
        float *x = malloc((size_t)k * sizeof(float));
        lk_t_fill_uniform(x, (size_t)k, -0.5f, 0.5f, 1234 + (uint64_t)i);
        if (ts[i].ndim == 0) x[0] = 3.0f; /* alpha */
        lk_st_writer_add(w, ts[i].name, LK_F32, ts[i].ndim, ts[i].shape, x);
        free(x);
    }
    char path[512];
    tpath(fname, path, sizeof path);
    lk_status s = lk_st_writer_save(w, path);
    lk_st_writer_free(w);
    if (s == LK_OK) s = lk_lora_open(out, path, unet, te);
    return s;
}

static void expect_refusal(const char *what, lk_status got, lk_status want, const char *n1, const char *n2) {
    lk_t_checks++;
    bool ok = got == want && strstr(lk_last_error(), n1) && (!n2 || strstr(lk_last_error(), n2));
    if (!ok) lk_t_failures++;
    printf("%s refusal %s: [%s] %s\n", ok ? "ok  " : "FAIL", what, lk_status_str(got), lk_last_error());
}

static void test_synthetic(void) {
    lk_sd_model *m = load_model(LK_F32);
    if (!m) return;
    lk_weights *unet = m->part[LK_SD_UNET].weights, *te = m->part[LK_SD_TEXT_ENCODER].weights;
    lk_lora *l = NULL;

    /* conv 3x3 (LoCon-style down (r,in,3,3), up (out,r,1,1)) + text-encoder linear + alpha */
    const tens good[] = {
        {"lora_unet_down_blocks_0_resnets_0_conv1.lora_down.weight", 4, {2, 32, 3, 3}},
        {"lora_unet_down_blocks_0_resnets_0_conv1.lora_up.weight", 4, {32, 2, 1, 1}},
        {"lora_unet_down_blocks_0_resnets_0_conv1.alpha", 0, {0}},
        {"lora_te_text_model_encoder_layers_1_mlp_fc1.lora_down.weight", 2, {3, 32}},
        {"lora_te_text_model_encoder_layers_1_mlp_fc1.lora_up.weight", 2, {128, 3}},
        {"lora_te_text_model_encoder_layers_1_mlp_fc1.alpha", 0, {0}},
        {"lora_unet_mid_block_attentions_0_transformer_blocks_0_attn2_to_k.lora_down.weight", 2, {1, 32}},
        {"lora_unet_mid_block_attentions_0_transformer_blocks_0_attn2_to_k.lora_up.weight", 2, {64, 1}},
    };
    CHECK_OK(open_synthetic(good, 8, "good.safetensors", unet, te, &l));
    if (l) {
        CHECK(lk_lora_count(l) == 3);
        lk_lora_module_info mi;
        int seen = 0;
        for (int i = 0; i < 3; i++) { /* file order is sorted by name */
            CHECK_OK(lk_lora_module(l, i, &mi));
            if (!strcmp(mi.name, "lora_unet_down_blocks_0_resnets_0_conv1")) {
                seen++;
                CHECK(!strcmp(mi.target->name, "down_blocks.0.resnets.0.conv1.weight") && mi.alpha == 3.0f &&
                      !mi.text_encoder);
            }
            if (!strcmp(mi.name, "lora_te_text_model_encoder_layers_1_mlp_fc1")) {
                seen++;
                CHECK(mi.text_encoder && !strcmp(mi.target->name, "text_model.encoder.layers.1.mlp.fc1.weight"));
            }
            if (!strcmp(mi.name, "lora_unet_mid_block_attentions_0_transformer_blocks_0_attn2_to_k")) {
                seen++;
                CHECK(mi.rank == 1 && mi.alpha == 1.0f); /* no alpha: alpha = rank */
            }
        }
        CHECK(seen == 3);
        float **orig = snapshot(l);
        char path[512];
        float **want = expected_merge(l, orig, 1.5, tpath("good.safetensors", path, sizeof path));
        CHECK_OK(lk_lora_merge(l, 1.5f));
        compare_targets("conv3x3 + text encoder + no-alpha modules merged", l, want, 1e-6f, 1e-5f);
        CHECK_OK(lk_lora_unmerge(l));
        compare_targets("and unmerged", l, orig, 1e-6f, 0.0f);
        snapshot_free(orig, 3);
        snapshot_free(want, 3);
        lk_lora_free(l);
        l = NULL;
    }
    expect_refusal("text encoder module without text encoder", open_synthetic(good + 3, 3, "te.safetensors", unet, NULL, &l),
                   LK_ERR_UNSUPPORTED, "lora_te_text_model_encoder_layers_1_mlp_fc1", NULL);

    const tens loha[] = {{"lora_unet_mid_block_attentions_0_proj_in.hada_w1_a", 2, {32, 4}}};
    expect_refusal("LoHa", open_synthetic(loha, 1, "loha.safetensors", unet, te, &l), LK_ERR_UNSUPPORTED,
                   "hada_w1_a", "LoHa");
    const tens xl[] = {{"lora_te1_text_model_encoder_layers_0_mlp_fc1.lora_down.weight", 2, {4, 32}},
                       {"lora_te1_text_model_encoder_layers_0_mlp_fc1.lora_up.weight", 2, {128, 4}}};
    expect_refusal("SDXL", open_synthetic(xl, 2, "xl.safetensors", unet, te, &l), LK_ERR_UNSUPPORTED,
                   "lora_te1_", "SDXL");
    const tens other[] = {{"lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.lora_down.weight", 2, {4, 768}},
                          {"lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.lora_up.weight", 2, {320, 4}}};
    expect_refusal("other architecture", open_synthetic(other, 2, "sd15.safetensors", unet, te, &l), LK_ERR_INVALID,
                   "[320,768]", "[32,32]");
    const tens unknown[] = {{"lora_unet_down_blocks_9_attentions_0_proj_in.lora_down.weight", 2, {4, 32}},
                            {"lora_unet_down_blocks_9_attentions_0_proj_in.lora_up.weight", 2, {32, 4}}};
    expect_refusal("unknown module", open_synthetic(unknown, 2, "unk.safetensors", unet, te, &l), LK_ERR_INVALID,
                   "lora_unet_down_blocks_9_attentions_0_proj_in", "matches no weight");
    const tens half[] = {{"lora_unet_mid_block_attentions_0_proj_in.lora_down.weight", 4, {4, 64, 1, 1}}};
    expect_refusal("down without up", open_synthetic(half, 1, "half.safetensors", unet, te, &l), LK_ERR_FORMAT,
                   "no lora_up", NULL);
    const tens ranks[] = {{"lora_unet_mid_block_attentions_0_proj_in.lora_down.weight", 4, {4, 64, 1, 1}},
                          {"lora_unet_mid_block_attentions_0_proj_in.lora_up.weight", 4, {64, 8, 1, 1}}};
    expect_refusal("rank mismatch", open_synthetic(ranks, 2, "ranks.safetensors", unet, te, &l), LK_ERR_FORMAT,
                   "[4,64,1,1]", "[64,8,1,1]");
    const tens peft[] = {{"unet.mid_block.attentions.0.proj_in.lora_A.weight", 2, {4, 64}}};
    expect_refusal("PEFT keys", open_synthetic(peft, 1, "peft.safetensors", unet, te, &l), LK_ERR_UNSUPPORTED,
                   "PEFT", NULL);
    const tens stray[] = {{"lora_unet_mid_block_attentions_0_proj_in.scale", 1, {1}}};
    expect_refusal("stray key", open_synthetic(stray, 1, "stray.safetensors", unet, te, &l), LK_ERR_FORMAT,
                   "not a LoRA tensor", NULL);
    CHECK(l == NULL);
    expect_refusal("pickle", lk_lora_open(&l, "/tmp/x.pt", unet, te), LK_ERR_UNSUPPORTED, "never unpickles", NULL);

    /* shapes-only models cannot be merged into */
    lk_sd_load_opts o;
    lk_sd_load_opts_default(&o);
    o.shapes_only = true;
    o.load_tokenizer = false;
    lk_sd_model *ms = NULL;
    CHECK_OK(lk_sd_model_load(&ms, golden, &o));
    if (ms) {
        CHECK_OK(open_synthetic(good, 3, "good2.safetensors", ms->part[LK_SD_UNET].weights, NULL, &l));
        if (l) expect_refusal("merge into shapes-only", lk_lora_merge(l, 1.0f), LK_ERR_STATE, "no data", NULL);
        lk_lora_free(l);
    }
    lk_sd_model_free(ms);
    char path[512];
    static const char *const files[] = {"good.safetensors", "te.safetensors", "loha.safetensors",
                                        "xl.safetensors", "sd15.safetensors", "unk.safetensors",
                                        "half.safetensors", "ranks.safetensors", "peft.safetensors",
                                        "stray.safetensors", "good2.safetensors"};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) unlink(tpath(files[i], path, sizeof path));
    lk_sd_model_free(m);
}

int main(void) {
    snprintf(golden, sizeof golden, "%s", lk_t_golden_dir());
    snprintf(tmpdir, sizeof tmpdir, "/tmp/lk_lora_file_XXXXXX");
    if (!mkdtemp(tmpdir)) {
        fprintf(stderr, "FATAL mkdtemp\n");
        return 1;
    }
    test_golden_lora();
    test_synthetic();
    rmdir(tmpdir);
    return lk_t_done();
}
