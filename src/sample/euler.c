/* euler.c: the Euler sampler of Karras et al. 2022 (Algorithm 2 with S_churn = 0) as diffusers
 * 0.25's EulerDiscreteScheduler.step; schedule (and Karras sigmas) from schedule.c. */
#include "sample/sampler_internal.h"

/* EulerDiscreteScheduler.step with gamma = 0 (sigma_hat = sigma), float32:
 *   x0 = pred_x0(sigma);  d = (x - x0) / sigma;  x += d * (sigma_next - sigma).
 * diffusers draws randn(model_output.shape) every step even though gamma = 0 makes no use of it;
 * with an rng the same draws are made (and dropped) so a shared generator stays in step. */
lk_status lk__euler_update(lk_sampler *s, float *x, const float *m, size_t n, lk_rng *rng) {
    const float sigma = s->sigmas[s->index];
    const float sigma_hat = sigma * 1.0f;
    const float dt = s->sigmas[s->index + 1] - sigma_hat;
    if (rng) lk_rng_randn(rng, s->noise, n);
    const lk__x0_coef c = lk__x0_coef_make(s->cfg.prediction_type, sigma_hat);
    for (size_t i = 0; i < n; i++) {
        const float x0 = lk__x0(&c, x[i], m[i]);
        const float d = (x[i] - x0) / sigma_hat;
        x[i] = x[i] + d * dt;
    }
    return LK_OK;
}
