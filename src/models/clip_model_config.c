/* clip_model_config.c: the JSON configuration of likeness's CLIP-style text + image model
 * ({"text_config": CLIPTextConfig, "vision_config": {...}, "projection_dim"}), strict parsing
 * and atomic writing. */
#define _POSIX_C_SOURCE 200809L
#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "likeness/clip_model.h"
#include "core/fileio.h"

static lk_status want_int(const cJSON *o, const char *key, int lo, int hi, int *out,
                          const char *label) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    /* range first: converting a double outside int's range to int is undefined */
    if (!cJSON_IsNumber(v) || !(v->valuedouble >= lo && v->valuedouble <= hi) ||
        v->valuedouble != (double)(int)v->valuedouble)
        return lk_fail(LK_ERR_FORMAT, "%s: '%s' must be an integer in %d..%d", label, key, lo, hi);
    *out = (int)v->valuedouble;
    return LK_OK;
}

lk_status lk_clip_model_config_parse(lk_clip_model_config *cfg, const char *json, size_t len,
                                     const char *label) {
    if (!cfg || !json) return lk_fail(LK_ERR_INVALID, "clip_model_config_parse: NULL argument");
    memset(cfg, 0, sizeof *cfg);
    if (!label) label = "clip model config";
    cJSON *root = cJSON_ParseWithLength(json, len);
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return lk_fail(LK_ERR_FORMAT, "%s: not a JSON object", label);
    }
    lk_status s = LK_OK;
    const cJSON *tc = cJSON_GetObjectItemCaseSensitive(root, "text_config");
    const cJSON *vc = cJSON_GetObjectItemCaseSensitive(root, "vision_config");
    if (!cJSON_IsObject(tc)) s = lk_fail(LK_ERR_FORMAT, "%s: 'text_config' must be an object", label);
    else if (!cJSON_IsObject(vc))
        s = lk_fail(LK_ERR_FORMAT, "%s: 'vision_config' must be an object", label);
    if (s == LK_OK) {
        char *t = cJSON_PrintUnformatted(tc);
        if (!t) s = lk_fail(LK_ERR_NOMEM, "out of memory");
        else s = lk_clip_text_config_parse(&cfg->text, t, strlen(t), label);
        free(t);
    }
    if (s == LK_OK) s = want_int(root, "projection_dim", 1, 65536, &cfg->embed_dim, label);
    if (s == LK_OK) s = want_int(vc, "image_size", 1, 4096, &cfg->image_size, label);
    if (s == LK_OK) s = want_int(vc, "norm_groups", 1, 4096, &cfg->norm_groups, label);
    const cJSON *ch = s == LK_OK ? cJSON_GetObjectItemCaseSensitive(vc, "channels") : NULL;
    if (s == LK_OK) {
        const int n = cJSON_IsArray(ch) ? cJSON_GetArraySize(ch) : -1;
        if (n < 1 || n > LK_CLIP_VISION_MAX_STAGES)
            s = lk_fail(LK_ERR_FORMAT, "%s: 'vision_config.channels' must be a list of 1..%d "
                        "integers", label, LK_CLIP_VISION_MAX_STAGES);
        cfg->n_stages = n;
        for (int i = 0; s == LK_OK && i < n; i++) {
            const cJSON *v = cJSON_GetArrayItem(ch, i);
            if (!cJSON_IsNumber(v) || v->valuedouble < 1 || v->valuedouble > 65536 ||
                v->valuedouble != (double)(int)v->valuedouble)
                s = lk_fail(LK_ERR_FORMAT, "%s: 'vision_config.channels[%d]' must be an integer "
                            "in 1..65536", label, i);
            else cfg->channels[i] = (int)v->valuedouble;
        }
    }
    if (s == LK_OK && cfg->image_size % (1 << (cfg->n_stages - 1)))
        s = lk_fail(LK_ERR_FORMAT, "%s: image_size %d is not a multiple of 2^%d", label,
                    cfg->image_size, cfg->n_stages - 1);
    for (int i = 0; s == LK_OK && i < cfg->n_stages; i++)
        if (cfg->channels[i] % cfg->norm_groups)
            s = lk_fail(LK_ERR_FORMAT, "%s: channels[%d] = %d is not a multiple of norm_groups %d",
                        label, i, cfg->channels[i], cfg->norm_groups);
    cJSON_Delete(root);
    if (s != LK_OK) memset(cfg, 0, sizeof *cfg);
    return s;
}

lk_status lk_clip_model_config_load(lk_clip_model_config *cfg, const char *path) {
    if (!cfg || !path) return lk_fail(LK_ERR_INVALID, "clip_model_config_load: NULL argument");
    char *buf = NULL;
    size_t n = 0;
    lk_status s = lk__read_file(path, (size_t)1 << 20, &buf, &n);
    if (s == LK_OK) s = lk_clip_model_config_parse(cfg, buf, n, path);
    free(buf);
    return s;
}

lk_status lk_clip_model_config_save(const lk_clip_model_config *c, const char *path) {
    if (!c || !path) return lk_fail(LK_ERR_INVALID, "clip_model_config_save: NULL argument");
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "wb");
    if (!f) return lk_fail(LK_ERR_IO, "%s: cannot write: %s", tmp, strerror(errno));
    fprintf(f, "{\n  \"architectures\": [\"LikenessCLIPModel\"],\n  \"projection_dim\": %d,\n"
            "  \"text_config\": {\n    \"hidden_size\": %d,\n    \"intermediate_size\": %d,\n"
            "    \"num_hidden_layers\": %d,\n    \"num_attention_heads\": %d,\n"
            "    \"max_position_embeddings\": %d,\n    \"vocab_size\": %d,\n"
            "    \"hidden_act\": \"%s\",\n    \"layer_norm_eps\": %.9g\n  },\n"
            "  \"vision_config\": {\n    \"image_size\": %d,\n    \"norm_groups\": %d,\n"
            "    \"channels\": [", c->embed_dim, c->text.hidden_size, c->text.intermediate_size,
            c->text.num_hidden_layers, c->text.num_attention_heads,
            c->text.max_position_embeddings, c->text.vocab_size,
            c->text.hidden_act == LK_CLIP_GELU ? "gelu" : "quick_gelu",
            (double)c->text.layer_norm_eps, c->image_size, c->norm_groups);
    for (int i = 0; i < c->n_stages; i++) fprintf(f, "%s%d", i ? ", " : "", c->channels[i]);
    fprintf(f, "]\n  }\n}\n");
    const bool ok = !ferror(f);
    if ((fclose(f) != 0) || !ok || rename(tmp, path) != 0) {
        remove(tmp);
        return lk_fail(LK_ERR_IO, "%s: cannot write: %s", path, strerror(errno));
    }
    return LK_OK;
}
