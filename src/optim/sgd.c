/* sgd.c: stochastic gradient descent with momentum, dampening, Nesterov momentum (Sutskever et al.
 * 2013) and L2 weight decay, over an lk_paramset, with torch.optim.SGD (1.13) semantics. */
#include "likeness/optim.h"

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
#define SGD_PAR_MIN (1 << 21)

struct lk_sgd {
    lk_paramset *ps;   /* borrowed */
    lk_sgd_config cfg;
    int n;
    int64_t *off;      /* (n+1) offsets of each parameter's momentum buffer */
    float *buf;        /* (off[n]) momentum buffers; NULL when momentum == 0 */
    int64_t step;      /* updates done (the buffers are set from the gradient on the first) */
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

/* Contract: borrows ps (finalized); one zeroed momentum block of lk_paramset_numel floats when
 * momentum != 0, none otherwise. NULL with a message for an invalid config (as torch: lr,
 * momentum, weight_decay >= 0; nesterov needs momentum > 0 and dampening 0) or no memory. */
lk_sgd *lk_sgd_new(lk_paramset *ps, lk_sgd_config cfg) {
    if (!ps) {
        lk_fail(LK_ERR_INVALID, "sgd_new: NULL paramset");
        return NULL;
    }
    if (!(cfg.lr >= 0.0f) || !(cfg.momentum >= 0.0f) || !(cfg.weight_decay >= 0.0f) ||
        !isfinite(cfg.dampening) || (cfg.nesterov && (cfg.momentum <= 0.0f || cfg.dampening != 0.0f))) {
        lk_fail(LK_ERR_INVALID,
                "sgd_new: invalid config lr=%g momentum=%g dampening=%g weight_decay=%g%s",
                (double)cfg.lr, (double)cfg.momentum, (double)cfg.dampening,
                (double)cfg.weight_decay,
                cfg.nesterov ? " (nesterov needs momentum > 0 and dampening 0)" : "");
        return NULL;
    }
    int n = lk_paramset_count(ps);
    for (int i = 0; i < n; i++) {
        if (!lk_paramset_get(ps, i)->grad) {
            lk_fail(LK_ERR_STATE, "sgd_new: paramset not finalized ('%s' has no gradient)",
                    lk_paramset_get(ps, i)->name);
            return NULL;
        }
    }
    lk_sgd *o = calloc(1, sizeof *o);
    int64_t *off = calloc((size_t)n + 1, sizeof *off);
    if (!o || !off) goto nomem;
    o->ps = ps;
    o->cfg = cfg;
    o->n = n;
    o->off = off;
    for (int i = 0; i < n; i++) off[i + 1] = off[i] + lk_grad_numel(lk_paramset_get(ps, i));
    if (cfg.momentum != 0.0f) {
        size_t nb;
        if (lk_mul_overflow((size_t)off[n] ? (size_t)off[n] : 1, sizeof(float), &nb)) goto nomem;
        o->buf = lk_aligned_calloc(nb);
        if (!o->buf) goto nomem;
    }
    return o;
nomem:
    lk_sgd_free(o);
    if (!o) free(off);
    lk_fail(LK_ERR_NOMEM, "sgd_new: out of memory for the state of %d parameters", n);
    return NULL;
}

void lk_sgd_free(lk_sgd *o) {
    if (!o) return;
    lk_aligned_free(o->buf);
    free(o->off);
    free(o);
}

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

/* One parameter range. Each torch op rounds once; `add(x, alpha=a)` is a fused multiply-add in
 * torch's vectorized CPU kernel, hence fmaf:
 *   d = wd ? fma(p, wd, g) : g (torch skips the add when wd == 0);  buf = first ? d : fma(d, 1-damp, buf*mom);
 *   d = nesterov ? fma(buf, mom, d) : buf;  p = fma(d, -lr, p). */
static void sgd_range(float *restrict p, const float *restrict g, float *restrict buf, int64_t n,
                      const lk_sgd_config *c, float nlr, bool first) {
    const float wd = c->weight_decay, mom = c->momentum, omd = (float)(1.0 - (double)c->dampening);
    if (!buf) {
#pragma omp simd
        for (int64_t i = 0; i < n; i++) {
            float d = wd != 0.0f ? fmaf(p[i], wd, g[i]) : g[i];
            p[i] = fmaf(d, nlr, p[i]);
        }
    } else if (first) {
#pragma omp simd
        for (int64_t i = 0; i < n; i++) {
            float d = wd != 0.0f ? fmaf(p[i], wd, g[i]) : g[i];
            buf[i] = d;
            p[i] = fmaf(c->nesterov ? fmaf(d, mom, d) : d, nlr, p[i]);
        }
    } else {
#pragma omp simd
        for (int64_t i = 0; i < n; i++) {
            float d = wd != 0.0f ? fmaf(p[i], wd, g[i]) : g[i];
            float b = fmaf(d, omd, buf[i] * mom);
            buf[i] = b;
            p[i] = fmaf(c->nesterov ? fmaf(b, mom, d) : b, nlr, p[i]);
        }
    }
}

/* Contract: one update with lr (< 0: cfg.lr); the gradients are read, not modified; the first
 * step sets the momentum buffers to the (decayed) gradient, as torch. Frozen rows untouched. */
lk_status lk_sgd_step(lk_sgd *o, float lr) {
    if (!o) return lk_fail(LK_ERR_INVALID, "sgd_step: NULL optimizer");
    lk_status s = check_params(o->ps, o->n, o->off, "sgd_step");
    if (s != LK_OK) return s;
    if (lr < 0.0f) lr = o->cfg.lr;
    if (isnan(lr)) return lk_fail(LK_ERR_INVALID, "sgd_step: learning rate is NaN");
    const int64_t total = o->off[o->n];
    const bool first = o->step == 0;
    const float nlr = -lr;
#pragma omp parallel if (total >= SGD_PAR_MIN)
    {
        int64_t lo, hi;
        thread_range(total, &lo, &hi);
        for (int i = 0; i < o->n && lo < hi; i++) {
            int64_t a = lo > o->off[i] ? lo : o->off[i];
            int64_t b = hi < o->off[i + 1] ? hi : o->off[i + 1];
            if (a >= b) continue;
            const lk_tensor *p = lk_paramset_get(o->ps, i);
            int64_t r = a - o->off[i];
            sgd_range(param_slice(p) + r, p->grad + r, o->buf ? o->buf + a : NULL, b - a, &o->cfg,
                      nlr, first);
        }
    }
    o->step++;
    return LK_OK;
}

static lk_status key(char *buf, size_t len, const char *prefix, const char *what, int i) {
    int k = i < 0 ? snprintf(buf, len, "%s%s", prefix ? prefix : "", what)
                  : snprintf(buf, len, "%s%s.%d", prefix ? prefix : "", what, i);
    if (k < 0 || (size_t)k >= len) return lk_fail(LK_ERR_INVALID, "optimizer state: prefix too long");
    return LK_OK;
}

/* Contract: adds "<prefix>step" (I64 [1]) and, with momentum, "<prefix>momentum_buffer.<i>"
 * (F32, gradient-shaped) to w. */
lk_status lk_sgd_save(const lk_sgd *o, lk_st_writer *w, const char *prefix) {
    if (!o || !w) return lk_fail(LK_ERR_INVALID, "sgd_save: NULL argument");
    lk_status s = check_params(o->ps, o->n, o->off, "sgd_save");
    char name[512];
    if (s == LK_OK) s = key(name, sizeof name, prefix, "step", -1);
    if (s == LK_OK) s = lk_st_writer_add(w, name, LK_I64, 1, (const int64_t[]){1}, &o->step);
    for (int i = 0; o->buf && i < o->n && s == LK_OK; i++) {
        const lk_tensor *p = lk_paramset_get(o->ps, i);
        int64_t shape[LK_MAX_DIMS];
        for (int d = 0; d < p->ndim; d++) shape[d] = p->shape[d];
        if (p->ndim == 2) shape[0] = p->grad_row_hi - p->grad_row_lo;
        s = key(name, sizeof name, prefix, "momentum_buffer", i);
        if (s == LK_OK) s = lk_st_writer_add(w, name, LK_F32, p->ndim, shape, o->buf + o->off[i]);
    }
    return s;
}

static const lk_st_tensor *find_buf(const lk_safetensors *st, const char *prefix, int i,
                                    int64_t n, lk_status *s) {
    char name[512];
    *s = key(name, sizeof name, prefix, "momentum_buffer", i);
    if (*s != LK_OK) return NULL;
    const lk_st_tensor *t = lk_safetensors_find(st, name);
    if (!t || t->dtype != LK_F32 || lk_st_tensor_numel(t) != n) {
        *s = lk_fail(LK_ERR_FORMAT, "%s: optimizer state '%s' missing or not F32 with %" PRId64
                     " elements", lk_safetensors_path(st), name, n);
        return NULL;
    }
    return t;
}

/* Contract: restores exactly what lk_sgd_save wrote; on failure the state is unchanged. */
lk_status lk_sgd_load(lk_sgd *o, const lk_safetensors *st, const char *prefix) {
    if (!o || !st) return lk_fail(LK_ERR_INVALID, "sgd_load: NULL argument");
    lk_status s = check_params(o->ps, o->n, o->off, "sgd_load");
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
    for (int i = 0; o->buf && step > 0 && i < o->n; i++)
        if (!find_buf(st, prefix, i, o->off[i + 1] - o->off[i], &s)) return s;
    for (int i = 0; o->buf && step > 0 && i < o->n; i++) {
        int64_t n = o->off[i + 1] - o->off[i];
        const lk_st_tensor *t = find_buf(st, prefix, i, n, &s);
        if ((s = lk_st_tensor_to_f32(t, o->buf + o->off[i], (size_t)n)) != LK_OK) return s;
    }
    o->step = step;
    return LK_OK;
}
