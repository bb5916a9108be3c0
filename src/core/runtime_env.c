/* runtime_env.c: two settings that the OpenMP runtime and OpenBLAS read only when they load,
 * and that decide the speed of everything:
 *   - OpenBLAS picks its kernels from the CPU model. On virtual machines whose CPU model it does
 *     not know (seen: a Sapphire-Rapids-class VM under Debian's OpenBLAS 0.3.21) it falls back
 *     to its "Prescott" SSE3 kernels: sgemm at 29 instead of 100 GFLOP/s. OPENBLAS_CORETYPE
 *     from the CPU's actual features fixes it.
 *   - libgomp with OMP_WAIT_POLICY unset: every OpenBLAS call from our threads cost 8-12 ms of
 *     waiting on this machine (a 77x768x320 linear: 12 ms instead of 0.3 ms; the SD-1.5 UNet
 *     step at 256x256: 8.7 s instead of 1.3 s). An explicit policy removes it: "active" spins
 *     (fastest on an idle machine: benchmarks), "passive" sleeps (about 10% slower idle, far
 *     better when other processes compete for the cores: the command, tests).
 * Executables re-run themselves once with these set; library users set them in the
 * environment (README). */
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

void lk_reexec_with_tuned_env(int argc, char **argv, const char *wait_policy) {
    (void)argc;
    if (!argv || getenv("LK_REEXEC_DONE")) return;
    const char *ct = getenv("OPENBLAS_CORETYPE") ? NULL : lk_blas_recommended_coretype();
    bool policy = getenv("OMP_WAIT_POLICY") == NULL && wait_policy;
    if (!ct && !policy) return;
    if (setenv("LK_REEXEC_DONE", "1", 1)) return;
    if (ct && setenv("OPENBLAS_CORETYPE", ct, 1)) return;
    if (policy && setenv("OMP_WAIT_POLICY", wait_policy, 1)) return;
    execv("/proc/self/exe", argv);
    /* exec failed: carry on as loaded */
}
