// CPU feature detection (cpuid + xgetbv, once at load), the EDGEKIT_ISA override and the active ISA.
#include <cpuid.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <string>

#include "config.h"
#include "internal.h"

namespace {
thread_local std::string g_error;

uint64_t xgetbv0() {
  uint32_t lo, hi;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  return ((uint64_t)hi << 32) | lo;
}

ek_isa detect() {
  unsigned a, b, c, d;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return EK_ISA_REF;
  const bool osxsave = c & (1u << 27);
  if (!osxsave) return EK_ISA_REF;
  const uint64_t xcr0 = xgetbv0();
  const bool ymm_os = (xcr0 & 0x6) == 0x6, zmm_os = (xcr0 & 0xe6) == 0xe6;
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return EK_ISA_REF;
  const bool avx2 = (b & (1u << 5)) && ymm_os;
  const bool avx512f = (b & (1u << 16)) && zmm_os, avx512bw = b & (1u << 30), avx512vl = b & (1u << 31);
  const bool vnni = c & (1u << 11);
  if (avx512f && avx512bw && avx512vl && vnni) return EK_ISA_AVX512_VNNI;
  if (avx512f && avx512bw && avx512vl) return EK_ISA_AVX512;
  if (avx2) return EK_ISA_AVX2;
  return EK_ISA_REF;
}

ek_isa g_best = detect();

ek_isa from_env() {
  const char* s = std::getenv("EDGEKIT_ISA");
  if (!s || !*s) return g_best;
  ek_isa want = g_best;
  if (!std::strcmp(s, "ref")) want = EK_ISA_REF;
  else if (!std::strcmp(s, "avx2")) want = EK_ISA_AVX2;
  else if (!std::strcmp(s, "avx512")) want = EK_ISA_AVX512;
  else if (!std::strcmp(s, "avx512_vnni")) want = EK_ISA_AVX512_VNNI;
  return want <= g_best ? want : g_best;  // never run a path the CPU lacks
}

std::atomic<int> g_active{(int)from_env()};
}  // namespace

namespace ek {
void set_error(const std::string& msg) { g_error = msg; }
int fail(int code, const std::string& msg) {
  g_error = msg;
  return code;
}
bool cpu_has_avx512_bf16() { return __builtin_cpu_supports("avx512bf16"); }
}  // namespace ek

extern "C" {
ek_isa ek_best_isa(void) { return g_best; }
ek_isa ek_active_isa(void) { return (ek_isa)g_active.load(); }
int ek_set_isa(ek_isa isa) {
  if ((int)isa < 0 || isa > g_best) return ek::fail(EK_EUNSUPPORTED, std::string("this CPU cannot run ISA ") + ek_isa_name(isa));
  g_active.store((int)isa);
  return EK_OK;
}
const char* ek_isa_name(ek_isa isa) {
  switch (isa) {
    case EK_ISA_REF: return "ref";
    case EK_ISA_AVX2: return "avx2";
    case EK_ISA_AVX512: return "avx512";
    case EK_ISA_AVX512_VNNI: return "avx512_vnni";
  }
  return "unknown";
}
const char* ek_last_error(void) { return g_error.c_str(); }
}
