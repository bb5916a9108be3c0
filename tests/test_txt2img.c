/* test_txt2img.c: the Stable Diffusion pipeline against the golden fixtures (diffusers 0.25
 * StableDiffusionPipeline, ../shared/golden/txt2img*_cases): token ids, the seeded initial latent
 * (bit-exact torch.randn), the final latent and decoded image after DDIM with CFG 7.5, batched vs
 * separate CFG, LoRA 0.8 and a textual-inversion embedding, the fp16 single-file checkpoint,
 * img2img (strength 1 = txt2img; lower strengths start from the VAE-encoded image + noise),
 * A1111 emphasis and chunking, the A1111 "parameters" PNG chunk read back, and refusals.
 * Tolerance: 1e-4 relative (+1e-5 absolute for values near 0) in f32; fp16 weights looser. */
#define _POSIX_C_SOURCE 200809L
#include "harness.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "likeness/image.h"
#include "likeness/pipeline.h"

static char golden[2048];

static const char *gpath(const char *rel, char *buf, size_t n) {
    snprintf(buf, n, "%s/%s", golden, rel);
    return buf;
}

static float max_abs_diff(const float *a, const float *b, size_t n) {
    float m = 0.0f;
    for (size_t i = 0; i < n; i++) {
        float d = fabsf(a[i] - b[i]);
        if (!(d <= m)) m = d; /* NaN propagates */
    }
    return m;
}

static float mean_abs_diff(const float *a, const float *b, size_t n) {
    double s = 0.0;
    for (size_t i = 0; i < n; i++) s += fabs((double)a[i] - (double)b[i]);
    return (float)(s / (double)n);
}

/* the golden run: "a photo of a cat", "" negative, DDIM, steps/seed from the metadata, 64x64 */
typedef struct golden_run {
    const char *prompt;
    int steps;
    uint64_t seed;
    float cfg;
} golden_run;

static void params_for(lk_sd_gen_params *g, const golden_run *gr) {
    lk_sd_gen_params_default(g);
    g->prompt = gr->prompt;
    g->negative_prompt = "";
    g->steps = gr->steps;
    g->seed = gr->seed;
    g->cfg_scale = gr->cfg;
    g->sampler = LK_SAMPLER_DDIM;
    g->width = g->height = 64;
}

/* lk_t_close with the absolute tolerance scaled to the tensor: atol = scale_tol * max|want|.
 * CFG 7.5 amplifies the UNet's float32 rounding differences (~1.5e-6 of its output scale, see
 * test_unet) by 7.5 at every step, so after several steps elements near 0 of a latent whose
 * values reach ~16 cannot meet 1e-4 of their own size; 2e-5 of the tensor's scale still catches
 * any real error (a wrong timestep, scale or order moves values by percent). */
static int close_scaled(const char *what, const float *got, const float *want, size_t n,
                        float scale_tol, float rtol) {
    float m = 0.0f;
    for (size_t i = 0; i < n; i++) m = fmaxf(m, fabsf(want[i]));
    return lk_t_close(what, got, want, n, scale_tol * m, rtol);
}

static int count_calls;
static lk_status count_progress(void *ud, int done, int total, float t) {
    (void)ud;
    (void)t;
    count_calls++;
    return done <= total ? LK_OK : lk_fail(LK_ERR_STATE, "progress beyond total");
}

/* ---- the main golden case ---- */

static void test_txt2img(lk_sd_pipeline *p, const lk_safetensors *cs, const golden_run *gr,
                         float **image_out) {
    /* token ids as the diffusers pipeline made them */
    lk_prompt_cond c, u;
    CHECK_OK(lk_sd_pipeline_encode(p, gr->prompt, "", 1, true, &c, &u));
    int64_t n = 0;
    const lk_st_tensor *pid = lk_safetensors_find(cs, "prompt_ids");
    const lk_st_tensor *nid = lk_safetensors_find(cs, "negative_ids");
    CHECK(pid && nid && c.n_tokens == 77 && u.n_tokens == 77 && c.n_chunks == 1);
    if (pid && nid && c.ids && u.ids) {
        CHECK(memcmp(pid->data, c.ids, 77 * sizeof(int64_t)) == 0);
        CHECK(memcmp(nid->data, u.ids, 77 * sizeof(int64_t)) == 0);
    }

    lk_sd_gen_params g;
    params_for(&g, gr);
    g.progress = count_progress;
    count_calls = 0;
    lk_sd_result r;
    double t0 = lk_t_now();
    CHECK_OK(lk_sd_pipeline_generate(p, &g, &r));
    double t1 = lk_t_now();
    if (!r.image) {
        lk_prompt_cond_free(&c);
        lk_prompt_cond_free(&u);
        return;
    }
    fprintf(stderr, "  txt2img %dx%d, %d DDIM steps: %.2f s (encode %.3f, sample %.3f, decode %.3f)\n",
            r.width, r.height, gr->steps, t1 - t0, r.t_encode, r.t_sample, r.t_decode);
    CHECK(count_calls == gr->steps);
    float *init = lk_t_load(cs, "init_latent", &n);
    if (init) {
        CHECK(n == 4 * 8 * 8 && r.latent_c == 4 && r.latent_h == 8 && r.latent_w == 8);
        lk_t_close("txt2img init_latent = torch.randn(seed) (exact)", r.init_latent, init, (size_t)n,
                   0.0f, 0.0f);
    }
    float *fin = lk_t_load(cs, "final_latent", &n);
    if (fin) close_scaled("txt2img final_latent (DDIM, CFG 7.5)", r.final_latent, fin, (size_t)n, 2e-5f, 1e-4f);
    float *img = lk_t_load(cs, "image", &n);
    if (img) {
        CHECK(n == 3 * 64 * 64);
        close_scaled("txt2img image", r.image, img, (size_t)n, 2e-5f, 1e-4f);
    }

    /* CFG as two UNet calls gives the same latent as one batch of two */
    float *lat2 = malloc(256 * sizeof *lat2);
    g.progress = NULL;
    g.cfg_mode = LK_CFG_SEPARATE;
    CHECK_OK(lk_sd_pipeline_sample(p, &g, &c, &u, lat2, NULL));
    if (lat2) lk_t_close("CFG separate calls vs one batch (final latent)", lat2, r.final_latent, 256, 1e-6f, 1e-5f);
    /* no guidance (cfg 1) is the prompt alone: a different result */
    g.cfg_mode = LK_CFG_BATCHED;
    g.cfg_scale = 1.0f;
    CHECK_OK(lk_sd_pipeline_sample(p, &g, &c, &u, lat2, NULL));
    if (lat2) CHECK(max_abs_diff(lat2, r.final_latent, 256) > 1e-3f);
    free(lat2);

    *image_out = malloc(3 * 64 * 64 * sizeof(float));
    if (*image_out) memcpy(*image_out, r.image, 3 * 64 * 64 * sizeof(float));
    free(init);
    free(fin);
    free(img);
    lk_sd_result_free(&r);
    lk_prompt_cond_free(&c);
    lk_prompt_cond_free(&u);
}

/* ---- LoRA and textual inversion (txt2img_extras_cases) ---- */

static void run_image(lk_sd_pipeline *p, const golden_run *gr, const char *prompt, float *image) {
    lk_sd_gen_params g;
    params_for(&g, gr);
    g.prompt = prompt;
    lk_sd_result r;
    CHECK_OK(lk_sd_pipeline_generate(p, &g, &r));
    if (r.image) memcpy(image, r.image, 3 * 64 * 64 * sizeof(float));
    else memset(image, 0, 3 * 64 * 64 * sizeof(float));
    lk_sd_result_free(&r);
}

static void test_extras(lk_sd_pipeline *p, const lk_safetensors *xs, const golden_run *gr,
                        const float *base) {
    char path[2300];
    const size_t n = 3 * 64 * 64;
    float *img = malloc(n * sizeof *img), *want = NULL;
    if (!img) return;
    CHECK(strtoull(lk_safetensors_meta(xs, "seed") ? lk_safetensors_meta(xs, "seed") : "0", NULL, 10) == gr->seed);

    /* LoRA at 0.8 */
    CHECK_OK(lk_sd_pipeline_add_lora(p, gpath("lora/kohya_unet_lora.safetensors", path, sizeof path), 0.8f));
    CHECK(lk_sd_pipeline_lora_count(p) == 1);
    run_image(p, gr, gr->prompt, img);
    want = lk_t_load(xs, "image_lora", NULL);
    if (want) {
        close_scaled("image_lora (kohya LoRA x0.8)", img, want, n, 2e-5f, 1e-4f);
        fprintf(stderr, "  LoRA changes the image by %.4f on average (base vs LoRA golden)\n",
                (double)mean_abs_diff(base, want, n));
    }
    free(want);
    CHECK_OK(lk_sd_pipeline_clear_loras(p));
    CHECK(lk_sd_pipeline_lora_count(p) == 0);
    run_image(p, gr, gr->prompt, img);
    close_scaled("LoRA unmerged: base image again", img, base, n, 2e-5f, 1e-4f);

    /* the A1111 embedding (2 vectors): "<cat-toy>" and the bare file name both work */
    char *added = NULL;
    CHECK_OK(lk_sd_pipeline_add_embedding(p, gpath("embeddings/cat-toy.safetensors", path, sizeof path),
                                          NULL, &added));
    CHECK(added && !strcmp(added, "cat-toy, <cat-toy>"));
    free(added);
    const char *eprompt = "a photo of <cat-toy>";
    const char *meta = lk_safetensors_meta(xs, "image_embedding");
    CHECK(meta && strstr(meta, eprompt));
    lk_prompt_cond c;
    CHECK_OK(lk_sd_pipeline_encode(p, eprompt, NULL, 1, true, &c, NULL));
    if (c.ids) {
        int64_t want_ids[7] = {49406, 320, 1125, 539, 49410, 49411, 49407};
        CHECK(memcmp(c.ids, want_ids, sizeof want_ids) == 0); /* <cat-toy> was added second */
    }
    lk_prompt_cond_free(&c);
    run_image(p, gr, eprompt, img);
    want = lk_t_load(xs, "image_embedding", NULL);
    if (want) close_scaled("image_embedding (A1111 cat-toy, 2 vectors)", img, want, n, 2e-5f, 1e-4f);
    float *img2 = malloc(n * sizeof *img2);
    if (img2) {
        run_image(p, gr, "a photo of cat-toy", img2);
        lk_t_close("bare embedding name = <name>", img2, img, n, 0.0f, 0.0f);
        free(img2);
    }
    free(want);
    /* a second load of the same tokens is refused */
    CHECK(lk_sd_pipeline_add_embedding(p, path, NULL, NULL) == LK_ERR_INVALID);
    free(img);
}

/* ---- the fp16 single file ---- */

static void test_single_file(const golden_run *gr, const float *base) {
    char path[2300], tok[2300];
    lk_sd_pipeline_opts o;
    lk_sd_pipeline_opts_default(&o);
    o.tokenizer_dir = gpath("tokenizer", tok, sizeof tok);
    o.store = LK_F16;
    lk_sd_pipeline *p = NULL;
    CHECK_OK(lk_sd_pipeline_load(&p, gpath("single_file_fp16.safetensors", path, sizeof path), &o));
    if (!p) return;
    const size_t n = 3 * 64 * 64;
    float *img = malloc(n * sizeof *img);
    if (img) {
        run_image(p, gr, gr->prompt, img);
        /* fp16 weights: the UNet alone is within 0.02 abs (test_unet); 4 guided steps */
        close_scaled("single_file_fp16 (F16 weights) vs golden image", img, base, n, 5e-3f, 1e-2f);
        fprintf(stderr, "  fp16 single file: mean |diff| %.2e\n", (double)mean_abs_diff(img, base, n));
    }
    free(img);
    /* no tokenizer: refused with a message */
    lk_sd_pipeline *q = NULL;
    o.tokenizer_dir = NULL;
    const char *env = getenv("LK_TOKENIZER");
    if (!env) {
        CHECK(lk_sd_pipeline_load(&q, path, &o) != LK_OK && q == NULL);
        CHECK(strstr(lk_last_error(), "tokenizer") != NULL);
    }
    lk_sd_pipeline_free(p);
}

/* ---- img2img ---- */

static lk_status noise_first_step(void *ud, int done, int total, float t) {
    int *v = ud;
    if (done == 1) v[1] = total;
    v[0]++;
    (void)t;
    return LK_OK;
}

static void test_img2img(lk_sd_pipeline *p, const golden_run *gr, const float *base) {
    const size_t n = 3 * 64 * 64, nl = 4 * 8 * 8;
    /* the init image: the golden picture through 8 bits, as a user would load it */
    lk_image im = {0};
    float *init = malloc(n * sizeof *init);
    CHECK_OK(lk_image_from_chw(&im, base, 3, 64, 64, LK_RANGE_SYMMETRIC));
    if (!init || !im.px) {
        free(init);
        lk_image_free(&im);
        return;
    }
    CHECK_OK(lk_image_to_chw(&im, LK_RANGE_SYMMETRIC, init));
    lk_image_free(&im);

    lk_sd_gen_params g;
    params_for(&g, gr);
    g.init_image = init;
    g.strength = 1.0;
    lk_sd_result r, t;
    CHECK_OK(lk_sd_pipeline_generate(p, &g, &r));
    if (r.image) lk_t_close("img2img strength 1.0 = txt2img (same seed)", r.image, base, n, 0.0f, 0.0f);
    lk_sd_result_free(&r);

    /* strength 0.5 of 4 DDIM steps: 2 model steps, from add_noise(sf * vae sample, randn, t) */
    g.strength = 0.5;
    int calls[2] = {0, 0};
    g.progress = noise_first_step;
    g.progress_ud = calls;
    CHECK_OK(lk_sd_pipeline_generate(p, &g, &r));
    CHECK(calls[0] == 2 && calls[1] == 2);
    if (r.image) {
        /* rebuild the start: generator seeded once; first draw the VAE sample, then the noise */
        lk_sampler *s = NULL;
        CHECK_OK(lk_sampler_new(&s, lk_sd_pipeline_schedule(p), LK_SAMPLER_DDIM, gr->steps, 0.5));
        lk_ctx *ctx = lk_ctx_new();
        lk_set_grad_enabled(ctx, false);
        lk_tensor *x = lk_tensor_from(ctx, LK_F32, LK_DIMS(1, 3, 64, 64), init);
        lk_tensor *mean = NULL, *logvar = NULL;
        CHECK_OK(lk_vae_encode(ctx, lk_sd_pipeline_vae(p), x, &mean, &logvar));
        lk_rng rng;
        lk_rng_seed(&rng, gr->seed);
        lk_tensor *z = lk_contiguous(ctx, lk_vae_sample(ctx, mean, logvar, &rng));
        float want[256], noise[256];
        lk_rng_randn(&rng, noise, nl);
        if (z && s) {
            const float sf = lk_vae_config_of(lk_sd_pipeline_vae(p))->scaling_factor;
            for (size_t i = 0; i < nl; i++) want[i] = sf * ((const float *)z->data)[i];
            CHECK(lk_sampler_begin(s) == 2 && lk_sampler_timesteps(s)[2] == 251.0f);
            CHECK_OK(lk_sampler_add_noise(s, want, want, noise, nl));
            lk_t_close("img2img 0.5 start = add_noise(sf * vae sample, randn, t=251)", r.init_latent,
                       want, nl, 0.0f, 0.0f);
            /* the image is in the start: a darker init image moves it by sqrt(ac[251]) times
             * the difference of the scaled latent means (up to the sample's small std) */
            float *m1 = malloc(nl * sizeof *m1), *m2 = malloc(nl * sizeof *m2), *dark = malloc(n * sizeof *dark);
            lk_sd_result r2;
            if (m1 && m2 && dark) {
                for (size_t i = 0; i < n; i++) dark[i] = 0.5f * init[i] - 0.5f;
                CHECK_OK(lk_sd_pipeline_encode_image(p, init, 64, 64, m1));
                CHECK_OK(lk_sd_pipeline_encode_image(p, dark, 64, 64, m2));
                g.init_image = dark;
                g.progress = NULL;
                CHECK_OK(lk_sd_pipeline_generate(p, &g, &r2));
                g.init_image = init;
                if (r2.init_latent) {
                    const float a = sqrtf(lk_sampler_alphas_cumprod(s)[251]);
                    double dot = 0.0, xx = 0.0, mm = 0.0;
                    for (size_t i = 0; i < nl; i++) {
                        double dx = (double)r.init_latent[i] - (double)r2.init_latent[i];
                        double dm = (double)a * ((double)m1[i] - (double)m2[i]);
                        dot += dx * dm;
                        xx += dx * dx;
                        mm += dm * dm;
                    }
                    const double cosine = dot / sqrt(xx * mm + 1e-30), ratio = sqrt(xx / (mm + 1e-30));
                    fprintf(stderr, "  img2img: change of the start vs sqrt(ac) * change of sf*mean: "
                            "cosine %.3f, norm ratio %.3f\n", cosine, ratio);
                    CHECK(cosine > 0.8 && ratio > 0.5 && ratio < 2.0);
                }
                lk_sd_result_free(&r2);
            }
            free(m1);
            free(m2);
            free(dark);
        }
        lk_ctx_free(ctx);
        lk_sampler_free(s);
        CHECK(mean_abs_diff(r.image, base, n) > 1e-3f); /* not the txt2img image */
        /* deterministic: the same call again gives the same image */
        g.progress = NULL;
        CHECK_OK(lk_sd_pipeline_generate(p, &g, &t));
        if (t.image) lk_t_close("img2img repeatable", t.image, r.image, n, 0.0f, 0.0f);
        lk_sd_result_free(&t);
    }
    lk_sd_result_free(&r);
    /* out-of-range strength */
    g.strength = 0.0;
    CHECK(lk_sd_pipeline_generate(p, &g, &r) == LK_ERR_INVALID && !r.image);
    CHECK(strstr(lk_last_error(), "strength") != NULL);
    g.strength = 1.5;
    CHECK(lk_sd_pipeline_generate(p, &g, &r) == LK_ERR_INVALID);
    free(init);
}

/* ---- A1111 emphasis and chunks ---- */

static double chunk_mean(const lk_prompt_cond *c, int k) {
    double s = 0.0;
    const size_t m = (size_t)77 * (size_t)c->dim;
    for (size_t i = 0; i < m; i++) s += (double)c->hidden[(size_t)k * m + i];
    return s / (double)m;
}

static void test_emphasis(lk_sd_pipeline *p) {
    lk_prompt_cond plain, emph, none;
    CHECK_OK(lk_sd_pipeline_encode(p, "a photo of a cat", NULL, 1, true, &plain, NULL));
    CHECK_OK(lk_sd_pipeline_encode(p, "a (photo:1.5) of a [cat]", NULL, 1, true, &emph, NULL));
    CHECK_OK(lk_sd_pipeline_encode(p, "a (photo:1.5) of a [cat]", NULL, 1, false, &none, NULL));
    if (plain.hidden && emph.hidden && none.hidden) {
        CHECK(memcmp(plain.ids, emph.ids, 77 * sizeof(int64_t)) == 0);
        CHECK(emph.weights[2] == 1.5f && fabsf(emph.weights[5] - 1.0f / 1.1f) < 1e-6f && emph.weights[1] == 1.0f);
        /* hidden = plain * w * (mean(plain) / mean(plain * w)): the mean is restored */
        const int d = plain.dim;
        double before = chunk_mean(&plain, 0), wsum = 0.0;
        for (int t = 0; t < 77; t++)
            for (int i = 0; i < d; i++) wsum += (double)plain.hidden[t * d + i] * (double)emph.weights[t];
        const double ratio = before / (wsum / (77.0 * d));
        float worst = 0.0f;
        for (int t = 0; t < 77; t++)
            for (int i = 0; i < d; i++) {
                float want = (float)((double)plain.hidden[t * d + i] * (double)emph.weights[t] * ratio);
                worst = fmaxf(worst, fabsf(emph.hidden[t * d + i] - want));
            }
        fprintf(stderr, "  emphasis: max |z - z0*w*mean0/mean1| = %.2e, mean %.6f vs %.6f\n",
                (double)worst, before, chunk_mean(&emph, 0));
        CHECK(worst < 1e-5f);
        CHECK(fabs(chunk_mean(&emph, 0) - before) < 1e-6 * fmax(1.0, fabs(before)));
        /* emphasis off: brackets are text (more tokens) */
        CHECK(memcmp(none.ids, plain.ids, 77 * sizeof(int64_t)) != 0);
    }
    lk_prompt_cond_free(&plain);
    lk_prompt_cond_free(&emph);
    lk_prompt_cond_free(&none);

    /* a prompt of 80 words takes two chunks; the empty negative is padded to two with the
     * empty-prompt chunk; BREAK forces a new chunk */
    char longp[1024] = "";
    for (int i = 0; i < 80; i++) strcat(longp, i % 2 ? "cat " : "dog ");
    lk_prompt_cond c, u, e;
    CHECK_OK(lk_sd_pipeline_encode(p, longp, "", 1, true, &c, &u));
    CHECK_OK(lk_sd_pipeline_encode(p, "", NULL, 1, true, &e, NULL));
    CHECK(c.n_chunks == 2 && u.n_chunks == 2 && c.n_tokens == 154 && e.n_chunks == 1);
    if (c.hidden && u.hidden && e.hidden) {
        const size_t m = (size_t)77 * (size_t)e.dim;
        lk_t_close("negative padded with the empty chunk", u.hidden + m, e.hidden, m, 0.0f, 0.0f);
        lk_t_close("negative chunk 0 = empty prompt", u.hidden, e.hidden, m, 0.0f, 0.0f);
        CHECK(c.ids[77] == 49406 && c.ids[77 + 1] != 49407);
        /* and the other way round: a long negative pads the prompt */
        lk_prompt_cond c2, u2;
        CHECK_OK(lk_sd_pipeline_encode(p, "cat", longp, 1, true, &c2, &u2));
        CHECK(c2.n_chunks == 2 && u2.n_chunks == 2);
        if (c2.hidden) lk_t_close("prompt padded with the empty chunk", c2.hidden + m, e.hidden, m, 0.0f, 0.0f);
        lk_prompt_cond_free(&c2);
        lk_prompt_cond_free(&u2);
        /* sampling with 154-token conditioning runs (batched and separate agree) */
        lk_sd_gen_params g;
        lk_sd_gen_params_default(&g);
        g.steps = 2;
        g.sampler = LK_SAMPLER_EULER_A;
        g.width = g.height = 64;
        g.seed = 7;
        float a[256], b[256];
        CHECK_OK(lk_sd_pipeline_sample(p, &g, &c, &u, a, NULL));
        g.cfg_mode = LK_CFG_SEPARATE;
        CHECK_OK(lk_sd_pipeline_sample(p, &g, &c, &u, b, NULL));
        lk_t_close("two-chunk conditioning: batched = separate (Euler a)", a, b, 256, 1e-6f, 1e-5f);
    }
    lk_prompt_cond_free(&c);
    lk_prompt_cond_free(&u);
    lk_prompt_cond_free(&e);
    CHECK_OK(lk_sd_pipeline_encode(p, "a cat BREAK a dog", NULL, 1, true, &c, NULL));
    CHECK(c.n_chunks == 2);
    lk_prompt_cond_free(&c);
    /* clip skip 2 differs from 1; 3 exceeds the 2-layer encoder */
    CHECK_OK(lk_sd_pipeline_encode(p, "a cat", NULL, 2, true, &c, NULL));
    CHECK_OK(lk_sd_pipeline_encode(p, "a cat", NULL, 1, true, &e, NULL));
    if (c.hidden && e.hidden) CHECK(max_abs_diff(c.hidden, e.hidden, (size_t)77 * (size_t)c.dim) > 1e-3f);
    lk_prompt_cond_free(&c);
    lk_prompt_cond_free(&e);
    CHECK(lk_sd_pipeline_encode(p, "a cat", NULL, 3, true, &c, NULL) == LK_ERR_INVALID);
    CHECK(strstr(lk_last_error(), "clip skip 3") != NULL);
    /* too long */
    char *huge = malloc(40 * 76 * 4 + 1);
    if (huge) {
        huge[0] = '\0';
        for (int i = 0; i < 40 * 76; i++) strcat(huge + (i ? 4 * (i - 1) : 0), "cat ");
        CHECK(lk_sd_pipeline_encode(p, huge, NULL, 1, true, &c, NULL) == LK_ERR_INVALID);
        CHECK(strstr(lk_last_error(), "too long") != NULL);
        free(huge);
    }
}

/* ---- the A1111 parameters chunk, written and read back ---- */

static void test_infotext(const float *base) {
    const char *lnames[1] = {"kohya_unet_lora"}, *lhash[1] = {"0123456789ab"};
    const double lw[1] = {0.8};
    const char *tnames[1] = {"cat-toy"}, *thash[1] = {"ba9876543210"};
    lk_sd_infotext in = {.prompt = "a photo of a cat, (best:1.2)",
                         .negative_prompt = "blurry",
                         .steps = 4,
                         .sampler = LK_SAMPLER_DPMPP_2M_KARRAS,
                         .cfg_scale = 7.5,
                         .seed = 31337,
                         .width = 64,
                         .height = 64,
                         .model_hash = "abcdef1234",
                         .model_name = "golden",
                         .strength = 0.75,
                         .clip_skip = 2,
                         .n_loras = 1,
                         .lora_names = lnames,
                         .lora_weights = lw,
                         .lora_hashes = lhash,
                         .n_tis = 1,
                         .ti_names = tnames,
                         .ti_hashes = thash};
    char *text = NULL;
    CHECK_OK(lk_sd_infotext_format(&in, &text));
    if (!text) return;
    const char *want =
        "a photo of a cat, (best:1.2) <lora:kohya_unet_lora:0.8>\nNegative prompt: blurry\n"
        "Steps: 4, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7.5, Seed: 31337, "
        "Size: 64x64, Model hash: abcdef1234, Model: golden, Denoising strength: 0.75, Clip skip: 2, "
        "Lora hashes: \"kohya_unet_lora: 0123456789ab\", TI hashes: \"cat-toy: ba9876543210\"";
    CHECK(!strcmp(text, want));
    if (strcmp(text, want)) fprintf(stderr, "  got:\n%s\n  want:\n%s\n", text, want);

    /* into a PNG and back */
    char dir[] = "/tmp/lk_txt2img_XXXXXX", path[128];
    CHECK(mkdtemp(dir) != NULL);
    snprintf(path, sizeof path, "%s/00000-31337.png", dir);
    lk_image im = {0};
    CHECK_OK(lk_image_from_chw(&im, base, 3, 64, 64, LK_RANGE_SYMMETRIC));
    lk_image_text kv = {.key = "parameters", .value = text};
    lk_png_write_opts wo = {.level = LK_PNG_LEVEL_DEFAULT, .text = &kv, .n_text = 1};
    CHECK_OK(lk_image_save_png(&im, path, &wo));
    lk_image back = {0};
    lk_image_texts texts = {0};
    lk_image_load_opts lo = {.text = &texts};
    CHECK_OK(lk_image_load(&back, path, &lo));
    const char *got = lk_image_texts_get(&texts, "parameters");
    CHECK(got && !strcmp(got, text));
    CHECK(back.w == 64 && back.h == 64 && im.px && back.px && !memcmp(back.px, im.px, 64 * 64 * 3));
    char v[256];
    if (got) {
        CHECK(lk_sd_infotext_get(got, "Prompt", v, sizeof v) &&
              !strcmp(v, "a photo of a cat, (best:1.2) <lora:kohya_unet_lora:0.8>"));
        CHECK(lk_sd_infotext_get(got, "Negative prompt", v, sizeof v) && !strcmp(v, "blurry"));
        CHECK(lk_sd_infotext_get(got, "Steps", v, sizeof v) && !strcmp(v, "4"));
        CHECK(lk_sd_infotext_get(got, "Sampler", v, sizeof v) && !strcmp(v, "DPM++ 2M"));
        CHECK(lk_sd_infotext_get(got, "Schedule type", v, sizeof v) && !strcmp(v, "Karras"));
        CHECK(lk_sd_infotext_get(got, "CFG scale", v, sizeof v) && !strcmp(v, "7.5"));
        CHECK(lk_sd_infotext_get(got, "Seed", v, sizeof v) && !strcmp(v, "31337"));
        CHECK(lk_sd_infotext_get(got, "Size", v, sizeof v) && !strcmp(v, "64x64"));
        CHECK(lk_sd_infotext_get(got, "Lora hashes", v, sizeof v) && !strcmp(v, "kohya_unet_lora: 0123456789ab"));
        CHECK(lk_sd_infotext_get(got, "TI hashes", v, sizeof v) && !strcmp(v, "cat-toy: ba9876543210"));
        CHECK(!lk_sd_infotext_get(got, "Eta", v, sizeof v));
    }
    lk_image_texts_free(&texts);
    lk_image_free(&back);
    lk_image_free(&im);
    unlink(path);
    rmdir(dir);
    free(text);

    /* floats as Python's repr, quoting of commas/colons/newlines, no negative line when empty */
    in = (lk_sd_infotext){.prompt = "x", .steps = 20, .sampler = LK_SAMPLER_EULER_A, .cfg_scale = 7.0,
                          .seed = 1, .width = 512, .height = 768, .model_name = "a, b: c\nd"};
    CHECK_OK(lk_sd_infotext_format(&in, &text));
    const char *want2 = "x\nSteps: 20, Sampler: Euler a, CFG scale: 7.0, Seed: 1, Size: 512x768, "
                        "Model: \"a, b: c\\nd\"";
    CHECK(text && !strcmp(text, want2));
    if (text && strcmp(text, want2)) fprintf(stderr, "  got: %s\n", text);
    CHECK(text && lk_sd_infotext_get(text, "Model", v, sizeof v) && !strcmp(v, "a, b: c\nd"));
    CHECK(text && lk_sd_infotext_get(text, "Prompt", v, sizeof v) && !strcmp(v, "x"));
    CHECK(text && !lk_sd_infotext_get(text, "Negative prompt", v, sizeof v));
    free(text);
    in.cfg_scale = 0.1 + 0.2;
    in.strength = 1e-5;
    CHECK_OK(lk_sd_infotext_format(&in, &text));
    CHECK(text && strstr(text, "CFG scale: 0.30000000000000004,") && strstr(text, "Denoising strength: 1e-05"));
    free(text);
}

/* ---- refusals ---- */

static void test_errors(lk_sd_pipeline *p, const golden_run *gr) {
    lk_sd_gen_params g;
    params_for(&g, gr);
    lk_sd_result r;
    g.width = 60;
    CHECK(lk_sd_pipeline_generate(p, &g, &r) == LK_ERR_INVALID);
    CHECK(strstr(lk_last_error(), "width 60 is not divisible by 8") != NULL);
    g.width = 72; /* divisible by 8, not by the model's 64 */
    CHECK(lk_sd_pipeline_generate(p, &g, &r) == LK_ERR_INVALID);
    CHECK(strstr(lk_last_error(), "multiple of 64") != NULL);
    fprintf(stderr, "  %s\n", lk_last_error());
    g.width = 64;
    g.steps = 0;
    CHECK(lk_sd_pipeline_generate(p, &g, &r) == LK_ERR_INVALID);
    g.steps = 4;
    g.eta = 0.5f;
    g.sampler = LK_SAMPLER_EULER;
    CHECK(lk_sd_pipeline_generate(p, &g, &r) == LK_ERR_INVALID);
    g.eta = 0.0f;
    /* Ctrl-C: nothing comes back */
    volatile sig_atomic_t stop = 1;
    g.cancel = &stop;
    CHECK(lk_sd_pipeline_generate(p, &g, &r) == LK_ERR_INTERRUPTED && r.image == NULL);
    g.cancel = NULL;
    /* a LoRA for another architecture (conv_in of 7 input channels) */
    char dir[] = "/tmp/lk_txt2img_XXXXXX", path[128];
    CHECK(mkdtemp(dir) != NULL);
    snprintf(path, sizeof path, "%s/other.safetensors", dir);
    lk_st_writer *w = lk_st_writer_new();
    float zeros[4 * 7 * 9] = {0}, alpha = 4.0f;
    CHECK_OK(lk_st_writer_add(w, "lora_unet_conv_in.lora_down.weight", LK_F32, LK_DIMS(4, 7, 3, 3), zeros));
    CHECK_OK(lk_st_writer_add(w, "lora_unet_conv_in.lora_up.weight", LK_F32, LK_DIMS(32, 4, 1, 1), zeros));
    CHECK_OK(lk_st_writer_add(w, "lora_unet_conv_in.alpha", LK_F32, 0, NULL, &alpha));
    CHECK_OK(lk_st_writer_save(w, path));
    lk_st_writer_free(w);
    CHECK(lk_sd_pipeline_add_lora(p, path, 1.0f) == LK_ERR_INVALID && lk_sd_pipeline_lora_count(p) == 0);
    fprintf(stderr, "  %s\n", lk_last_error());
    CHECK(lk_sd_pipeline_add_lora(p, "/nonexistent/x.safetensors", 1.0f) == LK_ERR_IO);
    /* an embedding of another width */
    snprintf(path, sizeof path, "%s/wide.safetensors", dir);
    w = lk_st_writer_new();
    CHECK_OK(lk_st_writer_add(w, "emb_params", LK_F32, LK_DIMS(1, 16), zeros));
    CHECK_OK(lk_st_writer_save(w, path));
    lk_st_writer_free(w);
    CHECK(lk_sd_pipeline_add_embedding(p, path, NULL, NULL) == LK_ERR_INVALID);
    CHECK(strstr(lk_last_error(), "16-dim") != NULL);
    fprintf(stderr, "  %s\n", lk_last_error());
    unlink(path);
    snprintf(path, sizeof path, "%s/other.safetensors", dir);
    unlink(path);
    rmdir(dir);
    lk_sd_pipeline *q = NULL;
    CHECK(lk_sd_pipeline_load(&q, "/nonexistent/model", NULL) != LK_OK && q == NULL);
}

int main(void) {
    snprintf(golden, sizeof golden, "%s", lk_t_golden_dir());
    lk_set_num_threads(2);
    lk_safetensors *cs = lk_t_golden("txt2img_cases.safetensors");
    lk_safetensors *xs = lk_t_golden("txt2img_extras_cases.safetensors");
    REQUIRE(cs && xs);
    golden_run gr = {.prompt = lk_safetensors_meta(cs, "prompt"),
                     .steps = atoi(lk_safetensors_meta(cs, "steps") ? lk_safetensors_meta(cs, "steps") : "0"),
                     .seed = strtoull(lk_safetensors_meta(cs, "seed") ? lk_safetensors_meta(cs, "seed") : "0",
                                      NULL, 10),
                     .cfg = strtof(lk_safetensors_meta(cs, "guidance_scale") ? lk_safetensors_meta(cs, "guidance_scale") : "0", NULL)};
    REQUIRE(gr.prompt && gr.steps > 0 && gr.cfg == 7.5f);

    lk_sd_pipeline *p = NULL;
    double t0 = lk_t_now();
    CHECK_OK(lk_sd_pipeline_load(&p, golden, NULL));
    REQUIRE(p);
    fprintf(stderr, "  load golden folder: %.3f s\n", lk_t_now() - t0);
    int mult = 0, dw = 0, dh = 0;
    lk_sd_pipeline_geometry(p, &mult, &dw, &dh);
    CHECK(mult == 64 && dw == 256 && dh == 256); /* sample_size 32 * VAE factor 8 */

    float *base = NULL;
    test_txt2img(p, cs, &gr, &base);
    REQUIRE(base);
    test_img2img(p, &gr, base);
    test_emphasis(p);
    test_infotext(base);
    test_errors(p, &gr);
    test_extras(p, xs, &gr, base); /* last: it adds embeddings */
    test_single_file(&gr, base);

    free(base);
    lk_sd_pipeline_free(p);
    lk_safetensors_close(cs);
    lk_safetensors_close(xs);
    return lk_t_done();
}
