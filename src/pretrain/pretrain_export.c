/* pretrain_export.c: writing what pretraining makes in the diffusers layout: folders, atomic
 * text files, weight files (the EMA weights when the run keeps them), and the config.json of
 * each network (UNet2DConditionModel, AutoencoderKL, CLIPTextModel). */
#define _POSIX_C_SOURCE 200809L
#include "pretrain/pretrain_internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static lk_status add_floats(lk_st_writer *w, const char *name, const lk_tensor *t,
                            const float *data, bool fp16) {
    const size_t n = (size_t)lk_numel(t);
    if (!fp16) return lk_st_writer_add(w, name, LK_F32, t->ndim, t->shape, data);
    uint16_t *h = malloc(sizeof(uint16_t) * (n ? n : 1));
    if (!h) return lk_fail(LK_ERR_NOMEM, "out of memory");
    lk_f32_to_f16_n(h, data, n);
    lk_status s = lk_st_writer_add(w, name, LK_F16, t->ndim, t->shape, h);
    free(h);
    return s;
}

lk_status lk__pt_save_weights(const lk__pt *p, const char *path, bool fp16, const char *only) {
    lk_st_writer *w = lk_st_writer_new();
    if (!w) return lk_fail(LK_ERR_NOMEM, "out of memory");
    lk_status s = lk_st_writer_meta(w, "format", "pt");
    char step[32];
    snprintf(step, sizeof step, "%lld", (long long)p->step);
    if (s == LK_OK) s = lk_st_writer_meta(w, "likeness_pretrain_step", step);
    if (s == LK_OK) s = lk_st_writer_meta(w, "likeness_weights", p->ema ? "ema" : "raw");
    for (int i = 0; s == LK_OK && i < lk_paramset_count(p->ps); i++) {
        const lk_tensor *t = lk_paramset_get(p->ps, i);
        if (only && strncmp(t->name, only, strlen(only))) continue;
        const float *d = p->ema ? lk_ema_shadow(p->ema, i) : (const float *)t->data;
        s = add_floats(w, t->name, t, d, fp16);
    }
    if (s == LK_OK) s = lk_st_writer_save(w, path);
    lk_st_writer_free(w);
    return s;
}

lk_status lk__pt_save_weights_set(const lk_weights *ws, const char *path, bool fp16) {
    lk_st_writer *w = lk_st_writer_new();
    if (!w) return lk_fail(LK_ERR_NOMEM, "out of memory");
    lk_status s = lk_st_writer_meta(w, "format", "pt");
    for (int i = 0; s == LK_OK && i < lk_weights_count(ws); i++) {
        const lk_tensor *t = lk_weights_at(ws, i);
        const size_t n = (size_t)lk_numel(t);
        float *f = malloc(sizeof(float) * (n ? n : 1));
        if (!f) {
            s = lk_fail(LK_ERR_NOMEM, "out of memory");
            break;
        }
        for (size_t k = 0; k < n; k++) f[k] = lk_get_f32(t, (int64_t)k);
        s = add_floats(w, t->name, t, f, fp16);
        free(f);
    }
    if (s == LK_OK) s = lk_st_writer_save(w, path);
    lk_st_writer_free(w);
    return s;
}

lk_status lk__pt_copy_tokenizer(const char *dir, const char *sub, const char *out) {
    static const char *const files[4] = {"vocab.json", "merges.txt", "tokenizer_config.json",
                                         "special_tokens_map.json"};
    char a[4300], b[4300];
    snprintf(b, sizeof b, "%s/tokenizer", out);
    lk_status s = lk__mkdirs(b);
    for (int i = 0; i < 4 && s == LK_OK; i++) {
        snprintf(a, sizeof a, "%s/%s%s", dir, sub, files[i]);
        snprintf(b, sizeof b, "%s/tokenizer/%s", out, files[i]);
        s = lk__copy_file_atomic(a, b);
    }
    return s;
}

lk_status lk__pt_export_part(const lk__pt *p, const char *dir, const char *part,
                             char *config_json, const char *file, const char *only) {
    char path[4300];
    snprintf(path, sizeof path, "%s/%s", dir, part);
    lk_status s = config_json ? lk__mkdirs(path) : lk_fail(LK_ERR_NOMEM, "out of memory");
    snprintf(path, sizeof path, "%s/%s/config.json", dir, part);
    if (s == LK_OK) s = lk__write_text_atomic(path, config_json);
    free(config_json);
    snprintf(path, sizeof path, "%s/%s/%s", dir, part, file);
    if (s == LK_OK) s = lk__pt_save_weights(p, path, false, only);
    return s;
}

/* a growing string */
typedef struct sbuf {
    char *p;
    size_t n, cap;
    bool bad;
} sbuf;

static void sb_printf(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(sbuf *b, const char *fmt, ...) {
    if (b->bad) return;
    va_list ap;
    va_start(ap, fmt);
    char tmp[1024];
    const int k = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (k < 0 || k >= (int)sizeof tmp) {
        b->bad = true;
        return;
    }
    if (b->n + (size_t)k + 1 > b->cap) {
        size_t nc = b->cap ? 2 * b->cap : 1024;
        while (nc < b->n + (size_t)k + 1) nc *= 2;
        char *np = realloc(b->p, nc);
        if (!np) {
            b->bad = true;
            return;
        }
        b->p = np;
        b->cap = nc;
    }
    memcpy(b->p + b->n, tmp, (size_t)k + 1);
    b->n += (size_t)k;
}

static char *sb_done(sbuf *b) {
    if (b->bad) {
        free(b->p);
        lk_fail(LK_ERR_NOMEM, "out of memory");
        return NULL;
    }
    return b->p;
}

static void sb_list(sbuf *b, const char *key, const char *item, int n, bool last) {
    sb_printf(b, "  \"%s\": [", key);
    for (int i = 0; i < n; i++) sb_printf(b, "%s\"%s\"", i ? ", " : "", item);
    sb_printf(b, "]%s\n", last ? "" : ",");
}

char *lk__pt_unet_config_json(const lk_unet_config *c) {
    sbuf b = {0};
    sb_printf(&b, "{\n  \"_class_name\": \"UNet2DConditionModel\",\n  \"_diffusers_version\": "
              "\"0.21.0\",\n  \"act_fn\": \"silu\",\n  \"attention_head_dim\": [");
    for (int i = 0; i < c->n_blocks; i++) sb_printf(&b, "%s%d", i ? ", " : "", c->heads[i]);
    sb_printf(&b, "],\n  \"block_out_channels\": [");
    for (int i = 0; i < c->n_blocks; i++)
        sb_printf(&b, "%s%d", i ? ", " : "", c->block_out_channels[i]);
    sb_printf(&b, "],\n  \"center_input_sample\": false,\n  \"cross_attention_dim\": %d,\n",
              c->cross_attention_dim);
    sb_printf(&b, "  \"down_block_types\": [");
    for (int i = 0; i < c->n_blocks; i++)
        sb_printf(&b, "%s\"%s\"", i ? ", " : "", c->down_attn[i] ? "CrossAttnDownBlock2D" : "DownBlock2D");
    sb_printf(&b, "],\n  \"downsample_padding\": 1,\n  \"flip_sin_to_cos\": %s,\n  \"freq_shift\": %g,\n"
              "  \"in_channels\": %d,\n  \"layers_per_block\": %d,\n  \"mid_block_scale_factor\": 1,\n"
              "  \"norm_eps\": %g,\n  \"norm_num_groups\": %d,\n  \"out_channels\": %d,\n"
              "  \"sample_size\": %d,\n  \"up_block_types\": [", c->flip_sin_to_cos ? "true" : "false",
              (double)c->freq_shift, c->in_channels, c->layers_per_block, (double)c->norm_eps,
              c->norm_num_groups, c->out_channels, c->sample_size);
    for (int i = 0; i < c->n_blocks; i++)
        sb_printf(&b, "%s\"%s\"", i ? ", " : "", c->up_attn[i] ? "CrossAttnUpBlock2D" : "UpBlock2D");
    sb_printf(&b, "],\n  \"use_linear_projection\": %s\n}\n", c->use_linear_projection ? "true" : "false");
    return sb_done(&b);
}

char *lk__pt_vae_config_json(const lk_vae_config *c) {
    sbuf b = {0};
    sb_printf(&b, "{\n  \"_class_name\": \"AutoencoderKL\",\n  \"_diffusers_version\": \"0.21.0\",\n"
              "  \"act_fn\": \"silu\",\n  \"block_out_channels\": [");
    for (int i = 0; i < c->n_blocks; i++)
        sb_printf(&b, "%s%d", i ? ", " : "", c->block_out_channels[i]);
    sb_printf(&b, "],\n");
    sb_list(&b, "down_block_types", "DownEncoderBlock2D", c->n_blocks, false);
    sb_printf(&b, "  \"in_channels\": %d,\n  \"latent_channels\": %d,\n  \"layers_per_block\": %d,\n"
              "  \"norm_num_groups\": %d,\n  \"out_channels\": %d,\n  \"sample_size\": %d,\n"
              "  \"scaling_factor\": %.6g,\n", c->in_channels, c->latent_channels,
              c->layers_per_block, c->norm_num_groups, c->out_channels, c->sample_size,
              (double)c->scaling_factor);
    sb_list(&b, "up_block_types", "UpDecoderBlock2D", c->n_blocks, true);
    sb_printf(&b, "}\n");
    return sb_done(&b);
}

char *lk__pt_text_config_json(const lk_clip_text_config *c) {
    sbuf b = {0};
    sb_printf(&b, "{\n  \"architectures\": [\"CLIPTextModel\"],\n  \"hidden_act\": \"%s\",\n"
              "  \"hidden_size\": %d,\n  \"intermediate_size\": %d,\n  \"layer_norm_eps\": %g,\n"
              "  \"max_position_embeddings\": %d,\n  \"model_type\": \"clip_text_model\",\n"
              "  \"num_attention_heads\": %d,\n  \"num_hidden_layers\": %d,\n  \"vocab_size\": %d\n}\n",
              c->hidden_act == LK_CLIP_GELU ? "gelu" : "quick_gelu", c->hidden_size,
              c->intermediate_size, (double)c->layer_norm_eps, c->max_position_embeddings,
              c->num_attention_heads, c->num_hidden_layers, c->vocab_size);
    return sb_done(&b);
}
