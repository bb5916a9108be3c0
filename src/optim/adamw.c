/* adamw.c: AdamW over an lk_paramset (Loshchilov & Hutter 2019), torch.optim.AdamW semantics
 * (1.13, amsgrad=False): decoupled decay, bias-corrected moments, m and v in one block each. */
#include "kernels/kernels.h"
#include "optim/optim_state.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct lk_adamw {
    lk_paramset *ps;   /* borrowed */
    lk_adamw_config cfg;
    int n;             /* parameters at creation */
    int64_t *off;      /* (n+1) element offsets of each parameter's state in m and v */
    float *m, *v;      /* (off[n]) first and second moments */
    float *scale;      /* (n) learning-rate multiplier of each parameter (param groups) */
    int64_t step;      /* updates done */
};

/* Contract: torch's defaults except lr (1e-3, 0.9, 0.999, 1e-8, 1e-2). Cannot fail. */
lk_adamw_config lk_adamw_defaults(void) {
    lk_adamw_config c = {1e-3f, 0.9f, 0.999f, 1e-8f, 1e-2f};
    return c;
}

/* Contract: borrows ps (finalized: every parameter has its gradient); m and v are zeroed blocks
 * of lk_paramset_numel floats (parameter i at the running sum of the earlier grad numels).
 * NULL with a message for an invalid config (as torch: lr, eps, weight_decay >= 0, betas in
 * [0, 1)), an unfinalized set, or no memory. */
lk_adamw *lk_adamw_new(lk_paramset *ps, lk_adamw_config cfg) {
    if (!ps) {
        lk_fail(LK_ERR_INVALID, "adamw_new: NULL paramset");
        return NULL;
    }
    if (!(cfg.lr >= 0.0f) || !(cfg.eps >= 0.0f) || !(cfg.beta1 >= 0.0f && cfg.beta1 < 1.0f) ||
        !(cfg.beta2 >= 0.0f && cfg.beta2 < 1.0f) || !(cfg.weight_decay >= 0.0f)) {
        lk_fail(LK_ERR_INVALID,
                "adamw_new: invalid config lr=%g betas=(%g,%g) eps=%g weight_decay=%g",
                (double)cfg.lr, (double)cfg.beta1, (double)cfg.beta2, (double)cfg.eps,
                (double)cfg.weight_decay);
        return NULL;
    }
    int n = lk_paramset_count(ps);
    if (lk__optim_require_grads(ps, "adamw_new") != LK_OK) return NULL;
    lk_adamw *o = calloc(1, sizeof *o);
    int64_t *off = lk__optim_offsets(ps, n);
    if (!o || !off) goto nomem;
    o->ps = ps;
    o->cfg = cfg;
    o->n = n;
    o->off = off;
    size_t nb;
    if (lk_mul_overflow((size_t)off[n] ? (size_t)off[n] : 1, sizeof(float), &nb)) goto nomem;
    o->m = lk_aligned_calloc(nb);
    o->v = lk_aligned_calloc(nb);
    o->scale = malloc(sizeof(float) * (size_t)(n ? n : 1));
    if (!o->m || !o->v || !o->scale) goto nomem;
    for (int i = 0; i < n; i++) o->scale[i] = 1.0f;
    return o;
nomem:
    lk_adamw_free(o);
    if (!o) free(off);
    lk_fail(LK_ERR_NOMEM, "adamw_new: out of memory for the state of %d parameters", n);
    return NULL;
}

void lk_adamw_free(lk_adamw *o) {
    if (!o) return;
    lk_aligned_free(o->m);
    lk_aligned_free(o->v);
    free(o->scale);
    free(o->off);
    free(o);
}

/* Contract: see optim.h. */
lk_status lk_adamw_set_lr_scale(lk_adamw *o, int i, float scale) {
    if (!o || i < 0 || i >= o->n || !(scale >= 0.0f) || !isfinite(scale))
        return lk_fail(LK_ERR_INVALID, "adamw_set_lr_scale: parameter %d of %d, scale %g", i,
                       o ? o->n : 0, (double)scale);
    o->scale[i] = scale;
    return LK_OK;
}

int64_t lk_adamw_step_count(const lk_adamw *o) { return o ? o->step : 0; }

/* Contract: one AdamW update of every trainable element (frozen rows untouched) from the
 * current gradients, with lr (< 0: cfg.lr); bit-identical to torch.optim.AdamW(foreach=False)
 * with the same f32-valued hyper-parameters. LK_ERR_STATE if the set changed since creation. */
lk_status lk_adamw_step(lk_adamw *o, float lr) {
    if (!o) return lk_fail(LK_ERR_INVALID, "adamw_step: NULL optimizer");
    lk_status s = lk__optim_check(o->ps, o->n, o->off, true, "adamw_step");
    if (s != LK_OK) return s;
    if (lr < 0.0f) lr = o->cfg.lr;
    if (isnan(lr)) return lk_fail(LK_ERR_INVALID, "adamw_step: learning rate is NaN");
    const int64_t t = o->step + 1, total = o->off[o->n];
    const lk_adamw_config c = o->cfg;
#pragma omp parallel if (total >= LK_OPTIM_PAR_MIN)
    {
        int64_t lo, hi;
        lk__optim_thread_range(total, &lo, &hi);
        for (int i = 0; i < o->n && lo < hi; i++) {
            int64_t a = lo > o->off[i] ? lo : o->off[i];
            int64_t b = hi < o->off[i + 1] ? hi : o->off[i + 1];
            if (a >= b) continue;
            const lk_tensor *p = lk_paramset_get(o->ps, i);
            int64_t r = a - o->off[i];
            lk_adamw_update(lk__optim_param_slice(p) + r, p->grad + r, o->m + a, o->v + a, (size_t)(b - a),
                            o->scale[i] == 1.0f ? lr : lr * o->scale[i], c.beta1, c.beta2, c.eps,
                            c.weight_decay, t);
        }
    }
    o->step = t;
    return LK_OK;
}

/* Contract: adds "<prefix>step" (I64 [1]) and "<prefix>m.<i>", "<prefix>v.<i>" (F32, the
 * gradient's shape: (hi-lo, cols) for row-subset parameters) to w; prefix may be NULL. */
lk_status lk_adamw_save(const lk_adamw *o, lk_st_writer *w, const char *prefix) {
    if (!o || !w) return lk_fail(LK_ERR_INVALID, "adamw_save: NULL argument");
    lk_status s = lk__optim_check(o->ps, o->n, o->off, true, "adamw_save");
    if (s == LK_OK) s = lk__optim_save_step(w, prefix, o->step);
    if (s == LK_OK) s = lk__optim_save_bufs(w, prefix, "m", o->ps, o->n, o->off, o->m);
    if (s == LK_OK) s = lk__optim_save_bufs(w, prefix, "v", o->ps, o->n, o->off, o->v);
    return s;
}

/* Contract: restores exactly what lk_adamw_save wrote (F32 tensors of matching element counts);
 * LK_ERR_FORMAT naming the tensor otherwise, leaving the state unchanged. */
lk_status lk_adamw_load(lk_adamw *o, const lk_safetensors *st, const char *prefix) {
    if (!o || !st) return lk_fail(LK_ERR_INVALID, "adamw_load: NULL argument");
    lk_status s = lk__optim_check(o->ps, o->n, o->off, true, "adamw_load");
    int64_t step = 0;
    if (s == LK_OK) s = lk__optim_load_step(st, prefix, &step);
    /* check everything before touching the state, so a failed load leaves it unchanged */
    if (s == LK_OK) s = lk__optim_load_bufs(st, prefix, "m", o->n, o->off, o->m, true);
    if (s == LK_OK) s = lk__optim_load_bufs(st, prefix, "v", o->n, o->off, o->v, true);
    if (s == LK_OK) s = lk__optim_load_bufs(st, prefix, "m", o->n, o->off, o->m, false);
    if (s == LK_OK) s = lk__optim_load_bufs(st, prefix, "v", o->n, o->off, o->v, false);
    if (s == LK_OK) o->step = step;
    return s;
}
