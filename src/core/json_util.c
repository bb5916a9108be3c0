/* json_util.c: strict parsing of one JSON object and type names for messages. */
#include "core/json_util.h"

#include <string.h>

const char *lk__json_type(const cJSON *v) {
    if (cJSON_IsString(v)) return "a string";
    if (cJSON_IsNumber(v)) return "a number";
    if (cJSON_IsBool(v)) return "a boolean";
    if (cJSON_IsNull(v)) return "null";
    if (cJSON_IsArray(v)) return "a list";
    if (cJSON_IsObject(v)) return "an object";
    return "invalid JSON";
}

lk_status lk__json_parse_object(const char *text, size_t len, const char *label,
                                const char *what, cJSON **root) {
    *root = NULL;
    if (strlen(text) != len) return lk_fail(LK_ERR_FORMAT, "%s: NUL byte inside the JSON text", label);
    const char *end = NULL;
    cJSON *r = cJSON_ParseWithLengthOpts(text, len, &end, 0);
    if (!r) {
        const char *at = cJSON_GetErrorPtr();
        size_t off = (at && at >= text && at <= text + len) ? (size_t)(at - text) : 0;
        return lk_fail(LK_ERR_FORMAT, "%s: not valid JSON (error near byte %zu)", label, off);
    }
    for (const char *q = end; q && q < text + len; q++)
        if (*q != ' ' && *q != '\n' && *q != '\r' && *q != '\t') {
            cJSON_Delete(r);
            return lk_fail(LK_ERR_FORMAT, "%s: trailing data after the JSON object (byte %zu)",
                           label, (size_t)(q - text));
        }
    if (!cJSON_IsObject(r)) {
        const char *t = lk__json_type(r);
        cJSON_Delete(r);
        return lk_fail(LK_ERR_FORMAT, "%s: the %s must be a JSON object, got %s", label, what, t);
    }
    *root = r;
    return LK_OK;
}
