/* sha256.h: SHA-256 (FIPS 180-4), streaming and whole-file, for model hashes (A1111's
 * "Model hash" is the first 10 hex digits of the sha256 of the checkpoint file). */
#ifndef LK_CORE_SHA256_H
#define LK_CORE_SHA256_H

#include "likeness/core.h"

typedef struct lk_sha256 {
    uint32_t h[8];
    uint64_t nbytes;     /* message length so far */
    uint8_t buf[64];     /* pending partial block */
    size_t nbuf;
} lk_sha256;

/* Start a new digest. Cannot fail. */
void lk_sha256_init(lk_sha256 *c);
/* Absorb n bytes (data may be NULL when n is 0). Cannot fail. */
void lk_sha256_update(lk_sha256 *c, const void *data, size_t n);
/* Finish: 32-byte digest into out; c must be re-initialised before reuse. */
void lk_sha256_final(lk_sha256 *c, uint8_t out[32]);
/* Digest of a buffer as 64 lower-case hex digits + NUL. Cannot fail. */
void lk_sha256_hex(const void *data, size_t n, char hex[65]);
/* Digest of a whole file as 64 lower-case hex digits + NUL. LK_ERR_IO (message names the file)
 * when it cannot be opened or read. */
lk_status lk_sha256_file(const char *path, char hex[65]);
/* Tests: force the portable code (true) or re-detect the CPU's SHA extensions (false). Returns
 * whether the SHA extensions are now used. Not thread-safe against concurrent hashing. */
bool lk__sha256_use_portable(bool portable);

#endif
