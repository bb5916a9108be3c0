/* conv2d_internal.h (private): what the conv2d kernel files share. A register-blocked f32
 * GEMM (GotoBLAS layering: Goto & van de Geijn 2008, "Anatomy of high-performance matrix
 * multiplication") whose operands may be packed on the fly by a callback (implicit im2col), the
 * Winograd paths (conv2d_winograd.c) and the im2col / 1x1 paths (conv2d_im2col.c). */
#ifndef LK_CONV2D_INTERNAL_H
#define LK_CONV2D_INTERNAL_H

#include "kernels/kernels.h"

/* Register tile of the micro-kernel: MR rows of C (A broadcast) by NR columns (B vectors). */
#if defined(__AVX512F__)
#define LK_CONV_MR 14
#define LK_CONV_NR 32
#elif defined(__AVX2__) && defined(__FMA__)
#define LK_CONV_MR 6
#define LK_CONV_NR 16
#else
#define LK_CONV_MR 4
#define LK_CONV_NR 16
#endif
#define LK_CONV_KC 384                /* depth of one packed block (B micro-panel ~ L1) */
#define LK_CONV_MC (LK_CONV_MR * 32)  /* rows of A packed at once (~700 KB, L2) */

/* Writes dst[k*NR + j] = B(k0+k, j0+j) for k < kc, j < nj, and zeros for nj <= j < NR (or
 * dst[k*MR + i] = A(i0+i, k0+k) for an A packer, rows nj..MR-1 zero). Indices are absolute
 * (the matrix's own, not the block's). */
typedef void (*lk__conv_pack_fn)(const void *ud, int64_t r0, int nr, int64_t k0, int kc,
                                  float *dst);

/* A GEMM operand. Element (r, k) -- r the row of C for A, the column of C for B -- sits at
 * p[r*rs + k*ks] unless pack is set (then pack(ud, ...) produces the panels) or panel > 0
 * (already in packed panels: B column block j/NR at p + (j/NR)*panel, element (k, j) at
 * [k*NR + j%NR]; A row block i/MR at p + (i/MR)*panel, element (i, k) at [k*MR + i%MR], and
 * the rows asked for must start at a multiple of MR). */
typedef struct lk__conv_mat {
    const float *p;
    int64_t rs, ks;
    int64_t panel;
    lk__conv_pack_fn pack;
    const void *ud;
} lk__conv_mat;

/* Per-thread scratch of the GEMM driver: LK_CONV_MC*LK_CONV_KC floats for A, KC*NR for B. */
typedef struct lk__conv_ws {
    float *apack;
    float *bpack;
} lk__conv_ws;

/* Scratch of one kernel call: one block carved into 64-byte aligned pieces. The block is a
 * process-wide cached buffer when that is free (reused across calls: on this class of machine
 * first-touch page faults of fresh multi-MB buffers cost as much as the convolution itself),
 * else a fresh allocation. The cache keeps the largest block asked for until exit. */
typedef struct lk__conv_scratch {
    char *base;
    size_t cap, used;
    bool cached;
} lk__conv_scratch;

/* Bytes that n floats / nt GEMM workspaces take in a scratch block. */
size_t lk__conv_fbytes(int64_t nfloats);
size_t lk__conv_ws_bytes(int nt);
/* Get a block of at least nbytes; LK_ERR_NOMEM with message on failure. */
lk_status lk__conv_scratch_open(lk__conv_scratch *s, size_t nbytes, const char *what);
/* Carve n floats / nt workspaces (the block was sized for them). */
float *lk__conv_scratch_floats(lk__conv_scratch *s, int64_t nfloats);
lk__conv_ws *lk__conv_scratch_ws(lk__conv_scratch *s, int nt);
void lk__conv_scratch_close(lk__conv_scratch *s);
/* Threads the kernels' parallel regions will use. */
int lk__conv_threads(void);

/* Strided views. */
static inline lk__conv_mat lk__conv_view(const float *p, int64_t rs, int64_t ks) {
    lk__conv_mat m = {p, rs, ks, 0, NULL, NULL};
    return m;
}

/* C (M, N) (row stride ldc) = A (M, K) B (K, N) (+ rowbias[i] on row i when rowbias is not
 * NULL), or += when accumulate. Single-threaded; callers split C between threads. A rows
 * [i0, i0+M) and B columns [j0, j0+N) of the operand matrices are used (absolute indices for
 * pack callbacks; C and rowbias point at element (i0, j0) / row i0). */
void lk__conv_gemm(int64_t i0, int M, int64_t j0, int N, int K, const lk__conv_mat *A,
                   const lk__conv_mat *B, float *C, int64_t ldc, bool accumulate,
                   const float *rowbias, lk__conv_ws *ws);

/* dst[c*ldd + r] = src[r*lds + c] for r < rows, c < cols (rows, cols <= 16); accumulate adds
 * into dst instead of overwriting. */
void lk__conv_tr16(const float *src, int64_t lds, float *dst, int64_t ldd, int rows, int cols,
                   bool accumulate);

/* dst[0..n) = src[0..n), n <= 32: two vector moves (a libc memcpy of this size is inlined as a
 * `rep movs`, which costs more than the copy). */
void lk__conv_copy32(float *dst, const float *src, int n);

/* Row stride for a scratch matrix of n floats per row: n rounded up to 16, plus 16 when that is
 * a multiple of 64 (keeps consecutive rows out of the same L1 sets). */
int64_t lk__conv_ld(int64_t n);

/* Winograd F(2x2,3x3) (Lavin & Gray 2016) for 3x3 convolutions, conv2d_winograd.c: stride 1,
 * or stride 2 through its four parity classes (wflip must then be false). out (B,K,OH,OW) =
 * conv(x (B,C,H,W), w) with padding pad (stride 1: any integer, even negative); weight f32.
 * wflip: use the weight as w'[c][k] = w[k][c] rotated 180 degrees (the convolution that gives
 * dx from dout), where w is then (C, K, 3, 3). accumulate: out += instead of =. bias (K) or
 * NULL. */
lk_status lk__conv_wino_forward(float *out, bool accumulate, const float *x, const float *w,
                                bool wflip, const float *bias, int B, int C, int H, int W,
                                int K, int pad, int stride);
/* dw (K, C, 3, 3) += d/dw of a 3x3 stride-1 conv with input x (B,C,H,W) and output gradient
 * dout (B,K,OH,OW), by Winograd F(3x3,2x2) over 2x2 output tiles. */
lk_status lk__conv_wino_dweight(float *dw, const float *dout, const float *x, int B, int C,
                                int H, int W, int K, int pad);

/* im2col / 1x1 GEMM paths, conv2d_im2col.c; w f32 (Cout, Cin*KH*KW). */
lk_status lk__conv_gemm_forward(float *out, const float *x, const float *w, const float *b,
                                const lk_conv2d_desc *d);
lk_status lk__conv_gemm_dinput(float *dx, const float *dout, const float *w,
                               const lk_conv2d_desc *d);
lk_status lk__conv_gemm_dweight(float *dw, const float *dout, const float *x,
                                const lk_conv2d_desc *d);

#endif
