/* generate.c: `likeness generate`: text-to-image / image-to-image with a Stable Diffusion 1.x/2.x
 * model, LoRAs, embeddings and Custom Diffusion files; PNGs carry AUTOMATIC1111's "parameters" text, plus a JSON record. */
#define _POSIX_C_SOURCE 200809L
#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli/defaults.h"
#include "cli/progress.h"
#include "core/sha256.h"
#include "likeness.h"
#include "likeness/image.h"
#include "likeness/pipeline.h"
#include "likeness/safetensors.h"

int lk_cli_generate(int argc, char **argv);

#define MAX_EXTRAS 64
#define MAX_COUNT 10000
#define EXIT_RUNTIME 1
#define EXIT_USAGE 2
#define EXIT_INTERRUPTED 130

static void gen_usage(FILE *f) {
    fprintf(f,
            "usage: likeness generate [--model PATH] --prompt TEXT --out DIR [options]\n"
            "\n"
            "Makes images with a Stable Diffusion 1.x/2.x model (diffusers folder or single-file\n"
            ".safetensors; default: likeness's own 64x64 emoji model, models/emoji). Writes DIR/<seq>-<seed>.png (with an AUTOMATIC1111 'parameters' text\n"
            "chunk) and DIR/<seq>-<seed>.json, and prints each PNG's path.\n"
            "\n"
            "  --prompt TEXT         A1111 syntax: (word:1.3), (word), [word], BREAK\n"
            "  --negative TEXT       negative prompt (default empty)\n"
            "  --steps N             sampling steps (default %d)\n"
            "  --cfg S               classifier-free guidance scale (default %g; <= 1: no guidance)\n"
            "  --sampler NAME        ddim, euler, euler_karras, euler_a, heun, heun_karras, dpmpp_2m,\n"
            "                        dpmpp_2m_karras, lms, lms_karras (default dpmpp_2m)\n"
            "  --seed N              torch-compatible seed (default random, printed; -1 = random)\n"
            "  --width W --height H  multiples of 64 for SD (default: the model's sample size, 512\n"
            "                        for SD-1, 768 for SD-2 v; with --init-image: the image's size)\n"
            "  --count N             images, seeds N, N+1, ... (default 1)\n"
            "  --lora FILE[:W]       kohya/A1111 LoRA merged with weight W (default 1); repeatable\n"
            "  --embedding FILE      textual-inversion embedding (.safetensors); repeatable. An A1111\n"
            "                        file NAME.safetensors is written NAME or <NAME> in prompts\n"
            "  --custom FILE         Custom Diffusion file (likeness train custom): its K/V weights\n"
            "                        replace the model's, its tokens (e.g. <new1>) join the\n"
            "                        vocabulary; repeatable (files of different concepts: merge\n"
            "                        them first with likeness train custom-merge)\n"
            "  --init-image IMG      img2img from a PNG/JPEG/WebP image\n"
            "  --strength S          img2img denoising strength in (0, 1] (default %g)\n"
            "  --clip-skip N         use the text encoder's N-th last layer (default 1)\n"
            "  --half                keep weights in float16 (half the memory; f32 compute)\n"
            "  --tokenizer DIR       vocab.json + merges.txt (single files carry none)\n"
            "  --json                print each image's JSON record on stdout instead of writing\n"
            "                        the .json sidecar\n"
            "\n"
            "Progress goes to stderr: a bar on a terminal, JSON lines otherwise (LK_PROGRESS=\n"
            "json|bar|none overrides). Ctrl-C stops after the current step and writes nothing\n"
            "half-done; a second Ctrl-C kills at once.\n",
            LK_SD_DEFAULT_STEPS, (double)LK_SD_DEFAULT_CFG, LK_SD_DEFAULT_STRENGTH);
}

typedef struct lora_arg {
    char *path;
    double weight;
    char name[256];
    char hash[13];
} lora_arg;

typedef struct emb_arg {
    const char *path;
    char name[256];
    char hash[13];
    char *tokens;
} emb_arg;

typedef struct custom_arg {
    const char *path;
    char name[256];
    char hash[13];
    char *tokens;
} custom_arg;

typedef struct gen_args {
    const char *model, *prompt, *negative, *out, *sampler_name, *init_image, *tokenizer;
    int steps, width, height, count, clip_skip;
    double cfg, strength;
    bool have_seed, have_strength, half, json;
    uint64_t seed;
    lora_arg loras[MAX_EXTRAS];
    int n_loras;
    emb_arg embs[MAX_EXTRAS];
    int n_embs;
    custom_arg customs[MAX_EXTRAS];
    int n_customs;
} gen_args;

/* ---- argument parsing ---- */

static int usage_error(const char *fmt, const char *a, const char *b) {
    fprintf(stderr, "likeness generate: ");
    fprintf(stderr, fmt, a, b);
    fprintf(stderr, " (try 'likeness generate --help')\n");
    return EXIT_USAGE;
}

static bool parse_int(const char *s, long lo, long hi, int *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) return false;
    *out = (int)v;
    return true;
}

static bool parse_double(const char *s, double *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(v)) return false;
    *out = v;
    return true;
}

/* "FILE" or "FILE:WEIGHT" (the last ':' separates, so paths may hold colons before it). */
static int parse_lora(const char *s, lora_arg *l) {
    const char *c = strrchr(s, ':');
    size_t plen = c ? (size_t)(c - s) : strlen(s);
    l->weight = 1.0;
    if (c && !parse_double(c + 1, &l->weight))
        return usage_error("bad --lora '%s': '%s' is not a number (use FILE:WEIGHT, e.g. style.safetensors:0.8)",
                           s, c + 1);
    if (plen == 0) return usage_error("bad --lora '%s': no file%s (use FILE:WEIGHT)", s, "");
    l->path = malloc(plen + 1);
    if (!l->path) return usage_error("out of memory%s%s", "", "");
    memcpy(l->path, s, plen);
    l->path[plen] = '\0';
    return 0;
}

static int parse_args(int argc, char **argv, gen_args *a, bool *help) {
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i];
        if (!strcmp(o, "-h") || !strcmp(o, "--help")) {
            *help = true;
            return 0;
        }
        if (!strcmp(o, "--half")) {
            a->half = true;
            continue;
        }
        if (!strcmp(o, "--json")) {
            a->json = true;
            continue;
        }
        static const char *const with_value[] = {
            "--model", "--prompt", "--negative", "--steps", "--cfg", "--sampler", "--seed",
            "--width", "--height", "--count", "--lora", "--embedding", "--custom", "--init-image",
            "--strength", "--clip-skip", "--tokenizer", "--out"};
        bool known = false;
        for (size_t k = 0; k < sizeof with_value / sizeof *with_value; k++) known |= !strcmp(o, with_value[k]);
        if (!known) {
            if (o[0] == '-') return usage_error("unknown option '%s'%s", o, "");
            return usage_error("unexpected argument '%s'%s (options take --NAME VALUE)", o, "");
        }
        if (i + 1 >= argc) return usage_error("%s needs a value%s", o, "");
        const char *v = argv[++i];
        if (!strcmp(o, "--model")) a->model = v;
        else if (!strcmp(o, "--prompt")) a->prompt = v;
        else if (!strcmp(o, "--negative")) a->negative = v;
        else if (!strcmp(o, "--sampler")) a->sampler_name = v;
        else if (!strcmp(o, "--init-image")) a->init_image = v;
        else if (!strcmp(o, "--tokenizer")) a->tokenizer = v;
        else if (!strcmp(o, "--out")) a->out = v;
        else if (!strcmp(o, "--steps")) {
            if (!parse_int(v, 1, 1000, &a->steps))
                return usage_error("--steps '%s': expected a whole number from 1 to 1000%s", v, "");
        } else if (!strcmp(o, "--width") || !strcmp(o, "--height")) {
            int *dst = o[2] == 'w' ? &a->width : &a->height;
            if (!parse_int(v, 8, 16384, dst))
                return usage_error("%s '%s': expected a whole number from 8 to 16384", o, v);
            if (*dst % 8)
                return usage_error("%s %s is not divisible by 8", o + 2, v);
        } else if (!strcmp(o, "--count")) {
            if (!parse_int(v, 1, MAX_COUNT, &a->count))
                return usage_error("--count '%s': expected a whole number from 1 to 10000%s", v, "");
        } else if (!strcmp(o, "--clip-skip")) {
            if (!parse_int(v, 1, 64, &a->clip_skip))
                return usage_error("--clip-skip '%s': expected a whole number from 1 to 64%s", v, "");
        } else if (!strcmp(o, "--cfg")) {
            if (!parse_double(v, &a->cfg) || a->cfg < 0.0 || a->cfg > 1000.0)
                return usage_error("--cfg '%s': expected a number from 0 to 1000%s", v, "");
        } else if (!strcmp(o, "--strength")) {
            if (!parse_double(v, &a->strength) || !(a->strength > 0.0 && a->strength <= 1.0))
                return usage_error("--strength '%s': must be a number in (0, 1]%s", v, "");
            a->have_strength = true;
        } else if (!strcmp(o, "--seed")) {
            char *end;
            errno = 0;
            if (!strcmp(v, "-1")) {
                a->have_seed = false;
            } else {
                unsigned long long s = strtoull(v, &end, 10);
                if (errno || end == v || *end || v[0] == '-')
                    return usage_error("--seed '%s': expected a whole number from 0 to 2^64-1 (or -1: random)%s", v, "");
                a->seed = (uint64_t)s;
                a->have_seed = true;
            }
        } else if (!strcmp(o, "--lora")) {
            if (a->n_loras == MAX_EXTRAS) return usage_error("more than %s LoRAs%s", "64", "");
            int rc = parse_lora(v, &a->loras[a->n_loras]);
            if (rc) return rc;
            a->n_loras++;
        } else if (!strcmp(o, "--embedding")) {
            if (a->n_embs == MAX_EXTRAS) return usage_error("more than %s embeddings%s", "64", "");
            a->embs[a->n_embs++].path = v;
        } else if (!strcmp(o, "--custom")) {
            if (a->n_customs == MAX_EXTRAS) return usage_error("more than %s --custom files%s", "64", "");
            a->customs[a->n_customs++].path = v;
        }
    }
    return 0;
}

/* ---- files ---- */

/* base name without folder, trailing '/' and (for files) the extension */
static void stem(const char *path, char *out, size_t n) {
    size_t len = strlen(path);
    while (len > 1 && path[len - 1] == '/') len--;
    size_t b = len;
    while (b > 0 && path[b - 1] != '/') b--;
    size_t e = len;
    for (size_t k = len; k > b; k--)
        if (path[k - 1] == '.') {
            if (k - 1 > b) e = k - 1;
            break;
        }
    size_t m = e - b < n - 1 ? e - b : n - 1;
    memcpy(out, path + b, m);
    out[m] = '\0';
}

static int need_file(const char *what, const char *path, bool dir_ok) {
    struct stat st;
    if (stat(path, &st) != 0) {
        fprintf(stderr, "likeness generate: %s '%s': %s\n", what, path, strerror(errno));
        return EXIT_RUNTIME;
    }
    if (!dir_ok && S_ISDIR(st.st_mode)) {
        fprintf(stderr, "likeness generate: %s '%s' is a folder, expected a file\n", what, path);
        return EXIT_RUNTIME;
    }
    return 0;
}

/* mkdir -p */
static int make_dirs(const char *path) {
    char buf[PATH_MAX];
    size_t len = strlen(path);
    if (len == 0 || len >= sizeof buf) {
        fprintf(stderr, "likeness generate: --out '%s': bad folder name\n", path);
        return EXIT_USAGE;
    }
    memcpy(buf, path, len + 1);
    for (size_t i = 1; i <= len; i++) {
        if (buf[i] == '/' || buf[i] == '\0') {
            char c = buf[i];
            buf[i] = '\0';
            if (mkdir(buf, 0777) != 0 && errno != EEXIST) {
                fprintf(stderr, "likeness generate: cannot create folder '%s': %s\n", buf, strerror(errno));
                return EXIT_RUNTIME;
            }
            buf[i] = c;
        }
    }
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode)) {
        fprintf(stderr, "likeness generate: --out '%s' is not a folder\n", path);
        return EXIT_RUNTIME;
    }
    return 0;
}

/* The next A1111-style sequence number: 1 + the largest NNNNN of "NNNNN-*" in dir. */
static int next_seq(const char *dir) {
    DIR *d = opendir(dir);
    int next = 0;
    if (!d) return 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        const char *n = e->d_name;
        int k = 0, v = 0;
        while (k < 9 && n[k] >= '0' && n[k] <= '9') v = v * 10 + (n[k++] - '0');
        if (k >= 5 && n[k] == '-' && v + 1 > next) next = v + 1;
    }
    closedir(d);
    return next;
}

/* Write text atomically: PATH.tmp.<pid>, fsync, rename. */
static lk_status write_atomic(const char *path, const char *text) {
    char tmp[PATH_MAX + 32];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0666);
    if (fd < 0) return lk_fail(LK_ERR_IO, "%s: cannot create: %s", tmp, strerror(errno));
    size_t n = strlen(text), o = 0;
    while (o < n) {
        ssize_t k = write(fd, text + o, n - o);
        if (k < 0) {
            if (errno == EINTR) continue;
            int e = errno;
            close(fd);
            unlink(tmp);
            return lk_fail(LK_ERR_IO, "%s: write failed: %s", tmp, strerror(e));
        }
        o += (size_t)k;
    }
    if (fsync(fd) != 0 || close(fd) != 0) {
        int e = errno;
        unlink(tmp);
        return lk_fail(LK_ERR_IO, "%s: fsync/close failed: %s", tmp, strerror(e));
    }
    if (rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        return lk_fail(LK_ERR_IO, "%s: rename failed: %s", path, strerror(e));
    }
    return LK_OK;
}

/* A1111's LoRA hash ("addnet" hash): sha256 of a safetensors file after its header. */
static lk_status addnet_hash12(const char *path, char out[13]) {
    FILE *f = fopen(path, "rb");
    if (!f) return lk_fail(LK_ERR_IO, "%s: %s", path, strerror(errno));
    unsigned char h8[8];
    lk_status s = LK_OK;
    if (fread(h8, 1, 8, f) != 8) s = lk_fail(LK_ERR_FORMAT, "%s: too short", path);
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--) hl = hl << 8 | h8[i];
    if (s == LK_OK && (hl > (1ull << 40) || fseeko(f, (off_t)(8 + hl), SEEK_SET) != 0))
        s = lk_fail(LK_ERR_FORMAT, "%s: bad header length", path);
    if (s == LK_OK) {
        lk_sha256 c;
        lk_sha256_init(&c);
        static unsigned char buf[1 << 16];
        size_t k;
        while ((k = fread(buf, 1, sizeof buf, f)) > 0) lk_sha256_update(&c, buf, k);
        if (ferror(f)) s = lk_fail(LK_ERR_IO, "%s: read error", path);
        uint8_t d[32];
        lk_sha256_final(&c, d);
        for (int i = 0; i < 6; i++) snprintf(out + 2 * i, 3, "%02x", d[i]);
    }
    fclose(f);
    return s;
}

static uint64_t random_seed(void) {
    uint32_t v = 0;
    FILE *f = fopen("/dev/urandom", "rb");
    if (!f || fread(&v, sizeof v, 1, f) != 1) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        v = (uint32_t)ts.tv_nsec ^ (uint32_t)ts.tv_sec ^ (uint32_t)getpid() * 2654435761u;
    }
    if (f) fclose(f);
    return v; /* A1111-sized (32-bit) seeds */
}

/* ---- the init image ---- */

/* Load, size (given size, else the image's rounded down to the multiple) and convert. */
static lk_status load_init(const char *path, int *w, int *h, int multiple, float **chw) {
    lk_image im = {0}, rs = {0};
    lk_image_load_opts lo;
    memset(&lo, 0, sizeof lo);
    lo.channels = 3;
    lk_status s = lk_image_load(&im, path, &lo);
    if (s != LK_OK) return s;
    if (*w <= 0) *w = im.w - im.w % multiple;
    if (*h <= 0) *h = im.h - im.h % multiple;
    if (*w <= 0 || *h <= 0) {
        lk_image_free(&im);
        return lk_fail(LK_ERR_INVALID, "%s: %dx%d is smaller than the model's %d-pixel multiple",
                       path, im.w, im.h, multiple);
    }
    const lk_image *use = &im;
    if (im.w != *w || im.h != *h) {
        s = lk_image_resize(&im, *w, *h, LK_RESIZE_LANCZOS3, &rs);
        use = &rs;
    }
    if (s == LK_OK) {
        *chw = malloc((size_t)3 * (size_t)*w * (size_t)*h * sizeof **chw);
        if (!*chw) s = lk_fail(LK_ERR_NOMEM, "out of memory");
        else s = lk_image_to_chw(use, LK_RANGE_SYMMETRIC, *chw);
    }
    lk_image_free(&im);
    lk_image_free(&rs);
    return s;
}

/* ---- the run ---- */

static int fail_runtime(lk_cli_progress *pr, const char *what) {
    if (pr) lk_cli_progress_end_line(pr);
    const char *m = lk_last_error();
    fprintf(stderr, "likeness generate: %s%s%s\n", what ? what : "", what && *m ? ": " : "", m);
    return EXIT_RUNTIME;
}

/* seconds rounded to 0.1 ms for the record */
static double ms4(double s) { return round(s * 1e4) / 1e4; }

static cJSON *record(const gen_args *a, const lk_sd_gen_params *g, lk_sd_model *m, const char *file,
                     const char *model_name, const char *hash10, const char *params,
                     const lk_sd_result *r, double t_load, double t_save, int index, int steps_run) {
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "file", file);
    cJSON_AddStringToObject(j, "prompt", a->prompt);
    cJSON_AddStringToObject(j, "negative_prompt", a->negative ? a->negative : "");
    cJSON_AddNumberToObject(j, "steps", g->steps);
    cJSON_AddStringToObject(j, "sampler", lk_sampler_name(g->sampler));
    bool karras;
    const char *an = lk_sampler_a1111_name(g->sampler, &karras);
    char a1111[64];
    snprintf(a1111, sizeof a1111, "%s%s", an, karras ? " Karras" : "");
    cJSON_AddStringToObject(j, "sampler_a1111", a1111);
    cJSON_AddNumberToObject(j, "cfg_scale", a->cfg);
    char seed[32];
    snprintf(seed, sizeof seed, "%llu", (unsigned long long)g->seed);
    cJSON_AddRawToObject(j, "seed", seed); /* exact even above 2^53 */
    cJSON_AddNumberToObject(j, "index", index);
    cJSON_AddNumberToObject(j, "width", r->width);
    cJSON_AddNumberToObject(j, "height", r->height);
    cJSON_AddNumberToObject(j, "clip_skip", g->clip_skip);
    cJSON_AddStringToObject(j, "model", a->model);
    cJSON_AddStringToObject(j, "model_name", model_name);
    cJSON_AddStringToObject(j, "model_hash", hash10);
    cJSON_AddStringToObject(j, "model_sha256", m->sha256);
    cJSON_AddStringToObject(j, "arch", lk_sd_arch_name(m->arch));
    cJSON_AddStringToObject(j, "prediction", m->prediction == LK_PREDICT_V ? "v_prediction" : "epsilon");
    cJSON_AddStringToObject(j, "weights", a->half ? "F16" : "F32");
    cJSON *ls = cJSON_AddArrayToObject(j, "loras");
    for (int i = 0; i < a->n_loras; i++) {
        cJSON *l = cJSON_CreateObject();
        cJSON_AddStringToObject(l, "file", a->loras[i].path);
        cJSON_AddStringToObject(l, "name", a->loras[i].name);
        cJSON_AddNumberToObject(l, "weight", a->loras[i].weight);
        cJSON_AddStringToObject(l, "hash", a->loras[i].hash);
        cJSON_AddItemToArray(ls, l);
    }
    cJSON *es = cJSON_AddArrayToObject(j, "embeddings");
    for (int i = 0; i < a->n_embs; i++) {
        cJSON *e = cJSON_CreateObject();
        cJSON_AddStringToObject(e, "file", a->embs[i].path);
        cJSON_AddStringToObject(e, "name", a->embs[i].name);
        cJSON_AddStringToObject(e, "tokens", a->embs[i].tokens ? a->embs[i].tokens : "");
        cJSON_AddStringToObject(e, "hash", a->embs[i].hash);
        cJSON_AddItemToArray(es, e);
    }
    cJSON *cs = cJSON_AddArrayToObject(j, "custom");
    for (int i = 0; i < a->n_customs; i++) {
        cJSON *e = cJSON_CreateObject();
        cJSON_AddStringToObject(e, "file", a->customs[i].path);
        cJSON_AddStringToObject(e, "name", a->customs[i].name);
        cJSON_AddStringToObject(e, "tokens", a->customs[i].tokens ? a->customs[i].tokens : "");
        cJSON_AddStringToObject(e, "hash", a->customs[i].hash);
        cJSON_AddItemToArray(cs, e);
    }
    if (a->init_image) {
        cJSON_AddStringToObject(j, "init_image", a->init_image);
        cJSON_AddNumberToObject(j, "strength", g->strength);
    } else {
        cJSON_AddNullToObject(j, "init_image");
        cJSON_AddNullToObject(j, "strength");
    }
    cJSON *t = cJSON_AddObjectToObject(j, "timings");
    cJSON_AddNumberToObject(t, "load_s", ms4(t_load));
    cJSON_AddNumberToObject(t, "encode_s", ms4(r->t_encode));
    cJSON_AddNumberToObject(t, "sample_s", ms4(r->t_sample));
    cJSON_AddNumberToObject(t, "decode_s", ms4(r->t_decode));
    cJSON_AddNumberToObject(t, "save_s", ms4(t_save));
    cJSON_AddNumberToObject(t, "it_per_s", r->t_sample > 0.0 ? round(1e3 * steps_run / r->t_sample) / 1e3 : 0.0);
    cJSON_AddNumberToObject(j, "steps_run", steps_run);
    cJSON_AddStringToObject(j, "parameters", params);
    char ver[64];
    snprintf(ver, sizeof ver, "likeness %s", lk_version());
    cJSON_AddStringToObject(j, "version", ver);
    return j;
}

static void free_args(gen_args *a) {
    for (int i = 0; i < a->n_loras; i++) free(a->loras[i].path);
    for (int i = 0; i < a->n_embs; i++) free(a->embs[i].tokens);
    for (int i = 0; i < a->n_customs; i++) free(a->customs[i].tokens);
}

/* The tokens of a Custom Diffusion file (its tensors that are not ".attn2." layers) joined by
 * ", " into *out (malloc'd), and the first 12 hex digits of the file's sha256. */
static lk_status custom_info(const char *path, char **out, char hash[13]) {
    *out = NULL;
    lk_safetensors *st = NULL;
    lk_status s = lk_safetensors_open(&st, path);
    size_t len = 0;
    for (int i = 0; s == LK_OK && i < lk_safetensors_count(st); i++) {
        const char *n = lk_safetensors_at(st, i)->name;
        if (strstr(n, ".attn2.")) continue;
        size_t k = strlen(n);
        char *r = realloc(*out, len + k + 3);
        if (!r) {
            s = lk_fail(LK_ERR_NOMEM, "out of memory");
            break;
        }
        if (len) memcpy(r + len, ", ", 2), len += 2;
        memcpy(r + len, n, k + 1);
        len += k;
        *out = r;
    }
    lk_safetensors_close(st);
    char full[65];
    if (s == LK_OK) s = lk_sha256_file(path, full);
    if (s == LK_OK) {
        memcpy(hash, full, 12);
        hash[12] = '\0';
    } else {
        free(*out);
        *out = NULL;
    }
    return s;
}

/* params + ", Custom hashes: \"name: hash, ...\"" (JSON-quoted as A1111 quotes its hash lists);
 * *params is replaced. */
static lk_status add_custom_hashes(char **params, const gen_args *a) {
    if (a->n_customs == 0) return LK_OK;
    size_t n = 1;
    for (int i = 0; i < a->n_customs; i++) n += strlen(a->customs[i].name) + 16;
    char *list = malloc(n);
    if (!list) return lk_fail(LK_ERR_NOMEM, "out of memory");
    list[0] = '\0';
    for (int i = 0; i < a->n_customs; i++) {
        if (i) strcat(list, ", ");
        strcat(list, a->customs[i].name);
        strcat(list, ": ");
        strcat(list, a->customs[i].hash);
    }
    cJSON *q = cJSON_CreateString(list);
    char *qs = q ? cJSON_PrintUnformatted(q) : NULL;
    char *r = qs ? malloc(strlen(*params) + strlen(qs) + sizeof ", Custom hashes: ") : NULL;
    lk_status s = LK_OK;
    if (!r) s = lk_fail(LK_ERR_NOMEM, "out of memory");
    else {
        sprintf(r, "%s, Custom hashes: %s", *params, qs);
        free(*params);
        *params = r;
    }
    cJSON_free(qs);
    cJSON_Delete(q);
    free(list);
    return s;
}

static int run(gen_args *a) {
    /* cheap checks before the model loads */
    if (!a->model) a->model = lk_cli_default_model(); /* the bundled emoji model */
    if (!a->prompt) return usage_error("--prompt TEXT is required%s%s", "", "");
    if (!a->out) return usage_error("--out DIR is required%s%s", "", "");
    lk_sd_gen_params g;
    lk_sd_gen_params_default(&g);
    if (a->sampler_name && lk_sampler_parse(a->sampler_name, &g.sampler) != LK_OK) {
        fprintf(stderr, "likeness generate: %s\n", lk_last_error());
        return EXIT_USAGE;
    }
    if (a->have_strength && !a->init_image)
        return usage_error("--strength needs --init-image%s%s", "", "");
    if ((a->width > 0) != (a->height > 0) && !a->init_image)
        fprintf(stderr, "likeness generate: note: only one of --width/--height given; the other is the model's default\n");
    int rc = need_file("model", a->model, true);
    for (int i = 0; !rc && i < a->n_loras; i++) rc = need_file("LoRA", a->loras[i].path, false);
    for (int i = 0; !rc && i < a->n_embs; i++) rc = need_file("embedding", a->embs[i].path, false);
    for (int i = 0; !rc && i < a->n_customs; i++) rc = need_file("custom", a->customs[i].path, false);
    if (!rc && a->init_image) rc = need_file("init image", a->init_image, false);
    if (!rc && a->tokenizer) rc = need_file("tokenizer folder", a->tokenizer, true);
    if (!rc) rc = make_dirs(a->out);
    if (rc) return rc;

    lk_cli_progress pr;
    lk_cli_progress_init(&pr, stderr, a->count);
    lk_cli_sigint_install();
    const double t0 = lk_cli_now();
    lk_cli_progress_note(&pr, "load", "loading %s", a->model);
    lk_sd_pipeline_opts po;
    lk_sd_pipeline_opts_default(&po);
    po.store = a->half ? LK_F16 : LK_F32;
    po.tokenizer_dir = a->tokenizer;
    const char *custom_paths[MAX_EXTRAS];
    for (int i = 0; i < a->n_customs; i++) {
        custom_arg *c = &a->customs[i];
        custom_paths[i] = c->path;
        stem(c->path, c->name, sizeof c->name);
        if (custom_info(c->path, &c->tokens, c->hash) != LK_OK) return fail_runtime(&pr, NULL);
    }
    po.custom = custom_paths;
    po.n_custom = a->n_customs;
    lk_sd_pipeline *p = NULL;
    if (lk_sd_pipeline_load(&p, a->model, &po) != LK_OK) return fail_runtime(&pr, NULL);
    lk_sd_model *m = lk_sd_pipeline_model(p);
    float *init = NULL;
    int exit_code = 0;
    char hash10[11] = "", model_name[256];
    stem(a->model, model_name, sizeof model_name);
    for (int i = 0; i < a->n_loras; i++) {
        lora_arg *l = &a->loras[i];
        stem(l->path, l->name, sizeof l->name);
        if (lk_sd_pipeline_add_lora(p, l->path, (float)l->weight) != LK_OK ||
            addnet_hash12(l->path, l->hash) != LK_OK) {
            exit_code = fail_runtime(&pr, NULL);
            goto done;
        }
    }
    for (int i = 0; i < a->n_embs; i++) {
        emb_arg *e = &a->embs[i];
        stem(e->path, e->name, sizeof e->name);
        char full[65];
        if (lk_sd_pipeline_add_embedding(p, e->path, NULL, &e->tokens) != LK_OK ||
            lk_sha256_file(e->path, full) != LK_OK) {
            exit_code = fail_runtime(&pr, NULL);
            goto done;
        }
        memcpy(e->hash, full, 12);
        e->hash[12] = '\0';
    }
    if (lk_sd_model_hash(m, hash10) != LK_OK) {
        exit_code = fail_runtime(&pr, NULL);
        goto done;
    }
    int multiple, dw, dh;
    lk_sd_pipeline_geometry(p, &multiple, &dw, &dh);
    int width = a->width, height = a->height;
    if (a->init_image) {
        if (load_init(a->init_image, &width, &height, multiple, &init) != LK_OK) {
            exit_code = fail_runtime(&pr, NULL);
            goto done;
        }
    }
    if (width <= 0) width = dw;
    if (height <= 0) height = dh;
    if (lk_sd_pipeline_latent_shape(p, width, height, NULL, NULL, NULL) != LK_OK) {
        exit_code = fail_runtime(&pr, NULL);
        goto done;
    }
    const double t_load = lk_cli_now() - t0;
    if (!a->have_seed) a->seed = random_seed();
    g.prompt = a->prompt;
    g.negative_prompt = a->negative;
    g.width = width;
    g.height = height;
    if (a->steps > 0) g.steps = a->steps;
    g.cfg_scale = (float)a->cfg;
    g.clip_skip = a->clip_skip > 0 ? a->clip_skip : 1;
    g.init_image = init;
    g.strength = a->have_strength ? a->strength : LK_SD_DEFAULT_STRENGTH;
    g.progress = lk_cli_progress_step;
    g.progress_ud = &pr;
    g.cancel = &lk_cli_interrupted;
    lk_cli_progress_note(&pr, "start", "%s %s, %d image%s %dx%d, %s %d steps, CFG %g, seed %llu%s",
                         lk_sd_arch_name(m->arch), model_name, a->count, a->count > 1 ? "s" : "",
                         width, height, lk_sampler_name(g.sampler), g.steps, a->cfg,
                         (unsigned long long)a->seed, a->have_seed ? "" : " (random)");

    int seq = next_seq(a->out);
    const char *lnames[MAX_EXTRAS], *lhashes[MAX_EXTRAS], *tnames[MAX_EXTRAS], *thashes[MAX_EXTRAS];
    double lweights[MAX_EXTRAS];
    for (int i = 0; i < a->n_loras; i++) {
        lnames[i] = a->loras[i].name;
        lhashes[i] = a->loras[i].hash;
        lweights[i] = a->loras[i].weight;
    }
    for (int i = 0; i < a->n_embs; i++) {
        tnames[i] = a->embs[i].name;
        thashes[i] = a->embs[i].hash;
    }
    for (int k = 0; k < a->count; k++) {
        g.seed = a->seed + (uint64_t)k;
        lk_cli_progress_image(&pr, k + 1, g.seed);
        lk_sd_result r;
        lk_status s = lk_sd_pipeline_generate(p, &g, &r);
        if (s == LK_OK && lk_cli_interrupted) {
            lk_sd_result_free(&r);
            s = lk_fail(LK_ERR_INTERRUPTED, "interrupted");
        }
        if (s == LK_ERR_INTERRUPTED) {
            lk_cli_progress_end_line(&pr);
            fprintf(stderr, "likeness generate: interrupted; image %d of %d (seed %llu) not written\n",
                    k + 1, a->count, (unsigned long long)g.seed);
            exit_code = EXIT_INTERRUPTED;
            goto done;
        }
        if (s != LK_OK) {
            exit_code = fail_runtime(&pr, NULL);
            goto done;
        }
        const double ts0 = lk_cli_now();
        lk_sd_infotext info = {.prompt = a->prompt, .negative_prompt = a->negative, .steps = g.steps,
                               .sampler = g.sampler, .cfg_scale = a->cfg, .seed = g.seed,
                               .width = r.width, .height = r.height, .model_hash = hash10,
                               .model_name = model_name, .strength = a->init_image ? g.strength : 0.0,
                               .clip_skip = g.clip_skip, .n_loras = a->n_loras,
                               .lora_names = lnames, .lora_weights = lweights, .lora_hashes = lhashes,
                               .n_tis = a->n_embs, .ti_names = tnames, .ti_hashes = thashes};
        char *params = NULL;
        lk_image im = {0};
        char png[PATH_MAX], jsn[PATH_MAX], file[64];
        s = lk_sd_infotext_format(&info, &params);
        if (s == LK_OK) s = add_custom_hashes(&params, a);
        if (s == LK_OK) s = lk_image_from_chw(&im, r.image, 3, r.height, r.width, LK_RANGE_SYMMETRIC);
        for (;; seq++) {
            snprintf(file, sizeof file, "%05d-%llu", seq, (unsigned long long)g.seed);
            snprintf(png, sizeof png, "%s/%s.png", a->out, file);
            snprintf(jsn, sizeof jsn, "%s/%s.json", a->out, file);
            if (access(png, F_OK) != 0 && access(jsn, F_OK) != 0) break;
        }
        seq++;
        lk_image_text kv = {.key = "parameters", .value = params};
        lk_png_write_opts wo = {.level = LK_PNG_LEVEL_DEFAULT, .text = &kv, .n_text = 1};
        if (s == LK_OK) s = lk_image_save_png(&im, png, &wo);
        const double t_save = lk_cli_now() - ts0;
        if (s == LK_OK) {
            char fname[80];
            snprintf(fname, sizeof fname, "%s.png", file);
            cJSON *j = record(a, &g, m, fname, model_name, hash10, params, &r, t_load, t_save, k,
                              pr.last_total);
            char *txt = j ? (a->json ? cJSON_PrintUnformatted(j) : cJSON_Print(j)) : NULL;
            if (!txt) s = lk_fail(LK_ERR_NOMEM, "out of memory");
            else if (a->json) printf("%s\n", txt);
            else {
                size_t len = strlen(txt);
                char *nl = malloc(len + 2);
                if (!nl) s = lk_fail(LK_ERR_NOMEM, "out of memory");
                else {
                    memcpy(nl, txt, len);
                    nl[len] = '\n';
                    nl[len + 1] = '\0';
                    s = write_atomic(jsn, nl);
                    free(nl);
                }
                if (s == LK_OK) printf("%s\n", png);
            }
            fflush(stdout);
            cJSON_free(txt);
            cJSON_Delete(j);
        }
        if (s == LK_OK)
            lk_cli_progress_note(&pr, "saved", "wrote %s (seed %llu, %.2f s sampling, %.2f it/s)", png,
                                 (unsigned long long)g.seed, r.t_sample,
                                 r.t_sample > 0.0 ? (double)pr.last_total / r.t_sample : 0.0);
        free(params);
        lk_image_free(&im);
        lk_sd_result_free(&r);
        if (s != LK_OK) {
            exit_code = fail_runtime(&pr, NULL);
            goto done;
        }
    }
done:
    lk_cli_sigint_restore();
    free(init);
    lk_sd_pipeline_free(p);
    return exit_code;
}

/* Contract: `likeness generate ARGS` (argv[0] is "generate"); returns the process exit code:
 * 0 success, 1 a runtime failure (message on stderr, one line), 2 a usage error, 130 Ctrl-C. */
int lk_cli_generate(int argc, char **argv) {
    gen_args a;
    memset(&a, 0, sizeof a);
    a.cfg = (double)LK_SD_DEFAULT_CFG;
    a.count = 1;
    bool help = false;
    int rc = parse_args(argc, argv, &a, &help);
    if (!rc && help) gen_usage(stdout);
    else if (!rc) rc = run(&a);
    free_args(&a);
    return rc;
}
