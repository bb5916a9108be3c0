/* lr_schedule.c: learning-rate schedules with linear warm-up, following
 * diffusers.optimization.get_scheduler (constant, constant_with_warmup, linear, cosine with
 * num_cycles 0.5 = SGDR-style half cosine, Loshchilov & Hutter 2017) through torch's LambdaLR. */
#include "likeness/optim.h"

#include <math.h>
#include <string.h>

#ifndef M_PI
#define M_PI 3.14159265358979323846
#endif

/* diffusers' lr_lambda(current_step), in double as Python evaluates it. */
static double lr_lambda(const lk_lr_schedule *s, int64_t step) {
    const int64_t warm = s->warmup_steps > 0 ? s->warmup_steps : 0;
    if (s->kind == LK_LR_CONSTANT) return 1.0;
    if (step < warm) return (double)step / (double)(warm > 1 ? warm : 1);
    if (s->kind == LK_LR_CONSTANT_WARMUP) return 1.0;
    const int64_t span = s->total_steps - warm > 1 ? s->total_steps - warm : 1;
    if (s->kind == LK_LR_LINEAR) {
        double r = (double)(s->total_steps - step) / (double)span;
        return r > 0.0 ? r : 0.0;
    }
    /* cosine: like diffusers, progress is not clamped, so past total_steps the rate rises again */
    const double num_cycles = 0.5;
    double progress = (double)(step - warm) / (double)span;
    double r = 0.5 * (1.0 + cos(M_PI * num_cycles * 2.0 * progress));
    return r > 0.0 ? r : 0.0;
}

/* Contract: the learning rate of update number `step` (0-based): base_lr * lambda(step), the
 * value LambdaLR gives after `step` scheduler steps, formed in double and rounded to f32.
 * Warm-up rises linearly from 0 at step 0 to base_lr at warmup_steps. A negative step counts as
 * 0, a negative warmup_steps as 0; an unknown kind behaves as constant. 0 for s == NULL. */
float lk_lr_at(const lk_lr_schedule *s, int64_t step) {
    if (!s) return 0.0f;
    if (step < 0) step = 0;
    return (float)((double)s->base_lr * lr_lambda(s, step));
}

/* Contract: maps a diffusers scheduler name to its kind; LK_ERR_UNSUPPORTED for other names. */
lk_status lk_lr_kind_parse(const char *name, lk_lr_kind *out) {
    static const struct { const char *name; lk_lr_kind kind; } kinds[] = {
        {"constant", LK_LR_CONSTANT},
        {"constant_with_warmup", LK_LR_CONSTANT_WARMUP},
        {"linear", LK_LR_LINEAR},
        {"cosine", LK_LR_COSINE},
    };
    if (!name || !out) return lk_fail(LK_ERR_INVALID, "lr_kind_parse: NULL argument");
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
        if (strcmp(name, kinds[i].name) == 0) {
            *out = kinds[i].kind;
            return LK_OK;
        }
    }
    return lk_fail(LK_ERR_UNSUPPORTED,
                   "unknown lr scheduler '%s' (constant, constant_with_warmup, linear, cosine)",
                   name);
}
