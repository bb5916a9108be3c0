/* dreambooth_export.c: writing a (fine-tuned) Stable Diffusion model from memory, for
 * DreamBooth's outputs: the diffusers folder layout (model_index.json + one folder per
 * component) and the CompVis / A1111 single-file layout (inverse of sd_single_file.c's
 * renaming, SD-1.x). */
#define _POSIX_C_SOURCE 200809L
#include "likeness/train_methods.h"
#include "core/fileio.h"
#include "models/sd_single_file_write.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Add tensor t (any float dtype) as name, F32 or F16, with shape (ndim, shape): t's own or a
 * reshape of the same element count. */
static lk_status add_reshaped(lk_st_writer *w, const char *name, const lk_tensor *t, int ndim,
                              const int64_t *shape, bool fp16) {
    const int64_t n = lk_numel(t);
    if (!fp16 && t->dtype == LK_F32 && lk_is_contiguous(t))
        return lk_st_writer_add(w, name, LK_F32, ndim, shape, t->data);
    if (fp16 && t->dtype == LK_F16 && lk_is_contiguous(t))
        return lk_st_writer_add(w, name, LK_F16, ndim, shape, t->data);
    float *f = malloc(sizeof(float) * (size_t)n + 1);
    uint16_t *h = fp16 ? malloc(sizeof(uint16_t) * (size_t)n + 1) : NULL;
    if (!f || (fp16 && !h)) {
        free(f);
        free(h);
        return lk_fail(LK_ERR_NOMEM, "out of memory");
    }
    for (int64_t i = 0; i < n; i++) f[i] = lk_get_f32(t, i);
    if (fp16) lk_f32_to_f16_n(h, f, (size_t)n);
    lk_status s = lk_st_writer_add(w, name, fp16 ? LK_F16 : LK_F32, ndim, shape,
                                   fp16 ? (const void *)h : (const void *)f);
    free(f);
    free(h);
    return s;
}

static lk_status add_tensor(lk_st_writer *w, const char *name, const lk_tensor *t, bool fp16) {
    return add_reshaped(w, name, t, t->ndim, t->shape, fp16);
}

static lk_status save_part(lk_sd_model *m, lk_sd_part_id id, const char *dir, const char *file,
                           bool fp16, lk_trainer *meta) {
    const lk_sd_part *pt = &m->part[id];
    char p[4200];
    snprintf(p, sizeof p, "%s/%s", dir, lk_sd_part_name(id));
    lk_status s = lk__mkdirs(p);
    if (s != LK_OK) return s;
    snprintf(p, sizeof p, "%s/%s/config.json", dir, lk_sd_part_name(id));
    if (pt->config_json) s = lk__write_text_atomic(p, pt->config_json);
    lk_st_writer *w = lk_st_writer_new();
    if (!w) return lk_fail(LK_ERR_NOMEM, "out of memory");
    for (int i = 0; s == LK_OK && i < lk_weights_count(pt->weights); i++) {
        const lk_tensor *t = lk_weights_at(pt->weights, i);
        s = add_tensor(w, t->name, t, fp16);
    }
    if (s == LK_OK) s = lk_st_writer_meta(w, "format", "pt");
    if (s == LK_OK && meta) s = lk_trainer_add_metadata(meta, w);
    snprintf(p, sizeof p, "%s/%s/%s", dir, lk_sd_part_name(id), file);
    if (s == LK_OK) s = lk_st_writer_save(w, p);
    lk_st_writer_free(w);
    return s;
}

static const char MODEL_INDEX[] =
    "{\n  \"_class_name\": \"StableDiffusionPipeline\",\n  \"_diffusers_version\": \"0.25.0\",\n"
    "  \"feature_extractor\": [null, null],\n  \"requires_safety_checker\": false,\n"
    "  \"safety_checker\": [null, null],\n"
    "  \"scheduler\": [\"diffusers\", \"DDIMScheduler\"],\n"
    "  \"text_encoder\": [\"transformers\", \"CLIPTextModel\"],\n"
    "  \"tokenizer\": [\"transformers\", \"CLIPTokenizer\"],\n"
    "  \"unet\": [\"diffusers\", \"UNet2DConditionModel\"],\n"
    "  \"vae\": [\"diffusers\", \"AutoencoderKL\"]\n}\n";

/* Contract: see train_methods.h. */
lk_status lk_sd_save_diffusers(lk_sd_model *m, const char *dir, const char *tokenizer_src,
                               bool fp16, lk_trainer *meta) {
    if (!m || !dir || !tokenizer_src) return lk_fail(LK_ERR_INVALID, "sd_save_diffusers: NULL argument");
    if (m->shapes_only) return lk_fail(LK_ERR_INVALID, "sd_save_diffusers: model has no data");
    if (strlen(dir) > 4000 || strlen(tokenizer_src) > 4000)
        return lk_fail(LK_ERR_INVALID, "sd_save_diffusers: path too long");
    char p[4200], q[4200];
    lk_status s = lk__mkdirs(dir);
    if (s == LK_OK) s = save_part(m, LK_SD_UNET, dir, "diffusion_pytorch_model.safetensors", fp16, meta);
    if (s == LK_OK) s = save_part(m, LK_SD_VAE, dir, "diffusion_pytorch_model.safetensors", fp16, meta);
    if (s == LK_OK) s = save_part(m, LK_SD_TEXT_ENCODER, dir, "model.safetensors", fp16, meta);
    snprintf(p, sizeof p, "%s/scheduler", dir);
    if (s == LK_OK) s = lk__mkdirs(p);
    snprintf(p, sizeof p, "%s/scheduler/scheduler_config.json", dir);
    if (s == LK_OK && m->scheduler_json) s = lk__write_text_atomic(p, m->scheduler_json);
    snprintf(p, sizeof p, "%s/tokenizer", dir);
    if (s == LK_OK) s = lk__mkdirs(p);
    static const char *const tok_files[] = {"vocab.json", "merges.txt", "special_tokens_map.json",
                                            "tokenizer_config.json"};
    for (int i = 0; s == LK_OK && i < 4; i++) {
        snprintf(p, sizeof p, "%s/%s", tokenizer_src, tok_files[i]);
        snprintf(q, sizeof q, "%s/tokenizer/%s", dir, tok_files[i]);
        if (i >= 2 && access(p, R_OK) != 0) continue; /* the two .json files are optional */
        s = lk__copy_file_atomic(p, q);
    }
    snprintf(p, sizeof p, "%s/model_index.json", dir);
    if (s == LK_OK) s = lk__write_text_atomic(p, MODEL_INDEX);
    if (s != LK_OK) lk_fail_prefix(s, "saving %s: ", dir);
    return s;
}

/* Contract: see train_methods.h. */
lk_status lk_sd_save_single_file(lk_sd_model *m, const char *path, bool fp16, lk_trainer *meta) {
    if (!m || !path) return lk_fail(LK_ERR_INVALID, "sd_save_single_file: NULL argument");
    if (m->shapes_only) return lk_fail(LK_ERR_INVALID, "sd_save_single_file: model has no data");
    if (m->arch != LK_SD_ARCH_SD1)
        return lk_fail(LK_ERR_UNSUPPORTED, "%s: single-file output is written for SD-1.x models only "
                       "(this is %s: its text encoder would need the OpenCLIP layout); give a folder "
                       "path for the diffusers layout", path, lk_sd_arch_name(m->arch));
    lk__sd_single_layout lay;
    lk_status s = lk__sd_single_layout_of(m, &lay);
    lk_st_writer *w = s == LK_OK ? lk_st_writer_new() : NULL;
    if (s == LK_OK && !w) s = lk_fail(LK_ERR_NOMEM, "out of memory");
    /* the order of an ldm state_dict: UNet, VAE, text encoder (the writer sorts names anyway) */
    static const lk_sd_part_id order[LK_SD_NPARTS] = {LK_SD_UNET, LK_SD_VAE, LK_SD_TEXT_ENCODER};
    for (int p = 0; s == LK_OK && p < LK_SD_NPARTS; p++) {
        const lk_weights *ws = m->part[order[p]].weights;
        for (int i = 0; s == LK_OK && i < lk_weights_count(ws); i++) {
            const lk_tensor *t = lk_weights_at(ws, i);
            char name[256];
            bool to_conv;
            s = lk__sd_single_name(m, &lay, order[p], t->name, name, sizeof name, &to_conv);
            if (s != LK_OK) break;
            if (to_conv && t->ndim == 2) {
                const int64_t shape[4] = {t->shape[0], t->shape[1], 1, 1};
                s = add_reshaped(w, name, t, 4, shape, fp16);
            } else {
                s = add_tensor(w, name, t, fp16);
            }
        }
    }
    if (s == LK_OK) s = lk_st_writer_meta(w, "format", "pt");
    if (s == LK_OK)
        s = lk_st_writer_meta(w, "modelspec.prediction_type",
                              m->prediction == LK_PREDICT_V ? "v" : "epsilon");
    if (s == LK_OK && meta) s = lk_trainer_add_metadata(meta, w);
    if (s == LK_OK) s = lk_st_writer_save(w, path);
    lk_st_writer_free(w);
    if (s != LK_OK && !strstr(lk_last_error(), path)) lk_fail_prefix(s, "saving %s: ", path);
    return s;
}
