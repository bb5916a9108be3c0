/* likeness/optim.h: optimizers over an lk_paramset (AdamW, Loshchilov & Hutter 2019; SGD with
 * momentum), global-norm gradient clipping, learning-rate schedules, and an exponential moving
 * average of weights. Semantics follow torch.optim / diffusers so results match them. */
#ifndef LIKENESS_OPTIM_H
#define LIKENESS_OPTIM_H

#include "likeness/tensor.h"
#include "likeness/safetensors.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- AdamW (torch.optim.AdamW: decoupled decay p -= lr*wd*p, bias-corrected moments) ---- */
typedef struct lk_adamw_config {
    float lr;           /* default used when step is given lr < 0 */
    float beta1, beta2; /* 0.9, 0.999 */
    float eps;          /* 1e-8 */
    float weight_decay; /* 1e-2 */
} lk_adamw_config;
lk_adamw_config lk_adamw_defaults(void);
typedef struct lk_adamw lk_adamw;
/* Borrows ps (finalized); allocates m and v in one block each. NULL on failure. */
lk_adamw *lk_adamw_new(lk_paramset *ps, lk_adamw_config cfg);
void lk_adamw_free(lk_adamw *o);
/* One update with learning rate lr (lr < 0: cfg.lr), times each parameter's scale. Does not
 * zero the gradients. */
lk_status lk_adamw_step(lk_adamw *o, float lr);
/* Parameter i of the set learns at lr * scale (default 1): torch's parameter groups, e.g. a new
 * token row faster than the weights. LK_ERR_INVALID for i out of range or a scale < 0 / not
 * finite. Not part of the saved state (a resumed run sets it again). */
lk_status lk_adamw_set_lr_scale(lk_adamw *o, int i, float scale);
int64_t lk_adamw_step_count(const lk_adamw *o);
/* Add the state (step, m.<i>, v.<i>) under prefix to a writer / restore it exactly. */
lk_status lk_adamw_save(const lk_adamw *o, lk_st_writer *w, const char *prefix);
lk_status lk_adamw_load(lk_adamw *o, const lk_safetensors *st, const char *prefix);

/* ---- SGD with momentum (torch.optim.SGD semantics) ---- */
typedef struct lk_sgd_config {
    float lr, momentum, dampening, weight_decay;
    bool nesterov;
} lk_sgd_config;
typedef struct lk_sgd lk_sgd;
lk_sgd *lk_sgd_new(lk_paramset *ps, lk_sgd_config cfg);
void lk_sgd_free(lk_sgd *o);
lk_status lk_sgd_step(lk_sgd *o, float lr);
lk_status lk_sgd_save(const lk_sgd *o, lk_st_writer *w, const char *prefix);
lk_status lk_sgd_load(lk_sgd *o, const lk_safetensors *st, const char *prefix);

/* ---- gradient clipping (torch.nn.utils.clip_grad_norm_) ---- */
/* Scales all gradients by min(1, max_norm / (norm + 1e-6)); returns the norm before clipping,
 * or -1 with a message on invalid arguments. */
float lk_clip_grad_norm(lk_paramset *ps, float max_norm);

/* ---- learning-rate schedules (diffusers.optimization.get_scheduler semantics) ---- */
typedef enum lk_lr_kind {
    LK_LR_CONSTANT = 0,
    LK_LR_CONSTANT_WARMUP = 1,
    LK_LR_LINEAR = 2,  /* warm-up then linear decay to 0 at total_steps */
    LK_LR_COSINE = 3,  /* warm-up then half-cosine decay to 0 at total_steps */
} lk_lr_kind;
typedef struct lk_lr_schedule {
    lk_lr_kind kind;
    float base_lr;
    int64_t warmup_steps;
    int64_t total_steps;
} lk_lr_schedule;
/* Learning rate for the update number `step` (0-based, as LambdaLR after `step` scheduler steps). */
float lk_lr_at(const lk_lr_schedule *s, int64_t step);
/* Parse "constant" | "constant_with_warmup" | "linear" | "cosine". */
lk_status lk_lr_kind_parse(const char *name, lk_lr_kind *out);

/* ---- exponential moving average of weights ---- */
typedef struct lk_ema lk_ema;
/* Shadow copies of ps's parameters. decay e.g. 0.9999. warmup (diffusers EMAModel): with n the
 * number of updates done so far, the first update uses decay 0 (the shadow becomes the
 * parameters) and later ones min(decay, (1 + n) / (10 + n)); without warmup, decay always. */
lk_ema *lk_ema_new(lk_paramset *ps, float decay, bool warmup);
void lk_ema_free(lk_ema *e);
lk_status lk_ema_update(lk_ema *e);            /* shadow = d*shadow + (1-d)*param */
lk_status lk_ema_copy_to_params(lk_ema *e);    /* write the shadow into the parameters */
const float *lk_ema_shadow(const lk_ema *e, int i);
lk_status lk_ema_save(const lk_ema *e, lk_st_writer *w, const char *prefix);
lk_status lk_ema_load(lk_ema *e, const lk_safetensors *st, const char *prefix);

#ifdef __cplusplus
}
#endif
#endif
