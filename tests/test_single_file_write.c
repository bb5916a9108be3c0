/* test_single_file_write.c: lk_sd_save_single_file, the CompVis / A1111 single-file writer. The
 * golden diffusers folder saved as one file and loaded back gives every tensor with the same
 * name, shape and value (f32: exact; fp16: the folder's values rounded to fp16) and configs that
 * parse to the same structs; the fp16 file has the key names, shapes and bytes of the golden
 * single file made by the reference conversion; an SD-2 model is refused. */
#define _POSIX_C_SOURCE 200809L
#include "harness.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "likeness/model_config.h"
#include "likeness/sd_model.h"
#include "likeness/train_methods.h"

static char golden[2048], tok[2300], tmpdir[256];

/* Same names and shapes; values of got equal want (fp16_round: want rounded through fp16),
 * bit for bit. */
static void compare_parts(const char *what, const lk_weights *got, const lk_weights *want, bool fp16_round) {
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
        if (wb && gb) {
            lk_widen_f32(wb, w->data, w->dtype, n);
            lk_widen_f32(gb, g->data, g->dtype, n);
            for (size_t j = 0; j < n; j++) {
                float expect = fp16_round ? lk_f16_to_f32(lk_f32_to_f16(wb[j])) : wb[j];
                if (memcmp(&expect, &gb[j], 4)) bad_vals++;
                double d = fabs((double)gb[j] - (double)wb[j]);
                if (d > max_abs) max_abs = d;
                if (fabs(wb[j]) > 1e-3 && d / fabs(wb[j]) > max_rel) max_rel = d / fabs(wb[j]);
            }
        } else {
            bad_vals++;
        }
        free(wb);
        free(gb);
    }
    CHECK(bad_names == 0);
    CHECK(bad_vals == 0);
    printf("%s %s: %d tensors, names/shapes bad=%d, values not %s=%d, max_abs=%.3g max_rel=%.3g\n",
           bad_names || bad_vals ? "FAIL" : "ok  ", what, lk_weights_count(want), bad_names,
           fp16_round ? "fp16-exact" : "exact", bad_vals, max_abs, max_rel);
}

/* The synthesized configs of the reloaded file parse to the structs of the folder's config.json
 * (sample_size aside: a single file cannot state it). */
static void compare_configs(const lk_sd_model *a, const lk_sd_model *b) {
    lk_unet_config ua, ub;
    lk_vae_config va, vb;
    lk_clip_text_config ca, cb;
    const char *ja = a->part[LK_SD_UNET].config_json, *jb = b->part[LK_SD_UNET].config_json;
    CHECK_OK(lk_unet_config_parse(&ua, ja, strlen(ja), "folder unet"));
    CHECK_OK(lk_unet_config_parse(&ub, jb, strlen(jb), "single-file unet"));
    CHECK(ua.in_channels == ub.in_channels && ua.out_channels == ub.out_channels);
    CHECK(ua.n_blocks == ub.n_blocks && ua.layers_per_block == ub.layers_per_block);
    for (int i = 0; i < ua.n_blocks && i < LK_UNET_MAX_BLOCKS; i++) {
        CHECK(ua.block_out_channels[i] == ub.block_out_channels[i]);
        CHECK(ua.down_attn[i] == ub.down_attn[i] && ua.up_attn[i] == ub.up_attn[i]);
        CHECK(ua.heads[i] == ub.heads[i] && ua.transformer_layers[i] == ub.transformer_layers[i]);
    }
    CHECK(ua.cross_attention_dim == ub.cross_attention_dim);
    CHECK(ua.use_linear_projection == ub.use_linear_projection);
    CHECK(ua.norm_num_groups == ub.norm_num_groups && ua.norm_eps == ub.norm_eps);
    CHECK(ua.flip_sin_to_cos == ub.flip_sin_to_cos && ua.freq_shift == ub.freq_shift);
    CHECK(ua.time_embed_dim == ub.time_embed_dim && ua.center_input_sample == ub.center_input_sample);
    CHECK(ua.upcast_attention == ub.upcast_attention);
    ja = a->part[LK_SD_VAE].config_json, jb = b->part[LK_SD_VAE].config_json;
    CHECK_OK(lk_vae_config_parse(&va, ja, strlen(ja), "folder vae"));
    CHECK_OK(lk_vae_config_parse(&vb, jb, strlen(jb), "single-file vae"));
    CHECK(va.in_channels == vb.in_channels && va.out_channels == vb.out_channels);
    CHECK(va.latent_channels == vb.latent_channels && va.n_blocks == vb.n_blocks);
    for (int i = 0; i < va.n_blocks && i < LK_VAE_MAX_BLOCKS; i++)
        CHECK(va.block_out_channels[i] == vb.block_out_channels[i]);
    CHECK(va.layers_per_block == vb.layers_per_block && va.norm_num_groups == vb.norm_num_groups);
    CHECK(va.scaling_factor == vb.scaling_factor);
    ja = a->part[LK_SD_TEXT_ENCODER].config_json, jb = b->part[LK_SD_TEXT_ENCODER].config_json;
    CHECK_OK(lk_clip_text_config_parse(&ca, ja, strlen(ja), "folder text_encoder"));
    CHECK_OK(lk_clip_text_config_parse(&cb, jb, strlen(jb), "single-file text_encoder"));
    CHECK(ca.hidden_size == cb.hidden_size && ca.intermediate_size == cb.intermediate_size);
    CHECK(ca.num_hidden_layers == cb.num_hidden_layers && ca.num_attention_heads == cb.num_attention_heads);
    CHECK(ca.max_position_embeddings == cb.max_position_embeddings && ca.vocab_size == cb.vocab_size);
    CHECK(ca.hidden_act == cb.hidden_act && ca.layer_norm_eps == cb.layer_norm_eps);
    printf("ok   configs parse to the same unet / vae / text_encoder structs\n");
}

static bool is_weight_key(const char *k) {
    static const char *const pfx[] = {"model.diffusion_model.", "first_stage_model.",
                                      "cond_stage_model.transformer."};
    if (strstr(k, "position_ids")) return false;
    for (int i = 0; i < 3; i++)
        if (!strncmp(k, pfx[i], strlen(pfx[i]))) return true;
    return false;
}

/* The written fp16 file against the golden single file (made by the reference conversion): the
 * same weight keys, shapes, dtype and bytes. */
static void compare_with_golden_file(const char *path) {
    lk_safetensors *mine = NULL, *ref = lk_t_golden("single_file_fp16.safetensors");
    CHECK_OK(lk_safetensors_open(&mine, path));
    if (!mine || !ref) {
        lk_safetensors_close(mine);
        lk_safetensors_close(ref);
        CHECK(0);
        return;
    }
    int n_ref = 0, missing = 0, bad = 0, extra = 0;
    for (int i = 0; i < lk_safetensors_count(ref); i++) {
        const lk_st_tensor *r = lk_safetensors_at(ref, i);
        if (!is_weight_key(r->name)) continue;
        n_ref++;
        const lk_st_tensor *t = lk_safetensors_find(mine, r->name);
        if (!t) {
            if (missing++ < 5) fprintf(stderr, "  not written: '%s'\n", r->name);
            continue;
        }
        bool same = t->dtype == r->dtype && t->ndim == r->ndim && t->nbytes == r->nbytes;
        for (int d = 0; same && d < t->ndim; d++) same = t->shape[d] == r->shape[d];
        if (same) same = !memcmp(t->data, r->data, (size_t)t->nbytes);
        if (!same && bad++ < 5) fprintf(stderr, "  differs from the golden file: '%s'\n", r->name);
    }
    for (int i = 0; i < lk_safetensors_count(mine); i++) {
        const char *k = lk_safetensors_at(mine, i)->name;
        if (!lk_safetensors_find(ref, k) && extra++ < 5) fprintf(stderr, "  not in the golden file: '%s'\n", k);
    }
    CHECK(missing == 0 && bad == 0 && extra == 0);
    CHECK(lk_safetensors_count(mine) == n_ref);
    printf("%s fp16 file vs golden single file: %d weight keys, missing=%d, extra=%d, not "
           "byte-identical=%d\n", missing || bad || extra ? "FAIL" : "ok  ", n_ref, missing, extra, bad);
    lk_safetensors_close(mine);
    lk_safetensors_close(ref);
}

int main(void) {
    snprintf(golden, sizeof golden, "%s", lk_t_golden_dir());
    snprintf(tok, sizeof tok, "%s/tokenizer", golden);
    snprintf(tmpdir, sizeof tmpdir, "/tmp/lk_sfw.XXXXXX");
    REQUIRE(mkdtemp(tmpdir));
    char f32_path[512], f16_path[512];
    snprintf(f32_path, sizeof f32_path, "%s/model.safetensors", tmpdir);
    snprintf(f16_path, sizeof f16_path, "%s/model_fp16.safetensors", tmpdir);

    lk_sd_load_opts o;
    lk_sd_load_opts_default(&o);
    o.load_tokenizer = false;
    lk_sd_model *folder = NULL, *m = NULL;
    CHECK_OK(lk_sd_model_load(&folder, golden, &o));
    REQUIRE(folder);

    /* f32: exact round trip */
    double t0 = lk_t_now();
    CHECK_OK(lk_sd_save_single_file(folder, f32_path, false, NULL));
    printf("saved f32 single file in %.3f s\n", lk_t_now() - t0);
    lk_sd_load_opts_default(&o);
    o.tokenizer_dir = tok;
    CHECK_OK(lk_sd_model_load(&m, f32_path, &o));
    REQUIRE(m);
    CHECK(m->single_file && m->arch == LK_SD_ARCH_SD1 && m->tokenizer);
    CHECK(m->prediction == LK_PREDICT_EPSILON && !m->prediction_guessed); /* stated in metadata */
    for (int i = 0; i < LK_SD_NPARTS; i++) {
        CHECK(m->part[i].file_dtype == LK_F32 && !m->part[i].mixed_dtypes);
        CHECK(m->part[i].n_params == folder->part[i].n_params);
    }
    compare_parts("f32 text_encoder", m->part[LK_SD_TEXT_ENCODER].weights, folder->part[LK_SD_TEXT_ENCODER].weights, false);
    compare_parts("f32 unet", m->part[LK_SD_UNET].weights, folder->part[LK_SD_UNET].weights, false);
    compare_parts("f32 vae", m->part[LK_SD_VAE].weights, folder->part[LK_SD_VAE].weights, false);
    compare_configs(folder, m);
    lk_safetensors *st = NULL;
    CHECK_OK(lk_safetensors_open(&st, f32_path));
    if (st) {
        const char *v = lk_safetensors_meta(st, "format");
        CHECK(v && !strcmp(v, "pt"));
        /* the VAE attention projections are 1x1 convolutions again */
        const lk_st_tensor *q = lk_safetensors_find(st, "first_stage_model.decoder.mid.attn_1.q.weight");
        CHECK(q && q->ndim == 4 && q->shape[2] == 1 && q->shape[3] == 1);
        lk_safetensors_close(st);
    }
    lk_sd_model_free(m);
    m = NULL;

    /* fp16: the folder's values rounded to fp16; the golden single file's names and bytes */
    CHECK_OK(lk_sd_save_single_file(folder, f16_path, true, NULL));
    CHECK_OK(lk_sd_model_load(&m, f16_path, &o));
    REQUIRE(m);
    for (int i = 0; i < LK_SD_NPARTS; i++) CHECK(m->part[i].file_dtype == LK_F16);
    compare_parts("fp16 text_encoder", m->part[LK_SD_TEXT_ENCODER].weights, folder->part[LK_SD_TEXT_ENCODER].weights, true);
    compare_parts("fp16 unet", m->part[LK_SD_UNET].weights, folder->part[LK_SD_UNET].weights, true);
    compare_parts("fp16 vae", m->part[LK_SD_VAE].weights, folder->part[LK_SD_VAE].weights, true);
    compare_configs(folder, m);
    compare_with_golden_file(f16_path);
    /* a half-precision model saved as f32 and as fp16 (no double rounding) */
    lk_sd_model *h = NULL;
    lk_sd_load_opts oh;
    lk_sd_load_opts_default(&oh);
    oh.store = LK_F16;
    oh.load_tokenizer = false;
    CHECK_OK(lk_sd_model_load(&h, f16_path, &oh));
    if (h) {
        CHECK_OK(lk_sd_save_single_file(h, f32_path, true, NULL));
        compare_with_golden_file(f32_path);
    }
    lk_sd_model_free(h);
    lk_sd_model_free(m);
    m = NULL;

    /* v-prediction is recorded in the metadata */
    folder->prediction = LK_PREDICT_V;
    CHECK_OK(lk_sd_save_single_file(folder, f32_path, false, NULL));
    o.load_tokenizer = false;
    CHECK_OK(lk_sd_model_load(&m, f32_path, &o));
    CHECK(m && m->prediction == LK_PREDICT_V && !m->prediction_guessed);
    lk_sd_model_free(m);
    folder->prediction = LK_PREDICT_EPSILON;

    /* refusals: SD-2 (OpenCLIP text encoder layout not written), a weight with no CompVis name,
     * NULL arguments; nothing is written */
    char bad_path[512];
    snprintf(bad_path, sizeof bad_path, "%s/bad.safetensors", tmpdir);
    folder->arch = LK_SD_ARCH_SD2;
    CHECK(lk_sd_save_single_file(folder, bad_path, false, NULL) == LK_ERR_UNSUPPORTED);
    CHECK(strstr(lk_last_error(), "SD-1.x") && strstr(lk_last_error(), "SD-2.x"));
    printf("SD-2 refused: %s\n", lk_last_error());
    folder->arch = LK_SD_ARCH_SD1;
    lk_tensor *extra = lk_param_new(LK_F32, 1, (const int64_t[]){4}, "down_blocks.0.resnets.0.mystery.weight");
    REQUIRE(extra);
    CHECK_OK(lk_weights_add(folder->part[LK_SD_UNET].weights, extra));
    CHECK(lk_sd_save_single_file(folder, bad_path, false, NULL) == LK_ERR_FORMAT);
    CHECK(strstr(lk_last_error(), "mystery") && strstr(lk_last_error(), bad_path));
    printf("unknown weight refused: %s\n", lk_last_error());
    CHECK(access(bad_path, F_OK) != 0);
    CHECK(lk_sd_save_single_file(NULL, bad_path, false, NULL) == LK_ERR_INVALID);
    CHECK(lk_sd_save_single_file(folder, NULL, false, NULL) == LK_ERR_INVALID);

    lk_sd_model_free(folder);
    unlink(f32_path);
    unlink(f16_path);
    rmdir(tmpdir);
    return lk_t_done();
}
