/* test_fileio.c: the shared file helpers of src/core/fileio.c: mkdir -p (nested, existing,
 * through a file), atomic text writes and copies (replace, no temporary file left, failures
 * that name the file and leave the target untouched). */
#define _POSIX_C_SOURCE 200809L
#include "harness.h"
#include "core/fileio.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char g_root[64];

/* path of name inside the test folder (a static buffer per slot) */
static const char *at(int slot, const char *name) {
    static char buf[4][512];
    snprintf(buf[slot], sizeof buf[slot], "%s/%s", g_root, name);
    return buf[slot];
}

static int is_dir(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

static int exists(const char *p) {
    struct stat st;
    return lstat(p, &st) == 0;
}

static int file_is(const char *p, const char *text) {
    char *b = lk_t_read_file(p, NULL);
    int ok = b && strcmp(b, text) == 0;
    free(b);
    return ok;
}

static int error_names(const char *what) { return strstr(lk_last_error(), what) != NULL; }

static void test_mkdirs(void) {
    CHECK_OK(lk__mkdirs(at(0, "a/b/c")));
    CHECK(is_dir(at(0, "a")) && is_dir(at(1, "a/b")) && is_dir(at(2, "a/b/c")));
    CHECK_OK(lk__mkdirs(at(0, "a/b/c"))); /* existing: fine */
    CHECK_OK(lk__mkdirs(at(0, "a/b")));
    CHECK_OK(lk__mkdirs(at(0, "a//b/d/"))); /* doubled and trailing slashes */
    CHECK(is_dir(at(0, "a/b/d")));
    CHECK_OK(lk__mkdirs(g_root));

    /* a path through a regular file */
    CHECK_OK(lk__write_text_atomic(at(0, "plain"), "x"));
    lk_status s = lk__mkdirs(at(0, "plain/sub/deeper"));
    CHECK(s == LK_ERR_IO);
    CHECK(error_names(at(0, "plain")) && error_names("cannot create the folder"));
    CHECK(!exists(at(0, "plain/sub")));
    s = lk__mkdirs(at(0, "plain")); /* the file itself is no folder */
    CHECK(s == LK_ERR_IO && error_names(at(0, "plain")));
    CHECK(file_is(at(0, "plain"), "x"));

    CHECK(lk__mkdirs(NULL) == LK_ERR_INVALID);
    CHECK(lk__mkdirs("") == LK_ERR_INVALID);
}

static void test_write_text(void) {
    CHECK_OK(lk__mkdirs(at(0, "w")));
    const char *p = at(1, "w/config.json");
    CHECK_OK(lk__write_text_atomic(p, "{\"first\": 1}\n"));
    CHECK(file_is(p, "{\"first\": 1}\n"));
    CHECK_OK(lk__write_text_atomic(p, "second")); /* replaces */
    CHECK(file_is(p, "second"));
    CHECK_OK(lk__write_text_atomic(p, "")); /* empty text: an empty file */
    CHECK(file_is(p, ""));
    CHECK_OK(lk__write_text_atomic(p, "third"));
    CHECK(!exists(at(2, "w/config.json.tmp")));
    CHECK(lk_t_count_entries(at(2, "w")) == 1);

    /* the folder is missing: fails naming the file, creates nothing */
    lk_status s = lk__write_text_atomic(at(2, "w/missing/x.txt"), "y");
    CHECK(s == LK_ERR_IO && error_names(at(2, "w/missing/x.txt")));
    CHECK(lk_t_count_entries(at(2, "w")) == 1);

    /* the target is a folder: the rename fails, the temporary file goes */
    CHECK_OK(lk__mkdirs(at(2, "w/sub")));
    s = lk__write_text_atomic(at(2, "w/sub"), "z");
    CHECK(s == LK_ERR_IO && error_names(at(2, "w/sub")));
    CHECK(is_dir(at(2, "w/sub")) && !exists(at(3, "w/sub.tmp")));
    CHECK(lk_t_count_entries(at(2, "w")) == 2);

    CHECK(lk__write_text_atomic(NULL, "a") == LK_ERR_INVALID);
    CHECK(lk__write_text_atomic(p, NULL) == LK_ERR_INVALID);
    CHECK(file_is(p, "third"));
}

static void test_copy(void) {
    CHECK_OK(lk__mkdirs(at(0, "c")));
    /* a binary file larger than the copy buffer, NUL bytes included */
    const size_t n = 200000 + 17;
    unsigned char *data = malloc(n);
    if (!data) {
        CHECK(data != NULL);
        return;
    }
    for (size_t i = 0; i < n; i++) data[i] = (unsigned char)((i * 2654435761u) >> 13);
    const char *src = at(1, "c/src.bin"), *dst = at(2, "c/dst.bin");
    FILE *f = fopen(src, "wb");
    CHECK(f && fwrite(data, 1, n, f) == n);
    if (f) fclose(f);
    CHECK_OK(lk__copy_file_atomic(src, dst));
    size_t got_n = 0;
    char *got = lk_t_read_file(dst, &got_n);
    CHECK(got && got_n == n && memcmp(got, data, n) == 0);
    free(got);
    free(data);

    /* over an existing file: replaced, no temporary file */
    CHECK_OK(lk__write_text_atomic(at(3, "c/small.txt"), "small"));
    CHECK_OK(lk__copy_file_atomic(at(3, "c/small.txt"), dst));
    CHECK(file_is(dst, "small"));
    CHECK(lk_t_count_entries(at(3, "c")) == 3);

    /* a missing source: LK_ERR_IO naming it, the destination untouched */
    const char *missing = at(3, "c/no_such_file.txt");
    lk_status s = lk__copy_file_atomic(missing, dst);
    CHECK(s == LK_ERR_IO);
    CHECK(error_names(missing) && error_names("cannot read"));
    CHECK(file_is(dst, "small"));
    CHECK(!exists(at(3, "c/dst.bin.tmp")) && lk_t_count_entries(at(3, "c")) == 3);

    /* a destination that cannot be written: the source untouched, nothing left behind */
    s = lk__copy_file_atomic(src, at(3, "c/missing/dst.bin"));
    CHECK(s == LK_ERR_IO && error_names(at(3, "c/missing/dst.bin")));
    CHECK(lk_t_count_entries(at(3, "c")) == 3);
    CHECK_OK(lk__mkdirs(at(3, "c/sub")));
    s = lk__copy_file_atomic(at(0, "c/small.txt"), at(3, "c/sub"));
    CHECK(s == LK_ERR_IO && error_names(at(3, "c/sub")));
    CHECK(is_dir(at(3, "c/sub")) && !exists(at(3, "c/sub.tmp")));

    CHECK(lk__copy_file_atomic(NULL, dst) == LK_ERR_INVALID);
    CHECK(lk__copy_file_atomic(src, NULL) == LK_ERR_INVALID);
}

static void cleanup(void) {
    static const char *files[] = {"plain", "w/config.json", "c/src.bin", "c/dst.bin", "c/small.txt"};
    static const char *dirs[] = {"a/b/c", "a/b/d", "a/b", "a", "w/sub", "w", "c/sub", "c"};
    for (size_t i = 0; i < sizeof files / sizeof *files; i++) remove(at(0, files[i]));
    for (size_t i = 0; i < sizeof dirs / sizeof *dirs; i++) rmdir(at(0, dirs[i]));
    CHECK(lk_t_count_entries(g_root) == 0);
    rmdir(g_root);
}

int main(void) {
    snprintf(g_root, sizeof g_root, "/tmp/lk_fileio_XXXXXX");
    REQUIRE(mkdtemp(g_root) != NULL);
    test_mkdirs();
    test_write_text();
    test_copy();
    cleanup();
    return lk_t_done();
}
