// KV-cache kernels (device code): reshape_and_cache and the block copy behind copy_blocks and
// batched swaps. Counting and design: docs/kernels.md §3-5. Launchers: cache_kernels.cu.
#pragma once

#include <cuda_runtime.h>
#include <stdint.h>

#include <initializer_list>

namespace continuum {

// The widest copy unit (16/8/4/2/1 bytes) that divides every address and length given.
inline int copy_unit(std::initializer_list<uint64_t> values) {
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

}  // namespace continuum
