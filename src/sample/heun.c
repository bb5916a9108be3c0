/* heun.c: Heun's second-order sampler (Karras et al. 2022, Algorithm 1 with S_churn = 0) as
 * diffusers 0.25's HeunDiscreteScheduler: every step but the last is an Euler predictor and a
 * trapezoidal corrector, one model call each, so the timesteps after the first are repeated. */
#include "sample/sampler_internal.h"

/* HeunDiscreteScheduler.set_timesteps: the sigma schedule (numpy float64 timesteps), then
 * sigmas = [s0, s1, s1, s2, s2, ..., 0] and timesteps = [t0, t1, t1, t2, t2, ...]. */
lk_status lk__heun_set_timesteps(lk_sampler *s) {
    lk_status st = lk__sigma_schedule(s, true);
    if (st != LK_OK) return st;
    const int nt = s->n_ts; /* sigmas: nt + 1 with the final 0 */
    float *ts = lk__floats((size_t)(2 * nt - 1));
    float *sg = lk__floats((size_t)(2 * nt));
    if (!ts || !sg) {
        lk_aligned_free(ts);
        lk_aligned_free(sg);
        return LK_ERR_NOMEM;
    }
    ts[0] = s->timesteps[0];
    for (int i = 1; i < nt; i++) ts[2 * i - 1] = ts[2 * i] = s->timesteps[i];
    sg[0] = s->sigmas[0];
    for (int i = 1; i < nt; i++) sg[2 * i - 1] = sg[2 * i] = s->sigmas[i];
    sg[2 * nt - 1] = s->sigmas[nt];
    lk_aligned_free(s->timesteps);
    lk_aligned_free(s->sigmas);
    s->timesteps = ts;
    s->sigmas = sg;
    s->n_ts = 2 * nt - 1;
    s->n_sig = 2 * nt;
    return LK_OK;
}

/* HeunDiscreteScheduler.step, float32:
 *   predictor (state empty): sigma = sigmas[i], next = sigmas[i+1]; x0 = pred_x0(sigma);
 *     d = (x - x0) / sigma; dt = next - sigma; keep d, dt, x; x = x + d dt
 *   corrector: sigma_next = sigmas[i]; x0 = pred_x0(sigma_next); d2 = (x - x0) / sigma_next;
 *     d = (d + d2) / 2; x = x_kept + d dt; state emptied
 * hist[0] holds the predictor's derivative, hist[1] its starting sample. */
lk_status lk__heun_update(lk_sampler *s, float *x, const float *m, size_t n) {
    float *d_prev = s->hist[0], *x_prev = s->hist[1];
    const bool clip = s->cfg.clip_sample;
    const float r = s->cfg.clip_sample_range;
    if (!s->heun_second) {
        const float sigma = s->sigmas[s->index], sigma_next = s->sigmas[s->index + 1];
        const float sigma_hat = sigma * 1.0f;
        const float dt = sigma_next - sigma_hat;
        const lk__x0_coef c = lk__x0_coef_make(s->cfg.prediction_type, sigma_hat);
        for (size_t i = 0; i < n; i++) {
            float x0 = lk__x0(&c, x[i], m[i]);
            if (clip) x0 = x0 < -r ? -r : x0 > r ? r : x0;
            const float d = (x[i] - x0) / sigma_hat;
            d_prev[i] = d;
            x_prev[i] = x[i];
            x[i] = x[i] + d * dt;
        }
        s->heun_dt = dt;
        s->heun_second = true;
    } else {
        const float sigma_next = s->sigmas[s->index];
        const float dt = s->heun_dt;
        const lk__x0_coef c = lk__x0_coef_make(s->cfg.prediction_type, sigma_next);
        for (size_t i = 0; i < n; i++) {
            float x0 = lk__x0(&c, x[i], m[i]);
            if (clip) x0 = x0 < -r ? -r : x0 > r ? r : x0;
            float d = (x[i] - x0) / sigma_next;
            d = (d_prev[i] + d) / 2.0f;
            x[i] = x_prev[i] + d * dt;
        }
        s->heun_second = false;
    }
    return LK_OK;
}
