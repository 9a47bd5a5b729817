#include "CImage.h"
#include <png.h>
#include <setjmp.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const uint8_t *data;
    size_t size;
    size_t offset;
    int truncated;
    char *err;
    size_t errlen;
} cimage_png_src;

static void cimage_png_set_err(char *err, size_t errlen, const char *msg) {
    if (err && errlen > 0) {
        strncpy(err, msg, errlen - 1);
        err[errlen - 1] = 0;
    }
}

static void cimage_png_read(png_structp png, png_bytep out, png_size_t n) {
    cimage_png_src *src = (cimage_png_src *)png_get_io_ptr(png);
    if (src->offset + n > src->size) {
        src->truncated = 1;
        png_error(png, "PNG data ends early (truncated file)");
    }
    memcpy(out, src->data + src->offset, n);
    src->offset += n;
}

static void cimage_png_error(png_structp png, png_const_charp msg) {
    cimage_png_src *src = (cimage_png_src *)png_get_error_ptr(png);
    cimage_png_set_err(src->err, src->errlen, msg);
    png_longjmp(png, 1);
}

static void cimage_png_warning(png_structp png, png_const_charp msg) { (void)png; (void)msg; }

int CImage_is_png(const uint8_t *data, size_t size) {
    return size >= 8 && png_sig_cmp((png_const_bytep)data, 0, 8) == 0;
}

static int cimage_png_run(const uint8_t *data, size_t size, uint8_t *out, size_t capacity, int *out_w,
                          int *out_h, int header_only, char *err, size_t errlen) {
    if (!CImage_is_png(data, size)) {
        cimage_png_set_err(err, errlen, size < 8 ? "too short for a PNG" : "not a PNG signature");
        return size < 8 ? CIMAGE_TRUNCATED : CIMAGE_CORRUPT;
    }
    cimage_png_src src = {data, size, 0, 0, err, errlen};
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &src, cimage_png_error, cimage_png_warning);
    if (!png) return CIMAGE_NO_MEMORY;
    png_infop info = png_create_info_struct(png);
    if (!info) { png_destroy_read_struct(&png, NULL, NULL); return CIMAGE_NO_MEMORY; }
    png_bytep *volatile rows = NULL;
    if (setjmp(png_jmpbuf(png))) {
        free(rows);
        png_destroy_read_struct(&png, &info, NULL);
        return src.truncated ? CIMAGE_TRUNCATED : CIMAGE_CORRUPT;
    }
    png_set_read_fn(png, &src, cimage_png_read);
    png_read_info(png, info);
    png_uint_32 w = png_get_image_width(png, info), h = png_get_image_height(png, info);
    *out_w = (int)w;
    *out_h = (int)h;
    if (header_only) {
        png_destroy_read_struct(&png, &info, NULL);
        return CIMAGE_OK;
    }
    if ((size_t)w * (size_t)h * 3 > capacity) {
        cimage_png_set_err(err, errlen, "output buffer too small");
        png_destroy_read_struct(&png, &info, NULL);
        return CIMAGE_BUFFER_TOO_SMALL;
    }
    int color = png_get_color_type(png, info);
    int depth = png_get_bit_depth(png, info);
    if (depth == 16) png_set_strip_16(png);
    if (color == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
    if ((color == PNG_COLOR_TYPE_GRAY || color == PNG_COLOR_TYPE_GRAY_ALPHA) && depth < 8)
        png_set_expand_gray_1_2_4_to_8(png);
    if (color == PNG_COLOR_TYPE_GRAY || color == PNG_COLOR_TYPE_GRAY_ALPHA) png_set_gray_to_rgb(png);
    if (color & PNG_COLOR_MASK_ALPHA) png_set_strip_alpha(png);
    png_set_interlace_handling(png);
    png_read_update_info(png, info);
    if (png_get_rowbytes(png, info) != (size_t)w * 3) {
        cimage_png_set_err(err, errlen, "unexpected PNG row layout after conversion");
        png_destroy_read_struct(&png, &info, NULL);
        return CIMAGE_UNSUPPORTED;
    }
    rows = (png_bytep *)malloc(sizeof(png_bytep) * h);
    if (!rows) { png_destroy_read_struct(&png, &info, NULL); return CIMAGE_NO_MEMORY; }
    for (png_uint_32 y = 0; y < h; y++) rows[y] = out + (size_t)y * (size_t)w * 3;
    png_read_image(png, rows);
    png_read_end(png, NULL);
    free(rows);
    png_destroy_read_struct(&png, &info, NULL);
    return CIMAGE_OK;
}

int CImage_png_header(const uint8_t *data, size_t size, int *width, int *height, char *err, size_t errlen) {
    return cimage_png_run(data, size, NULL, 0, width, height, 1, err, errlen);
}

int CImage_png_decode(const uint8_t *data, size_t size, uint8_t *out, size_t capacity, int *out_w,
                      int *out_h, char *err, size_t errlen) {
    return cimage_png_run(data, size, out, capacity, out_w, out_h, 0, err, errlen);
}
