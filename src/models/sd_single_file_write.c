/* sd_single_file_write.c: diffusers / transformers key names -> the CompVis / A1111 single-file
 * layout of Rombach et al. 2022's ldm code (model.diffusion_model, first_stage_model,
 * cond_stage_model.transformer), the exact inverse of the renaming in sd_single_file.c (SD-1.x). */
#define _POSIX_C_SOURCE 200809L
#include "models/sd_single_file_write.h"
#include "models/sd_keys.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static lk_status put(char *out, size_t cap, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
static lk_status put(char *out, size_t cap, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(out, cap, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= cap)
        return lk_fail(LK_ERR_UNSUPPORTED, "single-file key name longer than %zu bytes", cap - 1);
    return LK_OK;
}

static lk_status no_name(lk_sd_part_id part, const char *name) {
    return lk_fail(LK_ERR_FORMAT, "%s: tensor '%s' has no counterpart in the CompVis single-file "
                   "layout (not a Stable Diffusion 1.x weight)", lk_sd_part_name(part), name);
}

static int count_idx(const lk_weights *w, const char *pre, const char *post) {
    char k[160];
    int n = 0;
    for (; n < 1000; n++) {
        snprintf(k, sizeof k, "%s%d%s", pre, n, post);
        if (!lk_weights_get(w, k)) break;
    }
    return n;
}

/* Contract: see sd_single_file_write.h. */
lk_status lk__sd_single_layout_of(const lk_sd_model *m, lk__sd_single_layout *lay) {
    lay->unet_layers_per_block = count_idx(m->part[LK_SD_UNET].weights, "down_blocks.0.resnets.", ".conv1.weight");
    lay->vae_up_blocks = count_idx(m->part[LK_SD_VAE].weights, "decoder.up_blocks.", ".resnets.0.conv1.weight");
    if (lay->unet_layers_per_block < 1)
        return lk_fail(LK_ERR_FORMAT, "unet: no 'down_blocks.0.resnets.0.conv1.weight'; not an SD UNet");
    if (lay->vae_up_blocks < 1)
        return lk_fail(LK_ERR_FORMAT, "vae: no 'decoder.up_blocks.0.resnets.0.conv1.weight'; not an SD VAE");
    return LK_OK;
}

/* ---- UNet ---- */

/* diffusers ResnetBlock2D parameter (r: after "resnets.N.") -> ldm ResBlock, under prefix pre */
static bool unet_resnet(const char *r, char *out, size_t cap, const char *pre, lk_status *s) {
    static const char *const map[][2] = {{"norm1.", "in_layers.0."},   {"conv1.", "in_layers.2."},
                                         {"time_emb_proj.", "emb_layers.1."},
                                         {"norm2.", "out_layers.0."},  {"conv2.", "out_layers.3."},
                                         {"conv_shortcut.", "skip_connection."}};
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++) {
        const char *q = r;
        if (eat(&q, map[i][0]) && is_param(q)) {
            *s = put(out, cap, "%s%s%s%s", UNET_PFX, pre, map[i][1], q);
            return true;
        }
    }
    return false;
}

/* Transformer2DModel parameters keep their names in ldm's SpatialTransformer */
static bool unet_attention(const char *r, char *out, size_t cap, const char *pre, lk_status *s) {
    static const char *const ok[] = {"norm.", "proj_in.", "proj_out.", "transformer_blocks."};
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        if (!strncmp(r, ok[i], strlen(ok[i]))) {
            *s = put(out, cap, "%s%s%s", UNET_PFX, pre, r);
            return true;
        }
    }
    return false;
}

static lk_status unet_name(const lk_weights *w, int lpb, const char *name, char *out, size_t cap) {
    const char *r = name;
    char pre[64];
    int b, l;
    lk_status s = LK_OK;
    static const char *const top[][2] = {{"time_embedding.linear_1.", "time_embed.0."},
                                         {"time_embedding.linear_2.", "time_embed.2."},
                                         {"conv_norm_out.", "out.0."}, {"conv_out.", "out.2."},
                                         {"conv_in.", "input_blocks.0.0."}};
    for (size_t i = 0; i < sizeof top / sizeof top[0]; i++) {
        r = name;
        if (eat(&r, top[i][0]) && is_param(r)) return put(out, cap, "%s%s%s", UNET_PFX, top[i][1], r);
    }
    r = name;
    if (eat(&r, "down_blocks.") && eat_index(&r, &b)) {
        const char *q = r;
        if (eat(&q, "resnets.") && eat_index(&q, &l) && l < lpb) {
            snprintf(pre, sizeof pre, "input_blocks.%d.0.", 1 + b * (lpb + 1) + l);
            if (unet_resnet(q, out, cap, pre, &s)) return s;
        }
        q = r;
        if (eat(&q, "attentions.") && eat_index(&q, &l) && l < lpb) {
            snprintf(pre, sizeof pre, "input_blocks.%d.1.", 1 + b * (lpb + 1) + l);
            if (unet_attention(q, out, cap, pre, &s)) return s;
        }
        q = r;
        if (eat(&q, "downsamplers.0.conv.") && is_param(q))
            return put(out, cap, "%sinput_blocks.%d.0.op.%s", UNET_PFX, 1 + b * (lpb + 1) + lpb, q);
        return no_name(LK_SD_UNET, name);
    }
    r = name;
    if (eat(&r, "mid_block.")) {
        const char *q = r;
        if (eat(&q, "resnets.") && eat_index(&q, &l) && l < 2 &&
            unet_resnet(q, out, cap, l ? "middle_block.2." : "middle_block.0.", &s))
            return s;
        q = r;
        if (eat(&q, "attentions.0.") && unet_attention(q, out, cap, "middle_block.1.", &s)) return s;
        return no_name(LK_SD_UNET, name);
    }
    r = name;
    if (eat(&r, "up_blocks.") && eat_index(&r, &b)) {
        const char *q = r;
        if (eat(&q, "resnets.") && eat_index(&q, &l) && l <= lpb) {
            snprintf(pre, sizeof pre, "output_blocks.%d.0.", b * (lpb + 1) + l);
            if (unet_resnet(q, out, cap, pre, &s)) return s;
        }
        q = r;
        if (eat(&q, "attentions.") && eat_index(&q, &l) && l <= lpb) {
            snprintf(pre, sizeof pre, "output_blocks.%d.1.", b * (lpb + 1) + l);
            if (unet_attention(q, out, cap, pre, &s)) return s;
        }
        q = r;
        if (eat(&q, "upsamplers.0.conv.") && is_param(q)) {
            /* ldm: [ResBlock, (SpatialTransformer,) Upsample] in the last output block of a level */
            char k[96];
            snprintf(k, sizeof k, "up_blocks.%d.attentions.%d.proj_in.weight", b, lpb);
            int j = lk_weights_get(w, k) ? 2 : 1;
            return put(out, cap, "%soutput_blocks.%d.%d.conv.%s", UNET_PFX, b * (lpb + 1) + lpb, j, q);
        }
    }
    return no_name(LK_SD_UNET, name);
}

/* ---- VAE ---- */

/* diffusers ResnetBlock2D (r: after "resnets.N.") -> ldm ResnetBlock under pre */
static bool vae_resnet(const char *r, char *out, size_t cap, const char *pre, lk_status *s) {
    static const char *const map[][2] = {{"norm1.", "norm1."}, {"conv1.", "conv1."},
                                         {"norm2.", "norm2."}, {"conv2.", "conv2."},
                                         {"conv_shortcut.", "nin_shortcut."}};
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++) {
        const char *q = r;
        if (eat(&q, map[i][0]) && is_param(q)) {
            *s = put(out, cap, "%s%s%s%s", VAE_PFX, pre, map[i][1], q);
            return true;
        }
    }
    return false;
}

static lk_status vae_name(int nb_up, const char *name, char *out, size_t cap, bool *to_conv) {
    static const char *const same[] = {"quant_conv.", "post_quant_conv.", "encoder.conv_in.",
                                       "encoder.conv_out.", "decoder.conv_in.", "decoder.conv_out."};
    const char *r;
    char pre[64];
    int b, l;
    lk_status s = LK_OK;
    for (size_t i = 0; i < sizeof same / sizeof same[0]; i++) {
        r = name;
        if (eat(&r, same[i]) && is_param(r)) return put(out, cap, "%s%s", VAE_PFX, name);
    }
    for (int side = 0; side < 2; side++) {
        const char *sname = side ? "decoder." : "encoder.";
        r = name;
        if (!eat(&r, sname)) continue;
        const char *q = r;
        if (eat(&q, "conv_norm_out.") && is_param(q)) return put(out, cap, "%s%snorm_out.%s", VAE_PFX, sname, q);
        q = r;
        if (eat(&q, "mid_block.resnets.") && eat_index(&q, &l) && l < 2) {
            snprintf(pre, sizeof pre, "%smid.block_%d.", sname, l + 1);
            if (vae_resnet(q, out, cap, pre, &s)) return s;
            return no_name(LK_SD_VAE, name);
        }
        q = r;
        if (eat(&q, "mid_block.attentions.0.")) {
            static const char *const map[][2] = {{"group_norm.", "norm."}, {"to_q.", "q."}, {"to_k.", "k."},
                                                 {"to_v.", "v."}, {"to_out.0.", "proj_out."}};
            for (size_t i = 0; i < sizeof map / sizeof map[0]; i++) {
                const char *p = q;
                if (eat(&p, map[i][0]) && is_param(p)) {
                    *to_conv = i > 0 && !strcmp(p, "weight");
                    return put(out, cap, "%s%smid.attn_1.%s%s", VAE_PFX, sname, map[i][1], p);
                }
            }
            return no_name(LK_SD_VAE, name);
        }
        q = r;
        if (eat(&q, side ? "up_blocks." : "down_blocks.") && eat_index(&q, &b) && b < (side ? nb_up : 1000)) {
            int lb = side ? nb_up - 1 - b : b; /* ldm's decoder.up is numbered from the bottom */
            const char *lvl = side ? "up" : "down";
            const char *p = q;
            if (eat(&p, "resnets.") && eat_index(&p, &l)) {
                snprintf(pre, sizeof pre, "%s%s.%d.block.%d.", sname, lvl, lb, l);
                if (vae_resnet(p, out, cap, pre, &s)) return s;
            }
            p = q;
            if (eat(&p, side ? "upsamplers.0.conv." : "downsamplers.0.conv.") && is_param(p))
                return put(out, cap, "%s%s%s.%d.%s.conv.%s", VAE_PFX, sname, lvl, lb,
                           side ? "upsample" : "downsample", p);
        }
    }
    return no_name(LK_SD_VAE, name);
}

/* Contract: see sd_single_file_write.h. */
lk_status lk__sd_single_name(const lk_sd_model *m, const lk__sd_single_layout *lay, lk_sd_part_id part,
                             const char *name, char *out, size_t cap, bool *to_conv) {
    *to_conv = false;
    switch (part) {
    case LK_SD_UNET: return unet_name(m->part[LK_SD_UNET].weights, lay->unet_layers_per_block, name, out, cap);
    case LK_SD_VAE: return vae_name(lay->vae_up_blocks, name, out, cap, to_conv);
    case LK_SD_TEXT_ENCODER:
        /* transformers' CLIPTextModel names, as A1111 / ldm's FrozenCLIPEmbedder hold them */
        if (strncmp(name, "text_model.", 11)) return no_name(part, name);
        return put(out, cap, "%s%s", CLIP_PFX, name);
    default: return lk_fail(LK_ERR_INVALID, "sd single file: invalid part %d", (int)part);
    }
}
