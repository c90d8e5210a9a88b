// Host side of varlen paged attention: dtype / head-size dispatch and the launch.
#include "paged_attention_varlen.cuh"

namespace continuum {

namespace {

template <typename T, int D>
cudaError_t launch_typed(const PagedVarlenParams& p, cudaStream_t stream) {
  using S = VarlenShape<T, D>;
  if (p.group < 1 || p.group > S::M) return cudaErrorInvalidValue;
  const size_t smem = (size_t)S::SMEM_FLOATS * sizeof(float);   // 43-103 KiB: over the 48 KiB default
  cudaError_t err = cudaFuncSetAttribute(paged_varlen_kernel<T, D>,
                                         cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
  if (err != cudaSuccess) return err;
  paged_varlen_kernel<T, D><<<dim3(p.num_tiles, p.num_kv_heads), kVarlenThreads, smem, stream>>>(p);
  return cudaGetLastError();
}

template <typename T>
cudaError_t launch_head(const PagedVarlenParams& p, cudaStream_t stream) {
  switch (p.head_size) {
    case 64: return launch_typed<T, 64>(p, stream);
    case 128: return launch_typed<T, 128>(p, stream);
    case 256: return launch_typed<T, 256>(p, stream);
    default: return cudaErrorInvalidValue;
  }
}

}  // namespace

cudaError_t paged_varlen_launch(const PagedVarlenParams& p, DType dtype, cudaStream_t stream) {
  if (p.num_seqs == 0 || p.num_tokens == 0 || p.num_tiles == 0) return cudaSuccess;
  switch (dtype) {
    case DType::kBFloat16: return launch_head<__nv_bfloat16>(p, stream);
    case DType::kFloat16: return launch_head<__half>(p, stream);
    case DType::kFloat32: return launch_head<float>(p, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace continuum
