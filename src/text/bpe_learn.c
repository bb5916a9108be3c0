/* bpe_learn.c: learning a CLIP-format byte-level BPE vocabulary (Sennrich et al. 2016, BPE; the
 * byte-level symbols and "</w>" word ends of OpenAI CLIP's simple_tokenizer) from captions. */
#define _POSIX_C_SOURCE 200809L
#include "likeness/tokenizer.h"
#include "text/tokenizer_internal.h"
#include "text/unicode_props.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define LK_BPE_MIN_VOCAB 514                 /* 512 byte symbols + 2 specials */
#define LK_BPE_MAX_VOCAB 49408               /* CLIP's own size */
#define LK_BPE_MAX_MERGES (49152 - 256 - 2)  /* merges lk_tokenizer_load reads */
#define LK_BPE_MAX_TOKEN 256                 /* bytes of a token's text; longer merges are not made */
#define LK_BPE_MAX_PIECE 1024                /* bytes of a piece; longer pieces are not learned from */
#define LK_BPE_MAX_CORPUS ((size_t)256 << 20) /* bytes of all texts together */
#define LK_BPE_TOK_SLOTS 131072              /* token map, > 2 * (LK_BPE_MAX_VOCAB + 512) */

/* A distinct piece of the corpus: its current symbols sym[off .. off + len) and how often it
 * occurs. */
typedef struct lk__bpe_word {
    size_t off;
    int32_t len;
    uint32_t stamp; /* the merge that last rewrote it */
    int64_t count;
} lk__bpe_word;

/* An adjacent symbol pair: its weighted count and the words it occurs in (a superset: entries
 * go stale when a merge removes the pair from a word; a word may be listed more than once). */
typedef struct lk__bpe_pair {
    int32_t a, b;
    int64_t count;
    int32_t *words;
    int32_t nw, capw;
    uint32_t stamp; /* the merge that last collected it as new */
} lk__bpe_pair;

typedef struct lk__bpe_item {
    int64_t count;
    int32_t pair;
} lk__bpe_item;

typedef struct lk__bpe {
    /* tokens: id -> text (into text), text -> id */
    char *text;
    size_t text_n, text_cap;
    uint32_t *tok_off, *tok_len;
    int32_t n_tok;
    int32_t *tmap; /* LK_BPE_TOK_SLOTS, id + 1, 0 = empty */
    int32_t sym_of_byte[256];
    /* pieces while counting: bytes in pbytes, open addressing word index + 1 */
    char *pbytes;
    size_t pbytes_n, pbytes_cap;
    int32_t *pmap_words;
    size_t pmap_words_mask;
    /* words and their symbols */
    lk__bpe_word *words;
    int32_t n_words, cap_words;
    int32_t *sym;
    /* pairs: open addressing (a, b) -> pair index + 1 */
    lk__bpe_pair *pairs;
    int32_t n_pairs, cap_pairs;
    int32_t *pmap;
    size_t pmask;
    /* max-heap of (count, pair), lazily updated */
    lk__bpe_item *heap;
    size_t heap_n, heap_cap;
    /* learned merges */
    int32_t *ma, *mb;
    int32_t n_merges;
    int32_t *touched; /* pairs made new by the current merge */
    int32_t n_touched, cap_touched;
} lk__bpe;

static uint64_t lk__bpe_hash(const void *p, size_t n) {
    const unsigned char *s = p;
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ s[i]) * 1099511628211ull;
    return h ^ (h >> 29);
}

static uint64_t lk__bpe_hash_pair(int32_t a, int32_t b) {
    uint64_t x = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    return x ^ (x >> 33);
}

/* Grow *p (element size sz, capacity *cap) to hold at least need elements. */
static bool lk__bpe_grow(void **p, size_t sz, size_t *cap, size_t need) {
    if (need <= *cap) return true;
    size_t nc = *cap ? *cap : 16;
    while (nc < need) nc *= 2;
    void *np = realloc(*p, nc * sz);
    if (!np) return false;
    *p = np;
    *cap = nc;
    return true;
}

static lk_status lk__bpe_nomem(void) { return lk_fail(LK_ERR_NOMEM, "bpe_learn: out of memory"); }

static void lk__bpe_free(lk__bpe *B) {
    free(B->text);
    free(B->tok_off);
    free(B->tok_len);
    free(B->tmap);
    free(B->pbytes);
    free(B->pmap_words);
    free(B->words);
    free(B->sym);
    for (int32_t i = 0; i < B->n_pairs; i++) free(B->pairs[i].words);
    free(B->pairs);
    free(B->pmap);
    free(B->heap);
    free(B->ma);
    free(B->mb);
    free(B->touched);
}

/* ------------------------------------------------------------------ tokens */

static int32_t lk__bpe_tok_find(const lk__bpe *B, const char *s, size_t n) {
    size_t i = (size_t)lk__bpe_hash(s, n) & (LK_BPE_TOK_SLOTS - 1);
    for (;;) {
        int32_t v = B->tmap[i];
        if (!v) return -1;
        if (B->tok_len[v - 1] == n && memcmp(B->text + B->tok_off[v - 1], s, n) == 0) return v - 1;
        i = (i + 1) & (LK_BPE_TOK_SLOTS - 1);
    }
}

/* Add a token whose text (n bytes) is not yet one; returns its id or -1 (out of memory). */
static int32_t lk__bpe_tok_add(lk__bpe *B, const char *s, size_t n) {
    if (!lk__bpe_grow((void **)&B->text, 1, &B->text_cap, B->text_n + n)) return -1;
    int32_t id = B->n_tok++;
    memcpy(B->text + B->text_n, s, n);
    B->tok_off[id] = (uint32_t)B->text_n;
    B->tok_len[id] = (uint32_t)n;
    B->text_n += n;
    size_t i = (size_t)lk__bpe_hash(s, n) & (LK_BPE_TOK_SLOTS - 1);
    while (B->tmap[i]) i = (i + 1) & (LK_BPE_TOK_SLOTS - 1);
    B->tmap[i] = id + 1;
    return id;
}

/* The 512 byte symbols in CLIP's order: bytes_to_unicode maps printable Latin-1 bytes to
 * themselves and the others to 256 + k, and its vocabulary lists them by code point. */
static lk_status lk__bpe_init_tokens(lk__bpe *B) {
    size_t cap = LK_BPE_MAX_VOCAB + (size_t)LK_BPE_MAX_MERGES + 16;
    B->tok_off = malloc(cap * sizeof *B->tok_off);
    B->tok_len = malloc(cap * sizeof *B->tok_len);
    B->tmap = calloc(LK_BPE_TOK_SLOTS, sizeof *B->tmap);
    if (!B->tok_off || !B->tok_len || !B->tmap) return lk__bpe_nomem();
    unsigned char order[256];
    uint32_t cp_of[256];
    int k = 0, extra = 0;
    for (int pass = 0; pass < 2; pass++) {
        for (int b = 0; b < 256; b++) {
            bool keep = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
            if (keep != (pass == 0)) continue;
            cp_of[k] = keep ? (uint32_t)b : 256 + (uint32_t)extra++;
            order[k++] = (unsigned char)b;
        }
    }
    for (int w = 0; w < 2; w++) {
        for (int i = 0; i < 256; i++) {
            char s[8];
            size_t n = lk__utf8_encode(cp_of[i], s);
            if (w) {
                memcpy(s + n, "</w>", 4);
                n += 4;
            }
            if (lk__bpe_tok_add(B, s, n) < 0) return lk__bpe_nomem();
            if (!w) B->sym_of_byte[order[i]] = i;
        }
    }
    return LK_OK;
}

/* Byte order of token texts x and y: <0, 0, >0. */
static int lk__bpe_text_cmp(const lk__bpe *B, int32_t x, int32_t y) {
    uint32_t lx = B->tok_len[x], ly = B->tok_len[y];
    int c = memcmp(B->text + B->tok_off[x], B->text + B->tok_off[y], lx < ly ? lx : ly);
    if (c) return c;
    return lx < ly ? -1 : lx > ly ? 1 : 0;
}

/* ------------------------------------------------------------------ counting pieces */

static lk_status lk__bpe_add_piece(lk__bpe *B, const unsigned char *s, size_t n) {
    if (n == 0 || n > LK_BPE_MAX_PIECE) return LK_OK;
    if ((size_t)B->n_words * 2 >= B->pmap_words_mask + 1) { /* rehash at half load */
        size_t nc = (B->pmap_words_mask + 1) * 2;
        int32_t *nm = calloc(nc, sizeof *nm);
        if (!nm) return lk__bpe_nomem();
        for (int32_t w = 0; w < B->n_words; w++) {
            size_t i = (size_t)lk__bpe_hash(B->pbytes + B->words[w].off, (size_t)B->words[w].len) & (nc - 1);
            while (nm[i]) i = (i + 1) & (nc - 1);
            nm[i] = w + 1;
        }
        free(B->pmap_words);
        B->pmap_words = nm;
        B->pmap_words_mask = nc - 1;
    }
    size_t i = (size_t)lk__bpe_hash(s, n) & B->pmap_words_mask;
    for (;;) {
        int32_t v = B->pmap_words[i];
        if (!v) break;
        lk__bpe_word *w = &B->words[v - 1];
        if ((size_t)w->len == n && memcmp(B->pbytes + w->off, s, n) == 0) {
            w->count++;
            return LK_OK;
        }
        i = (i + 1) & B->pmap_words_mask;
    }
    size_t wcap = (size_t)B->cap_words;
    if (B->n_words == INT32_MAX - 1 ||
        !lk__bpe_grow((void **)&B->words, sizeof *B->words, &wcap, (size_t)B->n_words + 1) ||
        !lk__bpe_grow((void **)&B->pbytes, 1, &B->pbytes_cap, B->pbytes_n + n))
        return lk__bpe_nomem();
    B->cap_words = (int32_t)(wcap < INT32_MAX ? wcap : INT32_MAX);
    memcpy(B->pbytes + B->pbytes_n, s, n);
    B->words[B->n_words] = (lk__bpe_word){B->pbytes_n, (int32_t)n, 0, 1};
    B->pbytes_n += n;
    B->pmap_words[i] = ++B->n_words;
    return LK_OK;
}

/* lk__clip_pieces callback: count an ordinary piece; the two specials are dropped. */
static lk_status lk__bpe_count_piece(void *ud, lk__piece_kind kind, const unsigned char *s, size_t n) {
    return kind == LK__PIECE_TEXT ? lk__bpe_add_piece(ud, s, n) : LK_OK;
}

/* ------------------------------------------------------------------ pairs and the heap */

/* Index of an existing pair (a, b). */
static int32_t lk__bpe_pair_find(const lk__bpe *B, int32_t a, int32_t b) {
    size_t i = (size_t)lk__bpe_hash_pair(a, b) & B->pmask;
    for (;;) {
        int32_t v = B->pmap[i];
        if (!v || (B->pairs[v - 1].a == a && B->pairs[v - 1].b == b)) return v - 1;
        i = (i + 1) & B->pmask;
    }
}

/* Index of pair (a, b), created with count 0 when absent; -1 when out of memory. */
static int32_t lk__bpe_pair_get(lk__bpe *B, int32_t a, int32_t b) {
    if ((size_t)B->n_pairs * 2 >= B->pmask + 1) {
        size_t nc = (B->pmask + 1) * 2;
        int32_t *nm = calloc(nc, sizeof *nm);
        if (!nm) return -1;
        for (int32_t p = 0; p < B->n_pairs; p++) {
            size_t i = (size_t)lk__bpe_hash_pair(B->pairs[p].a, B->pairs[p].b) & (nc - 1);
            while (nm[i]) i = (i + 1) & (nc - 1);
            nm[i] = p + 1;
        }
        free(B->pmap);
        B->pmap = nm;
        B->pmask = nc - 1;
    }
    size_t i = (size_t)lk__bpe_hash_pair(a, b) & B->pmask;
    for (;;) {
        int32_t v = B->pmap[i];
        if (!v) break;
        if (B->pairs[v - 1].a == a && B->pairs[v - 1].b == b) return v - 1;
        i = (i + 1) & B->pmask;
    }
    size_t cap = (size_t)B->cap_pairs;
    if (B->n_pairs == INT32_MAX - 1 ||
        !lk__bpe_grow((void **)&B->pairs, sizeof *B->pairs, &cap, (size_t)B->n_pairs + 1))
        return -1;
    B->cap_pairs = (int32_t)(cap < INT32_MAX ? cap : INT32_MAX);
    B->pairs[B->n_pairs] = (lk__bpe_pair){a, b, 0, NULL, 0, 0, 0};
    B->pmap[i] = ++B->n_pairs;
    return B->n_pairs - 1;
}

/* Note that word w contains pair p (once per run of appends for the same word). */
static bool lk__bpe_pair_add_word(lk__bpe_pair *p, int32_t w) {
    if (p->nw > 0 && p->words[p->nw - 1] == w) return true;
    if (p->nw == p->capw) {
        if (p->capw > INT32_MAX / 2) return false;
        int32_t nc = p->capw ? p->capw * 2 : 4;
        int32_t *nw = realloc(p->words, (size_t)nc * sizeof *nw);
        if (!nw) return false;
        p->words = nw;
        p->capw = nc;
    }
    p->words[p->nw++] = w;
    return true;
}

/* Does item u come before item v: higher count, then the smaller (left, right) texts. */
static bool lk__bpe_before(const lk__bpe *B, lk__bpe_item u, lk__bpe_item v) {
    if (u.count != v.count) return u.count > v.count;
    if (u.pair == v.pair) return false;
    const lk__bpe_pair *pu = &B->pairs[u.pair], *pv = &B->pairs[v.pair];
    int c = lk__bpe_text_cmp(B, pu->a, pv->a);
    if (!c) c = lk__bpe_text_cmp(B, pu->b, pv->b);
    return c < 0;
}

static bool lk__bpe_mergeable(const lk__bpe *B, const lk__bpe_pair *p) {
    return p->count > 0 && B->tok_len[p->a] + B->tok_len[p->b] <= LK_BPE_MAX_TOKEN;
}

static bool lk__bpe_push(lk__bpe *B, lk__bpe_item x) {
    if (!lk__bpe_grow((void **)&B->heap, sizeof *B->heap, &B->heap_cap, B->heap_n + 1)) return false;
    size_t i = B->heap_n++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!lk__bpe_before(B, x, B->heap[p])) break;
        B->heap[i] = B->heap[p];
        i = p;
    }
    B->heap[i] = x;
    return true;
}

static void lk__bpe_sift_down(lk__bpe *B, size_t i) {
    lk__bpe_item x = B->heap[i];
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= B->heap_n) break;
        if (c + 1 < B->heap_n && lk__bpe_before(B, B->heap[c + 1], B->heap[c])) c++;
        if (!lk__bpe_before(B, B->heap[c], x)) break;
        B->heap[i] = B->heap[c];
        i = c;
    }
    B->heap[i] = x;
}

static lk__bpe_item lk__bpe_pop(lk__bpe *B) {
    lk__bpe_item top = B->heap[0];
    B->heap[0] = B->heap[--B->heap_n];
    if (B->heap_n > 0) lk__bpe_sift_down(B, 0);
    return top;
}

/* Symbols of every word, all initial pair counts and the heap. */
static lk_status lk__bpe_init_pairs(lk__bpe *B) {
    B->sym = malloc((B->pbytes_n ? B->pbytes_n : 1) * sizeof *B->sym);
    B->pmap = calloc(1024, sizeof *B->pmap);
    B->pmask = 1023;
    if (!B->sym || !B->pmap) return lk__bpe_nomem();
    for (int32_t w = 0; w < B->n_words; w++) {
        lk__bpe_word *wd = &B->words[w];
        const unsigned char *s = (const unsigned char *)B->pbytes + wd->off;
        int32_t *y = B->sym + wd->off;
        for (int32_t i = 0; i < wd->len; i++) y[i] = B->sym_of_byte[s[i]] + (i == wd->len - 1 ? 256 : 0);
        for (int32_t i = 0; i + 1 < wd->len; i++) {
            int32_t p = lk__bpe_pair_get(B, y[i], y[i + 1]);
            if (p < 0 || !lk__bpe_pair_add_word(&B->pairs[p], w)) return lk__bpe_nomem();
            B->pairs[p].count += wd->count;
        }
    }
    free(B->pbytes);
    B->pbytes = NULL;
    free(B->pmap_words);
    B->pmap_words = NULL;
    for (int32_t p = 0; p < B->n_pairs; p++)
        if (lk__bpe_mergeable(B, &B->pairs[p]))
            if (!lk__bpe_push(B, (lk__bpe_item){B->pairs[p].count, p})) return lk__bpe_nomem();
    return LK_OK;
}

/* ------------------------------------------------------------------ merging */

/* Merge pair p into token c in every word that contains it. Only those words are rescanned:
 * their old pairs are uncounted, the word is rewritten left to right without overlap, and its
 * new pairs are counted; pairs with c are collected in touched and pushed afterwards with their
 * final counts (other pairs only lose counts, which the heap notices lazily). */
static lk_status lk__bpe_apply(lk__bpe *B, int32_t p, int32_t c, uint32_t stamp) {
    const int32_t a = B->pairs[p].a, b = B->pairs[p].b;
    B->n_touched = 0;
    for (int32_t k = 0; k < B->pairs[p].nw; k++) {
        int32_t w = B->pairs[p].words[k];
        lk__bpe_word *wd = &B->words[w];
        if (wd->stamp == stamp) continue;
        int32_t *y = B->sym + wd->off;
        int32_t n = wd->len, i = 0;
        while (i + 1 < n && !(y[i] == a && y[i + 1] == b)) i++;
        if (i + 1 >= n) continue; /* stale entry */
        wd->stamp = stamp;
        for (i = 0; i + 1 < n; i++) B->pairs[lk__bpe_pair_find(B, y[i], y[i + 1])].count -= wd->count;
        int32_t m = 0;
        for (i = 0; i < n;) {
            if (i + 1 < n && y[i] == a && y[i + 1] == b) {
                y[m++] = c;
                i += 2;
            } else {
                y[m++] = y[i++];
            }
        }
        wd->len = m;
        for (i = 0; i + 1 < m; i++) {
            int32_t q = lk__bpe_pair_get(B, y[i], y[i + 1]);
            if (q < 0) return lk__bpe_nomem();
            lk__bpe_pair *pq = &B->pairs[q];
            pq->count += wd->count;
            if (y[i] != c && y[i + 1] != c) continue;
            if (!lk__bpe_pair_add_word(pq, w)) return lk__bpe_nomem();
            if (pq->stamp != stamp) {
                pq->stamp = stamp;
                size_t cap = (size_t)B->cap_touched;
                if (!lk__bpe_grow((void **)&B->touched, sizeof *B->touched, &cap, (size_t)B->n_touched + 1))
                    return lk__bpe_nomem();
                B->cap_touched = (int32_t)(cap < INT32_MAX ? cap : INT32_MAX);
                B->touched[B->n_touched++] = q;
            }
        }
    }
    for (int32_t k = 0; k < B->n_touched; k++) {
        int32_t q = B->touched[k];
        if (lk__bpe_mergeable(B, &B->pairs[q]))
            if (!lk__bpe_push(B, (lk__bpe_item){B->pairs[q].count, q})) return lk__bpe_nomem();
    }
    return LK_OK;
}

static lk_status lk__bpe_run(lk__bpe *B, int max_new, int64_t min_count) {
    B->ma = malloc(LK_BPE_MAX_MERGES * sizeof *B->ma);
    B->mb = malloc(LK_BPE_MAX_MERGES * sizeof *B->mb);
    if (!B->ma || !B->mb) return lk__bpe_nomem();
    int n_new = 0;
    char joined[2 * LK_BPE_MAX_TOKEN];
    while (n_new < max_new && B->n_merges < LK_BPE_MAX_MERGES && B->heap_n > 0) {
        lk__bpe_item it = lk__bpe_pop(B);
        lk__bpe_pair *pp = &B->pairs[it.pair];
        if (pp->count != it.count) { /* stale: re-file a lower count, drop a raised one */
            if (pp->count > 0 && pp->count < it.count)
                if (!lk__bpe_push(B, (lk__bpe_item){pp->count, it.pair})) return lk__bpe_nomem();
            continue;
        }
        if (it.count < min_count) break;
        size_t la = B->tok_len[pp->a], lb = B->tok_len[pp->b];
        memcpy(joined, B->text + B->tok_off[pp->a], la);
        memcpy(joined + la, B->text + B->tok_off[pp->b], lb);
        int32_t c = lk__bpe_tok_find(B, joined, la + lb);
        if (c < 0) {
            if ((c = lk__bpe_tok_add(B, joined, la + lb)) < 0) return lk__bpe_nomem();
            n_new++;
        }
        B->ma[B->n_merges] = pp->a;
        B->mb[B->n_merges] = pp->b;
        B->n_merges++;
        lk_status st = lk__bpe_apply(B, it.pair, c, (uint32_t)B->n_merges);
        if (st != LK_OK) return st;
    }
    return LK_OK;
}

/* ------------------------------------------------------------------ output */

typedef struct lk__bpe_buf {
    char *p;
    size_t n, cap;
    bool bad;
} lk__bpe_buf;

static void lk__bpe_put(lk__bpe_buf *o, const void *s, size_t n) {
    if (o->bad) return;
    if (!lk__bpe_grow((void **)&o->p, 1, &o->cap, o->n + n + 1)) {
        o->bad = true;
        return;
    }
    memcpy(o->p + o->n, s, n);
    o->n += n;
}

static void lk__bpe_put_json_string(lk__bpe_buf *o, const char *s, size_t n) {
    lk__bpe_put(o, "\"", 1);
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch == '"' || ch == '\\') {
            char e[2] = {'\\', (char)ch};
            lk__bpe_put(o, e, 2);
        } else if (ch < 0x20) {
            char e[8];
            snprintf(e, sizeof e, "\\u%04x", ch);
            lk__bpe_put(o, e, 6);
        } else {
            lk__bpe_put(o, s + i, 1);
        }
    }
    lk__bpe_put(o, "\"", 1);
}

/* Write buf to a new temporary file in dir (named after name); *tmp receives its path (free with
 * free()). */
static lk_status lk__bpe_write_temp(const char *dir, const char *name, const lk__bpe_buf *buf, char **tmp) {
    size_t dl = strlen(dir), cap = dl + strlen(name) + 32;
    const char *sep = (dl > 0 && dir[dl - 1] == '/') ? "" : "/";
    *tmp = malloc(cap);
    if (!*tmp) return lk__bpe_nomem();
    snprintf(*tmp, cap, "%s%s.%s.XXXXXX", dir, sep, name);
    int fd = mkstemp(*tmp);
    if (fd < 0) {
        lk_status st = lk_fail(LK_ERR_IO, "%s: cannot create a temporary file: %s", *tmp, strerror(errno));
        free(*tmp);
        *tmp = NULL;
        return st;
    }
    FILE *f = fdopen(fd, "wb");
    bool ok = f && fchmod(fd, 0644) == 0 && fwrite(buf->p, 1, buf->n, f) == buf->n && fflush(f) == 0 &&
              fsync(fd) == 0;
    int err = errno;
    if (!f) close(fd);
    else if (fclose(f) != 0 && ok) {
        ok = false;
        err = errno;
    }
    if (ok) return LK_OK;
    lk_status st = lk_fail(LK_ERR_IO, "%s: write failed: %s", *tmp, strerror(err));
    unlink(*tmp);
    free(*tmp);
    *tmp = NULL;
    return st;
}

/* Rename tmp over dir/name. */
static lk_status lk__bpe_rename(const char *tmp, const char *dir, const char *name) {
    size_t dl = strlen(dir), cap = dl + strlen(name) + 2;
    char *path = malloc(cap);
    if (!path) return lk__bpe_nomem();
    snprintf(path, cap, "%s%s%s", dir, (dl > 0 && dir[dl - 1] == '/') ? "" : "/", name);
    lk_status st = LK_OK;
    if (rename(tmp, path) != 0) st = lk_fail(LK_ERR_IO, "%s: cannot rename %s: %s", path, tmp, strerror(errno));
    free(path);
    return st;
}

/* Both files go to temporary files first and are renamed only when both are complete. */
static lk_status lk__bpe_write(const lk__bpe *B, const char *dir) {
    if (mkdir(dir, 0777) != 0 && errno != EEXIST)
        return lk_fail(LK_ERR_IO, "%s: cannot create directory: %s", dir, strerror(errno));
    lk__bpe_buf v = {0}, m = {0};
    lk__bpe_put(&v, "{\n", 2);
    for (int32_t id = 0; id < B->n_tok + 2; id++) {
        const char *s = id < B->n_tok ? B->text + B->tok_off[id] : id == B->n_tok ? LK__CLIP_SOT : LK__CLIP_EOT;
        size_t n = id < B->n_tok ? B->tok_len[id] : strlen(s);
        char num[32];
        int k = snprintf(num, sizeof num, ": %d%s\n", (int)id, id + 1 < B->n_tok + 2 ? "," : "");
        lk__bpe_put_json_string(&v, s, n);
        lk__bpe_put(&v, num, (size_t)k);
    }
    lk__bpe_put(&v, "}\n", 2);
    lk__bpe_put(&m, "#version: 0.2\n", 14);
    for (int32_t i = 0; i < B->n_merges; i++) {
        lk__bpe_put(&m, B->text + B->tok_off[B->ma[i]], B->tok_len[B->ma[i]]);
        lk__bpe_put(&m, " ", 1);
        lk__bpe_put(&m, B->text + B->tok_off[B->mb[i]], B->tok_len[B->mb[i]]);
        lk__bpe_put(&m, "\n", 1);
    }
    char *tv = NULL, *tm = NULL;
    lk_status st = v.bad || m.bad ? lk__bpe_nomem() : LK_OK;
    if (st == LK_OK) st = lk__bpe_write_temp(dir, "merges.txt", &m, &tm);
    if (st == LK_OK) st = lk__bpe_write_temp(dir, "vocab.json", &v, &tv);
    if (st == LK_OK) st = lk__bpe_rename(tm, dir, "merges.txt");
    if (st == LK_OK) st = lk__bpe_rename(tv, dir, "vocab.json");
    if (st != LK_OK) {
        if (tm) unlink(tm);
        if (tv) unlink(tv);
    }
    free(tv);
    free(tm);
    free(v.p);
    free(m.p);
    return st;
}

/* ------------------------------------------------------------------ public */

lk_status lk_bpe_learn(const char *const *texts, int n, const lk_bpe_learn_opts *opts, const char *dir) {
    if (!opts || !dir || (n > 0 && !texts)) return lk_fail(LK_ERR_INVALID, "lk_bpe_learn: NULL argument");
    if (n < 0) return lk_fail(LK_ERR_INVALID, "lk_bpe_learn: n = %d < 0", n);
    if (opts->vocab_size < LK_BPE_MIN_VOCAB || opts->vocab_size > LK_BPE_MAX_VOCAB)
        return lk_fail(LK_ERR_INVALID, "lk_bpe_learn: vocab_size %d outside %d..%d", opts->vocab_size,
                       LK_BPE_MIN_VOCAB, LK_BPE_MAX_VOCAB);
    if (opts->min_count < 0)
        return lk_fail(LK_ERR_INVALID, "lk_bpe_learn: min_count %d < 0", opts->min_count);
    size_t total = 0;
    for (int i = 0; i < n; i++) {
        if (!texts[i]) return lk_fail(LK_ERR_INVALID, "lk_bpe_learn: texts[%d] is NULL", i);
        total += strlen(texts[i]);
        if (total > LK_BPE_MAX_CORPUS)
            return lk_fail(LK_ERR_INVALID, "lk_bpe_learn: texts longer than %zu MiB in all",
                           LK_BPE_MAX_CORPUS >> 20);
    }
    lk__bpe B = {0};
    lk_status st = lk__bpe_init_tokens(&B);
    if (st == LK_OK) {
        B.pmap_words = calloc(1024, sizeof *B.pmap_words);
        B.pmap_words_mask = 1023;
        if (!B.pmap_words) st = lk__bpe_nomem();
    }
    for (int i = 0; i < n && st == LK_OK; i++) {
        char *norm = NULL;
        size_t len = 0;
        st = lk__normalize(texts[i], strlen(texts[i]), &norm, &len);
        if (st == LK_OK) st = lk__clip_pieces((const unsigned char *)norm, len, lk__bpe_count_piece, &B);
        free(norm);
    }
    if (st == LK_OK) st = lk__bpe_init_pairs(&B);
    if (st == LK_OK) {
        int min_count = opts->min_count ? opts->min_count : 2;
        st = lk__bpe_run(&B, opts->vocab_size - LK_BPE_MIN_VOCAB, min_count);
    }
    if (st == LK_OK && B.n_merges == 0)
        st = lk_fail(LK_ERR_INVALID,
                     "lk_bpe_learn: no merge learned (vocab_size %d, min_count %d, %d distinct pieces); "
                     "a tokenizer needs at least one",
                     opts->vocab_size, opts->min_count, B.n_words);
    if (st == LK_OK) st = lk__bpe_write(&B, dir);
    lk__bpe_free(&B);
    return st;
}
