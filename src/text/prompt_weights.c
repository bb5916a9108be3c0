/* prompt_weights.c: prompt emphasis and chunking as AUTOMATIC1111's stable-diffusion-webui does
 * it (modules/prompt_parser.py parse_prompt_attention, sd_hijack_clip.py tokenize_line). */
#define _POSIX_C_SOURCE 200809L
#include "likeness/tokenizer.h"
#include "text/tokenizer_internal.h"
#include "text/unicode_props.h"

#include <locale.h>
#include <stdlib.h>
#include <string.h>

/* One parsed entry: a span of the text arena with its weight, or a BREAK. */
typedef struct lk__pentry {
    size_t off, len;
    double weight;
    bool is_break;
} lk__pentry;

typedef struct lk__parser {
    char *arena; /* the text of every entry, in entry order */
    size_t an, acap;
    lk__pentry *e;
    size_t n, cap;
    size_t *round, *square; /* open bracket stacks: entry index at the bracket */
    size_t nr, ns, scap;
    bool oom;
} lk__parser;

static void lk__p_entry(lk__parser *p, const char *s, size_t len, bool is_break) {
    if (p->oom) return;
    if (p->n == p->cap) {
        size_t nc = p->cap ? p->cap * 2 : 16;
        lk__pentry *ne = realloc(p->e, nc * sizeof *ne);
        if (!ne) {
            p->oom = true;
            return;
        }
        p->e = ne;
        p->cap = nc;
    }
    if (p->acap - p->an < len + 1) {
        size_t nc = p->acap ? p->acap : 256;
        while (nc - p->an < len + 1) nc *= 2;
        char *na = realloc(p->arena, nc);
        if (!na) {
            p->oom = true;
            return;
        }
        p->arena = na;
        p->acap = nc;
    }
    p->e[p->n++] = (lk__pentry){p->an, is_break ? 0 : len, 1.0, is_break};
    if (!is_break && len) {
        memcpy(p->arena + p->an, s, len);
        p->an += len;
    }
}

/* Open a bracket: remember the index of the next entry on the round or square stack. */
static void lk__p_open(lk__parser *p, bool square) {
    if (p->oom) return;
    size_t *n = square ? &p->ns : &p->nr;
    if (*n == p->scap) { /* both stacks share one capacity */
        size_t nc = p->scap ? p->scap * 2 : 16;
        size_t *r = realloc(p->round, nc * sizeof *r);
        if (r) p->round = r;
        size_t *q = realloc(p->square, nc * sizeof *q);
        if (q) p->square = q;
        if (!r || !q) {
            p->oom = true;
            return;
        }
        p->scap = nc;
    }
    (square ? p->square : p->round)[(*n)++] = p->n;
}

static void lk__p_multiply(lk__parser *p, size_t from, double m) {
    for (size_t i = from; i < p->n; i++)
        if (!p->e[i].is_break) p->e[i].weight *= m;
}

/* Python re's \s on str (str.isspace()). */
static bool lk__p_space(uint32_t cp) {
    return (cp >= 0x1C && cp <= 0x1F) || (lk__uni_flags(cp) & LK_UNI_SPACE);
}

/* Python re's \w on str: letters, numbers, underscore. */
static bool lk__p_word(uint32_t cp) {
    return cp == '_' || (lk__uni_flags(cp) & (LK_UNI_LETTER | LK_UNI_NUMBER));
}

static uint32_t lk__p_cp_at(const unsigned char *s, size_t i, size_t n, size_t *len) {
    uint32_t cp;
    *len = lk__utf8_decode(s + i, n - i, &cp);
    return cp;
}

/* The code point ending just before s[i] (i > 0). */
static uint32_t lk__p_cp_before(const unsigned char *s, size_t i, size_t n) {
    size_t k = i - 1, l;
    while (k > 0 && i - k < 4 && (s[k] & 0xC0) == 0x80) k--;
    uint32_t cp = lk__p_cp_at(s, k, n, &l);
    return k + l == i ? cp : LK_UNI_REPLACEMENT;
}

/* A text match of parse_prompt_attention: split on \s*\bBREAK\b\s* (the segment's ends count as
 * non-word) and append the parts with BREAK entries between them. */
static void lk__p_text(lk__parser *p, const char *seg, size_t n) {
    const unsigned char *s = (const unsigned char *)seg;
    size_t start = 0, i = 0;
    while (i + 5 <= n) {
        if (memcmp(s + i, "BREAK", 5) != 0 || (i > 0 && lk__p_word(lk__p_cp_before(s, i, n)))) {
            i++;
            continue;
        }
        size_t l;
        if (i + 5 < n && lk__p_word(lk__p_cp_at(s, i + 5, n, &l))) {
            i++;
            continue;
        }
        size_t a = i; /* leading white space, not before the previous split */
        while (a > start) {
            size_t k = a - 1;
            while (k > start && (s[k] & 0xC0) == 0x80) k--;
            uint32_t cp = lk__p_cp_at(s, k, n, &l);
            if (k + l != a || !lk__p_space(cp)) break;
            a = k;
        }
        size_t b = i + 5;
        while (b < n) {
            uint32_t cp = lk__p_cp_at(s, b, n, &l);
            if (!lk__p_space(cp)) break;
            b += l;
        }
        lk__p_entry(p, seg + start, a - start, false);
        lk__p_entry(p, NULL, 0, true);
        start = i = b;
    }
    lk__p_entry(p, seg + start, n - start, false);
}

/* Match `:\s*([+-]?[.\d]+)\s*\)` at s[i] == ':'; the number must be a valid decimal. On success
 * returns the index after ')' and the value. */
static size_t lk__p_weight(const unsigned char *s, size_t i, size_t n, double *w) {
    size_t j = i + 1, l;
    while (j < n && lk__p_space(lk__p_cp_at(s, j, n, &l))) j += l;
    size_t num = j;
    if (j < n && (s[j] == '+' || s[j] == '-')) j++;
    int digits = 0, dots = 0;
    while (j < n && ((s[j] >= '0' && s[j] <= '9') || s[j] == '.')) {
        if (s[j] == '.') dots++;
        else digits++;
        j++;
    }
    size_t num_end = j;
    if (digits == 0 || dots > 1) return 0;
    while (j < n && lk__p_space(lk__p_cp_at(s, j, n, &l))) j += l;
    if (j >= n || s[j] != ')') return 0;
    size_t k = num_end - num;
    char small[64], *buf = k < sizeof small ? small : malloc(k + 1);
    if (!buf) return 0; /* out of memory: treat the ':' as text */
    memcpy(buf, s + num, k);
    buf[k] = '\0';
    const char *dp = localeconv()->decimal_point; /* strtod follows LC_NUMERIC */
    if (dp && dp[0] && dp[0] != '.' && dp[1] == '\0') {
        char *d = strchr(buf, '.');
        if (d) *d = dp[0];
    }
    *w = strtod(buf, NULL);
    if (buf != small) free(buf);
    return j + 1;
}

static void lk__p_free(lk__parser *p) {
    free(p->arena);
    free(p->e);
    free(p->round);
    free(p->square);
}

/* parse_prompt_attention into p (entries merged). */
static lk_status lk__p_parse(lk__parser *p, const char *prompt, size_t n) {
    const unsigned char *s = (const unsigned char *)prompt;
    const double round_m = 1.1, square_m = 1.0 / 1.1;
    size_t i = 0;
    while (i < n && !p->oom) {
        unsigned char c = s[i];
        if (c == '\\') {
            if (i + 1 < n && strchr("()[]\\", s[i + 1]) && s[i + 1]) {
                lk__p_entry(p, prompt + i + 1, 1, false);
                i += 2;
            } else {
                lk__p_entry(p, prompt, 0, false);
                i++;
            }
        } else if (c == '(') {
            lk__p_open(p, false);
            i++;
        } else if (c == '[') {
            lk__p_open(p, true);
            i++;
        } else if (c == ':') {
            double w;
            size_t end = lk__p_weight(s, i, n, &w);
            if (end && p->nr > 0) lk__p_multiply(p, p->round[--p->nr], w);
            else if (end) lk__p_text(p, prompt + i, end - i);
            else lk__p_text(p, prompt + i, 1);
            i = end ? end : i + 1;
        } else if (c == ')' && p->nr > 0) {
            lk__p_multiply(p, p->round[--p->nr], round_m);
            i++;
        } else if (c == ']' && p->ns > 0) {
            lk__p_multiply(p, p->square[--p->ns], square_m);
            i++;
        } else if (c == ')' || c == ']') {
            lk__p_text(p, prompt + i, 1);
            i++;
        } else {
            size_t j = i + 1;
            while (j < n && !strchr("\\()[]:", s[j])) j++;
            lk__p_text(p, prompt + i, j - i);
            i = j;
        }
    }
    for (size_t k = 0; k < p->nr; k++) lk__p_multiply(p, p->round[k], round_m);
    for (size_t k = 0; k < p->ns; k++) lk__p_multiply(p, p->square[k], square_m);
    if (p->n == 0) lk__p_entry(p, prompt, 0, false);
    if (p->oom) return lk_fail(LK_ERR_NOMEM, "prompt parser: out of memory");
    size_t m = 0; /* merge runs of equal weight */
    for (size_t k = 0; k < p->n; k++) {
        lk__pentry *x = &p->e[k];
        if (m > 0 && !x->is_break && !p->e[m - 1].is_break && p->e[m - 1].weight == x->weight) {
            p->e[m - 1].len += x->len; /* entries are consecutive in the arena */
            continue;
        }
        p->e[m++] = *x;
    }
    p->n = m;
    return LK_OK;
}

void lk_prompt_frags_free(lk_prompt_frag *frags, int n) {
    if (!frags) return;
    for (int i = 0; i < n; i++) free(frags[i].text);
    free(frags);
}

lk_status lk_prompt_parse(const char *prompt, lk_prompt_frag **frags, int *n) {
    if (!prompt || !frags || !n) return lk_fail(LK_ERR_INVALID, "lk_prompt_parse: NULL argument");
    *frags = NULL;
    *n = 0;
    lk__parser p = {0};
    lk_status st = lk__p_parse(&p, prompt, strlen(prompt));
    lk_prompt_frag *f = NULL;
    if (st == LK_OK && p.n > (size_t)INT32_MAX) st = lk_fail(LK_ERR_INVALID, "prompt: too many fragments");
    if (st == LK_OK && !(f = calloc(p.n, sizeof *f))) st = lk_fail(LK_ERR_NOMEM, "prompt parser: out of memory");
    for (size_t k = 0; k < p.n && st == LK_OK; k++) {
        const lk__pentry *x = &p.e[k];
        size_t len = x->is_break ? 5 : x->len;
        f[k].text = malloc(len + 1);
        if (!f[k].text) {
            st = lk_fail(LK_ERR_NOMEM, "prompt parser: out of memory");
            break;
        }
        memcpy(f[k].text, x->is_break ? "BREAK" : p.arena + x->off, len);
        f[k].text[len] = '\0';
        f[k].weight = x->is_break ? 1.0 : x->weight;
        f[k].is_break = x->is_break;
    }
    if (st != LK_OK) {
        lk_prompt_frags_free(f, (int)p.n);
        lk__p_free(&p);
        return st;
    }
    *frags = f;
    *n = (int)p.n;
    lk__p_free(&p);
    return LK_OK;
}

lk_prompt_opts lk_prompt_opts_default(void) {
    return (lk_prompt_opts){.pad = LK_PAD_EOS, .emphasis = true, .comma_backtrack = 20};
}

/* ------------------------------------------------------------------ chunking */

typedef struct lk__chunker {
    const lk_tokenizer *t;
    lk_pad_mode pad;
    int64_t cur[LK_CLIP_CHUNK];
    double curw[LK_CLIP_CHUNK];
    int len;        /* ids in cur */
    int last_comma; /* A1111's last_comma, -1 = none */
    int64_t *out;   /* finished chunks, LK_CLIP_CONTEXT each */
    float *outw;
    size_t n_out, cap_out;
} lk__chunker;

static lk_status lk__next_chunk(lk__chunker *c) {
    if (c->n_out == c->cap_out) {
        size_t nc = c->cap_out ? c->cap_out * 2 : 4;
        int64_t *no = realloc(c->out, nc * LK_CLIP_CONTEXT * sizeof *no);
        if (!no) return lk_fail(LK_ERR_NOMEM, "prompt: out of memory");
        c->out = no;
        float *nw = realloc(c->outw, nc * LK_CLIP_CONTEXT * sizeof *nw);
        if (!nw) return lk_fail(LK_ERR_NOMEM, "prompt: out of memory");
        c->outw = nw;
        c->cap_out = nc;
    }
    int64_t *o = c->out + c->n_out * LK_CLIP_CONTEXT;
    float *w = c->outw + c->n_out * LK_CLIP_CONTEXT;
    int64_t eos = lk_tokenizer_eos(c->t);
    o[0] = lk_tokenizer_bos(c->t);
    w[0] = 1.0f;
    for (int i = 0; i < LK_CLIP_CHUNK; i++) {
        bool pad = i >= c->len;
        o[1 + i] = pad ? (c->pad == LK_PAD_ZERO && i > c->len ? 0 : eos) : c->cur[i];
        w[1 + i] = pad ? 1.0f : (float)c->curw[i];
    }
    o[LK_CLIP_CONTEXT - 1] = c->pad == LK_PAD_ZERO && c->len < LK_CLIP_CHUNK ? 0 : eos;
    w[LK_CLIP_CONTEXT - 1] = 1.0f;
    c->n_out++;
    c->len = 0;
    c->last_comma = -1;
    return LK_OK;
}

lk_status lk_prompt_encode_weighted(const lk_tokenizer *t, const char *prompt,
                                    const lk_prompt_opts *opts, int64_t *ids, float *weights,
                                    int max_chunks, int *n_chunks) {
    if (!t || !prompt || !n_chunks || max_chunks < 0 || (max_chunks > 0 && !ids))
        return lk_fail(LK_ERR_INVALID, "lk_prompt_encode_weighted: NULL argument or negative max_chunks");
    lk_prompt_opts o = opts ? *opts : lk_prompt_opts_default();
    if (o.pad != LK_PAD_EOS && o.pad != LK_PAD_ZERO)
        return lk_fail(LK_ERR_INVALID, "lk_prompt_encode_weighted: unknown pad mode %d", (int)o.pad);
    size_t plen = strlen(prompt);
    lk__parser p = {0};
    lk_status st;
    if (o.emphasis) {
        st = lk__p_parse(&p, prompt, plen);
    } else {
        lk__p_entry(&p, prompt, plen, false);
        st = p.oom ? lk_fail(LK_ERR_NOMEM, "prompt: out of memory") : LK_OK;
    }
    lk__chunker *c = calloc(1, sizeof *c);
    if (st == LK_OK && !c) st = lk_fail(LK_ERR_NOMEM, "prompt: out of memory");
    if (c) {
        c->t = t;
        c->pad = o.pad;
        c->last_comma = -1;
    }
    int64_t comma = lk__tokenizer_comma(t);
    lk__tokbuf b = {0};
    for (size_t k = 0; k < p.n && st == LK_OK; k++) {
        const lk__pentry *x = &p.e[k];
        if (x->is_break) {
            st = lk__next_chunk(c);
            continue;
        }
        b.n = 0;
        st = lk__tokenizer_tokenize(t, p.arena + x->off, x->len, &b);
        for (size_t pos = 0; pos < b.n && st == LK_OK;) {
            int64_t tok = b.ids[pos];
            if (tok == comma) {
                c->last_comma = c->len;
            } else if (o.comma_backtrack > 0 && c->len == LK_CLIP_CHUNK && c->last_comma != -1 &&
                       c->len - c->last_comma <= o.comma_backtrack) {
                int at = c->last_comma + 1, nr = c->len - at;
                int64_t rt[LK_CLIP_CHUNK];
                double rw[LK_CLIP_CHUNK];
                memcpy(rt, c->cur + at, (size_t)nr * sizeof *rt);
                memcpy(rw, c->curw + at, (size_t)nr * sizeof *rw);
                c->len = at;
                if ((st = lk__next_chunk(c)) != LK_OK) break;
                memcpy(c->cur, rt, (size_t)nr * sizeof *rt);
                memcpy(c->curw, rw, (size_t)nr * sizeof *rw);
                c->len = nr;
            }
            if (c->len == LK_CLIP_CHUNK && (st = lk__next_chunk(c)) != LK_OK) break;
            int span = b.span[pos] > 0 ? b.span[pos] : 1;
            if (span > 1 && c->len + span > LK_CLIP_CHUNK && (st = lk__next_chunk(c)) != LK_OK) break;
            for (int v = 0; v < span && pos < b.n; v++, pos++) {
                c->cur[c->len] = b.ids[pos];
                c->curw[c->len] = x->weight;
                c->len++;
            }
        }
    }
    if (st == LK_OK && (c->len > 0 || c->n_out == 0)) st = lk__next_chunk(c);
    if (st == LK_OK) {
        if (c->n_out > (size_t)INT32_MAX) {
            st = lk_fail(LK_ERR_INVALID, "prompt: too many chunks");
        } else {
            *n_chunks = (int)c->n_out;
            size_t k = c->n_out < (size_t)max_chunks ? c->n_out : (size_t)max_chunks;
            if (k) memcpy(ids, c->out, k * LK_CLIP_CONTEXT * sizeof *ids);
            if (k && weights) memcpy(weights, c->outw, k * LK_CLIP_CONTEXT * sizeof *weights);
        }
    }
    lk__tokbuf_free(&b);
    if (c) {
        free(c->out);
        free(c->outw);
        free(c);
    }
    lk__p_free(&p);
    return st;
}
