/* safetensors.c: strict reader (mmap, zero-copy) and atomic writer of the safetensors format
 * (huggingface/safetensors: u64 LE header length, JSON header, raw little-endian data). */
#define _POSIX_C_SOURCE 200809L
#define _DEFAULT_SOURCE
#include "likeness/safetensors.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_EXACT_INT 9007199254740992.0 /* 2^53: larger JSON integers are refused */

struct lk_safetensors {
    char *label;                 /* path or caller label, for messages */
    const uint8_t *buf;          /* whole file */
    size_t len;
    void *map;                   /* mmap base (munmap on close) or NULL */
    void *owned;                 /* malloc'd copy when mmap failed, or NULL */
    int n;
    lk_st_tensor *t;             /* offset order */
    const lk_st_tensor **byname; /* sorted by name, for bsearch */
    char *strings;               /* one block holding every name, key and value */
    int nmeta;
    const char **mkey, **mval;   /* file order */
};

/* ------------------------------------------------------------------------------------------ */
/* Lexical pre-pass over the header text. cJSON accepts things strict JSON does not (control
 * bytes as whitespace, "01", numbers it rounds to doubles, invalid UTF-8 in strings), so this
 * pass enforces: valid UTF-8, JSON whitespace only, no raw control bytes or \u0000 in strings,
 * and every number a plain non-negative integer <= 2^53 (the only numbers a safetensors header
 * holds are shape entries and offsets). After it, every cJSON number is an exact integer. */

/* Length of the UTF-8 sequence at s (at most n bytes), or 0 if invalid (RFC 3629: no overlong
 * forms, no surrogates, at most U+10FFFF). */
static size_t utf8_seq(const uint8_t *s, size_t n) {
    uint8_t c = s[0];
    if (c < 0x80) return 1;
    size_t k;
    uint32_t cp;
    if (c >= 0xC2 && c <= 0xDF) { k = 2; cp = c & 0x1Fu; }
    else if (c >= 0xE0 && c <= 0xEF) { k = 3; cp = c & 0x0Fu; }
    else if (c >= 0xF0 && c <= 0xF4) { k = 4; cp = c & 0x07u; }
    else return 0;
    if (n < k) return 0;
    for (size_t i = 1; i < k; i++) {
        if ((s[i] & 0xC0) != 0x80) return 0;
        cp = (cp << 6) | (s[i] & 0x3Fu);
    }
    if ((k == 3 && cp < 0x800) || (k == 4 && (cp < 0x10000 || cp > 0x10FFFF))) return 0;
    if (cp >= 0xD800 && cp <= 0xDFFF) return 0;
    return k;
}

static int hexval(uint8_t c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static lk_status lex_check(const char *label, const uint8_t *h, size_t n) {
    size_t i = 0;
    while (i < n) {
        uint8_t c = h[i];
        if (c == '"') {
            i++;
            for (;;) {
                if (i >= n) return lk_fail(LK_ERR_FORMAT, "%s: header: unterminated string", label);
                c = h[i];
                if (c == '"') { i++; break; }
                if (c < 0x20)
                    return lk_fail(LK_ERR_FORMAT, "%s: header: control byte 0x%02x inside a string at byte %zu",
                                   label, c, i);
                if (c == '\\') {
                    if (i + 1 >= n) return lk_fail(LK_ERR_FORMAT, "%s: header: unterminated string", label);
                    uint8_t e = h[i + 1];
                    if (e == 'u') {
                        if (i + 5 >= n) return lk_fail(LK_ERR_FORMAT, "%s: header: truncated \\u escape", label);
                        int v = 0;
                        for (int k = 2; k < 6; k++) {
                            int d = hexval(h[i + (size_t)k]);
                            if (d < 0)
                                return lk_fail(LK_ERR_FORMAT, "%s: header: bad \\u escape at byte %zu", label, i);
                            v = v * 16 + d;
                        }
                        if (v == 0)
                            return lk_fail(LK_ERR_FORMAT, "%s: header: \\u0000 inside a string at byte %zu", label, i);
                        i += 6;
                    } else if (strchr("\"\\/bfnrt", e) && e != 0) {
                        i += 2;
                    } else {
                        return lk_fail(LK_ERR_FORMAT, "%s: header: bad escape at byte %zu", label, i);
                    }
                    continue;
                }
                size_t k = utf8_seq(h + i, n - i);
                if (!k) return lk_fail(LK_ERR_FORMAT, "%s: header: invalid UTF-8 at byte %zu", label, i);
                i += k;
            }
        } else if (c == '-' || (c >= '0' && c <= '9')) {
            size_t j = i;
            while (j < n && (h[j] == '-' || h[j] == '+' || h[j] == '.' || h[j] == 'e' || h[j] == 'E' ||
                             (h[j] >= '0' && h[j] <= '9')))
                j++;
            size_t len = j - i;
            bool digits = true;
            for (size_t k = i; k < j; k++) digits = digits && h[k] >= '0' && h[k] <= '9';
            uint64_t v = 0;
            if (digits && len <= 16)
                for (size_t k = i; k < j; k++) v = v * 10u + (uint64_t)(h[k] - '0');
            if (!digits || len == 0 || len > 16 || (len > 1 && h[i] == '0') || v > (UINT64_C(1) << 53))
                return lk_fail(LK_ERR_FORMAT,
                               "%s: header: number '%.*s' at byte %zu is not an integer in [0, 2^53]",
                               label, (int)(len > 40 ? 40 : len), (const char *)h + i, i);
            i = j;
        } else if (c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '{' || c == '}' || c == '[' ||
                   c == ']' || c == ':' || c == ',' || (c >= 'a' && c <= 'z')) {
            i++; /* structure and literals; cJSON checks the grammar */
        } else {
            return lk_fail(LK_ERR_FORMAT, "%s: header: unexpected byte 0x%02x at byte %zu", label, c, i);
        }
    }
    return LK_OK;
}

/* ------------------------------------------------------------------------------------------ */

static const struct { const char *name; int dt; } k_dtypes[] = {
    {"F32", LK_F32}, {"F16", LK_F16}, {"BF16", LK_BF16}, {"I64", LK_I64}, {"I32", LK_I32}, {"U8", LK_U8},
    /* valid safetensors dtypes likeness does not read */
    {"F64", -1}, {"I8", -1}, {"I16", -1}, {"U16", -1}, {"U32", -1}, {"U64", -1}, {"BOOL", -1},
    {"F8_E4M3", -1}, {"F8_E5M2", -1}, {"F6_E2M3", -1}, {"F6_E3M2", -1}, {"F4", -1}, {"E8M0", -1},
    {"F8_E8M0", -1}, {"C64", -1}, {"F8_E4M3FNUZ", -1}, {"F8_E5M2FNUZ", -1},
};

typedef struct entry { /* parsing scratch */
    const char *name;
    int dtype;
    int ndim;
    int64_t shape[LK_MAX_DIMS];
    uint64_t begin, end;
} entry;

static int cmp_offset(const void *a, const void *b) {
    const lk_st_tensor *x = a, *y = b;
    const uint8_t *px = x->data, *py = y->data;
    if (px != py) return px < py ? -1 : 1;
    if (x->nbytes != y->nbytes) return x->nbytes < y->nbytes ? -1 : 1;
    return strcmp(x->name, y->name);
}

static int cmp_name_ptr(const void *a, const void *b) {
    const lk_st_tensor *x = *(const lk_st_tensor *const *)a, *y = *(const lk_st_tensor *const *)b;
    return strcmp(x->name, y->name);
}

static int cmp_str_ptr(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static void shape_str(char *buf, size_t len, const int64_t *shape, int ndim) {
    size_t o = (size_t)snprintf(buf, len, "[");
    for (int i = 0; i < ndim && o < len; i++)
        o += (size_t)snprintf(buf + o, len - o, i ? ",%lld" : "%lld", (long long)shape[i]);
    if (o < len) snprintf(buf + o, len - o, "]");
}

/* Validate one tensor entry (an object with exactly dtype/shape/data_offsets). */
static lk_status parse_entry(const char *label, const cJSON *obj, entry *e) {
    const char *nm = e->name;
    if (!cJSON_IsObject(obj))
        return lk_fail(LK_ERR_FORMAT, "%s: tensor '%.200s': entry is not an object", label, nm);
    const cJSON *dt = NULL, *sh = NULL, *off = NULL;
    for (const cJSON *c = obj->child; c; c = c->next) {
        const cJSON **slot = NULL;
        if (c->string && !strcmp(c->string, "dtype")) slot = &dt;
        else if (c->string && !strcmp(c->string, "shape")) slot = &sh;
        else if (c->string && !strcmp(c->string, "data_offsets")) slot = &off;
        if (!slot)
            return lk_fail(LK_ERR_FORMAT, "%s: tensor '%.200s': unexpected key '%.100s'", label, nm,
                           c->string ? c->string : "");
        if (*slot)
            return lk_fail(LK_ERR_FORMAT, "%s: tensor '%.200s': duplicate key '%s'", label, nm, c->string);
        *slot = c;
    }
    if (!dt || !sh || !off)
        return lk_fail(LK_ERR_FORMAT, "%s: tensor '%.200s': missing '%s'", label, nm,
                       !dt ? "dtype" : !sh ? "shape" : "data_offsets");
    if (!cJSON_IsString(dt))
        return lk_fail(LK_ERR_FORMAT, "%s: tensor '%.200s': dtype is not a string", label, nm);
    e->dtype = -2;
    for (size_t i = 0; i < sizeof k_dtypes / sizeof k_dtypes[0]; i++)
        if (!strcmp(dt->valuestring, k_dtypes[i].name)) e->dtype = k_dtypes[i].dt;
    if (e->dtype == -1)
        return lk_fail(LK_ERR_UNSUPPORTED, "%s: tensor '%.200s': dtype %s is not supported", label, nm,
                       dt->valuestring);
    if (e->dtype < 0)
        return lk_fail(LK_ERR_FORMAT, "%s: tensor '%.200s': unknown dtype '%.40s'", label, nm,
                       dt->valuestring);
    if (!cJSON_IsArray(sh))
        return lk_fail(LK_ERR_FORMAT, "%s: tensor '%.200s': shape is not an array", label, nm);
    int nd = cJSON_GetArraySize(sh);
    if (nd > LK_MAX_DIMS)
        return lk_fail(LK_ERR_UNSUPPORTED, "%s: tensor '%.200s': %d dims, at most %d supported", label, nm,
                       nd, LK_MAX_DIMS);
    e->ndim = 0;
    size_t numel = 1;
    bool ovf = false;
    for (const cJSON *c = sh->child; c; c = c->next) {
        if (!cJSON_IsNumber(c)) /* the lexical pass already made numbers exact integers >= 0 */
            return lk_fail(LK_ERR_FORMAT, "%s: tensor '%.200s': shape entry is not an integer", label, nm);
        e->shape[e->ndim++] = (int64_t)c->valuedouble;
        ovf = ovf || lk_mul_overflow(numel, (size_t)c->valuedouble, &numel);
    }
    size_t nbytes = 0;
    ovf = ovf || lk_mul_overflow(numel, lk_dtype_size((lk_dtype)e->dtype), &nbytes);
    char sbuf[160];
    shape_str(sbuf, sizeof sbuf, e->shape, e->ndim);
    if (ovf)
        return lk_fail(LK_ERR_FORMAT, "%s: tensor '%.200s': byte size of %s %s overflows", label, nm,
                       dt->valuestring, sbuf);
    if (!cJSON_IsArray(off) || cJSON_GetArraySize(off) != 2 || !cJSON_IsNumber(off->child) ||
        !cJSON_IsNumber(off->child->next))
        return lk_fail(LK_ERR_FORMAT, "%s: tensor '%.200s': data_offsets is not [begin, end]", label, nm);
    e->begin = (uint64_t)off->child->valuedouble;
    e->end = (uint64_t)off->child->next->valuedouble;
    if (e->end < e->begin)
        return lk_fail(LK_ERR_FORMAT, "%s: tensor '%.200s': data_offsets [%llu,%llu] end before begin", label,
                       nm, (unsigned long long)e->begin, (unsigned long long)e->end);
    if (e->end - e->begin != nbytes)
        return lk_fail(LK_ERR_FORMAT, "%s: tensor '%.200s': data_offsets [%llu,%llu] hold %llu bytes but %s %s needs %zu",
                       label, nm, (unsigned long long)e->begin, (unsigned long long)e->end,
                       (unsigned long long)(e->end - e->begin), dt->valuestring, sbuf, nbytes);
    return LK_OK;
}

static lk_status parse_metadata(lk_safetensors *st, const cJSON *m, char **sp) {
    const char *label = st->label;
    if (!cJSON_IsObject(m)) return lk_fail(LK_ERR_FORMAT, "%s: __metadata__ is not an object", label);
    int nm = cJSON_GetArraySize(m);
    st->mkey = calloc((size_t)nm + 1, sizeof *st->mkey);
    st->mval = calloc((size_t)nm + 1, sizeof *st->mval);
    const char **sorted = calloc((size_t)nm + 1, sizeof *sorted);
    if (!st->mkey || !st->mval || !sorted) {
        free(sorted);
        return lk_fail(LK_ERR_NOMEM, "%s: out of memory reading metadata", label);
    }
    for (const cJSON *c = m->child; c; c = c->next) {
        if (!cJSON_IsString(c))
            { free(sorted); return lk_fail(LK_ERR_FORMAT, "%s: __metadata__ value of '%.100s' is not a string", label, c->string); }
        size_t kl = strlen(c->string) + 1, vl = strlen(c->valuestring) + 1;
        memcpy(*sp, c->string, kl);
        st->mkey[st->nmeta] = *sp;
        *sp += kl;
        memcpy(*sp, c->valuestring, vl);
        st->mval[st->nmeta] = *sp;
        *sp += vl;
        sorted[st->nmeta] = st->mkey[st->nmeta];
        st->nmeta++;
    }
    qsort(sorted, (size_t)st->nmeta, sizeof *sorted, cmp_str_ptr);
    for (int i = 1; i < st->nmeta; i++)
        if (!strcmp(sorted[i - 1], sorted[i])) {
            lk_status s = lk_fail(LK_ERR_FORMAT, "%s: __metadata__ has duplicate key '%.100s'", label, sorted[i]);
            free(sorted);
            return s;
        }
    free(sorted);
    return LK_OK;
}

/* Bytes of strings (names, metadata keys and values, NULs included) the header holds. */
static size_t string_bytes(const cJSON *root) {
    size_t n = 0;
    for (const cJSON *c = root->child; c; c = c->next) {
        n += strlen(c->string) + 1;
        if (!strcmp(c->string, "__metadata__") && cJSON_IsObject(c))
            for (const cJSON *m = c->child; m; m = m->next)
                n += strlen(m->string) + 1 + (cJSON_IsString(m) ? strlen(m->valuestring) + 1 : 0);
    }
    return n;
}

static lk_status parse(lk_safetensors *st) {
    const char *label = st->label;
    if (st->len < 8)
        return lk_fail(LK_ERR_FORMAT, "%s: file is %zu bytes, too short for the 8-byte header length", label,
                       st->len);
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--) hl = (hl << 8) | st->buf[i];
    if (hl > LK_SAFETENSORS_MAX_HEADER)
        return lk_fail(LK_ERR_FORMAT, "%s: header length %llu exceeds the %u-byte limit", label,
                       (unsigned long long)hl, LK_SAFETENSORS_MAX_HEADER);
    if (hl > st->len - 8)
        return lk_fail(LK_ERR_FORMAT, "%s: header length %llu exceeds the file size %zu", label,
                       (unsigned long long)hl, st->len);
    const uint8_t *h = st->buf + 8;
    size_t hn = (size_t)hl;
    if (hn == 0 || h[0] != '{')
        return lk_fail(LK_ERR_FORMAT, "%s: header does not start with '{'", label);
    lk_status s = lex_check(label, h, hn);
    if (s != LK_OK) return s;
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts((const char *)h, hn, &end, 0);
    if (!root) {
        size_t at = (end && end >= (const char *)h && end <= (const char *)h + hn) ? (size_t)(end - (const char *)h) : 0;
        return lk_fail(LK_ERR_FORMAT, "%s: header is not valid JSON (near byte %zu)", label, at);
    }
    for (const char *p = end; p < (const char *)h + hn; p++)
        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r') {
            cJSON_Delete(root);
            return lk_fail(LK_ERR_FORMAT, "%s: trailing bytes after the JSON header (byte %zu)", label,
                           (size_t)(p - (const char *)h));
        }
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return lk_fail(LK_ERR_FORMAT, "%s: header is not a JSON object", label);
    }
    const size_t data_len = st->len - 8 - hn;
    const uint8_t *data = h + hn;
    int count = 0;
    const cJSON *meta = NULL;
    for (const cJSON *c = root->child; c; c = c->next) {
        if (!strcmp(c->string, "__metadata__")) {
            if (meta) { cJSON_Delete(root); return lk_fail(LK_ERR_FORMAT, "%s: duplicate __metadata__", label); }
            meta = c;
        } else {
            count++;
        }
    }
    st->strings = malloc(string_bytes(root) + 1);
    st->t = calloc((size_t)count + 1, sizeof *st->t);
    st->byname = calloc((size_t)count + 1, sizeof *st->byname);
    entry *es = calloc((size_t)count + 1, sizeof *es);
    if (!st->strings || !st->t || !st->byname || !es) {
        free(es);
        cJSON_Delete(root);
        return lk_fail(LK_ERR_NOMEM, "%s: out of memory reading the header", label);
    }
    char *sp = st->strings;
    if (meta) s = parse_metadata(st, meta, &sp);
    int k = 0;
    for (const cJSON *c = root->child; c && s == LK_OK; c = c->next) {
        if (c == meta) continue;
        size_t l = strlen(c->string) + 1;
        memcpy(sp, c->string, l);
        es[k].name = sp;
        sp += l;
        s = parse_entry(label, c, &es[k]);
        k++;
    }
    cJSON_Delete(root);
    for (int i = 0; i < count && s == LK_OK; i++) {
        lk_st_tensor *t = &st->t[i];
        t->name = es[i].name;
        t->dtype = (lk_dtype)es[i].dtype;
        t->ndim = es[i].ndim;
        memcpy(t->shape, es[i].shape, sizeof t->shape);
        if (es[i].end > data_len) {
            s = lk_fail(LK_ERR_FORMAT, "%s: tensor '%.200s': data_offsets [%llu,%llu] run past the %zu-byte data section",
                        label, t->name, (unsigned long long)es[i].begin, (unsigned long long)es[i].end, data_len);
            break;
        }
        t->data = data + es[i].begin;
        t->nbytes = (size_t)(es[i].end - es[i].begin);
    }
    free(es);
    if (s != LK_OK) return s;
    st->n = count;
    qsort(st->t, (size_t)count, sizeof *st->t, cmp_offset);
    for (int i = 0; i < count; i++) st->byname[i] = &st->t[i];
    qsort(st->byname, (size_t)count, sizeof *st->byname, cmp_name_ptr);
    for (int i = 1; i < count; i++)
        if (!strcmp(st->byname[i - 1]->name, st->byname[i]->name))
            return lk_fail(LK_ERR_FORMAT, "%s: duplicate tensor name '%.200s'", label, st->byname[i]->name);
    size_t expect = 0;
    for (int i = 0; i < count; i++) {
        const lk_st_tensor *t = &st->t[i];
        size_t b = (size_t)((const uint8_t *)t->data - data);
        if (b != expect)
            return lk_fail(LK_ERR_FORMAT, "%s: tensor '%.200s': data begins at %zu but the previous tensor ends at %zu (%s)",
                           label, t->name, b, expect, b > expect ? "gap" : "overlap");
        expect = b + t->nbytes;
    }
    if (expect != data_len)
        return lk_fail(LK_ERR_FORMAT, "%s: tensors end at %zu but the data section is %zu bytes", label, expect,
                       data_len);
    return LK_OK;
}

static lk_safetensors *st_new(const char *label) {
    lk_safetensors *st = calloc(1, sizeof *st);
    if (!st) return NULL;
    st->label = strdup(label ? label : "<memory>");
    if (!st->label) { free(st); return NULL; }
    return st;
}

lk_status lk_safetensors_open_memory(lk_safetensors **out, const void *buf, size_t len, const char *label) {
    if (!out) return lk_fail(LK_ERR_INVALID, "safetensors_open_memory: out is NULL");
    *out = NULL;
    if (!buf && len) return lk_fail(LK_ERR_INVALID, "safetensors_open_memory: buffer is NULL");
    lk_safetensors *st = st_new(label);
    if (!st) return lk_fail(LK_ERR_NOMEM, "%s: out of memory", label ? label : "<memory>");
    static const uint8_t empty[1];
    st->buf = buf ? buf : empty;
    st->len = len;
    lk_status s = parse(st);
    if (s != LK_OK) { lk_safetensors_close(st); return s; }
    *out = st;
    return LK_OK;
}

lk_status lk_safetensors_open(lk_safetensors **out, const char *path) {
    if (!out || !path) return lk_fail(LK_ERR_INVALID, "safetensors_open: NULL argument");
    *out = NULL;
    int fd = open(path, O_RDONLY);
    if (fd < 0) return lk_fail(LK_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        int e = errno;
        close(fd);
        return lk_fail(LK_ERR_IO, "%s: cannot stat: %s", path, strerror(e));
    }
    if (!S_ISREG(sb.st_mode)) {
        close(fd);
        return lk_fail(LK_ERR_IO, "%s: not a regular file", path);
    }
    lk_safetensors *st = st_new(path);
    if (!st) { close(fd); return lk_fail(LK_ERR_NOMEM, "%s: out of memory", path); }
    size_t len = (size_t)sb.st_size;
    st->len = len;
    if (len > 0) {
        void *m = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
        if (m != MAP_FAILED) {
            st->map = m;
            st->buf = m;
        } else { /* e.g. a filesystem without mmap: read it */
            st->owned = malloc(len);
            if (!st->owned) {
                close(fd);
                lk_safetensors_close(st);
                return lk_fail(LK_ERR_NOMEM, "%s: out of memory reading %zu bytes", path, len);
            }
            size_t got = 0;
            while (got < len) {
                ssize_t r = pread(fd, (char *)st->owned + got, len - got, (off_t)got);
                if (r < 0 && errno == EINTR) continue;
                if (r <= 0) {
                    int e = errno;
                    close(fd);
                    lk_safetensors_close(st);
                    return lk_fail(LK_ERR_IO, "%s: read failed: %s", path, r == 0 ? "unexpected end of file" : strerror(e));
                }
                got += (size_t)r;
            }
            st->buf = st->owned;
        }
    } else {
        static const uint8_t empty[1];
        st->buf = empty;
    }
    close(fd);
    lk_status s = parse(st);
    if (s != LK_OK) { lk_safetensors_close(st); return s; }
    *out = st;
    return LK_OK;
}

void lk_safetensors_close(lk_safetensors *st) {
    if (!st) return;
    if (st->map) munmap(st->map, st->len);
    free(st->owned);
    free(st->t);
    free(st->byname);
    free(st->strings);
    free(st->mkey);
    free(st->mval);
    free(st->label);
    free(st);
}

void lk_safetensors_evict(const lk_safetensors *st, const void *data, size_t nbytes) {
    if (!st || !st->map || !data || !nbytes) return;
    const uint8_t *lo = data, *hi = lo + nbytes;
    const uint8_t *base = st->map;
    if (lo < base || hi > base + st->len) return;
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t a = ((uintptr_t)lo + page - 1) & ~(page - 1), b = (uintptr_t)hi & ~(page - 1);
    /* a read-only private file mapping: dropped pages come back from the file if touched */
    if (a < b) madvise((void *)a, b - a, MADV_DONTNEED);
}

const char *lk_safetensors_path(const lk_safetensors *st) { return st ? st->label : NULL; }
int lk_safetensors_count(const lk_safetensors *st) { return st ? st->n : 0; }

const lk_st_tensor *lk_safetensors_at(const lk_safetensors *st, int i) {
    return (st && i >= 0 && i < st->n) ? &st->t[i] : NULL;
}

const lk_st_tensor *lk_safetensors_find(const lk_safetensors *st, const char *name) {
    if (!st || !name) return NULL;
    int lo = 0, hi = st->n;
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        int c = strcmp(st->byname[mid]->name, name);
        if (c == 0) return st->byname[mid];
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    return NULL;
}

const char *lk_safetensors_meta(const lk_safetensors *st, const char *key) {
    if (!st || !key) return NULL;
    for (int i = 0; i < st->nmeta; i++)
        if (!strcmp(st->mkey[i], key)) return st->mval[i];
    return NULL;
}

int lk_safetensors_meta_count(const lk_safetensors *st) { return st ? st->nmeta : 0; }

void lk_safetensors_meta_at(const lk_safetensors *st, int i, const char **key, const char **val) {
    bool ok = st && i >= 0 && i < st->nmeta;
    if (key) *key = ok ? st->mkey[i] : NULL;
    if (val) *val = ok ? st->mval[i] : NULL;
}

int64_t lk_st_tensor_numel(const lk_st_tensor *t) {
    if (!t) return 0;
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= t->shape[i];
    return n;
}

lk_status lk_st_tensor_to_f32(const lk_st_tensor *t, float *dst, size_t numel) {
    if (!t) return lk_fail(LK_ERR_INVALID, "st_tensor_to_f32: tensor is NULL");
    if (t->dtype != LK_F32 && t->dtype != LK_F16 && t->dtype != LK_BF16)
        return lk_fail(LK_ERR_INVALID, "tensor '%.200s': dtype %s is not a float type", t->name,
                       lk_dtype_name(t->dtype));
    if ((int64_t)numel != lk_st_tensor_numel(t))
        return lk_fail(LK_ERR_INVALID, "tensor '%.200s': has %lld elements, caller asked for %zu", t->name,
                       (long long)lk_st_tensor_numel(t), numel);
    if (numel && !dst) return lk_fail(LK_ERR_INVALID, "tensor '%.200s': destination is NULL", t->name);
    if (t->dtype == LK_F32) {
        if (numel) memcpy(dst, t->data, numel * sizeof(float));
        return LK_OK;
    }
    const uint8_t *src = t->data;
    if (((uintptr_t)src & 1u) == 0) {
        lk_widen_f32(dst, src, t->dtype, numel);
        return LK_OK;
    }
    /* data at an odd address: realign through a small buffer */
    uint16_t tmp[2048];
    for (size_t i = 0; i < numel; i += 2048) {
        size_t m = numel - i < 2048 ? numel - i : 2048;
        memcpy(tmp, src + 2 * i, 2 * m);
        lk_widen_f32(dst + i, tmp, t->dtype, m);
    }
    return LK_OK;
}

/* ------------------------------------------------------------------------------------------ */
/* writer */

typedef struct wtensor {
    char *name;
    lk_dtype dtype;
    int ndim;
    int64_t shape[LK_MAX_DIMS];
    void *data;
    size_t nbytes;
} wtensor;

struct lk_st_writer {
    wtensor *t;
    int n, cap;
    char **mkey, **mval;
    int nmeta, mcap;
};

lk_st_writer *lk_st_writer_new(void) {
    lk_st_writer *w = calloc(1, sizeof *w);
    if (!w) lk_fail(LK_ERR_NOMEM, "st_writer_new: out of memory");
    return w;
}

void lk_st_writer_free(lk_st_writer *w) {
    if (!w) return;
    for (int i = 0; i < w->n; i++) {
        free(w->t[i].name);
        free(w->t[i].data);
    }
    for (int i = 0; i < w->nmeta; i++) {
        free(w->mkey[i]);
        free(w->mval[i]);
    }
    free(w->t);
    free(w->mkey);
    free(w->mval);
    free(w);
}

static bool valid_utf8(const char *s) {
    size_t n = strlen(s);
    for (size_t i = 0; i < n;) {
        size_t k = utf8_seq((const uint8_t *)s + i, n - i);
        if (!k) return false;
        i += k;
    }
    return true;
}

lk_status lk_st_writer_add(lk_st_writer *w, const char *name, lk_dtype dt, int ndim, const int64_t *shape,
                           const void *data) {
    if (!w || !name) return lk_fail(LK_ERR_INVALID, "st_writer_add: NULL argument");
    if (!valid_utf8(name)) return lk_fail(LK_ERR_INVALID, "st_writer_add: name is not valid UTF-8");
    if (!strcmp(name, "__metadata__")) return lk_fail(LK_ERR_INVALID, "st_writer_add: '__metadata__' is reserved");
    if ((unsigned)dt >= LK_DTYPE_COUNT) return lk_fail(LK_ERR_INVALID, "st_writer_add: '%.200s': bad dtype", name);
    if (ndim < 0 || ndim > LK_MAX_DIMS || (ndim > 0 && !shape))
        return lk_fail(LK_ERR_INVALID, "st_writer_add: '%.200s': bad ndim %d", name, ndim);
    size_t numel = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0 || (double)shape[i] > MAX_EXACT_INT || lk_mul_overflow(numel, (size_t)shape[i], &numel))
            return lk_fail(LK_ERR_INVALID, "st_writer_add: '%.200s': bad shape", name);
    }
    size_t nbytes;
    if (lk_mul_overflow(numel, lk_dtype_size(dt), &nbytes))
        return lk_fail(LK_ERR_INVALID, "st_writer_add: '%.200s': size overflows", name);
    if (nbytes && !data) return lk_fail(LK_ERR_INVALID, "st_writer_add: '%.200s': data is NULL", name);
    for (int i = 0; i < w->n; i++)
        if (!strcmp(w->t[i].name, name))
            return lk_fail(LK_ERR_INVALID, "st_writer_add: duplicate tensor name '%.200s'", name);
    if (w->n == w->cap) {
        int nc = w->cap ? 2 * w->cap : 16;
        wtensor *nt = realloc(w->t, (size_t)nc * sizeof *nt);
        if (!nt) return lk_fail(LK_ERR_NOMEM, "st_writer_add: out of memory");
        w->t = nt;
        w->cap = nc;
    }
    wtensor *t = &w->t[w->n];
    memset(t, 0, sizeof *t);
    t->name = strdup(name);
    t->data = malloc(nbytes ? nbytes : 1);
    if (!t->name || !t->data) {
        free(t->name);
        free(t->data);
        return lk_fail(LK_ERR_NOMEM, "st_writer_add: '%.200s': out of memory (%zu bytes)", name, nbytes);
    }
    if (nbytes) memcpy(t->data, data, nbytes);
    t->dtype = dt;
    t->ndim = ndim;
    for (int i = 0; i < ndim; i++) t->shape[i] = shape[i];
    t->nbytes = nbytes;
    w->n++;
    return LK_OK;
}

lk_status lk_st_writer_meta(lk_st_writer *w, const char *key, const char *value) {
    if (!w || !key || !value) return lk_fail(LK_ERR_INVALID, "st_writer_meta: NULL argument");
    if (!valid_utf8(key) || !valid_utf8(value))
        return lk_fail(LK_ERR_INVALID, "st_writer_meta: key or value is not valid UTF-8");
    char *v = strdup(value);
    if (!v) return lk_fail(LK_ERR_NOMEM, "st_writer_meta: out of memory");
    for (int i = 0; i < w->nmeta; i++)
        if (!strcmp(w->mkey[i], key)) { /* replace */
            free(w->mval[i]);
            w->mval[i] = v;
            return LK_OK;
        }
    if (w->nmeta == w->mcap) {
        int nc = w->mcap ? 2 * w->mcap : 8;
        char **nk = realloc(w->mkey, (size_t)nc * sizeof *nk);
        if (nk) w->mkey = nk;
        char **nv = nk ? realloc(w->mval, (size_t)nc * sizeof *nv) : NULL;
        if (nv) w->mval = nv;
        if (!nk || !nv) { free(v); return lk_fail(LK_ERR_NOMEM, "st_writer_meta: out of memory"); }
        w->mcap = nc;
    }
    w->mkey[w->nmeta] = strdup(key);
    if (!w->mkey[w->nmeta]) { free(v); return lk_fail(LK_ERR_NOMEM, "st_writer_meta: out of memory"); }
    w->mval[w->nmeta++] = v;
    return LK_OK;
}

/* growable byte buffer for the header */
typedef struct sbuf { char *p; size_t n, cap; bool oom; } sbuf;

static void sb_put(sbuf *b, const char *s, size_t n) {
    if (b->oom) return;
    if (b->n + n + 1 > b->cap) {
        size_t nc = b->cap ? b->cap : 4096;
        while (nc < b->n + n + 1) nc *= 2;
        char *np = realloc(b->p, nc);
        if (!np) { b->oom = true; return; }
        b->p = np;
        b->cap = nc;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
}
static void sb_str(sbuf *b, const char *s) { sb_put(b, s, strlen(s)); }
static void sb_json(sbuf *b, const char *s) { /* JSON string literal */
    sb_put(b, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        char e[8];
        if (*p == '"' || *p == '\\') { e[0] = '\\'; e[1] = (char)*p; sb_put(b, e, 2); }
        else if (*p < 0x20) { snprintf(e, sizeof e, "\\u%04x", *p); sb_put(b, e, 6); }
        else sb_put(b, (const char *)p, 1);
    }
    sb_put(b, "\"", 1);
}

static int cmp_wt(const void *a, const void *b) {
    return strcmp(((const wtensor *)a)->name, ((const wtensor *)b)->name);
}

static bool write_all(int fd, const void *p, size_t n) {
    const char *c = p;
    while (n) {
        ssize_t r = write(fd, c, n > (1u << 30) ? (1u << 30) : n);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return false;
        c += r;
        n -= (size_t)r;
    }
    return true;
}

lk_status lk_st_writer_save(lk_st_writer *w, const char *path) {
    if (!w || !path) return lk_fail(LK_ERR_INVALID, "st_writer_save: NULL argument");
    if (w->n > 1) qsort(w->t, (size_t)w->n, sizeof *w->t, cmp_wt);
    sbuf b = {0};
    char num[96];
    sb_str(&b, "{");
    bool first = true;
    if (w->nmeta) {
        sb_str(&b, "\"__metadata__\":{");
        for (int i = 0; i < w->nmeta; i++) {
            if (i) sb_str(&b, ",");
            sb_json(&b, w->mkey[i]);
            sb_str(&b, ":");
            sb_json(&b, w->mval[i]);
        }
        sb_str(&b, "}");
        first = false;
    }
    size_t off = 0;
    for (int i = 0; i < w->n; i++) {
        const wtensor *t = &w->t[i];
        if (!first) sb_str(&b, ",");
        first = false;
        sb_json(&b, t->name);
        sb_str(&b, ":{\"dtype\":\"");
        sb_str(&b, lk_dtype_name(t->dtype));
        sb_str(&b, "\",\"shape\":[");
        for (int d = 0; d < t->ndim; d++) {
            snprintf(num, sizeof num, d ? ",%lld" : "%lld", (long long)t->shape[d]);
            sb_str(&b, num);
        }
        snprintf(num, sizeof num, "],\"data_offsets\":[%zu,%zu]}", off, off + t->nbytes);
        sb_str(&b, num);
        off += t->nbytes;
    }
    sb_str(&b, "}");
    while (b.n % 8) sb_str(&b, " ");
    if (b.oom || b.n > LK_SAFETENSORS_MAX_HEADER) {
        free(b.p);
        return lk_fail(b.oom ? LK_ERR_NOMEM : LK_ERR_INVALID, "%s: header too large or out of memory", path);
    }
    uint8_t len8[8];
    for (int i = 0; i < 8; i++) len8[i] = (uint8_t)((uint64_t)b.n >> (8 * i));

    size_t tl = strlen(path) + 32;
    char *tmp = malloc(tl);
    if (!tmp) { free(b.p); return lk_fail(LK_ERR_NOMEM, "%s: out of memory", path); }
    snprintf(tmp, tl, "%s.tmp.%ld", path, (long)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) {
        lk_status s = lk_fail(LK_ERR_IO, "%s: cannot create: %s", tmp, strerror(errno));
        free(tmp);
        free(b.p);
        return s;
    }
    bool ok = write_all(fd, len8, 8) && write_all(fd, b.p, b.n);
    for (int i = 0; ok && i < w->n; i++) ok = write_all(fd, w->t[i].data, w->t[i].nbytes);
    const char *what = "write";
    if (ok && fsync(fd) != 0) { ok = false; what = "fsync"; }
    int e = errno;
    if (close(fd) != 0 && ok) { ok = false; e = errno; what = "close"; }
    if (ok && rename(tmp, path) != 0) { ok = false; e = errno; what = "rename"; }
    free(b.p);
    if (!ok) {
        unlink(tmp);
        free(tmp);
        return lk_fail(LK_ERR_IO, "%s: %s failed: %s", path, what, strerror(e));
    }
    free(tmp);
    return LK_OK;
}
