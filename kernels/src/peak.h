// The driver of the int8 peak measurements (ek_peak_macs): a per-ISA task runs its multiply loop on every pool
// thread for `seconds` and leaves its multiply-accumulates per second in macs[thread]; the sum is the peak.
#pragma once
#include <algorithm>
#include <cstdint>

#include "internal.h"

namespace ek {
namespace {
struct PeakCtx {
  double seconds;
  double* macs;
};

template <void (*Task)(int64_t i, void* ctx)>
double peak_macs(double seconds) {
  const int nt = std::min(num_threads(), kMaxPeakThreads);
  double macs[kMaxPeakThreads] = {};
  PeakCtx c{seconds, macs};
  parallel_for(nt, Task, &c);
  double total = 0;
  for (int i = 0; i < nt; ++i) total += macs[i];
  return total;
}
}  // namespace
}  // namespace ek
