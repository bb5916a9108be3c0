/* ops/conv2d.c: differentiable 2-D convolution (NCHW, any kernel size, one stride and zero
 * padding for both axes, optional bias; weights F32, or F16/BF16 when frozen). The kernels are in
 * kernels/cpu/conv2d*.c. */
#include "autograd/autograd.h"
#include "kernels/kernels.h"
#include "likeness/ops.h"

#include <limits.h>

typedef struct conv_info {
    lk_conv2d_desc d;
    lk_dtype wdt;
    int slot_x, slot_w; /* saved slot + 1 (0 none) */
} conv_info;

static lk_status conv2d_backward(lk_ctx *ctx, lk_node *nd, const float *dout) {
    const conv_info *ci = nd->extra;
    float *dx = lk__grad(ctx, nd->in[0]);
    float *dw = lk__grad(ctx, nd->in[1]);
    float *db = nd->n_in > 2 ? lk__grad(ctx, nd->in[2]) : NULL;
    if (lk_ctx_status(ctx) != LK_OK) return lk_ctx_status(ctx);
    const float *x = ci->slot_x ? nd->saved[ci->slot_x - 1] : NULL;
    const void *w = ci->slot_w ? (const void *)nd->saved[ci->slot_w - 1] : NULL;
    if ((dx && !w) || (dw && !x))
        return lk_fail(LK_ERR_STATE, "conv2d: an input gained requires_grad after the forward");
    return lk_conv2d_backward(dx, dw, db, dout, x, w, ci->wdt, &ci->d);
}

/* x (B, Cin, H, W) conv w (Cout, Cin, KH, KW) + bias (Cout, or NULL) with the given stride and
 * zero padding on both axes -> (B, Cout, OH, OW), OH = (H + 2*padding - KH)/stride + 1. x may be
 * strided or half (a contiguous f32 copy is made); w F32, or F16/BF16 if it needs no gradient.
 * Records a node saving x (when w needs grad) and w (when x needs grad). NULL on failure (sticky
 * in ctx, message names the shapes). */
lk_tensor *lk_conv2d(lk_ctx *ctx, lk_tensor *x, lk_tensor *w, lk_tensor *bias, int stride,
                     int padding) {
    const char *op = "conv2d";
    if (!lk__check_inputs(ctx, op, 2, x, w)) return NULL;
    if (bias && !lk__check_inputs(ctx, op, 1, bias)) return NULL;
    char sx[160], sw[160], sb[160];
    lk_shape_str(x, sx, sizeof sx);
    lk_shape_str(w, sw, sizeof sw);
    if (x->ndim != 4)
        return lk_ctx_fail(ctx, LK_ERR_INVALID, "conv2d: input %s must be 4-D (B, C, H, W)", sx);
    if (w->ndim != 4)
        return lk_ctx_fail(ctx, LK_ERR_INVALID,
                           "conv2d: weight %s must be 4-D (Cout, Cin, KH, KW)", sw);
    if (w->dtype != LK_F32 && w->dtype != LK_F16 && w->dtype != LK_BF16)
        return lk_ctx_fail(ctx, LK_ERR_UNSUPPORTED, "conv2d: weight '%s' %s has dtype %s",
                           w->name, sw, lk_dtype_name(w->dtype));
    if (x->dtype != LK_F32 && x->dtype != LK_F16 && x->dtype != LK_BF16)
        return lk_ctx_fail(ctx, LK_ERR_UNSUPPORTED, "conv2d: input %s has dtype %s", sx,
                           lk_dtype_name(x->dtype));
    if (w->shape[1] != x->shape[1])
        return lk_ctx_fail(ctx, LK_ERR_INVALID,
                           "conv2d: weight %s expects %lld input channels, x has %s", sw,
                           (long long)w->shape[1], sx);
    if (bias && (bias->ndim != 1 || bias->shape[0] != w->shape[0]))
        return lk_ctx_fail(ctx, LK_ERR_INVALID, "conv2d: bias %s, expected [%lld] for weight %s",
                           lk_shape_str(bias, sb, sizeof sb), (long long)w->shape[0], sw);
    if (stride < 1 || padding < 0)
        return lk_ctx_fail(ctx, LK_ERR_INVALID,
                           "conv2d: stride %d must be >= 1 and padding %d >= 0", stride, padding);
    for (int i = 0; i < 4; i++)
        if (x->shape[i] <= 0 || x->shape[i] > INT_MAX || w->shape[i] <= 0 ||
            w->shape[i] > INT_MAX)
            return lk_ctx_fail(ctx, LK_ERR_INVALID, "conv2d: empty or too large input %s or "
                               "weight %s", sx, sw);
    if (w->dtype != LK_F32 && lk__needs_grad(w))
        return lk_ctx_fail(ctx, LK_ERR_UNSUPPORTED,
                           "conv2d: weight '%s' is %s and requires grad; train an F32 copy",
                           w->name, lk_dtype_name(w->dtype));
    lk_conv2d_desc d = {
        .B = (int)x->shape[0], .Cin = (int)x->shape[1], .H = (int)x->shape[2],
        .W = (int)x->shape[3], .Cout = (int)w->shape[0], .KH = (int)w->shape[2],
        .KW = (int)w->shape[3], .stride = stride, .pad = padding,
    };
    if (x->shape[2] + 2 * (int64_t)padding < w->shape[2] ||
        x->shape[3] + 2 * (int64_t)padding < w->shape[3])
        return lk_ctx_fail(ctx, LK_ERR_INVALID,
                           "conv2d: kernel %lldx%lld does not fit input %s with padding %d",
                           (long long)w->shape[2], (long long)w->shape[3], sx, padding);
    lk_status s = lk_conv2d_desc_init(&d);
    if (s != LK_OK) return lk_ctx_fail(ctx, s, "conv2d: input %s, weight %s: %s", sx, sw,
                                       lk_last_error());
    if (!lk_is_contiguous(w) && !(w = lk_contiguous(ctx, w))) return NULL;
    if (bias && !(bias = lk_contiguous(ctx, bias))) return NULL;
    if (!(x = lk_contiguous(ctx, x))) return NULL;
    lk_tensor *y = lk__new_f32(ctx, LK_DIMS(d.B, d.Cout, d.OH, d.OW));
    if (!y) return NULL;
    s = lk_conv2d_forward(y->data, x->data, w->data, w->dtype, bias ? bias->data : NULL, &d);
    if (s != LK_OK) return lk_ctx_fail(ctx, s, "%s", lk_last_error());
    lk_tensor *in[3] = {x, w, bias};
    lk_node *nd = lk__record(ctx, op, conv2d_backward, y, bias ? 3 : 2, in);
    if (!nd) return lk_ctx_status(ctx) == LK_OK ? y : NULL;
    conv_info *ci = lk__ctx_alloc(ctx, sizeof *ci);
    if (!ci) return NULL;
    ci->d = d;
    ci->wdt = w->dtype;
    ci->slot_x = ci->slot_w = 0;
    nd->extra = ci;
    if (lk__needs_grad(w) && !(ci->slot_x = lk__save(ctx, nd, x))) return NULL;
    if (lk__needs_grad(x) && !(ci->slot_w = lk__save(ctx, nd, w))) return NULL;
    return y;
}
