/* sd_internal.h: what the Stable Diffusion checkpoint loaders share (sd_loader.c: folders and
 * the model object; sd_single_file.c: CompVis/A1111 key conversion; sd_detect.c: architecture
 * detection and config synthesis from shapes). Not a public interface. */
#ifndef LK_MODELS_SD_INTERNAL_H
#define LK_MODELS_SD_INTERNAL_H

#include "likeness/sd_model.h"

/* Loading state: where tensors go and how they are stored. */
typedef struct lk__sd_load {
    lk_sd_model *m;
    lk_dtype store;              /* storage dtype of float tensors */
    bool shapes_only;            /* no data: tensors wrap NULL, keep the file dtype */
    int dtype_count[LK_SD_NPARTS][3]; /* per part: tensors read as F32, F16, BF16 */
    float *tmp;                  /* widening scratch */
    size_t tmp_cap;
    const lk_safetensors *st;    /* the file being read: copied tensors are evicted from memory */
} lk__sd_load;

/* Add a tensor named name to part `part` of L->m: numel(shape) elements of the float tensor t
 * starting at element elem_off (a contiguous slice; shape may differ from t's, e.g. a 1x1 conv
 * stored as a linear weight, or one third of a fused q/k/v projection), converted to L->store.
 * The name must fit lk_tensor.name (LK_ERR_UNSUPPORTED otherwise); errors name the file. */
lk_status lk__sd_add(lk__sd_load *L, int part, const char *name, const lk_st_tensor *t, int ndim,
                     const int64_t *shape, int64_t elem_off);

/* Convert every tensor of an opened single-file checkpoint into L->m's parts (diffusers names).
 * arch comes from lk__sd_detect_single. path names the file in messages. */
lk_status lk__sd_convert_single(lk__sd_load *L, const lk_safetensors *st, const char *path,
                                lk_sd_arch arch);

/* Prediction type a single file states: safetensors metadata "modelspec.prediction_type", or a
 * sibling A1111 <stem>.yaml with "parameterization: v". Returns true and sets *p when stated. */
bool lk__sd_single_prediction(const lk_safetensors *st, const char *path, lk_prediction_type *p);

/* Classify a single-file checkpoint by its key names and a few shapes: SD-1 or SD-2, or refuse
 * (LK_ERR_UNSUPPORTED / LK_ERR_FORMAT with a message naming what was found). */
lk_status lk__sd_detect_single(const lk_safetensors *st, const char *path, lk_sd_arch *arch);

/* Check a diffusers folder's JSON texts (any may be NULL) and derive the architecture: refuses
 * SDXL / SD3 / inpainting / upscaler UNets naming the key. label names the folder. */
lk_status lk__sd_detect_folder(const char *model_index, const char *unet_cfg, const char *te_cfg,
                               const char *label, lk_sd_arch *arch);

/* The scheduler_config.json text of the SD noise schedule (DDIM, scaled_linear
 * 0.00085..0.012, steps_offset 1) with the given prediction and training steps. NULL + message
 * on allocation failure. Caller frees with free(). */
char *lk__sd_default_scheduler_json(lk_prediction_type p, int num_train_timesteps);

/* strdup that sets an LK_ERR_NOMEM message on failure. */
char *lk__sd_strdup(const char *s);

#endif
