// Memory: activation buffers (aligned, huge pages when large) and the per-thread scratch of the kernels.
#include <sys/mman.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <new>

#include "internal.h"

namespace ek {
// Per-thread buffers from ek_alloc_buffer (64-byte aligned, so that transposed operands' 64-token rows fill whole
// cache lines; huge pages when large: the 4x1 kernels' gathers).
void* scratch(int slot, size_t bytes) {
  struct Buf {
    void* p = nullptr;
    size_t size = 0;
    ~Buf() { ek_free_buffer(p); }
  };
  static thread_local Buf bufs[8];
  Buf& b = bufs[slot & 7];
  if (b.size < bytes + 64) {
    ek_free_buffer(b.p);
    b.size = 0;
    b.p = ek_alloc_buffer(bytes + 64);
    if (!b.p) throw std::bad_alloc();
    b.size = bytes + 64;
  }
  return b.p;
}
}  // namespace ek

extern "C" {
void* ek_scratch(int slot, size_t bytes) { return ek::scratch(slot, bytes); }

void* ek_alloc_buffer(size_t bytes) {
  constexpr size_t kHuge = size_t(2) << 20, kLarge = size_t(64) << 10;
  const bool large = bytes >= kLarge;
  const size_t size = large ? (bytes + kHuge - 1) / kHuge * kHuge : std::max<size_t>(bytes, 64);
  void* p = nullptr;
  if (posix_memalign(&p, large ? kHuge : 64, size) != 0) return nullptr;
#ifdef MADV_HUGEPAGE
  if (large) madvise(p, size, MADV_HUGEPAGE);  // advice only: without THP the buffer simply has 4 KB pages
#endif
  std::memset(p, 0, size);
  return p;
}
void ek_free_buffer(void* p) { free(p); }

}
