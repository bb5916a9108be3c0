/* fuzz_clip_model_config.c: libFuzzer target for the configuration parser of likeness's
 * CLIP-style model (lk_clip_model_config_parse: text_config, vision_config, projection_dim):
 * any bytes must parse into a configuration the model accepts, or be refused with a message,
 * never crash or overread. Build with src/models/clip_model_config.c, model_config.c,
 * src/core/status.c and cJSON. */
#include "likeness/clip_model.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* what a successful parse promises (the checks lk_clip_model_new makes) */
static int valid(const lk_clip_model_config *c) {
    const lk_clip_text_config *t = &c->text;
    if (t->hidden_size < 1 || t->intermediate_size < 1 || t->num_hidden_layers < 1 ||
        t->num_attention_heads < 1 || t->hidden_size % t->num_attention_heads ||
        t->max_position_embeddings < 1 || t->vocab_size < 1 || !(t->layer_norm_eps >= 0.0f))
        return 0;
    if (c->n_stages < 1 || c->n_stages > LK_CLIP_VISION_MAX_STAGES || c->norm_groups < 1 ||
        c->embed_dim < 1 || c->image_size < 1 || c->image_size % (1 << (c->n_stages - 1)))
        return 0;
    for (int i = 0; i < c->n_stages; i++)
        if (c->channels[i] < 1 || c->channels[i] % c->norm_groups) return 0;
    for (int i = c->n_stages; i < LK_CLIP_VISION_MAX_STAGES; i++)
        if (c->channels[i] != 0) return 0;
    return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    lk_clip_model_config c;
    const lk_status s = lk_clip_model_config_parse(&c, (const char *)data, size, "fuzz");
    if (s != LK_OK) {
        static const lk_clip_model_config zero;
        if (!lk_last_error()[0]) abort();            /* every refusal says why */
        if (memcmp(&c, &zero, sizeof c)) abort();    /* and leaves the config zeroed */
    } else if (!valid(&c)) {
        abort();
    }
    return 0;
}
