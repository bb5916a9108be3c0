/* test_emojibench.c: EmojiBench (emojibench.h) end to end on a synthetic data set
 * (emoji_fixture.h: 10 concepts of coloured shapes in 4 styles, 2 held out, the style task's 5
 * fixed concepts), a generator pretrained for 1 step per stage and an evaluator of 1 step: every
 * row's image count, scores in range, training time and file sizes, the JSON (read back with
 * cJSON) and the table, the rows mask, a real-row sanity check (identical images score 1),
 * cancellation and errors naming the missing folder. About 30 s in Release. */
#define _POSIX_C_SOURCE 200809L
#include "emoji_fixture.h"
#include "harness.h"
#include "likeness/emojibench.h"
#include "likeness/pretrain.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---------------- the synthetic data set ---------------- */

/* in key order (the reader sorts by key); five shapes, then the same five striped */
static const lk_t_emoji_concept CONCEPTS[] = {
    {"1f308", "rainbow", NULL, NULL, "\"rainbow\", \"weather\"", 15u, true, {230, 60, 200},
     LK_T_DISK, false},
    {"1f34c", "banana", NULL, NULL, "\"banana\", \"fruit\"", 15u, false, {240, 220, 60},
     LK_T_SQUARE, false},
    {"1f34e", "red apple", NULL, NULL, "\"apple\", \"fruit\", \"red\"", 15u, false, {220, 30, 30},
     LK_T_TRIANGLE, false},
    {"1f431", "cat face", NULL, NULL, "\"cat\", \"face\", \"pet\"", 15u, false, {240, 170, 40},
     LK_T_RING, false},
    {"1f436", "dog face", NULL, NULL, "\"dog\", \"face\", \"pet\"", 15u, false, {150, 100, 60},
     LK_T_DIAMOND, false},
    {"1f600", "grinning face", NULL, NULL, "\"face\", \"grin\"", 15u, false, {250, 200, 30},
     LK_T_DISK, true},
    {"1f680", "rocket", NULL, NULL, "\"rocket\", \"space\"", 15u, false, {120, 120, 140},
     LK_T_SQUARE, true},
    {"1f697", "automobile", NULL, NULL, "\"car\", \"automobile\"", 15u, false, {40, 90, 220},
     LK_T_TRIANGLE, true},
    {"1f98a", "fox", NULL, NULL, "\"fox\", \"face\"", 15u, true, {230, 120, 30}, LK_T_RING, true},
    {"2b50", "star", NULL, NULL, "\"star\", \"medium star\"", 15u, false, {250, 210, 0},
     LK_T_DIAMOND, true},
};
enum { N_CONCEPTS = (int)(sizeof CONCEPTS / sizeof CONCEPTS[0]) };

/* ---------------- the tiny generator and evaluator ---------------- */

static lk_status run_stage(lk_pretrain_stage stage, const char *data, const char *run,
                           const char *tok, const char *text, const char *vae, bool evaluator) {
    lk_pretrain_config c = lk_t_pretrain_config(stage, data, run, 1, 2, 3);
    c.tokenizer_dir = tok;
    c.text_dir = text;
    c.vae_dir = vae;
    c.evaluator = evaluator;
    return lk_pretrain_run(&c);
}

/* root/model (the generator) and root/runs/eval/export (the evaluator) */
static lk_status make_models(const char *root, const char *data) {
    char tok[300], text[300], vae[300], unet[300], ev[300], te[320], ve[320], ue[320], model[300];
    snprintf(tok, sizeof tok, "%s/tokenizer", root);
    snprintf(text, sizeof text, "%s/runs/text", root);
    snprintf(vae, sizeof vae, "%s/runs/vae", root);
    snprintf(unet, sizeof unet, "%s/runs/unet", root);
    snprintf(ev, sizeof ev, "%s/runs/eval", root);
    snprintf(te, sizeof te, "%s/export", text);
    snprintf(ve, sizeof ve, "%s/export", vae);
    snprintf(ue, sizeof ue, "%s/export", unet);
    snprintf(model, sizeof model, "%s/model", root);
    lk_status s = lk_pretrain_tokenizer(data, tok, 600);
    if (s == LK_OK) s = run_stage(LK_PRETRAIN_TEXT, data, text, tok, NULL, NULL, false);
    if (s == LK_OK) s = run_stage(LK_PRETRAIN_VAE, data, vae, NULL, NULL, NULL, false);
    if (s == LK_OK) s = run_stage(LK_PRETRAIN_UNET, data, unet, tok, te, ve, false);
    if (s == LK_OK) s = lk_pretrain_assemble(tok, te, ve, ue, model);
    if (s == LK_OK) s = run_stage(LK_PRETRAIN_TEXT, data, ev, tok, NULL, NULL, true);
    return s;
}

/* ---------------- helpers ---------------- */

static int exists(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0;
}

static bool in_range(double x) { return isfinite(x) && x >= -1.0 - 1e-6 && x <= 1.0 + 1e-6; }

typedef struct log_count {
    int lines;
    bool saw_subject, saw_style;
    int calls;             /* progress calls */
    double done, total;    /* the last ones */
    bool monotone;         /* done never went down, total never changed */
} log_count;

static void on_progress(void *ud, double done, double total) {
    log_count *l = ud;
    if (l->calls == 0) l->monotone = true;
    else l->monotone = l->monotone && done >= l->done && total == l->total;
    l->calls++;
    l->done = done;
    l->total = total;
}

/* the planned work was exactly the work done */
static void check_progress(const char *what, const log_count *l) {
    const bool ok = l->calls > 0 && l->monotone && l->total > 0.0 && fabs(l->done - l->total) < 1e-6;
    CHECK(ok);
    printf("%s %s: %d progress calls, done %.0f of %.0f planned units\n", ok ? "ok  " : "FAIL", what,
           l->calls, l->done, l->total);
}

static void on_log(void *ud, const char *line) {
    log_count *l = ud;
    l->lines++;
    l->saw_subject = l->saw_subject || strstr(line, "subject") != NULL;
    l->saw_style = l->saw_style || strstr(line, "style") != NULL;
}

static lk_emojibench_config small_config(const char *model, const char *ev, const char *data,
                                         const char *work) {
    lk_emojibench_config c;
    lk_emojibench_defaults(&c);
    c.model_dir = model;
    c.evaluator_dir = ev;
    c.data_dir = data;
    c.work_dir = work;
    c.n_concepts = 2;
    c.n_style_concepts = 2;
    c.n_t2i_concepts = 2;
    c.seeds = 1;
    c.sample_steps = 2;
    for (int r = LK_EB_TI; r < LK_EB_ROWS; r++) c.steps[r] = 1;
    c.seed = 5;
    return c;
}

/* the row checks shared by the tasks; want[row] = expected image count */
static void check_rows(const char *task, const lk_emojibench_row *rows, const int *want,
                       unsigned mask) {
    for (int i = 0; i < LK_EB_ROWS; i++) {
        const lk_emojibench_row *o = &rows[i];
        const bool on = (mask >> i) & 1u, method = i >= LK_EB_TI;
        const int n = on ? want[i] : 0;
        bool ok = o->n == n;
        if (n > 0)
            ok = ok && in_range(o->subject) && in_range(o->prompt) && o->top1 >= 0.0 &&
                 o->top1 <= o->top5 && o->top5 <= 1.0;
        else
            ok = ok && o->subject == 0.0 && o->prompt == 0.0 && o->top1 == 0.0 && o->top5 == 0.0;
        if (on && method) ok = ok && o->train_s > 0.0 && o->file_bytes > 0.0;
        else ok = ok && o->train_s == 0.0 && o->file_bytes == 0.0;
        lk_t_checks++;
        if (!ok) lk_t_failures++;
        printf("%s %s %-18s n=%d (want %d) subject %.4f prompt %.4f top1 %.2f top5 %.2f train %.2f s "
               "file %.0f B\n", ok ? "ok  " : "FAIL", task, lk_emojibench_row_name(i), o->n, n,
               o->subject, o->prompt, o->top1, o->top5, o->train_s, o->file_bytes);
    }
}

/* the JSON file has every row of rows (mask) with the result's numbers */
static void check_json(const char *path, const lk_emojibench_result *r, unsigned mask) {
    char *text = lk_t_read_file(path, NULL);
    cJSON *j = text ? cJSON_Parse(text) : NULL;
    free(text);
    CHECK(j != NULL);
    if (!j) return;
    CHECK(cJSON_IsString(cJSON_GetObjectItem(j, "benchmark")));
    const cJSON *set = cJSON_GetObjectItem(j, "settings");
    CHECK(cJSON_GetNumberValue(cJSON_GetObjectItem(set, "seeds")) == 1.0);
    CHECK(cJSON_GetNumberValue(cJSON_GetObjectItem(set, "subject_concepts")) == (double)r->n_subject_concepts);
    for (int t = 0; t < 2; t++) {
        const cJSON *task = cJSON_GetObjectItem(j, t ? "style" : "subject");
        const lk_emojibench_row *rows = t ? r->style : r->subject;
        CHECK(cJSON_IsObject(task));
        int present = 0;
        for (int i = 0; i < LK_EB_ROWS; i++) {
            const cJSON *o = cJSON_GetObjectItem(task, lk_emojibench_row_name(i));
            const bool on = (mask >> i) & 1u;
            lk_t_checks++;
            const bool ok = on ? o && cJSON_GetNumberValue(cJSON_GetObjectItem(o, "images")) == rows[i].n &&
                                     fabs(cJSON_GetNumberValue(cJSON_GetObjectItem(o, "subject_fidelity")) - rows[i].subject) < 1e-5 &&
                                     fabs(cJSON_GetNumberValue(cJSON_GetObjectItem(o, "top5")) - rows[i].top5) < 1e-5 &&
                                     cJSON_IsNumber(cJSON_GetObjectItem(o, "prompt_fidelity")) &&
                                     cJSON_IsNumber(cJSON_GetObjectItem(o, "top1")) &&
                                     cJSON_IsNumber(cJSON_GetObjectItem(o, "train_seconds")) &&
                                     fabs(cJSON_GetNumberValue(cJSON_GetObjectItem(o, "file_bytes")) - rows[i].file_bytes) < 1.0
                               : o == NULL;
            if (!ok) {
                lk_t_failures++;
                fprintf(stderr, "FAIL %s: JSON row %s/%s\n", path, t ? "style" : "subject",
                        lk_emojibench_row_name(i));
            }
            present += o != NULL;
        }
        CHECK(cJSON_GetArraySize(task) == present);
    }
    const cJSON *t2i = cJSON_GetObjectItem(j, "text_to_image");
    CHECK(cJSON_GetNumberValue(cJSON_GetObjectItem(t2i, "images")) == r->t2i_n);
    CHECK(cJSON_IsNumber(cJSON_GetObjectItem(j, "seconds")));
    cJSON_Delete(j);
}

/* the Markdown table names every row of mask */
static void check_print(const lk_emojibench_config *c, const lk_emojibench_result *r) {
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    CHECK(f != NULL);
    if (!f) return;
    lk_emojibench_print(c, r, f);
    fclose(f);
    for (int i = 0; i < LK_EB_ROWS; i++) {
        char cell[64];
        snprintf(cell, sizeof cell, "| %s |", lk_emojibench_row_name(i));
        lk_t_checks++;
        if (((c->rows >> i) & 1u) != (strstr(text, cell) != NULL)) {
            lk_t_failures++;
            fprintf(stderr, "FAIL table: row %s\n", cell);
        }
    }
    CHECK(strstr(text, "Subject task") != NULL);
    CHECK((strstr(text, "Style task") != NULL) == (c->n_style_concepts > 0));
    CHECK((strstr(text, "Text-to-image") != NULL) == (r->t2i_n > 0));
    free(text);
}

/* ---------------- the tests ---------------- */

static void test_full(const char *root, const char *model, const char *ev, const char *data) {
    char work[300], json[300], p[600];
    snprintf(work, sizeof work, "%s/work_full", root);
    snprintf(json, sizeof json, "%s/full.json", root);
    lk_emojibench_config c = small_config(model, ev, data, work);
    log_count lc = {0};
    c.log = on_log;
    c.progress = on_progress;
    c.log_ud = &lc;
    lk_emojibench_result r;
    const double t = lk_t_now();
    CHECK_OK(lk_emojibench_run(&c, &r));
    check_progress("full run", &lc);
    printf("     full run: %.1f s (reported %.1f s), %d log lines\n", lk_t_now() - t, r.seconds, lc.lines);
    CHECK(r.seconds > 0.0 && lc.lines > 0 && lc.saw_subject && lc.saw_style);
    CHECK(r.n_subject_concepts == 2 && r.n_style_concepts == 2);
    /* subject: 2 real images (the two input styles) per concept; seeds per concept otherwise */
    const int want_subject[LK_EB_ROWS] = {2 * 2, 2, 2, 2, 2, 2};
    /* style: the drawn concept's 3 generator-style images; seeds per drawn concept otherwise */
    const int want_style[LK_EB_ROWS] = {3 * 2, 2, 2, 2, 2, 2};
    check_rows("subject", r.subject, want_subject, c.rows);
    check_rows("style  ", r.style, want_style, c.rows);
    /* TI saves an embedding (about a KB), DreamBooth a whole model folder */
    for (int t2 = 0; t2 < 2; t2++) {
        const lk_emojibench_row *rows = t2 ? r.style : r.subject;
        CHECK(rows[LK_EB_TI].file_bytes < 16e3);
        CHECK(rows[LK_EB_DREAMBOOTH].file_bytes > 1e6);
        CHECK(rows[LK_EB_DREAMBOOTH].file_bytes > 100.0 * rows[LK_EB_TI].file_bytes);
        CHECK(rows[LK_EB_LORA].file_bytes < rows[LK_EB_DREAMBOOTH].file_bytes);
    }
    /* text-to-image: 2 concepts x 3 generator styles */
    CHECK(r.t2i_n == 6);
    CHECK(r.t2i_top1 >= 0.0 && r.t2i_top1 <= r.t2i_top5 && r.t2i_top5 <= 1.0);
    CHECK(r.real_top1 >= 0.0 && r.real_top1 <= r.real_top5 && r.real_top5 <= 1.0);
    /* the methods' outputs are in the work folder */
    snprintf(p, sizeof p, "%s/subject/1f308/textual_inversion.safetensors", work);
    CHECK(exists(p));
    snprintf(p, sizeof p, "%s/subject/1f98a/dreambooth/unet", work);
    CHECK(exists(p));
    snprintf(p, sizeof p, "%s/style/lora.safetensors", work);
    CHECK(exists(p));
    snprintf(p, sizeof p, "%s/style/custom_diffusion.safetensors", work);
    CHECK(exists(p));
    CHECK_OK(lk_emojibench_write_json(&c, &r, json));
    check_json(json, &r, c.rows);
    check_print(&c, &r);
    snprintf(p, sizeof p, "%s/none/x.json", root);
    CHECK(lk_emojibench_write_json(&c, &r, p) == LK_ERR_IO && strstr(lk_last_error(), p));
}

/* real + baseline only: no method trains, no method row has images */
static void test_mask(const char *root, const char *model, const char *ev, const char *data) {
    char work[300], json[300], p[600];
    snprintf(work, sizeof work, "%s/work_mask", root);
    snprintf(json, sizeof json, "%s/mask.json", root);
    lk_emojibench_config c = small_config(model, ev, data, work);
    c.rows = (1u << LK_EB_REAL) | (1u << LK_EB_BASELINE);
    c.n_t2i_concepts = 0;
    log_count lc = {0};
    c.progress = on_progress;
    c.log_ud = &lc;
    lk_emojibench_result r;
    CHECK_OK(lk_emojibench_run(&c, &r));
    check_progress("real + baseline", &lc);
    const int want_subject[LK_EB_ROWS] = {4, 2, 0, 0, 0, 0}, want_style[LK_EB_ROWS] = {6, 2, 0, 0, 0, 0};
    check_rows("subject", r.subject, want_subject, c.rows);
    check_rows("style  ", r.style, want_style, c.rows);
    CHECK(r.t2i_n == 0);
    snprintf(p, sizeof p, "%s/subject", work);
    CHECK(!exists(p));
    snprintf(p, sizeof p, "%s/style", work);
    CHECK(!exists(p));
    CHECK_OK(lk_emojibench_write_json(&c, &r, json));
    check_json(json, &r, c.rows);
    check_print(&c, &r);
    /* no style task: its rows stay empty */
    c.n_style_concepts = 0;
    c.rows = 1u << LK_EB_REAL;
    CHECK_OK(lk_emojibench_run(&c, &r));
    CHECK(r.subject[LK_EB_REAL].n == 4 && r.subject[LK_EB_BASELINE].n == 0 && r.style[LK_EB_REAL].n == 0);
    CHECK(r.n_style_concepts == 0);
    check_print(&c, &r);
    /* more concepts asked than the data set has: the counts say what was drawn (3 plain
     * concepts in all 4 styles besides the 5 style inputs; 2 held-out concepts) */
    c.n_style_concepts = 10;
    c.n_concepts = 5;
    CHECK_OK(lk_emojibench_run(&c, &r));
    CHECK(r.n_style_concepts == 3 && r.style[LK_EB_REAL].n == 3 * 3);
    CHECK(r.n_subject_concepts == 2 && r.subject[LK_EB_REAL].n == 2 * 2);
}

/* held-out concepts drawn the same in every style: the real row's subject fidelity is 1 */
static void test_real_identical(const char *root, const char *model, const char *ev,
                                const char *same_data, double normal_real) {
    char work[300];
    snprintf(work, sizeof work, "%s/work_same", root);
    lk_emojibench_config c = small_config(model, ev, same_data, work);
    c.rows = 1u << LK_EB_REAL;
    c.n_style_concepts = 0;
    c.n_t2i_concepts = 0;
    c.n_concepts = 0; /* all: both */
    lk_emojibench_result r;
    CHECK_OK(lk_emojibench_run(&c, &r));
    CHECK(r.n_subject_concepts == 2 && r.subject[LK_EB_REAL].n == 4);
    printf("     real row, identical images: subject fidelity %.7f (distinct styles: %.7f)\n",
           r.subject[LK_EB_REAL].subject, normal_real);
    CHECK(fabs(r.subject[LK_EB_REAL].subject - 1.0) < 1e-5);
    CHECK(normal_real < r.subject[LK_EB_REAL].subject);
}

static void test_errors(const char *root, const char *model, const char *ev, const char *data) {
    char work[300], none[300];
    snprintf(work, sizeof work, "%s/work_err", root);
    snprintf(none, sizeof none, "%s/missing", root);
    lk_emojibench_result r;
    lk_emojibench_config c = small_config(model, ev, data, work);
    c.rows = 1u << LK_EB_REAL;
    c.data_dir = none;
    CHECK(lk_emojibench_run(&c, &r) != LK_OK && strstr(lk_last_error(), none));
    printf("     missing data: %s\n", lk_last_error());
    c = small_config(model, none, data, work);
    CHECK(lk_emojibench_run(&c, &r) != LK_OK && strstr(lk_last_error(), none));
    printf("     missing evaluator: %s\n", lk_last_error());
    c = small_config(none, ev, data, work);
    CHECK(lk_emojibench_run(&c, &r) != LK_OK && strstr(lk_last_error(), none));
    printf("     missing model: %s\n", lk_last_error());
    c = small_config(model, ev, data, NULL);
    CHECK(lk_emojibench_run(&c, &r) == LK_ERR_INVALID);
    c = small_config(model, ev, data, work);
    c.seeds = 0;
    CHECK(lk_emojibench_run(&c, &r) == LK_ERR_INVALID);
    c.seeds = 1;
    c.sample_steps = 0;
    CHECK(lk_emojibench_run(&c, &r) == LK_ERR_INVALID);
    CHECK(lk_emojibench_run(NULL, &r) == LK_ERR_INVALID);
    CHECK(lk_emojibench_run(&c, NULL) == LK_ERR_INVALID);
    CHECK(lk_emojibench_write_json(NULL, &r, work) == LK_ERR_INVALID);
    /* cancelled: stops with LK_ERR_INTERRUPTED */
    c = small_config(model, ev, data, work);
    volatile sig_atomic_t cancel = 1;
    c.cancel = &cancel;
    CHECK(lk_emojibench_run(&c, &r) == LK_ERR_INTERRUPTED);
    /* row names */
    CHECK(!strcmp(lk_emojibench_row_name(LK_EB_REAL), "real") &&
          !strcmp(lk_emojibench_row_name(LK_EB_CUSTOM), "custom_diffusion"));
    CHECK(lk_emojibench_row_name(-1) == NULL && lk_emojibench_row_name(LK_EB_ROWS) == NULL);
}

int main(void) {
    char root[] = "/tmp/lk_emojibench_XXXXXX";
    REQUIRE(mkdtemp(root));
    char data[300], same[300], model[300], ev[300];
    snprintf(data, sizeof data, "%s/emoji", root);
    snprintf(same, sizeof same, "%s/emoji_same", root);
    snprintf(model, sizeof model, "%s/model", root);
    snprintf(ev, sizeof ev, "%s/runs/eval/export", root);
    REQUIRE(lk_t_write_emoji_set(data, CONCEPTS, N_CONCEPTS, false));
    REQUIRE(lk_t_write_emoji_set(same, CONCEPTS, N_CONCEPTS, true));
    lk_t_phase("data sets written");
    const lk_status ms = make_models(root, data);
    CHECK_OK(ms);
    REQUIRE(ms == LK_OK);
    lk_t_phase("generator + evaluator pretrained");
    test_errors(root, model, ev, data);
    lk_t_phase("errors");
    test_full(root, model, ev, data);
    lk_t_phase("full run");
    test_mask(root, model, ev, data);
    lk_t_phase("rows mask");
    /* the real row of the normal data set, for comparison */
    char work[300];
    snprintf(work, sizeof work, "%s/work_real", root);
    lk_emojibench_config c = small_config(model, ev, data, work);
    c.rows = 1u << LK_EB_REAL;
    c.n_style_concepts = c.n_t2i_concepts = 0;
    lk_emojibench_result r;
    CHECK_OK(lk_emojibench_run(&c, &r));
    test_real_identical(root, model, ev, same, r.subject[LK_EB_REAL].subject);
    lk_t_phase("real-row sanity");
    lk_t_remove_tmp(root);
    return lk_t_done();
}
