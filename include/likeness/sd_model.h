/* likeness/sd_model.h: loading a Stable Diffusion 1.x / 2.x checkpoint, either a diffusers
 * folder or a single CompVis/A1111 `.safetensors` file, into named weight sets with diffusers /
 * HF key names plus each component's config.json text, the tokenizer and the model hash. */
#ifndef LIKENESS_SD_MODEL_H
#define LIKENESS_SD_MODEL_H

#include "likeness/sampler.h"
#include "likeness/tokenizer.h"
#include "likeness/weights.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum lk_sd_arch {
    LK_SD_ARCH_UNKNOWN = 0,
    LK_SD_ARCH_SD1 = 1, /* SD 1.x: OpenAI CLIP ViT-L/14 text encoder (quick_gelu), 8 heads */
    LK_SD_ARCH_SD2 = 2, /* SD 2.x: OpenCLIP ViT-H/14 text encoder (gelu), head dim 64, linear proj */
} lk_sd_arch;

/* Components, in the order of lk_sd_model.part[]. */
typedef enum lk_sd_part_id {
    LK_SD_TEXT_ENCODER = 0, /* CLIPTextModel: "text_model.*" */
    LK_SD_UNET = 1,         /* UNet2DConditionModel: "conv_in.*", "down_blocks.*", ... */
    LK_SD_VAE = 2,          /* AutoencoderKL: "encoder.*", "decoder.*", "quant_conv.*", ... */
    LK_SD_NPARTS = 3
} lk_sd_part_id;

typedef struct lk_sd_part {
    lk_weights *weights;     /* owned; diffusers (UNet, VAE) / transformers (CLIP) key names */
    char *config_json;       /* owned, NUL-terminated config.json text */
    bool config_synthesized; /* made from tensor shapes (single files, folders without one) */
    lk_dtype file_dtype;     /* dtype of most of its float tensors in the file */
    bool mixed_dtypes;       /* the file stores several float dtypes for it */
    int64_t n_params;        /* elements of all its tensors */
    char *file;              /* owned: the (first) file its weights came from */
} lk_sd_part;

typedef struct lk_sd_model {
    lk_sd_arch arch;
    lk_prediction_type prediction; /* epsilon or v: from scheduler config / override */
    bool prediction_guessed;       /* single files: not stated by the file, defaulted */
    lk_pad_mode pad;               /* SD-1: EOS padding; SD-2: id 0 ("!") */
    lk_tokenizer *tokenizer;       /* owned; NULL when opts.load_tokenizer was false */
    lk_sd_part part[LK_SD_NPARTS];
    char *scheduler_json;          /* owned scheduler_config.json text (synthesized if absent) */
    bool single_file;
    bool shapes_only;              /* loaded with opts.shapes_only: tensor data is NULL */
    char *path;                    /* owned copy of the path given */
    char *hash_file;               /* owned: the file whose sha256 is the model hash */
    char sha256[65];               /* "" until lk_sd_model_hash computes it */
} lk_sd_model;

typedef struct lk_sd_load_opts {
    lk_dtype store;            /* weight storage: LK_F32 (default; widens half files), LK_F16 or
                                * LK_BF16 (half memory; the kernels widen in blocks) */
    const char *tokenizer_dir; /* folder with vocab.json + merges.txt. Single files carry no
                                * tokenizer: this, else $LK_TOKENIZER, else LK_ERR_INVALID. For a
                                * diffusers folder it overrides <folder>/tokenizer. */
    int prediction;            /* -1 (default): from the scheduler config (folders), from the file
                                * metadata "modelspec.prediction_type" or an A1111 sibling
                                * <name>.yaml "parameterization: v" (single files), else epsilon.
                                * LK_PREDICT_EPSILON / LK_PREDICT_V: override (SD-2 768-v single
                                * files cannot be told from their weights). */
    bool load_tokenizer;       /* default true */
    bool shapes_only;          /* default false. true: tensors get names, shapes and the file's
                                * dtype but no data (data == NULL): for `likeness info` */
    int text_encoder_heads;    /* synthesized CLIP config only; 0 (default) = derive: width / 64
                                * (every real CLIP: 768 -> 12, 1024 -> 16); widths that are not a
                                * multiple of 64 (tiny test models) get head dim 8 */
} lk_sd_load_opts;

/* Contract: fills o with the defaults above. Cannot fail. */
void lk_sd_load_opts_default(lk_sd_load_opts *o);

/* Load a model from path: a diffusers folder or a single-file checkpoint (`.safetensors`).
 *
 * Folder: model_index.json (optional; an SDXL / SD3 / other pipeline class is refused),
 * unet/diffusion_pytorch_model[.fp16].safetensors (or a sharded *.safetensors.index.json),
 * vae/diffusion_pytorch_model[.fp16].safetensors, text_encoder/model[.fp16].safetensors, each
 * with its config.json (synthesized from shapes when missing), scheduler/scheduler_config.json
 * (SD defaults when missing), tokenizer/. Pickle files (*.bin, *.ckpt, *.pt) are refused: likeness
 * never unpickles. Pre-0.14 VAE attention names (query/key/value/proj_attn) become to_q/to_k/
 * to_v/to_out.0.
 *
 * Single file: model.diffusion_model.* / first_stage_model.* / cond_stage_model.transformer.*
 * (SD-1) or cond_stage_model.model.* (SD-2 OpenCLIP) keys are renamed to diffusers names (VAE
 * attention 1x1 convs become linear weights; OpenCLIP in_proj is split into q/k/v; the last
 * OpenCLIP block, text_projection and logit_scale are dropped, as diffusers does: SD-2
 * conditions on the penultimate layer, so the text encoder has layers-1 layers and its final
 * layer norm applied). Buffers (betas, alphas_cumprod, model_ema.*, position_ids, ...) are
 * ignored. Configs are synthesized from shapes (lk_sd_synth_configs).
 *
 * Refused with LK_ERR_UNSUPPORTED and a message naming what was found: SDXL (conditioner.
 * embedders, label_emb, add_embedding, 2048-dim cross attention), SD3 (joint_blocks), Flux,
 * inpainting / depth / instruct-pix2pix UNets (conv_in with 9 / 5 / 8 input channels), and
 * files that are a LoRA or an embedding rather than a checkpoint. Missing or misshapen tensors:
 * LK_ERR_FORMAT naming the key. opts NULL = defaults. On success *out owns the model (free with
 * lk_sd_model_free); on failure *out is NULL. */
lk_status lk_sd_model_load(lk_sd_model **out, const char *path, const lk_sd_load_opts *opts);
/* Free a model and everything it owns; accepts NULL. */
void lk_sd_model_free(lk_sd_model *m);

/* The A1111 "Model hash": the first 10 hex digits of the sha256 of the checkpoint file (for a
 * folder: of the UNet weights file). Computed on the first call (reads the whole file) and
 * cached in m->sha256; hash10 (optional) receives the 10 digits + NUL. LK_ERR_IO on read
 * failure. */
lk_status lk_sd_model_hash(lk_sd_model *m, char hash10[11]);

/* "SD-1.x", "SD-2.x" or "unknown". Static string. */
const char *lk_sd_arch_name(lk_sd_arch a);
/* "text_encoder", "unet", "vae". Static string (NULL for an invalid id). */
const char *lk_sd_part_name(lk_sd_part_id p);

/* Synthesize the config.json text of each component from its weights (diffusers key names) as
 * diffusers' single-file conversion would write it: UNet block_out_channels, layers_per_block,
 * block types, cross_attention_dim, use_linear_projection (2-D proj_in), attention_head_dim (8
 * for SD-1; channels/64 per block for SD-2); VAE widths and latent channels; CLIP width, layers,
 * heads (see text_encoder_heads), intermediate size, vocabulary, positions, activation
 * (quick_gelu SD-1, gelu SD-2). sample_size cannot be known: 64 (96 for SD-2 v-prediction) for
 * the UNet, 512 (768) for the VAE. Replaces m->part[i].config_json for every part whose weights
 * are non-empty. LK_ERR_FORMAT naming the tensor when the weights are not a UNet / VAE / CLIP
 * text model of the SD layout. */
lk_status lk_sd_synth_configs(lk_sd_model *m, int text_encoder_heads);

#ifdef __cplusplus
}
#endif
#endif
