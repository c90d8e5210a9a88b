// CPU emulation harness of the varlen paged-attention kernel: runs the real kernel source
// (csrc/paged_attention_varlen.cuh, with `extern __shared__` rewritten to a pointer by the
// test) with one std::thread per CUDA thread, one CTA at a time. C ABI for ctypes; returns 0
// on success, 1 for an unsupported dtype / head size / group (as the launcher would refuse).
#include <thread>
#include <vector>

#include "paged_attention_varlen_emu.cuh"   // the rewritten copy of csrc/paged_attention_varlen.cuh

namespace continuum {

template <typename T, int D>
int emu_launch(const PagedVarlenParams& p) {
  using S = VarlenShape<T, D>;
  if (p.group < 1 || p.group > S::M) return 1;
  std::vector<float> dyn(S::SMEM_FLOATS);
  g_dyn_smem = dyn.data();
  for (int y = 0; y < p.num_kv_heads; ++y)
    for (int x = 0; x < p.num_tiles; ++x) {
      // Poison shared memory: the kernel must write everything it reads.
      std::fill(dyn.begin(), dyn.end(), NAN);
      std::barrier<> cta(kVarlenThreads);
      std::vector<std::barrier<>*> warps;
      for (int w = 0; w < kVarlenThreads / 32; ++w) warps.push_back(new std::barrier<>(32));
      g_cta_barrier = &cta;
      for (int w = 0; w < kVarlenThreads / 32; ++w) g_warp_barrier[w] = warps[w];
      std::vector<std::thread> ts;
      for (int t = 0; t < kVarlenThreads; ++t)
        ts.emplace_back([&, t] {
          threadIdx = {(unsigned)t, 0, 0};
          blockIdx = {(unsigned)x, (unsigned)y, 0};
          blockDim = {kVarlenThreads, 1, 1};
          paged_varlen_kernel<T, D>(p);
        });
      for (auto& th : ts) th.join();
      for (auto* w : warps) delete w;
    }
  return 0;
}

template <typename T>
int emu_head(const PagedVarlenParams& p) {
  switch (p.head_size) {
    case 64: return emu_launch<T, 64>(p);
    case 128: return emu_launch<T, 128>(p);
    case 256: return emu_launch<T, 256>(p);
  }
  return 1;
}

}  // namespace continuum

extern "C" int emu_paged_varlen(int dtype, void* out, const void* q, const void* k, const void* v,
                                const int64_t* block_tables, const int64_t* seq_lens,
                                const int64_t* query_start_loc, int num_seqs, int num_tokens,
                                int num_heads, int num_kv_heads, int head_size, int block_size,
                                int64_t q_stride_t, int64_t q_stride_h, int64_t bt_stride, int max_blocks,
                                float scale, int* num_tiles_out) {
  using namespace continuum;
  PagedVarlenParams p{};
  p.out = out; p.q = q; p.k_cache = k; p.v_cache = v;
  p.block_tables = block_tables; p.seq_lens = seq_lens; p.query_start_loc = query_start_loc;
  p.q_stride_t = q_stride_t; p.q_stride_h = q_stride_h;
  p.out_stride_t = (int64_t)num_heads * head_size; p.out_stride_h = head_size;
  p.bt_stride = bt_stride;
  p.num_seqs = num_seqs; p.num_tokens = num_tokens; p.num_heads = num_heads;
  p.num_kv_heads = num_kv_heads; p.head_size = head_size;
  p.block_size = block_size;
  p.block_shift = 0;
  while ((1 << p.block_shift) < block_size) ++p.block_shift;
  p.max_blocks = max_blocks;
  p.scale_log2 = scale * 1.4426950408889634f;
  paged_varlen_plan(p);
  *num_tiles_out = p.num_tiles;
  if (num_seqs == 0 || num_tokens == 0) return 0;
  switch (dtype) {
    case 0: return emu_head<float>(p);
    case 1: return emu_head<__half>(p);
    case 2: return emu_head<__nv_bfloat16>(p);
  }
  return 1;
}
