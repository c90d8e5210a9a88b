// CPU emulation harness of the paged-decode kernels: runs the real kernel source
// (csrc/paged_attention.cuh, with `extern __shared__` rewritten to a pointer by the test) with
// one std::thread per CUDA thread. C ABI for ctypes; returns 0 on success.
#include <thread>
#include <vector>

#include "paged_attention_emu.cuh"   // the rewritten copy of csrc/paged_attention.cuh

namespace continuum {

template <typename T, int D, int GP>
void emu_launch(const PagedDecodeParams& p) {
  using S = DecodeShape<T, D>;
  std::vector<float> dyn(std::max<size_t>((size_t)GP * p.partition_size, (size_t)S::NW * GP * D));
  g_dyn_smem = dyn.data();
  for (int z = 0; z < p.num_splits; ++z)
    for (int y = 0; y < p.num_seqs; ++y)
      for (int x = 0; x < p.num_kv_heads * p.head_chunks; ++x) {
        std::barrier<> cta(kDecodeThreads);
        std::vector<std::barrier<>*> warps;
        for (int w = 0; w < S::NW; ++w) warps.push_back(new std::barrier<>(32));
        g_cta_barrier = &cta;
        for (int w = 0; w < S::NW; ++w) g_warp_barrier[w] = warps[w];
        std::vector<std::thread> ts;
        for (int t = 0; t < kDecodeThreads; ++t)
          ts.emplace_back([&, t] {
            threadIdx = {(unsigned)t, 0, 0};
            blockIdx = {(unsigned)x, (unsigned)y, (unsigned)z};
            blockDim = {kDecodeThreads, 1, 1};
            paged_decode_kernel<T, D, GP>(p);
          });
        for (auto& th : ts) th.join();
        for (auto* w : warps) delete w;
      }
  if (p.num_splits > 1)
    for (int y = 0; y < p.num_seqs; ++y)
      for (int x = 0; x < p.num_heads; ++x)
        for (int t = 0; t < D; ++t) {   // no barriers in the reduction: threads run in turn
          threadIdx = {(unsigned)t, 0, 0};
          blockIdx = {(unsigned)x, (unsigned)y, 0};
          paged_decode_reduce_kernel<T, D>(p);
        }
}

template <typename T, int D>
int emu_group(const PagedDecodeParams& p) {
  switch (p.group_pad) {
    case 1: emu_launch<T, D, 1>(p); return 0;
    case 2: emu_launch<T, D, 2>(p); return 0;
    case 4: emu_launch<T, D, 4>(p); return 0;
    case 8: emu_launch<T, D, 8>(p); return 0;
  }
  return 1;
}

template <typename T>
int emu_head(const PagedDecodeParams& p) {
  switch (p.head_size) {
    case 64: return emu_group<T, 64>(p);
    case 128: return emu_group<T, 128>(p);
    case 256: return emu_group<T, 256>(p);
  }
  return 1;
}

}  // namespace continuum

extern "C" int emu_paged_decode(int dtype, void* out, const void* q, const void* k, const void* v,
                                const int64_t* block_tables, const int64_t* seq_lens, int num_seqs,
                                int num_heads, int num_kv_heads, int head_size, int block_size,
                                int64_t q_stride_b, int64_t q_stride_h, int64_t bt_stride, float scale,
                                int max_seq_len, int num_sms, int* num_splits_out) {
  using namespace continuum;
  PagedDecodeParams p{};
  p.out = out; p.q = q; p.k_cache = k; p.v_cache = v;
  p.block_tables = block_tables; p.seq_lens = seq_lens;
  p.q_stride_b = q_stride_b; p.q_stride_h = q_stride_h;
  p.out_stride_b = (int64_t)num_heads * head_size; p.out_stride_h = head_size;
  p.bt_stride = bt_stride;
  p.num_seqs = num_seqs; p.num_heads = num_heads; p.num_kv_heads = num_kv_heads; p.head_size = head_size;
  p.block_size = block_size;
  p.block_shift = 0;
  while ((1 << p.block_shift) < block_size) ++p.block_shift;
  p.scale_log2 = scale * 1.4426950408889634f;
  paged_decode_plan(p, max_seq_len, num_sms);
  std::vector<float> tmp_out((size_t)num_seqs * num_heads * p.num_splits * head_size, NAN);
  std::vector<float> tmp_ml((size_t)num_seqs * num_heads * p.num_splits * 2, NAN);
  p.tmp_out = tmp_out.data();
  p.tmp_ml = tmp_ml.data();
  *num_splits_out = p.num_splits;
  switch (dtype) {
    case 0: return emu_head<float>(p);
    case 1: return emu_head<__half>(p);
    case 2: return emu_head<__nv_bfloat16>(p);
  }
  return 1;
}

// The host split plan alone (no kernel): what a call with these shapes would allocate.
extern "C" void emu_decode_plan(int num_seqs, int num_heads, int num_kv_heads, int max_seq_len, int num_sms,
                                int* partition_out, int* num_splits_out) {
  continuum::PagedDecodeParams p{};
  p.num_seqs = num_seqs; p.num_heads = num_heads; p.num_kv_heads = num_kv_heads;
  continuum::paged_decode_plan(p, max_seq_len, num_sms);
  *partition_out = p.partition_size;
  *num_splits_out = p.num_splits;
}
