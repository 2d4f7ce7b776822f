#define EK_QUANTIZE u8_quantize__avx2
#include "u8_quantize.inc"
