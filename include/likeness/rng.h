/* likeness/rng.h: a CPU random generator that reproduces PyTorch's CPU generator
 * (mt19937 seeded by torch.manual_seed) draw for draw: lk_rng_randn equals
 * torch.manual_seed(s); torch.randn(n) bit for bit, for small (< 16) and large tensors. */
#ifndef LIKENESS_RNG_H
#define LIKENESS_RNG_H

#include "likeness/core.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct lk_rng {
    uint32_t mt[624];
    int mti;
    uint64_t seed;
    /* PyTorch caches the second Box-Muller value of its scalar normal sampler */
    bool has_next_normal;
    double next_normal;
} lk_rng;

/* torch.manual_seed(seed) for the CPU generator. */
void lk_rng_seed(lk_rng *r, uint64_t seed);
uint32_t lk_rng_u32(lk_rng *r);
uint64_t lk_rng_u64(lk_rng *r);
/* torch.randn(n) (standard normal, float32), continuing the generator's stream. */
void lk_rng_randn(lk_rng *r, float *out, size_t n);
/* torch.rand(n): uniform [0, 1) float32. */
void lk_rng_rand(lk_rng *r, float *out, size_t n);
/* torch.randint(lo, hi, (n,)) as int64: uniform integers in [lo, hi). lo < hi required;
 * returns LK_ERR_INVALID otherwise. */
lk_status lk_rng_randint(lk_rng *r, int64_t lo, int64_t hi, int64_t *out, size_t n);
/* Serialize/restore the full generator state (for exact resume). Size in bytes: */
#define LK_RNG_STATE_BYTES (624 * 4 + 4 + 8 + 4 + 8)
void lk_rng_get_state(const lk_rng *r, uint8_t out[LK_RNG_STATE_BYTES]);
lk_status lk_rng_set_state(lk_rng *r, const uint8_t in[LK_RNG_STATE_BYTES]);

#ifdef __cplusplus
}
#endif
#endif
