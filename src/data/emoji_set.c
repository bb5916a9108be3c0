/* emoji_set.c: the EmojiBench data set reader: strict parsing of the manifest.json that
 * scripts/emoji_dataset/build.py writes (format 1), image paths and loading, and the captions. */
#include "likeness/emoji_set.h"

#include "likeness/image.h"

#include <cjson/cJSON.h>

#include "core/fileio.h"
#include "core/json_util.h"
#include <errno.h>
#include <math.h>
#include <stdalign.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Limits far above the real data set (3,664 concepts, <= 10 keywords, 80-byte names, 9
 * codepoints per key, a 1.9 MB manifest): anything beyond them is a broken or hostile file. */
#define EMOJI_MAX_MANIFEST_BYTES ((size_t)64 << 20)
#define EMOJI_MAX_IMAGE_BYTES ((size_t)64 << 20)
#define EMOJI_MAX_CONCEPTS 100000
#define EMOJI_MAX_KEYWORDS 256
#define EMOJI_MAX_SIZES 8
#define EMOJI_MAX_SIZE_PX 4096
#define EMOJI_MAX_TEXT 512 /* bytes in a name, group, subgroup or keyword */
#define EMOJI_MAX_KEY_CPS 32
#define EMOJI_MAX_STYLE_NAME 32
#define EMOJI_CAPTION_VARIANTS 4

/* ---------------- the set: every string lives in one arena ---------------- */

typedef struct arena_block {
    struct arena_block *next;
    size_t used, cap;
    max_align_t data[];
} arena_block;

struct lk_emoji_set {
    const char *dir;
    int n_styles;
    const char *styles[LK_EMOJI_MAX_STYLES];
    const char *style_words[LK_EMOJI_MAX_STYLES];
    bool trainable[LK_EMOJI_MAX_STYLES];
    int n_sizes;
    int sizes[EMOJI_MAX_SIZES];
    int n_concepts;
    lk_emoji_concept *concepts; /* (n_concepts) sorted by key */
    arena_block *arena;
};

/* n bytes (aligned for any type) that live until the set is freed; NULL when out of memory. */
static void *arena_alloc(lk_emoji_set *s, size_t n) {
    const size_t a = alignof(max_align_t);
    n = (n + a - 1) / a * a; /* n is bounded by the text limits: no overflow */
    arena_block *b = s->arena;
    if (!b || b->cap - b->used < n) {
        size_t cap = n > 65536 ? n : 65536;
        b = malloc(sizeof *b + cap);
        if (!b) return NULL;
        b->next = s->arena;
        b->used = 0;
        b->cap = cap;
        s->arena = b;
    }
    void *p = (char *)b->data + b->used;
    b->used += n;
    return p;
}

static const char *arena_strdup(lk_emoji_set *s, const char *str) {
    size_t n = strlen(str) + 1;
    char *p = arena_alloc(s, n);
    if (p) memcpy(p, str, n);
    return p;
}

/* Contract: see emoji_set.h. */
void lk_emoji_set_free(lk_emoji_set *s) {
    if (!s) return;
    for (arena_block *b = s->arena, *next; b; b = next) {
        next = b->next;
        free(b);
    }
    free(s->concepts);
    free(s);
}

/* ---------------- syntax checks ---------------- */

/* Valid UTF-8 (no overlongs, surrogates or values past U+10FFFF) without control characters,
 * at most max bytes. */
static bool text_ok(const char *str, size_t max) {
    const unsigned char *p = (const unsigned char *)str;
    size_t i = 0;
    while (p[i]) {
        if (i >= max) return false;
        unsigned c = p[i];
        if (c < 0x20 || c == 0x7f) return false;
        if (c < 0x80) {
            i++;
            continue;
        }
        int n;
        unsigned cp, min;
        if (c >= 0xc2 && c <= 0xdf) n = 1, cp = c & 0x1f, min = 0x80;
        else if (c >= 0xe0 && c <= 0xef) n = 2, cp = c & 0x0f, min = 0x800;
        else if (c >= 0xf0 && c <= 0xf4) n = 3, cp = c & 0x07, min = 0x10000;
        else return false;
        for (int k = 1; k <= n; k++) {
            if ((p[i + k] & 0xc0) != 0x80) return false; /* also stops at the NUL */
            cp = (cp << 6) | (p[i + k] & 0x3fu);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return false;
        i += (size_t)n + 1;
    }
    return i <= max;
}

/* Lower-case hex codepoints joined by '-', each written as "%04x" does (4 digits, or 5-6
 * without a leading zero), each a Unicode scalar value; at most EMOJI_MAX_KEY_CPS of them. */
static bool key_ok(const char *k) {
    int n_cps = 0;
    const char *p = k;
    for (;;) {
        unsigned cp = 0;
        int digits = 0;
        for (; (*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f'); p++, digits++) {
            if (digits == 6) return false;
            cp = cp * 16 + (unsigned)(*p <= '9' ? *p - '0' : *p - 'a' + 10);
        }
        if (digits < 4 || (digits > 4 && p[-digits] == '0')) return false;
        if (cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return false;
        if (++n_cps > EMOJI_MAX_KEY_CPS) return false;
        if (*p == '\0') return true;
        if (*p != '-') return false;
        p++;
    }
}

/* A style name is a folder name: 1-32 of [a-z0-9_-]. */
static bool style_name_ok(const char *name) {
    size_t n = 0;
    for (const char *p = name; *p; p++, n++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_' || *p == '-'))
            return false;
    return n >= 1 && n <= EMOJI_MAX_STYLE_NAME;
}

/* A short, printable, single-line copy of untrusted text for messages. */
static const char *shown(char *dst, size_t cap, const char *src) {
    size_t o = 0;
    for (const unsigned char *p = (const unsigned char *)src; *p && o + 4 < cap; p++)
        dst[o++] = (*p < 0x20 || *p == 0x7f || *p >= 0x80) ? '?' : (char)*p;
    if (src[o] && o + 4 >= cap) memcpy(dst + o, "...", 3), o += 3;
    dst[o] = '\0';
    return dst;
}


/* An integer-valued number in [lo, hi]. */
static bool as_int(const cJSON *v, int lo, int hi, int *out) {
    if (!cJSON_IsNumber(v)) return false;
    double d = v->valuedouble;
    if (!(d >= (double)lo && d <= (double)hi) || d != floor(d)) return false;
    *out = (int)d;
    return true;
}

/* Number of entries of a list or members of an object, counting no further than max + 1. */
static int n_children(const cJSON *v, int max) {
    int n = 0;
    for (const cJSON *e = v->child; e && n <= max; e = e->next) n++;
    return n;
}

/* ---------------- manifest parsing ---------------- */

typedef struct parser {
    const char *label; /* the file, for messages */
    lk_emoji_set *s;
} parser;

/* Member key of obj; ctx prefixes the message ("concept '1f436': " or ""). Fails if the key
 * appears twice, or if it is missing and required (*out NULL when missing and optional). */
static lk_status field(const parser *p, const cJSON *obj, const char *ctx, const char *key,
                       bool required, const cJSON **out) {
    *out = NULL;
    for (const cJSON *v = obj->child; v; v = v->next) {
        if (!v->string || strcmp(v->string, key) != 0) continue;
        if (*out)
            return lk_fail(LK_ERR_FORMAT, "%s: %sfield '%s' appears twice", p->label, ctx, key);
        *out = v;
    }
    if (!*out && required)
        return lk_fail(LK_ERR_FORMAT, "%s: %sfield '%s' is missing", p->label, ctx, key);
    return LK_OK;
}

/* A text field (UTF-8, no control characters, at most EMOJI_MAX_TEXT bytes) copied into the
 * arena; *out NULL when optional and absent. store false: only check it. */
static lk_status text_field(const parser *p, const cJSON *obj, const char *ctx, const char *key,
                            bool required, bool allow_empty, bool store, const char **out) {
    const cJSON *v;
    lk_status st = field(p, obj, ctx, key, required, &v);
    if (st != LK_OK) return st;
    if (out) *out = NULL;
    if (!v) return LK_OK;
    if (!cJSON_IsString(v))
        return lk_fail(LK_ERR_FORMAT, "%s: %sfield '%s' must be a string, got %s", p->label, ctx,
                       key, lk__json_type(v));
    if (!text_ok(v->valuestring, EMOJI_MAX_TEXT))
        return lk_fail(LK_ERR_FORMAT,
                       "%s: %sfield '%s' is not valid UTF-8 text of at most %d bytes without "
                       "control characters", p->label, ctx, key, EMOJI_MAX_TEXT);
    if (!allow_empty && !v->valuestring[0])
        return lk_fail(LK_ERR_FORMAT, "%s: %sfield '%s' is empty", p->label, ctx, key);
    if (!store) return LK_OK;
    *out = arena_strdup(p->s, v->valuestring);
    return *out ? LK_OK : lk_fail(LK_ERR_NOMEM, "%s: out of memory", p->label);
}

static int style_index(const lk_emoji_set *s, const char *name) {
    for (int i = 0; i < s->n_styles; i++)
        if (strcmp(s->styles[i], name) == 0) return i;
    return -1;
}

static const char *known_style_words(const char *name) {
    static const char *const map[][2] = {
        {"noto", "noto"}, {"fluent3d", "fluent 3d"}, {"twemoji", "twemoji"}, {"openmoji", "openmoji"}};
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
        if (strcmp(map[i][0], name) == 0) return map[i][1];
    return NULL;
}

static lk_status parse_header(const parser *p, const cJSON *root) {
    lk_emoji_set *s = p->s;
    const cJSON *v;
    lk_status st = field(p, root, "", "name", true, &v);
    if (st != LK_OK) return st;
    if (!cJSON_IsString(v) || strcmp(v->valuestring, "EmojiBench") != 0)
        return lk_fail(LK_ERR_FORMAT, "%s: field 'name' must be \"EmojiBench\": not an EmojiBench "
                       "manifest", p->label);
    if ((st = field(p, root, "", "format", true, &v)) != LK_OK) return st;
    int fmt;
    if (!as_int(v, 1, 1, &fmt))
        return lk_fail(LK_ERR_FORMAT, "%s: field 'format' must be 1 (the only format supported)",
                       p->label);

    if ((st = field(p, root, "", "sizes", true, &v)) != LK_OK) return st;
    int n = cJSON_IsArray(v) ? n_children(v, EMOJI_MAX_SIZES) : -1;
    if (n < 1 || n > EMOJI_MAX_SIZES)
        return lk_fail(LK_ERR_FORMAT, "%s: field 'sizes' must be a list of 1 to %d image sizes",
                       p->label, EMOJI_MAX_SIZES);
    for (const cJSON *e = v->child; e; e = e->next) {
        int px;
        if (!as_int(e, 1, EMOJI_MAX_SIZE_PX, &px))
            return lk_fail(LK_ERR_FORMAT, "%s: field 'sizes' entry %d must be an integer in [1, %d]",
                           p->label, s->n_sizes, EMOJI_MAX_SIZE_PX);
        for (int i = 0; i < s->n_sizes; i++)
            if (s->sizes[i] == px)
                return lk_fail(LK_ERR_FORMAT, "%s: field 'sizes' lists %d twice", p->label, px);
        s->sizes[s->n_sizes++] = px;
    }

    if ((st = field(p, root, "", "styles", true, &v)) != LK_OK) return st;
    n = cJSON_IsArray(v) ? n_children(v, LK_EMOJI_MAX_STYLES) : -1;
    if (n < 1 || n > LK_EMOJI_MAX_STYLES)
        return lk_fail(LK_ERR_FORMAT, "%s: field 'styles' must be a list of 1 to %d style names",
                       p->label, LK_EMOJI_MAX_STYLES);
    for (const cJSON *e = v->child; e; e = e->next) {
        char buf[48];
        if (!cJSON_IsString(e) || !style_name_ok(e->valuestring))
            return lk_fail(LK_ERR_FORMAT, "%s: field 'styles' entry %d must be a folder name of 1 "
                           "to %d characters [a-z0-9_-]", p->label, s->n_styles,
                           EMOJI_MAX_STYLE_NAME);
        if (style_index(s, e->valuestring) >= 0)
            return lk_fail(LK_ERR_FORMAT, "%s: field 'styles' lists '%s' twice", p->label,
                           shown(buf, sizeof buf, e->valuestring));
        const char *name = arena_strdup(s, e->valuestring);
        if (!name) return lk_fail(LK_ERR_NOMEM, "%s: out of memory", p->label);
        const char *words = known_style_words(name);
        s->styles[s->n_styles] = name;
        s->style_words[s->n_styles] = words ? words : name;
        s->n_styles++;
    }

    if ((st = field(p, root, "", "generator_training_styles", true, &v)) != LK_OK) return st;
    if (!cJSON_IsArray(v))
        return lk_fail(LK_ERR_FORMAT, "%s: field 'generator_training_styles' must be a list of "
                       "style names, got %s", p->label, lk__json_type(v));
    int k = 0;
    for (const cJSON *e = v->child; e; e = e->next, k++) {
        char buf[48];
        int si = cJSON_IsString(e) ? style_index(s, e->valuestring) : -1;
        if (si < 0)
            return lk_fail(LK_ERR_FORMAT, "%s: field 'generator_training_styles' entry %d ('%s') "
                           "is not one of the manifest's styles", p->label, k,
                           cJSON_IsString(e) ? shown(buf, sizeof buf, e->valuestring) : "?");
        if (s->trainable[si])
            return lk_fail(LK_ERR_FORMAT, "%s: field 'generator_training_styles' lists '%s' twice",
                           p->label, s->styles[si]);
        s->trainable[si] = true;
    }
    return LK_OK;
}

/* One member of "concepts" into *c (strings copied into the arena). */
static lk_status parse_concept(const parser *p, const cJSON *m, lk_emoji_concept *c) {
    lk_emoji_set *s = p->s;
    char shown_key[48], ctx[80];
    shown(shown_key, sizeof shown_key, m->string);
    if (!key_ok(m->string))
        return lk_fail(LK_ERR_FORMAT, "%s: concepts: key '%s' is not lower-case hex codepoints "
                       "joined by '-'", p->label, shown_key);
    snprintf(ctx, sizeof ctx, "concept '%s': ", shown_key);
    if (!cJSON_IsObject(m))
        return lk_fail(LK_ERR_FORMAT, "%s: concept '%s' must be an object, got %s", p->label,
                       shown_key, lk__json_type(m));
    const cJSON *v;
    lk_status st = field(p, m, ctx, "key", true, &v);
    if (st != LK_OK) return st;
    if (!cJSON_IsString(v) || strcmp(v->valuestring, m->string) != 0)
        return lk_fail(LK_ERR_FORMAT, "%s: %sfield 'key' must be the string \"%s\"", p->label,
                       ctx, shown_key);
    if (!(c->key = arena_strdup(s, m->string)))
        return lk_fail(LK_ERR_NOMEM, "%s: out of memory", p->label);
    if ((st = field(p, m, ctx, "codepoints", false, &v)) != LK_OK) return st;
    if (v && (!cJSON_IsString(v) || !key_ok(v->valuestring)))
        return lk_fail(LK_ERR_FORMAT, "%s: %sfield 'codepoints' must be lower-case hex codepoints "
                       "joined by '-'", p->label, ctx);
    if ((st = text_field(p, m, ctx, "name", true, false, true, &c->name)) != LK_OK) return st;
    if ((st = text_field(p, m, ctx, "group", true, true, true, &c->group)) != LK_OK) return st;
    if ((st = text_field(p, m, ctx, "subgroup", true, true, true, &c->subgroup)) != LK_OK)
        return st;
    static const char *const optional_texts[] = {"test_name", "status", "emoji_version",
                                                 "keywords_source"};
    for (size_t i = 0; i < sizeof optional_texts / sizeof optional_texts[0]; i++)
        if ((st = text_field(p, m, ctx, optional_texts[i], false, true, false, NULL)) != LK_OK)
            return st;

    if ((st = field(p, m, ctx, "keywords", true, &v)) != LK_OK) return st;
    int n = cJSON_IsArray(v) ? n_children(v, EMOJI_MAX_KEYWORDS) : -1;
    if (n < 0 || n > EMOJI_MAX_KEYWORDS)
        return lk_fail(LK_ERR_FORMAT, "%s: %sfield 'keywords' must be a list of at most %d strings",
                       p->label, ctx, EMOJI_MAX_KEYWORDS);
    const char **kw = n ? arena_alloc(s, sizeof *kw * (size_t)n) : NULL;
    if (n && !kw) return lk_fail(LK_ERR_NOMEM, "%s: out of memory", p->label);
    int k = 0;
    for (const cJSON *e = v->child; e; e = e->next, k++) {
        if (!cJSON_IsString(e) || !e->valuestring[0] || !text_ok(e->valuestring, EMOJI_MAX_TEXT))
            return lk_fail(LK_ERR_FORMAT, "%s: %sfield 'keywords' entry %d must be a non-empty "
                           "UTF-8 string of at most %d bytes", p->label, ctx, k, EMOJI_MAX_TEXT);
        if (!(kw[k] = arena_strdup(s, e->valuestring)))
            return lk_fail(LK_ERR_NOMEM, "%s: out of memory", p->label);
    }
    c->keywords = kw;
    c->n_keywords = n;

    if ((st = field(p, m, ctx, "styles", true, &v)) != LK_OK) return st;
    n = cJSON_IsArray(v) ? n_children(v, LK_EMOJI_MAX_STYLES) : -1;
    if (n < 1 || n > LK_EMOJI_MAX_STYLES)
        return lk_fail(LK_ERR_FORMAT, "%s: %sfield 'styles' must be a non-empty list of the "
                       "manifest's style names", p->label, ctx);
    k = 0;
    for (const cJSON *e = v->child; e; e = e->next, k++) {
        char buf[48];
        int si = cJSON_IsString(e) ? style_index(s, e->valuestring) : -1;
        if (si < 0)
            return lk_fail(LK_ERR_FORMAT, "%s: %sfield 'styles' entry %d ('%s') is not one of the "
                           "manifest's styles", p->label, ctx, k,
                           cJSON_IsString(e) ? shown(buf, sizeof buf, e->valuestring) : "?");
        if (c->style_mask & (1u << si))
            return lk_fail(LK_ERR_FORMAT, "%s: %sfield 'styles' lists '%s' twice", p->label, ctx,
                           s->styles[si]);
        c->style_mask |= 1u << si;
    }

    if ((st = field(p, m, ctx, "heldout", true, &v)) != LK_OK) return st;
    if (!cJSON_IsBool(v))
        return lk_fail(LK_ERR_FORMAT, "%s: %sfield 'heldout' must be true or false, got %s",
                       p->label, ctx, lk__json_type(v));
    c->heldout = cJSON_IsTrue(v);
    return LK_OK;
}

static int cmp_concept(const void *a, const void *b) {
    return strcmp(((const lk_emoji_concept *)a)->key, ((const lk_emoji_concept *)b)->key);
}

static lk_status parse_concepts(const parser *p, const cJSON *root) {
    lk_emoji_set *s = p->s;
    const cJSON *v;
    lk_status st = field(p, root, "", "concepts", true, &v);
    if (st != LK_OK) return st;
    if (!cJSON_IsObject(v))
        return lk_fail(LK_ERR_FORMAT, "%s: field 'concepts' must be an object (key -> concept), "
                       "got %s", p->label, lk__json_type(v));
    int n = n_children(v, EMOJI_MAX_CONCEPTS);
    if (n < 1 || n > EMOJI_MAX_CONCEPTS)
        return lk_fail(LK_ERR_FORMAT, "%s: field 'concepts' must hold 1 to %d concepts", p->label,
                       EMOJI_MAX_CONCEPTS);
    s->concepts = calloc((size_t)n, sizeof *s->concepts);
    if (!s->concepts) return lk_fail(LK_ERR_NOMEM, "%s: out of memory", p->label);
    for (const cJSON *m = v->child; m; m = m->next) {
        if ((st = parse_concept(p, m, &s->concepts[s->n_concepts])) != LK_OK) return st;
        s->n_concepts++;
    }
    qsort(s->concepts, (size_t)n, sizeof *s->concepts, cmp_concept);
    for (int i = 1; i < n; i++)
        if (strcmp(s->concepts[i - 1].key, s->concepts[i].key) == 0)
            return lk_fail(LK_ERR_FORMAT, "%s: concepts: key '%s' appears twice", p->label,
                           s->concepts[i].key);
    return LK_OK;
}

static lk_status parse_heldout(const parser *p, const cJSON *root) {
    const lk_emoji_set *s = p->s;
    const cJSON *v;
    lk_status st = field(p, root, "", "heldout", true, &v);
    if (st != LK_OK) return st;
    if (!cJSON_IsArray(v))
        return lk_fail(LK_ERR_FORMAT, "%s: field 'heldout' must be a list of concept keys, got %s",
                       p->label, lk__json_type(v));
    bool *seen = calloc((size_t)s->n_concepts, sizeof *seen);
    if (!seen) return lk_fail(LK_ERR_NOMEM, "%s: out of memory", p->label);
    int k = 0;
    for (const cJSON *e = v->child; e && st == LK_OK; e = e->next, k++) {
        char buf[48];
        if (!cJSON_IsString(e) || !key_ok(e->valuestring)) {
            st = lk_fail(LK_ERR_FORMAT, "%s: field 'heldout' entry %d is not a key (lower-case hex "
                         "codepoints joined by '-')", p->label, k);
            break;
        }
        shown(buf, sizeof buf, e->valuestring);
        int ci = lk_emoji_set_find(s, e->valuestring);
        if (ci < 0)
            st = lk_fail(LK_ERR_FORMAT, "%s: field 'heldout' entry %d ('%s') is not a concept",
                         p->label, k, buf);
        else if (seen[ci])
            st = lk_fail(LK_ERR_FORMAT, "%s: field 'heldout' lists '%s' twice", p->label, buf);
        else if (!s->concepts[ci].heldout)
            st = lk_fail(LK_ERR_FORMAT, "%s: field 'heldout' lists '%s' but that concept has "
                         "\"heldout\": false", p->label, buf);
        else seen[ci] = true;
    }
    free(seen);
    return st;
}

/* counts.<key> must be an integer equal to want. */
static lk_status check_count(const parser *p, const cJSON *obj, const char *ctx, const char *key,
                             int want) {
    const cJSON *v;
    lk_status st = field(p, obj, ctx, key, true, &v);
    if (st != LK_OK) return st;
    int got;
    if (!as_int(v, 0, EMOJI_MAX_CONCEPTS, &got) || got != want)
        return lk_fail(LK_ERR_FORMAT, "%s: %sfield '%s' must be %d (what the concepts say)",
                       p->label, ctx, key, want);
    return LK_OK;
}

/* The optional "counts" object must agree with the concepts. */
static lk_status check_counts(const parser *p, const cJSON *root) {
    const lk_emoji_set *s = p->s;
    const cJSON *v;
    lk_status st = field(p, root, "", "counts", false, &v);
    if (st != LK_OK || !v) return st;
    if (!cJSON_IsObject(v))
        return lk_fail(LK_ERR_FORMAT, "%s: field 'counts' must be an object, got %s", p->label,
                       lk__json_type(v));
    int per_style[LK_EMOJI_MAX_STYLES] = {0}, all = 0, held = 0;
    const unsigned full = (1u << s->n_styles) - 1;
    for (int i = 0; i < s->n_concepts; i++) {
        const lk_emoji_concept *c = &s->concepts[i];
        for (int k = 0; k < s->n_styles; k++) per_style[k] += (c->style_mask >> k) & 1;
        all += c->style_mask == full;
        held += c->heldout;
    }
    if ((st = check_count(p, v, "counts: ", "concepts", s->n_concepts)) != LK_OK) return st;
    if ((st = check_count(p, v, "counts: ", "heldout", held)) != LK_OK) return st;
    if ((st = check_count(p, v, "counts: ", "all_four", all)) != LK_OK) return st;
    const cJSON *ps;
    if ((st = field(p, v, "counts: ", "per_style", true, &ps)) != LK_OK) return st;
    if (!cJSON_IsObject(ps))
        return lk_fail(LK_ERR_FORMAT, "%s: counts: field 'per_style' must be an object, got %s",
                       p->label, lk__json_type(ps));
    for (int k = 0; k < s->n_styles; k++)
        if ((st = check_count(p, ps, "counts.per_style: ", s->styles[k], per_style[k])) != LK_OK)
            return st;
    return LK_OK;
}

/* Contract: see emoji_set.h. */
lk_status lk_emoji_set_parse(lk_emoji_set **out, const char *json, size_t len, const char *dir,
                             const char *label) {
    if (!label) label = "manifest.json";
    if (!out) return lk_fail(LK_ERR_INVALID, "%s: NULL argument", label);
    *out = NULL;
    if ((!json && len) || !dir) return lk_fail(LK_ERR_INVALID, "%s: NULL argument", label);
    if (len > EMOJI_MAX_MANIFEST_BYTES)
        return lk_fail(LK_ERR_FORMAT, "%s: %zu bytes, more than a manifest can be (64 MiB)", label,
                       len);
    char *text = malloc(len + 1);
    lk_emoji_set *s = calloc(1, sizeof *s);
    cJSON *root = NULL;
    lk_status st = LK_OK;
    if (!text || !s) {
        st = lk_fail(LK_ERR_NOMEM, "%s: out of memory", label);
        goto done;
    }
    if (len) memcpy(text, json, len);
    text[len] = '\0';
    st = lk__json_parse_object(text, len, label, "manifest", &root);
    if (st != LK_OK) goto done;
    /* the image folder, without trailing slashes ("" -> ".") */
    size_t dl = strlen(dir);
    while (dl > 1 && dir[dl - 1] == '/') dl--;
    char *d = arena_alloc(s, dl + 2);
    if (!d) {
        st = lk_fail(LK_ERR_NOMEM, "%s: out of memory", label);
        goto done;
    }
    if (dl) memcpy(d, dir, dl), d[dl] = '\0';
    else memcpy(d, ".", 2);
    s->dir = d;

    const parser p = {.label = label, .s = s};
    if ((st = parse_header(&p, root)) != LK_OK) goto done;
    if ((st = parse_concepts(&p, root)) != LK_OK) goto done;
    if ((st = parse_heldout(&p, root)) != LK_OK) goto done;
    st = check_counts(&p, root);
done:
    cJSON_Delete(root);
    free(text);
    if (st != LK_OK) lk_emoji_set_free(s);
    else *out = s;
    return st;
}

/* Contract: see emoji_set.h. */
lk_status lk_emoji_set_open(lk_emoji_set **out, const char *dir) {
    if (out) *out = NULL;
    if (!out || !dir) return lk_fail(LK_ERR_INVALID, "emoji set: NULL argument");
    size_t dl = strlen(dir);
    char *path = malloc(dl + sizeof "/manifest.json");
    if (!path) return lk_fail(LK_ERR_NOMEM, "emoji set: out of memory");
    memcpy(path, dir, dl);
    memcpy(path + dl, "/manifest.json", sizeof "/manifest.json");
    char *text;
    size_t len;
    lk_status st = lk__read_file(path, EMOJI_MAX_MANIFEST_BYTES, &text, &len);
    if (st == LK_OK) st = lk_emoji_set_parse(out, text, len, dir, path);
    free(text);
    free(path);
    return st;
}

/* ---------------- accessors ---------------- */

const char *lk_emoji_set_dir(const lk_emoji_set *s) { return s ? s->dir : NULL; }

int lk_emoji_set_n_styles(const lk_emoji_set *s) { return s ? s->n_styles : 0; }

const char *lk_emoji_set_style(const lk_emoji_set *s, int i) {
    return s && i >= 0 && i < s->n_styles ? s->styles[i] : NULL;
}

int lk_emoji_set_style_index(const lk_emoji_set *s, const char *name) {
    return s && name ? style_index(s, name) : -1;
}

const char *lk_emoji_set_style_words(const lk_emoji_set *s, int i) {
    return s && i >= 0 && i < s->n_styles ? s->style_words[i] : NULL;
}

bool lk_emoji_set_style_trainable(const lk_emoji_set *s, int i) {
    return s && i >= 0 && i < s->n_styles && s->trainable[i];
}

int lk_emoji_set_n_sizes(const lk_emoji_set *s) { return s ? s->n_sizes : 0; }

int lk_emoji_set_size(const lk_emoji_set *s, int i) {
    return s && i >= 0 && i < s->n_sizes ? s->sizes[i] : 0;
}

int lk_emoji_set_n_concepts(const lk_emoji_set *s) { return s ? s->n_concepts : 0; }

const lk_emoji_concept *lk_emoji_set_concept(const lk_emoji_set *s, int i) {
    return s && i >= 0 && i < s->n_concepts ? &s->concepts[i] : NULL;
}

int lk_emoji_set_find(const lk_emoji_set *s, const char *key) {
    if (!s || !key) return -1;
    int lo = 0, hi = s->n_concepts - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2;
        int c = strcmp(s->concepts[mid].key, key);
        if (c == 0) return mid;
        if (c < 0) lo = mid + 1;
        else hi = mid - 1;
    }
    return -1;
}

/* ---------------- images ---------------- */

/* Contract: see emoji_set.h. */
lk_status lk_emoji_set_image_path(const lk_emoji_set *s, int concept, int style, int size,
                                  char *buf, size_t cap) {
    if (!s || !buf) return lk_fail(LK_ERR_INVALID, "emoji set: NULL argument");
    if (concept < 0 || concept >= s->n_concepts)
        return lk_fail(LK_ERR_INVALID, "emoji set: concept %d out of range (%d concepts)", concept,
                       s->n_concepts);
    if (style < 0 || style >= s->n_styles)
        return lk_fail(LK_ERR_INVALID, "emoji set: style %d out of range (%d styles)", style,
                       s->n_styles);
    const lk_emoji_concept *c = &s->concepts[concept];
    if (!(c->style_mask & (1u << style)))
        return lk_fail(LK_ERR_INVALID, "emoji set: concept '%s' has no %s image", c->key,
                       s->styles[style]);
    bool known = false;
    for (int i = 0; i < s->n_sizes; i++) known |= s->sizes[i] == size;
    if (!known)
        return lk_fail(LK_ERR_INVALID, "emoji set: no images of size %d in this set", size);
    int n = snprintf(buf, cap, "%s/%s/%d/%s.png", s->dir, s->styles[style], size, c->key);
    if (n < 0 || (size_t)n >= cap)
        return lk_fail(LK_ERR_INVALID, "emoji set: path buffer of %zu bytes is too small (%d "
                       "needed)", cap, n + 1);
    return LK_OK;
}

/* Contract: see emoji_set.h. */
lk_status lk_emoji_set_load_image(const lk_emoji_set *s, int concept, int style, int size,
                                  uint8_t *rgb) {
    if (!s || !rgb) return lk_fail(LK_ERR_INVALID, "emoji set: NULL argument");
    size_t cap = strlen(s->dir) + EMOJI_MAX_STYLE_NAME + 16 + (size_t)EMOJI_MAX_KEY_CPS * 7 + 8;
    char *path = malloc(cap);
    if (!path) return lk_fail(LK_ERR_NOMEM, "emoji set: out of memory");
    char *data = NULL;
    size_t len = 0;
    lk_image img = {0};
    lk_status st = lk_emoji_set_image_path(s, concept, style, size, path, cap);
    if (st == LK_OK) st = lk__read_file(path, EMOJI_MAX_IMAGE_BYTES, &data, &len);
    lk_image_load_opts opts = {.channels = 3, .max_pixels = (int64_t)size * size};
    int w = 0, h = 0;
    if (st == LK_OK) st = lk_image_probe(data, len, path, NULL, NULL, &w, &h); /* no pixel cap */
    if (st == LK_OK && (w != size || h != size))
        st = lk_fail(LK_ERR_FORMAT, "%s: image is %dx%d, the data set's size is %dx%d", path, w, h,
                     size, size);
    if (st == LK_OK) st = lk_image_decode(&img, data, len, path, &opts);
    if (st == LK_OK && (img.w != size || img.h != size || img.c != 3))
        st = lk_fail(LK_ERR_FORMAT, "%s: decoded to %dx%dx%d, expected %dx%dx3", path, img.w,
                     img.h, img.c, size, size);
    if (st == LK_OK) memcpy(rgb, img.px, (size_t)size * (size_t)size * 3);
    lk_image_free(&img);
    free(data);
    free(path);
    return st;
}

/* ---------------- captions ---------------- */

int lk_emoji_caption_variants(void) { return EMOJI_CAPTION_VARIANTS; }

typedef struct caption_writer {
    char *buf;
    size_t cap;
    size_t len; /* full length of the text so far, written or not */
} caption_writer;

static void put(caption_writer *w, const char *str) {
    size_t n = strlen(str);
    if (w->buf && w->cap && w->len < w->cap - 1) {
        size_t room = w->cap - 1 - w->len;
        memcpy(w->buf + w->len, str, n < room ? n : room);
    }
    w->len += n;
}

/* Contract: see emoji_set.h. */
int lk_emoji_caption(const lk_emoji_set *s, int concept, int style, int variant, char *buf,
                     size_t cap) {
    if (!s || concept < 0 || concept >= s->n_concepts || style >= s->n_styles || variant < 0 ||
        variant >= EMOJI_CAPTION_VARIANTS) {
        lk_fail(LK_ERR_INVALID, "emoji caption: concept %d, style %d or variant %d out of range",
                concept, style, variant);
        return -1;
    }
    const lk_emoji_concept *c = &s->concepts[concept];
    const char *kw[EMOJI_MAX_KEYWORDS];
    int n = 0;
    for (int i = 0; i < c->n_keywords; i++)
        if (strcmp(c->keywords[i], c->name) != 0) kw[n++] = c->keywords[i];

    caption_writer w = {.buf = buf, .cap = cap, .len = 0};
    if (variant == 1 && n > 0) {
        put(&w, c->name);
        for (int j = 0; j < n && j < 2; j++) {
            put(&w, ", ");
            put(&w, kw[j]);
        }
    } else if (variant == 2 && n > 0) {
        const int r = concept % n;
        for (int j = 0; j < n && j < 3; j++) {
            if (j) put(&w, ", ");
            put(&w, kw[(r + j) % n]);
        }
    } else {
        put(&w, c->name);
    }
    put(&w, " emoji");
    if (variant != 3 && style >= 0) {
        put(&w, ", ");
        put(&w, s->style_words[style]);
        put(&w, " style");
    }
    if (!buf || !cap) return (int)w.len;
    size_t kept = w.len < cap - 1 ? w.len : cap - 1;
    if (kept < w.len && kept > 0) {
        /* cut before a character whose bytes did not all fit (the text is valid UTF-8) */
        size_t j = kept - 1;
        while (j > 0 && ((unsigned char)buf[j] & 0xc0) == 0x80) j--;
        unsigned lead = (unsigned char)buf[j];
        size_t clen = lead < 0x80 ? 1 : lead < 0xe0 ? 2 : lead < 0xf0 ? 3 : 4;
        if (j + clen > kept) kept = j;
    }
    buf[kept] = '\0';
    return (int)kept;
}
