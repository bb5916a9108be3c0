/* image_internal.h: the per-format decoders behind lk_image_decode (src/io/image*.c).
 * Each decodes to the file's native layout: c = 4 when the file has alpha, else 3. */
#ifndef LK_IMAGE_INTERNAL_H
#define LK_IMAGE_INTERNAL_H

#include "likeness/image.h"

/* Refuse w x h beyond LK_IMAGE_MAX_DIM or max_pixels (LK_ERR_UNSUPPORTED), or < 1
 * (LK_ERR_FORMAT), with a message "name: FMT image of WxH ...". */
lk_status lk__image_check_size(const char *name, const char *fmt, int64_t w, int64_t h,
                               int64_t max_pixels);

/* header_only: set out->w/h/c only (px NULL). text (PNG, optional) receives the text chunks.
 * orientation (JPEG, optional) receives the EXIF orientation (0 when absent). On failure *out
 * is zeroed and *text empty. */
lk_status lk__png_decode(const uint8_t *data, size_t size, const char *name, int64_t max_pixels,
                         bool header_only, lk_image *out, lk_image_texts *text);
lk_status lk__jpeg_decode(const uint8_t *data, size_t size, const char *name,
                          int64_t max_pixels, bool header_only, lk_image *out, int *orientation);
lk_status lk__webp_decode(const uint8_t *data, size_t size, const char *name,
                          int64_t max_pixels, bool header_only, lk_image *out);

#endif
