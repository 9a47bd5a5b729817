// Generated protobuf-c code for proto/*.proto is included here.
#ifndef CCONTROLPROTO_H
#define CCONTROLPROTO_H
#include <protobuf-c/protobuf-c.h>
#endif
