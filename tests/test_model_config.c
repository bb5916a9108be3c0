/* test_model_config.c: the network config parsers on the golden diffusers configs and on
 * 3 x 4000 seeded mutations of them (byte flips, insertions, truncations, key swaps): every
 * input parses or is refused with a message, and never crashes (run under ASan/UBSan). The
 * libFuzzer target tests/fuzz/fuzz_model_config.c explores further. */
#include "harness.h"
#include "likeness/model_config.h"

#include <stdlib.h>
#include <string.h>

static char *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    char *b = malloc(1 << 16);
    *len = b ? fread(b, 1, (1 << 16) - 1, f) : 0;
    fclose(f);
    if (b) b[*len] = 0;
    return b;
}

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint32_t next(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng >> 32);
}

static lk_status parse(int which, const char *j, size_t n) {
    lk_unet_config u;
    lk_vae_config v;
    lk_clip_text_config t;
    switch (which) {
    case 0: return lk_unet_config_parse(&u, j, n, "mut");
    case 1: return lk_vae_config_parse(&v, j, n, "mut");
    default: return lk_clip_text_config_parse(&t, j, n, "mut");
    }
}

int main(void) {
    static const char *files[3] = {"unet/config.json", "vae/config.json", "text_encoder/config.json"};
    static const char *tokens[] = {"null", "true", "false", "-1", "0", "1e9", "\"x\"", "[]", "{}",
                                   "[1,2]", "3.5", "\"gelu\"", "\"DownBlock2D\"", ",", ":", "\""};
    for (int which = 0; which < 3; which++) {
        char path[1200];
        snprintf(path, sizeof path, "%s/%s", lk_t_golden_dir(), files[which]);
        size_t len = 0;
        char *base = read_file(path, &len);
        REQUIRE(base && len > 10);
        CHECK_OK(parse(which, base, len));
        int ok = 0, refused = 0, silent = 0;
        char *m = malloc(len + 64);
        REQUIRE(m);
        for (int it = 0; it < 4000; it++) {
            size_t n = len;
            memcpy(m, base, len);
            int edits = 1 + (int)(next() % 3);
            for (int e = 0; e < edits && n > 0; e++) {
                size_t pos = next() % n;
                switch (next() % 4) {
                case 0: m[pos] = (char)(next() & 0xff); break;        /* flip a byte */
                case 1: n = pos; break;                              /* truncate */
                case 2: {                                            /* insert a token */
                    const char *tk = tokens[next() % (sizeof tokens / sizeof tokens[0])];
                    size_t tl = strlen(tk);
                    if (n + tl > len + 60) break;
                    memmove(m + pos + tl, m + pos, n - pos);
                    memcpy(m + pos, tk, tl);
                    n += tl;
                    break;
                }
                default: {                                           /* delete a span */
                    size_t k = 1 + next() % 8;
                    if (pos + k > n) k = n - pos;
                    memmove(m + pos, m + pos + k, n - pos - k);
                    n -= k;
                }
                }
            }
            lk_clear_error();
            lk_status s = parse(which, m, n); /* not NUL-terminated on purpose: len is honored */
            if (s == LK_OK) ok++;
            else if (lk_last_error()[0]) refused++;
            else silent++;
        }
        fprintf(stderr, "  %s: 4000 mutations: %d parsed, %d refused with a message\n", files[which],
                ok, refused);
        CHECK(silent == 0 && refused > 1000);
        free(m);
        free(base);
    }
    return lk_t_done();
}
