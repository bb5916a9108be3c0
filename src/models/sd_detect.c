/* sd_detect.c: which model a checkpoint holds, told from key names and tensor shapes (SD-1.x vs
 * SD-2.x; SDXL, SD3, Flux, inpainting refused), and config.json synthesized from the shapes with
 * the values of diffusers 0.25's UNet2DConditionModel / AutoencoderKL and transformers'
 * CLIPTextConfig for the SD-1.x (CompVis v1-inference.yaml) and SD-2.x (v2-inference.yaml) models. */
#define _POSIX_C_SOURCE 200809L
#include "models/sd_internal.h"

#include <cjson/cJSON.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define UNET_PFX "model.diffusion_model."
#define MAX_BLOCKS 8

static bool starts(const char *s, const char *p) { return !strncmp(s, p, strlen(p)); }

/* ---------------------------------------------------------------------------------------- */
/* single files */

lk_status lk__sd_detect_single(const lk_safetensors *st, const char *path, lk_sd_arch *arch) {
    bool has_unet = false, has_clip = false, has_openclip = false;
    const char *lora = NULL, *emb = NULL, *diffusers = NULL;
    int64_t cross = 0;
    for (int i = 0; i < lk_safetensors_count(st); i++) {
        const lk_st_tensor *t = lk_safetensors_at(st, i);
        const char *k = t->name;
        if (starts(k, "conditioner.embedders."))
            return lk_fail(LK_ERR_UNSUPPORTED, "%s: an SDXL checkpoint (found '%s'); only Stable "
                           "Diffusion 1.x and 2.x are supported", path, k);
        if (starts(k, UNET_PFX "label_emb."))
            return lk_fail(LK_ERR_UNSUPPORTED, "%s: an SDXL or unCLIP checkpoint (found '%s', class "
                           "embedding); only Stable Diffusion 1.x and 2.x are supported", path, k);
        if (strstr(k, "joint_blocks."))
            return lk_fail(LK_ERR_UNSUPPORTED, "%s: a Stable Diffusion 3 (MMDiT) checkpoint (found "
                           "'%s'); only Stable Diffusion 1.x and 2.x are supported", path, k);
        if (strstr(k, "double_blocks.") || strstr(k, "single_transformer_blocks."))
            return lk_fail(LK_ERR_UNSUPPORTED, "%s: a Flux checkpoint (found '%s'); only Stable "
                           "Diffusion 1.x and 2.x are supported", path, k);
        if (starts(k, UNET_PFX)) {
            has_unet = true;
            if (strstr(k, ".transformer_blocks.1."))
                return lk_fail(LK_ERR_UNSUPPORTED, "%s: more than one transformer layer per block "
                               "(found '%s', SDXL-style); not a Stable Diffusion 1.x/2.x UNet", path, k);
            const char *a = strstr(k, "attn2.to_k.weight");
            if (a && !a[strlen("attn2.to_k.weight")] && t->ndim == 2 && !cross) cross = t->shape[1];
        }
        if (starts(k, "cond_stage_model.transformer.")) has_clip = true;
        if (starts(k, "cond_stage_model.model.")) has_openclip = true;
        if (!lora && (starts(k, "lora_unet_") || starts(k, "lora_te"))) lora = k;
        if (!emb && (!strcmp(k, "emb_params") || starts(k, "string_to_param") || !strcmp(k, "clip_l")))
            emb = k;
        if (!diffusers && (starts(k, "down_blocks.") || starts(k, "encoder.down_blocks.") ||
                           starts(k, "text_model.")))
            diffusers = k;
    }
    if (!has_unet) {
        if (lora)
            return lk_fail(LK_ERR_UNSUPPORTED, "%s: a LoRA file (found '%s'), not a checkpoint: "
                           "apply it to a model with --lora", path, lora);
        if (emb)
            return lk_fail(LK_ERR_UNSUPPORTED, "%s: a textual-inversion embedding (found '%s'), "
                           "not a checkpoint", path, emb);
        if (diffusers)
            return lk_fail(LK_ERR_UNSUPPORTED, "%s: holds diffusers-named weights (found '%s'): "
                           "pass the model folder, not one of its files", path, diffusers);
        return lk_fail(LK_ERR_FORMAT, "%s: not a Stable Diffusion checkpoint (no %s* tensors)",
                       path, UNET_PFX);
    }
    const lk_st_tensor *ci = lk_safetensors_find(st, UNET_PFX "input_blocks.0.0.weight");
    if (!ci || ci->ndim != 4)
        return lk_fail(LK_ERR_FORMAT, "%s: no 4-D UNet input convolution '%sinput_blocks.0.0.weight'",
                       path, UNET_PFX);
    if (ci->shape[1] != 4) {
        int64_t c = ci->shape[1];
        const char *what = c == 9   ? " (an inpainting model)"
                           : c == 5 ? " (a depth-to-image model)"
                           : c == 8 ? " (an instruct-pix2pix model)"
                           : c == 7 ? " (an upscaler)"
                                    : "";
        return lk_fail(LK_ERR_UNSUPPORTED, "%s: the UNet takes %lld input channels%s; only "
                       "4-channel text-to-image models are supported", path, (long long)c, what);
    }
    const lk_st_tensor *co = lk_safetensors_find(st, UNET_PFX "out.2.weight");
    if (co && co->ndim == 4 && co->shape[0] != 4)
        return lk_fail(LK_ERR_UNSUPPORTED, "%s: the UNet has %lld output channels; only 4 are supported",
                       path, (long long)co->shape[0]);
    if (cross == 2048 || cross == 1280)
        return lk_fail(LK_ERR_UNSUPPORTED, "%s: %lld-dim cross attention (an SDXL model); only "
                       "Stable Diffusion 1.x and 2.x are supported", path, (long long)cross);
    if (has_clip && has_openclip)
        return lk_fail(LK_ERR_FORMAT, "%s: holds both an OpenAI CLIP and an OpenCLIP text encoder", path);
    if (has_openclip) *arch = LK_SD_ARCH_SD2;
    else if (has_clip) *arch = LK_SD_ARCH_SD1;
    else *arch = cross == 1024 ? LK_SD_ARCH_SD2 : LK_SD_ARCH_SD1;
    return LK_OK;
}

/* ---------------------------------------------------------------------------------------- */
/* folders */

static lk_status parse_json(const char *text, const char *label, const char *file, cJSON **out) {
    *out = NULL;
    if (!text) return LK_OK;
    *out = cJSON_Parse(text);
    if (!*out || !cJSON_IsObject(*out)) {
        cJSON_Delete(*out);
        *out = NULL;
        return lk_fail(LK_ERR_FORMAT, "%s/%s: not a JSON object", label, file);
    }
    return LK_OK;
}

static bool json_nonnull(const cJSON *o, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return v && !cJSON_IsNull(v);
}

static double json_num(const cJSON *o, const char *key, double dflt) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsNumber(v) ? v->valuedouble : dflt;
}

lk_status lk__sd_detect_folder(const char *model_index, const char *unet_cfg, const char *te_cfg,
                               const char *label, lk_sd_arch *arch) {
    cJSON *mi = NULL, *u = NULL, *te = NULL;
    lk_status s = parse_json(model_index, label, "model_index.json", &mi);
    if (s == LK_OK) s = parse_json(unet_cfg, label, "unet/config.json", &u);
    if (s == LK_OK) s = parse_json(te_cfg, label, "text_encoder/config.json", &te);
    const cJSON *cls = mi ? cJSON_GetObjectItemCaseSensitive(mi, "_class_name") : NULL;
    if (s == LK_OK && cJSON_IsString(cls)) {
        const char *c = cls->valuestring;
        if (strstr(c, "XL"))
            s = lk_fail(LK_ERR_UNSUPPORTED, "%s: an SDXL pipeline (%s); only Stable Diffusion 1.x "
                        "and 2.x are supported", label, c);
        else if (strstr(c, "StableDiffusion3") || strstr(c, "Flux") || !starts(c, "StableDiffusion"))
            s = lk_fail(LK_ERR_UNSUPPORTED, "%s: pipeline class %s is not a Stable Diffusion 1.x/2.x "
                        "pipeline", label, c);
    }
    if (s == LK_OK && u) {
        const cJSON *ucls = cJSON_GetObjectItemCaseSensitive(u, "_class_name");
        double in = json_num(u, "in_channels", 4), outc = json_num(u, "out_channels", 4);
        double cross = json_num(u, "cross_attention_dim", 1280);
        const cJSON *tl = cJSON_GetObjectItemCaseSensitive(u, "transformer_layers_per_block");
        if (cJSON_IsString(ucls) && strcmp(ucls->valuestring, "UNet2DConditionModel"))
            s = lk_fail(LK_ERR_UNSUPPORTED, "%s/unet: %s is not a UNet2DConditionModel", label,
                        ucls->valuestring);
        else if (json_nonnull(u, "addition_embed_type"))
            s = lk_fail(LK_ERR_UNSUPPORTED, "%s/unet/config.json: addition_embed_type is set (an "
                        "SDXL UNet); only Stable Diffusion 1.x and 2.x are supported", label);
        else if (json_nonnull(u, "class_embed_type") || json_nonnull(u, "num_class_embeds"))
            s = lk_fail(LK_ERR_UNSUPPORTED, "%s/unet/config.json: a class-conditioned UNet "
                        "(upscaler / unCLIP) is not supported", label);
        else if (in != 4)
            s = lk_fail(LK_ERR_UNSUPPORTED, "%s/unet/config.json: in_channels %g%s; only 4-channel "
                        "text-to-image UNets are supported", label, in,
                        in == 9 ? " (an inpainting model)" : in == 5 ? " (a depth model)" : "");
        else if (outc != 4)
            s = lk_fail(LK_ERR_UNSUPPORTED, "%s/unet/config.json: out_channels %g; only 4 are supported",
                        label, outc);
        else if (cross == 2048 || cross == 1280)
            s = lk_fail(LK_ERR_UNSUPPORTED, "%s/unet/config.json: cross_attention_dim %g (SDXL); only "
                        "Stable Diffusion 1.x and 2.x are supported", label, cross);
        else if (tl && !(cJSON_IsNumber(tl) && tl->valuedouble == 1))
            s = lk_fail(LK_ERR_UNSUPPORTED, "%s/unet/config.json: transformer_layers_per_block is not 1",
                        label);
    }
    if (s == LK_OK) {
        const cJSON *act = te ? cJSON_GetObjectItemCaseSensitive(te, "hidden_act") : NULL;
        double cross = u ? json_num(u, "cross_attention_dim", 0) : 0;
        const cJSON *lin = u ? cJSON_GetObjectItemCaseSensitive(u, "use_linear_projection") : NULL;
        if (cJSON_IsString(act) && !strcmp(act->valuestring, "gelu")) *arch = LK_SD_ARCH_SD2;
        else if (cJSON_IsString(act) && !strcmp(act->valuestring, "quick_gelu")) *arch = LK_SD_ARCH_SD1;
        else if (cross == 1024) *arch = LK_SD_ARCH_SD2;
        else if (cross == 768) *arch = LK_SD_ARCH_SD1;
        else *arch = cJSON_IsTrue(lin) ? LK_SD_ARCH_SD2 : LK_SD_ARCH_SD1;
    }
    cJSON_Delete(mi);
    cJSON_Delete(u);
    cJSON_Delete(te);
    return s;
}

/* ---------------------------------------------------------------------------------------- */
/* config synthesis */

static const lk_tensor *getf(const lk_weights *w, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
static const lk_tensor *getf(const lk_weights *w, const char *fmt, ...) {
    char name[160];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    return lk_weights_get(w, name);
}

static lk_status need(const lk_tensor *t, int ndim, const char *part, const char *name) {
    if (!t) return lk_fail(LK_ERR_FORMAT, "%s: tensor '%s' is missing", part, name);
    if (t->ndim != ndim)
        return lk_fail(LK_ERR_FORMAT, "%s: tensor '%s' is %d-D, expected %d-D", part, name, t->ndim, ndim);
    return LK_OK;
}

static cJSON *str_array(const char *const *v, int n) {
    cJSON *a = cJSON_CreateArray();
    for (int i = 0; a && i < n; i++) cJSON_AddItemToArray(a, cJSON_CreateString(v[i]));
    return a;
}

static cJSON *int_array(const int *v, int n) {
    cJSON *a = cJSON_CreateArray();
    for (int i = 0; a && i < n; i++) cJSON_AddItemToArray(a, cJSON_CreateNumber(v[i]));
    return a;
}

static lk_status finish_json(cJSON *j, char **out) {
    char *text = j ? cJSON_Print(j) : NULL;
    cJSON_Delete(j);
    if (!text) return lk_fail(LK_ERR_NOMEM, "out of memory");
    *out = lk__sd_strdup(text);
    cJSON_free(text);
    return *out ? LK_OK : LK_ERR_NOMEM;
}

/* Count consecutive indices i = 0, 1, ... for which fmt (one %d) names an existing tensor. */
static int count_idx(const lk_weights *w, const char *pre, const char *post) {
    int n = 0;
    while (n < 1000 && getf(w, "%s%d%s", pre, n, post)) n++;
    return n;
}

static lk_status synth_unet(const lk_weights *w, lk_sd_arch arch, lk_prediction_type pred, char **out) {
    const char *P = "unet";
    const lk_tensor *ci = lk_weights_get(w, "conv_in.weight"), *co = lk_weights_get(w, "conv_out.weight");
    lk_status s = need(ci, 4, P, "conv_in.weight");
    if (s == LK_OK) s = need(co, 4, P, "conv_out.weight");
    if (s != LK_OK) return s;
    int nb = count_idx(w, "down_blocks.", ".resnets.0.conv1.weight");
    int lpb = count_idx(w, "down_blocks.0.resnets.", ".conv1.weight");
    if (nb < 1 || nb > MAX_BLOCKS || lpb < 1)
        return lk_fail(LK_ERR_FORMAT, "unet: found %d down blocks with %d resnets; not an SD UNet", nb, lpb);
    int ch[MAX_BLOCKS], heads[MAX_BLOCKS];
    const char *down[MAX_BLOCKS], *up[MAX_BLOCKS];
    for (int b = 0; b < nb; b++) {
        const lk_tensor *c = getf(w, "down_blocks.%d.resnets.0.conv1.weight", b);
        ch[b] = (int)c->shape[0];
        heads[b] = ch[b] / 64 > 0 ? ch[b] / 64 : 1;
        char pre[64];
        snprintf(pre, sizeof pre, "down_blocks.%d.resnets.", b);
        int nr = count_idx(w, pre, ".conv1.weight");
        if (nr != lpb)
            return lk_fail(LK_ERR_FORMAT, "unet: down block %d has %d resnets, block 0 has %d", b, nr, lpb);
        down[b] = getf(w, "down_blocks.%d.attentions.0.proj_in.weight", b) ? "CrossAttnDownBlock2D"
                                                                             : "DownBlock2D";
        snprintf(pre, sizeof pre, "up_blocks.%d.resnets.", b);
        nr = count_idx(w, pre, ".conv1.weight");
        if (nr != lpb + 1)
            return lk_fail(LK_ERR_FORMAT, "unet: up block %d has %d resnets, expected %d", b, nr, lpb + 1);
        up[b] = getf(w, "up_blocks.%d.attentions.0.proj_in.weight", b) ? "CrossAttnUpBlock2D" : "UpBlock2D";
    }
    if (getf(w, "up_blocks.%d.resnets.0.conv1.weight", nb))
        return lk_fail(LK_ERR_FORMAT, "unet: more up blocks than down blocks (%d)", nb);
    const char *mk = "mid_block.attentions.0.transformer_blocks.0.attn2.to_k.weight";
    const lk_tensor *k2 = lk_weights_get(w, mk), *pin = lk_weights_get(w, "mid_block.attentions.0.proj_in.weight");
    s = need(k2, 2, P, mk);
    if (s == LK_OK) s = need(pin, pin && pin->ndim == 2 ? 2 : 4, P, "mid_block.attentions.0.proj_in.weight");
    if (s != LK_OK) return s;
    if (lk_weights_get(w, "mid_block.attentions.0.transformer_blocks.1.attn1.to_q.weight"))
        return lk_fail(LK_ERR_UNSUPPORTED, "unet: more than one transformer layer per block (SDXL-style)");

    cJSON *j = cJSON_CreateObject();
    if (!j) return lk_fail(LK_ERR_NOMEM, "out of memory");
    cJSON_AddStringToObject(j, "_class_name", "UNet2DConditionModel");
    cJSON_AddStringToObject(j, "_diffusers_version", "0.25.0");
    cJSON_AddStringToObject(j, "_likeness_note", "synthesized from tensor shapes");
    cJSON_AddStringToObject(j, "act_fn", "silu");
    cJSON_AddNullToObject(j, "addition_embed_type");
    cJSON_AddNumberToObject(j, "addition_embed_type_num_heads", 64);
    cJSON_AddNullToObject(j, "addition_time_embed_dim");
    if (arch == LK_SD_ARCH_SD2) cJSON_AddItemToObject(j, "attention_head_dim", int_array(heads, nb));
    else cJSON_AddNumberToObject(j, "attention_head_dim", 8);
    cJSON_AddStringToObject(j, "attention_type", "default");
    cJSON_AddItemToObject(j, "block_out_channels", int_array(ch, nb));
    cJSON_AddFalseToObject(j, "center_input_sample");
    cJSON_AddNullToObject(j, "class_embed_type");
    cJSON_AddFalseToObject(j, "class_embeddings_concat");
    cJSON_AddNumberToObject(j, "conv_in_kernel", (double)ci->shape[2]);
    cJSON_AddNumberToObject(j, "conv_out_kernel", (double)co->shape[2]);
    cJSON_AddNumberToObject(j, "cross_attention_dim", (double)k2->shape[1]);
    cJSON_AddNullToObject(j, "cross_attention_norm");
    cJSON_AddItemToObject(j, "down_block_types", str_array(down, nb));
    cJSON_AddNumberToObject(j, "downsample_padding", 1);
    cJSON_AddNumberToObject(j, "dropout", 0.0);
    cJSON_AddFalseToObject(j, "dual_cross_attention");
    cJSON_AddNullToObject(j, "encoder_hid_dim");
    cJSON_AddNullToObject(j, "encoder_hid_dim_type");
    cJSON_AddTrueToObject(j, "flip_sin_to_cos");
    cJSON_AddNumberToObject(j, "freq_shift", 0);
    cJSON_AddNumberToObject(j, "in_channels", (double)ci->shape[1]);
    cJSON_AddNumberToObject(j, "layers_per_block", lpb);
    cJSON_AddNullToObject(j, "mid_block_only_cross_attention");
    cJSON_AddNumberToObject(j, "mid_block_scale_factor", 1);
    cJSON_AddStringToObject(j, "mid_block_type", "UNetMidBlock2DCrossAttn");
    cJSON_AddNumberToObject(j, "norm_eps", 1e-05);
    cJSON_AddNumberToObject(j, "norm_num_groups", 32);
    cJSON_AddNullToObject(j, "num_attention_heads");
    cJSON_AddNullToObject(j, "num_class_embeds");
    cJSON_AddFalseToObject(j, "only_cross_attention");
    cJSON_AddNumberToObject(j, "out_channels", (double)co->shape[0]);
    cJSON_AddNullToObject(j, "projection_class_embeddings_input_dim");
    cJSON_AddNumberToObject(j, "resnet_out_scale_factor", 1.0);
    cJSON_AddFalseToObject(j, "resnet_skip_time_act");
    cJSON_AddStringToObject(j, "resnet_time_scale_shift", "default");
    cJSON_AddNullToObject(j, "reverse_transformer_layers_per_block");
    cJSON_AddNumberToObject(j, "sample_size", arch == LK_SD_ARCH_SD2 && pred == LK_PREDICT_V ? 96 : 64);
    cJSON_AddNullToObject(j, "time_cond_proj_dim");
    cJSON_AddNullToObject(j, "time_embedding_act_fn");
    cJSON_AddNullToObject(j, "time_embedding_dim");
    cJSON_AddStringToObject(j, "time_embedding_type", "positional");
    cJSON_AddNullToObject(j, "timestep_post_act");
    cJSON_AddNumberToObject(j, "transformer_layers_per_block", 1);
    /* up_block_types are listed top (deepest) first */
    cJSON_AddItemToObject(j, "up_block_types", str_array(up, nb));
    cJSON_AddFalseToObject(j, "upcast_attention");
    cJSON_AddBoolToObject(j, "use_linear_projection", pin->ndim == 2);
    return finish_json(j, out);
}

static lk_status synth_vae(const lk_weights *w, lk_sd_arch arch, char **out) {
    const char *P = "vae";
    const lk_tensor *ci = lk_weights_get(w, "encoder.conv_in.weight");
    const lk_tensor *co = lk_weights_get(w, "decoder.conv_out.weight");
    const lk_tensor *pq = lk_weights_get(w, "post_quant_conv.weight");
    lk_status s = need(ci, 4, P, "encoder.conv_in.weight");
    if (s == LK_OK) s = need(co, 4, P, "decoder.conv_out.weight");
    if (s == LK_OK) s = need(pq, 4, P, "post_quant_conv.weight");
    if (s != LK_OK) return s;
    int nb = count_idx(w, "encoder.down_blocks.", ".resnets.0.conv1.weight");
    int lpb = count_idx(w, "encoder.down_blocks.0.resnets.", ".conv1.weight");
    int nbu = count_idx(w, "decoder.up_blocks.", ".resnets.0.conv1.weight");
    if (nb < 1 || nb > MAX_BLOCKS || lpb < 1 || nbu != nb)
        return lk_fail(LK_ERR_FORMAT, "vae: found %d encoder / %d decoder blocks with %d resnets; "
                       "not an SD VAE", nb, nbu, lpb);
    int ch[MAX_BLOCKS];
    const char *down[MAX_BLOCKS], *up[MAX_BLOCKS];
    for (int b = 0; b < nb; b++) {
        ch[b] = (int)getf(w, "encoder.down_blocks.%d.resnets.0.conv1.weight", b)->shape[0];
        down[b] = "DownEncoderBlock2D";
        up[b] = "UpDecoderBlock2D";
    }
    cJSON *j = cJSON_CreateObject();
    if (!j) return lk_fail(LK_ERR_NOMEM, "out of memory");
    cJSON_AddStringToObject(j, "_class_name", "AutoencoderKL");
    cJSON_AddStringToObject(j, "_diffusers_version", "0.25.0");
    cJSON_AddStringToObject(j, "_likeness_note", "synthesized from tensor shapes");
    cJSON_AddStringToObject(j, "act_fn", "silu");
    cJSON_AddItemToObject(j, "block_out_channels", int_array(ch, nb));
    cJSON_AddItemToObject(j, "down_block_types", str_array(down, nb));
    cJSON_AddTrueToObject(j, "force_upcast");
    cJSON_AddNumberToObject(j, "in_channels", (double)ci->shape[1]);
    cJSON_AddNumberToObject(j, "latent_channels", (double)pq->shape[0]);
    cJSON_AddNumberToObject(j, "layers_per_block", lpb);
    cJSON_AddNumberToObject(j, "norm_num_groups", 32);
    cJSON_AddNumberToObject(j, "out_channels", (double)co->shape[0]);
    cJSON_AddNumberToObject(j, "sample_size", arch == LK_SD_ARCH_SD2 ? 768 : 512);
    cJSON_AddNumberToObject(j, "scaling_factor", 0.18215);
    cJSON_AddItemToObject(j, "up_block_types", str_array(up, nb));
    return finish_json(j, out);
}

static lk_status synth_text(const lk_weights *w, lk_sd_arch arch, int heads_opt, char **out) {
    const char *P = "text_encoder";
    const char *tn = "text_model.embeddings.token_embedding.weight";
    const char *pn = "text_model.embeddings.position_embedding.weight";
    const char *fn = "text_model.encoder.layers.0.mlp.fc1.weight";
    const lk_tensor *tok = lk_weights_get(w, tn), *pos = lk_weights_get(w, pn), *fc1 = lk_weights_get(w, fn);
    lk_status s = need(tok, 2, P, tn);
    if (s == LK_OK) s = need(pos, 2, P, pn);
    if (s == LK_OK) s = need(fc1, 2, P, fn);
    if (s != LK_OK) return s;
    int64_t width = tok->shape[1];
    int layers = count_idx(w, "text_model.encoder.layers.", ".self_attn.q_proj.weight");
    int64_t heads = heads_opt > 0 ? heads_opt : width % 64 == 0 ? width / 64 : width / 8;
    if (heads < 1 || width % heads)
        return lk_fail(LK_ERR_INVALID, "text_encoder: width %lld is not divisible into %lld heads",
                       (long long)width, (long long)heads);
    cJSON *j = cJSON_CreateObject();
    if (!j) return lk_fail(LK_ERR_NOMEM, "out of memory");
    const char *arches[1] = {"CLIPTextModel"};
    cJSON_AddItemToObject(j, "architectures", str_array(arches, 1));
    cJSON_AddStringToObject(j, "_likeness_note", "synthesized from tensor shapes");
    cJSON_AddStringToObject(j, "model_type", "clip_text_model");
    cJSON_AddNumberToObject(j, "hidden_size", (double)width);
    cJSON_AddNumberToObject(j, "intermediate_size", (double)fc1->shape[0]);
    cJSON_AddNumberToObject(j, "num_attention_heads", (double)heads);
    cJSON_AddNumberToObject(j, "num_hidden_layers", layers);
    cJSON_AddNumberToObject(j, "max_position_embeddings", (double)pos->shape[0]);
    cJSON_AddNumberToObject(j, "vocab_size", (double)tok->shape[0]);
    cJSON_AddStringToObject(j, "hidden_act", arch == LK_SD_ARCH_SD2 ? "gelu" : "quick_gelu");
    cJSON_AddNumberToObject(j, "layer_norm_eps", 1e-05);
    cJSON_AddNumberToObject(j, "bos_token_id", 49406);
    cJSON_AddNumberToObject(j, "eos_token_id", 49407);
    cJSON_AddNumberToObject(j, "pad_token_id", 1);
    cJSON_AddNumberToObject(j, "projection_dim", arch == LK_SD_ARCH_SD2 && width == 1024 ? 512 : (double)width);
    return finish_json(j, out);
}

lk_status lk_sd_synth_configs(lk_sd_model *m, int text_encoder_heads) {
    if (!m) return lk_fail(LK_ERR_INVALID, "sd_synth_configs: NULL model");
    for (int i = 0; i < LK_SD_NPARTS; i++) {
        lk_sd_part *p = &m->part[i];
        if (!lk_weights_count(p->weights)) continue;
        char *text = NULL;
        lk_status s = i == LK_SD_UNET ? synth_unet(p->weights, m->arch, m->prediction, &text)
                      : i == LK_SD_VAE ? synth_vae(p->weights, m->arch, &text)
                                       : synth_text(p->weights, m->arch, text_encoder_heads, &text);
        if (s != LK_OK) return s;
        free(p->config_json);
        p->config_json = text;
        p->config_synthesized = true;
    }
    return LK_OK;
}

char *lk__sd_default_scheduler_json(lk_prediction_type p, int num_train_timesteps) {
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "_class_name", "DDIMScheduler");
    cJSON_AddStringToObject(j, "_likeness_note", "Stable Diffusion default schedule");
    cJSON_AddNumberToObject(j, "beta_end", 0.012);
    cJSON_AddStringToObject(j, "beta_schedule", "scaled_linear");
    cJSON_AddNumberToObject(j, "beta_start", 0.00085);
    cJSON_AddFalseToObject(j, "clip_sample");
    cJSON_AddNumberToObject(j, "num_train_timesteps", num_train_timesteps);
    cJSON_AddStringToObject(j, "prediction_type", p == LK_PREDICT_V ? "v_prediction" : "epsilon");
    cJSON_AddFalseToObject(j, "set_alpha_to_one");
    cJSON_AddNumberToObject(j, "steps_offset", 1);
    char *out = NULL;
    if (finish_json(j, &out) != LK_OK) return NULL;
    return out;
}
