// Host API of the paged-attention decode kernels (no torch types: the binding adapts).
#pragma once

#include <cuda_runtime.h>
#include <stdint.h>

#include <algorithm>

#include "dtype.h"

namespace continuum {

// One decode step: every sequence has exactly one query token, whose K/V are already cached.
// Layouts (row-major, elements): q [B, H, D] with strides (q_stride_b, q_stride_h, 1);
// out likewise; k_cache/v_cache contiguous [num_blocks, block_size, Hkv, D];
// block_tables [B, bt_stride] int64; seq_lens [B] int64 (0 allowed: that row's output is 0).
// Invariants: H % Hkv == 0; block_size is a power of two; every block id a sequence uses is
// < num_blocks (the host guarantees it); tmp_out/tmp_ml hold B*H*num_splits*(D | 2) floats.
struct PagedDecodeParams {
  void* out;
  float* tmp_out;              // [B, H, num_splits, D] normalised partial outputs
  float* tmp_ml;               // [B, H, num_splits, 2] (max of scaled logits, sum of exp2)
  const void* q;
  const void* k_cache;
  const void* v_cache;
  const int64_t* block_tables;
  const int64_t* seq_lens;
  int64_t q_stride_b, q_stride_h;
  int64_t out_stride_b, out_stride_h;
  int64_t bt_stride;
  int num_seqs, num_heads, num_kv_heads, head_size;
  int block_size;
  int block_shift;             // log2(block_size)
  float scale_log2;            // softmax scale * log2(e): the kernels use exp2
  // Filled by paged_decode_plan:
  int group;                   // H / Hkv query heads per KV head
  int group_pad;               // per-CTA query heads (1, 2, 4 or 8)
  int head_chunks;             // ceil(group / group_pad)
  int partition_size;          // tokens per split
  int num_splits;              // ceil(max_seq_len / partition_size)
};

constexpr int kMaxPartition = 512;   // tokens per split: 16 KiB of fp32 logits for 8 heads
constexpr int kMinPartition = 128;

// Choose the per-CTA head group, the partition size and the number of splits for a step whose
// longest context is max_seq_len (a CUDA graph passes the longest context it will ever see).
// Host-only and inline so that the binding and the CPU emulation test share it.
inline void paged_decode_plan(PagedDecodeParams& p, int max_seq_len, int num_sms) {
  p.group = p.num_heads / p.num_kv_heads;
  p.group_pad = p.group <= 1 ? 1 : p.group <= 2 ? 2 : p.group <= 4 ? 4 : 8;
  p.head_chunks = (p.group + p.group_pad - 1) / p.group_pad;
  const int len = std::max(max_seq_len, 1);
  // Halve the partition while the grid would leave SMs idle (batch 1 at a few k tokens):
  // more splits cost only 2 KiB of fp32 partials each.
  int part = kMaxPartition;
  auto ctas = [&](int pp) {
    return (int64_t)p.num_seqs * p.num_kv_heads * p.head_chunks * ((len + pp - 1) / pp);
  };
  while (part > kMinPartition && ctas(part) < 2 * (int64_t)num_sms) part /= 2;
  p.partition_size = part;
  p.num_splits = (len + part - 1) / part;
}

// Launch the decode kernel (and the split reduction when num_splits > 1) on `stream`.
// Returns cudaErrorInvalidValue for an unsupported dtype / head size.
cudaError_t paged_decode_launch(const PagedDecodeParams& p, DType dtype, cudaStream_t stream);

}  // namespace continuum
