/* prompt_cond.c: prompt -> UNet conditioning with AUTOMATIC1111 emphasis, as its
 * FrozenCLIPEmbedderWithCustomWords: 75-token chunks through the CLIP text encoder, hidden states
 * multiplied by the token weights with the chunk's mean restored, chunks concatenated. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "likeness/pipeline.h"

/* Contract: see pipeline.h. */
void lk_prompt_cond_opts_default(lk_prompt_cond_opts *o) {
    o->prompt = lk_prompt_opts_default();
    o->clip_skip = 1;
    o->max_chunks = 0;
}

/* Contract: see pipeline.h. */
void lk_prompt_cond_free(lk_prompt_cond *c) {
    if (!c) return;
    free(c->hidden);
    free(c->ids);
    free(c->weights);
    memset(c, 0, sizeof *c);
}

/* A1111's emphasis on one chunk z (77, dim): z *= w per token, then z *= mean(z0) / mean(z).
 * The means are taken in double; the ratio is applied in float like torch's float32 tensors.
 * A chunk of all-1 weights is left untouched (the rescale would be exactly 1). */
static void apply_emphasis(float *z, const float *w, int ntok, int dim) {
    bool all_one = true;
    for (int i = 0; i < ntok; i++) all_one = all_one && w[i] == 1.0f;
    if (all_one) return;
    double before = 0.0, after = 0.0;
    for (int i = 0; i < ntok; i++) {
        float *row = z + (size_t)i * (size_t)dim;
        for (int d = 0; d < dim; d++) {
            before += (double)row[d];
            row[d] *= w[i];
            after += (double)row[d];
        }
    }
    const double n = (double)ntok * (double)dim;
    before /= n;
    after /= n;
    /* a chunk whose weighted mean is 0 cannot be rescaled (A1111 would produce inf/NaN) */
    if (after == 0.0 || !isfinite(before / after)) return;
    const float r = (float)before / (float)after;
    const size_t total = (size_t)ntok * (size_t)dim;
    for (size_t i = 0; i < total; i++) z[i] *= r;
}

/* Contract: see pipeline.h. */
lk_status lk_prompt_cond_encode(lk_prompt_cond *out, lk_ctx *ctx, const lk_clip_text *te,
                                const lk_tokenizer *tok, const char *prompt,
                                const lk_prompt_cond_opts *opts) {
    if (!out) return lk_fail(LK_ERR_INVALID, "prompt_cond_encode: NULL output");
    memset(out, 0, sizeof *out);
    if (!ctx || !te || !tok || !prompt)
        return lk_fail(LK_ERR_INVALID, "prompt_cond_encode: NULL argument");
    lk_prompt_cond_opts o;
    if (opts) o = *opts;
    else lk_prompt_cond_opts_default(&o);
    const lk_clip_text_config *cfg = lk_clip_text_config_of(te);
    const int max_chunks = o.max_chunks > 0 ? o.max_chunks : LK_PROMPT_MAX_CHUNKS;
    const int clip_skip = o.clip_skip > 0 ? o.clip_skip : 1;
    if (clip_skip > cfg->num_hidden_layers)
        return lk_fail(LK_ERR_INVALID, "clip skip %d: the text encoder has %d layers", clip_skip,
                       cfg->num_hidden_layers);
    if (cfg->max_position_embeddings < LK_CLIP_CONTEXT)
        return lk_fail(LK_ERR_UNSUPPORTED, "text encoder takes %d positions, prompts need %d",
                       cfg->max_position_embeddings, LK_CLIP_CONTEXT);

    const size_t cap = (size_t)max_chunks * LK_CLIP_CONTEXT;
    int64_t *ids = malloc(cap * sizeof *ids);
    float *w = malloc(cap * sizeof *w);
    if (!ids || !w) {
        free(ids);
        free(w);
        return lk_fail(LK_ERR_NOMEM, "prompt: out of memory");
    }
    int n_chunks = 0;
    lk_status st = lk_prompt_encode_weighted(tok, prompt, &o.prompt, ids, w, max_chunks, &n_chunks);
    if (st == LK_OK && n_chunks > max_chunks)
        st = lk_fail(LK_ERR_INVALID, "prompt too long: %d chunks of %d tokens (at most %d)", n_chunks,
                     LK_CLIP_CHUNK, max_chunks);
    if (st == LK_OK) {
        int64_t vocab = lk_clip_text_vocab_size(te);
        for (size_t i = 0; i < (size_t)n_chunks * LK_CLIP_CONTEXT; i++)
            if (ids[i] < 0 || ids[i] >= vocab) {
                st = lk_fail(LK_ERR_INVALID, "prompt: token id %lld is outside the text encoder's "
                             "%lld-row table (an embedding added to the tokenizer only?)",
                             (long long)ids[i], (long long)vocab);
                break;
            }
    }
    if (st != LK_OK) {
        free(ids);
        free(w);
        return st;
    }

    const int ntok = n_chunks * LK_CLIP_CONTEXT, dim = cfg->hidden_size;
    float *hidden = malloc((size_t)ntok * (size_t)dim * sizeof *hidden);
    if (!hidden) {
        free(ids);
        free(w);
        return lk_fail(LK_ERR_NOMEM, "prompt: out of memory for %d x %d hidden states", ntok, dim);
    }
    const bool grad = lk_grad_enabled(ctx);
    const size_t mark = lk_ctx_mark(ctx);
    lk_set_grad_enabled(ctx, false);
    lk_tensor *tid = lk_tensor_from(ctx, LK_I64, LK_DIMS(n_chunks, LK_CLIP_CONTEXT), ids);
    lk_tensor *z = lk_clip_text_forward(ctx, te, tid, clip_skip, true);
    z = lk_contiguous(ctx, z);
    st = lk_ctx_status(ctx);
    if (st == LK_OK && z && lk_numel(z) == (int64_t)ntok * dim)
        memcpy(hidden, z->data, (size_t)ntok * (size_t)dim * sizeof *hidden);
    else if (st == LK_OK)
        st = lk_fail(LK_ERR_STATE, "prompt: text encoder returned an unexpected shape");
    lk_ctx_release_since(ctx, mark, NULL, 0);
    lk_set_grad_enabled(ctx, grad);
    if (st != LK_OK) {
        free(ids);
        free(w);
        free(hidden);
        return st;
    }
    for (int c = 0; c < n_chunks; c++)
        apply_emphasis(hidden + (size_t)c * LK_CLIP_CONTEXT * (size_t)dim, w + (size_t)c * LK_CLIP_CONTEXT,
                       LK_CLIP_CONTEXT, dim);
    out->n_chunks = n_chunks;
    out->n_tokens = ntok;
    out->dim = dim;
    out->hidden = hidden;
    out->ids = ids;
    out->weights = w;
    return LK_OK;
}

/* Contract: see pipeline.h. */
lk_status lk_prompt_cond_pad(lk_prompt_cond *c, int n_chunks, const lk_prompt_cond *empty) {
    if (!c || !empty || !empty->hidden)
        return lk_fail(LK_ERR_INVALID, "prompt_cond_pad: NULL argument");
    if (c->n_chunks >= n_chunks) return LK_OK;
    if (empty->n_chunks != 1 || empty->dim != c->dim)
        return lk_fail(LK_ERR_INVALID, "prompt_cond_pad: padding must be one chunk of width %d "
                       "(got %d chunks of width %d)", c->dim, empty->n_chunks, empty->dim);
    const size_t ntok = (size_t)n_chunks * LK_CLIP_CONTEXT, dim = (size_t)c->dim;
    float *h = realloc(c->hidden, ntok * dim * sizeof *h);
    if (!h) return lk_fail(LK_ERR_NOMEM, "prompt: out of memory padding to %d chunks", n_chunks);
    c->hidden = h;
    int64_t *ids = realloc(c->ids, ntok * sizeof *ids);
    if (!ids) return lk_fail(LK_ERR_NOMEM, "prompt: out of memory padding to %d chunks", n_chunks);
    c->ids = ids;
    float *w = realloc(c->weights, ntok * sizeof *w);
    if (!w) return lk_fail(LK_ERR_NOMEM, "prompt: out of memory padding to %d chunks", n_chunks);
    c->weights = w;
    for (int k = c->n_chunks; k < n_chunks; k++) {
        const size_t t0 = (size_t)k * LK_CLIP_CONTEXT;
        memcpy(h + t0 * dim, empty->hidden, LK_CLIP_CONTEXT * dim * sizeof *h);
        memcpy(ids + t0, empty->ids, LK_CLIP_CONTEXT * sizeof *ids);
        memcpy(w + t0, empty->weights, LK_CLIP_CONTEXT * sizeof *w);
    }
    c->n_chunks = n_chunks;
    c->n_tokens = (int)ntok;
    return LK_OK;
}
