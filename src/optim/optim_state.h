/* optim_state.h (internal): what AdamW, SGD, clipping and EMA share: the trainable slice of a
 * parameter, per-thread ranges over the flat state, state offsets and save/load of per-parameter
 * state buffers ("<prefix><what>.<i>", gradient-shaped F32) and the step counter. */
#ifndef LK_OPTIM_STATE_H
#define LK_OPTIM_STATE_H

#include "likeness/optim.h"

/* Sets below this many elements run on one thread: the passes are memory-bound and a serial
 * pass of 2M elements (~1 ms) beats a fork/join when the sibling core is busy (measured 5-10 ms
 * on a loaded 2-core machine). */
#define LK_OPTIM_PAR_MIN (1 << 21)

/* Trainable part of p: the data rows that have gradient (all of p unless trainable rows). */
float *lk__optim_param_slice(const lk_tensor *p);
/* This thread's share [lo, hi) of [0, total), split in 16-element (64-byte) aligned pieces. */
void lk__optim_thread_range(int64_t total, int64_t *lo, int64_t *hi);
/* (n+1) running offsets of each parameter's trainable element count (calloc'd; caller frees);
 * NULL on allocation failure. */
int64_t *lk__optim_offsets(const lk_paramset *ps, int n);
/* The set must still hold the parameters (and gradient sizes) the state was made for; with
 * need_grad, every parameter must have its gradient. */
lk_status lk__optim_check(const lk_paramset *ps, int n, const int64_t *off, bool need_grad,
                          const char *who);
/* LK_ERR_STATE naming the first parameter without a gradient (the set was not finalized). */
lk_status lk__optim_require_grads(const lk_paramset *ps, const char *who);
/* Save "<prefix>step" (I64 [1]) / per-parameter buffers "<prefix><what>.<i>". */
lk_status lk__optim_save_step(lk_st_writer *w, const char *prefix, int64_t step);
lk_status lk__optim_save_bufs(lk_st_writer *w, const char *prefix, const char *what,
                              const lk_paramset *ps, int n, const int64_t *off, const float *buf);
/* Read "<prefix>step" (one non-negative I64). */
lk_status lk__optim_load_step(const lk_safetensors *st, const char *prefix, int64_t *step);
/* Verify every "<prefix><what>.<i>" is F32 with the right element count (check=true, nothing
 * written), or copy them into buf (check=false; call after a successful check). */
lk_status lk__optim_load_bufs(const lk_safetensors *st, const char *prefix, const char *what,
                              int n, const int64_t *off, float *buf, bool check);

#endif
