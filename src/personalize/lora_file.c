/* lora_file.c: kohya-ss / AUTOMATIC1111 LoRA files (Hu et al. 2021): module names resolved
 * against the model's own weight names by their underscored form, merged as
 * W += m * (alpha / rank) * up @ down with f32 accumulation, and unmerged by recomputing. */
#define _POSIX_C_SOURCE 200809L
#include "likeness/lora_file.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/kernels.h"

#define ROW_BLOCK_FLOATS (1 << 20) /* delta scratch: rows of the target per GEMM */

typedef struct lora_module {
    char *name;                  /* module name without suffix */
    const lk_st_tensor *down;    /* (r, in) or (r, in, kh, kw) */
    const lk_st_tensor *up;      /* (out, r) or (out, r, 1, 1) */
    const lk_st_tensor *alpha;   /* scalar or NULL */
    lk_tensor *target;
    bool te;
    int rank;
    float alpha_v;
} lora_module;

struct lk_lora {
    lk_safetensors *st;
    lora_module *mods;
    int n, cap;
    float merged;
};

/* underscored model key -> tensor */
typedef struct us_entry {
    char *us;
    lk_tensor *t;
    bool ambiguous;
} us_entry;

typedef struct us_map {
    us_entry *e;
    int n;
} us_map;

static int us_cmp(const void *a, const void *b) {
    return strcmp(((const us_entry *)a)->us, ((const us_entry *)b)->us);
}

static void us_free(us_map *m) {
    for (int i = 0; i < m->n; i++) free(m->e[i].us);
    free(m->e);
    m->e = NULL;
    m->n = 0;
}

/* Every "<key>.weight" of w as "<key with . -> _>". */
static lk_status us_build(us_map *m, const lk_weights *w) {
    m->e = NULL;
    m->n = 0;
    int n = lk_weights_count(w);
    if (!n) return LK_OK;
    m->e = calloc((size_t)n, sizeof *m->e);
    if (!m->e) return lk_fail(LK_ERR_NOMEM, "out of memory");
    for (int i = 0; i < n; i++) {
        lk_tensor *t = lk_weights_at(w, i);
        size_t l = strlen(t->name);
        if (l < 8 || strcmp(t->name + l - 7, ".weight")) continue;
        char *us = malloc(l - 6);
        if (!us) {
            us_free(m);
            return lk_fail(LK_ERR_NOMEM, "out of memory");
        }
        for (size_t k = 0; k < l - 7; k++) us[k] = t->name[k] == '.' ? '_' : t->name[k];
        us[l - 7] = '\0';
        m->e[m->n++] = (us_entry){us, t, false};
    }
    qsort(m->e, (size_t)m->n, sizeof *m->e, us_cmp);
    for (int i = 1; i < m->n; i++)
        if (!strcmp(m->e[i].us, m->e[i - 1].us)) m->e[i].ambiguous = m->e[i - 1].ambiguous = true;
    return LK_OK;
}

static const us_entry *us_find(const us_map *m, const char *us) {
    if (!m->n) return NULL;
    us_entry key = {(char *)us, NULL, false};
    return bsearch(&key, m->e, (size_t)m->n, sizeof *m->e, us_cmp);
}

/* ---------------------------------------------------------------------------------------- */

void lk_lora_free(lk_lora *l) {
    if (!l) return;
    for (int i = 0; i < l->n; i++) free(l->mods[i].name);
    free(l->mods);
    lk_safetensors_close(l->st);
    free(l);
}

int lk_lora_count(const lk_lora *l) { return l ? l->n : 0; }
float lk_lora_merged(const lk_lora *l) { return l ? l->merged : 0.0f; }

lk_status lk_lora_module(const lk_lora *l, int i, lk_lora_module_info *info) {
    if (!l || !info || i < 0 || i >= l->n)
        return lk_fail(LK_ERR_INVALID, "lora_module: index %d out of range", i);
    const lora_module *m = &l->mods[i];
    *info = (lk_lora_module_info){m->name, m->target, m->te, m->rank, m->alpha_v};
    return LK_OK;
}

static bool ends(const char *s, const char *suf, size_t *stem) {
    size_t a = strlen(s), b = strlen(suf);
    if (a <= b || strcmp(s + a - b, suf)) return false;
    *stem = a - b;
    return true;
}

/* The LyCORIS / other-format part of a key, or NULL for a plain kohya LoRA key. */
static const char *unsupported_kind(const char *k) {
    static const char *const kinds[][2] = {
        {".hada_", "a LyCORIS LoHa module"},   {".lokr_", "a LyCORIS LoKr module"},
        {".lora_mid.", "a LyCORIS LoCon Tucker (lora_mid) module"},
        {".oft_", "an OFT module"},            {".dora_scale", "a DoRA module"},
        {".diff", "a full-difference (LyCORIS diff) module"},
        {".w_norm", "a LyCORIS norm module"},  {".b_norm", "a LyCORIS norm module"},
        {".ia3_", "an (IA)^3 module"},         {".on_input", "an (IA)^3 module"},
        {".lora_A.", "a diffusers/PEFT-format key"}, {".lora_B.", "a diffusers/PEFT-format key"},
        {".lora.down.", "a diffusers-format key"}, {".lora.up.", "a diffusers-format key"},
        {"lora_linear_layer", "a diffusers-format key"}};
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++)
        if (strstr(k, kinds[i][0])) return kinds[i][1];
    return NULL;
}

static lora_module *module_for(lk_lora *l, const char *name, size_t len) {
    for (int i = l->n - 1; i >= 0; i--)
        if (strlen(l->mods[i].name) == len && !strncmp(l->mods[i].name, name, len)) return &l->mods[i];
    if (l->n == l->cap) {
        int nc = l->cap ? 2 * l->cap : 64;
        lora_module *nm = realloc(l->mods, sizeof *nm * (size_t)nc);
        if (!nm) return NULL;
        l->mods = nm;
        l->cap = nc;
    }
    lora_module *m = &l->mods[l->n];
    memset(m, 0, sizeof *m);
    m->name = malloc(len + 1);
    if (!m->name) return NULL;
    memcpy(m->name, name, len);
    m->name[len] = '\0';
    l->n++;
    return m;
}

static const char *shape_str(const int64_t *shape, int ndim, char *buf, size_t cap) {
    size_t o = (size_t)snprintf(buf, cap, "[");
    for (int i = 0; i < ndim && o < cap; i++)
        o += (size_t)snprintf(buf + o, cap - o, i ? ",%lld" : "%lld", (long long)shape[i]);
    if (o < cap) snprintf(buf + o, cap - o, "]");
    return buf;
}

/* Resolve and check one module. */
static lk_status resolve(lora_module *m, const us_map *unet, const us_map *te, bool have_te,
                         const char *path) {
    const char *k = m->name;
    if (!m->down || !m->up)
        return lk_fail(LK_ERR_FORMAT, "%s: module '%s' has %s but no %s", path, k,
                       m->down ? "lora_down" : "lora_up", m->down ? "lora_up" : "lora_down");
    const lk_st_tensor *d = m->down, *u = m->up;
    for (int j = 0; j < 2; j++) {
        const lk_st_tensor *t = j ? u : d;
        if (t->dtype != LK_F32 && t->dtype != LK_F16 && t->dtype != LK_BF16)
            return lk_fail(LK_ERR_FORMAT, "%s: '%s' has dtype %s, expected a float type", path,
                           t->name, lk_dtype_name(t->dtype));
    }
    if ((d->ndim != 2 && d->ndim != 4) || (u->ndim != 2 && u->ndim != 4) ||
        (u->ndim == 4 && (u->shape[2] != 1 || u->shape[3] != 1)) || d->shape[0] != u->shape[1] ||
        d->shape[0] < 1 || d->shape[0] > 65536) {
        char a[96], b[96];
        return lk_fail(LK_ERR_FORMAT, "%s: module '%s': lora_down %s and lora_up %s do not form a "
                       "rank-r product", path, k, shape_str(d->shape, d->ndim, a, sizeof a),
                       shape_str(u->shape, u->ndim, b, sizeof b));
    }
    m->rank = (int)d->shape[0];
    m->alpha_v = (float)m->rank;
    if (m->alpha) {
        if (lk_st_tensor_numel(m->alpha) != 1 || m->alpha->ndim > 1 ||
            (m->alpha->dtype != LK_F32 && m->alpha->dtype != LK_F16 && m->alpha->dtype != LK_BF16))
            return lk_fail(LK_ERR_FORMAT, "%s: '%s' must be a float scalar", path, m->alpha->name);
        lk_st_tensor_to_f32(m->alpha, &m->alpha_v, 1);
    }
    const char *rest;
    const us_map *map;
    if (!strncmp(k, "lora_unet_", 10)) {
        rest = k + 10;
        map = unet;
        m->te = false;
    } else if (!strncmp(k, "lora_te_", 8)) {
        if (!have_te)
            return lk_fail(LK_ERR_UNSUPPORTED, "%s: module '%s' changes the text encoder, but no "
                           "text encoder was given", path, k);
        rest = k + 8;
        map = te;
        m->te = true;
    } else if (!strncmp(k, "lora_te1_", 9) || !strncmp(k, "lora_te2_", 9)) {
        return lk_fail(LK_ERR_UNSUPPORTED, "%s: module '%s' is for SDXL's two text encoders; only "
                       "Stable Diffusion 1.x/2.x LoRAs are supported", path, k);
    } else {
        return lk_fail(LK_ERR_FORMAT, "%s: '%s' is not a kohya/A1111 LoRA module name "
                       "(lora_unet_* / lora_te_*)", path, k);
    }
    const us_entry *e = us_find(map, rest);
    if (!e)
        return lk_fail(LK_ERR_INVALID, "%s: module '%s' matches no weight of the %s (a LoRA for "
                       "another architecture?)", path, k, m->te ? "text encoder" : "UNet");
    if (e->ambiguous)
        return lk_fail(LK_ERR_INVALID, "%s: module '%s' matches several weights of the model", path, k);
    m->target = e->t;
    /* the delta (out, in[, kh, kw]) must fit the target */
    const lk_tensor *t = e->t;
    int64_t out = u->shape[0], k_in = lk_st_tensor_numel(d) / d->shape[0];
    int64_t tn = lk_numel(t);
    bool ok = t->ndim >= 2 && t->shape[0] == out && tn == out * k_in;
    if (ok && t->ndim == 4 && d->ndim == 4)
        ok = t->shape[1] == d->shape[1] && t->shape[2] == d->shape[2] && t->shape[3] == d->shape[3];
    if (!ok) {
        int64_t ds[LK_MAX_DIMS] = {out};
        int dn = d->ndim;
        for (int i = 1; i < dn; i++) ds[i] = d->shape[i];
        char a[96], b[96];
        return lk_fail(LK_ERR_INVALID, "%s: module '%s' gives a delta of shape %s, but '%s' has "
                       "shape %s (a LoRA for another architecture?)", path, k,
                       shape_str(ds, dn, a, sizeof a), t->name, shape_str(t->shape, t->ndim, b, sizeof b));
    }
    return LK_OK;
}

lk_status lk_lora_open(lk_lora **out, const char *path, lk_weights *unet, lk_weights *text_encoder) {
    if (!out || !path) return lk_fail(LK_ERR_INVALID, "lora_open: NULL argument");
    *out = NULL;
    size_t stem;
    if (ends(path, ".pt", &stem) || ends(path, ".ckpt", &stem) || ends(path, ".bin", &stem))
        return lk_fail(LK_ERR_UNSUPPORTED, "%s is a pickle file; likeness never unpickles: use the "
                       ".safetensors version", path);
    lk_lora *l = calloc(1, sizeof *l);
    if (!l) return lk_fail(LK_ERR_NOMEM, "out of memory");
    lk_status s = lk_safetensors_open(&l->st, path);
    us_map mu = {0}, mt = {0};
    for (int i = 0; s == LK_OK && i < lk_safetensors_count(l->st); i++) {
        const lk_st_tensor *t = lk_safetensors_at(l->st, i);
        const char *kind = unsupported_kind(t->name);
        if (kind) {
            s = lk_fail(LK_ERR_UNSUPPORTED, "%s: '%s' is %s; only plain LoRA (lora_down, lora_up, "
                        "alpha) is supported", path, t->name, kind);
            break;
        }
        int which;
        if (ends(t->name, ".lora_down.weight", &stem)) which = 0;
        else if (ends(t->name, ".lora_up.weight", &stem)) which = 1;
        else if (ends(t->name, ".alpha", &stem)) which = 2;
        else {
            s = lk_fail(LK_ERR_FORMAT, "%s: '%s' is not a LoRA tensor (.lora_down.weight, "
                        ".lora_up.weight or .alpha)", path, t->name);
            break;
        }
        lora_module *m = module_for(l, t->name, stem);
        if (!m) {
            s = lk_fail(LK_ERR_NOMEM, "out of memory");
            break;
        }
        const lk_st_tensor **slot = which == 0 ? &m->down : which == 1 ? &m->up : &m->alpha;
        *slot = t;
    }
    if (s == LK_OK && !l->n) s = lk_fail(LK_ERR_FORMAT, "%s: holds no LoRA modules", path);
    if (s == LK_OK) s = us_build(&mu, unet);
    if (s == LK_OK) s = us_build(&mt, text_encoder);
    for (int i = 0; s == LK_OK && i < l->n; i++)
        s = resolve(&l->mods[i], &mu, &mt, text_encoder != NULL, path);
    us_free(&mu);
    us_free(&mt);
    if (s != LK_OK) {
        lk_lora_free(l);
        return s;
    }
    *out = l;
    return LK_OK;
}

/* ---------------------------------------------------------------------------------------- */
/* merging */

typedef struct scratch {
    float *up, *down, *delta, *w;
    size_t up_n, down_n, delta_n;
} scratch;

static void scratch_free(scratch *sc) {
    free(sc->up);
    free(sc->down);
    free(sc->delta);
    free(sc->w);
}

static lk_status scratch_alloc(const lk_lora *l, scratch *sc, bool need_w) {
    memset(sc, 0, sizeof *sc);
    size_t mu = 1, md = 1, mrows = 1;
    for (int i = 0; i < l->n; i++) {
        const lora_module *m = &l->mods[i];
        size_t un = (size_t)lk_st_tensor_numel(m->up), dn = (size_t)lk_st_tensor_numel(m->down);
        size_t cols = dn / (size_t)m->rank;
        size_t rows = ROW_BLOCK_FLOATS / (cols ? cols : 1);
        if (rows < 1) rows = 1;
        size_t block = rows * cols;
        if (un > mu) mu = un;
        if (dn > md) md = dn;
        if (block > mrows) mrows = block;
    }
    sc->up = malloc(mu * sizeof(float));
    sc->down = malloc(md * sizeof(float));
    sc->delta = malloc(mrows * sizeof(float));
    sc->w = need_w ? malloc(mrows * sizeof(float)) : NULL;
    if (!sc->up || !sc->down || !sc->delta || (need_w && !sc->w)) {
        scratch_free(sc);
        return lk_fail(LK_ERR_NOMEM, "lora: out of memory for merge scratch");
    }
    return LK_OK;
}

/* scale * up[r0:r0+nr] @ down -> delta (nr, cols) */
static void delta_rows(const lora_module *m, const scratch *sc, float scale, int64_t r0, int64_t nr,
                       int64_t cols, float *delta) {
    lk_sgemm(false, false, (int)nr, (int)cols, m->rank, scale, sc->up + r0 * m->rank, m->rank,
             sc->down, (int)cols, 0.0f, delta, (int)cols);
}

static lk_status widen_module(const lora_module *m, scratch *sc) {
    lk_status s = lk_st_tensor_to_f32(m->up, sc->up, (size_t)lk_st_tensor_numel(m->up));
    if (s == LK_OK) s = lk_st_tensor_to_f32(m->down, sc->down, (size_t)lk_st_tensor_numel(m->down));
    return s;
}

/* target += sign-applied multiplier delta, block of rows at a time */
static lk_status apply(lk_lora *l, float multiplier) {
    bool any_half = false;
    for (int i = 0; i < l->n; i++) {
        lk_dtype dt = l->mods[i].target->dtype;
        if (dt != LK_F32 && dt != LK_F16 && dt != LK_BF16)
            return lk_fail(LK_ERR_UNSUPPORTED, "lora: target '%s' has dtype %s",
                           l->mods[i].target->name, lk_dtype_name(dt));
        if (!l->mods[i].target->data)
            return lk_fail(LK_ERR_STATE, "lora: target '%s' has no data (loaded shapes only)",
                           l->mods[i].target->name);
        any_half |= dt != LK_F32;
    }
    scratch sc;
    lk_status s = scratch_alloc(l, &sc, any_half);
    if (s != LK_OK) return s;
    for (int i = 0; i < l->n && s == LK_OK; i++) {
        const lora_module *m = &l->mods[i];
        s = widen_module(m, &sc);
        if (s != LK_OK) break;
        lk_tensor *t = m->target;
        int64_t rows = m->up->shape[0], cols = lk_numel(t) / rows;
        int64_t rb = ROW_BLOCK_FLOATS / (cols ? cols : 1);
        if (rb < 1) rb = 1;
        float scale = multiplier * m->alpha_v / (float)m->rank;
        for (int64_t r0 = 0; r0 < rows; r0 += rb) {
            int64_t nr = rows - r0 < rb ? rows - r0 : rb;
            size_t n = (size_t)(nr * cols), off = (size_t)(r0 * cols);
            /* the delta with multiplier +-m is computed identically up to sign, so unmerge
             * subtracts exactly what merge added */
            delta_rows(m, &sc, scale < 0 ? -scale : scale, r0, nr, cols, sc.delta);
            float sign = scale < 0 ? -1.0f : 1.0f;
            if (t->dtype == LK_F32) {
                float *w = (float *)t->data + off;
                for (size_t j = 0; j < n; j++) w[j] += sign * sc.delta[j];
            } else if (t->dtype == LK_F16) {
                uint16_t *w = (uint16_t *)t->data + off;
                lk_f16_to_f32_n(sc.w, w, n);
                for (size_t j = 0; j < n; j++) sc.w[j] += sign * sc.delta[j];
                lk_f32_to_f16_n(w, sc.w, n);
            } else {
                uint16_t *w = (uint16_t *)t->data + off;
                lk_bf16_to_f32_n(sc.w, w, n);
                for (size_t j = 0; j < n; j++) sc.w[j] += sign * sc.delta[j];
                lk_f32_to_bf16_n(w, sc.w, n);
            }
        }
    }
    scratch_free(&sc);
    return s;
}

lk_status lk_lora_merge(lk_lora *l, float multiplier) {
    if (!l) return lk_fail(LK_ERR_INVALID, "lora_merge: NULL lora");
    if (!(multiplier == multiplier) || multiplier > 1e6f || multiplier < -1e6f)
        return lk_fail(LK_ERR_INVALID, "lora_merge: multiplier %g out of range", (double)multiplier);
    if (multiplier == 0.0f) return LK_OK;
    lk_status s = apply(l, multiplier);
    if (s == LK_OK) l->merged += multiplier;
    return s;
}

lk_status lk_lora_unmerge(lk_lora *l) {
    if (!l) return lk_fail(LK_ERR_INVALID, "lora_unmerge: NULL lora");
    if (l->merged == 0.0f) return LK_OK;
    lk_status s = apply(l, -l->merged);
    if (s == LK_OK) l->merged = 0.0f;
    return s;
}

lk_status lk_lora_delta(const lk_lora *l, int i, float multiplier, float *dst) {
    if (!l || !dst || i < 0 || i >= l->n) return lk_fail(LK_ERR_INVALID, "lora_delta: bad argument");
    const lora_module *m = &l->mods[i];
    scratch sc = {0};
    sc.up = malloc((size_t)lk_st_tensor_numel(m->up) * sizeof(float));
    sc.down = malloc((size_t)lk_st_tensor_numel(m->down) * sizeof(float));
    lk_status s = sc.up && sc.down ? widen_module(m, &sc) : lk_fail(LK_ERR_NOMEM, "out of memory");
    if (s == LK_OK) {
        int64_t rows = m->up->shape[0], cols = lk_numel(m->target) / rows;
        delta_rows(m, &sc, multiplier * m->alpha_v / (float)m->rank, 0, rows, cols, dst);
    }
    scratch_free(&sc);
    return s;
}
