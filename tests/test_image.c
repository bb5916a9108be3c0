/* test_image.c: image decoding (PNG/JPEG/WebP made here with libpng, libjpeg and libwebp, and
 * by PIL in tests/ref/image.py), EXIF orientation, PNG encoding with text chunks, malformed and
 * truncated files, resize against torch / direct references / PIL, crop, flip, prepare.
 * LK_IMAGE_CORPUS=DIR also writes the generated files there (seeds for tests/fuzz/fuzz_image). */
#define _POSIX_C_SOURCE 200809L
#include "harness.h"
#include "likeness/image.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jpeglib.h>
#include <png.h>
#include <webp/decode.h>
#include <webp/encode.h>

/* ------------------------------------------------------------------------------------------ */
/* helpers */

static uint64_t rs = 0x1234567ull;
static uint32_t rnd(void) { /* splitmix64 */
    uint64_t z = (rs += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return (uint32_t)((z ^ (z >> 31)) >> 16);
}

static void corpus_dump(const char *name, const uint8_t *p, size_t n) {
    const char *dir = getenv("LK_IMAGE_CORPUS");
    if (!dir || !*dir || !p) return;
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f) return;
    fwrite(p, 1, n, f);
    fclose(f);
}

/* Compare bytes; prints the max abs difference, counts one check. */
static int cmp_u8(const char *what, const uint8_t *got, const uint8_t *want, size_t n, int tol) {
    lk_t_checks++;
    int mx = 0;
    size_t at = 0;
    for (size_t i = 0; i < n; i++) {
        int d = abs((int)got[i] - (int)want[i]);
        if (d > mx) { mx = d; at = i; }
    }
    int ok = mx <= tol;
    fprintf(ok ? stdout : stderr, "%s %s: max_abs=%d (tol %d, n=%zu)", ok ? "ok  " : "FAIL", what, mx, tol, n);
    if (!ok) {
        fprintf(stderr, " at %zu: got %d want %d\n", at, got[at], want[at]);
        lk_t_failures++;
    } else {
        printf("\n");
    }
    return ok;
}

/* status s must be want, with a message that starts with "name: " */
static void expect_fail(lk_status s, lk_status want, const char *name, const char *what) {
    lk_t_checks++;
    const char *m = lk_last_error();
    size_t nl = strlen(name);
    bool named = strncmp(m, name, nl) == 0 && m[nl] == ':';
    if (s != want || !named) {
        lk_t_failures++;
        fprintf(stderr, "FAIL %s: got %s (%s), want %s with the name '%s'\n", what, lk_status_str(s), m,
                lk_status_str(want), name);
    } else if (getenv("LK_VERBOSE")) {
        printf("  %-28s -> %s\n", what, m);
    }
}

static lk_status dec(lk_image *img, const uint8_t *p, size_t n, const char *name, int channels) {
    lk_image_load_opts o = {0};
    o.channels = channels;
    return lk_image_decode(img, p, n, name, &o);
}

/* ---- PNG writer (libpng) for test inputs ---- */
typedef struct membuf {
    uint8_t *p;
    size_t n, cap;
} membuf;

static void mb_write(png_structp png, png_bytep d, png_size_t n) {
    membuf *m = png_get_io_ptr(png);
    if (m->n + n > m->cap) {
        m->cap = (m->n + n) * 2;
        m->p = realloc(m->p, m->cap);
        if (!m->p) png_error(png, "oom");
    }
    memcpy(m->p + m->n, d, n);
    m->n += n;
}
static void mb_flush(png_structp png) { (void)png; }

typedef struct png_spec {
    int w, h, ctype, depth, interlace;
    const uint8_t *raw; /* packed PNG rows (16-bit big-endian) */
    const png_color *pal;
    int npal;
    const uint8_t *trns;
    int ntrns;
    const png_color_16 *key; /* tRNS colour key for gray / RGB */
} png_spec;

static uint8_t *make_png(const png_spec *s, size_t *len) {
    membuf m = {0};
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png_create_info_struct(png);
    png_bytep *rows = malloc(sizeof *rows * (size_t)s->h);
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_write_struct(&png, &info);
        free(rows);
        free(m.p);
        return NULL;
    }
    png_set_write_fn(png, &m, mb_write, mb_flush);
    png_set_IHDR(png, info, (png_uint_32)s->w, (png_uint_32)s->h, s->depth, s->ctype, s->interlace,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    if (s->pal) png_set_PLTE(png, info, s->pal, s->npal);
    if (s->trns || s->key) png_set_tRNS(png, info, s->trns, s->ntrns, s->key);
    png_write_info(png, info);
    const int ch = s->ctype == PNG_COLOR_TYPE_GRAY || s->ctype == PNG_COLOR_TYPE_PALETTE ? 1
                   : s->ctype == PNG_COLOR_TYPE_GRAY_ALPHA ? 2
                   : s->ctype == PNG_COLOR_TYPE_RGB ? 3 : 4;
    size_t rb = ((size_t)s->w * ch * s->depth + 7) / 8;
    for (int y = 0; y < s->h; y++) rows[y] = (png_bytep)(uintptr_t)(s->raw + (size_t)y * rb);
    png_write_image(png, rows);
    png_write_end(png, info);
    png_destroy_write_struct(&png, &info);
    free(rows);
    *len = m.n;
    return m.p;
}

/* ---- JPEG writer (libjpeg) ---- */
typedef struct jpeg_spec {
    const uint8_t *px;
    int w, h, comps;
    J_COLOR_SPACE in_cs, jpeg_cs; /* jpeg_cs JCS_UNKNOWN: the library default */
    int quality;
    bool full_chroma, progressive;
    int adobe; /* -1 default, 0 suppress the Adobe marker */
    const uint8_t *app1;
    size_t app1_len;
} jpeg_spec;

static uint8_t *make_jpeg(const jpeg_spec *s, size_t *len) {
    struct jpeg_compress_struct c;
    struct jpeg_error_mgr err;
    c.err = jpeg_std_error(&err);
    jpeg_create_compress(&c);
    unsigned char *buf = NULL;
    unsigned long n = 0;
    jpeg_mem_dest(&c, &buf, &n);
    c.image_width = (JDIMENSION)s->w;
    c.image_height = (JDIMENSION)s->h;
    c.input_components = s->comps;
    c.in_color_space = s->in_cs;
    jpeg_set_defaults(&c);
    if (s->jpeg_cs != JCS_UNKNOWN) jpeg_set_colorspace(&c, s->jpeg_cs);
    jpeg_set_quality(&c, s->quality, TRUE);
    if (s->full_chroma)
        for (int i = 0; i < c.num_components; i++) c.comp_info[i].h_samp_factor = c.comp_info[i].v_samp_factor = 1;
    if (s->progressive) jpeg_simple_progression(&c);
    if (s->adobe == 0) c.write_Adobe_marker = FALSE;
    jpeg_start_compress(&c, TRUE);
    if (s->app1) jpeg_write_marker(&c, JPEG_APP0 + 1, s->app1, (unsigned)s->app1_len);
    while (c.next_scanline < c.image_height) {
        JSAMPROW r = (JSAMPROW)(uintptr_t)(s->px + (size_t)c.next_scanline * s->w * s->comps);
        jpeg_write_scanlines(&c, &r, 1);
    }
    jpeg_finish_compress(&c);
    jpeg_destroy_compress(&c);
    *len = n;
    return buf;
}

static size_t put16(uint8_t *t, size_t i, bool le, unsigned v) {
    t[i] = (uint8_t)(le ? v : v >> 8);
    t[i + 1] = (uint8_t)(le ? v >> 8 : v);
    return i + 2;
}

static size_t put32(uint8_t *t, size_t i, bool le, uint32_t v) {
    i = put16(t, i, le, le ? (v & 0xffff) : (v >> 16));
    return put16(t, i, le, le ? (v >> 16) : (v & 0xffff));
}

/* "Exif\0\0" + TIFF header + IFD0 with an unrelated tag, then the orientation entry. */
static size_t make_exif(uint8_t *b, bool le, int type, uint32_t count, int orientation) {
    memcpy(b, "Exif\0\0", 6);
    uint8_t *t = b + 6;
    size_t i = 0;
    t[i++] = le ? 'I' : 'M';
    t[i++] = le ? 'I' : 'M';
    i = put16(t, i, le, 42);
    i = put32(t, i, le, 8);
    i = put16(t, i, le, 2); /* two entries */
    i = put16(t, i, le, 0x010f);
    i = put16(t, i, le, 2);
    i = put32(t, i, le, 4);
    memcpy(t + i, "abc", 4);
    i += 4;
    i = put16(t, i, le, 0x0112);
    i = put16(t, i, le, (unsigned)type);
    i = put32(t, i, le, count);
    i = put16(t, i, le, (unsigned)orientation);
    i = put16(t, i, le, 0);
    i = put32(t, i, le, 0); /* no next IFD */
    return 6 + i;
}

static uint32_t crc32_png(const uint8_t *p, size_t n) {
    uint32_t c = 0xffffffffu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++) c = (c >> 1) ^ (0xedb88320u & (0u - (c & 1u)));
    }
    return c ^ 0xffffffffu;
}

static void be32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v >> 24); p[1] = (uint8_t)(v >> 16); p[2] = (uint8_t)(v >> 8); p[3] = (uint8_t)v;
}

/* A PNG of signature, IHDR (w x h RGB8), an IDAT with a few bytes, IEND: enough to reach the size
 * check, never enough pixels. */
static size_t make_png_header(uint8_t *b, uint32_t w, uint32_t h) {
    static const uint8_t sig[8] = {0x89, 'P', 'N', 'G', 0x0d, 0x0a, 0x1a, 0x0a};
    size_t n = 0;
    memcpy(b, sig, 8); n = 8;
    be32(b + n, 13); memcpy(b + n + 4, "IHDR", 4);
    be32(b + n + 8, w); be32(b + n + 12, h);
    b[n + 16] = 8; b[n + 17] = 2; b[n + 18] = 0; b[n + 19] = 0; b[n + 20] = 0;
    be32(b + n + 21, crc32_png(b + n + 4, 17)); n += 25;
    be32(b + n, 2); memcpy(b + n + 4, "IDAT", 4); b[n + 8] = 0x78; b[n + 9] = 0x9c;
    be32(b + n + 10, crc32_png(b + n + 4, 6)); n += 14;
    be32(b + n, 0); memcpy(b + n + 4, "IEND", 4); be32(b + n + 8, crc32_png(b + n + 4, 4)); n += 12;
    return n;
}

/* REQUIRE for void functions */
#define REQ(cond)                                                                   \
    do {                                                                            \
        if (!(cond)) {                                                              \
            fprintf(stderr, "FATAL %s:%d: %s (%s)\n", __FILE__, __LINE__, #cond,    \
                    lk_last_error());                                               \
            lk_t_failures++;                                                        \
            return;                                                                 \
        }                                                                           \
    } while (0)

static void fill_random(uint8_t *p, size_t n) {
    for (size_t i = 0; i < n; i++) p[i] = (uint8_t)rnd();
}

/* ------------------------------------------------------------------------------------------ */

static void test_sniff(void) {
    static const uint8_t png[8] = {0x89, 'P', 'N', 'G', 0x0d, 0x0a, 0x1a, 0x0a};
    static const uint8_t jpg[4] = {0xff, 0xd8, 0xff, 0xe0};
    CHECK(lk_image_sniff(png, 8) == LK_IMAGE_PNG);
    CHECK(lk_image_sniff(png, 7) == LK_IMAGE_UNKNOWN);
    CHECK(lk_image_sniff(jpg, 4) == LK_IMAGE_JPEG);
    CHECK(lk_image_sniff(jpg, 2) == LK_IMAGE_UNKNOWN);
    CHECK(lk_image_sniff("RIFF\x10\0\0\0WEBPVP8 ", 16) == LK_IMAGE_WEBP);
    CHECK(lk_image_sniff("RIFF\x10\0\0\0WAVEfmt ", 16) == LK_IMAGE_UNKNOWN);
    CHECK(lk_image_sniff(NULL, 0) == LK_IMAGE_UNKNOWN);
    CHECK(strcmp(lk_image_format_name(LK_IMAGE_WEBP), "WebP") == 0);

    lk_image img;
    expect_fail(lk_image_decode(&img, "GIF89a\1\0\1\0", 10, "anim.gif", NULL), LK_ERR_UNSUPPORTED,
                "anim.gif", "gif");
    CHECK(img.px == NULL && img.w == 0);
    expect_fail(lk_image_decode(&img, "hello world", 11, "notes.txt", NULL), LK_ERR_FORMAT, "notes.txt", "text");
    expect_fail(lk_image_decode(&img, "", 0, "empty.png", NULL), LK_ERR_FORMAT, "empty.png", "empty");
    lk_image_load_opts o = {.channels = 2};
    expect_fail(lk_image_decode(&img, png, 8, "x.png", &o), LK_ERR_INVALID, "x.png", "channels=2");
    expect_fail(lk_image_load(&img, "/nonexistent/dir/photo.jpg", NULL), LK_ERR_IO,
                "/nonexistent/dir/photo.jpg", "missing file");
    expect_fail(lk_image_load(&img, "/tmp", NULL), LK_ERR_IO, "/tmp", "directory");
}

/* ---- PNG round trips and text ---- */
static void test_png_roundtrip(const char *tmpdir) {
    for (int c = 3; c <= 4; c++) {
        lk_image a;
        REQ(lk_image_alloc(&a, 37, 23, c) == LK_OK);
        fill_random(a.px, (size_t)37 * 23 * c);
        uint8_t *buf;
        size_t n;
        CHECK_OK(lk_image_encode_png(&a, NULL, &buf, &n));
        corpus_dump(c == 3 ? "rgb8.png" : "rgba8.png", buf, n);
        lk_image b;
        CHECK_OK(lk_image_decode(&b, buf, n, "rt.png", NULL));
        CHECK(b.w == 37 && b.h == 23 && b.c == c);
        if (b.px) cmp_u8(c == 3 ? "png rt rgb8" : "png rt rgba8", b.px, a.px, (size_t)37 * 23 * c, 0);
        lk_image_free(&b);
        free(buf);
        lk_image_free(&a);
    }
    /* 1x1, both channel counts, and level 0 vs 9 on a compressible picture */
    lk_image one;
    CHECK_OK(lk_image_alloc(&one, 1, 1, 4));
    memcpy(one.px, "\x10\x20\x30\x40", 4);
    uint8_t *buf;
    size_t n;
    CHECK_OK(lk_image_encode_png(&one, NULL, &buf, &n));
    lk_image b;
    CHECK_OK(dec(&b, buf, n, "one.png", 0));
    CHECK(b.w == 1 && b.h == 1 && b.c == 4 && b.px && memcmp(b.px, one.px, 4) == 0);
    lk_image_free(&b);
    CHECK_OK(dec(&b, buf, n, "one.png", 3));
    /* (0x40*0x10 + 0xbf*255 + 127) / 255 etc. */
    CHECK(b.c == 3 && b.px[0] == (0x40 * 0x10 + 0xbf * 255 + 127) / 255 &&
          b.px[2] == (0x40 * 0x30 + 0xbf * 255 + 127) / 255);
    lk_image_free(&b);
    free(buf);
    lk_image_free(&one);

    lk_image g;
    CHECK_OK(lk_image_alloc(&g, 64, 64, 3));
    for (int i = 0; i < 64 * 64 * 3; i++) g.px[i] = (uint8_t)(i / 3 % 64);
    lk_png_write_opts o0 = {.level = 0}, o9 = {.level = 9};
    uint8_t *b0, *b9;
    size_t n0, n9;
    CHECK_OK(lk_image_encode_png(&g, &o0, &b0, &n0));
    CHECK_OK(lk_image_encode_png(&g, &o9, &b9, &n9));
    CHECK(n9 < n0 / 4);
    lk_image d0, d9;
    CHECK_OK(lk_image_decode(&d0, b0, n0, "l0.png", NULL));
    CHECK_OK(lk_image_decode(&d9, b9, n9, "l9.png", NULL));
    CHECK(d0.px && d9.px && memcmp(d0.px, g.px, 64 * 64 * 3) == 0 && memcmp(d9.px, g.px, 64 * 64 * 3) == 0);
    lk_image_free(&d0);
    lk_image_free(&d9);
    free(b0);
    free(b9);
    lk_png_write_opts bad = {.level = 10};
    CHECK(lk_image_encode_png(&g, &bad, &b0, &n0) == LK_ERR_INVALID && b0 == NULL);

    /* text chunks: ASCII -> tEXt, UTF-8 -> iTXt, read back through lk_image_load */
    const char *params = "a photo of sks dog, (masterpiece:1.2)\nNegative prompt: blurry\n"
                         "Steps: 20, Sampler: DPM++ 2M Karras, CFG scale: 7, Seed: 1234, Size: 512x512";
    const char *utf = "caf\xc3\xa9 \xe2\x98\x95 \xe6\x97\xa5\xe6\x9c\xac";
    lk_image_text kv[3] = {{"parameters", (char *)(uintptr_t)params},
                           {"Title", (char *)(uintptr_t)utf},
                           {"Empty", (char *)(uintptr_t)""}};
    lk_png_write_opts ot = {.level = LK_PNG_LEVEL_DEFAULT, .text = kv, .n_text = 3};
    char path[600];
    snprintf(path, sizeof path, "%s/out.png", tmpdir);
    CHECK_OK(lk_image_save_png(&g, path, &ot));
    char tmp[700];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    CHECK(access(tmp, F_OK) != 0);
    lk_image_texts tx = {0};
    lk_image_load_opts lo = {.text = &tx};
    lk_image r;
    CHECK_OK(lk_image_load(&r, path, &lo));
    CHECK(r.px && r.w == 64 && memcmp(r.px, g.px, 64 * 64 * 3) == 0);
    CHECK(tx.n == 3);
    const char *v = lk_image_texts_get(&tx, "parameters");
    CHECK(v && strcmp(v, params) == 0);
    v = lk_image_texts_get(&tx, "Title");
    CHECK(v && strcmp(v, utf) == 0);
    v = lk_image_texts_get(&tx, "Empty");
    CHECK(v && strcmp(v, "") == 0);
    CHECK(lk_image_texts_get(&tx, "missing") == NULL);
    lk_image_free(&r);
    /* the chunk types: read the file bytes */
    FILE *f = fopen(path, "rb");
    uint8_t fb[65536];
    size_t fn = f ? fread(fb, 1, sizeof fb, f) : 0;
    if (f) fclose(f);
    bool has_text = false, has_itxt = false;
    for (size_t i = 0; i + 4 <= fn; i++) {
        if (memcmp(fb + i, "tEXtparameters", 14) == 0) has_text = true;
        if (memcmp(fb + i, "iTXtTitle", 9) == 0) has_itxt = true;
    }
    CHECK(has_text && has_itxt);
    /* decoding again frees the old list first */
    CHECK_OK(lk_image_load(&r, path, &lo));
    CHECK(tx.n == 3);
    lk_image_free(&r);
    lk_image_texts_free(&tx);
    lk_image_texts_free(&tx); /* twice is fine */
    unlink(path);

    static const char *bad_keys[] = {"", " lead", "trail ", "dou  ble", "caf\xc3\xa9",
                                     "0123456789012345678901234567890123456789012345678901234567890123456789012345678X",
                                     "tab\tkey"};
    for (size_t i = 0; i < sizeof bad_keys / sizeof *bad_keys; i++) {
        lk_image_text t1 = {(char *)(uintptr_t)bad_keys[i], (char *)(uintptr_t)"v"};
        lk_png_write_opts ob = {.level = 6, .text = &t1, .n_text = 1};
        CHECK(lk_image_encode_png(&g, &ob, &b0, &n0) == LK_ERR_INVALID);
    }
    static const char *bad_vals[] = {"\xc3", "\xc0\xaf", "\xed\xa0\x80", "\xf5\x80\x80\x80", "ok\xff"};
    for (size_t i = 0; i < sizeof bad_vals / sizeof *bad_vals; i++) {
        lk_image_text t1 = {(char *)(uintptr_t)"key", (char *)(uintptr_t)bad_vals[i]};
        lk_png_write_opts ob = {.level = 6, .text = &t1, .n_text = 1};
        CHECK(lk_image_encode_png(&g, &ob, &b0, &n0) == LK_ERR_INVALID);
    }
    snprintf(path, sizeof path, "%s/no/such/dir/x.png", tmpdir);
    expect_fail(lk_image_save_png(&g, path, NULL), LK_ERR_IO, path, "save into a missing dir");
    lk_image_free(&g);
}

/* ---- PNG colour types, bit depths, tRNS, interlacing (files made with libpng here) ---- */
static unsigned scale_to8(unsigned v, int depth) {
    if (depth == 16) return (v * 255u + 32767u) / 65535u;
    return v * 255u / ((1u << depth) - 1u);
}

static void png_variant(const char *name, int ctype, int depth, int interlace, bool with_trns) {
    const int w = 13, h = 11;
    const int ch = ctype == PNG_COLOR_TYPE_GRAY || ctype == PNG_COLOR_TYPE_PALETTE ? 1
                   : ctype == PNG_COLOR_TYPE_GRAY_ALPHA ? 2
                   : ctype == PNG_COLOR_TYPE_RGB ? 3 : 4;
    const unsigned maxv = depth == 16 ? 65535u : (1u << depth) - 1u;
    unsigned *smp = malloc(sizeof *smp * (size_t)w * h * ch);
    const size_t rb = ((size_t)w * ch * depth + 7) / 8;
    uint8_t *raw = calloc((size_t)h, rb);
    png_color pal[256];
    uint8_t trns[256];
    png_color_16 key = {0};
    const int npal = ctype == PNG_COLOR_TYPE_PALETTE ? (1 << depth) : 0;
    for (int i = 0; i < npal; i++) {
        pal[i].red = (uint8_t)rnd(); pal[i].green = (uint8_t)rnd(); pal[i].blue = (uint8_t)rnd();
        trns[i] = (uint8_t)rnd();
    }
    const int ntrns = npal ? npal / 2 + 1 : 0;
    for (size_t i = 0; i < (size_t)w * h * ch; i++) smp[i] = i < (size_t)ch ? 0 : rnd() % (maxv + 1);
    for (int k = 0; k < ch; k++) smp[ch + k] = maxv; /* pixel 1 at full scale */
    if (with_trns && npal == 0) { /* the colour key: pixel 2's value, repeated at pixel 7 */
        for (int k = 0; k < ch; k++) smp[7 * ch + k] = smp[2 * ch + k];
        key.gray = (png_uint_16)smp[2 * ch];
        if (ch == 3) {
            key.red = (png_uint_16)smp[2 * ch]; key.green = (png_uint_16)smp[2 * ch + 1];
            key.blue = (png_uint_16)smp[2 * ch + 2];
        }
    }
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            for (int k = 0; k < ch; k++) {
                unsigned v = smp[((size_t)y * w + x) * ch + k];
                uint8_t *row = raw + (size_t)y * rb;
                size_t bit = ((size_t)x * ch + k) * depth;
                if (depth == 16) { row[bit / 8] = (uint8_t)(v >> 8); row[bit / 8 + 1] = (uint8_t)v; }
                else if (depth == 8) row[bit / 8] = (uint8_t)v;
                else row[bit / 8] |= (uint8_t)(v << (8 - depth - bit % 8));
            }
    const bool alpha = (ctype & PNG_COLOR_MASK_ALPHA) || with_trns;
    const int oc = alpha ? 4 : 3;
    uint8_t *want = malloc((size_t)w * h * oc);
    for (size_t p = 0; p < (size_t)w * h; p++) {
        const unsigned *s = smp + p * ch;
        uint8_t *o = want + p * oc;
        if (npal) {
            o[0] = pal[s[0]].red; o[1] = pal[s[0]].green; o[2] = pal[s[0]].blue;
            if (alpha) o[3] = (int)s[0] < ntrns ? trns[s[0]] : 255;
        } else if (ch <= 2) {
            o[0] = o[1] = o[2] = (uint8_t)scale_to8(s[0], depth);
            if (ch == 2) o[3] = (uint8_t)scale_to8(s[1], depth);
            else if (alpha) o[3] = s[0] == key.gray ? 0 : 255;
        } else {
            for (int k = 0; k < 3; k++) o[k] = (uint8_t)scale_to8(s[k], depth);
            if (ch == 4) o[3] = (uint8_t)scale_to8(s[3], depth);
            else if (alpha) o[3] = (s[0] == key.red && s[1] == key.green && s[2] == key.blue) ? 0 : 255;
        }
    }
    png_spec sp = {.w = w, .h = h, .ctype = ctype, .depth = depth, .interlace = interlace, .raw = raw,
                   .pal = npal ? pal : NULL, .npal = npal,
                   .trns = (with_trns && npal) ? trns : NULL, .ntrns = (with_trns && npal) ? ntrns : 0,
                   .key = (with_trns && !npal) ? &key : NULL};
    size_t n = 0;
    uint8_t *buf = make_png(&sp, &n);
    CHECK(buf != NULL);
    char fname[96];
    snprintf(fname, sizeof fname, "%s.png", name);
    corpus_dump(fname, buf, n);
    lk_image img;
    lk_status st = buf ? dec(&img, buf, n, fname, 0) : LK_ERR_INVALID;
    CHECK_OK(st);
    if (st == LK_OK) {
        CHECK(img.w == w && img.h == h && img.c == oc);
        if (img.w == w && img.h == h && img.c == oc) cmp_u8(fname, img.px, want, (size_t)w * h * oc, 0);
        lk_image_free(&img);
        /* probe agrees without decoding */
        lk_image_format f;
        int pw, ph;
        CHECK_OK(lk_image_probe(buf, n, fname, NULL, &f, &pw, &ph));
        CHECK(f == LK_IMAGE_PNG && pw == w && ph == h);
    }
    free(buf);
    free(want);
    free(raw);
    free(smp);
}

static void test_png_variants(void) {
    png_variant("rgb16", PNG_COLOR_TYPE_RGB, 16, PNG_INTERLACE_NONE, false);
    png_variant("rgba16", PNG_COLOR_TYPE_RGB_ALPHA, 16, PNG_INTERLACE_NONE, false);
    png_variant("gray1", PNG_COLOR_TYPE_GRAY, 1, PNG_INTERLACE_NONE, false);
    png_variant("gray2", PNG_COLOR_TYPE_GRAY, 2, PNG_INTERLACE_NONE, false);
    png_variant("gray4", PNG_COLOR_TYPE_GRAY, 4, PNG_INTERLACE_NONE, false);
    png_variant("gray8", PNG_COLOR_TYPE_GRAY, 8, PNG_INTERLACE_NONE, false);
    png_variant("gray16", PNG_COLOR_TYPE_GRAY, 16, PNG_INTERLACE_NONE, false);
    png_variant("gray8_key", PNG_COLOR_TYPE_GRAY, 8, PNG_INTERLACE_NONE, true);
    png_variant("gray4_key", PNG_COLOR_TYPE_GRAY, 4, PNG_INTERLACE_NONE, true);
    png_variant("ga8", PNG_COLOR_TYPE_GRAY_ALPHA, 8, PNG_INTERLACE_NONE, false);
    png_variant("ga16", PNG_COLOR_TYPE_GRAY_ALPHA, 16, PNG_INTERLACE_NONE, false);
    png_variant("pal4_trns", PNG_COLOR_TYPE_PALETTE, 4, PNG_INTERLACE_NONE, true);
    png_variant("pal8", PNG_COLOR_TYPE_PALETTE, 8, PNG_INTERLACE_NONE, false);
    png_variant("pal1", PNG_COLOR_TYPE_PALETTE, 1, PNG_INTERLACE_NONE, false);
    png_variant("rgb8_key", PNG_COLOR_TYPE_RGB, 8, PNG_INTERLACE_NONE, true);
    png_variant("rgb16_key", PNG_COLOR_TYPE_RGB, 16, PNG_INTERLACE_NONE, true);
    png_variant("adam7_rgb8", PNG_COLOR_TYPE_RGB, 8, PNG_INTERLACE_ADAM7, false);
    png_variant("adam7_gray2", PNG_COLOR_TYPE_GRAY, 2, PNG_INTERLACE_ADAM7, false);
    png_variant("adam7_rgba16", PNG_COLOR_TYPE_RGB_ALPHA, 16, PNG_INTERLACE_ADAM7, false);
    png_variant("adam7_pal2_trns", PNG_COLOR_TYPE_PALETTE, 2, PNG_INTERLACE_ADAM7, true);
}

/* ---- alpha compositing and channel options ---- */
static void test_channels(void) {
    lk_image a;
    REQ(lk_image_alloc(&a, 2, 1, 4) == LK_OK);
    memcpy(a.px, "\xc8\x64\x00\x80\x0a\x14\x1e\xff", 8);
    uint8_t *buf;
    size_t n;
    REQ(lk_image_encode_png(&a, NULL, &buf, &n) == LK_OK);
    lk_image_load_opts o = {.channels = 3, .use_background = true, .background = {0, 0, 255}};
    lk_image b;
    CHECK_OK(lk_image_decode(&b, buf, n, "bg.png", &o));
    /* a=128: (128*fg + 127*bg + 127) / 255 */
    uint8_t want[6] = {(128 * 200 + 127) / 255, (128 * 100 + 127) / 255, (127 * 255 + 127) / 255,
                       10, 20, 30};
    CHECK(b.c == 3 && b.px && memcmp(b.px, want, 6) == 0);
    lk_image_free(&b);
    CHECK_OK(dec(&b, buf, n, "white.png", 3));
    CHECK(b.px && b.px[0] == (128 * 200 + 127 * 255 + 127) / 255 && b.px[2] == (127 * 255 + 127) / 255);
    CHECK_OK(lk_image_set_channels(&b, 4, NULL));
    CHECK(b.c == 4 && b.px[3] == 255 && b.px[7] == 255 && b.px[4] == 10);
    lk_image_free(&b);
    free(buf);
    lk_image_free(&a);
}

/* ---- EXIF parser ---- */
static void test_exif(void) {
    uint8_t b[128];
    for (int le = 0; le <= 1; le++)
        for (int k = 0; k <= 9; k++) {
            size_t n = make_exif(b, le, 3, 1, k);
            int want = k >= 1 && k <= 8 ? k : 0;
            CHECK(lk_exif_orientation(b, n) == want);
            CHECK(lk_exif_orientation(b + 6, n - 6) == want); /* without the "Exif\0\0" prefix */
            /* every truncation: 0 unless the orientation entry is complete */
            int bad = 0;
            for (size_t m = 0; m < n; m++) {
                int o = lk_exif_orientation(b, m);
                /* prefix 6 + header 8 + count 2 + entry 12 + orientation entry 12 */
                if (m < 6 + 8 + 2 + 24 ? o != 0 : o != want) bad++;
            }
            CHECK(bad == 0);
        }
    size_t n = make_exif(b, true, 4, 1, 6); /* LONG, not SHORT */
    CHECK(lk_exif_orientation(b, n) == 0);
    n = make_exif(b, false, 3, 2, 6); /* count 2 */
    CHECK(lk_exif_orientation(b, n) == 0);
    n = make_exif(b, true, 3, 1, 6);
    b[6 + 4] = 0xf0; /* IFD offset past the end */
    CHECK(lk_exif_orientation(b, n) == 0);
    n = make_exif(b, true, 3, 1, 6);
    b[6 + 4] = 4; /* IFD offset inside the header */
    CHECK(lk_exif_orientation(b, n) == 0);
    n = make_exif(b, true, 3, 1, 6);
    b[6 + 8] = 0xff; b[6 + 9] = 0xff; /* 65535 entries */
    CHECK(lk_exif_orientation(b, n) == 0);
    n = make_exif(b, true, 3, 1, 6);
    b[6 + 1] = 'M'; /* "IM" */
    CHECK(lk_exif_orientation(b, n) == 0);
    n = make_exif(b, true, 3, 1, 6);
    b[6 + 2] = 43;
    CHECK(lk_exif_orientation(b, n) == 0);
    CHECK(lk_exif_orientation(NULL, 100) == 0);
    lk_image img;
    REQ(lk_image_alloc(&img, 2, 3, 3) == LK_OK);
    CHECK(lk_image_orient(&img, 9) == LK_ERR_INVALID);
    CHECK(lk_image_orient(&img, 1) == LK_OK && img.w == 2);
    CHECK(lk_image_orient(&img, 6) == LK_OK && img.w == 3 && img.h == 2);
    lk_image_free(&img);
}

/* ---- JPEG: quality, EXIF orientation, gray, CMYK/YCCK, progressive ---- */
static const uint8_t QUAD[4][3] = {{220, 30, 40}, {30, 200, 60}, {40, 50, 210}, {240, 240, 240}};

/* w x h with four flat quadrants TL, TR, BL, BR */
static void quad_image(uint8_t *px, int w, int h) {
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            memcpy(px + ((size_t)y * w + x) * 3, QUAD[(y >= h / 2) * 2 + (x >= w / 2)], 3);
}

static int nearest_quad(const uint8_t *p) {
    int best = 0, bd = 1 << 30;
    for (int q = 0; q < 4; q++) {
        int d = 0;
        for (int k = 0; k < 3; k++) d += (p[k] - QUAD[q][k]) * (p[k] - QUAD[q][k]);
        if (d < bd) { bd = d; best = q; }
    }
    return best;
}

static void test_jpeg(void) {
    enum { W = 32, H = 16 };
    uint8_t px[W * H * 3];
    quad_image(px, W, H);
    jpeg_spec js = {.px = px, .w = W, .h = H, .comps = 3, .in_cs = JCS_RGB, .jpeg_cs = JCS_UNKNOWN,
                    .quality = 95, .full_chroma = true, .adobe = -1};
    size_t n;
    uint8_t *buf = make_jpeg(&js, &n);
    corpus_dump("quad.jpg", buf, n);
    lk_image base;
    CHECK_OK(lk_image_decode(&base, buf, n, "quad.jpg", NULL));
    REQ(base.px && base.w == W && base.h == H && base.c == 3);
    cmp_u8("jpeg q95 444 flat quadrants", base.px, px, sizeof px, 4);
    free(buf);

    /* displayed corners [TL, TR, BL, BR] in terms of stored quadrants, from the EXIF 2.32
     * wording of each orientation (e.g. 6: "0th row = visual right side, 0th column = top") */
    static const int corners[9][4] = {{0}, {0, 1, 2, 3}, {1, 0, 3, 2}, {3, 2, 1, 0}, {2, 3, 0, 1},
                                      {0, 2, 1, 3}, {2, 0, 3, 1}, {3, 1, 2, 0}, {1, 3, 0, 2}};
    for (int le = 0; le <= 1; le++)
        for (int o = 1; o <= 8; o++) {
            uint8_t ex[64];
            js.app1 = ex;
            js.app1_len = make_exif(ex, le, 3, 1, o);
            buf = make_jpeg(&js, &n);
            char name[32];
            snprintf(name, sizeof name, "orient%d%s.jpg", o, le ? "le" : "be");
            corpus_dump(name, buf, n);
            lk_image img, raw;
            lk_image_load_opts ign = {.ignore_orientation = true};
            CHECK_OK(lk_image_decode(&img, buf, n, name, NULL));
            CHECK_OK(lk_image_decode(&raw, buf, n, name, &ign));
            const bool swap = o >= 5;
            const int ow = swap ? H : W, oh = swap ? W : H;
            int pw = 0, ph = 0;
            CHECK_OK(lk_image_probe(buf, n, name, NULL, NULL, &pw, &ph));
            CHECK(pw == ow && ph == oh);
            CHECK_OK(lk_image_probe(buf, n, name, &ign, NULL, &pw, &ph));
            CHECK(pw == W && ph == H);
            if (img.px && img.w == ow && img.h == oh && raw.px) {
                const int cx[4] = {1, ow - 2, 1, ow - 2}, cy[4] = {1, 1, oh - 2, oh - 2};
                int bad = 0;
                for (int q = 0; q < 4; q++)
                    if (nearest_quad(img.px + ((size_t)cy[q] * ow + cx[q]) * 3) != corners[o][q]) bad++;
                CHECK(bad == 0);
                if (bad) fprintf(stderr, "  orientation %d: corners wrong\n", o);
                CHECK(raw.w == W && raw.h == H && memcmp(raw.px, base.px, sizeof px) == 0);
                CHECK_OK(lk_image_orient(&raw, o));
                CHECK(raw.w == ow && memcmp(raw.px, img.px, sizeof px) == 0);
            } else {
                CHECK(0);
            }
            lk_image_free(&img);
            lk_image_free(&raw);
            free(buf);
        }
    /* malformed EXIF is ignored, not an error */
    {
        uint8_t ex[64];
        js.app1 = ex;
        js.app1_len = make_exif(ex, true, 3, 2, 6);
        buf = make_jpeg(&js, &n);
        lk_image img;
        CHECK_OK(lk_image_decode(&img, buf, n, "badexif.jpg", NULL));
        CHECK(img.w == W && img.h == H);
        lk_image_free(&img);
        free(buf);
        js.app1 = NULL;
    }
    /* progressive */
    js.progressive = true;
    js.quality = 90;
    buf = make_jpeg(&js, &n);
    corpus_dump("progressive.jpg", buf, n);
    lk_image img;
    CHECK_OK(lk_image_decode(&img, buf, n, "prog.jpg", NULL));
    if (img.px) cmp_u8("jpeg progressive q90", img.px, px, sizeof px, 8);
    lk_image_free(&img);
    free(buf);
    js.progressive = false;

    /* gray */
    uint8_t gray[W * H];
    for (int i = 0; i < W * H; i++) gray[i] = px[3 * i + 1];
    jpeg_spec jg = {.px = gray, .w = W, .h = H, .comps = 1, .in_cs = JCS_GRAYSCALE,
                    .jpeg_cs = JCS_UNKNOWN, .quality = 95, .adobe = -1};
    buf = make_jpeg(&jg, &n);
    corpus_dump("gray.jpg", buf, n);
    CHECK_OK(lk_image_decode(&img, buf, n, "gray.jpg", NULL));
    if (img.px && img.c == 3) {
        uint8_t g3[W * H * 3];
        int same = 1;
        for (int i = 0; i < W * H; i++) {
            g3[3 * i] = g3[3 * i + 1] = g3[3 * i + 2] = gray[i];
            same &= img.px[3 * i] == img.px[3 * i + 1] && img.px[3 * i] == img.px[3 * i + 2];
        }
        CHECK(same);
        cmp_u8("jpeg gray -> rgb", img.px, g3, sizeof g3, 3);
    }
    lk_image_free(&img);
    free(buf);

    /* CMYK: ink values per quadrant; Adobe files store 255 - ink */
    static const uint8_t INK[4][4] = {{0, 200, 180, 20}, {190, 10, 200, 30}, {180, 160, 0, 40}, {5, 5, 5, 0}};
    uint8_t cmyk_inv[W * H * 4], cmyk_raw[W * H * 4], want[W * H * 3];
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) {
            const uint8_t *ink = INK[(y >= H / 2) * 2 + (x >= W / 2)];
            size_t i = (size_t)y * W + x;
            for (int k = 0; k < 4; k++) {
                cmyk_raw[4 * i + k] = ink[k];
                cmyk_inv[4 * i + k] = (uint8_t)(255 - ink[k]);
            }
            for (int k = 0; k < 3; k++)
                want[3 * i + k] = (uint8_t)(((255 - ink[k]) * (255 - ink[3]) + 127) / 255);
        }
    const struct { const char *name; const uint8_t *src; J_COLOR_SPACE cs; int adobe; } cm[3] = {
        {"cmyk_adobe.jpg", cmyk_inv, JCS_CMYK, -1}, {"ycck_adobe.jpg", cmyk_inv, JCS_YCCK, -1},
        {"cmyk_plain.jpg", cmyk_raw, JCS_CMYK, 0}};
    for (int i = 0; i < 3; i++) {
        jpeg_spec jc = {.px = cm[i].src, .w = W, .h = H, .comps = 4, .in_cs = JCS_CMYK,
                        .jpeg_cs = cm[i].cs, .quality = 100, .full_chroma = true, .adobe = cm[i].adobe};
        buf = make_jpeg(&jc, &n);
        corpus_dump(cm[i].name, buf, n);
        CHECK_OK(lk_image_decode(&img, buf, n, cm[i].name, NULL));
        if (img.px && img.c == 3 && img.w == W) cmp_u8(cm[i].name, img.px, want, sizeof want, 3);
        else CHECK(0);
        lk_image_free(&img);
        free(buf);
    }

    /* 1x1 */
    js = (jpeg_spec){.px = QUAD[1], .w = 1, .h = 1, .comps = 3, .in_cs = JCS_RGB, .jpeg_cs = JCS_UNKNOWN,
                     .quality = 100, .full_chroma = true, .adobe = -1};
    buf = make_jpeg(&js, &n);
    CHECK_OK(dec(&img, buf, n, "one.jpg", 4));
    CHECK(img.w == 1 && img.h == 1 && img.c == 4 && img.px && img.px[3] == 255 &&
          abs(img.px[1] - QUAD[1][1]) <= 3);
    lk_image_free(&img);
    free(buf);
    lk_image_free(&base);
}

/* ---- WebP ---- */
static void test_webp(void) {
    enum { W = 23, H = 17 };
    uint8_t rgba[W * H * 4], rgb[W * H * 3];
    fill_random(rgba, sizeof rgba);
    /* no fully transparent pixel: the lossless encoder (not in exact mode) may zero their RGB */
    for (int i = 0; i < W * H; i++) rgba[4 * i + 3] |= 1;
    for (int i = 0; i < W * H; i++) memcpy(rgb + 3 * i, rgba + 4 * i, 3);
    uint8_t *out = NULL;
    size_t n = WebPEncodeLosslessRGBA(rgba, W, H, W * 4, &out);
    REQ(n > 0);
    corpus_dump("lossless_rgba.webp", out, n);
    lk_image img;
    CHECK_OK(lk_image_decode(&img, out, n, "ll.webp", NULL));
    CHECK(img.c == 4 && img.w == W && img.h == H);
    if (img.px && img.c == 4) cmp_u8("webp lossless rgba", img.px, rgba, sizeof rgba, 0);
    lk_image_free(&img);
    CHECK_OK(dec(&img, out, n, "ll.webp", 3)); /* composited over white */
    if (img.px) {
        int a = rgba[3];
        CHECK(img.c == 3 && img.px[0] == (a * rgba[0] + (255 - a) * 255 + 127) / 255);
    }
    lk_image_free(&img);
    WebPFree(out);
    n = WebPEncodeLosslessRGB(rgb, W, H, W * 3, &out);
    corpus_dump("lossless_rgb.webp", out, n);
    CHECK_OK(lk_image_decode(&img, out, n, "llrgb.webp", NULL));
    CHECK(img.c == 3);
    if (img.px && img.c == 3) cmp_u8("webp lossless rgb", img.px, rgb, sizeof rgb, 0);
    lk_image_free(&img);
    WebPFree(out);
    /* lossy on a smooth picture; lossy + alpha (alpha plane is lossless by default) */
    uint8_t sm[W * H * 4];
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) {
            uint8_t *p = sm + ((size_t)y * W + x) * 4;
            p[0] = (uint8_t)(60 + 6 * x); p[1] = (uint8_t)(50 + 8 * y); p[2] = 128; p[3] = (uint8_t)(10 * x);
        }
    n = WebPEncodeRGBA(sm, W, H, W * 4, 95.0f, &out);
    corpus_dump("lossy_alpha.webp", out, n);
    CHECK_OK(lk_image_decode(&img, out, n, "lossy.webp", NULL));
    CHECK(img.c == 4);
    if (img.px && img.c == 4) {
        uint8_t a1[W * H], a2[W * H];
        for (int i = 0; i < W * H; i++) { a1[i] = img.px[4 * i + 3]; a2[i] = sm[4 * i + 3]; }
        cmp_u8("webp lossy: alpha plane", a1, a2, sizeof a1, 0);
        /* colour only where opaque enough to matter */
        int mx = 0;
        for (int i = 0; i < W * H; i++)
            if (sm[4 * i + 3] >= 128)
                for (int k = 0; k < 3; k++) mx = abs(img.px[4 * i + k] - sm[4 * i + k]) > mx ? abs(img.px[4 * i + k] - sm[4 * i + k]) : mx;
        printf("ok   webp lossy q95 colour: max_abs=%d\n", mx);
        CHECK(mx <= 12);
    }
    lk_image_free(&img);
    WebPFree(out);
    /* 1x1 */
    n = WebPEncodeLosslessRGB(QUAD[2], 1, 1, 3, &out);
    CHECK_OK(lk_image_decode(&img, out, n, "one.webp", NULL));
    CHECK(img.w == 1 && img.h == 1 && img.px && memcmp(img.px, QUAD[2], 3) == 0);
    lk_image_free(&img);
    lk_image_load_opts small = {.max_pixels = 100};
    CHECK_OK(lk_image_decode(&img, out, n, "one.webp", &small));
    lk_image_free(&img);
    WebPFree(out);
}

/* ---- truncated, corrupt and oversized files ---- */

/* Every strict prefix must be refused with LK_ERR_FORMAT naming the file; every single-byte
 * corruption must decode or be refused cleanly (ASan/UBSan watch). */
static void sweep(const char *name, const uint8_t *buf, size_t n) {
    int bad = 0, trunc_msgs = 0;
    for (size_t m = 0; m < n; m++) {
        uint8_t *p = malloc(m ? m : 1); /* exact size: ASan sees overreads */
        memcpy(p, buf, m);
        lk_image img;
        lk_status s = lk_image_decode(&img, p, m, name, NULL);
        const char *msg = lk_last_error();
        if (s != LK_ERR_FORMAT || strncmp(msg, name, strlen(name)) != 0 || img.px) {
            if (bad++ < 3)
                fprintf(stderr, "  %s prefix %zu/%zu: %s: %s\n", name, m, n, lk_status_str(s), msg);
        }
        if (strstr(msg, "truncated")) trunc_msgs++;
        lk_image_free(&img);
        free(p);
    }
    lk_t_checks++;
    if (bad) lk_t_failures++;
    printf("%s %s: %zu prefixes refused (%d say 'truncated'), %d wrong\n", bad ? "FAIL" : "ok  ", name, n,
           trunc_msgs, bad);
    CHECK(trunc_msgs > (int)n / 2);
    uint8_t *p = malloc(n);
    int ok = 0, refused = 0;
    for (size_t i = 0; i < n; i++) {
        memcpy(p, buf, n);
        p[i] ^= (uint8_t)(1u << (i % 8)) | 0x40;
        lk_image img;
        lk_status s = lk_image_decode(&img, p, n, name, NULL);
        if (s == LK_OK) {
            ok++;
            CHECK(img.px && img.w >= 1 && img.h >= 1 && (img.c == 3 || img.c == 4));
        } else {
            refused++;
            CHECK(img.px == NULL);
        }
        lk_image_free(&img);
    }
    printf("     %s: byte flips: %d decoded, %d refused\n", name, ok, refused);
    free(p);
}

static uint8_t *find_marker(uint8_t *p, size_t n, uint8_t m) {
    for (size_t i = 2; i + 1 < n; i++)
        if (p[i] == 0xff && p[i + 1] == m) return p + i;
    return NULL;
}

static void test_malformed(void) {
    enum { W = 29, H = 19 };
    uint8_t px[W * H * 3];
    quad_image(px, W, H);
    for (int i = 0; i < W * H * 3; i += 7) px[i] = (uint8_t)rnd();
    /* PNG (plain and interlaced) */
    lk_image im = {.w = W, .h = H, .c = 3, .px = px};
    lk_image_text t = {(char *)(uintptr_t)"parameters", (char *)(uintptr_t)"steps 20"};
    lk_png_write_opts o = {.level = 9, .text = &t, .n_text = 1};
    uint8_t *buf;
    size_t n;
    REQ(lk_image_encode_png(&im, &o, &buf, &n) == LK_OK);
    sweep("sweep.png", buf, n);
    /* CRC error in IHDR; IDAT data changed (CRC error); IEND missing */
    lk_image img;
    buf[16] ^= 1;
    expect_fail(lk_image_decode(&img, buf, n, "crc.png", NULL), LK_ERR_FORMAT, "crc.png", "png IHDR crc");
    buf[16] ^= 1;
    expect_fail(lk_image_decode(&img, buf, n - 12, "noend.png", NULL), LK_ERR_FORMAT, "noend.png", "png no IEND");
    CHECK(strstr(lk_last_error(), "truncated") != NULL);
    free(buf);
    {
        png_spec sp = {.w = W, .h = H, .ctype = PNG_COLOR_TYPE_RGB, .depth = 8,
                       .interlace = PNG_INTERLACE_ADAM7, .raw = px};
        buf = make_png(&sp, &n);
        sweep("sweep_adam7.png", buf, n);
        free(buf);
    }
    /* JPEG baseline (with EXIF) and progressive */
    uint8_t ex[64];
    jpeg_spec js = {.px = px, .w = W, .h = H, .comps = 3, .in_cs = JCS_RGB, .jpeg_cs = JCS_UNKNOWN,
                    .quality = 80, .adobe = -1, .app1 = ex, .app1_len = make_exif(ex, true, 3, 1, 6)};
    buf = make_jpeg(&js, &n);
    sweep("sweep.jpg", buf, n);
    /* an EOI in the middle of the scan; SOF height 0; a huge SOF size */
    uint8_t *cp = malloc(n);
    memcpy(cp, buf, n);
    uint8_t *sos = find_marker(cp, n, 0xda);
    REQ(sos && sos + 40 < cp + n);
    sos[30] = 0xff;
    sos[31] = 0xd9;
    expect_fail(lk_image_decode(&img, cp, n, "eoi.jpg", NULL), LK_ERR_FORMAT, "eoi.jpg", "jpeg EOI mid-scan");
    memcpy(cp, buf, n);
    uint8_t *sof = find_marker(cp, n, 0xc0);
    REQ(sof);
    sof[5] = 0;
    sof[6] = 0;
    expect_fail(lk_image_decode(&img, cp, n, "h0.jpg", NULL), LK_ERR_FORMAT, "h0.jpg", "jpeg height 0");
    sof[5] = 0xea; sof[6] = 0x60; sof[7] = 0xea; sof[8] = 0x60; /* 60000 x 60000 */
    expect_fail(lk_image_decode(&img, cp, n, "huge.jpg", NULL), LK_ERR_UNSUPPORTED, "huge.jpg", "jpeg 60000^2");
    expect_fail(lk_image_probe(cp, n, "huge.jpg", NULL, NULL, NULL, NULL), LK_ERR_UNSUPPORTED, "huge.jpg",
                "probe jpeg 60000^2");
    sof[5] = 0x3e; sof[6] = 0x80; sof[7] = 0x3e; sof[8] = 0x80; /* 16000 x 16000: over the pixel cap */
    expect_fail(lk_image_decode(&img, cp, n, "big.jpg", NULL), LK_ERR_UNSUPPORTED, "big.jpg", "jpeg 16000^2");
    free(cp);
    free(buf);
    js.progressive = true;
    js.app1 = NULL;
    buf = make_jpeg(&js, &n);
    sweep("sweep_prog.jpg", buf, n);
    free(buf);
    /* WebP lossy, lossless */
    n = WebPEncodeRGB(px, W, H, W * 3, 80.0f, &buf);
    sweep("sweep_lossy.webp", buf, n);
    lk_image_load_opts cap = {.max_pixels = W * H - 1};
    expect_fail(lk_image_decode(&img, buf, n, "cap.webp", &cap), LK_ERR_UNSUPPORTED, "cap.webp", "webp cap");
    cp = malloc(n);
    memcpy(cp, buf, n);
    cp[4] = (uint8_t)(cp[4] + 8); /* RIFF size beyond the data */
    expect_fail(lk_image_decode(&img, cp, n, "riff.webp", NULL), LK_ERR_FORMAT, "riff.webp", "webp riff size");
    free(cp);
    WebPFree(buf);
    n = WebPEncodeLosslessRGB(px, W, H, W * 3, &buf);
    sweep("sweep_lossless.webp", buf, n);
    WebPFree(buf);

    /* declared sizes (PNG headers made by hand) */
    uint8_t hb[64];
    n = make_png_header(hb, 20000, 10);
    expect_fail(lk_image_decode(&img, hb, n, "wide.png", NULL), LK_ERR_UNSUPPORTED, "wide.png", "png 20000 wide");
    CHECK(strstr(lk_last_error(), "20000x10") != NULL);
    n = make_png_header(hb, 12000, 12000);
    expect_fail(lk_image_decode(&img, hb, n, "big.png", NULL), LK_ERR_UNSUPPORTED, "big.png", "png 12000^2");
    n = make_png_header(hb, 0x7fffffff, 0x7fffffff);
    expect_fail(lk_image_decode(&img, hb, n, "max.png", NULL), LK_ERR_UNSUPPORTED, "max.png", "png 2^31-1");
    n = make_png_header(hb, 0, 10);
    expect_fail(lk_image_decode(&img, hb, n, "w0.png", NULL), LK_ERR_FORMAT, "w0.png", "png width 0");
    n = make_png_header(hb, 11, 10);
    lk_image_load_opts small = {.max_pixels = 100};
    expect_fail(lk_image_decode(&img, hb, n, "cap.png", &small), LK_ERR_UNSUPPORTED, "cap.png", "png pixel cap");
    /* the header is valid but the pixel data is not there */
    expect_fail(lk_image_decode(&img, hb, n, "nodata.png", NULL), LK_ERR_FORMAT, "nodata.png", "png no data");
    lk_image_format f;
    int pw, ph;
    CHECK_OK(lk_image_probe(hb, n, "nodata.png", NULL, &f, &pw, &ph));
    CHECK(f == LK_IMAGE_PNG && pw == 11 && ph == 10);
}

/* ---- files written and decoded by PIL (tests/ref/image.py) ---- */
static void test_pil_files(const lk_safetensors *st) {
    static const struct { const char *name; int tol; } F[] = {
        {"jpeg.rgb", 0}, {"jpeg.prog", 0}, {"jpeg.q100_444", 0}, {"jpeg.gray", 0}, {"jpeg.cmyk", 1},
        {"jpeg.o1", 0}, {"jpeg.o2", 0}, {"jpeg.o3", 0}, {"jpeg.o4", 0}, {"jpeg.o5", 0}, {"jpeg.o6", 0},
        {"jpeg.o7", 0}, {"jpeg.o8", 0}, {"png.pal_trns", 0}, {"png.la", 0}, {"png.bw", 0}, {"png.text", 0},
        {"webp.lossy_alpha", 0}, {"webp.lossless", 0}, {"webp.lossy", 0}};
    for (size_t i = 0; i < sizeof F / sizeof *F; i++) {
        char k1[64], k2[64];
        snprintf(k1, sizeof k1, "%s.file", F[i].name);
        snprintf(k2, sizeof k2, "%s.px", F[i].name);
        const lk_st_tensor *tf = lk_safetensors_find(st, k1), *tp = lk_safetensors_find(st, k2);
        CHECK(tf && tp && tp->ndim == 3);
        if (!tf || !tp || tp->ndim != 3) continue;
        corpus_dump(k1, tf->data, tf->nbytes);
        lk_image_texts tx = {0};
        lk_image_load_opts o = {.channels = (int)tp->shape[2], .text = &tx};
        lk_image img;
        CHECK_OK(lk_image_decode(&img, tf->data, tf->nbytes, k1, &o));
        if (img.px && img.h == tp->shape[0] && img.w == tp->shape[1])
            cmp_u8(F[i].name, img.px, tp->data, tp->nbytes, F[i].tol);
        else
            CHECK(0);
        if (strcmp(F[i].name, "png.text") == 0) {
            static const char *keys[] = {"parameters", "Comment", "Title", "Software"};
            CHECK(tx.n == 4);
            for (int k = 0; k < 4; k++) {
                char mk[64];
                snprintf(mk, sizeof mk, "png.text.%s", keys[k]);
                const char *want = lk_safetensors_meta(st, mk), *got = lk_image_texts_get(&tx, keys[k]);
                CHECK(want && got && strcmp(want, got) == 0);
                if (!(want && got && strcmp(want, got) == 0))
                    fprintf(stderr, "  text %s: got '%s' want '%s'\n", keys[k], got ? got : "(none)", want ? want : "(none)");
            }
        } else {
            CHECK(tx.n == 0);
        }
        lk_image_texts_free(&tx);
        lk_image_free(&img);
    }
}

/* ---- resize ---- */
typedef struct rcase { const char *name; int c, h, w, oh, ow; } rcase;

static void resize_vs_ref(const lk_safetensors *st, const char *prefix, const rcase *rc, int n,
                          uint64_t seed0, lk_resize_filter filter, float atol) {
    for (int i = 0; i < n; i++) {
        const rcase *r = &rc[i];
        size_t ni = (size_t)r->c * r->h * r->w, no = (size_t)r->c * r->oh * r->ow;
        float *x = malloc(ni * sizeof *x), *y = malloc(no * sizeof *y);
        lk_t_fill_uniform(x, ni, 0.0f, 255.0f, seed0 + (uint64_t)i);
        char key[64];
        snprintf(key, sizeof key, "%s.%s", prefix, r->name);
        int64_t nw = 0;
        float *want = lk_t_load(st, key, &nw);
        CHECK_OK(lk_resize_chw(x, r->c, r->h, r->w, y, r->oh, r->ow, filter));
        CHECK((size_t)nw == no);
        if (want && (size_t)nw == no) lk_t_close(key, y, want, no, atol, 0.0f);
        free(want);
        free(x);
        free(y);
    }
}

static void test_resize(const lk_safetensors *st) {
    /* must match tests/ref/image.py */
    static const rcase AREA[] = {{"f2", 3, 8, 12, 4, 6}, {"f3", 2, 9, 6, 3, 2}, {"f4x2", 1, 16, 10, 4, 5},
                                 {"f1", 1, 5, 7, 5, 7}, {"sd", 3, 64, 48, 32, 24}};
    static const rcase AREA_FRAC[] = {{"5to3", 2, 5, 10, 3, 4}, {"7to2", 1, 7, 7, 2, 3}, {"up3to5", 1, 3, 3, 5, 5}};
    static const rcase LZ[] = {{"down37x23", 2, 23, 37, 10, 16}, {"down64to24", 1, 64, 64, 24, 24},
                               {"up7x5", 1, 5, 7, 11, 19}, {"to1", 1, 5, 6, 1, 1}, {"from1", 1, 1, 1, 3, 4},
                               {"mixed", 3, 30, 12, 45, 5}, {"same", 1, 6, 9, 6, 9}, {"big", 1, 300, 200, 77, 123}};
    if (st) {
        resize_vs_ref(st, "area", AREA, 5, 5000, LK_RESIZE_AREA, 2e-4f);
        resize_vs_ref(st, "area", AREA, 5, 5000, LK_RESIZE_AUTO, 2e-4f); /* AUTO = area here */
        resize_vs_ref(st, "areafrac", AREA_FRAC, 3, 5100, LK_RESIZE_AREA, 2e-4f);
        resize_vs_ref(st, "lanczos", LZ, 8, 5200, LK_RESIZE_LANCZOS3, 5e-4f);
        /* PIL's Image.LANCZOS on 8-bit RGB. PIL rounds and clamps to 8 bits between its two
         * passes, so values stay in 64..191 (ringing never reaches 0 or 255) and +-1 is allowed */
        static const struct { const char *name; int w, h, ow, oh; } PL[] = {
            {"down", 40, 30, 17, 13}, {"up", 40, 30, 55, 41}, {"odd", 40, 30, 29, 7}};
        for (int i = 0; i < 3; i++) {
            size_t ni = (size_t)PL[i].w * PL[i].h * 3;
            float *f = malloc(ni * sizeof *f);
            lk_t_fill_uniform(f, ni, 64.0f, 192.0f, 5300 + (uint64_t)i);
            lk_image src;
            REQ(lk_image_alloc(&src, PL[i].w, PL[i].h, 3) == LK_OK);
            for (size_t j = 0; j < ni; j++) src.px[j] = (uint8_t)floorf(f[j]);
            lk_image dst;
            CHECK_OK(lk_image_resize(&src, PL[i].ow, PL[i].oh, LK_RESIZE_LANCZOS3, &dst));
            char key[64];
            snprintf(key, sizeof key, "pil_lanczos.%s", PL[i].name);
            const lk_st_tensor *t = lk_safetensors_find(st, key);
            CHECK(t && dst.px && t->nbytes == (size_t)PL[i].ow * PL[i].oh * 3);
            if (t && dst.px && t->nbytes == (size_t)PL[i].ow * PL[i].oh * 3) cmp_u8(key, dst.px, t->data, t->nbytes, 1);
            lk_image_free(&dst);
            lk_image_free(&src);
            free(f);
        }
    }
    /* constants stay constant */
    static const int sizes[][4] = {{37, 23, 16, 10}, {37, 23, 50, 41}, {37, 23, 1, 1}, {1, 1, 5, 3}, {8, 8, 4, 4}, {9, 4, 9, 4}};
    for (int f = 0; f < 3; f++)
        for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
            const int w = sizes[i][0], h = sizes[i][1], ow = sizes[i][2], oh = sizes[i][3];
            float *x = malloc(sizeof *x * (size_t)w * h), *y = malloc(sizeof *y * (size_t)ow * oh);
            float *c = malloc(sizeof *c * (size_t)ow * oh);
            for (int j = 0; j < w * h; j++) x[j] = 77.25f;
            for (int j = 0; j < ow * oh; j++) c[j] = 77.25f;
            CHECK_OK(lk_resize_chw(x, 1, h, w, y, oh, ow, (lk_resize_filter)f));
            char what[64];
            snprintf(what, sizeof what, "constant f%d %dx%d->%dx%d", f, w, h, ow, oh);
            lk_t_close(what, y, c, (size_t)ow * oh, 1e-4f, 0.0f);
            free(x); free(y); free(c);
        }
    /* a linear ramp: area over an integer factor gives the ramp at the output centres exactly;
     * Lanczos-3 reproduces it away from the borders up to the sampled kernel's small first moment
     * (measured: 0.1% of a source step when shrinking, 1.8% when enlarging; allowed 2.5%) */
    {
        enum { W = 60, OW1 = 20, OW2 = 25, OW3 = 150 };
        float x[W], y[OW3], want[OW3];
        for (int i = 0; i < W; i++) x[i] = 10.0f + 2.0f * (float)i;
        CHECK_OK(lk_resize_chw(x, 1, 1, W, y, 1, OW1, LK_RESIZE_AREA));
        for (int i = 0; i < OW1; i++) want[i] = 10.0f + 2.0f * ((float)(i + 0.5) * 3.0f - 0.5f);
        lk_t_close("ramp area /3", y, want, OW1, 1e-4f, 0.0f);
        const int ows[2] = {OW2, OW3};
        for (int k = 0; k < 2; k++) {
            const int ow = ows[k];
            const double s = (double)W / ow, fs = s > 1 ? s : 1;
            CHECK_OK(lk_resize_chw(x, 1, 1, W, y, 1, ow, LK_RESIZE_LANCZOS3));
            int lo = 0, hi = ow;
            while ((lo + 0.5) * s < 3 * fs + 1) lo++;
            while ((hi - 0.5) * s > W - 3 * fs - 1) hi--;
            for (int i = lo; i < hi; i++) want[i] = (float)(10.0 + 2.0 * ((i + 0.5) * s - 0.5));
            char what[64];
            snprintf(what, sizeof what, "ramp lanczos %d->%d interior", W, ow);
            lk_t_close(what, y + lo, want + lo, (size_t)(hi - lo), 0.05f, 0.0f); /* slope 2 */
        }
    }
    /* checkerboards: 1-px cells average to 127.5; 2-px cells shrink to 1-px cells exactly */
    {
        enum { W = 16, H = 12 };
        float x[W * H], y[W * H / 4], y2[W * H / 4], want[W * H / 4], want2[W * H / 4];
        float x2[W * H];
        for (int r = 0; r < H; r++)
            for (int c = 0; c < W; c++) {
                x[r * W + c] = ((r + c) & 1) ? 255.0f : 0.0f;
                x2[r * W + c] = ((r / 2 + c / 2) & 1) ? 255.0f : 0.0f;
            }
        for (int r = 0; r < H / 2; r++)
            for (int c = 0; c < W / 2; c++) {
                want[r * W / 2 + c] = 127.5f;
                want2[r * W / 2 + c] = ((r + c) & 1) ? 255.0f : 0.0f;
            }
        CHECK_OK(lk_resize_chw(x, 1, H, W, y, H / 2, W / 2, LK_RESIZE_AUTO));
        CHECK_OK(lk_resize_chw(x2, 1, H, W, y2, H / 2, W / 2, LK_RESIZE_AUTO));
        lk_t_close("checker 1px /2 (area)", y, want, W * H / 4, 1e-4f, 0.0f);
        lk_t_close("checker 2px /2 (area)", y2, want2, W * H / 4, 1e-4f, 0.0f);
    }
    /* lk_image_resize: the 8-bit path rounds the float path; AUTO picks area / Lanczos */
    {
        lk_image a;
        REQ(lk_image_alloc(&a, 30, 20, 4) == LK_OK);
        fill_random(a.px, 30 * 20 * 4);
        float *planes = malloc(sizeof(float) * 30 * 20 * 4), *out = malloc(sizeof(float) * 20 * 15 * 4);
        for (int k = 0; k < 4; k++)
            for (int i = 0; i < 600; i++) planes[k * 600 + i] = a.px[i * 4 + k];
        const int dims[3][2] = {{15, 10}, {20, 13}, {45, 31}};
        const lk_resize_filter fl[3] = {LK_RESIZE_AREA, LK_RESIZE_LANCZOS3, LK_RESIZE_LANCZOS3};
        for (int t = 0; t < 3; t++) {
            const int ow = dims[t][0], oh = dims[t][1];
            lk_image b, c;
            CHECK_OK(lk_image_resize(&a, ow, oh, LK_RESIZE_AUTO, &b));
            CHECK_OK(lk_image_resize(&a, ow, oh, fl[t], &c));
            CHECK(b.px && c.px && memcmp(b.px, c.px, (size_t)ow * oh * 4) == 0);
            out = realloc(out, sizeof(float) * (size_t)ow * oh * 4);
            CHECK_OK(lk_resize_chw(planes, 4, 20, 30, out, oh, ow, fl[t]));
            int bad = 0;
            for (int k = 0; k < 4; k++)
                for (int i = 0; i < ow * oh; i++) {
                    float v = out[k * ow * oh + i];
                    uint8_t e = v <= 0 ? 0 : v >= 255 ? 255 : (uint8_t)(v + 0.5f);
                    bad += b.px && b.px[i * 4 + k] != e;
                }
            CHECK(bad == 0);
            lk_image_free(&b);
            lk_image_free(&c);
        }
        free(planes);
        free(out);
        lk_image d;
        CHECK(lk_image_resize(&a, 0, 5, LK_RESIZE_AUTO, &d) == LK_ERR_INVALID);
        CHECK(lk_image_resize(&a, LK_IMAGE_MAX_DIM + 1, 5, LK_RESIZE_AUTO, &d) == LK_ERR_INVALID);
        CHECK(lk_image_resize(&a, 5, 5, (lk_resize_filter)7, &d) == LK_ERR_INVALID);
        /* 1x1 -> 3x2 */
        lk_image one, big;
        REQ(lk_image_alloc(&one, 1, 1, 3) == LK_OK);
        memcpy(one.px, QUAD[0], 3);
        CHECK_OK(lk_image_resize(&one, 3, 2, LK_RESIZE_AUTO, &big));
        int same = big.px != NULL;
        for (int i = 0; big.px && i < 6; i++) same &= memcmp(big.px + 3 * i, QUAD[0], 3) == 0;
        CHECK(same);
        lk_image_free(&big);
        lk_image_free(&one);
        lk_image_free(&a);
    }
}

/* ---- crop, flip ---- */
static void test_crop_flip(void) {
    lk_image a, b;
    REQ(lk_image_alloc(&a, 9, 7, 3) == LK_OK);
    for (int y = 0; y < 7; y++)
        for (int x = 0; x < 9; x++)
            for (int k = 0; k < 3; k++) a.px[(y * 9 + x) * 3 + k] = (uint8_t)(x + 16 * y + 100 * k);
    CHECK_OK(lk_image_crop(&a, 3, 2, 5, 4, &b));
    int bad = !(b.w == 5 && b.h == 4 && b.c == 3);
    for (int y = 0; !bad && y < 4; y++)
        for (int x = 0; x < 5; x++)
            for (int k = 0; k < 3; k++) bad += b.px[(y * 5 + x) * 3 + k] != (uint8_t)(x + 3 + 16 * (y + 2) + 100 * k);
    CHECK(bad == 0);
    lk_image_free(&b);
    CHECK_OK(lk_image_crop(&a, 0, 0, 9, 7, &b));
    CHECK(b.px && memcmp(b.px, a.px, 9 * 7 * 3) == 0);
    lk_image_free(&b);
    CHECK(lk_image_crop(&a, 5, 0, 5, 7, &b) == LK_ERR_INVALID);
    CHECK(lk_image_crop(&a, -1, 0, 2, 2, &b) == LK_ERR_INVALID);
    CHECK(lk_image_crop(&a, 0, 0, 0, 2, &b) == LK_ERR_INVALID);
    CHECK(lk_image_crop(&a, 0, 6, 1, 2, &b) == LK_ERR_INVALID);
    CHECK_OK(lk_image_copy(&b, &a));
    lk_image_flip_h(&b);
    bad = 0;
    for (int y = 0; y < 7; y++)
        for (int x = 0; x < 9; x++)
            for (int k = 0; k < 3; k++) bad += b.px[(y * 9 + x) * 3 + k] != a.px[(y * 9 + 8 - x) * 3 + k];
    CHECK(bad == 0);
    lk_image_flip_h(&b);
    CHECK(memcmp(b.px, a.px, 9 * 7 * 3) == 0);
    lk_image_free(&b);
    lk_image_free(&a);
}

/* ---- float conversion ---- */
static void test_chw(void) {
    lk_image a, b;
    REQ(lk_image_alloc(&a, 256, 2, 4) == LK_OK);
    for (int i = 0; i < 512; i++)
        for (int k = 0; k < 4; k++) a.px[i * 4 + k] = (uint8_t)(i * (k + 1) + k);
    float *f = malloc(sizeof(float) * 512 * 4);
    for (int r = 0; r < 2; r++) {
        lk_image_range range = r ? LK_RANGE_SYMMETRIC : LK_RANGE_UNIT;
        CHECK_OK(lk_image_to_chw(&a, range, f));
        CHECK(f[0] == (r ? -1.0f : 0.0f));
        CHECK(fabsf(f[512 + 1] - (r ? 3.0f / 127.5f - 1.0f : 3.0f / 255.0f)) < 1e-7f); /* plane 1, pixel 1 */
        CHECK_OK(lk_image_from_chw(&b, f, 4, 2, 256, range));
        CHECK(b.px && memcmp(b.px, a.px, 512 * 4) == 0);
        lk_image_free(&b);
    }
    const float v[6] = {0.0f, -1.0f, 1.0f, 2.0f, NAN, -3.0f};
    const uint8_t want[6] = {128, 0, 255, 255, 0, 0}; /* 127.5 rounds half to even: 128 */
    float planes[18];
    for (int k = 0; k < 3; k++) memcpy(planes + 6 * k, v, sizeof v);
    CHECK_OK(lk_image_from_chw(&b, planes, 3, 1, 6, LK_RANGE_SYMMETRIC));
    for (int i = 0; i < 6; i++) CHECK(b.px && b.px[3 * i] == want[i] && b.px[3 * i + 2] == want[i]);
    lk_image_free(&b);
    CHECK(lk_image_from_chw(&b, planes, 2, 1, 6, LK_RANGE_UNIT) == LK_ERR_INVALID);
    free(f);
    lk_image_free(&a);
}

/* ---- the trainer's resize -> crop -> flip ---- */

/* Reference: resize the whole image (lk_resize_chw, checked above against the dense reference),
 * crop at (x0, y0), mirror, clamp, normalise. */
static void prepare_ref(const lk_image *img, int nw, int nh, int x0, int y0, int tw, int th, bool flip,
                        float *out) {
    const int w = img->w, h = img->h;
    float *pl = malloc(sizeof(float) * (size_t)w * h * 3), *rz = malloc(sizeof(float) * (size_t)nw * nh * 3);
    for (int k = 0; k < 3; k++)
        for (int i = 0; i < w * h; i++) pl[(size_t)k * w * h + i] = img->px[(size_t)i * img->c + k];
    lk_resize_chw(pl, 3, h, w, rz, nh, nw, LK_RESIZE_AUTO);
    for (int k = 0; k < 3; k++)
        for (int y = 0; y < th; y++)
            for (int x = 0; x < tw; x++) {
                int sx = x0 + (flip ? tw - 1 - x : x);
                float v = rz[((size_t)k * nh + y0 + y) * nw + sx];
                v = v < 0 ? 0 : v > 255 ? 255 : v;
                out[((size_t)k * th + y) * tw + x] = v / 127.5f - 1.0f;
            }
    free(pl);
    free(rz);
}

static void test_prepare(const lk_safetensors *st) {
    lk_image a;
    REQ(lk_image_alloc(&a, 40, 30, 3) == LK_OK);
    fill_random(a.px, 40 * 30 * 3);
    float out[3 * 24 * 24], ref[3 * 24 * 24];
    /* center: 40x30 -> 21x16 (floor(16*40/30)), left = round(5/2) = 2 (half to even) */
    CHECK_OK(lk_image_prepare(&a, 16, LK_CROP_CENTER, LK_FLIP_NONE, NULL, out));
    prepare_ref(&a, 21, 16, 2, 0, 16, 16, false, ref);
    lk_t_close("prepare center 40x30 -> 16", out, ref, 3 * 16 * 16, 1e-5f, 0.0f);
    CHECK_OK(lk_image_prepare(&a, 16, LK_CROP_CENTER, LK_FLIP_ALWAYS, NULL, out));
    prepare_ref(&a, 21, 16, 2, 0, 16, 16, true, ref);
    lk_t_close("prepare center + flip", out, ref, 3 * 16 * 16, 1e-5f, 0.0f);
    /* center, offset round(7/2) = 4 (half to even): 40x30 -> size 23: 30 -> 23, 40 -> 30 */
    CHECK_OK(lk_image_prepare(&a, 23, LK_CROP_CENTER, LK_FLIP_NONE, NULL, out));
    prepare_ref(&a, 30, 23, 4, 0, 23, 23, false, ref);
    lk_t_close("prepare center 40x30 -> 23", out, ref, 3 * 23 * 23, 1e-5f, 0.0f);
    /* bucket 24x16 from a portrait 30x40: width covers, 24x32, top = 8 */
    lk_image p;
    REQ(lk_image_alloc(&p, 30, 40, 3) == LK_OK);
    fill_random(p.px, 30 * 40 * 3);
    CHECK_OK(lk_image_prepare_rect(&p, 24, 16, LK_CROP_CENTER, LK_FLIP_NONE, NULL, out));
    prepare_ref(&p, 24, 32, 0, 8, 24, 16, false, ref);
    lk_t_close("prepare_rect 30x40 -> 24x16", out, ref, 3 * 24 * 16, 1e-5f, 0.0f);
    lk_image_free(&p);
    /* RGBA input is composited over white first */
    lk_image rgba, comp;
    REQ(lk_image_alloc(&rgba, 20, 20, 4) == LK_OK);
    fill_random(rgba.px, 20 * 20 * 4);
    CHECK_OK(lk_image_copy(&comp, &rgba));
    CHECK_OK(lk_image_set_channels(&comp, 3, NULL));
    CHECK_OK(lk_image_prepare(&rgba, 10, LK_CROP_CENTER, LK_FLIP_NONE, NULL, out));
    CHECK_OK(lk_image_prepare(&comp, 10, LK_CROP_CENTER, LK_FLIP_NONE, NULL, ref));
    lk_t_close("prepare rgba == composited rgb", out, ref, 300, 0.0f, 0.0f);
    lk_image_free(&rgba);
    lk_image_free(&comp);
    /* no resize needed: exact pixels */
    lk_image s;
    REQ(lk_image_alloc(&s, 12, 12, 3) == LK_OK);
    fill_random(s.px, 12 * 12 * 3);
    CHECK_OK(lk_image_prepare(&s, 12, LK_CROP_CENTER, LK_FLIP_NONE, NULL, out));
    int bad = 0;
    for (int k = 0; k < 3; k++)
        for (int i = 0; i < 144; i++) bad += out[k * 144 + i] != (float)s.px[i * 3 + k] / 127.5f - 1.0f;
    CHECK(bad == 0);
    lk_image_free(&s);
    CHECK(lk_image_prepare(&a, 16, LK_CROP_RANDOM, LK_FLIP_NONE, NULL, out) == LK_ERR_INVALID);
    CHECK(lk_image_prepare(&a, 0, LK_CROP_CENTER, LK_FLIP_NONE, NULL, out) == LK_ERR_INVALID);
    lk_image_free(&a);

    /* random crop + random flip: torch's draws (torch.manual_seed; randint top, randint left;
     * rand < 0.5) from tests/ref/image.py */
    if (!st) return;
    static const struct { int seed, w, h, nh, nw, t; } D[] = {
        {0, 32, 42, 21, 16, 16}, {1, 80, 32, 16, 40, 16}, {7, 64, 100, 100, 64, 64}, {123, 512, 513, 513, 512, 512}};
    for (int i = 0; i < 4; i++) {
        char key[32];
        snprintf(key, sizeof key, "draws.%d", D[i].seed);
        float *dr = lk_t_load(st, key, NULL);
        if (!dr) continue;
        lk_image img;
        REQ(lk_image_alloc(&img, D[i].w, D[i].h, 3) == LK_OK);
        fill_random(img.px, (size_t)D[i].w * D[i].h * 3);
        const size_t no = (size_t)3 * D[i].t * D[i].t;
        float *o = malloc(no * sizeof *o), *r = malloc(no * sizeof *r);
        lk_rng rng;
        lk_rng_seed(&rng, (uint64_t)D[i].seed);
        CHECK_OK(lk_image_prepare(&img, D[i].t, LK_CROP_RANDOM, LK_FLIP_RANDOM, &rng, o));
        prepare_ref(&img, D[i].nw, D[i].nh, (int)dr[1], (int)dr[0], D[i].t, D[i].t, dr[2] != 0.0f, r);
        char what[96];
        snprintf(what, sizeof what, "prepare random seed %d (top %d left %d flip %d)", D[i].seed, (int)dr[0],
                 (int)dr[1], (int)dr[2]);
        lk_t_close(what, o, r, no, 1e-5f, 0.0f);
        free(o);
        free(r);
        free(dr);
        lk_image_free(&img);
    }
}

int main(void) {
    char tmpdir[] = "/tmp/lk_test_image_XXXXXX";
    if (!mkdtemp(tmpdir)) {
        fprintf(stderr, "FATAL cannot make a temporary directory\n");
        return 1;
    }
    double t0 = lk_t_now();
    test_sniff();
    test_exif();
    test_png_roundtrip(tmpdir);
    test_png_variants();
    test_channels();
    test_jpeg();
    test_webp();
    test_malformed();
    test_crop_flip();
    test_chw();
    lk_safetensors *st = lk_t_ref("image");
    if (st) test_pil_files(st);
    test_resize(st);
    test_prepare(st);
    lk_safetensors_close(st);
    rmdir(tmpdir);
    printf("time %.2fs\n", lk_t_now() - t0);
    return lk_t_done();
}
