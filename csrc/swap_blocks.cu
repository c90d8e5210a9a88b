// vLLM's swap_blocks for one tensor as few cudaMemcpyAsync calls as the mapping allows
// (docs/kernels.md §5). Host code only (nvcc compiles it like C++), so the CPU emulation test
// can run it with a memcpy stand-in.
#include <algorithm>
#include <utility>
#include <vector>

#include "cache_kernels.h"

namespace continuum {

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
