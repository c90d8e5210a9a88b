// Shared device helpers for continuum's kernels: dtypes, 16-byte vector loads, error checks.
// Plain CUDA (no torch headers) so that CI can compile-check every kernel with nvcc alone.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>

#include "dtype.h"

namespace continuum {

__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T> __device__ __forceinline__ T from_float(float x);
template <> __device__ __forceinline__ float from_float<float>(float x) { return x; }
template <> __device__ __forceinline__ __half from_float<__half>(float x) { return __float2half_rn(x); }
template <> __device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);
}

// Number of T elements in one 16-byte access.
template <typename T> struct Vec16 { static constexpr int N = 16 / sizeof(T); };

// One 16-byte load (the caller guarantees 16-byte alignment). Kept raw so that several loads
// can be issued before any is converted: the loads stay in flight together.
__device__ __forceinline__ uint4 ld16(const void* p) { return *reinterpret_cast<const uint4*>(p); }

// Unpack 16 raw bytes into Vec16<T>::N floats (constant indices only: stays in registers).
template <typename T>
__device__ __forceinline__ void unpack16(const uint4& raw, float* out) {
  constexpr int N = Vec16<T>::N;
  alignas(16) T e[N];
  *reinterpret_cast<uint4*>(e) = raw;
#pragma unroll
  for (int i = 0; i < N; ++i) out[i] = to_float(e[i]);
}

}  // namespace continuum
