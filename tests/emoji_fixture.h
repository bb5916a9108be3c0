/* emoji_fixture.h: a synthetic EmojiBench data set for tests: manifest.json and 64x64 PNGs of
 * coloured shapes in the four styles, laid out as scripts/emoji_dataset/ builds the real one, and
 * the settings of short pretraining runs on it. */
#ifndef LK_TEST_EMOJI_FIXTURE_H
#define LK_TEST_EMOJI_FIXTURE_H

#include "likeness/pretrain.h"

#include <stdbool.h>
#include <stdint.h>

enum { LK_T_EMOJI_NSTYLES = 4, LK_T_EMOJI_SIDE = 64 };

/* the style folders, in manifest order: noto, fluent3d, twemoji, openmoji (the last one is not a
 * generator training style) */
extern const char *const LK_T_EMOJI_STYLES[LK_T_EMOJI_NSTYLES];

typedef enum lk_t_shape {
    LK_T_DISK,
    LK_T_SQUARE,
    LK_T_TRIANGLE,
    LK_T_RING,
    LK_T_DIAMOND,
    LK_T_BARS /* a tall band cut into horizontal bars 8 pixels high */
} lk_t_shape;

typedef struct lk_t_emoji_concept {
    const char *key, *name;
    const char *group, *subgroup; /* NULL: "Synthetic", "shapes" */
    const char *keywords;         /* the body of a JSON list: "\"cat\", \"pet\"" */
    unsigned styles;              /* bit s: a PNG in LK_T_EMOJI_STYLES[s] */
    bool heldout;
    uint8_t rgb[3];
    lk_t_shape shape;
    bool striped; /* the shape cut into horizontal stripes 8 pixels high */
} lk_t_emoji_concept;

/* Pixel (x, y) of concept c's image in style s (0..3), 64x64: its shape in its colour on white;
 * the style changes the rendering (0 flat, 1 shaded, 2 outlined, 3 outline with a pale fill).
 * Writes RGB into out. Cannot fail. */
void lk_t_emoji_pixel(const lk_t_emoji_concept *c, int s, int x, int y, uint8_t out[3]);

/* Create the folder dir (its parent must exist, dir must not) and write the data set of the n
 * concepts into it: manifest.json (counts computed from the concepts, the concepts listed in the
 * reverse of the given order so a reader has to sort them) and dir/<style>/64/<key>.png for every
 * style bit of every concept. same_heldout: the held-out concepts are drawn in style 0 in every
 * style folder. Returns 1 on success, 0 after a message on stderr. */
int lk_t_write_emoji_set(const char *dir, const lk_t_emoji_concept *concepts, int n,
                         bool same_heldout);

/* lk_pretrain_defaults(stage) for a short test run: data_dir, run_dir (both borrowed), steps,
 * batch and seed set, checkpoint_every beyond any test's steps (so the one checkpoint and export
 * come at the end). Cannot fail. */
lk_pretrain_config lk_t_pretrain_config(lk_pretrain_stage stage, const char *data, const char *run,
                                        int64_t steps, int batch, uint64_t seed);

#endif
