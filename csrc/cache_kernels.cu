// KV-cache kernels: reshape_and_cache, the block-copy kernel behind copy_blocks and batched
// swaps, and the run-merging swap. Counting and design: docs/kernels.md §3-5.
#include <algorithm>
#include <utility>
#include <vector>

#include "cache_kernels.h"

namespace continuum {

namespace {

// The widest copy unit (16/8/4/2/1 bytes) that divides every address and length given.
int copy_unit(std::initializer_list<uint64_t> values) {
  uint64_t all = 0;
  for (uint64_t v : values) all |= v;
  for (int u = 16; u > 1; u /= 2)
    if (all % u == 0) return u;
  return 1;
}

template <typename U>
__global__ void reshape_and_cache_kernel(const char* __restrict__ key, const char* __restrict__ value,
                                         char* __restrict__ key_cache, char* __restrict__ value_cache,
                                         const int64_t* __restrict__ slots, int64_t key_stride,
                                         int64_t value_stride, int64_t row_bytes) {
  const int64_t t = blockIdx.x;
  const int64_t s = slots[t];
  if (s < 0) return;   // padding token
  const int64_t n = row_bytes / (int64_t)sizeof(U);
  const U* ks = reinterpret_cast<const U*>(key + t * key_stride);
  const U* vs = reinterpret_cast<const U*>(value + t * value_stride);
  U* kd = reinterpret_cast<U*>(key_cache + s * row_bytes);
  U* vd = reinterpret_cast<U*>(value_cache + s * row_bytes);
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
    const U k = ks[i], v = vs[i];   // both loads before either store
    kd[i] = k;
    vd[i] = v;
  }
}

// grid (num_tensors, min(num_pairs, 65535)): one CTA per (tensor, pair), striding over pairs.
template <typename U>
__global__ void __launch_bounds__(256) copy_blocks_kernel(const int64_t* __restrict__ src_ptrs,
                                                          const int64_t* __restrict__ dst_ptrs,
                                                          const int64_t* __restrict__ mapping,
                                                          int64_t num_pairs, int64_t block_bytes) {
  constexpr int kUnroll = 4;   // 4 independent 16-byte loads in flight per thread
  const int64_t n = block_bytes / (int64_t)sizeof(U);
  const char* src_base = reinterpret_cast<const char*>(src_ptrs[blockIdx.x]);
  char* dst_base = reinterpret_cast<char*>(dst_ptrs[blockIdx.x]);
  for (int64_t j = blockIdx.y; j < num_pairs; j += gridDim.y) {
    const U* src = reinterpret_cast<const U*>(src_base + mapping[2 * j] * block_bytes);
    U* dst = reinterpret_cast<U*>(dst_base + mapping[2 * j + 1] * block_bytes);
    for (int64_t i0 = threadIdx.x; i0 < n; i0 += (int64_t)blockDim.x * kUnroll) {
      U buf[kUnroll];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const int64_t i = i0 + (int64_t)u * blockDim.x;
        if (i < n) buf[u] = src[i];
      }
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const int64_t i = i0 + (int64_t)u * blockDim.x;
        if (i < n) dst[i] = buf[u];
      }
    }
  }
}

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

cudaError_t swap_blocks_runs(const void* src, void* dst, const int64_t* mapping, int64_t num_pairs,
                             int64_t block_bytes, cudaStream_t stream, int64_t* num_copies) {
  std::vector<std::pair<int64_t, int64_t>> pairs(num_pairs);
  for (int64_t i = 0; i < num_pairs; ++i) pairs[i] = {mapping[2 * i], mapping[2 * i + 1]};
  std::sort(pairs.begin(), pairs.end());
  int64_t copies = 0;
  cudaError_t err = cudaSuccess;
  for (size_t i = 0; i < pairs.size() && err == cudaSuccess;) {
    size_t j = i + 1;
    while (j < pairs.size() && pairs[j].first == pairs[i].first + (int64_t)(j - i) &&
           pairs[j].second == pairs[i].second + (int64_t)(j - i))
      ++j;
    err = cudaMemcpyAsync((char*)dst + pairs[i].second * block_bytes,
                          (const char*)src + pairs[i].first * block_bytes,
                          (size_t)(j - i) * block_bytes, cudaMemcpyDefault, stream);
    ++copies;
    i = j;
  }
  if (num_copies) *num_copies = copies;
  return err;
}

}  // namespace continuum
