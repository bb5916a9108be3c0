/* rng.c: PyTorch's CPU generator reproduced draw for draw: MT19937 (Matsumoto & Nishimura 1998)
 * seeded as torch.manual_seed, and the randn/rand/randint transforms of ATen 1.13 (see below). */
#include "likeness/rng.h"

#include <math.h>
#include <string.h>
#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#endif

/* ------------------------------------------------------------------------------------------ */
/* MT19937, 32-bit. torch.manual_seed(s) seeds it with the low 32 bits of s (Knuth's
 * initialisation multiplier 1812433253) and clears the cached normal sample. */

#define MT_N 624
#define MT_M 397

void lk_rng_seed(lk_rng *r, uint64_t seed) {
    r->mt[0] = (uint32_t)seed;
    for (int i = 1; i < MT_N; i++)
        r->mt[i] = 1812433253u * (r->mt[i - 1] ^ (r->mt[i - 1] >> 30)) + (uint32_t)i;
    r->mti = MT_N;
    r->seed = seed;
    r->has_next_normal = false;
    r->next_normal = 0.0;
}

/* Regenerate all 624 words (written branch-free so GCC vectorizes both loops). */
static void mt_twist(uint32_t *mt) {
    for (int k = 0; k < MT_N - MT_M; k++) {
        uint32_t y = (mt[k] & 0x80000000u) | (mt[k + 1] & 0x7fffffffu);
        mt[k] = mt[k + MT_M] ^ (y >> 1) ^ ((0u - (y & 1u)) & 0x9908b0dfu);
    }
    for (int k = MT_N - MT_M; k < MT_N - 1; k++) {
        uint32_t y = (mt[k] & 0x80000000u) | (mt[k + 1] & 0x7fffffffu);
        mt[k] = mt[k + MT_M - MT_N] ^ (y >> 1) ^ ((0u - (y & 1u)) & 0x9908b0dfu);
    }
    uint32_t y = (mt[MT_N - 1] & 0x80000000u) | (mt[0] & 0x7fffffffu);
    mt[MT_N - 1] = mt[MT_M - 1] ^ (y >> 1) ^ ((0u - (y & 1u)) & 0x9908b0dfu);
}

static inline uint32_t temper(uint32_t y) {
    y ^= y >> 11;
    y ^= (y << 7) & 0x9d2c5680u;
    y ^= (y << 15) & 0xefc60000u;
    y ^= y >> 18;
    return y;
}

/* Untempered words for the next m <= want draws (at least 1), consumed from the state. */
static inline const uint32_t *take(lk_rng *r, size_t want, size_t *m) {
    if (r->mti >= MT_N) {
        mt_twist(r->mt);
        r->mti = 0;
    }
    size_t avail = (size_t)(MT_N - r->mti);
    *m = want < avail ? want : avail;
    const uint32_t *p = r->mt + r->mti;
    r->mti += (int)*m;
    return p;
}

uint32_t lk_rng_u32(lk_rng *r) {
    if (r->mti >= MT_N) {
        mt_twist(r->mt);
        r->mti = 0;
    }
    return temper(r->mt[r->mti++]);
}

/* CPUGeneratorImpl::random64: the first 32-bit draw is the high half. */
uint64_t lk_rng_u64(lk_rng *r) {
    uint64_t hi = lk_rng_u32(r);
    uint64_t lo = lk_rng_u32(r);
    return (hi << 32) | lo;
}

/* n consecutive lk_rng_u32 draws, in bulk. Shared with kernels/cpu/dropout.c. */
void lk__rng_fill_u32(lk_rng *r, uint32_t *out, size_t n);
void lk__rng_fill_u32(lk_rng *r, uint32_t *out, size_t n) {
    for (size_t i = 0, m; i < n; i += m) {
        const uint32_t *w = take(r, n - i, &m);
        for (size_t j = 0; j < m; j++) out[i + j] = temper(w[j]);
    }
}

/* uniform_real_distribution<double>(0,1): 53 random bits of one 64-bit draw. */
static inline double uniform_f64(lk_rng *r) {
    return (double)(lk_rng_u64(r) & ((UINT64_C(1) << 53) - 1)) * (1.0 / 9007199254740992.0);
}

/* uniform_real_distribution<float>(0,1): 24 random bits of each 32-bit draw, times 2^-24. */
void lk_rng_rand(lk_rng *r, float *out, size_t n) {
    for (size_t i = 0, m; i < n; i += m) {
        const uint32_t *w = take(r, n - i, &m);
        float *o = out + i;
        for (size_t j = 0; j < m; j++) o[j] = (float)(int32_t)(temper(w[j]) & 0xffffffu) * (1.0f / 16777216.0f);
    }
}

/* a % d for 32-bit a and d > 0 without a division: with M = floor((2^64-1)/d) + 1, the remainder
 * is the high 64 bits of (M*a mod 2^64) * d (Lemire, Kaser & Kurz 2019, "Faster remainder by
 * direct computation"); the 64x32 product is split so no 128-bit type is needed. */
static inline uint32_t fastmod32(uint32_t a, uint64_t M, uint32_t d) {
    uint64_t low = M * a;
    return (uint32_t)((((low >> 32) * d) + (((low & 0xffffffffu) * d) >> 32)) >> 32);
}

lk_status lk_rng_randint(lk_rng *r, int64_t lo, int64_t hi, int64_t *out, size_t n) {
    if (lo >= hi)
        return lk_fail(LK_ERR_INVALID, "rng_randint: empty range [%lld, %lld)", (long long)lo, (long long)hi);
    if (n && !out) return lk_fail(LK_ERR_INVALID, "rng_randint: out is NULL");
    /* uniform_int_from_to_distribution: (draw % range) + lo, with a 64-bit draw when the range
     * needs more than 32 bits; arithmetic modulo 2^64 like ATen's uint64 */
    uint64_t range = (uint64_t)hi - (uint64_t)lo;
    if (range >= (UINT64_C(1) << 32)) {
        for (size_t i = 0; i < n; i++) {
            uint64_t u = lk_rng_u64(r) % range + (uint64_t)lo;
            int64_t s;
            memcpy(&s, &u, sizeof s); /* two's complement wrap, no implementation-defined cast */
            out[i] = s;
        }
        return LK_OK;
    }
    const uint32_t d = (uint32_t)range;
    const uint64_t M = UINT64_MAX / d + 1;
    for (size_t i = 0, m; i < n; i += m) {
        const uint32_t *w = take(r, n - i, &m);
        for (size_t j = 0; j < m; j++) {
            uint64_t u = (uint64_t)fastmod32(temper(w[j]), M, d) + (uint64_t)lo;
            int64_t s;
            memcpy(&s, &u, sizeof s);
            out[i + j] = s;
        }
    }
    return LK_OK;
}

/* ------------------------------------------------------------------------------------------ */
/* torch.randn, numel < 16: at::normal_distribution<double> (Box-Muller on two 53-bit uniforms;
 * the sine half is cached in the generator and returned by the next call). */
static double normal_f64(lk_rng *r) {
    if (r->has_next_normal) {
        r->has_next_normal = false;
        return r->next_normal;
    }
    double u1 = uniform_f64(r);
    double u2 = uniform_f64(r);
    double rad = sqrt(-2.0 * log(1.0 - u2));
    double theta = 2.0 * 3.14159265358979323846 * u1;
    r->next_normal = rad * sin(theta);
    r->has_next_normal = true;
    return rad * cos(theta);
}

/* torch.randn, numel >= 16 (ATen normal_fill_AVX2, the path of x86-64 builds): every element
 * first gets a 24-bit uniform u; then each block of 16 becomes Box-Muller pairs
 * (1 - u[j], u[j+8]) -> radius*cos into j, radius*sin into j+8; when numel % 16 != 0 the last
 * 16 elements are redrawn and transformed again. log/sin/cos are the Cephes single-precision
 * polynomials (S. Moshier, Cephes Math Library) that ATen's AVX math uses, evaluated with the
 * same fused multiply-adds (GCC contracts those intrinsics), so results match bit for bit.
 * The scalar code below is the definition; the AVX2 code computes the same operations 8-wide. */

#define CEPHES_SQRTHF 0.707106781186547524f
#define LOG_P0 7.0376836292E-2f
#define LOG_P1 -1.1514610310E-1f
#define LOG_P2 1.1676998740E-1f
#define LOG_P3 -1.2420140846E-1f
#define LOG_P4 1.4249322787E-1f
#define LOG_P5 -1.6668057665E-1f
#define LOG_P6 2.0000714765E-1f
#define LOG_P7 -2.4999993993E-1f
#define LOG_P8 3.3333331174E-1f
#define LOG_Q1 -2.12194440e-4f
#define LOG_Q2 0.693359375f
#define FOPI 1.27323954473516f /* 4/pi */
#define DP1 -0.78515625f       /* -pi/4 split in three parts */
#define DP2 -2.4187564849853515625e-4f
#define DP3 -3.77489497744594108e-8f
#define SIN_P0 -1.9515295891E-4f
#define SIN_P1 8.3321608736E-3f
#define SIN_P2 -1.6666654611E-1f
#define COS_P0 2.443315711809948E-005f
#define COS_P1 -1.388731625493765E-003f
#define COS_P2 4.166664568298827E-002f

static inline uint32_t f2u(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}
static inline float u2f(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* log(x) for x in (0, 1] (the only arguments Box-Muller gives it). */
static float cephes_logf(float x) {
    uint32_t xb = f2u(x);
    float e = (float)((int32_t)(xb >> 23) - 127) + 1.0f;
    float m = u2f((xb & ~0x7f800000u) | 0x3f000000u); /* mantissa in [0.5, 1) */
    float add = 0.0f;
    if (m < CEPHES_SQRTHF) {
        add = m;
        e = e - 1.0f;
    }
    m = (m - 1.0f) + add;
    float z = m * m;
    float y = LOG_P0;
    y = fmaf(y, m, LOG_P1);
    y = fmaf(y, m, LOG_P2);
    y = fmaf(y, m, LOG_P3);
    y = fmaf(y, m, LOG_P4);
    y = fmaf(y, m, LOG_P5);
    y = fmaf(y, m, LOG_P6);
    y = fmaf(y, m, LOG_P7);
    y = fmaf(y, m, LOG_P8);
    y = y * m;
    y = fmaf(y, z, e * LOG_Q1);
    y = fmaf(-z, 0.5f, y);
    return fmaf(e, LOG_Q2, m + y);
}

static void cephes_sincosf(float x, float *s, float *c) {
    uint32_t sign_sin = f2u(x) & 0x80000000u;
    x = fabsf(x);
    int32_t j = (int32_t)(x * FOPI);
    j = (j + 1) & ~1;
    float y = (float)j;
    sign_sin ^= (uint32_t)(j & 4) << 29;
    uint32_t sign_cos = (uint32_t)(~(j - 2) & 4) << 29;
    bool sin_poly = (j & 2) == 0;
    x = fmaf(y, DP1, x);
    x = fmaf(y, DP2, x);
    x = fmaf(y, DP3, x);
    float z = x * x;
    float yc = COS_P0;
    yc = fmaf(yc, z, COS_P1);
    yc = fmaf(yc, z, COS_P2);
    yc = yc * z;
    yc = fmaf(yc, z, -(z * 0.5f));
    yc = yc + 1.0f;
    float ys = SIN_P0;
    ys = fmaf(ys, z, SIN_P1);
    ys = fmaf(ys, z, SIN_P2);
    ys = ys * z;
    ys = fmaf(ys, x, x);
    *s = u2f(f2u(sin_poly ? ys : yc) ^ sign_sin);
    *c = u2f(f2u(sin_poly ? yc : ys) ^ sign_cos);
}

static void normal_fill_16_scalar(float *d) {
    const float two_pi = (float)(2.0 * 3.14159265358979323846);
    for (int j = 0; j < 8; j++) {
        float rad = sqrtf(-2.0f * cephes_logf(1.0f - d[j]));
        float s, c;
        cephes_sincosf(two_pi * d[j + 8], &s, &c);
        d[j] = rad * c;
        d[j + 8] = rad * s;
    }
}

#if defined(__AVX2__) && defined(__FMA__)
#define PS(x) _mm256_set1_ps(x)
#define PI32(x) _mm256_set1_epi32(x)
static inline __m256 cephes_log8(__m256 x) {
    const __m256 one = PS(1.0f);
    __m256i bits = _mm256_castps_si256(x);
    __m256 e = _mm256_add_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_srli_epi32(bits, 23), PI32(127))), one);
    __m256 m = _mm256_castsi256_ps(_mm256_or_si256(_mm256_and_si256(bits, PI32((int)~0x7f800000u)), PI32(0x3f000000)));
    __m256 mask = _mm256_cmp_ps(m, PS(CEPHES_SQRTHF), _CMP_LT_OS);
    __m256 add = _mm256_and_ps(m, mask);
    e = _mm256_sub_ps(e, _mm256_and_ps(one, mask));
    m = _mm256_add_ps(_mm256_sub_ps(m, one), add);
    __m256 z = _mm256_mul_ps(m, m);
    __m256 y = PS(LOG_P0);
    y = _mm256_fmadd_ps(y, m, PS(LOG_P1));
    y = _mm256_fmadd_ps(y, m, PS(LOG_P2));
    y = _mm256_fmadd_ps(y, m, PS(LOG_P3));
    y = _mm256_fmadd_ps(y, m, PS(LOG_P4));
    y = _mm256_fmadd_ps(y, m, PS(LOG_P5));
    y = _mm256_fmadd_ps(y, m, PS(LOG_P6));
    y = _mm256_fmadd_ps(y, m, PS(LOG_P7));
    y = _mm256_fmadd_ps(y, m, PS(LOG_P8));
    y = _mm256_mul_ps(y, m);
    y = _mm256_fmadd_ps(y, z, _mm256_mul_ps(e, PS(LOG_Q1)));
    y = _mm256_fnmadd_ps(z, PS(0.5f), y);
    return _mm256_fmadd_ps(e, PS(LOG_Q2), _mm256_add_ps(m, y));
}

static inline void cephes_sincos8(__m256 x, __m256 *s, __m256 *c) {
    const __m256 signbit = _mm256_castsi256_ps(PI32((int)0x80000000u));
    __m256 sign_sin = _mm256_and_ps(x, signbit);
    x = _mm256_andnot_ps(signbit, x);
    __m256i j = _mm256_cvttps_epi32(_mm256_mul_ps(x, PS(FOPI)));
    j = _mm256_and_si256(_mm256_add_epi32(j, PI32(1)), PI32(~1));
    __m256 y = _mm256_cvtepi32_ps(j);
    sign_sin = _mm256_xor_ps(sign_sin, _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_and_si256(j, PI32(4)), 29)));
    __m256 sign_cos = _mm256_castsi256_ps(
        _mm256_slli_epi32(_mm256_andnot_si256(_mm256_sub_epi32(j, PI32(2)), PI32(4)), 29));
    __m256 sin_poly = _mm256_castsi256_ps(_mm256_cmpeq_epi32(_mm256_and_si256(j, PI32(2)), _mm256_setzero_si256()));
    x = _mm256_fmadd_ps(y, PS(DP1), x);
    x = _mm256_fmadd_ps(y, PS(DP2), x);
    x = _mm256_fmadd_ps(y, PS(DP3), x);
    __m256 z = _mm256_mul_ps(x, x);
    __m256 yc = PS(COS_P0);
    yc = _mm256_fmadd_ps(yc, z, PS(COS_P1));
    yc = _mm256_fmadd_ps(yc, z, PS(COS_P2));
    yc = _mm256_mul_ps(yc, z);
    yc = _mm256_fmsub_ps(yc, z, _mm256_mul_ps(z, PS(0.5f)));
    yc = _mm256_add_ps(yc, PS(1.0f));
    __m256 ys = PS(SIN_P0);
    ys = _mm256_fmadd_ps(ys, z, PS(SIN_P1));
    ys = _mm256_fmadd_ps(ys, z, PS(SIN_P2));
    ys = _mm256_mul_ps(ys, z);
    ys = _mm256_fmadd_ps(ys, x, x);
    *s = _mm256_xor_ps(_mm256_blendv_ps(yc, ys, sin_poly), sign_sin);
    *c = _mm256_xor_ps(_mm256_blendv_ps(ys, yc, sin_poly), sign_cos);
}

static inline void normal_fill_16(float *d) {
    __m256 u1 = _mm256_sub_ps(PS(1.0f), _mm256_loadu_ps(d));
    __m256 theta = _mm256_mul_ps(PS((float)(2.0 * 3.14159265358979323846)), _mm256_loadu_ps(d + 8));
    __m256 rad = _mm256_sqrt_ps(_mm256_mul_ps(PS(-2.0f), cephes_log8(u1)));
    __m256 s, c;
    cephes_sincos8(theta, &s, &c);
    _mm256_storeu_ps(d, _mm256_mul_ps(rad, c));
    _mm256_storeu_ps(d + 8, _mm256_mul_ps(rad, s));
}
#else
static inline void normal_fill_16(float *d) { normal_fill_16_scalar(d); }
#endif

/* Exposed for the test that checks the AVX2 and scalar paths agree bit for bit. */
void lk__rng_normal_fill_16_scalar(float *d);
void lk__rng_normal_fill_16(float *d);
void lk__rng_normal_fill_16_scalar(float *d) { normal_fill_16_scalar(d); }
void lk__rng_normal_fill_16(float *d) { normal_fill_16(d); }

void lk_rng_randn(lk_rng *r, float *out, size_t n) {
    if (n < 16) {
        for (size_t i = 0; i < n; i++) out[i] = (float)normal_f64(r);
        return;
    }
    lk_rng_rand(r, out, n);
    for (size_t i = 0; i + 16 <= n; i += 16) normal_fill_16(out + i);
    if (n % 16) {
        lk_rng_rand(r, out + n - 16, 16);
        normal_fill_16(out + n - 16);
    }
}

/* ------------------------------------------------------------------------------------------ */
/* state: mt[624] (u32 LE), mti (i32 LE), seed (u64 LE), has_next_normal (u32 LE 0/1),
 * next_normal (IEEE double bits, LE) */

static void put_le(uint8_t *p, uint64_t v, int n) {
    for (int i = 0; i < n; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static uint64_t get_le(const uint8_t *p, int n) {
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

void lk_rng_get_state(const lk_rng *r, uint8_t out[LK_RNG_STATE_BYTES]) {
    uint8_t *p = out;
    for (int i = 0; i < MT_N; i++, p += 4) put_le(p, r->mt[i], 4);
    put_le(p, (uint32_t)r->mti, 4);
    p += 4;
    put_le(p, r->seed, 8);
    p += 8;
    put_le(p, r->has_next_normal ? 1u : 0u, 4);
    p += 4;
    uint64_t bits;
    memcpy(&bits, &r->next_normal, 8);
    put_le(p, bits, 8);
}

lk_status lk_rng_set_state(lk_rng *r, const uint8_t in[LK_RNG_STATE_BYTES]) {
    if (!r || !in) return lk_fail(LK_ERR_INVALID, "rng_set_state: NULL argument");
    const uint8_t *p = in + 4 * MT_N;
    uint32_t mti = (uint32_t)get_le(p, 4);
    uint32_t has = (uint32_t)get_le(p + 12, 4);
    if (mti > MT_N) return lk_fail(LK_ERR_INVALID, "rng_set_state: position %u out of range [0, 624]", mti);
    if (has > 1) return lk_fail(LK_ERR_INVALID, "rng_set_state: bad cached-normal flag %u", has);
    uint32_t any = get_le(in, 4) & 0x80000000u; /* MT needs a non-zero state (top bit of mt[0] and the rest) */
    for (int i = 1; i < MT_N && !any; i++) any = (uint32_t)get_le(in + 4 * i, 4);
    if (!any) return lk_fail(LK_ERR_INVALID, "rng_set_state: all-zero generator state");
    for (int i = 0; i < MT_N; i++) r->mt[i] = (uint32_t)get_le(in + 4 * i, 4);
    r->mti = (int)mti;
    r->seed = get_le(p + 4, 8);
    r->has_next_normal = has == 1;
    uint64_t bits = get_le(p + 16, 8);
    memcpy(&r->next_normal, &bits, 8);
    return LK_OK;
}
