#define EK_NS generic_avx512
#define EK_GENERIC_INT8
#include "generic.inc"
