/* lk_bench_unet.c: the Stable Diffusion 1.5 UNet (859.5 M parameters, fresh weights in the real
 * key layout from lk_unet_init_weights) and VAE decoder at full size: seconds per UNet step at
 * 256x256 and 512x512 (batch 1, and batch 2 as classifier-free guidance runs it), peak resident
 * memory, and the share of the machine's measured FP32 peak.
 * PyTorch + diffusers are not installable here (no PyPI), so the reference is the figure the
 * project measured on this machine kind with PyTorch 1.13 + diffusers 0.25, fp32, 2 threads
 * (issue 3): 4.8 s/step at 256x256, 17.0 s at 512x512, peak RSS 3.7 / 4.8 GB.
 * usage: lk_bench_unet [--threads N] [--f32] [--quick] [--steps N] */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "likeness.h"

static const char *SD15_UNET =
    "{\"in_channels\":4,\"out_channels\":4,\"block_out_channels\":[320,640,1280,1280],"
    "\"layers_per_block\":2,\"down_block_types\":[\"CrossAttnDownBlock2D\",\"CrossAttnDownBlock2D\","
    "\"CrossAttnDownBlock2D\",\"DownBlock2D\"],\"up_block_types\":[\"UpBlock2D\",\"CrossAttnUpBlock2D\","
    "\"CrossAttnUpBlock2D\",\"CrossAttnUpBlock2D\"],\"cross_attention_dim\":768,\"attention_head_dim\":8,"
    "\"norm_num_groups\":32,\"norm_eps\":1e-05,\"flip_sin_to_cos\":true,\"freq_shift\":0,\"sample_size\":64}";
static const char *SD15_VAE =
    "{\"in_channels\":3,\"out_channels\":3,\"latent_channels\":4,\"layers_per_block\":2,"
    "\"block_out_channels\":[128,256,512,512],\"norm_num_groups\":32,\"scaling_factor\":0.18215,"
    "\"down_block_types\":[\"DownEncoderBlock2D\",\"DownEncoderBlock2D\",\"DownEncoderBlock2D\",\"DownEncoderBlock2D\"],"
    "\"up_block_types\":[\"UpDecoderBlock2D\",\"UpDecoderBlock2D\",\"UpDecoderBlock2D\",\"UpDecoderBlock2D\"]}";

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}
static double rss_gb(const char *key) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long v = 0;
    size_t kl = strlen(key);
    if (!f) return 0;
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, key, kl)) v = atol(line + kl + 1);
    fclose(f);
    return (double)v / 1048576.0;
}
static void rss_reset(void) {
    FILE *f = fopen("/proc/self/clear_refs", "w");
    if (f) {
        fputs("5", f);
        fclose(f);
    }
}
static void fill(float *x, size_t n, uint64_t s) {
    for (size_t i = 0; i < n; i++) {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        x[i] = (float)((double)(s >> 11) * (2.0 / 9007199254740992.0) - 1.0);
    }
}

static int fail(const char *what) {
    fprintf(stderr, "lk_bench_unet: %s: %s\n", what, lk_last_error());
    return 1;
}

int main(int argc, char **argv) {
    lk_reexec_with_tuned_env(argc, argv, "active");
    int threads = 2, steps = 2, quick = 0;
    lk_dtype store = LK_F16;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--steps") && i + 1 < argc) steps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--f32")) store = LK_F32;
        else if (!strcmp(argv[i], "--quick")) quick = 1;
        else {
            fprintf(stderr, "usage: %s [--threads N] [--steps N] [--f32] [--quick]\n", argv[0]);
            return 2;
        }
    }
    if (threads < 1 || steps < 1) return 2;
    lk_set_num_threads(threads);
    lk_unet_config uc;
    lk_vae_config vc;
    if (lk_unet_config_parse(&uc, SD15_UNET, strlen(SD15_UNET), "sd15-unet") ||
        lk_vae_config_parse(&vc, SD15_VAE, strlen(SD15_VAE), "sd15-vae"))
        return fail("config");
    double t0 = now();
    lk_weights *w = lk_weights_new();
    if (!w || lk_unet_init_weights(w, &uc, NULL, store, 1) || lk_vae_init_weights(w, &vc, "vae.", store, 2))
        return fail("init weights");
    lk_unet *u = NULL;
    lk_vae *vae = NULL;
    if (lk_unet_new(&u, &uc, w, NULL) || lk_vae_new(&vae, &vc, w, "vae.")) return fail("build");
    printf("likeness %s: SD-1.5 UNet %.1f M + VAE parameters (%s storage, %.2f GB) made in %.1f s; "
           "%d threads; OpenBLAS %s\n",
           lk_version(), (double)lk_weights_numel(w) / 1e6, lk_dtype_name(store),
           (double)lk_weights_nbytes(w) / 1073741824.0, now() - t0, threads, lk_blas_corename());

    struct {
        int px, batch;
        double ref_s, ref_gb;
    } cfgs[] = {{256, 1, 4.8, 3.7}, {256, 2, 0, 0}, {512, 1, 17.0, 4.8}, {512, 2, 0, 0}};
    int ncfg = quick ? 1 : 4;
    printf("\n%-22s %10s %10s %7s %10s %9s\n", "UNet step", "s/step", "reference", "ratio", "peak RSS", "TFLOP/s");
    for (int c = 0; c < ncfg; c++) {
        int hw = cfgs[c].px / 8, B = cfgs[c].batch;
        lk_ctx *ctx = lk_ctx_new();
        lk_set_grad_enabled(ctx, false);
        rss_reset();
        double best = 1e30;
        for (int s = 0; s < steps; s++) {
            lk_ctx_reset(ctx);
            lk_set_grad_enabled(ctx, false);
            lk_tensor *x = lk_tensor_new(ctx, LK_F32, LK_DIMS(B, 4, hw, hw));
            lk_tensor *e = lk_tensor_new(ctx, LK_F32, LK_DIMS(B, 77, 768));
            float tv = 500.0f;
            lk_tensor *tt = lk_tensor_from(ctx, LK_F32, LK_DIMS(1), &tv);
            if (!x || !e || !tt) return fail("inputs");
            fill(x->data, (size_t)lk_numel(x), 1);
            fill(e->data, (size_t)lk_numel(e), 2);
            double a = now();
            lk_tensor *y = lk_unet_forward(ctx, u, x, tt, e);
            double dt = now() - a;
            if (!y) return fail("unet forward");
            if (dt < best) best = dt;
        }
        /* 0.89 TFLOP per 512x512 step and item (issue 3); convolutions and projections scale
         * with the pixels, so 256x256 is about a quarter (attention, quadratic, is smaller) */
        double tflop = 0.89 * B * (cfgs[c].px == 512 ? 1.0 : 0.25);
        char ref[32] = "-", ratio[32] = "-";
        if (cfgs[c].ref_s > 0) {
            snprintf(ref, sizeof ref, "%.1f", cfgs[c].ref_s);
            snprintf(ratio, sizeof ratio, "%.2f", best / cfgs[c].ref_s);
        }
        printf("%4dx%-4d batch %d      %10.2f %10s %7s %8.2f GB %9.3f\n", cfgs[c].px, cfgs[c].px, B, best, ref,
               ratio, rss_gb("VmHWM"), tflop / best);
        lk_ctx_free(ctx);
    }
    /* VAE decoder at 512x512 */
    {
        lk_ctx *ctx = lk_ctx_new();
        lk_set_grad_enabled(ctx, false);
        rss_reset();
        lk_tensor *z = lk_tensor_new(ctx, LK_F32, LK_DIMS(1, 4, 64, 64));
        fill(z->data, (size_t)lk_numel(z), 3);
        double a = now();
        lk_tensor *img = lk_vae_decode(ctx, vae, z);
        double dt = now() - a;
        if (!img) return fail("vae decode");
        printf("\nVAE decode 512x512 batch 1: %.2f s, peak RSS %.2f GB\n", dt, rss_gb("VmHWM"));
        lk_ctx_free(ctx);
    }
    printf("reference: PyTorch 1.13 + diffusers 0.25 fp32 on this machine kind (issue 3); ratio = "
           "likeness / reference (target <= 0.7; peak RSS target <= 2.5 GB at 512x512 with f16 weights)\n");
    lk_unet_free(u);
    lk_vae_free(vae);
    lk_weights_free(w);
    return 0;
}
