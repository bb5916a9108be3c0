/* paramset.c: the trainable parameters of a run, with every gradient in one block (llm.c
 * style), so optimizers are flat loops and frozen weights never get gradient memory. */
#include "autograd/ctx_internal.h"

#include <stdlib.h>
#include <string.h>

struct lk_paramset {
    lk_tensor **p;
    int n, cap;
    float *block;
    int64_t total;
    bool finalized;
};

lk_paramset *lk_paramset_new(void) {
    lk_paramset *ps = calloc(1, sizeof *ps);
    if (!ps) lk_fail(LK_ERR_NOMEM, "out of memory");
    return ps;
}

void lk_paramset_free(lk_paramset *ps) {
    if (!ps) return;
    for (int i = 0; i < ps->n; i++)
        if (ps->p[i]->grad && !ps->p[i]->grad_owned_) ps->p[i]->grad = NULL;
    lk_aligned_free(ps->block);
    free(ps->p);
    free(ps);
}

lk_status lk_paramset_add(lk_paramset *ps, lk_tensor *p) {
    if (!ps || !p) return lk_fail(LK_ERR_INVALID, "paramset_add: NULL argument");
    if (ps->finalized) return lk_fail(LK_ERR_STATE, "paramset_add: set already finalized");
    if (!p->is_leaf || p->dtype != LK_F32 || !lk_is_contiguous(p))
        return lk_fail(LK_ERR_INVALID, "paramset_add: '%s' must be a contiguous F32 leaf", p->name);
    for (int i = 0; i < ps->n; i++)
        if (ps->p[i] == p) return lk_fail(LK_ERR_INVALID, "paramset_add: '%s' added twice", p->name);
    if (ps->n == ps->cap) {
        int nc = ps->cap ? 2 * ps->cap : 16;
        lk_tensor **np = realloc(ps->p, sizeof *np * (size_t)nc);
        if (!np) return lk_fail(LK_ERR_NOMEM, "out of memory");
        ps->p = np;
        ps->cap = nc;
    }
    p->requires_grad = true;
    ps->p[ps->n++] = p;
    return LK_OK;
}

lk_status lk_paramset_finalize(lk_paramset *ps) {
    if (!ps) return lk_fail(LK_ERR_INVALID, "paramset_finalize: NULL");
    if (ps->finalized) return LK_OK;
    size_t total = 0;
    for (int i = 0; i < ps->n; i++) {
        /* round each slice to 16 floats so every gradient starts 64-byte aligned */
        size_t n = ((size_t)lk_grad_numel(ps->p[i]) + 15u) & ~(size_t)15u;
        if (lk_add_overflow(total, n, &total)) return lk_fail(LK_ERR_NOMEM, "paramset too large");
    }
    size_t nb;
    if (lk_mul_overflow(total, sizeof(float), &nb)) return lk_fail(LK_ERR_NOMEM, "paramset too large");
    ps->block = lk_aligned_calloc(nb);
    if (!ps->block) return LK_ERR_NOMEM;
    size_t off = 0;
    for (int i = 0; i < ps->n; i++) {
        lk_tensor *p = ps->p[i];
        if (p->grad && p->grad_owned_) lk_aligned_free(p->grad);
        p->grad = ps->block + off;
        p->grad_owned_ = false;
        off += ((size_t)lk_grad_numel(p) + 15u) & ~(size_t)15u;
    }
    ps->total = (int64_t)total;
    ps->finalized = true;
    return LK_OK;
}

int lk_paramset_count(const lk_paramset *ps) { return ps ? ps->n : 0; }
lk_tensor *lk_paramset_get(const lk_paramset *ps, int i) {
    return (ps && i >= 0 && i < ps->n) ? ps->p[i] : NULL;
}

int64_t lk_paramset_numel(const lk_paramset *ps) {
    int64_t n = 0;
    for (int i = 0; ps && i < ps->n; i++) n += lk_grad_numel(ps->p[i]);
    return n;
}

void lk_paramset_zero_grad(lk_paramset *ps) {
    if (ps && ps->block) memset(ps->block, 0, sizeof(float) * (size_t)ps->total);
}
