#include "CControlProto.h"
