/* test_sd2_blocks.c: Stable Diffusion 2.x specifics against PyTorch (tests/ref/sd2_blocks.py):
 * a Transformer2DModel with linear projections and 64-wide heads (forward, and the gradients
 * w.r.t. input, context and two weights, with and without gradient checkpointing), a gelu CLIP
 * text model with zero padding (last / penultimate / penultimate + final norm), and a UNet with
 * use_linear_projection and a per-block attention_head_dim list (forward, and the gradients
 * w.r.t. the context and every parameter, with and without checkpointing). The references are
 * float64; tolerance 1e-4 relative. */
#include "harness.h"
#include "likeness/clip_text.h"
#include "likeness/unet.h"
#include "models/unet_blocks.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static void compare(const lk_safetensors *st, const char *key, const char *what, const float *got,
                    int64_t n_got, float atol, float rtol) {
    int64_t n = 0;
    float *want = lk_t_load(st, key, &n);
    CHECK(got != NULL && n == n_got);
    if (got && want && n == n_got) lk_t_close(what, got, want, (size_t)n, atol, rtol);
    free(want);
}

static void compare_t(const lk_safetensors *st, const char *key, const char *what, lk_tensor *t,
                      float atol, float rtol) {
    compare(st, key, what, t ? t->data : NULL, t ? lk_numel(t) : -1, atol, rtol);
}

static lk_tensor *raw_tensor(lk_ctx *ctx, const lk_safetensors *st, const char *name) {
    const lk_st_tensor *t = lk_safetensors_find(st, name);
    if (!t) {
        fprintf(stderr, "FAIL fixture tensor '%s' missing\n", name);
        lk_t_failures++;
        return NULL;
    }
    return lk_tensor_from(ctx, t->dtype, t->ndim, t->shape, t->data);
}

static void test_transformer(const lk_safetensors *st) {
    lk_weights *w = lk_weights_new();
    if (!w) return;
    CHECK_OK(lk_weights_load_safetensors(w, lk_safetensors_path(st), "tr.w.", "tr.", LK_F32));
    lk__net net;
    lk__transformer tr;
    lk__net_init(&net, "transformer", w, "");
    lk__transformer_init(&net, &tr, "tr", 128, 2, 2, 48, 32, true);
    CHECK_OK(net.st);
    lk_tensor *x = lk_t_param(st, "tr.x"), *cx = lk_t_param(st, "tr.ctx");
    lk_tensor *wp = lk_weights_get(w, "tr.proj_in.weight");
    lk_tensor *wk = lk_weights_get(w, "tr.transformer_blocks.1.attn2.to_k.weight");
    float *G = lk_t_load(st, "tr.G", NULL);
    if (net.st != LK_OK || !x || !cx || !wp || !wk || !G) {
        CHECK(!"transformer setup");
        goto done;
    }
    CHECK_OK(lk_set_requires_grad(x, true));
    CHECK_OK(lk_set_requires_grad(cx, true));
    CHECK_OK(lk_set_requires_grad(wp, true));
    CHECK_OK(lk_set_requires_grad(wk, true));
    for (int ck = 0; ck < 2; ck++) {
        net.checkpointing = ck == 1;
        lk_zero_grad(x);
        lk_zero_grad(cx);
        lk_zero_grad(wp);
        lk_zero_grad(wk);
        lk_ctx *ctx = lk_ctx_new();
        if (!ctx) break;
        lk_tensor *y = lk__transformer_forward(ctx, &tr, x, cx);
        const char *tag = ck ? "checkpointed" : "plain";
        char what[128];
        snprintf(what, sizeof what, "sd2 transformer (%s): out", tag);
        compare_t(st, "tr.out", what, y, 1e-5f, 1e-4f);
        if (y) CHECK_OK(lk_backward_from(ctx, y, G));
        snprintf(what, sizeof what, "sd2 transformer (%s): d input", tag);
        compare(st, "tr.dx", what, x->grad, lk_numel(x), 1e-5f, 1e-4f);
        snprintf(what, sizeof what, "sd2 transformer (%s): d context", tag);
        compare(st, "tr.dctx", what, cx->grad, lk_numel(cx), 1e-5f, 1e-4f);
        snprintf(what, sizeof what, "sd2 transformer (%s): d proj_in.weight", tag);
        compare(st, "tr.dproj_in", what, wp->grad, lk_numel(wp), 1e-4f, 1e-4f);
        snprintf(what, sizeof what, "sd2 transformer (%s): d blocks.1.attn2.to_k.weight", tag);
        compare(st, "tr.dto_k", what, wk->grad, lk_numel(wk), 1e-4f, 1e-4f);
        lk_ctx_free(ctx);
    }
done:
    free(G);
    lk_param_free(x);
    lk_param_free(cx);
    lk__transformer_free(&tr);
    lk__net_release(&net);
    lk_weights_free(w);
}

static void test_text_model(const lk_safetensors *st) {
    const char *js = lk_safetensors_meta(st, "te_config");
    lk_clip_text_config cfg;
    CHECK(js != NULL);
    if (!js) return;
    CHECK_OK(lk_clip_text_config_parse(&cfg, js, strlen(js), "te_config"));
    CHECK(cfg.hidden_act == LK_CLIP_GELU);
    lk_weights *w = lk_weights_new();
    CHECK_OK(lk_weights_load_safetensors(w, lk_safetensors_path(st), "te.w.", "", LK_F32));
    lk_clip_text *te = NULL;
    CHECK_OK(lk_clip_text_new(&te, &cfg, w, NULL));
    lk_ctx *ctx = lk_ctx_new();
    if (te && ctx) {
        lk_set_grad_enabled(ctx, false);
        lk_tensor *ids = raw_tensor(ctx, st, "te.ids");
        compare_t(st, "te.last", "sd2 text (gelu): last_hidden_state",
                  lk_clip_text_forward(ctx, te, ids, 1, true), 1e-5f, 1e-4f);
        compare_t(st, "te.penultimate", "sd2 text (gelu): penultimate",
                  lk_clip_text_forward(ctx, te, ids, 2, false), 1e-5f, 1e-4f);
        compare_t(st, "te.penultimate_norm", "sd2 text (gelu): penultimate + final norm",
                  lk_clip_text_forward(ctx, te, ids, 2, true), 1e-5f, 1e-4f);
        /* the same under checkpointing with grad recording (forward values unchanged) */
        lk_set_grad_enabled(ctx, true);
        lk_clip_text_set_checkpointing(te, true);
        lk_tensor *tab = lk_clip_text_token_table(te);
        CHECK_OK(lk_set_requires_grad(tab, true));
        compare_t(st, "te.last", "sd2 text (gelu): last_hidden_state, checkpointed",
                  lk_clip_text_forward(ctx, te, ids, 1, true), 1e-5f, 1e-4f);
        CHECK_OK(lk_set_requires_grad(tab, false));
    }
    lk_ctx_free(ctx);
    lk_clip_text_free(te);
    lk_weights_free(w);
}

static void test_unet(const lk_safetensors *st) {
    const char *js = lk_safetensors_meta(st, "unet_config");
    lk_unet_config cfg;
    CHECK(js != NULL);
    if (!js) return;
    CHECK_OK(lk_unet_config_parse(&cfg, js, strlen(js), "unet_config"));
    CHECK(cfg.use_linear_projection && cfg.heads[0] == 1 && cfg.heads[2] == 4);
    lk_weights *w = lk_weights_new();
    CHECK_OK(lk_weights_load_safetensors(w, lk_safetensors_path(st), "un.w.", "", LK_F32));
    lk_unet *u = NULL;
    CHECK_OK(lk_unet_new(&u, &cfg, w, NULL));
    for (int i = 0; i < lk_weights_count(w); i++)
        CHECK_OK(lk_set_requires_grad(lk_weights_at(w, i), true));
    lk_tensor *cp = lk_t_param(st, "un.ctx");
    float *G = lk_t_load(st, "un.G", NULL);
    CHECK(cp && G);
    if (cp) CHECK_OK(lk_set_requires_grad(cp, true));
    for (int ck = 0; u && cp && G && ck < 2; ck++) {
        lk_unet_set_checkpointing(u, ck == 1);
        lk_zero_grad(cp);
        for (int i = 0; i < lk_weights_count(w); i++) lk_zero_grad(lk_weights_at(w, i));
        lk_ctx *ctx = lk_ctx_new();
        if (!ctx) break;
        lk_tensor *x = lk_t_tensor(ctx, st, "un.x");
        lk_tensor *t = raw_tensor(ctx, st, "un.t");
        lk_tensor *y = lk_unet_forward(ctx, u, x, t, cp);
        const char *tag = ck ? " (checkpointed)" : "";
        char what[160];
        snprintf(what, sizeof what, "sd2 unet (linear proj, heads [1,2,4])%s: out", tag);
        compare_t(st, "un.out", what, y, 1e-5f, 1e-4f);
        if (y) CHECK_OK(lk_backward_from(ctx, y, G));
        snprintf(what, sizeof what, "sd2 unet%s: d context", tag);
        compare(st, "un.dctx", what, cp->grad, lk_numel(cp), 1e-5f, 1e-4f);
        /* every parameter: max|err| <= 1e-4 max|grad| (float64 reference) */
        int n = 0, bad = 0;
        double worst = 0.0;
        const char *wn = "";
        for (int i = 0; i < lk_weights_count(w); i++) {
            lk_tensor *prm = lk_weights_at(w, i);
            char key[200];
            snprintf(key, sizeof key, "un.grad.%s", prm->name);
            int64_t ng = 0;
            float *want = lk_t_load(st, key, &ng);
            n++;
            if (!want || !prm->grad || ng != lk_numel(prm)) {
                bad++;
                fprintf(stderr, "FAIL no gradient for %s\n", prm->name);
            } else {
                double e = 0.0, m = 0.0;
                for (int64_t k = 0; k < ng; k++) {
                    double d = fabs((double)prm->grad[k] - (double)want[k]);
                    e = d > e || d != d ? d : e;
                    m = fabs((double)want[k]) > m ? fabs((double)want[k]) : m;
                }
                e = m > 0.0 ? e / m : e;
                if (e > worst || e != e) {
                    worst = e;
                    wn = prm->name;
                }
                if (!(e <= 1e-4)) {
                    bad++;
                    fprintf(stderr, "FAIL gradient of %s: max|err|/max|grad| %.3g\n", prm->name, e);
                }
            }
            free(want);
        }
        lk_t_checks++;
        if (bad) lk_t_failures++;
        fprintf(stderr, "%s sd2 unet%s: %d parameter gradients, worst max|err|/max|grad| %.2g (%s)\n",
                bad ? "FAIL" : "ok  ", tag, n, worst, wn);
        lk_ctx_free(ctx);
    }
    for (int i = 0; i < lk_weights_count(w); i++)
        CHECK_OK(lk_set_requires_grad(lk_weights_at(w, i), false));
    free(G);
    lk_param_free(cp);
    lk_unet_free(u);
    /* the same config with the heads list wired the wrong way round must not match */
    cfg.heads[0] = 4;
    cfg.heads[2] = 1;
    u = NULL;
    CHECK_OK(lk_unet_new(&u, &cfg, w, NULL));
    lk_ctx *ctx = lk_ctx_new();
    if (u && ctx) {
        lk_set_grad_enabled(ctx, false);
        lk_tensor *y = lk_unet_forward(ctx, u, lk_t_tensor(ctx, st, "un.x"),
                                       raw_tensor(ctx, st, "un.t"), lk_t_tensor(ctx, st, "un.ctx"));
        float *want = lk_t_load(st, "un.out", NULL);
        float diff = 0.0f;
        for (int64_t i = 0; y && want && i < lk_numel(y); i++) {
            float d = ((float *)y->data)[i] - want[i];
            diff = d > diff ? d : (-d > diff ? -d : diff);
        }
        fprintf(stderr, "  reversed heads list: max diff %.3g (must be visible)\n", (double)diff);
        CHECK(diff > 1e-3f);
        free(want);
    }
    lk_ctx_free(ctx);
    lk_unet_free(u);
    lk_weights_free(w);
}

int main(void) {
    lk_set_num_threads(2);
    lk_safetensors *st = lk_t_ref("sd2_blocks");
    REQUIRE(st);
    test_transformer(st);
    test_text_model(st);
    test_unet(st);
    lk_safetensors_close(st);
    return lk_t_done();
}
