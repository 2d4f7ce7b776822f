#define EK_F32_GEMM f32_gemm__avx512
#include "f32_gemm.inc"
