/* stage_tokenizer.c: the emoji model's tokenizer: a CLIP byte-level BPE vocabulary learned from
 * the generator split's captions (every caption variant of every training concept, with and
 * without style words), written as a diffusers tokenizer folder. */
#define _POSIX_C_SOURCE 200809L
#include "pretrain/pretrain_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "likeness/tokenizer.h"

static const char TOKENIZER_CONFIG[] =
    "{\n  \"add_prefix_space\": false,\n  \"bos_token\": \"<|startoftext|>\",\n"
    "  \"do_lower_case\": true,\n  \"eos_token\": \"<|endoftext|>\",\n"
    "  \"model_max_length\": 77,\n  \"pad_token\": \"<|endoftext|>\",\n"
    "  \"tokenizer_class\": \"CLIPTokenizer\",\n  \"unk_token\": \"<|endoftext|>\"\n}\n";
static const char SPECIAL_TOKENS[] =
    "{\n  \"bos_token\": \"<|startoftext|>\",\n  \"eos_token\": \"<|endoftext|>\",\n"
    "  \"pad_token\": \"<|endoftext|>\",\n  \"unk_token\": \"<|endoftext|>\"\n}\n";

lk_status lk_pretrain_tokenizer(const char *data_dir, const char *out_dir, int vocab_size) {
    if (!data_dir || !out_dir) return lk_fail(LK_ERR_INVALID, "pretrain tokenizer: NULL folder");
    lk_emoji_set *set = NULL;
    lk_status s = lk_emoji_set_open(&set, data_dir);
    if (s != LK_OK) return s;
    const int nc = lk_emoji_set_n_concepts(set), ns = lk_emoji_set_n_styles(set);
    const int nv = lk_emoji_caption_variants();
    size_t cap = (size_t)nc * (size_t)(ns + 1) * (size_t)nv, n = 0;
    char **texts = calloc(cap ? cap : 1, sizeof *texts);
    if (!texts) s = lk_fail(LK_ERR_NOMEM, "out of memory");
    for (int c = 0; s == LK_OK && c < nc; c++) {
        const lk_emoji_concept *k = lk_emoji_set_concept(set, c);
        if (k->heldout) continue;
        for (int st = -1; s == LK_OK && st < ns; st++) {
            if (st >= 0 && (!(k->style_mask & (1u << st)) || !lk_emoji_set_style_trainable(set, st)))
                continue;
            for (int v = 0; s == LK_OK && v < nv; v++) {
                char buf[512];
                lk_emoji_caption(set, c, st, v, buf, sizeof buf);
                if (!(texts[n++] = strdup(buf))) s = lk_fail(LK_ERR_NOMEM, "out of memory");
            }
        }
    }
    lk_bpe_learn_opts o = {vocab_size, 2};
    if (s == LK_OK) s = lk__mkdirs(out_dir);
    if (s == LK_OK) s = lk_bpe_learn((const char *const *)texts, (int)n, &o, out_dir);
    char p[4200];
    snprintf(p, sizeof p, "%s/tokenizer_config.json", out_dir);
    if (s == LK_OK) s = lk__write_text_atomic(p, TOKENIZER_CONFIG);
    snprintf(p, sizeof p, "%s/special_tokens_map.json", out_dir);
    if (s == LK_OK) s = lk__write_text_atomic(p, SPECIAL_TOKENS);
    for (size_t i = 0; i < n; i++) free(texts[i]);
    free(texts);
    lk_emoji_set_free(set);
    return s;
}
