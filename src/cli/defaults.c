/* defaults.c: default locations of the shipped model, evaluator, example and data set. */
#define _POSIX_C_SOURCE 200809L
#include "cli/defaults.h"

#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

#ifndef LK_SOURCE_DIR
#define LK_SOURCE_DIR "."
#endif

static const char *pick(const char *env, const char *rel, char *buf, size_t n) {
    const char *e = env ? getenv(env) : NULL;
    if (e && *e) return e;
    snprintf(buf, n, "%s/%s", LK_SOURCE_DIR, rel);
    struct stat st;
    if (stat(buf, &st) == 0 && S_ISDIR(st.st_mode)) return buf;
    return rel;
}

const char *lk_cli_default_model(void) {
    static char buf[4096];
    return pick("LK_MODEL", "models/emoji", buf, sizeof buf);
}

const char *lk_cli_default_evaluator(void) {
    static char buf[4096];
    return pick("LK_EVALUATOR", "models/emoji-evaluator", buf, sizeof buf);
}

const char *lk_cli_default_example(void) {
    static char buf[4096];
    return pick(NULL, "examples/emoji-fox", buf, sizeof buf);
}

const char *lk_cli_default_data(void) {
    static char buf[4096];
    const char *e = getenv("LK_DATA");
    if (e && *e) return e;
    const char *home = getenv("HOME");
    snprintf(buf, sizeof buf, "%s/.cache/likeness/emoji", home && *home ? home : ".");
    return buf;
}
