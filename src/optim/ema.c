/* ema.c: exponential moving average of the trainable weights (Polyak & Juditsky 1992), with the
 * update rule and decay warm-up of diffusers.training_utils.EMAModel; shadow in one block.
 *
 * Convention. n = number of updates done before this one (0 on the first call).
 *   warmup = true:  d_n = 0 for n == 0, else min(decay, (1 + n) / (10 + n)) -- exactly EMAModel
 *                   defaults (use_ema_warmup=False, update_after_step=0, min_decay=0), whose
 *                   get_decay(optimization_step) uses step = optimization_step - 1 = n, and 0 when
 *                   step <= 0 (the first update moves the shadow onto the parameters, s - (s - p)).
 *   warmup = false: d_n = decay for every n (plain EMA starting from the parameters).
 * The update is EMAModel's s -= (1 - d) * (s - p) with 1 - d formed in double, applied in f32. */
#include "optim/optim_state.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct lk_ema {
    lk_paramset *ps;  /* borrowed */
    float decay;
    bool warmup;
    int n;
    int64_t *off;     /* (n+1) offsets of each parameter's shadow */
    float *shadow;    /* (off[n]) trainable elements of every parameter */
    int64_t updates;  /* lk_ema_update calls so far */
};

/* Contract: shadow i holds lk_grad_numel(param i) floats (the trainable rows of a row-subset
 * parameter), initialised to a copy of the parameter. decay must be in [0, 1]. */
lk_ema *lk_ema_new(lk_paramset *ps, float decay, bool warmup) {
    if (!ps || !(decay >= 0.0f && decay <= 1.0f)) {
        lk_fail(LK_ERR_INVALID, "ema_new: %s", ps ? "decay must be in [0, 1]" : "NULL paramset");
        return NULL;
    }
    int n = lk_paramset_count(ps);
    lk_ema *e = calloc(1, sizeof *e);
    int64_t *off = lk__optim_offsets(ps, n);
    if (!e || !off) goto nomem;
    e->ps = ps;
    e->decay = decay;
    e->warmup = warmup;
    e->n = n;
    e->off = off;
    size_t nb;
    if (lk_mul_overflow((size_t)off[n] ? (size_t)off[n] : 1, sizeof(float), &nb)) goto nomem;
    e->shadow = lk_aligned_alloc(nb);
    if (!e->shadow) goto nomem;
    for (int i = 0; i < n; i++) {
        const lk_tensor *p = lk_paramset_get(ps, i);
        if (!p->data) {
            lk_ema_free(e);
            lk_fail(LK_ERR_INVALID, "ema_new: parameter '%s' has no data", p->name);
            return NULL;
        }
        memcpy(e->shadow + off[i], lk__optim_param_slice(p), sizeof(float) * (size_t)(off[i + 1] - off[i]));
    }
    return e;
nomem:
    lk_ema_free(e);
    if (!e) free(off);
    lk_fail(LK_ERR_NOMEM, "ema_new: out of memory for the shadow of %d parameters", n);
    return NULL;
}

void lk_ema_free(lk_ema *e) {
    if (!e) return;
    lk_aligned_free(e->shadow);
    free(e->off);
    free(e);
}

static void ema_range(float *restrict s, const float *restrict p, int64_t n, float omd) {
#pragma omp simd
    for (int64_t i = 0; i < n; i++) s[i] -= omd * (s[i] - p[i]);
}

/* Contract: one EMA update with the decay of the convention above; counts the update. */
lk_status lk_ema_update(lk_ema *e) {
    if (!e) return lk_fail(LK_ERR_INVALID, "ema_update: NULL");
    lk_status st = lk__optim_check(e->ps, e->n, e->off, false, "ema_update");
    if (st != LK_OK) return st;
    double d = e->decay;
    if (e->warmup) {
        const double nd = (double)e->updates;
        const double w = (1.0 + nd) / (10.0 + nd);
        d = e->updates == 0 ? 0.0 : (w < d ? w : d);
    }
    const float omd = (float)(1.0 - d);
    const int64_t total = e->off[e->n];
#pragma omp parallel if (total >= LK_OPTIM_PAR_MIN)
    {
        int64_t lo, hi;
        lk__optim_thread_range(total, &lo, &hi);
        for (int i = 0; i < e->n && lo < hi; i++) {
            int64_t a = lo > e->off[i] ? lo : e->off[i];
            int64_t b = hi < e->off[i + 1] ? hi : e->off[i + 1];
            if (a < b)
                ema_range(e->shadow + a, lk__optim_param_slice(lk_paramset_get(e->ps, i)) + (a - e->off[i]),
                          b - a, omd);
        }
    }
    e->updates++;
    return LK_OK;
}

/* Contract: copies every shadow into the trainable part of its parameter. */
lk_status lk_ema_copy_to_params(lk_ema *e) {
    if (!e) return lk_fail(LK_ERR_INVALID, "ema_copy_to_params: NULL");
    lk_status st = lk__optim_check(e->ps, e->n, e->off, false, "ema_copy_to_params");
    if (st != LK_OK) return st;
    for (int i = 0; i < e->n; i++)
        memcpy(lk__optim_param_slice(lk_paramset_get(e->ps, i)), e->shadow + e->off[i],
               sizeof(float) * (size_t)(e->off[i + 1] - e->off[i]));
    return LK_OK;
}

/* Contract: borrowed pointer to shadow i (lk_grad_numel floats); NULL if i is out of range. */
const float *lk_ema_shadow(const lk_ema *e, int i) {
    return (e && i >= 0 && i < e->n) ? e->shadow + e->off[i] : NULL;
}

/* Contract: adds "<prefix>step" (I64, updates so far) and "<prefix>shadow.<i>" (F32). */
lk_status lk_ema_save(const lk_ema *e, lk_st_writer *w, const char *prefix) {
    if (!e || !w) return lk_fail(LK_ERR_INVALID, "ema_save: NULL argument");
    lk_status s = lk__optim_check(e->ps, e->n, e->off, false, "ema_save");
    if (s == LK_OK) s = lk__optim_save_step(w, prefix, e->updates);
    if (s == LK_OK) s = lk__optim_save_bufs(w, prefix, "shadow", e->ps, e->n, e->off, e->shadow);
    return s;
}

/* Contract: restores exactly what lk_ema_save wrote; on failure the EMA is unchanged. */
lk_status lk_ema_load(lk_ema *e, const lk_safetensors *st, const char *prefix) {
    if (!e || !st) return lk_fail(LK_ERR_INVALID, "ema_load: NULL argument");
    lk_status s = lk__optim_check(e->ps, e->n, e->off, false, "ema_load");
    int64_t updates = 0;
    if (s == LK_OK) s = lk__optim_load_step(st, prefix, &updates);
    if (s == LK_OK) s = lk__optim_load_bufs(st, prefix, "shadow", e->n, e->off, e->shadow, true);
    if (s == LK_OK) s = lk__optim_load_bufs(st, prefix, "shadow", e->n, e->off, e->shadow, false);
    if (s == LK_OK) e->updates = updates;
    return s;
}
