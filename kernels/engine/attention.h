// Attention in the engine: per (sequence, head) tasks over a chunk of sequences, the kernel chosen once per run
// from the active ISA's table (kernels/src/config.h). With a sparse int8 QKV on the token-tile path, each head
// task first computes its own head's q, k, v rows (transposed), so attention reads them from its core's cache.
#pragma once
#include <cstdint>

#include "../src/ukernels.h"
#include "weights.h"

namespace ek {
namespace engine {

// The attention kernel for head size d: on transposed q, k, v (the 4x1 kernels' transposed output), with int8
// products or not; else row-major, bf16 where asked and it runs. kNone when the active ISA has no such kernel.
AttentionKernel attention_kernel(int64_t d, bool bf16, bool transposed, bool int8);

struct AttnCtx {
  const float* qkv;  // [T, ld] with q at col qo, k at ko, v at vo; transposed ([3H, ld], q at row qo...) if transposed
  int64_t ld, qo, ko, vo;
  float* ctx;  // [T, H]
  const int64_t* seq_start;
  const int64_t* seq_len;
  int64_t nseq, heads, d, h;
  AttentionKernel kernel;  // (attention_kernel)
  bool transposed;         // q, k, v transposed, as the kernel reads them
  bool first_only;      // only the first query row of each sequence (CLS pooling in the last layer)
  // With qkv_l: one task per head (over every sequence of the chunk) that first computes the head's q, k, v rows
  // (transposed, into qkv) from qkv_x (the chunk's quantised input, transposed, stride qkv_ldx, cn tokens).
  const Linear* qkv_l = nullptr;
  const uint8_t* qkv_x = nullptr;
  int64_t qkv_ldx = 0, cn = 0;
  int rc = 0;
  double* qkv_us = nullptr;  // profiling: each head task's q, k, v time (microseconds), one slot per head
  // With qkv_l: q, k, v go to a buffer of the calling thread (qkv_floats floats, laid out as qkv would be)
  // instead of qkv, so that head tasks of several chunks can share one parallel region (merged_attn_task).
  bool qkv_private = false;
  int64_t qkv_floats = 0;
};

// Task `task` of a chunk: (sequence, head) = (task / heads, task % heads), or with qkv_l head `task` over all
// the chunk's sequences.
void attn_task(int64_t task, void* p);

// The head tasks of several chunks in one parallel region: task = chunk * heads + head.
struct MergedAttn {
  AttnCtx* chunks;
  int64_t heads;
};
void merged_attn_task(int64_t task, void* p);
}  // namespace engine
}  // namespace ek
