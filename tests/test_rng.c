/* test_rng.c: lk_rng against PyTorch's CPU generator, bit for bit: the golden torch_randn_cases
 * and the call sequences of tests/ref/rng.py (randn small/large, rand, randint, mixed). */
#define _POSIX_C_SOURCE 200809L
#include "harness.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

void lk__rng_normal_fill_16_scalar(float *d);
void lk__rng_normal_fill_16(float *d);

/* Exact comparison; prints the first mismatch. */
static void check_same_f32(const char *what, const float *got, const lk_st_tensor *t) {
    size_t n = (size_t)lk_st_tensor_numel(t);
    const float *want = t->data; /* lkref writes 8-aligned F32 data */
    float *w = malloc(n * sizeof(float));
    memcpy(w, want, n * sizeof(float));
    size_t bad = 0, first = 0;
    for (size_t i = 0; i < n; i++)
        if (memcmp(&got[i], &w[i], 4)) {
            if (!bad) first = i;
            bad++;
        }
    lk_t_checks++;
    if (bad) {
        lk_t_failures++;
        fprintf(stderr, "FAIL %s: %zu of %zu differ; first at %zu: got %.9g want %.9g\n", what, bad, n, first,
                (double)got[first], (double)w[first]);
    }
    free(w);
}

static void test_golden(void) {
    lk_safetensors *st = lk_t_golden("torch_randn_cases.safetensors");
    if (!st) return;
    int cases = 0;
    for (int i = 0; i < lk_safetensors_count(st); i++) {
        const lk_st_tensor *t = lk_safetensors_at(st, i);
        unsigned long long seed;
        if (sscanf(t->name, "randn.seed%llu", &seed) != 1 || t->dtype != LK_F32) continue;
        size_t n = (size_t)lk_st_tensor_numel(t);
        float *x = malloc(n * sizeof(float));
        lk_rng r;
        lk_rng_seed(&r, seed);
        lk_rng_randn(&r, x, n);
        char what[128];
        snprintf(what, sizeof what, "golden %s (n=%zu)", t->name, n);
        check_same_f32(what, x, t);
        free(x);
        cases++;
    }
    CHECK(cases == 4);
    lk_safetensors_close(st);
}

static void test_ref(void) {
    lk_safetensors *st = lk_t_ref("rng");
    if (!st) return;
    lk_rng r;
    int cur = -1, calls = 0;
    for (int i = 0; i < lk_safetensors_count(st); i++) {
        const lk_st_tensor *t = lk_safetensors_at(st, i);
        int k, j, off = 0;
        if (sscanf(t->name, "s%d.c%d.%n", &k, &j, &off) != 2 || off == 0) continue;
        const char *op = t->name + off;
        if (k != cur) {
            char sn[32];
            snprintf(sn, sizeof sn, "s%02d.seed", k);
            const lk_st_tensor *s = lk_safetensors_find(st, sn);
            CHECK(s && s->dtype == LK_I64);
            if (!s || s->dtype != LK_I64) break;
            int64_t seed;
            memcpy(&seed, s->data, 8);
            lk_rng_seed(&r, (uint64_t)seed);
            cur = k;
        }
        size_t n = (size_t)lk_st_tensor_numel(t);
        if (!strcmp(op, "randn") || !strcmp(op, "rand")) {
            float *x = malloc(n * sizeof(float));
            if (op[4] == 'n') lk_rng_randn(&r, x, n);
            else lk_rng_rand(&r, x, n);
            check_same_f32(t->name, x, t);
            free(x);
        } else {
            long long lo, hi;
            bool ok = sscanf(op, "randint.%lld.%lld", &lo, &hi) == 2 && t->dtype == LK_I64;
            CHECK(ok);
            if (!ok) continue;
            int64_t *x = malloc(n * sizeof(int64_t));
            CHECK_OK(lk_rng_randint(&r, lo, hi, x, n));
            lk_t_checks++;
            if (memcmp(x, t->data, n * 8)) {
                lk_t_failures++;
                fprintf(stderr, "FAIL %s differs\n", t->name);
            }
            for (size_t q = 0; q < n; q++) CHECK(x[q] >= lo && x[q] < hi);
            free(x);
        }
        calls++;
    }
    CHECK(calls >= 30);
    printf("rng ref: %d calls matched bit for bit\n", calls);
    lk_safetensors_close(st);
}

/* The AVX2 block transform equals the scalar definition, also at the edges u = 0 and u -> 1. */
static void test_paths_agree(void) {
    lk_rng r;
    lk_rng_seed(&r, 5);
    int bad = 0;
    for (int it = 0; it < 20000; it++) {
        float a[16], b[16];
        lk_rng_rand(&r, a, 16);
        if (it == 0) for (int j = 0; j < 16; j++) a[j] = 0.0f;
        if (it == 1) for (int j = 0; j < 16; j++) a[j] = 1.0f - (float)(j + 1) / 16777216.0f;
        if (it == 2) for (int j = 0; j < 16; j++) a[j] = (float)j / 16.0f;
        memcpy(b, a, sizeof a);
        lk__rng_normal_fill_16(a);
        lk__rng_normal_fill_16_scalar(b);
        bad += memcmp(a, b, sizeof a) != 0;
        for (int j = 0; j < 16; j++) bad += !isfinite(a[j]);
    }
    CHECK(bad == 0);
}

static void test_state(void) {
    lk_rng r, r2;
    lk_rng_seed(&r, 31337);
    float tmp[700];
    lk_rng_randn(&r, tmp, 5); /* leaves a cached normal */
    lk_rng_rand(&r, tmp, 700); /* crosses a twist */
    uint8_t st[LK_RNG_STATE_BYTES];
    lk_rng_get_state(&r, st);
    CHECK(r.has_next_normal);
    float a[40], b[40];
    int64_t ia[10], ib[10];
    lk_rng_randn(&r, a, 3);
    lk_rng_randn(&r, a + 3, 37);
    CHECK_OK(lk_rng_randint(&r, -3, 1LL << 40, ia, 10));
    memset(&r2, 0xAB, sizeof r2);
    CHECK_OK(lk_rng_set_state(&r2, st));
    lk_rng_randn(&r2, b, 3);
    lk_rng_randn(&r2, b + 3, 37);
    CHECK_OK(lk_rng_randint(&r2, -3, 1LL << 40, ib, 10));
    CHECK(!memcmp(a, b, sizeof a) && !memcmp(ia, ib, sizeof ia));
    CHECK(r2.seed == 31337);
    uint8_t st2[LK_RNG_STATE_BYTES];
    lk_rng_get_state(&r2, st2);
    lk_rng_get_state(&r, st);
    CHECK(!memcmp(st, st2, sizeof st));
    /* malformed states are refused and leave the generator alone */
    uint8_t badst[LK_RNG_STATE_BYTES];
    memcpy(badst, st, sizeof badst);
    badst[624 * 4] = 0x71;
    badst[624 * 4 + 1] = 0x02; /* mti = 625 */
    CHECK(lk_rng_set_state(&r2, badst) == LK_ERR_INVALID);
    memcpy(badst, st, sizeof badst);
    badst[624 * 4 + 12] = 2; /* has_next_normal flag */
    CHECK(lk_rng_set_state(&r2, badst) == LK_ERR_INVALID);
    memset(badst, 0, sizeof badst);
    CHECK(lk_rng_set_state(&r2, badst) == LK_ERR_INVALID);
    lk_rng_get_state(&r2, st2);
    CHECK(!memcmp(st, st2, sizeof st));
    CHECK(lk_rng_randint(&r2, 5, 5, ia, 1) == LK_ERR_INVALID);
    CHECK(lk_rng_randint(&r2, 6, 5, ia, 1) == LK_ERR_INVALID);
    /* full int64 range */
    CHECK_OK(lk_rng_randint(&r2, INT64_MIN, INT64_MAX, ia, 10));
    /* known MT19937 outputs (seed 5489: 3499211612, 581869302; seed 0: 2357136044) */
    lk_rng_seed(&r, 5489);
    CHECK(lk_rng_u32(&r) == 3499211612u && lk_rng_u32(&r) == 581869302u);
    lk_rng_seed(&r, 0);
    CHECK(lk_rng_u64(&r) == ((uint64_t)2357136044u << 32 | 2546248239u));
}

/* randint equals (u32 % range) + lo (u64 when range >= 2^32) drawn from a copy of the generator,
 * over many ranges (the 32-bit path uses a division-free remainder). */
static void test_randint_definition(void) {
    lk_rng r, c;
    lk_rng_seed(&r, 8);
    uint64_t ranges[64] = {1, 2, 3, 7, 10, 1000, 65536, 65537, (1ull << 31) + 11, (1ull << 32) - 1, (1ull << 32) - 2,
                           1ull << 32, (1ull << 32) + 1, 1ull << 62};
    for (int i = 14; i < 64; i++) ranges[i] = 1 + lk_rng_u32(&r) % ((i & 1) ? 100000u : 0xffffffffu);
    int bad = 0;
    int64_t out[700];
    for (int i = 0; i < 64; i++) {
        int64_t lo = (i % 3 == 0) ? -(int64_t)(ranges[i] / 2) : 5;
        c = r;
        CHECK_OK(lk_rng_randint(&r, lo, lo + (int64_t)ranges[i], out, 700));
        for (int j = 0; j < 700; j++) {
            uint64_t v = ranges[i] >= (1ull << 32) ? lk_rng_u64(&c) % ranges[i] : lk_rng_u32(&c) % ranges[i];
            bad += out[j] != lo + (int64_t)v;
        }
        bad += c.mti != r.mti || memcmp(c.mt, r.mt, sizeof c.mt) != 0;
    }
    CHECK(bad == 0);
}

/* Distribution sanity on a large draw: mean, variance, tails. */
static void test_moments(void) {
    size_t n = 1 << 20;
    float *x = malloc(n * sizeof(float));
    lk_rng r;
    lk_rng_seed(&r, 2024);
    double t0 = lk_t_now();
    lk_rng_randn(&r, x, n);
    double dt = lk_t_now() - t0;
    double s = 0, s2 = 0;
    for (size_t i = 0; i < n; i++) {
        s += (double)x[i];
        s2 += (double)x[i] * (double)x[i];
    }
    double mean = s / (double)n, var = s2 / (double)n - mean * mean;
    CHECK(fabs(mean) < 5.0 / sqrt((double)n) && fabs(var - 1.0) < 0.01);
    t0 = lk_t_now();
    lk_rng_rand(&r, x, n);
    double dt2 = lk_t_now() - t0;
    s = 0;
    for (size_t i = 0; i < n; i++) s += (double)x[i];
    CHECK(fabs(s / (double)n - 0.5) < 0.003);
    printf("randn(2^20): %.2f ms, rand(2^20): %.2f ms\n", dt * 1e3, dt2 * 1e3);
    free(x);
}

int main(void) {
    test_golden();
    test_ref();
    test_paths_agree();
    test_state();
    test_randint_definition();
    test_moments();
    return lk_t_done();
}
