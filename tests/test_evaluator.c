/* test_evaluator.c: EmojiBench's evaluator (evaluator.h) on a tiny CLIP-style export made here
 * (random weights, a BPE vocabulary learned from a few captions): load errors naming the path,
 * unit embeddings, bytes vs floats, box down-sampling vs the model itself, text embeddings vs
 * lk_clip_model_encode_text, batches over 32, lk_eval_rank / lk_eval_cosine. About 1 s. */
#define _POSIX_C_SOURCE 200809L
#include "harness.h"
#include "likeness/clip_model.h"
#include "likeness/evaluator.h"
#include "likeness/tokenizer.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define E_DIM 16
#define IMG 32 /* the model's image size */

static const char *const CAPTIONS[] = {
    "red apple emoji, noto style",      "cat face emoji, twemoji style",
    "dog face emoji, fluent 3d style",  "automobile emoji, openmoji style",
    "star emoji, noto style",           "grinning face emoji, twemoji style",
    "rainbow emoji, fluent 3d style",   "red apple, apple, fruit emoji",
};
#define N_CAPTIONS (int)(sizeof CAPTIONS / sizeof CAPTIONS[0])

static lk_clip_model_config tiny_config(int vocab) {
    lk_clip_model_config c;
    memset(&c, 0, sizeof c);
    c.text.hidden_size = 32;
    c.text.intermediate_size = 64;
    c.text.num_hidden_layers = 2;
    c.text.num_attention_heads = 2;
    c.text.max_position_embeddings = LK_CLIP_CONTEXT;
    c.text.vocab_size = vocab;
    c.text.hidden_act = LK_CLIP_GELU;
    c.text.layer_norm_eps = 1e-5f;
    c.image_size = IMG;
    c.n_stages = 3;
    c.channels[0] = 8;
    c.channels[1] = 16;
    c.channels[2] = 16;
    c.norm_groups = 4;
    c.embed_dim = E_DIM;
    return c;
}

/* dir/tokenizer (learned from CAPTIONS) and dir/clip/{config.json, model.safetensors} */
static lk_status write_export(const char *dir, lk_clip_model_config *cfg) {
    char p[512];
    snprintf(p, sizeof p, "%s/tokenizer", dir);
    lk_bpe_learn_opts bo = {600, 1};
    lk_status s = lk_bpe_learn(CAPTIONS, N_CAPTIONS, &bo, p);
    lk_tokenizer *tok = NULL;
    if (s == LK_OK) s = lk_tokenizer_load(&tok, p);
    if (s != LK_OK) return s;
    *cfg = tiny_config((int)lk_tokenizer_vocab_size(tok));
    lk_tokenizer_free(tok);
    snprintf(p, sizeof p, "%s/clip", dir);
    if (mkdir(p, 0755) != 0) return lk_fail(LK_ERR_IO, "%s: cannot create", p);
    snprintf(p, sizeof p, "%s/clip/config.json", dir);
    s = lk_clip_model_config_save(cfg, p);
    lk_weights *w = lk_weights_new();
    lk_st_writer *wr = lk_st_writer_new();
    if (s == LK_OK && (!w || !wr)) s = lk_fail(LK_ERR_NOMEM, "out of memory");
    if (s == LK_OK) s = lk_clip_model_init_weights(w, cfg, "", LK_F32, 11);
    for (int i = 0; s == LK_OK && i < lk_weights_count(w); i++) {
        const lk_tensor *t = lk_weights_at(w, i);
        s = lk_st_writer_add(wr, t->name, LK_F32, t->ndim, t->shape, t->data);
    }
    snprintf(p, sizeof p, "%s/clip/model.safetensors", dir);
    if (s == LK_OK) s = lk_st_writer_save(wr, p);
    lk_st_writer_free(wr);
    lk_weights_free(w);
    return s;
}

/* the model itself, to compare against */
typedef struct direct {
    lk_weights *w;
    lk_clip_model *m;
    lk_tokenizer *tok;
    lk_ctx *ctx;
} direct;

static lk_status direct_load(direct *d, const char *dir, const lk_clip_model_config *cfg) {
    memset(d, 0, sizeof *d);
    char p[512];
    snprintf(p, sizeof p, "%s/clip/model.safetensors", dir);
    d->w = lk_weights_new();
    d->ctx = lk_ctx_new();
    if (!d->w || !d->ctx) return lk_fail(LK_ERR_NOMEM, "out of memory");
    lk_set_grad_enabled(d->ctx, false);
    lk_status s = lk_weights_load_safetensors(d->w, p, NULL, "", LK_F32);
    if (s == LK_OK) s = lk_clip_model_new(&d->m, cfg, d->w, "");
    snprintf(p, sizeof p, "%s/tokenizer", dir);
    if (s == LK_OK) s = lk_tokenizer_load(&d->tok, p);
    return s;
}

static void direct_free(direct *d) {
    lk_clip_model_free(d->m);
    lk_weights_free(d->w);
    lk_tokenizer_free(d->tok);
    lk_ctx_free(d->ctx);
}

static void normalize(float *x, int E) {
    double s = 0.0;
    for (int k = 0; k < E; k++) s += (double)x[k] * (double)x[k];
    for (int k = 0; k < E; k++) x[k] = (float)((double)x[k] / sqrt(s));
}

/* n images (n, 3, IMG, IMG) in [-1, 1] through lk_clip_model_encode_image, normalized */
static lk_status direct_images(direct *d, const float *chw, int n, float *out) {
    lk_tensor *t = lk_tensor_wrap(d->ctx, LK_F32, LK_DIMS(n, 3, IMG, IMG), (void *)chw);
    lk_tensor *y = t ? lk_clip_model_encode_image(d->ctx, d->m, t) : NULL;
    lk_status s = y ? LK_OK : lk_ctx_status(d->ctx);
    if (s == LK_OK) {
        memcpy(out, y->data, sizeof(float) * (size_t)n * E_DIM);
        for (int i = 0; i < n; i++) normalize(out + (size_t)i * E_DIM, E_DIM);
    }
    lk_ctx_reset(d->ctx);
    return s;
}

/* one text: full 77 ids, EOS at min(n, 75) + 1, through lk_clip_model_encode_text, normalized */
static lk_status direct_text(direct *d, const char *text, float *out) {
    int64_t ids[LK_CLIP_CONTEXT];
    int nc = 0;
    lk_status s = lk_tokenizer_encode(d->tok, text, ids, LK_CLIP_CONTEXT, LK_PAD_EOS, &nc);
    if (s != LK_OK) return s;
    const int eos = (nc < LK_CLIP_CHUNK ? nc : LK_CLIP_CHUNK) + 1;
    if (ids[eos] != lk_tokenizer_eos(d->tok)) return lk_fail(LK_ERR_STATE, "no EOS at %d", eos);
    lk_tensor *t = lk_tensor_wrap(d->ctx, LK_I64, LK_DIMS(1, LK_CLIP_CONTEXT), ids);
    lk_tensor *y = t ? lk_clip_model_encode_text(d->ctx, d->m, t, &eos) : NULL;
    s = y ? LK_OK : lk_ctx_status(d->ctx);
    if (s == LK_OK) {
        memcpy(out, y->data, sizeof(float) * E_DIM);
        normalize(out, E_DIM);
    }
    lk_ctx_reset(d->ctx);
    return s;
}

static void random_rgb(uint8_t *px, size_t n, uint64_t seed) {
    uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        px[i] = (uint8_t)(x >> 24);
    }
}

/* interleaved RGB bytes (n, side, side, 3) -> planar floats (n, 3, side, side) as the evaluator
 * maps them: v / 127.5 - 1 */
static void rgb_to_chw(const uint8_t *rgb, int n, int side, float *chw) {
    for (int i = 0; i < n; i++)
        for (int c = 0; c < 3; c++)
            for (int y = 0; y < side; y++)
                for (int x = 0; x < side; x++)
                    chw[(((size_t)i * 3 + c) * side + y) * side + x] =
                        (float)rgb[(((size_t)i * side + y) * side + x) * 3 + c] / 127.5f - 1.0f;
}

static bool unit_rows(const float *x, int n) {
    bool ok = true;
    for (int i = 0; i < n; i++) {
        double s = 0.0;
        for (int k = 0; k < E_DIM; k++) s += (double)x[(size_t)i * E_DIM + k] * (double)x[(size_t)i * E_DIM + k];
        ok = ok && fabs(s - 1.0) < 1e-5;
    }
    return ok;
}

static bool mentions(const char *needle) { return strstr(lk_last_error(), needle) != NULL; }

static void test_load_errors(const char *root, const char *good) {
    static char sentinel;
    lk_evaluator *e = (lk_evaluator *)&sentinel; /* must be set to NULL on failure */
    char p[512], want[600];
    snprintf(p, sizeof p, "%s/none", root);
    snprintf(want, sizeof want, "%s/none/clip/config.json", root);
    CHECK(lk_evaluator_load(&e, p) != LK_OK && e == NULL);
    CHECK(mentions(want));
    printf("     missing folder: %s\n", lk_last_error());
    /* a folder without clip/config.json */
    snprintf(p, sizeof p, "%s/empty", root);
    CHECK(mkdir(p, 0755) == 0);
    snprintf(want, sizeof want, "%s/empty/clip/config.json", root);
    e = (lk_evaluator *)&sentinel;
    CHECK(lk_evaluator_load(&e, p) != LK_OK && e == NULL);
    CHECK(mentions(want));
    /* config but no weights */
    char cmd[1400];
    snprintf(cmd, sizeof cmd, "mkdir -p '%s/noweights/clip' && cp '%s/clip/config.json' '%s/noweights/clip/' && "
             "cp -r '%s/tokenizer' '%s/noweights/'", root, good, root, good, root);
    CHECK(system(cmd) == 0);
    snprintf(p, sizeof p, "%s/noweights", root);
    snprintf(want, sizeof want, "%s/noweights/clip/model.safetensors", root);
    CHECK(lk_evaluator_load(&e, p) != LK_OK && e == NULL);
    CHECK(mentions(want));
    printf("     missing weights: %s\n", lk_last_error());
    /* weights but no tokenizer */
    snprintf(cmd, sizeof cmd, "mkdir -p '%s/notok' && cp -r '%s/clip' '%s/notok/'", root, good, root);
    CHECK(system(cmd) == 0);
    snprintf(p, sizeof p, "%s/notok", root);
    snprintf(want, sizeof want, "%s/notok/tokenizer", root);
    CHECK(lk_evaluator_load(&e, p) != LK_OK && e == NULL);
    CHECK(mentions(want));
    printf("     missing tokenizer: %s\n", lk_last_error());
    /* a config that does not match the weights */
    snprintf(cmd, sizeof cmd, "mkdir -p '%s/badcfg/clip' && cp -r '%s/tokenizer' '%s/badcfg/' && "
             "cp '%s/clip/model.safetensors' '%s/badcfg/clip/'", root, good, root, good, root);
    CHECK(system(cmd) == 0);
    lk_clip_model_config bad = tiny_config(600);
    bad.embed_dim = 24;
    snprintf(p, sizeof p, "%s/badcfg/clip/config.json", root);
    CHECK_OK(lk_clip_model_config_save(&bad, p));
    snprintf(p, sizeof p, "%s/badcfg", root);
    CHECK(lk_evaluator_load(&e, p) != LK_OK && e == NULL);
    printf("     mismatched config: %s\n", lk_last_error());
    CHECK(lk_evaluator_load(NULL, good) == LK_ERR_INVALID);
    CHECK(lk_evaluator_load(&e, NULL) == LK_ERR_INVALID && e == NULL);
    lk_evaluator_free(NULL);
    CHECK(lk_evaluator_dim(NULL) == 0);
}

static void test_images(lk_evaluator *ev, direct *d) {
    enum { N = 3, S2 = 2 * IMG };
    uint8_t *rgb = malloc((size_t)N * S2 * S2 * 3);
    float *chw = malloc(sizeof(float) * (size_t)N * 3 * S2 * S2);
    float *half = malloc(sizeof(float) * (size_t)N * 3 * IMG * IMG);
    float a[N * E_DIM], b[N * E_DIM], r[N * E_DIM];
    if (!rgb || !chw || !half) {
        CHECK(!"out of memory");
        free(rgb), free(chw), free(half);
        return;
    }
    random_rgb(rgb, (size_t)N * S2 * S2 * 3, 5);
    rgb_to_chw(rgb, N, S2, chw);
    /* bytes and the same pixels as floats give the same embeddings */
    CHECK_OK(lk_evaluator_embed_images(ev, rgb, N, S2, a));
    CHECK_OK(lk_evaluator_embed_chw(ev, chw, N, S2, b));
    CHECK(unit_rows(a, N) && unit_rows(b, N));
    lk_t_close("embed_images = embed_chw of the same pixels", a, b, N * E_DIM, 1e-6f, 0.0f);
    /* images differ: not all the same vector */
    CHECK(lk_eval_cosine(a, a + E_DIM, E_DIM) < 0.99999f);
    /* side 64 = the 2x2-averaged 32x32 image through the model */
    for (int i = 0; i < N; i++)
        for (int c = 0; c < 3; c++)
            for (int y = 0; y < IMG; y++)
                for (int x = 0; x < IMG; x++) {
                    const float *f = chw + ((size_t)i * 3 + c) * S2 * S2;
                    half[(((size_t)i * 3 + c) * IMG + y) * IMG + x] =
                        (f[(2 * y) * S2 + 2 * x] + f[(2 * y) * S2 + 2 * x + 1] +
                         f[(2 * y + 1) * S2 + 2 * x] + f[(2 * y + 1) * S2 + 2 * x + 1]) / 4.0f;
                }
    CHECK_OK(direct_images(d, half, N, r));
    lk_t_close("side 64 = 2x2 average through encode_image", a, r, N * E_DIM, 1e-5f, 1e-5f);
    /* side 32: no resampling */
    CHECK_OK(lk_evaluator_embed_chw(ev, half, N, IMG, b));
    lk_t_close("side 32 = encode_image", b, r, N * E_DIM, 1e-5f, 1e-5f);
    /* floats outside [-1, 1] are clamped first */
    for (size_t k = 0; k < (size_t)N * 3 * IMG * IMG; k += 3) half[k] *= 4.0f;
    CHECK_OK(lk_evaluator_embed_chw(ev, half, N, IMG, b));
    for (size_t k = 0; k < (size_t)N * 3 * IMG * IMG; k++) half[k] = fminf(1.0f, fmaxf(-1.0f, half[k]));
    CHECK_OK(direct_images(d, half, N, r));
    lk_t_close("embed_chw clamps to [-1, 1]", b, r, N * E_DIM, 1e-5f, 1e-5f);
    /* sides that are not a multiple of 32 */
    CHECK(lk_evaluator_embed_images(ev, rgb, 1, 48, a) == LK_ERR_INVALID && mentions("48"));
    CHECK(lk_evaluator_embed_images(ev, rgb, 1, 16, a) == LK_ERR_INVALID);
    CHECK(lk_evaluator_embed_chw(ev, chw, 1, 0, a) == LK_ERR_INVALID);
    CHECK(lk_evaluator_embed_images(ev, NULL, 1, S2, a) == LK_ERR_INVALID);
    CHECK(lk_evaluator_embed_images(NULL, rgb, 1, S2, a) == LK_ERR_INVALID);
    CHECK(lk_evaluator_embed_chw(ev, chw, -1, S2, a) == LK_ERR_INVALID);
    /* n = 0 writes nothing */
    a[0] = 42.0f;
    CHECK_OK(lk_evaluator_embed_images(ev, rgb, 0, S2, a));
    CHECK(a[0] == 42.0f);
    free(rgb);
    free(chw);
    free(half);
}

static void test_texts(lk_evaluator *ev, direct *d) {
    char longtext[2000] = "";
    for (int i = 0; i < 60; i++) strcat(longtext, i % 2 ? "apple, " : "star ");
    const char *texts[5] = {"red apple emoji, noto style", "cat face emoji", "", longtext,
                            "RED   Apple emoji,  NOTO style"};
    float a[5 * E_DIM], r[E_DIM];
    CHECK_OK(lk_evaluator_embed_texts(ev, texts, 5, a));
    CHECK(unit_rows(a, 5));
    for (int i = 0; i < 5; i++) {
        CHECK_OK(direct_text(d, texts[i], r));
        char what[80];
        snprintf(what, sizeof what, "text %d = encode_text normalized", i);
        lk_t_close(what, a + i * E_DIM, r, E_DIM, 1e-5f, 1e-5f);
    }
    /* the tokenizer's cleanup: case and white space do not matter */
    lk_t_close("text: case and spaces", a, a + 4 * E_DIM, E_DIM, 1e-6f, 0.0f);
    CHECK(lk_eval_cosine(a, a + E_DIM, E_DIM) < 0.99999f);
    /* a NULL text is the empty one */
    const char *null_text[1] = {NULL};
    CHECK_OK(lk_evaluator_embed_texts(ev, null_text, 1, r));
    lk_t_close("NULL text = empty text", r, a + 2 * E_DIM, E_DIM, 1e-6f, 0.0f);
    CHECK(lk_evaluator_embed_texts(ev, NULL, 1, a) == LK_ERR_INVALID);
    CHECK(lk_evaluator_embed_texts(NULL, texts, 1, a) == LK_ERR_INVALID);
    CHECK(lk_evaluator_embed_texts(ev, texts, -1, a) == LK_ERR_INVALID);
}

/* n = 70: batches of 32, 32 and 6 give what one at a time gives */
static void test_batches(lk_evaluator *ev) {
    enum { N = 70, S2 = 2 * IMG };
    uint8_t *rgb = malloc((size_t)N * S2 * S2 * 3);
    float *all = malloc(sizeof(float) * N * E_DIM), *one = malloc(sizeof(float) * N * E_DIM);
    if (!rgb || !all || !one) {
        CHECK(!"out of memory");
        free(rgb), free(all), free(one);
        return;
    }
    random_rgb(rgb, (size_t)N * S2 * S2 * 3, 9);
    CHECK_OK(lk_evaluator_embed_images(ev, rgb, N, S2, all));
    for (int i = 0; i < N; i++)
        CHECK_OK(lk_evaluator_embed_images(ev, rgb + (size_t)i * S2 * S2 * 3, 1, S2, one + (size_t)i * E_DIM));
    CHECK(unit_rows(all, N));
    lk_t_close("70 images at once = one by one", all, one, (size_t)N * E_DIM, 1e-5f, 1e-5f);
    /* texts of different lengths (each batch pads to its longest) */
    char buf[N][160];
    const char *texts[N];
    for (int i = 0; i < N; i++) {
        snprintf(buf[i], sizeof buf[i], "%s%s", CAPTIONS[i % N_CAPTIONS], i % 7 == 3 ? ", apple, star, cat, dog, face, style" : "");
        texts[i] = buf[i];
    }
    CHECK_OK(lk_evaluator_embed_texts(ev, texts, N, all));
    for (int i = 0; i < N; i++) CHECK_OK(lk_evaluator_embed_texts(ev, texts + i, 1, one + (size_t)i * E_DIM));
    CHECK(unit_rows(all, N));
    lk_t_close("70 texts at once = one by one", all, one, (size_t)N * E_DIM, 1e-5f, 1e-5f);
    free(rgb);
    free(all);
    free(one);
}

static void test_rank(void) {
    const float q[2] = {1.0f, 0.0f};
    /* keys: equal to q, orthogonal, equal to q again, opposite, a little off q */
    const float keys[5 * 2] = {1.0f, 0.0f, 0.0f, 1.0f, 1.0f, 0.0f, -1.0f, 0.0f, 0.8f, 0.6f};
    CHECK(lk_eval_cosine(q, keys + 2, 2) == 0.0f && lk_eval_cosine(q, keys + 6, 2) == -1.0f);
    CHECK(fabsf(lk_eval_cosine(q, keys + 8, 2) - 0.8f) < 1e-7f);
    /* ties count against: key 0 has key 2 as close, so rank 1; and the reverse */
    CHECK(lk_eval_rank(q, keys, 5, 2, 0) == 1);
    CHECK(lk_eval_rank(q, keys, 5, 2, 2) == 1);
    CHECK(lk_eval_rank(q, keys, 5, 2, 4) == 2);
    CHECK(lk_eval_rank(q, keys, 5, 2, 1) == 3);
    CHECK(lk_eval_rank(q, keys, 5, 2, 3) == 4);
    /* without the tie, the best key is first */
    CHECK(lk_eval_rank(q, keys, 2, 2, 0) == 0);
    CHECK(lk_eval_rank(q, keys, 1, 2, 0) == 0);
    /* out of range or NULL: -1 */
    CHECK(lk_eval_rank(q, keys, 5, 2, 5) == -1);
    CHECK(lk_eval_rank(q, keys, 5, 2, -1) == -1);
    CHECK(lk_eval_rank(q, keys, 0, 2, 0) == -1);
    CHECK(lk_eval_rank(NULL, keys, 5, 2, 0) == -1);
    CHECK(lk_eval_rank(q, NULL, 5, 2, 0) == -1);
}

int main(void) {
    char root[] = "/tmp/lk_evaluator_XXXXXX";
    REQUIRE(mkdtemp(root));
    char good[300];
    snprintf(good, sizeof good, "%s/ev", root);
    REQUIRE(mkdir(good, 0755) == 0);
    lk_clip_model_config cfg;
    CHECK_OK(write_export(good, &cfg));
    test_rank();
    test_load_errors(root, good);
    lk_evaluator *ev = NULL;
    CHECK_OK(lk_evaluator_load(&ev, good));
    direct d;
    const lk_status ds = direct_load(&d, good, &cfg);
    CHECK_OK(ds);
    if (ev && ds == LK_OK) {
        CHECK(lk_evaluator_dim(ev) == E_DIM);
        test_images(ev, &d);
        test_texts(ev, &d);
        test_batches(ev);
    }
    direct_free(&d);
    lk_evaluator_free(ev);
    lk_t_remove_tmp(root);
    return lk_t_done();
}
