/* test_pretrain.c: `likeness pretrain` end to end on a synthetic EmojiBench folder
 * (emoji_fixture.h: 6 concepts of coloured shapes in 4 styles, one held out, openmoji not a
 * training style): the generator split, the tokenizer, a few steps of the text, vae and unet
 * stages, exact resume, refused resumes, cancellation, assembling the diffusers folder and
 * generating a 64x64 image from it with the pipeline. About 10 s in Release, 30 s under ASan+UBSan. */
#define _POSIX_C_SOURCE 200809L
#include "emoji_fixture.h"
#include "harness.h"
#include "likeness/pipeline.h"
#include "likeness/pretrain.h"
#include "pretrain/pretrain_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---------------- the synthetic data set ---------------- */

/* in key order (the reader sorts by key; these indices are its indices) */
static const lk_t_emoji_concept CONCEPTS[6] = {
    {"1f308", "rainbow", "Travel & Places", "sky & weather", "\"rainbow\", \"weather\"", 15u,
     true, {230, 60, 200}, LK_T_DISK, false},
    {"1f34e", "red apple", "Food & Drink", "food-fruit", "\"apple\", \"fruit\", \"red\"", 15u,
     false, {220, 30, 30}, LK_T_SQUARE, false},
    {"1f431", "cat face", "Animals & Nature", "animal-mammal", "\"cat\", \"face\", \"pet\"", 15u,
     false, {240, 170, 40}, LK_T_TRIANGLE, false},
    {"1f436", "dog face", "Animals & Nature", "animal-mammal", "\"dog\", \"face\", \"pet\"", 15u,
     false, {150, 100, 60}, LK_T_RING, false},
    {"1f697", "automobile", "Travel & Places", "transport-ground", "\"car\", \"automobile\"",
     15u, false, {40, 90, 220}, LK_T_DIAMOND, false},
    {"2b50", "star", "Travel & Places", "sky & weather", "\"star\", \"medium star\"", 13u, false,
     {250, 210, 0}, LK_T_BARS, false}, /* no fluent3d image */
};
enum { N_CONCEPTS = 6, HELDOUT = 0, OPENMOJI = 3, SEED = 7 /* of every run */ };

/* ---------------- helpers ---------------- */

static int exists(const char *dir, const char *rel) {
    char p[1024];
    snprintf(p, sizeof p, "%s/%s", dir, rel);
    struct stat sb;
    return stat(p, &sb) == 0;
}

static void check_exists(const char *dir, const char *rel) {
    lk_t_checks++;
    if (!exists(dir, rel)) {
        lk_t_failures++;
        fprintf(stderr, "FAIL missing %s/%s\n", dir, rel);
    }
}

static int count_lines(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    int n = 0, ch;
    while ((ch = fgetc(f)) != EOF) n += ch == '\n';
    fclose(f);
    return n;
}

static int64_t checkpoint_step(const char *run) {
    char p[1024];
    snprintf(p, sizeof p, "%s/checkpoint.safetensors", run);
    lk_safetensors *st = NULL;
    if (lk_safetensors_open(&st, p) != LK_OK) return -1;
    const lk_st_tensor *t = lk_safetensors_find(st, "step");
    int64_t step = -1;
    if (t && t->dtype == LK_I64 && t->nbytes == 8) memcpy(&step, t->data, 8);
    lk_safetensors_close(st);
    return step;
}

/* every tensor of the two checkpoints (parameters, AdamW moments, EMA, RNG, step) byte-equal */
static void check_same_checkpoint(const char *what, const char *run_a, const char *run_b) {
    char pa[1024], pb[1024];
    snprintf(pa, sizeof pa, "%s/checkpoint.safetensors", run_a);
    snprintf(pb, sizeof pb, "%s/checkpoint.safetensors", run_b);
    lk_safetensors *a = NULL, *b = NULL;
    CHECK_OK(lk_safetensors_open(&a, pa));
    CHECK_OK(lk_safetensors_open(&b, pb));
    if (!a || !b) {
        lk_safetensors_close(a);
        lk_safetensors_close(b);
        return;
    }
    int n = lk_safetensors_count(a), params = 0, differ = 0;
    const char *first = NULL;
    for (int i = 0; i < n; i++) {
        const lk_st_tensor *t = lk_safetensors_at(a, i), *u = lk_safetensors_find(b, t->name);
        const bool same = u && u->dtype == t->dtype && u->nbytes == t->nbytes &&
                          !memcmp(u->data, t->data, t->nbytes);
        params += !strncmp(t->name, "param.", 6);
        if (!same && !differ++) first = t->name;
    }
    lk_t_checks++;
    if (differ || n != lk_safetensors_count(b) || params == 0) {
        lk_t_failures++;
        fprintf(stderr, "FAIL %s: %d of %d checkpoint tensors differ (first: %s)\n", what, differ,
                n, first ? first : "-");
    } else {
        printf("ok   %s: all %d checkpoint tensors (%d parameters, optimizer state, EMA if any, RNG, step) "
               "byte-identical\n", what, n, params);
    }
    lk_safetensors_close(a);
    lk_safetensors_close(b);
}

/* how many "param.*" tensors of the two checkpoints differ (-1 if one cannot be read) */
static int param_diffs(const char *run_a, const char *run_b) {
    char pa[1024], pb[1024];
    snprintf(pa, sizeof pa, "%s/checkpoint.safetensors", run_a);
    snprintf(pb, sizeof pb, "%s/checkpoint.safetensors", run_b);
    lk_safetensors *a = NULL, *b = NULL;
    int n = -1;
    if (lk_safetensors_open(&a, pa) == LK_OK && lk_safetensors_open(&b, pb) == LK_OK) {
        n = 0;
        for (int i = 0; i < lk_safetensors_count(a); i++) {
            const lk_st_tensor *t = lk_safetensors_at(a, i), *u = lk_safetensors_find(b, t->name);
            if (strncmp(t->name, "param.", 6)) continue;
            n += !u || u->nbytes != t->nbytes || memcmp(u->data, t->data, t->nbytes);
        }
    }
    lk_safetensors_close(a);
    lk_safetensors_close(b);
    return n;
}

typedef struct progress_log {
    int calls;
    int64_t last_step, steps;
    bool bad;           /* a step out of order or a non-finite number */
    float metric_lo, metric_hi;
    int64_t cancel_at;  /* > 0: set *cancel at this step */
    volatile sig_atomic_t *cancel;
    int64_t fail_at;    /* > 0: return LK_ERR_STATE at this step */
} progress_log;

static lk_status on_progress(void *ud, const lk_pretrain_stats *st) {
    progress_log *l = ud;
    if (l->calls && st->step != l->last_step + 1) l->bad = true;
    if (!isfinite(st->loss) || !isfinite(st->metric) || !isfinite(st->lr) ||
        !isfinite(st->grad_norm) || st->metric < l->metric_lo || st->metric > l->metric_hi ||
        !(st->lr >= 0.0f) || st->seconds < 0.0 || st->steps < st->step) {
        if (!l->bad)
            fprintf(stderr, "bad progress at step %lld: loss %g metric %g lr %g grad norm %g\n",
                    (long long)st->step, (double)st->loss, (double)st->metric, (double)st->lr,
                    (double)st->grad_norm);
        l->bad = true;
    }
    l->calls++;
    l->last_step = st->step;
    l->steps = st->steps;
    if (l->cancel_at > 0 && st->step == l->cancel_at && l->cancel) *l->cancel = 1;
    if (l->fail_at > 0 && st->step == l->fail_at)
        return lk_fail(LK_ERR_STATE, "progress callback stops at step %lld", (long long)st->step);
    return LK_OK;
}

/* ---------------- the split ---------------- */

static void test_split(const char *data) {
    lk_emoji_set *set = NULL;
    CHECK_OK(lk_emoji_set_open(&set, data));
    if (!set) return;
    CHECK(lk_emoji_set_n_concepts(set) == N_CONCEPTS);
    for (int c = 0; c < N_CONCEPTS; c++)
        CHECK(!strcmp(lk_emoji_set_concept(set, c)->key, CONCEPTS[c].key));
    CHECK(lk_emoji_set_concept(set, HELDOUT)->heldout);
    CHECK(!lk_emoji_set_style_trainable(set, OPENMOJI));

    lk__pt_images gen, all;
    CHECK_OK(lk__pt_images_load(&gen, set, false));
    CHECK_OK(lk__pt_images_load(&all, set, true));
    /* generator: 5 concepts x 3 styles, less the star's missing fluent3d */
    CHECK(gen.n == 14);
    CHECK(all.n == 23);
    int seen[N_CONCEPTS][4] = {{0}};
    bool leak = false, pixels_ok = true;
    uint8_t want[3];
    for (int i = 0; i < gen.n; i++) {
        const int c = gen.concept[i], s = gen.style[i];
        if (c < 0 || c >= N_CONCEPTS || s < 0 || s >= 4) {
            leak = true;
            continue;
        }
        leak = leak || c == HELDOUT || s == OPENMOJI || lk_emoji_set_concept(set, c)->heldout ||
               !lk_emoji_set_style_trainable(set, s);
        seen[c][s]++;
        /* the item's pixels are that concept in that style */
        for (int k = 0; k < 64 * 64; k += 97) {
            lk_t_emoji_pixel(&CONCEPTS[c], s, k % 64, k / 64, want);
            pixels_ok = pixels_ok && !memcmp(gen.pixels + ((size_t)i * 64 * 64 + k) * 3, want, 3);
        }
    }
    CHECK(!leak);
    CHECK(pixels_ok);
    bool once = true;
    for (int c = 0; c < N_CONCEPTS; c++)
        for (int s = 0; s < 4; s++) {
            const int expect = c != HELDOUT && s != OPENMOJI && (CONCEPTS[c].styles & (1u << s));
            once = once && seen[c][s] == expect;
        }
    CHECK(once);
    /* the evaluator split has everything, the held-out concept and openmoji included */
    int held = 0, om = 0;
    for (int i = 0; i < all.n; i++) {
        held += all.concept[i] == HELDOUT;
        om += all.style[i] == OPENMOJI;
    }
    CHECK(held == 4 && om == 6);

    /* to floats: [-1, 1], 2x2 box average, crops */
    float full[3 * 64 * 64], half[3 * 32 * 32], crop[3 * 8 * 8];
    lk__pt_image_to_f32(gen.pixels, full, 1, 0, 0, 0);
    lk__pt_image_to_f32(gen.pixels, half, 2, 0, 0, 0);
    lk__pt_image_to_f32(gen.pixels, crop, 1, 20, 30, 8);
    bool conv = true;
    for (int ch = 0; ch < 3; ch++)
        for (int y = 0; y < 64; y++)
            for (int x = 0; x < 64; x++) {
                const float w = (float)gen.pixels[((size_t)y * 64 + x) * 3 + ch] / 127.5f - 1.0f;
                conv = conv && fabsf(full[(ch * 64 + y) * 64 + x] - w) < 1e-6f;
                if (x >= 20 && x < 28 && y >= 30 && y < 38)
                    conv = conv && crop[(ch * 8 + (y - 30)) * 8 + (x - 20)] == full[(ch * 64 + y) * 64 + x];
            }
    for (int ch = 0; ch < 3; ch++)
        for (int y = 0; y < 32; y++)
            for (int x = 0; x < 32; x++) {
                const float *f = full + ch * 64 * 64;
                const float m = (f[(2 * y) * 64 + 2 * x] + f[(2 * y) * 64 + 2 * x + 1] +
                                 f[(2 * y + 1) * 64 + 2 * x] + f[(2 * y + 1) * 64 + 2 * x + 1]) / 4.0f;
                conv = conv && fabsf(half[(ch * 32 + y) * 32 + x] - m) < 1e-5f;
            }
    CHECK(conv);
    lk__pt_images_free(&gen);
    lk__pt_images_free(&all);
    CHECK(gen.n == 0 && gen.pixels == NULL);
    lk_emoji_set_free(set);
}

/* ---------------- the tokenizer ---------------- */

static bool file_contains(const char *path, const char *needle) {
    char *text = lk_t_read_file(path, NULL);
    const bool found = text && strstr(text, needle) != NULL;
    free(text);
    return found;
}

static void test_tokenizer(const char *data, const char *tok_dir) {
    CHECK_OK(lk_pretrain_tokenizer(data, tok_dir, 600));
    check_exists(tok_dir, "vocab.json");
    check_exists(tok_dir, "merges.txt");
    check_exists(tok_dir, "tokenizer_config.json");
    check_exists(tok_dir, "special_tokens_map.json");
    lk_tokenizer *tok = NULL;
    CHECK_OK(lk_tokenizer_load(&tok, tok_dir));
    if (!tok) return;
    const int64_t V = lk_tokenizer_vocab_size(tok);
    CHECK(V > 514 && V <= 600);
    /* captions tokenize and decode back (lower-cased, as CLIP) */
    static const char *const caps[] = {"dog face emoji, noto style", "red apple, apple, fruit emoji, fluent 3d style",
                                       "Star emoji", "automobile emoji, twemoji style"};
    for (int i = 0; i < 4; i++) {
        int64_t ids[LK_CLIP_CONTEXT];
        int nc = 0;
        CHECK_OK(lk_tokenizer_encode(tok, caps[i], ids, LK_CLIP_CONTEXT, LK_PAD_EOS, &nc));
        CHECK(nc > 0 && nc < 30 && ids[0] == lk_tokenizer_bos(tok) && ids[nc + 1] == lk_tokenizer_eos(tok));
        char *text = NULL;
        CHECK_OK(lk_tokenizer_decode(tok, ids, nc + 2, true, &text));
        /* CLIP's decode ends every word piece with a space ("emoji , noto style", "3 d"):
         * compare without spaces, lower-cased */
        char a[128], b[128];
        size_t na = 0, nb = 0;
        for (const char *p = caps[i]; *p && na + 1 < sizeof a; p++)
            if (*p != ' ') a[na++] = (char)(*p >= 'A' && *p <= 'Z' ? *p - 'A' + 'a' : *p);
        for (const char *p = text ? text : ""; *p && nb + 1 < sizeof b; p++)
            if (*p != ' ') b[nb++] = *p;
        a[na] = b[nb] = '\0';
        lk_t_checks++;
        if (!text || strcmp(a, b)) {
            lk_t_failures++;
            fprintf(stderr, "FAIL tokenizer round trip: \"%s\" -> \"%s\"\n", caps[i], text ? text : "(null)");
        }
        free(text);
    }
    /* words of every training caption became single tokens */
    int n = 0;
    CHECK_OK(lk_tokenizer_bpe(tok, "emoji", NULL, 0, &n));
    CHECK(n == 1);
    CHECK_OK(lk_tokenizer_bpe(tok, "style", NULL, 0, &n));
    CHECK(n == 1);
    /* ... but nothing was learned from the held-out concept or openmoji's captions */
    char vp[1024];
    snprintf(vp, sizeof vp, "%s/vocab.json", tok_dir);
    CHECK(file_contains(vp, "emoji</w>"));
    CHECK(!file_contains(vp, "rainb") && !file_contains(vp, "weath") && !file_contains(vp, "openm"));
    CHECK_OK(lk_tokenizer_bpe(tok, "rainbow", NULL, 0, &n));
    CHECK(n >= 3);
    lk_tokenizer_free(tok);
    /* refusals */
    CHECK(lk_pretrain_tokenizer(NULL, tok_dir, 600) == LK_ERR_INVALID);
    CHECK(lk_pretrain_tokenizer(tok_dir, tok_dir, 600) == LK_ERR_IO); /* no manifest there */
}

/* ---------------- the stages ---------------- */

static void check_run(const char *what, const lk_pretrain_config *c, lk_status want,
                      progress_log *log, float metric_lo, float metric_hi) {
    memset(log, 0, sizeof *log);
    log->metric_lo = metric_lo;
    log->metric_hi = metric_hi;
    lk_pretrain_config cc = *c;
    cc.progress = on_progress;
    cc.progress_ud = log;
    const double t = lk_t_now();
    const lk_status s = lk_pretrain_run(&cc);
    lk_t_checks++;
    if (s != want) {
        lk_t_failures++;
        fprintf(stderr, "FAIL %s: %s (%s), want %s\n", what, lk_status_str(s), lk_last_error(),
                lk_status_str(want));
    } else {
        printf("ok   %s: %s in %.1f s (%d steps)\n", what, lk_status_str(s), lk_t_now() - t, log->calls);
    }
    CHECK(!log->bad);
}

static void test_text(const char *data, const char *tok_dir, const char *run) {
    lk_pretrain_config c = lk_t_pretrain_config(LK_PRETRAIN_TEXT, data, run, 3, 4, SEED);
    progress_log log;
    /* the tokenizer is required */
    check_run("text without a tokenizer", &c, LK_ERR_INVALID, &log, 0.0f, 1.0f);
    CHECK(strstr(lk_last_error(), "tokenizer") != NULL);
    c.tokenizer_dir = tok_dir;
    check_run("text stage, 3 steps of batch 4", &c, LK_OK, &log, 0.0f, 1.0f);
    CHECK(log.calls == 3 && log.last_step == 3 && log.steps == 3);
    CHECK(checkpoint_step(run) == 3);
    char p[1024];
    snprintf(p, sizeof p, "%s/log.jsonl", run);
    CHECK(count_lines(p) == 3);
    static const char *const files[] = {
        "export/text_encoder/config.json", "export/text_encoder/model.safetensors",
        "export/clip/config.json", "export/clip/model.safetensors", "export/tokenizer/vocab.json",
        "export/tokenizer/merges.txt", "export/tokenizer/tokenizer_config.json",
        "export/tokenizer/special_tokens_map.json"};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) check_exists(run, files[i]);
    /* the exported model loads: the CLIP config + weights, the text encoder alone */
    lk_clip_model_config cc;
    snprintf(p, sizeof p, "%s/export/clip/config.json", run);
    CHECK_OK(lk_clip_model_config_load(&cc, p));
    lk_tokenizer *tok = NULL;
    CHECK_OK(lk_tokenizer_load(&tok, tok_dir));
    CHECK(tok && cc.text.vocab_size == (int)lk_tokenizer_vocab_size(tok));
    lk_tokenizer_free(tok);
    lk_weights *w = lk_weights_new();
    snprintf(p, sizeof p, "%s/export/clip/model.safetensors", run);
    CHECK_OK(lk_weights_load_safetensors(w, p, NULL, "", LK_F32));
    lk_clip_model *m = NULL;
    CHECK_OK(lk_clip_model_new(&m, &cc, w, ""));
    CHECK(m && fabsf(lk_clip_model_logit_scale(m) - 1.0f / 0.07f) < 0.5f); /* 3 small steps */
    lk_clip_model_free(m);
    lk_weights_free(w);
    lk_clip_text_config tc;
    snprintf(p, sizeof p, "%s/export/text_encoder/config.json", run);
    CHECK_OK(lk_clip_text_config_load(&tc, p));
    CHECK(tc.hidden_size == cc.text.hidden_size && tc.vocab_size == cc.text.vocab_size);
    /* the run trained on the generator split: 14 items */
    snprintf(p, sizeof p, "%s/checkpoint.safetensors", run);
    lk_safetensors *st = NULL;
    CHECK_OK(lk_safetensors_open(&st, p));
    const char *set = st ? lk_safetensors_meta(st, "settings") : NULL;
    CHECK(set && strstr(set, "items=14") && strstr(set, "batch=4"));
    lk_safetensors_close(st);

    /* resume: 2 steps, then resumed to 3, is the 3-step run */
    char rb[300];
    snprintf(rb, sizeof rb, "%s_b", run);
    lk_pretrain_config b = c;
    b.run_dir = rb;
    b.steps = 2;
    check_run("text stage B, 2 steps", &b, LK_OK, &log, 0.0f, 1.0f);
    b.steps = 3;
    b.resume = true;
    check_run("text stage B, resumed to 3", &b, LK_OK, &log, 0.0f, 1.0f);
    CHECK(log.calls == 1);
    check_same_checkpoint("text: 3 steps = 2 steps + resume to 3", run, rb);

    /* the evaluator: every concept in every style (23 images), its own stage name */
    char re[300];
    snprintf(re, sizeof re, "%s_evaluator", run);
    lk_pretrain_config e = c;
    e.run_dir = re;
    e.steps = 1;
    e.batch = 2;
    e.evaluator = true;
    check_run("evaluator, 1 step of batch 2", &e, LK_OK, &log, 0.0f, 1.0f);
    snprintf(p, sizeof p, "%s/checkpoint.safetensors", re);
    st = NULL;
    CHECK_OK(lk_safetensors_open(&st, p));
    set = st ? lk_safetensors_meta(st, "settings") : NULL;
    CHECK(set && strstr(set, "items=23") && strstr(set, "eval=1"));
    const char *stage = st ? lk_safetensors_meta(st, "stage") : NULL;
    CHECK(stage && !strcmp(stage, "evaluator"));
    lk_safetensors_close(st);
    /* a text checkpoint does not resume an evaluator run, nor the reverse */
    b.evaluator = true;
    check_run("evaluator resumed from a text checkpoint", &b, LK_ERR_FORMAT, &log, 0.0f, 1.0f);
}

/* vae: A runs 4 steps; B runs 2, is refused a resume with another batch, then resumes to 4 */
static void test_vae(const char *data, const char *run_a, const char *run_b) {
    progress_log log;
    lk_pretrain_config c = lk_t_pretrain_config(LK_PRETRAIN_VAE, data, run_a, 4, 2, SEED);
    check_run("vae stage A, 4 steps of batch 2", &c, LK_OK, &log, 0.0f, 255.0f);
    CHECK(log.calls == 4 && checkpoint_step(run_a) == 4);
    check_exists(run_a, "export/vae/config.json");
    check_exists(run_a, "export/vae/diffusion_pytorch_model.safetensors");
    char p[1024];
    snprintf(p, sizeof p, "%s/export/vae/config.json", run_a);
    lk_vae_config vc;
    CHECK_OK(lk_vae_config_load(&vc, p));
    CHECK(vc.latent_channels == 4 && vc.n_blocks == 3 && isfinite(vc.scaling_factor) &&
          vc.scaling_factor > 0.0f);

    c.run_dir = run_b;
    c.steps = 2;
    check_run("vae stage B, 2 steps", &c, LK_OK, &log, 0.0f, 255.0f);
    CHECK(checkpoint_step(run_b) == 2);
    CHECK(param_diffs(run_a, run_b) > 100); /* steps 3 and 4 moved the weights */
    c.steps = 4;
    c.resume = true;
    c.batch = 3;
    check_run("vae stage B, resume with batch 3", &c, LK_ERR_INVALID, &log, 0.0f, 255.0f);
    CHECK(strstr(lk_last_error(), "batch=2") && strstr(lk_last_error(), "batch=3") &&
          strstr(lk_last_error(), "resume"));
    CHECK(log.calls == 0 && checkpoint_step(run_b) == 2);
    c.batch = 2;
    c.seed = 8;
    check_run("vae stage B, resume with another seed", &c, LK_ERR_INVALID, &log, 0.0f, 255.0f);
    CHECK(strstr(lk_last_error(), "seed") != NULL);
    c.seed = SEED;
    const int crop = c.vae_crop;
    c.vae_crop = crop == 16 ? 32 : 16;
    check_run("vae stage B, resume with another crop", &c, LK_ERR_INVALID, &log, 0.0f, 255.0f);
    CHECK(strstr(lk_last_error(), "inputs crop=") && strstr(lk_last_error(), "resume"));
    CHECK(log.calls == 0 && checkpoint_step(run_b) == 2);
    c.vae_crop = crop;
    check_run("vae stage B, resume to 4 steps", &c, LK_OK, &log, 0.0f, 255.0f);
    CHECK(log.calls == 2 && log.last_step == 4);
    CHECK(checkpoint_step(run_b) == 4);
    snprintf(p, sizeof p, "%s/log.jsonl", run_b);
    CHECK(count_lines(p) == 4); /* appended */
    check_same_checkpoint("vae: 4 steps = 2 steps + resume to 4", run_a, run_b);
    /* a finished run resumed to the same step count does nothing */
    check_run("vae stage B, resume at its end", &c, LK_OK, &log, 0.0f, 255.0f);
    CHECK(log.calls == 0);
    check_same_checkpoint("vae: resumed at its end", run_a, run_b);
}

/* cancellation: before the first step (checkpoint of step 0), and after step 1 */
static void test_cancel(const char *data, const char *run, const char *tok_dir) {
    volatile sig_atomic_t cancel = 1;
    progress_log log;
    lk_pretrain_config c = lk_t_pretrain_config(LK_PRETRAIN_VAE, data, run, 3, 1, SEED);
    c.vae_crop = 16;
    c.cancel = &cancel;
    check_run("vae, cancelled before the first step", &c, LK_ERR_INTERRUPTED, &log, 0.0f, 255.0f);
    CHECK(log.calls == 0);
    CHECK(strstr(lk_last_error(), "checkpoint") != NULL);
    CHECK(checkpoint_step(run) == 0);
    check_exists(run, "export/vae/diffusion_pytorch_model.safetensors");
    /* resume; cancelled from the progress callback after step 1 */
    cancel = 0;
    c.resume = true;
    memset(&log, 0, sizeof log);
    lk_pretrain_config cc = c;
    cc.progress = on_progress;
    cc.progress_ud = &log;
    log.metric_hi = 255.0f;
    log.cancel_at = 1;
    log.cancel = &cancel;
    CHECK(lk_pretrain_run(&cc) == LK_ERR_INTERRUPTED);
    CHECK(log.calls == 1 && checkpoint_step(run) == 1);
    /* a progress callback's error stops the run after a checkpoint */
    cancel = 0;
    memset(&log, 0, sizeof log);
    log.metric_hi = 255.0f;
    log.fail_at = 2;
    CHECK(lk_pretrain_run(&cc) == LK_ERR_STATE && strstr(lk_last_error(), "stops at step 2"));
    CHECK(log.calls == 1 && checkpoint_step(run) == 2);
    /* resuming without a checkpoint, a bad crop, missing folders, bad numbers */
    char p[1024];
    snprintf(p, sizeof p, "%s/none", run);
    lk_pretrain_config d = lk_t_pretrain_config(LK_PRETRAIN_VAE, data, p, 2, 1, SEED);
    d.vae_crop = 16;
    d.resume = true;
    CHECK(lk_pretrain_run(&d) != LK_OK && strstr(lk_last_error(), "checkpoint.safetensors"));
    d.resume = false;
    d.vae_crop = 30;
    CHECK(lk_pretrain_run(&d) == LK_ERR_INVALID && strstr(lk_last_error(), "crop"));
    d.vae_crop = 16;
    d.steps = 0;
    CHECK(lk_pretrain_run(&d) == LK_ERR_INVALID);
    d.steps = 1;
    d.batch = 0;
    CHECK(lk_pretrain_run(&d) == LK_ERR_INVALID);
    d.batch = 1;
    d.data_dir = NULL;
    CHECK(lk_pretrain_run(&d) == LK_ERR_INVALID);
    CHECK(lk_pretrain_run(NULL) == LK_ERR_INVALID);
    d.data_dir = tok_dir; /* no manifest */
    CHECK(lk_pretrain_run(&d) == LK_ERR_IO);
    /* the unet stage needs the text and vae exports */
    lk_pretrain_config u = lk_t_pretrain_config(LK_PRETRAIN_UNET, data, run, 2, 1, SEED);
    u.resume = true;
    CHECK(lk_pretrain_run(&u) == LK_ERR_INVALID); /* no --text / --vae */
    CHECK(strstr(lk_last_error(), "--text") != NULL);
}

static void test_unet(const char *data, const char *tok_dir, const char *text_run,
                      const char *vae_run, const char *run_a, const char *run_b, int steps) {
    char text_dir[1024], vae_dir[1024];
    snprintf(text_dir, sizeof text_dir, "%s/export", text_run);
    snprintf(vae_dir, sizeof vae_dir, "%s/export", vae_run);
    progress_log log;
    lk_pretrain_config c = lk_t_pretrain_config(LK_PRETRAIN_UNET, data, run_a, steps, 2, SEED);
    c.tokenizer_dir = tok_dir;
    c.text_dir = text_dir;
    c.vae_dir = vae_dir;
    char what[96];
    snprintf(what, sizeof what, "unet stage A, %d steps of batch 2", steps);
    check_run(what, &c, LK_OK, &log, 0.0f, 1e6f);
    CHECK(log.calls == steps && checkpoint_step(run_a) == steps);
    check_exists(run_a, "export/unet/config.json");
    check_exists(run_a, "export/unet/diffusion_pytorch_model.safetensors");
    /* the caption cache: one embedding per generator item and caption variant, + "" */
    char p[1024];
    snprintf(p, sizeof p, "%s/caption_cache.bin", run_a);
    FILE *f = fopen(p, "rb");
    uint64_t dims[2] = {0, 0};
    CHECK(f && fseek(f, 64, SEEK_SET) == 0 && fread(dims, 8, 2, f) == 2);
    if (f) fclose(f);
    CHECK(dims[0] == 14u * 4u + 1u && dims[1] == 77u * 256u);
    lk_unet_config uc;
    snprintf(p, sizeof p, "%s/export/unet/config.json", run_a);
    CHECK_OK(lk_unet_config_load(&uc, p));
    CHECK(uc.cross_attention_dim == 256 && uc.in_channels == 4 && uc.n_blocks == 3);

    /* resume: half the steps, then resumed (reading its caption cache back) to all */
    c.run_dir = run_b;
    c.steps = steps / 2;
    check_run("unet stage B, first half", &c, LK_OK, &log, 0.0f, 1e6f);
    c.steps = steps;
    c.resume = true;
    check_run("unet stage B, resumed", &c, LK_OK, &log, 0.0f, 1e6f);
    CHECK(log.calls == steps - steps / 2);
    check_same_checkpoint("unet: N steps = N/2 steps + resume to N", run_a, run_b);
    { /* the checkpoint names what it was made from: a resume must read the same */
        lk_safetensors *st = NULL;
        snprintf(p, sizeof p, "%s/checkpoint.safetensors", run_b);
        CHECK_OK(lk_safetensors_open(&st, p));
        const char *in = st ? lk_safetensors_meta(st, "inputs") : NULL;
        CHECK(in && strstr(in, "vae=") && strstr(in, "text+tokenizer="));
        lk_safetensors_close(st);
    }
    /* a vae checkpoint is not a unet checkpoint */
    char vae_ck[1024], b_ck[1024];
    snprintf(vae_ck, sizeof vae_ck, "%s/checkpoint.safetensors", vae_run);
    snprintf(b_ck, sizeof b_ck, "%s/checkpoint.safetensors", run_b);
    CHECK(lk__pt_copy_file(vae_ck, b_ck) == LK_OK);
    check_run("unet resumed from a vae checkpoint", &c, LK_ERR_FORMAT, &log, 0.0f, 1e6f);
    CHECK(strstr(lk_last_error(), "stage unet") != NULL);
}

static void test_assemble_generate(const char *tok_dir, const char *text_run, const char *vae_run,
                                   const char *unet_run, const char *out) {
    char t[1024], v[1024], u[1024];
    snprintf(t, sizeof t, "%s/export", text_run);
    snprintf(v, sizeof v, "%s/export", vae_run);
    snprintf(u, sizeof u, "%s/export", unet_run);
    CHECK_OK(lk_pretrain_assemble(tok_dir, t, v, u, out));
    static const char *const files[] = {
        "model_index.json", "scheduler/scheduler_config.json", "tokenizer/vocab.json",
        "tokenizer/merges.txt", "text_encoder/config.json", "text_encoder/model.safetensors",
        "vae/config.json", "vae/diffusion_pytorch_model.safetensors", "unet/config.json",
        "unet/diffusion_pytorch_model.safetensors"};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) check_exists(out, files[i]);

    lk_sd_model *m = NULL;
    CHECK_OK(lk_sd_model_load(&m, out, NULL));
    if (m) {
        for (int i = 0; i < LK_SD_NPARTS; i++)
            CHECK(m->part[i].weights && m->part[i].file_dtype == LK_F16 &&
                  !m->part[i].config_synthesized && m->part[i].n_params > 0);
        CHECK(m->tokenizer != NULL && m->prediction == LK_PREDICT_EPSILON);
        /* trained with EOS padding (stage_text, the unet's caption cache): the tokenizer folder
         * says so, whatever architecture the gelu text encoder suggests */
        CHECK(m->pad == LK_PAD_EOS);
        printf("     assembled model: text %lld, unet %lld, vae %lld parameters (%s)\n",
               (long long)m->part[LK_SD_TEXT_ENCODER].n_params, (long long)m->part[LK_SD_UNET].n_params,
               (long long)m->part[LK_SD_VAE].n_params, lk_sd_arch_name(m->arch));
        lk_sd_model_free(m);
    }
    lk_sd_pipeline *p = NULL;
    CHECK_OK(lk_sd_pipeline_load(&p, out, NULL));
    if (p) {
        int mult = 0, w = 0, h = 0;
        lk_sd_pipeline_geometry(p, &mult, &w, &h);
        CHECK(mult == 16 && w == 64 && h == 64);
        lk_sd_gen_params g;
        lk_sd_gen_params_default(&g);
        g.prompt = "dog face emoji, noto style";
        g.width = g.height = 64;
        g.steps = 2;
        g.seed = 3;
        lk_sd_result r;
        memset(&r, 0, sizeof r);
        CHECK_OK(lk_sd_pipeline_generate(p, &g, &r));
        CHECK(r.width == 64 && r.height == 64 && r.latent_c == 4 && r.latent_h == 16 && r.latent_w == 16);
        bool finite = r.image != NULL;
        for (int i = 0; finite && i < 3 * 64 * 64; i++) finite = isfinite(r.image[i]);
        CHECK(finite);
        lk_sd_result_free(&r);
        lk_sd_pipeline_free(p);
    }
    /* a missing part names the file */
    CHECK(lk_pretrain_assemble(tok_dir, t, v, t, out) == LK_ERR_IO);
    CHECK(strstr(lk_last_error(), "unet/config.json") != NULL);
    CHECK(lk_pretrain_assemble(NULL, t, v, u, out) == LK_ERR_INVALID);
}

int main(void) {
    char root[] = "/tmp/lk_pretrain_XXXXXX";
    REQUIRE(mkdtemp(root));
    char data[256], tok[256], text[256], vae_a[256], vae_b[256], cancel[256], unet_a[256],
        unet_b[256], out[256];
    snprintf(data, sizeof data, "%s/emoji", root);
    snprintf(tok, sizeof tok, "%s/tokenizer", root);
    snprintf(text, sizeof text, "%s/runs/text", root);
    snprintf(vae_a, sizeof vae_a, "%s/runs/vae_a", root);
    snprintf(vae_b, sizeof vae_b, "%s/runs/vae_b", root);
    snprintf(cancel, sizeof cancel, "%s/runs/cancel", root);
    snprintf(unet_a, sizeof unet_a, "%s/runs/unet_a", root);
    snprintf(unet_b, sizeof unet_b, "%s/runs/unet_b", root);
    snprintf(out, sizeof out, "%s/model", root);
    REQUIRE(lk_t_write_emoji_set(data, CONCEPTS, N_CONCEPTS, false));
    lk_t_phase("data set written");
    test_split(data);
    lk_t_phase("split");
    test_tokenizer(data, tok);
    lk_t_phase("tokenizer");
    test_text(data, tok, text);
    lk_t_phase("text stage");
    test_vae(data, vae_a, vae_b);
    lk_t_phase("vae stage + resume");
    test_cancel(data, cancel, tok);
    lk_t_phase("cancel + refusals");
    test_unet(data, tok, text, vae_a, unet_a, unet_b, 4);
    lk_t_phase("unet stage + resume");
    test_assemble_generate(tok, text, vae_a, unet_a, out);
    lk_t_phase("assemble + txt2img");
    lk_t_remove_tmp(root);
    return lk_t_done();
}
