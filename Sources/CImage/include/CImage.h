#ifndef CIMAGE_H
#define CIMAGE_H
/* C shims over libjpeg(-turbo) and libpng16 for the data pipeline.
 *
 * Every function decodes from / encodes to memory, never longjmps past its own frame (setjmp is
 * used inside C only) and returns a CIMAGE_* status code; on failure `err` (capacity `errlen`)
 * receives a NUL-terminated message from the library. Output pixels are RGB8, row-major HWC. */
#include <stddef.h>
#include <stdint.h>

enum {
    CIMAGE_OK = 0,
    CIMAGE_CORRUPT = 1,        /* the library rejected the data */
    CIMAGE_TRUNCATED = 2,      /* the data ends before the image does */
    CIMAGE_UNSUPPORTED = 3,    /* valid but not handled (e.g. unusual colour space) */
    CIMAGE_BUFFER_TOO_SMALL = 4,
    CIMAGE_BAD_ARGUMENT = 5,
    CIMAGE_NO_MEMORY = 6
};

/* Reads the JPEG header only: full-size width/height and the number of components. */
int CImage_jpeg_header(const uint8_t *data, size_t size, int *width, int *height, int *components,
                       char *err, size_t errlen);

/* Output size of a decode at 1/scale_denom (scale_denom in {1, 2, 4, 8}): ceil(w/denom) etc. */
int CImage_jpeg_scaled_size(const uint8_t *data, size_t size, int scale_denom, int *out_w, int *out_h,
                            char *err, size_t errlen);

/* Decodes at 1/scale_denom into `out` (capacity bytes >= 3*out_w*out_h). Gray, YCbCr, CMYK and
 * YCCK inputs come out as RGB. A premature end of data is CIMAGE_TRUNCATED. */
int CImage_jpeg_decode(const uint8_t *data, size_t size, int scale_denom, uint8_t *out, size_t capacity,
                       int *out_w, int *out_h, char *err, size_t errlen);

/* Encodes RGB8 (w*h*3 bytes) at `quality` (1..100, 4:2:0). *out is malloc'ed; free with CImage_free. */
int CImage_jpeg_encode(const uint8_t *rgb, int width, int height, int quality, uint8_t **out,
                       size_t *out_size, char *err, size_t errlen);

/* True when the bytes start with the PNG / JPEG signature. */
int CImage_is_png(const uint8_t *data, size_t size);
int CImage_is_jpeg(const uint8_t *data, size_t size);

/* Reads the PNG header: width/height. */
int CImage_png_header(const uint8_t *data, size_t size, int *width, int *height, char *err, size_t errlen);

/* Decodes any PNG (1/2/4/8/16-bit, palette, gray, alpha, interlaced) into RGB8: 16-bit keeps the
 * high byte, gray is replicated, alpha is dropped (as PIL's convert("RGB")). */
int CImage_png_decode(const uint8_t *data, size_t size, uint8_t *out, size_t capacity, int *out_w,
                      int *out_h, char *err, size_t errlen);

void CImage_free(void *p);

#endif
