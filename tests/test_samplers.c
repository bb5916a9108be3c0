/* test_samplers.c: the samplers against diffusers 0.25 -- every golden scheduler case (DDIM,
 * Euler, Euler Karras, Heun, DPM++ 2M, DPM++ 2M Karras, LMS) step by step, DDPM add_noise and
 * alphas_cumprod; then the cases of tests/ref/samplers.py (v-prediction on the SD-2 schedule,
 * seeded Euler ancestral and DDIM eta, img2img, linear/cosine betas, trailing/linspace spacing,
 * DDPM training targets); then config-file errors, sampler names and the API contracts. */
#define _POSIX_C_SOURCE 200809L
#include "harness.h"
#include "likeness/sampler.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* The fixtures' fake model: eps = 0.5 tanh(x_in) + 0.001 t (t a Python number: 0.001 * t in
 * double, then f32). */
typedef struct fake_model {
    int calls;
    int fail_at; /* > 0: return an error on that call */
    float last_t;
} fake_model;

static lk_status fake_denoise(void *ud, const float *x_in, float t, float *out) {
    fake_model *fm = ud;
    fm->calls++;
    fm->last_t = t;
    if (fm->fail_at && fm->calls == fm->fail_at) return lk_fail(LK_ERR_IO, "model exploded");
    const float c = (float)(0.001 * (double)t);
    for (size_t i = 0; i < 256; i++) out[i] = 0.5f * tanhf(x_in[i]) + c;
    return LK_OK;
}

#define NLAT 256 /* (1, 4, 8, 8) */

/* Compare a trajectory (rows of NLAT) -- one check: |got - want| <= 1e-6 max|want_row| + 1e-5 |want|
 * (float32 rounding of the x - sigma * eps cancellation scales with the row's magnitude). */
static double g_worst_rel = 0, g_worst_abs = 0;
static void check_traj(const char *what, const float *got, const float *want, int rows) {
    double max_abs = 0, max_rel = 0;
    int bad = 0, bad_row = -1;
    for (int r = 0; r < rows; r++) {
        double scale = 0;
        for (int i = 0; i < NLAT; i++) scale = fmax(scale, fabs(want[r * NLAT + i]));
        for (int i = 0; i < NLAT; i++) {
            const double g = got[r * NLAT + i], w = want[r * NLAT + i];
            double d = fabs(g - w);
            if (d != d) d = INFINITY;
            max_abs = fmax(max_abs, d);
            if (fabs(w) > 1e-3) max_rel = fmax(max_rel, d / fabs(w));
            if (!(d <= 1e-6 * scale + 1e-5 * fabs(w))) {
                if (!bad) bad_row = r;
                bad++;
            }
        }
    }
    lk_t_checks++;
    g_worst_rel = fmax(g_worst_rel, max_rel);
    g_worst_abs = fmax(g_worst_abs, max_abs);
    if (bad) lk_t_failures++;
    fprintf(bad ? stderr : stdout, "%s %s: %d steps, max_abs=%.3g max_rel(|want|>1e-3)=%.3g%s", bad ? "FAIL" : "ok  ",
            what, rows - 1, max_abs, max_rel, bad ? "" : "\n");
    if (bad) fprintf(stderr, " bad=%d first in row %d\n", bad, bad_row);
}

/* Run a whole case: start latent already in x (NLAT floats), traj receives rows. */
static int run_traj(lk_sampler *s, float *x, float *traj, lk_rng *rng) {
    fake_model fm = {0};
    memcpy(traj, x, sizeof(float) * NLAT);
    int rows = 1;
    while (lk_sampler_steps_done(s) < lk_sampler_total_steps(s)) {
        lk_status st = lk_sampler_step(s, x, NLAT, fake_denoise, &fm, rng);
        if (st != LK_OK) {
            fprintf(stderr, "FAIL step: %s\n", lk_last_error());
            lk_t_failures++;
            break;
        }
        memcpy(traj + (size_t)rows * NLAT, x, sizeof(float) * NLAT);
        rows++;
    }
    return rows;
}

static void golden_dir_path(char *buf, size_t cap, const char *rel) {
    snprintf(buf, cap, "%s/%s", lk_t_golden_dir(), rel);
}

/* ---- golden: scheduler_cases.safetensors (diffusers 0.25 itself) ---- */
static void test_golden(void) {
    lk_safetensors *st = lk_t_golden("scheduler_cases.safetensors");
    if (!st) return;
    char path[4096];
    golden_dir_path(path, sizeof path, "scheduler/scheduler_config.json");
    lk_schedule_config cfg;
    CHECK_OK(lk_schedule_config_load(&cfg, path));
    CHECK(cfg.num_train_timesteps == 1000 && cfg.beta_schedule == LK_BETA_SCALED_LINEAR &&
          cfg.steps_offset == 1 && !cfg.set_alpha_to_one && cfg.prediction_type == LK_PREDICT_EPSILON &&
          cfg.timestep_spacing == LK_SPACING_DEFAULT);

    float *ac_want = lk_t_load(st, "alphas_cumprod", NULL);
    float ac[1000];
    CHECK_OK(lk_schedule_alphas_cumprod(&cfg, ac, 1000));
    lk_t_close("golden alphas_cumprod (bit-exact)", ac, ac_want, 1000, 0.0f, 0.0f);

    float *x0 = lk_t_load(st, "x0", NULL);
    static const char *kinds[] = {"ddim", "euler", "euler_karras", "heun", "dpmpp_2m", "dpmpp_2m_karras", "lms"};
    float *traj = malloc(sizeof(float) * NLAT * 32);
    for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++) {
        char name[96];
        lk_sampler_kind kind;
        CHECK_OK(lk_sampler_parse(kinds[k], &kind));
        lk_sampler *s = NULL;
        CHECK_OK(lk_sampler_new(&s, &cfg, kind, 10, 1.0));
        if (!s) continue;
        int64_t nts = 0, nsig = 0, nx = 0;
        snprintf(name, sizeof name, "%s.timesteps", kinds[k]);
        float *ts = lk_t_load(st, name, &nts);
        CHECK(lk_sampler_num_timesteps(s) == nts);
        snprintf(name, sizeof name, "golden %s timesteps", kinds[k]);
        if (ts && lk_sampler_num_timesteps(s) == nts)
            lk_t_close(name, lk_sampler_timesteps(s), ts, (size_t)nts, 0.0f, 1e-6f);
        if (kind != LK_SAMPLER_DDIM) {
            snprintf(name, sizeof name, "%s.sigmas", kinds[k]);
            float *sg = lk_t_load(st, name, &nsig);
            CHECK(lk_sampler_num_sigmas(s) == nsig);
            snprintf(name, sizeof name, "golden %s sigmas", kinds[k]);
            if (sg && lk_sampler_num_sigmas(s) == nsig)
                lk_t_close(name, lk_sampler_sigmas(s), sg, (size_t)nsig, 0.0f, 1e-6f);
            free(sg);
        } else {
            CHECK(lk_sampler_num_sigmas(s) == 0 && lk_sampler_sigmas(s) == NULL);
        }
        snprintf(name, sizeof name, "%s.x", kinds[k]);
        float *xw = lk_t_load(st, name, &nx);
        float x[NLAT];
        for (int i = 0; i < NLAT; i++) x[i] = x0[i] * lk_sampler_init_noise_sigma(s);
        int rows = run_traj(s, x, traj, NULL);
        CHECK(rows * NLAT == nx);
        snprintf(name, sizeof name, "golden %s latents", kinds[k]);
        if (xw && rows * NLAT == nx) check_traj(name, traj, xw, rows);
        free(ts);
        free(xw);
        lk_sampler_free(s);
    }
    free(traj);

    /* DDPM add_noise */
    int64_t nt = 0;
    float *noise = lk_t_load(st, "ddpm_add_noise.noise", NULL);
    float *noisy = lk_t_load(st, "ddpm_add_noise.noisy", NULL);
    float *tv = lk_t_load(st, "ddpm_add_noise.t", &nt);
    if (noise && noisy && tv) {
        float *got = malloc(sizeof(float) * NLAT * (size_t)nt);
        for (int64_t i = 0; i < nt; i++)
            CHECK_OK(lk_ddpm_add_noise(got + i * NLAT, x0, noise, NLAT, ac, 1000, (int64_t)tv[i]));
        lk_t_close("golden ddpm add_noise t=0,1,250,999", got, noisy, NLAT * (size_t)nt, 1e-7f, 1e-6f);
        free(got);
    }
    free(noise);
    free(noisy);
    free(tv);
    free(ac_want);
    free(x0);
    lk_safetensors_close(st);
}

/* ---- tests/ref/samplers.py ---- */
static const cJSON *jget(const cJSON *o, const char *k) { return cJSON_GetObjectItemCaseSensitive(o, k); }

/* One update at a time from the reference's own latent and model output of every call: the
 * sampler arithmetic alone, without the drift a different tanh rounding adds over a run. Checks
 * scale_model_input against the reference's x_in and each update against its next latent, to a
 * few float32 ulps of the step's magnitude. */
static void check_teacher_forced(const lk_safetensors *st, const char *name, lk_sampler *s, const float *xw,
                                 double seed) {
    char key[160], what[200];
    int64_t n_in = 0, n_out = 0;
    snprintf(key, sizeof key, "%s.x_in", name);
    float *xin_w = lk_t_load(st, key, &n_in);
    snprintf(key, sizeof key, "%s.model_out", name);
    float *mo = lk_t_load(st, key, &n_out);
    const int calls = lk_sampler_total_steps(s);
    if (!xin_w || !mo || n_in != (int64_t)calls * NLAT || n_out != n_in) {
        CHECK(!"reference trace missing or of the wrong size");
        free(xin_w);
        free(mo);
        return;
    }
    lk_sampler_reset(s);
    lk_rng rng;
    lk_rng_seed(&rng, (uint64_t)(seed >= 0 ? seed : 0));
    double max_in = 0, max_abs = 0, max_rel = 0;
    long differ = 0, bad = 0;
    for (int c = 0; c < calls; c++) {
        float x[NLAT], xin[NLAT];
        memcpy(x, xw + (size_t)c * NLAT, sizeof x);
        CHECK_OK(lk_sampler_scale_input(s, xin, x, NLAT));
        for (int i = 0; i < NLAT; i++) max_in = fmax(max_in, fabs((double)xin[i] - (double)xin_w[c * NLAT + i]));
        CHECK_OK(lk_sampler_update(s, x, mo + (size_t)c * NLAT, NLAT, seed >= 0 ? &rng : NULL));
        const float *w = xw + (size_t)(c + 1) * NLAT;
        double scale = 0;
        for (int i = 0; i < NLAT; i++) scale = fmax(scale, fabs(w[i]));
        for (int i = 0; i < NLAT; i++) {
            const double d = fabs((double)x[i] - (double)w[i]);
            differ += d != 0;
            max_abs = fmax(max_abs, d);
            if (fabs(w[i]) > 1e-3) max_rel = fmax(max_rel, d / fabs(w[i]));
            if (!(d <= 4 * 1.2e-7 * (fabs(w[i]) + 1e-2 * scale))) bad++;
        }
    }
    lk_t_checks++;
    if (bad || max_in != 0) lk_t_failures++;
    snprintf(what, sizeof what, "ref %s one update at a time", name);
    fprintf(bad || max_in ? stderr : stdout,
            "%s %s: %d updates, scale_model_input max_abs=%.3g, next latent max_abs=%.3g max_rel=%.3g, %ld of %d "
            "values not bit-identical\n",
            bad || max_in ? "FAIL" : "ok  ", what, calls, max_in, max_abs, max_rel, differ, calls * NLAT);
    free(xin_w);
    free(mo);
}

static void test_ref_case(const lk_safetensors *st, const char *name, const float *x0, const float *noise) {
    char key[160], what[200];
    snprintf(key, sizeof key, "case.%s", name);
    const char *meta = lk_safetensors_meta(st, key);
    if (!meta) {
        fprintf(stderr, "FAIL case %s: no metadata\n", name);
        lk_t_failures++;
        return;
    }
    cJSON *j = cJSON_Parse(meta);
    if (!j) {
        fprintf(stderr, "FAIL case %s: bad metadata\n", name);
        lk_t_failures++;
        return;
    }
    const cJSON *jk = jget(j, "kind"), *jc = jget(j, "config"), *jsteps = jget(j, "steps");
    const double strength = jget(j, "strength")->valuedouble, eta = jget(j, "eta")->valuedouble;
    const double seed = jget(j, "seed")->valuedouble, ins = jget(j, "init_noise_sigma")->valuedouble;
    char *cfg_text = cJSON_PrintUnformatted(jc);
    lk_schedule_config cfg;
    lk_sampler_kind kind;
    lk_sampler *s = NULL;
    float *traj = NULL, *ts = NULL, *sg = NULL, *xw = NULL, *ra = NULL;
    snprintf(what, sizeof what, "ref case %s config", name);
    CHECK_OK(lk_schedule_config_parse(&cfg, cfg_text, strlen(cfg_text), what));
    CHECK_OK(lk_sampler_parse(jk->valuestring, &kind));
    CHECK_OK(lk_sampler_new(&s, &cfg, kind, jsteps->valueint, strength));
    if (!s) goto done;
    if (eta > 0) CHECK_OK(lk_sampler_set_eta(s, (float)eta));
    lk_rng rng;
    lk_rng_seed(&rng, (uint64_t)(seed >= 0 ? seed : 0));

    int64_t nts = 0, nsig = 0, nx = 0;
    snprintf(key, sizeof key, "%s.timesteps", name);
    ts = lk_t_load(st, key, &nts);
    CHECK(lk_sampler_num_timesteps(s) == nts);
    snprintf(what, sizeof what, "ref %s timesteps", name);
    if (ts && lk_sampler_num_timesteps(s) == nts) lk_t_close(what, lk_sampler_timesteps(s), ts, (size_t)nts, 0, 1e-6f);
    snprintf(key, sizeof key, "%s.sigmas", name);
    if (lk_safetensors_find(st, key)) {
        sg = lk_t_load(st, key, &nsig);
        CHECK(lk_sampler_num_sigmas(s) == nsig);
        snprintf(what, sizeof what, "ref %s sigmas", name);
        if (sg && lk_sampler_num_sigmas(s) == nsig) lk_t_close(what, lk_sampler_sigmas(s), sg, (size_t)nsig, 0, 1e-6f);
    }
    CHECK(fabs((double)lk_sampler_init_noise_sigma(s) - ins) <= 1e-6 * ins);

    float x[NLAT];
    if (strength < 1.0) CHECK_OK(lk_sampler_add_noise(s, x, x0, noise, NLAT));
    else
        for (int i = 0; i < NLAT; i++) x[i] = x0[i] * lk_sampler_init_noise_sigma(s);
    snprintf(key, sizeof key, "%s.x", name);
    xw = lk_t_load(st, key, &nx);
    traj = malloc(sizeof(float) * (size_t)(lk_sampler_total_steps(s) + 1) * NLAT);
    int rows = run_traj(s, x, traj, seed >= 0 ? &rng : NULL);
    CHECK(rows * NLAT == nx);
    snprintf(what, sizeof what, "ref %s latents (%s, %s%s)", name, jk->valuestring,
             cfg.prediction_type == LK_PREDICT_V ? "v" : "eps", strength < 1 ? ", img2img" : "");
    if (xw && rows * NLAT == nx) check_traj(what, traj, xw, rows);
    snprintf(key, sizeof key, "%s.rng_after", name);
    if (seed >= 0) { /* the generator is where diffusers left it */
        ra = lk_t_load(st, key, NULL);
        float got[8];
        lk_rng_randn(&rng, got, 8);
        snprintf(what, sizeof what, "ref %s rng stream after the run", name);
        if (ra) lk_t_close(what, got, ra, 8, 0, 0);
    }
    if (xw && rows * NLAT == nx) check_teacher_forced(st, name, s, xw, seed);
done:
    free(ts);
    free(sg);
    free(xw);
    free(ra);
    free(traj);
    lk_sampler_free(s);
    cJSON_free(cfg_text);
    cJSON_Delete(j);
}

static void test_ref_ddpm(const lk_safetensors *st) {
    const char *meta = lk_safetensors_meta(st, "ddpm");
    cJSON *j = meta ? cJSON_Parse(meta) : NULL;
    CHECK(j != NULL);
    if (!j) return;
    char *cfg_text = cJSON_PrintUnformatted(jget(j, "config"));
    const float gamma = (float)jget(j, "snr_gamma")->valuedouble;
    lk_schedule_config cfg;
    CHECK_OK(lk_schedule_config_parse(&cfg, cfg_text, strlen(cfg_text), "ddpm config"));
    float ac[1000];
    CHECK_OK(lk_schedule_alphas_cumprod(&cfg, ac, 1000));
    int64_t nt = 0, n = 0;
    float *x0 = lk_t_load(st, "ddpm.x0", &n), *noise = lk_t_load(st, "ddpm.noise", NULL);
    float *tv = lk_t_load(st, "ddpm.t", &nt);
    float *snr_w = lk_t_load(st, "ddpm.snr", NULL), *we = lk_t_load(st, "ddpm.minsnr_eps", NULL);
    float *wv = lk_t_load(st, "ddpm.minsnr_v", NULL);
    if (x0 && noise && tv && snr_w && we && wv) {
        float *got = malloc(sizeof(float) * (size_t)n), *gv = malloc(sizeof(float) * (size_t)n);
        float snr[16], w_e[16], w_v[16];
        for (int64_t i = 0; i < nt && i < 16; i++) {
            char key[64], what[96];
            const int64_t t = (int64_t)tv[i];
            CHECK_OK(lk_ddpm_add_noise(got, x0, noise, (size_t)n, ac, 1000, t));
            CHECK_OK(lk_ddpm_velocity(gv, x0, noise, (size_t)n, ac, 1000, t));
            snprintf(key, sizeof key, "ddpm.noisy.%d", (int)i);
            float *want = lk_t_load(st, key, NULL);
            snprintf(what, sizeof what, "ref ddpm add_noise t=%lld", (long long)t);
            lk_t_close(what, got, want, (size_t)n, 0, 0);
            free(want);
            snprintf(key, sizeof key, "ddpm.velocity.%d", (int)i);
            want = lk_t_load(st, key, NULL);
            snprintf(what, sizeof what, "ref ddpm velocity t=%lld", (long long)t);
            lk_t_close(what, gv, want, (size_t)n, 0, 0);
            free(want);
            snr[i] = lk_ddpm_snr(ac, 1000, t);
            w_e[i] = lk_min_snr_weight(snr[i], gamma, LK_PREDICT_EPSILON);
            w_v[i] = lk_min_snr_weight(snr[i], gamma, LK_PREDICT_V);
        }
        lk_t_close("ref ddpm snr", snr, snr_w, (size_t)nt, 0, 0);
        lk_t_close("ref min-snr weights (epsilon)", w_e, we, (size_t)nt, 0, 0);
        lk_t_close("ref min-snr weights (v)", w_v, wv, (size_t)nt, 0, 0);
        free(got);
        free(gv);
    }
    free(x0);
    free(noise);
    free(tv);
    free(snr_w);
    free(we);
    free(wv);
    cJSON_free(cfg_text);
    cJSON_Delete(j);

    /* the other beta schedules, bit for bit */
    static const struct { const char *name, *json; } sched[] = {
        {"ac.linear", "{\"num_train_timesteps\":1000,\"beta_start\":0.0001,\"beta_end\":0.02,\"beta_schedule\":\"linear\"}"},
        {"ac.cosine", "{\"num_train_timesteps\":1000,\"beta_start\":0.0001,\"beta_end\":0.02,\"beta_schedule\":\"squaredcos_cap_v2\"}"},
    };
    for (int k = 0; k < 2; k++) {
        CHECK_OK(lk_schedule_config_parse(&cfg, sched[k].json, strlen(sched[k].json), sched[k].name));
        CHECK_OK(lk_schedule_alphas_cumprod(&cfg, ac, 1000));
        float *want = lk_t_load(st, sched[k].name, NULL);
        char what[64];
        snprintf(what, sizeof what, "ref %s (bit-exact)", sched[k].name);
        lk_t_close(what, ac, want, 1000, 0, 0);
        free(want);
    }
}

static void test_ref(void) {
    lk_safetensors *st = lk_t_ref("samplers");
    if (!st) return;
    float *x0 = lk_t_load(st, "x0", NULL), *noise = lk_t_load(st, "noise", NULL);
    const char *cases = lk_safetensors_meta(st, "cases");
    CHECK(cases != NULL);
    int ncases = 0;
    if (cases && x0 && noise) {
        char *list = strdup(cases), *save = NULL;
        for (char *tok = strtok_r(list, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
            test_ref_case(st, tok, x0, noise);
            ncases++;
        }
        free(list);
    }
    CHECK(ncases >= 30);
    test_ref_ddpm(st);
    free(x0);
    free(noise);
    lk_safetensors_close(st);
}

/* ---- config errors ---- */
static void expect_cfg_error(const char *json, lk_status want, const char *needle) {
    lk_schedule_config cfg;
    lk_schedule_config_default(&cfg);
    cfg.num_train_timesteps = 777; /* must stay untouched on failure */
    lk_status st = lk_schedule_config_parse(&cfg, json, strlen(json), "cfg.json");
    const char *msg = lk_last_error();
    const int ok = st == want && strstr(msg, needle) != NULL && strstr(msg, "cfg.json") != NULL &&
                   cfg.num_train_timesteps == 777;
    lk_t_checks++;
    if (!ok) {
        lk_t_failures++;
        fprintf(stderr, "FAIL config %s: got %s \"%s\", want %s mentioning '%s'\n", json, lk_status_str(st), msg,
                lk_status_str(want), needle);
    }
}

#define BASE "\"num_train_timesteps\":1000,\"beta_start\":0.00085,\"beta_end\":0.012,\"beta_schedule\":\"scaled_linear\""

static void test_config_errors(void) {
    expect_cfg_error("", LK_ERR_FORMAT, "not valid JSON");
    expect_cfg_error("{\"num_train_timesteps\": 1000,", LK_ERR_FORMAT, "not valid JSON");
    expect_cfg_error("[1, 2]", LK_ERR_FORMAT, "JSON object");
    expect_cfg_error("{" BASE "} x", LK_ERR_FORMAT, "trailing");
    expect_cfg_error("{\"beta_start\":0.00085,\"beta_end\":0.012,\"beta_schedule\":\"linear\"}", LK_ERR_FORMAT,
                     "num_train_timesteps");
    expect_cfg_error("{\"num_train_timesteps\":1000,\"beta_end\":0.012,\"beta_schedule\":\"linear\"}", LK_ERR_FORMAT,
                     "beta_start");
    expect_cfg_error("{\"num_train_timesteps\":1000,\"beta_start\":0.1,\"beta_end\":0.012}", LK_ERR_FORMAT,
                     "beta_schedule");
    expect_cfg_error("{\"num_train_timesteps\":\"1000\",\"beta_start\":0.1,\"beta_end\":0.2,\"beta_schedule\":\"linear\"}",
                     LK_ERR_FORMAT, "num_train_timesteps");
    expect_cfg_error("{\"num_train_timesteps\":999.5,\"beta_start\":0.1,\"beta_end\":0.2,\"beta_schedule\":\"linear\"}",
                     LK_ERR_FORMAT, "integer");
    expect_cfg_error("{\"num_train_timesteps\":1,\"beta_start\":0.1,\"beta_end\":0.2,\"beta_schedule\":\"linear\"}",
                     LK_ERR_FORMAT, "num_train_timesteps");
    expect_cfg_error("{" BASE ",\"beta_start\":0.001}", LK_ERR_FORMAT, "twice");
    expect_cfg_error("{" BASE ",\"clip_sample\":0}", LK_ERR_FORMAT, "clip_sample");
    expect_cfg_error("{" BASE ",\"steps_offset\":-1}", LK_ERR_FORMAT, "steps_offset");
    expect_cfg_error("{" BASE ",\"prediction_type\":\"sample\"}", LK_ERR_UNSUPPORTED, "prediction_type");
    expect_cfg_error("{" BASE ",\"prediction_type\":3}", LK_ERR_FORMAT, "prediction_type");
    expect_cfg_error("{" BASE ",\"timestep_spacing\":\"quadratic\"}", LK_ERR_UNSUPPORTED, "timestep_spacing");
    expect_cfg_error("{\"num_train_timesteps\":1000,\"beta_start\":0.1,\"beta_end\":0.2,\"beta_schedule\":\"sigmoid\"}",
                     LK_ERR_UNSUPPORTED, "beta_schedule");
    expect_cfg_error("{" BASE ",\"trained_betas\":[0.1,0.2]}", LK_ERR_UNSUPPORTED, "trained_betas");
    expect_cfg_error("{" BASE ",\"thresholding\":true}", LK_ERR_UNSUPPORTED, "thresholding");
    expect_cfg_error("{" BASE ",\"rescale_betas_zero_snr\":true}", LK_ERR_UNSUPPORTED, "rescale_betas_zero_snr");
    expect_cfg_error("{" BASE ",\"timestep_type\":\"continuous\"}", LK_ERR_UNSUPPORTED, "timestep_type");
    expect_cfg_error("{" BASE ",\"sigma_min\":0.1}", LK_ERR_UNSUPPORTED, "sigma_min");
    expect_cfg_error("{" BASE ",\"lambda_min_clipped\":-5.1}", LK_ERR_UNSUPPORTED, "lambda_min_clipped");
    expect_cfg_error("{" BASE ",\"final_sigmas_type\":\"zero\"}", LK_ERR_UNSUPPORTED, "final_sigmas_type");
    expect_cfg_error("{\"num_train_timesteps\":1000,\"beta_start\":0.02,\"beta_end\":0.001,\"beta_schedule\":\"linear\"}",
                     LK_ERR_INVALID, "beta_start <= beta_end");
    expect_cfg_error("{" BASE ",\"steps_offset\":1000}", LK_ERR_INVALID, "steps_offset");

    /* what a real diffusers config may hold is accepted: -Infinity, nulls, unknown/private keys */
    const char *ok_json =
        "{\"_class_name\":\"DPMSolverMultistepScheduler\",\"_diffusers_version\":\"0.25.0\","
        "\"algorithm_type\":\"dpmsolver++\",\"beta_end\":0.012,\"beta_schedule\":\"scaled_linear\","
        "\"beta_start\":0.00085,\"dynamic_thresholding_ratio\":0.995,\"euler_at_final\":false,"
        "\"lambda_min_clipped\":-Infinity,\"lower_order_final\":true,\"num_train_timesteps\":1000,"
        "\"prediction_type\":\"v_prediction\",\"sample_max_value\":1.0,\"solver_order\":2,"
        "\"solver_type\":\"midpoint\",\"steps_offset\":1,\"thresholding\":false,"
        "\"timestep_spacing\":\"linspace\",\"trained_betas\":null,\"use_karras_sigmas\":true,"
        "\"use_lu_lambdas\":false,\"variance_type\":null,\"sigma_min\":null,\"skip_prk_steps\":true,"
        "\"note\":\"Infinity inside a string stays\"}";
    lk_schedule_config cfg;
    CHECK_OK(lk_schedule_config_parse(&cfg, ok_json, strlen(ok_json), "dpm config"));
    CHECK(cfg.prediction_type == LK_PREDICT_V && cfg.use_karras_sigmas && cfg.steps_offset == 1 &&
          cfg.timestep_spacing == LK_SPACING_LINSPACE && cfg.set_alpha_to_one);
    /* use_karras_sigmas makes "dpmpp_2m" build Karras sigmas, as diffusers does */
    lk_sampler *a = NULL, *b = NULL;
    lk_schedule_config plain = cfg;
    plain.use_karras_sigmas = false;
    CHECK_OK(lk_sampler_new(&a, &cfg, LK_SAMPLER_DPMPP_2M, 12, 1.0));
    CHECK_OK(lk_sampler_new(&b, &plain, LK_SAMPLER_DPMPP_2M_KARRAS, 12, 1.0));
    if (a && b) CHECK(memcmp(lk_sampler_sigmas(a), lk_sampler_sigmas(b), sizeof(float) * 13) == 0);
    lk_sampler_free(a);
    lk_sampler_free(b);

    /* mutation fuzz of the parser: flipped, dropped and duplicated bytes of a real config never
     * crash (the sanitizer build runs this too) and every failure carries a message */
    {
        const size_t L = strlen(ok_json);
        char *buf = malloc(L + 64);
        uint64_t r = 12345;
        int ok_count = 0, err_count = 0, msg_ok = 1;
        for (int it = 0; it < 3000; it++) {
            memcpy(buf, ok_json, L);
            size_t len = L;
            for (int k = 0; k < 1 + it % 4; k++) {
                r = r * 6364136223846793005ull + 1442695040888963407ull;
                const size_t pos = (size_t)(r >> 33) % len;
                switch ((r >> 20) % 4) {
                case 0: buf[pos] = (char)(r >> 8); break;
                case 1: memmove(buf + pos, buf + pos + 1, len - pos - 1); len--; break;
                case 2: if (len < L + 60) { memmove(buf + pos + 1, buf + pos, len - pos); len++; } break;
                default: buf[pos] = "{}[]\",:0e-x"[(r >> 40) % 11]; break;
                }
            }
            lk_schedule_config c2;
            lk_status st2 = lk_schedule_config_parse(&c2, buf, len, "fuzz");
            if (st2 == LK_OK) ok_count++;
            else {
                err_count++;
                if (strncmp(lk_last_error(), "fuzz", 4) != 0) msg_ok = 0;
            }
        }
        free(buf);
        printf("config parser mutation fuzz: %d accepted, %d rejected\n", ok_count, err_count);
        CHECK(msg_ok && err_count > 0);
    }

    /* files */
    lk_status st = lk_schedule_config_load(&cfg, "/nonexistent/scheduler_config.json");
    CHECK(st == LK_ERR_IO && strstr(lk_last_error(), "/nonexistent/scheduler_config.json"));
    char path[] = "/tmp/lk_sched_cfg_XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    if (fd >= 0) {
        FILE *f = fdopen(fd, "w");
        fputs("{\"num_train_timesteps\": 1000, \"beta_start\": 0.00085, \"beta_end\": 0.012,\n"
              " \"beta_schedule\": \"scaled_linear\", \"clip_sample\": \"no\"}\n", f);
        fclose(f);
        st = lk_schedule_config_load(&cfg, path);
        CHECK(st == LK_ERR_FORMAT && strstr(lk_last_error(), path) && strstr(lk_last_error(), "clip_sample"));
        remove(path);
    }
    CHECK(lk_schedule_config_parse(NULL, "{}", 2, "x") == LK_ERR_INVALID);
}

/* ---- names ---- */
static void test_names(void) {
    static const struct { const char *name; lk_sampler_kind kind; } good[] = {
        {"ddim", LK_SAMPLER_DDIM},         {"euler", LK_SAMPLER_EULER},
        {"euler_karras", LK_SAMPLER_EULER_KARRAS}, {"euler_a", LK_SAMPLER_EULER_A},
        {"heun", LK_SAMPLER_HEUN},         {"heun_karras", LK_SAMPLER_HEUN_KARRAS},
        {"dpmpp_2m", LK_SAMPLER_DPMPP_2M}, {"dpmpp_2m_karras", LK_SAMPLER_DPMPP_2M_KARRAS},
        {"lms", LK_SAMPLER_LMS},           {"lms_karras", LK_SAMPLER_LMS_KARRAS},
        {"DDIM", LK_SAMPLER_DDIM},         {"Euler_A", LK_SAMPLER_EULER_A},
        {"k_euler_a", LK_SAMPLER_EULER_A}, {"euler_ancestral", LK_SAMPLER_EULER_A},
        {"dpm++_2m_karras", LK_SAMPLER_DPMPP_2M_KARRAS}, {"k_lms", LK_SAMPLER_LMS},
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        lk_sampler_kind k = LK_SAMPLER_KIND_COUNT;
        CHECK_OK(lk_sampler_parse(good[i].name, &k));
        CHECK(k == good[i].kind);
    }
    for (int k = 0; k < LK_SAMPLER_KIND_COUNT; k++) {
        lk_sampler_kind back = LK_SAMPLER_KIND_COUNT;
        CHECK_OK(lk_sampler_parse(lk_sampler_name((lk_sampler_kind)k), &back));
        CHECK((int)back == k);
    }
    CHECK(strcmp(lk_sampler_name(LK_SAMPLER_KIND_COUNT), "?") == 0);
    static const char *bad[] = {"", "eulerx", "euler a", "dpmpp_3m", "plms", "ddim ",
                                "a_very_long_sampler_name_that_does_not_exist_anywhere_at_all"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        lk_sampler_kind k = LK_SAMPLER_DDIM;
        lk_status st = lk_sampler_parse(bad[i], &k);
        CHECK(st == LK_ERR_INVALID && strstr(lk_last_error(), "unknown sampler") &&
              strstr(lk_last_error(), "dpmpp_2m_karras"));
    }
    lk_sampler_kind k;
    CHECK(lk_sampler_parse(NULL, &k) == LK_ERR_INVALID);
}

/* ---- API contracts ---- */
typedef struct prog {
    int calls, last_done, total;
    volatile sig_atomic_t *cancel;
    int cancel_after;
} prog;

static lk_status on_progress(void *ud, int done, int total, float t) {
    prog *p = ud;
    (void)t;
    p->calls++;
    p->last_done = done;
    p->total = total;
    if (p->cancel && done == p->cancel_after) *p->cancel = 1;
    return LK_OK;
}

static void test_api(void) {
    lk_schedule_config cfg;
    lk_schedule_config_default(&cfg);
    lk_sampler *s = NULL;
    CHECK(lk_sampler_new(&s, &cfg, LK_SAMPLER_EULER, 0, 1.0) == LK_ERR_INVALID && s == NULL);
    CHECK(lk_sampler_new(&s, &cfg, LK_SAMPLER_EULER, 1001, 1.0) == LK_ERR_INVALID);
    CHECK(lk_sampler_new(&s, &cfg, LK_SAMPLER_EULER, 10, 0.0) == LK_ERR_INVALID);
    CHECK(lk_sampler_new(&s, &cfg, LK_SAMPLER_EULER, 10, 1.5) == LK_ERR_INVALID);
    CHECK(lk_sampler_new(&s, &cfg, LK_SAMPLER_EULER, 10, NAN) == LK_ERR_INVALID);
    CHECK(lk_sampler_new(&s, &cfg, LK_SAMPLER_EULER, 10, 0.05) == LK_ERR_INVALID &&
          strstr(lk_last_error(), "leaves no step"));
    CHECK(lk_sampler_new(&s, &cfg, LK_SAMPLER_KIND_COUNT, 10, 1.0) == LK_ERR_INVALID);
    CHECK(lk_sampler_new(&s, NULL, LK_SAMPLER_EULER, 10, 1.0) == LK_ERR_INVALID);
    lk_schedule_config bad = cfg;
    bad.steps_offset = 5; /* DDIM leading with 1000 steps: 999 + 5 is past the schedule */
    CHECK(lk_sampler_new(&s, &bad, LK_SAMPLER_DDIM, 1000, 1.0) == LK_ERR_INVALID && strstr(lk_last_error(), "ddim"));
    bad = cfg;
    bad.beta_end = 2.0;
    CHECK(lk_sampler_new(&s, &bad, LK_SAMPLER_DDIM, 10, 1.0) == LK_ERR_INVALID);
    float ac[10];
    CHECK(lk_schedule_alphas_cumprod(&cfg, ac, 10) == LK_ERR_INVALID);

    /* "trailing" with 61 steps: numpy's arange(1000, 0, -1000/61) has 62 values, the last about
     * 0, which diffusers turns into a timestep of -1; here it is dropped */
    lk_schedule_config tr = cfg;
    tr.timestep_spacing = LK_SPACING_TRAILING;
    for (int k = 0; k < LK_SAMPLER_KIND_COUNT; k++) {
        CHECK_OK(lk_sampler_new(&s, &tr, (lk_sampler_kind)k, 61, 1.0));
        if (!s) continue;
        const int nts = lk_sampler_num_timesteps(s);
        const float *ts = lk_sampler_timesteps(s);
        const bool heun = k == LK_SAMPLER_HEUN || k == LK_SAMPLER_HEUN_KARRAS;
        const bool karras = k == LK_SAMPLER_EULER_KARRAS || k == LK_SAMPLER_HEUN_KARRAS ||
                            k == LK_SAMPLER_LMS_KARRAS || k == LK_SAMPLER_DPMPP_2M_KARRAS;
        CHECK(nts == (heun ? 121 : 61) || (k == LK_SAMPLER_DPMPP_2M_KARRAS && nts <= 61));
        CHECK(ts[0] == 999.0f && ts[nts - 1] >= 0.0f && (karras || ts[nts - 1] == 15.0f));
        lk_sampler_free(s);
        s = NULL;
    }

    /* every kind runs every step count from 1 to 60 and a 1000-step schedule without
     * non-finite values; Heun makes 2 * steps - 1 model calls */
    float x[NLAT], x0[NLAT];
    lk_t_fill_uniform(x0, NLAT, -1, 1, 7);
    lk_rng rng;
    lk_rng_seed(&rng, 1);
    int finite_ok = 1, count_ok = 1;
    for (int k = 0; k < LK_SAMPLER_KIND_COUNT; k++)
        for (int steps = 1; steps <= 999; steps = steps < 60 ? steps + 1 : 999) {
            lk_status st = lk_sampler_new(&s, &cfg, (lk_sampler_kind)k, steps, 1.0);
            if (st != LK_OK) {
                fprintf(stderr, "FAIL %s %d steps: %s\n", lk_sampler_name((lk_sampler_kind)k), steps, lk_last_error());
                finite_ok = 0;
                continue;
            }
            const int want_calls = k == LK_SAMPLER_HEUN || k == LK_SAMPLER_HEUN_KARRAS ? 2 * steps - 1 : steps;
            if (lk_sampler_total_steps(s) != want_calls && !(k == LK_SAMPLER_DPMPP_2M_KARRAS)) count_ok = 0;
            for (int i = 0; i < NLAT; i++) x[i] = x0[i] * lk_sampler_init_noise_sigma(s);
            fake_model fm = {0};
            st = lk_sampler_run(s, x, NLAT, fake_denoise, &fm, &rng, NULL, NULL, NULL);
            if (st != LK_OK || fm.calls != lk_sampler_total_steps(s)) finite_ok = 0;
            for (int i = 0; i < NLAT; i++)
                if (!isfinite(x[i])) finite_ok = 0;
            if (!finite_ok) {
                fprintf(stderr, "FAIL %s %d steps: %s\n", lk_sampler_name((lk_sampler_kind)k), steps,
                        st != LK_OK ? lk_last_error() : "non-finite");
                finite_ok = 1;
                lk_t_failures++;
            }
            lk_sampler_free(s);
            s = NULL;
            if (steps == 999) break;
        }
    CHECK(finite_ok && count_ok);

    /* eta only for DDIM, before the run; ancestral needs an rng; done -> LK_ERR_STATE */
    CHECK_OK(lk_sampler_new(&s, &cfg, LK_SAMPLER_EULER_A, 5, 1.0));
    CHECK(lk_sampler_set_eta(s, 0.5f) == LK_ERR_INVALID);
    fake_model fm = {0};
    memcpy(x, x0, sizeof x);
    CHECK(lk_sampler_step(s, x, NLAT, fake_denoise, &fm, NULL) == LK_ERR_INVALID && strstr(lk_last_error(), "rng"));
    lk_sampler_free(s);
    CHECK_OK(lk_sampler_new(&s, &cfg, LK_SAMPLER_DDIM, 5, 1.0));
    CHECK(lk_sampler_set_eta(s, -1.0f) == LK_ERR_INVALID);
    CHECK(lk_sampler_set_eta(s, INFINITY) == LK_ERR_INVALID);
    CHECK_OK(lk_sampler_set_eta(s, 1.0f));
    CHECK(lk_sampler_step(s, x, NLAT, fake_denoise, &fm, NULL) == LK_ERR_INVALID);
    CHECK_OK(lk_sampler_step(s, x, NLAT, fake_denoise, &fm, &rng));
    CHECK(lk_sampler_set_eta(s, 0.0f) == LK_ERR_STATE);
    CHECK(lk_sampler_step(s, x, NLAT / 2, fake_denoise, &fm, &rng) == LK_ERR_INVALID &&
          strstr(lk_last_error(), "changed"));
    CHECK_OK(lk_sampler_run(s, x, NLAT, fake_denoise, &fm, &rng, NULL, NULL, NULL));
    CHECK(lk_sampler_current_timestep(s) == -1.0f);
    CHECK(lk_sampler_step(s, x, NLAT, fake_denoise, &fm, &rng) == LK_ERR_STATE);
    lk_sampler_free(s);

    /* a model error stops the run and names the step */
    CHECK_OK(lk_sampler_new(&s, &cfg, LK_SAMPLER_DPMPP_2M, 8, 1.0));
    fake_model boom = {.fail_at = 3};
    memcpy(x, x0, sizeof x);
    lk_status st = lk_sampler_run(s, x, NLAT, fake_denoise, &boom, NULL, NULL, NULL, NULL);
    CHECK(st == LK_ERR_IO && strstr(lk_last_error(), "model exploded") && strstr(lk_last_error(), "step 3 of 8"));
    CHECK(lk_sampler_steps_done(s) == 2);
    lk_sampler_free(s);

    /* progress and Ctrl-C: cancelled after step 4 of 10, x holds step 4's latent */
    volatile sig_atomic_t cancel = 0;
    prog p = {.cancel = &cancel, .cancel_after = 4};
    CHECK_OK(lk_sampler_new(&s, &cfg, LK_SAMPLER_LMS, 10, 1.0));
    for (int i = 0; i < NLAT; i++) x[i] = x0[i] * lk_sampler_init_noise_sigma(s);
    float ref4[NLAT];
    memcpy(ref4, x, sizeof x);
    fake_model f1 = {0}, f2 = {0};
    st = lk_sampler_run(s, x, NLAT, fake_denoise, &f1, NULL, on_progress, &p, &cancel);
    CHECK(st == LK_ERR_INTERRUPTED && strstr(lk_last_error(), "after step 4 of 10"));
    CHECK(p.calls == 4 && p.last_done == 4 && p.total == 10 && f1.calls == 4);
    lk_sampler *s2 = NULL;
    CHECK_OK(lk_sampler_new(&s2, &cfg, LK_SAMPLER_LMS, 10, 1.0));
    for (int i = 0; i < 4; i++) CHECK_OK(lk_sampler_step(s2, ref4, NLAT, fake_denoise, &f2, NULL));
    CHECK(memcmp(ref4, x, sizeof x) == 0);
    /* resuming after a cancel finishes the same run */
    cancel = 0;
    p.cancel = NULL;
    CHECK_OK(lk_sampler_run(s, x, NLAT, fake_denoise, &f1, NULL, on_progress, &p, &cancel));
    CHECK_OK(lk_sampler_run(s2, ref4, NLAT, fake_denoise, &f2, NULL, NULL, NULL, NULL));
    CHECK(memcmp(ref4, x, sizeof x) == 0 && p.calls == 10 && p.last_done == 10);
    /* reset starts over and gives the same result */
    lk_sampler_reset(s);
    CHECK(lk_sampler_steps_done(s) == 0 && lk_sampler_current_timestep(s) == lk_sampler_timesteps(s)[0]);
    for (int i = 0; i < NLAT; i++) x[i] = x0[i] * lk_sampler_init_noise_sigma(s);
    CHECK_OK(lk_sampler_run(s, x, NLAT, fake_denoise, &f1, NULL, NULL, NULL, NULL));
    CHECK(memcmp(ref4, x, sizeof x) == 0);
    lk_sampler_free(s);
    lk_sampler_free(s2);

    /* scale_input + update (caller-driven model) is step, bit for bit, for every kind */
    for (int k = 0; k < LK_SAMPLER_KIND_COUNT; k++) {
        lk_sampler *a = NULL, *b = NULL;
        CHECK_OK(lk_sampler_new(&a, &cfg, (lk_sampler_kind)k, 7, 0.8));
        CHECK_OK(lk_sampler_new(&b, &cfg, (lk_sampler_kind)k, 7, 0.8));
        if (!a || !b) continue;
        float xa[NLAT], xb[NLAT], xin[NLAT], out[NLAT];
        lk_rng ra, rb;
        lk_rng_seed(&ra, 9);
        lk_rng_seed(&rb, 9);
        CHECK_OK(lk_sampler_add_noise(a, xa, x0, x0, NLAT));
        memcpy(xb, xa, sizeof xa);
        fake_model fa = {0}, fb = {0};
        CHECK_OK(lk_sampler_run(a, xa, NLAT, fake_denoise, &fa, &ra, NULL, NULL, NULL));
        while (lk_sampler_current_timestep(b) >= 0) {
            const float t = lk_sampler_current_timestep(b);
            CHECK_OK(lk_sampler_scale_input(b, xin, xb, NLAT));
            fake_denoise(&fb, xin, t, out);
            CHECK_OK(lk_sampler_update(b, xb, out, NLAT, &rb));
        }
        CHECK(memcmp(xa, xb, sizeof xa) == 0 && fa.calls == fb.calls);
        CHECK(lk_sampler_update(b, xb, out, NLAT, &rb) == LK_ERR_STATE);
        lk_sampler_free(a);
        lk_sampler_free(b);
    }

    /* init_latent is torch.randn * init_noise_sigma; cfg_combine is uncond + s (cond - uncond) */
    CHECK_OK(lk_sampler_new(&s, &cfg, LK_SAMPLER_EULER, 20, 1.0));
    lk_rng r1, r2;
    lk_rng_seed(&r1, 77);
    lk_rng_seed(&r2, 77);
    float lat[NLAT], rn[NLAT];
    CHECK_OK(lk_sampler_init_latent(s, lat, NLAT, &r1));
    lk_rng_randn(&r2, rn, NLAT);
    int same = 1;
    for (int i = 0; i < NLAT; i++) same &= lat[i] == rn[i] * lk_sampler_init_noise_sigma(s);
    CHECK(same);
    lk_sampler_free(s);
    float u[5] = {1, -2, 3, 0.5f, 0}, c[5] = {2, 2, -1, 0.5f, 1e-3f}, o[5], w[5];
    for (int i = 0; i < 5; i++) w[i] = u[i] + 7.5f * (c[i] - u[i]);
    lk_cfg_combine(o, u, c, 5, 7.5f);
    CHECK(memcmp(o, w, sizeof o) == 0);
    lk_cfg_combine(u, u, c, 5, 7.5f); /* in place */
    CHECK(memcmp(u, w, sizeof o) == 0);

    /* DDPM argument checks */
    CHECK(lk_ddpm_add_noise(x, x0, x0, NLAT, ac, 10, 10) == LK_ERR_INVALID);
    CHECK(lk_ddpm_velocity(x, x0, x0, NLAT, ac, 10, -1) == LK_ERR_INVALID);
    CHECK(isnan(lk_ddpm_snr(ac, 10, 11)));
}

int main(void) {
    test_golden();
    test_ref();
    test_config_errors();
    test_names();
    test_api();
    printf("worst over all trajectories: max_abs=%.3g max_rel(|want|>1e-3)=%.3g\n", g_worst_abs, g_worst_rel);
    return lk_t_done();
}
