/* runtime_env.c: two settings that the OpenMP runtime and OpenBLAS read only when they load,
 * and that decide the speed of everything:
 *   - OpenBLAS picks its kernels from the CPU model. On virtual machines whose CPU model it does
 *     not know (seen: a Sapphire-Rapids-class VM under Debian's OpenBLAS 0.3.21) it falls back
 *     to its "Prescott" SSE3 kernels: sgemm at 29 instead of 100 GFLOP/s. OPENBLAS_CORETYPE
 *     from the CPU's actual features fixes it.
 *   - libgomp with OMP_WAIT_POLICY unset: every OpenBLAS call from our threads cost 8-12 ms of
 *     waiting on this machine (a 77x768x320 linear: 12 ms instead of 0.3 ms; the SD-1.5 UNet
 *     step at 256x256: 8.7 s instead of 1.3 s). An explicit policy removes it: "active" spins
 *     (fastest on an idle machine), "passive" sleeps (far better when other processes compete
 *     for the cores: the tests). How much "passive" costs depends on the work: 10% on a
 *     256x256 SD UNet step, 67% on a training step of the small emoji UNet (0.76 s active vs
 *     1.27 s passive per batch of 64, 2 threads, measured 2026-11-27). "auto" (the command)
 *     picks "active" when the machine is otherwise idle (fewer threads of other processes
 *     running than half the online CPUs, the median of 5 looks over 40 ms) and "passive" when
 *     it is busy. (Not the load average: it stays high for a minute after a build. Not the most
 *     of the looks: a shell or monitor running for a moment made a 35-minute benchmark run
 *     passive, 2x slower, on 2026-11-27.)
 * Executables re-run themselves once with these set; library users set them in the
 * environment (README). */
#define _GNU_SOURCE
#include "likeness/core.h"

#include <cblas.h>
#include <stdio.h>
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

/* Threads of other processes that are running or ready now: the median of 5 looks 10 ms apart
 * at /proc/loadavg's "running/total" field (which counts this thread too), so that a process
 * that runs for a moment (the shell that started us, a monitor polling) does not count but
 * one that computes does; -1 if unreadable. */
static int others_running(void) {
    int seen[5];
    for (int i = 0; i < 5; i++) {
        if (i) usleep(10000);
        double l1, l5, l15;
        int run = 0, total = 0;
        FILE *f = fopen("/proc/loadavg", "r");
        if (!f) return -1;
        const bool got = fscanf(f, "%lf %lf %lf %d/%d", &l1, &l5, &l15, &run, &total) == 5;
        fclose(f);
        if (!got) return -1;
        seen[i] = run - 1 > 0 ? run - 1 : 0;
        for (int j = i; j > 0 && seen[j - 1] > seen[j]; j--) { /* insertion sort */
            const int t = seen[j];
            seen[j] = seen[j - 1];
            seen[j - 1] = t;
        }
    }
    return seen[2];
}

const char *lk_auto_wait_policy(void) {
    const long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    const int others = others_running();
    if (others < 0 || ncpu < 1) return "passive";
    return (double)others < 0.5 * (double)ncpu ? "active" : "passive";
}

void lk_reexec_with_tuned_env(int argc, char **argv, const char *wait_policy) {
    (void)argc;
    if (!argv || getenv("LK_REEXEC_DONE")) return;
    if (wait_policy && !strcmp(wait_policy, "auto"))
        wait_policy = getenv("OMP_WAIT_POLICY") ? NULL : lk_auto_wait_policy();
    const char *ct = getenv("OPENBLAS_CORETYPE") ? NULL : lk_blas_recommended_coretype();
    bool policy = getenv("OMP_WAIT_POLICY") == NULL && wait_policy;
    if (!ct && !policy) return;
    if (setenv("LK_REEXEC_DONE", "1", 1)) return;
    if (ct && setenv("OPENBLAS_CORETYPE", ct, 1)) return;
    if (policy && setenv("OMP_WAIT_POLICY", wait_policy, 1)) return;
    execv("/proc/self/exe", argv);
    /* exec failed: carry on as loaded */
}
