/* likeness/image.h: 8-bit RGB/RGBA images: decoding PNG / JPEG / WebP (strict, size-capped),
 * PNG encoding with text chunks, float CHW conversion, resizing (area, Lanczos-3), crops, flips
 * and the trainer's resize-crop-flip preparation (torchvision Resize/CenterCrop/RandomCrop). */
#ifndef LIKENESS_IMAGE_H
#define LIKENESS_IMAGE_H

#include "likeness/core.h"
#include "likeness/rng.h"

#ifdef __cplusplus
extern "C" {
#endif

/* An image: h rows of w pixels of c interleaved 8-bit channels (3: RGB, 4: RGBA with straight,
 * not premultiplied, alpha), row-major, no row padding: pixel (x, y) channel k is
 * px[((size_t)y * w + x) * c + k]. px is malloc'd and owned by the image (lk_image_free). */
typedef struct lk_image {
    int w, h, c;
    uint8_t *px; /* (H, W, C) */
} lk_image;

typedef enum lk_image_format {
    LK_IMAGE_UNKNOWN = 0,
    LK_IMAGE_PNG = 1,
    LK_IMAGE_JPEG = 2,
    LK_IMAGE_WEBP = 3,
} lk_image_format;

#define LK_IMAGE_MAX_DIM 16384                     /* width and height cap */
#define LK_IMAGE_DEFAULT_MAX_PIXELS (1LL << 27)     /* 134 M pixels (an RGBA copy: 512 MiB) */
#define LK_IMAGE_MAX_FILE_BYTES (1LL << 30)         /* lk_image_load refuses larger files */

/* ---- text chunks (PNG tEXt / zTXt / iTXt) ---- */
typedef struct lk_image_text {
    char *key;   /* UTF-8 (PNG keys are Latin-1; converted) */
    char *value; /* UTF-8 (tEXt/zTXt Latin-1 converted; iTXt as stored) */
} lk_image_text;

typedef struct lk_image_texts {
    lk_image_text *items; /* n entries, in file order; owned (lk_image_texts_free) */
    int n;
} lk_image_texts;

void lk_image_texts_free(lk_image_texts *t); /* frees the entries and zeroes *t; accepts NULL */
/* The value of the first entry with this key, or NULL. Borrowed from t. */
const char *lk_image_texts_get(const lk_image_texts *t, const char *key);

/* ---- decoding ---- */
/* Options. A zero-initialised struct (or NULL) means: keep the file's channels, composite over
 * white, apply the JPEG EXIF orientation, LK_IMAGE_DEFAULT_MAX_PIXELS, no text. */
typedef struct lk_image_load_opts {
    int channels;            /* 0: 3 (RGB) or 4 (RGBA) as the file has alpha; 3: RGB, alpha
                                composited over the background; 4: RGBA (opaque files get 255) */
    bool use_background;     /* false: composite over white */
    uint8_t background[3];   /* RGB background when use_background */
    bool ignore_orientation; /* true: do not apply the EXIF orientation of JPEG files */
    int64_t max_pixels;      /* w*h cap; 0: LK_IMAGE_DEFAULT_MAX_PIXELS */
    lk_image_texts *text;    /* optional out: the PNG text chunks (other formats: none). Freed
                                and overwritten on entry; left empty on failure */
} lk_image_load_opts;

/* The format from the first bytes (PNG signature, JPEG SOI + marker, RIFF....WEBP).
 * Never fails; LK_IMAGE_UNKNOWN for anything else or too few bytes. */
lk_image_format lk_image_sniff(const void *data, size_t size);
const char *lk_image_format_name(lk_image_format f); /* "PNG", "JPEG", "WebP", "unknown" */

/* Decode an image held in memory (borrowed; only read during the call). name labels the
 * data in error messages ("photo.jpg: truncated JPEG data"); NULL means "image".
 * Accepts PNG (all bit depths, palette, gray, gray+alpha, tRNS, interlaced; 16-bit channels
 * scaled to 8 with rounding; gamma/ICC chunks ignored), baseline and progressive JPEG (gray,
 * YCbCr/RGB, CMYK/YCCK with Adobe inversion detected; EXIF orientation 1-8 applied), and still
 * WebP (lossy, lossless, alpha). Truncated or corrupt data -> LK_ERR_FORMAT (libjpeg's
 * "premature end"/"corrupt data" warnings count as errors); a size beyond LK_IMAGE_MAX_DIM or
 * max_pixels -> LK_ERR_UNSUPPORTED before any pixel memory is allocated; another format (GIF,
 * BMP, ...) or animated WebP -> LK_ERR_UNSUPPORTED. On success *out owns new pixels; on failure
 * *out is zeroed and nothing leaks. Thread-safe (no global state). */
lk_status lk_image_decode(lk_image *out, const void *data, size_t size, const char *name,
                          const lk_image_load_opts *opts);
/* Read a whole file (up to LK_IMAGE_MAX_FILE_BYTES) and decode it; messages name path. */
lk_status lk_image_load(lk_image *out, const char *path, const lk_image_load_opts *opts);

/* Format and displayed size (after the EXIF orientation unless ignore_orientation) from the
 * headers alone, without decoding pixels: for bucketing a dataset by aspect ratio. The options
 * read are ignore_orientation and max_pixels; the same caps and header errors as
 * lk_image_decode; any of fmt/w/h may be NULL. */
lk_status lk_image_probe(const void *data, size_t size, const char *name,
                         const lk_image_load_opts *opts, lk_image_format *fmt, int *w, int *h);

/* EXIF orientation (1-8) from a TIFF-structured EXIF block: the payload of a JPEG APP1 segment
 * starting "Exif\0\0" (that prefix is optional). Strict and bounds-checked: returns 0 when the
 * block is malformed, has no IFD0 orientation tag, or the value is outside 1-8. Never fails. */
int lk_exif_orientation(const uint8_t *data, size_t size);
/* Apply an EXIF orientation in place (2: mirror, 3: rotate 180, 4: flip vertically,
 * 5: transpose, 6: rotate 90 clockwise, 7: transverse, 8: rotate 90 counter-clockwise); w and
 * h swap for 5-8. 0 and 1 do nothing. LK_ERR_INVALID for another value, LK_ERR_NOMEM. */
lk_status lk_image_orient(lk_image *img, int orientation);

/* ---- basic ---- */
/* Allocate an uninitialised w x h x c image (c 3 or 4, 1 <= w,h <= LK_IMAGE_MAX_DIM). */
lk_status lk_image_alloc(lk_image *img, int w, int h, int c);
void lk_image_free(lk_image *img); /* frees px and zeroes *img; accepts NULL */
/* A deep copy (dst is overwritten, not freed). */
lk_status lk_image_copy(lk_image *dst, const lk_image *src);
/* Convert to c = 3 or 4 channels in place: RGBA -> RGB composites over bg (NULL: white) with
 * rounding, out = (a*fg + (255-a)*bg) / 255; RGB -> RGBA adds alpha 255. */
lk_status lk_image_set_channels(lk_image *img, int c, const uint8_t bg[3]);

/* ---- float conversion ---- */
typedef enum lk_image_range {
    LK_RANGE_UNIT = 0,      /* [0, 1]: v / 255 */
    LK_RANGE_SYMMETRIC = 1, /* [-1, 1]: v / 127.5 - 1 (the Stable Diffusion VAE's input) */
} lk_image_range;

/* Write the c planes of img as floats (C, H, W) into chw (c*h*w floats). */
lk_status lk_image_to_chw(const lk_image *img, lk_image_range range, float *chw);
/* Make an image from (C, H, W) floats, c 3 or 4: x clamped to the range, then
 * round-half-even(x01 * 255) as diffusers' numpy_to_pil ((x/2+0.5).clamp(0,1)*255).round().
 * NaN becomes 0. *img is overwritten (not freed). */
lk_status lk_image_from_chw(lk_image *img, const float *chw, int c, int h, int w,
                            lk_image_range range);

/* ---- PNG encoding ---- */
#define LK_PNG_LEVEL_DEFAULT (-1)
typedef struct lk_png_write_opts {
    int level;                  /* zlib level 0-9; LK_PNG_LEVEL_DEFAULT: 6 */
    const lk_image_text *text;  /* n_text key/value pairs, borrowed; e.g. A1111 "parameters" */
    int n_text;
} lk_png_write_opts;

/* Encode img (c 3 or 4, 8-bit) as PNG into a malloc'd buffer *out of *size bytes (caller
 * frees). Keys must be 1-79 printable ASCII characters without leading, trailing or double
 * spaces; values must be valid UTF-8: pure ASCII values are written as tEXt, others as iTXt.
 * NULL opts: default level, no text. LK_ERR_INVALID for a bad key/value/image. */
lk_status lk_image_encode_png(const lk_image *img, const lk_png_write_opts *opts, uint8_t **out,
                              size_t *size);
/* Encode and write atomically: PATH.tmp.<pid>, fsync, rename over path (the temporary file is
 * removed on failure). LK_ERR_IO names the path and the failing step. */
lk_status lk_image_save_png(const lk_image *img, const char *path, const lk_png_write_opts *opts);

/* ---- resizing, cropping, flipping (src/image/resize.c) ---- */
/* Filters work on the stored (gamma-encoded, sRGB-agnostic) values in f32, like PIL and
 * torchvision; alpha is resampled as a plain channel (not premultiplied).
 *   AREA: each output pixel is the area-weighted mean of the source pixels its footprint covers
 *     (exact box averaging = torch F.interpolate(mode="area") for integer factors; a true area
 *     average, not adaptive pooling, otherwise). Meant for downscaling.
 *   LANCZOS3: separable Lanczos-3 (sinc(x) sinc(x/3), |x| < 3) sampled at pixel centres, with the
 *     kernel widened by the scale factor when downscaling (antialiasing) and weights renormalised
 *     at the borders (PIL's Image.LANCZOS convention).
 *   AUTO: AREA when each dimension shrinks by an integer factor, else LANCZOS3. */
typedef enum lk_resize_filter {
    LK_RESIZE_AUTO = 0,
    LK_RESIZE_AREA = 1,
    LK_RESIZE_LANCZOS3 = 2,
} lk_resize_filter;

/* Resize planar float data: c planes of (h, w) -> c planes of (oh, ow). No clamping.
 * src and dst must not overlap. LK_ERR_INVALID for sizes < 1 or above LK_IMAGE_MAX_DIM. */
lk_status lk_resize_chw(const float *src, int c, int h, int w, float *dst, int oh, int ow,
                        lk_resize_filter filter);
/* Resize an 8-bit image to ow x oh (results rounded and clamped to 0-255). *dst is overwritten
 * (not freed) and may not be src. */
lk_status lk_image_resize(const lk_image *src, int ow, int oh, lk_resize_filter filter,
                          lk_image *dst);
/* Copy the rectangle x0 <= x < x0+cw, y0 <= y < y0+ch into *dst (overwritten, not freed).
 * LK_ERR_INVALID unless the rectangle lies inside src and is non-empty. */
lk_status lk_image_crop(const lk_image *src, int x0, int y0, int cw, int ch, lk_image *dst);
/* Mirror left-right in place. */
void lk_image_flip_h(lk_image *img);

typedef enum lk_crop_mode {
    LK_CROP_CENTER = 0, /* torchvision CenterCrop: offset round((H - th) / 2), half to even */
    LK_CROP_RANDOM = 1, /* torchvision RandomCrop: top = randint(0, H-th+1), then left */
} lk_crop_mode;

typedef enum lk_flip_mode {
    LK_FLIP_NONE = 0,
    LK_FLIP_ALWAYS = 1,
    LK_FLIP_RANDOM = 2, /* torchvision RandomHorizontalFlip(0.5): flip if torch.rand(1) < 0.5 */
} lk_flip_mode;

/* The trainer's image pipeline, as diffusers' train scripts with torchvision:
 * Resize(size) (shorter side -> size, longer side -> floor(size * long / short)), then
 * Center/RandomCrop(size), then the flip, then ToTensor + Normalize(0.5, 0.5): writes
 * (3, size, size) floats in [-1, 1] to chw_out. Only the cropped window is resampled (same
 * values as resizing everything and cropping). Filter: AUTO; the resampled values are clamped
 * to [0, 255] but not rounded to 8 bits (PIL would round) before normalising; RGBA input is composited over white. rng (needed only for
 * LK_CROP_RANDOM / LK_FLIP_RANDOM) is drawn in torchvision's order: crop top, crop left (only
 * when the resized image is larger than the crop), then the flip's uniform. */
lk_status lk_image_prepare(const lk_image *img, int size, lk_crop_mode crop, lk_flip_mode flip,
                           lk_rng *rng, float *chw_out);
/* The same for a tw x th target (aspect-ratio buckets): the image is scaled by
 * max(tw/w, th/h) so that it covers the target (the covering side exactly, the other side
 * floor()'d but at least the target), then cropped and flipped as above. Writes (3, th, tw).
 * lk_image_prepare(img, s, ...) == lk_image_prepare_rect(img, s, s, ...). */
lk_status lk_image_prepare_rect(const lk_image *img, int tw, int th, lk_crop_mode crop,
                                lk_flip_mode flip, lk_rng *rng, float *chw_out);

#ifdef __cplusplus
}
#endif
#endif
