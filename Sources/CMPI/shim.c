#include "CMPI.h"
#include <string.h>
#include <stdio.h>

MPI_Comm CMPI_COMM_WORLD(void) { return MPI_COMM_WORLD; }
MPI_Comm CMPI_COMM_NULL(void) { return MPI_COMM_NULL; }
MPI_Datatype CMPI_FLOAT(void) { return MPI_FLOAT; }
MPI_Datatype CMPI_DOUBLE(void) { return MPI_DOUBLE; }
MPI_Datatype CMPI_INT32(void) { return MPI_INT32_T; }
MPI_Datatype CMPI_INT64(void) { return MPI_INT64_T; }
MPI_Datatype CMPI_UINT64(void) { return MPI_UINT64_T; }
MPI_Datatype CMPI_BYTE(void) { return MPI_BYTE; }
MPI_Op CMPI_SUM(void) { return MPI_SUM; }
MPI_Op CMPI_MAX(void) { return MPI_MAX; }
MPI_Op CMPI_MIN(void) { return MPI_MIN; }
MPI_Op CMPI_BXOR(void) { return MPI_BXOR; }
void *CMPI_IN_PLACE(void) { return MPI_IN_PLACE; }
MPI_Request CMPI_REQUEST_NULL(void) { return MPI_REQUEST_NULL; }
MPI_Status *CMPI_STATUS_IGNORE(void) { return MPI_STATUS_IGNORE; }
MPI_Status *CMPI_STATUSES_IGNORE(void) { return MPI_STATUSES_IGNORE; }
int CMPI_SUCCESS(void) { return MPI_SUCCESS; }
int CMPI_THREAD_FUNNELED(void) { return MPI_THREAD_FUNNELED; }
int CMPI_THREAD_SERIALIZED(void) { return MPI_THREAD_SERIALIZED; }
int CMPI_THREAD_MULTIPLE(void) { return MPI_THREAD_MULTIPLE; }
int CMPI_COMM_TYPE_SHARED(void) { return MPI_COMM_TYPE_SHARED; }
int CMPI_UNDEFINED(void) { return MPI_UNDEFINED; }
MPI_Info CMPI_INFO_NULL(void) { return MPI_INFO_NULL; }
int CMPI_MAX_ERROR_STRING(void) { return MPI_MAX_ERROR_STRING; }

MPI_Datatype CMPI_UINT16(void) { return MPI_UINT16_T; }

static inline float bf16_to_f32(unsigned short h) {
    unsigned int u = (unsigned int)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static inline unsigned short f32_to_bf16(float f) {
    unsigned int u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (unsigned short)((u >> 16) | 0x40);  /* quiet NaN */
    u += 0x7fffu + ((u >> 16) & 1u);
    return (unsigned short)(u >> 16);
}

static void bf16_sum(void *in, void *inout, int *len, MPI_Datatype *type) {
    (void)type;
    const unsigned short *a = in;
    unsigned short *b = inout;
    for (int i = 0; i < *len; i++) b[i] = f32_to_bf16(bf16_to_f32(a[i]) + bf16_to_f32(b[i]));
}

static MPI_Op bf16_sum_op = MPI_OP_NULL;

MPI_Op CMPI_BF16_SUM(void) {
    if (bf16_sum_op == MPI_OP_NULL) MPI_Op_create(bf16_sum, 1, &bf16_sum_op);
    return bf16_sum_op;
}

int CMPI_error_string(int code, char *buf, int cap) {
    char tmp[MPI_MAX_ERROR_STRING + 1];
    int len = 0;
    if (MPI_Error_string(code, tmp, &len) != MPI_SUCCESS) {
        len = snprintf(tmp, sizeof tmp, "MPI error %d", code);
    }
    if (cap <= 0) return len;
    int n = len < cap - 1 ? len : cap - 1;
    memcpy(buf, tmp, (size_t)n);
    buf[n] = 0;
    return n;
}
