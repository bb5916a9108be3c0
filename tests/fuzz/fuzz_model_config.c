/* fuzz_model_config.c: libFuzzer target for the network config parsers (UNet2DConditionModel,
 * AutoencoderKL, CLIPTextModel config.json text): any bytes must parse or be refused with a
 * message, never crash or overread. The first input byte picks the parser. Build with
 * src/models/model_config.c, src/core/status.c and cJSON. */
#include "likeness/model_config.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    const char *json = (const char *)data + 1;
    size_t len = size - 1;
    lk_status s;
    switch (data[0] % 3) {
    case 0: {
        lk_unet_config c;
        s = lk_unet_config_parse(&c, json, len, "fuzz");
        break;
    }
    case 1: {
        lk_vae_config c;
        s = lk_vae_config_parse(&c, json, len, "fuzz");
        break;
    }
    default: {
        lk_clip_text_config c;
        s = lk_clip_text_config_parse(&c, json, len, "fuzz");
        break;
    }
    }
    if (s != LK_OK && !lk_last_error()[0]) abort(); /* every refusal says why */
    return 0;
}
