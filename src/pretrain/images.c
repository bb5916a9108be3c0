/* images.c: the pretraining split of the EmojiBench data set, decoded once into memory (64x64
 * RGB bytes per image), and its conversion to the networks' [-1, 1] planar floats. */
#include "pretrain/pretrain_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void lk__pt_images_free(lk__pt_images *im) {
    if (!im) return;
    free(im->concept);
    free(im->style);
    free(im->pixels);
    memset(im, 0, sizeof *im);
}

lk_status lk__pt_images_load(lk__pt_images *im, const lk_emoji_set *set, bool evaluator) {
    memset(im, 0, sizeof *im);
    const int nc = lk_emoji_set_n_concepts(set), ns = lk_emoji_set_n_styles(set);
    int n = 0;
    for (int pass = 0; pass < 2; pass++) {
        n = 0;
        for (int c = 0; c < nc; c++) {
            const lk_emoji_concept *k = lk_emoji_set_concept(set, c);
            if (!evaluator && k->heldout) continue;
            for (int s = 0; s < ns; s++) {
                if (!(k->style_mask & (1u << s))) continue;
                if (!evaluator && !lk_emoji_set_style_trainable(set, s)) continue;
                if (pass) {
                    im->concept[n] = c;
                    im->style[n] = s;
                }
                n++;
            }
        }
        if (!pass) {
            if (n == 0) return lk_fail(LK_ERR_FORMAT, "%s: no training images in the split",
                                       lk_emoji_set_dir(set));
            im->concept = malloc(sizeof(int) * (size_t)n);
            im->style = malloc(sizeof(int) * (size_t)n);
            im->pixels = malloc((size_t)n * LK_PT_IMAGE * LK_PT_IMAGE * 3);
            if (!im->concept || !im->style || !im->pixels) {
                lk__pt_images_free(im);
                return lk_fail(LK_ERR_NOMEM, "out of memory for %d images", n);
            }
        }
    }
    im->n = n;
    lk_status s = LK_OK;
    char msg[512] = "";
#pragma omp parallel for schedule(dynamic, 16)
    for (int i = 0; i < n; i++) {
        if (s != LK_OK) continue;
        lk_status si = lk_emoji_set_load_image(set, im->concept[i], im->style[i], LK_PT_IMAGE,
                                               im->pixels + (size_t)i * LK_PT_IMAGE * LK_PT_IMAGE * 3);
        if (si != LK_OK) {
#pragma omp critical(lk_pt_images)
            if (s == LK_OK) {
                s = si;
                snprintf(msg, sizeof msg, "%s", lk_last_error());
            }
        }
    }
    if (s != LK_OK) {
        lk__pt_images_free(im);
        return lk_fail(s, "%s", msg);
    }
    return LK_OK;
}

void lk__pt_image_to_f32(const uint8_t *rgb, float *out, int down, int x0, int y0, int crop) {
    const int S = LK_PT_IMAGE / down, side = crop > 0 ? crop : S;
    for (int c = 0; c < 3; c++)
        for (int y = 0; y < side; y++)
            for (int x = 0; x < side; x++) {
                int acc = 0;
                for (int dy = 0; dy < down; dy++)
                    for (int dx = 0; dx < down; dx++) {
                        const int yy = (y0 + y) * down + dy, xx = (x0 + x) * down + dx;
                        acc += rgb[((size_t)yy * LK_PT_IMAGE + xx) * 3 + c];
                    }
                out[((size_t)c * side + y) * side + x] =
                    (float)acc / (127.5f * (float)(down * down)) - 1.0f;
            }
}
