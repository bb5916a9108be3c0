/* model_config.c: strict parsing of diffusers / Hugging Face config.json text into the
 * configurations of UNet2DConditionModel, AutoencoderKL and CLIPTextModel (diffusers 0.25
 * and transformers key names and defaults). */
#include "likeness/model_config.h"

#include <cjson/cJSON.h>

#include "core/fileio.h"
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---------------- generic JSON helpers ---------------- */

typedef struct cfgp {
    const cJSON *obj;
    const char *label;
} cfgp;

static bool is_null(const cJSON *v) { return !v || cJSON_IsNull(v); }

/* An integer-valued number in [lo, hi]. */
static bool as_int(const cJSON *v, int lo, int hi, int *out) {
    if (!cJSON_IsNumber(v)) return false;
    double d = v->valuedouble;
    if (!(d >= (double)lo && d <= (double)hi) || d != floor(d)) return false;
    *out = (int)d;
    return true;
}

static const cJSON *get(const cfgp *p, const char *key) {
    return cJSON_GetObjectItemCaseSensitive(p->obj, key);
}

static lk_status missing(const cfgp *p, const char *key) {
    return lk_fail(LK_ERR_FORMAT, "%s: required key '%s' is missing", p->label, key);
}

/* Integer key in [lo, hi]; absent/null -> def if !required. */
static lk_status get_int(const cfgp *p, const char *key, bool required, int def, int lo, int hi,
                         int *out) {
    const cJSON *v = get(p, key);
    if (is_null(v)) {
        if (required) return missing(p, key);
        *out = def;
        return LK_OK;
    }
    if (!as_int(v, lo, hi, out))
        return lk_fail(LK_ERR_FORMAT, "%s: key '%s' must be an integer in [%d, %d]", p->label, key,
                       lo, hi);
    return LK_OK;
}

static lk_status get_float(const cfgp *p, const char *key, bool required, float def, float lo,
                           float hi, float *out) {
    const cJSON *v = get(p, key);
    if (is_null(v)) {
        if (required) return missing(p, key);
        *out = def;
        return LK_OK;
    }
    if (!cJSON_IsNumber(v) || !(v->valuedouble >= (double)lo && v->valuedouble <= (double)hi))
        return lk_fail(LK_ERR_FORMAT, "%s: key '%s' must be a number in [%g, %g]", p->label, key,
                       (double)lo, (double)hi);
    *out = (float)v->valuedouble;
    return LK_OK;
}

static lk_status get_bool(const cfgp *p, const char *key, bool def, bool *out) {
    const cJSON *v = get(p, key);
    if (is_null(v)) {
        *out = def;
        return LK_OK;
    }
    if (!cJSON_IsBool(v))
        return lk_fail(LK_ERR_FORMAT, "%s: key '%s' must be true or false", p->label, key);
    *out = cJSON_IsTrue(v);
    return LK_OK;
}

/* A list of n ints in [lo, hi] (n <= max); *n receives the length. */
static lk_status get_int_list(const cfgp *p, const char *key, int max, int lo, int hi, int *vals,
                              int *n) {
    const cJSON *v = get(p, key);
    if (is_null(v)) return missing(p, key);
    if (!cJSON_IsArray(v))
        return lk_fail(LK_ERR_FORMAT, "%s: key '%s' must be a list of integers", p->label, key);
    int k = cJSON_GetArraySize(v);
    if (k < 1 || k > max)
        return lk_fail(LK_ERR_FORMAT, "%s: key '%s' has %d entries; 1 to %d supported", p->label,
                       key, k, max);
    for (int i = 0; i < k; i++)
        if (!as_int(cJSON_GetArrayItem(v, i), lo, hi, &vals[i]))
            return lk_fail(LK_ERR_FORMAT, "%s: key '%s' entry %d must be an integer in [%d, %d]",
                           p->label, key, i, lo, hi);
    *n = k;
    return LK_OK;
}

/* An int (replicated n times) or a list of exactly n ints. */
static lk_status get_int_or_list(const cfgp *p, const cJSON *v, const char *key, int n, int lo,
                                 int hi, int *vals) {
    int one;
    if (as_int(v, lo, hi, &one)) {
        for (int i = 0; i < n; i++) vals[i] = one;
        return LK_OK;
    }
    if (cJSON_IsArray(v) && cJSON_GetArraySize(v) == n) {
        for (int i = 0; i < n; i++)
            if (!as_int(cJSON_GetArrayItem(v, i), lo, hi, &vals[i]))
                return lk_fail(LK_ERR_FORMAT,
                               "%s: key '%s' entry %d must be an integer in [%d, %d]", p->label,
                               key, i, lo, hi);
        return LK_OK;
    }
    return lk_fail(LK_ERR_FORMAT,
                   "%s: key '%s' must be an integer in [%d, %d] or a list of %d of them",
                   p->label, key, lo, hi, n);
}

/* A list of exactly n strings, each of which is a or b: out[i] = (entry == a). */
static lk_status get_type_list(const cfgp *p, const char *key, int n, const char *a, const char *b,
                               bool *out) {
    const cJSON *v = get(p, key);
    if (is_null(v)) return missing(p, key);
    if (!cJSON_IsArray(v) || cJSON_GetArraySize(v) != n)
        return lk_fail(LK_ERR_FORMAT, "%s: key '%s' must be a list of %d block type names",
                       p->label, key, n);
    for (int i = 0; i < n; i++) {
        const cJSON *e = cJSON_GetArrayItem(v, i);
        if (!cJSON_IsString(e))
            return lk_fail(LK_ERR_FORMAT, "%s: key '%s' entry %d must be a string", p->label, key,
                           i);
        if (!strcmp(e->valuestring, a)) out[i] = true;
        else if (b && !strcmp(e->valuestring, b)) out[i] = false;
        else
            return lk_fail(LK_ERR_UNSUPPORTED, "%s: %s[%d] = \"%s\" is not supported (only %s%s%s)",
                           p->label, key, i, e->valuestring, a, b ? " or " : "", b ? b : "");
    }
    return LK_OK;
}

/* The key must be absent, null or false (or a list of falses). */
static lk_status need_off(const cfgp *p, const char *key) {
    const cJSON *v = get(p, key);
    if (is_null(v) || cJSON_IsFalse(v)) return LK_OK;
    if (cJSON_IsArray(v)) {
        bool all_false = true;
        for (int i = 0; i < cJSON_GetArraySize(v); i++)
            all_false = all_false && cJSON_IsFalse(cJSON_GetArrayItem(v, i));
        if (all_false) return LK_OK;
    }
    return lk_fail(LK_ERR_UNSUPPORTED, "%s: key '%s' is set; only null/false is supported",
                   p->label, key);
}

/* The key must be absent/null or true. */
static lk_status need_on(const cfgp *p, const char *key) {
    const cJSON *v = get(p, key);
    if (is_null(v) || cJSON_IsTrue(v)) return LK_OK;
    return lk_fail(LK_ERR_UNSUPPORTED, "%s: key '%s' must be true (or absent)", p->label, key);
}

/* The key must be absent/null or the string want. */
static lk_status need_str(const cfgp *p, const char *key, const char *want) {
    const cJSON *v = get(p, key);
    if (is_null(v)) return LK_OK;
    if (!cJSON_IsString(v))
        return lk_fail(LK_ERR_FORMAT, "%s: key '%s' must be a string", p->label, key);
    if (strcmp(v->valuestring, want))
        return lk_fail(LK_ERR_UNSUPPORTED, "%s: %s = \"%s\" is not supported (only \"%s\")",
                       p->label, key, v->valuestring, want);
    return LK_OK;
}

/* The key must be absent/null or the number want. */
static lk_status need_num(const cfgp *p, const char *key, double want) {
    const cJSON *v = get(p, key);
    if (is_null(v)) return LK_OK;
    if (!cJSON_IsNumber(v))
        return lk_fail(LK_ERR_FORMAT, "%s: key '%s' must be a number", p->label, key);
    if (v->valuedouble != want)
        return lk_fail(LK_ERR_UNSUPPORTED, "%s: %s = %g is not supported (only %g)", p->label, key,
                       v->valuedouble, want);
    return LK_OK;
}

static cJSON *parse_object(const char *json, size_t len, const char *label) {
    if (!json) {
        lk_fail(LK_ERR_INVALID, "%s: NULL config text", label);
        return NULL;
    }
    cJSON *root = cJSON_ParseWithLength(json, len);
    if (!root) {
        lk_fail(LK_ERR_FORMAT, "%s: not valid JSON", label);
        return NULL;
    }
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        lk_fail(LK_ERR_FORMAT, "%s: the top level is not a JSON object", label);
        return NULL;
    }
    return root;
}

#define TRY(expr)                        \
    do {                                 \
        if ((s = (expr)) != LK_OK) goto done; \
    } while (0)

/* ---------------- UNet2DConditionModel ---------------- */

static lk_status unet_parse(lk_unet_config *c, const cfgp *p) {
    lk_status s = LK_OK;
    const int BIG = 1 << 20;
    TRY(get_int(p, "in_channels", true, 0, 1, BIG, &c->in_channels));
    TRY(get_int(p, "out_channels", true, 0, 1, BIG, &c->out_channels));
    TRY(get_int_list(p, "block_out_channels", LK_UNET_MAX_BLOCKS, 1, BIG, c->block_out_channels,
                     &c->n_blocks));
    const int n = c->n_blocks;
    TRY(get_int(p, "layers_per_block", true, 0, 1, LK_UNET_MAX_LAYERS, &c->layers_per_block));
    TRY(get_type_list(p, "down_block_types", n, "CrossAttnDownBlock2D", "DownBlock2D",
                      c->down_attn));
    TRY(get_type_list(p, "up_block_types", n, "CrossAttnUpBlock2D", "UpBlock2D", c->up_attn));
    {
        const cJSON *v = get(p, "cross_attention_dim");
        if (is_null(v)) {
            s = missing(p, "cross_attention_dim");
            goto done;
        }
        if (cJSON_IsArray(v)) {
            s = lk_fail(LK_ERR_UNSUPPORTED, "%s: a per-block cross_attention_dim list is not "
                        "supported", p->label);
            goto done;
        }
        TRY(get_int(p, "cross_attention_dim", true, 0, 1, BIG, &c->cross_attention_dim));
    }
    {
        const char *hk = "num_attention_heads";
        const cJSON *v = get(p, hk);
        if (is_null(v)) {
            hk = "attention_head_dim";
            v = get(p, hk);
        }
        if (is_null(v)) {
            s = lk_fail(LK_ERR_FORMAT, "%s: required key 'attention_head_dim' (or "
                        "'num_attention_heads') is missing", p->label);
            goto done;
        }
        TRY(get_int_or_list(p, v, hk, n, 1, BIG, c->heads));
    }
    {
        const cJSON *v = get(p, "transformer_layers_per_block");
        if (is_null(v)) {
            for (int i = 0; i < n; i++) c->transformer_layers[i] = 1;
        } else {
            TRY(get_int_or_list(p, v, "transformer_layers_per_block", n, 1, 64,
                                c->transformer_layers));
        }
    }
    TRY(get_bool(p, "use_linear_projection", false, &c->use_linear_projection));
    TRY(get_int(p, "norm_num_groups", false, 32, 1, BIG, &c->norm_num_groups));
    TRY(get_float(p, "norm_eps", false, 1e-5f, 0.0f, 1.0f, &c->norm_eps));
    TRY(get_bool(p, "flip_sin_to_cos", true, &c->flip_sin_to_cos));
    TRY(get_float(p, "freq_shift", false, 0.0f, -1e6f, 1e6f, &c->freq_shift));
    TRY(get_int(p, "time_embedding_dim", false, 4 * c->block_out_channels[0], 1, BIG,
                &c->time_embed_dim));
    TRY(get_bool(p, "center_input_sample", false, &c->center_input_sample));
    TRY(get_bool(p, "upcast_attention", false, &c->upcast_attention));
    TRY(get_int(p, "sample_size", false, 0, 0, BIG, &c->sample_size));

    static const char *const off[] = {
        "only_cross_attention", "dual_cross_attention", "class_embed_type", "num_class_embeds",
        "addition_embed_type", "addition_time_embed_dim", "time_cond_proj_dim",
        "encoder_hid_dim", "encoder_hid_dim_type", "projection_class_embeddings_input_dim",
        "class_embeddings_concat", "cross_attention_norm", "timestep_post_act",
        "time_embedding_act_fn", "resnet_skip_time_act", "mid_block_only_cross_attention",
        "reverse_transformer_layers_per_block",
    };
    for (size_t i = 0; i < sizeof off / sizeof off[0]; i++) TRY(need_off(p, off[i]));
    TRY(need_str(p, "act_fn", "silu"));
    TRY(need_str(p, "time_embedding_type", "positional"));
    TRY(need_str(p, "resnet_time_scale_shift", "default"));
    TRY(need_str(p, "attention_type", "default"));
    TRY(need_str(p, "mid_block_type", "UNetMidBlock2DCrossAttn"));
    TRY(need_num(p, "conv_in_kernel", 3));
    TRY(need_num(p, "conv_out_kernel", 3));
    TRY(need_num(p, "downsample_padding", 1));
    TRY(need_num(p, "mid_block_scale_factor", 1));
    TRY(need_num(p, "resnet_out_scale_factor", 1));
    TRY(need_num(p, "dropout", 0));

    /* structural consistency */
    const int G = c->norm_num_groups;
    for (int i = 0; i < n; i++) {
        int ch = c->block_out_channels[i];
        if (ch % G) {
            s = lk_fail(LK_ERR_FORMAT, "%s: block_out_channels[%d] = %d is not divisible by "
                        "norm_num_groups %d", p->label, i, ch, G);
            goto done;
        }
        /* the attentions of down block i and of the up block with the same channels */
        int hd = c->heads[i];
        bool used = c->down_attn[i] || c->up_attn[n - 1 - i] || i == n - 1;
        if (used && ch % hd) {
            s = lk_fail(LK_ERR_FORMAT, "%s: block %d has %d channels, not divisible into %d "
                        "attention heads (attention_head_dim / num_attention_heads)", p->label, i,
                        ch, hd);
            goto done;
        }
    }
done:
    return s;
}

lk_status lk_unet_config_parse(lk_unet_config *cfg, const char *json, size_t len,
                               const char *label) {
    if (!cfg) return lk_fail(LK_ERR_INVALID, "unet config: NULL argument");
    memset(cfg, 0, sizeof *cfg);
    cfgp p = {NULL, label ? label : "unet config"};
    cJSON *root = parse_object(json, len, p.label);
    if (!root) return json ? LK_ERR_FORMAT : LK_ERR_INVALID;
    p.obj = root;
    lk_status s = unet_parse(cfg, &p);
    cJSON_Delete(root);
    if (s != LK_OK) memset(cfg, 0, sizeof *cfg);
    return s;
}

/* ---------------- AutoencoderKL ---------------- */

static lk_status vae_parse(lk_vae_config *c, const cfgp *p) {
    lk_status s = LK_OK;
    const int BIG = 1 << 20;
    TRY(get_int(p, "in_channels", false, 3, 1, BIG, &c->in_channels));
    TRY(get_int(p, "out_channels", false, 3, 1, BIG, &c->out_channels));
    TRY(get_int(p, "latent_channels", true, 0, 1, BIG, &c->latent_channels));
    TRY(get_int_list(p, "block_out_channels", LK_VAE_MAX_BLOCKS, 1, BIG, c->block_out_channels,
                     &c->n_blocks));
    TRY(get_int(p, "layers_per_block", true, 0, 1, 64, &c->layers_per_block));
    TRY(get_int(p, "norm_num_groups", false, 32, 1, BIG, &c->norm_num_groups));
    TRY(get_float(p, "scaling_factor", false, 0.18215f, 1e-6f, 1e6f, &c->scaling_factor));
    TRY(get_int(p, "sample_size", false, 0, 0, BIG, &c->sample_size));
    bool types[LK_VAE_MAX_BLOCKS];
    if (!is_null(get(p, "down_block_types")))
        TRY(get_type_list(p, "down_block_types", c->n_blocks, "DownEncoderBlock2D", NULL, types));
    if (!is_null(get(p, "up_block_types")))
        TRY(get_type_list(p, "up_block_types", c->n_blocks, "UpDecoderBlock2D", NULL, types));
    TRY(need_str(p, "act_fn", "silu"));
    TRY(need_on(p, "use_quant_conv"));
    TRY(need_on(p, "use_post_quant_conv"));
    TRY(need_on(p, "mid_block_add_attention"));
    TRY(need_off(p, "shift_factor"));
    TRY(need_off(p, "latents_mean"));
    TRY(need_off(p, "latents_std"));
    for (int i = 0; i < c->n_blocks; i++)
        if (c->block_out_channels[i] % c->norm_num_groups) {
            s = lk_fail(LK_ERR_FORMAT, "%s: block_out_channels[%d] = %d is not divisible by "
                        "norm_num_groups %d", p->label, i, c->block_out_channels[i],
                        c->norm_num_groups);
            goto done;
        }
done:
    return s;
}

lk_status lk_vae_config_parse(lk_vae_config *cfg, const char *json, size_t len, const char *label) {
    if (!cfg) return lk_fail(LK_ERR_INVALID, "vae config: NULL argument");
    memset(cfg, 0, sizeof *cfg);
    cfgp p = {NULL, label ? label : "vae config"};
    cJSON *root = parse_object(json, len, p.label);
    if (!root) return json ? LK_ERR_FORMAT : LK_ERR_INVALID;
    p.obj = root;
    lk_status s = vae_parse(cfg, &p);
    cJSON_Delete(root);
    if (s != LK_OK) memset(cfg, 0, sizeof *cfg);
    return s;
}

/* ---------------- CLIPTextModel ---------------- */

static lk_status clip_parse(lk_clip_text_config *c, const cfgp *p) {
    lk_status s = LK_OK;
    const int BIG = 1 << 20;
    TRY(get_int(p, "hidden_size", true, 0, 1, BIG, &c->hidden_size));
    TRY(get_int(p, "intermediate_size", true, 0, 1, BIG, &c->intermediate_size));
    TRY(get_int(p, "num_hidden_layers", true, 0, 1, 1024, &c->num_hidden_layers));
    TRY(get_int(p, "num_attention_heads", true, 0, 1, BIG, &c->num_attention_heads));
    TRY(get_int(p, "max_position_embeddings", false, 77, 1, BIG, &c->max_position_embeddings));
    TRY(get_int(p, "vocab_size", false, 49408, 1, 1 << 26, &c->vocab_size));
    TRY(get_float(p, "layer_norm_eps", false, 1e-5f, 0.0f, 1.0f, &c->layer_norm_eps));
    const cJSON *act = get(p, "hidden_act");
    if (is_null(act)) {
        c->hidden_act = LK_CLIP_QUICK_GELU;
    } else if (!cJSON_IsString(act)) {
        s = lk_fail(LK_ERR_FORMAT, "%s: key 'hidden_act' must be a string", p->label);
        goto done;
    } else if (!strcmp(act->valuestring, "quick_gelu")) {
        c->hidden_act = LK_CLIP_QUICK_GELU;
    } else if (!strcmp(act->valuestring, "gelu")) {
        c->hidden_act = LK_CLIP_GELU;
    } else {
        s = lk_fail(LK_ERR_UNSUPPORTED, "%s: hidden_act = \"%s\" is not supported (only "
                    "\"quick_gelu\" or \"gelu\")", p->label, act->valuestring);
        goto done;
    }
    if (c->hidden_size % c->num_attention_heads) {
        s = lk_fail(LK_ERR_FORMAT, "%s: hidden_size %d is not divisible into %d attention heads",
                    p->label, c->hidden_size, c->num_attention_heads);
        goto done;
    }
done:
    return s;
}

lk_status lk_clip_text_config_parse(lk_clip_text_config *cfg, const char *json, size_t len,
                                    const char *label) {
    if (!cfg) return lk_fail(LK_ERR_INVALID, "text encoder config: NULL argument");
    memset(cfg, 0, sizeof *cfg);
    cfgp p = {NULL, label ? label : "text encoder config"};
    cJSON *root = parse_object(json, len, p.label);
    if (!root) return json ? LK_ERR_FORMAT : LK_ERR_INVALID;
    p.obj = root;
    const cJSON *tc = cJSON_GetObjectItemCaseSensitive(root, "text_config");
    if (is_null(cJSON_GetObjectItemCaseSensitive(root, "hidden_size")) && cJSON_IsObject(tc))
        p.obj = tc;
    lk_status s = clip_parse(cfg, &p);
    cJSON_Delete(root);
    if (s != LK_OK) memset(cfg, 0, sizeof *cfg);
    return s;
}

/* ---------------- from files ---------------- */

#define CONFIG_MAX_BYTES (16u << 20)

/* Read a whole (small) file; *text is malloc'd, caller frees. */
static lk_status read_text(const char *path, char **text, size_t *len) {
    if (!path) return lk_fail(LK_ERR_INVALID, "config: NULL path");
    return lk__read_file(path, CONFIG_MAX_BYTES, text, len);
}

lk_status lk_unet_config_load(lk_unet_config *cfg, const char *path) {
    char *t;
    size_t n;
    if (cfg) memset(cfg, 0, sizeof *cfg);
    lk_status s = read_text(path, &t, &n);
    if (s != LK_OK) return s;
    s = lk_unet_config_parse(cfg, t, n, path);
    free(t);
    return s;
}

lk_status lk_vae_config_load(lk_vae_config *cfg, const char *path) {
    char *t;
    size_t n;
    if (cfg) memset(cfg, 0, sizeof *cfg);
    lk_status s = read_text(path, &t, &n);
    if (s != LK_OK) return s;
    s = lk_vae_config_parse(cfg, t, n, path);
    free(t);
    return s;
}

lk_status lk_clip_text_config_load(lk_clip_text_config *cfg, const char *path) {
    char *t;
    size_t n;
    if (cfg) memset(cfg, 0, sizeof *cfg);
    lk_status s = read_text(path, &t, &n);
    if (s != LK_OK) return s;
    s = lk_clip_text_config_parse(cfg, t, n, path);
    free(t);
    return s;
}
