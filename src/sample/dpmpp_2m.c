/* dpmpp_2m.c: DPM-Solver++(2M), the second-order multistep solver of Lu et al. 2022
 * ("DPM-Solver++: Fast Solver for Guided Sampling of Diffusion Probabilistic Models", Alg. 2,
 * midpoint form) as diffusers 0.25's DPMSolverMultistepScheduler (algorithm_type dpmsolver++,
 * solver_order 2, lower_order_final), on the VP latent: init_noise_sigma 1, no input scaling. */
#include "sample/sampler_internal.h"

#include <math.h>
#include <stdlib.h>

/* DPMSolverMultistepScheduler.set_timesteps (lambda_min_clipped = -inf): integer timesteps by
 * spacing over N + 1 points; sigmas interpolated from the table and ended by sigma at t = 0 -- or,
 * with Karras sigmas, the Karras ramp over the whole table ended by its last value repeated, and
 * timesteps the rounded _sigma_to_t. Repeated timesteps are then dropped (first kept) while the
 * sigmas stay as they are, as diffusers does. */
lk_status lk__dpmpp_2m_set_timesteps(lk_sampler *s) {
    const int n = s->steps, N = s->n_train;
    double *t = malloc(sizeof(double) * (size_t)(n + 1));
    double *sig = malloc(sizeof(double) * (size_t)(n + 1));
    float *log_sigmas = NULL;
    lk_status st = LK_OK;
    if (!t || !sig) {
        st = lk_fail(LK_ERR_NOMEM, "dpmpp_2m: out of memory");
        goto done;
    }
    int nt = 0;
    switch (s->cfg.timestep_spacing) {
    case LK_SPACING_LEADING: {
        const int ratio = N / (n + 1);
        for (int i = 0; i < n; i++) t[nt++] = (double)((n - i) * ratio + s->cfg.steps_offset);
        break;
    }
    case LK_SPACING_TRAILING: {
        const int len = lk__np_arange_trailing(t, n + 1, N, n);
        for (int i = 0; i < len; i++) {
            const double v = nearbyint(t[i]) - 1;
            if (v >= 0 && nt < n) t[nt++] = v; /* numpy's extra value (-1) is dropped */
        }
        break;
    }
    case LK_SPACING_LINSPACE:
    default:
        for (int i = 0; i < n; i++) t[nt++] = nearbyint(lk__np_linspace_at(0.0, (double)(N - 1), n + 1, n - i));
        break;
    }
    int ns;
    if (s->karras) {
        log_sigmas = lk__floats((size_t)N);
        if (!log_sigmas) {
            st = LK_ERR_NOMEM;
            goto done;
        }
        for (int i = 0; i < N; i++) log_sigmas[i] = logf(s->table_sigmas[i]);
        lk__karras_sigmas(sig, n, (double)s->table_sigmas[0], (double)s->table_sigmas[N - 1]);
        for (int i = 0; i < n; i++) t[i] = nearbyint(lk__sigma_to_t(sig[i], log_sigmas, N));
        nt = n;
        sig[n] = sig[n - 1];
        ns = n + 1;
    } else {
        for (int i = 0; i < nt; i++) sig[i] = lk__np_interp(t[i], s->table_sigmas, N);
        const float a0 = s->ac[0];
        sig[nt] = (double)sqrtf((1.0f - a0) / a0);
        ns = nt + 1;
    }
    s->timesteps = lk__floats((size_t)nt);
    s->sigmas = lk__floats((size_t)ns);
    if (!s->timesteps || !s->sigmas) {
        st = LK_ERR_NOMEM;
        goto done;
    }
    for (int i = 0; i < ns; i++) s->sigmas[i] = (float)sig[i];
    int k = 0;
    for (int i = 0; i < nt; i++) {
        bool seen = false;
        for (int j = 0; j < i && !seen; j++) seen = t[j] == t[i];
        if (!seen) s->timesteps[k++] = (float)t[i];
    }
    s->n_ts = k;
    s->n_sig = ns;
done:
    free(t);
    free(sig);
    lk_aligned_free(log_sigmas);
    return st;
}

/* _sigma_to_alpha_sigma_t: alpha = 1 / sqrt(sigma^2 + 1), sigma_t = sigma alpha (f32). */
static void alpha_sigma(float sigma, float *alpha, float *sig_t) {
    *alpha = 1.0f / lk__sigma_scale(sigma);
    *sig_t = sigma * *alpha;
}

/* DPMSolverMultistepScheduler.step, float32 as diffusers:
 *   x0 = (x - sigma_t m) / alpha_t (epsilon) or alpha_t x - sigma_t m (v)   [convert_model_output]
 *   lambda = log alpha - log sigma;  h = lambda_next - lambda_cur
 *   first order  : x = (sigma_next / sigma_cur) x - alpha_next (e^-h - 1) x0
 *   second order : r0 = h_prev / h, D1 = (1 / r0)(x0 - x0_prev);
 *                  x = (sigma_next / sigma_cur) x - alpha_next (e^-h - 1) x0 - 0.5 alpha_next (e^-h - 1) D1
 * First order on the first step and, with lower_order_final and fewer than 15 timesteps (or
 * euler_at_final), on the last. hist[1] holds the current x0 prediction, hist[0] the previous;
 * n_hist counts the steps taken (diffusers' lower_order_nums, capped at 2). */
lk_status lk__dpmpp_2m_update(lk_sampler *s, float *x, const float *m, size_t n) {
    const int i = s->index;
    float *prev = s->hist[0], *cur = s->hist[1];
    s->hist[0] = cur; /* the buffer of the oldest x0 receives the new one */
    s->hist[1] = prev;
    float *x0 = prev, *x0_prev = cur;

    float alpha_c, sigma_c;
    alpha_sigma(s->sigmas[i], &alpha_c, &sigma_c);
    if (s->cfg.prediction_type == LK_PREDICT_EPSILON)
        for (size_t k = 0; k < n; k++) x0[k] = (x[k] - sigma_c * m[k]) / alpha_c;
    else
        for (size_t k = 0; k < n; k++) x0[k] = alpha_c * x[k] - sigma_c * m[k];

    const bool last = i == s->n_ts - 1;
    const bool lower_order_final =
        last && (s->cfg.euler_at_final || (s->cfg.lower_order_final && s->n_ts < 15));

    float alpha_t, sigma_t, alpha_s0, sigma_s0;
    alpha_sigma(s->sigmas[i + 1], &alpha_t, &sigma_t);
    alpha_sigma(s->sigmas[i], &alpha_s0, &sigma_s0);
    const float lambda_t = lk__torch_logf(alpha_t) - lk__torch_logf(sigma_t);
    const float lambda_s0 = lk__torch_logf(alpha_s0) - lk__torch_logf(sigma_s0);
    const float h = lambda_t - lambda_s0;
    const float ratio = sigma_t / sigma_s0;
    const float coef = alpha_t * (lk__torch_expf(-h) - 1.0f);
    if (s->n_hist < 1 || lower_order_final) {
        for (size_t k = 0; k < n; k++) x[k] = ratio * x[k] - coef * x0[k];
    } else {
        float alpha_s1, sigma_s1;
        alpha_sigma(s->sigmas[i - 1], &alpha_s1, &sigma_s1);
        const float lambda_s1 = lk__torch_logf(alpha_s1) - lk__torch_logf(sigma_s1);
        const float h_0 = lambda_s0 - lambda_s1;
        const float r0 = h_0 / h;
        const float inv_r0 = 1.0f / r0;
        const float half_coef = 0.5f * coef;
        for (size_t k = 0; k < n; k++) {
            const float d1 = inv_r0 * (x0[k] - x0_prev[k]);
            x[k] = (ratio * x[k] - coef * x0[k]) - half_coef * d1;
        }
    }
    if (s->n_hist < 2) s->n_hist++;
    return LK_OK;
}
