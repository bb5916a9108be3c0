/* schedule_config.c: the noise-schedule configuration, read strictly from a diffusers
 * scheduler_config.json (the file every Stable Diffusion download carries in scheduler/). */
#include "sample/sampler_internal.h"

#include <cjson/cJSON.h>

#include "core/fileio.h"
#include "core/json_util.h"
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CONFIG_MAX_BYTES (1u << 20)

/* Contract: see sampler.h. */
void lk_schedule_config_default(lk_schedule_config *cfg) {
    memset(cfg, 0, sizeof *cfg);
    cfg->num_train_timesteps = 1000;
    cfg->beta_start = 0.00085;
    cfg->beta_end = 0.012;
    cfg->beta_schedule = LK_BETA_SCALED_LINEAR;
    cfg->steps_offset = 1;
    cfg->prediction_type = LK_PREDICT_EPSILON;
    cfg->timestep_spacing = LK_SPACING_DEFAULT;
    cfg->set_alpha_to_one = false;
    cfg->clip_sample = false;
    cfg->clip_sample_range = 1.0f;
    cfg->use_karras_sigmas = false;
    cfg->lower_order_final = true;
    cfg->euler_at_final = false;
}

/* Contract: see sampler.h. */
lk_status lk_schedule_config_validate(const lk_schedule_config *cfg) {
    if (!cfg) return lk_fail(LK_ERR_INVALID, "schedule config: NULL");
    const int N = cfg->num_train_timesteps;
    if (N < 2 || N > 100000)
        return lk_fail(LK_ERR_INVALID, "schedule config: num_train_timesteps %d outside [2, 100000]", N);
    if ((int)cfg->beta_schedule < 0 || cfg->beta_schedule > LK_BETA_SQUAREDCOS_CAP_V2)
        return lk_fail(LK_ERR_INVALID, "schedule config: unknown beta_schedule %d", (int)cfg->beta_schedule);
    if (cfg->beta_schedule != LK_BETA_SQUAREDCOS_CAP_V2) {
        const double b0 = cfg->beta_start, b1 = cfg->beta_end;
        if (!(b0 > 0 && b0 < 1) || !(b1 > 0 && b1 < 1) || !(b0 <= b1))
            return lk_fail(LK_ERR_INVALID,
                           "schedule config: need 0 < beta_start <= beta_end < 1, got %g and %g", b0, b1);
    }
    if (cfg->steps_offset < 0 || cfg->steps_offset >= N)
        return lk_fail(LK_ERR_INVALID, "schedule config: steps_offset %d outside [0, %d)", cfg->steps_offset, N);
    if ((int)cfg->prediction_type < 0 || cfg->prediction_type > LK_PREDICT_V)
        return lk_fail(LK_ERR_INVALID, "schedule config: unknown prediction_type %d", (int)cfg->prediction_type);
    if ((int)cfg->timestep_spacing < 0 || cfg->timestep_spacing > LK_SPACING_LINSPACE)
        return lk_fail(LK_ERR_INVALID, "schedule config: unknown timestep_spacing %d",
                       (int)cfg->timestep_spacing);
    if (cfg->clip_sample && !(cfg->clip_sample_range > 0.0f && isfinite(cfg->clip_sample_range)))
        return lk_fail(LK_ERR_INVALID, "schedule config: clip_sample_range %g must be > 0",
                       (double)cfg->clip_sample_range);
    return LK_OK;
}

/* ---- JSON ---- */

typedef struct parse_ctx {
    const char *label;
    lk_schedule_config cfg;
    bool have_n, have_b0, have_b1, have_sched;
} parse_ctx;


static lk_status want(const parse_ctx *p, const cJSON *v, const char *what) {
    return lk_fail(LK_ERR_FORMAT, "%s: '%s' must be %s, got %s", p->label, v->string, what, lk__json_type(v));
}

static lk_status get_bool(const parse_ctx *p, const cJSON *v, bool *out) {
    if (!cJSON_IsBool(v)) return want(p, v, "true or false");
    *out = cJSON_IsTrue(v);
    return LK_OK;
}

static lk_status get_int(const parse_ctx *p, const cJSON *v, int lo, int hi, int *out) {
    if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble)) return want(p, v, "an integer");
    if (v->valuedouble < lo || v->valuedouble > hi)
        return lk_fail(LK_ERR_FORMAT, "%s: '%s' = %g outside [%d, %d]", p->label, v->string, v->valuedouble, lo, hi);
    *out = (int)v->valuedouble;
    return LK_OK;
}

static lk_status get_number(const parse_ctx *p, const cJSON *v, double *out) {
    if (!cJSON_IsNumber(v)) return want(p, v, "a number");
    *out = v->valuedouble;
    return LK_OK;
}

/* A string value among names[] (n of them): its index in *out. */
static lk_status get_enum(const parse_ctx *p, const cJSON *v, const char *const *names, int n, int *out) {
    if (!cJSON_IsString(v)) return want(p, v, "a string");
    for (int i = 0; i < n; i++)
        if (strcmp(v->valuestring, names[i]) == 0) {
            *out = i;
            return LK_OK;
        }
    return lk_fail(LK_ERR_UNSUPPORTED, "%s: '%s' = \"%s\" is not supported", p->label, v->string, v->valuestring);
}

static lk_status unsupported(const parse_ctx *p, const cJSON *v, const char *why) {
    return lk_fail(LK_ERR_UNSUPPORTED, "%s: '%s' %s is not supported", p->label, v->string, why);
}

static lk_status parse_key(parse_ctx *p, const cJSON *v) {
    const char *k = v->string;
    lk_schedule_config *c = &p->cfg;
    int e = 0;
    lk_status st = LK_OK;
    if (strcmp(k, "num_train_timesteps") == 0) {
        p->have_n = true;
        return get_int(p, v, 2, 100000, &c->num_train_timesteps);
    }
    if (strcmp(k, "beta_start") == 0) {
        p->have_b0 = true;
        return get_number(p, v, &c->beta_start);
    }
    if (strcmp(k, "beta_end") == 0) {
        p->have_b1 = true;
        return get_number(p, v, &c->beta_end);
    }
    if (strcmp(k, "beta_schedule") == 0) {
        static const char *const names[] = {"linear", "scaled_linear", "squaredcos_cap_v2"};
        p->have_sched = true;
        st = get_enum(p, v, names, 3, &e);
        c->beta_schedule = (lk_beta_schedule)e;
        return st;
    }
    if (strcmp(k, "steps_offset") == 0) return get_int(p, v, 0, 100000, &c->steps_offset);
    if (strcmp(k, "prediction_type") == 0) {
        static const char *const names[] = {"epsilon", "v_prediction"};
        st = get_enum(p, v, names, 2, &e);
        c->prediction_type = (lk_prediction_type)e;
        return st;
    }
    if (strcmp(k, "timestep_spacing") == 0) {
        static const char *const names[] = {"leading", "trailing", "linspace"};
        st = get_enum(p, v, names, 3, &e);
        c->timestep_spacing = (lk_timestep_spacing)(e + 1);
        return st;
    }
    if (strcmp(k, "set_alpha_to_one") == 0) return get_bool(p, v, &c->set_alpha_to_one);
    if (strcmp(k, "clip_sample") == 0) return get_bool(p, v, &c->clip_sample);
    if (strcmp(k, "clip_sample_range") == 0) {
        double r = 0;
        st = get_number(p, v, &r);
        c->clip_sample_range = (float)r;
        return st;
    }
    if (strcmp(k, "use_karras_sigmas") == 0) return get_bool(p, v, &c->use_karras_sigmas);
    if (strcmp(k, "lower_order_final") == 0) return get_bool(p, v, &c->lower_order_final);
    if (strcmp(k, "euler_at_final") == 0) return get_bool(p, v, &c->euler_at_final);
    /* keys that would change the math in ways not implemented */
    if (strcmp(k, "trained_betas") == 0) {
        if (cJSON_IsNull(v)) return LK_OK;
        return unsupported(p, v, "(explicit betas)");
    }
    if (strcmp(k, "thresholding") == 0 || strcmp(k, "rescale_betas_zero_snr") == 0 ||
        strcmp(k, "use_lu_lambdas") == 0) {
        bool b = false;
        st = get_bool(p, v, &b);
        if (st == LK_OK && b) return unsupported(p, v, "= true");
        return st;
    }
    if (strcmp(k, "interpolation_type") == 0) {
        static const char *const names[] = {"linear"};
        return get_enum(p, v, names, 1, &e);
    }
    if (strcmp(k, "timestep_type") == 0) {
        static const char *const names[] = {"discrete"};
        return get_enum(p, v, names, 1, &e);
    }
    if (strcmp(k, "final_sigmas_type") == 0) {
        static const char *const names[] = {"sigma_min"};
        return get_enum(p, v, names, 1, &e);
    }
    if (strcmp(k, "sigma_min") == 0 || strcmp(k, "sigma_max") == 0) {
        if (cJSON_IsNull(v)) return LK_OK;
        if (!cJSON_IsNumber(v)) return want(p, v, "a number or null");
        return unsupported(p, v, "(explicit sigma range)");
    }
    if (strcmp(k, "lambda_min_clipped") == 0) {
        double d = 0;
        st = get_number(p, v, &d);
        if (st == LK_OK && !(isinf(d) && d < 0)) return unsupported(p, v, "other than -Infinity");
        return st;
    }
    /* anything else (_class_name, _diffusers_version, skip_prk_steps, variance_type, solver
     * settings, ...) does not change what the samplers here compute: the sampler kind decides
     * the algorithm */
    return LK_OK;
}

/* Python's json writes -Infinity / Infinity (lambda_min_clipped); cJSON does not read them.
 * Outside strings, rewrite them in place as numbers that strtod reads as infinities. */
static void patch_infinities(char *s, size_t len) {
    bool in_str = false;
    for (size_t i = 0; i < len; i++) {
        if (in_str) {
            if (s[i] == '\\') i++;
            else if (s[i] == '"') in_str = false;
            continue;
        }
        if (s[i] == '"') {
            in_str = true;
        } else if (len - i >= 9 && memcmp(s + i, "-Infinity", 9) == 0) {
            memcpy(s + i, "-1e999   ", 9);
            i += 8;
        } else if (len - i >= 8 && memcmp(s + i, "Infinity", 8) == 0) {
            memcpy(s + i, "1e999   ", 8);
            i += 7;
        }
    }
}

/* Contract: see sampler.h. */
lk_status lk_schedule_config_parse(lk_schedule_config *cfg, const char *json, size_t len,
                                   const char *label) {
    if (!label) label = "scheduler config";
    if (!cfg || (!json && len)) return lk_fail(LK_ERR_INVALID, "%s: NULL argument", label);
    if (len > CONFIG_MAX_BYTES)
        return lk_fail(LK_ERR_FORMAT, "%s: %zu bytes, more than a scheduler config can be (1 MiB)", label, len);
    char *text = malloc(len + 1);
    if (!text) return lk_fail(LK_ERR_NOMEM, "%s: out of memory", label);
    if (len) memcpy(text, json, len);
    text[len] = 0;
    if (strlen(text) != len) {
        free(text);
        return lk_fail(LK_ERR_FORMAT, "%s: NUL byte inside the JSON text", label);
    }
    patch_infinities(text, len);
    cJSON *root = NULL;
    lk_status st = lk__json_parse_object(text, len, label, "config", &root);
    if (st != LK_OK) goto done;
    parse_ctx p = {.label = label};
    lk_schedule_config_default(&p.cfg);
    p.cfg.set_alpha_to_one = true; /* diffusers' class defaults where a key is missing */
    p.cfg.steps_offset = 0;
    for (const cJSON *v = root->child; v; v = v->next) {
        for (const cJSON *w = root->child; w != v; w = w->next)
            if (strcmp(w->string, v->string) == 0) {
                st = lk_fail(LK_ERR_FORMAT, "%s: key '%s' appears twice", label, v->string);
                goto done;
            }
        if (v->string[0] == '_') continue;
        st = parse_key(&p, v);
        if (st != LK_OK) goto done;
    }
    const char *missing = !p.have_n ? "num_train_timesteps" : !p.have_b0 ? "beta_start"
                        : !p.have_b1 ? "beta_end" : !p.have_sched ? "beta_schedule" : NULL;
    if (missing) {
        st = lk_fail(LK_ERR_FORMAT, "%s: required key '%s' is missing", label, missing);
        goto done;
    }
    st = lk_schedule_config_validate(&p.cfg);
    if (st != LK_OK) {
        lk_fail_prefix(st, "%s: ", label);
        goto done;
    }
    *cfg = p.cfg;
done:
    cJSON_Delete(root);
    free(text);
    return st;
}

/* Contract: see sampler.h. */
lk_status lk_schedule_config_load(lk_schedule_config *cfg, const char *path) {
    if (!cfg || !path) return lk_fail(LK_ERR_INVALID, "schedule config: NULL argument");
    char *buf = NULL;
    size_t len = 0;
    lk_status st = lk__read_file(path, CONFIG_MAX_BYTES, &buf, &len);
    if (st == LK_OK) st = lk_schedule_config_parse(cfg, buf, len, path);
    free(buf);
    return st;
}
