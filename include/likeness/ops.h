/* likeness/ops.h: differentiable tensor operations (forward records onto the ctx tape when
 * grad mode is on and an input requires grad). All compute in f32; weights (w) of linear and
 * conv2d may be stored F16/BF16 and are widened inside the kernels. Images are NCHW.
 * Every op returns NULL on failure (sticky in the ctx; see tensor.h). */
#ifndef LIKENESS_OPS_H
#define LIKENESS_OPS_H

#include "likeness/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct lk_rng lk_rng;

/* ---- linear algebra ---- */
/* a (..., M, K) @ b (..., K, N) -> (..., M, N); batch dims must match, or b may be 2-D. */
lk_tensor *lk_matmul(lk_ctx *ctx, lk_tensor *a, lk_tensor *b);
/* x (..., K) @ w(N, K)^T + bias(N) -> (..., N). bias may be NULL. */
lk_tensor *lk_linear(lk_ctx *ctx, lk_tensor *x, lk_tensor *w, lk_tensor *bias);

/* ---- convolution ---- */
/* x (B, Cin, H, W), w (Cout, Cin, KH, KW), bias (Cout) or NULL; same stride/padding on both
 * axes. -> (B, Cout, (H+2p-KH)/s+1, (W+2p-KW)/s+1). */
lk_tensor *lk_conv2d(lk_ctx *ctx, lk_tensor *x, lk_tensor *w, lk_tensor *bias, int stride,
                     int padding);

/* ---- normalization ---- */
/* x (B, C, ...) normalized over groups of C/G channels and all spatial positions; affine w,b (C)
 * (both NULL for none). */
lk_tensor *lk_groupnorm(lk_ctx *ctx, lk_tensor *x, lk_tensor *w, lk_tensor *b, int groups,
                        float eps);
/* GroupNorm followed by SiLU, fused (the ResNet block's norm-activation pair). */
lk_tensor *lk_groupnorm_silu(lk_ctx *ctx, lk_tensor *x, lk_tensor *w, lk_tensor *b, int groups,
                             float eps);
/* Normalized over the last dimension; w,b (C) or NULL. */
lk_tensor *lk_layernorm(lk_ctx *ctx, lk_tensor *x, lk_tensor *w, lk_tensor *b, float eps);

/* ---- activations ---- */
lk_tensor *lk_silu(lk_ctx *ctx, lk_tensor *x);
lk_tensor *lk_gelu(lk_ctx *ctx, lk_tensor *x, bool tanh_approx);
lk_tensor *lk_quick_gelu(lk_ctx *ctx, lk_tensor *x); /* x * sigmoid(1.702 x) */
/* x (..., 2D) -> (..., D): h * gelu(g) with h = x[..., :D], g = x[..., D:] (diffusers GEGLU). */
lk_tensor *lk_geglu(lk_ctx *ctx, lk_tensor *x);
/* Softmax over the last dimension. */
lk_tensor *lk_softmax(lk_ctx *ctx, lk_tensor *x);

/* ---- attention ---- */
/* Multi-head scaled-dot-product attention, fused and tiled (memory O(N), not O(N^2)).
 * q (B, Nq, H*D), k and v (B, Nk, H*D) -> (B, Nq, H*D); head h uses columns [h*D, (h+1)*D).
 * scale <= 0 means 1/sqrt(D). Self-attention: Nk == Nq; cross-attention: Nk = text tokens. */
lk_tensor *lk_attention(lk_ctx *ctx, lk_tensor *q, lk_tensor *k, lk_tensor *v, int heads,
                        float scale);

/* ---- resampling ---- */
lk_tensor *lk_upsample_nearest2x(lk_ctx *ctx, lk_tensor *x);                 /* (B,C,2H,2W) */
lk_tensor *lk_avgpool2d(lk_ctx *ctx, lk_tensor *x, int kernel, int stride); /* no padding */

/* ---- structure ---- */
/* Concatenate n tensors along dim (all other dims equal). */
lk_tensor *lk_concat(lk_ctx *ctx, lk_tensor *const *xs, int n, int dim);
/* Split x along dim into n parts of the given sizes (summing to x.shape[dim]); writes outs[n].
 * Returns LK_OK or the ctx's failure. */
lk_status lk_split(lk_ctx *ctx, lk_tensor *x, int dim, int n, const int64_t *sizes,
                   lk_tensor **outs);

/* ---- elementwise with broadcasting (numpy rules, trailing dims aligned) ---- */
lk_tensor *lk_add(lk_ctx *ctx, lk_tensor *a, lk_tensor *b);
lk_tensor *lk_sub(lk_ctx *ctx, lk_tensor *a, lk_tensor *b);
lk_tensor *lk_mul(lk_ctx *ctx, lk_tensor *a, lk_tensor *b);
lk_tensor *lk_scale(lk_ctx *ctx, lk_tensor *x, float s);          /* x * s */
lk_tensor *lk_add_scalar(lk_ctx *ctx, lk_tensor *x, float s);     /* x + s */
lk_tensor *lk_exp(lk_ctx *ctx, lk_tensor *x);                    /* exp(x), elementwise */

/* ---- embeddings ---- */
/* table (V, D), ids: I64 or I32 tensor of any shape -> (ids..., D). Gradient is sparse: only
 * the rows used are touched, and a table with lk_set_trainable_rows gets gradient only for
 * those rows (textual inversion trains new token rows of a frozen vocabulary). */
lk_tensor *lk_embedding(lk_ctx *ctx, lk_tensor *table, lk_tensor *ids);
/* Sinusoidal timestep embedding as diffusers' get_timestep_embedding: t (B) f32 -> (B, dim).
 * Not differentiable (timesteps are data). */
lk_tensor *lk_timestep_embedding(lk_ctx *ctx, lk_tensor *t, int dim, bool flip_sin_to_cos,
                                 float downscale_freq_shift, float max_period);

/* ---- losses and reductions ---- */
lk_tensor *lk_mse_loss(lk_ctx *ctx, lk_tensor *a, lk_tensor *b); /* mean((a-b)^2), scalar */
/* mean(|a-b|), scalar (torch.nn.functional.l1_loss; gradient sign(a-b)/n, 0 where a == b) */
lk_tensor *lk_l1_loss(lk_ctx *ctx, lk_tensor *a, lk_tensor *b);
lk_tensor *lk_sum(lk_ctx *ctx, lk_tensor *x);                   /* scalar */
lk_tensor *lk_mean(lk_ctx *ctx, lk_tensor *x);                  /* scalar */
lk_tensor *lk_sum_dim(lk_ctx *ctx, lk_tensor *x, int dim, bool keepdim);
lk_tensor *lk_mean_dim(lk_ctx *ctx, lk_tensor *x, int dim, bool keepdim);

/* ---- regularization ---- */
/* Inverted dropout with probability p (survivors scaled by 1/(1-p)); identity (x itself) when
 * p == 0, so inference passes 0. Draws from rng (borrowed). */
lk_tensor *lk_dropout(lk_ctx *ctx, lk_tensor *x, float p, lk_rng *rng);

#ifdef __cplusplus
}
#endif
#endif
