/* exif.c: the EXIF orientation tag (0x0112) from IFD0 of a TIFF-structured EXIF block (EXIF 2.32
 * / TIFF 6.0: byte-order mark, 42, IFD offset, 12-byte entries). Every read is bounds-checked. */
#include "likeness/image.h"

#include <string.h>

static unsigned rd16(const uint8_t *p, bool le) {
    return le ? (unsigned)p[0] | ((unsigned)p[1] << 8) : ((unsigned)p[0] << 8) | (unsigned)p[1];
}

static uint32_t rd32(const uint8_t *p, bool le) {
    return le ? (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24)
              : ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | (uint32_t)p[3];
}

int lk_exif_orientation(const uint8_t *data, size_t size) {
    if (!data) return 0;
    if (size >= 6 && memcmp(data, "Exif\0\0", 6) == 0) {
        data += 6;
        size -= 6;
    }
    if (size < 8) return 0;
    bool le;
    if (data[0] == 'I' && data[1] == 'I') le = true;
    else if (data[0] == 'M' && data[1] == 'M') le = false;
    else return 0;
    if (rd16(data + 2, le) != 42) return 0;
    const uint32_t ifd = rd32(data + 4, le);
    if (ifd < 8 || ifd > size || size - ifd < 2) return 0;
    const unsigned n = rd16(data + ifd, le);
    /* entries: 12 bytes each after the 2-byte count; all must lie inside the block */
    if ((size - ifd - 2) / 12 < n) return 0;
    for (unsigned i = 0; i < n; i++) {
        const uint8_t *e = data + ifd + 2 + 12 * (size_t)i;
        if (rd16(e, le) != 0x0112) continue;
        const unsigned type = rd16(e + 2, le);
        const uint32_t count = rd32(e + 4, le);
        if (type != 3 || count != 1) return 0; /* must be one SHORT, stored inline */
        const unsigned v = rd16(e + 8, le);
        return v >= 1 && v <= 8 ? (int)v : 0;
    }
    return 0;
}
