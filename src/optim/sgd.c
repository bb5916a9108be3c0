/* sgd.c: stochastic gradient descent with momentum, dampening, Nesterov momentum (Sutskever et al.
 * 2013) and L2 weight decay, over an lk_paramset, with torch.optim.SGD (1.13) semantics. */
#include "optim/optim_state.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>


struct lk_sgd {
    lk_paramset *ps;   /* borrowed */
    lk_sgd_config cfg;
    int n;
    int64_t *off;      /* (n+1) offsets of each parameter's momentum buffer */
    float *buf;        /* (off[n]) momentum buffers; NULL when momentum == 0 */
    int64_t step;      /* updates done (the buffers are set from the gradient on the first) */
};

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
    if (lk__optim_require_grads(ps, "sgd_new") != LK_OK) return NULL;
    lk_sgd *o = calloc(1, sizeof *o);
    int64_t *off = lk__optim_offsets(ps, n);
    if (!o || !off) goto nomem;
    o->ps = ps;
    o->cfg = cfg;
    o->n = n;
    o->off = off;
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
    lk_status s = lk__optim_check(o->ps, o->n, o->off, true, "sgd_step");
    if (s != LK_OK) return s;
    if (lr < 0.0f) lr = o->cfg.lr;
    if (isnan(lr)) return lk_fail(LK_ERR_INVALID, "sgd_step: learning rate is NaN");
    const int64_t total = o->off[o->n];
    const bool first = o->step == 0;
    const float nlr = -lr;
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
            sgd_range(lk__optim_param_slice(p) + r, p->grad + r, o->buf ? o->buf + a : NULL, b - a, &o->cfg,
                      nlr, first);
        }
    }
    o->step++;
    return LK_OK;
}

/* Contract: adds "<prefix>step" (I64 [1]) and, with momentum, "<prefix>momentum_buffer.<i>"
 * (F32, gradient-shaped) to w. */
lk_status lk_sgd_save(const lk_sgd *o, lk_st_writer *w, const char *prefix) {
    if (!o || !w) return lk_fail(LK_ERR_INVALID, "sgd_save: NULL argument");
    lk_status s = lk__optim_check(o->ps, o->n, o->off, true, "sgd_save");
    if (s == LK_OK) s = lk__optim_save_step(w, prefix, o->step);
    if (s == LK_OK && o->buf)
        s = lk__optim_save_bufs(w, prefix, "momentum_buffer", o->ps, o->n, o->off, o->buf);
    return s;
}

/* Contract: restores exactly what lk_sgd_save wrote; on failure the state is unchanged. */
lk_status lk_sgd_load(lk_sgd *o, const lk_safetensors *st, const char *prefix) {
    if (!o || !st) return lk_fail(LK_ERR_INVALID, "sgd_load: NULL argument");
    lk_status s = lk__optim_check(o->ps, o->n, o->off, true, "sgd_load");
    int64_t step = 0;
    if (s == LK_OK) s = lk__optim_load_step(st, prefix, &step);
    if (s == LK_OK && o->buf && step > 0) {
        s = lk__optim_load_bufs(st, prefix, "momentum_buffer", o->n, o->off, o->buf, true);
        if (s == LK_OK) s = lk__optim_load_bufs(st, prefix, "momentum_buffer", o->n, o->off, o->buf, false);
    }
    if (s == LK_OK) o->step = step;
    return s;
}
