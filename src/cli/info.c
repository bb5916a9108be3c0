/* info.c: `likeness info MODEL`: what a checkpoint (diffusers folder or single file) holds:
 * architecture, components with parameter counts and dtypes, memory, scheduler, model hash.
 * Reads shapes only (no weights are loaded); the hash reads the whole file once. */
#define _POSIX_C_SOURCE 200809L
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "likeness.h"
#include "likeness/sd_model.h"

int lk_cli_info(int argc, char **argv);

static void info_usage(FILE *f) {
    fprintf(f,
            "usage: likeness info MODEL [--prediction v|epsilon] [--no-hash]\n"
            "\n"
            "MODEL is a diffusers folder or a single-file SD-1.x/2.x .safetensors checkpoint.\n"
            "  --prediction v|epsilon  what the UNet predicts (single files cannot say: SD-2 768-v\n"
            "                          models need v; default epsilon)\n"
            "  --no-hash               skip the model hash (sha256 reads the whole file)\n");
}

static const char *mib(double bytes, char *buf, size_t n) {
    if (bytes >= 1024.0 * 1024.0 * 1024.0) snprintf(buf, n, "%.2f GiB", bytes / (1024.0 * 1024.0 * 1024.0));
    else snprintf(buf, n, "%.1f MiB", bytes / (1024.0 * 1024.0));
    return buf;
}

static const char *with_commas(int64_t v, char *buf, size_t n) {
    char tmp[32];
    int len = snprintf(tmp, sizeof tmp, "%lld", (long long)v), o = 0;
    for (int i = 0; i < len && (size_t)o + 2 < n; i++) {
        if (i && (len - i) % 3 == 0) buf[o++] = ',';
        buf[o++] = tmp[i];
    }
    buf[o] = '\0';
    return buf;
}

/* A JSON value as compact text ("[320,640,1280,1280]", strings unquoted), "-" when absent. */
static const char *json_val(const cJSON *o, const char *key, char *buf, size_t n) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (cJSON_IsString(v)) {
        snprintf(buf, n, "%s", v->valuestring);
        return buf;
    }
    char *t = v ? cJSON_PrintUnformatted(v) : NULL;
    snprintf(buf, n, "%s", t ? t : "-");
    cJSON_free(t);
    return buf;
}

static void part_summary(const lk_sd_model *m, int i) {
    cJSON *j = cJSON_Parse(m->part[i].config_json ? m->part[i].config_json : "{}");
    char a[128], b[64], c[64], d[64];
    if (i == LK_SD_UNET)
        printf("    block_out_channels %s, layers_per_block %s, cross_attention_dim %s, "
               "attention_head_dim %s, linear projection %s\n",
               json_val(j, "block_out_channels", a, sizeof a), json_val(j, "layers_per_block", b, sizeof b),
               json_val(j, "cross_attention_dim", c, sizeof c), json_val(j, "attention_head_dim", d, sizeof d),
               cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "use_linear_projection")) ? "yes" : "no");
    else if (i == LK_SD_VAE)
        printf("    block_out_channels %s, latent_channels %s, scaling_factor %s\n",
               json_val(j, "block_out_channels", a, sizeof a), json_val(j, "latent_channels", b, sizeof b),
               json_val(j, "scaling_factor", c, sizeof c));
    else
        printf("    width %s, layers %s, heads %s, activation %s\n", json_val(j, "hidden_size", a, sizeof a),
               json_val(j, "num_hidden_layers", b, sizeof b), json_val(j, "num_attention_heads", c, sizeof c),
               json_val(j, "hidden_act", d, sizeof d));
    cJSON_Delete(j);
}

int lk_cli_info(int argc, char **argv) {
    const char *model = NULL;
    lk_sd_load_opts o;
    lk_sd_load_opts_default(&o);
    o.shapes_only = true;
    o.load_tokenizer = false;
    bool hash = true;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            info_usage(stdout);
            return 0;
        } else if (!strcmp(a, "--no-hash")) {
            hash = false;
        } else if (!strcmp(a, "--prediction") && i + 1 < argc) {
            const char *v = argv[++i];
            if (!strcmp(v, "v") || !strcmp(v, "v_prediction")) o.prediction = LK_PREDICT_V;
            else if (!strcmp(v, "epsilon") || !strcmp(v, "eps")) o.prediction = LK_PREDICT_EPSILON;
            else {
                fprintf(stderr, "likeness info: --prediction takes v or epsilon, not '%s'\n", v);
                return 2;
            }
        } else if (a[0] == '-' && a[1]) {
            fprintf(stderr, "likeness info: unknown option '%s' (try 'likeness info --help')\n", a);
            return 2;
        } else if (!model) {
            model = a;
        } else {
            fprintf(stderr, "likeness info: one MODEL only ('%s' and '%s')\n", model, a);
            return 2;
        }
    }
    if (!model) {
        info_usage(stderr);
        return 2;
    }
    lk_sd_model *m = NULL;
    lk_status s = lk_sd_model_load(&m, model, &o);
    if (s != LK_OK) {
        fprintf(stderr, "likeness info: %s\n", lk_last_error());
        return 1;
    }
    char h10[11] = "-";
    if (hash && lk_sd_model_hash(m, h10) != LK_OK) {
        fprintf(stderr, "likeness info: %s\n", lk_last_error());
        lk_sd_model_free(m);
        return 1;
    }
    printf("model         %s (%s)\n", m->path, m->single_file ? "single file" : "diffusers folder");
    /* The real SD-1.x / 2.x text encoders are 768 / 1024 wide; anything else (likeness's own
     * emoji model, test models) only shares the architecture family. */
    cJSON *tj = cJSON_Parse(m->part[LK_SD_TEXT_ENCODER].config_json ? m->part[LK_SD_TEXT_ENCODER].config_json : "{}");
    const cJSON *hs = cJSON_GetObjectItemCaseSensitive(tj, "hidden_size");
    const bool custom = cJSON_IsNumber(hs) && hs->valueint != 768 && hs->valueint != 1024;
    cJSON_Delete(tj);
    printf("architecture  %s%s, %s prediction%s\n", lk_sd_arch_name(m->arch),
           custom ? " family (custom sizes)" : "",
           m->prediction == LK_PREDICT_V ? "v" : "epsilon",
           m->prediction_guessed ? " (not stated by the checkpoint; --prediction v for 768-v models)" : "");
    printf("\n%-13s %15s  %-5s  %11s  %11s  %s\n", "component", "parameters", "dtype", "f32 memory",
           "f16 memory", "config");
    int64_t total = 0;
    for (int i = 0; i < LK_SD_NPARTS; i++) {
        const lk_sd_part *p = &m->part[i];
        char n[32], f32[32], f16[32];
        printf("%-13s %15s  %-5s  %11s  %11s  %s\n", lk_sd_part_name((lk_sd_part_id)i),
               with_commas(p->n_params, n, sizeof n),
               p->mixed_dtypes ? "mixed" : lk_dtype_name(p->file_dtype),
               mib(4.0 * (double)p->n_params, f32, sizeof f32), mib(2.0 * (double)p->n_params, f16, sizeof f16),
               p->config_synthesized ? "synthesized from shapes" : "config.json");
        part_summary(m, i);
        total += p->n_params;
    }
    char n[32], f32[32], f16[32];
    printf("%-13s %15s  %-5s  %11s  %11s\n", "total", with_commas(total, n, sizeof n), "",
           mib(4.0 * (double)total, f32, sizeof f32), mib(2.0 * (double)total, f16, sizeof f16));

    lk_schedule_config sc;
    cJSON *j = cJSON_Parse(m->scheduler_json);
    const cJSON *cls = j ? cJSON_GetObjectItemCaseSensitive(j, "_class_name") : NULL;
    if (lk_schedule_config_parse(&sc, m->scheduler_json, strlen(m->scheduler_json), "scheduler") == LK_OK) {
        static const char *const bs[] = {"linear", "scaled_linear", "squaredcos_cap_v2"};
        printf("\nscheduler     %s: %s betas %g..%g, %d training steps, steps_offset %d\n",
               cJSON_IsString(cls) ? cls->valuestring : "(no class)",
               (unsigned)sc.beta_schedule < 3 ? bs[sc.beta_schedule] : "?", sc.beta_start, sc.beta_end,
               sc.num_train_timesteps, sc.steps_offset);
    } else {
        printf("\nscheduler     unusable config: %s\n", lk_last_error());
    }
    cJSON_Delete(j);
    printf("tokenizer     %s\n", m->single_file ? "none in the file: generate needs --tokenizer DIR or LK_TOKENIZER"
                                                : "tokenizer/");
    printf("padding       %s\n", m->pad == LK_PAD_ZERO ? "zeros after EOS (SD-2)" : "EOS (SD-1)");
    if (hash) printf("model hash    %s (sha256 %s of %s)\n", h10, m->sha256, m->hash_file);
    lk_sd_model_free(m);
    return 0;
}
