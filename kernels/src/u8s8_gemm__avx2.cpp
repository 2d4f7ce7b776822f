#define EK_NS generic_avx2
#include "generic.inc"
