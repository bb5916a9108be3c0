/* test_half.c: f32 -> f16 / bf16 conversion is bit-exact with PyTorch (round to nearest even,
 * subnormals, overflow to inf), and widening round-trips exactly; scalar and SIMD paths. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

int main(void) {
    lk_safetensors *st = lk_t_ref("half");
    REQUIRE(st);
    const lk_st_tensor *tx = lk_safetensors_find(st, "x");
    const lk_st_tensor *th = lk_safetensors_find(st, "f16_bits");
    const lk_st_tensor *tb = lk_safetensors_find(st, "bf16_bits");
    REQUIRE(tx && th && tb && tx->dtype == LK_F32 && th->dtype == LK_I32);
    size_t n = (size_t)lk_st_tensor_numel(tx);
    float *x = malloc(n * sizeof(float));
    int32_t *wh = malloc(n * 4), *wb = malloc(n * 4);
    uint16_t *h = malloc(n * 2);
    float *back = malloc(n * sizeof(float));
    memcpy(x, tx->data, n * 4);
    memcpy(wh, th->data, n * 4);
    memcpy(wb, tb->data, n * 4);
    size_t bad16 = 0, bad16v = 0, badb = 0, badbv = 0, badw = 0;
    for (size_t i = 0; i < n; i++) {
        uint16_t want16 = (uint16_t)wh[i], wantb = (uint16_t)wb[i];
        bool nan = isnan(x[i]);
        if (!nan && lk_f32_to_f16(x[i]) != want16) {
            if (!bad16) fprintf(stderr, "f16 of %.9g: got %04x want %04x\n", (double)x[i], lk_f32_to_f16(x[i]), want16);
            bad16++;
        }
        if (!nan && lk_f32_to_bf16(x[i]) != wantb) {
            if (!badb) fprintf(stderr, "bf16 of %.9g: got %04x want %04x\n", (double)x[i], lk_f32_to_bf16(x[i]), wantb);
            badb++;
        }
    }
    lk_f32_to_f16_n(h, x, n);
    for (size_t i = 0; i < n; i++) bad16v += !isnan(x[i]) && h[i] != (uint16_t)wh[i];
    lk_f16_to_f32_n(back, h, n);
    for (size_t i = 0; i < n; i++)
        badw += !isnan(back[i]) && back[i] != lk_f16_to_f32(h[i]);
    lk_f32_to_bf16_n(h, x, n);
    for (size_t i = 0; i < n; i++) badbv += !isnan(x[i]) && h[i] != (uint16_t)wb[i];
    lk_bf16_to_f32_n(back, h, n);
    for (size_t i = 0; i < n; i++) badw += !isnan(back[i]) && back[i] != lk_bf16_to_f32(h[i]);
    printf("%zu values: f16 mismatches scalar %zu simd %zu, bf16 scalar %zu simd %zu, widen %zu\n", n,
           bad16, bad16v, badb, badbv, badw);
    CHECK(bad16 == 0);
    CHECK(bad16v == 0);
    CHECK(badb == 0);
    CHECK(badbv == 0);
    CHECK(badw == 0);
    /* widening through lk_widen_f32 equals the per-element conversion */
    lk_widen_f32(back, h, LK_BF16, n);
    CHECK(lk_bf16_to_f32(h[7]) == back[7] || isnan(back[7]));
    free(x);
    free(wh);
    free(wb);
    free(h);
    free(back);
    lk_safetensors_close(st);
    return lk_t_done();
}
