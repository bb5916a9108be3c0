/* likeness/core.h: status codes, thread-local error messages, dtypes, half-precision
 * conversion, aligned memory and threading controls. Everything else builds on this. */
#ifndef LIKENESS_CORE_H
#define LIKENESS_CORE_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

#ifdef __cplusplus
extern "C" {
#endif

#define LK_VERSION_MAJOR 0
#define LK_VERSION_MINOR 1
#define LK_VERSION_PATCH 0
#define LK_VERSION_STRING "0.1.0"

/* Every fallible library function returns an lk_status. On failure a one-line message
 * describing what and where is readable with lk_last_error() on the same thread. */
typedef enum lk_status {
    LK_OK = 0,
    LK_ERR_INVALID = 1,     /* bad argument: shape mismatch, out-of-range value, ... */
    LK_ERR_NOMEM = 2,       /* allocation failed */
    LK_ERR_IO = 3,          /* open/read/write/rename failed */
    LK_ERR_FORMAT = 4,      /* malformed file contents */
    LK_ERR_UNSUPPORTED = 5, /* valid but not supported (dtype, architecture, ...) */
    LK_ERR_STATE = 6,       /* call not valid in the current state (e.g. backward twice) */
    LK_ERR_INTERRUPTED = 7, /* stopped on request (Ctrl-C) */
} lk_status;

/* The message of the last failure on this thread ("" when none). Borrowed; valid until the
 * next failing call on this thread. */
const char *lk_last_error(void);
/* Name of a status code ("invalid argument", ...). Static string. */
const char *lk_status_str(lk_status s);
/* Set the thread-local message (printf-style) and return s, so code can write
 * `return lk_fail(LK_ERR_INVALID, "conv2d: ...", ...);`. */
lk_status lk_fail(lk_status s, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
/* Prepend context to the current message: "file.safetensors: " + old message. Returns s. */
lk_status lk_fail_prefix(lk_status s, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
void lk_clear_error(void);

const char *lk_version(void);

/* ---- dtypes ---- */
typedef enum lk_dtype {
    LK_F32 = 0,
    LK_F16 = 1,
    LK_BF16 = 2,
    LK_I64 = 3,
    LK_I32 = 4,
    LK_U8 = 5,
    LK_DTYPE_COUNT
} lk_dtype;

size_t lk_dtype_size(lk_dtype dt);
const char *lk_dtype_name(lk_dtype dt); /* "F32", "F16", "BF16", "I64", "I32", "U8" */

/* ---- half precision (F16C / AVX-512 paths where available, exact round-to-nearest-even) ---- */
float lk_f16_to_f32(uint16_t h);
uint16_t lk_f32_to_f16(float f);
float lk_bf16_to_f32(uint16_t h);
uint16_t lk_f32_to_bf16(float f); /* round to nearest even, NaN preserved */
void lk_f16_to_f32_n(float *dst, const uint16_t *src, size_t n);
void lk_f32_to_f16_n(uint16_t *dst, const float *src, size_t n);
void lk_bf16_to_f32_n(float *dst, const uint16_t *src, size_t n);
void lk_f32_to_bf16_n(uint16_t *dst, const float *src, size_t n);
/* Widen n elements of src (dtype dt: F32, F16 or BF16) to f32. */
void lk_widen_f32(float *dst, const void *src, lk_dtype dt, size_t n);

/* ---- memory ---- */
#define LK_ALIGN 64
/* 64-byte aligned allocation; NULL (with message set) on failure or size overflow.
 * lk_aligned_calloc zero-fills. Free with lk_aligned_free (accepts NULL). */
void *lk_aligned_alloc(size_t nbytes);
void *lk_aligned_calloc(size_t nbytes);
void lk_aligned_free(void *p);
/* Overflow-checked size arithmetic: return false on overflow. */
bool lk_mul_overflow(size_t a, size_t b, size_t *out);
bool lk_add_overflow(size_t a, size_t b, size_t *out);

/* ---- threads ---- */
/* Number of OpenMP threads the kernels use (default: OMP_NUM_THREADS or all cores). */
void lk_set_num_threads(int n);
int lk_get_num_threads(void);

/* ---- BLAS ---- */
/* The kernel set OpenBLAS chose at load time ("SkylakeX", "Haswell", "Prescott", ...). */
const char *lk_blas_corename(void);
/* The OPENBLAS_CORETYPE this CPU should use when OpenBLAS misdetected it (an unknown CPU model,
 * common in VMs, makes it fall back to slow SSE3 kernels), or NULL when its choice is fine. */
const char *lk_blas_recommended_coretype(void);
/* For programs (not libraries), first thing in main: re-execute this program once with the same
 * argv when the environment lacks settings that the OpenMP runtime and OpenBLAS only read at
 * load time: OPENBLAS_CORETYPE when OpenBLAS misdetected the CPU, and OMP_WAIT_POLICY =
 * wait_policy ("passive", "active", "auto": lk_auto_wait_policy(); NULL: leave it) when no
 * policy is set (libgomp's default made every BLAS call wait 8-12 ms here). Settings already in
 * the environment are kept. Returns if no re-exec happened. */
void lk_reexec_with_tuned_env(int argc, char **argv, const char *wait_policy);
/* "active" (spin: fastest when this process has the cores to itself) when fewer threads of
 * other processes are running than half the online CPUs (the median of 5 looks at /proc/loadavg
 * over 40 ms), else "passive" (sleep: far better when processes compete for the cores). */
const char *lk_auto_wait_policy(void);

#ifdef __cplusplus
}
#endif
#endif
