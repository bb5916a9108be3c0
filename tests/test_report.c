/* test_report.c: lk_report_write_html: embedded images decode back to the files' bytes, ranking,
 * escaping, the SVG loss curve and its EMA, atomic writes and argument/IO failures. */
#define _POSIX_C_SOURCE 200809L
#include <dirent.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"
#include "likeness/report.h"

static char dir[] = "/tmp/lk_test_report_XXXXXX";

static void path_in(char *buf, size_t n, const char *name) { snprintf(buf, n, "%s/%s", dir, name); }

/* Whole file, NUL-terminated (malloc'd), or NULL. */
static char *slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 1 << 16, n = 0;
    char *p = malloc(cap + 1);
    size_t k;
    while (p && (k = fread(p + n, 1, cap - n, f)) > 0) {
        n += k;
        if (n == cap) {
            char *q = realloc(p, 2 * cap + 1);
            if (!q) {
                free(p);
                p = NULL;
                break;
            }
            p = q;
            cap *= 2;
        }
    }
    fclose(f);
    if (p) p[n] = '\0';
    if (len) *len = n;
    return p;
}

static void spit(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    CHECK(f != NULL);
    if (!f) return;
    CHECK(fwrite(data, 1, n, f) == n);
    CHECK(fclose(f) == 0);
}

/* Decode base64 at s up to the first character outside the alphabet; malloc'd bytes. */
static unsigned char *b64_decode(const char *s, size_t *n) {
    static const char al[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t len = 0;
    while (s[len] && strchr(al, s[len])) len++;
    unsigned char *out = malloc(len * 3 / 4 + 3);
    uint32_t acc = 0;
    int bits = 0;
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        acc = acc << 6 | (uint32_t)(strchr(al, s[i]) - al);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (unsigned char)(acc >> bits);
        }
    }
    size_t pad = 0;
    while (s[len + pad] == '=') pad++;
    CHECK((len + pad) % 4 == 0); /* well-formed padding */
    *n = o;
    return out;
}

/* The k-th (0-based) embedded image after position from, decoded; compared with a file. */
static int embedded_equals(const char *from, int k, const char *file) {
    const char *p = from;
    for (int i = 0; i <= k; i++) {
        p = strstr(p, "data:image/png;base64,");
        if (!p) return 0;
        p += strlen("data:image/png;base64,");
    }
    size_t n, fn;
    unsigned char *d = b64_decode(p, &n);
    char *want = slurp(file, &fn);
    int ok = want && n == fn && memcmp(d, want, n) == 0;
    free(d);
    free(want);
    return ok;
}

static int count_str(const char *s, const char *needle) {
    int c = 0;
    for (const char *p = s; (p = strstr(p, needle)) != NULL; p += strlen(needle)) c++;
    return c;
}

/* Number of "x,y" vertices in the points attribute of the polyline with this class. */
static int polyline_points(const char *html, const char *cls, double *last_y) {
    char key[64];
    snprintf(key, sizeof key, "<polyline class=\"%s\"", cls);
    const char *p = strstr(html, key);
    if (!p) return -1;
    p = strstr(p, "points=\"");
    if (!p) return -1;
    p += 8;
    int n = 0;
    double prev_x = -1.0;
    while (*p && *p != '"') {
        char *e;
        double x = strtod(p, &e);
        if (e == p || *e != ',') return -2;
        double y = strtod(e + 1, &e);
        if (!(x > prev_x)) return -3; /* x strictly increasing with the step */
        prev_x = x;
        if (last_y) *last_y = y;
        n++;
        p = e;
        while (*p == ' ') p++;
    }
    return n;
}

/* A copy of html without the base64 payloads, so text searches cannot hit image data. */
static char *strip_data(const char *html) {
    char *o = malloc(strlen(html) + 1), *w = o;
    if (!o) return NULL;
    const char *p = html;
    for (;;) {
        const char *d = strstr(p, ";base64,");
        size_t k = d ? (size_t)(d - p) + 8 : strlen(p);
        memcpy(w, p, k);
        w += k;
        if (!d) break;
        p = d + 8;
        while (*p && *p != '"') p++;
    }
    *w = '\0';
    return o;
}

static int tmp_files_left(void) {
    DIR *d = opendir(dir);
    if (!d) return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (strstr(e->d_name, ".tmp.")) n++;
    closedir(d);
    return n;
}

static void expect_fail(const char *what, lk_status got, lk_status want, const char *msg_part) {
    lk_t_checks++;
    if (got != want || (msg_part && !strstr(lk_last_error(), msg_part))) {
        lk_t_failures++;
        fprintf(stderr, "FAIL %s: got %s (%s), want %s mentioning '%s'\n", what, lk_status_str(got),
                lk_last_error(), lk_status_str(want), msg_part ? msg_part : "");
    }
}

int main(void) {
    REQUIRE(mkdtemp(dir) != NULL);
    char in0[600], in1[600], c0[600], c1[600], c2[600], out[600];
    path_in(in0, sizeof in0, "in0.png");
    path_in(in1, sizeof in1, "in1.png");
    path_in(c0, sizeof c0, "c0.png");
    path_in(c1, sizeof c1, "c1.png");
    path_in(c2, sizeof c2, "c2.png");
    path_in(out, sizeof out, "report.html");
    lk_t_write_subject_png(in0, 16, 16, 1);
    lk_t_write_subject_png(in1, 16, 12, 2);
    lk_t_write_subject_png(c0, 8, 8, 3);
    lk_t_write_subject_png(c1, 8, 8, 4);
    lk_t_write_subject_png(c2, 8, 8, 5);

    const lk_report_image inputs[2] = {{in0, "first <input>"}, {in1, NULL}};
    /* unsorted: c1 is best, then c2, then c0 */
    const lk_report_candidate cands[3] = {
        {c0, "a photo of sks dog", 7, 0.25f, 0.125f},
        {c1, "<script>&\" on the beach", 42, 0.875f, NAN},
        {c2, "sks dog, watercolor", 1234567890123ull, 0.5f, 0.375f},
    };
    const lk_report_kv info[2] = {{"method", "lora"}, {"steps", NULL}};
    float loss[50];
    double ema = 0.0;
    for (int i = 0; i < 50; i++) {
        loss[i] = 0.5f / (1.0f + 0.1f * (float)i) + 0.05f * (float)((i * 7) % 5);
        ema = i == 0 ? (double)loss[i] : 0.9 * ema + 0.1 * (double)loss[i];
    }
    lk_report r = {.title = "Run <script>&\"",
                   .summary = "valid \xF0\x9F\x90\xB6 invalid \xC3\x28 \xED\xA0\x80 ctl \x01 end",
                   .info = info, .n_info = 2, .inputs = inputs, .n_inputs = 2,
                   .cands = cands, .n_cands = 3, .loss = loss, .n_loss = 50,
                   .score_label = "subject fidelity", .prompt_score_label = "prompt fidelity"};

    /* an existing file is replaced */
    spit(out, "old", 3);
    CHECK_OK(lk_report_write_html(&r, out));
    size_t len;
    char *html = slurp(out, &len);
    REQUIRE(html != NULL);
    CHECK(strncmp(html, "<!DOCTYPE html>", 15) == 0);
    CHECK(strlen(html) == len);
    CHECK(tmp_files_left() == 0);

    /* images: the base64 decodes back to the files' bytes, in page order */
    CHECK(count_str(html, "data:image/png;base64,") == 5);
    CHECK(embedded_equals(html, 0, in0));
    CHECK(embedded_equals(html, 1, in1));
    CHECK(!embedded_equals(html, 0, in1));
    const char *cand = strstr(html, "id=\"candidates\"");
    REQUIRE(cand != NULL);
    CHECK(embedded_equals(cand, 0, c1));
    CHECK(embedded_equals(cand, 1, c2));
    CHECK(embedded_equals(cand, 2, c0));
    /* self-contained: every src is a data URI, no script, no external URL (the SVG namespace
     * is an identifier, not a fetch) */
    char *text = strip_data(html);
    REQUIRE(text != NULL);
    CHECK(count_str(text, "src=\"") == count_str(text, "src=\"data:"));
    CHECK(count_str(text, "<script") == 0);
    CHECK(count_str(text, "http") == 1 && strstr(text, "xmlns=\"http://www.w3.org/2000/svg\""));
    CHECK(strstr(html, "image-rendering:pixelated") != NULL);

    /* ranking: #1 0.875 (c1, best), #2 0.500, #3 0.250 */
    const char *r1 = strstr(html, "#1<"), *r2 = strstr(html, "#2<"), *r3 = strstr(html, "#3<");
    REQUIRE(r1 && r2 && r3);
    CHECK(r1 < r2 && r2 < r3);
    const char *s1 = strstr(html, "subject fidelity: 0.875"),
               *s2 = strstr(html, "subject fidelity: 0.500"),
               *s3 = strstr(html, "subject fidelity: 0.250");
    CHECK(s1 && s2 && s3 && r1 < s1 && s1 < r2 && r2 < s2 && s2 < r3 && r3 < s3);
    CHECK(count_str(html, "class=\"cand best\" data-rank=\"1\"") == 1);
    CHECK(count_str(html, "class=\"cand best\"") == 1);
    CHECK(strstr(html, "seed 42<") && strstr(html, "seed 1234567890123<") && strstr(html, "seed 7<"));
    CHECK(strstr(html, "<th>method</th><td>lora</td>") && strstr(html, "<th>steps</th><td></td>"));
    CHECK(strstr(html, "<figcaption>first &lt;input&gt;</figcaption>") != NULL);

    /* prompt score: shown for c2 and c0, not for the NAN one (rank 1) */
    CHECK(count_str(html, "prompt fidelity: ") == 2);
    CHECK(strstr(html, "prompt fidelity: 0.375") > r2 && strstr(html, "prompt fidelity: 0.375") < r3);
    CHECK(strstr(html, "prompt fidelity: 0.125") > r3);
    CHECK(strstr(text, "nan") == NULL && strstr(text, "NaN") == NULL);
    {
        const char *p = strstr(r1, "pscore");
        CHECK(p && p > r2); /* none in rank 1's caption */
    }
    free(text);

    /* escaping: title (in <title> and <h1>), prompt (text and alt attribute) */
    CHECK(strstr(html, "<title>Run &lt;script&gt;&amp;&quot;</title>") != NULL);
    CHECK(strstr(html, "<h1>Run &lt;script&gt;&amp;&quot;</h1>") != NULL);
    CHECK(strstr(html, ">&lt;script&gt;&amp;&quot; on the beach</span>") != NULL);
    CHECK(strstr(html, "alt=\"&lt;script&gt;&amp;&quot; on the beach\"") != NULL);
    CHECK(strstr(html, "<script>") == NULL);
    /* text is valid UTF-8: the emoji kept, bad bytes and controls replaced */
    CHECK(strstr(html, "valid \xF0\x9F\x90\xB6 invalid \xEF\xBF\xBD( \xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD"
                       " ctl \xEF\xBF\xBD end") != NULL);

    /* the loss plot: 50 raw vertices with markers, 50 EMA vertices, labels, ticks, EMA value */
    CHECK(count_str(html, "<svg") == 1);
    double y_raw = 0.0, y_ema = 0.0;
    CHECK(polyline_points(html, "raw", &y_raw) == 50);
    CHECK(polyline_points(html, "ema", &y_ema) == 50);
    CHECK(y_raw > 0.0 && y_ema > 0.0 && fabs(y_raw - y_ema) > 0.5); /* the EMA is smoother */
    CHECK(strstr(html, "marker-mid=\"url(#lk-dot)\"") != NULL);
    CHECK(strstr(html, ">step</text>") && strstr(html, ">loss</text>"));
    CHECK(strstr(html, ">1</text>") && strstr(html, ">50</text>"));
    float mn = loss[0], mx = loss[0];
    for (int i = 1; i < 50; i++) {
        mn = fminf(mn, loss[i]);
        mx = fmaxf(mx, loss[i]);
    }
    char want[128];
    snprintf(want, sizeof want, ">%.4g</text>", (double)mn);
    CHECK(strstr(html, want) != NULL);
    snprintf(want, sizeof want, ">%.4g</text>", (double)mx);
    CHECK(strstr(html, want) != NULL);
    snprintf(want, sizeof want, "moving average %.4g;", ema);
    CHECK(strstr(html, want) != NULL);
    CHECK(strstr(html, "no loss recorded") == NULL);
    free(html);

    /* non-finite losses are skipped; none finite -> "no loss recorded", as for n_loss 0 */
    loss[10] = NAN;
    loss[20] = INFINITY;
    CHECK_OK(lk_report_write_html(&r, out));
    html = slurp(out, NULL);
    CHECK(html && polyline_points(html, "raw", NULL) == 48 && polyline_points(html, "ema", NULL) == 48);
    free(html);
    r.n_loss = 0;
    r.loss = NULL;
    CHECK_OK(lk_report_write_html(&r, out));
    html = slurp(out, NULL);
    CHECK(html && strstr(html, "no loss recorded") && !strstr(html, "<svg"));
    free(html);
    float bad[3] = {NAN, NAN, INFINITY};
    r.loss = bad;
    r.n_loss = 3;
    CHECK_OK(lk_report_write_html(&r, out));
    html = slurp(out, NULL);
    CHECK(html && strstr(html, "no loss recorded") && !strstr(html, "<svg"));
    free(html);

    /* a long run is binned: at most LK_REPORT_MAX_PLOT_POINTS raw vertices, spikes kept */
    enum { NL = 5001 };
    float *longl = malloc(sizeof(float) * NL);
    REQUIRE(longl != NULL);
    for (int i = 0; i < NL; i++) longl[i] = 1.0f + 0.001f * (float)(i % 13);
    longl[3333] = 9.0f;
    r.loss = longl;
    r.n_loss = NL;
    CHECK_OK(lk_report_write_html(&r, out));
    html = slurp(out, NULL);
    REQUIRE(html != NULL);
    int nr = polyline_points(html, "raw", NULL), ne = polyline_points(html, "ema", NULL);
    CHECK(nr > LK_REPORT_MAX_PLOT_POINTS / 2 && nr <= LK_REPORT_MAX_PLOT_POINTS);
    CHECK(ne > 0 && ne <= LK_REPORT_MAX_PLOT_POINTS / 2);
    CHECK(strstr(html, ">5001</text>") && strstr(html, ">9</text>"));
    CHECK(strstr(html, "marker-mid") == NULL);
    free(html);
    free(longl);
    r.loss = loss;
    r.n_loss = 50;

    /* failures leave the existing page untouched and no temporary file behind */
    spit(out, "keep me", 7);
    char missing[600];
    path_in(missing, sizeof missing, "missing.png");
    lk_report_image bad_in[2] = {inputs[0], {missing, "x"}};
    r.inputs = bad_in;
    expect_fail("missing input", lk_report_write_html(&r, out), LK_ERR_IO, "missing.png");
    r.inputs = inputs;
    lk_report_candidate bad_c[3] = {cands[0], cands[1], cands[2]};
    bad_c[2].path = missing;
    r.cands = bad_c;
    expect_fail("missing candidate", lk_report_write_html(&r, out), LK_ERR_IO, "missing.png");
    bad_c[2].path = dir; /* a directory */
    expect_fail("directory", lk_report_write_html(&r, out), LK_ERR_IO, dir);
    char txt[600], big[600];
    path_in(txt, sizeof txt, "notes.txt");
    spit(txt, "not an image", 12);
    bad_c[2].path = txt;
    expect_fail("not an image", lk_report_write_html(&r, out), LK_ERR_FORMAT, "notes.txt");
    path_in(big, sizeof big, "big.png");
    {
        size_t n = (size_t)LK_REPORT_MAX_IMAGE_BYTES + 1;
        unsigned char *b = calloc(n, 1);
        REQUIRE(b != NULL);
        memcpy(b, "\x89PNG\r\n\x1a\n", 8);
        spit(big, b, n);
        free(b);
        bad_c[2].path = big;
        expect_fail("over 8 MiB", lk_report_write_html(&r, out), LK_ERR_UNSUPPORTED, "big.png");
        CHECK(truncate(big, (off_t)LK_REPORT_MAX_IMAGE_BYTES) == 0); /* exactly at the limit: accepted */
        char other[600];
        path_in(other, sizeof other, "other.html");
        CHECK_OK(lk_report_write_html(&r, other));
        remove(other);
    }
    remove(big);
    remove(txt);
    r.cands = cands;

    /* invalid arguments */
    expect_fail("NULL report", lk_report_write_html(NULL, out), LK_ERR_INVALID, NULL);
    expect_fail("NULL path", lk_report_write_html(&r, NULL), LK_ERR_INVALID, NULL);
    expect_fail("empty path", lk_report_write_html(&r, ""), LK_ERR_INVALID, NULL);
    lk_report q = r;
    q.n_cands = -1;
    expect_fail("negative count", lk_report_write_html(&q, out), LK_ERR_INVALID, NULL);
    q = r;
    q.cands = NULL;
    expect_fail("NULL array", lk_report_write_html(&q, out), LK_ERR_INVALID, NULL);
    q = r;
    bad_c[2].path = NULL;
    q.cands = bad_c;
    expect_fail("NULL image path", lk_report_write_html(&q, out), LK_ERR_INVALID, NULL);
    html = slurp(out, NULL);
    CHECK(html && strcmp(html, "keep me") == 0);
    free(html);
    CHECK(tmp_files_left() == 0);

    /* a directory that does not exist: IO error */
    char nodir[600];
    path_in(nodir, sizeof nodir, "no/such/dir/r.html");
    expect_fail("no dir", lk_report_write_html(&r, nodir), LK_ERR_IO, "no/such/dir");

    /* a minimal report: nothing but defaults */
    lk_report empty = {0};
    CHECK_OK(lk_report_write_html(&empty, out));
    html = slurp(out, NULL);
    CHECK(html && strstr(html, "<title>likeness report</title>") && strstr(html, "no candidates") &&
          strstr(html, "no training images") && strstr(html, "no loss recorded"));
    free(html);

    remove(out);
    remove(in0);
    remove(in1);
    remove(c0);
    remove(c1);
    remove(c2);
    CHECK(rmdir(dir) == 0);
    return lk_t_done();
}
