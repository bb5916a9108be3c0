/* softmax.c: numerically stable softmax over the rows of an (M, N) matrix and its backward
 * (y = exp(x - max) / sum; dx += y (dy - <dy, y>)), f32, OpenMP over rows.
 * exp(x): n = round(x/ln2), r = x - n*ln2 (two-part ln2, Cody & Waite 1980), degree-7 Taylor
 * polynomial on |r| <= ln2/2 (truncation < 1e-8 relative), times 2^n. */
#include "kernels/kernels.h"

#include <math.h>
#include <stddef.h>
#include <stdint.h>


#include "kernels/cpu/simd.h"

/* exp(x) for x <= 0 (softmax arguments), about 1 ulp; below -104 gives 0, NaN propagates. */
static inline vf v_exp_neg(vf x) {
    x = v_max(v_set(-104.0f), x);
    vf n = v_round(v_mul(x, v_set(1.44269504088896341f)));
    vf r = v_fnma(n, v_set(0.693359375f), x);  /* ln2 high part: 9 bits, n*hi exact */
    r = v_fnma(n, v_set(-2.12194440e-4f), r);   /* ln2 low part */
    vf p = v_set(1.0f / 5040.0f);
    p = v_fma(p, r, v_set(1.0f / 720.0f));
    p = v_fma(p, r, v_set(1.0f / 120.0f));
    p = v_fma(p, r, v_set(1.0f / 24.0f));
    p = v_fma(p, r, v_set(1.0f / 6.0f));
    p = v_fma(p, r, v_set(0.5f));
    p = v_fma(p, r, v_set(1.0f));
    p = v_fma(p, r, v_set(1.0f));
    return v_pow2_mul(p, n);
}

/* exp(x - m) on the first t lanes of x, 0 on the others. The padding lanes are computed as
 * exp(0): exp of a very negative number underflows, which costs a microcode assist per row. */
static inline vf v_exp_tail(vf x, vf m, int t) {
    return v_keep(v_exp_neg(v_keep(v_sub(x, m), t)), t);
}

static void softmax_row(float *y, const float *x, size_t N) {
    const size_t nf = N - N % VW;
    const int t = (int)(N - nf);
    vf m0 = v_set(-INFINITY), m1 = m0;
    size_t j = 0;
    for (; j + 2 * VW <= nf; j += 2 * VW) {
        m0 = v_max(m0, v_ld(x + j));
        m1 = v_max(m1, v_ld(x + j + VW));
    }
    if (j < nf) m0 = v_max(m0, v_ld(x + j));
    if (t) m1 = v_max(m1, v_ldt(x + nf, t, -INFINITY));
    float mx = v_hmax(m0), mx1 = v_hmax(m1);
    mx = mx1 > mx || mx1 != mx1 ? mx1 : mx;
    const vf vm = v_set(mx);
    vf s0 = v_set(0.0f), s1 = s0;
    for (j = 0; j + 2 * VW <= nf; j += 2 * VW) {
        vf e0 = v_exp_neg(v_sub(v_ld(x + j), vm)), e1 = v_exp_neg(v_sub(v_ld(x + j + VW), vm));
        v_st(y + j, e0);
        v_st(y + j + VW, e1);
        s0 = v_add(s0, e0);
        s1 = v_add(s1, e1);
    }
    if (j < nf) {
        vf e0 = v_exp_neg(v_sub(v_ld(x + j), vm));
        v_st(y + j, e0);
        s0 = v_add(s0, e0);
    }
    if (t) {
        vf e1 = v_exp_tail(v_ldt(x + nf, t, 0.0f), vm, t);
        v_stt(y + nf, e1, t);
        s1 = v_add(s1, e1);
    }
    const vf inv = v_set(1.0f / v_hsum(v_add(s0, s1)));
    for (j = 0; j < nf; j += VW) v_st(y + j, v_mul(v_ld(y + j), inv));
    if (t) v_stt(y + nf, v_mul(v_ldt(y + nf, t, 0.0f), inv), t);
}

#if VW > 1
/* Short rows (at most SHORT_NV vectors, e.g. the 77 text tokens of cross-attention) stay in
 * registers, R (1 or 2) rows at a time so their dependency chains (max, exp, sum, scale)
 * overlap. NV vectors per row, the last one holding t lanes. */
#define SHORT_NV 5
static inline __attribute__((always_inline)) void
softmax_short(float *y, const float *x, size_t ld, int t, const int R, const int NV) {
    vf v[2][SHORT_NV], m[2], s[2];
#pragma GCC unroll 2
    for (int r = 0; r < R; r++) {
#pragma GCC unroll 5
        for (int i = 0; i < NV - 1; i++) v[r][i] = v_ld(x + r * ld + i * VW);
        v[r][NV - 1] = v_ldt(x + r * ld + (NV - 1) * VW, t, -INFINITY);
        m[r] = v[r][0];
#pragma GCC unroll 5
        for (int i = 1; i < NV; i++) m[r] = v_max(m[r], v[r][i]);
        m[r] = v_set(v_hmax(m[r]));
        s[r] = v_set(0.0f);
#pragma GCC unroll 5
        for (int i = 0; i < NV; i++) {
            v[r][i] = i < NV - 1 ? v_exp_neg(v_sub(v[r][i], m[r])) : v_exp_tail(v[r][i], m[r], t);
            s[r] = v_add(s[r], v[r][i]);
        }
        s[r] = v_set(1.0f / v_hsum(s[r]));
#pragma GCC unroll 5
        for (int i = 0; i < NV - 1; i++) v_st(y + r * ld + i * VW, v_mul(v[r][i], s[r]));
        v_stt(y + r * ld + (NV - 1) * VW, v_mul(v[r][NV - 1], s[r]), t);
    }
}

#define SHORT_CASE(NV)                                                                   \
    case NV:                                                                             \
        if (R == 2) softmax_short(y, x, ld, t, 2, NV);                                   \
        else softmax_short(y, x, ld, t, 1, NV);                                          \
        break;
/* R rows of N <= SHORT_NV * VW */
static void softmax_short_rows(float *y, const float *x, size_t N, size_t ld, int R) {
    const int nv = (int)((N + VW - 1) / VW), t = (int)N - (nv - 1) * VW;
    switch (nv) {
        SHORT_CASE(1)
        SHORT_CASE(2)
        SHORT_CASE(3)
        SHORT_CASE(4)
        SHORT_CASE(5)
    }
}
#endif

static void softmax_row_backward(float *restrict dx, const float *restrict dy,
                                 const float *restrict y, size_t N) {
    const size_t nf = N - N % VW;
    const int t = (int)(N - nf);
    vf a0 = v_set(0.0f), a1 = a0;
    size_t j = 0;
    for (; j + 2 * VW <= nf; j += 2 * VW) {
        a0 = v_fma(v_ld(dy + j), v_ld(y + j), a0);
        a1 = v_fma(v_ld(dy + j + VW), v_ld(y + j + VW), a1);
    }
    if (j < nf) a0 = v_fma(v_ld(dy + j), v_ld(y + j), a0);
    if (t) a1 = v_fma(v_ldt(dy + nf, t, 0.0f), v_ldt(y + nf, t, 0.0f), a1);
    const vf dot = v_set(v_hsum(v_add(a0, a1)));
    for (j = 0; j < nf; j += VW)
        v_st(dx + j, v_fma(v_ld(y + j), v_sub(v_ld(dy + j), dot), v_ld(dx + j)));
    if (t)
        v_stt(dx + nf,
              v_fma(v_ldt(y + nf, t, 0.0f), v_sub(v_ldt(dy + nf, t, 0.0f), dot),
                    v_ldt(dx + nf, t, 0.0f)),
              t);
}

/* below this many elements (about 50 us on one core) the thread team is not woken */
#define SOFTMAX_PAR_MIN (1u << 17)

/* y (M, N) = softmax of each row of x (may be y itself: each row is read before it is
 * written). Rows of -inf give NaN, as in PyTorch; -inf entries of other rows give exactly 0. */
void lk_softmax_forward(float *y, const float *x, size_t M, size_t N) {
    if (M == 0 || N == 0) return;
#if VW > 1
    if (N <= SHORT_NV * VW) {
        const size_t pairs = (M + 1) / 2;
#pragma omp parallel for schedule(static) if (M * N >= SOFTMAX_PAR_MIN && M > 1)
        for (size_t i = 0; i < pairs; i++)
            softmax_short_rows(y + 2 * i * N, x + 2 * i * N, N, N, 2 * i + 1 < M ? 2 : 1);
        return;
    }
#endif
#pragma omp parallel for schedule(static) if (M * N >= SOFTMAX_PAR_MIN && M > 1)
    for (size_t i = 0; i < M; i++) softmax_row(y + i * N, x + i * N, N);
}

/* dx (M, N) += y (dy - rowsum(dy y)), y the forward's output. */
void lk_softmax_backward(float *dx, const float *dy, const float *y, size_t M, size_t N) {
    if (M == 0 || N == 0) return;
#pragma omp parallel for schedule(static) if (M * N >= SOFTMAX_PAR_MIN && M > 1)
    for (size_t i = 0; i < M; i++) softmax_row_backward(dx + i * N, dy + i * N, y + i * N, N);
}
