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
#include "likeness/optim.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

/* Below this many elements (summed over the set) one thread does the pass: it is memory-bound
 * and a serial pass of 2M elements takes ~1 ms, less than a fork/join costs when the sibling
 * core is busy with another process (measured: 5-10 ms on a loaded 2-core machine). */
#define EMA_PAR_MIN (1 << 21)

struct lk_ema {
    lk_paramset *ps;  /* borrowed */
    float decay;
    bool warmup;
    int n;
    int64_t *off;     /* (n+1) offsets of each parameter's shadow */
    float *shadow;    /* (off[n]) trainable elements of every parameter */
    int64_t updates;  /* lk_ema_update calls so far */
};

static float *param_slice(const lk_tensor *p) {
    int64_t off = p->ndim == 2 ? p->grad_row_lo * p->shape[1] : 0;
    return (float *)p->data + off;
}

static void thread_range(int64_t total, int64_t *lo, int64_t *hi) {
    int t = 0, nt = 1;
#ifdef _OPENMP
    t = omp_get_thread_num();
    nt = omp_get_num_threads();
#endif
    int64_t per = ((total + nt - 1) / nt + 15) & ~(int64_t)15;
    *lo = (int64_t)t * per < total ? (int64_t)t * per : total;
    *hi = *lo + per < total ? *lo + per : total;
}

static lk_status check_params(const lk_ema *e, const char *who) {
    if (lk_paramset_count(e->ps) != e->n)
        return lk_fail(LK_ERR_STATE, "%s: paramset has %d parameters, EMA was made for %d", who,
                       lk_paramset_count(e->ps), e->n);
    for (int i = 0; i < e->n; i++) {
        const lk_tensor *p = lk_paramset_get(e->ps, i);
        if (!p->data || lk_grad_numel(p) != e->off[i + 1] - e->off[i])
            return lk_fail(LK_ERR_STATE, "%s: parameter %d ('%s') changed since creation", who, i,
                           p->name);
    }
    return LK_OK;
}

/* Contract: shadow i holds lk_grad_numel(param i) floats (the trainable rows of a row-subset
 * parameter), initialised to a copy of the parameter. decay must be in [0, 1]. */
lk_ema *lk_ema_new(lk_paramset *ps, float decay, bool warmup) {
    if (!ps || !(decay >= 0.0f && decay <= 1.0f)) {
        lk_fail(LK_ERR_INVALID, "ema_new: %s", ps ? "decay must be in [0, 1]" : "NULL paramset");
        return NULL;
    }
    int n = lk_paramset_count(ps);
    lk_ema *e = calloc(1, sizeof *e);
    int64_t *off = calloc((size_t)n + 1, sizeof *off);
    if (!e || !off) goto nomem;
    e->ps = ps;
    e->decay = decay;
    e->warmup = warmup;
    e->n = n;
    e->off = off;
    for (int i = 0; i < n; i++) off[i + 1] = off[i] + lk_grad_numel(lk_paramset_get(ps, i));
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
        memcpy(e->shadow + off[i], param_slice(p), sizeof(float) * (size_t)(off[i + 1] - off[i]));
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
    lk_status st = check_params(e, "ema_update");
    if (st != LK_OK) return st;
    double d = e->decay;
    if (e->warmup) {
        const double nd = (double)e->updates;
        const double w = (1.0 + nd) / (10.0 + nd);
        d = e->updates == 0 ? 0.0 : (w < d ? w : d);
    }
    const float omd = (float)(1.0 - d);
    const int64_t total = e->off[e->n];
#pragma omp parallel if (total >= EMA_PAR_MIN)
    {
        int64_t lo, hi;
        thread_range(total, &lo, &hi);
        for (int i = 0; i < e->n && lo < hi; i++) {
            int64_t a = lo > e->off[i] ? lo : e->off[i];
            int64_t b = hi < e->off[i + 1] ? hi : e->off[i + 1];
            if (a < b)
                ema_range(e->shadow + a, param_slice(lk_paramset_get(e->ps, i)) + (a - e->off[i]),
                          b - a, omd);
        }
    }
    e->updates++;
    return LK_OK;
}

/* Contract: copies every shadow into the trainable part of its parameter. */
lk_status lk_ema_copy_to_params(lk_ema *e) {
    if (!e) return lk_fail(LK_ERR_INVALID, "ema_copy_to_params: NULL");
    lk_status st = check_params(e, "ema_copy_to_params");
    if (st != LK_OK) return st;
    for (int i = 0; i < e->n; i++)
        memcpy(param_slice(lk_paramset_get(e->ps, i)), e->shadow + e->off[i],
               sizeof(float) * (size_t)(e->off[i + 1] - e->off[i]));
    return LK_OK;
}

/* Contract: borrowed pointer to shadow i (lk_grad_numel floats); NULL if i is out of range. */
const float *lk_ema_shadow(const lk_ema *e, int i) {
    return (e && i >= 0 && i < e->n) ? e->shadow + e->off[i] : NULL;
}

static lk_status key(char *buf, size_t len, const char *prefix, const char *what, int i) {
    int k = i < 0 ? snprintf(buf, len, "%s%s", prefix ? prefix : "", what)
                  : snprintf(buf, len, "%s%s.%d", prefix ? prefix : "", what, i);
    if (k < 0 || (size_t)k >= len) return lk_fail(LK_ERR_INVALID, "EMA state: prefix too long");
    return LK_OK;
}

/* Contract: adds "<prefix>step" (I64, updates so far) and "<prefix>shadow.<i>" (F32). */
lk_status lk_ema_save(const lk_ema *e, lk_st_writer *w, const char *prefix) {
    if (!e || !w) return lk_fail(LK_ERR_INVALID, "ema_save: NULL argument");
    lk_status s = check_params(e, "ema_save");
    char name[512];
    if (s == LK_OK) s = key(name, sizeof name, prefix, "step", -1);
    if (s == LK_OK) s = lk_st_writer_add(w, name, LK_I64, 1, (const int64_t[]){1}, &e->updates);
    for (int i = 0; i < e->n && s == LK_OK; i++) {
        const lk_tensor *p = lk_paramset_get(e->ps, i);
        int64_t shape[LK_MAX_DIMS];
        for (int d = 0; d < p->ndim; d++) shape[d] = p->shape[d];
        if (p->ndim == 2) shape[0] = p->grad_row_hi - p->grad_row_lo;
        s = key(name, sizeof name, prefix, "shadow", i);
        if (s == LK_OK) s = lk_st_writer_add(w, name, LK_F32, p->ndim, shape, e->shadow + e->off[i]);
    }
    return s;
}

static const lk_st_tensor *find_shadow(const lk_safetensors *st, const char *prefix, int i,
                                       int64_t n, lk_status *s) {
    char name[512];
    *s = key(name, sizeof name, prefix, "shadow", i);
    if (*s != LK_OK) return NULL;
    const lk_st_tensor *t = lk_safetensors_find(st, name);
    if (!t || t->dtype != LK_F32 || lk_st_tensor_numel(t) != n) {
        *s = lk_fail(LK_ERR_FORMAT, "%s: EMA state '%s' missing or not F32 with %" PRId64
                     " elements", lk_safetensors_path(st), name, n);
        return NULL;
    }
    return t;
}

/* Contract: restores exactly what lk_ema_save wrote; on failure the EMA is unchanged. */
lk_status lk_ema_load(lk_ema *e, const lk_safetensors *st, const char *prefix) {
    if (!e || !st) return lk_fail(LK_ERR_INVALID, "ema_load: NULL argument");
    lk_status s = check_params(e, "ema_load");
    if (s != LK_OK) return s;
    char name[512];
    if ((s = key(name, sizeof name, prefix, "step", -1)) != LK_OK) return s;
    const lk_st_tensor *ts = lk_safetensors_find(st, name);
    if (!ts || ts->dtype != LK_I64 || lk_st_tensor_numel(ts) != 1)
        return lk_fail(LK_ERR_FORMAT, "%s: EMA state '%s' missing or not one I64",
                       lk_safetensors_path(st), name);
    int64_t updates;
    memcpy(&updates, ts->data, sizeof updates);
    if (updates < 0)
        return lk_fail(LK_ERR_FORMAT, "%s: negative EMA step %" PRId64, lk_safetensors_path(st),
                       updates);
    for (int i = 0; i < e->n; i++)
        if (!find_shadow(st, prefix, i, e->off[i + 1] - e->off[i], &s)) return s;
    for (int i = 0; i < e->n; i++) {
        int64_t n = e->off[i + 1] - e->off[i];
        const lk_st_tensor *t = find_shadow(st, prefix, i, n, &s);
        if ((s = lk_st_tensor_to_f32(t, e->shadow + e->off[i], (size_t)n)) != LK_OK) return s;
    }
    e->updates = updates;
    return LK_OK;
}
