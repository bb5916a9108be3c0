/* likeness/sampler.h: noise schedules and samplers of Stable Diffusion, reproducing the diffusers
 * 0.25 schedulers (DDIM, Euler, Euler ancestral, Heun, DPM-Solver++ 2M, LMS, Karras sigmas) on
 * plain float arrays, plus the DDPM forward process used for training (add_noise, v target, SNR).
 *
 * Numerics follow diffusers + PyTorch 1.13 operation for operation: betas and alphas_cumprod in
 * float32 exactly as torch computes them, timesteps and sigmas as numpy computes them (float64,
 * then float32), every per-element update in float32 in the same order. The model is a callback;
 * classifier-free guidance is the callback owner's business (lk_cfg_combine helps). */
#ifndef LIKENESS_SAMPLER_H
#define LIKENESS_SAMPLER_H

#include <signal.h>

#include "likeness/core.h"
#include "likeness/rng.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- the noise schedule (diffusers scheduler_config.json) ---- */

typedef enum lk_beta_schedule {
    LK_BETA_LINEAR = 0,         /* torch.linspace(beta_start, beta_end, N) */
    LK_BETA_SCALED_LINEAR = 1,  /* torch.linspace(sqrt(beta_start), sqrt(beta_end), N) ** 2 (SD) */
    LK_BETA_SQUAREDCOS_CAP_V2 = 2, /* Nichol & Dhariwal 2021 cosine, betas capped at 0.999 */
} lk_beta_schedule;

typedef enum lk_prediction_type {
    LK_PREDICT_EPSILON = 0,     /* the model predicts the noise (SD 1.x, SD 2 base 512) */
    LK_PREDICT_V = 1,           /* v = sqrt(ac) * noise - sqrt(1 - ac) * x0 (SD 2.x 768) */
} lk_prediction_type;

typedef enum lk_timestep_spacing {
    LK_SPACING_DEFAULT = 0,     /* the scheduler's own diffusers default: leading for DDIM,
                                 * linspace for Euler, Euler a, Heun, LMS, DPM-Solver++ */
    LK_SPACING_LEADING = 1,
    LK_SPACING_TRAILING = 2,
    LK_SPACING_LINSPACE = 3,
} lk_timestep_spacing;

typedef struct lk_schedule_config {
    int num_train_timesteps;          /* N, 1000 for SD */
    double beta_start, beta_end;      /* as the JSON gives them (Python floats) */
    lk_beta_schedule beta_schedule;
    int steps_offset;                 /* added to "leading" timesteps (1 for SD) */
    lk_prediction_type prediction_type;
    lk_timestep_spacing timestep_spacing;
    bool set_alpha_to_one;            /* DDIM: alpha_cumprod "before" t=0 is 1 (else ac[0]) */
    bool clip_sample;                 /* DDIM, Heun: clamp predicted x0 to +-clip_sample_range */
    float clip_sample_range;
    bool use_karras_sigmas;           /* Euler, Heun, LMS, DPM-Solver++: Karras et al. 2022 sigmas */
    bool lower_order_final;           /* DPM-Solver++: first order last step when < 15 steps */
    bool euler_at_final;              /* DPM-Solver++: always first order on the last step */
} lk_schedule_config;

/* Contract: fills cfg with the SD 1.x schedule (scaled_linear 0.00085..0.012, 1000 steps,
 * steps_offset 1, epsilon, default spacing, set_alpha_to_one false, clip_sample false,
 * lower_order_final true). Cannot fail; cfg must not be NULL. */
void lk_schedule_config_default(lk_schedule_config *cfg);

/* Contract: reads a diffusers scheduler_config.json. Starts from lk_schedule_config_default except
 * that set_alpha_to_one defaults to true and steps_offset to 0 (diffusers' class defaults);
 * num_train_timesteps, beta_start, beta_end and beta_schedule are required. Keys starting with
 * '_' and keys of no effect here are ignored; a known key of the wrong type gives LK_ERR_FORMAT,
 * a value that would change the math in a way not implemented (trained_betas, thresholding,
 * rescale_betas_zero_snr, prediction_type "sample", timestep_type "continuous", ...) gives
 * LK_ERR_UNSUPPORTED; the message names the file and the key. cfg is written only on success. */
lk_status lk_schedule_config_load(lk_schedule_config *cfg, const char *path);
/* The same on JSON text in memory (len bytes, need not be NUL-terminated); label names it in
 * messages. */
lk_status lk_schedule_config_parse(lk_schedule_config *cfg, const char *json, size_t len,
                                   const char *label);
/* Contract: LK_OK if cfg describes a schedule this library can build (N in [2, 100000], betas in
 * (0, 1) with start <= end for the linear kinds, steps_offset in [0, N), clip range > 0);
 * LK_ERR_INVALID with a message otherwise. */
lk_status lk_schedule_config_validate(const lk_schedule_config *cfg);

/* Contract: alphas_cumprod of the schedule, n = cfg->num_train_timesteps floats, bit for bit as
 * torch.cumprod(1 - betas) in float32 (torch accumulates in double). LK_ERR_INVALID if n differs
 * from num_train_timesteps or the config is invalid. */
lk_status lk_schedule_alphas_cumprod(const lk_schedule_config *cfg, float *out, int n);

/* ---- samplers ---- */

typedef enum lk_sampler_kind {
    LK_SAMPLER_DDIM = 0,            /* Song et al. 2021, eta settable (0 = deterministic) */
    LK_SAMPLER_EULER,               /* Karras et al. 2022 Euler (diffusers EulerDiscrete) */
    LK_SAMPLER_EULER_KARRAS,        /* the same on Karras sigmas */
    LK_SAMPLER_EULER_A,             /* Euler ancestral (k-diffusion), needs an lk_rng */
    LK_SAMPLER_HEUN,                /* Karras et al. 2022 Heun, two model calls per step */
    LK_SAMPLER_HEUN_KARRAS,
    LK_SAMPLER_DPMPP_2M,            /* Lu et al. 2022 DPM-Solver++(2M), midpoint */
    LK_SAMPLER_DPMPP_2M_KARRAS,
    LK_SAMPLER_LMS,                 /* k-diffusion linear multistep, order 4 */
    LK_SAMPLER_LMS_KARRAS,
    LK_SAMPLER_KIND_COUNT
} lk_sampler_kind;

/* Contract: maps a name ("ddim", "euler", "euler_karras", "euler_a", "heun", "heun_karras",
 * "dpmpp_2m", "dpmpp_2m_karras", "lms", "lms_karras"; also the A1111/k-diffusion spellings
 * "k_euler", "euler_ancestral", "k_euler_a", "k_heun", "dpm++_2m", "dpm++_2m_karras", "k_lms";
 * case-insensitive) to its kind. LK_ERR_INVALID naming the valid names otherwise. */
lk_status lk_sampler_parse(const char *name, lk_sampler_kind *out);
/* The canonical name of a kind ("?" if out of range). Static string. */
const char *lk_sampler_name(lk_sampler_kind kind);

/* The model. x_in: the sampler's scaled model input (n floats, borrowed for the call);
 * timestep: the value diffusers passes to the UNet; model_out: n floats to fill with the
 * prediction (epsilon or v as the config says). A non-OK return stops the sampler with it. */
typedef lk_status (*lk_denoise_fn)(void *ud, const float *x_in, float timestep, float *model_out);
/* Called after each step: done of total model calls made, the timestep just used. A non-OK
 * return stops lk_sampler_run with that status. */
typedef lk_status (*lk_progress_fn)(void *ud, int done, int total, float timestep);

typedef struct lk_sampler lk_sampler;

/* Contract: builds a sampler of `kind` for `steps` inference steps (diffusers' set_timesteps) on
 * the schedule cfg (copied). strength in (0, 1] truncates the schedule as
 * StableDiffusionImg2ImgPipeline.get_timesteps does (1 = the full schedule, txt2img): the run
 * starts at timestep index lk_sampler_begin(). LK_ERR_INVALID for steps outside
 * [1, num_train_timesteps], strength outside (0, 1] or one that leaves no step, an invalid config
 * or a DDIM timestep outside [0, N); LK_ERR_NOMEM. *out is NULL on failure. Free with
 * lk_sampler_free. One deliberate difference from diffusers: for the step counts where numpy's
 * arange gives "trailing" spacing an extra value (61, 103, 121, ... of 1000), diffusers ends
 * with a timestep of -1; that entry is dropped here. */
lk_status lk_sampler_new(lk_sampler **out, const lk_schedule_config *cfg, lk_sampler_kind kind,
                         int steps, double strength);
void lk_sampler_free(lk_sampler *s); /* accepts NULL */

/* Accessors below are NULL-safe: 0, NULL (or -1 for the timestep) for a NULL sampler. */
lk_sampler_kind lk_sampler_kind_of(const lk_sampler *s);
/* The full schedule as diffusers' scheduler.timesteps after set_timesteps (Heun repeats each
 * timestep but the first; DPM-Solver++ drops duplicates). Borrowed; lives as long as s. */
int lk_sampler_num_timesteps(const lk_sampler *s);
const float *lk_sampler_timesteps(const lk_sampler *s);
/* scheduler.sigmas (num_timesteps + 1 entries, DPM-Solver++ may have more after dropping
 * duplicate timesteps); 0 and NULL for DDIM. Borrowed. */
int lk_sampler_num_sigmas(const lk_sampler *s);
const float *lk_sampler_sigmas(const lk_sampler *s);
/* alphas_cumprod (num_train_timesteps floats). Borrowed. */
const float *lk_sampler_alphas_cumprod(const lk_sampler *s);
/* scheduler.init_noise_sigma: 1 for DDIM and DPM-Solver++, max sigma for "linspace"/"trailing",
 * sqrt(max sigma^2 + 1) for "leading". */
float lk_sampler_init_noise_sigma(const lk_sampler *s);
/* First timestep index of a run (img2img: t_start * order; 0 for txt2img). */
int lk_sampler_begin(const lk_sampler *s);
/* Model calls a whole run makes (num_timesteps - begin), and how many are done so far. */
int lk_sampler_total_steps(const lk_sampler *s);
int lk_sampler_steps_done(const lk_sampler *s);
/* The timestep the next step passes to the model; -1 when the run is complete. */
float lk_sampler_current_timestep(const lk_sampler *s);

/* Contract: DDIM's eta (0 deterministic, 1 DDPM-like); the noise comes from the rng passed to
 * the steps, drawn as diffusers does (torch.randn of the latent's shape each step).
 * LK_ERR_INVALID for other kinds or a negative or non-finite eta; LK_ERR_STATE once the run has
 * started (until lk_sampler_reset). */
lk_status lk_sampler_set_eta(lk_sampler *s, float eta);

/* Contract: the txt2img starting latent as StableDiffusionPipeline.prepare_latents makes it:
 * x = torch.randn(n) from rng, times init_noise_sigma. */
lk_status lk_sampler_init_latent(const lk_sampler *s, float *x, size_t n, lk_rng *rng);
/* Contract: the img2img starting latent, scheduler.add_noise(x0, noise, timesteps[begin]):
 * DDIM sqrt(ac[t]) x0 + sqrt(1 - ac[t]) noise; Euler, Euler a, Heun, LMS x0 + sigma noise;
 * DPM-Solver++ alpha_t x0 + sigma_t noise with alpha_t = 1/sqrt(sigma^2+1). out may alias x0
 * or noise. */
lk_status lk_sampler_add_noise(const lk_sampler *s, float *out, const float *x0,
                               const float *noise, size_t n);

/* Contract: one model call and scheduler update: x (n floats, the latent, any batch size) is
 * replaced by the next latent. rng: needed by Euler a and DDIM with eta > 0 (LK_ERR_INVALID if
 * NULL); Euler also draws (and discards) n normals per step when given one, as diffusers'
 * EulerDiscreteScheduler does with a generator, so a shared generator stays in step with
 * diffusers. n must stay the same for a whole run. LK_ERR_STATE when the run is complete;
 * a model error is passed on, prefixed with the step. */
lk_status lk_sampler_step(lk_sampler *s, float *x, size_t n, lk_denoise_fn fn, void *ud,
                          lk_rng *rng);
/* The two halves of lk_sampler_step for callers that run the model themselves:
 * scheduler.scale_model_input (x_in = x / sqrt(sigma^2 + 1) for the sigma samplers, a copy for
 * DDIM and DPM-Solver++) and scheduler.step on the model output, which advances the index. */
lk_status lk_sampler_scale_input(const lk_sampler *s, float *x_in, const float *x, size_t n);
lk_status lk_sampler_update(lk_sampler *s, float *x, const float *model_out, size_t n,
                            lk_rng *rng);
/* Contract: the remaining steps of the run. progress (optional) is called after every step;
 * cancel (optional, e.g. set from a SIGINT handler) is read before every step and a non-zero
 * value stops the run with LK_ERR_INTERRUPTED, leaving x at the last finished step. */
lk_status lk_sampler_run(lk_sampler *s, float *x, size_t n, lk_denoise_fn fn, void *ud,
                         lk_rng *rng, lk_progress_fn progress, void *progress_ud,
                         const volatile sig_atomic_t *cancel);
/* Contract: back to the start of the run (index begin, multistep history cleared). */
void lk_sampler_reset(lk_sampler *s);

/* Classifier-free guidance (Ho & Salimans 2022) as the diffusers pipelines write it:
 * out = uncond + scale * (cond - uncond) in float32. out may alias either input. */
void lk_cfg_combine(float *out, const float *uncond, const float *cond, size_t n, float scale);

/* ---- DDPM forward process for training (Ho et al. 2020; Salimans & Ho 2022 for v) ---- */
/* ac: alphas_cumprod of n_train entries (lk_schedule_alphas_cumprod); t in [0, n_train) else
 * LK_ERR_INVALID. All in float32 as DDPMScheduler computes them. out may alias an input. */
/* x_t = sqrt(ac[t]) x0 + sqrt(1 - ac[t]) noise  (DDPMScheduler.add_noise) */
lk_status lk_ddpm_add_noise(float *out, const float *x0, const float *noise, size_t n,
                            const float *ac, int n_train, int64_t t);
/* v = sqrt(ac[t]) noise - sqrt(1 - ac[t]) x0  (DDPMScheduler.get_velocity, the v target) */
lk_status lk_ddpm_velocity(float *out, const float *x0, const float *noise, size_t n,
                           const float *ac, int n_train, int64_t t);
/* SNR(t) = ac[t] / (1 - ac[t]) as diffusers.training_utils.compute_snr ((sqrt/sqrt)^2);
 * NaN for t out of range. */
float lk_ddpm_snr(const float *ac, int n_train, int64_t t);
/* Min-SNR-gamma loss weight (Hang et al. 2023) as diffusers' training scripts compute it:
 * min(snr, gamma) / snr for epsilon, min(snr, gamma) / (snr + 1) for v prediction. */
float lk_min_snr_weight(float snr, float gamma, lk_prediction_type prediction);

#ifdef __cplusplus
}
#endif
#endif
