#define EK_F32_GEMM f32_gemm__avx2
#include "f32_gemm.inc"
