/* emoji_fixture.c: the synthetic EmojiBench data set of the tests (emoji_fixture.h): shapes drawn
 * per pixel in four styles, the manifest written with the counts scripts/emoji_dataset/ records;
 * short pretraining runs' settings. */
#define _POSIX_C_SOURCE 200809L
#include "emoji_fixture.h"
#include "likeness/image.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

const char *const LK_T_EMOJI_STYLES[LK_T_EMOJI_NSTYLES] = {"noto", "fluent3d", "twemoji", "openmoji"};

void lk_t_emoji_pixel(const lk_t_emoji_concept *c, int s, int x, int y, uint8_t out[3]) {
    const float u = ((float)x + 0.5f) / 32.0f - 1.0f, v = ((float)y + 0.5f) / 32.0f - 1.0f;
    const float r = sqrtf(u * u + v * v);
    float inside; /* signed distance-like value: inside > 0 */
    switch (c->shape) {
    case LK_T_DISK: inside = 0.7f - r; break;
    case LK_T_SQUARE: inside = 0.6f - fmaxf(fabsf(u), fabsf(v)); break;
    case LK_T_TRIANGLE: inside = fminf(0.6f - v, v + 0.6f - 2.0f * fabsf(u)) * 0.5f; break;
    case LK_T_RING: inside = 0.15f - fabsf(r - 0.5f); break;
    case LK_T_DIAMOND: inside = 0.7f - (fabsf(u) + fabsf(v)); break;
    default: inside = fminf(0.7f - fabsf(u), (((y / 8) & 1) ? 0.1f : -0.1f)); break;
    }
    if (c->striped) inside = fminf(inside, (((y / 8) & 1) ? 0.2f : -0.05f));
    const float edge = fabsf(inside);
    float f[3] = {255.0f, 255.0f, 255.0f};
    if (inside > 0.0f) {
        for (int i = 0; i < 3; i++) f[i] = c->rgb[i];
        if (s == 1) /* shaded: darker away from the top-left light */
            for (int i = 0; i < 3; i++) f[i] *= 1.0f - 0.35f * fminf(1.0f, (u + v + 2.0f) / 4.0f);
        if (s == 3) /* outline only: pale fill */
            for (int i = 0; i < 3; i++) f[i] = 255.0f - 0.25f * (255.0f - f[i]);
    }
    if ((s == 2 || s == 3) && edge < 0.04f) f[0] = f[1] = f[2] = 20.0f;
    for (int i = 0; i < 3; i++) out[i] = (uint8_t)lrintf(fminf(255.0f, fmaxf(0.0f, f[i])));
}

/* print the quoted names of the styles of bits, ", "-separated */
static void style_list(FILE *f, unsigned bits) {
    const char *sep = "";
    for (int s = 0; s < LK_T_EMOJI_NSTYLES; s++)
        if (bits & (1u << s)) {
            fprintf(f, "%s\"%s\"", sep, LK_T_EMOJI_STYLES[s]);
            sep = ", ";
        }
}

static int write_manifest(const char *path, const lk_t_emoji_concept *k, int n) {
    FILE *f = fopen(path, "wb");
    if (!f) {
        fprintf(stderr, "emoji fixture: cannot create %s: %s\n", path, strerror(errno));
        return 0;
    }
    int per_style[LK_T_EMOJI_NSTYLES] = {0}, all_four = 0, heldout = 0;
    for (int c = 0; c < n; c++) {
        for (int s = 0; s < LK_T_EMOJI_NSTYLES; s++) per_style[s] += (k[c].styles >> s) & 1u;
        all_four += k[c].styles == 15u;
        heldout += k[c].heldout;
    }
    fprintf(f,
            "{\n \"name\": \"EmojiBench\", \"format\": 1, \"key_rule\": \"synthetic\",\n"
            " \"sizes\": [64],\n \"styles\": [");
    style_list(f, 15u);
    fprintf(f, "],\n \"generator_training_styles\": [");
    style_list(f, 7u);
    fprintf(f,
            "],\n \"emoji_version\": \"15.0\",\n"
            " \"counts\": {\"per_style\": {\"noto\": %d, \"fluent3d\": %d, \"twemoji\": %d, "
            "\"openmoji\": %d}, \"all_four\": %d, \"concepts\": %d, \"heldout\": %d},\n"
            " \"heldout\": [",
            per_style[0], per_style[1], per_style[2], per_style[3], all_four, n, heldout);
    const char *sep = "";
    for (int c = 0; c < n; c++)
        if (k[c].heldout) {
            fprintf(f, "%s\"%s\"", sep, k[c].key);
            sep = ", ";
        }
    fprintf(f, "],\n \"concepts\": {\n");
    for (int c = n - 1; c >= 0; c--) {
        fprintf(f,
                "  \"%s\": {\"key\": \"%s\", \"codepoints\": \"%s\", \"name\": \"%s\", "
                "\"group\": \"%s\", \"subgroup\": \"%s\", \"keywords\": [%s], \"styles\": [",
                k[c].key, k[c].key, k[c].key, k[c].name, k[c].group ? k[c].group : "Synthetic",
                k[c].subgroup ? k[c].subgroup : "shapes", k[c].keywords);
        style_list(f, k[c].styles);
        fprintf(f, "], \"heldout\": %s}%s\n", k[c].heldout ? "true" : "false", c ? "," : "");
    }
    fprintf(f, " }\n}\n");
    const int ok = !ferror(f);
    if (fclose(f) != 0 || !ok) {
        fprintf(stderr, "emoji fixture: cannot write %s\n", path);
        return 0;
    }
    return 1;
}

static int make_dir(const char *path) {
    if (mkdir(path, 0755) == 0) return 1;
    fprintf(stderr, "emoji fixture: cannot create %s: %s\n", path, strerror(errno));
    return 0;
}

int lk_t_write_emoji_set(const char *dir, const lk_t_emoji_concept *concepts, int n,
                         bool same_heldout) {
    char path[1024];
    snprintf(path, sizeof path, "%s/manifest.json", dir);
    if (!make_dir(dir) || !write_manifest(path, concepts, n)) return 0;
    lk_image img;
    if (lk_image_alloc(&img, LK_T_EMOJI_SIDE, LK_T_EMOJI_SIDE, 3) != LK_OK) {
        fprintf(stderr, "emoji fixture: %s\n", lk_last_error());
        return 0;
    }
    int ok = 1;
    for (int s = 0; s < LK_T_EMOJI_NSTYLES && ok; s++) {
        snprintf(path, sizeof path, "%s/%s", dir, LK_T_EMOJI_STYLES[s]);
        ok = make_dir(path);
        snprintf(path, sizeof path, "%s/%s/%d", dir, LK_T_EMOJI_STYLES[s], LK_T_EMOJI_SIDE);
        ok = ok && make_dir(path);
        for (int c = 0; c < n && ok; c++) {
            const lk_t_emoji_concept *k = &concepts[c];
            if (!(k->styles & (1u << s))) continue;
            const int rs = same_heldout && k->heldout ? 0 : s;
            for (int y = 0; y < LK_T_EMOJI_SIDE; y++)
                for (int x = 0; x < LK_T_EMOJI_SIDE; x++)
                    lk_t_emoji_pixel(k, rs, x, y, img.px + ((size_t)y * LK_T_EMOJI_SIDE + (size_t)x) * 3);
            snprintf(path, sizeof path, "%s/%s/%d/%s.png", dir, LK_T_EMOJI_STYLES[s], LK_T_EMOJI_SIDE,
                     k->key);
            ok = lk_image_save_png(&img, path, NULL) == LK_OK;
            if (!ok) fprintf(stderr, "emoji fixture: %s\n", lk_last_error());
        }
    }
    lk_image_free(&img);
    return ok;
}

lk_pretrain_config lk_t_pretrain_config(lk_pretrain_stage stage, const char *data, const char *run,
                                        int64_t steps, int batch, uint64_t seed) {
    lk_pretrain_config c = lk_pretrain_defaults(stage);
    c.data_dir = data;
    c.run_dir = run;
    c.steps = steps;
    c.batch = batch;
    c.seed = seed;
    c.checkpoint_every = 1000;
    return c;
}
