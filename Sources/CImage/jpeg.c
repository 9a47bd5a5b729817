#include "CImage.h"
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <jpeglib.h>
#include <jerror.h>

typedef struct {
    struct jpeg_error_mgr pub;
    jmp_buf jump;
    int truncated;
    char *err;
    size_t errlen;
} cimage_jpeg_error;

static void cimage_set_err(char *err, size_t errlen, const char *msg) {
    if (err && errlen > 0) {
        strncpy(err, msg, errlen - 1);
        err[errlen - 1] = 0;
    }
}

static void cimage_jpeg_error_exit(j_common_ptr cinfo) {
    cimage_jpeg_error *e = (cimage_jpeg_error *)cinfo->err;
    char buf[JMSG_LENGTH_MAX];
    (*cinfo->err->format_message)(cinfo, buf);
    cimage_set_err(e->err, e->errlen, buf);
    longjmp(e->jump, 1);
}

/* Warnings (level -1): a premature end of data becomes an error; other warnings are ignored,
 * as PIL does with LOAD_TRUNCATED_IMAGES off only for the EOF case. */
static void cimage_jpeg_emit(j_common_ptr cinfo, int level) {
    cimage_jpeg_error *e = (cimage_jpeg_error *)cinfo->err;
    if (level < 0 && cinfo->err->msg_code == JWRN_JPEG_EOF) {
        e->truncated = 1;
        char buf[JMSG_LENGTH_MAX];
        (*cinfo->err->format_message)(cinfo, buf);
        cimage_set_err(e->err, e->errlen, buf);
        longjmp(e->jump, 1);
    }
}

static void cimage_jpeg_silent(j_common_ptr cinfo) { (void)cinfo; }

#define CIMAGE_JPEG_SETUP(cinfo, jerr, err, errlen)            \
    struct jpeg_decompress_struct cinfo;                       \
    cimage_jpeg_error jerr;                                    \
    memset(&cinfo, 0, sizeof(cinfo));                          \
    cinfo.err = jpeg_std_error(&jerr.pub);                     \
    jerr.pub.error_exit = cimage_jpeg_error_exit;              \
    jerr.pub.emit_message = cimage_jpeg_emit;                  \
    jerr.pub.output_message = cimage_jpeg_silent;              \
    jerr.truncated = 0;                                        \
    jerr.err = err;                                            \
    jerr.errlen = errlen;

int CImage_is_jpeg(const uint8_t *data, size_t size) {
    return size >= 3 && data[0] == 0xFF && data[1] == 0xD8 && data[2] == 0xFF;
}

int CImage_jpeg_header(const uint8_t *data, size_t size, int *width, int *height, int *components,
                       char *err, size_t errlen) {
    if (!data || size == 0) { cimage_set_err(err, errlen, "empty buffer"); return CIMAGE_TRUNCATED; }
    CIMAGE_JPEG_SETUP(cinfo, jerr, err, errlen)
    if (setjmp(jerr.jump)) {
        jpeg_destroy_decompress(&cinfo);
        return jerr.truncated ? CIMAGE_TRUNCATED : CIMAGE_CORRUPT;
    }
    jpeg_create_decompress(&cinfo);
    jpeg_mem_src(&cinfo, (unsigned char *)data, (unsigned long)size);
    jpeg_read_header(&cinfo, TRUE);
    *width = (int)cinfo.image_width;
    *height = (int)cinfo.image_height;
    *components = cinfo.num_components;
    jpeg_destroy_decompress(&cinfo);
    return CIMAGE_OK;
}

static int cimage_valid_denom(int d) { return d == 1 || d == 2 || d == 4 || d == 8; }

int CImage_jpeg_scaled_size(const uint8_t *data, size_t size, int scale_denom, int *out_w, int *out_h,
                            char *err, size_t errlen) {
    if (!cimage_valid_denom(scale_denom)) { cimage_set_err(err, errlen, "scale_denom must be 1, 2, 4 or 8"); return CIMAGE_BAD_ARGUMENT; }
    if (!data || size == 0) { cimage_set_err(err, errlen, "empty buffer"); return CIMAGE_TRUNCATED; }
    CIMAGE_JPEG_SETUP(cinfo, jerr, err, errlen)
    if (setjmp(jerr.jump)) {
        jpeg_destroy_decompress(&cinfo);
        return jerr.truncated ? CIMAGE_TRUNCATED : CIMAGE_CORRUPT;
    }
    jpeg_create_decompress(&cinfo);
    jpeg_mem_src(&cinfo, (unsigned char *)data, (unsigned long)size);
    jpeg_read_header(&cinfo, TRUE);
    cinfo.scale_num = 1;
    cinfo.scale_denom = (unsigned int)scale_denom;
    jpeg_calc_output_dimensions(&cinfo);
    *out_w = (int)cinfo.output_width;
    *out_h = (int)cinfo.output_height;
    jpeg_destroy_decompress(&cinfo);
    return CIMAGE_OK;
}

int CImage_jpeg_decode(const uint8_t *data, size_t size, int scale_denom, uint8_t *out, size_t capacity,
                       int *out_w, int *out_h, char *err, size_t errlen) {
    if (!cimage_valid_denom(scale_denom)) { cimage_set_err(err, errlen, "scale_denom must be 1, 2, 4 or 8"); return CIMAGE_BAD_ARGUMENT; }
    if (!data || size == 0) { cimage_set_err(err, errlen, "empty buffer"); return CIMAGE_TRUNCATED; }
    CIMAGE_JPEG_SETUP(cinfo, jerr, err, errlen)
    JSAMPLE *volatile cmyk_row = NULL;
    int status = CIMAGE_OK;
    if (setjmp(jerr.jump)) {
        free(cmyk_row);
        jpeg_destroy_decompress(&cinfo);
        return jerr.truncated ? CIMAGE_TRUNCATED : CIMAGE_CORRUPT;
    }
    jpeg_create_decompress(&cinfo);
    jpeg_mem_src(&cinfo, (unsigned char *)data, (unsigned long)size);
    jpeg_read_header(&cinfo, TRUE);
    int cmyk = 0;
    switch (cinfo.jpeg_color_space) {
    case JCS_CMYK:
    case JCS_YCCK:
        cinfo.out_color_space = JCS_CMYK;
        cmyk = 1;
        break;
    default:
        cinfo.out_color_space = JCS_RGB; /* gray and YCbCr convert inside libjpeg */
        break;
    }
    cinfo.scale_num = 1;
    cinfo.scale_denom = (unsigned int)scale_denom;
    cinfo.dct_method = JDCT_ISLOW;
    jpeg_start_decompress(&cinfo);
    int w = (int)cinfo.output_width, h = (int)cinfo.output_height;
    if ((size_t)w * (size_t)h * 3 > capacity) {
        cimage_set_err(err, errlen, "output buffer too small");
        status = CIMAGE_BUFFER_TOO_SMALL;
        jpeg_abort_decompress(&cinfo);
        jpeg_destroy_decompress(&cinfo);
        return status;
    }
    if (cmyk) {
        cmyk_row = (JSAMPLE *)malloc((size_t)w * 4);
        if (!cmyk_row) { jpeg_destroy_decompress(&cinfo); return CIMAGE_NO_MEMORY; }
    }
    while (cinfo.output_scanline < cinfo.output_height) {
        uint8_t *dst = out + (size_t)cinfo.output_scanline * (size_t)w * 3;
        if (cmyk) {
            JSAMPROW row = cmyk_row;
            jpeg_read_scanlines(&cinfo, &row, 1);
            /* Adobe CMYK JPEGs are stored inverted; like PIL: R = 255 - ((255-k')... ) with inverted
             * values, i.e. R = c*k/255 where c,k are the stored (inverted) samples. */
            int inverted = cinfo.saw_Adobe_marker;
            for (int x = 0; x < w; x++) {
                int c = cmyk_row[4 * x], m = cmyk_row[4 * x + 1], y = cmyk_row[4 * x + 2], k = cmyk_row[4 * x + 3];
                if (!inverted) { c = 255 - c; m = 255 - m; y = 255 - y; k = 255 - k; }
                dst[3 * x] = (uint8_t)((c * k + 127) / 255);
                dst[3 * x + 1] = (uint8_t)((m * k + 127) / 255);
                dst[3 * x + 2] = (uint8_t)((y * k + 127) / 255);
            }
        } else {
            JSAMPROW row = dst;
            jpeg_read_scanlines(&cinfo, &row, 1);
        }
    }
    jpeg_finish_decompress(&cinfo);
    free(cmyk_row);
    jpeg_destroy_decompress(&cinfo);
    *out_w = w;
    *out_h = h;
    return CIMAGE_OK;
}

typedef struct {
    struct jpeg_error_mgr pub;
    jmp_buf jump;
    char *err;
    size_t errlen;
} cimage_jpeg_cerror;

static void cimage_jpeg_cerror_exit(j_common_ptr cinfo) {
    cimage_jpeg_cerror *e = (cimage_jpeg_cerror *)cinfo->err;
    char buf[JMSG_LENGTH_MAX];
    (*cinfo->err->format_message)(cinfo, buf);
    cimage_set_err(e->err, e->errlen, buf);
    longjmp(e->jump, 1);
}

int CImage_jpeg_encode(const uint8_t *rgb, int width, int height, int quality, uint8_t **out,
                       size_t *out_size, char *err, size_t errlen) {
    if (!rgb || width <= 0 || height <= 0 || !out || !out_size) {
        cimage_set_err(err, errlen, "bad arguments");
        return CIMAGE_BAD_ARGUMENT;
    }
    struct jpeg_compress_struct cinfo;
    cimage_jpeg_cerror jerr;
    memset(&cinfo, 0, sizeof(cinfo));
    cinfo.err = jpeg_std_error(&jerr.pub);
    jerr.pub.error_exit = cimage_jpeg_cerror_exit;
    jerr.pub.output_message = cimage_jpeg_silent;
    jerr.err = err;
    jerr.errlen = errlen;
    unsigned char *volatile buffer = NULL;
    unsigned long volatile buffer_size = 0;
    if (setjmp(jerr.jump)) {
        jpeg_destroy_compress(&cinfo);
        free(buffer);
        return CIMAGE_CORRUPT;
    }
    jpeg_create_compress(&cinfo);
    jpeg_mem_dest(&cinfo, (unsigned char **)&buffer, (unsigned long *)&buffer_size);
    cinfo.image_width = (JDIMENSION)width;
    cinfo.image_height = (JDIMENSION)height;
    cinfo.input_components = 3;
    cinfo.in_color_space = JCS_RGB;
    jpeg_set_defaults(&cinfo);
    jpeg_set_quality(&cinfo, quality < 1 ? 1 : (quality > 100 ? 100 : quality), TRUE);
    jpeg_start_compress(&cinfo, TRUE);
    while (cinfo.next_scanline < cinfo.image_height) {
        JSAMPROW row = (JSAMPROW)(rgb + (size_t)cinfo.next_scanline * (size_t)width * 3);
        jpeg_write_scanlines(&cinfo, &row, 1);
    }
    jpeg_finish_compress(&cinfo);
    jpeg_destroy_compress(&cinfo);
    *out = buffer;
    *out_size = buffer_size;
    return CIMAGE_OK;
}

void CImage_free(void *p) { free(p); }
