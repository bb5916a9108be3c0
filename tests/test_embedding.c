/* test_embedding.c: token embedding (F32/F16/BF16 tables, I64/I32/strided ids) with its sparse
 * gradient, full and restricted to trainable rows (textual inversion), and diffusers' timestep
 * embedding, against PyTorch (tests/ref/embedding.py); finite-difference checks; bad ids. */
#include "harness.h"

#include <stdlib.h>
#include <string.h>

enum { V = 1000, D = 768, NB = 2, NT = 77 };

/* a ctx tensor holding a fixture tensor's raw bytes (any dtype) */
static lk_tensor *raw_tensor(lk_ctx *ctx, const lk_safetensors *st, const char *name) {
    const lk_st_tensor *t = lk_safetensors_find(st, name);
    if (!t) {
        fprintf(stderr, "FAIL fixture tensor '%s' missing\n", name);
        lk_t_failures++;
        return NULL;
    }
    return lk_tensor_from(ctx, t->dtype, t->ndim, t->shape, t->data);
}

static void close_key(const lk_safetensors *st, const char *what, const char *key,
                      const float *got, size_t n, size_t offset, float atol, float rtol) {
    int64_t wn = 0;
    float *want = lk_t_load(st, key, &wn);
    if (!want || !got || (size_t)wn < offset + n) {
        lk_t_checks++;
        lk_t_failures++;
        fprintf(stderr, "FAIL %s: missing data or size\n", what);
    } else {
        lk_t_close(what, got, want + offset, n, atol, rtol);
    }
    free(want);
}

/* Gradient rows are sums of at most three G rows (an id used up to three times), added in
 * position order here and in torch's index order: 1e-6 relative. */
static void run_lookup(const lk_safetensors *st, int64_t lo, int64_t hi, const char *what) {
    lk_tensor *table = lk_t_param(st, "table");
    lk_ctx *ctx = lk_ctx_new();
    CHECK(table && ctx);
    if (!table || !ctx) goto done;
    if (lo == 0 && hi == V) CHECK_OK(lk_set_requires_grad(table, true));
    else CHECK_OK(lk_set_trainable_rows(table, lo, hi));
    CHECK(lk_grad_numel(table) == (hi - lo) * D);
    lk_tensor *ids = raw_tensor(ctx, st, "ids");
    lk_tensor *y = lk_embedding(ctx, table, ids);
    CHECK(y && y->ndim == 3 && y->shape[0] == NB && y->shape[1] == NT && y->shape[2] == D);
    if (!y) goto done;
    char k[128];
    snprintf(k, sizeof k, "%s: out", what);
    close_key(st, k, "out", y->data, (size_t)lk_numel(y), 0, 0.0f, 0.0f);
    float *G = lk_t_load(st, "G", NULL);
    if (G) CHECK_OK(lk_backward_from(ctx, y, G));
    free(G);
    snprintf(k, sizeof k, "%s: dtable rows [%lld,%lld)", what, (long long)lo, (long long)hi);
    close_key(st, k, "dtable", table->grad, (size_t)((hi - lo) * D), (size_t)(lo * D), 1e-6f, 1e-6f);
done:
    lk_ctx_free(ctx);
    lk_param_free(table);
}

static void run_variants(const lk_safetensors *st) {
    lk_ctx *ctx = lk_ctx_new();
    lk_tensor *table = lk_t_param(st, "table"); /* frozen */
    CHECK(ctx && table);
    if (!ctx || !table) goto done;
    lk_tensor *ids = raw_tensor(ctx, st, "ids");
    lk_tensor *ref = lk_embedding(ctx, table, ids);
    CHECK(ref && !ref->requires_grad && lk_tape_size(ctx) == 0);
    if (!ref || !ids) goto done;
    /* I32 ids */
    int32_t id32[NB * NT];
    const int64_t *id64 = ids->data;
    for (int i = 0; i < NB * NT; i++) id32[i] = (int32_t)id64[i];
    lk_tensor *ids32 = lk_tensor_from(ctx, LK_I32, LK_DIMS(NB, NT), id32);
    lk_tensor *y32 = lk_embedding(ctx, table, ids32);
    CHECK(y32 && memcmp(y32->data, ref->data, lk_nbytes(ref)) == 0);
    /* strided ids: the (77, 2) transpose looks up the same rows in transposed order */
    lk_tensor *yt = lk_embedding(ctx, table, lk_transpose(ctx, ids, 0, 1));
    CHECK(yt && yt->shape[0] == NT && yt->shape[1] == NB);
    if (yt) {
        int bad = 0;
        for (int i = 0; i < NB; i++)
            for (int j = 0; j < NT; j++)
                bad += memcmp((float *)yt->data + ((size_t)j * NB + (size_t)i) * D,
                              (float *)ref->data + ((size_t)i * NT + (size_t)j) * D, D * sizeof(float)) != 0;
        CHECK(bad == 0);
    }
    /* half tables, widened exactly */
    lk_tensor *y16 = lk_embedding(ctx, raw_tensor(ctx, st, "table_f16"), ids);
    close_key(st, "F16 table: out", "out_f16", y16 ? y16->data : NULL, (size_t)(NB * NT * D), 0, 0, 0);
    lk_tensor *yb = lk_embedding(ctx, raw_tensor(ctx, st, "table_bf16"), ids);
    close_key(st, "BF16 table: out", "out_bf16", yb ? yb->data : NULL, (size_t)(NB * NT * D), 0, 0, 0);
    /* 0-D ids give one row */
    int64_t one = 995;
    lk_tensor *y0 = lk_embedding(ctx, table, lk_tensor_from(ctx, LK_I64, 0, NULL, &one));
    CHECK(y0 && y0->ndim == 1 && memcmp(y0->data, (float *)table->data + 995 * D, D * 4) == 0);
    /* out-of-range ids name the id and the vocabulary size */
    int64_t bad_ids[3] = {5, 1000, 7};
    CHECK(lk_embedding(ctx, table, lk_tensor_from(ctx, LK_I64, LK_DIMS(3), bad_ids)) == NULL);
    CHECK(lk_ctx_status(ctx) == LK_ERR_INVALID);
    printf("bad id message: %s\n", lk_last_error());
    CHECK(strstr(lk_last_error(), "id 1000") && strstr(lk_last_error(), "1000 rows"));
    lk_ctx_reset(ctx);
    int32_t neg[2] = {-1, 3};
    CHECK(lk_embedding(ctx, table, lk_tensor_from(ctx, LK_I32, LK_DIMS(2), neg)) == NULL);
    CHECK(strstr(lk_last_error(), "id -1") != NULL);
    lk_ctx_reset(ctx);
    float fid[2] = {1, 2};
    CHECK(lk_embedding(ctx, table, lk_tensor_from(ctx, LK_F32, LK_DIMS(2), fid)) == NULL);
done:
    lk_ctx_free(ctx);
    lk_param_free(table);
}

/* Timestep embedding: the same f32 operations as the reference; expf/sinf may differ from torch's
 * vectorized versions by an ulp, and an ulp of a frequency times t = 999 moves the angle by up
 * to 6e-5, hence 1e-4 absolute. */
static void run_timestep(const lk_safetensors *st) {
    lk_ctx *ctx = lk_ctx_new();
    CHECK(ctx != NULL);
    if (!ctx) return;
    lk_tensor *t = lk_t_tensor(ctx, st, "t");
    struct {
        const char *key;
        int dim;
        bool flip;
        float shift;
    } cases[4] = {{"temb320", 320, true, 0.0f}, {"temb320_noflip", 320, false, 1.0f},
                  {"temb7", 7, true, 0.0f}, {"temb7_noflip", 7, false, 1.0f}};
    for (int c = 0; c < 4; c++) {
        lk_tensor *y = lk_timestep_embedding(ctx, t, cases[c].dim, cases[c].flip, cases[c].shift,
                                             10000.0f);
        CHECK(y && y->shape[0] == 4 && y->shape[1] == cases[c].dim);
        close_key(st, cases[c].key, cases[c].key, y ? y->data : NULL, (size_t)(4 * cases[c].dim),
                  0, 1e-4f, 0.0f);
        if (y && cases[c].dim == 7)
            for (int b = 0; b < 4; b++) CHECK(((float *)y->data)[b * 7 + 6] == 0.0f);
    }
    /* integer timesteps give the same rows */
    int64_t ti[3] = {0, 1, 999};
    lk_tensor *yi = lk_timestep_embedding(ctx, lk_tensor_from(ctx, LK_I64, LK_DIMS(3), ti), 320,
                                          true, 0.0f, 10000.0f);
    lk_tensor *yf = lk_timestep_embedding(ctx, t, 320, true, 0.0f, 10000.0f);
    CHECK(yi && yf && memcmp(yi->data, yf->data, 3 * 320 * sizeof(float)) == 0);
    CHECK(lk_timestep_embedding(ctx, t, 0, true, 0.0f, 10000.0f) == NULL);
    lk_ctx_reset(ctx);
    t = lk_tensor_zeros(ctx, LK_F32, LK_DIMS(2));
    CHECK(lk_timestep_embedding(ctx, t, 2, true, 1.0f, 10000.0f) == NULL); /* dim/2 - shift = 0 */
    lk_ctx_free(ctx);
}

/* ---- finite differences ---- */
typedef struct ids_ud {
    int64_t ids[6];
} ids_ud;

static lk_tensor *gc_embed(lk_ctx *ctx, lk_tensor **in, int n, void *ud) {
    lk_tensor *ids = lk_tensor_from(ctx, LK_I64, LK_DIMS(2, 3), ((ids_ud *)ud)->ids);
    lk_tensor *e = lk_embedding(ctx, in[0], ids);
    return lk_mul(ctx, e, e); /* nonlinear in the table, so repeated ids matter */
}

static void gradchecks(void) {
    lk_tensor *tab = lk_param_new(LK_F32, LK_DIMS(7, 5), "gc.table");
    if (!tab) {
        CHECK(tab != NULL);
        return;
    }
    lk_t_fill_uniform(tab->data, 35, -1, 1, 77);
    lk_set_requires_grad(tab, true);
    ids_ud all = {{1, 3, 1, 6, 0, 3}};
    lk_t_gradcheck("embedding (all rows)", gc_embed, &all, &tab, 1, 20, 1e-2f, 1e-3f);
    lk_param_free(tab);
    /* rows [3,7) trainable; frozen rows 0..2 are unused, so their finite differences are 0 too */
    tab = lk_param_new(LK_F32, LK_DIMS(7, 5), "gc.table");
    if (!tab) return;
    lk_t_fill_uniform(tab->data, 35, -1, 1, 78);
    CHECK_OK(lk_set_trainable_rows(tab, 3, 7));
    ids_ud part = {{3, 4, 3, 6, 6, 5}};
    lk_t_gradcheck("embedding (rows [3,7))", gc_embed, &part, &tab, 1, 20, 1e-2f, 1e-3f);
    lk_param_free(tab);
}

int main(void) {
    lk_safetensors *st = lk_t_ref("embedding");
    REQUIRE(st != NULL);
    run_lookup(st, 0, V, "all rows trainable");
    run_lookup(st, 990, 1000, "rows [990,1000) trainable");
    run_lookup(st, 996, 998, "rows [996,998) trainable (unused: zero gradient)");
    run_variants(st);
    run_timestep(st);
    gradchecks();
    lk_safetensors_close(st);
    return lk_t_done();
}
