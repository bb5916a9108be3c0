/* elementwise.c: broadcast binary ops (numpy broadcasting as per-operand strides, 0 on broadcast
 * dims), their gradients reduced over broadcast dims, sums, MSE and strided copies. CPU, f32. */
#include "kernels/kernels.h"

#include <string.h>
#include <omp.h>
#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif

/* Below this many elements a kernel runs on one thread (a parallel region costs a few us). */
#define PAR_MIN 32768
/* Inner rows are split into blocks of this many elements so that a few long rows (or one) still
 * spread over all threads. */
#define ROW_BLOCK 16384
/* Width of the double accumulator block of a column reduction (8 KB, kept in L1). */
#define RED_BLOCK 1024
#define MAXD 8

/* ------------------------------------------------------------------------------------------ */
/* vector helpers: one SIMD width chosen at compile time, scalar fallback for the tails        */

#if defined(__AVX512F__)
typedef __m512 vf;
#define VW 16
#define VLOAD(p) _mm512_loadu_ps(p)
#define VSTORE(p, v) _mm512_storeu_ps(p, v)
#define VSET1(x) _mm512_set1_ps(x)
#define VADD(a, b) _mm512_add_ps(a, b)
#define VSUB(a, b) _mm512_sub_ps(a, b)
#define VMUL(a, b) _mm512_mul_ps(a, b)
#define VFMA(a, b, c) _mm512_fmadd_ps(a, b, c)
#elif defined(__AVX2__) && defined(__FMA__)
typedef __m256 vf;
#define VW 8
#define VLOAD(p) _mm256_loadu_ps(p)
#define VSTORE(p, v) _mm256_storeu_ps(p, v)
#define VSET1(x) _mm256_set1_ps(x)
#define VADD(a, b) _mm256_add_ps(a, b)
#define VSUB(a, b) _mm256_sub_ps(a, b)
#define VMUL(a, b) _mm256_mul_ps(a, b)
#define VFMA(a, b, c) _mm256_fmadd_ps(a, b, c)
#endif

/* Row operations of the strided map. out d, inputs p, q; alpha for the accumulating ones. */
enum {
    R_ADD = 0,  /* d = p + q */
    R_SUB,      /* d = p - q */
    R_MUL,      /* d = p * q */
    R_COPY,     /* d = p */
    R_ACC,      /* d += alpha * p */
    R_ACC_MUL,  /* d += alpha * p * q */
};

#define INLINE static inline __attribute__((always_inline))

INLINE float sop(int op, float p, float q, float d, float alpha) {
    switch (op) {
    case R_ADD: return p + q;
    case R_SUB: return p - q;
    case R_MUL: return p * q;
    case R_COPY: return p;
    case R_ACC: return d + alpha * p;
    default: return d + alpha * (p * q);
    }
}

#ifdef VW
INLINE vf vop(int op, vf p, vf q, const float *d, vf alpha) {
    switch (op) {
    case R_ADD: return VADD(p, q);
    case R_SUB: return VSUB(p, q);
    case R_MUL: return VMUL(p, q);
    case R_COPY: return p;
    case R_ACC: return VFMA(alpha, p, VLOAD(d));
    default: return VFMA(alpha, VMUL(p, q), VLOAD(d));
    }
}
#endif

/* Unit-stride row with p and/or q possibly a broadcast scalar (pscal / qscal). Elementwise in
 * place is allowed (d == p or d == q): every element is loaded before it is stored. */
INLINE void row_fast(int op, bool pscal, bool qscal, float *d, const float *p, const float *q,
                     int64_t n, float alpha) {
    int64_t i = 0;
    const float ps = pscal ? p[0] : 0.0f;
    const float qs = (qscal && q) ? q[0] : 0.0f;
#ifdef VW
    const vf va = VSET1(alpha);
    const vf pv = VSET1(ps), qv = VSET1(qs);
    for (; i + VW <= n; i += VW) {
        vf x = pscal ? pv : VLOAD(p + i);
        vf y = (op == R_COPY || op == R_ACC) ? x : (qscal ? qv : VLOAD(q + i));
        VSTORE(d + i, vop(op, x, y, d + i, va));
    }
#endif
    for (; i < n; i++) {
        float x = pscal ? ps : p[i];
        float y = (op == R_COPY || op == R_ACC) ? 0.0f : (qscal ? qs : q[i]);
        d[i] = sop(op, x, y, d[i], alpha);
    }
}

INLINE void row_generic(int op, float *d, int64_t ds, const float *p, int64_t ps, const float *q,
                        int64_t qs, int64_t n, float alpha) {
    for (int64_t i = 0; i < n; i++) {
        float y = (op == R_COPY || op == R_ACC) ? 0.0f : q[i * qs];
        d[i * ds] = sop(op, p[i * ps], y, d[i * ds], alpha);
    }
}

INLINE void row_dispatch(int op, float *d, int64_t ds, const float *p, int64_t ps, const float *q,
                         int64_t qs, int64_t n, float alpha) {
    bool noq = op == R_COPY || op == R_ACC;
    if (ds == 1 && ps == 1 && (noq || qs == 1)) row_fast(op, false, false, d, p, q, n, alpha);
    else if (ds == 1 && ps == 1 && qs == 0) row_fast(op, false, true, d, p, q, n, alpha);
    else if (ds == 1 && ps == 0 && (noq || qs == 1)) row_fast(op, true, false, d, p, q, n, alpha);
    else row_generic(op, d, ds, p, ps, q, qs, n, alpha);
}

static void row_op(int op, float *d, int64_t ds, const float *p, int64_t ps, const float *q,
                   int64_t qs, int64_t n, float alpha) {
    if (op == R_COPY && ds == 1 && ps == 1 && n >= 1024) {
        memcpy(d, p, sizeof(float) * (size_t)n);
        return;
    }
    switch (op) {
    case R_ADD: row_dispatch(R_ADD, d, ds, p, ps, q, qs, n, alpha); break;
    case R_SUB: row_dispatch(R_SUB, d, ds, p, ps, q, qs, n, alpha); break;
    case R_MUL: row_dispatch(R_MUL, d, ds, p, ps, q, qs, n, alpha); break;
    case R_COPY: row_dispatch(R_COPY, d, ds, p, ps, q, qs, n, alpha); break;
    case R_ACC: row_dispatch(R_ACC, d, ds, p, ps, q, qs, n, alpha); break;
    default: row_dispatch(R_ACC_MUL, d, ds, p, ps, q, qs, n, alpha); break;
    }
}

/* ------------------------------------------------------------------------------------------ */
/* iteration space: size-1 dims dropped, adjacent dims merged when every operand allows it     */

typedef struct iter {
    int nd;                       /* >= 1 */
    int64_t shape[MAXD];
    int64_t st[3][MAXD];          /* operand 0 = destination */
} iter;

/* Returns the number of elements (0: nothing to do). */
static int64_t iter_init(iter *it, int ndim, const int64_t *shape, int nops,
                         const int64_t *const *strides) {
    int64_t numel = 1;
    int nd = 0;
    for (int i = 0; i < ndim; i++) {
        numel *= shape[i];
        if (shape[i] == 1) continue;
        it->shape[nd] = shape[i];
        for (int k = 0; k < 3; k++) it->st[k][nd] = (k < nops && strides[k]) ? strides[k][i] : 0;
        nd++;
    }
    if (numel == 0) return 0;
    /* fold dim j into the previous kept dim when, for every operand, the outer stride equals
     * the inner stride times the inner size (row-major contiguity between the two) */
    int out = 0;
    for (int j = 0; j < nd; j++) {
        if (out > 0) {
            bool ok = true;
            for (int k = 0; k < 3; k++)
                if (it->st[k][out - 1] != it->st[k][j] * it->shape[j]) ok = false;
            if (ok) {
                it->shape[out - 1] *= it->shape[j];
                for (int k = 0; k < 3; k++) it->st[k][out - 1] = it->st[k][j];
                continue;
            }
        }
        it->shape[out] = it->shape[j];
        for (int k = 0; k < 3; k++) it->st[k][out] = it->st[k][j];
        out++;
    }
    if (out == 0) {
        it->shape[0] = 1;
        for (int k = 0; k < 3; k++) it->st[k][0] = 0;
        out = 1;
    }
    it->nd = out;
    return numel;
}

static void contig_strides(int ndim, const int64_t *shape, int64_t *st) {
    int64_t s = 1;
    for (int i = ndim - 1; i >= 0; i--) {
        st[i] = s;
        s *= shape[i];
    }
}

/* Copy / accumulate where one side is transposed (its unit stride is on the second-innermost
 * dim): move 32x32 tiles through an L1 buffer instead of striding through memory. */
#define TILE 32
static bool tiled_map(int op, float *d, const float *p, const iter *it, int64_t numel,
                      float alpha) {
    const int nd = it->nd;
    if ((op != R_COPY && op != R_ACC) || nd < 2) return false;
    const int a = nd - 2, b = nd - 1;
    const int64_t dsa = it->st[0][a], dsb = it->st[0][b], psa = it->st[1][a], psb = it->st[1][b];
    if (!((psb != 1 && psa == 1) || (dsb != 1 && dsa == 1))) return false;
    if (it->shape[a] < 16 || it->shape[b] < 16 || dsa == 0 || dsb == 0) return false;
    const int64_t na = it->shape[a], nb = it->shape[b];
    const int64_t ta = (na + TILE - 1) / TILE, tb = (nb + TILE - 1) / TILE;
    int64_t outer = 1;
    for (int i = 0; i < nd - 2; i++) outer *= it->shape[i];
    const int64_t items = outer * ta * tb;
#pragma omp parallel for schedule(static) if (numel >= PAR_MIN && items > 1)
    for (int64_t w = 0; w < items; w++) {
        int64_t rem = w / (ta * tb), od = 0, op_ = 0;
        for (int i = nd - 3; i >= 0; i--) {
            int64_t ix = rem % it->shape[i];
            rem /= it->shape[i];
            od += ix * it->st[0][i];
            op_ += ix * it->st[1][i];
        }
        const int64_t i0 = ((w / tb) % ta) * TILE, j0 = (w % tb) * TILE;
        const int64_t i1 = i0 + TILE < na ? i0 + TILE : na, j1 = j0 + TILE < nb ? j0 + TILE : nb;
        float *dd = d + od;
        const float *pp = p + op_;
        /* through an L1 buffer: read p along its unit-stride dim, write d along its own, so
         * neither side strides through memory (and power-of-two strides do not thrash sets) */
        float buf[TILE][TILE + 1];
        if (psa == 1) {
            for (int64_t j = j0; j < j1; j++)
                for (int64_t i = i0; i < i1; i++) buf[j - j0][i - i0] = pp[i + j * psb];
        } else {
            for (int64_t i = i0; i < i1; i++)
                for (int64_t j = j0; j < j1; j++) buf[j - j0][i - i0] = pp[i * psa + j * psb];
        }
        if (dsb == 1) {
            for (int64_t i = i0; i < i1; i++) {
                float *t = dd + i * dsa;
                if (op == R_COPY)
                    for (int64_t j = j0; j < j1; j++) t[j] = buf[j - j0][i - i0];
                else
                    for (int64_t j = j0; j < j1; j++) t[j] += alpha * buf[j - j0][i - i0];
            }
        } else {
            for (int64_t j = j0; j < j1; j++) {
                float *t = dd + j * dsb;
                if (op == R_COPY)
                    for (int64_t i = i0; i < i1; i++) t[i * dsa] = buf[j - j0][i - i0];
                else
                    for (int64_t i = i0; i < i1; i++) t[i * dsa] += alpha * buf[j - j0][i - i0];
            }
        }
    }
    return true;
}

/* d[st0] op= p[st1] (op) q[st2] over the whole space; the destination map must be one-to-one.
 * Work items are (outer row, block of the inner row); each thread takes a contiguous range of
 * items and walks the outer dims with an odometer. */
static void strided_map(int op, float *d, const float *p, const float *q, const iter *it,
                        int64_t numel, float alpha) {
    if (!q && tiled_map(op, d, p, it, numel, alpha)) return;
    const int nd = it->nd;
    const int64_t inner = it->shape[nd - 1];
    const int64_t nblk = (inner + ROW_BLOCK - 1) / ROW_BLOCK;
    int64_t outer = 1;
    for (int i = 0; i < nd - 1; i++) outer *= it->shape[i];
    const int64_t items = outer * nblk;
    const int64_t ds = it->st[0][nd - 1], ps = it->st[1][nd - 1], qs = it->st[2][nd - 1];
#pragma omp parallel if (numel >= PAR_MIN && items > 1)
    {
        int nt = omp_get_num_threads(), tid = omp_get_thread_num();
        int64_t i0 = items * tid / nt, i1 = items * (tid + 1) / nt;
        if (i0 < i1) {
            int64_t o = i0 / nblk, b = i0 % nblk;
            int64_t idx[MAXD];
            int64_t od = 0, op_ = 0, oq = 0;
            int64_t rem = o;
            for (int i = nd - 2; i >= 0; i--) {
                idx[i] = rem % it->shape[i];
                rem /= it->shape[i];
                od += idx[i] * it->st[0][i];
                op_ += idx[i] * it->st[1][i];
                oq += idx[i] * it->st[2][i];
            }
            for (int64_t w = i0; w < i1; w++) {
                int64_t j0 = b * ROW_BLOCK;
                int64_t n = inner - j0 < ROW_BLOCK ? inner - j0 : ROW_BLOCK;
                row_op(op, d + od + j0 * ds, ds, p + op_ + j0 * ps, ps, q ? q + oq + j0 * qs : NULL,
                       qs, n, alpha);
                if (++b == nblk) {
                    b = 0;
                    for (int i = nd - 2; i >= 0; i--) {
                        od += it->st[0][i];
                        op_ += it->st[1][i];
                        oq += it->st[2][i];
                        if (++idx[i] < it->shape[i]) break;
                        od -= idx[i] * it->st[0][i];
                        op_ -= idx[i] * it->st[1][i];
                        oq -= idx[i] * it->st[2][i];
                        idx[i] = 0;
                    }
                }
            }
        }
    }
}

/* ------------------------------------------------------------------------------------------ */
/* double-accumulated serial sums                                                             */

static double sum_serial(const float *x, int64_t n) {
    int64_t i = 0;
    double s = 0.0;
#if defined(__AVX512F__)
    __m512d a0 = _mm512_setzero_pd(), a1 = a0, a2 = a0, a3 = a0;
    for (; i + 32 <= n; i += 32) {
        __m512 v = _mm512_loadu_ps(x + i), w = _mm512_loadu_ps(x + i + 16);
        a0 = _mm512_add_pd(a0, _mm512_cvtps_pd(_mm512_castps512_ps256(v)));
        a1 = _mm512_add_pd(a1, _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1))));
        a2 = _mm512_add_pd(a2, _mm512_cvtps_pd(_mm512_castps512_ps256(w)));
        a3 = _mm512_add_pd(a3, _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(w), 1))));
    }
    for (; i + 16 <= n; i += 16) {
        __m512 v = _mm512_loadu_ps(x + i);
        a0 = _mm512_add_pd(a0, _mm512_cvtps_pd(_mm512_castps512_ps256(v)));
        a1 = _mm512_add_pd(a1, _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1))));
    }
    s = _mm512_reduce_add_pd(_mm512_add_pd(_mm512_add_pd(a0, a2), _mm512_add_pd(a1, a3)));
#elif defined(__AVX2__)
    __m256d a0 = _mm256_setzero_pd(), a1 = _mm256_setzero_pd();
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_loadu_ps(x + i);
        a0 = _mm256_add_pd(a0, _mm256_cvtps_pd(_mm256_castps256_ps128(v)));
        a1 = _mm256_add_pd(a1, _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)));
    }
    double t[4];
    _mm256_storeu_pd(t, _mm256_add_pd(a0, a1));
    s = (t[0] + t[1]) + (t[2] + t[3]);
#endif
    for (; i < n; i++) s += (double)x[i];
    return s;
}

static double dot_serial(const float *x, const float *y, int64_t n) {
    int64_t i = 0;
    double s = 0.0;
#if defined(__AVX512F__)
    __m512d a0 = _mm512_setzero_pd(), a1 = _mm512_setzero_pd();
    for (; i + 16 <= n; i += 16) {
        __m512 u = _mm512_loadu_ps(x + i), v = _mm512_loadu_ps(y + i);
        __m512d ul = _mm512_cvtps_pd(_mm512_castps512_ps256(u));
        __m512d uh = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(u), 1)));
        __m512d vl = _mm512_cvtps_pd(_mm512_castps512_ps256(v));
        __m512d vh = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
        a0 = _mm512_fmadd_pd(ul, vl, a0);
        a1 = _mm512_fmadd_pd(uh, vh, a1);
    }
    s = _mm512_reduce_add_pd(_mm512_add_pd(a0, a1));
#endif
    for (; i < n; i++) s += (double)x[i] * (double)y[i];
    return s;
}

/* sum of (a-b)^2 with the difference rounded to f32 first (as a f32 framework computes it) */
static double sqdiff_serial(const float *a, const float *b, int64_t n) {
    int64_t i = 0;
    double s = 0.0;
#if defined(__AVX512F__)
    __m512d a0 = _mm512_setzero_pd(), a1 = _mm512_setzero_pd();
    for (; i + 16 <= n; i += 16) {
        __m512 dv = _mm512_sub_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i));
        __m512d lo = _mm512_cvtps_pd(_mm512_castps512_ps256(dv));
        __m512d hi = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(dv), 1)));
        a0 = _mm512_fmadd_pd(lo, lo, a0);
        a1 = _mm512_fmadd_pd(hi, hi, a1);
    }
    s = _mm512_reduce_add_pd(_mm512_add_pd(a0, a1));
#endif
    for (; i < n; i++) {
        float dlt = a[i] - b[i];
        s += (double)dlt * (double)dlt;
    }
    return s;
}

/* sum_i p[i*ps] * (q ? q[i*qs] : 1) in double */
static double red_row(const float *p, int64_t ps, const float *q, int64_t qs, int64_t n) {
    if (ps == 1 && !q) return sum_serial(p, n);
    if (ps == 1 && qs == 1) return dot_serial(p, q, n);
    if (ps == 1 && qs == 0) return sum_serial(p, n) * (double)q[0];
    double s = 0.0;
    if (!q)
        for (int64_t i = 0; i < n; i++) s += (double)p[i * ps];
    else
        for (int64_t i = 0; i < n; i++) s += (double)p[i * ps] * (double)q[i * qs];
    return s;
}

/* ------------------------------------------------------------------------------------------ */
/* reduction over the dims where the destination stride is 0                                   */

typedef struct red_plan {
    const iter *it;
    int kd[MAXD], rd[MAXD], nk, nr; /* kept dims (destination stride != 0), reduced dims */
    int64_t rcount;                  /* positions in the reduced space */
} red_plan;

/* odometer state of reduced position r: per-dim indices and the offsets of operands 1, 2 */
static void red_seek(const red_plan *pl, int64_t r, int64_t *ridx, int64_t *rp, int64_t *rq) {
    *rp = *rq = 0;
    for (int k = pl->nr - 1; k >= 0; k--) {
        int i = pl->rd[k];
        ridx[k] = k ? r % pl->it->shape[i] : r;
        r = k ? r / pl->it->shape[i] : 0;
        *rp += ridx[k] * pl->it->st[1][i];
        *rq += ridx[k] * pl->it->st[2][i];
    }
}

/* advance the odometer of reduced dims [0, upto) by one step */
static void red_step(const red_plan *pl, int upto, int64_t *ridx, int64_t *rp, int64_t *rq) {
    for (int k = upto - 1; k >= 0; k--) {
        int i = pl->rd[k];
        *rp += pl->it->st[1][i];
        *rq += pl->it->st[2][i];
        if (++ridx[k] < pl->it->shape[i]) return;
        *rp -= ridx[k] * pl->it->st[1][i];
        *rq -= ridx[k] * pl->it->st[2][i];
        ridx[k] = 0;
    }
}

/* offsets of kept position w (row-major over kd[0..nkd)) for all three operands */
static void kept_seek(const red_plan *pl, int nkd, int64_t w, int64_t *o) {
    o[0] = o[1] = o[2] = 0;
    for (int k = nkd - 1; k >= 0; k--) {
        int i = pl->kd[k];
        int64_t ix = k ? w % pl->it->shape[i] : w;
        w = k ? w / pl->it->shape[i] : 0;
        for (int m = 0; m < 3; m++) o[m] += ix * pl->it->st[m][i];
    }
}

/* Innermost dim kept: acc[0..n) = sum over reduced positions [r0, r1) of a block of n inner
 * elements starting at offsets o. Rows are taken in tiles of RED_ROWS; within a tile, columns
 * are swept in groups of 32 held in double registers, so the accumulators are stored once per
 * tile rather than once per row. */
#define RED_ROWS 64
static void red_block(const red_plan *pl, const float *p, const float *q, const int64_t *o,
                      int64_t n, int64_t r0, int64_t r1, double *acc) {
    const int last = pl->it->nd - 1;
    const int64_t ps = pl->it->st[1][last], qs = pl->it->st[2][last];
    int64_t ridx[MAXD], rp, rq;
    int64_t offp[RED_ROWS], offq[RED_ROWS];
    red_seek(pl, r0, ridx, &rp, &rq);
    for (int64_t j = 0; j < n; j++) acc[j] = 0.0;
    for (int64_t rt = r0; rt < r1; rt += RED_ROWS) {
        const int64_t m = r1 - rt < RED_ROWS ? r1 - rt : RED_ROWS;
        for (int64_t k = 0; k < m; k++) {
            offp[k] = o[1] + rp;
            offq[k] = o[2] + rq;
            red_step(pl, pl->nr, ridx, &rp, &rq);
        }
        int64_t j = 0;
#if defined(__AVX512F__)
        if (ps == 1 && (!q || qs == 1)) {
            for (; j + 32 <= n; j += 32) {
                __m512d a0 = _mm512_setzero_pd(), a1 = a0, a2 = a0, a3 = a0;
                for (int64_t k = 0; k < m; k++) {
                    const float *pp = p + offp[k] + j;
                    __m512 v0 = _mm512_loadu_ps(pp), v1 = _mm512_loadu_ps(pp + 16);
                    __m512d d0 = _mm512_cvtps_pd(_mm512_castps512_ps256(v0));
                    __m512d d1 = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v0), 1)));
                    __m512d d2 = _mm512_cvtps_pd(_mm512_castps512_ps256(v1));
                    __m512d d3 = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v1), 1)));
                    if (q) {
                        const float *qq = q + offq[k] + j;
                        __m512 w0 = _mm512_loadu_ps(qq), w1 = _mm512_loadu_ps(qq + 16);
                        a0 = _mm512_fmadd_pd(d0, _mm512_cvtps_pd(_mm512_castps512_ps256(w0)), a0);
                        a1 = _mm512_fmadd_pd(d1, _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(w0), 1))), a1);
                        a2 = _mm512_fmadd_pd(d2, _mm512_cvtps_pd(_mm512_castps512_ps256(w1)), a2);
                        a3 = _mm512_fmadd_pd(d3, _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(w1), 1))), a3);
                    } else {
                        a0 = _mm512_add_pd(a0, d0);
                        a1 = _mm512_add_pd(a1, d1);
                        a2 = _mm512_add_pd(a2, d2);
                        a3 = _mm512_add_pd(a3, d3);
                    }
                }
                _mm512_storeu_pd(acc + j, _mm512_add_pd(_mm512_loadu_pd(acc + j), a0));
                _mm512_storeu_pd(acc + j + 8, _mm512_add_pd(_mm512_loadu_pd(acc + j + 8), a1));
                _mm512_storeu_pd(acc + j + 16, _mm512_add_pd(_mm512_loadu_pd(acc + j + 16), a2));
                _mm512_storeu_pd(acc + j + 24, _mm512_add_pd(_mm512_loadu_pd(acc + j + 24), a3));
            }
        }
#endif
        if (j < n) {
            for (int64_t k = 0; k < m; k++) {
                const float *pp = p + offp[k];
                if (!q) {
                    for (int64_t jj = j; jj < n; jj++) acc[jj] += (double)pp[jj * ps];
                } else {
                    const float *qq = q + offq[k];
                    for (int64_t jj = j; jj < n; jj++)
                        acc[jj] += (double)pp[jj * ps] * (double)qq[jj * qs];
                }
            }
        }
    }
}

/* Innermost dim reduced: sum over reduced positions [r0, r1) for the kept position at o; runs
 * along the innermost dim are summed as contiguous rows. */
static double red_scalar(const red_plan *pl, const float *p, const float *q, const int64_t *o,
                         int64_t r0, int64_t r1) {
    const int last = pl->it->nd - 1;
    const int64_t rin = pl->it->shape[last];
    const int64_t ps = pl->it->st[1][last], qs = pl->it->st[2][last];
    int64_t ridx[MAXD], rp, rq;
    red_seek(pl, r0, ridx, &rp, &rq);
    double s = 0.0;
    int64_t r = r0;
    while (r < r1) {
        int64_t run = rin - ridx[pl->nr - 1];
        if (run > r1 - r) run = r1 - r;
        s += red_row(p + o[1] + rp, ps, q ? q + o[2] + rq : NULL, qs, run);
        r += run;
        ridx[pl->nr - 1] += run;
        rp += run * ps;
        rq += run * qs;
        if (ridx[pl->nr - 1] == rin) {
            rp -= rin * ps;
            rq -= rin * qs;
            ridx[pl->nr - 1] = 0;
            red_step(pl, pl->nr - 1, ridx, &rp, &rq);
        }
    }
    return s;
}

/* d[st0] (+)= alpha * sum over dims with st0 == 0 of p[st1] * (q ? q[st2] : 1), accumulated in
 * double. Work units are (kept item, chunk of the reduced space); when there are fewer items
 * than threads the reduced space is cut into chunks whose partial sums are combined in a fixed
 * order afterwards, so every thread owns disjoint outputs or disjoint partials (race-free). */
static void strided_reduce(float *d, const float *p, const float *q, const iter *it,
                           int64_t numel, float alpha, bool accumulate) {
    red_plan pl;
    pl.it = it;
    pl.nk = pl.nr = 0;
    pl.rcount = 1;
    for (int i = 0; i < it->nd; i++) {
        if (it->st[0][i] != 0) pl.kd[pl.nk++] = i;
        else {
            pl.rd[pl.nr++] = i;
            pl.rcount *= it->shape[i];
        }
    }
    const int last = it->nd - 1;
    const bool inner_kept = it->st[0][last] != 0;
    const int64_t inner = it->shape[last];
    const int64_t ds = it->st[0][last];
    /* items: kept positions, with the inner kept dim cut into blocks of RED_BLOCK */
    const int64_t blk = inner_kept ? RED_BLOCK : 1;
    const int64_t nblk = inner_kept ? (inner + RED_BLOCK - 1) / RED_BLOCK : 1;
    int64_t kouter = 1;
    for (int k = 0; k < pl.nk - (inner_kept ? 1 : 0); k++) kouter *= it->shape[pl.kd[k]];
    const int64_t items = kouter * nblk;
    const bool par = numel >= PAR_MIN;
    const int nt = par ? omp_get_max_threads() : 1;
    int64_t C = 1;
    if (nt > 1 && items < 4 * nt) {
        C = (4 * nt + items - 1) / items;
        if (C > pl.rcount) C = pl.rcount;
        if (C > 64) C = 64;
    }
    if (!inner_kept && C == 1 && pl.nr == 1 && pl.nk == 1) {
        /* rows: one kept dim, the reduced dim innermost (sum over the last dim) */
        const int i = pl.kd[0];
        const int64_t s0 = it->st[0][i], s1 = it->st[1][i], s2 = it->st[2][i];
        const int64_t ps = it->st[1][last], qs = it->st[2][last];
#pragma omp parallel for schedule(static) if (par && items > 1)
        for (int64_t w = 0; w < items; w++) {
            float v = (float)((double)alpha * red_row(p + w * s1, ps, q ? q + w * s2 : NULL, qs, inner));
            d[w * s0] = accumulate ? d[w * s0] + v : v;
        }
        return;
    }
    double *partial = NULL;
    if (C > 1) {
        partial = lk_aligned_alloc(sizeof(double) * (size_t)(items * C * blk));
        if (!partial) C = 1; /* slower but still correct */
    }
    const int64_t units = items * C;
    const int nkd = pl.nk - (inner_kept ? 1 : 0);
#pragma omp parallel for schedule(static) if (par && units > 1)
    for (int64_t u = 0; u < units; u++) {
        /* chunk-major, so a static schedule spreads every item's chunks over the threads */
        const int64_t c = C > 1 ? u / items : 0, w = C > 1 ? u % items : u;
        const int64_t r0 = pl.rcount * c / C, r1 = pl.rcount * (c + 1) / C;
        int64_t o[3];
        kept_seek(&pl, nkd, nblk > 1 ? w / nblk : w, o);
        if (inner_kept) {
            double acc[RED_BLOCK];
            const int64_t j0 = (w % nblk) * RED_BLOCK;
            const int64_t n = inner - j0 < RED_BLOCK ? inner - j0 : RED_BLOCK;
            for (int m = 0; m < 3; m++) o[m] += j0 * it->st[m][last];
            red_block(&pl, p, q, o, n, r0, r1, partial ? partial + (w * C + c) * blk : acc);
            if (!partial) {
                float *dd = d + o[0];
                for (int64_t j = 0; j < n; j++) {
                    float v = (float)((double)alpha * acc[j]);
                    dd[j * ds] = accumulate ? dd[j * ds] + v : v;
                }
            }
        } else {
            double s = red_scalar(&pl, p, q, o, r0, r1);
            if (partial) {
                partial[w * C + c] = s;
            } else {
                float v = (float)((double)alpha * s);
                d[o[0]] = accumulate ? d[o[0]] + v : v;
            }
        }
    }
    if (!partial) return;
#pragma omp parallel for schedule(static) if (par && items > 1)
    for (int64_t w = 0; w < items; w++) {
        int64_t o[3];
        kept_seek(&pl, nkd, w / nblk, o);
        int64_t j0 = 0, n = 1;
        if (inner_kept) {
            j0 = (w % nblk) * RED_BLOCK;
            n = inner - j0 < RED_BLOCK ? inner - j0 : RED_BLOCK;
        }
        float *dd = d + o[0] + j0 * ds;
        for (int64_t j = 0; j < n; j++) {
            double s = 0.0;
            for (int64_t c = 0; c < C; c++) s += partial[(w * C + c) * blk + j];
            float v = (float)((double)alpha * s);
            dd[j * ds] = accumulate ? dd[j * ds] + v : v;
        }
    }
    lk_aligned_free(partial);
}

/* ------------------------------------------------------------------------------------------ */
/* public kernels                                                                             */

/* out may alias a or b elementwise (same strides as out): the ops use that for in-place adds. */
void lk_binary_forward(lk_binop op, float *out, const float *a, const int64_t *astride,
                       const float *b, const int64_t *bstride, int ndim, const int64_t *shape) {
    int64_t os[MAXD];
    contig_strides(ndim, shape, os);
    const int64_t *st[3] = {os, astride, bstride};
    iter it;
    int64_t numel = iter_init(&it, ndim, shape, 3, st);
    if (!numel) return;
    int rop = op == LK_BIN_ADD ? R_ADD : op == LK_BIN_SUB ? R_SUB : R_MUL;
    strided_map(rop, out, a, b, &it, numel, 1.0f);
}

static bool has_broadcast(int ndim, const int64_t *shape, const int64_t *st) {
    for (int i = 0; i < ndim; i++)
        if (shape[i] > 1 && st[i] == 0) return true;
    return false;
}

/* dx[xs] += alpha * dout * (other ? other[ys] : 1), summed over x's broadcast dims */
static void grad_operand(float *dx, const int64_t *xs, const float *dout, const float *other,
                         const int64_t *ys, float alpha, int ndim, const int64_t *shape) {
    int64_t os[MAXD];
    contig_strides(ndim, shape, os);
    const int64_t *st[3] = {xs, os, other ? ys : NULL};
    iter it;
    int64_t numel = iter_init(&it, ndim, shape, 3, st);
    if (!numel) return;
    if (has_broadcast(ndim, shape, xs))
        strided_reduce(dx, dout, other, &it, numel, alpha, true);
    else
        strided_map(other ? R_ACC_MUL : R_ACC, dx, dout, other, &it, numel, alpha);
}

void lk_binary_backward(lk_binop op, float *da, float *db, const float *dout, const float *a,
                        const int64_t *astride, const float *b, const int64_t *bstride, int ndim,
                        const int64_t *shape) {
    bool mul = op == LK_BIN_MUL;
    if (da) grad_operand(da, astride, dout, mul ? b : NULL, bstride, 1.0f, ndim, shape);
    if (db)
        grad_operand(db, bstride, dout, mul ? a : NULL, astride, op == LK_BIN_SUB ? -1.0f : 1.0f,
                     ndim, shape);
}

double lk_sum_f32(const float *x, size_t n) {
    const int64_t nn = (int64_t)n;
    const int64_t nblk = (nn + ROW_BLOCK - 1) / ROW_BLOCK;
    double total = 0.0;
#pragma omp parallel for schedule(static) reduction(+ : total) if (nn >= PAR_MIN)
    for (int64_t b = 0; b < nblk; b++) {
        int64_t j0 = b * ROW_BLOCK, m = nn - j0 < ROW_BLOCK ? nn - j0 : ROW_BLOCK;
        total += sum_serial(x + j0, m);
    }
    return total;
}

void lk_sum_dim_forward(float *y, const float *x, size_t outer, size_t dim, size_t inner) {
    const int64_t shape[3] = {(int64_t)outer, (int64_t)dim, (int64_t)inner};
    const int64_t ys[3] = {(int64_t)inner, 0, 1};
    const int64_t xs[3] = {(int64_t)(dim * inner), (int64_t)inner, 1};
    if (outer * inner == 0) return;
    if (dim == 0) {
        memset(y, 0, sizeof(float) * outer * inner);
        return;
    }
    const int64_t *st[3] = {ys, xs, NULL};
    iter it;
    int64_t numel = iter_init(&it, 3, shape, 3, st);
    if (has_broadcast(3, shape, ys))
        strided_reduce(y, x, NULL, &it, numel, 1.0f, false);
    else
        strided_map(R_COPY, y, x, NULL, &it, numel, 1.0f);
}

float lk_mse_forward(const float *a, const float *b, size_t n) {
    if (n == 0) return 0.0f;
    const int64_t nn = (int64_t)n;
    const int64_t nblk = (nn + ROW_BLOCK - 1) / ROW_BLOCK;
    double total = 0.0;
#pragma omp parallel for schedule(static) reduction(+ : total) if (nn >= PAR_MIN)
    for (int64_t k = 0; k < nblk; k++) {
        int64_t j0 = k * ROW_BLOCK, m = nn - j0 < ROW_BLOCK ? nn - j0 : ROW_BLOCK;
        total += sqdiff_serial(a + j0, b + j0, m);
    }
    return (float)(total / (double)n);
}

void lk_mse_backward(float *da, float *db, const float *a, const float *b, size_t n, float g) {
    if (n == 0 || (!da && !db)) return;
    const float c = 2.0f * g / (float)n;
    const int64_t nn = (int64_t)n;
#pragma omp parallel for schedule(static) if (nn >= PAR_MIN)
    for (int64_t k = 0; k < (nn + ROW_BLOCK - 1) / ROW_BLOCK; k++) {
        int64_t j0 = k * ROW_BLOCK, m = nn - j0 < ROW_BLOCK ? nn - j0 : ROW_BLOCK;
        const float *pa = a + j0, *pb = b + j0;
        if (da) {
            float *d = da + j0;
            for (int64_t i = 0; i < m; i++) d[i] += c * (pa[i] - pb[i]);
        }
        if (db) {
            float *d = db + j0;
            for (int64_t i = 0; i < m; i++) d[i] -= c * (pa[i] - pb[i]);
        }
    }
}

void lk_copy_strided(float *dst, const float *src, int ndim, const int64_t *shape,
                     const int64_t *src_stride) {
    int64_t ds[MAXD];
    contig_strides(ndim, shape, ds);
    const int64_t *st[3] = {ds, src_stride, NULL};
    iter it;
    int64_t numel = iter_init(&it, ndim, shape, 2, st);
    if (numel) strided_map(R_COPY, dst, src, NULL, &it, numel, 1.0f);
}

void lk_add_strided(float *dst, const int64_t *dst_stride, const float *src, int ndim,
                    const int64_t *shape) {
    int64_t ss[MAXD];
    contig_strides(ndim, shape, ss);
    const int64_t *st[3] = {dst_stride, ss, NULL};
    iter it;
    int64_t numel = iter_init(&it, ndim, shape, 2, st);
    if (!numel) return;
    if (has_broadcast(ndim, shape, dst_stride))
        strided_reduce(dst, src, NULL, &it, numel, 1.0f, true);
    else
        strided_map(R_ACC, dst, src, NULL, &it, numel, 1.0f);
}

void lk_axpy(float *y, float alpha, const float *x, size_t n) {
    const int64_t shape[1] = {(int64_t)n}, one[1] = {1};
    const int64_t *st[3] = {one, one, NULL};
    iter it;
    int64_t numel = iter_init(&it, 1, shape, 2, st);
    if (numel) strided_map(R_ACC, y, x, NULL, &it, numel, alpha);
}
