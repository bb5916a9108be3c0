/* image.c: lk_image basics: format sniffing by magic bytes, decoder dispatch, file loading,
 * EXIF orientation transforms, alpha compositing and float CHW conversion (VAE convention
 * x/127.5 - 1, inverse as diffusers' numpy_to_pil). */
#define _POSIX_C_SOURCE 200809L
#include "image_internal.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* ---- sizes ---- */

lk_status lk__image_check_size(const char *name, const char *fmt, int64_t w, int64_t h,
                               int64_t max_pixels) {
    if (w < 1 || h < 1)
        return lk_fail(LK_ERR_FORMAT, "%s: %s image has an empty size %lldx%lld", name, fmt,
                       (long long)w, (long long)h);
    if (w > LK_IMAGE_MAX_DIM || h > LK_IMAGE_MAX_DIM)
        return lk_fail(LK_ERR_UNSUPPORTED, "%s: %s image of %lldx%lld exceeds the %dx%d limit",
                       name, fmt, (long long)w, (long long)h, LK_IMAGE_MAX_DIM, LK_IMAGE_MAX_DIM);
    if (max_pixels <= 0) max_pixels = LK_IMAGE_DEFAULT_MAX_PIXELS;
    if (w * h > max_pixels)
        return lk_fail(LK_ERR_UNSUPPORTED, "%s: %s image of %lldx%lld exceeds the %lld-pixel limit",
                       name, fmt, (long long)w, (long long)h, (long long)max_pixels);
    return LK_OK;
}

lk_status lk_image_alloc(lk_image *img, int w, int h, int c) {
    if (!img) return lk_fail(LK_ERR_INVALID, "image_alloc: img is NULL");
    memset(img, 0, sizeof *img);
    if (c != 3 && c != 4) return lk_fail(LK_ERR_INVALID, "image_alloc: %d channels (need 3 or 4)", c);
    if (w < 1 || h < 1 || w > LK_IMAGE_MAX_DIM || h > LK_IMAGE_MAX_DIM)
        return lk_fail(LK_ERR_INVALID, "image_alloc: size %dx%d outside 1..%d", w, h,
                       LK_IMAGE_MAX_DIM);
    size_t n;
    if (lk_mul_overflow((size_t)w * (size_t)h, (size_t)c, &n))
        return lk_fail(LK_ERR_INVALID, "image_alloc: size overflow");
    img->px = malloc(n);
    if (!img->px) return lk_fail(LK_ERR_NOMEM, "image_alloc: out of memory (%zu bytes)", n);
    img->w = w;
    img->h = h;
    img->c = c;
    return LK_OK;
}

void lk_image_free(lk_image *img) {
    if (!img) return;
    free(img->px);
    memset(img, 0, sizeof *img);
}

static bool image_valid(const lk_image *img) {
    return img && img->px && (img->c == 3 || img->c == 4) && img->w >= 1 && img->h >= 1 &&
           img->w <= LK_IMAGE_MAX_DIM && img->h <= LK_IMAGE_MAX_DIM;
}

static size_t image_bytes(const lk_image *img) {
    return (size_t)img->w * (size_t)img->h * (size_t)img->c;
}

lk_status lk_image_copy(lk_image *dst, const lk_image *src) {
    if (!dst || !image_valid(src)) return lk_fail(LK_ERR_INVALID, "image_copy: invalid image");
    lk_status s = lk_image_alloc(dst, src->w, src->h, src->c);
    if (s != LK_OK) return s;
    memcpy(dst->px, src->px, image_bytes(src));
    return LK_OK;
}

lk_status lk_image_set_channels(lk_image *img, int c, const uint8_t bg[3]) {
    if (!image_valid(img)) return lk_fail(LK_ERR_INVALID, "image_set_channels: invalid image");
    if (c != 3 && c != 4)
        return lk_fail(LK_ERR_INVALID, "image_set_channels: %d channels (need 3 or 4)", c);
    if (c == img->c) return LK_OK;
    const size_t n = (size_t)img->w * (size_t)img->h;
    if (c == 3) { /* composite in place: write index never passes the read index */
        static const uint8_t white[3] = {255, 255, 255};
        const uint8_t *b = bg ? bg : white;
        uint8_t *p = img->px;
        for (size_t i = 0; i < n; i++) {
            const unsigned a = p[4 * i + 3];
            for (int k = 0; k < 3; k++)
                p[3 * i + k] = (uint8_t)((a * p[4 * i + k] + (255u - a) * b[k] + 127u) / 255u);
        }
        uint8_t *q = realloc(img->px, 3 * n);
        if (q) img->px = q; /* shrinking cannot lose data; keep the old block if it fails */
        img->c = 3;
        return LK_OK;
    }
    uint8_t *q = malloc(4 * n);
    if (!q) return lk_fail(LK_ERR_NOMEM, "image_set_channels: out of memory");
    for (size_t i = 0; i < n; i++) {
        q[4 * i] = img->px[3 * i];
        q[4 * i + 1] = img->px[3 * i + 1];
        q[4 * i + 2] = img->px[3 * i + 2];
        q[4 * i + 3] = 255;
    }
    free(img->px);
    img->px = q;
    img->c = 4;
    return LK_OK;
}

/* ---- EXIF orientation ---- */

lk_status lk_image_orient(lk_image *img, int o) {
    if (o < 0 || o > 8) return lk_fail(LK_ERR_INVALID, "image_orient: orientation %d not in 0-8", o);
    if (o <= 1) return LK_OK;
    if (!image_valid(img)) return lk_fail(LK_ERR_INVALID, "image_orient: invalid image");
    const int W = img->w, H = img->h, c = img->c;
    const bool swap = o >= 5;
    const int ow = swap ? H : W, oh = swap ? W : H;
    uint8_t *q = malloc(image_bytes(img));
    if (!q) return lk_fail(LK_ERR_NOMEM, "image_orient: out of memory");
    for (int y = 0; y < oh; y++) {
        for (int x = 0; x < ow; x++) {
            int sx, sy; /* the stored pixel shown at (x, y) */
            switch (o) {
            case 2: sx = W - 1 - x; sy = y; break;
            case 3: sx = W - 1 - x; sy = H - 1 - y; break;
            case 4: sx = x; sy = H - 1 - y; break;
            case 5: sx = y; sy = x; break;
            case 6: sx = y; sy = H - 1 - x; break;
            case 7: sx = W - 1 - y; sy = H - 1 - x; break;
            default: sx = W - 1 - y; sy = x; break; /* 8 */
            }
            memcpy(q + ((size_t)y * ow + x) * c, img->px + ((size_t)sy * W + sx) * c, (size_t)c);
        }
    }
    free(img->px);
    img->px = q;
    img->w = ow;
    img->h = oh;
    return LK_OK;
}

/* ---- sniffing and dispatch ---- */

lk_image_format lk_image_sniff(const void *data, size_t size) {
    const uint8_t *p = data;
    if (!p) return LK_IMAGE_UNKNOWN;
    static const uint8_t png_sig[8] = {0x89, 'P', 'N', 'G', 0x0d, 0x0a, 0x1a, 0x0a};
    if (size >= 8 && memcmp(p, png_sig, 8) == 0) return LK_IMAGE_PNG;
    if (size >= 3 && p[0] == 0xff && p[1] == 0xd8 && p[2] == 0xff) return LK_IMAGE_JPEG;
    if (size >= 12 && memcmp(p, "RIFF", 4) == 0 && memcmp(p + 8, "WEBP", 4) == 0)
        return LK_IMAGE_WEBP;
    return LK_IMAGE_UNKNOWN;
}

const char *lk_image_format_name(lk_image_format f) {
    switch (f) {
    case LK_IMAGE_PNG: return "PNG";
    case LK_IMAGE_JPEG: return "JPEG";
    case LK_IMAGE_WEBP: return "WebP";
    default: return "unknown";
    }
}

/* A format we recognise but do not decode, for a clearer message. */
static const char *other_format(const uint8_t *p, size_t n) {
    if (n >= 6 && (memcmp(p, "GIF87a", 6) == 0 || memcmp(p, "GIF89a", 6) == 0)) return "GIF";
    if (n >= 4 && (memcmp(p, "II*\0", 4) == 0 || memcmp(p, "MM\0*", 4) == 0)) return "TIFF";
    if (n >= 12 && memcmp(p + 4, "ftyp", 4) == 0) return "HEIF/AVIF";
    if (n >= 2 && p[0] == 'B' && p[1] == 'M') return "BMP";
    if (n >= 12 && memcmp(p, "\0\0\0\x0cjP  ", 8) == 0) return "JPEG 2000";
    if (n >= 2 && memcmp(p, "\xff\x0a", 2) == 0) return "JPEG XL";
    return NULL;
}

static lk_status decode_any(const uint8_t *p, size_t size, const char *name,
                            const lk_image_load_opts *o, bool header_only, lk_image *img,
                            lk_image_format *fmt_out) {
    const int64_t maxpx = o ? o->max_pixels : 0;
    lk_image_texts *text = o ? o->text : NULL;
    int orientation = 0;
    lk_status s;
    lk_image_format fmt = lk_image_sniff(p, size);
    if (fmt_out) *fmt_out = fmt;
    switch (fmt) {
    case LK_IMAGE_PNG: s = lk__png_decode(p, size, name, maxpx, header_only, img, text); break;
    case LK_IMAGE_JPEG:
        s = lk__jpeg_decode(p, size, name, maxpx, header_only, img, &orientation);
        break;
    case LK_IMAGE_WEBP: s = lk__webp_decode(p, size, name, maxpx, header_only, img); break;
    default: {
        if (size == 0) return lk_fail(LK_ERR_FORMAT, "%s: empty file", name);
        const char *other = other_format(p, size);
        if (other)
            return lk_fail(LK_ERR_UNSUPPORTED, "%s: %s images are not supported (PNG, JPEG, WebP)",
                           name, other);
        return lk_fail(LK_ERR_FORMAT, "%s: not a PNG, JPEG or WebP file", name);
    }
    }
    if (s != LK_OK) return s;
    if (o && o->ignore_orientation) orientation = 0;
    if (header_only) {
        if (orientation >= 5) {
            int t = img->w;
            img->w = img->h;
            img->h = t;
        }
        return LK_OK;
    }
    if (orientation > 1 && (s = lk_image_orient(img, orientation)) != LK_OK) return s;
    const int want = o ? o->channels : 0;
    if (want && want != img->c) {
        s = lk_image_set_channels(img, want, o->use_background ? o->background : NULL);
        if (s != LK_OK) return s;
    }
    return LK_OK;
}

static lk_status check_opts(const lk_image_load_opts *o, const char *name) {
    if (o && o->channels != 0 && o->channels != 3 && o->channels != 4)
        return lk_fail(LK_ERR_INVALID, "%s: channels %d requested (need 0, 3 or 4)", name,
                       o->channels);
    if (o && o->max_pixels < 0)
        return lk_fail(LK_ERR_INVALID, "%s: negative max_pixels", name);
    return LK_OK;
}

lk_status lk_image_decode(lk_image *out, const void *data, size_t size, const char *name,
                          const lk_image_load_opts *opts) {
    if (!name) name = "image";
    if (!out) return lk_fail(LK_ERR_INVALID, "%s: image_decode: out is NULL", name);
    memset(out, 0, sizeof *out);
    if (opts && opts->text) lk_image_texts_free(opts->text);
    if (!data && size) return lk_fail(LK_ERR_INVALID, "%s: image_decode: data is NULL", name);
    lk_status s = check_opts(opts, name);
    if (s != LK_OK) return s;
    s = decode_any(data, size, name, opts, false, out, NULL);
    if (s != LK_OK) {
        lk_image_free(out);
        if (opts && opts->text) lk_image_texts_free(opts->text);
    }
    return s;
}

lk_status lk_image_probe(const void *data, size_t size, const char *name,
                         const lk_image_load_opts *opts, lk_image_format *fmt, int *w, int *h) {
    if (!name) name = "image";
    if (fmt) *fmt = LK_IMAGE_UNKNOWN;
    if (w) *w = 0;
    if (h) *h = 0;
    if (!data && size) return lk_fail(LK_ERR_INVALID, "%s: image_probe: data is NULL", name);
    lk_image_load_opts o = {0};
    if (opts) {
        o.max_pixels = opts->max_pixels;
        o.ignore_orientation = opts->ignore_orientation;
    }
    lk_status s = check_opts(&o, name);
    if (s != LK_OK) return s;
    lk_image img = {0};
    lk_image_format f = LK_IMAGE_UNKNOWN;
    s = decode_any(data, size, name, &o, true, &img, &f);
    if (s != LK_OK) return s;
    if (fmt) *fmt = f;
    if (w) *w = img.w;
    if (h) *h = img.h;
    return LK_OK;
}

lk_status lk_image_load(lk_image *out, const char *path, const lk_image_load_opts *opts) {
    if (!out) return lk_fail(LK_ERR_INVALID, "image_load: out is NULL");
    memset(out, 0, sizeof *out);
    if (opts && opts->text) lk_image_texts_free(opts->text);
    if (!path) return lk_fail(LK_ERR_INVALID, "image_load: path is NULL");
    FILE *f = fopen(path, "rb");
    if (!f) return lk_fail(LK_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fileno(f), &st) != 0) {
        lk_status s = lk_fail(LK_ERR_IO, "%s: cannot stat: %s", path, strerror(errno));
        fclose(f);
        return s;
    }
    if (!S_ISREG(st.st_mode)) {
        fclose(f);
        return lk_fail(LK_ERR_IO, "%s: not a regular file", path);
    }
    if ((long long)st.st_size > LK_IMAGE_MAX_FILE_BYTES) {
        fclose(f);
        return lk_fail(LK_ERR_UNSUPPORTED, "%s: file of %lld bytes exceeds the %lld-byte limit",
                       path, (long long)st.st_size, (long long)LK_IMAGE_MAX_FILE_BYTES);
    }
    size_t n = (size_t)st.st_size;
    uint8_t *buf = malloc(n ? n : 1);
    if (!buf) {
        fclose(f);
        return lk_fail(LK_ERR_NOMEM, "%s: out of memory reading %zu bytes", path, n);
    }
    size_t got = fread(buf, 1, n, f);
    bool err = ferror(f) != 0;
    fclose(f);
    if (err || got != n) {
        free(buf);
        return lk_fail(LK_ERR_IO, "%s: read failed", path);
    }
    lk_status s = lk_image_decode(out, buf, n, path, opts);
    free(buf);
    return s;
}

/* ---- text chunks ---- */

void lk_image_texts_free(lk_image_texts *t) {
    if (!t) return;
    for (int i = 0; i < t->n; i++) {
        free(t->items[i].key);
        free(t->items[i].value);
    }
    free(t->items);
    t->items = NULL;
    t->n = 0;
}

const char *lk_image_texts_get(const lk_image_texts *t, const char *key) {
    if (!t || !key) return NULL;
    for (int i = 0; i < t->n; i++)
        if (strcmp(t->items[i].key, key) == 0) return t->items[i].value;
    return NULL;
}

/* ---- float conversion ---- */

lk_status lk_image_to_chw(const lk_image *img, lk_image_range range, float *chw) {
    if (!image_valid(img) || !chw) return lk_fail(LK_ERR_INVALID, "image_to_chw: invalid arguments");
    if (range != LK_RANGE_UNIT && range != LK_RANGE_SYMMETRIC)
        return lk_fail(LK_ERR_INVALID, "image_to_chw: unknown range %d", (int)range);
    const size_t n = (size_t)img->w * (size_t)img->h;
    const int c = img->c;
    for (int k = 0; k < c; k++) {
        float *d = chw + (size_t)k * n;
        const uint8_t *s = img->px + k;
        if (range == LK_RANGE_UNIT)
            for (size_t i = 0; i < n; i++) d[i] = (float)s[i * c] / 255.0f;
        else
            for (size_t i = 0; i < n; i++) d[i] = (float)s[i * c] / 127.5f - 1.0f;
    }
    return LK_OK;
}

/* round half to even of v in [0, 255] (numpy's round) */
static uint8_t round_even_u8(float v) {
    float r = floorf(v);
    float d = v - r;
    int i = (int)r;
    if (d > 0.5f || (d == 0.5f && (i & 1))) i++;
    return (uint8_t)(i > 255 ? 255 : i);
}

lk_status lk_image_from_chw(lk_image *img, const float *chw, int c, int h, int w,
                            lk_image_range range) {
    if (!img || !chw) return lk_fail(LK_ERR_INVALID, "image_from_chw: NULL argument");
    if (range != LK_RANGE_UNIT && range != LK_RANGE_SYMMETRIC)
        return lk_fail(LK_ERR_INVALID, "image_from_chw: unknown range %d", (int)range);
    lk_status s = lk_image_alloc(img, w, h, c);
    if (s != LK_OK) return s;
    const size_t n = (size_t)w * (size_t)h;
    for (int k = 0; k < c; k++) {
        const float *src = chw + (size_t)k * n;
        uint8_t *d = img->px + k;
        for (size_t i = 0; i < n; i++) {
            float x = range == LK_RANGE_SYMMETRIC ? src[i] / 2.0f + 0.5f : src[i];
            if (!(x > 0.0f)) x = 0.0f; /* also NaN */
            if (x > 1.0f) x = 1.0f;
            d[i * c] = round_even_u8(x * 255.0f);
        }
    }
    return LK_OK;
}
