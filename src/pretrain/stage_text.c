/* stage_text.c: pretraining the CLIP-style text + image model (Radford et al. 2021) on emoji
 * images and their captions: random (image, caption variant) pairs, the symmetric contrastive
 * loss with a learned temperature. The text tower becomes the generator's frozen text encoder
 * (generator split) or the EmojiBench evaluator's (evaluator split). */
#define _POSIX_C_SOURCE 200809L
#include "pretrain/pretrain_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "likeness/ops.h"
#include "likeness/tokenizer.h"

typedef struct text_stage {
    lk_clip_model_config cfg;
    lk_clip_model *model;
    lk_tokenizer *tok;
    int64_t *ids;    /* B x 77 */
    int64_t *ids_n;  /* B x N */
    int *eos;
    float *x;        /* B x 3 x 32 x 32 */
    float *dout;     /* 2B x E */
} text_stage;

static lk_status text_grad(lk__pt *p, float *loss, float *metric) {
    text_stage *t = p->st;
    const int B = p->cfg.batch, S = t->cfg.image_size, E = t->cfg.embed_dim;
    const int down = LK_PT_IMAGE / S;
    int N = 1;
    for (int b = 0; b < B; b++) {
        int64_t pick[2];
        lk_status s = lk_rng_randint(&p->rng, 0, p->img.n, &pick[0], 1);
        if (s == LK_OK) s = lk_rng_randint(&p->rng, 0, lk_emoji_caption_variants(), &pick[1], 1);
        if (s != LK_OK) return s;
        const int item = (int)pick[0];
        char cap[512];
        lk_emoji_caption(p->set, p->img.concept[item], p->img.style[item], (int)pick[1], cap,
                         sizeof cap);
        int nc = 0;
        s = lk_tokenizer_encode(t->tok, cap, t->ids + (size_t)b * LK_CLIP_CONTEXT,
                                LK_CLIP_CONTEXT, LK_PAD_EOS, &nc);
        if (s != LK_OK) return s;
        t->eos[b] = (nc < LK_CLIP_CHUNK ? nc : LK_CLIP_CHUNK) + 1;
        if (t->eos[b] + 1 > N) N = t->eos[b] + 1;
        lk__pt_image_to_f32(p->img.pixels + (size_t)item * LK_PT_IMAGE * LK_PT_IMAGE * 3,
                            t->x + (size_t)b * 3 * S * S, down, 0, 0, 0);
    }
    for (int b = 0; b < B; b++)
        memcpy(t->ids_n + (size_t)b * N, t->ids + (size_t)b * LK_CLIP_CONTEXT, sizeof(int64_t) * (size_t)N);
    lk_ctx *ctx = p->ctx;
    lk_tensor *ids = lk_tensor_wrap(ctx, LK_I64, LK_DIMS(B, N), t->ids_n);
    lk_tensor *x = lk_tensor_wrap(ctx, LK_F32, LK_DIMS(B, 3, S, S), t->x);
    lk_tensor *te = lk_clip_model_encode_text(ctx, t->model, ids, t->eos);
    lk_tensor *ie = lk_clip_model_encode_image(ctx, t->model, x);
    lk_tensor *both[2] = {ie, te};
    lk_tensor *cat = (te && ie) ? lk_concat(ctx, both, 2, 0) : NULL;
    if (!cat) return lk_ctx_status(ctx);
    lk_tensor *ls = lk_clip_model_logit_scale_param(t->model);
    float gls = 0.0f, acc = 0.0f;
    const float *cd = cat->data;
    *loss = lk_clip_contrastive_loss(cd, cd + (size_t)B * E, B, E, lk_get_f32(ls, 0), t->dout,
                                     t->dout + (size_t)B * E, &gls, &acc);
    *metric = acc;
    if (*loss != *loss) return lk_fail(LK_ERR_INVALID, "pretrain text: the loss is not a number");
    lk_status s = lk_backward_from(ctx, cat, t->dout);
    if (s == LK_OK && ls->grad) ls->grad[0] += gls;
    return s;
}

static lk_status text_export(lk__pt *p, const char *dir) {
    const text_stage *t = p->st;
    char path[4300];
    lk_status s = lk__pt_export_part(p, dir, "text_encoder", lk__pt_text_config_json(&t->cfg.text),
                                     "model.safetensors", "text_model.");
    snprintf(path, sizeof path, "%s/clip", dir);
    if (s == LK_OK) s = lk__mkdirs(path);
    snprintf(path, sizeof path, "%s/clip/config.json", dir);
    if (s == LK_OK) s = lk_clip_model_config_save(&t->cfg, path);
    snprintf(path, sizeof path, "%s/clip/model.safetensors", dir);
    if (s == LK_OK) s = lk__pt_save_weights(p, path, false, NULL);
    if (s == LK_OK) s = lk__pt_copy_tokenizer(p->cfg.tokenizer_dir, "", dir);
    return s;
}

static void text_free(lk__pt *p) {
    text_stage *t = p->st;
    if (!t) return;
    lk_clip_model_free(t->model);
    lk_tokenizer_free(t->tok);
    free(t->ids);
    free(t->ids_n);
    free(t->eos);
    free(t->x);
    free(t->dout);
    free(t);
    p->st = NULL;
}

lk_status lk__pt_text_setup(lk__pt *p) {
    snprintf(p->name, sizeof p->name, "%s", p->cfg.evaluator ? "evaluator" : "text");
    if (!p->cfg.tokenizer_dir)
        return lk_fail(LK_ERR_INVALID, "pretrain text: --tokenizer DIR (vocab.json + merges.txt) "
                       "is required");
    text_stage *t = calloc(1, sizeof *t);
    if (!t) return lk_fail(LK_ERR_NOMEM, "out of memory");
    p->st = t;
    p->grad = text_grad;
    p->export_to = text_export;
    p->free_stage = text_free;
    lk_status s = lk_tokenizer_load(&t->tok, p->cfg.tokenizer_dir);
    static const char *const tok_files[] = {"vocab.json", "merges.txt"};
    if (s == LK_OK) s = lk__pt_note_inputs(p, "tokenizer", p->cfg.tokenizer_dir, tok_files, 2);
    if (s != LK_OK) return s;
    t->cfg = lk__pt_clip_config((int)lk_tokenizer_vocab_size(t->tok));
    s = lk__pt_init_from(p, "clip", "model.safetensors");
    if (s == LK_OK) s = lk_clip_model_init_weights(p->w, &t->cfg, "", LK_F32, p->cfg.seed);
    if (s == LK_OK) s = lk_clip_model_new(&t->model, &t->cfg, p->w, "");
    for (int i = 0; s == LK_OK && i < lk_weights_count(p->w); i++) {
        lk_tensor *w = lk_weights_at(p->w, i);
        s = lk_set_requires_grad(w, true);
        if (s == LK_OK) s = lk_paramset_add(p->ps, w);
    }
    const int B = p->cfg.batch, S = t->cfg.image_size;
    t->ids = malloc(sizeof(int64_t) * (size_t)B * LK_CLIP_CONTEXT);
    t->ids_n = malloc(sizeof(int64_t) * (size_t)B * LK_CLIP_CONTEXT);
    t->eos = malloc(sizeof(int) * (size_t)B);
    t->x = malloc(sizeof(float) * (size_t)B * 3 * S * S);
    t->dout = malloc(sizeof(float) * 2 * (size_t)B * t->cfg.embed_dim);
    if (s == LK_OK && (!t->ids || !t->ids_n || !t->eos || !t->x || !t->dout))
        s = lk_fail(LK_ERR_NOMEM, "out of memory");
    return s;
}
