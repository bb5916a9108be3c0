/* test_model_init.c: fresh weights for a configuration have exactly the golden checkpoints' key
 * names and shapes, follow the init rules, are deterministic per seed, and run. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

/* every tensor of ref (floating) exists in got with the same shape, and counts agree */
static void same_layout(const char *what, const lk_weights *got, const lk_weights *ref) {
    int bad = 0, nref = 0;
    for (int i = 0; i < lk_weights_count(ref); i++) {
        lk_tensor *r = lk_weights_at(ref, i);
        if (strstr(r->name, "position_ids")) continue;
        nref++;
        lk_tensor *g = lk_weights_get(got, r->name);
        if (!g || !lk_same_shape(g, r)) {
            if (!bad) fprintf(stderr, "%s: '%s' missing or misshapen\n", what, r->name);
            bad++;
        }
    }
    printf("%s: %d tensors initialized, %d in the checkpoint, %d mismatches\n", what,
           lk_weights_count(got), nref, bad);
    CHECK(bad == 0);
    CHECK(lk_weights_count(got) == nref);
}

int main(void) {
    char path[4096];
    const char *g = lk_t_golden_dir();
    lk_unet_config uc;
    lk_vae_config vc;
    lk_clip_text_config tc;
    snprintf(path, sizeof path, "%s/unet/config.json", g);
    CHECK_OK(lk_unet_config_load(&uc, path));
    snprintf(path, sizeof path, "%s/vae/config.json", g);
    CHECK_OK(lk_vae_config_load(&vc, path));
    snprintf(path, sizeof path, "%s/text_encoder/config.json", g);
    CHECK_OK(lk_clip_text_config_load(&tc, path));

    lk_weights *u1 = lk_weights_new(), *u2 = lk_weights_new(), *v = lk_weights_new(), *t = lk_weights_new();
    CHECK_OK(lk_unet_init_weights(u1, &uc, NULL, LK_F32, 7));
    CHECK_OK(lk_unet_init_weights(u2, &uc, NULL, LK_F32, 7));
    CHECK_OK(lk_vae_init_weights(v, &vc, NULL, LK_F16, 7));
    CHECK_OK(lk_clip_text_init_weights(t, &tc, NULL, LK_F32, 7));

    lk_weights *ru = lk_weights_new(), *rv = lk_weights_new(), *rt = lk_weights_new();
    snprintf(path, sizeof path, "%s/unet/diffusion_pytorch_model.safetensors", g);
    CHECK_OK(lk_weights_load_safetensors(ru, path, NULL, NULL, LK_F32));
    snprintf(path, sizeof path, "%s/vae/diffusion_pytorch_model.safetensors", g);
    CHECK_OK(lk_weights_load_safetensors(rv, path, NULL, NULL, LK_F32));
    snprintf(path, sizeof path, "%s/text_encoder/model.safetensors", g);
    CHECK_OK(lk_weights_load_safetensors(rt, path, NULL, NULL, LK_F32));
    same_layout("unet", u1, ru);
    same_layout("vae", v, rv);
    same_layout("text_encoder", t, rt);

    /* deterministic per seed; the init rules */
    int same = 1;
    for (int i = 0; i < lk_weights_count(u1); i++) {
        lk_tensor *a = lk_weights_at(u1, i), *b = lk_weights_get(u2, a->name);
        same &= b && !memcmp(a->data, b->data, lk_nbytes(a));
    }
    CHECK(same);
    lk_tensor *nw = lk_weights_get(u1, "conv_norm_out.weight"), *cb = lk_weights_get(u1, "conv_in.bias");
    lk_tensor *cw = lk_weights_get(u1, "conv_in.weight");
    REQUIRE(nw && cb && cw);
    CHECK(lk_get_f32(nw, 0) == 1.0f && lk_get_f32(cb, 3) == 0.0f);
    float bound = 1.0f / sqrtf((float)(cw->shape[1] * 9)), mx = 0;
    for (int64_t i = 0; i < lk_numel(cw); i++) mx = fmaxf(mx, fabsf(lk_get_f32(cw, i)));
    CHECK(mx <= bound && mx > 0.9f * bound);
    CHECK(lk_weights_get(v, "decoder.conv_in.weight")->dtype == LK_F16);

    /* a network built on them runs and gives finite outputs */
    lk_unet *un = NULL;
    CHECK_OK(lk_unet_new(&un, &uc, u1, NULL));
    lk_ctx *ctx = lk_ctx_new();
    lk_set_grad_enabled(ctx, false);
    lk_tensor *x = lk_tensor_new(ctx, LK_F32, LK_DIMS(1, 4, 16, 16));
    lk_tensor *e = lk_tensor_new(ctx, LK_F32, LK_DIMS(1, 77, uc.cross_attention_dim));
    float tv = 10.0f;
    lk_tensor *ts = lk_tensor_from(ctx, LK_F32, LK_DIMS(1), &tv);
    lk_t_fill_uniform(x->data, (size_t)lk_numel(x), -1, 1, 1);
    lk_t_fill_uniform(e->data, (size_t)lk_numel(e), -1, 1, 2);
    lk_tensor *y = un ? lk_unet_forward(ctx, un, x, ts, e) : NULL;
    CHECK(y != NULL);
    int finite = y != NULL;
    for (int64_t i = 0; y && i < lk_numel(y); i++) finite &= isfinite(lk_get_f32(y, i));
    CHECK(finite);
    lk_ctx_free(ctx);
    lk_unet_free(un);

    lk_weights_free(u1);
    lk_weights_free(u2);
    lk_weights_free(v);
    lk_weights_free(t);
    lk_weights_free(ru);
    lk_weights_free(rv);
    lk_weights_free(rt);
    return lk_t_done();
}
