// Port limits of the quad step, one thread: clock estimate from dependent adds, vpdpbusd throughput with 12
// register accumulators, and 16 vpdpbusd + 8 byte/word unpacks with no memory operands (the quad step's mix).
// Built and run by proto_quad.sh.
#include <chrono>
#include <cstdio>
#include <immintrin.h>
int main(){
  // dependent integer adds: 1 per cycle
  long x=0; auto t0=std::chrono::steady_clock::now();
  for(long i=0;i<1000000000;++i){ asm volatile("add $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\tadd $1, %0":"+r"(x)); }
  double s=std::chrono::duration<double>(std::chrono::steady_clock::now()-t0).count();
  printf("scalar GHz %.2f\n", 4e9/s/1e9);
  // vpdpbusd throughput with 12 accumulators (as peak_macs) -> per cycle using the measured GHz
  __m512i a0=_mm512_setzero_si512(),a1=a0,a2=a0,a3=a0,a4=a0,a5=a0,a6=a0,a7=a0,a8=a0,a9=a0,a10=a0,a11=a0; __m512i p=_mm512_set1_epi32(0x01010101), q=_mm512_set1_epi32(0x01020304);
  t0=std::chrono::steady_clock::now();
  for(long i=0;i<100000000;++i){
    asm("vpdpbusd %13, %12, %0\n\tvpdpbusd %13, %12, %1\n\tvpdpbusd %13, %12, %2\n\tvpdpbusd %13, %12, %3\n\t"
        "vpdpbusd %13, %12, %4\n\tvpdpbusd %13, %12, %5\n\tvpdpbusd %13, %12, %6\n\tvpdpbusd %13, %12, %7\n\t"
        "vpdpbusd %13, %12, %8\n\tvpdpbusd %13, %12, %9\n\tvpdpbusd %13, %12, %10\n\tvpdpbusd %13, %12, %11"
        : "+v"(a0), "+v"(a1), "+v"(a2), "+v"(a3), "+v"(a4), "+v"(a5), "+v"(a6), "+v"(a7), "+v"(a8), "+v"(a9), "+v"(a10), "+v"(a11) : "v"(p), "v"(q));
  }
  double s2=std::chrono::duration<double>(std::chrono::steady_clock::now()-t0).count();
  printf("vpdpbusd per ns %.2f\n", 12e8/s2/1e9);
  // after avx512: scalar again
  t0=std::chrono::steady_clock::now();
  for(long i=0;i<300000000;++i){ asm volatile("add $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\tadd $1, %0":"+r"(x)); }
  s=std::chrono::duration<double>(std::chrono::steady_clock::now()-t0).count();
  printf("scalar GHz after %.2f\n", 1.2e9/s/1e9);
  // mixed: 16 dpbusd + 8 unpack (p5 only), independent
  t0=std::chrono::steady_clock::now();
  for(long i=0;i<50000000;++i){
    asm("vpdpbusd %13, %12, %0\n\tvpdpbusd %13, %12, %1\n\tvpdpbusd %13, %12, %2\n\tvpdpbusd %13, %12, %3\n\t"
        "vpunpcklbw %12, %13, %%zmm24\n\tvpunpckhbw %12, %13, %%zmm25\n\t"
        "vpdpbusd %13, %12, %4\n\tvpdpbusd %13, %12, %5\n\tvpdpbusd %13, %12, %6\n\tvpdpbusd %13, %12, %7\n\t"
        "vpunpcklwd %12, %13, %%zmm26\n\tvpunpckhwd %12, %13, %%zmm27\n\t"
        "vpdpbusd %13, %12, %8\n\tvpdpbusd %13, %12, %9\n\tvpdpbusd %13, %12, %10\n\tvpdpbusd %13, %12, %11\n\t"
        "vpunpcklbw %12, %13, %%zmm28\n\tvpunpckhbw %12, %13, %%zmm29\n\t"
        "vpdpbusd %13, %12, %0\n\tvpdpbusd %13, %12, %1\n\tvpdpbusd %13, %12, %2\n\tvpdpbusd %13, %12, %3\n\t"
        "vpunpcklwd %12, %13, %%zmm30\n\tvpunpckhwd %12, %13, %%zmm31\n\t"
        : "+v"(a0), "+v"(a1), "+v"(a2), "+v"(a3), "+v"(a4), "+v"(a5), "+v"(a6), "+v"(a7), "+v"(a8), "+v"(a9), "+v"(a10), "+v"(a11) : "v"(p), "v"(q)
        : "xmm24","xmm25","xmm26","xmm27","xmm28","xmm29","xmm30","xmm31");
  }
  double s3=std::chrono::duration<double>(std::chrono::steady_clock::now()-t0).count();
  printf("mixed 16 dpbusd + 8 unpack: ns per group %.2f\n", s3/50000000*1e9);
  __m512i a[12]={a0,a1,a2,a3,a4,a5,a6,a7,a8,a9,a10,a11}; long sum=0; for(auto&v:a) sum+=_mm512_reduce_add_epi32(v); printf("%ld %ld\n", sum, x);
}
