/* test_custom_diffusion.c: Custom Diffusion (custom_diffusion.c, custom_diffusion_file.c) on the
 * golden tiny SD-1.x model at 64x64: a smoke test (30 updates lower the loss) in which only the
 * attn2.to_k / to_v weights and the new token row change; the saved file applied to a freshly
 * loaded model reproduces the in-memory model's UNet output for a prompt with the token; two
 * concepts trained jointly (with class-image regularization) give one file with both tokens;
 * two single-concept files merge by Kumari et al.'s constrained least squares (sec. 3.2) into
 * one with both tokens, each concept's prompt features keeping its own K/V outputs; exact
 * resume; bad inputs refused. */
#define _POSIX_C_SOURCE 200809L
#include "harness.h"
#include "likeness/train_methods.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char golden[1024], tmpdir[256];

static const char *tpath(const char *rel, char *buf, size_t n) {
    snprintf(buf, n, "%s/%s", tmpdir, rel);
    return buf;
}


static void make_dir(const char *rel, int n, int seed0) {
    char p[512], f[600];
    tpath(rel, p, sizeof p);
    mkdir(p, 0755);
    for (int i = 0; i < n; i++) {
        snprintf(f, sizeof f, "%s/img%02d.png", p, i);
        lk_t_write_subject_png(f, 64 + 8 * (i % 2), 64, seed0 + i);
    }
}

static void config(lk_train_config *c, const char *token, const char *cls) {
    static char imgs[512];
    lk_train_config_default(c);
    c->model = golden;
    c->resolution = 64;
    c->images = tpath("a", imgs, sizeof imgs);
    c->token = token;
    c->class_word = cls;
    c->captions = LK_CAPTION_INSTANCE;
    c->lr = 5e-3f;
}

static bool is_kv(const char *n) {
    return strstr(n, ".attn2.to_k.weight") || strstr(n, ".attn2.to_v.weight");
}

/* UNet output for "a <new1> dog" on fixed latents, with a given text encoder / tokenizer */
static float *unet_out(lk_unet *u, lk_clip_text *te, lk_tokenizer *tok, lk_pad_mode pad,
                       const char *prompt) {
    lk_ctx *ctx = lk_ctx_new();
    lk_set_grad_enabled(ctx, false);
    int64_t ids[77];
    CHECK_OK(lk_tokenizer_encode(tok, prompt, ids, 77, pad, NULL));
    float x[256];
    lk_t_fill_uniform(x, 256, -1.0f, 1.0f, 11);
    lk_tensor *ehs = lk_clip_text_forward(ctx, te, lk_tensor_wrap(ctx, LK_I64, LK_DIMS(1, 77), ids), 1, true);
    lk_tensor *y = lk_contiguous(ctx, lk_unet_forward(ctx, u, lk_tensor_wrap(ctx, LK_F32, LK_DIMS(1, 4, 8, 8), x),
                                                      lk_tensor_full(ctx, 400.0f, LK_DIMS(1)), ehs));
    float *out = NULL;
    if (y && lk_numel(y) == 256) {
        out = malloc(256 * sizeof(float));
        memcpy(out, y->data, 256 * sizeof(float));
    }
    CHECK_OK(lk_ctx_status(ctx));
    lk_ctx_free(ctx);
    return out;
}

/* load the base, apply file, compare with want */
static void check_apply(const char *file, const char *prompt, const float *want, const char *what) {
    lk_sd_model *m = NULL;
    CHECK_OK(lk_sd_model_load(&m, golden, NULL));
    if (!m) return;
    float *rows = NULL;
    int nt = 0, dim = 0;
    CHECK_OK(lk_custom_diffusion_apply(m, file, &rows, &nt, &dim));
    lk_unet_config uc;
    lk_clip_text_config tc;
    lk_unet *u = NULL;
    lk_clip_text *te = NULL;
    const lk_sd_part *pt = &m->part[LK_SD_UNET];
    CHECK_OK(lk_unet_config_parse(&uc, pt->config_json, strlen(pt->config_json), "unet"));
    CHECK_OK(lk_unet_new(&u, &uc, pt->weights, NULL));
    pt = &m->part[LK_SD_TEXT_ENCODER];
    CHECK_OK(lk_clip_text_config_parse(&tc, pt->config_json, strlen(pt->config_json), "te"));
    CHECK_OK(lk_clip_text_new(&te, &tc, pt->weights, NULL));
    if (u && te && rows) {
        CHECK_OK(lk_clip_text_add_tokens(te, nt, rows, NULL));
        float *got = unet_out(u, te, m->tokenizer, m->pad, prompt);
        if (got && want) lk_t_close(what, got, want, 256, 1e-6f, 1e-5f);
        free(got);
    }
    free(rows);
    lk_unet_free(u);
    lk_clip_text_free(te);
    lk_sd_model_free(m);
}

static void test_smoke_and_file(void) {
    lk_train_config c;
    config(&c, "<new1>", "dog");
    c.steps = 30;
    lk_train_method *m = NULL;
    CHECK_OK(lk_custom_diffusion_method_new(&m, NULL));
    lk_trainer *tr = NULL;
    CHECK_OK(lk_trainer_new(&tr, &c, m));
    if (!tr) return;
    const int nl = lk_custom_diffusion_layer_count(m);
    CHECK(nl == 32); /* 16 transformer blocks x (to_k, to_v) */
    lk_sd_model *md = lk_trainer_model(tr);
    /* snapshots */
    lk_weights *parts[3] = {md->part[0].weights, md->part[1].weights, md->part[2].weights};
    float **snap[3];
    for (int p = 0; p < 3; p++) {
        snap[p] = calloc((size_t)lk_weights_count(parts[p]), sizeof(float *));
        for (int i = 0; i < lk_weights_count(parts[p]); i++) {
            const lk_tensor *t = lk_weights_at(parts[p], i);
            snap[p][i] = malloc(sizeof(float) * (size_t)lk_numel(t));
            for (int64_t k = 0; k < lk_numel(t); k++) snap[p][i][k] = lk_get_f32(t, k);
        }
    }
    lk_tensor *tab0 = lk_clip_text_token_table(lk_trainer_text_encoder(tr));
    const int64_t V = tab0->shape[0], D = tab0->shape[1];
    float *tab_before = malloc(sizeof(float) * (size_t)(V * D));
    memcpy(tab_before, tab0->data, sizeof(float) * (size_t)(V * D));
    float loss[30];
    for (int k = 0; k < 30; k++) {
        lk_train_stats s = {0};
        CHECK_OK(lk_trainer_step(tr, &s));
        loss[k] = s.loss;
    }
    double a = 0.0, b = 0.0;
    for (int k = 0; k < 10; k++) {
        a += (double)loss[k] / 10.0;
        b += (double)loss[20 + k] / 10.0;
    }
    printf("%s custom diffusion smoke: mean loss first 10 %.5f, last 10 %.5f\n", b < a ? "ok" : "FAIL", a, b);
    CHECK(b < a);
    int changed[3] = {0}, wrong = 0;
    for (int p = 0; p < 3; p++)
        for (int i = 0; i < lk_weights_count(parts[p]); i++) {
            const lk_tensor *t = lk_weights_at(parts[p], i);
            bool ch = false;
            for (int64_t k = 0; k < lk_numel(t) && !ch; k++) ch = lk_get_f32(t, k) != snap[p][i][k];
            changed[p] += ch;
            if (ch && !(p == LK_SD_UNET && is_kv(t->name))) wrong++;
            free(snap[p][i]);
        }
    for (int p = 0; p < 3; p++) free(snap[p]);
    printf("changed tensors: text encoder %d, UNet %d (K/V layers %d), VAE %d, others %d\n",
           changed[0], changed[1], nl, changed[2], wrong);
    CHECK(changed[LK_SD_UNET] == nl && wrong == 0);
    const float *tab = lk_clip_text_token_table(lk_trainer_text_encoder(tr))->data;
    int rows_changed = 0;
    for (int64_t r = 0; r < V; r++)
        if (memcmp(tab + r * D, tab_before + r * D, sizeof(float) * (size_t)D)) rows_changed++;
    CHECK(rows_changed == 1 && memcmp(tab + (V - 1) * D, tab_before + (V - 1) * D, sizeof(float) * (size_t)D));
    free(tab_before);
    float *want = unet_out(lk_trainer_unet(tr), lk_trainer_text_encoder(tr), lk_trainer_tokenizer(tr),
                           md->pad, "a <new1> dog");
    char f[512];
    CHECK_OK(lk_trainer_save(tr, tpath("cd1.safetensors", f, sizeof f)));
    lk_trainer_free(tr);
    lk_safetensors *st = NULL;
    CHECK_OK(lk_safetensors_open(&st, f));
    if (st) {
        CHECK(lk_safetensors_count(st) == nl + 1);
        const lk_st_tensor *t = lk_safetensors_find(st, "<new1>");
        CHECK(t && t->ndim == 2 && t->shape[0] == 1 && t->shape[1] == D);
        CHECK(lk_safetensors_find(st, "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight") != NULL);
        const char *mv = lk_safetensors_meta(st, "likeness.method");
        CHECK(mv && !strcmp(mv, "custom_diffusion"));
        lk_safetensors_close(st);
    }
    check_apply(f, "a <new1> dog", want, "custom diffusion file applied: UNet output");
    free(want);
}

/* Final text-encoder features (n, D) of prompt from the position of token (or from BOS when
 * token is NULL) through EOS; *n rows; malloc'd. */
static float *feats(const lk_clip_text *te, const lk_tokenizer *tok, lk_pad_mode pad, const char *prompt,
                    const char *token, int *n) {
    int64_t ids[77];
    int nc = 0;
    *n = 0;
    CHECK_OK(lk_tokenizer_encode(tok, prompt, ids, 77, pad, &nc));
    const int L = nc + 2;
    int p0 = 0;
    if (token) {
        const int64_t id = lk_tokenizer_token_id(tok, token);
        p0 = -1;
        for (int p = 1; p < L && p0 < 0; p++)
            if (ids[p] == id) p0 = p;
        CHECK(p0 > 0);
        if (p0 < 0) return NULL;
    }
    lk_ctx *ctx = lk_ctx_new();
    lk_set_grad_enabled(ctx, false);
    lk_tensor *z = lk_contiguous(ctx, lk_clip_text_forward(ctx, te, lk_tensor_wrap(ctx, LK_I64, LK_DIMS(1, L), ids), 1, true));
    float *r = NULL;
    if (z) {
        const int64_t D = z->shape[2];
        r = malloc(sizeof(float) * (size_t)((L - p0) * D));
        memcpy(r, (const float *)z->data + p0 * D, sizeof(float) * (size_t)((L - p0) * D));
        *n = L - p0;
    }
    CHECK_OK(lk_ctx_status(ctx));
    lk_ctx_free(ctx);
    return r;
}

/* max |F (Wx - Wy)^T| and max |F Wy^T| over the rows of F (n, d), W (o, d) */
static void fw_diff(const float *f, int n, const float *wx, const float *wy, int64_t o, int64_t d,
                    double *diff, double *ref) {
    for (int r = 0; r < n; r++)
        for (int64_t j = 0; j < o; j++) {
            double a = 0.0, b = 0.0;
            for (int64_t k = 0; k < d; k++) {
                a += (double)f[r * d + k] * ((double)wx[j * d + k] - (double)wy[j * d + k]);
                b += (double)f[r * d + k] * (double)wy[j * d + k];
            }
            *diff = fmax(*diff, fabs(a));
            *ref = fmax(*ref, fabs(b));
        }
}

/* The merge's constraints: on each concept's prompt features the merged K/V weights give that
 * concept's own fine-tuned outputs; on generic captions they stay near the base weights. */
static void check_merge(const char *fa, const char *fb, const char *fm) {
    lk_sd_model *m = NULL;
    CHECK_OK(lk_sd_model_load(&m, golden, NULL));
    if (!m) return;
    lk_clip_text_config tc;
    lk_clip_text *te = NULL;
    const lk_sd_part *pt = &m->part[LK_SD_TEXT_ENCODER];
    CHECK_OK(lk_clip_text_config_parse(&tc, pt->config_json, strlen(pt->config_json), "te"));
    CHECK_OK(lk_clip_text_new(&te, &tc, pt->weights, NULL));
    int nreg = 0, n1 = 0, n3 = 0;
    float *freg = te ? feats(te, m->tokenizer, m->pad, "a bright photo of the house", NULL, &nreg) : NULL;
    /* the unet weights are overwritten by apply: keep the base ones */
    lk_weights *uw = m->part[LK_SD_UNET].weights;
    const int nw = lk_weights_count(uw);
    float **base = calloc((size_t)nw, sizeof(float *));
    for (int i = 0; i < nw; i++) {
        const lk_tensor *t = lk_weights_at(uw, i);
        if (!is_kv(t->name)) continue;
        base[i] = malloc(sizeof(float) * (size_t)lk_numel(t));
        for (int64_t k = 0; k < lk_numel(t); k++) base[i][k] = lk_get_f32(t, k);
    }
    float *rows = NULL;
    int nt = 0, dim = 0;
    CHECK_OK(lk_custom_diffusion_apply(m, fm, &rows, &nt, &dim));
    if (te && rows) CHECK_OK(lk_clip_text_add_tokens(te, nt, rows, NULL));
    free(rows);
    float *f1 = te ? feats(te, m->tokenizer, m->pad, "a photo of a <new1> dog", "<new1>", &n1) : NULL;
    float *f3 = te ? feats(te, m->tokenizer, m->pad, "a photo of a <new3> cat", "<new3>", &n3) : NULL;
    lk_safetensors *a = NULL, *b = NULL, *mm = NULL;
    CHECK_OK(lk_safetensors_open(&a, fa));
    CHECK_OK(lk_safetensors_open(&b, fb));
    CHECK_OK(lk_safetensors_open(&mm, fm));
    double r1 = 0, ref1 = 0, r3 = 0, ref3 = 0, mr1 = 0, mref1 = 0, mr3 = 0, mref3 = 0;
    double dm = 0, dref = 0, da = 0, db = 0, dmean = 0;
    int layers = 0;
    for (int i = 0; a && b && mm && f1 && f3 && freg && i < nw; i++) {
        const lk_tensor *t = lk_weights_at(uw, i);
        if (!base[i]) continue;
        int64_t n = 0;
        float *x = lk_t_load(a, t->name, &n), *y = lk_t_load(b, t->name, NULL), *z = lk_t_load(mm, t->name, NULL);
        if (x && y && z && n == lk_numel(t)) {
            const int64_t o = t->shape[0], d = t->shape[1];
            float *mean = malloc(sizeof(float) * (size_t)n);
            for (int64_t k = 0; k < n; k++) mean[k] = 0.5f * (x[k] + y[k]);
            fw_diff(f1, n1, z, x, o, d, &r1, &ref1);
            fw_diff(f3, n3, z, y, o, d, &r3, &ref3);
            fw_diff(f1, n1, mean, x, o, d, &mr1, &mref1);
            fw_diff(f3, n3, mean, y, o, d, &mr3, &mref3);
            fw_diff(freg, nreg, z, base[i], o, d, &dm, &dref);
            fw_diff(freg, nreg, x, base[i], o, d, &da, &dref);
            fw_diff(freg, nreg, y, base[i], o, d, &db, &dref);
            fw_diff(freg, nreg, mean, base[i], o, d, &dmean, &dref);
            free(mean);
            layers++;
        }
        free(x);
        free(y);
        free(z);
    }
    const double e1 = r1 / fmax(ref1, 1e-30), e3 = r3 / fmax(ref3, 1e-30);
    printf("%s merge constraints over %d K/V layers: concept 1 max|C1 (W - W1)^T| %.3g (rel %.3g), "
           "concept 2 %.3g (rel %.3g); the mean merge instead: %.3g, %.3g\n",
           layers == 32 && e1 < 1e-4 && e3 < 1e-4 ? "ok" : "FAIL", layers, r1, e1, r3, e3, mr1, mr3);
    printf("merge on a generic caption: max|Creg (W - W0)^T| merged %.3g, file 1 %.3g, file 2 %.3g, "
           "mean merge %.3g (|Creg W0^T| %.3g)\n", dm, da, db, dmean, dref);
    CHECK(layers == 32);
    CHECK(e1 < 1e-4 && e3 < 1e-4);
    CHECK(mr1 > 10.0 * r1 && mr3 > 10.0 * r3);
    CHECK(dm < 0.1 * dref && dm < fmax(da, db));
    const char *how = mm ? lk_safetensors_meta(mm, "likeness.merge") : NULL;
    CHECK(how && strstr(how, "constrained least squares"));
    lk_safetensors_close(a);
    lk_safetensors_close(b);
    lk_safetensors_close(mm);
    for (int i = 0; i < nw; i++) free(base[i]);
    free(base);
    free(f1);
    free(f3);
    free(freg);
    lk_clip_text_free(te);
    lk_sd_model_free(m);
}

static void test_two_concepts_merge_resume(void) {
    char cls[512], b_dir[512], f2[512], f3[512], fm[512], ck[512];
    lk_cd_opts o;
    lk_cd_opts_default(&o);
    o.n_concepts = 2;
    o.concept[1].images = tpath("b", b_dir, sizeof b_dir);
    o.concept[1].token = "<new2>";
    o.concept[1].class_word = "cat";
    o.prior.class_dir = tpath("class", cls, sizeof cls);
    o.prior.num_class_images = 2;
    o.prior.steps = 2;
    float loss[2][4] = {{0}};
    for (int run = 0; run < 2; run++) {
        lk_train_config c;
        config(&c, "<new1>", "dog");
        c.steps = 4;
        c.checkpoint = tpath("cd.ckpt", ck, sizeof ck);
        lk_train_method *m = NULL;
        CHECK_OK(lk_custom_diffusion_method_new(&m, &o));
        lk_trainer *tr = NULL;
        CHECK_OK(lk_trainer_new(&tr, &c, m));
        if (!tr) return;
        for (int k = 0; k < 4; k++) {
            if (run == 1 && k == 2) {
                CHECK_OK(lk_trainer_save_checkpoint(tr, ck));
                lk_trainer_free(tr);
                c.resume = true;
                CHECK_OK(lk_custom_diffusion_method_new(&m, &o));
                CHECK_OK(lk_trainer_new(&tr, &c, m));
                if (!tr) return;
            }
            lk_train_stats s = {0};
            CHECK_OK(lk_trainer_step(tr, &s));
            loss[run][k] = s.loss;
        }
        if (run == 0) {
            CHECK_OK(lk_trainer_save(tr, tpath("cd2.safetensors", f2, sizeof f2)));
        }
        lk_trainer_free(tr);
    }
    lk_t_close("custom diffusion two concepts + prior: resume losses", loss[1], loss[0], 4, 0.0f, 0.0f);
    lk_safetensors *st = NULL;
    CHECK_OK(lk_safetensors_open(&st, f2));
    if (st) {
        CHECK(lk_safetensors_find(st, "<new1>") && lk_safetensors_find(st, "<new2>"));
        const char *tk = lk_safetensors_meta(st, "likeness.tokens");
        CHECK(tk && !strcmp(tk, "<new1>,<new2>"));
        lk_safetensors_close(st);
    }
    /* a second single-concept file, merged with the first */
    {
        lk_train_config c;
        config(&c, "<new3>", "cat");
        c.images = b_dir;
        c.steps = 2;
        lk_train_method *m = NULL;
        CHECK_OK(lk_custom_diffusion_method_new(&m, NULL));
        lk_trainer *tr = NULL;
        CHECK_OK(lk_trainer_new(&tr, &c, m));
        if (tr) {
            for (int k = 0; k < 2; k++) CHECK_OK(lk_trainer_step(tr, NULL));
            CHECK_OK(lk_trainer_save(tr, tpath("cd3.safetensors", f3, sizeof f3)));
        }
        lk_trainer_free(tr);
    }
    char f1[512];
    tpath("cd1.safetensors", f1, sizeof f1);
    CHECK_OK(lk_custom_diffusion_merge(golden, NULL, f1, f3, tpath("merged.safetensors", fm, sizeof fm)));
    lk_safetensors *a = NULL, *b = NULL, *mm = NULL;
    CHECK_OK(lk_safetensors_open(&a, f1));
    CHECK_OK(lk_safetensors_open(&b, f3));
    CHECK_OK(lk_safetensors_open(&mm, fm));
    if (a && b && mm) {
        CHECK(lk_safetensors_find(mm, "<new1>") && lk_safetensors_find(mm, "<new3>"));
        const char *tk = lk_safetensors_meta(mm, "likeness.tokens");
        CHECK(tk && !strcmp(tk, "<new1>,<new3>"));
    }
    lk_safetensors_close(a);
    lk_safetensors_close(b);
    lk_safetensors_close(mm);
    check_merge(f1, f3, fm);
    /* the merged file applies (both tokens) */
    lk_sd_model *m = NULL;
    CHECK_OK(lk_sd_model_load(&m, golden, NULL));
    float *rows = NULL;
    int nt = 0, dim = 0;
    if (m) CHECK_OK(lk_custom_diffusion_apply(m, fm, &rows, &nt, &dim));
    CHECK(nt == 2 && dim == 32);
    if (m) CHECK(lk_tokenizer_token_id(m->tokenizer, "<new3>") >= 0);
    free(rows);
    lk_sd_model_free(m);
    /* merging a file with itself: the same token twice */
    CHECK(lk_custom_diffusion_merge(golden, NULL, f1, f1, fm) == LK_ERR_INVALID);
    CHECK(lk_custom_diffusion_merge(NULL, NULL, f1, f3, fm) == LK_ERR_INVALID);
}

static void test_errors(void) {
    lk_train_config c;
    config(&c, "dog", "dog");
    lk_train_method *m = NULL;
    lk_trainer *tr = NULL;
    CHECK_OK(lk_custom_diffusion_method_new(&m, NULL));
    CHECK(lk_trainer_new(&tr, &c, m) == LK_ERR_INVALID && !tr);
    config(&c, "<new1>", "dog");
    c.store = LK_F16;
    CHECK_OK(lk_custom_diffusion_method_new(&m, NULL));
    CHECK(lk_trainer_new(&tr, &c, m) == LK_ERR_INVALID && !tr);
    lk_cd_opts o;
    lk_cd_opts_default(&o);
    o.n_concepts = 0;
    CHECK(lk_custom_diffusion_method_new(&m, &o) == LK_ERR_INVALID && !m);
    lk_sd_model *md = NULL;
    CHECK_OK(lk_sd_model_load(&md, golden, NULL));
    float *rows = NULL;
    int nt = 0, dim = 0;
    char p[512];
    tpath("a/img00.png", p, sizeof p);
    if (md) CHECK(lk_custom_diffusion_apply(md, p, &rows, &nt, &dim) != LK_OK && !rows);
    lk_sd_model_free(md);
}

int main(void) {
    lk_set_num_threads(2);
    snprintf(golden, sizeof golden, "%s", lk_t_golden_dir());
    snprintf(tmpdir, sizeof tmpdir, "/tmp/lk_test_cd_XXXXXX");
    REQUIRE(mkdtemp(tmpdir));
    make_dir("a", 4, 0);
    make_dir("b", 3, 4);
    double t0 = lk_t_now();
    test_smoke_and_file();
    test_two_concepts_merge_resume();
    test_errors();
    printf("custom diffusion tests: %.1f s\n", lk_t_now() - t0);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0) fprintf(stderr, "note: could not remove %s\n", tmpdir);
    return lk_t_done();
}
