/* activations.c: SiLU (Elfwing et al. 2017), GELU exact and tanh form (Hendrycks & Gimpel 2016),
 * QuickGELU (x*sigmoid(1.702x), CLIP) and GEGLU (Shazeer 2020, diffusers' split), f32, OpenMP.
 *
 * Vector math written once over a thin AVX-512 / AVX2 / scalar layer:
 *   exp(x): n = round(x/ln2), r = x - n*ln2 (Cody-Waite two-part ln2), degree-7 Taylor
 *     polynomial on |r| <= ln2/2 (truncation < 1e-8 relative), scaled by 2^n.
 *   Phi(x) = 0.5*erfc(-x/sqrt2): erfc(z) = t*P(t)*exp(-z^2), t = 1/(1+z/2), z = |x|/sqrt2 >= 0,
 *     P of degree 9 fitted here to erfcx(z)/t by iteratively reweighted least squares on
 *     [0, 9.5] (max relative error 1.8e-8 in exact arithmetic, ~3e-7 evaluated in f32).
 *     exp(-x^2/2) uses an FMA-exact residual of x*x, so Phi(x) for very negative x keeps full
 *     relative accuracy (no 1+erf cancellation).
 *   tanh-GELU uses 0.5(1+tanh(u)) = sigmoid(2u), and 1-tanh^2 = 4s(1-s). */
#include "kernels/kernels.h"

#include <math.h>
#include <string.h>


#include "kernels/cpu/simd.h"

/* exp(x), about 1 ulp; overflow to +inf, underflow through the denormals to 0, NaN kept. */
static inline vf v_exp(vf x) {
    x = v_min(v_set(89.0f), v_max(v_set(-104.0f), x));
    vf n = v_round(v_mul(x, v_set(1.44269504088896341f)));
    vf r = v_fnma(n, v_set(0.693359375f), x);   /* ln2 high part: 9 bits, n*hi exact */
    r = v_fnma(n, v_set(-2.12194440e-4f), r);    /* ln2 low part */
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

/* 1/(1+exp(-x)) in the stable form: e = exp(-|x|) in (0, 1], r = 1/(1+e) with the denominator
 * in [1, 2]; sigmoid = r for x >= 0 and e*r for x < 0 (no overflow, full accuracy as e -> 0) */
static inline vf v_sigmoid(vf x) {
    vf e = v_exp(v_sub(v_set(0.0f), v_abs(x)));
    vf r = v_rcp(v_add(v_set(1.0f), e));
    return v_sel_neg(x, v_mul(e, r), r);
}

/* Normal CDF Phi(x) and E = exp(-x^2/2) (the density is E/sqrt(2 pi)). */
static inline vf v_phi(vf x, vf *E_out) {
    vf xc = v_min(v_set(20.0f), v_max(v_set(-20.0f), x)); /* saturated beyond, avoids inf*0 */
    vf z = v_mul(v_abs(xc), v_set(0.70710678118654752f));
    vf t = v_rcp(v_fma(z, v_set(0.5f), v_set(1.0f)));
    vf p = v_set(1.384623069e-02f);
    p = v_fma(p, t, v_set(-1.315910816e-01f));
    p = v_fma(p, t, v_set(4.481281936e-01f));
    p = v_fma(p, t, v_set(-6.950073242e-01f));
    p = v_fma(p, t, v_set(4.414617717e-01f));
    p = v_fma(p, t, v_set(-1.087893993e-01f));
    p = v_fma(p, t, v_set(2.290187925e-01f));
    p = v_fma(p, t, v_set(2.379342914e-01f));
    p = v_fma(p, t, v_set(2.829379439e-01f));
    p = v_fma(p, t, v_set(2.820605934e-01f));
    vf x2 = v_mul(xc, xc);
    vf x2e = v_fms(xc, xc, x2); /* exact: xc*xc = x2 + x2e */
    vf E = v_exp(v_mul(x2, v_set(-0.5f)));
    E = v_fnma(v_mul(E, v_set(0.5f)), x2e, E); /* exp(-x2/2 - x2e/2) to first order */
    *E_out = E;
    vf q = v_mul(v_mul(v_set(0.5f), t), v_mul(p, E)); /* 0.5 erfc(|x|/sqrt2) */
    return v_sel_neg(xc, q, v_sub(v_set(1.0f), q));
}

#define GELU_K 0.7978845608028654f /* sqrt(2/pi) */
#define GELU_C 0.044715f
#define INV_SQRT_2PI 0.3989422804014327f
#define QGELU_A 1.702f

/* forward value and derivative of each activation on one vector */
static inline vf act_f(lk_act a, vf x) {
    switch (a) {
    case LK_ACT_SILU: return v_mul(x, v_sigmoid(x));
    case LK_ACT_GELU: {
        vf E;
        return v_mul(x, v_phi(x, &E));
    }
    case LK_ACT_GELU_TANH: {
        vf xc = v_min(v_set(1e4f), v_max(v_set(-1e4f), x));
        vf u = v_mul(v_set(2.0f * GELU_K), v_fma(v_mul(v_set(GELU_C), xc), v_mul(xc, xc), xc));
        return v_mul(x, v_sigmoid(u));
    }
    case LK_ACT_QUICK_GELU: return v_mul(x, v_sigmoid(v_mul(v_set(QGELU_A), x)));
    }
    return x;
}

static inline vf act_df(lk_act a, vf x) {
    vf one = v_set(1.0f);
    switch (a) {
    case LK_ACT_SILU: { /* s (1 + x (1 - s)) */
        vf s = v_sigmoid(x);
        return v_mul(s, v_fma(x, v_sub(one, s), one));
    }
    case LK_ACT_GELU: { /* Phi(x) + x phi(x) */
        vf E;
        vf c = v_phi(x, &E);
        return v_fma(v_mul(x, v_set(INV_SQRT_2PI)), E, c);
    }
    case LK_ACT_GELU_TANH: { /* s + 2x s(1-s) k (1 + 3c x^2) */
        vf xc = v_min(v_set(1e4f), v_max(v_set(-1e4f), x));
        vf x2 = v_mul(xc, xc);
        vf u = v_mul(v_set(2.0f * GELU_K), v_fma(v_mul(v_set(GELU_C), xc), x2, xc));
        vf s = v_sigmoid(u);
        vf du = v_mul(v_set(2.0f * GELU_K), v_fma(v_set(3.0f * GELU_C), x2, one));
        return v_fma(v_mul(xc, du), v_mul(s, v_sub(one, s)), s);
    }
    case LK_ACT_QUICK_GELU: { /* s + a x s (1 - s) */
        vf s = v_sigmoid(v_mul(v_set(QGELU_A), x));
        return v_fma(v_mul(v_set(QGELU_A), x), v_mul(s, v_sub(one, s)), s);
    }
    }
    return one;
}

/* ---------------- block loops (one thread, one block) ---------------- */
static void fwd_block(lk_act a, float *y, const float *x, size_t n) {
    size_t i = 0;
    for (; i + VW <= n; i += VW) v_st(y + i, act_f(a, v_ld(x + i)));
    if (i < n) {
        float bx[VW] = {0}, by[VW];
        memcpy(bx, x + i, (n - i) * sizeof(float));
        v_st(by, act_f(a, v_ld(bx)));
        memcpy(y + i, by, (n - i) * sizeof(float));
    }
}

static void bwd_block(lk_act a, float *dx, const float *dy, const float *x, size_t n) {
    size_t i = 0;
    for (; i + VW <= n; i += VW)
        v_st(dx + i, v_fma(v_ld(dy + i), act_df(a, v_ld(x + i)), v_ld(dx + i)));
    if (i < n) {
        float bx[VW] = {0}, bdy[VW] = {0}, bdx[VW] = {0};
        size_t r = (n - i) * sizeof(float);
        memcpy(bx, x + i, r);
        memcpy(bdy, dy + i, r);
        memcpy(bdx, dx + i, r);
        v_st(bdx, v_fma(v_ld(bdy), act_df(a, v_ld(bx)), v_ld(bdx)));
        memcpy(dx + i, bdx, r);
    }
}

/* y = h * gelu(g) */
static inline void geglu_f(float *y, const float *h, const float *g, size_t i) {
    vf gv = v_ld(g + i), E;
    v_st(y + i, v_mul(v_ld(h + i), v_mul(gv, v_phi(gv, &E))));
}

/* dh += dy gelu(g); dg += dy h gelu'(g) */
static inline void geglu_b(float *dh, float *dg, const float *dy, const float *h, const float *g,
                           size_t i) {
    vf gv = v_ld(g + i), E;
    vf c = v_phi(gv, &E);
    vf d = v_ld(dy + i);
    v_st(dh + i, v_fma(d, v_mul(gv, c), v_ld(dh + i)));
    vf dgelu = v_fma(v_mul(gv, v_set(INV_SQRT_2PI)), E, c);
    v_st(dg + i, v_fma(v_mul(d, v_ld(h + i)), dgelu, v_ld(dg + i)));
}

static void geglu_fwd_block(float *y, const float *h, const float *g, size_t n) {
    size_t i = 0;
    for (; i + VW <= n; i += VW) geglu_f(y, h, g, i);
    if (i < n) {
        float bh[VW] = {0}, bg[VW] = {0}, by[VW];
        size_t r = (n - i) * sizeof(float);
        memcpy(bh, h + i, r);
        memcpy(bg, g + i, r);
        geglu_f(by, bh, bg, 0);
        memcpy(y + i, by, r);
    }
}

static void geglu_bwd_block(float *dh, float *dg, const float *dy, const float *h,
                            const float *g, size_t n) {
    size_t i = 0;
    for (; i + VW <= n; i += VW) geglu_b(dh, dg, dy, h, g, i);
    if (i < n) {
        float bh[VW] = {0}, bg[VW] = {0}, bdy[VW] = {0}, bdh[VW] = {0}, bdg[VW] = {0};
        size_t r = (n - i) * sizeof(float);
        memcpy(bh, h + i, r);
        memcpy(bg, g + i, r);
        memcpy(bdy, dy + i, r);
        memcpy(bdh, dh + i, r);
        memcpy(bdg, dg + i, r);
        geglu_b(bdh, bdg, bdy, bh, bg, 0);
        memcpy(dh + i, bdh, r);
        memcpy(dg + i, bdg, r);
    }
}

/* ---------------- public kernels ---------------- */
#define ACT_BLOCK 4096 /* elements per task: 16 KB per stream, stays in L1 */
#define ACT_PAR_MIN 32768

/* y = act(x) over n elements. y may equal x (in place). Cannot fail. */
void lk_act_forward(lk_act a, float *y, const float *x, size_t n) {
    if (n == 0) return;
    long nb = (long)((n + ACT_BLOCK - 1) / ACT_BLOCK);
#pragma omp parallel for schedule(static) if (n >= ACT_PAR_MIN)
    for (long b = 0; b < nb; b++) {
        size_t i0 = (size_t)b * ACT_BLOCK;
        size_t len = n - i0 < ACT_BLOCK ? n - i0 : ACT_BLOCK;
        fwd_block(a, y + i0, x + i0, len);
    }
}

/* The same on the calling thread only (for callers already inside a parallel region). */
void lk_act_forward_serial(lk_act a, float *y, const float *x, size_t n) {
    for (size_t i0 = 0; i0 < n; i0 += ACT_BLOCK)
        fwd_block(a, y + i0, x + i0, n - i0 < ACT_BLOCK ? n - i0 : ACT_BLOCK);
}

void lk_act_backward_serial(lk_act a, float *dx, const float *dy, const float *x, size_t n) {
    if (!dx) return;
    for (size_t i0 = 0; i0 < n; i0 += ACT_BLOCK)
        bwd_block(a, dx + i0, dy + i0, x + i0, n - i0 < ACT_BLOCK ? n - i0 : ACT_BLOCK);
}

/* dx += dy * act'(x) over n elements. Cannot fail. */
void lk_act_backward(lk_act a, float *dx, const float *dy, const float *x, size_t n) {
    if (n == 0 || !dx) return;
    long nb = (long)((n + ACT_BLOCK - 1) / ACT_BLOCK);
#pragma omp parallel for schedule(static) if (n >= ACT_PAR_MIN)
    for (long b = 0; b < nb; b++) {
        size_t i0 = (size_t)b * ACT_BLOCK;
        size_t len = n - i0 < ACT_BLOCK ? n - i0 : ACT_BLOCK;
        bwd_block(a, dx + i0, dy + i0, x + i0, len);
    }
}

/* x (M, 2D) -> y (M, D) = x[:, :D] * gelu(x[:, D:]). Cannot fail. */
void lk_geglu_forward(float *y, const float *x, size_t M, size_t D) {
    if (M == 0 || D == 0) return;
    size_t cpr = (D + ACT_BLOCK - 1) / ACT_BLOCK; /* column blocks per row */
    long nt = (long)(M * cpr);
#pragma omp parallel for schedule(static) if (M * D >= ACT_PAR_MIN)
    for (long t = 0; t < nt; t++) {
        size_t m = (size_t)t / cpr, j0 = ((size_t)t % cpr) * ACT_BLOCK;
        size_t len = D - j0 < ACT_BLOCK ? D - j0 : ACT_BLOCK;
        const float *row = x + m * 2 * D;
        geglu_fwd_block(y + m * D + j0, row + j0, row + D + j0, len);
    }
}

/* dx (M, 2D) += d/dx of y = h * gelu(g), given dy (M, D). Cannot fail. */
void lk_geglu_backward(float *dx, const float *dy, const float *x, size_t M, size_t D) {
    if (M == 0 || D == 0 || !dx) return;
    size_t cpr = (D + ACT_BLOCK - 1) / ACT_BLOCK;
    long nt = (long)(M * cpr);
#pragma omp parallel for schedule(static) if (M * D >= ACT_PAR_MIN)
    for (long t = 0; t < nt; t++) {
        size_t m = (size_t)t / cpr, j0 = ((size_t)t % cpr) * ACT_BLOCK;
        size_t len = D - j0 < ACT_BLOCK ? D - j0 : ACT_BLOCK;
        const float *row = x + m * 2 * D;
        float *drow = dx + m * 2 * D;
        geglu_bwd_block(drow + j0, drow + D + j0, dy + m * D + j0, row + j0, row + D + j0, len);
    }
}
