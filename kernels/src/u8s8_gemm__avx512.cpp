#define EK_NS generic_avx512
#include "generic.inc"
