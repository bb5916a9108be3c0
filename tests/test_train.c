/* test_train.c: the personalization trainers (train_core.c, textual_inversion.c, lora.c) on the
 * golden tiny SD-1.x model. Golden training_cases through the trainer's own step path: the
 * denoising loss, the textual-inversion gradient of row 49408, the LoRA gradients (rank 4, alpha
 * 4 on every to_q/to_k/to_v/to_out.0 at the fixture's init values) and five AdamW updates
 * (losses before each, weights after). Exact resume (6 updates vs 3 + Ctrl-C checkpoint + resume
 * 3: bit-identical losses and weights, LoRA and TI). Round trips: the kohya LoRA merged by
 * lora_file.h and the A1111 / diffusers embeddings loaded by embedding_file.h reproduce the
 * in-memory model's UNet / text-encoder outputs; the diffusers/PEFT LoRA layout. A smoke test
 * (not a quality claim): 30 updates of each method on 4 synthetic images lower the loss (mean of
 * the last 10 < mean of the first 10). Error paths: too few images, a truncated image, an image
 * below the resolution, a token in the vocabulary, a multi-token init word, a resume with other
 * settings. */
#define _POSIX_C_SOURCE 200809L
#include "harness.h"
#include "likeness/train.h"
#include "personalize/train_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static lk_safetensors *cases;
static char golden[1024], tmpdir[256];

static const char *tpath(const char *rel, char *buf, size_t n) {
    snprintf(buf, n, "%s/%s", tmpdir, rel);
    return buf;
}

/* max |got - want| / max |want| */
static double scaled_err(const float *got, const float *want, int64_t n) {
    double e = 0.0, m = 0.0;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - (double)want[i]);
        if (isnan(d)) e = (double)INFINITY;
        else if (d > e) e = d;
        if (fabs((double)want[i]) > m) m = fabs((double)want[i]);
    }
    return m > 0.0 ? e / m : e;
}

static void base_config(lk_train_config *c) {
    lk_train_config_default(c);
    c->model = golden;
    c->resolution = 64;
}

/* The golden batch: x0, noise, timestep (+ the fixed ctx when ehs) */
static int golden_batch(lk_train_batch *b, bool ehs, bool ids) {
    const lk_st_tensor *x0 = lk_safetensors_find(cases, "x0");
    if (!x0 || x0->ndim != 4) return 0;
    if (lk_train_batch_alloc(b, (int)x0->shape[0], (int)x0->shape[1], (int)x0->shape[2],
                             (int)x0->shape[3], ids ? 77 : 0, ehs ? 77 : 0, ehs ? 32 : 0) != LK_OK)
        return 0;
    const size_t n = (size_t)b->B * (size_t)b->c * (size_t)b->h * (size_t)b->w;
    CHECK_OK(lk_st_tensor_to_f32(x0, b->x0, n));
    CHECK_OK(lk_st_tensor_to_f32(lk_safetensors_find(cases, "noise"), b->noise, n));
    const lk_st_tensor *t = lk_safetensors_find(cases, "timestep");
    if (!t || t->dtype != LK_I64 || lk_st_tensor_numel(t) != b->B) return 0;
    memcpy(b->timesteps, t->data, sizeof(int64_t) * (size_t)b->B);
    if (ehs) CHECK_OK(lk_st_tensor_to_f32(lk_safetensors_find(cases, "ctx"), b->ehs, (size_t)(b->B * 77 * 32)));
    if (ids) {
        const lk_st_tensor *it = lk_safetensors_find(cases, "input_ids");
        if (!it || it->dtype != LK_I64 || lk_st_tensor_numel(it) != b->B * 77) return 0;
        memcpy(b->ids, it->data, sizeof(int64_t) * (size_t)(b->B * 77));
    }
    return 1;
}

/* ---- golden: LoRA gradients and five AdamW updates ---- */

static void test_golden_lora(void) {
    lk_train_config c;
    base_config(&c);
    c.lr = 1e-3f;
    c.max_grad_norm = 0.0f;
    c.steps = 5;
    lk_lora_options lo;
    lk_lora_options_default(&lo);
    lo.rank = 4;
    lo.alpha = 4.0f;
    lk_train_method *m = NULL;
    CHECK_OK(lk_lora_method_new(&m, &lo));
    lk_trainer *tr = NULL;
    CHECK_OK(lk_trainer_new(&tr, &c, m));
    if (!tr) return;
    CHECK(lk_lora_method_count(m) == 128);
    CHECK(lk_paramset_count(lk_trainer_params(tr)) == 256);
    /* the fixture's init values */
    int set = 0;
    for (int i = 0; i < lk_safetensors_count(cases); i++) {
        const lk_st_tensor *t = lk_safetensors_at(cases, i);
        size_t kl = strlen(t->name);
        if (strncmp(t->name, "lora.init.", 10)) continue;
        bool down = kl > 5 && !strcmp(t->name + kl - 5, ".down");
        char nm[200];
        snprintf(nm, sizeof nm, "%.*s.%s.weight", (int)(kl - 10 - (down ? 5 : 3)), t->name + 10,
                 down ? "lora_down" : "lora_up");
        lk_tensor *p = lk_trainer_param(tr, nm);
        if (!p || lk_numel(p) != lk_st_tensor_numel(t)) {
            fprintf(stderr, "FAIL no trainer parameter %s\n", nm);
            lk_t_failures++;
            continue;
        }
        CHECK_OK(lk_st_tensor_to_f32(t, p->data, (size_t)lk_numel(p)));
        set++;
    }
    CHECK(set == 256);
    lk_train_batch b;
    if (!golden_batch(&b, true, false)) {
        CHECK(0);
        lk_trainer_free(tr);
        return;
    }
    float *want_losses = lk_t_load(cases, "lora.adamw_losses", NULL);
    float got_losses[5] = {0};
    double worst = 0.0;
    int bad = 0;
    for (int k = 0; k < 5; k++) {
        CHECK_OK(lk_trainer_accumulate(tr, &b, &got_losses[k]));
        if (k == 0) {
            for (int i = 0; i < lk_paramset_count(lk_trainer_params(tr)); i++) {
                const lk_tensor *p = lk_paramset_get(lk_trainer_params(tr), i);
                char gk[200];
                size_t nl = strlen(p->name);
                bool down = strstr(p->name, ".lora_down.weight") != NULL;
                snprintf(gk, sizeof gk, "lora.grad.%.*s.%s", (int)(nl - (down ? 17 : 15)), p->name,
                         down ? "down" : "up");
                int64_t ng = 0;
                float *want = lk_t_load(cases, gk, &ng);
                if (!want || ng != lk_numel(p)) bad++;
                else {
                    double e = scaled_err(p->grad, want, ng);
                    worst = e > worst ? e : worst;
                    if (!(e <= 2e-4)) bad++;
                }
                free(want);
            }
            lk_t_checks++;
            if (bad) lk_t_failures++;
            printf("%s lora gradients through the trainer (rank 4, alpha 4, 128 layers): %d tensors, "
                   "worst max|err|/max|grad| %.3g (tolerance 2e-4)\n", bad ? "FAIL" : "ok  ",
                   lk_paramset_count(lk_trainer_params(tr)), worst);
        }
        lk_train_stats st;
        CHECK_OK(lk_trainer_update(tr, &st));
        CHECK(st.step == k + 1 && st.lr == 1e-3f && st.grad_norm == -1.0f);
    }
    if (want_losses) lk_t_close("lora losses before each of 5 AdamW updates", got_losses, want_losses, 5, 1e-7f, 1e-5f);
    free(want_losses);
    /* weights after five updates. Adam divides each gradient by its own running RMS, so an
     * element's update error is about lr * (gradient error) / |gradient| per update: with the
     * gradients checked to 2e-4 of each tensor's largest (mg), the tolerance per element is
     * 1e-6 + 5 lr min(1, 4e-4 mg / |g0|): 2e-6 for the largest gradients, up to one full update
     * per step where the gradient is at the float32 noise floor (its sign is noise on both
     * sides). */
    double worst_ratio = 0.0, worst_abs = 0.0;
    bad = 0;
    int n = 0;
    int64_t n_all = 0;
    for (int i = 0; i < lk_paramset_count(lk_trainer_params(tr)); i++) {
        const lk_tensor *p = lk_paramset_get(lk_trainer_params(tr), i);
        char ak[200], gk[200];
        size_t nl = strlen(p->name);
        bool down = strstr(p->name, ".lora_down.weight") != NULL;
        int stem = (int)(nl - (down ? 17 : 15));
        snprintf(ak, sizeof ak, "lora.after5.%.*s.%s", stem, p->name, down ? "down" : "up");
        snprintf(gk, sizeof gk, "lora.grad.%.*s.%s", stem, p->name, down ? "down" : "up");
        int64_t nw = 0, ng = 0;
        float *want = lk_t_load(cases, ak, &nw);
        float *g0 = lk_t_load(cases, gk, &ng);
        n++;
        if (!want || !g0 || nw != lk_numel(p) || ng != nw) bad++;
        else {
            double mg = 0.0;
            for (int64_t j = 0; j < nw; j++) mg = fabs((double)g0[j]) > mg ? fabs((double)g0[j]) : mg;
            for (int64_t j = 0; j < nw; j++) {
                double d = fabs((double)((float *)p->data)[j] - (double)want[j]);
                double ag = fabs((double)g0[j]);
                double rel = ag > 0.0 ? 4e-4 * mg / ag : 1.0;
                double tol = 1e-6 + 5e-3 * (rel < 1.0 ? rel : 1.0);
                n_all++;
                worst_abs = d > worst_abs ? d : worst_abs;
                worst_ratio = d / tol > worst_ratio ? d / tol : worst_ratio;
                if (!(d <= tol)) bad++;
            }
        }
        free(want);
        free(g0);
    }
    lk_t_checks++;
    if (bad || n != 256) lk_t_failures++;
    printf("%s lora weights after 5 AdamW updates (lr 1e-3, wd 1e-2): %d tensors, %lld elements: "
           "worst |err| %.3g, worst |err|/tolerance %.3g (tolerance 1e-6 + 5 lr min(1, 4e-4 "
           "max|g0| / |g0|))\n", bad || n != 256 ? "FAIL" : "ok  ", n, (long long)n_all,
           worst_abs, worst_ratio);
    lk_train_batch_free(&b);
    lk_trainer_free(tr);
}

/* LoRA over float16-stored frozen weights: the same loss to half-precision rounding */
static void test_golden_lora_f16(void) {
    lk_train_config c;
    base_config(&c);
    c.store = LK_F16;
    lk_train_method *m = NULL;
    CHECK_OK(lk_lora_method_new(&m, NULL));
    lk_trainer *tr = NULL;
    CHECK_OK(lk_trainer_new(&tr, &c, m));
    if (!tr) return;
    const lk_tensor *wq = lk_weights_get(lk_trainer_model(tr)->part[LK_SD_UNET].weights,
                                         "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight");
    CHECK(wq && wq->dtype == LK_F16);
    lk_train_batch b;
    if (!golden_batch(&b, true, false)) {
        CHECK(0);
        lk_trainer_free(tr);
        return;
    }
    float loss = 0.0f;
    CHECK_OK(lk_trainer_accumulate(tr, &b, &loss));
    /* up = 0 at init: the loss is the base model's (full.loss) with f16 weights */
    float *want = lk_t_load(cases, "full.loss", NULL);
    if (want) lk_t_close("lora over f16-stored base weights: loss vs the f32 reference", &loss, want, 1, 0.0f, 2e-3f);
    free(want);
    const lk_tensor *up = lk_trainer_param(tr, "mid_block.attentions.0.transformer_blocks.0.attn1.to_q.lora_up.weight");
    double gn = 0.0;
    for (int64_t i = 0; up && up->grad && i < lk_numel(up); i++) gn += (double)up->grad[i] * (double)up->grad[i];
    CHECK(up && up->grad && gn > 0.0 && isfinite(gn));
    CHECK_OK(lk_trainer_update(tr, NULL));
    lk_train_batch_free(&b);
    lk_trainer_free(tr);
}

/* v-prediction target, min-SNR-gamma weights and per-sample loss weights, against the formula
 * evaluated here from the UNet's own output (LoRA up = 0: the base model) */
static void test_loss_variants(void) {
    lk_train_config c;
    base_config(&c);
    c.prediction = LK_PREDICT_V;
    c.min_snr_gamma = 5.0f;
    lk_train_method *m = NULL;
    CHECK_OK(lk_lora_method_new(&m, NULL));
    lk_trainer *tr = NULL;
    CHECK_OK(lk_trainer_new(&tr, &c, m));
    if (!tr) return;
    CHECK(lk_trainer_prediction(tr) == LK_PREDICT_V);
    lk_train_batch b;
    if (!golden_batch(&b, true, false)) {
        CHECK(0);
        lk_trainer_free(tr);
        return;
    }
    b.loss_weight[1] = 0.5f;
    float loss = 0.0f;
    CHECK_OK(lk_trainer_accumulate(tr, &b, &loss));
    int n_ac = 0;
    const float *ac = lk_trainer_alphas_cumprod(tr, &n_ac);
    const size_t per = (size_t)(b.c * b.h * b.w);
    lk_ctx *ctx = lk_ctx_new();
    lk_set_grad_enabled(ctx, false);
    lk_tensor *xt = lk_tensor_new(ctx, LK_F32, LK_DIMS(b.B, b.c, b.h, b.w));
    float *v = malloc(sizeof(float) * per * (size_t)b.B);
    for (int i = 0; i < b.B; i++) {
        CHECK_OK(lk_ddpm_add_noise((float *)xt->data + i * per, b.x0 + i * per, b.noise + i * per, per, ac, n_ac, b.timesteps[i]));
        CHECK_OK(lk_ddpm_velocity(v + i * per, b.x0 + i * per, b.noise + i * per, per, ac, n_ac, b.timesteps[i]));
    }
    lk_tensor *y = lk_contiguous(ctx, lk_unet_forward(ctx, lk_trainer_unet(tr), xt,
                                                     lk_tensor_wrap(ctx, LK_I64, LK_DIMS(b.B), b.timesteps),
                                                     lk_tensor_wrap(ctx, LK_F32, LK_DIMS(b.B, 77, 32), b.ehs)));
    double want = 0.0;
    for (int i = 0; y && i < b.B; i++) {
        double mse = 0.0;
        for (size_t k = 0; k < per; k++) {
            double d = (double)((float *)y->data)[i * per + k] - (double)v[i * per + k];
            mse += d * d;
        }
        mse /= (double)per;
        double snr = (double)ac[b.timesteps[i]] / (1.0 - (double)ac[b.timesteps[i]]);
        double w = (snr < 5.0 ? snr : 5.0) / (snr + 1.0) * (double)b.loss_weight[i];
        want += w * mse / b.B;
    }
    float wantf = (float)want;
    lk_t_close("v-prediction loss with min-SNR-5 and per-sample weights vs the formula", &loss, &wantf, 1, 0.0f, 1e-5f);
    free(v);
    lk_ctx_free(ctx);
    lk_train_batch_free(&b);
    lk_trainer_free(tr);
}

/* ---- golden: textual inversion ---- */

static void test_golden_ti(void) {
    lk_train_config c;
    base_config(&c);
    c.gradient_checkpointing = true;
    c.token = "<new-thing>";
    lk_ti_options o;
    lk_ti_options_default(&o);
    o.init_word = "toy";
    lk_train_method *m = NULL;
    CHECK_OK(lk_ti_method_new(&m, &o));
    lk_trainer *tr = NULL;
    CHECK_OK(lk_trainer_new(&tr, &c, m));
    if (!tr) return;
    int nv = 0, dim = 0;
    int64_t first = -1;
    const float *row = lk_ti_vectors(m, &nv, &dim, &first);
    CHECK(row && nv == 1 && dim == 32 && first == 49408);
    CHECK(lk_tokenizer_token_id(lk_trainer_tokenizer(tr), "<new-thing>") == 49408);
    float *init = lk_t_load(cases, "ti.init_row", NULL);
    if (row && init) lk_t_close("ti row initialized from 'toy'", row, init, 32, 0.0f, 0.0f);
    free(init);
    lk_train_batch b;
    if (!golden_batch(&b, false, true)) {
        CHECK(0);
        lk_trainer_free(tr);
        return;
    }
    float loss = 0.0f;
    CHECK_OK(lk_trainer_accumulate(tr, &b, &loss));
    float *wl = lk_t_load(cases, "ti.loss", NULL);
    if (wl) lk_t_close("ti loss through the trainer", &loss, wl, 1, 1e-7f, 1e-5f);
    free(wl);
    lk_tensor *table = lk_clip_text_token_table(lk_trainer_text_encoder(tr));
    float *want = lk_t_load(cases, "ti.grad_row", NULL);
    CHECK(table->grad && lk_grad_numel(table) == 32);
    float mw = 0.0f;
    for (int i = 0; want && i < 32; i++) mw = fabsf(want[i]) > mw ? fabsf(want[i]) : mw;
    if (want && table->grad)
        lk_t_close("ti d loss / d row 49408 through the trainer (checkpointed)", table->grad, want, 32,
                   1e-3f * mw, 1e-3f);
    free(want);
    /* an update changes only the new row */
    float before = lk_get_f32(table, 49407 * 32 + 5);
    CHECK_OK(lk_trainer_update(tr, NULL));
    CHECK(lk_get_f32(table, 49407 * 32 + 5) == before);
    lk_train_batch_free(&b);
    lk_trainer_free(tr);
}


static void make_dir(const char *rel, int n_images, int w, int h) {
    char p[512], f[600];
    tpath(rel, p, sizeof p);
    mkdir(p, 0755);
    for (int i = 0; i < n_images; i++) {
        snprintf(f, sizeof f, "%s/img%02d.png", p, i);
        lk_t_write_subject_png(f, w + 8 * (i % 2), h + 4 * (i % 3), i);
    }
}

/* progress: record losses; set the cancel flag after stop_at updates */
typedef struct rec {
    float loss[64];
    int n;
    int stop_at;
    volatile sig_atomic_t cancel;
} rec;

static lk_status on_progress(void *ud, const lk_train_stats *st) {
    rec *r = ud;
    if (r->n < 64) r->loss[r->n++] = st->loss;
    if (r->stop_at && st->step == r->stop_at) r->cancel = 1;
    return LK_OK;
}

static double mean(const float *x, int n) {
    double s = 0.0;
    for (int i = 0; i < n; i++) s += (double)x[i];
    return s / n;
}

/* UNet output of the trainer's (hooked) UNet vs a fresh UNet over weights with the kohya file
 * merged; and the PEFT layout's tensors. */
static void lora_roundtrip(lk_trainer *tr, const char *kohya) {
    char p[1200];
    snprintf(p, sizeof p, "%s/unet/diffusion_pytorch_model.safetensors", golden);
    lk_weights *w = lk_weights_new();
    CHECK_OK(lk_weights_load_safetensors(w, p, NULL, NULL, LK_F32));
    lk_lora *l = NULL;
    CHECK_OK(lk_lora_open(&l, kohya, w, NULL));
    if (!l) {
        lk_weights_free(w);
        return;
    }
    CHECK(lk_lora_count(l) == 128);
    CHECK_OK(lk_lora_merge(l, 1.0f));
    lk_unet *u = NULL;
    CHECK_OK(lk_unet_new(&u, lk_unet_config_of(lk_trainer_unet(tr)), w, NULL));
    lk_ctx *ctx = lk_ctx_new();
    lk_set_grad_enabled(ctx, false);
    lk_tensor *x = lk_tensor_new(ctx, LK_F32, LK_DIMS(1, 4, 8, 8));
    lk_tensor *e = lk_tensor_new(ctx, LK_F32, LK_DIMS(1, 77, 32));
    lk_tensor *t = lk_tensor_full(ctx, 500.0f, LK_DIMS(1));
    lk_t_fill_uniform(x->data, 256, -1.0f, 1.0f, 7);
    lk_t_fill_uniform(e->data, 77 * 32, -1.0f, 1.0f, 8);
    lk_tensor *a = lk_contiguous(ctx, lk_unet_forward(ctx, lk_trainer_unet(tr), x, t, e));
    lk_tensor *bb = lk_contiguous(ctx, lk_unet_forward(ctx, u, x, t, e));
    CHECK_OK(lk_ctx_status(ctx));
    float mx = 0.0f;
    if (a && bb) {
        for (int i = 0; i < 256; i++) mx = fabsf(((float *)a->data)[i]) > mx ? fabsf(((float *)a->data)[i]) : mx;
        lk_t_close("kohya LoRA merged by lora_file.h vs the in-memory adapters: UNet output", bb->data,
                   a->data, 256, 2e-5f * mx, 1e-4f);
    }
    /* the adapters must matter, or the comparison proves nothing: the base model differs */
    CHECK_OK(lk_lora_unmerge(l));
    lk_tensor *base = lk_contiguous(ctx, lk_unet_forward(ctx, u, x, t, e));
    if (a && base) {
        double d = 0.0;
        for (int i = 0; i < 256; i++) {
            double k = fabs((double)((float *)a->data)[i] - (double)((float *)base->data)[i]);
            d = k > d ? k : d;
        }
        CHECK(d > 1e-3 * (double)mx);
        printf("     (the trained adapters change the UNet output by up to %.3g of max %.3g)\n", d, (double)mx);
    }
    lk_ctx_free(ctx);
    lk_unet_free(u);
    /* PEFT layout: lora_A = down, lora_B = (alpha / rank) up */
    char *dp = lk_train_diffusers_path(kohya);
    lk_safetensors *st = NULL;
    CHECK_OK(lk_safetensors_open(&st, dp));
    int ok = 0, n = 0;
    for (int i = 0; st && i < lk_paramset_count(lk_trainer_params(tr)); i++) {
        const lk_tensor *prm = lk_paramset_get(lk_trainer_params(tr), i);
        char key[200];
        size_t nl = strlen(prm->name);
        bool down = strstr(prm->name, ".lora_down.weight") != NULL;
        snprintf(key, sizeof key, "unet.%.*s.%s", (int)(nl - (down ? 17 : 15)), prm->name,
                 down ? "lora_A.weight" : "lora_B.weight");
        const lk_st_tensor *t2 = lk_safetensors_find(st, key);
        n++;
        if (t2 && t2->dtype == LK_F32 && lk_st_tensor_numel(t2) == lk_numel(prm) &&
            !memcmp(t2->data, prm->data, t2->nbytes))
            ok++;
        else fprintf(stderr, "FAIL PEFT tensor %s\n", key);
    }
    CHECK(n == 256 && ok == n && lk_safetensors_count(st) == 256);
    if (st) {
        const char *v = lk_safetensors_meta(st, "likeness.alpha_folded_into_lora_B");
        CHECK(v && !strcmp(v, "true"));
    }
    lk_safetensors_close(st);
    free(dp);
    lk_lora_free(l);
    lk_weights_free(w);
}

static lk_status on_validate(void *ud, lk_trainer *tr, int64_t step) {
    int *calls = ud;
    float img[3 * 64 * 64];
    (*calls)++;
    lk_status s = lk_trainer_sample(tr, "a sks toy", "", (uint64_t)step, 2, 4.0f, 64, 64, img);
    CHECK(s == LK_OK && isfinite(img[100]));
    return s;
}

static void test_smoke_lora(void) {
    char dir[512], out[512];
    tpath("smoke", dir, sizeof dir);
    tpath("out/lora.safetensors", out, sizeof out);
    lk_train_config c;
    base_config(&c);
    c.images = dir;
    c.token = "sks";
    c.class_word = "toy";
    c.captions = LK_CAPTION_INSTANCE;
    c.steps = 30;
    c.lr = 3e-3f;
    c.seed = 3;
    int val_calls = 0;
    c.validate = on_validate;
    c.validate_ud = &val_calls;
    c.validate_every = 10;
    rec r = {0};
    c.progress = on_progress;
    c.progress_ud = &r;
    lk_lora_options lo;
    lk_lora_options_default(&lo);
    lk_train_method *m = NULL;
    CHECK_OK(lk_lora_method_new(&m, &lo));
    lk_trainer *tr = NULL;
    double t0 = lk_t_now();
    CHECK_OK(lk_trainer_new(&tr, &c, m));
    if (!tr) return;
    CHECK(lk_trainer_num_images(tr) == 4);
    CHECK_OK(lk_trainer_run(tr));
    double t1 = lk_t_now();
    CHECK(r.n == 30 && val_calls == 3);
    double first = mean(r.loss, 10), last = mean(r.loss + 20, 10);
    lk_t_checks++;
    if (!(last < first)) lk_t_failures++;
    printf("%s smoke (not a quality claim): LoRA 30 updates on 4 images: mean loss of updates 1-10 "
           "%.4f, 21-30 %.4f (%.1f s)\n", last < first ? "ok  " : "FAIL", first, last, t1 - t0);
    CHECK_OK(lk_trainer_save(tr, out));
    lk_safetensors *st = NULL;
    CHECK_OK(lk_safetensors_open(&st, out));
    if (st) {
        const char *v = lk_safetensors_meta(st, "likeness.method");
        CHECK(v && !strcmp(v, "lora"));
        v = lk_safetensors_meta(st, "ss_network_dim");
        CHECK(v && !strcmp(v, "4"));
        v = lk_safetensors_meta(st, "likeness.num_images");
        CHECK(v && !strcmp(v, "4"));
        v = lk_safetensors_meta(st, "likeness.base_model_hash");
        CHECK(v && strlen(v) == 10);
        const lk_st_tensor *a = lk_safetensors_find(
            st, "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.alpha");
        CHECK(a && a->ndim == 0 && a->dtype == LK_F32);
    }
    lk_safetensors_close(st);
    lora_roundtrip(tr, out);
    /* a validation image through the trained model */
    float *img = malloc(sizeof(float) * 3 * 64 * 64);
    CHECK_OK(lk_trainer_sample(tr, "a sks toy", NULL, 5, 4, 5.0f, 64, 64, img));
    int finite = 1;
    for (int i = 0; i < 3 * 64 * 64; i++) finite &= isfinite(img[i]) && fabsf(img[i]) < 10.0f;
    CHECK(finite);
    free(img);
    lk_trainer_free(tr);
}

/* hidden states of "a photo of <tok>" by the trainer's encoder vs a fresh encoder that loaded
 * the embedding file */
static void ti_roundtrip(lk_trainer *tr, const char *path, const char *token, const char *what) {
    char p[1200];
    lk_embedding_file *e = NULL;
    CHECK_OK(lk_embedding_file_load(&e, path, token, 32));
    snprintf(p, sizeof p, "%s/tokenizer", golden);
    lk_tokenizer *tok = NULL;
    CHECK_OK(lk_tokenizer_load(&tok, p));
    lk_weights *w = lk_weights_new();
    snprintf(p, sizeof p, "%s/text_encoder/model.safetensors", golden);
    CHECK_OK(lk_weights_load_safetensors(w, p, NULL, NULL, LK_F32));
    lk_clip_text *te = NULL;
    CHECK_OK(lk_clip_text_new(&te, lk_clip_text_config_of(lk_trainer_text_encoder(tr)), w, NULL));
    float *rows = NULL;
    int nr = 0;
    int64_t first = -1, first2 = -1;
    if (e && tok && te) {
        CHECK_OK(lk_embedding_file_add_tokens(e, tok, &first, &nr));
        CHECK_OK(lk_embedding_file_rows(e, &rows, &nr));
        CHECK_OK(lk_clip_text_add_tokens(te, nr, rows, &first2));
        CHECK(first == 49408 && first2 == 49408 && nr == 2);
    }
    int64_t ida[77], idb[77];
    CHECK_OK(lk_tokenizer_encode(lk_trainer_tokenizer(tr), "a photo of <cat-thing>", ida, 77, LK_PAD_EOS, NULL));
    if (tok) CHECK_OK(lk_tokenizer_encode(tok, "a photo of <cat-thing>", idb, 77, LK_PAD_EOS, NULL));
    CHECK(!memcmp(ida, idb, sizeof ida) && ida[4] == 49408 && ida[5] == 49409);
    lk_ctx *ctx = lk_ctx_new();
    lk_set_grad_enabled(ctx, false);
    lk_tensor *a = lk_contiguous(ctx, lk_clip_text_forward(ctx, lk_trainer_text_encoder(tr),
                                                          lk_tensor_wrap(ctx, LK_I64, LK_DIMS(1, 77), ida), 1, true));
    lk_tensor *b = te ? lk_contiguous(ctx, lk_clip_text_forward(ctx, te, lk_tensor_wrap(ctx, LK_I64, LK_DIMS(1, 77), idb), 1, true)) : NULL;
    if (a && b) lk_t_close(what, b->data, a->data, 77 * 32, 0.0f, 0.0f);
    else CHECK(0);
    lk_ctx_free(ctx);
    free(rows);
    lk_clip_text_free(te);
    lk_weights_free(w);
    lk_tokenizer_free(tok);
    lk_embedding_file_free(e);
}

static void test_smoke_ti(void) {
    char dir[512], out[512];
    tpath("smoke", dir, sizeof dir);
    tpath("out/cat-thing.safetensors", out, sizeof out);
    lk_train_config c;
    base_config(&c);
    c.images = dir;
    c.token = "<cat-thing>";
    c.steps = 30;
    c.lr = 2e-2f;
    c.max_grad_norm = 0.0f;
    c.seed = 11;
    c.flip = true;
    rec r = {0};
    c.progress = on_progress;
    c.progress_ud = &r;
    lk_ti_options o;
    lk_ti_options_default(&o);
    o.n_vectors = 2;
    o.init_word = "toy";
    lk_train_method *m = NULL;
    CHECK_OK(lk_ti_method_new(&m, &o));
    lk_trainer *tr = NULL;
    double t0 = lk_t_now();
    CHECK_OK(lk_trainer_new(&tr, &c, m));
    if (!tr) return;
    /* the untouched rows stay equal to the original table */
    lk_tensor *table = lk_clip_text_token_table(lk_trainer_text_encoder(tr));
    float keep = lk_get_f32(table, 1000 * 32 + 3);
    CHECK_OK(lk_trainer_run(tr));
    double t1 = lk_t_now();
    CHECK(lk_get_f32(table, 1000 * 32 + 3) == keep);
    double first = mean(r.loss, 10), last = mean(r.loss + 20, 10);
    lk_t_checks++;
    if (!(last < first)) lk_t_failures++;
    printf("%s smoke (not a quality claim): textual inversion (2 vectors) 30 updates on 4 images: "
           "mean loss of updates 1-10 %.4f, 21-30 %.4f (%.1f s)\n", last < first ? "ok  " : "FAIL",
           first, last, t1 - t0);
    int nv = 0;
    const float *vec = lk_ti_vectors(m, &nv, NULL, NULL);
    CHECK(vec && nv == 2 && memcmp(vec, vec + 32, 32 * sizeof(float))); /* the two vectors diverged */
    CHECK_OK(lk_trainer_save(tr, out));
    ti_roundtrip(tr, out, "<cat-thing>", "A1111 embedding loaded by embedding_file.h: text encoder output");
    char *dp = lk_train_diffusers_path(out);
    ti_roundtrip(tr, dp, NULL, "diffusers embedding loaded by embedding_file.h: text encoder output");
    lk_safetensors *st = NULL;
    CHECK_OK(lk_safetensors_open(&st, out));
    if (st) {
        CHECK(lk_safetensors_count(st) == 1 && lk_safetensors_find(st, "emb_params"));
        const char *v = lk_safetensors_meta(st, "likeness.token");
        CHECK(v && !strcmp(v, "<cat-thing>"));
        v = lk_safetensors_meta(st, "likeness.method");
        CHECK(v && !strcmp(v, "textual_inversion"));
    }
    lk_safetensors_close(st);
    free(dp);
    lk_trainer_free(tr);
}

/* ---- exact resume ---- */

static void snapshot(lk_trainer *tr, float **out, size_t *n) {
    lk_paramset *ps = lk_trainer_params(tr);
    size_t tot = 0;
    for (int i = 0; i < lk_paramset_count(ps); i++) tot += (size_t)lk_grad_numel(lk_paramset_get(ps, i));
    float *s = malloc(tot * sizeof *s);
    size_t o = 0;
    for (int i = 0; s && i < lk_paramset_count(ps); i++) {
        const lk_tensor *p = lk_paramset_get(ps, i);
        size_t k = (size_t)lk_grad_numel(p);
        const float *d = (const float *)p->data + (p->ndim == 2 ? p->grad_row_lo * p->shape[1] : 0);
        memcpy(s + o, d, k * sizeof *s);
        o += k;
    }
    *out = s;
    *n = tot;
}

static lk_train_method *make_method(bool ti) {
    lk_train_method *m = NULL;
    if (ti) {
        lk_ti_options o;
        lk_ti_options_default(&o);
        o.init_word = "toy";
        CHECK_OK(lk_ti_method_new(&m, &o));
    } else {
        lk_lora_options lo;
        lk_lora_options_default(&lo);
        lo.rank = 2;
        lo.alpha = 1.0f;
        lo.targets = LK_LORA_ATTN | LK_LORA_FF | LK_LORA_PROJ | LK_LORA_TEXT;
        CHECK_OK(lk_lora_method_new(&m, &lo));
    }
    return m;
}

static void test_resume(bool ti) {
    char dir[512], ck[512], log[512];
    tpath("smoke", dir, sizeof dir);
    tpath(ti ? "out/ti.ckpt.safetensors" : "out/lora.ckpt.safetensors", ck, sizeof ck);
    tpath(ti ? "out/ti.log" : "out/lora.log", log, sizeof log);
    const int total = ti ? 4 : 6, half = total / 2;
    lk_train_config c;
    base_config(&c);
    c.images = dir;
    c.token = ti ? "<tok>" : "<tok>";
    c.steps = total;
    c.lr = 1e-2f;
    c.seed = 42;
    c.batch = ti ? 1 : 2;
    c.grad_accum = 2;
    c.flip = true;
    c.noise_offset = 0.1f;
    c.min_snr_gamma = 5.0f;
    c.lr_schedule = LK_LR_COSINE;
    c.lr_warmup = 2;
    c.captions = ti ? LK_CAPTION_STYLE : LK_CAPTION_OBJECT;
    /* A: uninterrupted */
    rec ra = {0};
    c.progress = on_progress;
    c.progress_ud = &ra;
    lk_trainer *tr = NULL;
    CHECK_OK(lk_trainer_new(&tr, &c, make_method(ti)));
    if (!tr) return;
    CHECK_OK(lk_trainer_run(tr));
    float *wa = NULL, *wb = NULL;
    size_t na = 0, nb = 0;
    snapshot(tr, &wa, &na);
    lk_trainer_free(tr);
    /* B: interrupted (the cancel flag, as Ctrl-C sets it) after half the updates */
    rec rb = {0};
    rb.stop_at = half;
    c.progress_ud = &rb;
    c.cancel = &rb.cancel;
    c.checkpoint = ck;
    c.log = log;
    CHECK_OK(lk_trainer_new(&tr, &c, make_method(ti)));
    if (!tr) return;
    lk_status s = lk_trainer_run(tr);
    CHECK(s == LK_ERR_INTERRUPTED && lk_trainer_step_count(tr) == half);
    CHECK(strstr(lk_last_error(), ck) != NULL);
    lk_trainer_free(tr);
    /* C: resumed in a new trainer */
    c.resume = true;
    c.cancel = NULL;
    rec rc = {0};
    c.progress_ud = &rc;
    CHECK_OK(lk_trainer_new(&tr, &c, make_method(ti)));
    if (!tr) return;
    CHECK(lk_trainer_step_count(tr) == half);
    CHECK_OK(lk_trainer_run(tr));
    snapshot(tr, &wb, &nb);
    lk_trainer_free(tr);
    CHECK(ra.n == total && rb.n == half && rc.n == total - half);
    int same = ra.n == total && rb.n == half && rc.n == total - half &&
               !memcmp(ra.loss, rb.loss, sizeof(float) * (size_t)half) &&
               !memcmp(ra.loss + half, rc.loss, sizeof(float) * (size_t)(total - half));
    int wsame = wa && wb && na == nb && !memcmp(wa, wb, na * sizeof *wa);
    lk_t_checks++;
    if (!same || !wsame) lk_t_failures++;
    printf("%s exact resume (%s, batch %d x accum 2, flips, noise offset, min-SNR, cosine warm-up): "
           "%d updates vs %d + checkpoint + %d: losses %s, %zu weights %s\n",
           same && wsame ? "ok  " : "FAIL", ti ? "textual inversion" : "LoRA on attn+ff+proj+text",
           c.batch, total, half, total - half, same ? "bit-identical" : "DIFFER", na,
           wsame ? "bit-identical" : "DIFFER");
    /* the log: one JSON line per update, appended on resume */
    FILE *f = fopen(log, "r");
    int lines = 0;
    char line[512];
    while (f && fgets(line, sizeof line, f)) lines += strstr(line, "\"loss\"") != NULL;
    if (f) fclose(f);
    CHECK(lines == total);
    /* a checkpoint of another run is refused */
    if (!ti) {
        c.seed = 43;
        c.progress = NULL;
        CHECK(lk_trainer_new(&tr, &c, make_method(ti)) == LK_ERR_INVALID && !tr);
        CHECK(strstr(lk_last_error(), "seed") != NULL);
    }
    free(wa);
    free(wb);
}

/* ---- errors ---- */

static void expect(lk_status got, lk_status want, const char *needle, const char *what) {
    lk_t_checks++;
    if (got != want || (needle && !strstr(lk_last_error(), needle))) {
        lk_t_failures++;
        fprintf(stderr, "FAIL %s: got %s (%s), want %s containing '%s'\n", what, lk_status_str(got),
                lk_last_error(), lk_status_str(want), needle ? needle : "");
    } else {
        printf("ok   %s: %s\n", what, want == LK_OK ? "accepted" : lk_last_error());
    }
}

static lk_status try_train(const char *rel, const char *token, bool ti, bool upscale,
                           const char *init_word) {
    char dir[512];
    tpath(rel, dir, sizeof dir);
    lk_train_config c;
    base_config(&c);
    c.images = dir;
    c.token = token;
    c.upscale_small = upscale;
    c.steps = 1;
    lk_train_method *m = NULL;
    if (ti) {
        lk_ti_options o;
        lk_ti_options_default(&o);
        o.init_word = init_word;
        lk_ti_method_new(&m, &o);
    } else {
        lk_lora_method_new(&m, NULL);
    }
    lk_trainer *tr = NULL;
    lk_status s = lk_trainer_new(&tr, &c, m);
    CHECK((s == LK_OK) == (tr != NULL));
    lk_trainer_free(tr);
    return s;
}

static void test_errors(void) {
    char p[512], q[600];
    make_dir("one", 1, 64, 64);
    expect(try_train("one", "<x>", false, false, NULL), LK_ERR_INVALID, "at least 3",
           "a folder with 1 image");
    expect(try_train("missing", "<x>", false, false, NULL), LK_ERR_IO, "missing", "a missing folder");
    make_dir("trunc", 3, 64, 64);
    snprintf(q, sizeof q, "%s/img01.png", tpath("trunc", p, sizeof p));
    struct stat sb;
    if (stat(q, &sb) == 0) CHECK(truncate(q, sb.st_size / 2) == 0);
    expect(try_train("trunc", "<x>", false, false, NULL), LK_ERR_FORMAT, "img01.png",
           "a truncated image");
    make_dir("small", 3, 64, 64);
    snprintf(q, sizeof q, "%s/img02.png", tpath("small", p, sizeof p));
    lk_t_write_subject_png(q, 40, 48, 2);
    expect(try_train("small", "<x>", false, false, NULL), LK_ERR_INVALID, "smaller than the training",
           "an image below the resolution");
    expect(try_train("small", "<x>", false, true, NULL), LK_OK, NULL,
           "an image below the resolution with upscale_small");
    expect(try_train("smoke", "dog", true, false, "toy"), LK_ERR_INVALID, "already in the vocabulary",
           "a textual-inversion token that is a word");
    expect(try_train("smoke", "<ok>", true, false, "photograph booth"), LK_ERR_INVALID, "single token",
           "an init word of several tokens");
    lk_train_config c;
    base_config(&c);
    c.steps = 0;
    lk_train_method *m = NULL;
    lk_lora_method_new(&m, NULL);
    lk_trainer *tr = NULL;
    expect(lk_trainer_new(&tr, &c, m), LK_ERR_INVALID, "steps", "zero steps");
}

/* the row a new token starts from: one token -> its row; several -> refused, or the mean of their
 * rows for a method's default word */
static void test_new_token_row(void) {
    char dir[512];
    lk_train_config c;
    base_config(&c);
    c.images = tpath("smoke", dir, sizeof dir);
    c.token = "<nt>";
    c.steps = 1;
    lk_train_method *m = NULL;
    CHECK_OK(lk_ti_method_new(&m, NULL));
    lk_trainer *tr = NULL;
    CHECK_OK(lk_trainer_new(&tr, &c, m));
    if (!tr) return;
    const lk_tokenizer *tok = lk_trainer_tokenizer(tr);
    const lk_tensor *table = lk_clip_text_token_table(lk_trainer_text_encoder(tr));
    const int64_t D = table->shape[1];
    float *row = malloc(sizeof(float) * (size_t)D * 2);
    int64_t ids[8];
    int n = 0;
    CHECK_OK(lk_tokenizer_bpe(tok, "photograph booth", ids, 8, &n));
    CHECK(n == 2 && row);
    if (n == 2 && row) {
        CHECK(lk__new_token_row(tok, table, "t", "photograph booth", false, row) == LK_ERR_INVALID &&
              strstr(lk_last_error(), "single token"));
        CHECK_OK(lk__new_token_row(tok, table, "t", "photograph booth", true, row));
        double err = 0.0;
        for (int64_t j = 0; j < D; j++) {
            const double want = 0.5 * ((double)lk_get_f32(table, ids[0] * D + j) +
                                       (double)lk_get_f32(table, ids[1] * D + j));
            err = fmax(err, fabs((double)row[j] - want));
        }
        CHECK(err < 1e-6);
        /* one token: exactly its row */
        CHECK_OK(lk__new_token_row(tok, table, "t", "photograph", false, row + D));
        bool same = true;
        for (int64_t j = 0; j < D; j++) same = same && row[D + j] == lk_get_f32(table, ids[0] * D + j);
        CHECK(same);
    }
    CHECK(lk__new_token_row(tok, table, "t", "", true, row) == LK_ERR_INVALID);
    CHECK(lk__check_new_token(tok, "t", "a b") == LK_ERR_INVALID && strstr(lk_last_error(), "white space"));
    CHECK(lk__check_new_token(tok, "t", "Photograph") == LK_ERR_INVALID &&
          strstr(lk_last_error(), "already in the vocabulary"));
    CHECK_OK(lk__check_new_token(tok, "t", "<fresh>"));
    free(row);
    lk_trainer_free(tr);
}

static void test_captions(void) {
    char out[LK_TRAIN_MAX_CAPTION];
    CHECK_OK(lk__train_fill_caption("a photo of a {}", "<sks>", NULL, out, sizeof out));
    CHECK(!strcmp(out, "a photo of a <sks>"));
    CHECK_OK(lk__train_fill_caption("a {token} {class}", "sks", "dog", out, sizeof out));
    CHECK(!strcmp(out, "a sks dog"));
    CHECK_OK(lk__train_fill_caption("a {token} {class}", "sks", NULL, out, sizeof out));
    CHECK(!strcmp(out, "a sks"));
    CHECK_OK(lk__train_fill_caption("a red [class] on grass", "sks", "car", out, sizeof out));
    CHECK(!strcmp(out, "sks, a red car on grass"));
    CHECK(lk__train_fill_caption("{}{}{}{}", "0123456789", NULL, out, 16) == LK_ERR_INVALID);
    CHECK(lk_train_template_count(LK_CAPTION_OBJECT) == 27 && lk_train_template_count(LK_CAPTION_STYLE) == 19);
    char *dp = lk_train_diffusers_path("/x/y.safetensors");
    CHECK(dp && !strcmp(dp, "/x/y.diffusers.safetensors"));
    free(dp);
}

int main(void) {
    lk_set_num_threads(2);
    snprintf(golden, sizeof golden, "%s", lk_t_golden_dir());
    cases = lk_t_golden("training_cases.safetensors");
    REQUIRE(cases);
    snprintf(tmpdir, sizeof tmpdir, "/tmp/lk_test_train_XXXXXX");
    REQUIRE(mkdtemp(tmpdir));
    char p[512];
    mkdir(tpath("out", p, sizeof p), 0755);
    make_dir("smoke", 4, 64, 64);
    /* a per-image caption */
    FILE *f = fopen(tpath("smoke/img03.txt", p, sizeof p), "w");
    if (f) {
        fputs("a [V] on a striped background\n", f);
        fclose(f);
    }
    test_captions();
    test_golden_lora();
    test_golden_lora_f16();
    test_loss_variants();
    test_golden_ti();
    test_smoke_lora();
    test_smoke_ti();
    test_resume(false);
    test_resume(true);
    test_errors();
    test_new_token_row();
    lk_safetensors_close(cases);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0) fprintf(stderr, "note: could not remove %s\n", tmpdir);
    return lk_t_done();
}
