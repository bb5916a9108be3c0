/* test_sd_loader.c: checkpoint loading. SHA-256 on the FIPS 180-4 / NIST vectors; the golden
 * diffusers folder; the golden single-file fp16 checkpoint converted to the same tensors (every
 * one, same names and shapes, values equal to the folder's rounded to fp16) with configs
 * equivalent to the folder's config.json; an SD-2 (OpenCLIP) single file made from the golden
 * weights; refusals (SDXL, SD3, inpainting, pickles, unknown keys, missing tokenizer). */
#define _POSIX_C_SOURCE 200809L
#include "harness.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/sha256.h"
#include "likeness/sd_model.h"

/* REQUIRE for void functions */
#define REQUIRE_VOID(cond)                                                          \
    do {                                                                            \
        if (!(cond)) {                                                              \
            fprintf(stderr, "FATAL %s:%d: %s (%s)\n", __FILE__, __LINE__, #cond,   \
                    lk_last_error());                                               \
            lk_t_failures++;                                                        \
            return;                                                                 \
        }                                                                           \
    } while (0)

static char golden[2048], tmpdir[256];

static char *sdup(const char *s) {
    char *d = malloc(strlen(s) + 1);
    if (d) strcpy(d, s);
    return d;
}

static const char *gpath(const char *rel, char *buf, size_t n) {
    snprintf(buf, n, "%s/%s", golden, rel);
    return buf;
}

static const char *tpath(const char *rel, char *buf, size_t n) {
    snprintf(buf, n, "%s/%s", tmpdir, rel);
    return buf;
}

/* ---- sha256 ---- */

static void test_sha256_vectors(void) {
    char hex[65];
    lk_sha256_hex("", 0, hex);
    CHECK(!strcmp(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"));
    lk_sha256_hex("abc", 3, hex);
    CHECK(!strcmp(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"));
    const char *m448 = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    lk_sha256_hex(m448, strlen(m448), hex);
    CHECK(!strcmp(hex, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"));
    const char *m896 = "abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopq"
                       "klmnopqrlmnopqrsmnopqrstnopqrstu";
    lk_sha256_hex(m896, strlen(m896), hex);
    CHECK(!strcmp(hex, "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1"));
    /* one million 'a', fed in uneven pieces */
    char *a = malloc(1000000);
    REQUIRE_VOID(a);
    memset(a, 'a', 1000000);
    lk_sha256 c;
    uint8_t d[32];
    lk_sha256_init(&c);
    size_t o = 0, step = 1;
    while (o < 1000000) {
        size_t n = 1000000 - o < step ? 1000000 - o : step;
        lk_sha256_update(&c, a + o, n);
        o += n;
        step = step * 3 % 1013 + 1;
    }
    lk_sha256_final(&c, d);
    static const uint8_t want[32] = {0xcd, 0xc7, 0x6e, 0x5c, 0x99, 0x14, 0xfb, 0x92, 0x81, 0xa1, 0xc7,
                                     0xe2, 0x84, 0xd7, 0x3e, 0x67, 0xf1, 0x80, 0x9a, 0x48, 0xa4, 0x97,
                                     0x20, 0x0e, 0x04, 0x6d, 0x39, 0xcc, 0xc7, 0x11, 0x2c, 0xd0};
    CHECK(!memcmp(d, want, 32));
    /* lengths around the padding boundary: streaming == one shot */
    for (size_t n = 50; n < 70; n++) {
        char one[65], two[65];
        lk_sha256_hex(a, n, one);
        lk_sha256_init(&c);
        lk_sha256_update(&c, a, n / 2);
        lk_sha256_update(&c, a + n / 2, n - n / 2);
        lk_sha256_final(&c, d);
        lk_sha256_hex(a, n, two);
        CHECK(!strcmp(one, two));
    }
    free(a);
    /* file hash = hash of its bytes */
    char path[4096];
    FILE *f = fopen(gpath("model_index.json", path, sizeof path), "rb");
    REQUIRE_VOID(f);
    char buf[4096];
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    char h1[65], h2[65];
    lk_sha256_hex(buf, n, h1);
    CHECK_OK(lk_sha256_file(path, h2));
    CHECK(!strcmp(h1, h2));
    CHECK(lk_sha256_file("/nonexistent/file", h2) == LK_ERR_IO);
}

static void test_sha256(void) {
    bool ni = lk__sha256_use_portable(false);
    printf("sha256: CPU SHA extensions %s\n", ni ? "used" : "not available");
    test_sha256_vectors();
    if (ni) {
        lk__sha256_use_portable(true);
        printf("sha256: portable code\n");
        test_sha256_vectors();
        lk__sha256_use_portable(false);
    }
}

/* ---- helpers ---- */

/* Every key of a (not starting with '_', not sample_size) has an equal value in b. */
static int configs_equivalent(const char *what, const char *ja, const char *jb) {
    cJSON *a = cJSON_Parse(ja), *b = cJSON_Parse(jb);
    int ok = a && b;
    const cJSON *e;
    int n = 0;
    if (ok) {
        cJSON_ArrayForEach(e, a) {
            if (e->string[0] == '_' || !strcmp(e->string, "sample_size")) continue;
            const cJSON *o = cJSON_GetObjectItemCaseSensitive(b, e->string);
            n++;
            if (!o || !cJSON_Compare(e, o, true)) {
                char *x = cJSON_PrintUnformatted(e), *y = o ? cJSON_PrintUnformatted(o) : NULL;
                fprintf(stderr, "FAIL %s: key %s: %s vs %s\n", what, e->string, x, y ? y : "(absent)");
                cJSON_free(x);
                cJSON_free(y);
                ok = 0;
            }
        }
    }
    cJSON_Delete(a);
    cJSON_Delete(b);
    lk_t_checks++;
    if (!ok) lk_t_failures++;
    printf("%s %s: %d keys compared\n", ok ? "ok  " : "FAIL", what, n);
    return ok;
}

/* Part p of got matches part p of want: same names and shapes; values of got equal want rounded
 * through fp16 (bit-exact, fp16_round) or exactly. */
static void compare_parts(const char *what, const lk_weights *got, const lk_weights *want,
                          bool fp16_round) {
    int bad_names = 0, bad_vals = 0;
    double max_abs = 0, max_rel = 0;
    CHECK(lk_weights_count(got) == lk_weights_count(want));
    for (int i = 0; i < lk_weights_count(want); i++) {
        const lk_tensor *w = lk_weights_at(want, i);
        const lk_tensor *g = lk_weights_get(got, w->name);
        if (!g || !lk_same_shape(g, w)) {
            if (bad_names++ < 5) fprintf(stderr, "  %s: '%s' %s\n", what, w->name, g ? "shape differs" : "missing");
            continue;
        }
        size_t n = (size_t)lk_numel(w);
        float *wb = malloc(n * sizeof(float) + 4), *gb = malloc(n * sizeof(float) + 4);
        if (!wb || !gb) {
            free(wb);
            free(gb);
            bad_vals++;
            continue;
        }
        lk_widen_f32(wb, w->data, w->dtype, n);
        lk_widen_f32(gb, g->data, g->dtype, n);
        for (size_t j = 0; j < n; j++) {
            float wv = wb[j], gv = gb[j];
            float expect = fp16_round ? lk_f16_to_f32(lk_f32_to_f16(wv)) : wv;
            if (memcmp(&expect, &gv, 4)) bad_vals++;
            double d = fabs((double)gv - (double)wv);
            if (d > max_abs) max_abs = d;
            if (fabs(wv) > 1e-3 && d / fabs(wv) > max_rel) max_rel = d / fabs(wv);
        }
        free(wb);
        free(gb);
    }
    CHECK(bad_names == 0);
    CHECK(bad_vals == 0);
    printf("%s %s: %d tensors, names/shapes bad=%d, values not fp16-exact=%d, vs f32 folder "
           "max_abs=%.3g max_rel=%.3g\n", bad_names || bad_vals ? "FAIL" : "ok  ", what,
           lk_weights_count(want), bad_names, bad_vals, max_abs, max_rel);
}

/* ---- folder and single file ---- */

static lk_sd_model *folder_model;

static void test_folder(void) {
    lk_sd_load_opts o;
    lk_sd_load_opts_default(&o);
    lk_sd_model *m = NULL;
    double t0 = lk_t_now();
    CHECK_OK(lk_sd_model_load(&m, golden, &o));
    REQUIRE_VOID(m);
    printf("folder loaded in %.3f s\n", lk_t_now() - t0);
    CHECK(m->arch == LK_SD_ARCH_SD1);
    CHECK(!m->single_file);
    CHECK(m->prediction == LK_PREDICT_EPSILON && !m->prediction_guessed);
    CHECK(m->pad == LK_PAD_EOS);
    CHECK(m->tokenizer && lk_tokenizer_vocab_size(m->tokenizer) == 49408);
    static const int counts[LK_SD_NPARTS] = {36, 684, 244};
    for (int i = 0; i < LK_SD_NPARTS; i++) {
        CHECK(m->part[i].config_json && !m->part[i].config_synthesized);
        CHECK(m->part[i].file_dtype == LK_F32 && !m->part[i].mixed_dtypes);
        CHECK(m->part[i].n_params == lk_weights_numel(m->part[i].weights));
        CHECK(lk_weights_count(m->part[i].weights) == counts[i]);
        CHECK(lk_weights_at(m->part[i].weights, 0)->dtype == LK_F32);
    }
    CHECK(lk_weights_get(m->part[LK_SD_VAE].weights, "decoder.mid_block.attentions.0.to_q.weight") != NULL);
    CHECK(m->scheduler_json && strstr(m->scheduler_json, "DDIMScheduler"));
    char h[11], path[4096], full[65];
    CHECK_OK(lk_sd_model_hash(m, h));
    CHECK_OK(lk_sha256_file(gpath("unet/diffusion_pytorch_model.safetensors", path, sizeof path), full));
    CHECK(strlen(h) == 10 && !strncmp(h, full, 10) && !strcmp(m->sha256, full));
    /* synthesizing configs from the folder's own weights gives its config.json back */
    char *keep[LK_SD_NPARTS];
    for (int i = 0; i < LK_SD_NPARTS; i++) keep[i] = sdup(m->part[i].config_json);
    CHECK_OK(lk_sd_synth_configs(m, 0));
    configs_equivalent("folder unet config vs synthesized", keep[LK_SD_UNET], m->part[LK_SD_UNET].config_json);
    configs_equivalent("folder vae config vs synthesized", keep[LK_SD_VAE], m->part[LK_SD_VAE].config_json);
    configs_equivalent("folder text_encoder config vs synthesized", keep[LK_SD_TEXT_ENCODER],
                       m->part[LK_SD_TEXT_ENCODER].config_json);
    for (int i = 0; i < LK_SD_NPARTS; i++) {
        free(m->part[i].config_json);
        m->part[i].config_json = keep[i];
        m->part[i].config_synthesized = false;
    }
    folder_model = m;

    /* F16 storage halves memory */
    lk_sd_model *h16 = NULL;
    o.store = LK_F16;
    o.load_tokenizer = false;
    CHECK_OK(lk_sd_model_load(&h16, golden, &o));
    if (h16) {
        CHECK(lk_weights_nbytes(h16->part[LK_SD_UNET].weights) * 2 ==
              lk_weights_nbytes(m->part[LK_SD_UNET].weights));
        compare_parts("folder stored F16 vs F32 unet", h16->part[LK_SD_UNET].weights,
                      m->part[LK_SD_UNET].weights, true);
    }
    lk_sd_model_free(h16);
}

static void test_single_file(void) {
    REQUIRE_VOID(folder_model);
    char path[4096], tok[4096];
    gpath("single_file_fp16.safetensors", path, sizeof path);
    gpath("tokenizer", tok, sizeof tok);
    lk_sd_load_opts o;
    lk_sd_load_opts_default(&o);
    o.tokenizer_dir = tok;
    lk_sd_model *m = NULL;
    double t0 = lk_t_now();
    CHECK_OK(lk_sd_model_load(&m, path, &o));
    REQUIRE_VOID(m);
    printf("single file loaded (f16 -> f32) in %.3f s\n", lk_t_now() - t0);
    CHECK(m->arch == LK_SD_ARCH_SD1 && m->single_file);
    CHECK(m->prediction == LK_PREDICT_EPSILON && m->prediction_guessed);
    CHECK(m->pad == LK_PAD_EOS);
    CHECK(m->tokenizer != NULL);
    for (int i = 0; i < LK_SD_NPARTS; i++) {
        CHECK(m->part[i].config_synthesized);
        CHECK(m->part[i].file_dtype == LK_F16 && !m->part[i].mixed_dtypes);
        CHECK(m->part[i].n_params == folder_model->part[i].n_params);
    }
    compare_parts("single file text_encoder", m->part[LK_SD_TEXT_ENCODER].weights,
                  folder_model->part[LK_SD_TEXT_ENCODER].weights, true);
    compare_parts("single file unet", m->part[LK_SD_UNET].weights, folder_model->part[LK_SD_UNET].weights, true);
    compare_parts("single file vae", m->part[LK_SD_VAE].weights, folder_model->part[LK_SD_VAE].weights, true);
    configs_equivalent("unet config (folder keys in synthesized)", folder_model->part[LK_SD_UNET].config_json,
                       m->part[LK_SD_UNET].config_json);
    configs_equivalent("unet config (synthesized keys in folder)", m->part[LK_SD_UNET].config_json,
                       folder_model->part[LK_SD_UNET].config_json);
    configs_equivalent("vae config", folder_model->part[LK_SD_VAE].config_json, m->part[LK_SD_VAE].config_json);
    configs_equivalent("vae config (reverse)", m->part[LK_SD_VAE].config_json,
                       folder_model->part[LK_SD_VAE].config_json);
    configs_equivalent("text_encoder config", folder_model->part[LK_SD_TEXT_ENCODER].config_json,
                       m->part[LK_SD_TEXT_ENCODER].config_json);
    configs_equivalent("text_encoder config (reverse)", m->part[LK_SD_TEXT_ENCODER].config_json,
                       folder_model->part[LK_SD_TEXT_ENCODER].config_json);
    lk_schedule_config sc;
    CHECK_OK(lk_schedule_config_parse(&sc, m->scheduler_json, strlen(m->scheduler_json), "synth"));
    CHECK(sc.num_train_timesteps == 1000 && sc.beta_schedule == LK_BETA_SCALED_LINEAR &&
          sc.steps_offset == 1 && sc.prediction_type == LK_PREDICT_EPSILON && !sc.set_alpha_to_one);
    char h[11], full[65];
    CHECK_OK(lk_sd_model_hash(m, h));
    CHECK_OK(lk_sha256_file(path, full));
    CHECK(!strncmp(h, full, 10));
    lk_sd_model_free(m);

    /* kept half: bit-identical to the file's fp16 */
    o.store = LK_F16;
    o.load_tokenizer = false;
    CHECK_OK(lk_sd_model_load(&m, path, &o));
    if (m) {
        compare_parts("single file kept F16 unet", m->part[LK_SD_UNET].weights,
                      folder_model->part[LK_SD_UNET].weights, true);
        compare_parts("single file kept F16 vae", m->part[LK_SD_VAE].weights,
                      folder_model->part[LK_SD_VAE].weights, true);
        CHECK(lk_weights_at(m->part[LK_SD_UNET].weights, 0)->dtype == LK_F16);
    }
    lk_sd_model_free(m);

    /* shapes only (likeness info) */
    o.shapes_only = true;
    CHECK_OK(lk_sd_model_load(&m, path, &o));
    if (m) {
        CHECK(m->shapes_only && lk_weights_at(m->part[LK_SD_UNET].weights, 0)->data == NULL);
        for (int i = 0; i < LK_SD_NPARTS; i++) CHECK(m->part[i].n_params == folder_model->part[i].n_params);
    }
    lk_sd_model_free(m);

    /* prediction override, rewritten into the scheduler config */
    lk_sd_load_opts_default(&o);
    o.load_tokenizer = false;
    o.prediction = LK_PREDICT_V;
    CHECK_OK(lk_sd_model_load(&m, path, &o));
    if (m) {
        CHECK(m->prediction == LK_PREDICT_V && !m->prediction_guessed);
        CHECK_OK(lk_schedule_config_parse(&sc, m->scheduler_json, strlen(m->scheduler_json), "synth"));
        CHECK(sc.prediction_type == LK_PREDICT_V);
    }
    lk_sd_model_free(m);
    CHECK_OK(lk_sd_model_load(&m, golden, &o));
    if (m) {
        CHECK(m->prediction == LK_PREDICT_V);
        CHECK_OK(lk_schedule_config_parse(&sc, m->scheduler_json, strlen(m->scheduler_json), "folder"));
        CHECK(sc.prediction_type == LK_PREDICT_V && sc.steps_offset == 1);
    }
    lk_sd_model_free(m);

    /* no tokenizer for a single file: a clear error */
    unsetenv("LK_TOKENIZER");
    lk_sd_load_opts_default(&o);
    CHECK(lk_sd_model_load(&m, path, &o) == LK_ERR_INVALID && !m);
    CHECK(strstr(lk_last_error(), "--tokenizer") && strstr(lk_last_error(), "LK_TOKENIZER"));
    setenv("LK_TOKENIZER", tok, 1);
    CHECK_OK(lk_sd_model_load(&m, path, &o));
    CHECK(m && m->tokenizer);
    lk_sd_model_free(m);
    unsetenv("LK_TOKENIZER");
}

/* ---- synthetic files ---- */

/* Copy golden single-file tensors whose name starts with one of the from prefixes. */
static void copy_prefix(lk_st_writer *w, const lk_safetensors *st, const char *from, const char *to) {
    for (int i = 0; i < lk_safetensors_count(st); i++) {
        const lk_st_tensor *t = lk_safetensors_at(st, i);
        if (strncmp(t->name, from, strlen(from))) continue;
        char name[256];
        snprintf(name, sizeof name, "%s%s", to, t->name + strlen(from));
        CHECK_OK(lk_st_writer_add(w, name, t->dtype, t->ndim, t->shape, t->data));
    }
}

static void add_f32(lk_st_writer *w, const char *name, const lk_tensor *t) {
    CHECK_OK(lk_st_writer_add(w, name, LK_F32, t->ndim, t->shape, t->data));
}

/* An SD-2-layout single file: golden UNet + VAE, and the golden CLIP text model written as an
 * OpenCLIP tower (fused in_proj, resblocks, ln_final) with one extra last block. */
static void test_sd2_single_file(void) {
    REQUIRE_VOID(folder_model);
    const lk_weights *te = folder_model->part[LK_SD_TEXT_ENCODER].weights;
    lk_safetensors *g = lk_t_golden("single_file_fp16.safetensors");
    REQUIRE_VOID(g);
    lk_st_writer *w = lk_st_writer_new();
    copy_prefix(w, g, "model.diffusion_model.", "model.diffusion_model.");
    copy_prefix(w, g, "first_stage_model.", "first_stage_model.");
    copy_prefix(w, g, "alphas_cumprod", "alphas_cumprod");
    const char *P = "cond_stage_model.model.";
    char name[256], src[256];
    snprintf(name, sizeof name, "%stoken_embedding.weight", P);
    add_f32(w, name, lk_weights_get(te, "text_model.embeddings.token_embedding.weight"));
    snprintf(name, sizeof name, "%spositional_embedding", P);
    add_f32(w, name, lk_weights_get(te, "text_model.embeddings.position_embedding.weight"));
    snprintf(name, sizeof name, "%sln_final.weight", P);
    add_f32(w, name, lk_weights_get(te, "text_model.final_layer_norm.weight"));
    snprintf(name, sizeof name, "%sln_final.bias", P);
    add_f32(w, name, lk_weights_get(te, "text_model.final_layer_norm.bias"));
    float proj[32 * 32] = {0}, scale = 4.6f;
    snprintf(name, sizeof name, "%stext_projection", P);
    CHECK_OK(lk_st_writer_add(w, name, LK_F32, LK_DIMS(32, 32), proj));
    snprintf(name, sizeof name, "%slogit_scale", P);
    CHECK_OK(lk_st_writer_add(w, name, LK_F32, 0, (const int64_t[]){1}, &scale));
    for (int L = 0; L < 3; L++) {
        int from = L < 2 ? L : 1; /* block 2 is the dropped last one */
        static const char *const map[][2] = {{"ln_1", "layer_norm1"}, {"ln_2", "layer_norm2"},
                                             {"attn.out_proj", "self_attn.out_proj"},
                                             {"mlp.c_fc", "mlp.fc1"}, {"mlp.c_proj", "mlp.fc2"}};
        for (size_t k = 0; k < 5; k++)
            for (int wb = 0; wb < 2; wb++) {
                snprintf(name, sizeof name, "%stransformer.resblocks.%d.%s.%s", P, L, map[k][0], wb ? "bias" : "weight");
                snprintf(src, sizeof src, "text_model.encoder.layers.%d.%s.%s", from, map[k][1], wb ? "bias" : "weight");
                add_f32(w, name, lk_weights_get(te, src));
            }
        float inw[96 * 32], inb[96];
        static const char *const qkv[3] = {"q_proj", "k_proj", "v_proj"};
        for (int j = 0; j < 3; j++) {
            snprintf(src, sizeof src, "text_model.encoder.layers.%d.self_attn.%s.weight", from, qkv[j]);
            memcpy(inw + j * 32 * 32, lk_weights_get(te, src)->data, 32 * 32 * sizeof(float));
            snprintf(src, sizeof src, "text_model.encoder.layers.%d.self_attn.%s.bias", from, qkv[j]);
            memcpy(inb + j * 32, lk_weights_get(te, src)->data, 32 * sizeof(float));
        }
        snprintf(name, sizeof name, "%stransformer.resblocks.%d.attn.in_proj_weight", P, L);
        CHECK_OK(lk_st_writer_add(w, name, LK_F32, LK_DIMS(96, 32), inw));
        snprintf(name, sizeof name, "%stransformer.resblocks.%d.attn.in_proj_bias", P, L);
        CHECK_OK(lk_st_writer_add(w, name, LK_F32, LK_DIMS(96), inb));
    }
    char path[512], yaml[512];
    tpath("sd2.safetensors", path, sizeof path);
    CHECK_OK(lk_st_writer_save(w, path));
    lk_st_writer_free(w);
    lk_safetensors_close(g);

    lk_sd_load_opts o;
    lk_sd_load_opts_default(&o);
    o.load_tokenizer = false;
    lk_sd_model *m = NULL;
    CHECK_OK(lk_sd_model_load(&m, path, &o));
    REQUIRE_VOID(m);
    CHECK(m->arch == LK_SD_ARCH_SD2);
    CHECK(m->pad == LK_PAD_ZERO);
    CHECK(m->prediction == LK_PREDICT_EPSILON && m->prediction_guessed);
    CHECK(m->part[LK_SD_TEXT_ENCODER].mixed_dtypes == false && m->part[LK_SD_TEXT_ENCODER].file_dtype == LK_F32);
    /* the OpenCLIP tower comes back as the golden CLIPTextModel, exactly (last block dropped) */
    compare_parts("SD-2 OpenCLIP -> CLIPTextModel", m->part[LK_SD_TEXT_ENCODER].weights, te, false);
    cJSON *j = cJSON_Parse(m->part[LK_SD_TEXT_ENCODER].config_json);
    CHECK(j && !strcmp(cJSON_GetObjectItem(j, "hidden_act")->valuestring, "gelu"));
    CHECK(j && cJSON_GetObjectItem(j, "num_hidden_layers")->valueint == 2);
    CHECK(j && cJSON_GetObjectItem(j, "num_attention_heads")->valueint == 4);
    cJSON_Delete(j);
    j = cJSON_Parse(m->part[LK_SD_UNET].config_json);
    const cJSON *hd = j ? cJSON_GetObjectItem(j, "attention_head_dim") : NULL;
    CHECK(cJSON_IsArray(hd) && cJSON_GetArraySize(hd) == 4);
    cJSON_Delete(j);
    lk_sd_model_free(m);

    /* A1111's sibling yaml states v-prediction; the override still wins */
    tpath("sd2.yaml", yaml, sizeof yaml);
    FILE *f = fopen(yaml, "w");
    REQUIRE_VOID(f);
    fprintf(f, "model:\n  target: ldm.models.diffusion.ddpm.LatentDiffusion\n  params:\n"
               "    parameterization: \"v\"\n");
    fclose(f);
    CHECK_OK(lk_sd_model_load(&m, path, &o));
    CHECK(m && m->prediction == LK_PREDICT_V && !m->prediction_guessed);
    if (m) {
        cJSON *u = cJSON_Parse(m->part[LK_SD_UNET].config_json);
        CHECK(u && cJSON_GetObjectItem(u, "sample_size")->valueint == 96);
        cJSON_Delete(u);
        CHECK(strstr(m->scheduler_json, "v_prediction") != NULL);
    }
    lk_sd_model_free(m);
    o.prediction = LK_PREDICT_EPSILON;
    CHECK_OK(lk_sd_model_load(&m, path, &o));
    CHECK(m && m->prediction == LK_PREDICT_EPSILON);
    lk_sd_model_free(m);
    unlink(yaml);
    unlink(path);
}

/* Write a copy of the golden single file with tensors added (extra, n_extra) and those whose name
 * is in drop removed; return the load status. */
static lk_status load_variant(const char *const *drop, int n_drop, const char *extra_name,
                              int ndim, const int64_t *shape, const char *fname) {
    lk_safetensors *g = lk_t_golden("single_file_fp16.safetensors");
    if (!g) return LK_ERR_IO;
    lk_st_writer *w = lk_st_writer_new();
    for (int i = 0; i < lk_safetensors_count(g); i++) {
        const lk_st_tensor *t = lk_safetensors_at(g, i);
        bool skip = false;
        for (int k = 0; k < n_drop; k++) skip |= !strcmp(t->name, drop[k]);
        if (!skip) lk_st_writer_add(w, t->name, t->dtype, t->ndim, t->shape, t->data);
    }
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) n *= shape[i];
    uint16_t *z = calloc((size_t)n, 2);
    if (extra_name) lk_st_writer_add(w, extra_name, LK_F16, ndim, shape, z);
    free(z);
    char path[512];
    tpath(fname, path, sizeof path);
    lk_status s = lk_st_writer_save(w, path);
    lk_st_writer_free(w);
    lk_safetensors_close(g);
    if (s != LK_OK) return s;
    lk_sd_load_opts o;
    lk_sd_load_opts_default(&o);
    o.load_tokenizer = false;
    lk_sd_model *m = NULL;
    s = lk_sd_model_load(&m, path, &o);
    lk_sd_model_free(m);
    unlink(path);
    return s;
}

static void expect_refusal(const char *what, lk_status got, lk_status want, const char *needle) {
    lk_t_checks++;
    bool ok = got == want && strstr(lk_last_error(), needle);
    if (!ok) lk_t_failures++;
    printf("%s refusal %s: [%s] %s\n", ok ? "ok  " : "FAIL", what, lk_status_str(got), lk_last_error());
}

static void test_refusals(void) {
    const char *conv_in = "model.diffusion_model.input_blocks.0.0.weight";
    expect_refusal("SDXL", load_variant(NULL, 0, "conditioner.embedders.0.transformer.text_model.final_layer_norm.weight",
                                        LK_DIMS(4), "xl.safetensors"),
                   LK_ERR_UNSUPPORTED, "SDXL");
    expect_refusal("SDXL label_emb", load_variant(NULL, 0, "model.diffusion_model.label_emb.0.0.weight",
                                                  LK_DIMS(4, 4), "xl2.safetensors"),
                   LK_ERR_UNSUPPORTED, "label_emb");
    expect_refusal("SD3", load_variant(NULL, 0, "model.diffusion_model.joint_blocks.0.x_block.attn.qkv.weight",
                                       LK_DIMS(4, 4), "sd3.safetensors"),
                   LK_ERR_UNSUPPORTED, "joint_blocks");
    expect_refusal("inpainting", load_variant(&conv_in, 1, conv_in, LK_DIMS(32, 9, 3, 3), "inpaint.safetensors"),
                   LK_ERR_UNSUPPORTED, "9 input channels");
    expect_refusal("unknown UNet key", load_variant(NULL, 0, "model.diffusion_model.input_blocks.1.7.foo.weight",
                                                    LK_DIMS(4), "unk.safetensors"),
                   LK_ERR_FORMAT, "input_blocks.1.7.foo.weight");
    const char *vae_key = "first_stage_model.decoder.mid.attn_1.q.weight";
    expect_refusal("misshapen VAE attention", load_variant(&vae_key, 1, vae_key, LK_DIMS(64, 64, 3, 3), "vae.safetensors"),
                   LK_ERR_FORMAT, "1x1");
    /* a file with no UNet */
    lk_st_writer *w = lk_st_writer_new();
    float x[4] = {0};
    lk_st_writer_add(w, "something.else", LK_F32, LK_DIMS(4), x);
    char path[512];
    CHECK_OK(lk_st_writer_save(w, tpath("none.safetensors", path, sizeof path)));
    lk_st_writer_free(w);
    lk_sd_model *m = NULL;
    expect_refusal("not a checkpoint", lk_sd_model_load(&m, path, NULL), LK_ERR_FORMAT, "not a Stable Diffusion");
    unlink(path);
    /* pickles */
    FILE *f = fopen(tpath("model.ckpt", path, sizeof path), "w");
    if (f) fclose(f);
    expect_refusal("ckpt pickle", lk_sd_model_load(&m, path, NULL), LK_ERR_UNSUPPORTED, "never unpickles");
    unlink(path);
    char dir[512], sub[600];
    tpath("binfolder", dir, sizeof dir);
    mkdir(dir, 0700);
    snprintf(sub, sizeof sub, "%s/unet", dir);
    mkdir(sub, 0700);
    snprintf(sub, sizeof sub, "%s/unet/diffusion_pytorch_model.bin", dir);
    f = fopen(sub, "w");
    if (f) fclose(f);
    expect_refusal("folder with .bin", lk_sd_model_load(&m, dir, NULL), LK_ERR_UNSUPPORTED, "pickle");
    unlink(sub);
    /* SDXL pipeline class and SDXL UNet config */
    snprintf(sub, sizeof sub, "%s/model_index.json", dir);
    f = fopen(sub, "w");
    if (f) fputs("{\"_class_name\": \"StableDiffusionXLPipeline\"}", f), fclose(f);
    expect_refusal("SDXL folder", lk_sd_model_load(&m, dir, NULL), LK_ERR_UNSUPPORTED, "SDXL");
    unlink(sub);
    char cfg[700];
    snprintf(cfg, sizeof cfg, "%s/unet/config.json", dir);
    f = fopen(cfg, "w");
    if (f) fputs("{\"_class_name\": \"UNet2DConditionModel\", \"in_channels\": 9}", f), fclose(f);
    expect_refusal("inpainting folder", lk_sd_model_load(&m, dir, NULL), LK_ERR_UNSUPPORTED, "in_channels 9");
    unlink(cfg);
    snprintf(sub, sizeof sub, "%s/unet", dir);
    rmdir(sub);
    expect_refusal("folder without unet", lk_sd_model_load(&m, dir, NULL), LK_ERR_IO, "unet/");
    rmdir(dir);
    CHECK(m == NULL);
    lk_sd_load_opts o;
    lk_sd_load_opts_default(&o);
    o.store = LK_I64;
    expect_refusal("bad store dtype", lk_sd_model_load(&m, golden, &o), LK_ERR_INVALID, "F32, F16 or BF16");
}

int main(void) {
    snprintf(golden, sizeof golden, "%s", lk_t_golden_dir());
    snprintf(tmpdir, sizeof tmpdir, "/tmp/lk_sd_loader_XXXXXX");
    if (!mkdtemp(tmpdir)) {
        fprintf(stderr, "FATAL mkdtemp\n");
        return 1;
    }
    test_sha256();
    test_folder();
    test_single_file();
    test_sd2_single_file();
    test_refusals();
    lk_sd_model_free(folder_model);
    rmdir(tmpdir);
    return lk_t_done();
}
