/* sampler_internal.h: the sampler object shared by the files of src/sample (one file per method:
 * ddim.c, euler.c, euler_ancestral.c, heun.c, dpmpp_2m.c, lms.c; schedule.c builds the
 * schedules, sampler.c dispatches). Not part of the public API. */
#ifndef LK_SAMPLE_SAMPLER_INTERNAL_H
#define LK_SAMPLE_SAMPLER_INTERNAL_H

#include "likeness/sampler.h"

typedef enum lk__algo {
    LK__ALGO_DDIM,
    LK__ALGO_EULER,
    LK__ALGO_EULER_A,
    LK__ALGO_HEUN,
    LK__ALGO_DPMPP_2M,
    LK__ALGO_LMS,
} lk__algo;

#define LK__LMS_ORDER 4

struct lk_sampler {
    lk_sampler_kind kind;
    lk__algo algo;
    bool karras;
    lk_schedule_config cfg;     /* timestep_spacing resolved to the scheduler's default */
    int steps;                  /* num_inference_steps */
    int n_train;
    float *ac;                  /* (n_train) alphas_cumprod */
    float *table_sigmas;        /* (n_train) ((1 - ac) / ac) ** 0.5 in f32, by train timestep */
    float final_alpha_cumprod;  /* DDIM */
    int n_ts;
    float *timesteps;           /* (n_ts) */
    int n_sig;
    float *sigmas;              /* (n_sig), NULL for DDIM */
    float init_noise_sigma;
    int order;                  /* img2img slicing: 2 for Heun, else 1 */
    int begin;                  /* first timestep index of a run */
    int index;                  /* next timestep index */
    float eta;                  /* DDIM */

    /* run state: buffers of n floats each, allocated at the first step */
    size_t n;
    float *x_in, *model_out, *noise;
    float *hist[LK__LMS_ORDER]; /* LMS derivatives (newest last); DPM-Solver++ x0 predictions
                                 * [0] previous, [1] current; Heun [0] derivative, [1] sample */
    int n_hist;                 /* LMS: derivatives held; DPM-Solver++: lower_order_nums */
    bool heun_second;           /* Heun: the next update is the corrector */
    float heun_dt;
};

/* ---- schedule.c ---- */
/* torch.linspace(start, end, n, dtype=float32) bit for bit (PyTorch 1.13 CPU kernel). */
void lk__torch_linspace_f32(float *out, double start, double end, int n);
/* numpy.interp(x, arange(n), fp) in double. */
double lk__np_interp(double x, const float *fp, int n);
/* numpy.linspace(start, stop, num)[i] in double. */
double lk__np_linspace_at(double start, double stop, int num, int i);
/* Karras et al. 2022 sigmas, rho 7, from sigma_max down to sigma_min (n values, double). */
void lk__karras_sigmas(double *out, int n, double sigma_min, double sigma_max);
/* diffusers' _sigma_to_t: the (fractional) train timestep of sigma by interpolating log sigma
 * over log_sigmas (n_train floats, ascending in t). */
double lk__sigma_to_t(double sigma, const float *log_sigmas, int n_train);
/* The schedule shared by Euler, Euler a, Heun and LMS: timesteps by spacing (float32 or
 * double, as each diffusers scheduler casts them), sigmas interpolated from the table, Karras
 * optional, a trailing 0 sigma. Fills s->timesteps/n_ts, s->sigmas/n_sig (Heun repeats them
 * afterwards). ts_double: Heun keeps numpy's float64 timesteps for the interpolation. */
lk_status lk__sigma_schedule(lk_sampler *s, bool ts_double);
/* numpy's arange(N, 0, -N/steps) length and values as the "trailing" spacing makes them
 * (before rounding); returns the count written to out (capacity cap). */
int lk__np_arange_trailing(double *out, int cap, int n_train, int steps);
/* ((sigma^2 + 1) ** 0.5) in f32 as torch computes it for a 0-dim tensor. */
float lk__sigma_scale(float sigma);
/* torch's float32 log / exp of a 0-dim tensor (SLEEF u10), bit for bit: torch_math.c. */
float lk__torch_logf(float x);
float lk__torch_expf(float x);
/* Allocate n floats (64-byte aligned); NULL + message on overflow or failure. */
float *lk__floats(size_t n);

/* ---- per method ---- */
lk_status lk__ddim_set_timesteps(lk_sampler *s);
lk_status lk__ddim_update(lk_sampler *s, float *x, const float *m, size_t n, lk_rng *rng);
lk_status lk__euler_update(lk_sampler *s, float *x, const float *m, size_t n, lk_rng *rng);
lk_status lk__euler_a_update(lk_sampler *s, float *x, const float *m, size_t n, lk_rng *rng);
lk_status lk__heun_set_timesteps(lk_sampler *s);
lk_status lk__heun_update(lk_sampler *s, float *x, const float *m, size_t n);
lk_status lk__dpmpp_2m_set_timesteps(lk_sampler *s);
lk_status lk__dpmpp_2m_update(lk_sampler *s, float *x, const float *m, size_t n);
lk_status lk__lms_update(lk_sampler *s, float *x, const float *m, size_t n);
/* LMS coefficient: the integral of the Lagrange basis polynomial j (of `order` nodes
 * sigmas[t], sigmas[t-1], ...) from sigmas[t] to sigmas[t+1], exactly (double). */
double lk__lms_coefficient(const float *sigmas, int order, int t, int j);

/* pred_x0 of the sigma samplers (Euler, Euler a, Heun, LMS) at noise level sigma, f32 as
 * diffusers: epsilon x - sigma m; v m * (-sigma / sqrt(sigma^2+1)) + x / (sigma^2+1). */
typedef struct lk__x0_coef {
    lk_prediction_type pred;
    float sigma, c_out, c_in2;
} lk__x0_coef;

static inline lk__x0_coef lk__x0_coef_make(lk_prediction_type pred, float sigma) {
    lk__x0_coef c = {pred, sigma, -sigma / lk__sigma_scale(sigma), sigma * sigma + 1.0f};
    return c;
}

static inline float lk__x0(const lk__x0_coef *c, float x, float m) {
    if (c->pred == LK_PREDICT_EPSILON) return x - c->sigma * m;
    return m * c->c_out + x / c->c_in2;
}

#endif
