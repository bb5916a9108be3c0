/* sd_loader.c: the Stable Diffusion model object and loading a diffusers-layout folder
 * (model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/, as diffusers'
 * save_pretrained writes it); single files are converted in sd_single_file.c. */
#define _POSIX_C_SOURCE 200809L
#include "models/sd_internal.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/sha256.h"

#define NAME_CAP sizeof(((lk_tensor *)0)->name)

char *lk__sd_strdup(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (!d) {
        lk_fail(LK_ERR_NOMEM, "out of memory");
        return NULL;
    }
    memcpy(d, s, n);
    return d;
}

void lk_sd_load_opts_default(lk_sd_load_opts *o) {
    memset(o, 0, sizeof *o);
    o->store = LK_F32;
    o->prediction = -1;
    o->load_tokenizer = true;
}

const char *lk_sd_arch_name(lk_sd_arch a) {
    switch (a) {
    case LK_SD_ARCH_SD1: return "SD-1.x";
    case LK_SD_ARCH_SD2: return "SD-2.x";
    default: return "unknown";
    }
}

const char *lk_sd_part_name(lk_sd_part_id p) {
    static const char *const names[LK_SD_NPARTS] = {"text_encoder", "unet", "vae"};
    return (unsigned)p < LK_SD_NPARTS ? names[p] : NULL;
}

void lk_sd_model_free(lk_sd_model *m) {
    if (!m) return;
    for (int i = 0; i < LK_SD_NPARTS; i++) {
        lk_weights_free(m->part[i].weights);
        free(m->part[i].config_json);
        free(m->part[i].file);
    }
    lk_tokenizer_free(m->tokenizer);
    free(m->scheduler_json);
    free(m->path);
    free(m->hash_file);
    free(m);
}

lk_status lk_sd_model_hash(lk_sd_model *m, char hash10[11]) {
    if (!m || !m->hash_file) return lk_fail(LK_ERR_INVALID, "sd_model_hash: no model");
    if (!m->sha256[0]) {
        lk_status s = lk_sha256_file(m->hash_file, m->sha256);
        if (s != LK_OK) return s;
    }
    if (hash10) {
        memcpy(hash10, m->sha256, 10);
        hash10[10] = '\0';
    }
    return LK_OK;
}

/* ---------------------------------------------------------------------------------------- */
/* adding tensors */

static int dtype_slot(lk_dtype dt) { return dt == LK_F32 ? 0 : dt == LK_F16 ? 1 : dt == LK_BF16 ? 2 : -1; }

lk_status lk__sd_add(lk__sd_load *L, int part, const char *name, const lk_st_tensor *t, int ndim,
                     const int64_t *shape, int64_t elem_off) {
    int slot = dtype_slot(t->dtype);
    if (slot < 0)
        return lk_fail(LK_ERR_FORMAT, "tensor '%s' has dtype %s, expected F32, F16 or BF16",
                       t->name, lk_dtype_name(t->dtype));
    if (strlen(name) >= NAME_CAP)
        return lk_fail(LK_ERR_UNSUPPORTED, "tensor name '%s' is longer than %zu bytes", name,
                       NAME_CAP - 1);
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) n *= shape[i];
    int64_t total = lk_st_tensor_numel(t);
    if (elem_off < 0 || n < 0 || elem_off > total || n > total - elem_off)
        return lk_fail(LK_ERR_FORMAT, "tensor '%s' has %lld elements, too few for '%s'", t->name,
                       (long long)total, name);
    L->dtype_count[part][slot]++;
    size_t es = lk_dtype_size(t->dtype);
    const uint8_t *src = (const uint8_t *)t->data + (size_t)elem_off * es;
    lk_tensor *p;
    if (L->shapes_only) {
        p = lk_param_wrap(t->dtype, ndim, shape, NULL, name);
        if (!p) return lk_fail_prefix(LK_ERR_NOMEM, "'%s': ", name);
    } else {
        p = lk_param_new(L->store, ndim, shape, name);
        if (!p) return lk_fail_prefix(LK_ERR_NOMEM, "'%s': ", name);
        if (t->dtype == L->store) {
            if (n) memcpy(p->data, src, (size_t)n * es);
        } else {
            float *dst = p->data;
            if (L->store != LK_F32) {
                if ((size_t)n > L->tmp_cap) {
                    free(L->tmp);
                    L->tmp = malloc((size_t)n * sizeof(float));
                    L->tmp_cap = L->tmp ? (size_t)n : 0;
                    if (!L->tmp) {
                        lk_param_free(p);
                        return lk_fail(LK_ERR_NOMEM, "out of memory");
                    }
                }
                dst = L->tmp;
            }
            lk_st_tensor slice = *t;
            slice.ndim = 1;
            slice.shape[0] = n;
            slice.data = src;
            slice.nbytes = (size_t)n * es;
            lk_status s = lk_st_tensor_to_f32(&slice, dst, (size_t)n);
            if (s != LK_OK) {
                lk_param_free(p);
                return s;
            }
            if (L->store == LK_F16) lk_f32_to_f16_n(p->data, dst, (size_t)n);
            if (L->store == LK_BF16) lk_f32_to_bf16_n(p->data, dst, (size_t)n);
        }
    }
    /* keep the peak near one copy of the weights: the file's pages for this tensor go */
    if (!L->shapes_only) lk_safetensors_evict(L->st, src, (size_t)n * es);
    return lk_weights_add(L->m->part[part].weights, p);
}

/* ---------------------------------------------------------------------------------------- */
/* files */

static bool is_file(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISREG(sb.st_mode);
}

static bool is_dir(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISDIR(sb.st_mode);
}

/* Whole file as a NUL-terminated string. LK_ERR_IO naming the file when unreadable. */
static lk_status read_text(const char *path, char **out) {
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) return lk_fail(LK_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    while (buf) {
        size_t got = fread(buf + len, 1, cap - len - 1, f);
        len += got;
        if (len < cap - 1) break;
        if (cap > ((size_t)64 << 20)) {
            free(buf);
            fclose(f);
            return lk_fail(LK_ERR_FORMAT, "%s: larger than 64 MiB, not a config file", path);
        }
        char *nb = realloc(buf, cap * 2);
        if (!nb) {
            free(buf);
            buf = NULL;
            break;
        }
        buf = nb;
        cap *= 2;
    }
    int err = ferror(f);
    fclose(f);
    if (!buf) return lk_fail(LK_ERR_NOMEM, "out of memory");
    if (err) {
        free(buf);
        return lk_fail(LK_ERR_IO, "%s: read error", path);
    }
    buf[len] = '\0';
    *out = buf;
    return LK_OK;
}

static char *path_join(const char *a, const char *b) {
    size_t n = strlen(a) + strlen(b) + 2;
    char *p = malloc(n);
    if (!p) {
        lk_fail(LK_ERR_NOMEM, "out of memory");
        return NULL;
    }
    snprintf(p, n, "%s/%s", a, b);
    return p;
}

/* Pre-0.14 diffusers VAE attention names -> current ones; 1x1-conv shaped attention weights
 * -> linear. Writes the new name into out. */
static void vae_legacy_name(const char *name, char *out, size_t cap) {
    static const char *const map[][2] = {{"query.", "to_q."},
                                         {"key.", "to_k."},
                                         {"value.", "to_v."},
                                         {"proj_attn.", "to_out.0."}};
    const char *at = strstr(name, "mid_block.attentions.0.");
    if (at) {
        const char *rest = at + strlen("mid_block.attentions.0.");
        for (size_t i = 0; i < sizeof map / sizeof map[0]; i++) {
            size_t l = strlen(map[i][0]);
            if (!strncmp(rest, map[i][0], l)) {
                snprintf(out, cap, "%.*s%s%s", (int)(rest - name), name, map[i][1], rest + l);
                return;
            }
        }
    }
    snprintf(out, cap, "%s", name);
}

static lk_status load_component_file(lk__sd_load *L, int part, const char *file) {
    lk_safetensors *st = NULL;
    lk_status s = lk_safetensors_open(&st, file);
    if (s != LK_OK) return s;
    L->st = st;
    for (int i = 0; i < lk_safetensors_count(st) && s == LK_OK; i++) {
        const lk_st_tensor *t = lk_safetensors_at(st, i);
        if (dtype_slot(t->dtype) < 0) continue;        /* integer buffers */
        if (strstr(t->name, "position_ids")) continue; /* a buffer, sometimes saved as float */
        char name[NAME_CAP + 32];
        int ndim = t->ndim;
        int64_t shape[LK_MAX_DIMS];
        memcpy(shape, t->shape, sizeof shape);
        if (part == LK_SD_VAE) {
            vae_legacy_name(t->name, name, sizeof name);
            if (strstr(name, "mid_block.attentions.0.to_") && ndim == 4 && shape[2] == 1 &&
                shape[3] == 1)
                ndim = 2;
        } else {
            snprintf(name, sizeof name, "%s", t->name);
        }
        s = lk__sd_add(L, part, name, t, ndim, shape, 0);
    }
    L->st = NULL;
    lk_safetensors_close(st);
    if (s != LK_OK && !strstr(lk_last_error(), file)) lk_fail_prefix(s, "%s: ", file);
    return s;
}

/* Files of a sharded checkpoint (*.safetensors.index.json "weight_map"), in first-seen order. */
static lk_status load_sharded(lk__sd_load *L, int part, const char *dir, const char *index,
                              char **first_file) {
    char *text = NULL;
    lk_status s = read_text(index, &text);
    if (s != LK_OK) return s;
    cJSON *j = cJSON_Parse(text);
    free(text);
    const cJSON *map = j ? cJSON_GetObjectItemCaseSensitive(j, "weight_map") : NULL;
    if (!cJSON_IsObject(map)) {
        cJSON_Delete(j);
        return lk_fail(LK_ERR_FORMAT, "%s: not a safetensors index (no \"weight_map\" object)", index);
    }
    const cJSON *e;
    int k = 0;
    cJSON_ArrayForEach(e, map) {
        if (!cJSON_IsString(e) || strchr(e->valuestring, '/')) {
            s = lk_fail(LK_ERR_FORMAT, "%s: weight_map entry '%s' is not a file name", index,
                        e->string ? e->string : "");
            break;
        }
        bool seen = false;
        const cJSON *e2;
        int k2 = 0;
        cJSON_ArrayForEach(e2, map) {
            if (k2++ >= k) break;
            if (!strcmp(e2->valuestring, e->valuestring)) seen = true;
        }
        k++;
        if (seen) continue;
        char *file = path_join(dir, e->valuestring);
        if (!file) {
            s = LK_ERR_NOMEM;
            break;
        }
        s = load_component_file(L, part, file);
        if (s == LK_OK && !*first_file) *first_file = file;
        else free(file);
        if (s != LK_OK) break;
    }
    cJSON_Delete(j);
    return s;
}

/* Load part from folder/sub: base[.fp16].safetensors or a sharded index; refuse pickles. */
static lk_status load_component(lk__sd_load *L, const char *folder, int part, const char *sub,
                                const char *base) {
    lk_sd_part *P = &L->m->part[part];
    char *dir = path_join(folder, sub);
    if (!dir) return LK_ERR_NOMEM;
    if (!is_dir(dir)) {
        lk_status s = lk_fail(LK_ERR_IO, "%s: missing the %s/ folder of a diffusers model", folder, sub);
        free(dir);
        return s;
    }
    static const char *const variants[] = {".safetensors", ".fp16.safetensors",
                                           ".safetensors.index.json",
                                           ".fp16.safetensors.index.json"};
    char path[4096];
    lk_status s = LK_ERR_IO;
    bool found = false;
    for (size_t v = 0; v < sizeof variants / sizeof variants[0] && !found; v++) {
        snprintf(path, sizeof path, "%s/%s%s", dir, base, variants[v]);
        if (!is_file(path)) continue;
        found = true;
        if (v < 2) {
            s = load_component_file(L, part, path);
            if (s == LK_OK) P->file = lk__sd_strdup(path);
        } else {
            s = load_sharded(L, part, dir, path, &P->file);
        }
        if (s == LK_OK && !P->file) s = lk_fail(LK_ERR_FORMAT, "%s: lists no weight files", path);
    }
    if (!found) {
        static const char *const pickles[] = {"diffusion_pytorch_model.bin",
                                              "diffusion_pytorch_model.fp16.bin",
                                              "pytorch_model.bin", "pytorch_model.fp16.bin",
                                              "model.ckpt", "model.pt"};
        s = lk_fail(LK_ERR_IO, "%s: no %s.safetensors (or .fp16.safetensors) weights", dir, base);
        for (size_t i = 0; i < sizeof pickles / sizeof pickles[0]; i++) {
            snprintf(path, sizeof path, "%s/%s", dir, pickles[i]);
            if (is_file(path)) {
                s = lk_fail(LK_ERR_UNSUPPORTED,
                            "%s is a pickle file; likeness never unpickles (arbitrary code "
                            "execution): convert it to .safetensors",
                            path);
                break;
            }
        }
    }
    if (s == LK_OK) {
        snprintf(path, sizeof path, "%s/config.json", dir);
        if (is_file(path)) s = read_text(path, &P->config_json);
    }
    free(dir);
    return s;
}

/* pad_token of a tokenizer folder: "!" -> zero padding, "<|endoftext|>" -> EOS. Returns false
 * when the folder does not say. */
static bool folder_pad_mode(const char *tokdir, lk_pad_mode *pad) {
    static const char *const files[] = {"special_tokens_map.json", "tokenizer_config.json"};
    for (size_t i = 0; i < 2; i++) {
        char *path = path_join(tokdir, files[i]), *text = NULL;
        if (!path) return false;
        bool ok = is_file(path) && read_text(path, &text) == LK_OK;
        free(path);
        if (!ok) continue;
        cJSON *j = cJSON_Parse(text);
        free(text);
        const cJSON *p = j ? cJSON_GetObjectItemCaseSensitive(j, "pad_token") : NULL;
        if (cJSON_IsObject(p)) p = cJSON_GetObjectItemCaseSensitive(p, "content");
        bool got = false;
        if (cJSON_IsString(p)) {
            if (!strcmp(p->valuestring, "!")) *pad = LK_PAD_ZERO, got = true;
            else if (!strcmp(p->valuestring, "<|endoftext|>")) *pad = LK_PAD_EOS, got = true;
        }
        cJSON_Delete(j);
        if (got) return true;
    }
    return false;
}

static lk_status load_folder(lk__sd_load *L, const char *folder, const lk_sd_load_opts *o) {
    lk_sd_model *m = L->m;
    char *mi = NULL, *path = path_join(folder, "model_index.json");
    if (!path) return LK_ERR_NOMEM;
    lk_status s = is_file(path) ? read_text(path, &mi) : LK_OK;
    free(path);
    /* look at the configs before reading gigabytes of weights */
    char *ucfg = NULL, *tcfg = NULL;
    if (s == LK_OK && (path = path_join(folder, "unet/config.json"))) {
        if (is_file(path)) s = read_text(path, &ucfg);
        free(path);
    }
    if (s == LK_OK && (path = path_join(folder, "text_encoder/config.json"))) {
        if (is_file(path)) s = read_text(path, &tcfg);
        free(path);
    }
    if (s == LK_OK) s = lk__sd_detect_folder(mi, ucfg, tcfg, folder, &m->arch);
    free(mi);
    free(ucfg);
    free(tcfg);
    if (s == LK_OK) s = load_component(L, folder, LK_SD_UNET, "unet", "diffusion_pytorch_model");
    if (s == LK_OK) s = load_component(L, folder, LK_SD_VAE, "vae", "diffusion_pytorch_model");
    if (s == LK_OK) s = load_component(L, folder, LK_SD_TEXT_ENCODER, "text_encoder", "model");
    if (s != LK_OK) return s;
    m->hash_file = lk__sd_strdup(m->part[LK_SD_UNET].file);
    if (!m->hash_file) return LK_ERR_NOMEM;

    /* configs missing from the folder: from the shapes */
    bool missing = false;
    for (int i = 0; i < LK_SD_NPARTS; i++) missing |= !m->part[i].config_json;
    if (missing) {
        char *keep[LK_SD_NPARTS];
        for (int i = 0; i < LK_SD_NPARTS; i++) keep[i] = m->part[i].config_json;
        s = lk_sd_synth_configs(m, o->text_encoder_heads);
        for (int i = 0; i < LK_SD_NPARTS; i++) {
            if (keep[i]) {
                free(m->part[i].config_json);
                m->part[i].config_json = keep[i];
                m->part[i].config_synthesized = false;
            }
        }
        if (s != LK_OK) return s;
    }

    /* scheduler */
    path = path_join(folder, "scheduler/scheduler_config.json");
    if (!path) return LK_ERR_NOMEM;
    if (is_file(path)) s = read_text(path, &m->scheduler_json);
    free(path);
    if (s != LK_OK) return s;
    lk_schedule_config sc;
    m->prediction = LK_PREDICT_EPSILON;
    m->prediction_guessed = true;
    if (m->scheduler_json) {
        s = lk_schedule_config_parse(&sc, m->scheduler_json, strlen(m->scheduler_json),
                                     "scheduler/scheduler_config.json");
        if (s != LK_OK) return lk_fail_prefix(s, "%s: ", folder);
        m->prediction = sc.prediction_type;
        m->prediction_guessed = false;
    }
    m->pad = m->arch == LK_SD_ARCH_SD2 ? LK_PAD_ZERO : LK_PAD_EOS;
    char *tokdir = path_join(folder, "tokenizer");
    if (!tokdir) return LK_ERR_NOMEM;
    folder_pad_mode(tokdir, &m->pad);
    free(tokdir);
    return LK_OK;
}

/* Replace the scheduler text's prediction_type with the override (keeps everything else). */
static lk_status set_scheduler_prediction(lk_sd_model *m, lk_prediction_type p) {
    cJSON *j = cJSON_Parse(m->scheduler_json);
    if (!j) return lk_fail(LK_ERR_FORMAT, "scheduler config is not valid JSON");
    cJSON_DeleteItemFromObjectCaseSensitive(j, "prediction_type");
    cJSON_AddStringToObject(j, "prediction_type", p == LK_PREDICT_V ? "v_prediction" : "epsilon");
    char *text = cJSON_Print(j);
    cJSON_Delete(j);
    if (!text) return lk_fail(LK_ERR_NOMEM, "out of memory");
    free(m->scheduler_json);
    m->scheduler_json = lk__sd_strdup(text);
    cJSON_free(text);
    return m->scheduler_json ? LK_OK : LK_ERR_NOMEM;
}

static bool has_suffix(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    if (a < b) return false;
    for (size_t i = 0; i < b; i++)
        if ((s[a - b + i] | 0x20) != (suf[i] | 0x20)) return false;
    return true;
}

static lk_status load_single(lk__sd_load *L, const char *path) {
    lk_sd_model *m = L->m;
    static const char *const pickles[] = {".ckpt", ".pt", ".pth", ".bin", ".pkl"};
    for (size_t i = 0; i < sizeof pickles / sizeof pickles[0]; i++)
        if (has_suffix(path, pickles[i]))
            return lk_fail(LK_ERR_UNSUPPORTED,
                           "%s is a pickle checkpoint; likeness never unpickles (arbitrary code "
                           "execution): use a .safetensors file",
                           path);
    lk_safetensors *st = NULL;
    lk_status s = lk_safetensors_open(&st, path);
    if (s != LK_OK) return s;
    s = lk__sd_detect_single(st, path, &m->arch);
    L->st = st;
    if (s == LK_OK) s = lk__sd_convert_single(L, st, path, m->arch);
    L->st = NULL;
    lk_prediction_type p = LK_PREDICT_EPSILON;
    m->prediction_guessed = !lk__sd_single_prediction(st, path, &p);
    m->prediction = p;
    lk_safetensors_close(st);
    if (s != LK_OK) return s;
    for (int i = 0; i < LK_SD_NPARTS; i++) {
        m->part[i].file = lk__sd_strdup(path);
        if (!m->part[i].file) return LK_ERR_NOMEM;
    }
    m->hash_file = lk__sd_strdup(path);
    if (!m->hash_file) return LK_ERR_NOMEM;
    m->pad = m->arch == LK_SD_ARCH_SD2 ? LK_PAD_ZERO : LK_PAD_EOS;
    return LK_OK;
}

static lk_status load_tokenizer(lk_sd_model *m, const lk_sd_load_opts *o) {
    char *own = NULL;
    const char *dir = o->tokenizer_dir;
    if (!dir && !m->single_file) {
        own = path_join(m->path, "tokenizer");
        if (!own) return LK_ERR_NOMEM;
        if (is_dir(own)) dir = own;
    }
    if (!dir) {
        const char *env = getenv("LK_TOKENIZER");
        if (env && *env) dir = env;
    }
    lk_status s;
    if (!dir)
        s = lk_fail(LK_ERR_INVALID,
                    "%s: %s: pass --tokenizer DIR (a CLIP tokenizer folder with vocab.json and "
                    "merges.txt) or set LK_TOKENIZER",
                    m->path,
                    m->single_file ? "single-file checkpoints carry no tokenizer"
                                   : "the folder has no tokenizer/");
    else
        s = lk_tokenizer_load(&m->tokenizer, dir);
    free(own);
    return s;
}

lk_status lk_sd_model_load(lk_sd_model **out, const char *path, const lk_sd_load_opts *opts) {
    if (!out) return lk_fail(LK_ERR_INVALID, "sd_model_load: out is NULL");
    *out = NULL;
    if (!path) return lk_fail(LK_ERR_INVALID, "sd_model_load: path is NULL");
    lk_sd_load_opts o;
    if (opts) o = *opts;
    else lk_sd_load_opts_default(&o);
    if (o.store != LK_F32 && o.store != LK_F16 && o.store != LK_BF16)
        return lk_fail(LK_ERR_INVALID, "sd_model_load: storage dtype must be F32, F16 or BF16");
    if (o.prediction < -1 || o.prediction > LK_PREDICT_V)
        return lk_fail(LK_ERR_INVALID, "sd_model_load: prediction must be -1, epsilon or v");
    if (o.text_encoder_heads < 0)
        return lk_fail(LK_ERR_INVALID, "sd_model_load: text_encoder_heads must be >= 0");
    struct stat sb;
    if (stat(path, &sb) != 0) return lk_fail(LK_ERR_IO, "%s: %s", path, strerror(errno));

    lk_sd_model *m = calloc(1, sizeof *m);
    if (!m) return lk_fail(LK_ERR_NOMEM, "out of memory");
    lk__sd_load L = {.m = m, .store = o.store, .shapes_only = o.shapes_only};
    m->shapes_only = o.shapes_only;
    m->single_file = !S_ISDIR(sb.st_mode);
    lk_status s = (m->path = lk__sd_strdup(path)) ? LK_OK : LK_ERR_NOMEM;
    for (int i = 0; i < LK_SD_NPARTS && s == LK_OK; i++)
        if (!(m->part[i].weights = lk_weights_new())) s = LK_ERR_NOMEM;
    if (s == LK_OK) s = m->single_file ? load_single(&L, path) : load_folder(&L, path, &o);
    free(L.tmp);
    if (s == LK_OK && o.prediction >= 0) {
        m->prediction = (lk_prediction_type)o.prediction;
        m->prediction_guessed = false;
    }
    if (s == LK_OK && m->single_file) s = lk_sd_synth_configs(m, o.text_encoder_heads);
    if (s == LK_OK && !m->scheduler_json) {
        m->scheduler_json = lk__sd_default_scheduler_json(m->prediction, 1000);
        if (!m->scheduler_json) s = LK_ERR_NOMEM;
    } else if (s == LK_OK && o.prediction >= 0) {
        s = set_scheduler_prediction(m, m->prediction);
    }
    for (int i = 0; i < LK_SD_NPARTS && s == LK_OK; i++) {
        lk_sd_part *P = &m->part[i];
        P->n_params = lk_weights_numel(P->weights);
        int best = 0, kinds = 0;
        for (int k = 0; k < 3; k++) {
            kinds += L.dtype_count[i][k] > 0;
            if (L.dtype_count[i][k] > L.dtype_count[i][best]) best = k;
        }
        P->file_dtype = best == 0 ? LK_F32 : best == 1 ? LK_F16 : LK_BF16;
        P->mixed_dtypes = kinds > 1;
    }
    if (s == LK_OK && o.load_tokenizer) s = load_tokenizer(m, &o);
    if (s != LK_OK) {
        if (!strstr(lk_last_error(), path)) lk_fail_prefix(s, "%s: ", path);
        lk_sd_model_free(m);
        return s;
    }
    *out = m;
    return LK_OK;
}
