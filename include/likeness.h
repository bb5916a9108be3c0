/* likeness.h: the public C API of likeness, personalized image generation.
 * Modules: core (status, dtypes, memory), tensor (ctx, autograd), ops (differentiable kernels),
 * rng (torch-compatible), safetensors (files), optim (optimizers, schedules, EMA). */
#ifndef LIKENESS_H
#define LIKENESS_H

#include "likeness/core.h"
#include "likeness/tensor.h"
#include "likeness/ops.h"
#include "likeness/rng.h"
#include "likeness/safetensors.h"
#include "likeness/optim.h"
#include "likeness/tokenizer.h"
#include "likeness/sampler.h"
#include "likeness/weights.h"
#include "likeness/model_config.h"
#include "likeness/clip_text.h"
#include "likeness/unet.h"
#include "likeness/vae.h"
#include "likeness/sd_model.h"
#include "likeness/lora_file.h"
#include "likeness/embedding_file.h"
#include "likeness/image.h"
#include "likeness/pipeline.h"
#include "likeness/train.h"

#endif
