/* tokenizer_internal.h: what prompt_weights.c and bpe_learn.c need from clip_tokenizer.c beyond
 * the public API: tokenizing a fragment with the span of each added token; text cleanup. Private. */
#ifndef LK_TEXT_TOKENIZER_INTERNAL_H
#define LK_TEXT_TOKENIZER_INTERNAL_H

#include "likeness/tokenizer.h"

/* A growable list of content ids. span[i] is 1 for an ordinary id, n for the first id of an
 * added token of n ids and 0 for its further ids. Zero-initialize; free with lk__tokbuf_free. */
typedef struct lk__tokbuf {
    int64_t *ids;
    int32_t *span;
    size_t n, cap;
} lk__tokbuf;

void lk__tokbuf_free(lk__tokbuf *b);

/* Append the content ids of text[0..len) (any bytes; NUL inside is a character like any
 * other) to out. LK_ERR_NOMEM only. */
lk_status lk__tokenizer_tokenize(const lk_tokenizer *t, const char *text, size_t len,
                                 lk__tokbuf *out);

/* Id of ",</w>" (A1111's comma token), -1 when the vocabulary has none. */
int64_t lk__tokenizer_comma(const lk_tokenizer *t);

/* Clean text[0..len) as CLIP does (strip, runs of white space -> ' ', lower-case; invalid
 * UTF-8 -> U+FFFD) into a new NUL-terminated UTF-8 string *out of *out_len bytes (free with
 * free()). LK_ERR_NOMEM, or LK_ERR_INVALID for a text over 256 MiB. Used by bpe_learn.c. */
lk_status lk__normalize(const char *text, size_t len, char **out, size_t *out_len);

#endif
