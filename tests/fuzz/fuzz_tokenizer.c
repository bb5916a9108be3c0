/* fuzz_tokenizer.c: libFuzzer target for the CLIP tokenizer and prompt parser: any bytes as a
 * prompt (tokenize, weighted chunks, decode), as vocab.json or as merges.txt must be handled or
 * refused with a message, never crash, overread or loop. The first input byte picks the mode.
 * The real vocabulary is read from $LK_FUZZ_TOKENIZER (default ../shared/golden/tokenizer). */
#define _POSIX_C_SOURCE 200809L
#include "likeness/tokenizer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static lk_tokenizer *tok;
static char tmp_vocab[64], tmp_merges[64], mini_merges[64], mini_vocab[64];

static void init(void) {
    const char *dir = getenv("LK_FUZZ_TOKENIZER");
    if (!dir) dir = "../shared/golden/tokenizer";
    if (lk_tokenizer_load(&tok, dir) != LK_OK) {
        fprintf(stderr, "fuzz_tokenizer: %s (set LK_FUZZ_TOKENIZER)\n", lk_last_error());
        abort();
    }
    int64_t id;
    if (lk_tokenizer_add_token_n(tok, "<cat-toy>", 2, &id) != LK_OK || lk_tokenizer_add_token(tok, "sks", &id) != LK_OK)
        abort();
    /* a small vocabulary for the merges mode: byte symbols and the first merge results
     * (ids 0..4095 of CLIP's vocabulary), so each run does not reload 49,408 entries */
    snprintf(mini_vocab, sizeof mini_vocab, "/tmp/lk_fuzz_tok_%d_mv", (int)getpid());
    FILE *v = fopen(mini_vocab, "wb");
    if (!v) abort();
    fputc('{', v);
    for (int64_t i = 0; i < 4096; i++) {
        const char *k = lk_tokenizer_id_to_token(tok, i);
        if (!k) abort();
        fputc('"', v);
        for (; *k; k++) {
            if (*k == '"' || *k == '\\') fputc('\\', v);
            fputc(*k, v);
        }
        fprintf(v, "\": %d, ", (int)i);
    }
    fputs("\"<|startoftext|>\": 4096, \"<|endoftext|>\": 4097}", v);
    fclose(v);
    snprintf(tmp_vocab, sizeof tmp_vocab, "/tmp/lk_fuzz_tok_%d_v", (int)getpid());
    snprintf(tmp_merges, sizeof tmp_merges, "/tmp/lk_fuzz_tok_%d_m", (int)getpid());
    snprintf(mini_merges, sizeof mini_merges, "/tmp/lk_fuzz_tok_%d_mm", (int)getpid());
    FILE *f = fopen(mini_merges, "wb");
    if (!f) abort();
    fputs("#version: 0.2\na b\n", f);
    fclose(f);
}

static void write_tmp(const char *path, const uint8_t *data, size_t size) {
    FILE *f = fopen(path, "wb");
    if (!f) abort();
    if (size && fwrite(data, 1, size, f) != size) abort();
    fclose(f);
}

static void fuzz_prompt(const uint8_t *data, size_t size) {
    char *s = malloc(size + 1); /* exact size + NUL so ASan sees overreads */
    if (!s) return;
    if (size) memcpy(s, data, size);
    s[size] = '\0';
    int64_t ids[3 * LK_CLIP_CONTEXT];
    float w[3 * LK_CLIP_CONTEXT];
    int n = -1, nc = -1;
    if (lk_tokenizer_bpe(tok, s, ids, 3 * LK_CLIP_CONTEXT, &n) != LK_OK || n < 0) abort();
    int k = n < 3 * LK_CLIP_CONTEXT ? n : 3 * LK_CLIP_CONTEXT;
    for (int i = 0; i < k; i++)
        if (ids[i] < 0 || ids[i] >= lk_tokenizer_vocab_size(tok)) abort();
    char *back = NULL;
    if (lk_tokenizer_decode(tok, ids, k, false, &back) != LK_OK) abort();
    free(back);
    if (lk_tokenizer_encode(tok, s, ids, LK_CLIP_CONTEXT, LK_PAD_ZERO, &nc) != LK_OK || nc != n) abort();
    if (ids[0] != lk_tokenizer_bos(tok)) abort();
    if (lk_prompt_encode_weighted(tok, s, NULL, ids, w, 3, &nc) != LK_OK || nc < 1) abort();
    for (int i = 0; i < (nc < 3 ? nc : 3) * LK_CLIP_CONTEXT; i++)
        if (ids[i] < 0 || ids[i] >= lk_tokenizer_vocab_size(tok) || w[i] != w[i]) abort();
    lk_prompt_frag *f = NULL;
    int nf = 0;
    if (lk_prompt_parse(s, &f, &nf) != LK_OK || nf < 1) abort();
    lk_prompt_frags_free(f, nf);
    free(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!tok) init();
    if (size == 0) return 0;
    lk_tokenizer *t = NULL;
    lk_status st = LK_OK;
    switch (data[0] % 3) {
    case 0: fuzz_prompt(data + 1, size - 1); return 0;
    case 1: /* vocab.json parser (a merges file that then fails or works) */
        write_tmp(tmp_vocab, data + 1, size - 1);
        st = lk_tokenizer_load_files(&t, tmp_vocab, mini_merges);
        break;
    default: /* merges.txt parser against the small vocabulary */
        write_tmp(tmp_merges, data + 1, size - 1);
        st = lk_tokenizer_load_files(&t, mini_vocab, tmp_merges);
        break;
    }
    if ((st == LK_OK) != (t != NULL)) abort();
    if (st != LK_OK && strstr(lk_last_error(), "/tmp/lk_fuzz_tok_") == NULL) abort();
    if (t) {
        int64_t ids[16];
        int n;
        if (lk_tokenizer_bpe(t, "a photo of ab", ids, 16, &n) != LK_OK) abort();
        lk_tokenizer_free(t);
    }
    return 0;
}
