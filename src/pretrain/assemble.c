/* assemble.c: the emoji model's diffusers folder from the pretraining runs' exports:
 * model_index.json, scheduler/ (SD's PNDM configuration), tokenizer/, and text_encoder/, vae/,
 * unet/ with their weights stored as F16. */
#define _POSIX_C_SOURCE 200809L
#include "pretrain/pretrain_internal.h"

#include <stdio.h>
#include <string.h>

static const char MODEL_INDEX[] =
    "{\n  \"_class_name\": \"StableDiffusionPipeline\",\n  \"_diffusers_version\": \"0.21.0\",\n"
    "  \"feature_extractor\": [null, null],\n  \"requires_safety_checker\": false,\n"
    "  \"safety_checker\": [null, null],\n  \"scheduler\": [\"diffusers\", \"PNDMScheduler\"],\n"
    "  \"text_encoder\": [\"transformers\", \"CLIPTextModel\"],\n"
    "  \"tokenizer\": [\"transformers\", \"CLIPTokenizer\"],\n"
    "  \"unet\": [\"diffusers\", \"UNet2DConditionModel\"],\n"
    "  \"vae\": [\"diffusers\", \"AutoencoderKL\"]\n}\n";

static const char SCHEDULER[] =
    "{\n  \"_class_name\": \"PNDMScheduler\",\n  \"_diffusers_version\": \"0.21.0\",\n"
    "  \"beta_end\": 0.012,\n  \"beta_schedule\": \"scaled_linear\",\n  \"beta_start\": 0.00085,\n"
    "  \"clip_sample\": false,\n  \"num_train_timesteps\": 1000,\n"
    "  \"prediction_type\": \"epsilon\",\n  \"set_alpha_to_one\": false,\n"
    "  \"skip_prk_steps\": true,\n  \"steps_offset\": 1,\n  \"trained_betas\": null\n}\n";

/* src_dir/part/{config.json, file} -> out/part/ with F16 weights */
static lk_status convert_part(const char *src_dir, const char *part, const char *file,
                              const char *out) {
    char a[4300], b[4300];
    snprintf(b, sizeof b, "%s/%s", out, part);
    lk_status s = lk__mkdirs(b);
    snprintf(a, sizeof a, "%s/%s/config.json", src_dir, part);
    snprintf(b, sizeof b, "%s/%s/config.json", out, part);
    if (s == LK_OK) s = lk__copy_file_atomic(a, b);
    lk_weights *w = s == LK_OK ? lk_weights_new() : NULL;
    if (s == LK_OK && !w) s = lk_fail(LK_ERR_NOMEM, "out of memory");
    snprintf(a, sizeof a, "%s/%s/%s", src_dir, part, file);
    snprintf(b, sizeof b, "%s/%s/%s", out, part, file);
    if (s == LK_OK) s = lk_weights_load_safetensors(w, a, NULL, "", LK_F16);
    if (s == LK_OK) s = lk__pt_save_weights_set(w, b, true);
    lk_weights_free(w);
    return s;
}

/* the CLIP tokenizer files of the folder dir/sub ("" or "name/") -> out/tokenizer/ */
lk_status lk_pretrain_assemble(const char *tokenizer_dir, const char *text_dir,
                               const char *vae_dir, const char *unet_dir, const char *out_dir) {
    if (!tokenizer_dir || !text_dir || !vae_dir || !unet_dir || !out_dir)
        return lk_fail(LK_ERR_INVALID, "pretrain assemble: NULL folder");
    char p[4300];
    lk_status s = lk__mkdirs(out_dir);
    snprintf(p, sizeof p, "%s/model_index.json", out_dir);
    if (s == LK_OK) s = lk__write_text_atomic(p, MODEL_INDEX);
    snprintf(p, sizeof p, "%s/scheduler", out_dir);
    if (s == LK_OK) s = lk__mkdirs(p);
    snprintf(p, sizeof p, "%s/scheduler/scheduler_config.json", out_dir);
    if (s == LK_OK) s = lk__write_text_atomic(p, SCHEDULER);
    if (s == LK_OK) s = lk__pt_copy_tokenizer(tokenizer_dir, "", out_dir);
    if (s == LK_OK) s = convert_part(text_dir, "text_encoder", "model.safetensors", out_dir);
    if (s == LK_OK) s = convert_part(vae_dir, "vae", "diffusion_pytorch_model.safetensors", out_dir);
    if (s == LK_OK) s = convert_part(unet_dir, "unet", "diffusion_pytorch_model.safetensors", out_dir);
    return s;
}

lk_status lk_pretrain_assemble_evaluator(const char *text_export, const char *out_dir) {
    if (!text_export || !out_dir) return lk_fail(LK_ERR_INVALID, "pretrain assemble: NULL folder");
    lk_status s = lk__mkdirs(out_dir);
    if (s == LK_OK) s = lk__pt_copy_tokenizer(text_export, "tokenizer/", out_dir);
    if (s == LK_OK) s = convert_part(text_export, "clip", "model.safetensors", out_dir);
    return s;
}
