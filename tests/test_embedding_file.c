/* test_embedding_file.c: textual-inversion files. The golden A1111 (cat-toy, 2 vectors) and
 * diffusers (<sks>) embeddings: tokens added to the golden tokenizer must encode the prompts of
 * embeddings_cases.safetensors to exactly its input_ids (49408/49409 cat-toy, 49410 <sks>), and
 * the rows for the text encoder's table are the files' vectors. Refusals: width mismatch,
 * pickles, SDXL, non-embeddings, renaming several tokens, adding twice. The
 * last_hidden_state check of embeddings_cases needs the text encoder network (not done here). */
#define _POSIX_C_SOURCE 200809L
#include "harness.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "likeness/embedding_file.h"

static char golden[2048], tmpdir[256];

static const char *gpath(const char *rel, char *buf, size_t n) {
    snprintf(buf, n, "%s/%s", golden, rel);
    return buf;
}

static void expect_refusal(const char *what, lk_status got, lk_status want, const char *needle) {
    lk_t_checks++;
    bool ok = got == want && strstr(lk_last_error(), needle);
    if (!ok) lk_t_failures++;
    printf("%s refusal %s: [%s] %s\n", ok ? "ok  " : "FAIL", what, lk_status_str(got), lk_last_error());
}

static void test_golden(void) {
    char p_cat[4096], p_sks[4096], p_tok[4096];
    gpath("embeddings/cat-toy.safetensors", p_cat, sizeof p_cat);
    gpath("embeddings/learned_embeds.safetensors", p_sks, sizeof p_sks);
    gpath("tokenizer", p_tok, sizeof p_tok);

    /* A1111 naming: the file name */
    lk_embedding_file *e = NULL;
    CHECK_OK(lk_embedding_file_load(&e, p_cat, NULL, 32));
    if (e) {
        CHECK(!strcmp(e->name, "cat-toy") && e->n_tokens == 1 && e->dim == 32);
        CHECK(!strcmp(e->tokens[0].token, "cat-toy") && e->tokens[0].n_vectors == 2 && e->tokens[0].first_id == -1);
    }
    lk_embedding_file_free(e);
    /* the width check */
    e = NULL;
    expect_refusal("width", lk_embedding_file_load(&e, p_cat, NULL, 1024), LK_ERR_INVALID,
                   "embedding cat-toy has 32-dim vectors, the text encoder expects 1024");
    CHECK(e == NULL);

    lk_embedding_file *cat = NULL, *sks = NULL;
    CHECK_OK(lk_embedding_file_load(&cat, p_cat, "<cat-toy>", 32));
    CHECK_OK(lk_embedding_file_load(&sks, p_sks, NULL, 32)); /* diffusers naming: the key */
    lk_tokenizer *tok = NULL;
    CHECK_OK(lk_tokenizer_load(&tok, p_tok));
    if (!cat || !sks || !tok) goto done;
    CHECK(!strcmp(sks->tokens[0].token, "<sks>") && sks->tokens[0].n_vectors == 1);

    /* the vectors are the file's */
    lk_safetensors *st = NULL;
    CHECK_OK(lk_safetensors_open(&st, p_cat));
    float *want = lk_t_load(st, "emb_params", NULL);
    CHECK(want && !memcmp(want, cat->tokens[0].vectors, 2 * 32 * sizeof(float)));
    free(want);
    lk_safetensors_close(st);
    CHECK_OK(lk_safetensors_open(&st, p_sks));
    want = lk_t_load(st, "<sks>", NULL);
    CHECK(want && !memcmp(want, sks->tokens[0].vectors, 32 * sizeof(float)));
    free(want);
    lk_safetensors_close(st);

    int64_t first = 0;
    int rows = 0;
    CHECK_OK(lk_embedding_file_add_tokens(cat, tok, &first, &rows));
    CHECK(first == 49408 && rows == 2);
    CHECK_OK(lk_embedding_file_add_tokens(sks, tok, &first, &rows));
    CHECK(first == 49410 && rows == 1);
    CHECK(lk_tokenizer_vocab_size(tok) == 49411);
    expect_refusal("added twice", lk_embedding_file_add_tokens(sks, tok, NULL, NULL), LK_ERR_STATE, "already added");

    /* prompts of embeddings_cases encode to its ids */
    lk_safetensors *cases = lk_t_golden("embeddings_cases.safetensors");
    const char *prompts = cases ? lk_safetensors_meta(cases, "prompts") : NULL;
    cJSON *pj = prompts ? cJSON_Parse(prompts) : NULL;
    int64_t n_ids = 0;
    float *ids_f = cases ? lk_t_load(cases, "input_ids", &n_ids) : NULL;
    CHECK(cJSON_IsArray(pj) && ids_f && n_ids == (int64_t)cJSON_GetArraySize(pj) * 77);
    int np = cJSON_IsArray(pj) ? cJSON_GetArraySize(pj) : 0, mism = 0;
    for (int i = 0; ids_f && i < np; i++) {
        int64_t ids[77];
        const char *text = cJSON_GetArrayItem(pj, i)->valuestring;
        CHECK_OK(lk_tokenizer_encode(tok, text, ids, 77, LK_PAD_EOS, NULL));
        for (int k = 0; k < 77; k++) mism += ids[k] != (int64_t)ids_f[i * 77 + k];
        printf("prompt \"%s\": ids %lld %lld %lld %lld %lld %lld ...\n", text, (long long)ids[0],
               (long long)ids[1], (long long)ids[2], (long long)ids[3], (long long)ids[4], (long long)ids[5]);
    }
    CHECK(np == 2 && mism == 0);
    printf("%s embeddings_cases input_ids: %d prompts, %d mismatching ids\n", mism ? "FAIL" : "ok  ", np, mism);
    free(ids_f);
    cJSON_Delete(pj);
    lk_safetensors_close(cases);

    /* rows for the embedding table */
    float *r = NULL;
    CHECK_OK(lk_embedding_file_rows(cat, &r, &rows));
    CHECK(r && rows == 2 && !memcmp(r, cat->tokens[0].vectors, 64 * sizeof(float)));
    free(r);

done:
    lk_embedding_file_free(cat);
    lk_embedding_file_free(sks);
    lk_tokenizer_free(tok);
}

static void write_file(const char *fname, const char *const *names, int n, int ndim, const int64_t *shape,
                       lk_dtype dt, char *path, size_t cap) {
    lk_st_writer *w = lk_st_writer_new();
    float x[4 * 1024] = {0};
    for (int i = 0; i < n; i++) CHECK_OK(lk_st_writer_add(w, names[i], dt, ndim, shape, x));
    snprintf(path, cap, "%s/%s", tmpdir, fname);
    CHECK_OK(lk_st_writer_save(w, path));
    lk_st_writer_free(w);
}

static void test_variants(void) {
    char path[512];
    lk_embedding_file *e = NULL;
    /* A1111 with a single (dim) vector */
    const char *a1[] = {"emb_params"};
    write_file("one-vector.safetensors", a1, 1, LK_DIMS(768), LK_F16, path, sizeof path);
    CHECK_OK(lk_embedding_file_load(&e, path, NULL, 768));
    CHECK(e && e->n_tokens == 1 && e->tokens[0].n_vectors == 1 && !strcmp(e->tokens[0].token, "one-vector"));
    lk_embedding_file_free(e);
    e = NULL;
    unlink(path);
    /* string_to_param.* (converted from .pt) */
    const char *a2[] = {"string_to_param.*"};
    write_file("style.safetensors", a2, 1, LK_DIMS(3, 1024), LK_F32, path, sizeof path);
    CHECK_OK(lk_embedding_file_load(&e, path, NULL, 1024));
    CHECK(e && e->tokens[0].n_vectors == 3 && e->dim == 1024 && !strcmp(e->tokens[0].token, "style"));
    lk_embedding_file_free(e);
    e = NULL;
    unlink(path);
    /* diffusers file with two tokens: both load; renaming is refused */
    const char *d2[] = {"<a>", "<b>"};
    write_file("two.safetensors", d2, 2, LK_DIMS(32), LK_F32, path, sizeof path);
    CHECK_OK(lk_embedding_file_load(&e, path, NULL, 32));
    CHECK(e && e->n_tokens == 2 && !strcmp(e->tokens[0].token, "<a>") && !strcmp(e->tokens[1].token, "<b>"));
    if (e) {
        e->tokens[1].vectors[0] = 7.0f;
        float *r = NULL;
        int n = 0;
        CHECK_OK(lk_embedding_file_rows(e, &r, &n));
        CHECK(r && n == 2 && r[0] == 0.0f && r[32] == 7.0f);
        free(r);
    }
    lk_embedding_file_free(e);
    e = NULL;
    expect_refusal("renaming two tokens", lk_embedding_file_load(&e, path, "<x>", 32), LK_ERR_INVALID, "2 tokens");
    unlink(path);
    /* SDXL */
    const char *xl[] = {"clip_g", "clip_l"};
    write_file("xl.safetensors", xl, 2, LK_DIMS(2, 768), LK_F32, path, sizeof path);
    expect_refusal("SDXL embedding", lk_embedding_file_load(&e, path, NULL, 0), LK_ERR_UNSUPPORTED, "SDXL");
    unlink(path);
    /* not an embedding */
    const char *lo[] = {"lora_unet_x.lora_down.weight"};
    write_file("lora.safetensors", lo, 1, LK_DIMS(4, 32), LK_F32, path, sizeof path);
    expect_refusal("LoRA file", lk_embedding_file_load(&e, path, NULL, 0), LK_ERR_FORMAT, "not a textual-inversion");
    unlink(path);
    const char *big[] = {"emb_params"};
    write_file("big.safetensors", big, 1, LK_DIMS(76, 32), LK_F32, path, sizeof path);
    expect_refusal("76 vectors", lk_embedding_file_load(&e, path, NULL, 0), LK_ERR_FORMAT, "76 vectors");
    unlink(path);
    const char *ints[] = {"emb_params"};
    write_file("ints.safetensors", ints, 1, LK_DIMS(2, 32), LK_I32, path, sizeof path);
    expect_refusal("integer vectors", lk_embedding_file_load(&e, path, NULL, 0), LK_ERR_FORMAT, "not a float");
    unlink(path);
    expect_refusal("pickle", lk_embedding_file_load(&e, "/tmp/x/cat.pt", NULL, 0), LK_ERR_UNSUPPORTED, "never unpickles");
    expect_refusal("missing", lk_embedding_file_load(&e, "/nonexistent/e.safetensors", NULL, 0), LK_ERR_IO, "nonexistent");
    CHECK(e == NULL);
}

int main(void) {
    snprintf(golden, sizeof golden, "%s", lk_t_golden_dir());
    snprintf(tmpdir, sizeof tmpdir, "/tmp/lk_embedding_XXXXXX");
    if (!mkdtemp(tmpdir)) {
        fprintf(stderr, "FATAL mkdtemp\n");
        return 1;
    }
    test_golden();
    test_variants();
    rmdir(tmpdir);
    return lk_t_done();
}
