/* test_unet_train.c: the networks are differentiable as the trainers need, against the golden
 * training_cases (diffusers 0.25 + PyTorch autograd): the denoising loss and d loss / d every
 * UNet parameter (full fine-tuning), with and without gradient checkpointing; the textual-
 * inversion gradient of a new token row through the text encoder and the UNet; LoRA gradients
 * through the layer hook (rank 4 on every to_q/to_k/to_v/to_out.0). */
#include "harness.h"
#include "likeness/clip_text.h"
#include "likeness/sampler.h"
#include "likeness/unet.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static lk_safetensors *cases;
static float ac[1000];

static lk_tensor *raw_tensor(lk_ctx *ctx, const lk_safetensors *st, const char *name) {
    const lk_st_tensor *t = lk_safetensors_find(st, name);
    if (!t) {
        fprintf(stderr, "FAIL fixture tensor '%s' missing\n", name);
        lk_t_failures++;
        return NULL;
    }
    return lk_tensor_from(ctx, t->dtype, t->ndim, t->shape, t->data);
}

/* max |got - want| / max |want| over a tensor */
static double scaled_err(const float *got, const float *want, int64_t n, double *maxw) {
    double e = 0.0, m = 0.0;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - (double)want[i]);
        if (isnan(d)) e = (double)INFINITY;
        else if (d > e) e = d;
        if (fabs((double)want[i]) > m) m = fabs((double)want[i]);
    }
    if (maxw) *maxw = m;
    return m > 0.0 ? e / m : e;
}

/* loss = mse(unet(x_t, t, ehs), noise); x_t from the golden x0/noise/timestep. */
static lk_tensor *denoise_loss(lk_ctx *ctx, const lk_unet *u, lk_tensor *ehs) {
    lk_tensor *x0 = lk_t_tensor(ctx, cases, "x0");
    lk_tensor *noise = lk_t_tensor(ctx, cases, "noise");
    lk_tensor *t = raw_tensor(ctx, cases, "timestep");
    if (!x0 || !noise || !t) return NULL;
    lk_tensor *xt = lk_tensor_new(ctx, LK_F32, x0->ndim, x0->shape);
    if (!xt) return NULL;
    const int64_t B = x0->shape[0], per = lk_numel(x0) / B;
    for (int64_t b = 0; b < B; b++)
        CHECK_OK(lk_ddpm_add_noise((float *)xt->data + b * per, (float *)x0->data + b * per,
                                   (float *)noise->data + b * per, (size_t)per, ac, 1000,
                                   (int64_t)lk_get_f32(t, b)));
    return lk_mse_loss(ctx, lk_unet_forward(ctx, u, xt, t, ehs), noise);
}

static void check_loss(lk_tensor *loss, const char *key, const char *what) {
    float *want = lk_t_load(cases, key, NULL);
    CHECK(loss != NULL);
    if (loss && want) lk_t_close(what, loss->data, want, 1, 1e-7f, 1e-5f);
    free(want);
}

static void test_full(const char *unet_dir) {
    lk_unet_config cfg;
    char p[1200];
    snprintf(p, sizeof p, "%s/config.json", unet_dir);
    CHECK_OK(lk_unet_config_load(&cfg, p));
    snprintf(p, sizeof p, "%s/diffusion_pytorch_model.safetensors", unet_dir);
    lk_weights *w = lk_weights_new();
    CHECK_OK(lk_weights_load_safetensors(w, p, NULL, NULL, LK_F32));
    lk_unet *u = NULL;
    CHECK_OK(lk_unet_new(&u, &cfg, w, NULL));
    if (!u) goto done;
    for (int i = 0; i < lk_weights_count(w); i++)
        CHECK_OK(lk_set_requires_grad(lk_weights_at(w, i), true));
    for (int ck = 0; ck < 2; ck++) {
        lk_unet_set_checkpointing(u, ck == 1);
        for (int i = 0; i < lk_weights_count(w); i++) lk_zero_grad(lk_weights_at(w, i));
        lk_ctx *ctx = lk_ctx_new();
        if (!ctx) break;
        lk_tensor *ehs = lk_t_tensor(ctx, cases, "ctx");
        double t0 = lk_t_now();
        lk_tensor *loss = denoise_loss(ctx, u, ehs);
        size_t peak_fwd = lk_ctx_peak_bytes(ctx);
        check_loss(loss, "full.loss", ck ? "full fine-tune loss (checkpointed)" : "full fine-tune loss");
        if (loss) CHECK_OK(lk_backward(ctx, loss));
        double t1 = lk_t_now();
        /* every parameter's gradient. Criterion per tensor: max|err| <= 2e-3 max|grad| +
         * 1e-6 S, S the largest gradient of the model: with 8x8 latents the deepest level is
         * 1x1, where a GroupNorm over 2 values amplifies float32 rounding into the gradients
         * of the levels above (~1e-3 relative; ~1e-2 at that level; the forward agrees to 1e-7;
         * test_sd2_blocks checks every gradient against float64 to 1e-4), and the gradients
         * of biases feeding a GroupNorm with one channel per group are zero in exact
         * arithmetic (~1e-9 noise on both sides). */
        int n = 0, bad = 0, ne = 0;
        double S = 0.0, worst = 0.0, errs[1024];
        const char *worst_name = "";
        for (int pass = 0; pass < 2; pass++)
            for (int i = 0; i < lk_safetensors_count(cases); i++) {
                const lk_st_tensor *g = lk_safetensors_at(cases, i);
                if (strncmp(g->name, "full.grad.", 10)) continue;
                lk_tensor *prm = lk_weights_get(w, g->name + 10);
                int64_t ng = 0;
                float *want = lk_t_load(cases, g->name, &ng);
                if (!prm || !prm->grad || !want || lk_numel(prm) != ng) {
                    if (pass) {
                        n++;
                        bad++;
                        fprintf(stderr, "FAIL no gradient for %s\n", g->name + 10);
                    }
                    free(want);
                    continue;
                }
                double mw = 0.0, e = scaled_err(prm->grad, want, ng, &mw);
                free(want);
                if (!pass) {
                    S = mw > S ? mw : S;
                    continue;
                }
                n++;
                /* the 1x1 level and the conv into it (2 values per GroupNorm group): 3e-2 */
                bool deep = !strncmp(prm->name, "down_blocks.3.", 14) ||
                            !strncmp(prm->name, "down_blocks.2.downsamplers.", 27) ||
                            !strncmp(prm->name, "mid_block.", 10) ||
                            !strncmp(prm->name, "up_blocks.0.", 12);
                if (!(e * mw <= (deep ? 3e-2 : 2e-3) * mw + 1e-6 * S)) {
                    bad++;
                    fprintf(stderr, "FAIL gradient of %s: max|err| %.3g, max|grad| %.3g\n",
                            prm->name, e * mw, mw);
                }
                if (mw > 1e-6 * S) {
                    if (ne < 1024) errs[ne++] = e;
                    if (e > worst) {
                        worst = e;
                        worst_name = prm->name;
                    }
                }
            }
        for (int a = 1; a < ne; a++) /* insertion sort for the median */
            for (int b = a; b > 0 && errs[b - 1] > errs[b]; b--) {
                double tmp = errs[b];
                errs[b] = errs[b - 1];
                errs[b - 1] = tmp;
            }
        lk_t_checks++;
        if (bad || n < 600) lk_t_failures++;
        fprintf(stderr, "%s full fine-tune%s: %d parameter gradients (%d non-zero), max|err|/max|grad| "
                "median %.2g, worst %.2g (%s), %d bad; fwd+bwd %.0f ms, peak after forward %.2f MB\n",
                bad || n < 600 ? "FAIL" : "ok  ", ck ? " (checkpointed)" : "", n, ne,
                ne ? errs[ne / 2] : 0.0, worst, worst_name, bad, 1e3 * (t1 - t0),
                (double)peak_fwd / 1048576.0);
        lk_ctx_free(ctx);
    }
    for (int i = 0; i < lk_weights_count(w); i++)
        CHECK_OK(lk_set_requires_grad(lk_weights_at(w, i), false));
done:
    lk_unet_free(u);
    lk_weights_free(w);
}

static void test_textual_inversion(const char *golden) {
    char p[1024];
    lk_clip_text_config tcfg;
    lk_unet_config ucfg;
    snprintf(p, sizeof p, "%s/text_encoder/config.json", golden);
    CHECK_OK(lk_clip_text_config_load(&tcfg, p));
    snprintf(p, sizeof p, "%s/unet/config.json", golden);
    CHECK_OK(lk_unet_config_load(&ucfg, p));
    lk_weights *w = lk_weights_new();
    snprintf(p, sizeof p, "%s/text_encoder/model.safetensors", golden);
    CHECK_OK(lk_weights_load_safetensors(w, p, NULL, "te.", LK_F32));
    snprintf(p, sizeof p, "%s/unet/diffusion_pytorch_model.safetensors", golden);
    CHECK_OK(lk_weights_load_safetensors(w, p, NULL, "unet.", LK_F32));
    lk_clip_text *te = NULL;
    lk_unet *u = NULL;
    lk_ctx *ctx = lk_ctx_new();
    float *row = lk_t_load(cases, "ti.init_row", NULL);
    float *want = lk_t_load(cases, "ti.grad_row", NULL);
    CHECK_OK(lk_clip_text_new(&te, &tcfg, w, "te."));
    CHECK_OK(lk_unet_new(&u, &ucfg, w, "unet."));
    if (!te || !u || !ctx || !row || !want) goto done;
    lk_unet_set_checkpointing(u, true);
    lk_clip_text_set_checkpointing(te, true);
    int64_t id = -1;
    CHECK_OK(lk_clip_text_add_tokens(te, 1, row, &id));
    CHECK(id == 49408);
    lk_tensor *table = lk_clip_text_token_table(te);
    CHECK_OK(lk_set_trainable_rows(table, id, id + 1));
    lk_tensor *ids = raw_tensor(ctx, cases, "input_ids");
    lk_tensor *ehs = lk_clip_text_forward(ctx, te, ids, 1, true);
    lk_tensor *loss = denoise_loss(ctx, u, ehs);
    check_loss(loss, "ti.loss", "textual inversion loss");
    if (loss) CHECK_OK(lk_backward(ctx, loss));
    CHECK(table->grad != NULL && lk_grad_numel(table) == tcfg.hidden_size);
    /* through the whole UNet: the 1x1 level's float32 conditioning (see test_full) */
    float mw = 0.0f;
    for (int i = 0; i < tcfg.hidden_size; i++) mw = fabsf(want[i]) > mw ? fabsf(want[i]) : mw;
    if (table->grad)
        lk_t_close("textual inversion d loss / d new row (text encoder + unet, checkpointed)",
                   table->grad, want, (size_t)tcfg.hidden_size, 1e-3f * mw, 1e-3f);
done:
    free(row);
    free(want);
    lk_ctx_free(ctx);
    lk_clip_text_free(te);
    lk_unet_free(u);
    lk_weights_free(w);
}

/* ---- LoRA through the layer hook ---- */

#define MAX_LORA 160
typedef struct lora_set {
    int n;
    char name[MAX_LORA][128];
    lk_tensor *down[MAX_LORA], *up[MAX_LORA];
    int calls;
} lora_set;

static lk_tensor *lora_hook(lk_ctx *ctx, const char *name, lk_tensor *x, lk_tensor *y, void *ud) {
    lora_set *ls = ud;
    for (int i = 0; i < ls->n; i++)
        if (!strcmp(ls->name[i], name)) {
            ls->calls++;
            lk_tensor *d = lk_linear(ctx, lk_linear(ctx, x, ls->down[i], NULL), ls->up[i], NULL);
            return lk_add(ctx, y, d); /* alpha / rank = 4 / 4 */
        }
    return y;
}

static void test_lora(const char *unet_dir) {
    lk_unet_config cfg;
    char p[1200];
    snprintf(p, sizeof p, "%s/config.json", unet_dir);
    CHECK_OK(lk_unet_config_load(&cfg, p));
    snprintf(p, sizeof p, "%s/diffusion_pytorch_model.safetensors", unet_dir);
    lk_weights *w = lk_weights_new();
    CHECK_OK(lk_weights_load_safetensors(w, p, NULL, NULL, LK_F32)); /* frozen base */
    lk_unet *u = NULL;
    CHECK_OK(lk_unet_new(&u, &cfg, w, NULL));
    lora_set *ls = calloc(1, sizeof *ls);
    lk_ctx *ctx = lk_ctx_new();
    if (!u || !ls || !ctx) goto done;
    for (int i = 0; i < lk_safetensors_count(cases) && ls->n < MAX_LORA; i++) {
        const char *k = lk_safetensors_at(cases, i)->name;
        size_t kl = strlen(k);
        if (strncmp(k, "lora.init.", 10) || kl < 15 || strcmp(k + kl - 5, ".down")) continue;
        snprintf(ls->name[ls->n], sizeof ls->name[0], "%.*s", (int)(kl - 15), k + 10);
        char uk[200];
        snprintf(uk, sizeof uk, "lora.init.%s.up", ls->name[ls->n]);
        ls->down[ls->n] = lk_t_param(cases, k);
        ls->up[ls->n] = lk_t_param(cases, uk);
        if (!ls->down[ls->n] || !ls->up[ls->n]) break;
        CHECK_OK(lk_set_requires_grad(ls->down[ls->n], true));
        CHECK_OK(lk_set_requires_grad(ls->up[ls->n], true));
        ls->n++;
    }
    CHECK(ls->n == 128);
    lk_unet_set_layer_hook(u, lora_hook, ls);
    lk_unet_set_checkpointing(u, true);
    lk_tensor *loss = denoise_loss(ctx, u, lk_t_tensor(ctx, cases, "ctx"));
    CHECK(ls->calls == ls->n);
    float *losses = lk_t_load(cases, "lora.adamw_losses", NULL);
    if (loss && losses) lk_t_close("lora loss at init", loss->data, losses, 1, 1e-7f, 1e-5f);
    free(losses);
    if (loss) CHECK_OK(lk_backward(ctx, loss));
    double worst = 0.0;
    int bad = 0;
    for (int i = 0; i < ls->n; i++)
        for (int j = 0; j < 2; j++) {
            char gk[200];
            snprintf(gk, sizeof gk, "lora.grad.%s.%s", ls->name[i], j ? "up" : "down");
            lk_tensor *prm = j ? ls->up[i] : ls->down[i];
            int64_t ng = 0;
            float *want = lk_t_load(cases, gk, &ng);
            if (!want || !prm->grad || ng != lk_numel(prm)) bad++;
            else {
                double e = scaled_err(prm->grad, want, ng, NULL);
                worst = e > worst ? e : worst;
                if (!(e <= 2e-4)) bad++;
            }
            free(want);
        }
    lk_t_checks++;
    if (bad) lk_t_failures++;
    fprintf(stderr, "%s lora via layer hook (checkpointed): %d gradients, worst "
            "max|err|/max|grad| = %.3g\n", bad ? "FAIL" : "ok  ", 2 * ls->n, worst);
done:
    if (ls)
        for (int i = 0; i < ls->n; i++) {
            lk_param_free(ls->down[i]);
            lk_param_free(ls->up[i]);
        }
    free(ls);
    lk_ctx_free(ctx);
    lk_unet_free(u);
    lk_weights_free(w);
}

int main(void) {
    lk_set_num_threads(2);
    const char *golden = lk_t_golden_dir();
    char p[1024];
    snprintf(p, sizeof p, "%s/scheduler/scheduler_config.json", golden);
    lk_schedule_config sc;
    CHECK_OK(lk_schedule_config_load(&sc, p));
    CHECK_OK(lk_schedule_alphas_cumprod(&sc, ac, 1000));
    cases = lk_t_golden("training_cases.safetensors");
    REQUIRE(cases);
    snprintf(p, sizeof p, "%s/unet", golden);
    test_full(p);
    test_textual_inversion(golden);
    test_lora(p);
    lk_safetensors_close(cases);
    return lk_t_done();
}
