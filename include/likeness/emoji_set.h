/* likeness/emoji_set.h: the EmojiBench data set built by scripts/emoji_dataset (manifest.json +
 * STYLE/SIZE/KEY.png images): its concepts (names, groups, CLDR keywords, held-out flag), its
 * styles, image loading, and the captions the pretraining and the benchmark use. */
#ifndef LIKENESS_EMOJI_SET_H
#define LIKENESS_EMOJI_SET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "likeness/core.h"

#ifdef __cplusplus
extern "C" {
#endif

#define LK_EMOJI_MAX_STYLES 8

typedef struct lk_emoji_concept {
    const char *key;       /* "1f436": lower-case hex codepoints joined by '-' */
    const char *name;      /* CLDR short name, "dog face" */
    const char *group;     /* emoji-test.txt group, "Animals & Nature" */
    const char *subgroup;  /* "animal-mammal" */
    const char *const *keywords; /* CLDR keywords, n_keywords of them */
    int n_keywords;
    bool heldout;          /* in the benchmark's held-out list: never used to train the generator */
    unsigned style_mask;   /* bit s set: the image of style s exists */
} lk_emoji_concept;

typedef struct lk_emoji_set lk_emoji_set;

/* Open the data set in dir (dir/manifest.json). Strict: a manifest that is not the expected
 * format (name "EmojiBench", format 1), or has a concept with a missing / mistyped field, an
 * unknown style, a held-out key that is not a concept (or whose concept is not flagged
 * heldout), a key that is not lower-case hex codepoints joined by '-', a duplicated key or
 * list entry, a size that is not a positive integer, more than LK_EMOJI_MAX_STYLES styles,
 * absurd counts (over 100000 concepts, 256 keywords, 8 sizes, 512-byte texts, a 64 MiB file) or
 * "counts" that disagree with the concepts, fails with LK_ERR_FORMAT and a one-line message
 * naming the file and the field (LK_ERR_IO if it cannot be read). Unknown keys are ignored.
 * Images are not read here. *out owns the set (free with lk_emoji_set_free); NULL on failure. */
lk_status lk_emoji_set_open(lk_emoji_set **out, const char *dir);
/* The same over manifest text already in memory (json, len bytes); dir is where images are
 * looked up, label names the source in messages. For tests and fuzzing. */
lk_status lk_emoji_set_parse(lk_emoji_set **out, const char *json, size_t len, const char *dir,
                             const char *label);
void lk_emoji_set_free(lk_emoji_set *s); /* accepts NULL */

const char *lk_emoji_set_dir(const lk_emoji_set *s);
/* Styles in manifest order ("noto", "fluent3d", "twemoji", "openmoji"). */
int lk_emoji_set_n_styles(const lk_emoji_set *s);
const char *lk_emoji_set_style(const lk_emoji_set *s, int i);
/* Index of a style name, -1 if absent. */
int lk_emoji_set_style_index(const lk_emoji_set *s, const char *name);
/* The style's words in captions: "noto", "fluent 3d", "twemoji", "openmoji" (a known style's
 * spoken form; otherwise the name itself). */
const char *lk_emoji_set_style_words(const lk_emoji_set *s, int i);
/* Whether style i is one of the manifest's generator_training_styles. */
bool lk_emoji_set_style_trainable(const lk_emoji_set *s, int i);
/* Image sizes available (64, 128). */
int lk_emoji_set_n_sizes(const lk_emoji_set *s);
int lk_emoji_set_size(const lk_emoji_set *s, int i);

/* Concepts sorted by key (strcmp), whatever the manifest's order; concept i is the i-th. The
 * pointers (and all strings in them) stay valid until lk_emoji_set_free. Index accessors return
 * NULL / -1 / 0 / false for an index out of range. */
int lk_emoji_set_n_concepts(const lk_emoji_set *s);
const lk_emoji_concept *lk_emoji_set_concept(const lk_emoji_set *s, int i);
/* Index of the concept with this key, -1 if absent. */
int lk_emoji_set_find(const lk_emoji_set *s, const char *key);

/* Path of an image: dir/STYLE/SIZE/KEY.png into buf (cap bytes); size is in pixels (64, not an
 * index). LK_ERR_INVALID when the concept or style is out of range, the concept has no image in
 * that style, the size is not one of the set's, or buf is too small. */
lk_status lk_emoji_set_image_path(const lk_emoji_set *s, int concept, int style, int size,
                                  char *buf, size_t cap);
/* Load that image as size*size*3 RGB bytes into rgb (alpha, if any, composited on white); an
 * image whose dimensions are not size x size fails with LK_ERR_FORMAT naming the file, before
 * its pixels are decoded. LK_ERR_IO if the file cannot be read; a corrupt file fails as
 * lk_image_decode does. rgb is untouched on failure. */
lk_status lk_emoji_set_load_image(const lk_emoji_set *s, int concept, int style, int size,
                                  uint8_t *rgb);

/* Captions, deterministic. NAME = the concept's name, STYLE = lk_emoji_set_style_words(style),
 * KW = the concept's keywords in manifest order without those equal to NAME, n = their count:
 *   0: "NAME emoji, STYLE style"                         ("dog face emoji, noto style")
 *   1: "NAME, KW[0], KW[1] emoji, STYLE style"           (the first min(2, n) keywords)
 *   2: "KW[r], KW[r+1], KW[r+2] emoji, STYLE style"      (min(3, n) keywords taken cyclically
 *      from r = concept % n)
 *   3: "NAME emoji"                                      (never a style)
 * With n = 0 variants 1 and 2 equal variant 0. style < 0 drops ", STYLE style" from variants
 * 0-2 ("dog face emoji"). The text is written into buf (cap bytes, NUL-terminated), cut at a
 * UTF-8 character boundary if it does not fit. Returns the length written (strlen(buf)); with
 * buf NULL or cap 0 nothing is written and the full length is returned (so a caller can size a
 * buffer: len + 1 bytes). -1 (LK_ERR_INVALID message set) for a NULL set or a concept, style
 * (>= n_styles) or variant out of range. lk_emoji_caption_variants() is 4. */
int lk_emoji_caption_variants(void);
int lk_emoji_caption(const lk_emoji_set *s, int concept, int style, int variant, char *buf,
                     size_t cap);

#ifdef __cplusplus
}
#endif
#endif
