/* fuzz_image.c: libFuzzer target for the image decoders (lk_image_decode over PNG / JPEG / WebP
 * from memory, EXIF parsing, probing, resizing of what decodes): any input must decode to a
 * consistent image or be refused with a message naming it, never crash, overread or leak. */
#include "likeness/image.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_MAX_PIXELS (1 << 20) /* keeps libjpeg's whole-image buffers small */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    /* an exact-size copy so ASan sees any read past the end */
    uint8_t *buf = malloc(size ? size : 1);
    if (!buf) return 0;
    if (size) memcpy(buf, data, size);

    int o = lk_exif_orientation(buf, size);
    if (o < 0 || o > 8) abort();

    lk_image_texts tx = {0};
    lk_image_load_opts opts = {0};
    opts.channels = (int)(size % 3) == 0 ? 0 : (int)(size % 3) + 2; /* 0, 3 or 4 */
    opts.ignore_orientation = (size & 4) != 0;
    opts.max_pixels = FUZZ_MAX_PIXELS;
    opts.text = &tx;
    lk_image img;
    lk_status s = lk_image_decode(&img, buf, size, "fuzz", &opts);
    int pw = 0, ph = 0;
    lk_status ps = lk_image_probe(buf, size, "fuzz", &opts, NULL, &pw, &ph);
    if (s == LK_OK) {
        if (!img.px || img.w < 1 || img.h < 1 || (img.c != 3 && img.c != 4)) abort();
        if ((int64_t)img.w * img.h > FUZZ_MAX_PIXELS) abort();
        if (opts.channels && img.c != opts.channels) abort();
        if (ps != LK_OK || pw != img.w || ph != img.h) abort();
        unsigned sum = 0; /* touch every byte */
        for (size_t i = 0; i < (size_t)img.w * img.h * img.c; i++) sum += img.px[i];
        (void)sum;
        for (int i = 0; i < tx.n; i++)
            if (!tx.items[i].key || !tx.items[i].value || lk_image_texts_get(&tx, tx.items[i].key) == NULL)
                abort();
        lk_image small;
        if (lk_image_resize(&img, 1 + (int)(size % 13), 1 + (int)(size % 7), LK_RESIZE_AUTO, &small) != LK_OK)
            abort();
        lk_image_free(&small);
        float chw[3 * 8 * 8];
        if (lk_image_prepare(&img, 8, LK_CROP_CENTER, LK_FLIP_ALWAYS, NULL, chw) != LK_OK) abort();
        lk_image_free(&img);
    } else {
        if (img.px || img.w || tx.n || tx.items || strncmp(lk_last_error(), "fuzz", 4) != 0) abort();
    }
    lk_image_texts_free(&tx);
    free(buf);
    return 0;
}
