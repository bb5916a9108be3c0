/* autograd.h (internal): what op implementations need from the ctx and the define-by-run tape.
 *
 * Writing an op (see src/ops/activation.c for a small complete example):
 *
 *   lk_tensor *lk_silu(lk_ctx *ctx, lk_tensor *x) {
 *       if (!lk__check_inputs(ctx, "silu", 1, x)) return NULL;   // NULL/sticky-error/dead checks
 *       x = lk_contiguous(ctx, x);                               // kernels want contiguous f32
 *       lk_tensor *y = lk__new_like(ctx, x);                     // f32 output, same shape
 *       if (!y) return NULL;
 *       lk_act_forward(LK_ACT_SILU, y->data, x->data, n);
 *       lk_node *nd = lk__record(ctx, "silu", silu_backward, y, 1, &x);   // NULL if no grad
 *       if (nd && !lk__save(ctx, nd, x)) return NULL;            // keep x's data for backward
 *       return y;
 *   }
 *   static lk_status silu_backward(lk_ctx *ctx, lk_node *nd, const float *dy) {
 *       float *dx = lk__grad(ctx, nd->in[0]);                    // NULL if x needs no grad
 *       if (dx) lk_act_backward(LK_ACT_SILU, dx, dy, nd->saved[0], n);
 *       return LK_OK;
 *   }
 *
 * Gradients: every gradient buffer is f32 and contiguous in the tensor's logical shape (for a
 * strided view, the view's shape). lk__grad returns the buffer to ACCUMULATE into (allocated
 * and zeroed on first use), or NULL when that input needs no gradient. A node's backward is
 * called only if its output received gradient. After it runs, the node's saved data and the
 * output's gradient are released (unless the output is a leaf or retain_grad is set). */
#ifndef LK_AUTOGRAD_H
#define LK_AUTOGRAD_H

#include "likeness/tensor.h"

#define LK_NODE_MAX_SAVED 6
#define LK_NODE_MAX_ARGS 8

typedef lk_status (*lk_backward_fn)(lk_ctx *ctx, lk_node *nd, const float *dout);

struct lk_node {
    const char *op;            /* static name, for messages */
    lk_backward_fn backward;
    lk_tensor *out;            /* the output this node produced */
    int n_in;
    lk_tensor **in;            /* inputs (handles; their data may have been released) */
    int n_saved;
    const float *saved[LK_NODE_MAX_SAVED];   /* data kept alive for backward */
    lk_storage *saved_st[LK_NODE_MAX_SAVED];
    int64_t iarg[LK_NODE_MAX_ARGS];           /* op-specific integers */
    float farg[LK_NODE_MAX_ARGS];             /* op-specific floats */
    void *extra;                              /* op-specific, from lk__node_alloc (ctx-owned) */
    void (*release_extra)(lk_node *nd);       /* optional cleanup of extra */
    bool done;
};

/* true if every input is non-NULL, has live data, and the ctx has no sticky error; otherwise
 * records a failure naming op and returns false. Inputs are lk_tensor* varargs. */
bool lk__check_inputs(lk_ctx *ctx, const char *op, int n, ...);
/* New uninitialised f32 contiguous activation with x's shape / a given shape. */
lk_tensor *lk__new_like(lk_ctx *ctx, const lk_tensor *x);
lk_tensor *lk__new_f32(lk_ctx *ctx, int ndim, const int64_t *shape);
/* Record a node if grad mode is on and some input requires grad; marks out->requires_grad and
 * out->grad_fn. Returns NULL when nothing is recorded (no grad needed) or on failure (then the
 * ctx status is set; check lk_ctx_status). */
lk_node *lk__record(lk_ctx *ctx, const char *op, lk_backward_fn bw, lk_tensor *out, int n_in,
                    lk_tensor *const *in);
/* Keep t's data alive for backward; nd->saved[i] then points at it. Returns the slot index
 * + 1 (so 0 means failure: too many saved tensors or a released tensor). */
int lk__save(lk_ctx *ctx, lk_node *nd, lk_tensor *t);
/* Allocate nbytes of f32 scratch owned by the node (freed when the node is done), recorded as
 * a saved slot; returns the pointer or NULL (ctx failure set). */
float *lk__node_buffer(lk_ctx *ctx, lk_node *nd, size_t nfloats);
/* Small ctx-lifetime allocation (freed at lk_ctx_reset), e.g. for nd->extra. */
void *lk__ctx_alloc(lk_ctx *ctx, size_t nbytes);
/* Gradient buffer of t to accumulate into, or NULL if t needs no gradient (frozen / no grad)
 * or on allocation failure (ctx failure set). A row-subset leaf (lk_set_trainable_rows) makes
 * lk__grad fail: only ops that support it use lk__grad_rows, which returns the buffer for rows
 * [*lo, *hi) (pointer to row lo). */
float *lk__grad(lk_ctx *ctx, lk_tensor *t);
float *lk__grad_rows(lk_ctx *ctx, lk_tensor *t, int64_t *lo, int64_t *hi);
/* Accumulate src (numel of t floats) into t's gradient; a fresh gradient buffer is filled by
 * copy (no zeroing pass). No-op when t needs no gradient. */
lk_status lk__grad_add(lk_ctx *ctx, lk_tensor *t, const float *src);
/* True if t will receive a gradient (requires_grad and grad mode on). */
bool lk__needs_grad(const lk_tensor *t);
/* Scratch from the ctx pool (fast reuse of large buffers); free with lk__scratch_free. */
float *lk__scratch(lk_ctx *ctx, size_t nfloats);
void lk__scratch_free(lk_ctx *ctx, float *p);

#endif
