/* clip_text.c: the CLIP text transformer (Radford et al. 2021) as Hugging Face's CLIPTextModel
 * runs it for Stable Diffusion: token + position embeddings, pre-LN layers with causal
 * self-attention (explicit masked softmax over the <= 77 tokens) and a quick_gelu/gelu MLP,
 * final LayerNorm; plus appended token rows for textual inversion (Gal et al. 2022). */
#include "likeness/clip_text.h"

#include "models/layers.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct clip_layer {
    const lk_clip_text *te;
    lk__norm ln1, ln2;
    lk__lin q, k, v, o, fc1, fc2;
} clip_layer;

struct lk_clip_text {
    lk__net net;
    lk_clip_text_config cfg;
    lk_tensor *tok;       /* token table in use: borrowed from the weights, or tok_owned */
    lk_tensor *tok_owned; /* F32 table after add_tokens / set_token */
    lk_tensor *pos;       /* (max_position_embeddings, D) */
    lk__norm final_ln;
    clip_layer *layers;
};

static const char TOK_KEY[] = "text_model.embeddings.token_embedding.weight";

void lk_clip_text_free(lk_clip_text *te) {
    if (!te) return;
    free(te->layers);
    lk_param_free(te->tok_owned);
    lk__net_release(&te->net);
    free(te);
}

lk_status lk_clip_text_new(lk_clip_text **out, const lk_clip_text_config *cfg,
                           const lk_weights *w, const char *prefix) {
    if (!out) return lk_fail(LK_ERR_INVALID, "clip_text_new: NULL out");
    *out = NULL;
    if (!cfg || !w) return lk_fail(LK_ERR_INVALID, "clip_text_new: NULL config or weights");
    if (cfg->hidden_size < 1 || cfg->num_attention_heads < 1 ||
        cfg->hidden_size % cfg->num_attention_heads || cfg->num_hidden_layers < 1 ||
        cfg->intermediate_size < 1 || cfg->max_position_embeddings < 1 || cfg->vocab_size < 1)
        return lk_fail(LK_ERR_INVALID, "clip_text_new: inconsistent configuration (parse it with "
                       "lk_clip_text_config_parse)");
    lk_clip_text *te = calloc(1, sizeof *te);
    if (!te) return lk_fail(LK_ERR_NOMEM, "text_encoder: out of memory");
    te->cfg = *cfg;
    lk__net *n = &te->net;
    lk__net_init(n, "text_encoder", w, prefix);
    const int64_t D = cfg->hidden_size, F = cfg->intermediate_size;
    te->tok = lk__net_param(n, TOK_KEY, LK_DIMS(cfg->vocab_size, D));
    te->pos = lk__net_param(n, "text_model.embeddings.position_embedding.weight",
                            LK_DIMS(cfg->max_position_embeddings, D));
    te->layers = calloc((size_t)cfg->num_hidden_layers, sizeof *te->layers);
    if (!te->layers && n->st == LK_OK) n->st = lk_fail(LK_ERR_NOMEM, "text_encoder: out of memory");
    char base[LK__NAME_MAX], nm[LK__NAME_MAX];
    for (int i = 0; i < cfg->num_hidden_layers && n->st == LK_OK; i++) {
        clip_layer *l = &te->layers[i];
        l->te = te;
        snprintf(base, sizeof base, "text_model.encoder.layers.%d", i);
        lk__norm_init(n, &l->ln1, lk__name(n, nm, base, ".layer_norm1"), D);
        lk__lin_linear(n, &l->q, lk__name(n, nm, base, ".self_attn.q_proj"), D, D, true);
        lk__lin_linear(n, &l->k, lk__name(n, nm, base, ".self_attn.k_proj"), D, D, true);
        lk__lin_linear(n, &l->v, lk__name(n, nm, base, ".self_attn.v_proj"), D, D, true);
        lk__lin_linear(n, &l->o, lk__name(n, nm, base, ".self_attn.out_proj"), D, D, true);
        lk__norm_init(n, &l->ln2, lk__name(n, nm, base, ".layer_norm2"), D);
        lk__lin_linear(n, &l->fc1, lk__name(n, nm, base, ".mlp.fc1"), F, D, true);
        lk__lin_linear(n, &l->fc2, lk__name(n, nm, base, ".mlp.fc2"), D, F, true);
    }
    lk__norm_init(n, &te->final_ln, "text_model.final_layer_norm", D);
    lk_status s = n->st;
    n->w = NULL;
    n->prefix = NULL;
    if (s != LK_OK) {
        lk_clip_text_free(te);
        return s;
    }
    *out = te;
    return LK_OK;
}

const lk_clip_text_config *lk_clip_text_config_of(const lk_clip_text *te) {
    return te ? &te->cfg : NULL;
}

void lk_clip_text_set_checkpointing(lk_clip_text *te, bool on) {
    if (te) te->net.checkpointing = on;
}

void lk_clip_text_set_layer_hook(lk_clip_text *te, lk_layer_hook fn, void *ud) {
    if (!te) return;
    te->net.hook = fn;
    te->net.hook_ud = fn ? ud : NULL;
}

/* ---------------- forward ---------------- */

/* One encoder layer: x + out_proj(causal_attn(ln1(x))), then + fc2(act(fc1(ln2(x)))).
 * x (B, N, D), mask (N, N) additive (0 / -inf). */
static lk_tensor *layer_body(lk_ctx *ctx, const clip_layer *l, lk_tensor *x, lk_tensor *mask) {
    const lk_clip_text *te = l->te;
    const lk__net *n = &te->net;
    const lk_clip_text_config *c = &te->cfg;
    if (!x || !mask) return NULL;
    const int64_t B = x->shape[0], N = x->shape[1], D = x->shape[2];
    const int64_t H = c->num_attention_heads, Dh = D / H;
    static const int heads_first[4] = {0, 2, 1, 3}, keys_t[4] = {0, 2, 3, 1};
    const float eps = c->layer_norm_eps;

    lk_tensor *h = lk_layernorm(ctx, x, l->ln1.w, l->ln1.b, eps);
    lk_tensor *q = lk_scale(ctx, lk__linear(ctx, n, &l->q, h), 1.0f / sqrtf((float)Dh));
    lk_tensor *k = lk__linear(ctx, n, &l->k, h);
    lk_tensor *v = lk__linear(ctx, n, &l->v, h);
    q = lk_permute(ctx, lk_reshape(ctx, q, LK_DIMS(B, N, H, Dh)), heads_first); /* (B,H,N,Dh) */
    k = lk_permute(ctx, lk_reshape(ctx, k, LK_DIMS(B, N, H, Dh)), keys_t);      /* (B,H,Dh,N) */
    v = lk_permute(ctx, lk_reshape(ctx, v, LK_DIMS(B, N, H, Dh)), heads_first); /* (B,H,N,Dh) */
    lk_tensor *s = lk_add(ctx, lk_matmul(ctx, q, k), mask);                     /* (B,H,N,N) */
    lk_tensor *o = lk_matmul(ctx, lk_softmax(ctx, s), v);                       /* (B,H,N,Dh) */
    o = lk_reshape(ctx, lk_permute(ctx, o, heads_first), LK_DIMS(B, N, D));
    x = lk_add(ctx, x, lk__linear(ctx, n, &l->o, o));

    h = lk_layernorm(ctx, x, l->ln2.w, l->ln2.b, eps);
    h = lk__linear(ctx, n, &l->fc1, h);
    h = c->hidden_act == LK_CLIP_GELU ? lk_gelu(ctx, h, false) : lk_quick_gelu(ctx, h);
    h = lk__linear(ctx, n, &l->fc2, h);
    return lk_add(ctx, x, h);
}

static lk_tensor *layer_ckpt(lk_ctx *ctx, lk_tensor *const *in, int n_in, void *ud) {
    return layer_body(ctx, ud, in[0], n_in > 1 ? in[1] : NULL);
}

static lk_tensor *layer_forward(lk_ctx *ctx, const clip_layer *l, lk_tensor *x, lk_tensor *mask) {
    if (l->te->net.checkpointing && lk_grad_enabled(ctx) && x && mask) {
        lk_tensor *in[2] = {x, mask};
        return lk_checkpoint(ctx, layer_ckpt, (void *)l, in, 2);
    }
    size_t mark = lk_ctx_mark(ctx);
    return lk__scope_end(ctx, mark, layer_body(ctx, l, x, mask));
}

lk_tensor *lk_clip_text_forward(lk_ctx *ctx, const lk_clip_text *te, lk_tensor *ids,
                                int clip_skip, bool final_norm) {
    if (!ctx || lk_ctx_status(ctx) != LK_OK) return NULL;
    if (!te || !ids || !ids->data)
        return lk_ctx_fail(ctx, LK_ERR_INVALID, "text_encoder: NULL model or ids");
    const lk_clip_text_config *c = &te->cfg;
    char b[160];
    if (ids->ndim != 2 || ids->shape[0] < 1 || ids->shape[1] < 1 ||
        ids->shape[1] > c->max_position_embeddings || (ids->dtype != LK_I64 && ids->dtype != LK_I32))
        return lk_ctx_fail(ctx, LK_ERR_INVALID, "text_encoder: ids %s %s must be I64/I32 (B, N) "
                           "with 1 <= N <= %d", lk_dtype_name(ids->dtype),
                           lk_shape_str(ids, b, sizeof b), c->max_position_embeddings);
    if (clip_skip < 1 || clip_skip > c->num_hidden_layers)
        return lk_ctx_fail(ctx, LK_ERR_INVALID, "text_encoder: clip_skip %d outside [1, %d]",
                           clip_skip, c->num_hidden_layers);
    const int64_t N = ids->shape[1];

    size_t mark = lk_ctx_mark(ctx);
    lk_tensor *pos_ids = lk_tensor_new(ctx, LK_I64, 1, &N);
    lk_tensor *mask = lk_tensor_new(ctx, LK_F32, LK_DIMS(N, N));
    if (!pos_ids || !mask) return NULL;
    int64_t *pi = pos_ids->data;
    float *md = mask->data;
    for (int64_t i = 0; i < N; i++) {
        pi[i] = i;
        for (int64_t j = 0; j < N; j++) md[i * N + j] = j > i ? -INFINITY : 0.0f;
    }
    lk_tensor *x = lk_add(ctx, lk_embedding(ctx, te->tok, ids), lk_embedding(ctx, te->pos, pos_ids));
    lk_tensor *keep[2] = {x, mask};
    if (x) lk_ctx_release_since(ctx, mark, keep, 2);

    const int n_run = c->num_hidden_layers - clip_skip + 1;
    for (int i = 0; i < n_run; i++) {
        lk_tensor *y = layer_forward(ctx, &te->layers[i], x, mask);
        lk_release(x);
        x = y;
    }
    lk_release(mask);
    if (!final_norm) return x;
    lk_tensor *y = lk_layernorm(ctx, x, te->final_ln.w, te->final_ln.b, c->layer_norm_eps);
    lk_release(x);
    return y;
}

/* ---------------- textual inversion ---------------- */

int64_t lk_clip_text_vocab_size(const lk_clip_text *te) { return te ? te->tok->shape[0] : 0; }

lk_tensor *lk_clip_text_token_table(const lk_clip_text *te) { return te ? te->tok : NULL; }

/* Replace the table by an owned F32 one with extra zero rows (extra >= 0). */
static lk_status grow_table(lk_clip_text *te, int64_t extra) {
    const lk_tensor *old = te->tok;
    const int64_t V = old->shape[0], D = old->shape[1];
    size_t nb;
    if (V + extra > INT32_MAX || lk_mul_overflow((size_t)(V + extra), (size_t)D, &nb))
        return lk_fail(LK_ERR_INVALID, "text_encoder: token table of %lld rows too large",
                       (long long)(V + extra));
    lk_tensor *t = lk_param_new(LK_F32, LK_DIMS(V + extra, D), old->name[0] ? old->name : TOK_KEY);
    if (!t) return lk_fail(LK_ERR_NOMEM, "text_encoder: out of memory for the token table");
    lk_widen_f32(t->data, old->data, old->dtype, (size_t)(V * D));
    lk_param_free(te->tok_owned);
    te->tok_owned = t;
    te->tok = t;
    return LK_OK;
}

lk_status lk_clip_text_add_tokens(lk_clip_text *te, int n, const float *rows, int64_t *first_id) {
    if (!te || n < 1) return lk_fail(LK_ERR_INVALID, "clip_text_add_tokens: NULL encoder or n < 1");
    const int64_t V = te->tok->shape[0], D = te->tok->shape[1];
    lk_status s = grow_table(te, n);
    if (s != LK_OK) return s;
    if (rows) memcpy((float *)te->tok->data + V * D, rows, sizeof(float) * (size_t)n * (size_t)D);
    if (first_id) *first_id = V;
    return LK_OK;
}

lk_status lk_clip_text_set_token(lk_clip_text *te, int64_t id, const float *row) {
    if (!te || !row) return lk_fail(LK_ERR_INVALID, "clip_text_set_token: NULL argument");
    const int64_t V = te->tok->shape[0], D = te->tok->shape[1];
    if (id < 0 || id >= V)
        return lk_fail(LK_ERR_INVALID, "clip_text_set_token: id %lld outside the %lld-row table",
                       (long long)id, (long long)V);
    if (!te->tok_owned) {
        lk_status s = grow_table(te, 0);
        if (s != LK_OK) return s;
    }
    memcpy((float *)te->tok->data + id * D, row, sizeof(float) * (size_t)D);
    return LK_OK;
}
