/* status.c: status codes and the thread-local error message (house error model, STYLE.md). */
#define _POSIX_C_SOURCE 200809L
#include "likeness/core.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define LK_MSG_LEN 1024
static _Thread_local char lk_msg[LK_MSG_LEN];

const char *lk_last_error(void) { return lk_msg; }

void lk_clear_error(void) { lk_msg[0] = '\0'; }

const char *lk_status_str(lk_status s) {
    switch (s) {
    case LK_OK: return "ok";
    case LK_ERR_INVALID: return "invalid argument";
    case LK_ERR_NOMEM: return "out of memory";
    case LK_ERR_IO: return "I/O error";
    case LK_ERR_FORMAT: return "malformed file";
    case LK_ERR_UNSUPPORTED: return "unsupported";
    case LK_ERR_STATE: return "invalid state";
    case LK_ERR_INTERRUPTED: return "interrupted";
    }
    return "unknown status";
}

lk_status lk_fail(lk_status s, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(lk_msg, sizeof lk_msg, fmt, ap);
    va_end(ap);
    return s;
}

lk_status lk_fail_prefix(lk_status s, const char *fmt, ...) {
    char prefix[LK_MSG_LEN], old[LK_MSG_LEN];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, lk_msg, sizeof old);
    size_t pl = strnlen(prefix, sizeof prefix - 1);
    memcpy(lk_msg, prefix, pl);
    size_t ol = strnlen(old, sizeof old - 1);
    if (ol > sizeof lk_msg - 1 - pl) ol = sizeof lk_msg - 1 - pl;
    memcpy(lk_msg + pl, old, ol);
    lk_msg[pl + ol] = '\0';
    return s;
}

const char *lk_version(void) { return LK_VERSION_STRING; }

size_t lk_dtype_size(lk_dtype dt) {
    switch (dt) {
    case LK_F32: return 4;
    case LK_F16: return 2;
    case LK_BF16: return 2;
    case LK_I64: return 8;
    case LK_I32: return 4;
    case LK_U8: return 1;
    default: return 0;
    }
}

const char *lk_dtype_name(lk_dtype dt) {
    switch (dt) {
    case LK_F32: return "F32";
    case LK_F16: return "F16";
    case LK_BF16: return "BF16";
    case LK_I64: return "I64";
    case LK_I32: return "I32";
    case LK_U8: return "U8";
    default: return "?";
    }
}
