/* blas_env.c: OpenBLAS picks its kernels from the CPU model when it loads. On virtual machines
 * whose CPU model it does not know (seen: a Sapphire-Rapids-class VM under Debian's OpenBLAS
 * 0.3.21) it falls back to its "Prescott" SSE3 kernels: sgemm at 29 instead of 100 GFLOP/s.
 * The choice can only be overridden by OPENBLAS_CORETYPE before the library loads, so
 * executables re-run themselves once with it set from the CPU's actual features. */
#define _GNU_SOURCE
#include "likeness/core.h"

#include <cblas.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

const char *lk_blas_corename(void) { return openblas_get_corename(); }

const char *lk_blas_recommended_coretype(void) {
    const char *core = openblas_get_corename();
    if (!core || (strcasecmp(core, "prescott") && strcasecmp(core, "core2") &&
                  strcasecmp(core, "katmai") && strcasecmp(core, "unknown")))
        return NULL;
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq"))
        return "SkylakeX";
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return "Haswell";
#endif
    return NULL;
}

void lk_blas_reexec_if_misdetected(int argc, char **argv) {
    (void)argc;
    const char *ct = lk_blas_recommended_coretype();
    if (!ct || getenv("OPENBLAS_CORETYPE") || getenv("LK_BLAS_REEXEC") || !argv) return;
    if (setenv("OPENBLAS_CORETYPE", ct, 1) || setenv("LK_BLAS_REEXEC", "1", 1)) return;
    execv("/proc/self/exe", argv);
    /* exec failed: carry on with the slow kernels */
    unsetenv("OPENBLAS_CORETYPE");
}
