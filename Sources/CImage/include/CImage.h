#ifndef CIMAGE_H
#define CIMAGE_H
#include <stddef.h>
#include <stdint.h>
#endif
