/* threads.c: the OpenMP thread count shared by every kernel (and OpenBLAS, OpenMP build). */
#include "likeness/core.h"

#include <omp.h>

void lk_set_num_threads(int n) {
    if (n < 1) n = 1;
    omp_set_num_threads(n);
}

int lk_get_num_threads(void) { return omp_get_max_threads(); }
