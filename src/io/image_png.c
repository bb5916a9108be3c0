/* image_png.c: PNG decoding to 8-bit RGB/RGBA and encoding with tEXt/iTXt chunks, on libpng
 * 1.6 (PNG spec, W3C 2003): errors caught with setjmp and reported as LK_ERR_FORMAT. */
#define _POSIX_C_SOURCE 200809L
#include "image_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <png.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define LK_PNG_MAX_CHUNK (32u << 20)

/* ---- shared error plumbing: libpng calls png_fatal, which longjmps back to the caller ---- */

typedef struct png_errctx {
    jmp_buf jb;
    char msg[256];
} png_errctx;

static void png_fatal(png_structp png, png_const_charp msg) {
    png_errctx *e = png_get_error_ptr(png);
    snprintf(e->msg, sizeof e->msg, "%s", msg ? msg : "error");
    longjmp(e->jb, 1);
}

static void png_warn(png_structp png, png_const_charp msg) {
    (void)png;
    (void)msg; /* benign: CRC of an ancillary chunk, unknown sRGB profile, ... */
}

/* ---- text ---- */

/* Latin-1 bytes -> malloc'd UTF-8 string; NULL on allocation failure. */
static char *latin1_to_utf8(const char *s, size_t n) {
    size_t m = 0;
    for (size_t i = 0; i < n; i++) m += ((unsigned char)s[i] >= 0x80) ? 2 : 1;
    char *o = malloc(m + 1);
    if (!o) return NULL;
    size_t j = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch < 0x80) {
            o[j++] = (char)ch;
        } else {
            o[j++] = (char)(0xc0 | (ch >> 6));
            o[j++] = (char)(0x80 | (ch & 0x3f));
        }
    }
    o[j] = '\0';
    return o;
}

static char *copy_bytes(const char *s, size_t n) {
    char *o = malloc(n + 1);
    if (!o) return NULL;
    if (n) memcpy(o, s, n);
    o[n] = '\0';
    return o;
}

/* Strict UTF-8 validation: no overlong forms, no surrogates, nothing above U+10FFFF. */
static bool utf8_valid(const unsigned char *s) {
    while (*s) {
        unsigned c = *s;
        int n;
        unsigned cp;
        if (c < 0x80) { s++; continue; }
        if (c >= 0xc2 && c <= 0xdf) { n = 1; cp = c & 0x1f; }
        else if (c >= 0xe0 && c <= 0xef) { n = 2; cp = c & 0x0f; }
        else if (c >= 0xf0 && c <= 0xf4) { n = 3; cp = c & 0x07; }
        else return false;
        for (int i = 1; i <= n; i++) {
            if ((s[i] & 0xc0) != 0x80) return false;
            cp = (cp << 6) | (s[i] & 0x3fu);
        }
        if ((n == 2 && cp < 0x800) || (n == 3 && (cp < 0x10000 || cp > 0x10ffff)) ||
            (cp >= 0xd800 && cp <= 0xdfff))
            return false;
        s += n + 1;
    }
    return true;
}

static bool is_ascii(const char *s) {
    for (; *s; s++)
        if ((unsigned char)*s >= 0x80) return false;
    return true;
}

/* PNG keyword rules (1-79 chars, no leading/trailing/double spaces), restricted to printable
 * ASCII so the key reads back identically. */
static bool key_valid(const char *k) {
    size_t n = strlen(k);
    if (n < 1 || n > 79 || k[0] == ' ' || k[n - 1] == ' ') return false;
    for (size_t i = 0; i < n; i++) {
        if (k[i] < 32 || k[i] > 126) return false;
        if (k[i] == ' ' && k[i + 1] == ' ') return false;
    }
    return true;
}

static lk_status collect_text(png_structp png, png_infop info, lk_image_texts *out,
                              const char *name) {
    png_textp tp = NULL;
    int n = png_get_text(png, info, &tp, NULL);
    if (n <= 0 || !tp) return LK_OK;
    out->items = calloc((size_t)n, sizeof *out->items);
    if (!out->items) return lk_fail(LK_ERR_NOMEM, "%s: out of memory (PNG text)", name);
    for (int i = 0; i < n; i++) {
        const png_text *t = &tp[i];
        const bool itxt = t->compression == PNG_ITXT_COMPRESSION_NONE ||
                          t->compression == PNG_ITXT_COMPRESSION_zTXt;
        const char *v = t->text ? t->text : "";
        size_t vn = t->text ? (itxt ? t->itxt_length : t->text_length) : 0;
        lk_image_text *it = &out->items[out->n];
        it->key = latin1_to_utf8(t->key ? t->key : "", t->key ? strlen(t->key) : 0);
        it->value = itxt ? copy_bytes(v, vn) : latin1_to_utf8(v, vn);
        out->n++;
        if (!it->key || !it->value) return lk_fail(LK_ERR_NOMEM, "%s: out of memory (PNG text)", name);
    }
    return LK_OK;
}

/* ---- decoding ---- */

typedef struct png_dec {
    png_errctx err; /* first: the error pointer */
    const uint8_t *data;
    size_t size, pos;
    png_structp png;
    png_infop info;
    png_bytep *rows;
    lk_image *img;
} png_dec;

static void png_read_mem(png_structp png, png_bytep dst, png_size_t n) {
    png_dec *d = png_get_io_ptr(png);
    if (n > d->size - d->pos) png_error(png, "truncated PNG data");
    memcpy(dst, d->data + d->pos, n);
    d->pos += n;
}

/* Runs the libpng calls; setjmp lives here and touches only *d (no locals modified after it). */
static lk_status png_run(png_dec *d, const char *name, int64_t max_pixels, bool header_only,
                         lk_image_texts *text) {
    if (setjmp(d->err.jb)) {
        if (strcmp(d->err.msg, "truncated PNG data") == 0)
            return lk_fail(LK_ERR_FORMAT, "%s: truncated PNG data", name);
        return lk_fail(LK_ERR_FORMAT, "%s: PNG: %s", name, d->err.msg);
    }
    png_set_read_fn(d->png, d, png_read_mem);
    png_set_user_limits(d->png, 0x7fffffffu, 0x7fffffffu); /* our own caps below */
    /* ancillary chunks (text, ICC) are read whole: cap them, or a 100-byte file could declare a
     * 2 GB chunk; 32 MiB leaves room for the workflow JSON some UIs embed */
    png_set_chunk_malloc_max(d->png, LK_PNG_MAX_CHUNK);
    png_read_info(d->png, d->info);
    png_uint_32 w = 0, h = 0;
    int depth = 0, ctype = 0, interlace = 0;
    png_get_IHDR(d->png, d->info, &w, &h, &depth, &ctype, &interlace, NULL, NULL);
    lk_status s = lk__image_check_size(name, "PNG", (int64_t)w, (int64_t)h, max_pixels);
    if (s != LK_OK) return s;
    const bool trns = png_get_valid(d->png, d->info, PNG_INFO_tRNS) != 0;
    const bool alpha = (ctype & PNG_COLOR_MASK_ALPHA) != 0 || trns;
    if (header_only) {
        d->img->w = (int)w;
        d->img->h = (int)h;
        d->img->c = alpha ? 4 : 3;
        return LK_OK;
    }
    if (ctype == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(d->png);
    if (ctype == PNG_COLOR_TYPE_GRAY && depth < 8) png_set_expand_gray_1_2_4_to_8(d->png);
    if (trns) png_set_tRNS_to_alpha(d->png);
    if (depth == 16) png_set_scale_16(d->png); /* round(v * 255 / 65535) */
    if (!(ctype & PNG_COLOR_MASK_COLOR)) png_set_gray_to_rgb(d->png);
    png_set_interlace_handling(d->png);
    png_read_update_info(d->png, d->info);
    const int c = png_get_channels(d->png, d->info);
    if ((c != 3 && c != 4) || png_get_bit_depth(d->png, d->info) != 8 ||
        png_get_rowbytes(d->png, d->info) != (size_t)w * (size_t)c)
        return lk_fail(LK_ERR_FORMAT, "%s: PNG: unexpected layout after conversion", name);
    if ((s = lk_image_alloc(d->img, (int)w, (int)h, c)) != LK_OK) return lk_fail_prefix(s, "%s: ", name);
    d->rows = malloc((size_t)h * sizeof *d->rows);
    if (!d->rows) return lk_fail(LK_ERR_NOMEM, "%s: out of memory", name);
    for (png_uint_32 y = 0; y < h; y++) d->rows[y] = d->img->px + (size_t)y * w * (size_t)c;
    png_read_image(d->png, d->rows);
    png_read_end(d->png, d->info); /* text after IDAT; reports a missing/truncated IEND */
    if (text) return collect_text(d->png, d->info, text, name);
    return LK_OK;
}

/* Walk the chunk list before libpng sees it: every declared length must fit in the data and a
 * chunk list must end with IEND. libpng allocates an ancillary chunk's buffer from its declared
 * length before reading it, so without this a 100-byte file could ask for a 1 GiB buffer. */
static lk_status png_walk(const uint8_t *data, size_t size, const char *name) {
    size_t pos = 8;
    if (size < pos) return lk_fail(LK_ERR_FORMAT, "%s: truncated PNG data", name);
    for (;;) {
        if (size - pos < 12) return lk_fail(LK_ERR_FORMAT, "%s: truncated PNG data", name);
        const uint32_t len = ((uint32_t)data[pos] << 24) | ((uint32_t)data[pos + 1] << 16) |
                             ((uint32_t)data[pos + 2] << 8) | (uint32_t)data[pos + 3];
        if (len > 0x7fffffffu)
            return lk_fail(LK_ERR_FORMAT, "%s: PNG: chunk length %u out of range", name, (unsigned)len);
        if (len > size - pos - 12) return lk_fail(LK_ERR_FORMAT, "%s: truncated PNG data", name);
        if (memcmp(data + pos + 4, "IEND", 4) == 0) return LK_OK;
        pos += 12 + (size_t)len;
    }
}

lk_status lk__png_decode(const uint8_t *data, size_t size, const char *name, int64_t max_pixels,
                         bool header_only, lk_image *out, lk_image_texts *text) {
    memset(out, 0, sizeof *out);
    if (text) lk_image_texts_free(text);
    lk_status ws = png_walk(data, size, name);
    if (ws != LK_OK) return ws;
    png_dec d;
    memset(&d, 0, sizeof d);
    d.data = data;
    d.size = size;
    d.img = out;
    d.png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &d.err, png_fatal, png_warn);
    if (d.png) d.info = png_create_info_struct(d.png);
    lk_status s;
    if (!d.png || !d.info)
        s = lk_fail(LK_ERR_NOMEM, "%s: out of memory (libpng)", name);
    else
        s = png_run(&d, name, max_pixels, header_only, text);
    png_destroy_read_struct(d.png ? &d.png : NULL, d.info ? &d.info : NULL, NULL);
    free(d.rows);
    if (s != LK_OK) {
        lk_image_free(out);
        lk_image_texts_free(text);
    }
    return s;
}

/* ---- encoding ---- */

typedef struct png_enc {
    png_errctx err;
    uint8_t *buf;
    size_t len, cap;
    png_structp png;
    png_infop info;
    png_textp texts;
    png_bytep *rows;
} png_enc;

static void png_write_mem(png_structp png, png_bytep src, png_size_t n) {
    png_enc *e = png_get_io_ptr(png);
    if (n > e->cap - e->len) {
        size_t cap = e->cap ? e->cap : 65536;
        while (cap - e->len < n) {
            if (cap > SIZE_MAX / 2) png_error(png, "PNG output too large");
            cap *= 2;
        }
        uint8_t *b = realloc(e->buf, cap);
        if (!b) png_error(png, "out of memory");
        e->buf = b;
        e->cap = cap;
    }
    memcpy(e->buf + e->len, src, n);
    e->len += n;
}

static void png_flush_mem(png_structp png) { (void)png; }

static lk_status png_enc_run(png_enc *e, const lk_image *img, int level,
                             const lk_png_write_opts *o) {
    if (setjmp(e->err.jb)) return lk_fail(LK_ERR_INVALID, "png_encode: %s", e->err.msg);
    png_set_write_fn(e->png, e, png_write_mem, png_flush_mem);
    png_set_compression_level(e->png, level);
    png_set_IHDR(e->png, e->info, (png_uint_32)img->w, (png_uint_32)img->h, 8,
                 img->c == 4 ? PNG_COLOR_TYPE_RGB_ALPHA : PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    if (e->texts) png_set_text(e->png, e->info, e->texts, o->n_text);
    png_write_info(e->png, e->info);
    png_write_image(e->png, e->rows);
    png_write_end(e->png, e->info);
    return LK_OK;
}

lk_status lk_image_encode_png(const lk_image *img, const lk_png_write_opts *opts, uint8_t **out,
                              size_t *size) {
    if (!out || !size) return lk_fail(LK_ERR_INVALID, "png_encode: out/size is NULL");
    *out = NULL;
    *size = 0;
    if (!img || !img->px || (img->c != 3 && img->c != 4) || img->w < 1 || img->h < 1 ||
        img->w > LK_IMAGE_MAX_DIM || img->h > LK_IMAGE_MAX_DIM)
        return lk_fail(LK_ERR_INVALID, "png_encode: invalid image");
    int level = opts ? opts->level : LK_PNG_LEVEL_DEFAULT;
    if (level == LK_PNG_LEVEL_DEFAULT) level = 6;
    if (level < 0 || level > 9) return lk_fail(LK_ERR_INVALID, "png_encode: level %d not in 0-9", level);
    const int nt = opts ? opts->n_text : 0;
    if (nt < 0 || (nt > 0 && !opts->text)) return lk_fail(LK_ERR_INVALID, "png_encode: bad text list");
    for (int i = 0; i < nt; i++) {
        const lk_image_text *t = &opts->text[i];
        if (!t->key || !key_valid(t->key))
            return lk_fail(LK_ERR_INVALID,
                           "png_encode: text key '%s' must be 1-79 printable ASCII characters "
                           "without leading, trailing or double spaces", t->key ? t->key : "(null)");
        if (!t->value || !utf8_valid((const unsigned char *)t->value))
            return lk_fail(LK_ERR_INVALID, "png_encode: text value of '%s' is not valid UTF-8", t->key);
    }
    png_enc e;
    memset(&e, 0, sizeof e);
    lk_status s = LK_OK;
    e.rows = malloc((size_t)img->h * sizeof *e.rows);
    if (nt > 0) e.texts = calloc((size_t)nt, sizeof *e.texts);
    if (!e.rows || (nt > 0 && !e.texts)) s = lk_fail(LK_ERR_NOMEM, "png_encode: out of memory");
    if (s == LK_OK) {
        for (int y = 0; y < img->h; y++) e.rows[y] = img->px + (size_t)y * img->w * img->c;
        for (int i = 0; i < nt; i++) {
            png_text *t = &e.texts[i];
            const bool ascii = is_ascii(opts->text[i].value);
            t->compression = ascii ? PNG_TEXT_COMPRESSION_NONE : PNG_ITXT_COMPRESSION_NONE;
            t->key = (png_charp)(uintptr_t)opts->text[i].key;
            t->text = (png_charp)(uintptr_t)opts->text[i].value;
            t->lang = NULL;
            t->lang_key = NULL;
        }
        e.png = png_create_write_struct(PNG_LIBPNG_VER_STRING, &e.err, png_fatal, png_warn);
        if (e.png) e.info = png_create_info_struct(e.png);
        if (!e.png || !e.info) s = lk_fail(LK_ERR_NOMEM, "png_encode: out of memory (libpng)");
    }
    if (s == LK_OK) s = png_enc_run(&e, img, level, opts);
    png_destroy_write_struct(e.png ? &e.png : NULL, e.info ? &e.info : NULL);
    free(e.rows);
    free(e.texts);
    if (s != LK_OK) {
        free(e.buf);
        return s;
    }
    *out = e.buf;
    *size = e.len;
    return LK_OK;
}

lk_status lk_image_save_png(const lk_image *img, const char *path, const lk_png_write_opts *opts) {
    if (!path) return lk_fail(LK_ERR_INVALID, "image_save_png: path is NULL");
    uint8_t *buf = NULL;
    size_t n = 0;
    lk_status s = lk_image_encode_png(img, opts, &buf, &n);
    if (s != LK_OK) return lk_fail_prefix(s, "%s: ", path);
    size_t tl = strlen(path) + 32;
    char *tmp = malloc(tl);
    if (!tmp) {
        free(buf);
        return lk_fail(LK_ERR_NOMEM, "%s: out of memory", path);
    }
    snprintf(tmp, tl, "%s.tmp.%ld", path, (long)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) {
        s = lk_fail(LK_ERR_IO, "%s: cannot create %s: %s", path, tmp, strerror(errno));
        free(tmp);
        free(buf);
        return s;
    }
    const char *what = NULL;
    int e = 0;
    for (size_t off = 0; off < n && !what;) {
        ssize_t w = write(fd, buf + off, n - off);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) { what = "write"; e = w < 0 ? errno : EIO; }
        else off += (size_t)w;
    }
    if (!what && fsync(fd) != 0) { what = "fsync"; e = errno; }
    if (close(fd) != 0 && !what) { what = "close"; e = errno; }
    if (!what && rename(tmp, path) != 0) { what = "rename"; e = errno; }
    if (what) {
        s = lk_fail(LK_ERR_IO, "%s: %s failed: %s", path, what, strerror(e));
        unlink(tmp);
    }
    free(tmp);
    free(buf);
    return s;
}
