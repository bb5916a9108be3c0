/* layers.h (internal): what the networks share: taking parameters by checkpoint name from an
 * lk_weights with shape validation (first failure kept, "unet: tensor 'conv_in.weight' has shape
 * [320,4,3,3], config expects [32,4,3,3]"), linear / convolution / norm layers that call the
 * network's layer hook, block-scoped release of activations, and two small differentiable ops
 * the networks need beyond ops.h (asymmetric zero padding, clamp). */
#ifndef LK_MODELS_LAYERS_H
#define LK_MODELS_LAYERS_H

#include "likeness/model_config.h"
#include "likeness/ops.h"
#include "likeness/weights.h"
#include "likeness/rng.h"

#define LK__NAME_MAX 128

/* State common to a network. Build-time fields (w, prefix, st) are only valid while building. */
typedef struct lk__net {
    char model[24];            /* "unet", "vae", "text_encoder": message prefix */
    lk_tensor **owned;         /* f32 copies of half-precision vectors (freed with the net) */
    int n_owned, cap_owned;
    lk_layer_hook hook;
    void *hook_ud;
    bool checkpointing;        /* gradient-checkpoint each block when recording */
    /* build time */
    const lk_weights *w;
    const char *prefix;
    lk_status st;              /* first failure while taking parameters */
    /* initialization mode (lk_*_init_weights): missing parameters are created in init_w */
    lk_weights *init_w;
    lk_dtype init_dtype;
    lk_rng *init_rng;
} lk__net;

/* Initialization request picked up by the next lk__net_init on this thread (NULL: none). */
typedef struct lk__init_req {
    lk_weights *w;
    lk_dtype dtype;
    lk_rng *rng;
} lk__init_req;
void lk__net_set_init_request(const lk__init_req *req);

/* A linear or convolution layer: weight, optional bias, module path (hook name). */
typedef struct lk__lin {
    lk_tensor *w, *b;
    char name[LK__NAME_MAX];
} lk__lin;

/* An affine normalization (GroupNorm / LayerNorm): weight, bias. */
typedef struct lk__norm {
    lk_tensor *w, *b;
} lk__norm;

void lk__net_init(lk__net *n, const char *model, const lk_weights *w, const char *prefix);
/* Frees the owned copies; the net's weights are borrowed. */
void lk__net_release(lk__net *n);

/* Take parameter prefix+name of the given shape (ndim entries) from the weights. A 1-D half
 * tensor is copied to an f32 tensor owned by the net. On a missing tensor, a wrong shape or a
 * non-float dtype, the first such failure is kept in n->st (message set) and NULL returned;
 * later calls after a failure return NULL at once. */
lk_tensor *lk__net_param(lk__net *n, const char *name, int ndim, const int64_t *shape);

/* Join base and suffix into buf (LK__NAME_MAX); a name that does not fit fails n. */
const char *lk__name(lk__net *n, char *buf, const char *base, const char *suffix);

/* Linear layer base (weight (out, in), bias (out) when bias). */
void lk__lin_linear(lk__net *n, lk__lin *l, const char *base, int64_t out, int64_t in, bool bias);
/* Convolution layer base (weight (out, in, k, k), bias (out)). */
void lk__lin_conv(lk__net *n, lk__lin *l, const char *base, int64_t out, int64_t in, int k);
/* Norm base (weight (c), bias (c)). */
void lk__norm_init(lk__net *n, lk__norm *l, const char *base, int64_t c);

/* y = x W^T + b, then the hook. */
lk_tensor *lk__linear(lk_ctx *ctx, const lk__net *n, const lk__lin *l, lk_tensor *x);
/* y = conv2d(x), then the hook. */
lk_tensor *lk__conv(lk_ctx *ctx, const lk__net *n, const lk__lin *l, lk_tensor *x, int stride,
                    int pad);

/* Drop every activation made since mark except y (activations the tape still needs stay
 * alive). Returns y. */
lk_tensor *lk__scope_end(lk_ctx *ctx, size_t mark, lk_tensor *y);

/* x (B, C, H, W) -> (B, C, H+top+bottom, W+left+right) with zeros around (torch F.pad with
 * (left, right, top, bottom)). Differentiable. */
lk_tensor *lk__pad2d(lk_ctx *ctx, lk_tensor *x, int left, int right, int top, int bottom);
/* min(max(x, lo), hi) elementwise; gradient passes where lo <= x <= hi (torch.clamp). */
lk_tensor *lk__clamp(lk_ctx *ctx, lk_tensor *x, float lo, float hi);

#endif
