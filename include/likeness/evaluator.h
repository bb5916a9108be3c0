/* likeness/evaluator.h: EmojiBench's evaluator, a CLIP-style text + image model (clip_model.h)
 * trained by likeness on every concept and style, kept apart from the generator. It embeds
 * images and texts into one space (unit vectors): image-image cosine = subject fidelity (the
 * role DINO / CLIP-I play on DreamBench), image-text cosine = prompt fidelity (CLIP-T), and
 * ranking concept names by image-text cosine = concept retrieval. */
#ifndef LIKENESS_EVALUATOR_H
#define LIKENESS_EVALUATOR_H

#include <stdint.h>

#include "likeness/core.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct lk_evaluator lk_evaluator;

/* Load dir/clip/{config.json, model.safetensors} and dir/tokenizer/ (the export of
 * `likeness pretrain text --evaluator`). *out owns the result; NULL on failure. */
lk_status lk_evaluator_load(lk_evaluator **out, const char *dir);
void lk_evaluator_free(lk_evaluator *e); /* accepts NULL */
/* Embedding size E. */
int lk_evaluator_dim(const lk_evaluator *e);

/* Unit embeddings (n x E floats into out) of n RGB images of side x side bytes (rgb: n * side *
 * side * 3), side a multiple of the model's image size (box-averaged down to it). */
lk_status lk_evaluator_embed_images(lk_evaluator *e, const uint8_t *rgb, int n, int side,
                                    float *out);
/* The same for planar float images in [-1, 1] (n x 3 x side x side), e.g. a sampler's output
 * (clamped to [-1, 1] first). */
lk_status lk_evaluator_embed_chw(lk_evaluator *e, const float *chw, int n, int side, float *out);
/* Unit embeddings of n texts (tokenized by the evaluator's tokenizer, cut at 75 tokens). */
lk_status lk_evaluator_embed_texts(lk_evaluator *e, const char *const *texts, int n, float *out);

/* Dot product of two E-vectors (cosine for unit vectors). */
float lk_eval_cosine(const float *a, const float *b, int E);
/* 0-based rank of keys[correct] when the n keys (n x E) are sorted by cosine to q, best first
 * (ties count against: every other key at least as close is ahead). */
int lk_eval_rank(const float *q, const float *keys, int n, int E, int correct);

#ifdef __cplusplus
}
#endif
#endif
