/* image_webp.c: still-WebP decoding (lossy VP8, lossless VP8L, ALPH alpha) to 8-bit RGB/RGBA on
 * libwebp's advanced decoding API, into memory we allocate after checking the size caps. */
#include "image_internal.h"

#include <string.h>

#include <webp/decode.h>

static lk_status webp_status(VP8StatusCode st, const char *name) {
    switch (st) {
    case VP8_STATUS_NOT_ENOUGH_DATA: return lk_fail(LK_ERR_FORMAT, "%s: truncated WebP data", name);
    case VP8_STATUS_OUT_OF_MEMORY: return lk_fail(LK_ERR_NOMEM, "%s: out of memory (WebP)", name);
    case VP8_STATUS_UNSUPPORTED_FEATURE:
        return lk_fail(LK_ERR_UNSUPPORTED, "%s: unsupported WebP feature", name);
    case VP8_STATUS_BITSTREAM_ERROR: return lk_fail(LK_ERR_FORMAT, "%s: corrupt WebP bitstream", name);
    default: return lk_fail(LK_ERR_FORMAT, "%s: invalid WebP data (status %d)", name, (int)st);
    }
}

lk_status lk__webp_decode(const uint8_t *data, size_t size, const char *name, int64_t max_pixels,
                          bool header_only, lk_image *out) {
    memset(out, 0, sizeof *out);
    WebPDecoderConfig cfg;
    if (!WebPInitDecoderConfig(&cfg)) return lk_fail(LK_ERR_UNSUPPORTED, "%s: libwebp version mismatch", name);
    VP8StatusCode st = WebPGetFeatures(data, size, &cfg.input);
    if (st != VP8_STATUS_OK) return webp_status(st, name);
    if (cfg.input.has_animation)
        return lk_fail(LK_ERR_UNSUPPORTED, "%s: animated WebP is not supported", name);
    lk_status s = lk__image_check_size(name, "WebP", cfg.input.width, cfg.input.height, max_pixels);
    if (s != LK_OK) return s;
    const int c = cfg.input.has_alpha ? 4 : 3;
    if (header_only) {
        out->w = cfg.input.width;
        out->h = cfg.input.height;
        out->c = c;
        return LK_OK;
    }
    if ((s = lk_image_alloc(out, cfg.input.width, cfg.input.height, c)) != LK_OK)
        return lk_fail_prefix(s, "%s: ", name);
    cfg.output.colorspace = c == 4 ? MODE_RGBA : MODE_RGB;
    cfg.output.is_external_memory = 1;
    cfg.output.u.RGBA.rgba = out->px;
    cfg.output.u.RGBA.stride = out->w * c;
    cfg.output.u.RGBA.size = (size_t)out->w * (size_t)out->h * (size_t)c;
    st = WebPDecode(data, size, &cfg);
    WebPFreeDecBuffer(&cfg.output);
    if (st != VP8_STATUS_OK) {
        lk_image_free(out);
        return webp_status(st, name);
    }
    return LK_OK;
}
