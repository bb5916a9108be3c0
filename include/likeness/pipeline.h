/* likeness/pipeline.h: Stable Diffusion 1.x/2.x generation as diffusers' StableDiffusionPipeline /
 * StableDiffusionImg2ImgPipeline run it (classifier-free guidance, VAE decode), with
 * AUTOMATIC1111 prompt conditioning (emphasis weights, 75-token chunks), kohya LoRAs, textual-
 * inversion embeddings and the A1111 "parameters" text that records how an image was made. */
#ifndef LIKENESS_PIPELINE_H
#define LIKENESS_PIPELINE_H

#include "likeness/clip_text.h"
#include "likeness/sampler.h"
#include "likeness/sd_model.h"
#include "likeness/tokenizer.h"
#include "likeness/unet.h"
#include "likeness/vae.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- prompt conditioning (src/pipeline/prompt_cond.c) ---- */

#define LK_PROMPT_MAX_CHUNKS 32 /* 32 x 75 tokens: longer prompts are refused */

/* The text encoder's hidden states for one prompt: n_chunks sequences of LK_CLIP_CONTEXT (77)
 * tokens concatenated along the token axis, as the UNet's encoder_hidden_states (1, n_tokens,
 * dim). All arrays owned (lk_prompt_cond_free). */
typedef struct lk_prompt_cond {
    int n_chunks;
    int n_tokens;   /* n_chunks * 77 */
    int dim;        /* text encoder hidden_size */
    float *hidden;  /* (n_tokens, dim) */
    int64_t *ids;   /* (n_tokens) the token ids encoded */
    float *weights; /* (n_tokens) the emphasis multiplier of each token (1 for BOS/EOS/padding) */
} lk_prompt_cond;

typedef struct lk_prompt_cond_opts {
    lk_prompt_opts prompt; /* pad mode (SD-1 EOS, SD-2 zero), emphasis on/off, comma backtrack */
    int clip_skip;         /* 1 (default): last layer; k: layer num_layers - k + 1, then the final
                            * layer norm (A1111 "Clip skip") */
    int max_chunks;        /* 0: LK_PROMPT_MAX_CHUNKS */
} lk_prompt_cond_opts;

/* Contract: A1111 defaults (lk_prompt_opts_default, clip_skip 1, max_chunks 0). Cannot fail. */
void lk_prompt_cond_opts_default(lk_prompt_cond_opts *o);

/* Encode a prompt as A1111's FrozenCLIPEmbedderWithCustomWords does: lk_prompt_encode_weighted
 * splits it into chunks; each chunk runs through the text encoder (all chunks as one batch), its
 * hidden states z are multiplied per token by the emphasis weights and rescaled so that the mean
 * of the chunk's z is restored (z *= mean(z_before) / mean(z_after)); the chunks are concatenated
 * along the token axis. ctx: any no-grad or grad ctx; everything made in it is released before
 * returning (grad mode is left as it was). *out is overwritten (not freed) and owns the result
 * on success; zeroed on failure. LK_ERR_INVALID for more than max_chunks chunks (the message
 * gives the count), a clip_skip outside [1, num_hidden_layers], or NULL arguments; the
 * encoder's errors otherwise. */
lk_status lk_prompt_cond_encode(lk_prompt_cond *out, lk_ctx *ctx, const lk_clip_text *te,
                                const lk_tokenizer *tok, const char *prompt,
                                const lk_prompt_cond_opts *opts);
/* Append chunks copied from the one-chunk conditioning `empty` (the encoding of "") until c has
 * n_chunks chunks, as A1111 pads the shorter of prompt and negative prompt. No-op when c already
 * has n_chunks or more. LK_ERR_INVALID if empty is not one chunk of c's width; LK_ERR_NOMEM
 * (c unchanged). */
lk_status lk_prompt_cond_pad(lk_prompt_cond *c, int n_chunks, const lk_prompt_cond *empty);
/* Free the arrays and zero *c; accepts NULL and zeroed structs. */
void lk_prompt_cond_free(lk_prompt_cond *c);

/* ---- the pipeline (src/pipeline/sd_pipeline.c) ---- */

typedef struct lk_sd_pipeline lk_sd_pipeline;

typedef struct lk_sd_pipeline_opts {
    lk_dtype store;            /* LK_F32 (default) or LK_F16 / LK_BF16: half-size weights, f32
                                * compute (the CLI's --half) */
    const char *tokenizer_dir; /* see lk_sd_load_opts (single files need it or $LK_TOKENIZER) */
    int prediction;            /* -1 (default): as the model says; LK_PREDICT_EPSILON / _V */
    /* Custom Diffusion files (Kumari et al. 2022), applied in this order with
     * lk_custom_diffusion_apply after the model loads and before the networks are built: their
     * cross-attention K/V weights replace the model's, their tokens join the tokenizer and the
     * text encoder's table (before any lk_sd_pipeline_add_embedding). Borrowed during load only.
     * NULL / 0 (default): none. */
    const char *const *custom;
    int n_custom;
} lk_sd_pipeline_opts;

/* Contract: fills o with the defaults above. Cannot fail. */
void lk_sd_pipeline_opts_default(lk_sd_pipeline_opts *o);

/* Load a model (diffusers folder or single-file checkpoint, see lk_sd_model_load), apply the
 * Custom Diffusion files of opts, and build its text encoder, UNet and VAE and its noise schedule
 * (scheduler config + the model's prediction type). opts NULL = defaults. On success *out owns the pipeline (lk_sd_pipeline_free); on
 * failure *out is NULL and the message names the file / tensor / key at fault. A pipeline runs
 * one generation at a time (it owns one activation ctx); it is not thread-safe. */
lk_status lk_sd_pipeline_load(lk_sd_pipeline **out, const char *path,
                              const lk_sd_pipeline_opts *opts);
/* Free everything (merged LoRAs are not unmerged: the weights go too). Accepts NULL. */
void lk_sd_pipeline_free(lk_sd_pipeline *p);

/* Borrowed parts (valid while p lives; NULL for a NULL p). The model is non-const so callers can
 * compute its hash (lk_sd_model_hash). */
lk_sd_model *lk_sd_pipeline_model(lk_sd_pipeline *p);
const lk_unet *lk_sd_pipeline_unet(const lk_sd_pipeline *p);
const lk_vae *lk_sd_pipeline_vae(const lk_sd_pipeline *p);
const lk_clip_text *lk_sd_pipeline_text_encoder(const lk_sd_pipeline *p);
const lk_tokenizer *lk_sd_pipeline_tokenizer(const lk_sd_pipeline *p);
const lk_schedule_config *lk_sd_pipeline_schedule(const lk_sd_pipeline *p);

/* Image geometry. *multiple: width and height must be multiples of it (VAE factor 2^(vae
 * blocks-1) times UNet factor 2^(unet blocks-1): 64 for SD). *w / *h (optional): the default
 * size, the UNet's sample_size * VAE factor as diffusers (512 for SD-1, 768 for SD-2 v; 64 * VAE
 * factor when the config has no sample_size). Cannot fail for a loaded pipeline. */
void lk_sd_pipeline_geometry(const lk_sd_pipeline *p, int *multiple, int *w, int *h);
/* Latent shape for an image size: (channels, h / factor, w / factor). LK_ERR_INVALID, with a
 * message naming the size and the multiple required, when width or height is not a positive
 * multiple of 8 or of the geometry's multiple, or above LK_IMAGE_MAX_DIM-like sanity (16384). */
lk_status lk_sd_pipeline_latent_shape(const lk_sd_pipeline *p, int width, int height, int *c,
                                      int *lh, int *lw);

/* Merge a kohya/A1111 LoRA file into the UNet (and text encoder) weights with this multiplier
 * (lk_lora_open + lk_lora_merge); the networks see it from the next call on. Fails as
 * lk_lora_open does: LK_ERR_IO for a missing file, LK_ERR_INVALID (message with both shapes) for
 * a LoRA made for another architecture, LK_ERR_UNSUPPORTED for LyCORIS / SDXL LoRAs. Nothing is
 * merged on failure. The file stays open until lk_sd_pipeline_clear_loras / free. */
lk_status lk_sd_pipeline_add_lora(lk_sd_pipeline *p, const char *path, float multiplier);
/* Unmerge every LoRA added (weights back to within one rounding) and close the files. */
lk_status lk_sd_pipeline_clear_loras(lk_sd_pipeline *p);
int lk_sd_pipeline_lora_count(const lk_sd_pipeline *p);

/* Add a textual-inversion embedding file: its tokens join the tokenizer and its vectors the text
 * encoder's token table. token: the prompt text (NULL: the file's own naming, see
 * lk_embedding_file_load). A token that is a bare name ("cat-toy", A1111 files) is also added as
 * "<cat-toy>" (the diffusers convention), so prompts may write either; both map to the same
 * vectors. *added (optional) receives the tokens' texts joined by ", " (malloc'd; caller frees).
 * LK_ERR_INVALID for vectors of another width than the text encoder ("embedding cat-toy has
 * 768-dim vectors, the text encoder expects 1024") or a token already added; the loader's
 * errors otherwise. On failure the tokenizer and table may keep tokens of this file added before
 * the failing one (their rows stay consistent). */
lk_status lk_sd_pipeline_add_embedding(lk_sd_pipeline *p, const char *path, const char *token,
                                       char **added);

/* ---- generation ---- */

#define LK_SD_DEFAULT_STEPS 25
#define LK_SD_DEFAULT_SAMPLER LK_SAMPLER_DPMPP_2M
#define LK_SD_DEFAULT_CFG 7.5f
#define LK_SD_DEFAULT_STRENGTH 0.75

typedef enum lk_cfg_mode {
    LK_CFG_BATCHED = 0,  /* uncond and cond as one UNet batch of 2 (diffusers) */
    LK_CFG_SEPARATE = 1, /* two UNet calls of batch 1 (less memory; same result) */
} lk_cfg_mode;

typedef struct lk_sd_gen_params {
    const char *prompt;          /* required */
    const char *negative_prompt; /* NULL = "" */
    int width, height;           /* 0: the default size (lk_sd_pipeline_geometry) */
    int steps;                   /* inference steps, >= 1 */
    float cfg_scale;             /* guidance scale; <= 1 runs the prompt only (as diffusers) */
    lk_sampler_kind sampler;
    float eta;                   /* DDIM eta (0 = deterministic); must be 0 for other samplers */
    uint64_t seed;               /* torch.manual_seed(seed): the initial latent is torch.randn */
    int clip_skip;               /* 0 or 1: last layer; see lk_prompt_cond_opts */
    bool no_emphasis;            /* true: brackets are plain text (A1111 emphasis "None") */
    lk_cfg_mode cfg_mode;
    /* img2img: the init image (3, height, width) floats in [-1, 1], borrowed; NULL: txt2img.
     * strength in (0, 1]: the fraction of the schedule run (StableDiffusionImg2ImgPipeline); the
     * start is the VAE-encoded image (a sample of its latent distribution, drawn first from the
     * seeded generator, times the scaling factor) noised to the first timestep run with the next
     * torch.randn draw. strength 1 starts from pure noise like txt2img (as diffusers' inpaint
     * pipeline does for strength 1), so it equals txt2img for the same seed. */
    const float *init_image;
    double strength;
    /* optional */
    lk_progress_fn progress;     /* after every model step (done, total, timestep) */
    void *progress_ud;
    const volatile sig_atomic_t *cancel; /* non-zero: stop with LK_ERR_INTERRUPTED */
} lk_sd_gen_params;

/* Contract: prompt "", no negative, default size, LK_SD_DEFAULT_STEPS, LK_SD_DEFAULT_CFG,
 * LK_SD_DEFAULT_SAMPLER, eta 0, seed 0, clip_skip 1, emphasis on, batched CFG, txt2img,
 * strength LK_SD_DEFAULT_STRENGTH, no callbacks. Cannot fail. */
void lk_sd_gen_params_default(lk_sd_gen_params *g);

/* Encode prompt and negative prompt for sampling (A1111 emphasis and chunks, see
 * lk_prompt_cond_encode) with the pipeline's pad mode; the shorter is padded with empty-prompt
 * chunks to the other's length. uncond may be NULL when no guidance is wanted (negative is then
 * ignored). *cond / *uncond are overwritten and owned by the caller (lk_prompt_cond_free); both
 * zeroed on failure. */
lk_status lk_sd_pipeline_encode(lk_sd_pipeline *p, const char *prompt, const char *negative,
                                int clip_skip, bool emphasis, lk_prompt_cond *cond,
                                lk_prompt_cond *uncond);

/* Run the denoising loop: build the sampler (g->sampler, steps, strength when g->init_image),
 * seed the generator with g->seed, make the initial latent (txt2img: torch.randn * init sigma;
 * img2img: see lk_sd_gen_params) and run every step, the UNet called on [uncond, cond] with
 * guidance g->cfg_scale (cond only when cfg_scale <= 1 or uncond is NULL). latent receives the
 * final latent (c * lh * lw floats, lk_sd_pipeline_latent_shape), init_latent (optional) the
 * start. g->prompt and g->negative_prompt are not read. LK_ERR_INVALID for bad parameters (the
 * message names them), LK_ERR_INTERRUPTED when g->cancel was set (latent then holds the last
 * finished step), the model's errors otherwise. */
lk_status lk_sd_pipeline_sample(lk_sd_pipeline *p, const lk_sd_gen_params *g,
                                const lk_prompt_cond *cond, const lk_prompt_cond *uncond,
                                float *latent, float *init_latent);

/* VAE-encode an image (3, height, width) in [-1, 1] to its latent distribution's mean, times the
 * scaling factor (c * h/8 * w/8 floats). Deterministic; for tools and tests. */
lk_status lk_sd_pipeline_encode_image(lk_sd_pipeline *p, const float *image, int width, int height,
                                      float *latent);
/* Decode a latent (c, lh, lw) (scaled, as the UNet sees it) into an image (3, lh*8, lw*8) of
 * floats nominally in [-1, 1], not clamped: vae.decode(latent / scaling_factor). */
lk_status lk_sd_pipeline_decode(lk_sd_pipeline *p, const float *latent, int lh, int lw,
                                float *image);

/* What lk_sd_pipeline_generate returns. Owned arrays (lk_sd_result_free). */
typedef struct lk_sd_result {
    int width, height;
    int latent_c, latent_h, latent_w;
    float *image;        /* (3, height, width), [-1, 1] nominal, not clamped */
    float *init_latent;  /* (latent_c, latent_h, latent_w) the latent the loop started from */
    float *final_latent; /* (latent_c, latent_h, latent_w) */
    int cond_chunks;     /* chunks of 75 tokens the prompt took */
    double t_encode, t_sample, t_decode; /* seconds */
} lk_sd_result;

/* Contract: encode, sample, decode (the three calls above) for one image. *r is overwritten
 * (not freed) and owns its arrays on success; zeroed on failure. The cancel flag is read again
 * after sampling, so a Ctrl-C during the loop never yields an image. */
lk_status lk_sd_pipeline_generate(lk_sd_pipeline *p, const lk_sd_gen_params *g, lk_sd_result *r);
void lk_sd_result_free(lk_sd_result *r); /* accepts NULL; zeroes *r */

/* ---- A1111 "parameters" text (src/pipeline/infotext.c) ---- */

typedef struct lk_sd_infotext {
    const char *prompt;
    const char *negative_prompt;  /* NULL or "": no "Negative prompt:" line */
    int steps;
    lk_sampler_kind sampler;
    double cfg_scale;
    uint64_t seed;
    int width, height;
    const char *model_hash;       /* 10 hex digits, or NULL */
    const char *model_name;       /* checkpoint name without folder/extension, or NULL */
    double strength;              /* img2img: "Denoising strength"; <= 0 omitted */
    int clip_skip;                /* written when > 1 */
    int n_loras;                  /* "<lora:NAME:W>" appended to the prompt, "Lora hashes" */
    const char *const *lora_names;
    const double *lora_weights;
    const char *const *lora_hashes; /* 12 hex digits (A1111 addnet hash) or NULL */
    int n_tis;                    /* "TI hashes" */
    const char *const *ti_names;
    const char *const *ti_hashes;
    double eta;                   /* DDIM "Eta" when > 0 */
} lk_sd_infotext;

/* Format as AUTOMATIC1111's create_infotext: "PROMPT\nNegative prompt: NEG\nSteps: 25, Sampler:
 * DPM++ 2M, Schedule type: Karras, CFG scale: 7.5, Seed: 1, Size: 512x512, Model hash: ..., Model:
 * ..., Denoising strength: 0.75, Clip skip: 2, Lora hashes: "name: hash", TI hashes: "..."";
 * values with ',', ':' or a newline are JSON-quoted, floats are written as Python's repr.
 * *text receives a malloc'd string (caller frees). LK_ERR_INVALID (NULL prompt), LK_ERR_NOMEM. */
lk_status lk_sd_infotext_format(const lk_sd_infotext *info, char **text);
/* The value of key in the last line of an A1111 parameters text (quoted values unquoted, JSON
 * escapes decoded), into buf (NUL-terminated, cut to n-1 bytes). Returns false when absent. */
bool lk_sd_infotext_get(const char *text, const char *key, char *buf, size_t n);
/* The A1111 sampler name of a kind ("DPM++ 2M", "Euler a", "DDIM", ...) and whether it runs on
 * Karras sigmas ("Schedule type: Karras"). Static string. */
const char *lk_sampler_a1111_name(lk_sampler_kind kind, bool *karras);

#ifdef __cplusplus
}
#endif
#endif
