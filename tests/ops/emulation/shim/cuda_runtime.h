// Host emulation of the few CUDA features the decode kernel uses, so that its index math and
// reductions run on a CPU (tests/ops/test_decode_emulated.py). One CTA at a time; each CUDA
// thread is a std::thread; __syncthreads and warp shuffles are std::barrier rendezvous.
// Not a CUDA implementation: only what csrc/paged_attention{,_varlen}.cuh need, with full-warp
// shuffles (every lane of the warp takes part; xor partners stay inside it).
#pragma once

#include <barrier>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <algorithm>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static

struct uint4 { unsigned x, y, z, w; };
struct uint2 { unsigned x, y; };
struct alignas(16) float4 { float x, y, z, w; };
inline float4 make_float4(float a, float b, float c, float d) { return {a, b, c, d}; }
inline uint4 make_uint4(unsigned a, unsigned b, unsigned c, unsigned d) { return {a, b, c, d}; }
struct dim3 { unsigned x = 1, y = 1, z = 1; };
typedef void* cudaStream_t;
enum cudaError_t { cudaSuccess = 0, cudaErrorInvalidValue = 1 };

inline thread_local dim3 threadIdx, blockIdx, blockDim, gridDim;
inline std::barrier<>* g_cta_barrier = nullptr;
inline std::barrier<>* g_warp_barrier[32] = {};
inline float g_warp_buf[32][32];

inline void __syncthreads() { g_cta_barrier->arrive_and_wait(); }

inline float __shfl_xor_sync(unsigned /*mask: full warps only*/, float v, int lane_mask) {
  const unsigned w = threadIdx.x / 32, l = threadIdx.x % 32;
  g_warp_buf[w][l] = v;
  g_warp_barrier[w]->arrive_and_wait();
  const float r = g_warp_buf[w][l ^ lane_mask];
  g_warp_barrier[w]->arrive_and_wait();
  return r;
}

using std::max;
using std::min;
inline float* g_dyn_smem = nullptr;   // dynamic shared memory of the running CTA

// Copies for the host-side swap code: a plain memcpy, counted.
enum cudaMemcpyKind { cudaMemcpyDefault = 4 };
inline int g_memcpy_calls = 0;
inline cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t n, cudaMemcpyKind, cudaStream_t) {
  std::memcpy(dst, src, n);
  ++g_memcpy_calls;
  return cudaSuccess;
}
