/* ops/embedding.c: token embedding lookup with a sparse gradient restricted to a table's
 * trainable rows (textual inversion, Gal et al. 2022), and the sinusoidal timestep embedding of
 * diffusers' get_timestep_embedding (DDPM, Ho et al. 2020). */
#include "autograd/autograd.h"
#include "kernels/kernels.h"
#include "likeness/ops.h"

#include <math.h>
#include <string.h>

/* Read ids (I64 or I32, any strides) into a dense int64 array, validating the range. */
static bool gather_ids(lk_ctx *ctx, const lk_tensor *ids, int64_t V, int64_t *out) {
    const int64_t n = lk_numel(ids);
    int64_t idx[LK_MAX_DIMS] = {0};
    int64_t off = 0;
    for (int64_t i = 0; i < n; i++) {
        int64_t v;
        if (ids->dtype == LK_I64) {
            memcpy(&v, (const char *)ids->data + 8 * off, 8);
        } else {
            int32_t w;
            memcpy(&w, (const char *)ids->data + 4 * off, 4);
            v = w;
        }
        if (v < 0 || v >= V) {
            lk_ctx_fail(ctx, LK_ERR_INVALID,
                        "embedding: id %lld (position %lld) is out of range for a vocabulary of "
                        "%lld rows",
                        (long long)v, (long long)i, (long long)V);
            return false;
        }
        out[i] = v;
        for (int d = ids->ndim - 1; d >= 0; d--) {
            off += ids->stride[d];
            if (++idx[d] < ids->shape[d]) break;
            off -= idx[d] * ids->stride[d];
            idx[d] = 0;
        }
    }
    return true;
}

/* extra = the int64 ids (ctx-owned); iarg[0] = number of ids */
static lk_status embedding_backward(lk_ctx *ctx, lk_node *nd, const float *dout) {
    lk_tensor *table = nd->in[0];
    int64_t lo = 0, hi = 0;
    float *dt = lk__grad_rows(ctx, table, &lo, &hi);
    if (!dt) return lk_ctx_status(ctx);
    lk_embedding_backward(dt, dout, nd->extra, (size_t)nd->iarg[0], (int)table->shape[1], lo, hi);
    return LK_OK;
}

lk_tensor *lk_embedding(lk_ctx *ctx, lk_tensor *table, lk_tensor *ids) {
    if (!lk__check_inputs(ctx, "embedding", 2, table, ids)) return NULL;
    if (table->ndim != 2 || (table->dtype != LK_F32 && table->dtype != LK_F16 &&
                             table->dtype != LK_BF16)) {
        char s[160];
        return lk_ctx_fail(ctx, LK_ERR_INVALID,
                           "embedding: table must be a 2-D F32/F16/BF16 tensor (got %s %s)",
                           lk_dtype_name(table->dtype), lk_shape_str(table, s, sizeof s));
    }
    if (ids->dtype != LK_I64 && ids->dtype != LK_I32)
        return lk_ctx_fail(ctx, LK_ERR_INVALID, "embedding: ids must be I64 or I32 (got %s)",
                           lk_dtype_name(ids->dtype));
    if (ids->ndim + 1 > LK_MAX_DIMS)
        return lk_ctx_fail(ctx, LK_ERR_INVALID, "embedding: ids have %d dims; at most %d",
                           ids->ndim, LK_MAX_DIMS - 1);
    const int64_t V = table->shape[0], D = table->shape[1];
    if (D > INT32_MAX)
        return lk_ctx_fail(ctx, LK_ERR_UNSUPPORTED, "embedding: row width %lld too large",
                           (long long)D);
    if (!lk_is_contiguous(table)) {
        table = lk_contiguous(ctx, table);
        if (!table) return NULL;
    }
    const int64_t n = lk_numel(ids);
    int64_t *id = lk__ctx_alloc(ctx, sizeof(int64_t) * (size_t)(n > 0 ? n : 1));
    if (!id) return lk_ctx_status(ctx) != LK_OK ? NULL : lk_ctx_fail(ctx, LK_ERR_NOMEM, "embedding: out of memory");
    if (!gather_ids(ctx, ids, V, id)) return NULL;
    int64_t shape[LK_MAX_DIMS];
    memcpy(shape, ids->shape, sizeof(int64_t) * (size_t)ids->ndim);
    shape[ids->ndim] = D;
    lk_tensor *y = lk__new_f32(ctx, ids->ndim + 1, shape);
    if (!y) return NULL;
    lk_embedding_forward(y->data, id, (size_t)n, table->data, table->dtype, (int)D);
    lk_node *nd = lk__record(ctx, "embedding", embedding_backward, y, 1, &table);
    if (!nd) return lk_ctx_status(ctx) == LK_OK ? y : NULL;
    nd->extra = id;
    nd->iarg[0] = n;
    return y;
}

lk_tensor *lk_timestep_embedding(lk_ctx *ctx, lk_tensor *t, int dim, bool flip_sin_to_cos,
                                 float downscale_freq_shift, float max_period) {
    if (!lk__check_inputs(ctx, "timestep_embedding", 1, t)) return NULL;
    if (t->ndim > 1 || dim < 1)
        return lk_ctx_fail(ctx, LK_ERR_INVALID,
                           "timestep_embedding: needs 1-D timesteps and dim >= 1 (got %d-D, dim %d)",
                           t->ndim, dim);
    const int half = dim / 2;
    if (!(max_period > 0.0f) || (half > 0 && !((float)half - downscale_freq_shift != 0.0f)))
        return lk_ctx_fail(ctx, LK_ERR_INVALID,
                           "timestep_embedding: max_period %g must be > 0 and dim/2 - shift "
                           "(%d - %g) nonzero",
                           (double)max_period, half, (double)downscale_freq_shift);
    const int64_t B = lk_numel(t);
    if (B > INT32_MAX)
        return lk_ctx_fail(ctx, LK_ERR_INVALID, "timestep_embedding: %lld timesteps", (long long)B);
    float *tv = lk__ctx_alloc(ctx, sizeof(float) * (size_t)(B > 0 ? B : 1));
    if (!tv) return lk_ctx_status(ctx) != LK_OK ? NULL : lk_ctx_fail(ctx, LK_ERR_NOMEM, "timestep_embedding: out of memory");
    for (int64_t i = 0; i < B; i++) tv[i] = lk_get_f32(t, i); /* any dtype, any strides */
    const int64_t shape[2] = {B, dim};
    lk_tensor *y = lk__new_f32(ctx, 2, shape);
    if (!y) return NULL;
    lk_timestep_embedding_forward(y->data, tv, (int)B, dim, flip_sin_to_cos, downscale_freq_shift,
                                  max_period);
    return y;
}
