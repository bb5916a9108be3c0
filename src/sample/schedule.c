/* schedule.c: the noise schedules of diffusers 0.25 -- betas (linear, scaled_linear, the cosine
 * schedule of Nichol & Dhariwal 2021), alphas_cumprod, the timestep spacings of Lin et al. 2023
 * (Table 2) and the sigmas of Karras et al. 2022 -- reproducing torch's float32 and numpy's
 * float64 arithmetic bit for bit, so timesteps and sigmas equal diffusers' own. */
#include "sample/sampler_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#ifndef M_PI
#define M_PI 3.14159265358979323846
#endif

float *lk__floats(size_t n) {
    size_t bytes;
    if (lk_mul_overflow(n ? n : 1, sizeof(float), &bytes)) {
        lk_fail(LK_ERR_NOMEM, "sampler: %zu floats overflow size_t", n);
        return NULL;
    }
    return lk_aligned_alloc(bytes);
}

/* PyTorch 1.13's CPU linspace kernel for float32 (the AVX2 build every x86-64 CPU runs by
 * default): step = (end - start) / (n - 1) in float; the first half counts up from start, the
 * second half down from end. The output is filled by 8-lane vectors, two per iteration, as far as
 * whole pairs reach; a vector's base value is start + step * idx (fused multiply-add, as the
 * compiler contracts it) and its lanes base + j * step; the remainder is scalar and fused. */
void lk__torch_linspace_f32(float *out, double start_d, double end_d, int n) {
    const float start = (float)start_d, end = (float)end_d;
    if (n <= 0) return;
    if (n == 1) {
        out[0] = start;
        return;
    }
    const float step = (end - start) / (float)(n - 1);
    const int halfway = n / 2;
    const int nvec = (n / 16) * 16;
    for (int idx = 0; idx < nvec; idx += 8) {
        const float base = idx < halfway ? fmaf(step, (float)idx, start)
                                         : fmaf(-step, (float)(n - idx - 1), end);
        for (int j = 0; j < 8; j++) out[idx + j] = base + (float)j * step;
    }
    for (int idx = nvec; idx < n; idx++)
        out[idx] = idx < halfway ? fmaf(step, (float)idx, start)
                                 : fmaf(-step, (float)(n - idx - 1), end);
}

/* diffusers' betas_for_alpha_bar(N, max_beta=0.999, "cosine"), computed in double by Python and
 * stored as float32. */
static void cosine_betas(float *betas, int n) {
    for (int i = 0; i < n; i++) {
        const double t1 = (double)i / n, t2 = (double)(i + 1) / n;
        const double a1 = cos((t1 + 0.008) / 1.008 * M_PI / 2), a2 = cos((t2 + 0.008) / 1.008 * M_PI / 2);
        const double b = 1 - (a2 * a2) / (a1 * a1);
        betas[i] = (float)(b < 0.999 ? b : 0.999);
    }
}

/* Contract: see sampler.h. */
lk_status lk_schedule_alphas_cumprod(const lk_schedule_config *cfg, float *out, int n) {
    if (!cfg || !out) return lk_fail(LK_ERR_INVALID, "schedule: NULL argument");
    lk_status st = lk_schedule_config_validate(cfg);
    if (st != LK_OK) return st;
    if (n != cfg->num_train_timesteps)
        return lk_fail(LK_ERR_INVALID, "schedule: %d alphas_cumprod requested, the schedule has %d",
                       n, cfg->num_train_timesteps);
    /* betas in out, then alphas = 1 - betas (f32), then the cumulative product: torch's CPU
     * cumprod accumulates in double and rounds each partial product to float */
    switch (cfg->beta_schedule) {
    case LK_BETA_LINEAR:
        lk__torch_linspace_f32(out, cfg->beta_start, cfg->beta_end, n);
        break;
    case LK_BETA_SCALED_LINEAR:
        lk__torch_linspace_f32(out, sqrt(cfg->beta_start), sqrt(cfg->beta_end), n);
        for (int i = 0; i < n; i++) out[i] = out[i] * out[i];
        break;
    case LK_BETA_SQUAREDCOS_CAP_V2:
        cosine_betas(out, n);
        break;
    }
    double acc = 1.0;
    for (int i = 0; i < n; i++) {
        const float alpha = 1.0f - out[i];
        acc *= (double)alpha;
        out[i] = (float)acc;
    }
    return LK_OK;
}

/* numpy.linspace(start, stop, num)[i]: y = i * ((stop - start) / (num - 1)) + start, the last
 * value set to stop. */
double lk__np_linspace_at(double start, double stop, int num, int i) {
    if (num > 1 && i == num - 1) return stop;
    const double delta = stop - start;
    double y;
    if (num > 1) {
        const double step = delta / (num - 1);
        y = step == 0 ? (double)i / (num - 1) * delta : (double)i * step;
    } else {
        y = (double)i * delta;
    }
    return y + start;
}

/* numpy.interp(x, arange(n), fp): fp[j] where x hits a node, the end values outside, else
 * slope * (x - j) + fp[j] with slope = fp[j+1] - fp[j] (nodes are 1 apart). */
double lk__np_interp(double x, const float *fp, int n) {
    if (isnan(x)) return x;
    if (x <= 0) return fp[0];
    if (x >= n - 1) return fp[n - 1];
    const int j = (int)floor(x);
    if ((double)j == x) return fp[j];
    const double slope = ((double)fp[j + 1] - (double)fp[j]) / 1.0;
    return slope * (x - (double)j) + (double)fp[j];
}

/* numpy.arange(N, 0, -N/steps) as numpy 1.24 computes it: length ceil(-N / -(N/steps)) (which
 * for some step counts, e.g. 61, is steps + 1), value[0] = N, value[1] = N - N/steps, value[i] =
 * N + i * (value[1] - N). */
int lk__np_arange_trailing(double *out, int cap, int n_train, int steps) {
    const double start = (double)n_train, step = -((double)n_train / (double)steps);
    const double len_d = ceil((0.0 - start) / step);
    int len = len_d > 0 ? (int)len_d : 0;
    if (len > cap) len = cap;
    if (len > 0) out[0] = start;
    if (len > 1) out[1] = start + step;
    const double delta = len > 1 ? out[1] - start : 0.0;
    for (int i = 2; i < len; i++) out[i] = start + (double)i * delta;
    return len;
}

/* Karras et al. 2022, eq. (5) with rho = 7, as diffusers' _convert_to_karras:
 * (max^(1/rho) + ramp * (min^(1/rho) - max^(1/rho))) ^ rho, ramp = numpy.linspace(0, 1, n). */
void lk__karras_sigmas(double *out, int n, double sigma_min, double sigma_max) {
    const double rho = 7.0;
    const double min_inv_rho = pow(sigma_min, 1 / rho), max_inv_rho = pow(sigma_max, 1 / rho);
    for (int i = 0; i < n; i++) {
        const double ramp = lk__np_linspace_at(0.0, 1.0, n, i);
        out[i] = pow(max_inv_rho + ramp * (min_inv_rho - max_inv_rho), rho);
    }
}

/* diffusers' _sigma_to_t: low = the last train index whose log sigma is <= log(sigma) (0 if
 * none; at most n - 2), w = (ls[low] - log sigma) / (ls[low] - ls[low+1]) clipped to [0, 1]
 * with the denominator a float32 difference as numpy forms it, t = (1 - w) low + w (low + 1). */
double lk__sigma_to_t(double sigma, const float *log_sigmas, int n_train) {
    const double log_sigma = log(sigma > 1e-10 ? sigma : 1e-10);
    int low = 0;
    for (int i = 0; i < n_train; i++)
        if (log_sigma - (double)log_sigmas[i] >= 0) low = i;
    if (low > n_train - 2) low = n_train - 2;
    const int high = low + 1;
    const float lo = log_sigmas[low], hi = log_sigmas[high];
    double w = ((double)lo - log_sigma) / (double)(lo - hi);
    if (w < 0) w = 0;
    if (w > 1) w = 1;
    return (1 - w) * (double)low + w * (double)high;
}

float lk__sigma_scale(float sigma) { return sqrtf(sigma * sigma + 1.0f); }

/* The timesteps of the sigma samplers, as EulerDiscrete/EulerAncestralDiscrete/LMSDiscrete
 * (float32 timesteps) and HeunDiscrete (float64) set_timesteps make them. Writes up to steps
 * values into t (double), returns the count. */
static int sigma_timesteps(const lk_sampler *s, double *t, bool ts_double) {
    const int n = s->steps, N = s->n_train;
    switch (s->cfg.timestep_spacing) {
    case LK_SPACING_LEADING: {
        const int ratio = N / n;
        for (int i = 0; i < n; i++)
            t[i] = (double)((float)((n - 1 - i) * ratio) + (float)s->cfg.steps_offset);
        return n;
    }
    case LK_SPACING_TRAILING: {
        double *a = malloc(sizeof(double) * (size_t)(n + 1));
        if (!a) return -1;
        const int len = lk__np_arange_trailing(a, n + 1, N, n);
        int k = 0;
        /* numpy's arange can give one value too many (about 0, so -1 after the shift): diffusers
         * then has a timestep of -1; it is dropped here */
        for (int i = 0; i < len; i++) {
            const double v = nearbyint(a[i]) - 1;
            if (v >= 0 && k < n) t[k++] = v;
        }
        free(a);
        return k;
    }
    case LK_SPACING_LINSPACE:
    default:
        for (int i = 0; i < n; i++) {
            const double v = lk__np_linspace_at(0.0, (double)(N - 1), n, n - 1 - i);
            t[i] = ts_double ? v : (double)(float)v;
        }
        return n;
    }
}

/* Contract: see sampler_internal.h. */
lk_status lk__sigma_schedule(lk_sampler *s, bool ts_double) {
    const int n = s->steps, N = s->n_train;
    double *t = malloc(sizeof(double) * (size_t)n);
    double *sig = malloc(sizeof(double) * (size_t)n);
    float *log_sigmas = NULL;
    lk_status st = LK_OK;
    if (!t || !sig) {
        st = lk_fail(LK_ERR_NOMEM, "sampler: out of memory for %d timesteps", n);
        goto done;
    }
    const int nt = sigma_timesteps(s, t, ts_double);
    if (nt <= 0) {
        st = nt < 0 ? lk_fail(LK_ERR_NOMEM, "sampler: out of memory")
                    : lk_fail(LK_ERR_INVALID, "sampler: %d steps give no timestep", n);
        goto done;
    }
    for (int i = 0; i < nt; i++) sig[i] = lk__np_interp(t[i], s->table_sigmas, N);
    if (s->karras) {
        log_sigmas = lk__floats((size_t)N);
        if (!log_sigmas) {
            st = LK_ERR_NOMEM;
            goto done;
        }
        for (int i = 0; i < N; i++) log_sigmas[i] = logf(s->table_sigmas[i]);
        const double smin = sig[nt - 1], smax = sig[0];
        lk__karras_sigmas(sig, nt, smin, smax);
        for (int i = 0; i < nt; i++) t[i] = lk__sigma_to_t(sig[i], log_sigmas, N);
    }
    s->timesteps = lk__floats((size_t)nt);
    s->sigmas = lk__floats((size_t)nt + 1);
    if (!s->timesteps || !s->sigmas) {
        st = LK_ERR_NOMEM;
        goto done;
    }
    for (int i = 0; i < nt; i++) {
        s->timesteps[i] = (float)t[i];
        s->sigmas[i] = (float)sig[i];
    }
    s->sigmas[nt] = 0.0f;
    s->n_ts = nt;
    s->n_sig = nt + 1;
done:
    free(t);
    free(sig);
    lk_aligned_free(log_sigmas);
    return st;
}
