/* likeness/clip_text.h: the CLIP text encoder of Stable Diffusion (Hugging Face CLIPTextModel:
 * token + position embeddings, pre-LayerNorm transformer with causal self-attention, final
 * LayerNorm), over weights named as in its state_dict ("text_model.encoder.layers.0..."), with
 * "clip skip" outputs and extra token rows for textual inversion. */
#ifndef LIKENESS_CLIP_TEXT_H
#define LIKENESS_CLIP_TEXT_H

#include "likeness/model_config.h"
#include "likeness/weights.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct lk_clip_text lk_clip_text;

/* Build the encoder for cfg (copied) over the tensors of w named prefix + HF key
 * ("text_model.embeddings.token_embedding.weight", ...). Validation, dtypes and ownership as
 * lk_unet_new (extras such as "text_model.embeddings.position_ids" are ignored); w is borrowed
 * and must outlive the encoder. *out owns the result (free with lk_clip_text_free). */
lk_status lk_clip_text_new(lk_clip_text **out, const lk_clip_text_config *cfg,
                           const lk_weights *w, const char *prefix);
void lk_clip_text_free(lk_clip_text *te); /* accepts NULL; frees an appended token table */
const lk_clip_text_config *lk_clip_text_config_of(const lk_clip_text *te);

/* Hidden states of the token ids (B, N) (I64 or I32, every id < lk_clip_text_vocab_size,
 * 1 <= N <= max_position_embeddings) -> (B, N, hidden_size).
 *   clip_skip = 1: the output of the last layer; 2: of the penultimate layer (HF
 *   hidden_states[-2]); k: of layer num_hidden_layers - k + 1 (1 <= k <= num_hidden_layers).
 *   final_norm: apply final_layer_norm to it. SD-1.x: (1, true) = last_hidden_state; A1111
 *   "clip skip 2" on SD-1.x: (2, true); HF hidden_states[-2] as is: (2, false). SD-2.x: the
 *   loader already drops OpenCLIP's last block (as diffusers does, 23 layers), so its
 *   conditioning is (1, true).
 * Layers after the chosen one are not run. Differentiable (to the token table's trainable
 * rows for textual inversion). te is not modified: threads may share it for no-grad runs,
 * each with its own ctx. NULL on failure (sticky in ctx). */
lk_tensor *lk_clip_text_forward(lk_ctx *ctx, const lk_clip_text *te, lk_tensor *ids,
                                int clip_skip, bool final_norm);

/* ---- textual inversion ---- */
/* Rows of the token table (vocab_size initially, more after lk_clip_text_add_tokens). */
int64_t lk_clip_text_vocab_size(const lk_clip_text *te);
/* Append n rows to the token embedding table: the new table is the old one widened to F32 plus
 * n rows (rows: n * hidden_size floats, or NULL for zeros), owned by the encoder (the old
 * tensor stays in the weights, unused). *first_id (optional) receives the id of the first new
 * row. May be called again to append more. Any lk_tensor * obtained from
 * lk_clip_text_token_table before becomes stale. */
lk_status lk_clip_text_add_tokens(lk_clip_text *te, int n, const float *rows, int64_t *first_id);
/* Overwrite row id (0 <= id < vocab size) with hidden_size floats. Converts the table to an
 * owned F32 copy first if it is still the borrowed (possibly half) one. */
lk_status lk_clip_text_set_token(lk_clip_text *te, int64_t id, const float *row);
/* The token embedding table in use (V, hidden_size), e.g. for a trainer to call
 * lk_set_trainable_rows on the new rows. Borrowed from te. */
lk_tensor *lk_clip_text_token_table(const lk_clip_text *te);

/* Gradient checkpointing of every encoder layer (default off). */
void lk_clip_text_set_checkpointing(lk_clip_text *te, bool on);
/* Install (fn non-NULL) or remove a layer hook (see model_config.h); ud is borrowed. */
void lk_clip_text_set_layer_hook(lk_clip_text *te, lk_layer_hook fn, void *ud);

/* Add freshly initialized parameters for every tensor the network of cfg needs that w lacks
 * (PyTorch default init: linear/conv weights U(+-1/sqrt(fan_in)), embeddings U(+-0.0346), norm
 * scales 1, biases 0; from a torch-compatible generator seeded with seed), under prefix, stored
 * as store (F32, F16 or BF16). Tensors already in w are kept (and checked). */
lk_status lk_clip_text_init_weights(lk_weights *w, const lk_clip_text_config *cfg, const char *prefix, lk_dtype store, uint64_t seed);

#ifdef __cplusplus
}
#endif
#endif
