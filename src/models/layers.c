/* layers.c: the networks' shared building blocks: parameters taken by checkpoint name with
 * shape validation, linear / conv / norm layers with the layer hook, scoped release, and the
 * zero-padding and clamp ops (torch.nn.functional.pad, torch.clamp). */
#include "models/layers.h"

#include "autograd/autograd.h"

#include <stdio.h>
#include <stdlib.h>
#include <math.h>
#include <string.h>

static _Thread_local lk__init_req init_req;

void lk__net_set_init_request(const lk__init_req *req) {
    if (req) init_req = *req;
    else memset(&init_req, 0, sizeof init_req);
}

void lk__net_init(lk__net *n, const char *model, const lk_weights *w, const char *prefix) {
    memset(n, 0, sizeof *n);
    snprintf(n->model, sizeof n->model, "%s", model);
    n->w = w;
    n->prefix = prefix ? prefix : "";
    n->st = LK_OK;
    if (init_req.w == w && w) {
        n->init_w = init_req.w;
        n->init_dtype = init_req.dtype;
        n->init_rng = init_req.rng;
    }
}

/* PyTorch's default initialization, by the role the name and rank reveal: linear/conv weights
 * kaiming-uniform(a=sqrt(5)) = U(+-1/sqrt(fan_in)); embedding tables N(0, 0.02)-like U(+-0.0346);
 * norm scales 1; biases and norm shifts 0. */
static lk_tensor *init_param(lk__net *n, const char *key, int ndim, const int64_t *shape) {
    lk_tensor *t = lk_param_new(n->init_dtype, ndim, shape, key);
    if (!t) return NULL;
    int64_t numel = lk_numel(t), fan_in = ndim >= 2 ? numel / shape[0] : 1;
    float *v = malloc(sizeof(float) * (size_t)(numel ? numel : 1));
    if (!v) {
        lk_param_free(t);
        lk_fail(LK_ERR_NOMEM, "out of memory");
        return NULL;
    }
    if (ndim == 1) {
        float fill = (strstr(key, "norm") && strstr(key, ".weight")) ? 1.0f : 0.0f;
        for (int64_t i = 0; i < numel; i++) v[i] = fill;
    } else {
        float bound = strstr(key, "embedding") ? 0.0346f : 1.0f / sqrtf((float)fan_in);
        lk_rng_rand(n->init_rng, v, (size_t)numel);
        for (int64_t i = 0; i < numel; i++) v[i] = (2.0f * v[i] - 1.0f) * bound;
    }
    if (n->init_dtype == LK_F32) memcpy(t->data, v, sizeof(float) * (size_t)numel);
    else if (n->init_dtype == LK_F16) lk_f32_to_f16_n(t->data, v, (size_t)numel);
    else lk_f32_to_bf16_n(t->data, v, (size_t)numel);
    free(v);
    if (lk_weights_add(n->init_w, t) != LK_OK) return NULL;
    return t;
}

void lk__net_release(lk__net *n) {
    if (!n) return;
    for (int i = 0; i < n->n_owned; i++) lk_param_free(n->owned[i]);
    free(n->owned);
    n->owned = NULL;
    n->n_owned = n->cap_owned = 0;
}

static void shape_fmt(char *buf, size_t len, int ndim, const int64_t *shape) {
    size_t o = (size_t)snprintf(buf, len, "[");
    for (int i = 0; i < ndim && o < len; i++)
        o += (size_t)snprintf(buf + o, len - o, i ? ",%lld" : "%lld", (long long)shape[i]);
    if (o < len) snprintf(buf + o, len - o, "]");
}

static bool own(lk__net *n, lk_tensor *t) {
    if (n->n_owned == n->cap_owned) {
        int nc = n->cap_owned ? 2 * n->cap_owned : 64;
        lk_tensor **no = realloc(n->owned, sizeof *no * (size_t)nc);
        if (!no) return false;
        n->owned = no;
        n->cap_owned = nc;
    }
    n->owned[n->n_owned++] = t;
    return true;
}

lk_tensor *lk__net_param(lk__net *n, const char *name, int ndim, const int64_t *shape) {
    if (n->st != LK_OK) return NULL;
    char key[LK__NAME_MAX + 128];
    int kl = snprintf(key, sizeof key, "%s%s", n->prefix, name);
    if (kl < 0 || (size_t)kl >= sizeof key) {
        n->st = lk_fail(LK_ERR_INVALID, "%s: parameter name '%s%s' too long", n->model, n->prefix,
                        name);
        return NULL;
    }
    char want[160], got[160];
    shape_fmt(want, sizeof want, ndim, shape);
    lk_tensor *t = lk_weights_get(n->w, key);
    if (!t && n->init_w) {
        t = init_param(n, key, ndim, shape);
        if (!t) {
            n->st = lk_fail_prefix(LK_ERR_NOMEM, "%s: initializing '%s': ", n->model, key);
            return NULL;
        }
    }
    if (!t) {
        n->st = lk_fail(LK_ERR_FORMAT, "%s: tensor '%s' is missing (config expects %s)", n->model,
                        key, want);
        return NULL;
    }
    bool ok = t->ndim == ndim;
    for (int i = 0; ok && i < ndim; i++) ok = t->shape[i] == shape[i];
    if (!ok) {
        n->st = lk_fail(LK_ERR_FORMAT, "%s: tensor '%s' has shape %s, config expects %s", n->model,
                        key, lk_shape_str(t, got, sizeof got), want);
        return NULL;
    }
    if (t->dtype != LK_F32 && t->dtype != LK_F16 && t->dtype != LK_BF16) {
        n->st = lk_fail(LK_ERR_UNSUPPORTED, "%s: tensor '%s' has dtype %s; F32, F16 or BF16 "
                        "expected", n->model, key, lk_dtype_name(t->dtype));
        return NULL;
    }
    if (!t->data) {
        n->st = lk_fail(LK_ERR_FORMAT, "%s: tensor '%s' has no data", n->model, key);
        return NULL;
    }
    if (t->dtype == LK_F32 || ndim != 1) return t;
    /* a half-precision vector (bias, norm affine): keep an f32 copy for the elementwise ops */
    lk_tensor *c = lk_param_new(LK_F32, 1, shape, key);
    if (!c || !own(n, c)) {
        lk_param_free(c);
        n->st = lk_fail(LK_ERR_NOMEM, "%s: out of memory converting '%s'", n->model, key);
        return NULL;
    }
    lk_widen_f32(c->data, t->data, t->dtype, (size_t)shape[0]);
    return c;
}

const char *lk__name(lk__net *n, char *buf, const char *base, const char *suffix) {
    int k = snprintf(buf, LK__NAME_MAX, "%s%s", base, suffix);
    if (k < 0 || k >= LK__NAME_MAX) {
        if (n->st == LK_OK)
            n->st = lk_fail(LK_ERR_INVALID, "%s: module name '%s%s' too long", n->model, base,
                            suffix);
        buf[0] = 0;
    }
    return buf;
}

static void lin_common(lk__net *n, lk__lin *l, const char *base, int ndim, const int64_t *shape,
                       bool bias) {
    char nm[LK__NAME_MAX];
    memset(l, 0, sizeof *l);
    snprintf(l->name, sizeof l->name, "%s", base);
    l->w = lk__net_param(n, lk__name(n, nm, base, ".weight"), ndim, shape);
    if (bias) l->b = lk__net_param(n, lk__name(n, nm, base, ".bias"), 1, shape);
}

void lk__lin_linear(lk__net *n, lk__lin *l, const char *base, int64_t out, int64_t in, bool bias) {
    const int64_t shape[2] = {out, in};
    lin_common(n, l, base, 2, shape, bias);
}

void lk__lin_conv(lk__net *n, lk__lin *l, const char *base, int64_t out, int64_t in, int k) {
    const int64_t shape[4] = {out, in, k, k};
    lin_common(n, l, base, 4, shape, true);
}

void lk__norm_init(lk__net *n, lk__norm *l, const char *base, int64_t c) {
    char nm[LK__NAME_MAX];
    const int64_t shape[1] = {c};
    l->w = lk__net_param(n, lk__name(n, nm, base, ".weight"), 1, shape);
    l->b = lk__net_param(n, lk__name(n, nm, base, ".bias"), 1, shape);
}

lk_tensor *lk__linear(lk_ctx *ctx, const lk__net *n, const lk__lin *l, lk_tensor *x) {
    lk_tensor *y = lk_linear(ctx, x, l->w, l->b);
    if (y && n->hook) y = n->hook(ctx, l->name, x, y, n->hook_ud);
    return y;
}

lk_tensor *lk__conv(lk_ctx *ctx, const lk__net *n, const lk__lin *l, lk_tensor *x, int stride,
                    int pad) {
    lk_tensor *y = lk_conv2d(ctx, x, l->w, l->b, stride, pad);
    if (y && n->hook) y = n->hook(ctx, l->name, x, y, n->hook_ud);
    return y;
}

lk_tensor *lk__scope_end(lk_ctx *ctx, size_t mark, lk_tensor *y) {
    if (y) lk_ctx_release_since(ctx, mark, &y, 1);
    return y;
}

/* ---------------- pad2d ---------------- */

/* iarg: 0 left, 1 top; in (B,C,H,W), out (B,C,OH,OW) */
static lk_status pad2d_backward(lk_ctx *ctx, lk_node *nd, const float *dout) {
    lk_tensor *x = nd->in[0];
    float *dx = lk__grad(ctx, x);
    if (!dx) return lk_ctx_status(ctx);
    const int64_t BC = x->shape[0] * x->shape[1], H = x->shape[2], W = x->shape[3];
    const int64_t OH = nd->out->shape[2], OW = nd->out->shape[3];
    const int64_t left = nd->iarg[0], top = nd->iarg[1];
    for (int64_t p = 0; p < BC; p++)
        for (int64_t i = 0; i < H; i++) {
            const float *src = dout + (p * OH + i + top) * OW + left;
            float *dst = dx + (p * H + i) * W;
            for (int64_t j = 0; j < W; j++) dst[j] += src[j];
        }
    return LK_OK;
}

lk_tensor *lk__pad2d(lk_ctx *ctx, lk_tensor *x, int left, int right, int top, int bottom) {
    if (!lk__check_inputs(ctx, "pad2d", 1, x)) return NULL;
    if (x->ndim != 4 || left < 0 || right < 0 || top < 0 || bottom < 0) {
        char b[160];
        return lk_ctx_fail(ctx, LK_ERR_INVALID, "pad2d: input %s must be 4-D and pads >= 0",
                           lk_shape_str(x, b, sizeof b));
    }
    x = lk_contiguous(ctx, x);
    if (!x) return NULL;
    const int64_t BC = x->shape[0] * x->shape[1], H = x->shape[2], W = x->shape[3];
    const int64_t OH = H + top + bottom, OW = W + left + right;
    const int64_t shape[4] = {x->shape[0], x->shape[1], OH, OW};
    lk_tensor *y = lk__new_f32(ctx, 4, shape);
    if (!y) return NULL;
    const float *xd = x->data;
    float *yd = y->data;
    for (int64_t p = 0; p < BC; p++) {
        float *yp = yd + p * OH * OW;
        memset(yp, 0, sizeof(float) * (size_t)(top * OW));
        for (int64_t i = 0; i < H; i++) {
            float *row = yp + (i + top) * OW;
            memset(row, 0, sizeof(float) * (size_t)left);
            memcpy(row + left, xd + (p * H + i) * W, sizeof(float) * (size_t)W);
            memset(row + left + W, 0, sizeof(float) * (size_t)right);
        }
        memset(yp + (H + top) * OW, 0, sizeof(float) * (size_t)(bottom * OW));
    }
    lk_node *nd = lk__record(ctx, "pad2d", pad2d_backward, y, 1, &x);
    if (!nd) return lk_ctx_status(ctx) == LK_OK ? y : NULL;
    nd->iarg[0] = left;
    nd->iarg[1] = top;
    return y;
}

/* ---------------- clamp ---------------- */

/* farg: lo, hi; saved[0] = x */
static lk_status clamp_backward(lk_ctx *ctx, lk_node *nd, const float *dout) {
    float *dx = lk__grad(ctx, nd->in[0]);
    if (!dx) return lk_ctx_status(ctx);
    const float *x = nd->saved[0], lo = nd->farg[0], hi = nd->farg[1];
    const int64_t n = lk_numel(nd->out);
    for (int64_t i = 0; i < n; i++)
        if (x[i] >= lo && x[i] <= hi) dx[i] += dout[i];
    return LK_OK;
}

lk_tensor *lk__clamp(lk_ctx *ctx, lk_tensor *x, float lo, float hi) {
    if (!lk__check_inputs(ctx, "clamp", 1, x)) return NULL;
    if (!(lo <= hi)) return lk_ctx_fail(ctx, LK_ERR_INVALID, "clamp: lo %g > hi %g", (double)lo, (double)hi);
    x = lk_contiguous(ctx, x);
    if (!x) return NULL;
    lk_tensor *y = lk__new_like(ctx, x);
    if (!y) return NULL;
    const float *xd = x->data;
    float *yd = y->data;
    const int64_t n = lk_numel(x);
    for (int64_t i = 0; i < n; i++) yd[i] = xd[i] < lo ? lo : (xd[i] > hi ? hi : xd[i]);
    lk_node *nd = lk__record(ctx, "clamp", clamp_backward, y, 1, &x);
    if (!nd) return lk_ctx_status(ctx) == LK_OK ? y : NULL;
    nd->farg[0] = lo;
    nd->farg[1] = hi;
    if (!lk__save(ctx, nd, x)) return NULL;
    return y;
}
