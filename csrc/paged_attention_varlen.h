// Host API of the varlen paged-attention kernel (no torch types: the binding adapts).
// Counting and design: docs/kernels.md §2.
#pragma once

#include <cuda_runtime.h>
#include <stdint.h>

#include "dtype.h"

namespace continuum {

// One step of any shape in one launch: item i has q_len_i = qsl[i+1] - qsl[i] new query tokens
// (rows qsl[i] .. qsl[i+1]-1 of the packed q/out) over a context of seq_lens[i] tokens whose last
// q_len_i are the new ones (their K/V already written by reshape_and_cache). Query row r of item
// i sits at position seq_lens[i] - q_len_i + r and sees keys 0..that position (bottom-right
// causal). Items with q_len 0 (or seq_len 0 and q_len 0) produce nothing.
// Layouts (elements): q [T, H, D] with strides (q_stride_t, q_stride_h, 1), 16-byte aligned rows;
// out likewise (unit last stride); k_cache/v_cache contiguous [num_blocks, block_size, Hkv, D];
// block_tables [S, bt_stride] int64 (max_blocks valid columns); seq_lens [S], query_start_loc
// [S+1] int64. Invariants the host guarantees: H % Hkv == 0, group <= varlen_max_group(D),
// block_size a power of two, 0 <= q_len_i <= seq_lens[i], qsl[0] == 0, qsl[S] == T, block ids
// < num_blocks. Keys past max_blocks * block_size are never read (a too-long seq_len gives a
// wrong result, never a fault).
struct PagedVarlenParams {
  void* out;
  const void* q;
  const void* k_cache;
  const void* v_cache;
  const int64_t* block_tables;
  const int64_t* seq_lens;
  const int64_t* query_start_loc;
  int64_t q_stride_t, q_stride_h;
  int64_t out_stride_t, out_stride_h;
  int64_t bt_stride;
  int num_seqs, num_tokens, num_heads, num_kv_heads, head_size;
  int block_size;
  int block_shift;             // log2(block_size)
  int max_blocks;              // valid columns of block_tables
  float scale_log2;            // softmax scale * log2(e): the kernel uses exp2
  // Filled by paged_varlen_plan:
  int group;                   // H / Hkv query heads per KV head (rows per query token)
  int tile_tokens;             // query tokens per CTA: rows_per_cta(D) / group
  int num_tiles;               // grid.x: num_tokens / tile_tokens + num_seqs (an upper bound)
};

// Query rows per CTA (a row = one query token x one query head of the CTA's KV head).
inline constexpr int varlen_rows_per_cta(int head_size) { return head_size >= 256 ? 32 : 64; }
inline constexpr int varlen_max_group(int head_size) { return varlen_rows_per_cta(head_size); }

// Item i's tiles are grid.x indices [qsl[i] / tile + i, qsl[i+1] / tile + i + 1): strictly
// increasing starts (the "+ i"), at least ceil(q_len_i / tile) slots each, so a CTA finds its
// item by a binary search over query_start_loc with no host-side tile list (no sync, graph-
// friendly); slots past an item's last tile exit at once. Host-only, shared with the emulation.
inline void paged_varlen_plan(PagedVarlenParams& p) {
  p.group = p.num_heads / p.num_kv_heads;
  p.tile_tokens = varlen_rows_per_cta(p.head_size) / p.group;
  p.num_tiles = p.tile_tokens > 0 ? p.num_tokens / p.tile_tokens + p.num_seqs : 0;
}

// Launch on `stream`. cudaErrorInvalidValue for an unsupported dtype / head size / group.
cudaError_t paged_varlen_launch(const PagedVarlenParams& p, DType dtype, cudaStream_t stream);

}  // namespace continuum
