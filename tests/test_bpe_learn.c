/* test_bpe_learn.c: learning a CLIP-format BPE vocabulary: the files load with lk_tokenizer_load,
 * frequent words become tokens, round trips, unseen and non-ASCII text, determinism, exact
 * merges against tests/ref/bpe_learn.py, the vocab_size / min_count limits, agreement with the
 * tokenizer's pre-tokenizer on Unicode text, errors and speed. */
#define _POSIX_C_SOURCE 200809L
#include "harness.h"
#include "likeness/tokenizer.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ------------------------------------------------------------------ helpers */

static const char *SUBJ[] = {"dog face", "red apple", "grinning cat", "smiling face with hearts",
                             "thumbs up", "party popper", "rocket", "man's hat", "woman's boot",
                             "it's a flag: Japan", "keycap 7", "Clock 12 o'clock",
                             "Face-with-tears  of  JOY", "person's (medium) skin tone",
                             "pizza & burger", "we'll see  you're done"};
static const char *STYLES[] = {"Noto", "twemoji", "OpenMoji", "fluent 3D"};
#define N_SUBJ ((int)(sizeof SUBJ / sizeof *SUBJ))
#define N_STYLES ((int)(sizeof STYLES / sizeof *STYLES))
#define N_CAPTIONS 300

/* The captions of corpus() in tests/ref/bpe_learn.py (ASCII). Free with free_texts. */
static char **make_corpus(void) {
    char **t = calloc(N_CAPTIONS, sizeof *t);
    for (int i = 0; t && i < N_CAPTIONS; i++) {
        char s[300];
        int k = snprintf(s, 200, "%s emoji, %s style", SUBJ[i % N_SUBJ],
                         STYLES[(i * 7 + i / N_SUBJ) % N_STYLES]);
        if (i % 5 == 0) k += snprintf(s + k, 16, " #%d", i % 23);
        if (i % 11 == 0) {
            char u[220];
            for (int j = 0; j <= k; j++) u[j] = (char)toupper((unsigned char)s[j]);
            snprintf(s, sizeof s, "  %s\t", u);
        }
        t[i] = strdup(s);
    }
    return t;
}

static void free_texts(char **t, int n) {
    for (int i = 0; t && i < n; i++) free(t[i]);
    free(t);
}

/* the file dir/name, as lk_t_read_file */
static char *read_all(const char *dir, const char *name, size_t *len) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return lk_t_read_file(path, len);
}

static int count_lines(const char *s) {
    int n = 0;
    for (; s && *s; s++) n += *s == '\n';
    return n;
}

static int same_file(const char *d1, const char *d2, const char *name) {
    size_t n1 = 0, n2 = 0;
    char *a = read_all(d1, name, &n1), *b = read_all(d2, name, &n2);
    int same = a && b && n1 == n2 && memcmp(a, b, n1) == 0;
    free(a);
    free(b);
    return same;
}

static char g_root[64];
static int g_ndirs;

/* A fresh directory name under the test's temporary root (not created). */
static const char *new_dir(char *buf, size_t cap) {
    snprintf(buf, cap, "%s/d%d", g_root, g_ndirs++);
    return buf;
}

static void remove_dir(const char *dir) {
    char p[512];
    snprintf(p, sizeof p, "%s/vocab.json", dir);
    unlink(p);
    snprintf(p, sizeof p, "%s/merges.txt", dir);
    unlink(p);
    rmdir(dir);
}

static lk_status learn(char **texts, int n, int vocab_size, int min_count, const char *dir) {
    lk_bpe_learn_opts o = {vocab_size, min_count};
    return lk_bpe_learn((const char *const *)texts, n, &o, dir);
}

/* Encode then decode text; returns the decoded string (caller frees) and the id count. */
static char *round_trip(const lk_tokenizer *t, const char *text, int *n_ids) {
    int64_t ids[512];
    int n = -1;
    if (lk_tokenizer_bpe(t, text, ids, 512, &n) != LK_OK || n > 512) return NULL;
    char *out = NULL;
    if (lk_tokenizer_decode(t, ids, n, true, &out) != LK_OK) return NULL;
    if (n_ids) *n_ids = n;
    return out;
}

/* s lower-cased (ASCII) without any white space. */
static void squeeze(const char *s, char *out) {
    for (; *s; s++)
        if (!isspace((unsigned char)*s)) *out++ = (char)tolower((unsigned char)*s);
    *out = '\0';
}

/* ------------------------------------------------------------------ tests */

static void test_learned_vocab(char **texts) {
    char dir[128];
    new_dir(dir, sizeof dir);
    CHECK_OK(learn(texts, N_CAPTIONS, 600, 2, dir));
    lk_tokenizer *t = NULL;
    CHECK_OK(lk_tokenizer_load(&t, dir));
    if (!t) return;
    /* (6) exactly vocab_size ids when the corpus has enough pairs */
    CHECK(lk_tokenizer_vocab_size(t) == 600);
    CHECK(lk_t_count_entries(dir) == 2); /* vocab.json, merges.txt, no temporary file left */
    CHECK(lk_tokenizer_bos(t) == 598 && lk_tokenizer_eos(t) == 599);
    char *merges = read_all(dir, "merges.txt", NULL);
    CHECK(merges && strncmp(merges, "#version: 0.2\n", 14) == 0);
    CHECK(count_lines(merges) == 1 + 600 - 514);
    free(merges);
    /* the layout: byte symbols in bytes_to_unicode order, then with </w> */
    CHECK(lk_tokenizer_token_id(t, "!") == 0);
    CHECK(lk_tokenizer_token_id(t, "!</w>") == 256);
    CHECK(lk_tokenizer_token_id(t, "\xc4\x80") == 188); /* byte 0x00 -> U+0100 */
    CHECK(lk_tokenizer_token_id(t, "\xc5\x83</w>") == 511); /* byte 0xAD -> U+0143 */
    CHECK(lk_tokenizer_token_id(t, "\xc4\xa0") == 188 + 32); /* space -> U+0120 */

    /* (1) frequent words are single tokens */
    const char *words[] = {"emoji</w>", "style</w>", "face</w>", "noto</w>"};
    for (int i = 0; i < 4; i++) {
        int64_t id = lk_tokenizer_token_id(t, words[i]);
        CHECK(id >= 512 && id < 598);
        char w[32];
        snprintf(w, sizeof w, "%.*s", (int)(strlen(words[i]) - 4), words[i]);
        int64_t got[8];
        int n = 0;
        CHECK_OK(lk_tokenizer_bpe(t, w, got, 8, &n));
        CHECK(n == 1 && got[0] == id);
    }
    int n_ids = 0;
    char *d = round_trip(t, "Dog face emoji, Noto style", &n_ids);
    CHECK(d && strcmp(d, "dog face emoji , noto style") == 0);
    CHECK(n_ids == 6); /* dog face emoji , noto style */
    free(d);

    /* (2) every caption decodes back to its lower-cased text (decode puts a space after every
     * piece, so compare without white space, and exactly for captions without punctuation) */
    int bad = 0;
    for (int i = 0; i < N_CAPTIONS; i++) {
        char want[256], got[512];
        char *r = round_trip(t, texts[i], NULL);
        squeeze(texts[i], want);
        if (r) squeeze(r, got);
        if (!r || strcmp(want, got) != 0) {
            if (bad++ < 3) fprintf(stderr, "  round trip: '%s' -> '%s'\n", texts[i], r ? r : "(fail)");
        }
        free(r);
    }
    CHECK(bad == 0);
    d = round_trip(t, "  Red   APPLE emoji\tfluent style ", NULL);
    CHECK(d && strcmp(d, "red apple emoji fluent style") == 0);
    free(d);

    /* (3) unseen and non-ASCII words still tokenize and decode back */
    d = round_trip(t, "zyxquv", &n_ids);
    CHECK(d && strcmp(d, "zyxquv") == 0 && n_ids >= 2);
    free(d);
    d = round_trip(t, "\xce\xa9mega \xe2\x98\x83", NULL); /* "Ωmega ☃" */
    CHECK(d && strcmp(d, "\xcf\x89mega \xe2\x98\x83") == 0); /* "ωmega ☃" */
    free(d);
    d = round_trip(t, "\xf0\x9f\x90\xb6 caf\xc3\xa9 \xe4\xb8\xad\xe6\x96\x87", NULL); /* 🐶 café 中文 */
    CHECK(d && strcmp(d, "\xf0\x9f\x90\xb6 caf\xc3\xa9 \xe4\xb8\xad\xe6\x96\x87") == 0);
    free(d);
    lk_tokenizer_free(t);

    /* (4) deterministic: a second run and a reversed corpus give byte-identical files */
    char dir2[128], dir3[128];
    new_dir(dir2, sizeof dir2);
    new_dir(dir3, sizeof dir3);
    CHECK_OK(learn(texts, N_CAPTIONS, 600, 2, dir2));
    char **rev = malloc(N_CAPTIONS * sizeof *rev);
    for (int i = 0; rev && i < N_CAPTIONS; i++) rev[i] = texts[N_CAPTIONS - 1 - i];
    if (rev) CHECK_OK(learn(rev, N_CAPTIONS, 600, 2, dir3));
    free(rev);
    CHECK(same_file(dir, dir2, "vocab.json") && same_file(dir, dir2, "merges.txt"));
    CHECK(same_file(dir, dir3, "vocab.json") && same_file(dir, dir3, "merges.txt"));
    /* learning again into the same folder replaces the files */
    CHECK_OK(learn(texts, N_CAPTIONS, 520, 2, dir2));
    CHECK_OK(lk_tokenizer_load(&t, dir2));
    CHECK(t && lk_tokenizer_vocab_size(t) == 520);
    CHECK(lk_t_count_entries(dir2) == 2);
    lk_tokenizer_free(t);
    remove_dir(dir);
    remove_dir(dir2);
    remove_dir(dir3);
}

/* (5) the merges and vocab.json equal the plain Python reference; (6) min_count stops early */
static void test_reference(char **texts) {
    lk_safetensors *st = lk_t_ref("bpe_learn");
    CHECK(st != NULL);
    if (!st) return;
    const lk_st_tensor *c = lk_safetensors_find(st, "corpus");
    size_t clen = 0;
    for (int i = 0; i < N_CAPTIONS; i++) clen += strlen(texts[i]) + (i > 0);
    char *joined = malloc(clen + 1), *p = joined;
    for (int i = 0; joined && i < N_CAPTIONS; i++) p += sprintf(p, "%s%s", i ? "\n" : "", texts[i]);
    CHECK(c && joined && c->nbytes == clen && memcmp(c->data, joined, clen) == 0); /* same corpus */
    free(joined);
    struct {
        const char *name;
        int vocab_size, min_count;
    } set[] = {{"a", 600, 2}, {"b", 49408, 25}, {"c", 49408, 1}};
    int n_merges[3] = {0, 0, 0};
    for (int k = 0; k < 3; k++) {
        char dir[128], key[32];
        new_dir(dir, sizeof dir);
        CHECK_OK(learn(texts, N_CAPTIONS, set[k].vocab_size, set[k].min_count, dir));
        for (int f = 0; f < 2; f++) {
            snprintf(key, sizeof key, "%s_%s", f ? "merges" : "vocab", set[k].name);
            const lk_st_tensor *r = lk_safetensors_find(st, key);
            size_t n = 0;
            char *got = read_all(dir, f ? "merges.txt" : "vocab.json", &n);
            int same = r && got && r->dtype == LK_U8 && r->nbytes == n && memcmp(r->data, got, n) == 0;
            CHECK(same);
            if (!same && r && got) { /* show the first differing line */
                const char *a = got, *b = r->data;
                size_t i = 0, line = 1, ls = 0;
                while (i < n && i < r->nbytes && a[i] == b[i]) {
                    if (a[i] == '\n') line++, ls = i + 1;
                    i++;
                }
                fprintf(stderr, "  %s differs at line %zu: C '%.40s' vs ref '%.40s'\n", key, line,
                        a + ls, b + ls);
            }
            if (f && got) n_merges[k] = count_lines(got) - 1;
            free(got);
        }
        lk_tokenizer *t = NULL;
        CHECK_OK(lk_tokenizer_load(&t, dir));
        if (t && k > 0) CHECK(lk_tokenizer_vocab_size(t) < set[k].vocab_size);
        lk_tokenizer_free(t);
        remove_dir(dir);
    }
    fprintf(stderr, "  merges: a %d, b (min_count 25) %d, c (min_count 1) %d\n", n_merges[0],
            n_merges[1], n_merges[2]);
    CHECK(n_merges[0] == 600 - 514);
    CHECK(n_merges[1] > 10 && n_merges[1] < n_merges[2]);
    lk_safetensors_close(st);
}

/* Every piece seen at least twice becomes one token when nothing stops the merges, so with
 * the learned vocabulary the tokenizer's own pieces must each be one token ending in "</w>":
 * this checks that the learner splits Unicode text exactly as the tokenizer does. */
static void test_pretokenizer_agrees(void) {
    const char *base[] = {
        "Caf\xc3\xa9 na\xc3\xafve \xce\xa9MEGA \xce\xa3\xce\xbf\xcf\x86\xce\xaf\xce\xb1\xce\xa3",
        "it's we'll they're I've I'm he'd don't O'NEILL's x'\xc5\xbf",
        "\xe4\xb8\xad\xe6\x96\x87\xe5\xad\x97 \xe3\x81\xb2\xe3\x82\x89\xe3\x81\x8c\xe3\x81\xaa 2023 \xd9\xa3\xd9\xa4 \xe2\x85\xa7",
        "\xf0\x9f\x91\xa8\xe2\x80\x8d\xf0\x9f\x8d\xb3 \xf0\x9f\x91\x8d\xf0\x9f\x8f\xbd \xe2\x9d\xa4\xef\xb8\x8f!!! ...?!",
        "tabs\tand\nnewlines\xc2\xa0nbsp\xe3\x80\x80ideographic <|startoftext|>x<|endoftext|>",
        "\xc4\xb0stanbul \xc3\x84pfel (a+b)=c; \"quoted\" [x] {y} a\\b #1 @2 $3",
        "\xed\xa0\x80 bad\xff utf8 \xe2\x82 trunc",
    };
    enum { NB = sizeof base / sizeof *base };
    char *texts[2 * NB];
    for (int i = 0; i < 2 * NB; i++) texts[i] = (char *)base[i % NB];
    char dir[128];
    new_dir(dir, sizeof dir);
    CHECK_OK(learn(texts, 2 * NB, 49408, 2, dir));
    lk_tokenizer *t = NULL;
    CHECK_OK(lk_tokenizer_load(&t, dir));
    if (!t) return;
    for (int i = 0; i < NB; i++) {
        int64_t ids[256];
        int n = 0;
        CHECK_OK(lk_tokenizer_bpe(t, base[i], ids, 256, &n));
        int ok = n > 0 && n <= 256;
        for (int k = 0; ok && k < n; k++) {
            if (ids[k] == lk_tokenizer_bos(t) || ids[k] == lk_tokenizer_eos(t)) continue;
            const char *s = lk_tokenizer_id_to_token(t, ids[k]);
            size_t l = s ? strlen(s) : 0;
            if (l < 4 || strcmp(s + l - 4, "</w>") != 0) {
                fprintf(stderr, "  text %d: token %d '%s' is not a whole piece\n", i, k, s ? s : "?");
                ok = 0;
            }
        }
        CHECK(ok);
    }
    /* single words that are pieces */
    const char *one[] = {"Caf\xc3\xa9", "'s", "'\xc5\xbf", "...?!", "\xe4\xb8\xad\xe6\x96\x87\xe5\xad\x97", "\xce\xa9mega"};
    for (int i = 0; i < 6; i++) {
        int64_t ids[8];
        int n = 0;
        CHECK_OK(lk_tokenizer_bpe(t, one[i], ids, 8, &n));
        CHECK(n == 1);
    }
    CHECK(lk_tokenizer_token_id(t, "<|</w>") < 0); /* the specials are not learned from */
    lk_tokenizer_free(t);
    remove_dir(dir);
}

static void test_errors(char **texts) {
    char dir[128];
    new_dir(dir, sizeof dir);
    lk_bpe_learn_opts o = {600, 2};
    const char *const *tx = (const char *const *)texts;
    CHECK(lk_bpe_learn(NULL, 3, &o, dir) == LK_ERR_INVALID);
    CHECK(lk_bpe_learn(tx, 3, NULL, dir) == LK_ERR_INVALID);
    CHECK(lk_bpe_learn(tx, 3, &o, NULL) == LK_ERR_INVALID);
    CHECK(lk_bpe_learn(tx, -1, &o, dir) == LK_ERR_INVALID);
    const char *with_null[] = {"a b", NULL};
    CHECK(lk_bpe_learn(with_null, 2, &o, dir) == LK_ERR_INVALID);
    CHECK(strstr(lk_last_error(), "texts[1]") != NULL);
    lk_bpe_learn_opts bad[] = {{513, 2}, {49409, 2}, {0, 2}, {-5, 2}, {600, -1}};
    for (int i = 0; i < 5; i++) CHECK(lk_bpe_learn(tx, 3, &bad[i], dir) == LK_ERR_INVALID);
    /* nothing to learn: the loader needs a merge, so these fail instead of writing unusable files */
    CHECK(lk_bpe_learn(NULL, 0, &o, dir) == LK_ERR_INVALID);
    const char *single[] = {"a b c d e", "  ", ""};
    CHECK(lk_bpe_learn(single, 3, &o, dir) == LK_ERR_INVALID);
    lk_bpe_learn_opts exact = {514, 2};
    CHECK(lk_bpe_learn(tx, N_CAPTIONS, &exact, dir) == LK_ERR_INVALID);
    lk_bpe_learn_opts high = {600, 1000000};
    CHECK(lk_bpe_learn(tx, N_CAPTIONS, &high, dir) == LK_ERR_INVALID);
    struct stat sb;
    CHECK(stat(dir, &sb) != 0); /* nothing written by a failed call */
    /* min_count 0 means the default 2: "ab" twice merges, "cd" once does not */
    const char *two[] = {"ab ab cd"};
    lk_bpe_learn_opts dflt = {49408, 0};
    CHECK_OK(lk_bpe_learn(two, 1, &dflt, dir));
    char *m = read_all(dir, "merges.txt", NULL);
    CHECK(m && strcmp(m, "#version: 0.2\na b</w>\n") == 0);
    free(m);
    /* a folder that cannot be made */
    CHECK(lk_bpe_learn(tx, N_CAPTIONS, &o, "/nonexistent-lk/a/b") == LK_ERR_IO);
    remove_dir(dir);
}

/* Speed: many distinct captions, a few thousand merges (prints the time). */
static void test_speed(void) {
    enum { N = 20000 };
    char **texts = calloc(N, sizeof *texts);
    uint64_t s = 12345;
    const char *sy = "bcdfghklmnprstvz", *vw = "aeiou";
    for (int i = 0; texts && i < N; i++) {
        char buf[128];
        int k = 0, nw = 3 + i % 5;
        for (int w = 0; w < nw; w++) {
            s = s * 6364136223846793005ull + 1442695040888963407ull;
            int len = 1 + (int)((s >> 33) % 4); /* syllables; ~500 distinct words each length */
            for (int y = 0; y < len; y++) {
                s = s * 6364136223846793005ull + 1442695040888963407ull;
                uint64_t r = (s >> 33) % 24;
                buf[k++] = sy[r % 16];
                buf[k++] = vw[r % 5];
            }
            buf[k++] = w + 1 < nw ? ' ' : ',';
        }
        k += snprintf(buf + k, sizeof buf - (size_t)k, " emoji, style %d", i % 4);
        texts[i] = strdup(buf);
    }
    char dir[128];
    new_dir(dir, sizeof dir);
    double t0 = lk_t_now();
    CHECK_OK(learn(texts, N, 3000, 2, dir));
    double dt = lk_t_now() - t0;
    char *m = read_all(dir, "merges.txt", NULL);
    fprintf(stderr, "  speed: %d captions, %d merges: %.2f s\n", N, count_lines(m) - 1, dt);
    CHECK(count_lines(m) - 1 >= 3000 - 514);
    free(m);
    CHECK(dt < 30.0);
    lk_tokenizer *t = NULL;
    CHECK_OK(lk_tokenizer_load(&t, dir));
    CHECK(t && lk_tokenizer_vocab_size(t) <= 3000);
    lk_tokenizer_free(t);
    remove_dir(dir);
    free_texts(texts, N);
}

int main(void) {
    snprintf(g_root, sizeof g_root, "/tmp/lk_bpe_learn_XXXXXX");
    REQUIRE(mkdtemp(g_root) != NULL);
    char **texts = make_corpus();
    REQUIRE(texts != NULL);
    test_learned_vocab(texts);
    test_reference(texts);
    test_pretokenizer_agrees();
    test_errors(texts);
    test_speed();
    free_texts(texts, N_CAPTIONS);
    rmdir(g_root);
    return lk_t_done();
}
