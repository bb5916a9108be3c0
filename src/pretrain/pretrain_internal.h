/* pretrain_internal.h: what the pretraining stages share: the run (weights, parameter set,
 * optimizer, EMA, RNG, step), the in-memory training images, and the architectures of the
 * emoji model. */
#ifndef LK_PRETRAIN_INTERNAL_H
#define LK_PRETRAIN_INTERNAL_H

#include "likeness/clip_model.h"
#include "likeness/emoji_set.h"
#include "likeness/model_config.h"
#include "likeness/optim.h"
#include "likeness/pretrain.h"
#include "likeness/rng.h"
#include "likeness/weights.h"
#include "core/fileio.h"

#define LK_PT_IMAGE 64 /* training image side */

/* The images of a split, decoded once: item i is (concept[i], style[i]), pixels at
 * pixels + i * 64*64*3 (RGB bytes). */
typedef struct lk__pt_images {
    int n;
    int *concept, *style;
    uint8_t *pixels;
} lk__pt_images;

typedef struct lk__pt lk__pt;
struct lk__pt {
    lk_pretrain_config cfg;
    lk_emoji_set *set;
    lk__pt_images img;
    lk_weights *w;     /* trainable weights, F32 */
    lk_paramset *ps;
    lk_adamw *opt;
    lk_ema *ema;
    lk_rng rng;
    int64_t step;
    lk_ctx *ctx;
    char name[16];     /* "text", "vae", "unet" */
    char fingerprint[400]; /* settings a resume must keep */
    char inputs[200];  /* what the stage read (tokenizer, frozen text encoder / VAE hashes, VAE
                        * crop): a resume must read the same; "" = nothing to check */
    void *st;          /* the stage's state */
    /* one update's gradients into the parameter set; loss and metric out */
    lk_status (*grad)(lk__pt *p, float *loss, float *metric);
    /* write the model (weights as they are now) under dir */
    lk_status (*export_to)(lk__pt *p, const char *dir);
    void (*free_stage)(lk__pt *p);
};

/* With cfg.init_dir: load DIR/part/file (any float dtype, as F32) into p->w before the
 * stage's fresh initialization fills in whatever is missing (pretrain_run.c). */
lk_status lk__pt_init_from(lk__pt *p, const char *part, const char *file);
/* Appends " LABEL=H" to p->inputs, H the first 16 hex digits of the digest d. */
void lk__pt_note_digest(lk__pt *p, const char *label, const uint8_t d[32]);
/* lk__pt_note_digest of the SHA-256 of the n files (paths[i] under dir) read one after the
 * other. */
lk_status lk__pt_note_inputs(lk__pt *p, const char *label, const char *dir,
                             const char *const *paths, int n);

/* architectures (emoji_arch.c) */
lk_clip_model_config lk__pt_clip_config(int vocab_size);
lk_vae_config lk__pt_vae_config(void);
lk_unet_config lk__pt_unet_config(int cross_attention_dim);

/* the split's images (images.c): generator split or everything (evaluator) */
lk_status lk__pt_images_load(lk__pt_images *im, const lk_emoji_set *set, bool evaluator);
void lk__pt_images_free(lk__pt_images *im);
/* item -> floats in [-1, 1], (3, S, S) planar, S = 64 / down (down 1 or 2: 2x2 box average),
 * cropped at (x0, y0) with side crop (crop 0: the whole image) */
void lk__pt_image_to_f32(const uint8_t *rgb, float *out, int down, int x0, int y0, int crop);

/* stages */
lk_status lk__pt_text_setup(lk__pt *p);
lk_status lk__pt_vae_setup(lk__pt *p);
lk_status lk__pt_unet_setup(lk__pt *p);

/* export helpers (pretrain_export.c; folders and atomic text files: core/fileio.h) */
/* the old name of lk__copy_file_atomic, still used by tests/test_pretrain.c */
static inline lk_status lk__pt_copy_file(const char *src, const char *dst) {
    return lk__copy_file_atomic(src, dst);
}
/* every parameter of the run whose name starts with only (NULL: all), its EMA shadow when the
 * run keeps one, into a safetensors file, F32 or F16, written atomically */
lk_status lk__pt_save_weights(const lk__pt *p, const char *path, bool fp16, const char *only);
lk_status lk__pt_save_weights_set(const lk_weights *w, const char *path, bool fp16);
/* Copy the tokenizer files (vocab.json, merges.txt, tokenizer_config.json,
 * special_tokens_map.json) from dir/sub (sub "" or "tokenizer/") into out/tokenizer/. */
lk_status lk__pt_copy_tokenizer(const char *dir, const char *sub, const char *out);
/* Export a network as dir/part/{config.json, file}: config_json is taken (freed here; NULL means
 * it could not be made: LK_ERR_NOMEM), the weights as lk__pt_save_weights(p, ..., only). */
lk_status lk__pt_export_part(const lk__pt *p, const char *dir, const char *part,
                             char *config_json, const char *file, const char *only);
char *lk__pt_unet_config_json(const lk_unet_config *c);
char *lk__pt_vae_config_json(const lk_vae_config *c);
char *lk__pt_text_config_json(const lk_clip_text_config *c);

#endif
