/* sampler.c: the sampler object and its loop -- set_timesteps, scale_model_input, step and
 * add_noise dispatched to the method files, img2img truncation as diffusers 0.25's
 * StableDiffusionImg2ImgPipeline.get_timesteps, progress and Ctrl-C cancellation. */
#include "sample/sampler_internal.h"

#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static const struct {
    const char *name;
    lk_sampler_kind kind;
} kNames[] = {
    {"ddim", LK_SAMPLER_DDIM},
    {"euler", LK_SAMPLER_EULER},
    {"euler_karras", LK_SAMPLER_EULER_KARRAS},
    {"euler_a", LK_SAMPLER_EULER_A},
    {"heun", LK_SAMPLER_HEUN},
    {"heun_karras", LK_SAMPLER_HEUN_KARRAS},
    {"dpmpp_2m", LK_SAMPLER_DPMPP_2M},
    {"dpmpp_2m_karras", LK_SAMPLER_DPMPP_2M_KARRAS},
    {"lms", LK_SAMPLER_LMS},
    {"lms_karras", LK_SAMPLER_LMS_KARRAS},
    /* A1111 / k-diffusion spellings */
    {"k_euler", LK_SAMPLER_EULER},
    {"euler_ancestral", LK_SAMPLER_EULER_A},
    {"k_euler_a", LK_SAMPLER_EULER_A},
    {"k_euler_ancestral", LK_SAMPLER_EULER_A},
    {"k_heun", LK_SAMPLER_HEUN},
    {"dpm++_2m", LK_SAMPLER_DPMPP_2M},
    {"dpm++_2m_karras", LK_SAMPLER_DPMPP_2M_KARRAS},
    {"k_dpmpp_2m", LK_SAMPLER_DPMPP_2M},
    {"k_lms", LK_SAMPLER_LMS},
};

/* Contract: see sampler.h. */
lk_status lk_sampler_parse(const char *name, lk_sampler_kind *out) {
    if (!name || !out) return lk_fail(LK_ERR_INVALID, "sampler: NULL name");
    char low[32];
    size_t len = strlen(name);
    if (len > 0 && len < sizeof low) {
        for (size_t i = 0; i <= len; i++) low[i] = (char)tolower((unsigned char)name[i]);
        for (size_t i = 0; i < sizeof kNames / sizeof kNames[0]; i++)
            if (strcmp(low, kNames[i].name) == 0) {
                *out = kNames[i].kind;
                return LK_OK;
            }
    }
    return lk_fail(LK_ERR_INVALID,
                   "unknown sampler '%.64s' (ddim, euler, euler_karras, euler_a, heun, heun_karras, "
                   "dpmpp_2m, dpmpp_2m_karras, lms, lms_karras)",
                   name);
}

_Static_assert(sizeof kNames / sizeof kNames[0] >= LK_SAMPLER_KIND_COUNT, "canonical names first");

/* Contract: see sampler.h. */
const char *lk_sampler_name(lk_sampler_kind kind) {
    if ((int)kind < 0 || kind >= LK_SAMPLER_KIND_COUNT) return "?";
    return kNames[kind].name; /* the first LK_SAMPLER_KIND_COUNT entries are in enum order */
}

static lk__algo algo_of(lk_sampler_kind k, bool *karras) {
    *karras = k == LK_SAMPLER_EULER_KARRAS || k == LK_SAMPLER_HEUN_KARRAS ||
              k == LK_SAMPLER_DPMPP_2M_KARRAS || k == LK_SAMPLER_LMS_KARRAS;
    switch (k) {
    case LK_SAMPLER_DDIM: return LK__ALGO_DDIM;
    case LK_SAMPLER_EULER:
    case LK_SAMPLER_EULER_KARRAS: return LK__ALGO_EULER;
    case LK_SAMPLER_EULER_A: return LK__ALGO_EULER_A;
    case LK_SAMPLER_HEUN:
    case LK_SAMPLER_HEUN_KARRAS: return LK__ALGO_HEUN;
    case LK_SAMPLER_DPMPP_2M:
    case LK_SAMPLER_DPMPP_2M_KARRAS: return LK__ALGO_DPMPP_2M;
    default: return LK__ALGO_LMS;
    }
}

/* Contract: see sampler.h. */
void lk_sampler_free(lk_sampler *s) {
    if (!s) return;
    lk_aligned_free(s->ac);
    lk_aligned_free(s->table_sigmas);
    lk_aligned_free(s->timesteps);
    lk_aligned_free(s->sigmas);
    lk_aligned_free(s->x_in);
    lk_aligned_free(s->model_out);
    lk_aligned_free(s->noise);
    for (int i = 0; i < LK__LMS_ORDER; i++) lk_aligned_free(s->hist[i]);
    free(s);
}

/* Contract: see sampler.h. */
lk_status lk_sampler_new(lk_sampler **out, const lk_schedule_config *cfg, lk_sampler_kind kind,
                         int steps, double strength) {
    if (!out) return lk_fail(LK_ERR_INVALID, "sampler_new: NULL out");
    *out = NULL;
    if (!cfg) return lk_fail(LK_ERR_INVALID, "sampler_new: NULL config");
    if ((int)kind < 0 || kind >= LK_SAMPLER_KIND_COUNT)
        return lk_fail(LK_ERR_INVALID, "sampler_new: unknown sampler kind %d", (int)kind);
    lk_status st = lk_schedule_config_validate(cfg);
    if (st != LK_OK) return st;
    const int N = cfg->num_train_timesteps;
    if (steps < 1 || steps > N)
        return lk_fail(LK_ERR_INVALID, "sampler: %d steps outside [1, %d]", steps, N);
    if (!(strength > 0.0 && strength <= 1.0))
        return lk_fail(LK_ERR_INVALID, "sampler: strength %g outside (0, 1]", strength);

    lk_sampler *s = calloc(1, sizeof *s);
    if (!s) return lk_fail(LK_ERR_NOMEM, "sampler: out of memory");
    s->kind = kind;
    s->algo = algo_of(kind, &s->karras);
    s->cfg = *cfg;
    s->steps = steps;
    s->n_train = N;
    s->order = s->algo == LK__ALGO_HEUN ? 2 : 1;
    if (cfg->use_karras_sigmas && s->algo != LK__ALGO_DDIM && s->algo != LK__ALGO_EULER_A)
        s->karras = true; /* diffusers honours use_karras_sigmas in these four schedulers */
    if (s->cfg.timestep_spacing == LK_SPACING_DEFAULT)
        s->cfg.timestep_spacing = s->algo == LK__ALGO_DDIM ? LK_SPACING_LEADING : LK_SPACING_LINSPACE;

    s->ac = lk__floats((size_t)N);
    s->table_sigmas = lk__floats((size_t)N);
    if (!s->ac || !s->table_sigmas) {
        st = LK_ERR_NOMEM;
        goto fail;
    }
    st = lk_schedule_alphas_cumprod(cfg, s->ac, N);
    if (st != LK_OK) goto fail;
    for (int i = 0; i < N; i++) s->table_sigmas[i] = sqrtf((1.0f - s->ac[i]) / s->ac[i]);
    s->final_alpha_cumprod = cfg->set_alpha_to_one ? 1.0f : s->ac[0];

    switch (s->algo) {
    case LK__ALGO_DDIM: st = lk__ddim_set_timesteps(s); break;
    case LK__ALGO_HEUN: st = lk__heun_set_timesteps(s); break;
    case LK__ALGO_DPMPP_2M: st = lk__dpmpp_2m_set_timesteps(s); break;
    default: st = lk__sigma_schedule(s, false); break;
    }
    if (st != LK_OK) goto fail;

    if (s->algo == LK__ALGO_DDIM || s->algo == LK__ALGO_DPMPP_2M) {
        s->init_noise_sigma = 1.0f;
    } else {
        float mx = s->sigmas[0];
        for (int i = 1; i < s->n_sig; i++) mx = s->sigmas[i] > mx ? s->sigmas[i] : mx;
        s->init_noise_sigma = s->cfg.timestep_spacing == LK_SPACING_LEADING ? lk__sigma_scale(mx) : mx;
    }

    /* StableDiffusionImg2ImgPipeline.get_timesteps */
    const int init_timestep = (int)((double)steps * strength) < steps ? (int)((double)steps * strength) : steps;
    const int t_start = steps - init_timestep > 0 ? steps - init_timestep : 0;
    s->begin = t_start * s->order;
    if (s->begin >= s->n_ts) {
        st = lk_fail(LK_ERR_INVALID, "sampler: strength %g with %d steps leaves no step to run", strength, steps);
        goto fail;
    }
    s->index = s->begin;
    *out = s;
    return LK_OK;
fail:
    lk_sampler_free(s);
    return st;
}

/* Accessors: NULL-safe (0, NULL or -1 for a NULL sampler). */
lk_sampler_kind lk_sampler_kind_of(const lk_sampler *s) { return s ? s->kind : LK_SAMPLER_KIND_COUNT; }
int lk_sampler_num_timesteps(const lk_sampler *s) { return s ? s->n_ts : 0; }
const float *lk_sampler_timesteps(const lk_sampler *s) { return s ? s->timesteps : NULL; }
int lk_sampler_num_sigmas(const lk_sampler *s) { return s && s->sigmas ? s->n_sig : 0; }
const float *lk_sampler_sigmas(const lk_sampler *s) { return s ? s->sigmas : NULL; }
const float *lk_sampler_alphas_cumprod(const lk_sampler *s) { return s ? s->ac : NULL; }
float lk_sampler_init_noise_sigma(const lk_sampler *s) { return s ? s->init_noise_sigma : 0.0f; }
int lk_sampler_begin(const lk_sampler *s) { return s ? s->begin : 0; }
int lk_sampler_total_steps(const lk_sampler *s) { return s ? s->n_ts - s->begin : 0; }
int lk_sampler_steps_done(const lk_sampler *s) { return s ? s->index - s->begin : 0; }
float lk_sampler_current_timestep(const lk_sampler *s) {
    return s && s->index < s->n_ts ? s->timesteps[s->index] : -1.0f;
}

/* Contract: see sampler.h. */
lk_status lk_sampler_set_eta(lk_sampler *s, float eta) {
    if (!s) return lk_fail(LK_ERR_INVALID, "sampler_set_eta: NULL sampler");
    if (s->algo != LK__ALGO_DDIM)
        return lk_fail(LK_ERR_INVALID, "sampler: eta applies to ddim only, not %s", lk_sampler_name(s->kind));
    if (!(eta >= 0.0f) || !isfinite(eta))
        return lk_fail(LK_ERR_INVALID, "sampler: eta %g must be finite and >= 0", (double)eta);
    if (s->index != s->begin) return lk_fail(LK_ERR_STATE, "sampler: eta set after the run started");
    s->eta = eta;
    return LK_OK;
}

/* Contract: see sampler.h. */
void lk_sampler_reset(lk_sampler *s) {
    if (!s) return;
    s->index = s->begin;
    s->n_hist = 0;
    s->heun_second = false;
    s->heun_dt = 0.0f;
}

/* Contract: see sampler.h. */
lk_status lk_sampler_init_latent(const lk_sampler *s, float *x, size_t n, lk_rng *rng) {
    if (!s || !x || !rng) return lk_fail(LK_ERR_INVALID, "sampler_init_latent: NULL argument");
    lk_rng_randn(rng, x, n);
    for (size_t i = 0; i < n; i++) x[i] = x[i] * s->init_noise_sigma;
    return LK_OK;
}

/* Contract: see sampler.h. */
lk_status lk_sampler_add_noise(const lk_sampler *s, float *out, const float *x0,
                               const float *noise, size_t n) {
    if (!s || !out || !x0 || !noise) return lk_fail(LK_ERR_INVALID, "sampler_add_noise: NULL argument");
    const int b = s->begin;
    if (s->algo == LK__ALGO_DDIM)
        return lk_ddpm_add_noise(out, x0, noise, n, s->ac, s->n_train, (int64_t)s->timesteps[b]);
    const float sigma = s->sigmas[b];
    if (s->algo == LK__ALGO_DPMPP_2M) {
        const float alpha_t = 1.0f / lk__sigma_scale(sigma), sigma_t = sigma * alpha_t;
        for (size_t i = 0; i < n; i++) out[i] = alpha_t * x0[i] + sigma_t * noise[i];
    } else {
        for (size_t i = 0; i < n; i++) out[i] = x0[i] + noise[i] * sigma;
    }
    return LK_OK;
}

/* Scratch buffers of n floats for the run: x_in and model_out always, noise for the samplers that
 * draw, history for the multistep ones. n is fixed for the run once bound. */
static lk_status bind(lk_sampler *s, size_t n) {
    if (s->n == n) return LK_OK;
    if (s->n != 0 && s->index != s->begin)
        return lk_fail(LK_ERR_INVALID, "sampler: latent size changed from %zu to %zu during a run", s->n, n);
    if (n == 0) return lk_fail(LK_ERR_INVALID, "sampler: empty latent");
    int nhist = s->algo == LK__ALGO_LMS ? LK__LMS_ORDER
              : (s->algo == LK__ALGO_DPMPP_2M || s->algo == LK__ALGO_HEUN) ? 2 : 0;
    float **bufs[3 + LK__LMS_ORDER] = {&s->x_in, &s->model_out, &s->noise};
    for (int i = 0; i < LK__LMS_ORDER; i++) bufs[3 + i] = &s->hist[i];
    for (int i = 0; i < 3 + LK__LMS_ORDER; i++) {
        lk_aligned_free(*bufs[i]);
        *bufs[i] = NULL;
    }
    s->n = 0;
    for (int i = 0; i < 3 + nhist; i++) {
        *bufs[i] = lk__floats(n);
        if (!*bufs[i]) return LK_ERR_NOMEM;
    }
    s->n = n;
    return LK_OK;
}

/* Contract: see sampler.h. */
lk_status lk_sampler_scale_input(const lk_sampler *s, float *x_in, const float *x, size_t n) {
    if (!s || !x_in || !x) return lk_fail(LK_ERR_INVALID, "sampler_scale_input: NULL argument");
    if (s->index >= s->n_ts) return lk_fail(LK_ERR_STATE, "sampler: all %d steps done", s->n_ts - s->begin);
    if (s->algo == LK__ALGO_DDIM || s->algo == LK__ALGO_DPMPP_2M) {
        if (x_in != x) memmove(x_in, x, n * sizeof(float));
        return LK_OK;
    }
    const float c = lk__sigma_scale(s->sigmas[s->index]);
    for (size_t i = 0; i < n; i++) x_in[i] = x[i] / c;
    return LK_OK;
}

/* Contract: see sampler.h. */
lk_status lk_sampler_update(lk_sampler *s, float *x, const float *model_out, size_t n, lk_rng *rng) {
    if (!s || !x || !model_out) return lk_fail(LK_ERR_INVALID, "sampler_update: NULL argument");
    if (s->index >= s->n_ts) return lk_fail(LK_ERR_STATE, "sampler: all %d steps done", s->n_ts - s->begin);
    lk_status st = bind(s, n);
    if (st != LK_OK) return st;
    switch (s->algo) {
    case LK__ALGO_DDIM: st = lk__ddim_update(s, x, model_out, n, rng); break;
    case LK__ALGO_EULER: st = lk__euler_update(s, x, model_out, n, rng); break;
    case LK__ALGO_EULER_A: st = lk__euler_a_update(s, x, model_out, n, rng); break;
    case LK__ALGO_HEUN: st = lk__heun_update(s, x, model_out, n); break;
    case LK__ALGO_DPMPP_2M: st = lk__dpmpp_2m_update(s, x, model_out, n); break;
    case LK__ALGO_LMS: st = lk__lms_update(s, x, model_out, n); break;
    }
    if (st == LK_OK) s->index++;
    return st;
}

/* Contract: see sampler.h. */
lk_status lk_sampler_step(lk_sampler *s, float *x, size_t n, lk_denoise_fn fn, void *ud, lk_rng *rng) {
    if (!s || !x || !fn) return lk_fail(LK_ERR_INVALID, "sampler_step: NULL argument");
    if (s->index >= s->n_ts) return lk_fail(LK_ERR_STATE, "sampler: all %d steps done", s->n_ts - s->begin);
    lk_status st = bind(s, n);
    if (st != LK_OK) return st;
    st = lk_sampler_scale_input(s, s->x_in, x, n);
    if (st != LK_OK) return st;
    const float t = s->timesteps[s->index];
    st = fn(ud, s->x_in, t, s->model_out);
    if (st != LK_OK)
        return lk_fail_prefix(st, "%s step %d of %d (t=%g): ", lk_sampler_name(s->kind),
                              s->index - s->begin + 1, s->n_ts - s->begin, (double)t);
    return lk_sampler_update(s, x, s->model_out, n, rng);
}

/* Contract: see sampler.h. */
lk_status lk_sampler_run(lk_sampler *s, float *x, size_t n, lk_denoise_fn fn, void *ud,
                         lk_rng *rng, lk_progress_fn progress, void *progress_ud,
                         const volatile sig_atomic_t *cancel) {
    if (!s || !x || !fn) return lk_fail(LK_ERR_INVALID, "sampler_run: NULL argument");
    const int total = s->n_ts - s->begin;
    while (s->index < s->n_ts) {
        if (cancel && *cancel)
            return lk_fail(LK_ERR_INTERRUPTED, "sampler: interrupted after step %d of %d",
                           s->index - s->begin, total);
        const float t = s->timesteps[s->index];
        lk_status st = lk_sampler_step(s, x, n, fn, ud, rng);
        if (st != LK_OK) return st;
        if (progress) {
            st = progress(progress_ud, s->index - s->begin, total, t);
            if (st != LK_OK) return st;
        }
    }
    return LK_OK;
}

/* Contract: see sampler.h. */
void lk_cfg_combine(float *out, const float *uncond, const float *cond, size_t n, float scale) {
    for (size_t i = 0; i < n; i++) out[i] = uncond[i] + scale * (cond[i] - uncond[i]);
}
