// C shim over Open MPI. Open MPI defines its handles (MPI_COMM_WORLD, MPI_FLOAT, MPI_SUM,
// MPI_IN_PLACE, ...) as cast macros over global structs, which Swift cannot import; these
// prefixed functions return them.
#ifndef CMPI_H
#define CMPI_H
#include <mpi.h>

MPI_Comm CMPI_COMM_WORLD(void);
MPI_Comm CMPI_COMM_NULL(void);
MPI_Datatype CMPI_FLOAT(void);
MPI_Datatype CMPI_DOUBLE(void);
MPI_Datatype CMPI_INT32(void);
MPI_Datatype CMPI_INT64(void);
MPI_Datatype CMPI_UINT64(void);
MPI_Datatype CMPI_BYTE(void);
MPI_Op CMPI_SUM(void);
MPI_Op CMPI_MAX(void);
MPI_Op CMPI_MIN(void);
MPI_Op CMPI_BXOR(void);
void *CMPI_IN_PLACE(void);
MPI_Request CMPI_REQUEST_NULL(void);
MPI_Status *CMPI_STATUS_IGNORE(void);
MPI_Status *CMPI_STATUSES_IGNORE(void);
int CMPI_SUCCESS(void);
int CMPI_THREAD_FUNNELED(void);
int CMPI_THREAD_SERIALIZED(void);
int CMPI_THREAD_MULTIPLE(void);
/// MPI_Comm_split_type's split by shared memory (the ranks of one host).
int CMPI_COMM_TYPE_SHARED(void);
int CMPI_UNDEFINED(void);
MPI_Info CMPI_INFO_NULL(void);
int CMPI_MAX_ERROR_STRING(void);

/// uint16 (the storage of a bf16 value).
MPI_Datatype CMPI_UINT16(void);
/// The sum of bf16 values (uint16 bit patterns): each pairwise sum is computed in float32 and
/// rounded to bf16 (round to nearest, ties to even; NaN stays NaN). Commutative, so every rank
/// gets the same result. Created on first use; call after MPI_Init.
MPI_Op CMPI_BF16_SUM(void);

/// Writes the text for an MPI error code into buf (NUL-terminated); returns its length.
int CMPI_error_string(int code, char *buf, int cap);

#endif
