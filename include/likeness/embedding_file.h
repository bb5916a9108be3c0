/* likeness/embedding_file.h: textual-inversion embedding files (Gal et al. 2022, "An Image is
 * Worth One Word"): the AUTOMATIC1111 layout (emb_params (n, dim) or (dim), or
 * string_to_param.*) and the diffusers layout ({token: (dim) or (n, dim)}), their tokens added to
 * the tokenizer, their vectors ready to append to the text encoder's token embedding table. */
#ifndef LIKENESS_EMBEDDING_FILE_H
#define LIKENESS_EMBEDDING_FILE_H

#include "likeness/tokenizer.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct lk_embedding_file_token {
    char *token;       /* the text that stands for it in prompts ("<cat-toy>") */
    int n_vectors;     /* 1..75 */
    float *vectors;    /* (n_vectors, dim), f32 */
    int64_t first_id;  /* its first token id, -1 until lk_embedding_file_add_tokens */
} lk_embedding_file_token;

typedef struct lk_embedding_file {
    char *path;
    char *name;                  /* file name without folder and extension ("cat-toy") */
    int dim;                     /* vector width (768 SD-1, 1024 SD-2) */
    int n_tokens;
    lk_embedding_file_token *tokens;  /* in file order */
} lk_embedding_file;

/* Load a textual-inversion file (.safetensors; pickles (.pt, .bin) are refused: convert them).
 * token: the prompt text for the embedding. NULL takes the file's own naming: an A1111 file is
 * named by its file name without extension (as A1111 does: "cat-toy.safetensors" -> "cat-toy"),
 * a diffusers file by its keys ("<sks>"). A non-NULL token renames a single-token file (one with
 * several tokens: LK_ERR_INVALID). text_dim > 0 is the text encoder's width: vectors of another
 * width are refused with LK_ERR_INVALID ("embedding cat-toy has 768-dim vectors, the text
 * encoder expects 1024"); 0 skips the check. SDXL embeddings (clip_l / clip_g) give
 * LK_ERR_UNSUPPORTED; files that are not embeddings (no float vectors, more than 75 vectors,
 * checkpoint or LoRA keys) LK_ERR_FORMAT. On success *out owns the result (lk_embedding_file_free);
 * on failure *out is NULL. */
lk_status lk_embedding_file_load(lk_embedding_file **out, const char *path, const char *token, int text_dim);
void lk_embedding_file_free(lk_embedding_file *e); /* accepts NULL */

/* Add each token to the tokenizer with lk_tokenizer_add_token_n (n_vectors consecutive ids,
 * from the current vocab size: 49408, ... for the first embedding) and record its first_id.
 * *first_id (optional) receives the first id of the file's first token, *n_rows (optional) the
 * number of new ids (sum of n_vectors). Fails as lk_tokenizer_add_token_n does (a token already
 * added, ...) with nothing added for the failing token; tokens added before it stay. */
lk_status lk_embedding_file_add_tokens(lk_embedding_file *e, lk_tokenizer *tok, int64_t *first_id, int *n_rows);

/* The rows to append to the text encoder's token embedding table for this file, in id order
 * (give them to lk_clip_text_add_tokens right after lk_embedding_file_add_tokens, so table rows
 * and tokenizer ids line up: 49408, ...): *rows receives a malloc'd (n_rows, dim) f32 array
 * (caller frees with free()). */
lk_status lk_embedding_file_rows(const lk_embedding_file *e, float **rows, int *n_rows);

#ifdef __cplusplus
}
#endif
#endif
