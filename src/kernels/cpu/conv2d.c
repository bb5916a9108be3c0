/* conv2d.c: 2-D convolution (NCHW, any kernel, stride 1/2, zero padding), forward and backward,
 * f32 with F32/F16/BF16 weights. Dispatches to Winograd F(2x2,3x3) (Lavin & Gray 2016) for 3x3
 * stride 1 (and the stride-2 forward), a direct GEMM for 1x1 and implicit im2col for the rest;
 * all on the register-blocked GEMM below (GotoBLAS layering, Goto & van de Geijn 2008). */
#define _DEFAULT_SOURCE /* madvise */
#include "kernels/cpu/conv2d_internal.h"

#include <omp.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#if defined(__linux__)
#include <sys/mman.h>
#endif

#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif

/* ------------------------------------------------------------------------------------------ */
/* micro-kernels: C[MRc x nr] (+)= A[MRc x kc] B[kc x nr] (+ rb[i] on row i when rb is not
 * NULL); A element (i,k) at a[i*lda+k] (at = false) or a[k*lda+i] (at = true); B row k at
 * b + k*ldb, NR wide (masked when nr < NR, so B needs no padding). MRc is a compile-time
 * constant at every call (one specialization per row count). */

#define LK_UK_ARGS                                                                          \
    int kc, const float *restrict a, int64_t lda, const float *restrict b, int64_t ldb,      \
        float *restrict c, int64_t ldc, int nr, bool acc, const float *restrict rb

typedef void (*uk_fn)(LK_UK_ARGS);

#if defined(__AVX512F__)

static inline __attribute__((always_inline)) void uk_body(const int MRc, const bool at,
                                                          LK_UK_ARGS) {
    __m512 c0[LK_CONV_MR], c1[LK_CONV_MR];
    __mmask16 m0 = nr >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << nr) - 1u);
    __mmask16 m1 = nr >= 32 ? (__mmask16)0xFFFF
                            : (nr <= 16 ? (__mmask16)0 : (__mmask16)((1u << (nr - 16)) - 1u));
#pragma GCC unroll 16
    for (int i = 0; i < MRc; i++) {
        c0[i] = rb ? _mm512_set1_ps(rb[i]) : _mm512_setzero_ps();
        c1[i] = c0[i];
    }
    if (nr == LK_CONV_NR) { /* full panel: plain loads (masked ones cost ~6% here) */
        for (int k = 0; k < kc; k++) {
            __m512 b0 = _mm512_loadu_ps(b + k * ldb);
            __m512 b1 = _mm512_loadu_ps(b + k * ldb + 16);
#pragma GCC unroll 16
            for (int i = 0; i < MRc; i++) {
                __m512 av = _mm512_set1_ps(at ? a[k * lda + i] : a[i * lda + k]);
                c0[i] = _mm512_fmadd_ps(av, b0, c0[i]);
                c1[i] = _mm512_fmadd_ps(av, b1, c1[i]);
            }
        }
    } else {
        for (int k = 0; k < kc; k++) {
            __m512 b0 = _mm512_maskz_loadu_ps(m0, b + k * ldb);
            __m512 b1 = _mm512_maskz_loadu_ps(m1, b + k * ldb + 16);
#pragma GCC unroll 16
            for (int i = 0; i < MRc; i++) {
                __m512 av = _mm512_set1_ps(at ? a[k * lda + i] : a[i * lda + k]);
                c0[i] = _mm512_fmadd_ps(av, b0, c0[i]);
                c1[i] = _mm512_fmadd_ps(av, b1, c1[i]);
            }
        }
    }
#pragma GCC unroll 16
    for (int i = 0; i < MRc; i++) {
        float *ci = c + i * ldc;
        if (acc) {
            c0[i] = _mm512_add_ps(c0[i], _mm512_maskz_loadu_ps(m0, ci));
            c1[i] = _mm512_add_ps(c1[i], _mm512_maskz_loadu_ps(m1, ci + 16));
        }
        _mm512_mask_storeu_ps(ci, m0, c0[i]);
        _mm512_mask_storeu_ps(ci + 16, m1, c1[i]);
    }
}

#elif defined(__AVX2__) && defined(__FMA__)

static inline __m256i uk_mask8(int n) {
    static const int32_t tab[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};
    if (n < 0) n = 0;
    if (n > 8) n = 8;
    return _mm256_loadu_si256((const __m256i *)(tab + 8 - n));
}

static inline __attribute__((always_inline)) void uk_body(const int MRc, const bool at,
                                                          LK_UK_ARGS) {
    __m256 c0[LK_CONV_MR], c1[LK_CONV_MR];
    __m256i m0 = uk_mask8(nr), m1 = uk_mask8(nr - 8);
#pragma GCC unroll 8
    for (int i = 0; i < MRc; i++) {
        c0[i] = rb ? _mm256_set1_ps(rb[i]) : _mm256_setzero_ps();
        c1[i] = c0[i];
    }
    for (int k = 0; k < kc; k++) {
        __m256 b0 = _mm256_maskload_ps(b + k * ldb, m0);
        __m256 b1 = _mm256_maskload_ps(b + k * ldb + 8, m1);
#pragma GCC unroll 8
        for (int i = 0; i < MRc; i++) {
            __m256 av = _mm256_set1_ps(at ? a[k * lda + i] : a[i * lda + k]);
            c0[i] = _mm256_fmadd_ps(av, b0, c0[i]);
            c1[i] = _mm256_fmadd_ps(av, b1, c1[i]);
        }
    }
#pragma GCC unroll 8
    for (int i = 0; i < MRc; i++) {
        float *ci = c + i * ldc;
        if (acc) {
            c0[i] = _mm256_add_ps(c0[i], _mm256_maskload_ps(ci, m0));
            c1[i] = _mm256_add_ps(c1[i], _mm256_maskload_ps(ci + 8, m1));
        }
        _mm256_maskstore_ps(ci, m0, c0[i]);
        _mm256_maskstore_ps(ci + 8, m1, c1[i]);
    }
}

#else

static inline void uk_body(const int MRc, const bool at, LK_UK_ARGS) {
    float acc_[LK_CONV_MR][LK_CONV_NR];
    for (int i = 0; i < MRc; i++)
        for (int j = 0; j < LK_CONV_NR; j++) acc_[i][j] = rb ? rb[i] : 0.0f;
    for (int k = 0; k < kc; k++) {
        const float *bk = b + k * ldb;
        for (int i = 0; i < MRc; i++) {
            float av = at ? a[k * lda + i] : a[i * lda + k];
            for (int j = 0; j < nr; j++) acc_[i][j] += av * bk[j];
        }
    }
    for (int i = 0; i < MRc; i++)
        for (int j = 0; j < nr; j++)
            c[i * ldc + j] = acc ? c[i * ldc + j] + acc_[i][j] : acc_[i][j];
}

#endif

#define LK_UK_DEF(n)                                                                        \
    static void uk_n##n(LK_UK_ARGS) {                                                       \
        uk_body(n, false, kc, a, lda, b, ldb, c, ldc, nr, acc, rb);                         \
    }                                                                                       \
    static void uk_t##n(LK_UK_ARGS) {                                                       \
        uk_body(n, true, kc, a, lda, b, ldb, c, ldc, nr, acc, rb);                          \
    }
LK_UK_DEF(1)
LK_UK_DEF(2)
LK_UK_DEF(3)
LK_UK_DEF(4)
#if LK_CONV_MR > 4
LK_UK_DEF(5)
LK_UK_DEF(6)
#endif
#if LK_CONV_MR > 6
LK_UK_DEF(7)
LK_UK_DEF(8)
LK_UK_DEF(9)
LK_UK_DEF(10)
LK_UK_DEF(11)
LK_UK_DEF(12)
LK_UK_DEF(13)
LK_UK_DEF(14)
#endif

static const uk_fn uk_n_tab[LK_CONV_MR + 1] = {
    NULL, uk_n1, uk_n2, uk_n3, uk_n4,
#if LK_CONV_MR > 4
    uk_n5, uk_n6,
#endif
#if LK_CONV_MR > 6
    uk_n7, uk_n8, uk_n9, uk_n10, uk_n11, uk_n12, uk_n13, uk_n14,
#endif
};
static const uk_fn uk_t_tab[LK_CONV_MR + 1] = {
    NULL, uk_t1, uk_t2, uk_t3, uk_t4,
#if LK_CONV_MR > 4
    uk_t5, uk_t6,
#endif
#if LK_CONV_MR > 6
    uk_t7, uk_t8, uk_t9, uk_t10, uk_t11, uk_t12, uk_t13, uk_t14,
#endif
};

/* ------------------------------------------------------------------------------------------ */
/* GEMM driver */

/* Strides that are a multiple of 4 KiB put every row in the same L1 sets: pack those. */
static bool bad_stride(int64_t s) { return s >= 1024 && s % 1024 == 0; }

void lk__conv_copy32(float *dst, const float *src, int n) {
#if defined(__AVX512F__)
    if (n >= 32) {
        _mm512_storeu_ps(dst, _mm512_loadu_ps(src));
        _mm512_storeu_ps(dst + 16, _mm512_loadu_ps(src + 16));
        return;
    }
    __mmask16 m0 = (__mmask16)(n >= 16 ? 0xFFFFu : (1u << n) - 1u);
    __mmask16 m1 = (__mmask16)(n <= 16 ? 0u : (1u << (n - 16)) - 1u);
    _mm512_mask_storeu_ps(dst, m0, _mm512_maskz_loadu_ps(m0, src));
    if (m1) _mm512_mask_storeu_ps(dst + 16, m1, _mm512_maskz_loadu_ps(m1, src + 16));
#else
    for (int i = 0; i < n; i++) dst[i] = src[i];
#endif
}

static void pack_a_strided(const lk__conv_mat *A, int64_t i0, int mr, int64_t k0, int kc,
                           float *dst) {
    if (A->rs == 1) { /* A stored transposed: rows k hold the MR values contiguously */
        for (int k = 0; k < kc; k++) {
            const float *src = A->p + i0 + (k0 + k) * A->ks;
            float *d = dst + k * LK_CONV_MR;
            for (int i = 0; i < mr; i++) d[i] = src[i];
            for (int i = mr; i < LK_CONV_MR; i++) d[i] = 0.0f;
        }
        return;
    }
    for (int i = 0; i < mr; i++) {
        const float *src = A->p + (i0 + i) * A->rs + k0 * A->ks;
        for (int k = 0; k < kc; k++) dst[k * LK_CONV_MR + i] = src[k * A->ks];
    }
    for (int i = mr; i < LK_CONV_MR; i++)
        for (int k = 0; k < kc; k++) dst[k * LK_CONV_MR + i] = 0.0f;
}

static void pack_b_strided(const lk__conv_mat *B, int64_t j0, int nr, int64_t k0, int kc,
                           float *dst) {
    if (B->rs == 1) {
        for (int k = 0; k < kc; k++) {
            const float *src = B->p + j0 + (k0 + k) * B->ks;
            __builtin_prefetch(src + 8 * B->ks); /* rows are often a page apart */
            float *d = dst + k * LK_CONV_NR;
            lk__conv_copy32(d, src, nr);
            for (int j = nr; j < LK_CONV_NR; j++) d[j] = 0.0f;
        }
        return;
    }
    if (B->ks == 1) { /* B stored transposed (rows j contiguous in k): 16x16 transposes */
        for (int k = 0; k < kc; k += 16)
            for (int j = 0; j < nr; j += 16)
                lk__conv_tr16(B->p + (j0 + j) * B->rs + k0 + k, B->rs,
                              dst + k * LK_CONV_NR + j, LK_CONV_NR, nr - j < 16 ? nr - j : 16,
                              kc - k < 16 ? kc - k : 16, false);
    } else {
        for (int j = 0; j < nr; j++) {
            const float *src = B->p + (j0 + j) * B->rs + k0 * B->ks;
            for (int k = 0; k < kc; k++) dst[k * LK_CONV_NR + j] = src[k * B->ks];
        }
    }
    for (int k = 0; k < kc; k++)
        for (int j = nr; j < LK_CONV_NR; j++) dst[k * LK_CONV_NR + j] = 0.0f;
}

void lk__conv_gemm(int64_t i0, int M, int64_t j0, int N, int K, const lk__conv_mat *A,
                   const lk__conv_mat *B, float *C, int64_t ldc, bool accumulate,
                   const float *rowbias, lk__conv_ws *ws) {
    if (M <= 0 || N <= 0) return;
    if (K <= 0) {
        for (int i = 0; i < M; i++)
            for (int j = 0; j < N; j++)
                C[i * ldc + j] =
                    (accumulate ? C[i * ldc + j] : 0.0f) + (rowbias ? rowbias[i] : 0.0f);
        return;
    }
    /* how A is read: 0 direct rows (a[i*lda+k]), 1 direct columns (a[k*lda+i]), 2 packed here,
     * 3 prepacked panels */
    int amode = 2;
    if (A->panel > 0) amode = 3;
    else if (!A->pack) {
        if (A->ks == 1 && !bad_stride(A->rs)) amode = 0;
        else if (A->rs == 1 && A->ks <= 256) amode = 1;
    }
    /* 0 prepacked panels, 1 direct rows, 2 packed here. Reading an operand along k directly is
     * only worth it while k steps stay within a page (a micro-panel then touches few pages). */
    int bmode = 2;
    if (B->panel > 0) bmode = 0;
    else if (!B->pack && B->rs == 1 && B->ks < 1024) bmode = 1;

    for (int ic = 0; ic < M; ic += LK_CONV_MC) {
        int mc = M - ic < LK_CONV_MC ? M - ic : LK_CONV_MC;
        for (int pc = 0; pc < K; pc += LK_CONV_KC) {
            int kc = K - pc < LK_CONV_KC ? K - pc : LK_CONV_KC;
            bool acc = accumulate || pc > 0;
            const float *rb0 = pc == 0 ? rowbias : NULL;
            if (amode == 2) {
                for (int ir = 0; ir < mc; ir += LK_CONV_MR) {
                    int mr = mc - ir < LK_CONV_MR ? mc - ir : LK_CONV_MR;
                    float *dst = ws->apack + (int64_t)ir * kc;
                    if (A->pack) A->pack(A->ud, i0 + ic + ir, mr, pc, kc, dst);
                    else pack_a_strided(A, i0 + ic + ir, mr, pc, kc, dst);
                }
            }
            for (int jr = 0; jr < N; jr += LK_CONV_NR) {
                int nr = N - jr < LK_CONV_NR ? N - jr : LK_CONV_NR;
                const float *bp;
                int64_t ldb = LK_CONV_NR;
                if (bmode == 0) {
                    bp = B->p + ((j0 + jr) / LK_CONV_NR) * B->panel + (int64_t)pc * LK_CONV_NR;
                } else if (bmode == 1) {
                    bp = B->p + (j0 + jr) + (int64_t)pc * B->ks;
                    ldb = B->ks;
                } else {
                    if (B->pack) B->pack(B->ud, j0 + jr, nr, pc, kc, ws->bpack);
                    else pack_b_strided(B, j0 + jr, nr, pc, kc, ws->bpack);
                    bp = ws->bpack;
                }
                for (int ir = 0; ir < mc; ir += LK_CONV_MR) {
                    int mr = mc - ir < LK_CONV_MR ? mc - ir : LK_CONV_MR;
                    float *cp = C + (int64_t)(ic + ir) * ldc + jr;
                    int64_t row = i0 + ic + ir;
                    const float *rb = rb0 ? rb0 + ic + ir : NULL;
                    if (amode == 0)
                        uk_n_tab[mr](kc, A->p + row * A->rs + pc, A->rs, bp, ldb, cp, ldc, nr, acc,
                                     rb);
                    else if (amode == 1)
                        uk_t_tab[mr](kc, A->p + row + (int64_t)pc * A->ks, A->ks, bp, ldb, cp,
                                     ldc, nr, acc, rb);
                    else if (amode == 3)
                        uk_t_tab[mr](kc, A->p + (row / LK_CONV_MR) * A->panel +
                                             (int64_t)pc * LK_CONV_MR,
                                     LK_CONV_MR, bp, ldb, cp, ldc, nr, acc, rb);
                    else
                        uk_t_tab[mr](kc, ws->apack + (int64_t)ir * kc, LK_CONV_MR, bp, ldb, cp,
                                     ldc, nr, acc, rb);
                }
            }
        }
    }
}

/* ------------------------------------------------------------------------------------------ */
/* scratch */

static atomic_flag cache_busy = ATOMIC_FLAG_INIT;
static char *cache_block;
static size_t cache_size;

#define LK_HUGE ((size_t)2 << 20)

/* Blocks of 4 MB and more are 2 MB aligned and marked for transparent huge pages. */
static void *big_alloc(size_t nbytes) {
    if (nbytes < 2 * LK_HUGE) return lk_aligned_alloc(nbytes);
    size_t n;
    if (lk_add_overflow(nbytes, LK_HUGE - 1, &n)) return NULL;
    n -= n % LK_HUGE;
    void *p = aligned_alloc(LK_HUGE, n);
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    if (p) madvise(p, n, MADV_HUGEPAGE);
#endif
    return p;
}

size_t lk__conv_fbytes(int64_t nfloats) {
    size_t b = (size_t)(nfloats > 0 ? nfloats : 0) * sizeof(float);
    return (b + LK_ALIGN - 1) / LK_ALIGN * LK_ALIGN;
}

size_t lk__conv_ws_bytes(int nt) {
    return lk__conv_fbytes((int64_t)nt * (LK_CONV_MC * LK_CONV_KC + LK_CONV_KC * LK_CONV_NR)) +
           (size_t)nt * 2 * LK_ALIGN;
}

lk_status lk__conv_scratch_open(lk__conv_scratch *s, size_t nbytes, const char *what) {
    s->used = 0;
    s->cached = false;
    if (!atomic_flag_test_and_set(&cache_busy)) {
        if (cache_size < nbytes) {
            free(cache_block);
            cache_size = 0;
            cache_block = big_alloc(nbytes);
            if (cache_block) cache_size = nbytes;
        }
        if (cache_block) {
            s->base = cache_block;
            s->cap = cache_size;
            s->cached = true;
            return LK_OK;
        }
        atomic_flag_clear(&cache_busy);
    }
    s->base = big_alloc(nbytes);
    s->cap = nbytes;
    if (!s->base)
        return lk_fail(LK_ERR_NOMEM, "conv2d: no memory for %zu bytes of %s scratch", nbytes,
                       what);
    return LK_OK;
}

float *lk__conv_scratch_floats(lk__conv_scratch *s, int64_t nfloats) {
    size_t b = lk__conv_fbytes(nfloats);
    if (s->used + b > s->cap) return NULL; /* sizing bug: callers add up what they carve */
    float *p = (float *)(s->base + s->used);
    s->used += b;
    return p;
}

lk__conv_ws *lk__conv_scratch_ws(lk__conv_scratch *s, int nt) {
    size_t hb = ((size_t)nt * sizeof(lk__conv_ws) + LK_ALIGN - 1) / LK_ALIGN * LK_ALIGN;
    if (s->used + hb > s->cap) return NULL;
    lk__conv_ws *ws = (lk__conv_ws *)(s->base + s->used);
    s->used += hb;
    for (int t = 0; t < nt; t++) {
        ws[t].apack = lk__conv_scratch_floats(s, LK_CONV_MC * LK_CONV_KC);
        ws[t].bpack = lk__conv_scratch_floats(s, LK_CONV_KC * LK_CONV_NR);
        if (!ws[t].apack || !ws[t].bpack) return NULL;
    }
    return ws;
}

void lk__conv_scratch_close(lk__conv_scratch *s) {
    if (!s->base) return;
    if (s->cached) atomic_flag_clear(&cache_busy);
    else free(s->base);
    s->base = NULL;
}

int lk__conv_threads(void) {
    int n = omp_get_max_threads();
    return n < 1 ? 1 : n;
}

int64_t lk__conv_ld(int64_t n) {
    int64_t ld = (n + 15) / 16 * 16;
    if (ld % 64 == 0) ld += 16;
    return ld;
}

/* ------------------------------------------------------------------------------------------ */
/* 16x16 transpose */

#if defined(__AVX512F__)
/* rows < rows are loaded (cols of them, masked), the rest are zero; columns < cols stored
 * (rows of them, masked). Masked loads and stores never touch memory outside the block. */
static void tr16_avx512(const float *src, int64_t lds, float *dst, int64_t ldd, int rows,
                        int cols, bool accumulate) {
    __m512 r[16], t[16];
    __mmask16 cm = (__mmask16)(cols >= 16 ? 0xFFFFu : (1u << cols) - 1u);
    __mmask16 rm = (__mmask16)(rows >= 16 ? 0xFFFFu : (1u << rows) - 1u);
    for (int i = 0; i < 16; i++)
        r[i] = i < rows ? _mm512_maskz_loadu_ps(cm, src + i * lds) : _mm512_setzero_ps();
    for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < 16; i += 4) {
        r[i] = _mm512_shuffle_ps(t[i], t[i + 2], 0x44);
        r[i + 1] = _mm512_shuffle_ps(t[i], t[i + 2], 0xEE);
        r[i + 2] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0x44);
        r[i + 3] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
    }
    /* r[4q + s] holds, in each 128-bit lane L, column 4L+s of rows 4q..4q+3 */
    for (int s = 0; s < 4; s++) {
        __m512 a0 = _mm512_shuffle_f32x4(r[s], r[4 + s], 0x88);
        __m512 a1 = _mm512_shuffle_f32x4(r[s], r[4 + s], 0xDD);
        __m512 b0 = _mm512_shuffle_f32x4(r[8 + s], r[12 + s], 0x88);
        __m512 b1 = _mm512_shuffle_f32x4(r[8 + s], r[12 + s], 0xDD);
        t[s] = _mm512_shuffle_f32x4(a0, b0, 0x88);
        t[8 + s] = _mm512_shuffle_f32x4(a0, b0, 0xDD);
        t[4 + s] = _mm512_shuffle_f32x4(a1, b1, 0x88);
        t[12 + s] = _mm512_shuffle_f32x4(a1, b1, 0xDD);
    }
    for (int i = 0; i < cols; i++) {
        float *d = dst + i * ldd;
        if (accumulate) t[i] = _mm512_add_ps(t[i], _mm512_maskz_loadu_ps(rm, d));
        _mm512_mask_storeu_ps(d, rm, t[i]);
    }
}
#endif

void lk__conv_tr16(const float *src, int64_t lds, float *dst, int64_t ldd, int rows, int cols,
                   bool accumulate) {
#if defined(__AVX512F__)
    if (rows > 1 && cols > 1) {
        tr16_avx512(src, lds, dst, ldd, rows, cols, accumulate);
        return;
    }
#endif
    for (int c = 0; c < cols; c++) {
        float *d = dst + c * ldd;
        if (accumulate)
            for (int r = 0; r < rows; r++) d[r] += src[r * lds + c];
        else
            for (int r = 0; r < rows; r++) d[r] = src[r * lds + c];
    }
}

/* ------------------------------------------------------------------------------------------ */
/* public kernels */

lk_status lk_conv2d_desc_init(lk_conv2d_desc *d) {
    if (!d) return lk_fail(LK_ERR_INVALID, "conv2d: NULL descriptor");
    if (d->B <= 0 || d->Cin <= 0 || d->H <= 0 || d->W <= 0 || d->Cout <= 0 || d->KH <= 0 ||
        d->KW <= 0)
        return lk_fail(LK_ERR_INVALID,
                       "conv2d: dims must be positive (x [%d,%d,%d,%d], weight [%d,%d,%d,%d])",
                       d->B, d->Cin, d->H, d->W, d->Cout, d->Cin, d->KH, d->KW);
    if (d->stride <= 0 || d->pad < 0)
        return lk_fail(LK_ERR_INVALID, "conv2d: stride %d must be positive and padding %d >= 0",
                       d->stride, d->pad);
    int64_t eh = (int64_t)d->H + 2 * (int64_t)d->pad - d->KH;
    int64_t ew = (int64_t)d->W + 2 * (int64_t)d->pad - d->KW;
    if (eh < 0 || ew < 0)
        return lk_fail(LK_ERR_INVALID,
                       "conv2d: kernel %dx%d is larger than the padded input %dx%d (pad %d)",
                       d->KH, d->KW, d->H + 2 * d->pad, d->W + 2 * d->pad, d->pad);
    int64_t oh = eh / d->stride + 1, ow = ew / d->stride + 1;
    int64_t kd = (int64_t)d->Cin * d->KH * d->KW;
    if (oh > INT32_MAX || ow > INT32_MAX || kd > INT32_MAX || oh * ow > INT32_MAX ||
        (int64_t)d->H * d->W > INT32_MAX)
        return lk_fail(LK_ERR_INVALID, "conv2d: sizes too large");
    d->OH = (int)oh;
    d->OW = (int)ow;
    return LK_OK;
}

/* 3x3 stride 1 (forward and both gradients) or stride 2 (forward only) with enough channels for
 * the transforms to pay off. */
static bool use_winograd(const lk_conv2d_desc *d, int stride) {
    return d->KH == 3 && d->KW == 3 && d->stride == stride && d->Cin >= 16 && d->Cout >= 16;
}

/* *wf = f32 view of w: w itself when F32, else a widened copy also stored in *tmp (caller
 * frees *tmp). */
static lk_status weight_f32(const void *w, lk_dtype wdt, size_t n, const float **wf,
                            float **tmp) {
    *tmp = NULL;
    *wf = NULL;
    if (wdt == LK_F32) {
        *wf = (const float *)w;
        return LK_OK;
    }
    if (wdt != LK_F16 && wdt != LK_BF16)
        return lk_fail(LK_ERR_UNSUPPORTED, "conv2d: weight dtype %s not supported",
                       lk_dtype_name(wdt));
    float *f = lk_aligned_alloc(sizeof(float) * n);
    if (!f) return lk_fail(LK_ERR_NOMEM, "conv2d: no memory to widen the %zu-element weight", n);
    const size_t chunk = 65536;
    long nc = (long)((n + chunk - 1) / chunk);
#pragma omp parallel for schedule(static) if (nc > 1)
    for (long c = 0; c < nc; c++) {
        size_t i0 = (size_t)c * chunk, len = n - i0 < chunk ? n - i0 : chunk;
        lk_widen_f32(f + i0, (const uint16_t *)w + i0, wdt, len);
    }
    *tmp = f;
    *wf = f;
    return LK_OK;
}

/* out (B, Cout, OH, OW) = conv(x, w) + b. x (B, Cin, H, W) contiguous f32; w (Cout, Cin, KH,
 * KW) F32/F16/BF16; b (Cout) or NULL. d must have been through lk_conv2d_desc_init. Returns
 * LK_ERR_NOMEM / LK_ERR_UNSUPPORTED (with message) on failure, else LK_OK. */
lk_status lk_conv2d_forward(float *out, const float *x, const void *w, lk_dtype wdt,
                            const float *b, const lk_conv2d_desc *d) {
    size_t nw = (size_t)d->Cout * (size_t)d->Cin * (size_t)(d->KH * d->KW);
    const float *wf;
    float *tmp;
    lk_status st = weight_f32(w, wdt, nw, &wf, &tmp);
    if (st != LK_OK) return st;
    if (use_winograd(d, 1) || use_winograd(d, 2))
        st = lk__conv_wino_forward(out, false, x, wf, false, b, d->B, d->Cin, d->H, d->W,
                                   d->Cout, d->pad, d->stride);
    else
        st = lk__conv_gemm_forward(out, x, wf, b, d);
    lk_aligned_free(tmp);
    return st;
}

/* db (Cout) += sum over batch and positions of dout (B, Cout, P): float partial sums in 16
 * lanes per channel, combined in double. */
static void bias_grad(float *db, const float *dout, int B, int Cout, int64_t P) {
#pragma omp parallel for schedule(static) if ((int64_t)B * Cout * P >= 65536)
    for (int co = 0; co < Cout; co++) {
        double s = 0.0;
        for (int b = 0; b < B; b++) {
            const float *p = dout + ((int64_t)b * Cout + co) * P;
            float lane[16] = {0};
            int64_t i = 0;
            for (; i + 16 <= P; i += 16)
                for (int l = 0; l < 16; l++) lane[l] += p[i + l];
            for (; i < P; i++) lane[0] += p[i];
            for (int l = 0; l < 16; l++) s += (double)lane[l];
        }
        db[co] += (float)s;
    }
}

/* Gradients of lk_conv2d_forward, ACCUMULATED: dx (B, Cin, H, W) += dL/dx, dw (Cout, Cin, KH,
 * KW, f32) += dL/dw, db (Cout) += dL/db, from dout (B, Cout, OH, OW). Any of dx, dw, db may be
 * NULL (skipped). x is needed only for dw, w only for dx (either may be NULL otherwise). dw does
 * not depend on the weight's dtype; the ops layer asks for it only for F32 weights. */
lk_status lk_conv2d_backward(float *dx, float *dw, float *db, const float *dout, const float *x,
                             const void *w, lk_dtype wdt, const lk_conv2d_desc *d) {
    int64_t P = (int64_t)d->OH * d->OW;
    if (db) bias_grad(db, dout, d->B, d->Cout, P);
    lk_status st = LK_OK;
    if (dw) {
        if (use_winograd(d, 1))
            st = lk__conv_wino_dweight(dw, dout, x, d->B, d->Cin, d->H, d->W, d->Cout, d->pad);
        else
            st = lk__conv_gemm_dweight(dw, dout, x, d);
        if (st != LK_OK) return st;
    }
    if (dx) {
        size_t nw = (size_t)d->Cout * (size_t)d->Cin * (size_t)(d->KH * d->KW);
        const float *wf;
        float *tmp;
        st = weight_f32(w, wdt, nw, &wf, &tmp);
        if (st != LK_OK) return st;
        if (use_winograd(d, 1))
            st = lk__conv_wino_forward(dx, true, dout, wf, true, NULL, d->B, d->Cout, d->OH,
                                       d->OW, d->Cin, 2 - d->pad, 1);
        else
            st = lk__conv_gemm_dinput(dx, dout, wf, d);
        lk_aligned_free(tmp);
    }
    return st;
}
