/* optim_state.c: helpers shared by the optimizers and the EMA (see optim_state.h). */
#include "optim/optim_state.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

float *lk__optim_param_slice(const lk_tensor *p) {
    int64_t off = p->ndim == 2 ? p->grad_row_lo * p->shape[1] : 0;
    return (float *)p->data + off;
}

void lk__optim_thread_range(int64_t total, int64_t *lo, int64_t *hi) {
    int t = 0, nt = 1;
#ifdef _OPENMP
    t = omp_get_thread_num();
    nt = omp_get_num_threads();
#endif
    int64_t per = ((total + nt - 1) / nt + 15) & ~(int64_t)15;
    *lo = (int64_t)t * per < total ? (int64_t)t * per : total;
    *hi = *lo + per < total ? *lo + per : total;
}

int64_t *lk__optim_offsets(const lk_paramset *ps, int n) {
    int64_t *off = calloc((size_t)n + 1, sizeof *off);
    if (!off) return NULL;
    for (int i = 0; i < n; i++) off[i + 1] = off[i] + lk_grad_numel(lk_paramset_get(ps, i));
    return off;
}

lk_status lk__optim_check(const lk_paramset *ps, int n, const int64_t *off, bool need_grad,
                          const char *who) {
    if (lk_paramset_count(ps) != n)
        return lk_fail(LK_ERR_STATE, "%s: paramset has %d parameters, state was made for %d", who,
                       lk_paramset_count(ps), n);
    for (int i = 0; i < n; i++) {
        const lk_tensor *p = lk_paramset_get(ps, i);
        if ((need_grad && !p->grad) || !p->data || lk_grad_numel(p) != off[i + 1] - off[i])
            return lk_fail(LK_ERR_STATE, "%s: parameter %d ('%s') changed since creation", who, i,
                           p->name);
    }
    return LK_OK;
}

lk_status lk__optim_require_grads(const lk_paramset *ps, const char *who) {
    for (int i = 0; i < lk_paramset_count(ps); i++)
        if (!lk_paramset_get(ps, i)->grad)
            return lk_fail(LK_ERR_STATE, "%s: paramset not finalized ('%s' has no gradient)", who,
                           lk_paramset_get(ps, i)->name);
    return LK_OK;
}

static lk_status key(char *buf, size_t len, const char *prefix, const char *what, int i) {
    int k = i < 0 ? snprintf(buf, len, "%s%s", prefix ? prefix : "", what)
                  : snprintf(buf, len, "%s%s.%d", prefix ? prefix : "", what, i);
    if (k < 0 || (size_t)k >= len) return lk_fail(LK_ERR_INVALID, "optimizer state: prefix too long");
    return LK_OK;
}

lk_status lk__optim_save_step(lk_st_writer *w, const char *prefix, int64_t step) {
    char name[512];
    lk_status s = key(name, sizeof name, prefix, "step", -1);
    return s != LK_OK ? s : lk_st_writer_add(w, name, LK_I64, 1, (const int64_t[]){1}, &step);
}

lk_status lk__optim_save_bufs(lk_st_writer *w, const char *prefix, const char *what,
                              const lk_paramset *ps, int n, const int64_t *off, const float *buf) {
    lk_status s = LK_OK;
    for (int i = 0; i < n && s == LK_OK; i++) {
        const lk_tensor *p = lk_paramset_get(ps, i);
        int64_t shape[LK_MAX_DIMS];
        for (int d = 0; d < p->ndim; d++) shape[d] = p->shape[d];
        if (p->ndim == 2) shape[0] = p->grad_row_hi - p->grad_row_lo;
        char name[512];
        s = key(name, sizeof name, prefix, what, i);
        if (s == LK_OK) s = lk_st_writer_add(w, name, LK_F32, p->ndim, shape, buf + off[i]);
    }
    return s;
}

lk_status lk__optim_load_step(const lk_safetensors *st, const char *prefix, int64_t *step) {
    char name[512];
    lk_status s = key(name, sizeof name, prefix, "step", -1);
    if (s != LK_OK) return s;
    const lk_st_tensor *ts = lk_safetensors_find(st, name);
    if (!ts || ts->dtype != LK_I64 || lk_st_tensor_numel(ts) != 1)
        return lk_fail(LK_ERR_FORMAT, "%s: optimizer state '%s' missing or not one I64",
                       lk_safetensors_path(st), name);
    memcpy(step, ts->data, sizeof *step);
    if (*step < 0)
        return lk_fail(LK_ERR_FORMAT, "%s: negative step %" PRId64, lk_safetensors_path(st), *step);
    return LK_OK;
}

lk_status lk__optim_load_bufs(const lk_safetensors *st, const char *prefix, const char *what,
                              int n, const int64_t *off, float *buf, bool check) {
    for (int i = 0; i < n; i++) {
        char name[512];
        int64_t cnt = off[i + 1] - off[i];
        lk_status s = key(name, sizeof name, prefix, what, i);
        if (s != LK_OK) return s;
        const lk_st_tensor *t = lk_safetensors_find(st, name);
        if (!t)
            return lk_fail(LK_ERR_FORMAT, "%s: optimizer state '%s' missing", lk_safetensors_path(st), name);
        if (t->dtype != LK_F32 || lk_st_tensor_numel(t) != cnt)
            return lk_fail(LK_ERR_FORMAT, "%s: optimizer state '%s' is %s with %" PRId64
                           " elements, expected F32 with %" PRId64, lk_safetensors_path(st), name,
                           lk_dtype_name(t->dtype), lk_st_tensor_numel(t), cnt);
        if (!check && (s = lk_st_tensor_to_f32(t, buf + off[i], (size_t)cnt)) != LK_OK) return s;
    }
    return LK_OK;
}
