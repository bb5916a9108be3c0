/* infotext.c: the AUTOMATIC1111 "parameters" text of a generated image (its create_infotext and
 * parse_generation_parameters conventions: "prompt\nNegative prompt: ...\nSteps: 20, ..."). */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "likeness/pipeline.h"

/* Contract: see pipeline.h. */
const char *lk_sampler_a1111_name(lk_sampler_kind kind, bool *karras) {
    bool k = false;
    const char *n = "?";
    switch (kind) {
    case LK_SAMPLER_DDIM: n = "DDIM"; break;
    case LK_SAMPLER_EULER: n = "Euler"; break;
    case LK_SAMPLER_EULER_KARRAS: n = "Euler"; k = true; break;
    case LK_SAMPLER_EULER_A: n = "Euler a"; break;
    case LK_SAMPLER_HEUN: n = "Heun"; break;
    case LK_SAMPLER_HEUN_KARRAS: n = "Heun"; k = true; break;
    case LK_SAMPLER_DPMPP_2M: n = "DPM++ 2M"; break;
    case LK_SAMPLER_DPMPP_2M_KARRAS: n = "DPM++ 2M"; k = true; break;
    case LK_SAMPLER_LMS: n = "LMS"; break;
    case LK_SAMPLER_LMS_KARRAS: n = "LMS"; k = true; break;
    default: break;
    }
    if (karras) *karras = k;
    return n;
}

/* ---- a growing string ---- */

typedef struct sbuf {
    char *s;
    size_t n, cap;
    bool oom;
} sbuf;

static void sb_add(sbuf *b, const char *t, size_t len) {
    if (b->oom) return;
    if (b->n + len + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + len + 1) cap *= 2;
        char *s = realloc(b->s, cap);
        if (!s) {
            b->oom = true;
            return;
        }
        b->s = s;
        b->cap = cap;
    }
    memcpy(b->s + b->n, t, len);
    b->n += len;
    b->s[b->n] = '\0';
}

static void sb_str(sbuf *b, const char *t) { sb_add(b, t, strlen(t)); }

static void sb_printf(sbuf *b, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
static void sb_printf(sbuf *b, const char *fmt, ...) {
    char tmp[512];
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (k < 0) return;
    sb_add(b, tmp, (size_t)k < sizeof tmp ? (size_t)k : sizeof tmp - 1);
}

/* Python's repr of a float: the shortest digits that read back to v, fixed notation for
 * decimal exponents in [-4, 16), else d.ddde+XX; integers get ".0". */
static void py_float(char *out, size_t n, double v) {
    if (isnan(v)) {
        snprintf(out, n, "nan");
        return;
    }
    if (isinf(v)) {
        snprintf(out, n, v < 0 ? "-inf" : "inf");
        return;
    }
    char e[64];
    int p = 1;
    for (; p <= 17; p++) {
        snprintf(e, sizeof e, "%.*e", p - 1, v);
        if (strtod(e, NULL) == v) break;
    }
    /* e: [-]d[.ddd]e[+-]XX */
    const char *s = e;
    bool neg = *s == '-';
    if (neg) s++;
    char digits[32];
    int nd = 0;
    for (; *s && *s != 'e'; s++)
        if (*s >= '0' && *s <= '9' && nd < 31) digits[nd++] = *s;
    digits[nd] = '\0';
    while (nd > 1 && digits[nd - 1] == '0') digits[--nd] = '\0';
    int exp10 = *s == 'e' ? atoi(s + 1) : 0;
    char buf[96];
    size_t o = 0;
    if (neg) buf[o++] = '-';
    if (exp10 >= -4 && exp10 < 16) {
        if (exp10 < 0) {
            buf[o++] = '0';
            buf[o++] = '.';
            for (int i = 0; i < -exp10 - 1; i++) buf[o++] = '0';
            for (int i = 0; i < nd; i++) buf[o++] = digits[i];
        } else {
            for (int i = 0; i <= exp10; i++) buf[o++] = i < nd ? digits[i] : '0';
            buf[o++] = '.';
            if (nd > exp10 + 1)
                for (int i = exp10 + 1; i < nd; i++) buf[o++] = digits[i];
            else
                buf[o++] = '0';
        }
        buf[o] = '\0';
    } else {
        buf[o++] = digits[0];
        if (nd > 1) {
            buf[o++] = '.';
            for (int i = 1; i < nd; i++) buf[o++] = digits[i];
        }
        snprintf(buf + o, sizeof buf - o, "e%c%02d", exp10 < 0 ? '-' : '+', exp10 < 0 ? -exp10 : exp10);
    }
    snprintf(out, n, "%s", buf);
}

/* json.dumps(text, ensure_ascii=False) */
static void sb_json(sbuf *b, const char *t) {
    sb_str(b, "\"");
    for (const unsigned char *c = (const unsigned char *)t; *c; c++) {
        switch (*c) {
        case '"': sb_str(b, "\\\""); break;
        case '\\': sb_str(b, "\\\\"); break;
        case '\n': sb_str(b, "\\n"); break;
        case '\r': sb_str(b, "\\r"); break;
        case '\t': sb_str(b, "\\t"); break;
        case '\b': sb_str(b, "\\b"); break;
        case '\f': sb_str(b, "\\f"); break;
        default:
            if (*c < 0x20) sb_printf(b, "\\u%04x", *c);
            else sb_add(b, (const char *)c, 1);
        }
    }
    sb_str(b, "\"");
}

/* One "Key: value" of the last line, A1111's quote(): JSON when the value has ',', ':' or '\n'. */
static void sb_param(sbuf *b, bool *first, const char *key, const char *value) {
    if (!*first) sb_str(b, ", ");
    *first = false;
    sb_str(b, key);
    sb_str(b, ": ");
    if (strpbrk(value, ",:\n")) sb_json(b, value);
    else sb_str(b, value);
}

/* Contract: see pipeline.h. */
lk_status lk_sd_infotext_format(const lk_sd_infotext *in, char **text) {
    if (!text) return lk_fail(LK_ERR_INVALID, "infotext: NULL output");
    *text = NULL;
    if (!in || !in->prompt) return lk_fail(LK_ERR_INVALID, "infotext: NULL prompt");
    sbuf b = {0};
    char v[128];
    sb_str(&b, in->prompt);
    for (int i = 0; i < in->n_loras; i++) {
        py_float(v, sizeof v, in->lora_weights[i]);
        sb_printf(&b, " <lora:%s:%s>", in->lora_names[i], v);
    }
    if (in->negative_prompt && in->negative_prompt[0]) {
        sb_str(&b, "\nNegative prompt: ");
        sb_str(&b, in->negative_prompt);
    }
    sb_str(&b, "\n");
    bool first = true, karras = false;
    snprintf(v, sizeof v, "%d", in->steps);
    sb_param(&b, &first, "Steps", v);
    sb_param(&b, &first, "Sampler", lk_sampler_a1111_name(in->sampler, &karras));
    if (karras) sb_param(&b, &first, "Schedule type", "Karras");
    py_float(v, sizeof v, in->cfg_scale);
    sb_param(&b, &first, "CFG scale", v);
    snprintf(v, sizeof v, "%llu", (unsigned long long)in->seed);
    sb_param(&b, &first, "Seed", v);
    snprintf(v, sizeof v, "%dx%d", in->width, in->height);
    sb_param(&b, &first, "Size", v);
    if (in->model_hash) sb_param(&b, &first, "Model hash", in->model_hash);
    if (in->model_name) sb_param(&b, &first, "Model", in->model_name);
    if (in->strength > 0.0) {
        py_float(v, sizeof v, in->strength);
        sb_param(&b, &first, "Denoising strength", v);
    }
    if (in->clip_skip > 1) {
        snprintf(v, sizeof v, "%d", in->clip_skip);
        sb_param(&b, &first, "Clip skip", v);
    }
    if (in->eta > 0.0) {
        py_float(v, sizeof v, in->eta);
        sb_param(&b, &first, "Eta", v);
    }
    sbuf list = {0};
    for (int i = 0; i < in->n_loras; i++)
        if (in->lora_hashes && in->lora_hashes[i]) {
            if (list.n) sb_str(&list, ", ");
            sb_printf(&list, "%s: %s", in->lora_names[i], in->lora_hashes[i]);
        }
    if (list.n) sb_param(&b, &first, "Lora hashes", list.s);
    list.n = 0;
    for (int i = 0; i < in->n_tis; i++)
        if (in->ti_hashes && in->ti_hashes[i]) {
            if (list.n) sb_str(&list, ", ");
            sb_printf(&list, "%s: %s", in->ti_names[i], in->ti_hashes[i]);
        }
    if (list.n) sb_param(&b, &first, "TI hashes", list.s);
    bool oom = b.oom || list.oom;
    free(list.s);
    if (oom) {
        free(b.s);
        return lk_fail(LK_ERR_NOMEM, "infotext: out of memory");
    }
    *text = b.s;
    return LK_OK;
}

/* ---- reading back ---- */

static void put(char *buf, size_t n, size_t *o, char c) {
    if (*o + 1 < n) buf[(*o)++] = c;
}

/* Append the UTF-8 of code point cp. */
static void put_utf8(char *buf, size_t n, size_t *o, unsigned cp) {
    if (cp < 0x80) {
        put(buf, n, o, (char)cp);
    } else if (cp < 0x800) {
        put(buf, n, o, (char)(0xC0 | (cp >> 6)));
        put(buf, n, o, (char)(0x80 | (cp & 0x3F)));
    } else {
        put(buf, n, o, (char)(0xE0 | (cp >> 12)));
        put(buf, n, o, (char)(0x80 | ((cp >> 6) & 0x3F)));
        put(buf, n, o, (char)(0x80 | (cp & 0x3F)));
    }
}

static bool is_word(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
}

/* Copy text[a, b) into buf. */
static void copy_span(char *buf, size_t n, const char *a, const char *b) {
    size_t len = (size_t)(b - a);
    if (len >= n) len = n - 1;
    memcpy(buf, a, len);
    buf[len] = '\0';
}

/* Contract: see pipeline.h. */
bool lk_sd_infotext_get(const char *text, const char *key, char *buf, size_t n) {
    if (!text || !key || !buf || n == 0) return false;
    buf[0] = '\0';
    size_t len = strlen(text);
    while (len && (text[len - 1] == '\n' || text[len - 1] == ' ')) len--;
    const char *end = text + len, *last = end;
    while (last > text && last[-1] != '\n') last--;
    const char *neg = NULL;
    for (const char *q = text; q < last; q = strchr(q, '\n') + 1) {
        if (!strncmp(q, "Negative prompt:", 16)) {
            neg = q;
            break;
        }
        if (!strchr(q, '\n')) break;
    }
    const char *prompt_end = neg ? neg : last;
    if (!strcmp(key, "Prompt")) {
        const char *e = prompt_end > text && prompt_end[-1] == '\n' ? prompt_end - 1 : prompt_end;
        copy_span(buf, n, text, e);
        return true;
    }
    if (!strcmp(key, "Negative prompt")) {
        if (!neg) return false;
        const char *a = neg + 16;
        if (*a == ' ') a++;
        const char *e = last > a && last[-1] == '\n' ? last - 1 : last;
        copy_span(buf, n, a, e < a ? a : e);
        return true;
    }
    /* the parameters line: \s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$) */
    const char *q = last;
    while (q < end) {
        while (q < end && *q == ' ') q++;
        const char *k0 = q;
        while (q < end && (is_word(*q) || *q == ' ' || *q == '-' || *q == '/')) q++;
        if (q >= end || *q != ':' || q == k0) return false;
        const char *k1 = q++;
        while (q < end && *q == ' ') q++;
        bool match = (size_t)(k1 - k0) == strlen(key) && !strncmp(k0, key, (size_t)(k1 - k0));
        size_t o = 0;
        if (q < end && *q == '"') {
            q++;
            while (q < end && *q != '"') {
                char c = *q++;
                if (c == '\\' && q < end) {
                    char e = *q++;
                    switch (e) {
                    case 'n': c = '\n'; break;
                    case 't': c = '\t'; break;
                    case 'r': c = '\r'; break;
                    case 'b': c = '\b'; break;
                    case 'f': c = '\f'; break;
                    case 'u': {
                        unsigned cp = 0;
                        int d = 0;
                        for (; d < 4 && q < end; d++, q++) {
                            char h = *q;
                            cp = cp * 16 + (unsigned)(h >= '0' && h <= '9'   ? h - '0'
                                                      : h >= 'a' && h <= 'f' ? h - 'a' + 10
                                                      : h >= 'A' && h <= 'F' ? h - 'A' + 10
                                                                             : 0);
                        }
                        if (match) put_utf8(buf, n, &o, cp);
                        continue;
                    }
                    default: c = e;
                    }
                }
                if (match) put(buf, n, &o, c);
            }
            if (q < end) q++; /* closing quote */
            while (q < end && *q != ',') q++;
        } else {
            const char *v0 = q;
            while (q < end && *q != ',') q++;
            const char *v1 = q;
            while (v1 > v0 && v1[-1] == ' ') v1--;
            if (match)
                for (const char *c = v0; c < v1; c++) put(buf, n, &o, *c);
        }
        if (match) {
            buf[o] = '\0';
            return true;
        }
        if (q < end) q++; /* ',' */
    }
    return false;
}
