/* fuzz_emoji_manifest.c: libFuzzer target for the EmojiBench manifest parser (lk_emoji_set_parse):
 * any bytes must parse or be refused with a message, never crash or overread; a set that parses
 * must keep its invariants (sorted unique keys that lk_emoji_set_find returns, valid style masks,
 * captions whose lengths agree and that are cut at UTF-8 character boundaries). Build with
 * src/data/emoji_set.c, the image code it links, src/core/status.c, mem.c, rng.c and cJSON. */
#include "likeness/emoji_set.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_concept(const lk_emoji_set *s, int i) {
    const int ns = lk_emoji_set_n_styles(s);
    const lk_emoji_concept *c = lk_emoji_set_concept(s, i);
    if (!c || lk_emoji_set_find(s, c->key) != i) abort();
    if (i > 0 && strcmp(lk_emoji_set_concept(s, i - 1)->key, c->key) >= 0) abort();
    if (c->style_mask == 0 || (c->style_mask >> ns) != 0) abort();
    if (!c->name[0] || c->n_keywords < 0 || (c->n_keywords && !c->keywords)) abort();
    for (int k = 0; k < c->n_keywords; k++)
        if (!c->keywords[k][0]) abort();
    char buf[4096], small[7], path[1024];
    for (int style = -1; style < ns; style++)
        for (int v = 0; v < lk_emoji_caption_variants(); v++) {
            const int full = lk_emoji_caption(s, i, style, v, NULL, 0);
            const int got = lk_emoji_caption(s, i, style, v, buf, sizeof buf);
            if (full <= 0 || got != full || strlen(buf) != (size_t)got) abort();
            const int cut = lk_emoji_caption(s, i, style, v, small, sizeof small);
            if (cut < 0 || cut > 6 || strlen(small) != (size_t)cut || memcmp(small, buf, (size_t)cut))
                abort();
            if (cut < full && ((unsigned char)buf[cut] & 0xc0) == 0x80) abort(); /* mid-character */
        }
    for (int style = 0; style < ns; style++)
        for (int k = 0; k < lk_emoji_set_n_sizes(s); k++) {
            lk_status st = lk_emoji_set_image_path(s, i, style, lk_emoji_set_size(s, k), path,
                                                   sizeof path);
            if ((st == LK_OK) != (((c->style_mask >> style) & 1u) != 0)) abort();
        }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    lk_emoji_set *s = NULL;
    lk_status st = lk_emoji_set_parse(&s, (const char *)data, size, "/nonexistent", "fuzz");
    if (st != LK_OK) {
        if (s || !lk_last_error()[0]) abort(); /* every refusal says why and leaves nothing */
        return 0;
    }
    const int n = lk_emoji_set_n_concepts(s), ns = lk_emoji_set_n_styles(s);
    if (n < 1 || ns < 1 || ns > LK_EMOJI_MAX_STYLES || lk_emoji_set_n_sizes(s) < 1) abort();
    for (int k = 0; k < lk_emoji_set_n_sizes(s); k++)
        if (lk_emoji_set_size(s, k) < 1) abort();
    for (int k = 0; k < ns; k++)
        if (lk_emoji_set_style_index(s, lk_emoji_set_style(s, k)) != k) abort();
    for (int i = 0; i < n && i < 64; i++) check_concept(s, i);
    if (n > 64) check_concept(s, n - 1);
    lk_emoji_set_free(s);
    return 0;
}
