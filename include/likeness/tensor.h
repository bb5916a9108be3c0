/* likeness/tensor.h: tensors, contexts (activation lifetime) and the autograd tape.
 *
 * Lifetimes (arenas per lifetime):
 *   - parameters / weights: lk_param_new (or a model loader); persistent, freed by lk_param_free.
 *   - activations: created in an lk_ctx; their storage comes from the ctx's caching pool and
 *     their handles live until lk_ctx_reset / lk_ctx_free.
 *   - gradients + optimizer state: an lk_paramset puts every trainable parameter's gradient in
 *     one block, so frozen weights never get gradient or optimizer memory.
 *
 * Error model for ops: an op returns a new tensor, or NULL on failure. The failure is sticky in
 * the ctx (lk_ctx_status) and every later op given a NULL input returns NULL at once, so model
 * code is written straight-line and checks once at the end. */
#ifndef LIKENESS_TENSOR_H
#define LIKENESS_TENSOR_H

#include "likeness/core.h"

#ifdef __cplusplus
extern "C" {
#endif

#define LK_MAX_DIMS 6

typedef struct lk_ctx lk_ctx;
typedef struct lk_storage lk_storage;
typedef struct lk_node lk_node;
typedef struct lk_tensor lk_tensor;

struct lk_tensor {
    void *data;                   /* first element; NULL once released */
    lk_storage *storage;          /* refcounted buffer (NULL: borrowed external memory) */
    lk_dtype dtype;
    int ndim;
    int64_t shape[LK_MAX_DIMS];
    int64_t stride[LK_MAX_DIMS];  /* in elements, not bytes */
    /* autograd */
    bool requires_grad;           /* trainable leaf, or an activation depending on one */
    bool is_leaf;                 /* made by the user or a loader, not by an op */
    bool retain_grad;             /* keep the gradient of a non-leaf after backward */
    float *grad;                  /* f32, contiguous, shape of the tensor (or of its trainable rows) */
    int64_t grad_row_lo, grad_row_hi; /* 2-D leaves: rows [lo,hi) are trainable; default all */
    lk_node *grad_fn;             /* op that produced it (NULL for leaves / no-grad results) */
    lk_ctx *ctx;                  /* owning ctx (NULL for parameters) */
    char name[96];                /* checkpoint key name for parameters; "" otherwise */
    void *user;                   /* free for the owner's use */
    /* internal */
    bool grad_owned_;             /* grad allocated by the tensor (not a paramset block) */
    bool data_owned_;             /* parameter data allocated by lk_param_new */
};

/* Convenience: LK_DIMS(2,3,4) expands to `3, (const int64_t[]){2,3,4}`. */
#define LK_DIMS(...) \
    (int)(sizeof((const int64_t[]){__VA_ARGS__}) / sizeof(int64_t)), (const int64_t[]){__VA_ARGS__}

/* ---- contexts ---- */
lk_ctx *lk_ctx_new(void);                   /* NULL on allocation failure */
void lk_ctx_free(lk_ctx *ctx);              /* accepts NULL; frees every activation */
/* Drop every activation handle, the tape and the sticky error; pooled memory is kept for reuse. */
void lk_ctx_reset(lk_ctx *ctx);
/* Return pooled (cached, unused) memory to the system. */
void lk_ctx_trim(lk_ctx *ctx);
lk_status lk_ctx_status(const lk_ctx *ctx); /* sticky status of the ops run since the last reset */
void lk_ctx_clear_status(lk_ctx *ctx);
/* Record a failure in the ctx (sets the thread message too) and return NULL. For op code. */
lk_tensor *lk_ctx_fail(lk_ctx *ctx, lk_status s, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
/* Bytes of activation memory live now / at peak since the last lk_ctx_reset_peak. */
size_t lk_ctx_live_bytes(const lk_ctx *ctx);
size_t lk_ctx_peak_bytes(const lk_ctx *ctx);
void lk_ctx_reset_peak(lk_ctx *ctx);

/* ---- grad mode ---- */
void lk_set_grad_enabled(lk_ctx *ctx, bool enabled); /* no-grad: ops record nothing */
bool lk_grad_enabled(const lk_ctx *ctx);

/* ---- creating tensors in a ctx (activations / inputs) ---- */
/* Uninitialised contiguous tensor. */
lk_tensor *lk_tensor_new(lk_ctx *ctx, lk_dtype dt, int ndim, const int64_t *shape);
lk_tensor *lk_tensor_zeros(lk_ctx *ctx, lk_dtype dt, int ndim, const int64_t *shape);
lk_tensor *lk_tensor_full(lk_ctx *ctx, float value, int ndim, const int64_t *shape); /* f32 */
/* Copy of data (numel * dtype size bytes). */
lk_tensor *lk_tensor_from(lk_ctx *ctx, lk_dtype dt, int ndim, const int64_t *shape, const void *data);
/* Borrow external memory (not freed by likeness; must outlive the ctx's use of it). */
lk_tensor *lk_tensor_wrap(lk_ctx *ctx, lk_dtype dt, int ndim, const int64_t *shape, void *data);
/* Drop this handle's reference to its storage early (memory returns to the pool once the tape
 * no longer needs it). The handle keeps its shape; data becomes NULL. Accepts NULL. */
void lk_release(lk_tensor *t);

/* Scoped release for inference: lk_ctx_mark returns a position in the ctx's handle list;
 * lk_ctx_release_since drops the data references of every handle created after it except the
 * n_keep tensors listed (e.g. a block's output). Memory the tape still needs stays alive. */
size_t lk_ctx_mark(const lk_ctx *ctx);
void lk_ctx_release_since(lk_ctx *ctx, size_t mark, lk_tensor *const *keep, int n_keep);

/* ---- parameters (persistent, outside any ctx) ---- */
lk_tensor *lk_param_new(lk_dtype dt, int ndim, const int64_t *shape, const char *name); /* zeroed */
/* Wrap memory owned elsewhere (an mmapped file, a weight block); not freed by lk_param_free. */
lk_tensor *lk_param_wrap(lk_dtype dt, int ndim, const int64_t *shape, void *data, const char *name);
void lk_param_free(lk_tensor *p); /* accepts NULL; frees data (if owned) and grad */
/* Mark a leaf as requiring gradient (a standalone grad buffer is allocated on first use), or
 * frozen (no gradient buffer; gradients still flow through it to earlier inputs). */
lk_status lk_set_requires_grad(lk_tensor *t, bool requires_grad);
/* 2-D leaf: only rows [lo, hi) are trainable; its grad holds (hi-lo) rows. Used by the
 * embedding op for textual inversion (other ops refuse such a tensor as a trained input). */
lk_status lk_set_trainable_rows(lk_tensor *t, int64_t lo, int64_t hi);
/* Zero the gradient buffer of a leaf (no-op when it has none). */
void lk_zero_grad(lk_tensor *t);
/* Number of gradient elements of t ((hi-lo)*cols for row-subset leaves, else numel). */
int64_t lk_grad_numel(const lk_tensor *t);

/* ---- queries ---- */
int64_t lk_numel(const lk_tensor *t);
size_t lk_nbytes(const lk_tensor *t);
bool lk_is_contiguous(const lk_tensor *t);
bool lk_same_shape(const lk_tensor *a, const lk_tensor *b);
/* "[2,3,4]" into buf; returns buf. */
const char *lk_shape_str(const lk_tensor *t, char *buf, size_t len);
/* Read element i (row-major logical index) as f32, any float dtype, any strides. */
float lk_get_f32(const lk_tensor *t, int64_t i);

/* ---- views and layout (autograd-aware) ---- */
/* Same data, new shape (view if contiguous, else a copy). One dim may be -1. */
lk_tensor *lk_reshape(lk_ctx *ctx, lk_tensor *x, int ndim, const int64_t *shape);
/* Strided view with dims reordered: out.shape[i] = x.shape[perm[i]]. */
lk_tensor *lk_permute(lk_ctx *ctx, lk_tensor *x, const int *perm);
lk_tensor *lk_transpose(lk_ctx *ctx, lk_tensor *x, int d0, int d1);
/* Strided view of x[..., start:start+len, ...] along dim. */
lk_tensor *lk_narrow(lk_ctx *ctx, lk_tensor *x, int dim, int64_t start, int64_t len);
/* Contiguous f32 copy if x is strided or half; x itself otherwise. */
lk_tensor *lk_contiguous(lk_ctx *ctx, lk_tensor *x);
/* Convert dtype (F32 <-> F16/BF16); gradient flows back as f32. */
lk_tensor *lk_cast(lk_ctx *ctx, lk_tensor *x, lk_dtype dt);
/* A leaf sharing x's data with no history (like torch's .detach()). */
lk_tensor *lk_detach(lk_ctx *ctx, lk_tensor *x);

/* ---- autograd ---- */
/* Backpropagate from a scalar (numel 1) loss: seeds d(loss)=1 and runs the tape in reverse.
 * Gradients accumulate into leaves' grad; the tape is consumed. To free activation memory as
 * soon as backward no longer needs it, backward first drops the handle references of every
 * non-leaf activation of the ctx (except the loss/out and retain_grad tensors): read what you
 * need from activations before calling it. */
lk_status lk_backward(lk_ctx *ctx, lk_tensor *loss);
/* Backpropagate from any output with an explicit upstream gradient dout (numel of out). */
lk_status lk_backward_from(lk_ctx *ctx, lk_tensor *out, const float *dout);
/* Gradient checkpointing: run fn on inputs without recording, and recompute it with recording
 * during backward. fn must be deterministic (same output for the same inputs and ud). */
typedef lk_tensor *(*lk_checkpoint_fn)(lk_ctx *ctx, lk_tensor *const *inputs, int n_inputs,
                                       void *ud);
lk_tensor *lk_checkpoint(lk_ctx *ctx, lk_checkpoint_fn fn, void *ud, lk_tensor *const *inputs,
                         int n_inputs);
/* Number of nodes currently on the tape (0 in no-grad mode). */
int lk_tape_size(const lk_ctx *ctx);

/* ---- trainable parameter sets: one gradient block for the whole run ---- */
typedef struct lk_paramset lk_paramset;
lk_paramset *lk_paramset_new(void);
void lk_paramset_free(lk_paramset *ps); /* frees the grad block, not the parameters */
/* Add a leaf f32 parameter (borrowed; must outlive the set). Call before finalize. */
lk_status lk_paramset_add(lk_paramset *ps, lk_tensor *p);
/* Allocate one zeroed gradient block for all added parameters and point their grad into it. */
lk_status lk_paramset_finalize(lk_paramset *ps);
int lk_paramset_count(const lk_paramset *ps);
lk_tensor *lk_paramset_get(const lk_paramset *ps, int i);
int64_t lk_paramset_numel(const lk_paramset *ps); /* total trainable (gradient) elements */
void lk_paramset_zero_grad(lk_paramset *ps);

#ifdef __cplusplus
}
#endif
#endif
