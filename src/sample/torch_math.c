/* torch_math.c: PyTorch's float32 log and exp for the 0-dim tensors the schedulers compute with.
 * torch 1.13 evaluates them with SLEEF (Shibata & Petrogalli 2020, "SLEEF: A Portable Vectorized
 * Library of C Standard Mathematical Functions") Sleef_logf8_u10 / Sleef_expf8_u10 of its AVX2
 * build even for one element; they differ from glibc's logf/expf in the last bit for a few
 * percent of inputs. These scalar transcriptions (FMA where the AVX2 build fuses) give the same
 * bits, so DPM-Solver++'s lambda and exp(-h) equal diffusers'. */
#include "sample/sampler_internal.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

static float pow2i(int q) { /* 2^q for q in the normal exponent range */
    uint32_t b = (uint32_t)(q + 0x7f) << 23;
    float f;
    memcpy(&f, &b, 4);
    return f;
}

/* Sleef xexpf (u10): q = rint(d / ln 2), s = d - q ln2 (Cody-Waite, two fused steps), a degree-6
 * polynomial, u * 2^q in two halves. */
float lk__torch_expf(float d) {
    if (isnan(d)) return d;
    if (d < -104.0f) return 0.0f;
    if (d > 100.0f) return INFINITY;
    const float R_LN2f = 1.442695040888963407359924681001892137426645954152985934135449406931f;
    const float L2Uf = 0.693145751953125f, L2Lf = 1.428606765330187045e-06f;
    const int q = (int)nearbyintf(d * R_LN2f);
    float s = fmaf((float)q, -L2Uf, d);
    s = fmaf((float)q, -L2Lf, s);
    float u = 0.000198527617612853646278381f;
    u = fmaf(u, s, 0.00139304355252534151077271f);
    u = fmaf(u, s, 0.00833336077630519866943359f);
    u = fmaf(u, s, 0.0416664853692054748535156f);
    u = fmaf(u, s, 0.166666671633720397949219f);
    u = fmaf(u, s, 0.5f);
    u = 1.0f + fmaf(s * s, u, s);
    return u * pow2i(q >> 1) * pow2i(q - (q >> 1));
}

/* double-float helpers of SLEEF (value = x + y), FMA variants */
typedef struct df {
    float x, y;
} df;

static df df_add2_ff(float x, float y) {
    const float s = x + y, v = s - x;
    return (df){s, (x - (s - v)) + (y - v)};
}
static df df_add_dd(df x, df y) { /* |x| >= |y| */
    const float s = x.x + y.x;
    return (df){s, (((x.x - s) + y.x) + x.y) + y.y};
}
static df df_add_df(df x, float y) {
    const float s = x.x + y;
    return (df){s, ((x.x - s) + y) + x.y};
}
static df df_mul_df(df x, float y) {
    const float s = x.x * y;
    return (df){s, fmaf(x.y, y, fmaf(x.x, y, -s))};
}
static df df_div(df n, df d) {
    const float t = 1.0f / d.x;
    const float s = n.x * t;
    const float u = fmaf(t, n.x, -s);
    const float v = fmaf(-d.y, t, fmaf(-d.x, t, 1.0f));
    return (df){s, fmaf(s, v, fmaf(n.y, t, u))};
}

/* Sleef xlogf_u1: d = m 2^e with m in [0.75, 1.5), x = (m - 1) / (m + 1) in double-float,
 * log d = e ln 2 + 2x + x^3 P(x^2). */
float lk__torch_logf(float d) {
    if (!(d > 0.0f) || isinf(d)) return logf(d); /* NaN, 0, negative, inf: same special values */
    int bias = 0;
    if (d < 1.17549435e-38f) { /* subnormal: scale up by 2^64 first */
        d = d * (4294967296.0f * 4294967296.0f);
        bias = 64;
    }
    float d43 = d * (1.0f / 0.75f);
    uint32_t b;
    memcpy(&b, &d43, 4);
    int e = (int)((b >> 23) & 0xff) - 0x7f;
    const float m = d * pow2i(-e);
    e -= bias;
    df s = df_mul_df((df){0.69314718246459960938f, -1.904654323148236017e-09f}, (float)e);
    const df x = df_div(df_add2_ff(-1.0f, m), df_add2_ff(1.0f, m));
    const float x2 = x.x * x.x;
    float t = 0.3027294874e+0f;
    t = fmaf(t, x2, 0.3996108174e+0f);
    t = fmaf(t, x2, 0.6666694880e+0f);
    s = df_add_dd(s, (df){x.x * 2.0f, x.y * 2.0f});
    s = df_add_df(s, x2 * x.x * t);
    return s.x + s.y;
}
