/* train_data.c: the training set of a personalization run: an image folder checked and prepared
 * as diffusers' training scripts do (Resize + CenterCrop + optional flip, Normalize to [-1, 1]),
 * encoded once into cached VAE posteriors, the caption templates of Textual Inversion (Gal et
 * al. 2022, imagenet_templates_small / imagenet_style_templates_small) and DreamBooth's
 * "a [V] [class]", per-image NAME.txt captions, and the shuffled epoch order. */
#define _POSIX_C_SOURCE 200809L
#include "personalize/train_internal.h"

#include <ctype.h>
#include <dirent.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

/* ---- caption templates ---- */

static const char *const object_templates[] = {
    "a photo of a {}",        "a rendering of a {}",       "a cropped photo of the {}",
    "the photo of a {}",      "a photo of a clean {}",     "a photo of a dirty {}",
    "a dark photo of the {}", "a photo of my {}",          "a photo of the cool {}",
    "a close-up photo of a {}", "a bright photo of the {}", "a cropped photo of a {}",
    "a photo of the {}",      "a good photo of the {}",    "a photo of one {}",
    "a close-up photo of the {}", "a rendition of the {}", "a photo of the clean {}",
    "a rendition of a {}",    "a photo of a nice {}",      "a good photo of a {}",
    "a photo of the nice {}", "a photo of the small {}",   "a photo of the weird {}",
    "a photo of the large {}", "a photo of a cool {}",     "a photo of a small {}",
};

static const char *const style_templates[] = {
    "a painting in the style of {}",         "a rendering in the style of {}",
    "a cropped painting in the style of {}", "the painting in the style of {}",
    "a clean painting in the style of {}",   "a dirty painting in the style of {}",
    "a dark painting in the style of {}",    "a picture in the style of {}",
    "a cool painting in the style of {}",    "a close-up painting in the style of {}",
    "a bright painting in the style of {}",  "a cropped painting in the style of {}",
    "a good painting in the style of {}",    "a close-up painting in the style of {}",
    "a rendition in the style of {}",        "a nice painting in the style of {}",
    "a small painting in the style of {}",   "a weird painting in the style of {}",
    "a large painting in the style of {}",
};

static const char *const instance_template = "a {token} {class}";

#define N_OBJECT ((int)(sizeof object_templates / sizeof object_templates[0]))
#define N_STYLE ((int)(sizeof style_templates / sizeof style_templates[0]))

/* Contract: see train.h. */
int lk_train_template_count(lk_caption_mode mode) {
    switch (mode) {
    case LK_CAPTION_OBJECT: return N_OBJECT;
    case LK_CAPTION_STYLE: return N_STYLE;
    case LK_CAPTION_INSTANCE: return 1;
    }
    return 0;
}

/* Contract: see train.h. */
const char *lk_train_template(lk_caption_mode mode, int i) {
    if (i < 0 || i >= lk_train_template_count(mode)) return NULL;
    switch (mode) {
    case LK_CAPTION_OBJECT: return object_templates[i];
    case LK_CAPTION_STYLE: return style_templates[i];
    case LK_CAPTION_INSTANCE: return instance_template;
    }
    return NULL;
}

/* ---- captions ---- */

typedef struct sbuf {
    char *p;
    size_t n, cap;
    bool overflow;
} sbuf;

static void put(sbuf *b, const char *s, size_t n) {
    if (b->n + n + 1 > b->cap) {
        b->overflow = true;
        return;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}

/* Contract: see train_internal.h. */
lk_status lk__train_fill_caption(const char *text, const char *token, const char *class_word,
                                 char *out, size_t cap) {
    if (!text || !token || !out || cap < 2) return lk_fail(LK_ERR_INVALID, "caption: NULL argument");
    const char *cls = class_word ? class_word : "";
    static const struct { const char *pat; int which; } pats[] = {
        {"{token}", 0}, {"{}", 0}, {"[V]", 0}, {"{class}", 1}, {"[class]", 1},
    };
    char *tmp = malloc(cap);
    if (!tmp) return lk_fail(LK_ERR_NOMEM, "out of memory");
    sbuf b = {tmp, 0, cap, false};
    tmp[0] = 0;
    for (const char *s = text; *s;) {
        bool hit = false;
        for (size_t k = 0; k < sizeof pats / sizeof pats[0]; k++) {
            size_t pl = strlen(pats[k].pat);
            if (!strncmp(s, pats[k].pat, pl)) {
                const char *r = pats[k].which ? cls : token;
                put(&b, r, strlen(r));
                s += pl;
                hit = true;
                break;
            }
        }
        if (!hit) put(&b, s++, 1);
    }
    /* collapse runs of spaces and trim (an empty class leaves "a <tok> ") */
    size_t o = 0;
    for (size_t i = 0; i < b.n; i++) {
        if (tmp[i] == ' ' && (o == 0 || tmp[o - 1] == ' ')) continue;
        tmp[o++] = tmp[i];
    }
    while (o && tmp[o - 1] == ' ') o--;
    tmp[o] = 0;
    sbuf ob = {out, 0, cap, false};
    out[0] = 0;
    if (!strstr(tmp, token)) {
        put(&ob, token, strlen(token));
        if (o) put(&ob, ", ", 2);
    }
    put(&ob, tmp, o);
    free(tmp);
    if (b.overflow || ob.overflow)
        return lk_fail(LK_ERR_INVALID, "caption '%.80s...' is longer than %zu bytes", text, cap - 1);
    return LK_OK;
}

/* Contract: see train_internal.h. */
lk_status lk__train_caption(const lk_trainer *tr, int i, lk_rng *rng, char *out, size_t cap) {
    const lk_train_config *c = &tr->cfg;
    const char *text = NULL;
    if (i >= 0 && i < tr->data.n && tr->data.captions[i]) text = tr->data.captions[i];
    else if (c->captions == LK_CAPTION_INSTANCE) text = c->prompt ? c->prompt : instance_template;
    else {
        int nt = lk_train_template_count(c->captions);
        if (nt < 1) return lk_fail(LK_ERR_INVALID, "train: unknown caption mode %d", (int)c->captions);
        int64_t k = 0;
        lk_status s = lk_rng_randint(rng, 0, nt, &k, 1);
        if (s != LK_OK) return s;
        text = lk_train_template(c->captions, (int)k);
    }
    return lk__train_fill_caption(text, c->token ? c->token : "", c->class_word, out, cap);
}

/* ---- the folder ---- */

static bool is_image_name(const char *name) {
    const char *dot = strrchr(name, '.');
    if (!dot || dot == name || name[0] == '.') return false;
    return !strcasecmp(dot, ".png") || !strcasecmp(dot, ".jpg") || !strcasecmp(dot, ".jpeg") ||
           !strcasecmp(dot, ".webp");
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static uint64_t fnv(uint64_t h, const void *p, size_t n) {
    const unsigned char *s = p;
    for (size_t i = 0; i < n; i++) {
        h ^= s[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}

static char *join(const char *dir, const char *name) {
    size_t a = strlen(dir), b = strlen(name);
    char *p = malloc(a + b + 2);
    if (!p) return NULL;
    memcpy(p, dir, a);
    p[a] = '/';
    memcpy(p + a + 1, name, b + 1);
    return p;
}

/* NAME.txt next to the image: its text (whitespace-trimmed, newlines to spaces), or NULL. */
static lk_status read_caption(const char *image_path, char **out) {
    *out = NULL;
    const char *dot = strrchr(image_path, '.');
    size_t stem = dot ? (size_t)(dot - image_path) : strlen(image_path);
    char *p = malloc(stem + 5);
    if (!p) return lk_fail(LK_ERR_NOMEM, "out of memory");
    memcpy(p, image_path, stem);
    memcpy(p + stem, ".txt", 5);
    FILE *f = fopen(p, "rb");
    if (!f) {
        free(p);
        return LK_OK;
    }
    char *buf = malloc(LK_TRAIN_MAX_CAPTION + 1);
    size_t n = buf ? fread(buf, 1, LK_TRAIN_MAX_CAPTION + 1, f) : 0;
    bool err = buf && ferror(f);
    fclose(f);
    if (!buf) {
        free(p);
        return lk_fail(LK_ERR_NOMEM, "out of memory");
    }
    if (err) {
        lk_status s = lk_fail(LK_ERR_IO, "%s: read error", p);
        free(p);
        free(buf);
        return s;
    }
    if (n > LK_TRAIN_MAX_CAPTION - 64) {
        lk_status s = lk_fail(LK_ERR_INVALID, "%s: caption longer than %d bytes", p,
                              LK_TRAIN_MAX_CAPTION - 64);
        free(p);
        free(buf);
        return s;
    }
    free(p);
    buf[n] = 0;
    for (size_t i = 0; i < n; i++)
        if (buf[i] == '\n' || buf[i] == '\r' || buf[i] == '\t') buf[i] = ' ';
    size_t a = 0;
    while (a < n && buf[a] == ' ') a++;
    while (n > a && buf[n - 1] == ' ') n--;
    memmove(buf, buf + a, n - a);
    buf[n - a] = 0;
    if (!buf[0]) {
        free(buf);
        return LK_OK;
    }
    *out = buf;
    return LK_OK;
}

/* Contract: see train_internal.h. */
lk_status lk__train_data_scan(lk__train_data *d, const lk_train_config *cfg) {
    memset(d, 0, sizeof *d);
    const char *dir = cfg->images;
    DIR *dp = opendir(dir);
    if (!dp) return lk_fail(LK_ERR_IO, "%s: cannot open the image folder", dir);
    char **names = NULL;
    int n = 0, cap = 0;
    lk_status s = LK_OK;
    for (struct dirent *e; s == LK_OK && (e = readdir(dp));) {
        if (!is_image_name(e->d_name)) continue;
        if (n == cap) {
            int nc = cap ? 2 * cap : 32;
            char **nn = realloc(names, sizeof *nn * (size_t)nc);
            if (!nn) {
                s = lk_fail(LK_ERR_NOMEM, "out of memory");
                break;
            }
            names = nn;
            cap = nc;
        }
        names[n] = strdup(e->d_name);
        if (!names[n]) s = lk_fail(LK_ERR_NOMEM, "out of memory");
        else n++;
    }
    closedir(dp);
    if (s == LK_OK && n < cfg->min_images)
        s = lk_fail(LK_ERR_INVALID, "%s: %d image%s (PNG, JPEG or WebP) found; at least %d are "
                    "needed", dir, n, n == 1 ? "" : "s", cfg->min_images);
    if (s == LK_OK && n > 100000) s = lk_fail(LK_ERR_INVALID, "%s: too many images (%d)", dir, n);
    if (s == LK_OK) qsort(names, (size_t)n, sizeof *names, cmp_str);
    d->n_var = cfg->flip ? 2 : 1;
    if (s == LK_OK) {
        d->paths = calloc((size_t)n, sizeof *d->paths);
        d->captions = calloc((size_t)n, sizeof *d->captions);
        d->pixels = calloc((size_t)n, sizeof *d->pixels);
        d->pixels_flip = calloc((size_t)n, sizeof *d->pixels_flip);
        d->order = calloc((size_t)n, sizeof *d->order);
        if (!d->paths || !d->captions || !d->pixels || !d->pixels_flip || !d->order)
            s = lk_fail(LK_ERR_NOMEM, "out of memory");
        else d->n = n;
    }
    const int res = cfg->resolution;
    const size_t npx = (size_t)3 * (size_t)res * (size_t)res;
    uint64_t h = 0xcbf29ce484222325ULL;
    h = fnv(h, &res, sizeof res);
    for (int i = 0; s == LK_OK && i < n; i++) {
        d->paths[i] = join(dir, names[i]);
        if (!d->paths[i]) {
            s = lk_fail(LK_ERR_NOMEM, "out of memory");
            break;
        }
        lk_image img = {0};
        lk_image_load_opts lo = {.channels = 3};
        s = lk_image_load(&img, d->paths[i], &lo);
        if (s != LK_OK) break;
        if ((img.w < res || img.h < res) && !cfg->upscale_small) {
            s = lk_fail(LK_ERR_INVALID, "%s is %dx%d, smaller than the training resolution %d "
                        "(use --upscale-small to upscale it, or a smaller --resolution)",
                        d->paths[i], img.w, img.h, res);
            lk_image_free(&img);
            break;
        }
        h = fnv(h, names[i], strlen(names[i]) + 1);
        h = fnv(h, &img.w, sizeof img.w);
        h = fnv(h, &img.h, sizeof img.h);
        d->pixels[i] = malloc(npx * sizeof(float));
        if (cfg->flip) d->pixels_flip[i] = malloc(npx * sizeof(float));
        if (!d->pixels[i] || (cfg->flip && !d->pixels_flip[i]))
            s = lk_fail(LK_ERR_NOMEM, "out of memory");
        if (s == LK_OK) s = lk_image_prepare(&img, res, LK_CROP_CENTER, LK_FLIP_NONE, NULL, d->pixels[i]);
        if (s == LK_OK && cfg->flip)
            s = lk_image_prepare(&img, res, LK_CROP_CENTER, LK_FLIP_ALWAYS, NULL, d->pixels_flip[i]);
        if (s != LK_OK) lk_fail_prefix(s, "%s: ", d->paths[i]);
        lk_image_free(&img);
        if (s == LK_OK) s = read_caption(d->paths[i], &d->captions[i]);
        if (s == LK_OK && d->captions[i]) h = fnv(h, d->captions[i], strlen(d->captions[i]));
    }
    for (int i = 0; i < n; i++) free(names[i]);
    free(names);
    d->fingerprint = h;
    d->pos = d->n; /* the first draw starts epoch 0 */
    if (s != LK_OK) lk__train_data_free(d);
    return s;
}

/* Contract: see train_internal.h. */
lk_status lk__train_data_encode(lk__train_data *d, lk_ctx *ctx, const lk_vae *vae, int res,
                                int c, int h, int w) {
    const size_t per = (size_t)c * (size_t)h * (size_t)w;
    const size_t total = (size_t)d->n * (size_t)d->n_var * per;
    d->per = per;
    d->mean = malloc(total * sizeof(float) + 1);
    d->logvar = malloc(total * sizeof(float) + 1);
    if (!d->mean || !d->logvar) return lk_fail(LK_ERR_NOMEM, "out of memory caching latents");
    const bool was = lk_grad_enabled(ctx);
    lk_set_grad_enabled(ctx, false);
    lk_status s = LK_OK;
    for (int i = 0; s == LK_OK && i < d->n; i++)
        for (int v = 0; s == LK_OK && v < d->n_var; v++) {
            float *px = v ? d->pixels_flip[i] : d->pixels[i];
            lk_ctx_reset(ctx);
            lk_tensor *img = lk_tensor_wrap(ctx, LK_F32, LK_DIMS(1, 3, res, res), px);
            lk_tensor *mean = NULL, *logvar = NULL;
            s = lk_vae_encode(ctx, vae, img, &mean, &logvar);
            if (s == LK_OK) {
                mean = lk_contiguous(ctx, mean);
                logvar = lk_contiguous(ctx, logvar);
                s = lk_ctx_status(ctx);
            }
            if (s == LK_OK && ((size_t)lk_numel(mean) != per || (size_t)lk_numel(logvar) != per))
                s = lk_fail(LK_ERR_STATE, "vae: latent of an unexpected size");
            if (s == LK_OK) {
                size_t o = ((size_t)i * (size_t)d->n_var + (size_t)v) * per;
                memcpy(d->mean + o, mean->data, per * sizeof(float));
                memcpy(d->logvar + o, logvar->data, per * sizeof(float));
            } else {
                lk_fail_prefix(s, "%s: encoding: ", d->paths[i]);
            }
        }
    lk_ctx_reset(ctx);
    lk_set_grad_enabled(ctx, was);
    for (int i = 0; i < d->n; i++) {
        free(d->pixels[i]);
        free(d->pixels_flip[i]);
        d->pixels[i] = d->pixels_flip[i] = NULL;
    }
    return s;
}

/* Contract: see train_internal.h. */
void lk__train_data_free(lk__train_data *d) {
    if (!d) return;
    for (int i = 0; i < d->n; i++) {
        if (d->paths) free(d->paths[i]);
        if (d->captions) free(d->captions[i]);
        if (d->pixels) free(d->pixels[i]);
        if (d->pixels_flip) free(d->pixels_flip[i]);
    }
    free(d->paths);
    free(d->captions);
    free(d->pixels);
    free(d->pixels_flip);
    free(d->mean);
    free(d->logvar);
    free(d->order);
    memset(d, 0, sizeof *d);
}

/* Contract: see train_internal.h. */
int64_t lk__train_data_next(lk__train_data *d, lk_rng *rng) {
    if (d->pos >= d->n) {
        for (int64_t i = 0; i < d->n; i++) d->order[i] = i;
        for (int64_t i = d->n - 1; i > 0; i--) {
            int64_t j = 0;
            lk_rng_randint(rng, 0, i + 1, &j, 1);
            int64_t t = d->order[i];
            d->order[i] = d->order[j];
            d->order[j] = t;
        }
        d->pos = 0;
        d->epoch++;
    }
    return d->order[d->pos++];
}
