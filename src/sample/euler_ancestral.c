/* euler_ancestral.c: Euler ancestral sampling (k-diffusion's sample_euler_ancestral, Karras et
 * al. 2022 schedule) as diffusers 0.25's EulerAncestralDiscreteScheduler.step, with the noise
 * drawn like torch.randn so a seed gives diffusers' image. */
#include "sample/sampler_internal.h"

#include <math.h>

/* float32, as diffusers:
 *   sigma_up = sqrt(s_to^2 (s_from^2 - s_to^2) / s_from^2);  sigma_down = sqrt(s_to^2 - sigma_up^2)
 *   x0 = pred_x0(sigma);  d = (x - x0) / sigma;  x = x + d (sigma_down - sigma);  x += randn * sigma_up
 * The noise (n normals) is drawn after the update, once per step. */
lk_status lk__euler_a_update(lk_sampler *s, float *x, const float *m, size_t n, lk_rng *rng) {
    if (!rng) return lk_fail(LK_ERR_INVALID, "euler_a: the ancestral sampler needs an rng");
    const float sigma = s->sigmas[s->index];
    const float s_from = sigma, s_to = s->sigmas[s->index + 1];
    const float sigma_up = sqrtf(s_to * s_to * (s_from * s_from - s_to * s_to) / (s_from * s_from));
    const float sigma_down = sqrtf(s_to * s_to - sigma_up * sigma_up);
    const float dt = sigma_down - sigma;
    const lk__x0_coef c = lk__x0_coef_make(s->cfg.prediction_type, sigma);
    for (size_t i = 0; i < n; i++) {
        const float x0 = lk__x0(&c, x[i], m[i]);
        const float d = (x[i] - x0) / sigma;
        x[i] = x[i] + d * dt;
    }
    lk_rng_randn(rng, s->noise, n);
    for (size_t i = 0; i < n; i++) x[i] = x[i] + s->noise[i] * sigma_up;
    return LK_OK;
}
