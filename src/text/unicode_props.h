/* unicode_props.h: the Unicode character classes, lower-casing and UTF-8 coding the CLIP
 * tokenizer and the prompt parser share (tables generated into unicode_props.c). Private. */
#ifndef LK_TEXT_UNICODE_PROPS_H
#define LK_TEXT_UNICODE_PROPS_H

#include <stddef.h>
#include <stdint.h>

enum {
    LK_UNI_LETTER = 1,         /* general category L* (\p{L}) */
    LK_UNI_NUMBER = 2,         /* general category N* (\p{N}) */
    LK_UNI_SPACE = 4,          /* White_Space (\s) */
    LK_UNI_CASED = 8,          /* Cased and not Case_Ignorable (final-sigma context) */
    LK_UNI_CASE_IGNORABLE = 16, /* Case_Ignorable */
    LK_UNI_CLIP_SKIP = 32       /* matches no alternative of CLIP's IGNORECASE pattern in the
                                 * `regex` module: not L/N/space, but a case variant is (U+0345) */
};

#define LK_UNI_REPLACEMENT 0xFFFDu

/* Bit set of LK_UNI_* classes of code point cp (0 for unassigned / other). Cannot fail. */
unsigned lk__uni_flags(uint32_t cp);
/* Simple lower-case mapping of cp as Python's str.lower() does it (cp itself if none). The only
 * multi-code-point lower-casing, U+0130 -> "i\u0307", and final sigma are the caller's job. */
uint32_t lk__uni_lower_simple(uint32_t cp);

/* Decode one code point from s[0..n) (n >= 1). Invalid or truncated sequences (overlong forms,
 * surrogates, > U+10FFFF, stray continuation bytes) give U+FFFD and consume the maximal
 * invalid subpart, one replacement per subpart, exactly as Python's
 * bytes.decode("utf-8", "replace") does. Returns the number of bytes consumed (>= 1). */
static inline size_t lk__utf8_decode(const unsigned char *s, size_t n, uint32_t *cp) {
    unsigned c = s[0];
    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    size_t need;
    uint32_t v;
    unsigned lo = 0x80, hi = 0xBF; /* allowed range of the second byte */
    if (c >= 0xC2 && c <= 0xDF) {
        need = 1;
        v = c & 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
        need = 2;
        v = c & 0x0F;
        if (c == 0xE0) lo = 0xA0;
        if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        need = 3;
        v = c & 0x07;
        if (c == 0xF0) lo = 0x90;
        if (c == 0xF4) hi = 0x8F;
    } else {
        *cp = LK_UNI_REPLACEMENT;
        return 1;
    }
    size_t i = 1;
    for (; i <= need; i++) {
        if (i >= n) break;
        unsigned b = s[i];
        unsigned blo = i == 1 ? lo : 0x80, bhi = i == 1 ? hi : 0xBF;
        if (b < blo || b > bhi) break;
        v = (v << 6) | (b & 0x3F);
    }
    if (i <= need) {
        *cp = LK_UNI_REPLACEMENT;
        return i;
    }
    *cp = v;
    return need + 1;
}

/* Encode cp (<= U+10FFFF) as UTF-8 into out (room for 4 bytes). Returns the byte count. */
static inline size_t lk__utf8_encode(uint32_t cp, char *out) {
    unsigned char *o = (unsigned char *)out;
    if (cp < 0x80) {
        o[0] = (unsigned char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (unsigned char)(0xC0 | (cp >> 6));
        o[1] = (unsigned char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (unsigned char)(0xE0 | (cp >> 12));
        o[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (unsigned char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (unsigned char)(0xF0 | (cp >> 18));
    o[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (unsigned char)(0x80 | (cp & 0x3F));
    return 4;
}

#endif
