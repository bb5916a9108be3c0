/* resize.c: separable image resampling in f32 (area averaging, and Lanczos-3 with the kernel
 * widened by the downscale factor as in PIL's Image.resize), crops, flips, and the trainer's
 * resize -> crop -> flip pipeline following torchvision's Resize / CenterCrop / RandomCrop. */
#include "likeness/image.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- coefficient tables: output index i of an axis reads src[start[i] .. start[i]+len[i]) ---- */

typedef struct taps {
    int count;  /* output positions in the table */
    int stride; /* weights per output position (>= every len) */
    int *start, *len;
    float *w;   /* (count, stride) */
} taps;

static void taps_free(taps *t) {
    free(t->start);
    free(t->len);
    free(t->w);
    memset(t, 0, sizeof *t);
}

static double lanczos3(double x) {
    x = fabs(x);
    if (x < 1e-12) return 1.0;
    if (x >= 3.0) return 0.0;
    const double px = 3.14159265358979323846 * x;
    return 3.0 * sin(px) * sin(px / 3.0) / (px * px);
}

/* Weights for outputs first .. first+count-1 of an axis resized from n_in to n_out samples. */
static lk_status taps_build(taps *t, int n_in, int n_out, int first, int count,
                            lk_resize_filter filter) {
    memset(t, 0, sizeof *t);
    const double scale = (double)n_in / (double)n_out;
    const double fscale = scale > 1.0 ? scale : 1.0;
    const double support = filter == LK_RESIZE_AREA ? scale : 3.0 * fscale;
    int stride = (int)ceil(2.0 * support) + 3;
    if (stride > n_in) stride = n_in;
    if (n_in == n_out) stride = 1;
    t->count = count;
    t->stride = stride;
    t->start = malloc((size_t)count * sizeof *t->start);
    t->len = malloc((size_t)count * sizeof *t->len);
    t->w = malloc((size_t)count * (size_t)stride * sizeof *t->w);
    double *wd = malloc((size_t)stride * sizeof *wd);
    if (!t->start || !t->len || !t->w || !wd) {
        free(wd);
        taps_free(t);
        return lk_fail(LK_ERR_NOMEM, "resize: out of memory (coefficients)");
    }
    for (int o = 0; o < count; o++) {
        const int i = first + o;
        int lo, hi; /* source range [lo, hi) */
        if (n_in == n_out) {
            lo = i;
            hi = i + 1;
            wd[0] = 1.0;
        } else if (filter == LK_RESIZE_AREA) {
            const double a = i * scale, b = (i + 1) * scale; /* footprint [a, b) */
            lo = (int)floor(a);
            hi = (int)ceil(b);
            if (hi > n_in) hi = n_in;
            if (hi - lo > stride) hi = lo + stride;
            for (int j = lo; j < hi; j++) {
                double l = a > j ? a : j, r = b < j + 1 ? b : j + 1;
                wd[j - lo] = r > l ? r - l : 0.0;
            }
        } else {
            const double center = (i + 0.5) * scale;
            lo = (int)floor(center - support);
            hi = (int)ceil(center + support) + 1;
            if (lo < 0) lo = 0;
            if (hi > n_in) hi = n_in;
            if (hi - lo > stride) { /* cannot happen; keep the window centred if it did */
                lo = (int)floor(center) - stride / 2;
                if (lo < 0) lo = 0;
                hi = lo + stride;
            }
            for (int j = lo; j < hi; j++) wd[j - lo] = lanczos3((j + 0.5 - center) / fscale);
        }
        /* trim zero weights at both ends, then normalise */
        while (hi - lo > 1 && wd[0] == 0.0) {
            memmove(wd, wd + 1, (size_t)(hi - lo - 1) * sizeof *wd);
            lo++;
        }
        while (hi - lo > 1 && wd[hi - lo - 1] == 0.0) hi--;
        double sum = 0.0;
        for (int j = 0; j < hi - lo; j++) sum += wd[j];
        float *w = t->w + (size_t)o * stride;
        for (int j = 0; j < hi - lo; j++) w[j] = sum != 0.0 ? (float)(wd[j] / sum) : 0.0f;
        t->start[o] = lo;
        t->len[o] = hi - lo;
    }
    free(wd);
    return LK_OK;
}

/* ---- the separable resampler ---- */

/* A source plane set: c interleaved channels, element (x, y, k) at base[y*row + x*c + k];
 * exactly one of u8 / f32 is set. */
typedef struct rs_src {
    const uint8_t *u8;
    const float *f32;
    int w, h, c;
    size_t row;
} rs_src;

static lk_resize_filter resolve(lk_resize_filter f, int w, int h, int ow, int oh) {
    if (f != LK_RESIZE_AUTO) return f;
    return (w >= ow && h >= oh && w % ow == 0 && h % oh == 0) ? LK_RESIZE_AREA : LK_RESIZE_LANCZOS3;
}

/* Resample s to a virtual ow x oh image and write its window [x0, x0+cw) x [y0, y0+ch) to dst
 * as (ch, cw, c) interleaved floats. filter already resolved. */
static lk_status resample(const rs_src *s, int ow, int oh, int x0, int y0, int cw, int ch,
                          lk_resize_filter filter, float *dst) {
    taps tx, ty;
    lk_status st = taps_build(&tx, s->w, ow, x0, cw, filter);
    if (st != LK_OK) return st;
    if ((st = taps_build(&ty, s->h, oh, y0, ch, filter)) != LK_OK) {
        taps_free(&tx);
        return st;
    }
    int r0 = s->h, r1 = 0; /* source rows the vertical pass reads */
    for (int o = 0; o < ch; o++) {
        if (ty.start[o] < r0) r0 = ty.start[o];
        if (ty.start[o] + ty.len[o] > r1) r1 = ty.start[o] + ty.len[o];
    }
    const int c = s->c;
    const size_t trow = (size_t)cw * (size_t)c;
    float *tmp = malloc((size_t)(r1 - r0) * trow * sizeof *tmp);
    if (!tmp) {
        taps_free(&tx);
        taps_free(&ty);
        return lk_fail(LK_ERR_NOMEM, "resize: out of memory");
    }
    float acc[4];
    for (int y = r0; y < r1; y++) { /* horizontal pass */
        float *out = tmp + (size_t)(y - r0) * trow;
        for (int o = 0; o < cw; o++) {
            const float *w = tx.w + (size_t)o * tx.stride;
            const size_t base = (size_t)y * s->row + (size_t)tx.start[o] * c;
            for (int k = 0; k < c; k++) acc[k] = 0.0f;
            if (s->u8) {
                const uint8_t *p = s->u8 + base;
                for (int j = 0; j < tx.len[o]; j++, p += c)
                    for (int k = 0; k < c; k++) acc[k] += w[j] * (float)p[k];
            } else {
                const float *p = s->f32 + base;
                for (int j = 0; j < tx.len[o]; j++, p += c)
                    for (int k = 0; k < c; k++) acc[k] += w[j] * p[k];
            }
            for (int k = 0; k < c; k++) out[(size_t)o * c + k] = acc[k];
        }
    }
    for (int o = 0; o < ch; o++) { /* vertical pass over whole rows */
        float *out = dst + (size_t)o * trow;
        const float *w = ty.w + (size_t)o * ty.stride;
        const float *in = tmp + (size_t)(ty.start[o] - r0) * trow;
        for (size_t e = 0; e < trow; e++) out[e] = w[0] * in[e];
        for (int j = 1; j < ty.len[o]; j++) {
            const float *inj = in + (size_t)j * trow;
            const float wj = w[j];
            for (size_t e = 0; e < trow; e++) out[e] += wj * inj[e];
        }
    }
    free(tmp);
    taps_free(&tx);
    taps_free(&ty);
    return LK_OK;
}

static bool dim_ok(int v) { return v >= 1 && v <= LK_IMAGE_MAX_DIM; }

static bool image_ok(const lk_image *img) {
    return img && img->px && (img->c == 3 || img->c == 4) && dim_ok(img->w) && dim_ok(img->h);
}

lk_status lk_resize_chw(const float *src, int c, int h, int w, float *dst, int oh, int ow,
                        lk_resize_filter filter) {
    if (!src || !dst || c < 1 || !dim_ok(h) || !dim_ok(w) || !dim_ok(oh) || !dim_ok(ow))
        return lk_fail(LK_ERR_INVALID, "resize_chw: bad arguments (c=%d %dx%d -> %dx%d)", c, w, h,
                       ow, oh);
    if (filter < LK_RESIZE_AUTO || filter > LK_RESIZE_LANCZOS3)
        return lk_fail(LK_ERR_INVALID, "resize_chw: unknown filter %d", (int)filter);
    filter = resolve(filter, w, h, ow, oh);
    for (int k = 0; k < c; k++) {
        rs_src s = {.f32 = src + (size_t)k * h * w, .w = w, .h = h, .c = 1, .row = (size_t)w};
        lk_status st = resample(&s, ow, oh, 0, 0, ow, oh, filter, dst + (size_t)k * oh * ow);
        if (st != LK_OK) return st;
    }
    return LK_OK;
}

static uint8_t to_u8(float v) {
    if (!(v > 0.0f)) return 0;
    if (v >= 255.0f) return 255;
    return (uint8_t)(v + 0.5f);
}

lk_status lk_image_resize(const lk_image *src, int ow, int oh, lk_resize_filter filter,
                          lk_image *dst) {
    if (!image_ok(src) || !dst || dst == src || !dim_ok(ow) || !dim_ok(oh))
        return lk_fail(LK_ERR_INVALID, "image_resize: bad arguments (-> %dx%d)", ow, oh);
    if (filter < LK_RESIZE_AUTO || filter > LK_RESIZE_LANCZOS3)
        return lk_fail(LK_ERR_INVALID, "image_resize: unknown filter %d", (int)filter);
    memset(dst, 0, sizeof *dst);
    const size_t n = (size_t)ow * (size_t)oh * (size_t)src->c;
    float *f = malloc(n * sizeof *f);
    if (!f) return lk_fail(LK_ERR_NOMEM, "image_resize: out of memory");
    rs_src s = {.u8 = src->px, .w = src->w, .h = src->h, .c = src->c,
                .row = (size_t)src->w * (size_t)src->c};
    lk_status st = resample(&s, ow, oh, 0, 0, ow, oh, resolve(filter, src->w, src->h, ow, oh), f);
    if (st == LK_OK) st = lk_image_alloc(dst, ow, oh, src->c);
    if (st == LK_OK)
        for (size_t i = 0; i < n; i++) dst->px[i] = to_u8(f[i]);
    free(f);
    return st;
}

lk_status lk_image_crop(const lk_image *src, int x0, int y0, int cw, int ch, lk_image *dst) {
    if (!image_ok(src) || !dst || dst == src)
        return lk_fail(LK_ERR_INVALID, "image_crop: invalid image");
    if (cw < 1 || ch < 1 || x0 < 0 || y0 < 0 || x0 > src->w - cw || y0 > src->h - ch)
        return lk_fail(LK_ERR_INVALID, "image_crop: rectangle %d,%d %dx%d outside the %dx%d image",
                       x0, y0, cw, ch, src->w, src->h);
    lk_status st = lk_image_alloc(dst, cw, ch, src->c);
    if (st != LK_OK) return st;
    const size_t rb = (size_t)cw * src->c;
    for (int y = 0; y < ch; y++)
        memcpy(dst->px + (size_t)y * rb,
               src->px + ((size_t)(y0 + y) * src->w + (size_t)x0) * src->c, rb);
    return LK_OK;
}

void lk_image_flip_h(lk_image *img) {
    if (!image_ok(img)) return;
    const int c = img->c, w = img->w;
    for (int y = 0; y < img->h; y++) {
        uint8_t *row = img->px + (size_t)y * w * c;
        for (int a = 0, b = w - 1; a < b; a++, b--)
            for (int k = 0; k < c; k++) {
                uint8_t t = row[a * c + k];
                row[a * c + k] = row[b * c + k];
                row[b * c + k] = t;
            }
    }
}

/* Python's round(d / 2) (half to even), d >= 0: torchvision's center-crop offset. */
static int half_even_div2(int d) {
    int k = d / 2;
    if (d % 2 == 0) return k;
    return (k % 2 == 0) ? k : k + 1;
}

static lk_status draw_below(lk_rng *rng, int n, int *out) { /* torch.randint(0, n, (1,)) */
    int64_t v = 0;
    lk_status st = lk_rng_randint(rng, 0, n, &v, 1);
    *out = (int)v;
    return st;
}

lk_status lk_image_prepare_rect(const lk_image *img, int tw, int th, lk_crop_mode crop,
                                lk_flip_mode flip, lk_rng *rng, float *chw_out) {
    if (!image_ok(img) || !chw_out || !dim_ok(tw) || !dim_ok(th))
        return lk_fail(LK_ERR_INVALID, "image_prepare: bad arguments (target %dx%d)", tw, th);
    if ((crop != LK_CROP_CENTER && crop != LK_CROP_RANDOM) ||
        (flip != LK_FLIP_NONE && flip != LK_FLIP_ALWAYS && flip != LK_FLIP_RANDOM))
        return lk_fail(LK_ERR_INVALID, "image_prepare: unknown crop %d or flip %d", (int)crop,
                       (int)flip);
    if (!rng && (crop == LK_CROP_RANDOM || flip == LK_FLIP_RANDOM))
        return lk_fail(LK_ERR_INVALID, "image_prepare: random crop/flip needs an rng");
    const int w = img->w, h = img->h;
    int nw, nh; /* the resized (covering) size */
    if ((int64_t)w * th >= (int64_t)h * tw) {
        nh = th;
        nw = (int)((int64_t)th * w / h);
        if (nw < tw) nw = tw;
    } else {
        nw = tw;
        nh = (int)((int64_t)tw * h / w);
        if (nh < th) nh = th;
    }
    int x0 = 0, y0 = 0;
    lk_status st = LK_OK;
    if (crop == LK_CROP_CENTER) {
        y0 = half_even_div2(nh - th);
        x0 = half_even_div2(nw - tw);
    } else if (nh != th || nw != tw) {
        st = draw_below(rng, nh - th + 1, &y0);
        if (st == LK_OK) st = draw_below(rng, nw - tw + 1, &x0);
        if (st != LK_OK) return st;
    }
    bool mirror = flip == LK_FLIP_ALWAYS;
    if (flip == LK_FLIP_RANDOM) {
        float u;
        lk_rng_rand(rng, &u, 1);
        mirror = u < 0.5f;
    }
    lk_image rgb = {0};
    const lk_image *src = img;
    if (img->c == 4) {
        if ((st = lk_image_copy(&rgb, img)) != LK_OK) return st;
        if ((st = lk_image_set_channels(&rgb, 3, NULL)) != LK_OK) {
            lk_image_free(&rgb);
            return st;
        }
        src = &rgb;
    }
    const size_t npx = (size_t)tw * (size_t)th;
    float *f = malloc(npx * 3 * sizeof *f);
    if (!f) {
        lk_image_free(&rgb);
        return lk_fail(LK_ERR_NOMEM, "image_prepare: out of memory");
    }
    rs_src s = {.u8 = src->px, .w = w, .h = h, .c = 3, .row = (size_t)w * 3};
    st = resample(&s, nw, nh, x0, y0, tw, th, resolve(LK_RESIZE_AUTO, w, h, nw, nh), f);
    if (st == LK_OK) {
        for (int y = 0; y < th; y++)
            for (int x = 0; x < tw; x++) {
                const float *p = f + ((size_t)y * tw + (size_t)(mirror ? tw - 1 - x : x)) * 3;
                for (int k = 0; k < 3; k++) {
                    float v = p[k];
                    if (!(v > 0.0f)) v = 0.0f;
                    if (v > 255.0f) v = 255.0f;
                    chw_out[(size_t)k * npx + (size_t)y * tw + x] = v / 127.5f - 1.0f;
                }
            }
    }
    free(f);
    lk_image_free(&rgb);
    return st;
}

lk_status lk_image_prepare(const lk_image *img, int size, lk_crop_mode crop, lk_flip_mode flip,
                           lk_rng *rng, float *chw_out) {
    return lk_image_prepare_rect(img, size, size, crop, flip, rng, chw_out);
}
