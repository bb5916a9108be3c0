/* new_token.c: the new words of Textual Inversion and Custom Diffusion: checking that a token is
 * not already a word of the vocabulary, and the embedding row it starts from. */
#define _POSIX_C_SOURCE 200809L
#include "personalize/train_internal.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Contract: see train_internal.h. */
lk_status lk__check_new_token(const lk_tokenizer *tok, const char *who, const char *token) {
    char low[256], word[262];
    const size_t n = token ? strlen(token) : 0;
    if (n == 0 || n > 200)
        return lk_fail(LK_ERR_INVALID, "%s: token '%.40s' must have 1 to 200 bytes", who,
                       token ? token : "");
    for (size_t i = 0; i <= n; i++) low[i] = (char)tolower((unsigned char)token[i]);
    for (size_t i = 0; i < n; i++)
        if (isspace((unsigned char)token[i]))
            return lk_fail(LK_ERR_INVALID, "%s: token '%s' contains white space", who, token);
    snprintf(word, sizeof word, "%s</w>", low);
    if (lk_tokenizer_token_id(tok, token) >= 0 || lk_tokenizer_token_id(tok, low) >= 0 ||
        lk_tokenizer_token_id(tok, word) >= 0)
        return lk_fail(LK_ERR_INVALID, "%s: token '%s' is already in the vocabulary; choose a new "
                       "one such as \"<%s>\"", who, token, low);
    return LK_OK;
}

/* Contract: see train_internal.h. */
lk_status lk__new_token_row(const lk_tokenizer *tok, const lk_tensor *table, const char *who,
                            const char *word, bool is_default, float *row) {
    enum { CAP = 76 };
    int64_t ids[CAP];
    int n = 0;
    lk_status s = lk_tokenizer_bpe(tok, word, ids, CAP, &n);
    if (s != LK_OK) return s;
    if (n < 1 || (n > 1 && !is_default) || n > CAP)
        return lk_fail(LK_ERR_INVALID, "%s: the init word '%s' is %d tokens; choose a word that is a "
                       "single token (e.g. the class: \"dog\", \"toy\")", who, word, n);
    const int64_t V = table->shape[0], D = table->shape[1];
    for (int i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= V)
            return lk_fail(LK_ERR_INVALID, "%s: init id %lld outside the %lld-row table", who,
                           (long long)ids[i], (long long)V);
    for (int64_t j = 0; j < D; j++) {
        double sum = 0.0;
        for (int i = 0; i < n; i++) sum += (double)lk_get_f32(table, ids[i] * D + j);
        row[j] = (float)(sum / n);
    }
    return LK_OK;
}
