/* weights.c: a named set of parameters (open-addressing hash over names), and loading one from a
 * safetensors file with optional prefix renaming and half-size storage. */
#include "likeness/weights.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct lk_weights {
    lk_tensor **items;
    int n, cap;
    int *slots; /* index+1 into items, 0 = empty */
    size_t nslots;
};

static uint64_t hash_str(const char *s) {
    uint64_t h = 1469598103934665603ull;
    while (*s) h = (h ^ (unsigned char)*s++) * 1099511628211ull;
    return h;
}

lk_weights *lk_weights_new(void) {
    lk_weights *w = calloc(1, sizeof *w);
    if (!w) lk_fail(LK_ERR_NOMEM, "out of memory");
    return w;
}

void lk_weights_free(lk_weights *w) {
    if (!w) return;
    for (int i = 0; i < w->n; i++) lk_param_free(w->items[i]);
    free(w->items);
    free(w->slots);
    free(w);
}

static int find_slot(const lk_weights *w, const char *name, bool *found) {
    size_t mask = w->nslots - 1, i = (size_t)hash_str(name) & mask;
    for (;;) {
        int v = w->slots[i];
        if (!v) {
            *found = false;
            return (int)i;
        }
        if (!strcmp(w->items[v - 1]->name, name)) {
            *found = true;
            return (int)i;
        }
        i = (i + 1) & mask;
    }
}

static lk_status rehash(lk_weights *w, size_t nslots) {
    int *ns = calloc(nslots, sizeof *ns);
    if (!ns) return lk_fail(LK_ERR_NOMEM, "out of memory");
    free(w->slots);
    w->slots = ns;
    w->nslots = nslots;
    for (int k = 0; k < w->n; k++) {
        bool f;
        int s = find_slot(w, w->items[k]->name, &f);
        w->slots[s] = k + 1;
    }
    return LK_OK;
}

lk_status lk_weights_add(lk_weights *w, lk_tensor *p) {
    if (!w || !p) {
        lk_param_free(p);
        return lk_fail(LK_ERR_INVALID, "weights_add: NULL argument");
    }
    if ((size_t)(w->n + 1) * 2 > w->nslots) {
        lk_status s = rehash(w, w->nslots ? 2 * w->nslots : 256);
        if (s != LK_OK) {
            lk_param_free(p);
            return s;
        }
    }
    bool found;
    int slot = find_slot(w, p->name, &found);
    if (found) {
        lk_status s = lk_fail(LK_ERR_INVALID, "weights: duplicate tensor name '%s'", p->name);
        lk_param_free(p);
        return s;
    }
    if (w->n == w->cap) {
        int nc = w->cap ? 2 * w->cap : 256;
        lk_tensor **ni = realloc(w->items, sizeof *ni * (size_t)nc);
        if (!ni) {
            lk_param_free(p);
            return lk_fail(LK_ERR_NOMEM, "out of memory");
        }
        w->items = ni;
        w->cap = nc;
    }
    w->items[w->n++] = p;
    w->slots[slot] = w->n;
    return LK_OK;
}

lk_tensor *lk_weights_get(const lk_weights *w, const char *name) {
    if (!w || !name || !w->nslots) return NULL;
    bool found;
    int s = find_slot(w, name, &found);
    return found ? w->items[w->slots[s] - 1] : NULL;
}

lk_tensor *lk_weights_require(const lk_weights *w, const char *name, int ndim, const int64_t *shape) {
    lk_tensor *t = lk_weights_get(w, name);
    if (!t) {
        lk_fail(LK_ERR_FORMAT, "weights: tensor '%s' is missing", name);
        return NULL;
    }
    if (ndim < 0) return t;
    bool ok = t->ndim == ndim;
    for (int i = 0; ok && i < ndim; i++) ok = t->shape[i] == shape[i];
    if (!ok) {
        char want[128], got[128];
        size_t o = 0;
        o += (size_t)snprintf(want + o, sizeof want - o, "[");
        for (int i = 0; i < ndim && o < sizeof want; i++)
            o += (size_t)snprintf(want + o, sizeof want - o, i ? ",%lld" : "%lld", (long long)shape[i]);
        if (o < sizeof want) snprintf(want + o, sizeof want - o, "]");
        lk_fail(LK_ERR_FORMAT, "weights: tensor '%s' has shape %s, expected %s", name,
                lk_shape_str(t, got, sizeof got), want);
        return NULL;
    }
    return t;
}

int lk_weights_count(const lk_weights *w) { return w ? w->n : 0; }
lk_tensor *lk_weights_at(const lk_weights *w, int i) { return (w && i >= 0 && i < w->n) ? w->items[i] : NULL; }

int64_t lk_weights_numel(const lk_weights *w) {
    int64_t n = 0;
    for (int i = 0; w && i < w->n; i++) n += lk_numel(w->items[i]);
    return n;
}

size_t lk_weights_nbytes(const lk_weights *w) {
    size_t n = 0;
    for (int i = 0; w && i < w->n; i++) n += lk_nbytes(w->items[i]);
    return n;
}

lk_status lk_weights_load_safetensors(lk_weights *w, const char *path, const char *strip_prefix,
                                      const char *add_prefix, lk_dtype store) {
    if (!w || !path) return lk_fail(LK_ERR_INVALID, "weights_load: NULL argument");
    if (store != LK_F32 && store != LK_F16 && store != LK_BF16)
        return lk_fail(LK_ERR_INVALID, "weights_load: storage dtype must be F32, F16 or BF16");
    lk_safetensors *st = NULL;
    lk_status s = lk_safetensors_open(&st, path);
    if (s != LK_OK) return s;
    size_t sl = strip_prefix ? strlen(strip_prefix) : 0;
    const char *ap = add_prefix ? add_prefix : "";
    float *tmp = NULL;
    size_t tmp_cap = 0;
    for (int i = 0; i < lk_safetensors_count(st) && s == LK_OK; i++) {
        const lk_st_tensor *t = lk_safetensors_at(st, i);
        if (sl && strncmp(t->name, strip_prefix, sl)) continue;
        if (t->dtype != LK_F32 && t->dtype != LK_F16 && t->dtype != LK_BF16) continue;
        char name[sizeof(((lk_tensor *)0)->name)];
        int nl = snprintf(name, sizeof name, "%s%s", ap, t->name + sl);
        if (nl < 0 || (size_t)nl >= sizeof name) {
            s = lk_fail(LK_ERR_UNSUPPORTED, "%s: tensor name '%s' is too long", path, t->name);
            break;
        }
        size_t n = (size_t)lk_st_tensor_numel(t);
        lk_tensor *p = lk_param_new(store, t->ndim, t->shape, name);
        if (!p) {
            s = LK_ERR_NOMEM;
            break;
        }
        if (t->dtype == store) {
            memcpy(p->data, t->data, t->nbytes);
        } else {
            if (n > tmp_cap) {
                free(tmp);
                tmp = malloc(n * sizeof(float));
                tmp_cap = tmp ? n : 0;
                if (!tmp) {
                    lk_param_free(p);
                    s = lk_fail(LK_ERR_NOMEM, "out of memory");
                    break;
                }
            }
            float *dst = store == LK_F32 ? p->data : tmp;
            s = lk_st_tensor_to_f32(t, dst, n);
            if (s == LK_OK && store == LK_F16) lk_f32_to_f16_n(p->data, tmp, n);
            if (s == LK_OK && store == LK_BF16) lk_f32_to_bf16_n(p->data, tmp, n);
        }
        if (s == LK_OK) s = lk_weights_add(w, p);
        else lk_param_free(p);
        lk_safetensors_evict(st, t->data, t->nbytes); /* peak near one copy of the weights */
    }
    free(tmp);
    lk_safetensors_close(st);
    if (s != LK_OK && !strstr(lk_last_error(), path)) lk_fail_prefix(s, "%s: ", path);
    return s;
}
