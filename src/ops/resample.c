/* ops/resample.c: differentiable nearest-neighbour 2x upsampling and 2-D average pooling
 * (no padding) on (B, C, H, W); kernels in kernels/cpu/resample.c. */
#include "autograd/autograd.h"
#include "kernels/kernels.h"
#include "likeness/ops.h"

#include <limits.h>

/* x must be a 4-D image batch whose planes fit the kernels' int dims */
static bool check_image(lk_ctx *ctx, const char *op, const lk_tensor *x, int64_t scale) {
    char sb[160];
    if (x->ndim != 4) {
        lk_ctx_fail(ctx, LK_ERR_INVALID, "%s: input %s must be (B, C, H, W)", op,
                    lk_shape_str(x, sb, sizeof sb));
        return false;
    }
    int64_t bc = x->shape[0] * x->shape[1];
    if (bc > INT_MAX || x->shape[2] * scale > INT_MAX || x->shape[3] * scale > INT_MAX) {
        lk_ctx_fail(ctx, LK_ERR_UNSUPPORTED, "%s: input %s too large", op,
                    lk_shape_str(x, sb, sizeof sb));
        return false;
    }
    return true;
}

/* iarg: 0 B*C, 1 H, 2 W (of the input) */
static lk_status upsample_backward(lk_ctx *ctx, lk_node *nd, const float *dout) {
    float *dx = lk__grad(ctx, nd->in[0]);
    if (!dx) return lk_ctx_status(ctx);
    lk_upsample_nearest2x_backward(dx, dout, (int)nd->iarg[0], (int)nd->iarg[1], (int)nd->iarg[2]);
    return LK_OK;
}

/* x (B, C, H, W) -> (B, C, 2H, 2W), each pixel repeated in a 2x2 block. */
lk_tensor *lk_upsample_nearest2x(lk_ctx *ctx, lk_tensor *x) {
    const char *op = "upsample_nearest2x";
    if (!lk__check_inputs(ctx, op, 1, x) || !check_image(ctx, op, x, 2)) return NULL;
    if (!(x = lk_contiguous(ctx, x))) return NULL;
    int64_t B = x->shape[0], C = x->shape[1], H = x->shape[2], W = x->shape[3];
    lk_tensor *y = lk__new_f32(ctx, LK_DIMS(B, C, 2 * H, 2 * W));
    if (!y) return NULL;
    lk_upsample_nearest2x_forward(y->data, x->data, (int)(B * C), (int)H, (int)W);
    lk_node *nd = lk__record(ctx, op, upsample_backward, y, 1, &x);
    if (!nd) return lk_ctx_status(ctx) == LK_OK ? y : NULL;
    nd->iarg[0] = B * C;
    nd->iarg[1] = H;
    nd->iarg[2] = W;
    return y;
}

/* iarg: 0 B*C, 1 H, 2 W, 3 kernel, 4 stride */
static lk_status avgpool_backward(lk_ctx *ctx, lk_node *nd, const float *dout) {
    float *dx = lk__grad(ctx, nd->in[0]);
    if (!dx) return lk_ctx_status(ctx);
    lk_avgpool2d_backward(dx, dout, (int)nd->iarg[0], (int)nd->iarg[1], (int)nd->iarg[2],
                          (int)nd->iarg[3], (int)nd->iarg[4]);
    return LK_OK;
}

/* x (B, C, H, W) -> (B, C, (H-k)/s+1, (W-k)/s+1), the mean of each k x k window; no padding,
 * so k <= H and k <= W. */
lk_tensor *lk_avgpool2d(lk_ctx *ctx, lk_tensor *x, int kernel, int stride) {
    const char *op = "avgpool2d";
    if (!lk__check_inputs(ctx, op, 1, x) || !check_image(ctx, op, x, 1)) return NULL;
    int64_t B = x->shape[0], C = x->shape[1], H = x->shape[2], W = x->shape[3];
    char sb[160];
    if (kernel < 1 || stride < 1 || kernel > 46340)
        return lk_ctx_fail(ctx, LK_ERR_INVALID, "%s: kernel %d and stride %d must be >= 1 (kernel <= 46340)", op,
                           kernel, stride);
    if (H < kernel || W < kernel)
        return lk_ctx_fail(ctx, LK_ERR_INVALID, "%s: input %s is smaller than the %dx%d window",
                           op, lk_shape_str(x, sb, sizeof sb), kernel, kernel);
    if (!(x = lk_contiguous(ctx, x))) return NULL;
    int64_t OH = (H - kernel) / stride + 1, OW = (W - kernel) / stride + 1;
    lk_tensor *y = lk__new_f32(ctx, LK_DIMS(B, C, OH, OW));
    if (!y) return NULL;
    lk_avgpool2d_forward(y->data, x->data, (int)(B * C), (int)H, (int)W, kernel, stride);
    lk_node *nd = lk__record(ctx, op, avgpool_backward, y, 1, &x);
    if (!nd) return lk_ctx_status(ctx) == LK_OK ? y : NULL;
    nd->iarg[0] = B * C;
    nd->iarg[1] = H;
    nd->iarg[2] = W;
    nd->iarg[3] = kernel;
    nd->iarg[4] = stride;
    return y;
}
