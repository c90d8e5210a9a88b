// Host API of the KV-cache kernels: reshape_and_cache, block copies, swaps (no torch types).
#pragma once

#include <cuda_runtime.h>
#include <stdint.h>

namespace continuum {

// Write token t's K and V rows (row_bytes each: Hkv*D contiguous elements, any token stride
// in bytes) into row slot_mapping[t] of the contiguous caches. slot < 0: skipped.
// Pure byte copies (same dtype on both sides): dtype-agnostic.
cudaError_t reshape_and_cache_launch(const void* key, const void* value, void* key_cache, void* value_cache,
                                     const int64_t* slot_mapping, int64_t num_tokens,
                                     int64_t key_stride_bytes, int64_t value_stride_bytes,
                                     int64_t row_bytes, cudaStream_t stream);

// For each tensor i < num_tensors and pair j < num_pairs: copy block_bytes from
// src_ptrs[i] + mapping[2j]*block_bytes to dst_ptrs[i] + mapping[2j+1]*block_bytes.
// src_ptrs, dst_ptrs, mapping are DEVICE arrays. Any of the data pointers may be pinned host
// memory (unified virtual addressing): one launch moves every layer's blocks.
cudaError_t copy_blocks_launch(const int64_t* src_ptrs, const int64_t* dst_ptrs, const int64_t* mapping,
                               int64_t num_tensors, int64_t num_pairs, int64_t block_bytes,
                               cudaStream_t stream);

// vLLM's swap_blocks for one tensor: `mapping` is a HOST array of num_pairs (src, dst) block
// ids. Pairs are sorted and merged into runs consecutive on both sides; each run is one
// cudaMemcpyAsync (kind Default: device<->pinned host or device<->device).
// Returns the error of the first failing copy; *num_copies (if non-null) gets the count.
cudaError_t swap_blocks_runs(const void* src, void* dst, const int64_t* mapping, int64_t num_pairs,
                             int64_t block_bytes, cudaStream_t stream, int64_t* num_copies);

}  // namespace continuum
