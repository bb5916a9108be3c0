/* test_safetensors.c: the safetensors reader/writer: round trip, the golden checkpoints, every
 * file of the malformed/valid corpus (tests/fuzz/corpus) and seeded mutations of it. */
#define _POSIX_C_SOURCE 200809L
#include "harness.h"

#include <dirent.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static unsigned char *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc((size_t)n + 1);
    if (b && fread(b, 1, (size_t)n, f) != (size_t)n) {
        free(b);
        b = NULL;
    }
    fclose(f);
    *len = (size_t)n;
    return b;
}

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint64_t next_rand(void) { /* splitmix64 */
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Invariants every successfully opened file must satisfy. */
static int check_invariants(const lk_safetensors *st, const unsigned char *buf, size_t len) {
    int n = lk_safetensors_count(st);
    size_t expect = 0;
    const unsigned char *data0 = NULL;
    for (int i = 0; i < n; i++) {
        const lk_st_tensor *t = lk_safetensors_at(st, i);
        if (!t || lk_safetensors_find(st, t->name) != t) return 0;
        const unsigned char *p = t->data;
        if (p < buf || p + t->nbytes > buf + len) return 0;
        if (!data0) data0 = p;
        if ((size_t)(p - data0) != expect) return 0;
        expect += t->nbytes;
        if ((size_t)lk_st_tensor_numel(t) * lk_dtype_size(t->dtype) != t->nbytes) return 0;
    }
    if (n && data0 + expect != buf + len) return 0;
    for (int i = 0; i < lk_safetensors_meta_count(st); i++) {
        const char *k, *v;
        lk_safetensors_meta_at(st, i, &k, &v);
        if (!k || !v || lk_safetensors_meta(st, k) != v) return 0;
    }
    return 1;
}

static void test_roundtrip(void) {
    lk_st_writer *w = lk_st_writer_new();
    if (!w) { CHECK(w != NULL); return; }
    float f32[6] = {1.0f, -2.5f, 3.25f, 1e-30f, -0.0f, 65504.0f};
    uint16_t f16[5] = {0x3c00, 0xc000, 0x7bff, 0x0001, 0x8000};
    uint16_t bf16[3] = {0x3f80, 0xc120, 0x0001};
    int64_t i64[2] = {-1, INT64_MAX};
    int32_t i32[3] = {7, -8, INT32_MIN};
    uint8_t u8[5] = {0, 1, 2, 254, 255};
    float scalar = 42.0f;
    CHECK_OK(lk_st_writer_add(w, "z.f32", LK_F32, LK_DIMS(2, 3), f32));
    CHECK_OK(lk_st_writer_add(w, "a.f16", LK_F16, LK_DIMS(5), f16));
    CHECK_OK(lk_st_writer_add(w, "m.bf16", LK_BF16, LK_DIMS(3, 1), bf16));
    CHECK_OK(lk_st_writer_add(w, "i64", LK_I64, LK_DIMS(2), i64));
    CHECK_OK(lk_st_writer_add(w, "i32", LK_I32, LK_DIMS(1, 1, 3), i32));
    CHECK_OK(lk_st_writer_add(w, "u8", LK_U8, LK_DIMS(5), u8));
    CHECK_OK(lk_st_writer_add(w, "scalar", LK_F32, 0, NULL, &scalar));
    CHECK_OK(lk_st_writer_add(w, "empty", LK_F32, LK_DIMS(0, 4), NULL));
    CHECK_OK(lk_st_writer_add(w, "we\"ird\\name\n\xc3\xa9", LK_U8, LK_DIMS(1), u8 + 3));
    CHECK(lk_st_writer_add(w, "u8", LK_U8, LK_DIMS(5), u8) == LK_ERR_INVALID);
    CHECK(lk_st_writer_add(w, "__metadata__", LK_U8, LK_DIMS(5), u8) == LK_ERR_INVALID);
    CHECK(lk_st_writer_add(w, "bad\xff", LK_U8, LK_DIMS(5), u8) == LK_ERR_INVALID);
    CHECK(lk_st_writer_add(w, "neg", LK_U8, LK_DIMS(-1), u8) == LK_ERR_INVALID);
    CHECK_OK(lk_st_writer_meta(w, "format", "pt"));
    CHECK_OK(lk_st_writer_meta(w, "note", "quote \" and \\ and tab\t"));
    CHECK_OK(lk_st_writer_meta(w, "format", "likeness")); /* replaces */
    const char *path = "st_roundtrip.safetensors";
    CHECK_OK(lk_st_writer_save(w, path));
    lk_st_writer_free(w);
    char tmp[128];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    CHECK(access(tmp, F_OK) != 0); /* renamed away */

    size_t len = 0;
    unsigned char *raw = read_file(path, &len);
    CHECK(raw != NULL && len >= 8);
    if (raw) {
        uint64_t hl = 0;
        for (int i = 7; i >= 0; i--) hl = (hl << 8) | raw[i];
        CHECK(hl % 8 == 0);
        free(raw);
    }
    lk_safetensors *st = NULL;
    CHECK_OK(lk_safetensors_open(&st, path));
    if (!st) return;
    CHECK(lk_safetensors_count(st) == 9);
    CHECK(!strcmp(lk_safetensors_path(st), path));
    /* names sorted == file order */
    for (int i = 1; i < lk_safetensors_count(st); i++)
        CHECK(strcmp(lk_safetensors_at(st, i - 1)->name, lk_safetensors_at(st, i)->name) < 0);
    const lk_st_tensor *t = lk_safetensors_find(st, "z.f32");
    CHECK(t && t->dtype == LK_F32 && t->ndim == 2 && t->shape[0] == 2 && t->shape[1] == 3 &&
          t->nbytes == sizeof f32 && !memcmp(t->data, f32, sizeof f32));
    t = lk_safetensors_find(st, "a.f16");
    CHECK(t && t->dtype == LK_F16 && !memcmp(t->data, f16, sizeof f16));
    if (t) {
        float got[5];
        CHECK_OK(lk_st_tensor_to_f32(t, got, 5));
        for (int i = 0; i < 5; i++) CHECK(got[i] == lk_f16_to_f32(f16[i]));
        CHECK(lk_st_tensor_to_f32(t, got, 4) == LK_ERR_INVALID);
    }
    t = lk_safetensors_find(st, "m.bf16");
    if (t) {
        float got[3];
        CHECK_OK(lk_st_tensor_to_f32(t, got, 3));
        CHECK(got[0] == 1.0f && got[1] == -10.0f && got[2] == lk_bf16_to_f32(1));
    }
    t = lk_safetensors_find(st, "i64");
    CHECK(t && t->dtype == LK_I64 && !memcmp(t->data, i64, sizeof i64));
    if (t) {
        float got[2];
        CHECK(lk_st_tensor_to_f32(t, got, 2) == LK_ERR_INVALID);
    }
    t = lk_safetensors_find(st, "i32");
    CHECK(t && t->dtype == LK_I32 && t->ndim == 3 && !memcmp(t->data, i32, sizeof i32));
    t = lk_safetensors_find(st, "u8");
    CHECK(t && t->dtype == LK_U8 && !memcmp(t->data, u8, sizeof u8));
    t = lk_safetensors_find(st, "scalar");
    CHECK(t && t->ndim == 0 && lk_st_tensor_numel(t) == 1 && !memcmp(t->data, &scalar, 4));
    t = lk_safetensors_find(st, "empty");
    CHECK(t && t->ndim == 2 && t->nbytes == 0 && lk_st_tensor_numel(t) == 0);
    t = lk_safetensors_find(st, "we\"ird\\name\n\xc3\xa9");
    CHECK(t && t->nbytes == 1 && ((const uint8_t *)t->data)[0] == 254);
    CHECK(lk_safetensors_find(st, "nope") == NULL);
    CHECK(lk_safetensors_find(st, "") == NULL);
    CHECK(lk_safetensors_meta_count(st) == 2);
    CHECK(lk_safetensors_meta(st, "format") && !strcmp(lk_safetensors_meta(st, "format"), "likeness"));
    CHECK(lk_safetensors_meta(st, "note") && !strcmp(lk_safetensors_meta(st, "note"), "quote \" and \\ and tab\t"));
    CHECK(lk_safetensors_meta(st, "missing") == NULL);
    lk_safetensors_close(st);
    remove(path);

    /* empty writer: a valid file with no tensors */
    w = lk_st_writer_new();
    CHECK_OK(lk_st_writer_save(w, path));
    lk_st_writer_free(w);
    st = NULL;
    CHECK_OK(lk_safetensors_open(&st, path));
    CHECK(st && lk_safetensors_count(st) == 0 && lk_safetensors_meta_count(st) == 0);
    lk_safetensors_close(st);
    remove(path);

    /* writing into a missing folder fails with IO and names the path */
    w = lk_st_writer_new();
    CHECK(lk_st_writer_save(w, "no/such/dir/x.safetensors") == LK_ERR_IO);
    CHECK(strstr(lk_last_error(), "no/such/dir/x.safetensors") != NULL);
    lk_st_writer_free(w);
    st = NULL;
    CHECK(lk_safetensors_open(&st, "does_not_exist.safetensors") == LK_ERR_IO && st == NULL);
    CHECK(strstr(lk_last_error(), "does_not_exist.safetensors") != NULL);
    lk_safetensors_close(NULL);
}

/* F16 data at an odd address goes through the realigning path. */
static void test_unaligned(void) {
    uint16_t h[3] = {0x3c00, 0x4000, 0xbc00}; /* 1, 2, -1 */
    char hdr[256];
    int hl = snprintf(hdr, sizeof hdr,
                      "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
                      "\"h\":{\"dtype\":\"F16\",\"shape\":[3],\"data_offsets\":[1,7]},"
                      "\"f\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[7,11]}}");
    while (hl % 8) hdr[hl++] = ' ';
    size_t len = 8 + (size_t)hl + 11;
    unsigned char *buf = malloc(len);
    for (int i = 0; i < 8; i++) buf[i] = (unsigned char)((uint64_t)hl >> (8 * i));
    memcpy(buf + 8, hdr, (size_t)hl);
    unsigned char *d = buf + 8 + hl;
    d[0] = 9;
    memcpy(d + 1, h, 6);
    float one = 0.5f;
    memcpy(d + 7, &one, 4);
    lk_safetensors *st = NULL;
    CHECK_OK(lk_safetensors_open_memory(&st, buf, len, "unaligned"));
    const lk_st_tensor *t = st ? lk_safetensors_find(st, "h") : NULL;
    CHECK(t && ((uintptr_t)t->data & 1u));
    float got[3] = {0};
    if (t) CHECK_OK(lk_st_tensor_to_f32(t, got, 3));
    CHECK(got[0] == 1.0f && got[1] == 2.0f && got[2] == -1.0f);
    t = st ? lk_safetensors_find(st, "f") : NULL;
    if (t) CHECK_OK(lk_st_tensor_to_f32(t, got, 1));
    CHECK(got[0] == 0.5f);
    lk_safetensors_close(st);
    free(buf);
}

static void test_golden(void) {
    lk_safetensors *u = lk_t_golden("unet/diffusion_pytorch_model.safetensors");
    lk_safetensors *s = lk_t_golden("single_file_fp16.safetensors");
    if (!u || !s) {
        lk_safetensors_close(u);
        lk_safetensors_close(s);
        return;
    }
    CHECK(lk_safetensors_count(u) == 684);
    CHECK(lk_safetensors_meta(u, "format") && !strcmp(lk_safetensors_meta(u, "format"), "pt"));
    int nf32 = 0;
    for (int i = 0; i < lk_safetensors_count(u); i++) nf32 += lk_safetensors_at(u, i)->dtype == LK_F32;
    CHECK(nf32 == 684);
    CHECK(lk_safetensors_count(s) == 972);
    int n16 = 0, n64 = 0, n32 = 0;
    for (int i = 0; i < lk_safetensors_count(s); i++) {
        lk_dtype dt = lk_safetensors_at(s, i)->dtype;
        n16 += dt == LK_F16;
        n64 += dt == LK_I64;
        n32 += dt == LK_I32;
    }
    CHECK(n16 == 970 && n64 == 1 && n32 == 1);
    const lk_st_tensor *pid = lk_safetensors_find(s, "cond_stage_model.transformer.text_model.embeddings.position_ids");
    CHECK(pid && pid->dtype == LK_I64 && pid->ndim == 2 && pid->shape[1] == 77);
    if (pid) {
        int64_t v;
        memcpy(&v, (const char *)pid->data + 8 * 76, 8);
        CHECK(v == 76);
    }
    /* the same weight in both layouts: F16 widening agrees with f32 to half rounding */
    const lk_st_tensor *a = lk_safetensors_find(u, "conv_in.weight");
    const lk_st_tensor *b = lk_safetensors_find(s, "model.diffusion_model.input_blocks.0.0.weight");
    CHECK(a && b && a->ndim == 4 && a->shape[0] == 32 && a->shape[1] == 4 && a->shape[2] == 3);
    if (a && b && lk_st_tensor_numel(a) == lk_st_tensor_numel(b)) {
        size_t n = (size_t)lk_st_tensor_numel(a);
        float *fa = malloc(n * 4), *fb = malloc(n * 4);
        CHECK_OK(lk_st_tensor_to_f32(a, fa, n));
        CHECK_OK(lk_st_tensor_to_f32(b, fb, n));
        lk_t_close("single-file f16 vs folder f32 conv_in.weight", fb, fa, n, 1e-6f, 1.0f / 1024.0f);
        free(fa);
        free(fb);
    }
    /* every name is found, and lookups are fast */
    int found = 0;
    double t0 = lk_t_now();
    for (int rep = 0; rep < 100; rep++)
        for (int i = 0; i < lk_safetensors_count(s); i++)
            found += lk_safetensors_find(s, lk_safetensors_at(s, i)->name) == lk_safetensors_at(s, i);
    double dt = lk_t_now() - t0;
    CHECK(found == 100 * 972);
    printf("find: %.1f ns per lookup over %d tensors\n", dt / (100.0 * 972.0) * 1e9, lk_safetensors_count(s));
    lk_safetensors_close(u);
    lk_safetensors_close(s);
}

static const char *corpus_dir(char *buf, size_t len) {
    const char *env = getenv("LK_FUZZ_CORPUS");
    if (env && *env) return env;
    snprintf(buf, len, "%s", __FILE__);
    char *slash = strrchr(buf, '/');
    if (slash) *slash = '\0';
    else snprintf(buf, len, ".");
    size_t n = strlen(buf);
    snprintf(buf + n, len - n, "/fuzz/corpus");
    return buf;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Every corpus file: the status its name announces, a message naming the file, the same result
 * from memory; then seeded mutations (byte flips, truncations, length edits) must never crash and,
 * when accepted, satisfy the invariants. */
static void test_corpus(void) {
    char dbuf[4096];
    const char *dir = corpus_dir(dbuf, sizeof dbuf);
    DIR *d = opendir(dir);
    CHECK(d != NULL);
    if (!d) {
        fprintf(stderr, "cannot open corpus %s (set LK_FUZZ_CORPUS)\n", dir);
        return;
    }
    char *names[512];
    int nn = 0;
    struct dirent *de;
    while ((de = readdir(d)) && nn < 512)
        if (strstr(de->d_name, ".safetensors")) names[nn++] = strdup(de->d_name);
    closedir(d);
    qsort(names, (size_t)nn, sizeof names[0], cmp_str);
    CHECK(nn >= 60);
    int nok = 0, nfmt = 0, nuns = 0, mutated_ok = 0, mutations = 0;
    for (int f = 0; f < nn; f++) {
        const char *name = names[f];
        lk_status want = !strncmp(name, "ok__", 4) ? LK_OK
                         : !strncmp(name, "format__", 8) ? LK_ERR_FORMAT
                         : !strncmp(name, "unsupported__", 13) ? LK_ERR_UNSUPPORTED : (lk_status)-1;
        CHECK((int)want >= 0);
        nok += want == LK_OK;
        nfmt += want == LK_ERR_FORMAT;
        nuns += want == LK_ERR_UNSUPPORTED;
        char path[4096 + 256];
        snprintf(path, sizeof path, "%s/%s", dir, name);
        lk_clear_error();
        lk_safetensors *st = NULL;
        lk_status s = lk_safetensors_open(&st, path);
        if (s != want)
            fprintf(stderr, "FAIL corpus %s: got %s (%s), want %s\n", name, lk_status_str(s), lk_last_error(),
                    lk_status_str(want));
        CHECK(s == want);
        if (s != LK_OK) {
            CHECK(st == NULL);
            const char *msg = lk_last_error();
            CHECK(strstr(msg, name) != NULL && strchr(msg, '\n') == NULL);
            if (getenv("LK_VERBOSE")) printf("  %-40s %s\n", name, msg);
        }
        size_t len = 0;
        unsigned char *buf = read_file(path, &len);
        CHECK(buf != NULL);
        if (!buf) { lk_safetensors_close(st); continue; }
        lk_safetensors_close(st);
        st = NULL;
        s = lk_safetensors_open_memory(&st, buf, len, name);
        CHECK(s == want);
        if (s == LK_OK) CHECK(check_invariants(st, buf, len));
        else CHECK(strstr(lk_last_error(), name) != NULL);
        lk_safetensors_close(st);

        unsigned char *m = malloc(len + 16);
        for (int it = 0; it < 150; it++) {
            size_t ml = len;
            memcpy(m, buf, len);
            uint64_t r = next_rand();
            switch (r % 5) {
            case 0: /* flip a few bytes */
                for (int k = 0; k < 1 + (int)(r >> 8) % 3 && ml; k++) m[next_rand() % ml] ^= (unsigned char)(1u << (next_rand() % 8));
                break;
            case 1: /* replace a byte by a JSON-significant one */
                if (ml) m[next_rand() % ml] = (unsigned char)"{}[]\",:0123456789-.e \\u\xff"[next_rand() % 25];
                break;
            case 2: /* truncate */
                ml = ml ? (size_t)(next_rand() % ml) : 0;
                break;
            case 3: /* grow the data section */
                for (int k = 0; k < 8; k++) m[ml++] = (unsigned char)next_rand();
                break;
            default: /* edit the header length */
                if (ml >= 8) m[next_rand() % 8] = (unsigned char)next_rand();
                break;
            }
            st = NULL;
            unsigned char *copy = malloc(ml ? ml : 1); /* exact-size buffer so ASan sees overreads */
            memcpy(copy, m, ml);
            s = lk_safetensors_open_memory(&st, copy, ml, name);
            mutations++;
            if (s == LK_OK) {
                mutated_ok++;
                CHECK(check_invariants(st, copy, ml));
            } else {
                CHECK(st == NULL && lk_last_error()[0] != '\0');
            }
            lk_safetensors_close(st);
            free(copy);
        }
        free(m);
        free(buf);
    }
    CHECK(nok >= 8 && nfmt >= 40 && nuns >= 4);
    printf("corpus: %d files (%d ok, %d format, %d unsupported); %d mutations, %d accepted\n", nn, nok, nfmt,
           nuns, mutations, mutated_ok);
    for (int f = 0; f < nn; f++) free(names[f]);
}

/* The example message of the house style, exactly. */
static void test_messages(void) {
    const char *h = "{\"a\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,12]}}";
    size_t hl = strlen(h);
    unsigned char buf[128];
    for (int i = 0; i < 8; i++) buf[i] = (unsigned char)((uint64_t)hl >> (8 * i));
    memcpy(buf + 8, h, hl);
    memset(buf + 8 + hl, 0, 12);
    lk_safetensors *st = NULL;
    CHECK(lk_safetensors_open_memory(&st, buf, 8 + hl + 12, "x.safetensors") == LK_ERR_FORMAT);
    CHECK(!strcmp(lk_last_error(), "x.safetensors: tensor 'a': data_offsets [0,12] hold 12 bytes but F32 [2,2] needs 16"));
    printf("message: %s\n", lk_last_error());
    CHECK(lk_safetensors_open_memory(&st, NULL, 0, "empty") == LK_ERR_FORMAT);
    CHECK(lk_safetensors_open_memory(NULL, buf, 8, "x") == LK_ERR_INVALID);
}

int main(void) {
    test_roundtrip();
    test_unaligned();
    test_messages();
    test_golden();
    test_corpus();
    return lk_t_done();
}
