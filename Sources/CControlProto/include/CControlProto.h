// CControlProto: protobuf-c code generated from proto/albef_control.proto (scripts/gen-proto).
#ifndef CCONTROLPROTO_H
#define CCONTROLPROTO_H
#include <protobuf-c/protobuf-c.h>
#include "albef_control.pb-c.h"
#endif
