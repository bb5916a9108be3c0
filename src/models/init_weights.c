/* init_weights.c: fresh weights for a network configuration, in the real checkpoint key layout
 * (for training from scratch and for benchmarks on full-size shapes without a download): the
 * network is built in initialization mode, which creates every parameter it asks for. */
#include "likeness/clip_text.h"
#include "likeness/unet.h"
#include "likeness/vae.h"
#include "models/layers.h"

static lk_status check(lk_weights *w, lk_dtype store) {
    if (!w) return lk_fail(LK_ERR_INVALID, "init_weights: NULL weights");
    if (store != LK_F32 && store != LK_F16 && store != LK_BF16)
        return lk_fail(LK_ERR_INVALID, "init_weights: storage must be F32, F16 or BF16");
    return LK_OK;
}

#define INIT_BODY(new_call, free_call)                     \
    lk_status s = check(w, store);                         \
    if (s != LK_OK) return s;                              \
    lk_rng rng;                                            \
    lk_rng_seed(&rng, seed);                               \
    lk__init_req req = {w, store, &rng};                   \
    lk__net_set_init_request(&req);                        \
    s = new_call;                                          \
    lk__net_set_init_request(NULL);                        \
    free_call;                                             \
    return s;

lk_status lk_unet_init_weights(lk_weights *w, const lk_unet_config *cfg, const char *prefix,
                               lk_dtype store, uint64_t seed) {
    lk_unet *u = NULL;
    INIT_BODY(lk_unet_new(&u, cfg, w, prefix), lk_unet_free(u))
}

lk_status lk_vae_init_weights(lk_weights *w, const lk_vae_config *cfg, const char *prefix,
                              lk_dtype store, uint64_t seed) {
    lk_vae *v = NULL;
    INIT_BODY(lk_vae_new(&v, cfg, w, prefix), lk_vae_free(v))
}

lk_status lk_clip_text_init_weights(lk_weights *w, const lk_clip_text_config *cfg,
                                    const char *prefix, lk_dtype store, uint64_t seed) {
    lk_clip_text *te = NULL;
    INIT_BODY(lk_clip_text_new(&te, cfg, w, prefix), lk_clip_text_free(te))
}
