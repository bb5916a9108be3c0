/* lms.c: the linear multistep sampler of k-diffusion (Karras et al. 2022 schedule; Adams-style
 * coefficients from the Lagrange polynomial through the last `order` sigmas) as diffusers 0.25's
 * LMSDiscreteScheduler (order 4), with the coefficient integrals done exactly. */
#include "sample/sampler_internal.h"

#include <string.h>

/* diffusers' get_lms_coefficient integrates with scipy.integrate.quad the Lagrange basis
 * polynomial  prod_{k != j, k < order} (tau - sigmas[t-k]) / (sigmas[t-j] - sigmas[t-k])  from
 * sigmas[t] to sigmas[t+1]. It is a polynomial of degree order - 1 <= 3 in tau: expand it and
 * integrate term by term (exact up to double rounding; quad's answer differs by ~1e-7 because it
 * samples a float32 evaluation of the integrand). */
double lk__lms_coefficient(const float *sigmas, int order, int t, int j) {
    double c[LK__LMS_ORDER + 1] = {1.0}; /* ascending powers of tau */
    int deg = 0;
    for (int k = 0; k < order; k++) {
        if (k == j) continue;
        const double root = (double)sigmas[t - k];
        const double den = (double)sigmas[t - j] - root;
        /* c(tau) * (tau - root) / den */
        for (int p = deg + 1; p >= 0; p--) {
            const double hi = p > 0 ? c[p - 1] : 0.0;
            const double lo = p <= deg ? c[p] : 0.0;
            c[p] = (hi - root * lo) / den;
        }
        deg++;
    }
    const double a = (double)sigmas[t], b = (double)sigmas[t + 1];
    double pa = 0.0, pb = 0.0; /* antiderivative by Horner */
    for (int p = deg; p >= 0; p--) {
        pa = (pa + c[p] / (p + 1)) * a;
        pb = (pb + c[p] / (p + 1)) * b;
    }
    return pb - pa;
}

/* LMSDiscreteScheduler.step (order 4), float32 for the tensors:
 *   x0 = pred_x0(sigma);  d = (x - x0) / sigma, appended to the last 4 derivatives;
 *   order = min(index + 1, 4); coefficients c_j for j < order;
 *   x = x + sum_j c_j d_{newest - j}  (summed left to right over the derivatives held)
 * After img2img starts mid-schedule fewer derivatives than `order` may be held; as in diffusers
 * the coefficients still use `order` nodes and only the held derivatives are summed. */
lk_status lk__lms_update(lk_sampler *s, float *x, const float *m, size_t n) {
    const int i = s->index;
    const float sigma = s->sigmas[i];
    if (s->n_hist == LK__LMS_ORDER) { /* drop the oldest: rotate the buffers */
        float *oldest = s->hist[0];
        memmove(s->hist, s->hist + 1, sizeof(float *) * (LK__LMS_ORDER - 1));
        s->hist[LK__LMS_ORDER - 1] = oldest;
        s->n_hist--;
    }
    float *d = s->hist[s->n_hist++];
    const lk__x0_coef c = lk__x0_coef_make(s->cfg.prediction_type, sigma);
    for (size_t k = 0; k < n; k++) d[k] = (x[k] - lk__x0(&c, x[k], m[k])) / sigma;

    const int order = i + 1 < LK__LMS_ORDER ? i + 1 : LK__LMS_ORDER;
    float coef[LK__LMS_ORDER];
    for (int j = 0; j < order; j++) coef[j] = (float)lk__lms_coefficient(s->sigmas, order, i, j);
    const int terms = order < s->n_hist ? order : s->n_hist;
    for (size_t k = 0; k < n; k++) {
        float acc = coef[0] * s->hist[s->n_hist - 1][k];
        for (int j = 1; j < terms; j++) acc = acc + coef[j] * s->hist[s->n_hist - 1 - j][k];
        x[k] = x[k] + acc;
    }
    return LK_OK;
}
