/* test_emoji_set.c: the EmojiBench data set reader on a synthetic manifest written here (every
 * accessor, the caption rules, image loading with alpha on white, malformed manifests), and on
 * the real data set when LK_EMOJI_DIR points at it. */
#define _POSIX_C_SOURCE 200809L
#include "harness.h"
#include "likeness/emoji_set.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* REQUIRE for void helpers: count a failure and leave the helper. */
#define REQUIRE_VOID(cond)                                                          \
    do {                                                                            \
        if (!(cond)) {                                                              \
            fprintf(stderr, "FATAL %s:%d: %s\n", __FILE__, __LINE__, #cond);        \
            lk_t_failures++;                                                        \
            return;                                                                 \
        }                                                                           \
    } while (0)

#define KEYCAP_CONCEPT                                                                          \
    "\"0023-20e3\": {\"key\": \"0023-20e3\", \"codepoints\": \"0023-fe0f-20e3\", \"name\": "    \
    "\"keycap: #\", \"test_name\": \"keycap: #\", \"group\": \"Symbols\", \"subgroup\": "       \
    "\"keycap\", \"status\": \"fully-qualified\", \"emoji_version\": \"0.6\", \"keywords\": "   \
    "[\"keycap: #\"], \"keywords_source\": \"cldr\", \"styles\": [\"noto\"], \"heldout\": false}"

/* 4 concepts (deliberately not in key order), 2 styles, 2 sizes; unknown keys to be ignored. */
static const char *BASE =
    "{\n"
    " \"name\": \"EmojiBench\", \"format\": 1, \"key_rule\": \"lower-case hex\",\n"
    " \"sizes\": [8, 4],\n"
    " \"styles\": [\"noto\", \"fluent3d\"], \"generator_training_styles\": [\"noto\"],\n"
    " \"emoji_version\": \"15.0\", \"licences\": {\"noto\": {\"licence\": \"Apache-2.0\"}},\n"
    " \"stats\": {\"noto\": {\"failed\": []}},\n"
    " \"counts\": {\"per_style\": {\"noto\": 4, \"fluent3d\": 2}, \"all_four\": 2,"
    " \"concepts\": 4, \"heldout\": 1},\n"
    " \"heldout\": [\"1f436\"],\n"
    " \"concepts\": {\n"
    "  \"1fa85\": {\"key\": \"1fa85\", \"codepoints\": \"1fa85\", \"name\": \"piñata\","
    " \"group\": \"Activities\", \"subgroup\": \"event\","
    " \"keywords\": [\"celebration\", \"party\", \"piñata\"], \"styles\": [\"noto\"],"
    " \"heldout\": false},\n"
    "  \"1f436\": {\"key\": \"1f436\", \"codepoints\": \"1f436\", \"name\": \"dog face\","
    " \"group\": \"Animals & Nature\", \"subgroup\": \"animal-mammal\","
    " \"keywords\": [\"dog\", \"face\", \"pet\"], \"keywords_source\": \"cldr\","
    " \"styles\": [\"noto\", \"fluent3d\"], \"heldout\": true},\n"
    "  " KEYCAP_CONCEPT ",\n"
    "  \"1f468-200d-1f373\": {\"key\": \"1f468-200d-1f373\", \"name\": \"man cook\","
    " \"group\": \"People & Body\", \"subgroup\": \"person-role\","
    " \"keywords\": [\"chef\", \"cook\", \"man\", \"man cook\"],"
    " \"styles\": [\"fluent3d\", \"noto\"], \"heldout\": false}\n"
    " }\n"
    "}\n";

/* BASE with every occurrence of find replaced by repl (malloc'd); *n_repl counts them. */
static char *replace_all(const char *text, const char *find, const char *repl, int *n_repl) {
    size_t fl = strlen(find), rl = strlen(repl), n = 0;
    for (const char *p = strstr(text, find); p; p = strstr(p + fl, find)) n++;
    char *out = malloc(strlen(text) + n * rl + 1);
    if (!out) return NULL;
    char *o = out;
    const char *p = text;
    for (const char *q = strstr(p, find); q; q = strstr(p, find)) {
        memcpy(o, p, (size_t)(q - p));
        o += q - p;
        memcpy(o, repl, rl);
        o += rl;
        p = q + fl;
    }
    strcpy(o, p);
    *n_repl = (int)n;
    return out;
}

static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "wb");
    CHECK(f != NULL);
    if (!f) return;
    CHECK(fwrite(text, 1, strlen(text), f) == strlen(text));
    fclose(f);
}

static void check_caption(const lk_emoji_set *s, const char *key, int style, int variant,
                          const char *want) {
    char buf[256];
    int ci = lk_emoji_set_find(s, key);
    int n = lk_emoji_caption(s, ci, style, variant, buf, sizeof buf);
    lk_t_checks++;
    if (n != (int)strlen(want) || strcmp(buf, want) != 0) {
        lk_t_failures++;
        fprintf(stderr, "FAIL caption %s style %d variant %d: got \"%s\" (%d), want \"%s\"\n", key,
                style, variant, n >= 0 ? buf : "", n, want);
    }
    CHECK(lk_emoji_caption(s, ci, style, variant, NULL, 0) == (int)strlen(want));
}

static void test_accessors(const lk_emoji_set *s, const char *dir) {
    CHECK(strcmp(lk_emoji_set_dir(s), dir) == 0);
    CHECK(lk_emoji_set_n_styles(s) == 2);
    CHECK(strcmp(lk_emoji_set_style(s, 0), "noto") == 0);
    CHECK(strcmp(lk_emoji_set_style(s, 1), "fluent3d") == 0);
    CHECK(lk_emoji_set_style(s, 2) == NULL && lk_emoji_set_style(s, -1) == NULL);
    CHECK(lk_emoji_set_style_index(s, "fluent3d") == 1);
    CHECK(lk_emoji_set_style_index(s, "noto") == 0);
    CHECK(lk_emoji_set_style_index(s, "openmoji") == -1);
    CHECK(lk_emoji_set_style_index(s, NULL) == -1);
    CHECK(strcmp(lk_emoji_set_style_words(s, 0), "noto") == 0);
    CHECK(strcmp(lk_emoji_set_style_words(s, 1), "fluent 3d") == 0);
    CHECK(lk_emoji_set_style_words(s, 2) == NULL);
    CHECK(lk_emoji_set_style_trainable(s, 0));
    CHECK(!lk_emoji_set_style_trainable(s, 1));
    CHECK(!lk_emoji_set_style_trainable(s, 7));
    CHECK(lk_emoji_set_n_sizes(s) == 2);
    CHECK(lk_emoji_set_size(s, 0) == 8 && lk_emoji_set_size(s, 1) == 4);
    CHECK(lk_emoji_set_size(s, 2) == 0);

    /* sorted by key, whatever the manifest's order */
    static const char *const keys[] = {"0023-20e3", "1f436", "1f468-200d-1f373", "1fa85"};
    CHECK(lk_emoji_set_n_concepts(s) == 4);
    for (int i = 0; i < 4; i++) {
        const lk_emoji_concept *c = lk_emoji_set_concept(s, i);
        CHECK(c && strcmp(c->key, keys[i]) == 0);
        CHECK(lk_emoji_set_find(s, keys[i]) == i);
    }
    CHECK(lk_emoji_set_concept(s, 4) == NULL && lk_emoji_set_concept(s, -1) == NULL);
    CHECK(lk_emoji_set_find(s, "1f437") == -1);
    CHECK(lk_emoji_set_find(s, "") == -1);
    CHECK(lk_emoji_set_find(s, "ffff") == -1);
    CHECK(lk_emoji_set_find(s, NULL) == -1);

    const lk_emoji_concept *dog = lk_emoji_set_concept(s, 1);
    REQUIRE_VOID(dog);
    CHECK(strcmp(dog->name, "dog face") == 0);
    CHECK(strcmp(dog->group, "Animals & Nature") == 0);
    CHECK(strcmp(dog->subgroup, "animal-mammal") == 0);
    CHECK(dog->n_keywords == 3);
    CHECK(dog->n_keywords == 3 && strcmp(dog->keywords[0], "dog") == 0 &&
          strcmp(dog->keywords[1], "face") == 0 && strcmp(dog->keywords[2], "pet") == 0);
    CHECK(dog->heldout);
    CHECK(dog->style_mask == 3u);
    const lk_emoji_concept *key = lk_emoji_set_concept(s, 0), *cook = lk_emoji_set_concept(s, 2),
                           *pin = lk_emoji_set_concept(s, 3);
    CHECK(!key->heldout && key->style_mask == 1u && key->n_keywords == 1);
    CHECK(strcmp(key->name, "keycap: #") == 0 && strcmp(key->group, "Symbols") == 0);
    CHECK(!cook->heldout && cook->style_mask == 3u && cook->n_keywords == 4);
    CHECK(strcmp(cook->keywords[3], "man cook") == 0);
    CHECK(!pin->heldout && pin->style_mask == 1u && strcmp(pin->name, "piñata") == 0);
}

static void test_captions(const lk_emoji_set *s) {
    CHECK(lk_emoji_caption_variants() == 4);
    /* dog face: KW = dog, face, pet; index 1 -> r = 1 */
    check_caption(s, "1f436", 0, 0, "dog face emoji, noto style");
    check_caption(s, "1f436", 0, 1, "dog face, dog, face emoji, noto style");
    check_caption(s, "1f436", 0, 2, "face, pet, dog emoji, noto style");
    check_caption(s, "1f436", 0, 3, "dog face emoji");
    check_caption(s, "1f436", 1, 0, "dog face emoji, fluent 3d style");
    check_caption(s, "1f436", 1, 3, "dog face emoji");
    check_caption(s, "1f436", -1, 0, "dog face emoji");
    check_caption(s, "1f436", -1, 1, "dog face, dog, face emoji");
    check_caption(s, "1f436", -1, 2, "face, pet, dog emoji");
    check_caption(s, "1f436", -1, 3, "dog face emoji");
    /* keycap: its only keyword is its name -> variants 1 and 2 are variant 0 */
    check_caption(s, "0023-20e3", 0, 0, "keycap: # emoji, noto style");
    check_caption(s, "0023-20e3", 0, 1, "keycap: # emoji, noto style");
    check_caption(s, "0023-20e3", 0, 2, "keycap: # emoji, noto style");
    check_caption(s, "0023-20e3", -1, 2, "keycap: # emoji");
    check_caption(s, "0023-20e3", 1, 3, "keycap: # emoji");
    /* man cook: "man cook" dropped, KW = chef, cook, man; index 2 -> r = 2 */
    check_caption(s, "1f468-200d-1f373", 1, 1, "man cook, chef, cook emoji, fluent 3d style");
    check_caption(s, "1f468-200d-1f373", 1, 2, "man, chef, cook emoji, fluent 3d style");
    /* piñata: KW = celebration, party; index 3 -> r = 1; only 2 keywords */
    check_caption(s, "1fa85", 0, 0, "piñata emoji, noto style");
    check_caption(s, "1fa85", 0, 1, "piñata, celebration, party emoji, noto style");
    check_caption(s, "1fa85", 0, 2, "party, celebration emoji, noto style");
    check_caption(s, "1fa85", 0, 3, "piñata emoji");

    /* truncation at a character boundary; cap 0 / NULL: the full length */
    char buf[32];
    const int pin = lk_emoji_set_find(s, "1fa85"); /* "piñata emoji": 13 bytes, ñ at 2..3 */
    CHECK(lk_emoji_caption(s, pin, 0, 3, NULL, 100) == 13);
    memset(buf, 'x', sizeof buf);
    CHECK(lk_emoji_caption(s, pin, 0, 3, buf, 0) == 13 && buf[0] == 'x');
    CHECK(lk_emoji_caption(s, pin, 0, 3, buf, 1) == 0 && buf[0] == '\0');
    CHECK(lk_emoji_caption(s, pin, 0, 3, buf, 3) == 2 && strcmp(buf, "pi") == 0);
    CHECK(lk_emoji_caption(s, pin, 0, 3, buf, 4) == 2 && strcmp(buf, "pi") == 0);
    CHECK(lk_emoji_caption(s, pin, 0, 3, buf, 5) == 4 && strcmp(buf, "piñ") == 0);
    CHECK(lk_emoji_caption(s, pin, 0, 3, buf, 13) == 12 && strcmp(buf, "piñata emoj") == 0);
    CHECK(lk_emoji_caption(s, pin, 0, 3, buf, 14) == 13 && strcmp(buf, "piñata emoji") == 0);
    CHECK(lk_emoji_caption(s, 1, 0, 0, buf, 5) == 4 && strcmp(buf, "dog ") == 0);
    /* out of range */
    CHECK(lk_emoji_caption(s, 4, 0, 0, buf, sizeof buf) == -1);
    CHECK(lk_emoji_caption(s, -1, 0, 0, buf, sizeof buf) == -1);
    CHECK(lk_emoji_caption(s, 0, 2, 0, buf, sizeof buf) == -1);
    CHECK(lk_emoji_caption(s, 0, 0, 4, buf, sizeof buf) == -1);
    CHECK(lk_emoji_caption(s, 0, 0, -1, buf, sizeof buf) == -1);
    CHECK(lk_emoji_caption(NULL, 0, 0, 0, buf, sizeof buf) == -1);
    CHECK(lk_emoji_caption(s, 0, -7, 0, buf, sizeof buf) == (int)strlen("keycap: # emoji"));
}

static void save_image(const char *path, int w, int h, int c, unsigned seed) {
    lk_image img;
    CHECK_OK(lk_image_alloc(&img, w, h, c));
    for (size_t i = 0; i < (size_t)w * (size_t)h * (size_t)c; i++)
        img.px[i] = (uint8_t)((i * 37u + seed * 11u) & 0xff);
    CHECK_OK(lk_image_save_png(&img, path, NULL));
    lk_image_free(&img);
}

static void test_images(const lk_emoji_set *s, const char *dir) {
    char path[1024], want[1024];
    const int dog = lk_emoji_set_find(s, "1f436"), cook = lk_emoji_set_find(s, "1f468-200d-1f373"),
              pin = lk_emoji_set_find(s, "1fa85");
    CHECK_OK(lk_emoji_set_image_path(s, dog, 0, 8, path, sizeof path));
    snprintf(want, sizeof want, "%s/noto/8/1f436.png", dir);
    CHECK(strcmp(path, want) == 0);
    CHECK_OK(lk_emoji_set_image_path(s, cook, 1, 4, path, sizeof path));
    snprintf(want, sizeof want, "%s/fluent3d/4/1f468-200d-1f373.png", dir);
    CHECK(strcmp(path, want) == 0);
    const size_t need = strlen(dir) + strlen("/noto/8/1f436.png") + 1;
    CHECK_OK(lk_emoji_set_image_path(s, dog, 0, 8, path, need)); /* exact fit */
    CHECK(lk_emoji_set_image_path(s, dog, 0, 8, path, need - 1) == LK_ERR_INVALID);
    CHECK(lk_emoji_set_image_path(s, pin, 1, 8, path, sizeof path) == LK_ERR_INVALID);
    CHECK(strstr(lk_last_error(), "1fa85") && strstr(lk_last_error(), "fluent3d"));
    CHECK(lk_emoji_set_image_path(s, dog, 0, 16, path, sizeof path) == LK_ERR_INVALID);
    CHECK(lk_emoji_set_image_path(s, dog, 2, 8, path, sizeof path) == LK_ERR_INVALID);
    CHECK(lk_emoji_set_image_path(s, 4, 0, 8, path, sizeof path) == LK_ERR_INVALID);
    CHECK(lk_emoji_set_image_path(s, dog, 0, 8, NULL, 10) == LK_ERR_INVALID);

    char sub[1024];
    static const char *const subdirs[] = {"noto", "noto/8", "noto/4", "fluent3d", "fluent3d/8"};
    for (int i = 0; i < 5; i++) {
        snprintf(sub, sizeof sub, "%s/%s", dir, subdirs[i]);
        CHECK(mkdir(sub, 0755) == 0);
    }
    /* RGBA: left half opaque, top-right transparent, bottom-right half transparent */
    lk_image rgba;
    CHECK_OK(lk_image_alloc(&rgba, 8, 8, 4));
    for (int y = 0; y < 8; y++)
        for (int x = 0; x < 8; x++) {
            uint8_t *p = rgba.px + ((size_t)y * 8 + (size_t)x) * 4;
            p[0] = (uint8_t)(x * 30);
            p[1] = (uint8_t)(y * 30);
            p[2] = 100;
            p[3] = x < 4 ? 255 : y < 4 ? 0 : 128;
        }
    snprintf(path, sizeof path, "%s/noto/8/1f436.png", dir);
    CHECK_OK(lk_image_save_png(&rgba, path, NULL));
    uint8_t rgb[8 * 8 * 3];
    memset(rgb, 0, sizeof rgb);
    CHECK_OK(lk_emoji_set_load_image(s, dog, 0, 8, rgb));
    int bad = 0;
    for (int i = 0; i < 64; i++)
        for (int k = 0; k < 3; k++) {
            unsigned a = rgba.px[4 * i + 3], v = rgba.px[4 * i + k];
            unsigned w = (a * v + (255u - a) * 255u + 127u) / 255u;
            bad += rgb[3 * i + k] != w;
        }
    CHECK(bad == 0);
    CHECK(rgb[3 * 7 + 0] == 255 && rgb[3 * 7 + 1] == 255 && rgb[3 * 7 + 2] == 255); /* (7,0) */
    CHECK(rgb[0] == 0 && rgb[1] == 0 && rgb[2] == 100);                             /* (0,0) */
    lk_image_free(&rgba);

    /* RGB: loaded exactly */
    snprintf(path, sizeof path, "%s/fluent3d/8/1f468-200d-1f373.png", dir);
    save_image(path, 8, 8, 3, 5);
    lk_image ref = {0};
    CHECK_OK(lk_image_load(&ref, path, NULL));
    CHECK_OK(lk_emoji_set_load_image(s, cook, 1, 8, rgb));
    CHECK(ref.px && ref.c == 3 && memcmp(ref.px, rgb, sizeof rgb) == 0);
    lk_image_free(&ref);
    snprintf(path, sizeof path, "%s/noto/8/1fa85.png", dir);
    lk_t_write_subject_png(path, 8, 8, 3);
    CHECK_OK(lk_emoji_set_load_image(s, pin, 0, 8, rgb));

    /* wrong size: LK_ERR_FORMAT naming the file, rgb untouched */
    snprintf(path, sizeof path, "%s/noto/4/1f436.png", dir);
    save_image(path, 8, 4, 3, 1);
    memset(rgb, 7, sizeof rgb);
    CHECK(lk_emoji_set_load_image(s, dog, 0, 4, rgb) == LK_ERR_FORMAT);
    CHECK(strstr(lk_last_error(), "noto/4/1f436.png") && strstr(lk_last_error(), "8x4"));
    CHECK(rgb[0] == 7 && rgb[47] == 7);
    /* missing file, corrupt file, no such style/size */
    CHECK(lk_emoji_set_load_image(s, pin, 0, 4, rgb) == LK_ERR_IO);
    CHECK(strstr(lk_last_error(), "noto/4/1fa85.png") != NULL);
    snprintf(path, sizeof path, "%s/fluent3d/8/1f436.png", dir);
    write_text(path, "\x89PNG\r\n\x1a\n truncated");
    lk_status st = lk_emoji_set_load_image(s, dog, 1, 8, rgb);
    CHECK(st == LK_ERR_FORMAT || st == LK_ERR_UNSUPPORTED);
    CHECK(strstr(lk_last_error(), "fluent3d/8/1f436.png") != NULL);
    CHECK(lk_emoji_set_load_image(s, pin, 1, 8, rgb) == LK_ERR_INVALID);
    CHECK(lk_emoji_set_load_image(s, dog, 0, 6, rgb) == LK_ERR_INVALID);
    CHECK(lk_emoji_set_load_image(s, dog, 0, 8, NULL) == LK_ERR_INVALID);
}

typedef struct bad_case {
    const char *find, *repl;
    const char *want1, *want2; /* substrings of the message (want2 may be NULL) */
} bad_case;

static const bad_case BAD[] = {
    {"\"name\": \"EmojiBench\"", "\"name\": \"EmojiSet\"", "'name'", "EmojiBench"},
    {"\"name\": \"EmojiBench\", ", "", "'name'", "missing"},
    {"\"format\": 1", "\"format\": 2", "'format'", NULL},
    {"\"format\": 1", "\"format\": \"1\"", "'format'", NULL},
    {"\"format\": 1, ", "", "'format'", "missing"},
    {"\"format\": 1", "\"format\": 1, \"format\": 1", "'format'", "twice"},
    {"\"sizes\": [8, 4]", "\"sizes\": [8, 0]", "'sizes'", NULL},
    {"\"sizes\": [8, 4]", "\"sizes\": [8, -4]", "'sizes'", NULL},
    {"\"sizes\": [8, 4]", "\"sizes\": [8, 4.5]", "'sizes'", NULL},
    {"\"sizes\": [8, 4]", "\"sizes\": [8, 5000]", "'sizes'", NULL},
    {"\"sizes\": [8, 4]", "\"sizes\": [8, 8]", "'sizes'", "twice"},
    {"\"sizes\": [8, 4]", "\"sizes\": []", "'sizes'", NULL},
    {"\"sizes\": [8, 4]", "\"sizes\": [8, 4, 16, 32, 64, 128, 256, 512, 1024]", "'sizes'", NULL},
    {"\"sizes\": [8, 4]", "\"sizes\": \"8\"", "'sizes'", NULL},
    {"\"sizes\": [8, 4],\n", "", "'sizes'", "missing"},
    {"\"styles\": [\"noto\", \"fluent3d\"], \"gen",
     "\"styles\": [\"noto\", \"fluent3d\", \"a\", \"b\", \"c\", \"d\", \"e\", \"f\", \"g\"], \"gen",
     "'styles'", "1 to 8"},
    {"\"styles\": [\"noto\", \"fluent3d\"], \"gen", "\"styles\": [\"noto\", \"noto\"], \"gen",
     "'styles'", "twice"},
    {"\"styles\": [\"noto\", \"fluent3d\"], \"gen", "\"styles\": [\"noto\", \"../x\"], \"gen",
     "'styles'", NULL},
    {"\"styles\": [\"noto\", \"fluent3d\"], \"gen", "\"styles\": [\"noto\", \"Fluent3D\"], \"gen",
     "'styles'", NULL},
    {"\"styles\": [\"noto\", \"fluent3d\"], \"gen", "\"styles\": [\"noto\", 3], \"gen", "'styles'",
     NULL},
    {"\"generator_training_styles\": [\"noto\"]", "\"generator_training_styles\": [\"openmoji\"]",
     "generator_training_styles", "openmoji"},
    {"\"generator_training_styles\": [\"noto\"]",
     "\"generator_training_styles\": [\"noto\", \"noto\"]", "generator_training_styles", "twice"},
    {"\"generator_training_styles\": [\"noto\"]", "\"generator_training_styles\": \"noto\"",
     "generator_training_styles", NULL},
    {"\"concepts\": {\n", "\"concepts\": [], \"x\": {\n", "'concepts'", "object"},
    {"\"concepts\": {\n", "\"concept\": {\n", "'concepts'", "missing"},
    {"\"concepts\": {\n", "\"concepts\": {}, \"x\": {\n", "'concepts'", NULL},
    {"\"concepts\": {\n", "\"concepts\": {\n" KEYCAP_CONCEPT ",", "0023-20e3", "twice"},
    {KEYCAP_CONCEPT, "\"0023-20e3\": 5", "0023-20e3", "object"},
    {"1f436", "1F436", "1F436", "hex"},
    {"1f436", "1f436-", "1f436-", "hex"},
    {"1f436", "-1f436", "-1f436", "hex"},
    {"1f436", "1f436--fe0f", "1f436--fe0f", "hex"},
    {"1f436", "01f436", "01f436", "hex"},
    {"1f436", "436", "436", "hex"},
    {"1f436", "d800", "d800", "hex"},
    {"1f436", "110000", "110000", "hex"},
    {"1f436", "1f436-1f436-1f436-1f436-1f436-1f436-1f436-1f436-1f436-1f436-1f436-1f436-1f436"
              "-1f436-1f436-1f436-1f436-1f436-1f436-1f436-1f436-1f436-1f436-1f436-1f436-1f436"
              "-1f436-1f436-1f436-1f436-1f436-1f436-1f436", "concepts", "hex"},
    {"\"key\": \"1f436\"", "\"key\": \"1f437\"", "concept '1f436'", "'key'"},
    {"\"key\": \"1f436\", ", "", "concept '1f436'", "'key'"},
    {"\"name\": \"dog face\", ", "", "concept '1f436'", "'name' is missing"},
    {"\"name\": \"dog face\"", "\"name\": 5", "concept '1f436'", "'name' must be a string"},
    {"\"name\": \"dog face\"", "\"name\": \"\"", "'name'", "empty"},
    {"\"name\": \"dog face\"", "\"name\": \"dog \xff face\"", "'name'", "UTF-8"},
    {"\"name\": \"dog face\"", "\"name\": \"dog\\nface\"", "'name'", "control"},
    {"\"name\": \"dog face\"", "\"name\": \"dog face\", \"name\": \"dog\"", "'name'", "twice"},
    {"\"group\": \"Animals & Nature\", ", "", "concept '1f436'", "'group' is missing"},
    {"\"subgroup\": \"animal-mammal\"", "\"subgroup\": null", "concept '1f436'", "'subgroup'"},
    {"[\"dog\", \"face\", \"pet\"]", "\"dog\"", "concept '1f436'", "'keywords'"},
    {"[\"dog\", \"face\", \"pet\"]", "[\"dog\", 3]", "'keywords' entry 1", NULL},
    {"[\"dog\", \"face\", \"pet\"]", "[\"dog\", \"\"]", "'keywords' entry 1", NULL},
    {"\"codepoints\": \"0023-fe0f-20e3\"", "\"codepoints\": 35", "concept '0023-20e3'",
     "'codepoints'"},
    {"\"test_name\": \"keycap: #\"", "\"test_name\": [\"x\"]", "concept '0023-20e3'",
     "'test_name'"},
    {"\"keywords_source\": \"cldr\", ", "\"keywords_source\": null, ", "'keywords_source'", NULL},
    {"[\"noto\", \"fluent3d\"], \"heldout\": true", "[\"noto\", \"openmoji\"], \"heldout\": true",
     "concept '1f436'", "'openmoji'"},
    {"[\"noto\", \"fluent3d\"], \"heldout\": true", "[\"noto\", \"noto\"], \"heldout\": true",
     "concept '1f436'", "twice"},
    {"[\"noto\", \"fluent3d\"], \"heldout\": true", "[], \"heldout\": true", "concept '1f436'",
     "'styles'"},
    {"[\"noto\", \"fluent3d\"], \"heldout\": true", "\"noto\", \"heldout\": true",
     "concept '1f436'", "'styles'"},
    {"\"heldout\": true", "\"heldout\": 1", "concept '1f436'", "'heldout'"},
    {"\"heldout\": true", "\"heldout\": false", "'heldout'", "'1f436'"},
    {"\"heldout\": [\"1f436\"]", "\"heldout\": [\"1f437\"]", "'heldout'", "not a concept"},
    {"\"heldout\": [\"1f436\"]", "\"heldout\": [\"dog\"]", "'heldout'", NULL},
    {"\"heldout\": [\"1f436\"]", "\"heldout\": [\"1f436\", \"1f436\"]", "'heldout'", "twice"},
    {"\"heldout\": [\"1f436\"]", "\"heldout\": \"1f436\"", "'heldout'", NULL},
    {"\"heldout\": [\"1f436\"],", "", "'heldout'", "missing"},
    {"\"concepts\": 4,", "\"concepts\": 5,", "counts", "'concepts'"},
    {"\"heldout\": 1}", "\"heldout\": 2}", "counts", "'heldout'"},
    {"\"fluent3d\": 2}", "\"fluent3d\": 3}", "per_style", "'fluent3d'"},
    {"\"fluent3d\": 2}", "\"twemoji\": 2}", "per_style", "'fluent3d'"},
    {"\"all_four\": 2", "\"all_four\": 1e12", "counts", "'all_four'"},
    {"\"all_four\": 2", "\"all_four\": -2", "counts", "'all_four'"},
    {"\"counts\": {", "\"counts\": 4, \"x\": {", "'counts'", NULL},
    {"\"concepts\": {\n", "\"concepts\": {,\n", "not valid JSON", NULL},
};

static void check_bad(const char *text, size_t len, const char *what, const char *want1,
                      const char *want2) {
    static char sentinel;
    lk_emoji_set *s = (lk_emoji_set *)(void *)&sentinel; /* must be reset to NULL */
    lk_status st = lk_emoji_set_parse(&s, text, len, "/nowhere", "bad.json");
    const char *msg = lk_last_error();
    bool ok = st == LK_ERR_FORMAT && s == NULL && strstr(msg, "bad.json") &&
              strstr(msg, want1) && (!want2 || strstr(msg, want2)) && !strchr(msg, '\n');
    lk_t_checks++;
    if (!ok) {
        lk_t_failures++;
        fprintf(stderr, "FAIL malformed %s: status %s, message \"%s\" (want \"%s\"%s%s%s)\n", what,
                lk_status_str(st), msg, want1, want2 ? ", \"" : "", want2 ? want2 : "",
                want2 ? "\"" : "");
    } else {
        printf("  refused %-14s %s\n", what, msg);
    }
    if (st == LK_OK) lk_emoji_set_free(s);
}

static void test_malformed(void) {
    for (size_t i = 0; i < sizeof BAD / sizeof BAD[0]; i++) {
        int n = 0;
        char *text = replace_all(BASE, BAD[i].find, BAD[i].repl, &n);
        lk_t_checks++;
        if (n == 0) { /* the case must change the manifest */
            lk_t_failures++;
            fprintf(stderr, "FAIL malformed case %zu: '%s' not found in the base manifest\n", i,
                    BAD[i].find);
        }
        char what[32];
        snprintf(what, sizeof what, "case %zu", i);
        if (text) check_bad(text, strlen(text), what, BAD[i].want1, BAD[i].want2);
        free(text);
    }
    /* 257 keywords */
    size_t cap = 8 * 257 + 16, o = 0;
    char *kw = malloc(cap);
    REQUIRE_VOID(kw);
    o += (size_t)snprintf(kw + o, cap - o, "[");
    for (int i = 0; i < 257; i++) o += (size_t)snprintf(kw + o, cap - o, "%s\"k%d\"", i ? "," : "", i);
    snprintf(kw + o, cap - o, "]");
    int n = 0;
    char *text = replace_all(BASE, "[\"dog\", \"face\", \"pet\"]", kw, &n);
    if (text) check_bad(text, strlen(text), "257 keywords", "'keywords'", "at most 256");
    free(text);
    free(kw);
    /* not a manifest at all */
    check_bad("", 0, "empty text", "not valid JSON", NULL);
    check_bad("[1, 2]", 6, "a list", "JSON object", NULL);
    check_bad("{}", 2, "empty object", "'name'", "missing");
    size_t bl = strlen(BASE);
    char *trail = malloc(bl + 3);
    REQUIRE_VOID(trail);
    memcpy(trail, BASE, bl);
    memcpy(trail + bl, "{}", 3);
    check_bad(trail, bl + 2, "trailing data", "trailing data", NULL);
    trail[10] = '\0';
    check_bad(trail, bl, "NUL inside", "NUL", NULL);
    free(trail);
    lk_emoji_set *s = NULL;
    CHECK(lk_emoji_set_parse(NULL, BASE, bl, "/x", NULL) == LK_ERR_INVALID);
    CHECK(lk_emoji_set_parse(&s, NULL, 5, "/x", NULL) == LK_ERR_INVALID && !s);
    CHECK(lk_emoji_set_parse(&s, BASE, bl, NULL, NULL) == LK_ERR_INVALID && !s);
}

/* A style that is not one of the four keeps its own name in captions. */
static void test_other_style(void) {
    int n = 0;
    char *text = replace_all(BASE, "fluent3d", "pixel_art", &n);
    REQUIRE_VOID(text && n > 0);
    lk_emoji_set *s = NULL;
    CHECK_OK(lk_emoji_set_parse(&s, text, strlen(text), "", NULL));
    free(text);
    if (!s) return;
    CHECK(strcmp(lk_emoji_set_dir(s), ".") == 0);
    CHECK(strcmp(lk_emoji_set_style_words(s, 1), "pixel_art") == 0);
    check_caption(s, "1f436", 1, 0, "dog face emoji, pixel_art style");
    lk_emoji_set_free(s);
    lk_emoji_set_free(NULL);
}

/* The real data set (scripts/emoji_dataset) when LK_EMOJI_DIR names it. */
static void test_real_set(void) {
    const char *dir = getenv("LK_EMOJI_DIR");
    char mp[1024];
    snprintf(mp, sizeof mp, "%s/manifest.json", dir ? dir : "");
    struct stat sb;
    if (!dir || !dir[0] || stat(mp, &sb) != 0) {
        printf("real data set: skipped (set LK_EMOJI_DIR to the built data set)\n");
        return;
    }
    double t0 = lk_t_now();
    lk_emoji_set *s = NULL;
    CHECK_OK(lk_emoji_set_open(&s, dir));
    if (!s) return;
    printf("real data set: %s opened in %.3f s\n", dir, lk_t_now() - t0);
    const int n = lk_emoji_set_n_concepts(s);
    CHECK(n == 3664);
    CHECK(lk_emoji_set_n_styles(s) == 4);
    int held = 0, per_style[LK_EMOJI_MAX_STYLES] = {0}, all = 0;
    for (int i = 0; i < n; i++) {
        const lk_emoji_concept *c = lk_emoji_set_concept(s, i);
        held += c->heldout;
        all += c->style_mask == 15u;
        for (int k = 0; k < 4; k++) per_style[k] += (c->style_mask >> k) & 1u;
        if (i) CHECK(strcmp(lk_emoji_set_concept(s, i - 1)->key, c->key) < 0);
    }
    const int fl = lk_emoji_set_style_index(s, "fluent3d"), om = lk_emoji_set_style_index(s, "openmoji");
    CHECK(held == 30);
    CHECK(fl >= 0 && per_style[fl] == 3375);
    CHECK(all == 3375);
    CHECK(om >= 0 && per_style[om] == 3664 && !lk_emoji_set_style_trainable(s, om));
    CHECK(lk_emoji_set_style_trainable(s, lk_emoji_set_style_index(s, "noto")));
    const int dog = lk_emoji_set_find(s, "1f436");
    CHECK(dog >= 0 && strcmp(lk_emoji_set_concept(s, dog)->name, "dog face") == 0);
    char buf[256];
    CHECK(lk_emoji_caption(s, dog, 0, 0, buf, sizeof buf) > 0 &&
          strcmp(buf, "dog face emoji, noto style") == 0);
    static uint8_t rgb[128 * 128 * 3];
    CHECK_OK(lk_emoji_set_load_image(s, dog, fl, 64, rgb));
    CHECK_OK(lk_emoji_set_load_image(s, dog, 0, 128, rgb));
    CHECK(rgb[0] == 255 && rgb[1] == 255 && rgb[2] == 255); /* composited on white, padded */
    lk_emoji_set_free(s);
}

int main(void) {
    char dir[] = "/tmp/lk_emoji_set_XXXXXX";
    REQUIRE(mkdtemp(dir));
    /* parse from a copy that is freed before use: the set owns all its strings */
    size_t bl = strlen(BASE);
    char *copy = malloc(bl);
    REQUIRE(copy);
    memcpy(copy, BASE, bl);
    char dir_slash[64];
    snprintf(dir_slash, sizeof dir_slash, "%s//", dir);
    lk_emoji_set *s = NULL;
    lk_status st = lk_emoji_set_parse(&s, copy, bl, dir_slash, "synthetic.json");
    free(copy);
    CHECK_OK(st);
    if (s) {
        test_accessors(s, dir);
        test_captions(s);
        test_images(s, dir);
        lk_emoji_set_free(s);
    }

    /* lk_emoji_set_open reads dir/manifest.json */
    char path[128];
    snprintf(path, sizeof path, "%s/manifest.json", dir);
    write_text(path, BASE);
    s = NULL;
    CHECK_OK(lk_emoji_set_open(&s, dir));
    CHECK(lk_emoji_set_n_concepts(s) == 4 && strcmp(lk_emoji_set_dir(s), dir) == 0);
    lk_emoji_set_free(s);
    write_text(path, "{\"name\": \"EmojiBench\", \"format\": 1}");
    CHECK(lk_emoji_set_open(&s, dir) == LK_ERR_FORMAT && s == NULL);
    CHECK(strstr(lk_last_error(), path) && strstr(lk_last_error(), "'sizes'"));
    snprintf(path, sizeof path, "%s/missing", dir);
    CHECK(lk_emoji_set_open(&s, path) == LK_ERR_IO && s == NULL);
    CHECK(strstr(lk_last_error(), "missing/manifest.json") != NULL);

    test_malformed();
    test_other_style();
    test_real_set();

    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    CHECK(system(cmd) == 0);
    return lk_t_done();
}
