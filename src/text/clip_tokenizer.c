/* clip_tokenizer.c: CLIP's byte-level BPE tokenizer (Radford et al. 2021; OpenAI CLIP
 * simple_tokenizer.py, HF CLIPTokenizer): vocab.json/merges.txt loading, text cleanup,
 * pre-tokenization, BPE with a cache, added tokens, encode/decode. */
#define _POSIX_C_SOURCE 200809L
#include "likeness/tokenizer.h"
#include "text/tokenizer_internal.h"
#include "text/unicode_props.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LK_CLIP_N_MERGES (49152 - 256 - 2) /* merges CLIP and HF read from merges.txt */
#define LK_MAX_VOCAB_ID (1 << 24)
#define LK_CACHE_SLOTS 65536 /* power of two */
#define LK_CACHE_MAX 32768   /* entries before the cache is emptied */
#define LK_CACHE_KEY_MAX 64  /* longer pieces are not cached */

static const char lk__sot[] = LK__CLIP_SOT;
static const char lk__eot[] = LK__CLIP_EOT;

typedef struct lk__added {
    char *text; /* cleaned, lower-cased, NUL-terminated */
    size_t len;
    int64_t first;
    int n;
} lk__added;

typedef struct lk__cache_entry {
    uint64_t hash;
    uint32_t klen, n;
    int32_t *ids; /* n ids, then klen key bytes */
} lk__cache_entry;

typedef struct lk__cache {
    pthread_mutex_t mu;
    lk__cache_entry *slots; /* LK_CACHE_SLOTS; ids NULL = empty */
    size_t count;
} lk__cache;

struct lk_tokenizer {
    char *keys;        /* every vocab key, NUL-terminated, back to back */
    uint32_t *key_off; /* (n_vocab) offset into keys, UINT32_MAX for an id not in vocab.json */
    uint32_t *key_len; /* (n_vocab) */
    int64_t n_vocab;   /* largest vocab.json id + 1 */
    uint32_t *vmap;    /* open addressing: id + 1, 0 = empty */
    size_t vmask;
    uint64_t *mkey;    /* merges: (left << 32 | right) + 1, 0 = empty */
    uint32_t *mrank;
    int32_t *mres;
    size_t mmask;
    int32_t base[2][256]; /* [0]: id of byte b's symbol, [1]: the same + "</w>" */
    uint32_t byte_cp[256]; /* bytes_to_unicode */
    int64_t bos, eos, comma;
    lk__added *added;
    int n_added, cap_added;
    int64_t n_ids; /* n_vocab + added ids */
    lk__cache *cache;
};

/* ------------------------------------------------------------------ small helpers */

static uint64_t lk__hash(const void *p, size_t n) {
    const unsigned char *s = p;
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ s[i]) * 1099511628211ull;
    return h ^ (h >> 29);
}

static uint64_t lk__hash64(uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    return x ^ (x >> 33);
}

static size_t lk__pow2_at_least(size_t n) {
    size_t c = 16;
    while (c < n) c <<= 1;
    return c;
}

static lk_status lk__read_file(const char *path, char **buf, size_t *len) {
    *buf = NULL;
    *len = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return lk_fail(LK_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    size_t cap = 1 << 16, n = 0;
    char *b = malloc(cap + 1);
    if (!b) {
        fclose(f);
        return lk_fail(LK_ERR_NOMEM, "%s: out of memory", path);
    }
    for (;;) {
        size_t got = fread(b + n, 1, cap - n, f);
        n += got;
        if (n < cap) {
            if (ferror(f)) {
                free(b);
                fclose(f);
                return lk_fail(LK_ERR_IO, "%s: read failed", path);
            }
            break;
        }
        if (cap > ((size_t)1 << 30)) {
            free(b);
            fclose(f);
            return lk_fail(LK_ERR_FORMAT, "%s: larger than 1 GiB", path);
        }
        char *nb = realloc(b, cap * 2 + 1);
        if (!nb) {
            free(b);
            fclose(f);
            return lk_fail(LK_ERR_NOMEM, "%s: out of memory", path);
        }
        b = nb;
        cap *= 2;
    }
    fclose(f);
    b[n] = '\0';
    *buf = b;
    *len = n;
    return LK_OK;
}

/* CLIP's bytes_to_unicode: printable Latin-1 bytes map to themselves, the rest to 256 + k. */
static void lk__bytes_to_unicode(uint32_t map[256]) {
    uint32_t k = 0;
    for (int b = 0; b < 256; b++) {
        bool keep = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
        map[b] = keep ? (uint32_t)b : 256 + k++;
    }
}

/* ------------------------------------------------------------------ vocab map */

static int64_t lk__vocab_find(const lk_tokenizer *t, const char *s, size_t n) {
    if (!t->vmap) return -1;
    size_t i = (size_t)lk__hash(s, n) & t->vmask;
    for (;;) {
        uint32_t v = t->vmap[i];
        if (!v) return -1;
        uint32_t id = v - 1;
        if (t->key_len[id] == n && memcmp(t->keys + t->key_off[id], s, n) == 0) return id;
        i = (i + 1) & t->vmask;
    }
}

/* Insert id (whose key is already in keys); false if the key is already present. */
static bool lk__vocab_insert(lk_tokenizer *t, uint32_t id) {
    const char *s = t->keys + t->key_off[id];
    size_t n = t->key_len[id];
    size_t i = (size_t)lk__hash(s, n) & t->vmask;
    for (;;) {
        uint32_t v = t->vmap[i];
        if (!v) {
            t->vmap[i] = id + 1;
            return true;
        }
        if (t->key_len[v - 1] == n && memcmp(t->keys + t->key_off[v - 1], s, n) == 0) return false;
        i = (i + 1) & t->vmask;
    }
}

/* ------------------------------------------------------------------ vocab.json parser */

typedef struct lk__json {
    const char *path;
    const unsigned char *s;
    size_t n, i;
    int line;
} lk__json;

static void lk__json_ws(lk__json *j) {
    while (j->i < j->n) {
        unsigned char c = j->s[j->i];
        if (c == '\n') j->line++;
        else if (c != ' ' && c != '\t' && c != '\r') break;
        j->i++;
    }
}

static lk_status lk__json_err(const lk__json *j, const char *what) {
    if (j->i >= j->n) return lk_fail(LK_ERR_FORMAT, "%s:%d: %s (at end of file)", j->path, j->line, what);
    unsigned char c = j->s[j->i];
    if (c >= 0x20 && c < 0x7F)
        return lk_fail(LK_ERR_FORMAT, "%s:%d: %s (found '%c')", j->path, j->line, what, c);
    return lk_fail(LK_ERR_FORMAT, "%s:%d: %s (found byte 0x%02x)", j->path, j->line, what, c);
}

static int lk__hexval(unsigned char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static bool lk__json_hex4(lk__json *j, uint32_t *v) {
    if (j->n - j->i < 4) return false;
    uint32_t x = 0;
    for (int k = 0; k < 4; k++) {
        int h = lk__hexval(j->s[j->i + (size_t)k]);
        if (h < 0) return false;
        x = x << 4 | (uint32_t)h;
    }
    j->i += 4;
    *v = x;
    return true;
}

/* Parse a JSON string at j->i (at the opening quote) and append its UTF-8 bytes and a NUL to
 * out (size *on, capacity *ocap). */
static lk_status lk__json_string(lk__json *j, char **out, size_t *on, size_t *ocap) {
    if (j->i >= j->n || j->s[j->i] != '"') return lk__json_err(j, "expected a string key");
    j->i++;
    for (;;) {
        if (*ocap - *on < 8) {
            size_t nc = *ocap * 2;
            char *nb = realloc(*out, nc);
            if (!nb) return lk_fail(LK_ERR_NOMEM, "%s: out of memory", j->path);
            *out = nb;
            *ocap = nc;
        }
        if (j->i >= j->n) return lk__json_err(j, "unterminated string");
        unsigned char c = j->s[j->i];
        if (c == '"') {
            j->i++;
            (*out)[(*on)++] = '\0';
            return LK_OK;
        }
        if (c < 0x20) return lk__json_err(j, "control character in string");
        if (c == '\\') {
            j->i++;
            if (j->i >= j->n) return lk__json_err(j, "unterminated string");
            unsigned char e = j->s[j->i++];
            uint32_t cp;
            switch (e) {
            case '"': cp = '"'; break;
            case '\\': cp = '\\'; break;
            case '/': cp = '/'; break;
            case 'b': cp = '\b'; break;
            case 'f': cp = '\f'; break;
            case 'n': cp = '\n'; break;
            case 'r': cp = '\r'; break;
            case 't': cp = '\t'; break;
            case 'u':
                if (!lk__json_hex4(j, &cp)) return lk__json_err(j, "bad \\u escape");
                if (cp >= 0xD800 && cp < 0xDC00) {
                    uint32_t lo;
                    if (j->n - j->i < 6 || j->s[j->i] != '\\' || j->s[j->i + 1] != 'u')
                        return lk__json_err(j, "unpaired surrogate in \\u escape");
                    j->i += 2;
                    if (!lk__json_hex4(j, &lo) || lo < 0xDC00 || lo > 0xDFFF)
                        return lk__json_err(j, "unpaired surrogate in \\u escape");
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                } else if (cp >= 0xDC00 && cp < 0xE000) {
                    return lk__json_err(j, "unpaired surrogate in \\u escape");
                }
                break;
            default: j->i--; return lk__json_err(j, "bad escape in string");
            }
            if (cp == 0) return lk__json_err(j, "NUL character in string");
            *on += lk__utf8_encode(cp, *out + *on);
            continue;
        }
        if (c < 0x80) {
            (*out)[(*on)++] = (char)c;
            j->i++;
            continue;
        }
        uint32_t cp;
        size_t k = lk__utf8_decode(j->s + j->i, j->n - j->i, &cp);
        if (cp == LK_UNI_REPLACEMENT && !(k == 3 && j->s[j->i] == 0xEF))
            return lk__json_err(j, "invalid UTF-8 in string");
        memcpy(*out + *on, j->s + j->i, k);
        *on += k;
        j->i += k;
    }
}

static lk_status lk__parse_vocab(lk_tokenizer *t, const char *path, const char *text, size_t len) {
    lk__json j = {path, (const unsigned char *)text, len, 0, 1};
    size_t kcap = len + 16, kn = 0;
    char *keys = malloc(kcap);
    size_t ecap = 1024, en = 0;
    uint32_t *eoff = malloc(ecap * sizeof *eoff);
    int64_t *eid = malloc(ecap * sizeof *eid);
    int *eline = malloc(ecap * sizeof *eline);
    lk_status st = LK_OK;
    if (!keys || !eoff || !eid || !eline) {
        st = lk_fail(LK_ERR_NOMEM, "%s: out of memory", path);
        goto done;
    }
    if (len >= 3 && memcmp(text, "\xEF\xBB\xBF", 3) == 0) j.i = 3; /* UTF-8 BOM */
    lk__json_ws(&j);
    if (j.i >= j.n || j.s[j.i] != '{') {
        st = lk__json_err(&j, "expected '{' (vocab.json is an object of token -> id)");
        goto done;
    }
    j.i++;
    lk__json_ws(&j);
    if (j.i < j.n && j.s[j.i] == '}') {
        st = lk__json_err(&j, "empty vocabulary");
        goto done;
    }
    int64_t max_id = -1;
    for (;;) {
        lk__json_ws(&j);
        if (en == ecap) {
            ecap *= 2;
            uint32_t *a = realloc(eoff, ecap * sizeof *eoff);
            if (a) eoff = a;
            int64_t *b = realloc(eid, ecap * sizeof *eid);
            if (b) eid = b;
            int *c = realloc(eline, ecap * sizeof *eline);
            if (c) eline = c;
            if (!a || !b || !c) {
                st = lk_fail(LK_ERR_NOMEM, "%s: out of memory", path);
                goto done;
            }
        }
        eline[en] = j.line;
        eoff[en] = (uint32_t)kn;
        if ((st = lk__json_string(&j, &keys, &kn, &kcap)) != LK_OK) goto done;
        if (kn > UINT32_MAX / 2) {
            st = lk_fail(LK_ERR_FORMAT, "%s: keys too large", path);
            goto done;
        }
        lk__json_ws(&j);
        if (j.i >= j.n || j.s[j.i] != ':') {
            st = lk__json_err(&j, "expected ':' after key");
            goto done;
        }
        j.i++;
        lk__json_ws(&j);
        if (j.i < j.n && j.s[j.i] == '-') {
            st = lk__json_err(&j, "negative token id");
            goto done;
        }
        if (j.i >= j.n || j.s[j.i] < '0' || j.s[j.i] > '9') {
            st = lk__json_err(&j, "expected an integer token id");
            goto done;
        }
        int64_t v = 0;
        while (j.i < j.n && j.s[j.i] >= '0' && j.s[j.i] <= '9') {
            v = v * 10 + (j.s[j.i++] - '0');
            if (v >= LK_MAX_VOCAB_ID) {
                st = lk_fail(LK_ERR_FORMAT, "%s:%d: token id too large (limit %d)", path, j.line,
                             LK_MAX_VOCAB_ID - 1);
                goto done;
            }
        }
        if (j.i < j.n && (j.s[j.i] == '.' || j.s[j.i] == 'e' || j.s[j.i] == 'E')) {
            st = lk__json_err(&j, "token id is not an integer");
            goto done;
        }
        eid[en++] = v;
        if (v > max_id) max_id = v;
        lk__json_ws(&j);
        if (j.i < j.n && j.s[j.i] == ',') {
            j.i++;
            continue;
        }
        if (j.i < j.n && j.s[j.i] == '}') {
            j.i++;
            break;
        }
        st = lk__json_err(&j, "expected ',' or '}'");
        goto done;
    }
    lk__json_ws(&j);
    if (j.i != j.n) {
        st = lk__json_err(&j, "trailing data after the object");
        goto done;
    }

    t->n_vocab = max_id + 1;
    t->keys = keys;
    keys = NULL;
    t->key_off = malloc((size_t)t->n_vocab * sizeof *t->key_off);
    t->key_len = malloc((size_t)t->n_vocab * sizeof *t->key_len);
    size_t cap = lk__pow2_at_least(en * 2);
    t->vmap = calloc(cap, sizeof *t->vmap);
    t->vmask = cap - 1;
    if (!t->key_off || !t->key_len || !t->vmap) {
        st = lk_fail(LK_ERR_NOMEM, "%s: out of memory", path);
        goto done;
    }
    memset(t->key_off, 0xFF, (size_t)t->n_vocab * sizeof *t->key_off);
    for (size_t e = 0; e < en; e++) {
        uint32_t id = (uint32_t)eid[e];
        if (t->key_off[id] != UINT32_MAX) {
            st = lk_fail(LK_ERR_FORMAT, "%s:%d: id %u is given to two tokens ('%s' and '%s')",
                         path, eline[e], id, t->keys + t->key_off[id], t->keys + eoff[e]);
            goto done;
        }
        t->key_off[id] = eoff[e];
        t->key_len[id] = (uint32_t)strlen(t->keys + eoff[e]);
        if (t->key_len[id] == 0) {
            st = lk_fail(LK_ERR_FORMAT, "%s:%d: empty token", path, eline[e]);
            goto done;
        }
        if (!lk__vocab_insert(t, id)) {
            st = lk_fail(LK_ERR_FORMAT, "%s:%d: duplicate token '%s'", path, eline[e],
                         t->keys + eoff[e]);
            goto done;
        }
    }
done:
    free(keys);
    free(eoff);
    free(eid);
    free(eline);
    return st;
}

/* ------------------------------------------------------------------ merges.txt */

static bool lk__merge_find(const lk_tokenizer *t, int32_t a, int32_t b, uint32_t *rank, int32_t *res) {
    uint64_t key = ((uint64_t)(uint32_t)a << 32 | (uint32_t)b) + 1;
    size_t i = (size_t)lk__hash64(key) & t->mmask;
    for (;;) {
        uint64_t k = t->mkey[i];
        if (!k) return false;
        if (k == key) {
            *rank = t->mrank[i];
            *res = t->mres[i];
            return true;
        }
        i = (i + 1) & t->mmask;
    }
}

static bool lk__merge_insert(lk_tokenizer *t, int32_t a, int32_t b, uint32_t rank, int32_t res) {
    uint64_t key = ((uint64_t)(uint32_t)a << 32 | (uint32_t)b) + 1;
    size_t i = (size_t)lk__hash64(key) & t->mmask;
    for (;;) {
        uint64_t k = t->mkey[i];
        if (!k) {
            t->mkey[i] = key;
            t->mrank[i] = rank;
            t->mres[i] = res;
            return true;
        }
        if (k == key) return false;
        i = (i + 1) & t->mmask;
    }
}

static lk_status lk__parse_merges(lk_tokenizer *t, const char *path, char *text, size_t len) {
    size_t cap = lk__pow2_at_least(2 * LK_CLIP_N_MERGES);
    t->mkey = calloc(cap, sizeof *t->mkey);
    t->mrank = malloc(cap * sizeof *t->mrank);
    t->mres = malloc(cap * sizeof *t->mres);
    t->mmask = cap - 1;
    if (!t->mkey || !t->mrank || !t->mres) return lk_fail(LK_ERR_NOMEM, "%s: out of memory", path);
    char joined[512];
    size_t pos = 0;
    int line = 0;
    uint32_t rank = 0;
    /* the text up to the last non-white-space byte (HF strips the file before splitting it) */
    size_t end = len;
    while (end > 0 && (text[end - 1] == ' ' || text[end - 1] == '\n' || text[end - 1] == '\r' ||
                       text[end - 1] == '\t'))
        end--;
    if (len >= 3 && memcmp(text, "\xEF\xBB\xBF", 3) == 0) pos = 3;
    while (pos < end && rank < LK_CLIP_N_MERGES) {
        line++;
        size_t eol = pos;
        while (eol < end && text[eol] != '\n') eol++;
        size_t l = eol - pos;
        char *s = text + pos;
        pos = eol + 1;
        if (memchr(s, '\0', l))
            return lk_fail(LK_ERR_FORMAT, "%s:%d: NUL byte in line", path, line);
        if (line == 1) {
            if (l < 8 || memcmp(s, "#version", 8) != 0)
                return lk_fail(LK_ERR_FORMAT, "%s:1: expected a '#version' header line", path);
            continue;
        }
        if (l > 0 && s[l - 1] == '\r') l--;
        /* split on white space into exactly two parts */
        const char *part[3];
        size_t plen[3];
        int np = 0;
        for (size_t i = 0; i < l;) {
            while (i < l && (s[i] == ' ' || s[i] == '\t')) i++;
            if (i >= l) break;
            size_t st = i;
            while (i < l && s[i] != ' ' && s[i] != '\t') i++;
            if (np < 3) {
                part[np] = s + st;
                plen[np] = i - st;
            }
            np++;
        }
        if (np != 2)
            return lk_fail(LK_ERR_FORMAT, "%s:%d: expected two tokens \"left right\", found %d",
                           path, line, np);
        int64_t a = lk__vocab_find(t, part[0], plen[0]);
        int64_t b = lk__vocab_find(t, part[1], plen[1]);
        if (a < 0 || b < 0) {
            int k = a < 0 ? 0 : 1;
            return lk_fail(LK_ERR_FORMAT, "%s:%d: token '%.*s' is not in vocab.json", path, line,
                           (int)plen[k], part[k]);
        }
        if (plen[0] + plen[1] >= sizeof joined)
            return lk_fail(LK_ERR_FORMAT, "%s:%d: merge too long", path, line);
        memcpy(joined, part[0], plen[0]);
        memcpy(joined + plen[0], part[1], plen[1]);
        int64_t r = lk__vocab_find(t, joined, plen[0] + plen[1]);
        if (r < 0)
            return lk_fail(LK_ERR_FORMAT, "%s:%d: merge result '%.*s' is not in vocab.json", path,
                           line, (int)(plen[0] + plen[1]), joined);
        if (!lk__merge_insert(t, (int32_t)a, (int32_t)b, rank, (int32_t)r))
            return lk_fail(LK_ERR_FORMAT, "%s:%d: duplicate merge '%.*s %.*s'", path, line,
                           (int)plen[0], part[0], (int)plen[1], part[1]);
        rank++;
    }
    if (line == 0) return lk_fail(LK_ERR_FORMAT, "%s:1: empty file (expected a '#version' line)", path);
    if (rank == 0) return lk_fail(LK_ERR_FORMAT, "%s:%d: no merges", path, line);
    return LK_OK;
}

/* ------------------------------------------------------------------ load / free */

static lk_status lk__cache_new(lk__cache **out) {
    lk__cache *c = calloc(1, sizeof *c);
    if (!c) return lk_fail(LK_ERR_NOMEM, "tokenizer: out of memory");
    c->slots = calloc(LK_CACHE_SLOTS, sizeof *c->slots);
    if (!c->slots || pthread_mutex_init(&c->mu, NULL) != 0) {
        free(c->slots);
        free(c);
        return lk_fail(LK_ERR_NOMEM, "tokenizer: cannot create the BPE cache");
    }
    *out = c;
    return LK_OK;
}

static void lk__cache_clear(lk__cache *c) {
    for (size_t i = 0; i < LK_CACHE_SLOTS; i++) {
        free(c->slots[i].ids);
        c->slots[i].ids = NULL;
    }
    c->count = 0;
}

static void lk__cache_free(lk__cache *c) {
    if (!c) return;
    lk__cache_clear(c);
    pthread_mutex_destroy(&c->mu);
    free(c->slots);
    free(c);
}

void lk_tokenizer_free(lk_tokenizer *t) {
    if (!t) return;
    free(t->keys);
    free(t->key_off);
    free(t->key_len);
    free(t->vmap);
    free(t->mkey);
    free(t->mrank);
    free(t->mres);
    for (int i = 0; i < t->n_added; i++) free(t->added[i].text);
    free(t->added);
    lk__cache_free(t->cache);
    free(t);
}

static lk_status lk__tokenizer_finish(lk_tokenizer *t, const char *vocab_path) {
    lk__bytes_to_unicode(t->byte_cp);
    for (int b = 0; b < 256; b++) {
        char s[16];
        size_t n = lk__utf8_encode(t->byte_cp[b], s);
        int64_t id = lk__vocab_find(t, s, n);
        memcpy(s + n, "</w>", 4);
        int64_t idw = lk__vocab_find(t, s, n + 4);
        if (id < 0 || idw < 0)
            return lk_fail(LK_ERR_FORMAT, "%s: no token '%.*s' for byte 0x%02x", vocab_path,
                           (int)(id < 0 ? n : n + 4), s, b);
        t->base[0][b] = (int32_t)id;
        t->base[1][b] = (int32_t)idw;
    }
    t->bos = lk__vocab_find(t, lk__sot, sizeof lk__sot - 1);
    t->eos = lk__vocab_find(t, lk__eot, sizeof lk__eot - 1);
    if (t->bos < 0 || t->eos < 0)
        return lk_fail(LK_ERR_FORMAT, "%s: no %s token", vocab_path, t->bos < 0 ? lk__sot : lk__eot);
    t->comma = lk__vocab_find(t, ",</w>", 5);
    t->n_ids = t->n_vocab;
    return lk__cache_new(&t->cache);
}

lk_status lk_tokenizer_load_files(lk_tokenizer **out, const char *vocab_json, const char *merges_txt) {
    if (!out || !vocab_json || !merges_txt)
        return lk_fail(LK_ERR_INVALID, "lk_tokenizer_load_files: NULL argument");
    *out = NULL;
    lk_tokenizer *t = calloc(1, sizeof *t);
    if (!t) return lk_fail(LK_ERR_NOMEM, "tokenizer: out of memory");
    char *vb = NULL, *mb = NULL;
    size_t vn = 0, mn = 0;
    lk_status st = lk__read_file(vocab_json, &vb, &vn);
    if (st == LK_OK) st = lk__parse_vocab(t, vocab_json, vb, vn);
    free(vb);
    if (st == LK_OK) st = lk__read_file(merges_txt, &mb, &mn);
    if (st == LK_OK) st = lk__parse_merges(t, merges_txt, mb, mn);
    free(mb);
    if (st == LK_OK) st = lk__tokenizer_finish(t, vocab_json);
    if (st != LK_OK) {
        lk_tokenizer_free(t);
        return st;
    }
    *out = t;
    return LK_OK;
}

lk_status lk_tokenizer_load(lk_tokenizer **out, const char *dir) {
    if (!out || !dir) return lk_fail(LK_ERR_INVALID, "lk_tokenizer_load: NULL argument");
    *out = NULL;
    size_t n = strlen(dir);
    char *v = malloc(n + 16), *m = malloc(n + 16);
    if (!v || !m) {
        free(v);
        free(m);
        return lk_fail(LK_ERR_NOMEM, "tokenizer: out of memory");
    }
    const char *sep = (n > 0 && dir[n - 1] == '/') ? "" : "/";
    snprintf(v, n + 16, "%s%svocab.json", dir, sep);
    snprintf(m, n + 16, "%s%smerges.txt", dir, sep);
    lk_status st = lk_tokenizer_load_files(out, v, m);
    free(v);
    free(m);
    return st;
}

int64_t lk_tokenizer_bos(const lk_tokenizer *t) { return t->bos; }
int64_t lk_tokenizer_eos(const lk_tokenizer *t) { return t->eos; }
int64_t lk_tokenizer_vocab_size(const lk_tokenizer *t) { return t->n_ids; }
int64_t lk__tokenizer_comma(const lk_tokenizer *t) { return t->comma; }

/* ------------------------------------------------------------------ id buffer */

void lk__tokbuf_free(lk__tokbuf *b) {
    if (!b) return;
    free(b->ids);
    free(b->span);
    memset(b, 0, sizeof *b);
}

static lk_status lk__tokbuf_push(lk__tokbuf *b, int64_t id, int32_t span) {
    if (b->n == b->cap) {
        size_t nc = b->cap ? b->cap * 2 : 64;
        int64_t *ni = realloc(b->ids, nc * sizeof *ni);
        if (!ni) return lk_fail(LK_ERR_NOMEM, "tokenizer: out of memory");
        b->ids = ni;
        int32_t *ns = realloc(b->span, nc * sizeof *ns);
        if (!ns) return lk_fail(LK_ERR_NOMEM, "tokenizer: out of memory");
        b->span = ns;
        b->cap = nc;
    }
    b->ids[b->n] = id;
    b->span[b->n] = span;
    b->n++;
    return LK_OK;
}

/* ------------------------------------------------------------------ text cleanup */

/* Python's str.isspace(): White_Space plus the information separators U+001C..U+001F. */
static bool lk__py_isspace(uint32_t cp) {
    return (cp >= 0x1C && cp <= 0x1F) || (lk__uni_flags(cp) & LK_UNI_SPACE);
}

/* Clean text[0..len) as CLIP does (strip, runs of white space -> ' ', lower-case) into a new
 * NUL-terminated UTF-8 string *out of *out_len bytes (free with free()). */
lk_status lk__normalize(const char *text, size_t len, char **out, size_t *out_len) {
    *out = NULL;
    *out_len = 0;
    if (len > ((size_t)1 << 28)) return lk_fail(LK_ERR_INVALID, "tokenizer: text longer than 256 MiB");
    uint32_t *cp = malloc((len + 1) * sizeof *cp);
    char *o = malloc(len * 4 + 8); /* at most 4 bytes per code point, and code points <= bytes */
    if (!cp || !o) {
        free(cp);
        free(o);
        return lk_fail(LK_ERR_NOMEM, "tokenizer: out of memory");
    }
    size_t n = 0;
    const unsigned char *s = (const unsigned char *)text;
    for (size_t i = 0; i < len;) {
        uint32_t c;
        i += lk__utf8_decode(s + i, len - i, &c);
        cp[n++] = c;
    }
    size_t a = 0, b = n;
    while (a < b && lk__py_isspace(cp[a])) a++;
    while (b > a && lk__py_isspace(cp[b - 1])) b--;
    size_t m = 0; /* collapse white-space runs in place */
    bool in_space = false;
    for (size_t i = a; i < b; i++) {
        uint32_t c = cp[i];
        bool sp = c < 0x80 ? (c == ' ' || (c >= 9 && c <= 13)) : (lk__uni_flags(c) & LK_UNI_SPACE) != 0;
        if (!sp) cp[m++] = c;
        else if (!in_space) cp[m++] = ' ';
        in_space = sp;
    }
    size_t on = 0;
    for (size_t i = 0; i < m; i++) {
        uint32_t c = cp[i];
        if (c == 0x130) { /* the one multi-code-point lower-casing */
            on += lk__utf8_encode('i', o + on);
            on += lk__utf8_encode(0x307, o + on);
            continue;
        }
        if (c == 0x3A3) { /* final sigma: a cased letter before, none after (skipping case-ignorables) */
            size_t k = i;
            while (k > 0 && (lk__uni_flags(cp[k - 1]) & LK_UNI_CASE_IGNORABLE)) k--;
            bool before = k > 0 && (lk__uni_flags(cp[k - 1]) & LK_UNI_CASED);
            k = i + 1;
            while (k < m && (lk__uni_flags(cp[k]) & LK_UNI_CASE_IGNORABLE)) k++;
            bool after = k < m && (lk__uni_flags(cp[k]) & LK_UNI_CASED);
            on += lk__utf8_encode(before && !after ? 0x3C2 : 0x3C3, o + on);
            continue;
        }
        on += lk__utf8_encode(c < 0x80 ? (c >= 'A' && c <= 'Z' ? c + 32 : c) : lk__uni_lower_simple(c),
                              o + on);
    }
    o[on] = '\0';
    free(cp);
    *out = o;
    *out_len = on;
    return LK_OK;
}

/* ------------------------------------------------------------------ BPE */

typedef struct lk__heap_item {
    uint32_t rank;
    int32_t pos;
} lk__heap_item;

static bool lk__heap_less(lk__heap_item a, lk__heap_item b) {
    return a.rank < b.rank || (a.rank == b.rank && a.pos < b.pos);
}

static void lk__heap_push(lk__heap_item *h, size_t *n, lk__heap_item x) {
    size_t i = (*n)++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!lk__heap_less(x, h[p])) break;
        h[i] = h[p];
        i = p;
    }
    h[i] = x;
}

static lk__heap_item lk__heap_pop(lk__heap_item *h, size_t *n) {
    lk__heap_item top = h[0], x = h[--(*n)];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= *n) break;
        if (c + 1 < *n && lk__heap_less(h[c + 1], h[c])) c++;
        if (!lk__heap_less(h[c], x)) break;
        h[i] = h[c];
        i = c;
    }
    if (*n > 0) h[i] = x;
    return top;
}

/* BPE of one pre-token of n >= 1 raw bytes: repeatedly merge the adjacent pair of lowest rank,
 * leftmost first (the same result as CLIP's merge-every-occurrence loop, since a bigram's
 * occurrences cannot overlap with a merge that creates it). Writes ids (at most n) to out,
 * returns their count; -1 on allocation failure. */
static int lk__bpe_word(const lk_tokenizer *t, const unsigned char *w, int n, int32_t *out) {
    if (n == 1) {
        out[0] = t->base[1][w[0]];
        return 1;
    }
    enum { SMALL = 64 };
    int32_t sid_s[SMALL], prv_s[SMALL], nxt_s[SMALL];
    lk__heap_item heap_s[3 * SMALL];
    int32_t *sid = sid_s, *prv = prv_s, *nxt = nxt_s;
    lk__heap_item *heap = heap_s;
    if (n > SMALL) {
        sid = malloc((size_t)n * sizeof *sid);
        prv = malloc((size_t)n * sizeof *prv);
        nxt = malloc((size_t)n * sizeof *nxt);
        heap = malloc((size_t)n * 3 * sizeof *heap);
        if (!sid || !prv || !nxt || !heap) {
            free(sid);
            free(prv);
            free(nxt);
            free(heap);
            return -1;
        }
    }
    for (int i = 0; i < n; i++) {
        sid[i] = t->base[i == n - 1][w[i]];
        prv[i] = i - 1;
        nxt[i] = i + 1 < n ? i + 1 : -1;
    }
    size_t hn = 0;
    uint32_t rank;
    int32_t res;
    for (int i = 0; i + 1 < n; i++)
        if (lk__merge_find(t, sid[i], sid[i + 1], &rank, &res))
            lk__heap_push(heap, &hn, (lk__heap_item){rank, i});
    while (hn > 0) {
        lk__heap_item it = lk__heap_pop(heap, &hn);
        int32_t p = it.pos, q = nxt[p];
        if (sid[p] < 0 || q < 0) continue; /* merged away / now last */
        if (!lk__merge_find(t, sid[p], sid[q], &rank, &res) || rank != it.rank) continue; /* stale */
        sid[p] = res;
        sid[q] = -1;
        nxt[p] = nxt[q];
        if (nxt[q] >= 0) prv[nxt[q]] = p;
        if (prv[p] >= 0 && lk__merge_find(t, sid[prv[p]], sid[p], &rank, &res))
            lk__heap_push(heap, &hn, (lk__heap_item){rank, prv[p]});
        if (nxt[p] >= 0 && lk__merge_find(t, sid[p], sid[nxt[p]], &rank, &res))
            lk__heap_push(heap, &hn, (lk__heap_item){rank, p});
    }
    int k = 0;
    for (int i = 0; i >= 0; i = nxt[i]) out[k++] = sid[i];
    if (n > SMALL) {
        free(sid);
        free(prv);
        free(nxt);
        free(heap);
    }
    return k;
}

/* Look a piece up in the cache; on a hit append its ids to out. Returns 1 on a hit, 0 on a
 * miss, negative on allocation failure. */
static int lk__cache_get(const lk_tokenizer *t, uint64_t h, const unsigned char *w, size_t n,
                         lk__tokbuf *out) {
    lk__cache *c = t->cache;
    int hit = 0;
    pthread_mutex_lock(&c->mu);
    size_t i = (size_t)h & (LK_CACHE_SLOTS - 1);
    for (;;) {
        lk__cache_entry *e = &c->slots[i];
        if (!e->ids) break;
        if (e->hash == h && e->klen == n && memcmp(e->ids + e->n, w, n) == 0) {
            hit = 1;
            for (uint32_t k = 0; k < e->n && hit > 0; k++)
                if (lk__tokbuf_push(out, e->ids[k], 1) != LK_OK) hit = -1;
            break;
        }
        i = (i + 1) & (LK_CACHE_SLOTS - 1);
    }
    pthread_mutex_unlock(&c->mu);
    return hit;
}

static void lk__cache_put(const lk_tokenizer *t, uint64_t h, const unsigned char *w, size_t n,
                          const int32_t *ids, int k) {
    lk__cache *c = t->cache;
    int32_t *blob = malloc((size_t)k * sizeof *blob + n);
    if (!blob) return; /* the cache is only an optimization */
    memcpy(blob, ids, (size_t)k * sizeof *blob);
    memcpy(blob + k, w, n);
    pthread_mutex_lock(&c->mu);
    if (c->count >= LK_CACHE_MAX) lk__cache_clear(c);
    size_t i = (size_t)h & (LK_CACHE_SLOTS - 1);
    for (;;) {
        lk__cache_entry *e = &c->slots[i];
        if (!e->ids) {
            *e = (lk__cache_entry){h, (uint32_t)n, (uint32_t)k, blob};
            c->count++;
            blob = NULL;
            break;
        }
        if (e->hash == h && e->klen == n && memcmp(e->ids + e->n, w, n) == 0) break; /* raced */
        i = (i + 1) & (LK_CACHE_SLOTS - 1);
    }
    pthread_mutex_unlock(&c->mu);
    free(blob);
}

static lk_status lk__bpe_piece(const lk_tokenizer *t, const unsigned char *w, size_t n, lk__tokbuf *out) {
    if (n > (size_t)INT32_MAX / 4) return lk_fail(LK_ERR_INVALID, "tokenizer: word too long");
    bool cacheable = n <= LK_CACHE_KEY_MAX;
    uint64_t h = 0;
    if (cacheable) {
        h = lk__hash(w, n);
        int r = lk__cache_get(t, h, w, n, out);
        if (r > 0) return LK_OK;
        if (r < 0) return lk_fail(LK_ERR_NOMEM, "tokenizer: out of memory");
    }
    int32_t small[LK_CACHE_KEY_MAX];
    int32_t *ids = n <= LK_CACHE_KEY_MAX ? small : malloc(n * sizeof *ids);
    if (!ids) return lk_fail(LK_ERR_NOMEM, "tokenizer: out of memory");
    int k = lk__bpe_word(t, w, (int)n, ids);
    lk_status st = k < 0 ? lk_fail(LK_ERR_NOMEM, "tokenizer: out of memory") : LK_OK;
    for (int i = 0; i < k && st == LK_OK; i++) st = lk__tokbuf_push(out, ids[i], 1);
    if (st == LK_OK && cacheable) lk__cache_put(t, h, w, n, ids, k);
    if (ids != small) free(ids);
    return st;
}

/* ------------------------------------------------------------------ pre-tokenization */

static inline uint32_t lk__next_cp(const unsigned char *s, size_t i, size_t e, size_t *len) {
    if (s[i] < 0x80) {
        *len = 1;
        return s[i];
    }
    uint32_t cp;
    *len = lk__utf8_decode(s + i, e - i, &cp);
    return cp;
}

/* The class of cp in CLIP's pattern (compiled IGNORECASE): LK_UNI_LETTER, _NUMBER, _SPACE (not
 * matched: skipped) or 0 (punctuation and everything else). */
static inline unsigned lk__cls(uint32_t cp) {
    if (cp < 0x80) {
        if ((cp | 32) >= 'a' && (cp | 32) <= 'z') return LK_UNI_LETTER;
        if (cp >= '0' && cp <= '9') return LK_UNI_NUMBER;
        if (cp == ' ' || (cp >= 9 && cp <= 13)) return LK_UNI_SPACE;
        return 0;
    }
    unsigned f = lk__uni_flags(cp);
    if (f & LK_UNI_CLIP_SKIP) return LK_UNI_SPACE; /* dropped, like white space */
    return f & (LK_UNI_LETTER | LK_UNI_NUMBER | LK_UNI_SPACE);
}

/* Split normalized text s[0..n) by CLIP's pattern; contract in tokenizer_internal.h. */
lk_status lk__clip_pieces(const unsigned char *s, size_t n, lk__piece_fn fn, void *ud) {
    const size_t e = n;
    size_t i = 0;
    while (i < e) {
        size_t l;
        uint32_t c = lk__next_cp(s, i, e, &l);
        size_t j;
        if (c == '<' && e - i >= sizeof lk__sot - 1 && memcmp(s + i, lk__sot, sizeof lk__sot - 1) == 0) {
            lk_status st = fn(ud, LK__PIECE_SOT, s + i, sizeof lk__sot - 1);
            if (st != LK_OK) return st;
            i += sizeof lk__sot - 1;
            continue;
        }
        if (c == '<' && e - i >= sizeof lk__eot - 1 && memcmp(s + i, lk__eot, sizeof lk__eot - 1) == 0) {
            lk_status st = fn(ud, LK__PIECE_EOT, s + i, sizeof lk__eot - 1);
            if (st != LK_OK) return st;
            i += sizeof lk__eot - 1;
            continue;
        }
        unsigned f = lk__cls(c);
        if (c == '\'' && i + 1 < e) {
            unsigned char d = s[i + 1];
            j = 0;
            if (d == 's' || d == 't' || d == 'm' || d == 'd') j = i + 2;
            else if (d == 0xC5 && i + 2 < e && s[i + 2] == 0xBF) j = i + 3; /* U+017F folds to 's' */
            else if (i + 2 < e && ((d == 'r' && s[i + 2] == 'e') || (d == 'v' && s[i + 2] == 'e') ||
                                   (d == 'l' && s[i + 2] == 'l')))
                j = i + 3;
            if (j) {
                lk_status st = fn(ud, LK__PIECE_TEXT, s + i, j - i);
                if (st != LK_OK) return st;
                i = j;
                continue;
            }
        }
        if (f & LK_UNI_SPACE) {
            i += l;
            continue;
        }
        j = i + l;
        if (f & LK_UNI_LETTER) {
            while (j < e) {
                size_t l2;
                uint32_t c2 = lk__next_cp(s, j, e, &l2);
                if (!(lk__cls(c2) & LK_UNI_LETTER)) break;
                j += l2;
            }
        } else if (!(f & LK_UNI_NUMBER)) {
            while (j < e) {
                size_t l2;
                uint32_t c2 = lk__next_cp(s, j, e, &l2);
                if (lk__cls(c2)) break;
                j += l2;
            }
        }
        lk_status st = fn(ud, LK__PIECE_TEXT, s + i, j - i);
        if (st != LK_OK) return st;
        i = j;
    }
    return LK_OK;
}

/* Where lk__pretokenize's pieces go: BPE ids (the specials as BOS / EOS) appended to out. */
typedef struct lk__bpe_sink {
    const lk_tokenizer *t;
    lk__tokbuf *out;
} lk__bpe_sink;

static lk_status lk__bpe_sink_piece(void *ud, lk__piece_kind kind, const unsigned char *w, size_t n) {
    const lk__bpe_sink *k = ud;
    if (kind == LK__PIECE_SOT) return lk__tokbuf_push(k->out, k->t->bos, 1);
    if (kind == LK__PIECE_EOT) return lk__tokbuf_push(k->out, k->t->eos, 1);
    return lk__bpe_piece(k->t, w, n, k->out);
}

/* Split normalized text s[b..e) by CLIP's pattern and BPE every piece into out. */
static lk_status lk__pretokenize(const lk_tokenizer *t, const unsigned char *s, size_t b, size_t e,
                                 lk__tokbuf *out) {
    lk__bpe_sink k = {t, out};
    return lk__clip_pieces(s + b, e - b, lk__bpe_sink_piece, &k);
}

/* Does added token a match s[i..) as a whole word inside s[0..n)? */
static bool lk__added_match(const lk__added *a, const unsigned char *s, size_t i, size_t n) {
    if (n - i < a->len || memcmp(s + i, a->text, a->len) != 0) return false;
    const unsigned char *at = (const unsigned char *)a->text;
    size_t l;
    const unsigned LN = LK_UNI_LETTER | LK_UNI_NUMBER;
    if (i > 0 && (lk__cls(lk__next_cp(at, 0, a->len, &l)) & LN)) {
        size_t k = i - 1; /* start of the previous code point */
        while (k > 0 && (s[k] & 0xC0) == 0x80) k--;
        if (lk__cls(lk__next_cp(s, k, n, &l)) & LN) return false;
    }
    if (i + a->len < n) {
        size_t k = a->len - 1;
        while (k > 0 && (at[k] & 0xC0) == 0x80) k--;
        if ((lk__cls(lk__next_cp(at, k, a->len, &l)) & LN) &&
            (lk__cls(lk__next_cp(s, i + a->len, n, &l)) & LN))
            return false;
    }
    return true;
}

lk_status lk__tokenizer_tokenize(const lk_tokenizer *t, const char *text, size_t len, lk__tokbuf *out) {
    char *norm;
    size_t n;
    lk_status st = lk__normalize(text, len, &norm, &n);
    if (st != LK_OK) return st;
    const unsigned char *s = (const unsigned char *)norm;
    size_t seg = 0;
    if (t->n_added > 0) {
        for (size_t i = 0; i < n && st == LK_OK;) {
            const lk__added *best = NULL;
            for (int k = 0; k < t->n_added; k++) {
                const lk__added *a = &t->added[k];
                if ((!best || a->len > best->len) && lk__added_match(a, s, i, n)) best = a;
            }
            if (!best) {
                i++;
                while (i < n && (s[i] & 0xC0) == 0x80) i++;
                continue;
            }
            st = lk__pretokenize(t, s, seg, i, out);
            for (int v = 0; v < best->n && st == LK_OK; v++)
                st = lk__tokbuf_push(out, best->first + v, v == 0 ? best->n : 0);
            i += best->len;
            seg = i;
        }
    }
    if (st == LK_OK) st = lk__pretokenize(t, s, seg, n, out);
    free(norm);
    return st;
}

/* ------------------------------------------------------------------ public encode */

lk_status lk_tokenizer_bpe(const lk_tokenizer *t, const char *text, int64_t *ids, int cap, int *n) {
    if (!t || !text || !n || cap < 0 || (cap > 0 && !ids))
        return lk_fail(LK_ERR_INVALID, "lk_tokenizer_bpe: NULL argument or negative cap");
    lk__tokbuf b = {0};
    lk_status st = lk__tokenizer_tokenize(t, text, strlen(text), &b);
    if (st == LK_OK) {
        if (b.n > (size_t)INT32_MAX) {
            st = lk_fail(LK_ERR_INVALID, "lk_tokenizer_bpe: more than 2^31 ids");
        } else {
            *n = (int)b.n;
            size_t k = b.n < (size_t)cap ? b.n : (size_t)cap;
            if (k) memcpy(ids, b.ids, k * sizeof *ids);
        }
    }
    lk__tokbuf_free(&b);
    return st;
}

lk_status lk_tokenizer_encode(const lk_tokenizer *t, const char *text, int64_t *ids, int max_len,
                              lk_pad_mode pad, int *n_content) {
    if (!t || !text || !ids) return lk_fail(LK_ERR_INVALID, "lk_tokenizer_encode: NULL argument");
    if (max_len < 2) return lk_fail(LK_ERR_INVALID, "lk_tokenizer_encode: max_len %d < 2", max_len);
    if (pad != LK_PAD_EOS && pad != LK_PAD_ZERO)
        return lk_fail(LK_ERR_INVALID, "lk_tokenizer_encode: unknown pad mode %d", (int)pad);
    lk__tokbuf b = {0};
    lk_status st = lk__tokenizer_tokenize(t, text, strlen(text), &b);
    if (st != LK_OK) {
        lk__tokbuf_free(&b);
        return st;
    }
    size_t keep = b.n < (size_t)(max_len - 2) ? b.n : (size_t)(max_len - 2);
    ids[0] = t->bos;
    if (keep) memcpy(ids + 1, b.ids, keep * sizeof *ids);
    ids[keep + 1] = t->eos;
    for (size_t i = keep + 2; i < (size_t)max_len; i++) ids[i] = pad == LK_PAD_EOS ? t->eos : 0;
    if (n_content) *n_content = b.n > (size_t)INT32_MAX ? INT32_MAX : (int)b.n;
    lk__tokbuf_free(&b);
    return LK_OK;
}

/* ------------------------------------------------------------------ vocabulary */

static const lk__added *lk__added_of_id(const lk_tokenizer *t, int64_t id, int *k) {
    for (int i = 0; i < t->n_added; i++) {
        const lk__added *a = &t->added[i];
        if (id >= a->first && id < a->first + a->n) {
            *k = (int)(id - a->first);
            return a;
        }
    }
    return NULL;
}

lk_status lk_tokenizer_add_token_n(lk_tokenizer *t, const char *text, int n_vectors, int64_t *first_id) {
    if (!t || !text) return lk_fail(LK_ERR_INVALID, "lk_tokenizer_add_token: NULL argument");
    if (n_vectors < 1 || n_vectors > LK_CLIP_CHUNK)
        return lk_fail(LK_ERR_INVALID, "add token '%s': %d vectors (must be 1..%d)", text, n_vectors,
                       LK_CLIP_CHUNK);
    char *norm;
    size_t n;
    lk_status st = lk__normalize(text, strlen(text), &norm, &n);
    if (st != LK_OK) return st;
    if (n == 0) st = lk_fail(LK_ERR_INVALID, "add token '%s': empty after white-space cleanup", text);
    else if (strstr(norm, lk__sot) || strstr(norm, lk__eot))
        st = lk_fail(LK_ERR_INVALID, "add token '%s': contains a special token", text);
    else if (t->n_ids + n_vectors > LK_MAX_VOCAB_ID)
        st = lk_fail(LK_ERR_INVALID, "add token '%s': vocabulary full", text);
    for (int i = 0; i < t->n_added && st == LK_OK; i++)
        if (t->added[i].len == n && memcmp(t->added[i].text, norm, n) == 0)
            st = lk_fail(LK_ERR_INVALID, "add token '%s': already added (id %lld)", text,
                         (long long)t->added[i].first);
    if (st == LK_OK && t->n_added == t->cap_added) {
        int nc = t->cap_added ? t->cap_added * 2 : 8;
        lk__added *na = realloc(t->added, (size_t)nc * sizeof *na);
        if (!na) st = lk_fail(LK_ERR_NOMEM, "tokenizer: out of memory");
        else {
            t->added = na;
            t->cap_added = nc;
        }
    }
    if (st != LK_OK) {
        free(norm);
        return st;
    }
    t->added[t->n_added++] = (lk__added){norm, n, t->n_ids, n_vectors};
    if (first_id) *first_id = t->n_ids;
    t->n_ids += n_vectors;
    return LK_OK;
}

lk_status lk_tokenizer_add_token(lk_tokenizer *t, const char *text, int64_t *id) {
    return lk_tokenizer_add_token_n(t, text, 1, id);
}

int64_t lk_tokenizer_token_id(const lk_tokenizer *t, const char *token) {
    if (!t || !token) return -1;
    size_t len = strlen(token);
    if (t->n_added > 0) {
        char *norm;
        size_t n;
        if (lk__normalize(token, len, &norm, &n) == LK_OK) {
            int64_t id = -1;
            for (int i = 0; i < t->n_added && id < 0; i++)
                if (t->added[i].len == n && memcmp(t->added[i].text, norm, n) == 0) id = t->added[i].first;
            free(norm);
            if (id >= 0) return id;
        }
    }
    return lk__vocab_find(t, token, len);
}

const char *lk_tokenizer_id_to_token(const lk_tokenizer *t, int64_t id) {
    if (!t || id < 0 || id >= t->n_ids) return NULL;
    if (id < t->n_vocab) return t->key_off[id] == UINT32_MAX ? NULL : t->keys + t->key_off[id];
    int k = 0;
    const lk__added *a = lk__added_of_id(t, id, &k);
    return a ? a->text : NULL;
}

/* ------------------------------------------------------------------ decode */

typedef struct lk__sbuf {
    char *p;
    size_t n, cap;
} lk__sbuf;

static bool lk__sbuf_put(lk__sbuf *b, const void *s, size_t n) {
    if (b->cap - b->n < n + 1) {
        size_t nc = b->cap ? b->cap : 256;
        while (nc - b->n < n + 1) nc *= 2;
        char *np = realloc(b->p, nc);
        if (!np) return false;
        b->p = np;
        b->cap = nc;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = '\0';
    return true;
}

lk_status lk_tokenizer_decode(const lk_tokenizer *t, const int64_t *ids, int n, bool skip_special,
                              char **text) {
    if (!t || !text || n < 0 || (n > 0 && !ids))
        return lk_fail(LK_ERR_INVALID, "lk_tokenizer_decode: NULL argument or negative count");
    *text = NULL;
    int byte_of[512]; /* bytes_to_unicode inverted; code points up to 511 */
    for (int i = 0; i < 512; i++) byte_of[i] = -1;
    for (int b = 0; b < 256; b++) byte_of[t->byte_cp[b]] = b;
    lk__sbuf raw = {0}, out = {0};
    bool after_eos = false, ok = true;
    for (int i = 0; i < n && ok; i++) {
        int64_t id = ids[i];
        const char *key = lk_tokenizer_id_to_token(t, id);
        if (!key) {
            free(raw.p);
            return lk_fail(LK_ERR_INVALID, "lk_tokenizer_decode: ids[%d] = %lld is not a token", i,
                           (long long)id);
        }
        if (skip_special && (id == t->bos || id == t->eos || (after_eos && id == 0))) {
            if (id == t->eos) after_eos = true;
            continue;
        }
        if (id >= t->n_vocab) {
            int k = 0;
            const lk__added *a = lk__added_of_id(t, id, &k);
            char suffix[24] = "";
            if (k > 0) snprintf(suffix, sizeof suffix, "_%d", k);
            ok = lk__sbuf_put(&raw, a->text, a->len) && lk__sbuf_put(&raw, suffix, strlen(suffix)) &&
                 lk__sbuf_put(&raw, "</w>", 4);
            continue;
        }
        const unsigned char *s = (const unsigned char *)key;
        size_t len = strlen(key);
        for (size_t j = 0; j < len && ok;) {
            uint32_t cp;
            size_t l = lk__utf8_decode(s + j, len - j, &cp);
            if (cp < 512 && byte_of[cp] >= 0) {
                unsigned char byte = (unsigned char)byte_of[cp];
                ok = lk__sbuf_put(&raw, &byte, 1);
            } else {
                ok = lk__sbuf_put(&raw, s + j, l);
            }
            j += l;
        }
    }
    /* UTF-8 with replacement, then "</w>" -> " " */
    const unsigned char *r = (const unsigned char *)raw.p;
    for (size_t j = 0; j < raw.n && ok;) {
        if (raw.n - j >= 4 && memcmp(r + j, "</w>", 4) == 0) {
            ok = lk__sbuf_put(&out, " ", 1);
            j += 4;
            continue;
        }
        uint32_t cp;
        size_t l = lk__utf8_decode(r + j, raw.n - j, &cp);
        char enc[4];
        ok = lk__sbuf_put(&out, enc, lk__utf8_encode(cp, enc));
        j += l;
    }
    if (ok && !out.p) ok = lk__sbuf_put(&out, "", 0);
    free(raw.p);
    if (!ok) {
        free(out.p);
        return lk_fail(LK_ERR_NOMEM, "lk_tokenizer_decode: out of memory");
    }
    while (out.n > 0 && out.p[out.n - 1] == ' ') out.p[--out.n] = '\0';
    *text = out.p;
    return LK_OK;
}
