/* sd_single_file.c: CompVis / A1111 single-file Stable Diffusion checkpoints (the LDM layout of
 * Rombach et al. 2022's ldm code: model.diffusion_model, first_stage_model, cond_stage_model)
 * renamed to diffusers / transformers key names: the inverse of the layout mapping in diffusers'
 * convert_original_stable_diffusion_to_diffusers, derived from both module trees. */
#define _POSIX_C_SOURCE 200809L
#include "models/sd_internal.h"
#include "models/sd_keys.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NAME_CAP sizeof(((lk_tensor *)0)->name)

static lk_status unknown_key(const char *path, const char *key, const char *what) {
    return lk_fail(LK_ERR_FORMAT, "%s: unexpected %s tensor '%s' (not a Stable Diffusion 1.x/2.x layout)",
                   path, what, key);
}

/* ---- UNet ---- */

/* ldm ResBlock -> diffusers ResnetBlock2D parameter names */
static bool unet_resnet(const char *rest, char *out, size_t cap, const char *prefix) {
    static const char *const map[][2] = {{"in_layers.0.", "norm1."},   {"in_layers.2.", "conv1."},
                                         {"emb_layers.1.", "time_emb_proj."},
                                         {"out_layers.0.", "norm2."},  {"out_layers.3.", "conv2."},
                                         {"skip_connection.", "conv_shortcut."}};
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++) {
        const char *r = rest;
        if (eat(&r, map[i][0]) && is_param(r)) {
            snprintf(out, cap, "%s%s%s", prefix, map[i][1], r);
            return true;
        }
    }
    return false;
}

/* SpatialTransformer parameters keep their names (norm, proj_in, transformer_blocks.*, proj_out) */
static bool unet_attention(const char *rest, char *out, size_t cap, const char *prefix) {
    static const char *const ok[] = {"norm.", "proj_in.", "proj_out.", "transformer_blocks."};
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        if (!strncmp(rest, ok[i], strlen(ok[i]))) {
            snprintf(out, cap, "%s%s", prefix, rest);
            return true;
        }
    }
    return false;
}

/* Layers per block: input_blocks.(lpb+1).0.op is the first downsampler. */
static int unet_layers_per_block(const lk_safetensors *st) {
    int first_op = -1, max_in = 0;
    for (int i = 0; i < lk_safetensors_count(st); i++) {
        const char *k = lk_safetensors_at(st, i)->name;
        int b, j;
        if (!eat(&k, UNET_PFX "input_blocks.") || !eat_index(&k, &b)) continue;
        if (b > max_in) max_in = b;
        if (eat_index(&k, &j) && j == 0 && eat(&k, "op.") && (first_op < 0 || b < first_op)) first_op = b;
    }
    return first_op > 0 ? first_op - 1 : max_in;
}

static lk_status unet_key(const char *key, int lpb, char *out, size_t cap, const char *path) {
    const char *k = key + strlen(UNET_PFX), *r = k;
    int I, J;
    char pre[64];
    if (eat(&r, "time_embed.0.") && is_param(r)) return snprintf(out, cap, "time_embedding.linear_1.%s", r), LK_OK;
    r = k;
    if (eat(&r, "time_embed.2.") && is_param(r)) return snprintf(out, cap, "time_embedding.linear_2.%s", r), LK_OK;
    r = k;
    if (eat(&r, "out.0.") && is_param(r)) return snprintf(out, cap, "conv_norm_out.%s", r), LK_OK;
    r = k;
    if (eat(&r, "out.2.") && is_param(r)) return snprintf(out, cap, "conv_out.%s", r), LK_OK;
    r = k;
    if (eat(&r, "input_blocks.") && eat_index(&r, &I) && eat_index(&r, &J)) {
        if (I == 0 && J == 0 && is_param(r)) return snprintf(out, cap, "conv_in.%s", r), LK_OK;
        if (I >= 1) {
            int b = (I - 1) / (lpb + 1), l = (I - 1) % (lpb + 1);
            if (l == lpb) {
                if (J == 0 && eat(&r, "op.") && is_param(r))
                    return snprintf(out, cap, "down_blocks.%d.downsamplers.0.conv.%s", b, r), LK_OK;
            } else if (J == 0) {
                snprintf(pre, sizeof pre, "down_blocks.%d.resnets.%d.", b, l);
                if (unet_resnet(r, out, cap, pre)) return LK_OK;
            } else if (J == 1) {
                snprintf(pre, sizeof pre, "down_blocks.%d.attentions.%d.", b, l);
                if (unet_attention(r, out, cap, pre)) return LK_OK;
            }
        }
        return unknown_key(path, key, "UNet");
    }
    r = k;
    if (eat(&r, "middle_block.") && eat_index(&r, &J)) {
        if ((J == 0 || J == 2) && unet_resnet(r, out, cap, J == 0 ? "mid_block.resnets.0." : "mid_block.resnets.1."))
            return LK_OK;
        if (J == 1 && unet_attention(r, out, cap, "mid_block.attentions.0.")) return LK_OK;
        return unknown_key(path, key, "UNet");
    }
    r = k;
    if (eat(&r, "output_blocks.") && eat_index(&r, &I) && eat_index(&r, &J)) {
        int u = I / (lpb + 1), l = I % (lpb + 1);
        if (J == 0) {
            snprintf(pre, sizeof pre, "up_blocks.%d.resnets.%d.", u, l);
            if (unet_resnet(r, out, cap, pre)) return LK_OK;
        } else if ((J == 1 || J == 2) && !strncmp(r, "conv.", 5)) {
            r += 5;
            if (l == lpb && is_param(r))
                return snprintf(out, cap, "up_blocks.%d.upsamplers.0.conv.%s", u, r), LK_OK;
        } else if (J == 1) {
            snprintf(pre, sizeof pre, "up_blocks.%d.attentions.%d.", u, l);
            if (unet_attention(r, out, cap, pre)) return LK_OK;
        }
        return unknown_key(path, key, "UNet");
    }
    return unknown_key(path, key, "UNet");
}

/* ---- VAE ---- */

static bool vae_resnet(const char *rest, char *out, size_t cap, const char *prefix) {
    static const char *const map[][2] = {{"norm1.", "norm1."}, {"conv1.", "conv1."},
                                         {"norm2.", "norm2."}, {"conv2.", "conv2."},
                                         {"nin_shortcut.", "conv_shortcut."}};
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++) {
        const char *r = rest;
        if (eat(&r, map[i][0]) && is_param(r)) {
            snprintf(out, cap, "%s%s%s", prefix, map[i][1], r);
            return true;
        }
    }
    return false;
}

/* mid block of encoder/decoder ("encoder." / "decoder." in side). *to_linear set for the attention
 * projections stored as 1x1 convolutions. */
static bool vae_mid(const char *r, const char *side, char *out, size_t cap, bool *to_linear) {
    char pre[64];
    if (eat(&r, "block_1.")) {
        snprintf(pre, sizeof pre, "%smid_block.resnets.0.", side);
        return vae_resnet(r, out, cap, pre);
    }
    if (eat(&r, "block_2.")) {
        snprintf(pre, sizeof pre, "%smid_block.resnets.1.", side);
        return vae_resnet(r, out, cap, pre);
    }
    if (!eat(&r, "attn_1.")) return false;
    static const char *const map[][2] = {{"norm.", "group_norm."}, {"q.", "to_q."}, {"k.", "to_k."},
                                         {"v.", "to_v."}, {"proj_out.", "to_out.0."}};
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++) {
        const char *q = r;
        if (eat(&q, map[i][0]) && is_param(q)) {
            snprintf(out, cap, "%smid_block.attentions.0.%s%s", side, map[i][1], q);
            *to_linear = i > 0 && !strcmp(q, "weight");
            return true;
        }
    }
    return false;
}

static int vae_decoder_blocks(const lk_safetensors *st) {
    int nb = 0;
    for (int i = 0; i < lk_safetensors_count(st); i++) {
        const char *k = lk_safetensors_at(st, i)->name;
        int b;
        if (eat(&k, VAE_PFX "decoder.up.") && eat_index(&k, &b) && b + 1 > nb) nb = b + 1;
    }
    return nb;
}

static lk_status vae_key(const char *key, int nb_dec, char *out, size_t cap, bool *to_linear,
                         const char *path) {
    const char *k = key + strlen(VAE_PFX), *r;
    int b, l;
    char pre[64];
    *to_linear = false;
    static const char *const same[] = {"quant_conv.", "post_quant_conv.", "encoder.conv_in.",
                                       "encoder.conv_out.", "decoder.conv_in.", "decoder.conv_out."};
    for (size_t i = 0; i < sizeof same / sizeof same[0]; i++) {
        r = k;
        if (eat(&r, same[i]) && is_param(r)) return snprintf(out, cap, "%s", k), LK_OK;
    }
    for (int side = 0; side < 2; side++) {
        const char *sname = side ? "decoder." : "encoder.";
        r = k;
        if (!eat(&r, sname)) continue;
        const char *q = r;
        if (eat(&q, "norm_out.") && is_param(q))
            return snprintf(out, cap, "%sconv_norm_out.%s", sname, q), LK_OK;
        q = r;
        if (eat(&q, "mid.") && vae_mid(q, sname, out, cap, to_linear)) return LK_OK;
        q = r;
        if (eat(&q, side ? "up." : "down.") && eat_index(&q, &b)) {
            int db = side ? nb_dec - 1 - b : b; /* ldm's decoder.up is numbered from the bottom */
            if (eat(&q, "block.") && eat_index(&q, &l)) {
                snprintf(pre, sizeof pre, "%s%s.%d.resnets.%d.", sname, side ? "up_blocks" : "down_blocks", db, l);
                if (vae_resnet(q, out, cap, pre)) return LK_OK;
            } else if (eat(&q, side ? "upsample.conv." : "downsample.conv.") && is_param(q)) {
                return snprintf(out, cap, "%s%s.%d.%s.0.conv.%s", sname,
                                side ? "up_blocks" : "down_blocks", db,
                                side ? "upsamplers" : "downsamplers", q),
                       LK_OK;
            }
        }
    }
    return unknown_key(path, key, "VAE");
}

/* ---- text encoders ---- */

/* OpenAI CLIP (SD-1): transformers' own names under cond_stage_model.transformer. (older files
 * omit the "text_model." level). */
static void clip_key(const char *key, char *out, size_t cap) {
    const char *k = key + strlen(CLIP_PFX);
    if (!strncmp(k, "text_model.", 11)) snprintf(out, cap, "%s", k);
    else snprintf(out, cap, "text_model.%s", k);
}

static int openclip_layers(const lk_safetensors *st) {
    int n = 0;
    for (int i = 0; i < lk_safetensors_count(st); i++) {
        const char *k = lk_safetensors_at(st, i)->name;
        int b;
        if (eat(&k, OPENCLIP_PFX "transformer.resblocks.") && eat_index(&k, &b) && b + 1 > n) n = b + 1;
    }
    return n;
}

/* OpenCLIP ViT-H text tower (SD-2) -> CLIPTextModel. The last residual block is dropped (SD-2
 * uses the penultimate layer; diffusers' SD-2 text encoder has layers-1 layers). */
static lk_status openclip_add(lk__sd_load *L, const lk_st_tensor *t, int n_layers, const char *path) {
    const char *k = t->name + strlen(OPENCLIP_PFX), *r = k;
    char name[NAME_CAP + 64];
    const int P = LK_SD_TEXT_ENCODER;
    if (!strcmp(k, "text_projection") || !strcmp(k, "logit_scale") || !strcmp(k, "attn_mask"))
        return LK_OK;
    if (!strcmp(k, "positional_embedding"))
        return lk__sd_add(L, P, "text_model.embeddings.position_embedding.weight", t, t->ndim, t->shape, 0);
    if (!strcmp(k, "token_embedding.weight"))
        return lk__sd_add(L, P, "text_model.embeddings.token_embedding.weight", t, t->ndim, t->shape, 0);
    if (eat(&r, "ln_final.") && is_param(r)) {
        snprintf(name, sizeof name, "text_model.final_layer_norm.%s", r);
        return lk__sd_add(L, P, name, t, t->ndim, t->shape, 0);
    }
    r = k;
    int I;
    if (!eat(&r, "transformer.resblocks.") || !eat_index(&r, &I)) return unknown_key(path, t->name, "OpenCLIP");
    if (I == n_layers - 1) return LK_OK;
    char pre[64];
    snprintf(pre, sizeof pre, "text_model.encoder.layers.%d.", I);
    static const char *const map[][2] = {{"ln_1.", "layer_norm1."}, {"ln_2.", "layer_norm2."},
                                         {"attn.out_proj.", "self_attn.out_proj."},
                                         {"mlp.c_fc.", "mlp.fc1."}, {"mlp.c_proj.", "mlp.fc2."}};
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++) {
        const char *q = r;
        if (eat(&q, map[i][0]) && is_param(q)) {
            snprintf(name, sizeof name, "%s%s%s", pre, map[i][1], q);
            return lk__sd_add(L, P, name, t, t->ndim, t->shape, 0);
        }
    }
    bool w = !strcmp(r, "attn.in_proj_weight"), b = !strcmp(r, "attn.in_proj_bias");
    if (!w && !b) return unknown_key(path, t->name, "OpenCLIP");
    /* fused (3D, D) / (3D): rows [0,D) q, [D,2D) k, [2D,3D) v */
    if (t->ndim != (w ? 2 : 1) || t->shape[0] % 3 || (w && t->shape[1] * 3 != t->shape[0]))
        return lk_fail(LK_ERR_FORMAT, "%s: '%s' should be (3*D%s), found %d-D [%lld,...]", path,
                       t->name, w ? ", D" : "", t->ndim, (long long)t->shape[0]);
    int64_t D = t->shape[0] / 3, shape[2] = {D, w ? t->shape[1] : 1};
    static const char *const qkv[3] = {"q_proj", "k_proj", "v_proj"};
    for (int j = 0; j < 3; j++) {
        snprintf(name, sizeof name, "%sself_attn.%s.%s", pre, qkv[j], w ? "weight" : "bias");
        lk_status s = lk__sd_add(L, P, name, t, w ? 2 : 1, shape, (int64_t)j * D * shape[1]);
        if (s != LK_OK) return s;
    }
    return LK_OK;
}

lk_status lk__sd_convert_single(lk__sd_load *L, const lk_safetensors *st, const char *path,
                                lk_sd_arch arch) {
    int lpb = unet_layers_per_block(st);
    int nb_dec = vae_decoder_blocks(st);
    int n_open = openclip_layers(st);
    if (lpb < 1) return lk_fail(LK_ERR_FORMAT, "%s: cannot find the UNet's input blocks", path);
    char name[NAME_CAP + 64];
    lk_status s = LK_OK;
    int n_te = 0;
    for (int i = 0; i < lk_safetensors_count(st) && s == LK_OK; i++) {
        const lk_st_tensor *t = lk_safetensors_at(st, i);
        const char *k = t->name;
        bool is_float = t->dtype == LK_F32 || t->dtype == LK_F16 || t->dtype == LK_BF16;
        if (!strncmp(k, UNET_PFX, strlen(UNET_PFX))) {
            s = unet_key(k, lpb, name, sizeof name, path);
            if (s == LK_OK) s = lk__sd_add(L, LK_SD_UNET, name, t, t->ndim, t->shape, 0);
        } else if (!strncmp(k, VAE_PFX, strlen(VAE_PFX))) {
            if (!strncmp(k, VAE_PFX "loss.", strlen(VAE_PFX "loss."))) continue; /* training-only */
            bool to_linear;
            s = vae_key(k, nb_dec, name, sizeof name, &to_linear, path);
            int nd = t->ndim;
            if (s == LK_OK && to_linear) {
                if (nd == 4 && t->shape[2] == 1 && t->shape[3] == 1) nd = 2;
                else if (nd != 2)
                    s = lk_fail(LK_ERR_FORMAT, "%s: '%s' should be a 1x1 convolution or linear weight",
                                path, k);
            }
            if (s == LK_OK) s = lk__sd_add(L, LK_SD_VAE, name, t, nd, t->shape, 0);
        } else if (arch == LK_SD_ARCH_SD1 && !strncmp(k, CLIP_PFX, strlen(CLIP_PFX))) {
            if (strstr(k, "position_ids") || !is_float) continue;
            clip_key(k, name, sizeof name);
            s = lk__sd_add(L, LK_SD_TEXT_ENCODER, name, t, t->ndim, t->shape, 0);
            n_te++;
        } else if (arch == LK_SD_ARCH_SD2 && !strncmp(k, OPENCLIP_PFX, strlen(OPENCLIP_PFX))) {
            s = openclip_add(L, t, n_open, path);
            n_te++;
        }
        /* everything else: schedule buffers, model_ema.*, ... */
    }
    if (s != LK_OK) {
        if (!strstr(lk_last_error(), path)) lk_fail_prefix(s, "%s: ", path);
        return s;
    }
    if (!lk_weights_count(L->m->part[LK_SD_VAE].weights))
        return lk_fail(LK_ERR_FORMAT, "%s: has no VAE (first_stage_model.*) tensors", path);
    if (!n_te)
        return lk_fail(LK_ERR_FORMAT, "%s: has no text encoder (%s*) tensors", path,
                       arch == LK_SD_ARCH_SD2 ? OPENCLIP_PFX : CLIP_PFX);
    return LK_OK;
}

/* ---- prediction type ---- */

bool lk__sd_single_prediction(const lk_safetensors *st, const char *path, lk_prediction_type *p) {
    const char *v = lk_safetensors_meta(st, "modelspec.prediction_type");
    if (v) {
        if (!strcmp(v, "v") || !strcmp(v, "v_prediction")) return *p = LK_PREDICT_V, true;
        if (!strcmp(v, "epsilon") || !strcmp(v, "eps")) return *p = LK_PREDICT_EPSILON, true;
    }
    /* A1111: <stem>.yaml next to the checkpoint, "parameterization: v" in model.params */
    size_t n = strlen(path);
    const char *dot = strrchr(path, '.'), *slash = strrchr(path, '/');
    if (!dot || (slash && dot < slash)) dot = path + n;
    char *yaml = malloc((size_t)(dot - path) + 6);
    if (!yaml) return false;
    snprintf(yaml, (size_t)(dot - path) + 6, "%.*s.yaml", (int)(dot - path), path);
    FILE *f = fopen(yaml, "r");
    free(yaml);
    if (!f) return false;
    char line[512];
    bool found = false;
    while (!found && fgets(line, sizeof line, f)) {
        char *q = strstr(line, "parameterization:");
        if (!q || (strchr(line, '#') && strchr(line, '#') < q)) continue;
        q += strlen("parameterization:");
        while (*q == ' ' || *q == '\t' || *q == '"' || *q == '\'') q++;
        if (*q == 'v' && (q[1] == '"' || q[1] == '\'' || q[1] <= ' ')) *p = LK_PREDICT_V, found = true;
        else if (!strncmp(q, "eps", 3)) *p = LK_PREDICT_EPSILON, found = true;
    }
    fclose(f);
    return found;
}
