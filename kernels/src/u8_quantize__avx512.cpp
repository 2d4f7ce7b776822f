#define EK_QUANTIZE u8_quantize__avx512
#include "u8_quantize.inc"
