/* adamw.c: AdamW over an lk_paramset (Loshchilov & Hutter 2019), torch.optim.AdamW semantics
 * (1.13, amsgrad=False): decoupled decay, bias-corrected moments, m and v in one block each. */
#include "likeness/optim.h"
#include "kernels/kernels.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

/* Below this many elements (summed over the set) one thread does the pass: it is memory-bound
 * and a serial pass of 2M elements takes ~1 ms, less than a fork/join costs when the sibling
 * core is busy with another process (measured: 5-10 ms on a loaded 2-core machine). */
#define ADAMW_PAR_MIN (1 << 21)

struct lk_adamw {
    lk_paramset *ps;   /* borrowed */
    lk_adamw_config cfg;
    int n;             /* parameters at creation */
    int64_t *off;      /* (n+1) element offsets of each parameter's state in m and v */
    float *m, *v;      /* (off[n]) first and second moments */
    int64_t step;      /* updates done */
};

/* Trainable part of p: the data rows that have gradient (all of p unless trainable rows). */
static float *param_slice(const lk_tensor *p) {
    int64_t off = p->ndim == 2 ? p->grad_row_lo * p->shape[1] : 0;
    return (float *)p->data + off;
}

/* This thread's share [lo, hi) of [0, total), split in 16-element (64-byte) aligned pieces. */
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
    for (int i = 0; i < n; i++) {
        if (!lk_paramset_get(ps, i)->grad) {
            lk_fail(LK_ERR_STATE, "adamw_new: paramset not finalized ('%s' has no gradient)",
                    lk_paramset_get(ps, i)->name);
            return NULL;
        }
    }
    lk_adamw *o = calloc(1, sizeof *o);
    int64_t *off = calloc((size_t)n + 1, sizeof *off);
    if (!o || !off) goto nomem;
    o->ps = ps;
    o->cfg = cfg;
    o->n = n;
    o->off = off;
    for (int i = 0; i < n; i++) off[i + 1] = off[i] + lk_grad_numel(lk_paramset_get(ps, i));
    size_t nb;
    if (lk_mul_overflow((size_t)off[n] ? (size_t)off[n] : 1, sizeof(float), &nb)) goto nomem;
    o->m = lk_aligned_calloc(nb);
    o->v = lk_aligned_calloc(nb);
    if (!o->m || !o->v) goto nomem;
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
    free(o->off);
    free(o);
}

int64_t lk_adamw_step_count(const lk_adamw *o) { return o ? o->step : 0; }

/* The paramset must still have the parameters (and gradient sizes) the state was made for. */
static lk_status check_params(const lk_paramset *ps, int n, const int64_t *off, const char *who) {
    if (lk_paramset_count(ps) != n)
        return lk_fail(LK_ERR_STATE, "%s: paramset has %d parameters, state was made for %d", who,
                       lk_paramset_count(ps), n);
    for (int i = 0; i < n; i++) {
        const lk_tensor *p = lk_paramset_get(ps, i);
        if (!p->grad || !p->data || lk_grad_numel(p) != off[i + 1] - off[i])
            return lk_fail(LK_ERR_STATE, "%s: parameter %d ('%s') changed since creation", who, i,
                           p->name);
    }
    return LK_OK;
}

/* Contract: one AdamW update of every trainable element (frozen rows untouched) from the
 * current gradients, with lr (< 0: cfg.lr); bit-identical to torch.optim.AdamW(foreach=False)
 * with the same f32-valued hyper-parameters. LK_ERR_STATE if the set changed since creation. */
lk_status lk_adamw_step(lk_adamw *o, float lr) {
    if (!o) return lk_fail(LK_ERR_INVALID, "adamw_step: NULL optimizer");
    lk_status s = check_params(o->ps, o->n, o->off, "adamw_step");
    if (s != LK_OK) return s;
    if (lr < 0.0f) lr = o->cfg.lr;
    if (isnan(lr)) return lk_fail(LK_ERR_INVALID, "adamw_step: learning rate is NaN");
    const int64_t t = o->step + 1, total = o->off[o->n];
    const lk_adamw_config c = o->cfg;
#pragma omp parallel if (total >= ADAMW_PAR_MIN)
    {
        int64_t lo, hi;
        thread_range(total, &lo, &hi);
        for (int i = 0; i < o->n && lo < hi; i++) {
            int64_t a = lo > o->off[i] ? lo : o->off[i];
            int64_t b = hi < o->off[i + 1] ? hi : o->off[i + 1];
            if (a >= b) continue;
            const lk_tensor *p = lk_paramset_get(o->ps, i);
            int64_t r = a - o->off[i];
            lk_adamw_update(param_slice(p) + r, p->grad + r, o->m + a, o->v + a, (size_t)(b - a),
                            lr, c.beta1, c.beta2, c.eps, c.weight_decay, t);
        }
    }
    o->step = t;
    return LK_OK;
}

/* Gradient-shaped dims of p: (hi-lo, cols) for a row-subset leaf, else p's own shape. */
static int grad_shape(const lk_tensor *p, int64_t *shape) {
    for (int d = 0; d < p->ndim; d++) shape[d] = p->shape[d];
    if (p->ndim == 2) shape[0] = p->grad_row_hi - p->grad_row_lo;
    return p->ndim;
}

static lk_status key(char *buf, size_t len, const char *prefix, const char *what, int i) {
    int k = i < 0 ? snprintf(buf, len, "%s%s", prefix ? prefix : "", what)
                  : snprintf(buf, len, "%s%s.%d", prefix ? prefix : "", what, i);
    if (k < 0 || (size_t)k >= len) return lk_fail(LK_ERR_INVALID, "optimizer state: prefix too long");
    return LK_OK;
}

/* Contract: adds "<prefix>step" (I64 [1]) and "<prefix>m.<i>", "<prefix>v.<i>" (F32, the
 * gradient's shape: (hi-lo, cols) for row-subset parameters) to w; prefix may be NULL. */
lk_status lk_adamw_save(const lk_adamw *o, lk_st_writer *w, const char *prefix) {
    if (!o || !w) return lk_fail(LK_ERR_INVALID, "adamw_save: NULL argument");
    lk_status s = check_params(o->ps, o->n, o->off, "adamw_save");
    char name[512];
    if (s == LK_OK) s = key(name, sizeof name, prefix, "step", -1);
    if (s == LK_OK) s = lk_st_writer_add(w, name, LK_I64, 1, (const int64_t[]){1}, &o->step);
    for (int i = 0; i < o->n && s == LK_OK; i++) {
        int64_t shape[LK_MAX_DIMS];
        int nd = grad_shape(lk_paramset_get(o->ps, i), shape);
        s = key(name, sizeof name, prefix, "m", i);
        if (s == LK_OK) s = lk_st_writer_add(w, name, LK_F32, nd, shape, o->m + o->off[i]);
        if (s == LK_OK) s = key(name, sizeof name, prefix, "v", i);
        if (s == LK_OK) s = lk_st_writer_add(w, name, LK_F32, nd, shape, o->v + o->off[i]);
    }
    return s;
}

/* Find an F32 tensor of n elements named prefix+what[.i]; NULL with message otherwise. */
static const lk_st_tensor *find_f32(const lk_safetensors *st, const char *prefix, const char *what,
                                    int i, int64_t n, lk_status *s) {
    char name[512];
    *s = key(name, sizeof name, prefix, what, i);
    if (*s != LK_OK) return NULL;
    const lk_st_tensor *t = lk_safetensors_find(st, name);
    if (!t) {
        *s = lk_fail(LK_ERR_FORMAT, "%s: optimizer state '%s' missing", lk_safetensors_path(st), name);
        return NULL;
    }
    if (t->dtype != LK_F32 || lk_st_tensor_numel(t) != n) {
        *s = lk_fail(LK_ERR_FORMAT, "%s: optimizer state '%s' is %s with %" PRId64
                     " elements, expected F32 with %" PRId64, lk_safetensors_path(st), name,
                     lk_dtype_name(t->dtype), lk_st_tensor_numel(t), n);
        return NULL;
    }
    return t;
}

/* Contract: restores exactly what lk_adamw_save wrote (F32 tensors of matching element counts);
 * LK_ERR_FORMAT naming the tensor otherwise, leaving the state unchanged. */
lk_status lk_adamw_load(lk_adamw *o, const lk_safetensors *st, const char *prefix) {
    if (!o || !st) return lk_fail(LK_ERR_INVALID, "adamw_load: NULL argument");
    lk_status s = check_params(o->ps, o->n, o->off, "adamw_load");
    if (s != LK_OK) return s;
    char name[512];
    if ((s = key(name, sizeof name, prefix, "step", -1)) != LK_OK) return s;
    const lk_st_tensor *ts = lk_safetensors_find(st, name);
    if (!ts || ts->dtype != LK_I64 || lk_st_tensor_numel(ts) != 1)
        return lk_fail(LK_ERR_FORMAT, "%s: optimizer state '%s' missing or not one I64",
                       lk_safetensors_path(st), name);
    int64_t step;
    memcpy(&step, ts->data, sizeof step);
    if (step < 0)
        return lk_fail(LK_ERR_FORMAT, "%s: negative step %" PRId64, lk_safetensors_path(st), step);
    /* check everything before touching the state, so a failed load leaves it unchanged */
    for (int i = 0; i < o->n; i++) {
        int64_t n = o->off[i + 1] - o->off[i];
        if (!find_f32(st, prefix, "m", i, n, &s) || !find_f32(st, prefix, "v", i, n, &s)) return s;
    }
    for (int i = 0; i < o->n; i++) {
        int64_t n = o->off[i + 1] - o->off[i];
        const lk_st_tensor *tm = find_f32(st, prefix, "m", i, n, &s);
        const lk_st_tensor *tv = find_f32(st, prefix, "v", i, n, &s);
        if ((s = lk_st_tensor_to_f32(tm, o->m + o->off[i], (size_t)n)) != LK_OK) return s;
        if ((s = lk_st_tensor_to_f32(tv, o->v + o->off[i], (size_t)n)) != LK_OK) return s;
    }
    o->step = step;
    return LK_OK;
}
