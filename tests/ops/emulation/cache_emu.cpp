// CPU emulation harness of the KV-cache kernels (csrc/cache_kernels.cuh) and the run-merging
// swap (csrc/swap_blocks.cu): kernels have no barriers, so each CUDA thread runs in turn.
// C ABI for ctypes; see tests/ops/test_cache_emulated.py.
#include "cache_kernels.cuh"
#include "cache_kernels.h"
#include "swap_blocks.cu"

namespace continuum {

template <typename U>
void emu_reshape(const char* key, const char* value, char* kc, char* vc, const int64_t* slots, int64_t T,
                 int64_t ks, int64_t vs, int64_t row_bytes) {
  const int64_t n = row_bytes / (int64_t)sizeof(U);
  const unsigned threads = (unsigned)std::min<int64_t>(256, std::max<int64_t>(32, (n + 31) / 32 * 32));
  for (int64_t b = 0; b < T; ++b)
    for (unsigned t = 0; t < threads; ++t) {
      blockIdx = {(unsigned)b, 0, 0};
      threadIdx = {t, 0, 0};
      blockDim = {threads, 1, 1};
      reshape_and_cache_kernel<U>(key, value, kc, vc, slots, ks, vs, row_bytes);
    }
}

}  // namespace continuum

using namespace continuum;

extern "C" int emu_reshape_and_cache(const void* key, const void* value, void* kc, void* vc, const int64_t* slots,
                                     int64_t T, int64_t ks, int64_t vs, int64_t row_bytes) {
  const int u = copy_unit({(uint64_t)key, (uint64_t)value, (uint64_t)kc, (uint64_t)vc, (uint64_t)ks,
                           (uint64_t)vs, (uint64_t)row_bytes});
  const char *k = (const char*)key, *v = (const char*)value;
  char *a = (char*)kc, *b = (char*)vc;
  switch (u) {
    case 16: emu_reshape<uint4>(k, v, a, b, slots, T, ks, vs, row_bytes); break;
    case 8: emu_reshape<uint2>(k, v, a, b, slots, T, ks, vs, row_bytes); break;
    case 4: emu_reshape<uint32_t>(k, v, a, b, slots, T, ks, vs, row_bytes); break;
    case 2: emu_reshape<uint16_t>(k, v, a, b, slots, T, ks, vs, row_bytes); break;
    default: emu_reshape<uint8_t>(k, v, a, b, slots, T, ks, vs, row_bytes); break;
  }
  return u;
}

// grid_y < num_pairs exercises the kernel's stride loop over pairs.
extern "C" int emu_copy_blocks(const int64_t* src_ptrs, const int64_t* dst_ptrs, const int64_t* mapping,
                               int64_t num_tensors, int64_t num_pairs, int64_t block_bytes, unsigned grid_y) {
  for (unsigned x = 0; x < (unsigned)num_tensors; ++x)
    for (unsigned y = 0; y < grid_y; ++y)
      for (unsigned t = 0; t < 256; ++t) {
        blockIdx = {x, y, 0};
        threadIdx = {t, 0, 0};
        blockDim = {256, 1, 1};
        gridDim = {(unsigned)num_tensors, grid_y, 1};
        if (block_bytes % 16 == 0) copy_blocks_kernel<uint4>(src_ptrs, dst_ptrs, mapping, num_pairs, block_bytes);
        else copy_blocks_kernel<uint8_t>(src_ptrs, dst_ptrs, mapping, num_pairs, block_bytes);
      }
  return 0;
}

extern "C" int64_t emu_swap_runs(const void* src, void* dst, const int64_t* mapping, int64_t num_pairs,
                                 int64_t block_bytes) {
  int64_t copies = -1;
  g_memcpy_calls = 0;
  if (swap_blocks_runs(src, dst, mapping, num_pairs, block_bytes, nullptr, &copies) != cudaSuccess) return -1;
  return copies == g_memcpy_calls ? copies : -2;
}
