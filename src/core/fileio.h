/* fileio.h: the library's small file helpers shared by its exporters (pretraining, DreamBooth,
 * EmojiBench): mkdir -p and atomic (temporary file + rename) text writes and copies. Private. */
#ifndef LK_CORE_FILEIO_H
#define LK_CORE_FILEIO_H

#include "likeness/core.h"

/* Create the folder path and every missing folder above it (mkdir -p, mode 0777 & ~umask).
 * LK_OK when it exists already as a folder. LK_ERR_IO naming the folder that could not be made
 * (a part of path that is a file, no permission, ...); LK_ERR_INVALID for NULL or an empty path;
 * LK_ERR_NOMEM. Folders made before a failure stay. */
lk_status lk__mkdirs(const char *path);

/* Write the NUL-terminated text to path atomically: to "<path>.tmp" first, renamed over path
 * only when complete, so a reader sees the old file or the whole new one. The folder must exist.
 * On failure path is untouched and the temporary file removed: LK_ERR_IO naming the file,
 * LK_ERR_INVALID for a NULL argument, LK_ERR_NOMEM. Not for two writers of one path at once. */
lk_status lk__write_text_atomic(const char *path, const char *text);

/* Copy the file src to dst atomically (via "<dst>.tmp" + rename, as lk__write_text_atomic).
 * On failure dst is untouched and the temporary file removed: LK_ERR_IO naming src when it
 * cannot be read (missing, ...), else naming the file that could not be written;
 * LK_ERR_INVALID for a NULL argument, LK_ERR_NOMEM. */
lk_status lk__copy_file_atomic(const char *src, const char *dst);

/* Read the whole file path (at most max bytes) into *data (malloc'd, NUL-terminated at
 * data[*len], caller frees). LK_ERR_IO naming the path when it cannot be opened or read,
 * LK_ERR_FORMAT when it is larger than max, LK_ERR_NOMEM. *data is NULL on failure. */
lk_status lk__read_file(const char *path, size_t max, char **data, size_t *len);

#endif
