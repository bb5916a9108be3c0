/* tokenizer_internal.h: what prompt_weights.c and bpe_learn.c need from clip_tokenizer.c beyond
 * the public API: tokenizing a fragment with the span of each added token; text cleanup;
 * CLIP's pre-tokenizer split. Private. */
#ifndef LK_TEXT_TOKENIZER_INTERNAL_H
#define LK_TEXT_TOKENIZER_INTERNAL_H

#include "likeness/tokenizer.h"

/* CLIP's two special tokens, as they stand in vocab.json and in text. */
#define LK__CLIP_SOT "<|startoftext|>"
#define LK__CLIP_EOT "<|endoftext|>"

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

/* What a piece of lk__clip_pieces is: ordinary text, or one of the two special tokens. */
typedef enum lk__piece_kind { LK__PIECE_TEXT, LK__PIECE_SOT, LK__PIECE_EOT } lk__piece_kind;

/* Receives one piece s[0..n) (n >= 1; the special's own text for LK__PIECE_SOT/_EOT). A status
 * other than LK_OK stops the split. */
typedef lk_status (*lk__piece_fn)(void *ud, lk__piece_kind kind, const unsigned char *s, size_t n);

/* Split normalized text s[0..n) (lk__normalize's output, or a part of it) by CLIP's
 * pre-tokenizer pattern <|startoftext|>|<|endoftext|>|'s|'t|'re|'ve|'m|'ll|'d|\p{L}+|\p{N}|
 * [^\s\p{L}\p{N}]+ (IGNORECASE; white space and the characters CLIP drops are skipped) and
 * call fn(ud, ...) on every piece, left to right. Borrows s. Returns LK_OK, or the first status
 * other than LK_OK that fn returned (it sets the message); fails in no other way. */
lk_status lk__clip_pieces(const unsigned char *s, size_t n, lk__piece_fn fn, void *ud);

#endif
