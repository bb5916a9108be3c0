/* generate_example.c: the C API end to end, as a short program: load a Stable Diffusion model,
 * encode a prompt, sample a latent, decode it and write a PNG with its A1111 parameters.
 * Usage: generate_example MODEL OUT.png [PROMPT] [STEPS] [SIZE] [SEED] */
#include <stdio.h>
#include <stdlib.h>

#include <likeness.h>
#include <likeness/image.h>
#include <likeness/pipeline.h>

static int fail(const char *what) {
    fprintf(stderr, "generate_example: %s: %s\n", what, lk_last_error());
    return 1;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: generate_example MODEL OUT.png [PROMPT] [STEPS] [SIZE] [SEED]\n");
        return 2;
    }
    const char *prompt = argc > 3 ? argv[3] : "a photo of a cat";

    /* 1. load: a diffusers folder or a single .safetensors file (then set opts.tokenizer_dir) */
    lk_sd_pipeline *p = NULL;
    if (lk_sd_pipeline_load(&p, argv[1], NULL) != LK_OK) return fail("load");

    /* 2. generation settings: DPM++ 2M, CFG 7.5 by default */
    lk_sd_gen_params g;
    lk_sd_gen_params_default(&g);
    g.prompt = prompt;
    g.negative_prompt = "blurry";
    g.steps = argc > 4 ? atoi(argv[4]) : 20;
    g.width = g.height = argc > 5 ? atoi(argv[5]) : 0; /* 0: the model's default size */
    g.seed = argc > 6 ? strtoull(argv[6], NULL, 10) : 42;
    if (g.width == 0) lk_sd_pipeline_geometry(p, NULL, &g.width, &g.height);

    /* 3. encode the prompt and the negative prompt (A1111 emphasis syntax works) */
    lk_prompt_cond cond, uncond;
    if (lk_sd_pipeline_encode(p, g.prompt, g.negative_prompt, 1, true, &cond, &uncond) != LK_OK) {
        lk_sd_pipeline_free(p);
        return fail("encode");
    }

    /* 4. sample: the initial latent is torch.randn for the seed; then the guided loop */
    int c, lh, lw;
    lk_status s = lk_sd_pipeline_latent_shape(p, g.width, g.height, &c, &lh, &lw);
    float *latent = malloc((size_t)c * lh * lw * sizeof *latent);
    float *image = malloc((size_t)3 * g.width * g.height * sizeof *image);
    if (s == LK_OK && (!latent || !image)) s = lk_fail(LK_ERR_NOMEM, "out of memory");
    if (s == LK_OK) s = lk_sd_pipeline_sample(p, &g, &cond, &uncond, latent, NULL);

    /* 5. decode to floats in [-1, 1], then to 8-bit RGB */
    if (s == LK_OK) s = lk_sd_pipeline_decode(p, latent, lh, lw, image);
    lk_image img = {0};
    if (s == LK_OK) s = lk_image_from_chw(&img, image, 3, g.height, g.width, LK_RANGE_SYMMETRIC);

    /* 6. write the PNG (atomically) with the A1111 "parameters" text */
    char hash[11] = "";
    char *params = NULL;
    if (s == LK_OK) s = lk_sd_model_hash(lk_sd_pipeline_model(p), hash);
    if (s == LK_OK) {
        lk_sd_infotext info = {.prompt = g.prompt, .negative_prompt = g.negative_prompt,
                               .steps = g.steps, .sampler = g.sampler, .cfg_scale = (double)g.cfg_scale,
                               .seed = g.seed, .width = g.width, .height = g.height,
                               .model_hash = hash};
        s = lk_sd_infotext_format(&info, &params);
    }
    if (s == LK_OK) {
        lk_image_text kv = {.key = "parameters", .value = params};
        lk_png_write_opts wo = {.level = LK_PNG_LEVEL_DEFAULT, .text = &kv, .n_text = 1};
        s = lk_image_save_png(&img, argv[2], &wo);
    }
    int rc = s == LK_OK ? 0 : fail("generate");
    if (rc == 0) printf("wrote %s\n%s\n", argv[2], params);
    free(params);
    lk_image_free(&img);
    free(latent);
    free(image);
    lk_prompt_cond_free(&cond);
    lk_prompt_cond_free(&uncond);
    lk_sd_pipeline_free(p);
    return rc;
}
