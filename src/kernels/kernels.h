/* kernels.h: the raw compute kernels behind the ops, one interface for every backend (today
 * the CPU one in kernels/cpu/, f32, OpenMP-threaded; a CUDA backend provides the same set).
 *
 * Conventions (llm.c style):
 *   - pointers to contiguous row-major f32 buffers; dims passed explicitly; NCHW images.
 *   - `*_forward(out, ..., inputs, dims)` writes out (overwrites).
 *   - `*_backward(dinp..., dout, saved..., dims)` ACCUMULATES (+=) into every non-NULL gradient
 *     pointer; a NULL gradient pointer means "not needed" and must be skipped (no work).
 *   - weights `w` may be F32, F16 or BF16 (`wdt`), widened to f32 inside the kernel.
 *   - kernels allocate their own scratch with lk_aligned_alloc and return LK_ERR_NOMEM (with a
 *     message) if that fails; otherwise LK_OK. Invalid dims are the caller's (ops layer's) job
 *     to check, kernels may LK_ASSERT them.
 */
#ifndef LK_KERNELS_H
#define LK_KERNELS_H

#include "likeness/core.h"
#include "likeness/rng.h"

/* ---------------- GEMM (kernels/cpu/gemm.c) ---------------- */
/* C[M,N] = alpha * op(A)[M,K] @ op(B)[K,N] + beta * C, row-major (cblas_sgemm). */
void lk_sgemm(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float *A,
              int lda, const float *B, int ldb, float beta, float *C, int ldc);
/* batch independent GEMMs, operands advanced by the given element strides (0 = shared). */
void lk_sgemm_batched(int batch, bool trans_a, bool trans_b, int M, int N, int K, float alpha,
                      const float *A, int lda, int64_t stride_a, const float *B, int ldb,
                      int64_t stride_b, float beta, float *C, int ldc, int64_t stride_c);
/* y (M,N) = x (M,K) @ w(N,K)^T + b (N, may be NULL). */
lk_status lk_linear_forward(float *y, const float *x, const void *w, lk_dtype wdt,
                            const float *b, int M, int K, int N);
/* dx (M,K) += dy @ w;  dw (N,K) += dy^T @ x;  db (N) += sum_rows dy. dw only for F32 weights. */
lk_status lk_linear_backward(float *dx, float *dw, float *db, const float *dy, const float *x,
                             const void *w, lk_dtype wdt, int M, int K, int N);

/* ---------------- conv2d (kernels/cpu/conv2d.c) ---------------- */
typedef struct lk_conv2d_desc {
    int B, Cin, H, W;      /* input (B, Cin, H, W) */
    int Cout, KH, KW;      /* weight (Cout, Cin, KH, KW) */
    int stride, pad;       /* same on both axes */
    int OH, OW;            /* output (B, Cout, OH, OW); filled by lk_conv2d_desc_init */
} lk_conv2d_desc;
/* Fill OH/OW; LK_ERR_INVALID if the output would be empty or dims are non-positive. */
lk_status lk_conv2d_desc_init(lk_conv2d_desc *d);
lk_status lk_conv2d_forward(float *out, const float *x, const void *w, lk_dtype wdt,
                            const float *b, const lk_conv2d_desc *d);
lk_status lk_conv2d_backward(float *dx, float *dw, float *db, const float *dout, const float *x,
                             const void *w, lk_dtype wdt, const lk_conv2d_desc *d);

/* ---------------- normalization (kernels/cpu/groupnorm.c, layernorm.c) ---------------- */
/* x (B, C, HW); w, b (C) or NULL; mean, rstd (B, G) saved for backward. act: 0 none, 1 SiLU
 * applied after the affine transform (fused). */
lk_status lk_groupnorm_forward(float *out, float *mean, float *rstd, const float *x,
                               const float *w, const float *b, int B, int C, int HW, int G,
                               float eps, int act);
lk_status lk_groupnorm_backward(float *dx, float *dw, float *db, const float *dout,
                                const float *x, const float *mean, const float *rstd,
                                const float *w, const float *b, int B, int C, int HW, int G,
                                int act);
/* x (N, C) normalized over C; mean, rstd (N) saved. */
lk_status lk_layernorm_forward(float *out, float *mean, float *rstd, const float *x,
                               const float *w, const float *b, int N, int C, float eps);
lk_status lk_layernorm_backward(float *dx, float *dw, float *db, const float *dout,
                                const float *x, const float *mean, const float *rstd,
                                const float *w, int N, int C);

/* ---------------- activations (kernels/cpu/activations.c) ---------------- */
typedef enum lk_act {
    LK_ACT_SILU = 0,
    LK_ACT_GELU = 1,       /* exact, erf */
    LK_ACT_GELU_TANH = 2,
    LK_ACT_QUICK_GELU = 3, /* x * sigmoid(1.702 x) */
} lk_act;
void lk_act_forward(lk_act a, float *y, const float *x, size_t n);
void lk_act_backward(lk_act a, float *dx, const float *dy, const float *x, size_t n);
/* The same on the calling thread only, for kernels already inside a parallel region (a nested
 * parallel construct per call costs more than the work on small blocks). */
void lk_act_forward_serial(lk_act a, float *y, const float *x, size_t n);
void lk_act_backward_serial(lk_act a, float *dx, const float *dy, const float *x, size_t n);
/* x (M, 2D) -> y (M, D) = x[:, :D] * gelu(x[:, D:]) (exact gelu). */
void lk_geglu_forward(float *y, const float *x, size_t M, size_t D);
void lk_geglu_backward(float *dx, const float *dy, const float *x, size_t M, size_t D);
/* rows (M, N), softmax over N. Backward uses the output y. */
void lk_softmax_forward(float *y, const float *x, size_t M, size_t N);
void lk_softmax_backward(float *dx, const float *dy, const float *y, size_t M, size_t N);

/* ---------------- attention (kernels/cpu/attention.c) ---------------- */
/* Fused multi-head attention, tiled over keys with an online softmax (FlashAttention, Dao et al.
 * 2022): extra memory O(N) per thread, never an (Nq, Nk) matrix.
 * q (B, Nq, H*D), k v (B, Nk, H*D), out (B, Nq, H*D), lse (B, H, Nq) = logsumexp of the scaled
 * scores, saved for backward. */
lk_status lk_attention_forward(float *out, float *lse, const float *q, const float *k,
                               const float *v, int B, int H, int Nq, int Nk, int D, float scale);
lk_status lk_attention_backward(float *dq, float *dk, float *dv, const float *dout,
                                const float *q, const float *k, const float *v, const float *out,
                                const float *lse, int B, int H, int Nq, int Nk, int D,
                                float scale);

/* ---------------- resampling (kernels/cpu/resample.c) ---------------- */
void lk_upsample_nearest2x_forward(float *y, const float *x, int BC, int H, int W);
void lk_upsample_nearest2x_backward(float *dx, const float *dy, int BC, int H, int W);
/* output (BC, OH, OW) with OH = (H-k)/s+1 */
void lk_avgpool2d_forward(float *y, const float *x, int BC, int H, int W, int k, int s);
void lk_avgpool2d_backward(float *dx, const float *dy, int BC, int H, int W, int k, int s);

/* ---------------- embeddings (kernels/cpu/embedding.c) ---------------- */
/* out (n, D) = table[ids[i]]; ids validated by the caller. table F32/F16/BF16. */
void lk_embedding_forward(float *out, const int64_t *ids, size_t n, const void *table,
                          lk_dtype dt, int D);
/* Accumulate dout rows into dtable rows for ids in [row_lo, row_hi); dtable points at row
 * row_lo. Rows outside the range get nothing. */
void lk_embedding_backward(float *dtable, const float *dout, const int64_t *ids, size_t n, int D,
                           int64_t row_lo, int64_t row_hi);
/* diffusers get_timestep_embedding: out (B, dim). */
void lk_timestep_embedding_forward(float *out, const float *t, int B, int dim,
                                   bool flip_sin_to_cos, float downscale_freq_shift,
                                   float max_period);

/* ---------------- elementwise / reductions (kernels/cpu/elementwise.c) ---------------- */
typedef enum lk_binop { LK_BIN_ADD = 0, LK_BIN_SUB = 1, LK_BIN_MUL = 2 } lk_binop;
/* out (shape) = a op b with numpy broadcasting expressed by strides: astride/bstride are the
 * element strides of a and b over out's ndim dims (0 on broadcast dims). */
void lk_binary_forward(lk_binop op, float *out, const float *a, const int64_t *astride,
                       const float *b, const int64_t *bstride, int ndim, const int64_t *shape);
/* da/db (NULL allowed) accumulate with reduction over broadcast dims. a, b needed for MUL. */
void lk_binary_backward(lk_binop op, float *da, float *db, const float *dout, const float *a,
                        const int64_t *astride, const float *b, const int64_t *bstride, int ndim,
                        const int64_t *shape);
/* double-accumulated, threaded reductions */
double lk_sum_f32(const float *x, size_t n);
/* x viewed as (outer, dim, inner) -> y (outer, inner) summed over dim. */
void lk_sum_dim_forward(float *y, const float *x, size_t outer, size_t dim, size_t inner);
/* mean((a-b)^2) over n */
float lk_mse_forward(const float *a, const float *b, size_t n);
/* da += 2(a-b)/n * g, db -= the same */
void lk_mse_backward(float *da, float *db, const float *a, const float *b, size_t n, float g);
/* strided -> contiguous copy of a float tensor */
void lk_copy_strided(float *dst, const float *src, int ndim, const int64_t *shape,
                     const int64_t *src_stride);
/* dst[strided] += src[contiguous] (backward of a strided view) */
void lk_add_strided(float *dst, const int64_t *dst_stride, const float *src, int ndim,
                    const int64_t *shape);
/* y += alpha * x */
void lk_axpy(float *y, float alpha, const float *x, size_t n);

/* ---------------- regularization (kernels/cpu/dropout.c) ---------------- */
/* mask[i] = 1/(1-p) or 0, kept when a 53-bit uniform double from rng is < 1-p (as torch
 * F.dropout / bernoulli_ on CPU draws it), y = x * mask. */
void lk_dropout_forward(float *y, float *mask, const float *x, size_t n, float p, lk_rng *rng);
void lk_dropout_backward(float *dx, const float *dy, const float *mask, size_t n);

/* ---------------- optimizer updates (kernels/cpu/optim_update.c) ---------------- */
/* One AdamW update (torch semantics) for step t (1-based). */
void lk_adamw_update(float *p, const float *g, float *m, float *v, size_t n, float lr,
                     float beta1, float beta2, float eps, float weight_decay, int64_t t);

#endif
