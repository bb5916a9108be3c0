/* gemm.c: row-major SGEMM (OpenBLAS cblas_sgemm, OpenMP build) and the fully connected layer
 * y = x W^T + b with F32/F16/BF16 weights (half weights widened a block of rows at a time). */
#include "kernels/kernels.h"

#include <cblas.h>
#include <omp.h>
#include <string.h>

/* C = alpha op(A) op(B) + beta C, row-major, OpenBLAS's own threads. M, N or K may be 0
 * (K == 0 scales C by beta). Cannot fail. */
void lk_sgemm(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float *A,
              int lda, const float *B, int ldb, float beta, float *C, int ldc) {
    if (M <= 0 || N <= 0) return;
    if (K <= 0) {
        for (int i = 0; i < M; i++) {
            float *c = C + (size_t)i * (size_t)ldc;
            for (int j = 0; j < N; j++) c[j] = beta == 0.0f ? 0.0f : beta * c[j];
        }
        return;
    }
    cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
                trans_b ? CblasTrans : CblasNoTrans, M, N, K, alpha, A, lda, B, ldb, beta, C,
                ldc);
}

/* batch GEMMs in order (a stride of 0 shares that operand; stride_c 0 with beta 1 therefore
 * accumulates every product into one C). Cannot fail. */
void lk_sgemm_batched(int batch, bool trans_a, bool trans_b, int M, int N, int K, float alpha,
                      const float *A, int lda, int64_t stride_a, const float *B, int ldb,
                      int64_t stride_b, float beta, float *C, int ldc, int64_t stride_c) {
    for (int i = 0; i < batch; i++)
        lk_sgemm(trans_a, trans_b, M, N, K, alpha, A + (int64_t)i * stride_a, lda,
                 B + (int64_t)i * stride_b, ldb, beta, C + (int64_t)i * stride_c, ldc);
}

/* Rows of a half weight widened per GEMM call: at most 2M floats (8 MB) of scratch. */
#define LK_WIDEN_FLOATS (1 << 21)

static int widen_rows(int K, int N) {
    int nb = (int)(LK_WIDEN_FLOATS / (K > 0 ? K : 1));
    if (nb < 16) nb = 16;
    return nb < N ? nb : N;
}

/* rows [n0, n0+nb) of w (N, K), dtype wdt, to f32 in dst (nb, K); threaded */
static void widen_block(float *dst, const void *w, lk_dtype wdt, int n0, int nb, int K) {
    const uint16_t *src = (const uint16_t *)w + (size_t)n0 * (size_t)K;
    size_t total = (size_t)nb * (size_t)K;
    const size_t chunk = 16384;
    long nc = (long)((total + chunk - 1) / chunk);
#pragma omp parallel for schedule(static) if (total >= 2 * chunk)
    for (long c = 0; c < nc; c++) {
        size_t i0 = (size_t)c * chunk;
        size_t len = total - i0 < chunk ? total - i0 : chunk;
        lk_widen_f32(dst + i0, src + i0, wdt, len);
    }
}

/* y (M,N) = x (M,K) @ w(N,K)^T + b; w F32, F16 or BF16 (row-major, contiguous), b f32 or NULL.
 * LK_ERR_NOMEM if the widening scratch cannot be allocated; LK_ERR_UNSUPPORTED for other
 * weight dtypes. */
lk_status lk_linear_forward(float *y, const float *x, const void *w, lk_dtype wdt,
                            const float *b, int M, int K, int N) {
    if (M <= 0 || N <= 0) return LK_OK;
    if (wdt != LK_F32 && wdt != LK_F16 && wdt != LK_BF16)
        return lk_fail(LK_ERR_UNSUPPORTED, "linear: weight dtype %s not supported",
                       lk_dtype_name(wdt));
    float beta = 0.0f;
    if (b) {
#pragma omp parallel for schedule(static) if ((int64_t)M * N >= 65536)
        for (int i = 0; i < M; i++) memcpy(y + (size_t)i * (size_t)N, b, sizeof(float) * (size_t)N);
        beta = 1.0f;
    }
    if (wdt == LK_F32) {
        lk_sgemm(false, true, M, N, K, 1.0f, x, K, (const float *)w, K, beta, y, N);
        return LK_OK;
    }
    int nb = widen_rows(K, N);
    float *wf = lk_aligned_alloc(sizeof(float) * (size_t)nb * (size_t)K);
    if (!wf) return lk_fail(LK_ERR_NOMEM, "linear: no memory for %d x %d weight scratch", nb, K);
    for (int n0 = 0; n0 < N; n0 += nb) {
        int cnt = N - n0 < nb ? N - n0 : nb;
        widen_block(wf, w, wdt, n0, cnt, K);
        lk_sgemm(false, true, M, cnt, K, 1.0f, x, K, wf, K, beta, y + n0, N);
    }
    lk_aligned_free(wf);
    return LK_OK;
}

/* db (N) += column sums of dy (M, N): per-thread partial sums over row ranges, reduced in a
 * fixed order (deterministic). */
static lk_status bias_grad(float *db, const float *dy, int M, int N) {
    int nt = omp_get_max_threads();
    if ((int64_t)M * N < 65536 || nt < 2) nt = 1;
    if (nt > M) nt = M;
    float *part = lk_aligned_calloc(sizeof(float) * (size_t)nt * (size_t)N);
    if (!part) return lk_fail(LK_ERR_NOMEM, "linear: no memory for bias gradient");
#pragma omp parallel num_threads(nt)
    {
        int t = omp_get_thread_num(), T = omp_get_num_threads();
        int r0 = (int)((int64_t)M * t / T), r1 = (int)((int64_t)M * (t + 1) / T);
        float *acc = part + (size_t)t * (size_t)N;
        for (int i = r0; i < r1; i++) {
            const float *row = dy + (size_t)i * (size_t)N;
#pragma omp simd
            for (int j = 0; j < N; j++) acc[j] += row[j];
        }
    }
    for (int t = 0; t < nt; t++) {
        const float *acc = part + (size_t)t * (size_t)N;
        for (int j = 0; j < N; j++) db[j] += acc[j];
    }
    lk_aligned_free(part);
    return LK_OK;
}

/* dx (M,K) += dy @ w; dw (N,K) += dy^T @ x (F32 weights only); db (N) += column sums of dy.
 * Any gradient may be NULL. LK_ERR_UNSUPPORTED if dw is asked for a half weight;
 * LK_ERR_NOMEM if scratch cannot be allocated. */
lk_status lk_linear_backward(float *dx, float *dw, float *db, const float *dy, const float *x,
                             const void *w, lk_dtype wdt, int M, int K, int N) {
    if (M <= 0 || N <= 0) return LK_OK;
    if (wdt != LK_F32 && wdt != LK_F16 && wdt != LK_BF16)
        return lk_fail(LK_ERR_UNSUPPORTED, "linear: weight dtype %s not supported",
                       lk_dtype_name(wdt));
    if (dw && wdt != LK_F32)
        return lk_fail(LK_ERR_UNSUPPORTED,
                       "linear: no weight gradient for a %s weight (train an F32 copy)",
                       lk_dtype_name(wdt));
    if (db) {
        lk_status s = bias_grad(db, dy, M, N);
        if (s != LK_OK) return s;
    }
    if (dw) lk_sgemm(true, false, N, K, M, 1.0f, dy, N, x, K, 1.0f, dw, K);
    if (!dx) return LK_OK;
    if (wdt == LK_F32) {
        lk_sgemm(false, false, M, K, N, 1.0f, dy, N, (const float *)w, K, 1.0f, dx, K);
        return LK_OK;
    }
    int nb = widen_rows(K, N);
    float *wf = lk_aligned_alloc(sizeof(float) * (size_t)nb * (size_t)K);
    if (!wf) return lk_fail(LK_ERR_NOMEM, "linear: no memory for %d x %d weight scratch", nb, K);
    for (int n0 = 0; n0 < N; n0 += nb) {
        int cnt = N - n0 < nb ? N - n0 : nb;
        widen_block(wf, w, wdt, n0, cnt, K);
        lk_sgemm(false, false, M, K, cnt, 1.0f, dy + n0, N, wf, K, 1.0f, dx, K);
    }
    lk_aligned_free(wf);
    return LK_OK;
}
