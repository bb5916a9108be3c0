/* html_report.c: the self-contained HTML page of a personalization run (lk_report_write_html):
 * base64-embedded images, candidates ranked by score, an inline-SVG loss curve with its EMA. */
#define _POSIX_C_SOURCE 200809L
#include "likeness/report.h"
#include "likeness/image.h"
#include "core/fileio.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- a growable byte buffer; the first allocation failure sets oom and later writes are
 * dropped, so the page is built without checking every call ---- */
typedef struct sbuf {
    char *p;
    size_t n, cap;
    bool oom;
} sbuf;

static bool sb_reserve(sbuf *b, size_t extra) {
    if (b->oom) return false;
    size_t need;
    if (lk_add_overflow(b->n, extra, &need) || lk_add_overflow(need, 1, &need)) {
        b->oom = true;
        return false;
    }
    if (need <= b->cap) return true;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < need) {
        if (lk_mul_overflow(cap, 2, &cap)) {
            cap = need;
            break;
        }
    }
    char *q = realloc(b->p, cap);
    if (!q) {
        b->oom = true;
        return false;
    }
    b->p = q;
    b->cap = cap;
    return true;
}

static void sb_put(sbuf *b, const char *s, size_t len) {
    if (!sb_reserve(b, len)) return;
    memcpy(b->p + b->n, s, len);
    b->n += len;
    b->p[b->n] = '\0';
}

static void sb_puts(sbuf *b, const char *s) { sb_put(b, s, strlen(s)); }

#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
static void sb_printf(sbuf *b, const char *fmt, ...) {
    char small[256];
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (k < 0) {
        b->oom = true;
        return;
    }
    if ((size_t)k < sizeof small) {
        sb_put(b, small, (size_t)k);
        return;
    }
    if (!sb_reserve(b, (size_t)k)) return;
    va_start(ap, fmt);
    vsnprintf(b->p + b->n, (size_t)k + 1, fmt, ap);
    va_end(ap);
    b->n += (size_t)k;
}

/* Length of the well-formed UTF-8 sequence at s (1-4), or 0 if it is not one (overlong forms,
 * surrogates and code points above U+10FFFF are not). */
static int utf8_seq_len(const unsigned char *s) {
    unsigned c = s[0];
    if (c < 0x80) return 1;
    if (c >= 0xC2 && c <= 0xDF) return (s[1] & 0xC0) == 0x80 ? 2 : 0;
    if (c >= 0xE0 && c <= 0xEF) {
        unsigned lo = c == 0xE0 ? 0xA0 : 0x80, hi = c == 0xED ? 0x9F : 0xBF;
        if (s[1] < lo || s[1] > hi) return 0;
        return (s[2] & 0xC0) == 0x80 ? 3 : 0;
    }
    if (c >= 0xF0 && c <= 0xF4) {
        unsigned lo = c == 0xF0 ? 0x90 : 0x80, hi = c == 0xF4 ? 0x8F : 0xBF;
        if (s[1] < lo || s[1] > hi) return 0;
        if ((s[2] & 0xC0) != 0x80) return 0;
        return (s[3] & 0xC0) == 0x80 ? 4 : 0;
    }
    return 0;
}

/* Append s as HTML text, safe in element content and in quoted attribute values: & < > " '
 * become entities, invalid UTF-8 and control characters (other than tab and newline) U+FFFD.
 * NULL appends nothing. */
static void sb_text(sbuf *b, const char *s) {
    static const char repl[] = "\xEF\xBF\xBD";
    if (!s) return;
    const unsigned char *u = (const unsigned char *)s;
    while (*u) {
        size_t run = 0; /* a run of characters that need no change */
        while (u[run] >= 0x20 && u[run] < 0x7F && !strchr("&<>\"'", u[run])) run++;
        if (run) {
            sb_put(b, (const char *)u, run);
            u += run;
            continue;
        }
        unsigned c = *u;
        switch (c) {
        case '&': sb_puts(b, "&amp;"); u++; continue;
        case '<': sb_puts(b, "&lt;"); u++; continue;
        case '>': sb_puts(b, "&gt;"); u++; continue;
        case '"': sb_puts(b, "&quot;"); u++; continue;
        case '\'': sb_puts(b, "&#39;"); u++; continue;
        case '\t': case '\n': sb_put(b, (const char *)u, 1); u++; continue;
        default: break;
        }
        if (c < 0x80) { /* other C0 controls, DEL */
            sb_put(b, repl, 3);
            u++;
            continue;
        }
        int len = utf8_seq_len(u);
        /* C1 controls U+0080..U+009F are C2 80..C2 9F */
        if (len == 0 || (len == 2 && c == 0xC2 && u[1] < 0xA0)) {
            sb_put(b, repl, 3);
            u += len ? len : 1;
            continue;
        }
        sb_put(b, (const char *)u, (size_t)len);
        u += len;
    }
}

static void sb_base64(sbuf *b, const uint8_t *d, size_t n) {
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t out = (n / 3 + (n % 3 != 0)) * 4;
    if (!sb_reserve(b, out)) return;
    char *o = b->p + b->n;
    size_t i = 0;
    for (; i + 3 <= n; i += 3) {
        uint32_t v = (uint32_t)d[i] << 16 | (uint32_t)d[i + 1] << 8 | d[i + 2];
        *o++ = tab[v >> 18];
        *o++ = tab[(v >> 12) & 63];
        *o++ = tab[(v >> 6) & 63];
        *o++ = tab[v & 63];
    }
    if (i < n) {
        uint32_t v = (uint32_t)d[i] << 16 | (i + 1 < n ? (uint32_t)d[i + 1] << 8 : 0u);
        *o++ = tab[v >> 18];
        *o++ = tab[(v >> 12) & 63];
        *o++ = i + 1 < n ? tab[(v >> 6) & 63] : '=';
        *o++ = '=';
    }
    b->n += out;
    b->p[b->n] = '\0';
}

/* A non-negative SVG coordinate with one decimal, independent of the C locale. */
static void sb_coord(sbuf *b, double v) {
    if (!(v > 0.0)) v = 0.0;
    if (v > 1e6) v = 1e6;
    long t = lround(v * 10.0);
    sb_printf(b, "%ld.%ld", t / 10, t % 10);
}

/* ---- images ---- */

/* Append `<img src="data:MIME;base64,..." alt="ALT">` for the file at path. */
static lk_status put_image(sbuf *b, const char *path, const char *alt) {
    char *raw = NULL;
    size_t n = 0;
    lk_status st = lk__read_file(path, LK_REPORT_MAX_IMAGE_BYTES, &raw, &n);
    if (st == LK_ERR_FORMAT) /* lk__read_file's only FORMAT failure: over the limit */
        st = lk_fail(LK_ERR_UNSUPPORTED, "%s: larger than the %u MiB limit of report images", path,
                     LK_REPORT_MAX_IMAGE_BYTES >> 20);
    const uint8_t *d = (const uint8_t *)raw;
    const char *mime = NULL;
    if (st == LK_OK) {
        switch (lk_image_sniff(d, n)) {
        case LK_IMAGE_PNG: mime = "image/png"; break;
        case LK_IMAGE_JPEG: mime = "image/jpeg"; break;
        case LK_IMAGE_WEBP: mime = "image/webp"; break;
        default: st = lk_fail(LK_ERR_FORMAT, "%s: not a PNG, JPEG or WebP file", path); break;
        }
    }
    if (st == LK_OK) {
        sb_printf(b, "<img src=\"data:%s;base64,", mime);
        sb_base64(b, d, n);
        sb_puts(b, "\" alt=\"");
        sb_text(b, alt);
        sb_puts(b, "\">");
    }
    free(raw);
    return st;
}

/* ---- ranking ---- */

typedef struct ranked {
    double score;
    int idx;
} ranked;

/* Highest score first, NAN last, ties by input order. */
static int cmp_ranked(const void *pa, const void *pb) {
    const ranked *a = pa, *b = pb;
    bool na = isnan(a->score), nb = isnan(b->score);
    if (na != nb) return na ? 1 : -1;
    if (!na && a->score != b->score) return a->score > b->score ? -1 : 1;
    return (a->idx > b->idx) - (a->idx < b->idx);
}

/* ---- the loss plot ---- */

enum { PW = 640, PH = 280, ML = 72, MR = 20, MT = 16, MB = 48 };

typedef struct plot_map {
    int n;
    double lo, hi;
} plot_map;

static double map_x(const plot_map *m, int i) { /* i: 0-based step index */
    double t = m->n > 1 ? (double)i / (double)(m->n - 1) : 0.5;
    return ML + t * (PW - ML - MR);
}

static double map_y(const plot_map *m, double v) {
    double t = (v - m->lo) / (m->hi - m->lo);
    return MT + (1.0 - t) * (PH - MT - MB);
}

static void put_vertex(sbuf *b, const plot_map *m, int i, double v) {
    sb_coord(b, map_x(m, i));
    sb_puts(b, ",");
    sb_coord(b, map_y(m, v));
    sb_puts(b, " ");
}

static void put_loss_plot(sbuf *b, const float *loss, int n) {
    double mn = INFINITY, mx = -INFINITY, last = 0.0, ema = 0.0;
    int nf = 0;
    for (int i = 0; i < n; i++) {
        double v = loss[i];
        if (!isfinite(v)) continue;
        mn = v < mn ? v : mn;
        mx = v > mx ? v : mx;
        ema = nf == 0 ? v : 0.9 * ema + 0.1 * v;
        last = v;
        nf++;
    }
    if (nf == 0) {
        sb_puts(b, "<p class=\"empty\">no loss recorded</p>\n");
        return;
    }
    plot_map m = {n, mn, mx};
    if (!(mx - mn > 1e-12 * fmax(1.0, fabs(mx)))) { /* flat: centre it */
        double d = fabs(mx) > 0.0 ? 0.05 * fabs(mx) : 1.0;
        m.lo = mn - d;
        m.hi = mx + d;
    }
    const bool binned = n > LK_REPORT_MAX_PLOT_POINTS;
    const int nbins = LK_REPORT_MAX_PLOT_POINTS / 2;
    const bool dots = (binned ? 2 * nbins : nf) <= 400;

    sb_printf(b, "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 %d %d\" width=\"%d\" "
                 "height=\"%d\" role=\"img\" aria-label=\"training loss per step\">\n",
              PW, PH, PW, PH);
    sb_puts(b, "<defs><marker id=\"lk-dot\" viewBox=\"0 0 4 4\" refX=\"2\" refY=\"2\" "
               "markerWidth=\"4\" markerHeight=\"4\" markerUnits=\"userSpaceOnUse\">"
               "<circle cx=\"2\" cy=\"2\" r=\"1.5\" fill=\"#8fb3d9\"/></marker></defs>\n");
    /* axes, min/max ticks and labels */
    sb_puts(b, "<g class=\"axes\" stroke=\"#444\" stroke-width=\"1\">");
    sb_printf(b, "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\"/>", ML, MT, ML, PH - MB);
    sb_printf(b, "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\"/>", ML, PH - MB, PW - MR, PH - MB);
    const double yt[2] = {mn, mx};
    for (int k = 0; k < (mx > mn ? 2 : 1); k++) {
        sb_printf(b, "<line x1=\"%d\" x2=\"%d\" y1=\"", ML - 5, ML);
        sb_coord(b, map_y(&m, yt[k]));
        sb_puts(b, "\" y2=\"");
        sb_coord(b, map_y(&m, yt[k]));
        sb_puts(b, "\"/>");
    }
    const int xt[2] = {0, n - 1};
    for (int k = 0; k < (n > 1 ? 2 : 1); k++) {
        sb_puts(b, "<line x1=\"");
        sb_coord(b, map_x(&m, xt[k]));
        sb_puts(b, "\" x2=\"");
        sb_coord(b, map_x(&m, xt[k]));
        sb_printf(b, "\" y1=\"%d\" y2=\"%d\"/>", PH - MB, PH - MB + 5);
    }
    sb_puts(b, "</g>\n<g class=\"labels\" font-family=\"sans-serif\" font-size=\"12\" fill=\"#333\">");
    for (int k = 0; k < (mx > mn ? 2 : 1); k++) {
        sb_printf(b, "<text x=\"%d\" y=\"", ML - 8);
        sb_coord(b, map_y(&m, yt[k]) + 4.0);
        sb_printf(b, "\" text-anchor=\"end\">%.4g</text>", yt[k]);
    }
    for (int k = 0; k < (n > 1 ? 2 : 1); k++) {
        sb_puts(b, "<text x=\"");
        sb_coord(b, map_x(&m, xt[k]));
        sb_printf(b, "\" y=\"%d\" text-anchor=\"middle\">%d</text>", PH - MB + 18, xt[k] + 1);
    }
    sb_printf(b, "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\">step</text>", (ML + PW - MR) / 2,
              PH - 8);
    sb_printf(b, "<text x=\"16\" y=\"%d\" text-anchor=\"middle\" transform=\"rotate(-90 16 %d)\">"
                 "loss</text>",
              (MT + PH - MB) / 2, (MT + PH - MB) / 2);
    sb_printf(b, "<text x=\"%d\" y=\"%d\" text-anchor=\"end\" fill=\"#5b8cc0\">raw</text>",
              PW - MR - 70, MT + 12);
    sb_printf(b, "<text x=\"%d\" y=\"%d\" text-anchor=\"end\" fill=\"#d2462b\">EMA 0.9</text>",
              PW - MR, MT + 12);
    sb_puts(b, "</g>\n");

    /* raw loss: every finite step, or per bin the min and max in step order */
    sb_printf(b, "<polyline class=\"raw\" fill=\"none\" stroke=\"#8fb3d9\" stroke-width=\"1\"%s "
                 "points=\"",
              dots ? " marker-start=\"url(#lk-dot)\" marker-mid=\"url(#lk-dot)\" "
                     "marker-end=\"url(#lk-dot)\""
                   : "");
    if (!binned) {
        for (int i = 0; i < n; i++)
            if (isfinite(loss[i])) put_vertex(b, &m, i, loss[i]);
    } else {
        for (int k = 0; k < nbins; k++) {
            int s = (int)((int64_t)k * n / nbins), e = (int)((int64_t)(k + 1) * n / nbins);
            int imn = -1, imx = -1;
            for (int i = s; i < e; i++) {
                if (!isfinite(loss[i])) continue;
                if (imn < 0 || loss[i] < loss[imn]) imn = i;
                if (imx < 0 || loss[i] > loss[imx]) imx = i;
            }
            if (imn < 0) continue;
            int a = imn < imx ? imn : imx, c = imn < imx ? imx : imn;
            put_vertex(b, &m, a, loss[a]);
            if (c != a) put_vertex(b, &m, c, loss[c]);
        }
    }
    sb_puts(b, "\"/>\n");

    /* the moving average, at every finite step or at the last finite step of each bin */
    sb_puts(b, "<polyline class=\"ema\" fill=\"none\" stroke=\"#d2462b\" stroke-width=\"2\" "
               "points=\"");
    double e = 0.0;
    int seen = 0, bin = 0, bin_end = binned ? (int)((int64_t)n / nbins) : 0, pend = -1;
    for (int i = 0; i < n; i++) {
        if (binned && i == bin_end) {
            if (pend >= 0) put_vertex(b, &m, pend, e);
            pend = -1;
            bin++;
            bin_end = (int)((int64_t)(bin + 1) * n / nbins);
        }
        if (!isfinite(loss[i])) continue;
        e = seen++ == 0 ? (double)loss[i] : 0.9 * e + 0.1 * (double)loss[i];
        if (binned)
            pend = i;
        else
            put_vertex(b, &m, i, e);
    }
    if (binned && pend >= 0) put_vertex(b, &m, pend, e);
    sb_puts(b, "\"/>\n</svg>\n");
    sb_printf(b, "<p class=\"note\">%d steps; last loss %.4g, moving average %.4g; range "
                 "%.4g .. %.4g.</p>\n",
              n, last, ema, mn, mx);
}

/* ---- the page ---- */

static const char css[] =
    "body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;color:#222;background:#fafafa;"
    "max-width:72em;margin:1.5em auto;padding:0 1em;line-height:1.4}\n"
    "h1{font-size:1.6em;margin-bottom:.3em}h2{font-size:1.2em;margin-top:1.6em}\n"
    "table.info{border-collapse:collapse}\n"
    "table.info th,table.info td{text-align:left;vertical-align:top;padding:.2em .9em .2em 0;"
    "border-bottom:1px solid #e2e2e2}\n"
    "table.info th{font-weight:600;color:#555}\n"
    ".grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(160px,1fr));gap:1em;"
    "list-style:none;padding:0;margin:0}\n"
    "figure{margin:0;padding:.6em;background:#fff;border:1px solid #ddd;border-radius:6px}\n"
    "img{display:block;width:128px;height:128px;object-fit:contain;margin:0 auto;"
    "image-rendering:crisp-edges;image-rendering:pixelated}\n"
    "figcaption{font-size:.85em;margin-top:.5em;overflow-wrap:anywhere}\n"
    ".rank{font-weight:700;font-size:1.1em}\n"
    ".best figure{border:3px solid #e0a800;background:#fffbea}\n"
    ".badge{background:#e0a800;color:#fff;border-radius:3px;padding:0 .35em;margin-left:.4em;"
    "font-size:.8em;font-weight:700}\n"
    ".score,.pscore,.seed,.prompt{display:block}\n"
    ".seed{color:#777}.prompt{color:#444;margin-top:.2em}\n"
    ".empty,.note{color:#777}.empty{font-style:italic}\n"
    "svg{background:#fff;border:1px solid #ddd;max-width:100%;height:auto}\n";

static lk_status check_args(const lk_report *r, const char *path) {
    if (!r || !path || !*path)
        return lk_fail(LK_ERR_INVALID, "report: %s is NULL or empty", r ? "path" : "report");
    if (r->n_info < 0 || r->n_inputs < 0 || r->n_cands < 0 || r->n_loss < 0)
        return lk_fail(LK_ERR_INVALID, "report: negative count (info %d, inputs %d, candidates "
                                       "%d, loss %d)",
                       r->n_info, r->n_inputs, r->n_cands, r->n_loss);
    if ((r->n_info && !r->info) || (r->n_inputs && !r->inputs) || (r->n_cands && !r->cands) ||
        (r->n_loss && !r->loss))
        return lk_fail(LK_ERR_INVALID, "report: an array is NULL but its count is not 0");
    for (int i = 0; i < r->n_inputs; i++)
        if (!r->inputs[i].path) return lk_fail(LK_ERR_INVALID, "report: input image %d has no path", i);
    for (int i = 0; i < r->n_cands; i++)
        if (!r->cands[i].path) return lk_fail(LK_ERR_INVALID, "report: candidate %d has no path", i);
    return LK_OK;
}

static lk_status build_page(sbuf *b, const lk_report *r) {
    const char *title = r->title ? r->title : "likeness report";
    const char *slabel = r->score_label ? r->score_label : "score";
    const char *plabel = r->prompt_score_label ? r->prompt_score_label : "prompt score";
    lk_status st = LK_OK;

    sb_puts(b, "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
               "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n");
    sb_printf(b, "<meta name=\"generator\" content=\"likeness %s\">\n<title>", lk_version());
    sb_text(b, title);
    sb_printf(b, "</title>\n<style>\n%s</style>\n</head>\n<body>\n<h1>", css);
    sb_text(b, title);
    sb_puts(b, "</h1>\n");
    if (r->summary) {
        sb_puts(b, "<p class=\"summary\">");
        sb_text(b, r->summary);
        sb_puts(b, "</p>\n");
    }

    if (r->n_info > 0) {
        sb_puts(b, "<section id=\"settings\">\n<h2>Settings</h2>\n<table class=\"info\">\n");
        for (int i = 0; i < r->n_info; i++) {
            sb_puts(b, "<tr><th>");
            sb_text(b, r->info[i].key);
            sb_puts(b, "</th><td>");
            sb_text(b, r->info[i].value);
            sb_puts(b, "</td></tr>\n");
        }
        sb_puts(b, "</table>\n</section>\n");
    }

    sb_printf(b, "<section id=\"inputs\">\n<h2>Training images (%d)</h2>\n", r->n_inputs);
    if (r->n_inputs == 0) sb_puts(b, "<p class=\"empty\">no training images</p>\n");
    else sb_puts(b, "<div class=\"grid\">\n");
    for (int i = 0; i < r->n_inputs && st == LK_OK; i++) {
        const lk_report_image *im = &r->inputs[i];
        sb_puts(b, "<figure class=\"input\">");
        st = put_image(b, im->path, im->caption ? im->caption : "training image");
        if (st != LK_OK) st = lk_fail_prefix(st, "report: input image %d: ", i);
        if (im->caption) {
            sb_puts(b, "<figcaption>");
            sb_text(b, im->caption);
            sb_puts(b, "</figcaption>");
        }
        sb_puts(b, "</figure>\n");
    }
    if (r->n_inputs > 0) sb_puts(b, "</div>\n");
    sb_puts(b, "</section>\n");
    if (st != LK_OK) return st;

    sb_printf(b, "<section id=\"candidates\">\n<h2>Candidates ranked by ");
    sb_text(b, slabel);
    sb_printf(b, " (%d)</h2>\n", r->n_cands);
    if (r->n_cands == 0) {
        sb_puts(b, "<p class=\"empty\">no candidates</p>\n");
    } else {
        ranked *ord = malloc(sizeof(ranked) * (size_t)r->n_cands);
        if (!ord) return lk_fail(LK_ERR_NOMEM, "report: out of memory");
        for (int i = 0; i < r->n_cands; i++) ord[i] = (ranked){r->cands[i].score, i};
        qsort(ord, (size_t)r->n_cands, sizeof *ord, cmp_ranked);
        sb_puts(b, "<ol class=\"grid ranked\">\n");
        for (int k = 0; k < r->n_cands && st == LK_OK; k++) {
            const lk_report_candidate *c = &r->cands[ord[k].idx];
            sb_printf(b, "<li class=\"cand%s\" data-rank=\"%d\"><figure>", k == 0 ? " best" : "",
                      k + 1);
            st = put_image(b, c->path, c->prompt ? c->prompt : "candidate");
            if (st != LK_OK) {
                st = lk_fail_prefix(st, "report: candidate %d: ", ord[k].idx);
                break;
            }
            sb_printf(b, "<figcaption><span class=\"rank\">#%d</span>%s", k + 1,
                      k == 0 ? "<span class=\"badge\">best</span>" : "");
            sb_puts(b, "<span class=\"score\">");
            sb_text(b, slabel);
            if (isnan(c->score)) sb_puts(b, ": n/a</span>");
            else sb_printf(b, ": %.3f</span>", (double)c->score);
            if (!isnan(c->prompt_score)) {
                sb_puts(b, "<span class=\"pscore\">");
                sb_text(b, plabel);
                sb_printf(b, ": %.3f</span>", (double)c->prompt_score);
            }
            sb_printf(b, "<span class=\"seed\">seed %llu</span>", (unsigned long long)c->seed);
            if (c->prompt) {
                sb_puts(b, "<span class=\"prompt\">");
                sb_text(b, c->prompt);
                sb_puts(b, "</span>");
            }
            sb_puts(b, "</figcaption></figure></li>\n");
        }
        free(ord);
        if (st != LK_OK) return st;
        sb_puts(b, "</ol>\n");
    }
    sb_puts(b, "</section>\n");

    sb_puts(b, "<section id=\"loss\">\n<h2>Training loss</h2>\n");
    put_loss_plot(b, r->loss, r->n_loss);
    sb_puts(b, "</section>\n</body>\n</html>\n");
    if (b->oom) return lk_fail(LK_ERR_NOMEM, "report: out of memory building the page");
    return LK_OK;
}

/* Write n bytes to path via path.tmp.<pid>.<k>, fsync and rename. */
static lk_status write_atomic(const char *path, const char *data, size_t n) {
    static atomic_uint counter;
    size_t len = strlen(path) + 48;
    char *tmp = malloc(len);
    if (!tmp) return lk_fail(LK_ERR_NOMEM, "report: out of memory");
    snprintf(tmp, len, "%s.tmp.%ld.%u", path, (long)getpid(), atomic_fetch_add(&counter, 1u));
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL, 0666);
    if (fd < 0) {
        lk_status st = lk_fail(LK_ERR_IO, "%s: cannot create: %s", tmp, strerror(errno));
        free(tmp);
        return st;
    }
    size_t o = 0;
    int err = 0;
    while (o < n) {
        ssize_t k = write(fd, data + o, n - o);
        if (k < 0) {
            if (errno == EINTR) continue;
            err = errno;
            break;
        }
        o += (size_t)k;
    }
    if (!err && fsync(fd) != 0) err = errno;
    if (close(fd) != 0 && !err) err = errno;
    lk_status st = LK_OK;
    if (err) {
        st = lk_fail(LK_ERR_IO, "%s: write failed: %s", tmp, strerror(err));
        unlink(tmp);
    } else if (rename(tmp, path) != 0) {
        st = lk_fail(LK_ERR_IO, "%s: cannot rename %s over it: %s", path, tmp, strerror(errno));
        unlink(tmp);
    }
    free(tmp);
    return st;
}

lk_status lk_report_write_html(const lk_report *r, const char *path) {
    lk_status st = check_args(r, path);
    if (st != LK_OK) return st;
    sbuf b = {0};
    st = build_page(&b, r);
    if (st == LK_OK) st = write_atomic(path, b.p, b.n);
    free(b.p);
    return st;
}
