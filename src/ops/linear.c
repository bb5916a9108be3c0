/* ops/linear.c: differentiable fully connected layer (x W^T + b, weights F32 or frozen F16/BF16)
 * and batched matrix product. Matmul reads F32 operands whose last two dims are a row-major or
 * transposed matrix (e.g. lk_transpose(k, -1, -2)) in place, without a copy. */
#include "autograd/autograd.h"
#include "kernels/kernels.h"
#include "likeness/ops.h"

#include <limits.h>

static bool fits_int(int64_t v) { return v >= 0 && v <= INT_MAX; }

/* ---------------- linear ---------------- */

/* iarg: 0 M, 1 K, 2 N, 3 weight dtype, 4 saved slot of x (+1; 0 none), 5 same for w */
static lk_status linear_backward(lk_ctx *ctx, lk_node *nd, const float *dout) {
    int M = (int)nd->iarg[0], K = (int)nd->iarg[1], N = (int)nd->iarg[2];
    lk_dtype wdt = (lk_dtype)nd->iarg[3];
    const float *x = nd->iarg[4] ? nd->saved[nd->iarg[4] - 1] : NULL;
    const void *w = nd->iarg[5] ? (const void *)nd->saved[nd->iarg[5] - 1] : NULL;
    float *dx = lk__grad(ctx, nd->in[0]);
    float *dw = lk__grad(ctx, nd->in[1]);
    float *db = nd->n_in > 2 ? lk__grad(ctx, nd->in[2]) : NULL;
    if (lk_ctx_status(ctx) != LK_OK) return lk_ctx_status(ctx);
    if ((dx && !w) || (dw && !x))
        return lk_fail(LK_ERR_STATE, "linear: an input gained requires_grad after the forward");
    return lk_linear_backward(dx, dw, db, dout, x, w, wdt, M, K, N);
}

/* x (..., K) @ w (N, K)^T + bias (N) -> (..., N). w may be F16/BF16 when it is frozen; bias may
 * be NULL. NULL on failure (sticky in ctx). */
lk_tensor *lk_linear(lk_ctx *ctx, lk_tensor *x, lk_tensor *w, lk_tensor *bias) {
    const char *op = "linear";
    if (!lk__check_inputs(ctx, op, 2, x, w)) return NULL;
    if (bias && !lk__check_inputs(ctx, op, 1, bias)) return NULL;
    char sx[160], sw[160];
    if (w->ndim != 2)
        return lk_ctx_fail(ctx, LK_ERR_INVALID, "linear: weight %s must be 2-D (out, in)",
                           lk_shape_str(w, sw, sizeof sw));
    if (w->dtype != LK_F32 && w->dtype != LK_F16 && w->dtype != LK_BF16)
        return lk_ctx_fail(ctx, LK_ERR_UNSUPPORTED, "linear: weight '%s' has dtype %s", w->name,
                           lk_dtype_name(w->dtype));
    int64_t N = w->shape[0], K = w->shape[1];
    if (x->ndim < 1 || x->shape[x->ndim - 1] != K)
        return lk_ctx_fail(ctx, LK_ERR_INVALID,
                           "linear: input %s does not end in %lld features (weight %s)",
                           lk_shape_str(x, sx, sizeof sx), (long long)K,
                           lk_shape_str(w, sw, sizeof sw));
    if (bias && (bias->ndim != 1 || bias->shape[0] != N))
        return lk_ctx_fail(ctx, LK_ERR_INVALID, "linear: bias %s, expected [%lld]",
                           lk_shape_str(bias, sx, sizeof sx), (long long)N);
    if (w->dtype != LK_F32 && lk__needs_grad(w))
        return lk_ctx_fail(ctx, LK_ERR_UNSUPPORTED,
                           "linear: weight '%s' is %s and requires grad; train an F32 copy",
                           w->name, lk_dtype_name(w->dtype));
    int64_t M = 1;
    for (int i = 0; i < x->ndim - 1; i++) M *= x->shape[i];
    if (!fits_int(M) || !fits_int(K) || !fits_int(N))
        return lk_ctx_fail(ctx, LK_ERR_UNSUPPORTED, "linear: input %s or weight %s too large",
                           lk_shape_str(x, sx, sizeof sx), lk_shape_str(w, sw, sizeof sw));
    if (!lk_is_contiguous(w) && !(w = lk_contiguous(ctx, w))) return NULL;
    if (bias && !(bias = lk_contiguous(ctx, bias))) return NULL;
    if (!(x = lk_contiguous(ctx, x))) return NULL;
    int64_t shape[LK_MAX_DIMS];
    for (int i = 0; i < x->ndim; i++) shape[i] = x->shape[i];
    shape[x->ndim - 1] = N;
    lk_tensor *y = lk__new_f32(ctx, x->ndim, shape);
    if (!y) return NULL;
    lk_status s = lk_linear_forward(y->data, x->data, w->data, w->dtype,
                                    bias ? bias->data : NULL, (int)M, (int)K, (int)N);
    if (s != LK_OK) return lk_ctx_fail(ctx, s, "%s", lk_last_error());
    lk_tensor *in[3] = {x, w, bias};
    lk_node *nd = lk__record(ctx, op, linear_backward, y, bias ? 3 : 2, in);
    if (!nd) return lk_ctx_status(ctx) == LK_OK ? y : NULL;
    nd->iarg[0] = M;
    nd->iarg[1] = K;
    nd->iarg[2] = N;
    nd->iarg[3] = w->dtype;
    if (lk__needs_grad(w) && !(nd->iarg[4] = lk__save(ctx, nd, x))) return NULL;
    if (lk__needs_grad(x) && !(nd->iarg[5] = lk__save(ctx, nd, w))) return NULL;
    return y;
}

/* ---------------- matmul ---------------- */

/* One operand as a batch of matrices: element (i, r, c) of op(X) is at
 * data[i*bs + (t ? c*ld + r : r*ld + c)]. */
typedef struct mm_opnd {
    bool t;
    int ld;
    int64_t bs;
} mm_opnd;

typedef struct mm_info {
    int batch, M, N, K;
    mm_opnd a, b;
    int slot_a, slot_b; /* saved slot + 1 (0 none) */
} mm_info;

/* Describe the last two dims (R, C) and the first nb dims of f32 t without copying; false if
 * its strides do not allow it. */
static bool mm_describe(const lk_tensor *t, int nb, mm_opnd *o) {
    if (t->dtype != LK_F32) return false;
    int nd = t->ndim;
    int64_t R = t->shape[nd - 2], C = t->shape[nd - 1];
    int64_t sr = t->stride[nd - 2], sc = t->stride[nd - 1];
    if (R == 0 || C == 0) return false;
    if ((sc == 1 || C == 1) && (R == 1 || sr >= C)) {
        o->t = false;
        o->ld = (int)(R == 1 ? C : sr);
        if (!fits_int(R == 1 ? C : sr)) return false;
    } else if ((sr == 1 || R == 1) && (C == 1 || sc >= R)) {
        o->t = true;
        if (!fits_int(C == 1 ? R : sc)) return false;
        o->ld = (int)(C == 1 ? R : sc);
    } else {
        return false;
    }
    /* the batch dims must flatten to one uniform stride */
    int64_t bs = 0, expect = 0;
    for (int i = nb - 1; i >= 0; i--) {
        if (t->shape[i] == 1) continue;
        if (bs == 0) {
            bs = t->stride[i];
            expect = bs * t->shape[i];
        } else {
            if (t->stride[i] != expect) return false;
            expect *= t->shape[i];
        }
    }
    o->bs = bs;
    return bs >= 0;
}

static void mm_contig(const lk_tensor *t, mm_opnd *o) {
    int64_t R = t->shape[t->ndim - 2], C = t->shape[t->ndim - 1];
    o->t = false;
    o->ld = (int)(C > 0 ? C : 1);
    o->bs = R * C;
}

static lk_status matmul_backward(lk_ctx *ctx, lk_node *nd, const float *dout) {
    const mm_info *m = nd->extra;
    float *da = lk__grad(ctx, nd->in[0]);
    float *db = lk__grad(ctx, nd->in[1]);
    if (lk_ctx_status(ctx) != LK_OK) return lk_ctx_status(ctx);
    const float *A = m->slot_a ? nd->saved[m->slot_a - 1] : NULL;
    const float *B = m->slot_b ? nd->saved[m->slot_b - 1] : NULL;
    if ((da && !B) || (db && !A))
        return lk_fail(LK_ERR_STATE, "matmul: an input gained requires_grad after the forward");
    int64_t mn = (int64_t)m->M * m->N;
    if (da) { /* dA_i (M,K) += dC_i (M,N) @ op(B_i)^T */
        if (m->b.bs == 0)
            lk_sgemm(false, !m->b.t, m->batch * m->M, m->K, m->N, 1.0f, dout, m->N, B, m->b.ld,
                     1.0f, da, m->K);
        else
            lk_sgemm_batched(m->batch, false, !m->b.t, m->M, m->K, m->N, 1.0f, dout, m->N, mn, B,
                             m->b.ld, m->b.bs, 1.0f, da, m->K, (int64_t)m->M * m->K);
    }
    if (db) { /* dB_i (K,N) += op(A_i)^T (K,M) @ dC_i (M,N) */
        if (m->b.bs != 0)
            lk_sgemm_batched(m->batch, !m->a.t, false, m->K, m->N, m->M, 1.0f, A, m->a.ld,
                             m->a.bs, dout, m->N, mn, 1.0f, db, m->N, (int64_t)m->K * m->N);
        else if (m->batch == 1 || (!m->a.t && m->a.bs == (int64_t)m->M * m->a.ld))
            lk_sgemm(true, false, m->K, m->N, m->batch * m->M, 1.0f, A, m->a.ld, dout, m->N,
                     1.0f, db, m->N);
        else /* shared b: accumulate every batch's product into the one gradient, in order */
            lk_sgemm_batched(m->batch, !m->a.t, false, m->K, m->N, m->M, 1.0f, A, m->a.ld,
                             m->a.bs, dout, m->N, mn, 1.0f, db, m->N, 0);
    }
    return LK_OK;
}

/* a (..., M, K) @ b (..., K, N) -> (..., M, N); b's batch dims equal a's, or b is 2-D (shared).
 * NULL on failure (sticky in ctx). */
lk_tensor *lk_matmul(lk_ctx *ctx, lk_tensor *a, lk_tensor *b) {
    const char *op = "matmul";
    if (!lk__check_inputs(ctx, op, 2, a, b)) return NULL;
    char sa[160], sb[160];
    lk_shape_str(a, sa, sizeof sa);
    lk_shape_str(b, sb, sizeof sb);
    if (a->ndim < 2 || b->ndim < 2)
        return lk_ctx_fail(ctx, LK_ERR_INVALID, "matmul: %s @ %s needs matrices (>= 2 dims)", sa,
                           sb);
    if (b->ndim != 2 && b->ndim != a->ndim)
        return lk_ctx_fail(ctx, LK_ERR_INVALID,
                           "matmul: %s @ %s: b must be 2-D or have a's batch dims", sa, sb);
    int nb = a->ndim - 2;
    int64_t batch = 1;
    for (int i = 0; i < nb; i++) {
        if (b->ndim != 2 && a->shape[i] != b->shape[i])
            return lk_ctx_fail(ctx, LK_ERR_INVALID, "matmul: %s @ %s: batch dim %d differs", sa,
                               sb, i);
        batch *= a->shape[i];
    }
    int64_t M = a->shape[a->ndim - 2], K = a->shape[a->ndim - 1], N = b->shape[b->ndim - 1];
    if (b->shape[b->ndim - 2] != K)
        return lk_ctx_fail(ctx, LK_ERR_INVALID, "matmul: %s @ %s: inner dims %lld and %lld differ",
                           sa, sb, (long long)K, (long long)b->shape[b->ndim - 2]);
    if (!fits_int(batch) || !fits_int(M) || !fits_int(N) || !fits_int(K) ||
        !fits_int(batch * M) || !fits_int(M * K) || !fits_int(K * N))
        return lk_ctx_fail(ctx, LK_ERR_UNSUPPORTED, "matmul: %s @ %s too large", sa, sb);
    mm_info info = {.batch = (int)batch, .M = (int)M, .N = (int)N, .K = (int)K};
    if (!mm_describe(a, nb, &info.a)) {
        if (!(a = lk_contiguous(ctx, a))) return NULL;
        mm_contig(a, &info.a);
    }
    if (!mm_describe(b, b->ndim - 2, &info.b)) {
        if (!(b = lk_contiguous(ctx, b))) return NULL;
        mm_contig(b, &info.b);
    }
    if (b->ndim == 2) info.b.bs = 0;
    int64_t shape[LK_MAX_DIMS];
    for (int i = 0; i < nb; i++) shape[i] = a->shape[i];
    shape[nb] = M;
    shape[nb + 1] = N;
    lk_tensor *y = lk__new_f32(ctx, nb + 2, shape);
    if (!y) return NULL;
    const float *A = a->data, *B = b->data;
    if (info.b.bs == 0 && (batch == 1 || (!info.a.t && info.a.bs == M * info.a.ld)))
        lk_sgemm(info.a.t, info.b.t, (int)(batch * M), (int)N, (int)K, 1.0f, A, info.a.ld, B,
                 info.b.ld, 0.0f, y->data, (int)N);
    else
        lk_sgemm_batched((int)batch, info.a.t, info.b.t, (int)M, (int)N, (int)K, 1.0f, A,
                         info.a.ld, info.a.bs, B, info.b.ld, info.b.bs, 0.0f, y->data, (int)N,
                         M * N);
    lk_tensor *in[2] = {a, b};
    lk_node *nd = lk__record(ctx, op, matmul_backward, y, 2, in);
    if (!nd) return lk_ctx_status(ctx) == LK_OK ? y : NULL;
    mm_info *m = lk__ctx_alloc(ctx, sizeof *m);
    if (!m) return NULL;
    *m = info;
    nd->extra = m;
    if (lk__needs_grad(b) && !(m->slot_a = lk__save(ctx, nd, a))) return NULL;
    if (lk__needs_grad(a) && !(m->slot_b = lk__save(ctx, nd, b))) return NULL;
    return y;
}
