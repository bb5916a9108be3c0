/* sd_keys.h: small scanners over checkpoint key names ("model.diffusion_model.input_blocks.1.
 * 0.weight"), shared by the single-file reader (CompVis -> diffusers names) and writer (the
 * inverse). Not a public interface. */
#ifndef LK_MODELS_SD_KEYS_H
#define LK_MODELS_SD_KEYS_H

#include <stdbool.h>
#include <string.h>

/* the prefixes of the CompVis / A1111 single-file layout */
#define UNET_PFX "model.diffusion_model."
#define VAE_PFX "first_stage_model."
#define CLIP_PFX "cond_stage_model.transformer."
#define OPENCLIP_PFX "cond_stage_model.model."

/* true and *s moved past p when *s starts with p */
static inline bool eat(const char **s, const char *p) {
    const size_t n = strlen(p);
    if (strncmp(*s, p, n)) return false;
    *s += n;
    return true;
}

/* A decimal index (at most 100000) followed by '.', e.g. "12.": true, *v and *s moved past it */
static inline bool eat_index(const char **s, int *v) {
    const char *p = *s;
    long x = 0;
    if (*p < '0' || *p > '9') return false;
    while (*p >= '0' && *p <= '9') {
        x = x * 10 + (*p++ - '0');
        if (x > 100000) return false;
    }
    if (*p != '.') return false;
    *v = (int)x;
    *s = p + 1;
    return true;
}

static inline bool is_param(const char *s) { return !strcmp(s, "weight") || !strcmp(s, "bias"); }

#endif
