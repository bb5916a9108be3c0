/* ddim.c: Denoising Diffusion Implicit Models (Song, Meng & Ermon 2021), eq. (12) with
 * sigma_t(eta) of eq. (16), as diffusers 0.25's DDIMScheduler (set_timesteps, step). */
#include "sample/sampler_internal.h"

#include <math.h>
#include <stdlib.h>

/* DDIMScheduler.set_timesteps: integer timesteps by spacing. */
lk_status lk__ddim_set_timesteps(lk_sampler *s) {
    const int n = s->steps, N = s->n_train;
    double *t = malloc(sizeof(double) * (size_t)(n + 1));
    if (!t) return lk_fail(LK_ERR_NOMEM, "ddim: out of memory");
    int nt = 0;
    switch (s->cfg.timestep_spacing) {
    case LK_SPACING_LINSPACE:
        for (int i = 0; i < n; i++) t[nt++] = nearbyint(lk__np_linspace_at(0.0, (double)(N - 1), n, n - 1 - i));
        break;
    case LK_SPACING_TRAILING: {
        const int len = lk__np_arange_trailing(t, n + 1, N, n);
        for (int i = 0; i < len; i++) {
            const double v = nearbyint(t[i]) - 1;
            if (v >= 0 && nt < n) t[nt++] = v; /* numpy's extra value (-1) is dropped, see schedule.c */
        }
        break;
    }
    case LK_SPACING_LEADING:
    default: {
        const int ratio = N / n;
        for (int i = 0; i < n; i++) t[nt++] = (double)((n - 1 - i) * ratio + s->cfg.steps_offset);
        break;
    }
    }
    for (int i = 0; i < nt; i++)
        if (t[i] < 0 || t[i] >= N) {
            const double bad = t[i];
            free(t);
            return lk_fail(LK_ERR_INVALID,
                           "ddim: %d steps with steps_offset %d give timestep %g outside [0, %d)", n,
                           s->cfg.steps_offset, bad, N);
        }
    s->timesteps = lk__floats((size_t)(nt ? nt : 1));
    if (!s->timesteps) {
        free(t);
        return LK_ERR_NOMEM;
    }
    for (int i = 0; i < nt; i++) s->timesteps[i] = (float)t[i];
    s->n_ts = nt;
    free(t);
    return LK_OK;
}

/* DDIMScheduler.step, float32 throughout:
 *   prev_t = t - N // steps;  a = ac[t];  a_prev = ac[prev_t] (final_alpha_cumprod if < 0)
 *   x0 = (x - sqrt(1-a) m) / sqrt(a)              eps = m                       (epsilon)
 *   x0 = sqrt(a) x - sqrt(1-a) m                  eps = sqrt(a) m + sqrt(1-a) x (v)
 *   std = eta sqrt((1-a_prev)/(1-a) (1 - a/a_prev))
 *   x_prev = sqrt(a_prev) x0 + sqrt(1 - a_prev - std^2) eps  [+ std * randn] */
lk_status lk__ddim_update(lk_sampler *s, float *x, const float *m, size_t n, lk_rng *rng) {
    const int t = (int)s->timesteps[s->index];
    const int prev_t = t - s->n_train / s->steps;
    const float a = s->ac[t];
    const float a_prev = prev_t >= 0 ? s->ac[prev_t] : s->final_alpha_cumprod;
    const float b = 1.0f - a, b_prev = 1.0f - a_prev;
    const float sa = sqrtf(a), sb = sqrtf(b);
    const float variance = (b_prev / b) * (1.0f - a / a_prev);
    const float std = s->eta * sqrtf(variance);
    const float dir = sqrtf(1.0f - a_prev - std * std);
    const float sa_prev = sqrtf(a_prev);
    const bool clip = s->cfg.clip_sample;
    const float r = s->cfg.clip_sample_range;
    if (s->eta > 0) {
        if (!rng) return lk_fail(LK_ERR_INVALID, "ddim: eta %g > 0 needs an rng", (double)s->eta);
        lk_rng_randn(rng, s->noise, n);
    }
    for (size_t i = 0; i < n; i++) {
        float x0, eps;
        if (s->cfg.prediction_type == LK_PREDICT_EPSILON) {
            x0 = (x[i] - sb * m[i]) / sa;
            eps = m[i];
        } else {
            x0 = sa * x[i] - sb * m[i];
            eps = sa * m[i] + sb * x[i];
        }
        if (clip) x0 = x0 < -r ? -r : x0 > r ? r : x0;
        float prev = sa_prev * x0 + dir * eps;
        if (s->eta > 0) prev = prev + std * s->noise[i];
        x[i] = prev;
    }
    return LK_OK;
}
