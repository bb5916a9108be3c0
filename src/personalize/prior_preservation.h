/* prior_preservation.h (internal): the class-image prior of DreamBooth (Ruiz et al. 2022,
 * "prior-preservation loss"), shared by dreambooth.c and custom_diffusion.c: cached class
 * latents and the extension of an instance batch by as many class samples. */
#ifndef LK_PERSONALIZE_PRIOR_PRESERVATION_H
#define LK_PERSONALIZE_PRIOR_PRESERVATION_H

#include "likeness/train_methods.h"
#include "personalize/train_internal.h"

typedef struct lk__prior {
    lk__train_data data;   /* the class images' cached posteriors (n_var 1) */
    int64_t *ids;          /* (n_ctx) the class prompt's token ids */
    int n_ctx;
    float weight;          /* lambda */
    int generated;         /* images made at init */
    lk_train_batch batch;  /* the combined batch (2B) */
} lk__prior;

/* Generate the missing class images (lk_prior_generate_class_images), load and encode
 * class_00000.png .. class_{n-1}.png at the training resolution, tokenize the class prompt.
 * Call from a method's prepare, before adding hooks or tokens. *p is overwritten. */
lk_status lk__prior_init(lk__prior *p, lk_trainer *tr, const lk_prior_opts *o);
void lk__prior_free(lk__prior *p); /* accepts NULL / a zeroed prior */
/* The batch inst followed by inst->B class samples: class image (randint), posterior sample,
 * noise, timesteps drawn from the trainer's generator in that order; loss weights 2 (instance)
 * and 2 * lambda (class) so that the weighted mean over 2B samples is
 * mean(instance) + lambda * mean(prior). *out borrows p's batch (valid until the next call). */
lk_status lk__prior_extend(lk__prior *p, lk_trainer *tr, const lk_train_batch *inst,
                           const lk_train_batch **out);
/* "{class}" in text replaced by class_word (NULL: "") into out (cap bytes). */
lk_status lk__prior_fill_class(const char *text, const char *class_word, char *out, size_t cap);

#endif
