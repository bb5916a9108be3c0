/* ddpm.c: the forward (noising) process of Denoising Diffusion Probabilistic Models (Ho, Jain &
 * Abbeel 2020) for training: q(x_t | x_0), the v target of Salimans & Ho 2022, SNR(t) and the
 * Min-SNR-gamma weights of Hang et al. 2023, float32 as diffusers' DDPMScheduler and
 * training_utils.compute_snr compute them. */
#include "likeness/sampler.h"

#include <math.h>

static lk_status check(const char *what, const void *out, const float *x0, const float *noise,
                       const float *ac, int n_train, int64_t t) {
    if (!out || !x0 || !noise || !ac) return lk_fail(LK_ERR_INVALID, "%s: NULL argument", what);
    if (t < 0 || t >= n_train)
        return lk_fail(LK_ERR_INVALID, "%s: timestep %lld outside [0, %d)", what, (long long)t, n_train);
    return LK_OK;
}

/* Contract: see sampler.h. */
lk_status lk_ddpm_add_noise(float *out, const float *x0, const float *noise, size_t n,
                            const float *ac, int n_train, int64_t t) {
    lk_status st = check("ddpm_add_noise", out, x0, noise, ac, n_train, t);
    if (st != LK_OK) return st;
    const float sa = sqrtf(ac[t]), so = sqrtf(1.0f - ac[t]);
    for (size_t i = 0; i < n; i++) out[i] = sa * x0[i] + so * noise[i];
    return LK_OK;
}

/* Contract: see sampler.h. */
lk_status lk_ddpm_velocity(float *out, const float *x0, const float *noise, size_t n,
                           const float *ac, int n_train, int64_t t) {
    lk_status st = check("ddpm_velocity", out, x0, noise, ac, n_train, t);
    if (st != LK_OK) return st;
    const float sa = sqrtf(ac[t]), so = sqrtf(1.0f - ac[t]);
    for (size_t i = 0; i < n; i++) out[i] = sa * noise[i] - so * x0[i];
    return LK_OK;
}

/* Contract: see sampler.h. */
float lk_ddpm_snr(const float *ac, int n_train, int64_t t) {
    if (!ac || t < 0 || t >= n_train) return NAN;
    const float alpha = sqrtf(ac[t]), sigma = sqrtf(1.0f - ac[t]);
    const float r = alpha / sigma;
    return r * r;
}

/* Contract: see sampler.h. */
float lk_min_snr_weight(float snr, float gamma, lk_prediction_type prediction) {
    const float w = snr < gamma ? snr : gamma;
    return prediction == LK_PREDICT_V ? w / (snr + 1.0f) : w / snr;
}
