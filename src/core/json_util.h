/* json_util.h: what the library's strict JSON readers (configs, manifests) share: the
 * description of a value's type for messages, and parsing a text that must be exactly one
 * JSON object (no NUL inside, nothing but white space after it). Private. */
#ifndef LK_CORE_JSON_UTIL_H
#define LK_CORE_JSON_UTIL_H

#include <cjson/cJSON.h>
#include <stddef.h>

#include "likeness/core.h"

/* "a string", "a number", "a boolean", "null", "a list", "an object" (for messages). */
const char *lk__json_type(const cJSON *v);

/* Parse text (len bytes, NUL-terminated at text[len]) as one JSON object into *root (the caller
 * deletes it). LK_ERR_FORMAT naming label and the byte: a NUL inside, invalid JSON, trailing
 * data, or a top level that is not an object ("the WHAT must be a JSON object, got a list"). */
lk_status lk__json_parse_object(const char *text, size_t len, const char *label,
                                const char *what, cJSON **root);

#endif
