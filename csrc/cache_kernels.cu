// Host launchers of the KV-cache kernels (cache_kernels.cuh); the run-merging swap lives in
// swap_blocks.cu.
#include <algorithm>
#include <utility>
#include <vector>

#include "cache_kernels.cuh"
#include "cache_kernels.h"

namespace continuum {

namespace {

template <typename U>
cudaError_t launch_reshape(const void* key, const void* value, void* kc, void* vc, const int64_t* slots,
                           int64_t num_tokens, int64_t ks, int64_t vs, int64_t row_bytes, cudaStream_t stream) {
  const int64_t n = row_bytes / (int64_t)sizeof(U);
  const int threads = (int)std::min<int64_t>(256, std::max<int64_t>(32, (n + 31) / 32 * 32));
  reshape_and_cache_kernel<U><<<(unsigned)num_tokens, threads, 0, stream>>>(
      (const char*)key, (const char*)value, (char*)kc, (char*)vc, slots, ks, vs, row_bytes);
  return cudaGetLastError();
}

template <typename U>
cudaError_t launch_copy(const int64_t* src_ptrs, const int64_t* dst_ptrs, const int64_t* mapping,
                        int64_t num_tensors, int64_t num_pairs, int64_t block_bytes, cudaStream_t stream) {
  dim3 grid((unsigned)num_tensors, (unsigned)std::min<int64_t>(num_pairs, 65535));
  copy_blocks_kernel<U><<<grid, 256, 0, stream>>>(src_ptrs, dst_ptrs, mapping, num_pairs, block_bytes);
  return cudaGetLastError();
}

}  // namespace

cudaError_t reshape_and_cache_launch(const void* key, const void* value, void* key_cache, void* value_cache,
                                     const int64_t* slot_mapping, int64_t num_tokens,
                                     int64_t key_stride_bytes, int64_t value_stride_bytes,
                                     int64_t row_bytes, cudaStream_t stream) {
  if (num_tokens == 0) return cudaSuccess;
  const int u = copy_unit({(uint64_t)key, (uint64_t)value, (uint64_t)key_cache, (uint64_t)value_cache,
                           (uint64_t)key_stride_bytes, (uint64_t)value_stride_bytes, (uint64_t)row_bytes});
  switch (u) {
    case 16: return launch_reshape<uint4>(key, value, key_cache, value_cache, slot_mapping, num_tokens,
                                          key_stride_bytes, value_stride_bytes, row_bytes, stream);
    case 8: return launch_reshape<uint2>(key, value, key_cache, value_cache, slot_mapping, num_tokens,
                                         key_stride_bytes, value_stride_bytes, row_bytes, stream);
    case 4: return launch_reshape<uint32_t>(key, value, key_cache, value_cache, slot_mapping, num_tokens,
                                            key_stride_bytes, value_stride_bytes, row_bytes, stream);
    case 2: return launch_reshape<uint16_t>(key, value, key_cache, value_cache, slot_mapping, num_tokens,
                                            key_stride_bytes, value_stride_bytes, row_bytes, stream);
    default: return launch_reshape<uint8_t>(key, value, key_cache, value_cache, slot_mapping, num_tokens,
                                            key_stride_bytes, value_stride_bytes, row_bytes, stream);
  }
}

cudaError_t copy_blocks_launch(const int64_t* src_ptrs, const int64_t* dst_ptrs, const int64_t* mapping,
                               int64_t num_tensors, int64_t num_pairs, int64_t block_bytes,
                               cudaStream_t stream) {
  if (num_tensors == 0 || num_pairs == 0) return cudaSuccess;
  // Base pointers come from the caching allocators (>= 512-byte aligned); the block size decides.
  if (block_bytes % 16 == 0)
    return launch_copy<uint4>(src_ptrs, dst_ptrs, mapping, num_tensors, num_pairs, block_bytes, stream);
  if (block_bytes % 4 == 0)
    return launch_copy<uint32_t>(src_ptrs, dst_ptrs, mapping, num_tensors, num_pairs, block_bytes, stream);
  return launch_copy<uint8_t>(src_ptrs, dst_ptrs, mapping, num_tensors, num_pairs, block_bytes, stream);
}

}  // namespace continuum
