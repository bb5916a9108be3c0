/* fileio.c: mkdir -p, and text writes and file copies made atomic by writing a temporary file
 * and renaming it over the target (POSIX rename replaces atomically within one file system). */
#define _POSIX_C_SOURCE 200809L
#include "core/fileio.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* mkdir(path) that accepts an existing folder; the message names path. */
static lk_status lk__mkdir_one(const char *path) {
    if (mkdir(path, 0777) == 0) return LK_OK;
    int err = errno;
    struct stat st;
    if (err == EEXIST) {
        if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) return LK_OK;
        err = ENOTDIR; /* a file (or a dangling link) of that name */
    }
    return lk_fail(LK_ERR_IO, "%s: cannot create the folder: %s", path, strerror(err));
}

/* Contract: see fileio.h. */
lk_status lk__mkdirs(const char *path) {
    if (!path || !*path) return lk_fail(LK_ERR_INVALID, "mkdirs: %s path", path ? "empty" : "NULL");
    const size_t n = strlen(path);
    char *buf = malloc(n + 1);
    if (!buf) return lk_fail(LK_ERR_NOMEM, "out of memory");
    memcpy(buf, path, n + 1);
    lk_status s = LK_OK;
    for (char *q = buf + 1; *q && s == LK_OK; q++) {
        if (*q != '/' || q[-1] == '/') continue; /* "a//b": make "a" once */
        *q = 0;
        s = lk__mkdir_one(buf);
        *q = '/';
    }
    if (s == LK_OK) s = lk__mkdir_one(buf);
    free(buf);
    return s;
}

/* "<path>.tmp", malloc'd; NULL after setting the message. */
static char *lk__tmp_name(const char *path) {
    const size_t n = strlen(path);
    char *t = malloc(n + 5);
    if (!t) {
        lk_fail(LK_ERR_NOMEM, "out of memory");
        return NULL;
    }
    memcpy(t, path, n);
    memcpy(t + n, ".tmp", 5);
    return t;
}

/* Close out (opened for tmp, written ok so far, else failing with errno err) and rename tmp to
 * path; on any failure remove tmp and return err (0 on success). */
static int lk__finish_tmp(FILE *out, bool ok, int err, const char *tmp, const char *path) {
    if (fclose(out) != 0 && ok) {
        ok = false;
        err = errno;
    }
    if (ok && rename(tmp, path) != 0) {
        ok = false;
        err = errno;
    }
    if (ok) return 0;
    remove(tmp);
    return err ? err : EIO;
}

/* Contract: see fileio.h. */
lk_status lk__write_text_atomic(const char *path, const char *text) {
    if (!path || !text) return lk_fail(LK_ERR_INVALID, "write_text: NULL argument");
    char *tmp = lk__tmp_name(path);
    if (!tmp) return LK_ERR_NOMEM;
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        lk_status s = lk_fail(LK_ERR_IO, "%s: cannot write: %s", tmp, strerror(errno));
        free(tmp);
        return s;
    }
    const size_t n = strlen(text);
    const bool ok = fwrite(text, 1, n, f) == n;
    const int err = lk__finish_tmp(f, ok, ok ? 0 : errno, tmp, path);
    free(tmp);
    return err ? lk_fail(LK_ERR_IO, "%s: cannot write: %s", path, strerror(err)) : LK_OK;
}

/* Contract: see fileio.h. */
lk_status lk__copy_file_atomic(const char *src, const char *dst) {
    if (!src || !dst) return lk_fail(LK_ERR_INVALID, "copy_file: NULL argument");
    FILE *in = fopen(src, "rb");
    if (!in) return lk_fail(LK_ERR_IO, "%s: cannot read: %s", src, strerror(errno));
    char *tmp = lk__tmp_name(dst);
    if (!tmp) {
        fclose(in);
        return LK_ERR_NOMEM;
    }
    FILE *out = fopen(tmp, "wb");
    if (!out) {
        lk_status s = lk_fail(LK_ERR_IO, "%s: cannot write: %s", tmp, strerror(errno));
        fclose(in);
        free(tmp);
        return s;
    }
    char buf[65536];
    size_t k;
    bool ok = true;
    int err = 0;
    while (ok && (k = fread(buf, 1, sizeof buf, in)) > 0) {
        ok = fwrite(buf, 1, k, out) == k;
        if (!ok) err = errno;
    }
    if (ok && ferror(in)) {
        ok = false;
        err = errno;
    }
    fclose(in);
    err = lk__finish_tmp(out, ok, err, tmp, dst);
    free(tmp);
    return err ? lk_fail(LK_ERR_IO, "%s: cannot copy to %s: %s", src, dst, strerror(err)) : LK_OK;
}

lk_status lk__read_file(const char *path, size_t max, char **data, size_t *len) {
    *data = NULL;
    *len = 0;
    if (!path) return lk_fail(LK_ERR_INVALID, "read_file: NULL path");
    FILE *f = fopen(path, "rb");
    if (!f) return lk_fail(LK_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    size_t cap = 0, n = 0;
    char *buf = NULL;
    lk_status st = LK_OK;
    for (;;) {
        if (n == cap) {
            if (n > max) {
                st = lk_fail(LK_ERR_FORMAT, "%s: larger than %zu bytes", path, max);
                break;
            }
            size_t nc = cap ? cap * 2 : (size_t)1 << 16;
            if (nc > max + 1) nc = max + 1;
            char *nb = realloc(buf, nc + 1);
            if (!nb) {
                st = lk_fail(LK_ERR_NOMEM, "%s: out of memory", path);
                break;
            }
            buf = nb;
            cap = nc;
        }
        size_t got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (got == 0) {
            if (ferror(f)) st = lk_fail(LK_ERR_IO, "%s: read failed", path);
            break;
        }
    }
    fclose(f);
    if (st != LK_OK) {
        free(buf);
        return st;
    }
    if (!buf && !(buf = malloc(1))) return lk_fail(LK_ERR_NOMEM, "%s: out of memory", path);
    buf[n] = '\0';
    *data = buf;
    *len = n;
    return LK_OK;
}
