/* image_jpeg.c: JPEG decoding to 8-bit RGB on libjpeg-turbo (ITU-T T.81 / JFIF): gray, YCbCr,
 * RGB, and CMYK/YCCK (Adobe APP14 marks inverted CMYK, as Photoshop writes it); the EXIF
 * orientation of the APP1 segment is returned for the caller to apply. */
#include "image_internal.h"

#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jpeglib.h>
#include <jerror.h>

#define LK_JPEG_MAX_SCANS 500 /* progressive files with more scans are refused (CPU DoS) */

typedef struct jpeg_dec {
    struct jpeg_error_mgr pub; /* first: cinfo->err points here */
    jmp_buf jb;
    char msg[JMSG_LENGTH_MAX + 32];
    bool truncated;
    bool created;
    struct jpeg_decompress_struct cinfo;
    struct jpeg_progress_mgr progress;
    uint8_t *row; /* CMYK scanline */
    lk_image *img;
} jpeg_dec;

static void jpeg_fatal(j_common_ptr cinfo) {
    jpeg_dec *d = (jpeg_dec *)cinfo->err;
    (*cinfo->err->format_message)(cinfo, d->msg);
    longjmp(d->jb, 1);
}

/* Warnings that mean the pixels are wrong (truncated or corrupt entropy data) are errors. */
static void jpeg_message(j_common_ptr cinfo, int level) {
    if (level >= 0) return; /* trace messages */
    jpeg_dec *d = (jpeg_dec *)cinfo->err;
    const int code = cinfo->err->msg_code;
    if (code == JWRN_JPEG_EOF) {
        d->truncated = true;
        longjmp(d->jb, 1);
    }
    if (code == JWRN_HIT_MARKER || code == JWRN_MUST_RESYNC || code == JWRN_HUFF_BAD_CODE ||
        code == JWRN_ARITH_BAD_CODE)
        jpeg_fatal(cinfo);
    /* others (extraneous bytes before a marker, odd Adobe transform, ...) are tolerated */
}

static void jpeg_progress(j_common_ptr cinfo) {
    if (!cinfo->is_decompressor) return;
    j_decompress_ptr dc = (j_decompress_ptr)cinfo;
    if (dc->input_scan_number > LK_JPEG_MAX_SCANS) {
        jpeg_dec *d = (jpeg_dec *)cinfo->err;
        snprintf(d->msg, sizeof d->msg, "more than %d progressive scans", LK_JPEG_MAX_SCANS);
        longjmp(d->jb, 1);
    }
}

/* The orientation in the first APP1 "Exif" segment, 0 if none. */
static int exif_from_markers(j_decompress_ptr cinfo) {
    for (jpeg_saved_marker_ptr m = cinfo->marker_list; m; m = m->next) {
        if (m->marker == JPEG_APP0 + 1 && m->data_length >= 6 &&
            memcmp(m->data, "Exif\0\0", 6) == 0)
            return lk_exif_orientation(m->data, m->data_length);
    }
    return 0;
}

/* Runs the libjpeg calls; setjmp lives here and touches only *d afterwards. */
static lk_status jpeg_run(jpeg_dec *d, const uint8_t *data, size_t size, const char *name,
                          int64_t max_pixels, bool header_only, int *orientation) {
    if (setjmp(d->jb)) {
        if (d->truncated) return lk_fail(LK_ERR_FORMAT, "%s: truncated JPEG data", name);
        return lk_fail(LK_ERR_FORMAT, "%s: JPEG: %s", name, d->msg);
    }
    j_decompress_ptr ci = &d->cinfo;
    jpeg_create_decompress(ci);
    d->created = true;
    /* bounds libjpeg's whole-image buffers (progressive coefficients: <= 8 bytes a pixel) */
    ci->mem->max_memory_to_use = (long)(max_pixels * 8 + (32L << 20));
    d->progress.progress_monitor = jpeg_progress;
    ci->progress = &d->progress;
    jpeg_mem_src(ci, data, (unsigned long)size);
    jpeg_save_markers(ci, JPEG_APP0 + 1, 0xffff);
    jpeg_read_header(ci, TRUE);
    lk_status s = lk__image_check_size(name, "JPEG", (int64_t)ci->image_width,
                                       (int64_t)ci->image_height, max_pixels);
    if (s != LK_OK) return s;
    *orientation = exif_from_markers(ci);
    bool cmyk = false;
    switch (ci->jpeg_color_space) {
    case JCS_GRAYSCALE:
    case JCS_YCbCr:
    case JCS_RGB: ci->out_color_space = JCS_RGB; break;
    case JCS_CMYK:
    case JCS_YCCK:
        ci->out_color_space = JCS_CMYK;
        cmyk = true;
        break;
    default:
        return lk_fail(LK_ERR_UNSUPPORTED, "%s: JPEG with %d components in an unknown colour space",
                       name, ci->num_components);
    }
    if (header_only) {
        d->img->w = (int)ci->image_width;
        d->img->h = (int)ci->image_height;
        d->img->c = 3;
        return LK_OK;
    }
    jpeg_start_decompress(ci);
    const int w = (int)ci->output_width, h = (int)ci->output_height;
    if (w != (int)ci->image_width || h != (int)ci->image_height ||
        ci->output_components != (cmyk ? 4 : 3))
        return lk_fail(LK_ERR_FORMAT, "%s: JPEG: unexpected output layout", name);
    if ((s = lk_image_alloc(d->img, w, h, 3)) != LK_OK) return lk_fail_prefix(s, "%s: ", name);
    if (cmyk && !(d->row = malloc((size_t)w * 4)))
        return lk_fail(LK_ERR_NOMEM, "%s: out of memory", name);
    const bool inverted = ci->saw_Adobe_marker; /* Adobe: stored values are 255 - ink */
    while (ci->output_scanline < ci->output_height) {
        uint8_t *dst = d->img->px + (size_t)ci->output_scanline * (size_t)w * 3;
        JSAMPROW rp = cmyk ? d->row : dst;
        if (jpeg_read_scanlines(ci, &rp, 1) != 1)
            return lk_fail(LK_ERR_FORMAT, "%s: truncated JPEG data", name);
        if (!cmyk) continue;
        for (int x = 0; x < w; x++) {
            const uint8_t *p = d->row + 4 * x;
            unsigned k = inverted ? p[3] : 255u - p[3];
            for (int j = 0; j < 3; j++) {
                unsigned v = inverted ? p[j] : 255u - p[j];
                dst[3 * x + j] = (uint8_t)((v * k + 127u) / 255u);
            }
        }
    }
    jpeg_finish_decompress(ci); /* reads to EOI: a missing end is reported as truncation */
    return LK_OK;
}

lk_status lk__jpeg_decode(const uint8_t *data, size_t size, const char *name, int64_t max_pixels,
                          bool header_only, lk_image *out, int *orientation) {
    jpeg_dec *d = calloc(1, sizeof *d);
    memset(out, 0, sizeof *out);
    int orient = 0;
    if (!d) return lk_fail(LK_ERR_NOMEM, "%s: out of memory", name);
    d->img = out;
    d->cinfo.err = jpeg_std_error(&d->pub);
    d->pub.error_exit = jpeg_fatal;
    d->pub.emit_message = jpeg_message;
    if (max_pixels <= 0) max_pixels = LK_IMAGE_DEFAULT_MAX_PIXELS;
    if (max_pixels > (int64_t)LK_IMAGE_MAX_DIM * LK_IMAGE_MAX_DIM) /* the same limit, no overflow */
        max_pixels = (int64_t)LK_IMAGE_MAX_DIM * LK_IMAGE_MAX_DIM;
    lk_status s = jpeg_run(d, data, size, name, max_pixels, header_only, &orient);
    if (d->created) jpeg_destroy_decompress(&d->cinfo);
    free(d->row);
    free(d);
    if (s != LK_OK) {
        lk_image_free(out);
        orient = 0;
    }
    if (orientation) *orientation = orient;
    return s;
}
