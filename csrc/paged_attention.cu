// Host side of paged-attention decode: planning (splits, head chunks) and dtype/shape dispatch.
#include <algorithm>

#include "paged_attention.cuh"

namespace continuum {

namespace {

template <typename T, int D, int GP>
cudaError_t launch_typed(const PagedDecodeParams& p, cudaStream_t stream) {
  using S = DecodeShape<T, D>;
  const size_t smem_floats = std::max<size_t>((size_t)GP * p.partition_size, (size_t)S::NW * GP * D);
  const size_t smem = smem_floats * sizeof(float);   // <= 32 KiB: no opt-in attribute needed
  dim3 grid(p.num_kv_heads * p.head_chunks, p.num_seqs, p.num_splits);
  paged_decode_kernel<T, D, GP><<<grid, kDecodeThreads, smem, stream>>>(p);
  if (p.num_splits > 1) {
    paged_decode_reduce_kernel<T, D><<<dim3(p.num_heads, p.num_seqs), D, 0, stream>>>(p);
  }
  return cudaGetLastError();
}

template <typename T, int D>
cudaError_t launch_group(const PagedDecodeParams& p, cudaStream_t stream) {
  switch (p.group_pad) {
    case 1: return launch_typed<T, D, 1>(p, stream);
    case 2: return launch_typed<T, D, 2>(p, stream);
    case 4: return launch_typed<T, D, 4>(p, stream);
    case 8: return launch_typed<T, D, 8>(p, stream);
    default: return cudaErrorInvalidValue;
  }
}

template <typename T>
cudaError_t launch_head(const PagedDecodeParams& p, cudaStream_t stream) {
  switch (p.head_size) {
    case 64: return launch_group<T, 64>(p, stream);
    case 128: return launch_group<T, 128>(p, stream);
    case 256: return launch_group<T, 256>(p, stream);
    default: return cudaErrorInvalidValue;
  }
}

}  // namespace

cudaError_t paged_decode_launch(const PagedDecodeParams& p, DType dtype, cudaStream_t stream) {
  if (p.num_seqs == 0) return cudaSuccess;
  switch (dtype) {
    case DType::kBFloat16: return launch_head<__nv_bfloat16>(p, stream);
    case DType::kFloat16: return launch_head<__half>(p, stream);
    case DType::kFloat32: return launch_head<float>(p, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace continuum
