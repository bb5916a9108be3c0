/* test_unet.c: UNet2DConditionModel against the golden fixtures (diffusers 0.25 reference,
 * ../shared/golden/unet_cases): F32 and F16/BF16 weights, one broadcast timestep, the config
 * parser's strictness (unsupported options name their key), up-front weight validation, input
 * checks, and bounded inference memory. Tolerance 1e-4 relative. Reports the forward time. */
#include "harness.h"
#include "likeness/unet.h"

#include <stdlib.h>
#include <string.h>

static lk_tensor *raw_tensor(lk_ctx *ctx, const lk_safetensors *st, const char *name) {
    const lk_st_tensor *t = lk_safetensors_find(st, name);
    if (!t) {
        fprintf(stderr, "FAIL fixture tensor '%s' missing\n", name);
        lk_t_failures++;
        return NULL;
    }
    return lk_tensor_from(ctx, t->dtype, t->ndim, t->shape, t->data);
}

static char *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    char *b = malloc(1 << 16);
    *len = b ? fread(b, 1, (1 << 16) - 1, f) : 0;
    fclose(f);
    if (b) b[*len] = 0;
    return b;
}

/* Parse the golden config with one key's value replaced: expect status s and the key named. */
static void expect_refusal(const char *base, const char *key, const char *value, lk_status s) {
    const char *named = strcmp(key, "block_out_channels") ? key : "down_block_types";
    char *j = malloc(strlen(base) + 256);
    if (!j) return;
    /* insert "key": value right after the opening brace; cJSON keeps the first duplicate */
    snprintf(j, strlen(base) + 256, "{\"%s\": %s, %s", key, value, strchr(base, '{') + 1);
    lk_unet_config c;
    lk_status got = lk_unet_config_parse(&c, j, strlen(j), "unet/config.json");
    CHECK(got == s);
    CHECK(strstr(lk_last_error(), named) != NULL);
    if (got != s || !strstr(lk_last_error(), named))
        fprintf(stderr, "  %s=%s -> %s: %s\n", key, value, lk_status_str(got), lk_last_error());
    free(j);
}

static void test_config(const char *text, size_t len) {
    lk_unet_config c;
    CHECK_OK(lk_unet_config_parse(&c, text, len, "unet/config.json"));
    CHECK(c.n_blocks == 4 && c.block_out_channels[2] == 64 && c.layers_per_block == 2);
    CHECK(c.down_attn[0] && c.down_attn[2] && !c.down_attn[3]);
    CHECK(!c.up_attn[0] && c.up_attn[1] && c.up_attn[3]);
    CHECK(c.heads[0] == 8 && c.heads[3] == 8 && c.cross_attention_dim == 32);
    CHECK(c.flip_sin_to_cos && c.freq_shift == 0.0f && c.norm_eps == 1e-5f);
    CHECK(c.time_embed_dim == 128 && !c.use_linear_projection && c.transformer_layers[1] == 1);
    expect_refusal(text, "class_embed_type", "\"timestep\"", LK_ERR_UNSUPPORTED);
    expect_refusal(text, "addition_embed_type", "\"text_time\"", LK_ERR_UNSUPPORTED);
    expect_refusal(text, "only_cross_attention", "true", LK_ERR_UNSUPPORTED);
    expect_refusal(text, "dual_cross_attention", "true", LK_ERR_UNSUPPORTED);
    expect_refusal(text, "time_cond_proj_dim", "256", LK_ERR_UNSUPPORTED);
    expect_refusal(text, "resnet_time_scale_shift", "\"scale_shift\"", LK_ERR_UNSUPPORTED);
    expect_refusal(text, "mid_block_type", "\"UNetMidBlock2DSimpleCrossAttn\"", LK_ERR_UNSUPPORTED);
    expect_refusal(text, "down_block_types", "[\"SimpleCrossAttnDownBlock2D\",\"DownBlock2D\","
                   "\"DownBlock2D\",\"DownBlock2D\"]", LK_ERR_UNSUPPORTED);
    expect_refusal(text, "block_out_channels", "[32, 64]", LK_ERR_FORMAT); /* lists differ */
    CHECK(strstr(lk_last_error(), "down_block_types") != NULL);
    expect_refusal(text, "layers_per_block", "\"2\"", LK_ERR_FORMAT);
    expect_refusal(text, "norm_eps", "\"x\"", LK_ERR_FORMAT);
    expect_refusal(text, "attention_head_dim", "[8, 8]", LK_ERR_FORMAT);
    expect_refusal(text, "attention_head_dim", "7", LK_ERR_FORMAT); /* 32 channels / 7 heads */
    expect_refusal(text, "cross_attention_dim", "[32, 32, 32, 32]", LK_ERR_UNSUPPORTED);
    /* SD-2 style: per-block list and num_attention_heads winning over attention_head_dim */
    const char *sd2 = "{\"in_channels\":4,\"out_channels\":4,\"block_out_channels\":[320,640,1280,"
                      "1280],\"layers_per_block\":2,\"down_block_types\":[\"CrossAttnDownBlock2D\","
                      "\"CrossAttnDownBlock2D\",\"CrossAttnDownBlock2D\",\"DownBlock2D\"],"
                      "\"up_block_types\":[\"UpBlock2D\",\"CrossAttnUpBlock2D\","
                      "\"CrossAttnUpBlock2D\",\"CrossAttnUpBlock2D\"],\"cross_attention_dim\":1024,"
                      "\"attention_head_dim\":[5,10,20,20],\"use_linear_projection\":true}";
    CHECK_OK(lk_unet_config_parse(&c, sd2, strlen(sd2), NULL));
    CHECK(c.heads[0] == 5 && c.heads[1] == 10 && c.heads[3] == 20 && c.use_linear_projection);
    CHECK(c.block_out_channels[0] / c.heads[0] == 64 && c.block_out_channels[2] / c.heads[2] == 64);
    const char *nh = "{\"in_channels\":4,\"out_channels\":4,\"block_out_channels\":[64],"
                     "\"layers_per_block\":1,\"down_block_types\":[\"DownBlock2D\"],"
                     "\"up_block_types\":[\"UpBlock2D\"],\"cross_attention_dim\":8,"
                     "\"attention_head_dim\":8,\"num_attention_heads\":2}";
    CHECK_OK(lk_unet_config_parse(&c, nh, strlen(nh), NULL));
    CHECK(c.heads[0] == 2);
    const char *nokey = "{\"in_channels\":4,\"out_channels\":4,\"block_out_channels\":[64],"
                        "\"layers_per_block\":1,\"down_block_types\":[\"DownBlock2D\"],"
                        "\"up_block_types\":[\"UpBlock2D\"],\"attention_head_dim\":8}";
    CHECK(lk_unet_config_parse(&c, nokey, strlen(nokey), NULL) == LK_ERR_FORMAT);
    CHECK(strstr(lk_last_error(), "cross_attention_dim") != NULL);
}

static void run_case(const lk_unet_config *cfg, const char *wpath, lk_dtype store,
                     const lk_safetensors *cases, float atol, float rtol) {
    lk_weights *w = lk_weights_new();
    lk_unet *u = NULL;
    lk_ctx *ctx = lk_ctx_new();
    if (!w || !ctx) goto done;
    CHECK_OK(lk_weights_load_safetensors(w, wpath, NULL, NULL, store));
    CHECK_OK(lk_unet_new(&u, cfg, w, NULL));
    if (!u) goto done;
    lk_set_grad_enabled(ctx, false);
    lk_tensor *x = lk_t_tensor(ctx, cases, "sample");
    lk_tensor *t = raw_tensor(ctx, cases, "timestep");
    lk_tensor *e = lk_t_tensor(ctx, cases, "encoder_hidden_states");
    lk_ctx_reset_peak(ctx);
    size_t live0 = lk_ctx_live_bytes(ctx);
    double t0 = lk_t_now();
    lk_tensor *y = lk_unet_forward(ctx, u, x, t, e);
    double t1 = lk_t_now();
    CHECK_OK(lk_ctx_status(ctx));
    int64_t n = 0;
    float *want = lk_t_load(cases, "out", &n);
    char what[160];
    snprintf(what, sizeof what, "unet %s weights: out (forward %.1f ms, peak %.2f MB)",
             lk_dtype_name(store), 1e3 * (t1 - t0),
             (double)(lk_ctx_peak_bytes(ctx) - live0) / 1048576.0);
    CHECK(y && lk_numel(y) == n);
    if (y && want && lk_numel(y) == n) lk_t_close(what, y->data, want, (size_t)n, atol, rtol);
    /* the live activations after the forward: inputs + output (+ small), not the whole net */
    size_t live = lk_ctx_live_bytes(ctx) - live0;
    CHECK(live <= 4 * (size_t)n * sizeof(float) + 65536);
    if (store == LK_F32) {
        /* one timestep broadcast over the batch equals the batch of equal timesteps */
        const int64_t B = x->shape[0];
        float tv = lk_get_f32(t, 0);
        lk_tensor *t1v = lk_tensor_from(ctx, LK_F32, 1, (const int64_t[]){1}, &tv);
        float tb[8];
        for (int64_t i = 0; i < B && i < 8; i++) tb[i] = tv;
        lk_tensor *tbv = lk_tensor_from(ctx, LK_F32, 1, &B, tb);
        lk_tensor *ya = lk_unet_forward(ctx, u, x, t1v, e);
        lk_tensor *yb = lk_unet_forward(ctx, u, x, tbv, e);
        CHECK(ya && yb);
        if (ya && yb) lk_t_close("broadcast timestep", ya->data, yb->data, (size_t)n, 0.0f, 0.0f);
        /* time the second forward (warm pool) */
        t0 = lk_t_now();
        lk_tensor *y2 = lk_unet_forward(ctx, u, x, t, e);
        t1 = lk_t_now();
        fprintf(stderr, "  golden unet forward (warm, B=%lld, %lldx%lld): %.1f ms\n",
                (long long)B, (long long)x->shape[2], (long long)x->shape[3], 1e3 * (t1 - t0));
        CHECK(y2 != NULL);
        /* bad inputs: wrong channel count, odd size, wrong context width */
        lk_tensor *bad = lk_tensor_zeros(ctx, LK_F32, LK_DIMS(B, 3, 16, 16));
        CHECK(lk_unet_forward(ctx, u, bad, t, e) == NULL && lk_ctx_status(ctx) == LK_ERR_INVALID);
        fprintf(stderr, "  bad input: %s\n", lk_last_error());
        lk_ctx_reset(ctx);
        lk_set_grad_enabled(ctx, false);
        x = lk_t_tensor(ctx, cases, "sample");
        t = raw_tensor(ctx, cases, "timestep");
        bad = lk_tensor_zeros(ctx, LK_F32, LK_DIMS(B, 4, 12, 12));
        e = lk_t_tensor(ctx, cases, "encoder_hidden_states");
        CHECK(lk_unet_forward(ctx, u, bad, t, e) == NULL && lk_ctx_status(ctx) == LK_ERR_INVALID);
        fprintf(stderr, "  bad input: %s\n", lk_last_error());
        lk_ctx_reset(ctx);
        x = lk_t_tensor(ctx, cases, "sample");
        t = raw_tensor(ctx, cases, "timestep");
        bad = lk_tensor_zeros(ctx, LK_F32, LK_DIMS(B, 77, 16));
        CHECK(lk_unet_forward(ctx, u, x, t, bad) == NULL && lk_ctx_status(ctx) == LK_ERR_INVALID);
    }
    free(want);
done:
    lk_ctx_free(ctx);
    lk_unet_free(u);
    lk_weights_free(w);
}

static void test_validation(const lk_unet_config *cfg, const char *wpath) {
    lk_weights *w = lk_weights_new();
    if (!w) return;
    CHECK_OK(lk_weights_load_safetensors(w, wpath, NULL, NULL, LK_F32));
    lk_unet_config bad = *cfg;
    bad.block_out_channels[0] = 64;
    lk_unet *u = NULL;
    CHECK(lk_unet_new(&u, &bad, w, NULL) == LK_ERR_FORMAT && !u);
    fprintf(stderr, "  message: %s\n", lk_last_error());
    CHECK(strstr(lk_last_error(), "unet: tensor 'time_embedding.linear_1.weight' has shape "
                 "[128,32], config expects [128,64]") != NULL);
    bad = *cfg;
    bad.use_linear_projection = true;
    CHECK(lk_unet_new(&u, &bad, w, NULL) == LK_ERR_FORMAT && !u);
    CHECK(strstr(lk_last_error(), "proj_in.weight") != NULL);
    bad = *cfg;
    bad.layers_per_block = 3;
    CHECK(lk_unet_new(&u, &bad, w, NULL) == LK_ERR_FORMAT && !u);
    CHECK(strstr(lk_last_error(), "down_blocks.0.resnets.2.norm1.weight' is missing") != NULL);
    fprintf(stderr, "  message: %s\n", lk_last_error());
    /* extras are ignored; a prefix selects keys */
    lk_weights *w2 = lk_weights_new();
    CHECK_OK(lk_weights_load_safetensors(w2, wpath, NULL, "unet.", LK_BF16));
    CHECK_OK(lk_unet_new(&u, cfg, w2, "unet."));
    lk_unet_free(u);
    lk_weights_free(w2);
    lk_weights_free(w);
}

int main(void) {
    lk_set_num_threads(2);
    char cpath[1024], wpath[1024];
    snprintf(cpath, sizeof cpath, "%s/unet/config.json", lk_t_golden_dir());
    snprintf(wpath, sizeof wpath, "%s/unet/diffusion_pytorch_model.safetensors", lk_t_golden_dir());
    size_t len = 0;
    char *text = read_file(cpath, &len);
    REQUIRE(text);
    test_config(text, len);
    free(text);
    lk_unet_config cfg;
    CHECK_OK(lk_unet_config_load(&cfg, cpath));
    test_validation(&cfg, wpath);
    lk_safetensors *cases = lk_t_golden("unet_cases.safetensors");
    REQUIRE(cases);
    run_case(&cfg, wpath, LK_F32, cases, 1e-5f, 1e-4f);
    /* half weights: the reference is f32, so the tolerance covers the weight rounding */
    run_case(&cfg, wpath, LK_F16, cases, 2e-2f, 1e-2f);
    run_case(&cfg, wpath, LK_BF16, cases, 1.5e-1f, 5e-2f);
    lk_safetensors_close(cases);
    return lk_t_done();
}
