/* test_vae.c: AutoencoderKL against the golden fixtures (diffusers 0.25 reference,
 * ../shared/golden/vae_cases): encode -> mean and clamped logvar, decode, F16 weights; the
 * sample draw against torch's randn stream; the pad2d / clamp ops' gradients by finite
 * differences; config strictness and weight validation. Tolerance 1e-4 relative. */
#include "harness.h"
#include "likeness/vae.h"
#include "models/layers.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static void compare(const lk_safetensors *st, const char *key, const char *what, lk_tensor *got,
                    float atol, float rtol) {
    int64_t n = 0;
    float *want = lk_t_load(st, key, &n);
    CHECK(got != NULL);
    if (got && want) {
        CHECK(lk_numel(got) == n);
        if (lk_numel(got) == n) lk_t_close(what, got->data, want, (size_t)n, atol, rtol);
    }
    free(want);
}

static void test_config(void) {
    lk_vae_config c;
    const char *ok = "{\"block_out_channels\":[128,256,512,512],\"layers_per_block\":2,"
                     "\"latent_channels\":4}";
    CHECK_OK(lk_vae_config_parse(&c, ok, strlen(ok), "vae/config.json"));
    CHECK(c.in_channels == 3 && c.out_channels == 3 && c.norm_num_groups == 32 &&
          c.scaling_factor == 0.18215f && c.n_blocks == 4);
    const char *sf = "{\"block_out_channels\":[64],\"layers_per_block\":1,\"latent_channels\":4,"
                     "\"shift_factor\":0.1159}";
    CHECK(lk_vae_config_parse(&c, sf, strlen(sf), "v") == LK_ERR_UNSUPPORTED);
    CHECK(strstr(lk_last_error(), "shift_factor") != NULL);
    const char *bt = "{\"block_out_channels\":[64],\"layers_per_block\":1,\"latent_channels\":4,"
                     "\"down_block_types\":[\"DownBlock2D\"]}";
    CHECK(lk_vae_config_parse(&c, bt, strlen(bt), "v") == LK_ERR_UNSUPPORTED);
    const char *ms = "{\"block_out_channels\":[64],\"layers_per_block\":1}";
    CHECK(lk_vae_config_parse(&c, ms, strlen(ms), "v") == LK_ERR_FORMAT);
    CHECK(strstr(lk_last_error(), "latent_channels") != NULL);
    const char *gr = "{\"block_out_channels\":[48],\"layers_per_block\":1,\"latent_channels\":4}";
    CHECK(lk_vae_config_parse(&c, gr, strlen(gr), "v") == LK_ERR_FORMAT);
}

/* finite-difference checks of the two ops the VAE adds */
static lk_tensor *pad_fn(lk_ctx *ctx, lk_tensor **in, int n, void *ud) {
    return lk__pad2d(ctx, in[0], 0, 1, 2, 1);
}
static lk_tensor *clamp_fn(lk_ctx *ctx, lk_tensor **in, int n, void *ud) {
    return lk__clamp(ctx, in[0], -0.5f, 0.5f);
}

static void test_ops(void) {
    lk_tensor *x = lk_param_new(LK_F32, LK_DIMS(2, 3, 5, 4), "x");
    if (!x) return;
    lk_t_fill_uniform(x->data, (size_t)lk_numel(x), -1.0f, 1.0f, 7);
    CHECK_OK(lk_set_requires_grad(x, true));
    lk_t_gradcheck("pad2d", pad_fn, NULL, &x, 1, 20, 1e-2f, 1e-3f);
    lk_zero_grad(x);
    /* keep the probes away from the clamp's kinks */
    float *d = x->data;
    for (int64_t i = 0; i < lk_numel(x); i++)
        if (fabsf(fabsf(d[i]) - 0.5f) < 0.05f) d[i] *= 0.8f;
    lk_t_gradcheck("clamp", clamp_fn, NULL, &x, 1, 20, 1e-2f, 1e-3f);
    lk_ctx *ctx = lk_ctx_new();
    lk_tensor *y = lk__pad2d(ctx, x, 0, 1, 0, 1);
    CHECK(y && y->shape[2] == 6 && y->shape[3] == 5);
    if (y) {
        const float *yd = y->data;
        CHECK(yd[0] == d[0] && yd[5] == d[4] && yd[4] == 0.0f && yd[29] == 0.0f);
    }
    lk_ctx_free(ctx);
    lk_param_free(x);
}

static void run(const lk_vae_config *cfg, const char *wpath, lk_dtype store,
                const lk_safetensors *cases, float atol, float rtol) {
    lk_weights *w = lk_weights_new();
    lk_vae *v = NULL;
    lk_ctx *ctx = lk_ctx_new();
    if (!w || !ctx) goto done;
    CHECK_OK(lk_weights_load_safetensors(w, wpath, NULL, NULL, store));
    CHECK_OK(lk_vae_new(&v, cfg, w, NULL));
    if (!v) goto done;
    lk_set_grad_enabled(ctx, false);
    char what[160];
    const char *tag = lk_dtype_name(store);
    lk_tensor *img = lk_t_tensor(ctx, cases, "image");
    lk_tensor *mean = NULL, *logvar = NULL;
    double t0 = lk_t_now();
    CHECK_OK(lk_vae_encode(ctx, v, img, &mean, &logvar));
    double t1 = lk_t_now();
    snprintf(what, sizeof what, "vae %s encode: latent_mean (%.1f ms)", tag, 1e3 * (t1 - t0));
    compare(cases, "latent_mean", what, mean, atol, rtol);
    snprintf(what, sizeof what, "vae %s encode: latent_logvar", tag);
    compare(cases, "latent_logvar", what, logvar, atol, rtol);
    lk_tensor *z = lk_t_tensor(ctx, cases, "z");
    t0 = lk_t_now();
    lk_tensor *dec = lk_vae_decode(ctx, v, z);
    t1 = lk_t_now();
    snprintf(what, sizeof what, "vae %s decode (%.1f ms)", tag, 1e3 * (t1 - t0));
    compare(cases, "decoded", what, dec, atol, rtol);
    if (store == LK_F32 && mean && logvar) {
        /* the draw equals torch.manual_seed(s); mean + exp(0.5 logvar) * torch.randn(shape) */
        lk_rng r1, r2;
        lk_rng_seed(&r1, 1234);
        lk_rng_seed(&r2, 1234);
        lk_tensor *s = lk_vae_sample(ctx, mean, logvar, &r1);
        CHECK(s && lk_same_shape(s, mean));
        int64_t n = lk_numel(mean);
        float *e = malloc(sizeof(float) * (size_t)n), *want = malloc(sizeof(float) * (size_t)n);
        if (s && e && want) {
            lk_rng_randn(&r2, e, (size_t)n);
            const float *m = mean->data, *lv = logvar->data;
            for (int64_t i = 0; i < n; i++) want[i] = m[i] + expf(0.5f * lv[i]) * e[i];
            lk_t_close("vae sample = mean + std * randn", s->data, want, (size_t)n, 0.0f, 0.0f);
        }
        free(e);
        free(want);
        /* logvar clamp: a huge quant_conv bias pushes every logvar over 20 */
        lk_tensor *qb = lk_weights_get(w, "quant_conv.bias");
        if (qb) {
            float *b = qb->data;
            float saved = b[cfg->latent_channels];
            b[cfg->latent_channels] = 1e4f;
            lk_tensor *m2 = NULL, *l2 = NULL;
            CHECK_OK(lk_vae_encode(ctx, v, img, &m2, &l2));
            if (l2) CHECK(lk_get_f32(l2, 0) == 20.0f);
            b[cfg->latent_channels] = saved;
        }
        /* wrong inputs */
        lk_tensor *bad = lk_tensor_zeros(ctx, LK_F32, LK_DIMS(1, 3, 60, 64));
        lk_tensor *m3 = NULL, *l3 = NULL;
        CHECK(lk_vae_encode(ctx, v, bad, &m3, &l3) == LK_ERR_INVALID && !m3 && !l3);
        fprintf(stderr, "  bad input: %s\n", lk_last_error());
    }
done:
    lk_ctx_free(ctx);
    lk_vae_free(v);
    lk_weights_free(w);
}

int main(void) {
    lk_set_num_threads(2);
    test_config();
    test_ops();
    char cpath[1024], wpath[1024];
    snprintf(cpath, sizeof cpath, "%s/vae/config.json", lk_t_golden_dir());
    snprintf(wpath, sizeof wpath, "%s/vae/diffusion_pytorch_model.safetensors", lk_t_golden_dir());
    lk_vae_config cfg;
    CHECK_OK(lk_vae_config_load(&cfg, cpath));
    REQUIRE(cfg.n_blocks == 4 && cfg.latent_channels == 4 && cfg.scaling_factor == 0.18215f);
    {
        lk_weights *w = lk_weights_new();
        REQUIRE(w);
        CHECK_OK(lk_weights_load_safetensors(w, wpath, NULL, NULL, LK_F32));
        lk_vae_config bad = cfg;
        bad.layers_per_block = 1;
        lk_vae *v = NULL;
        CHECK_OK(lk_vae_new(&v, &bad, w, NULL)); /* fewer layers: extras are ignored */
        lk_vae_free(v);
        v = NULL;
        bad = cfg;
        bad.latent_channels = 8;
        CHECK(lk_vae_new(&v, &bad, w, NULL) == LK_ERR_FORMAT && !v);
        CHECK(strstr(lk_last_error(), "vae: tensor 'encoder.conv_out.weight' has shape "
                     "[8,64,3,3], config expects [16,64,3,3]") != NULL);
        fprintf(stderr, "  message: %s\n", lk_last_error());
        lk_weights_free(w);
    }
    lk_safetensors *cases = lk_t_golden("vae_cases.safetensors");
    REQUIRE(cases);
    run(&cfg, wpath, LK_F32, cases, 1e-5f, 1e-4f);
    run(&cfg, wpath, LK_F16, cases, 1e-2f, 1e-2f);
    lk_safetensors_close(cases);
    return lk_t_done();
}
