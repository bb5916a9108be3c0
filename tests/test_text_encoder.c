/* test_text_encoder.c: the CLIP text encoder against the golden fixtures (OpenAI CLIP reference,
 * ../shared/golden): last_hidden_state, penultimate layer with and without the final norm,
 * F16 weights, textual-inversion rows (A1111 and diffusers embeddings), plus the config parser's
 * strictness and the up-front weight validation messages. Tolerance 1e-4 relative. */
#include "harness.h"
#include "likeness/clip_text.h"

#include <stdlib.h>
#include <string.h>

static lk_tensor *raw_tensor(lk_ctx *ctx, const lk_safetensors *st, const char *name) {
    const lk_st_tensor *t = lk_safetensors_find(st, name);
    if (!t) {
        fprintf(stderr, "FAIL fixture tensor '%s' missing\n", name);
        lk_t_failures++;
        return NULL;
    }
    return lk_tensor_from(ctx, t->dtype, t->ndim, t->shape, t->data);
}

static void compare(const lk_safetensors *st, const char *key, const char *what, lk_tensor *got,
                    float atol, float rtol) {
    int64_t n = 0;
    float *want = lk_t_load(st, key, &n);
    CHECK(got != NULL);
    if (got && want) {
        CHECK(lk_numel(got) == n);
        if (lk_numel(got) == n) lk_t_close(what, got->data, want, (size_t)n, atol, rtol);
    }
    free(want);
}

static void golden_path(char *buf, size_t len, const char *rel) {
    snprintf(buf, len, "%s/%s", lk_t_golden_dir(), rel);
}

static void test_config_parser(void) {
    lk_clip_text_config c;
    const char *ok = "{\"hidden_size\":64,\"intermediate_size\":256,\"num_hidden_layers\":3,"
                     "\"num_attention_heads\":4,\"hidden_act\":\"gelu\"}";
    CHECK_OK(lk_clip_text_config_parse(&c, ok, strlen(ok), "t"));
    CHECK(c.hidden_size == 64 && c.num_hidden_layers == 3 && c.hidden_act == LK_CLIP_GELU &&
          c.max_position_embeddings == 77 && c.vocab_size == 49408);
    const char *nested = "{\"text_config\":{\"hidden_size\":32,\"intermediate_size\":64,"
                         "\"num_hidden_layers\":1,\"num_attention_heads\":2}}";
    CHECK_OK(lk_clip_text_config_parse(&c, nested, strlen(nested), "t"));
    CHECK(c.hidden_size == 32 && c.hidden_act == LK_CLIP_QUICK_GELU);
    const char *missing = "{\"hidden_size\":64,\"num_hidden_layers\":3,\"num_attention_heads\":4}";
    CHECK(lk_clip_text_config_parse(&c, missing, strlen(missing), "t") == LK_ERR_FORMAT);
    CHECK(strstr(lk_last_error(), "intermediate_size") != NULL);
    const char *badtype = "{\"hidden_size\":\"64\",\"intermediate_size\":256,"
                          "\"num_hidden_layers\":3,\"num_attention_heads\":4}";
    CHECK(lk_clip_text_config_parse(&c, badtype, strlen(badtype), "t") == LK_ERR_FORMAT);
    CHECK(strstr(lk_last_error(), "hidden_size") != NULL);
    const char *act = "{\"hidden_size\":64,\"intermediate_size\":256,\"num_hidden_layers\":3,"
                      "\"num_attention_heads\":4,\"hidden_act\":\"relu\"}";
    CHECK(lk_clip_text_config_parse(&c, act, strlen(act), "t") == LK_ERR_UNSUPPORTED);
    CHECK(strstr(lk_last_error(), "hidden_act") != NULL);
    const char *heads = "{\"hidden_size\":64,\"intermediate_size\":256,\"num_hidden_layers\":3,"
                        "\"num_attention_heads\":5}";
    CHECK(lk_clip_text_config_parse(&c, heads, strlen(heads), "t") == LK_ERR_FORMAT);
    CHECK(lk_clip_text_config_parse(&c, "[1,2]", 5, "t") == LK_ERR_FORMAT);
    CHECK(lk_clip_text_config_parse(&c, "{\"hidden_size\":", 15, "t") == LK_ERR_FORMAT);
    CHECK(lk_clip_text_config_load(&c, "/nonexistent/config.json") == LK_ERR_IO);
}

/* A shape mismatch and a missing tensor are reported with the key, up front. */
static void test_validation(const lk_clip_text_config *cfg, const char *wpath) {
    lk_weights *w = lk_weights_new();
    if (!w) return;
    CHECK_OK(lk_weights_load_safetensors(w, wpath, NULL, NULL, LK_F32));
    lk_clip_text_config bad = *cfg;
    bad.intermediate_size = 64;
    lk_clip_text *te = NULL;
    CHECK(lk_clip_text_new(&te, &bad, w, NULL) == LK_ERR_FORMAT && te == NULL);
    CHECK(strstr(lk_last_error(), "text_model.encoder.layers.0.mlp.fc1.weight") != NULL);
    CHECK(strstr(lk_last_error(), "[128,32]") != NULL && strstr(lk_last_error(), "[64,32]"));
    fprintf(stderr, "  message: %s\n", lk_last_error());
    CHECK(lk_clip_text_new(&te, cfg, w, "model.") == LK_ERR_FORMAT && te == NULL);
    CHECK(strstr(lk_last_error(), "missing") != NULL);
    lk_weights_free(w);
}

int main(void) {
    lk_set_num_threads(2);
    test_config_parser();

    char cpath[1024], wpath[1024];
    golden_path(cpath, sizeof cpath, "text_encoder/config.json");
    golden_path(wpath, sizeof wpath, "text_encoder/model.safetensors");
    lk_clip_text_config cfg;
    CHECK_OK(lk_clip_text_config_load(&cfg, cpath));
    REQUIRE(cfg.hidden_size == 32 && cfg.num_hidden_layers == 2 && cfg.num_attention_heads == 4);
    test_validation(&cfg, wpath);

    lk_safetensors *cases = lk_t_golden("text_encoder_cases.safetensors");
    lk_safetensors *emb = lk_t_golden("embeddings_cases.safetensors");
    REQUIRE(cases && emb);
    const lk_dtype stores[2] = {LK_F32, LK_F16};
    for (int si = 0; si < 2; si++) {
        lk_weights *w = lk_weights_new();
        REQUIRE(w);
        CHECK_OK(lk_weights_load_safetensors(w, wpath, NULL, NULL, stores[si]));
        lk_clip_text *te = NULL;
        CHECK_OK(lk_clip_text_new(&te, &cfg, w, NULL));
        REQUIRE(te);
        lk_ctx *ctx = lk_ctx_new();
        REQUIRE(ctx);
        lk_set_grad_enabled(ctx, false);
        /* F16 weights: the reference ran in f32, so allow the weight rounding */
        const float atol = si ? 3e-3f : 1e-5f, rtol = si ? 3e-3f : 1e-4f;
        const char *tag = si ? "f16 weights" : "f32";
        char what[128];
        lk_tensor *ids = raw_tensor(ctx, cases, "input_ids");
        double t0 = lk_t_now();
        lk_tensor *last = lk_clip_text_forward(ctx, te, ids, 1, true);
        double t1 = lk_t_now();
        snprintf(what, sizeof what, "%s last_hidden_state (%.1f ms)", tag, 1e3 * (t1 - t0));
        compare(cases, "last_hidden_state", what, last, atol, rtol);
        snprintf(what, sizeof what, "%s penultimate_hidden_state", tag);
        compare(cases, "penultimate_hidden_state", what, lk_clip_text_forward(ctx, te, ids, 2, false),
                atol, rtol);
        snprintf(what, sizeof what, "%s penultimate_after_final_norm", tag);
        compare(cases, "penultimate_after_final_norm", what,
                lk_clip_text_forward(ctx, te, ids, 2, true), atol, rtol);
        CHECK_OK(lk_ctx_status(ctx));
        CHECK(lk_clip_text_forward(ctx, te, ids, 3, true) == NULL);
        CHECK(lk_ctx_status(ctx) == LK_ERR_INVALID);
        lk_ctx_reset(ctx);

        /* textual inversion: cat-toy (A1111, 2 rows) -> 49408, 49409; <sks> (diffusers) -> 49410 */
        char p1[1024], p2[1024];
        golden_path(p1, sizeof p1, "embeddings/cat-toy.safetensors");
        golden_path(p2, sizeof p2, "embeddings/learned_embeds.safetensors");
        lk_safetensors *e1 = NULL, *e2 = NULL;
        CHECK_OK(lk_safetensors_open(&e1, p1));
        CHECK_OK(lk_safetensors_open(&e2, p2));
        float *rows = e1 ? lk_t_load(e1, "emb_params", NULL) : NULL;
        float *sks = e2 ? lk_t_load(e2, "<sks>", NULL) : NULL;
        int64_t first = -1, first2 = -1;
        CHECK(lk_clip_text_vocab_size(te) == 49408);
        CHECK_OK(lk_clip_text_add_tokens(te, 2, rows, &first));
        CHECK_OK(lk_clip_text_add_tokens(te, 1, NULL, &first2));
        CHECK(first == 49408 && first2 == 49410 && lk_clip_text_vocab_size(te) == 49411);
        if (sks) CHECK_OK(lk_clip_text_set_token(te, first2, sks));
        CHECK(lk_clip_text_set_token(te, 49411, sks) == LK_ERR_INVALID);
        CHECK(lk_clip_text_token_table(te)->dtype == LK_F32);
        lk_tensor *eids = raw_tensor(ctx, emb, "input_ids");
        snprintf(what, sizeof what, "%s textual inversion last_hidden_state", tag);
        compare(emb, "last_hidden_state", what, lk_clip_text_forward(ctx, te, eids, 1, true), atol,
                rtol);
        free(rows);
        free(sks);
        lk_safetensors_close(e1);
        lk_safetensors_close(e2);

        /* an id beyond the table fails cleanly */
        lk_ctx_reset(ctx);
        int64_t bad_ids[3] = {49406, 60000, 49407};
        lk_tensor *bid = lk_tensor_from(ctx, LK_I64, LK_DIMS(1, 3), bad_ids);
        CHECK(lk_clip_text_forward(ctx, te, bid, 1, true) == NULL);
        CHECK(lk_ctx_status(ctx) == LK_ERR_INVALID);
        fprintf(stderr, "  bad id: %s\n", lk_last_error());

        lk_ctx_free(ctx);
        lk_clip_text_free(te);
        lk_weights_free(w);
    }
    lk_safetensors_close(cases);
    lk_safetensors_close(emb);
    return lk_t_done();
}
