// Torch binding: registers continuum's kernels as custom ops `torch.ops.continuum_C.*`.
// Built only where a CUDA torch exists (continuum/ops/build.py); the kernels themselves are
// plain CUDA (paged_attention.cu, paged_attention_varlen.cu, cache_kernels.cu). Argument order
// follows vLLM.
// Light headers only (no cuBLAS/cuSPARSE): the binding also syntax-checks on CPU machines.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <atomic>
#include <optional>
#include <vector>

#include "cache_kernels.h"
#include "paged_attention.h"
#include "paged_attention_varlen.h"

namespace {

using continuum::DType;

constexpr int kMaxCachedDevices = 64;   // device indices whose SM count is cached

void check_cuda(cudaError_t err, const char* what) {
  TORCH_CHECK(err == cudaSuccess, "continuum_C.", what, ": ", cudaGetErrorString(err));
}

DType dtype_of(const at::Tensor& t) {
  switch (t.scalar_type()) {
    case at::kBFloat16: return DType::kBFloat16;
    case at::kHalf: return DType::kFloat16;
    case at::kFloat: return DType::kFloat32;
    default: TORCH_CHECK(false, "continuum_C: unsupported dtype ", t.scalar_type());
  }
}

bool aligned16(const at::Tensor& t) {
  const int64_t e = t.element_size();
  return reinterpret_cast<uintptr_t>(t.data_ptr()) % 16 == 0 && (t.stride(0) * e) % 16 == 0 &&
         (t.dim() < 3 || (t.stride(1) * e) % 16 == 0) && t.stride(-1) == 1;
}

// out[b, h, :] = softmax(q[b, h] . K_b^T * scale) V_b over the first seq_lens[b] cached tokens.
// workspace (optional): fp32 scratch for the split-K partials, at least
// B * H * num_splits * (D + 2) floats; the CUDA backend allocates it once, before the KV cache
// takes the free memory, so that a call (and a CUDA-graph capture) allocates nothing. Without
// it the partials are allocated per call.
void paged_attention_decode(at::Tensor& out, const at::Tensor& q, const at::Tensor& k_cache,
                            const at::Tensor& v_cache, const at::Tensor& block_tables,
                            const at::Tensor& seq_lens, double scale, int64_t max_seq_len,
                            const std::optional<at::Tensor>& workspace) {
  TORCH_CHECK(q.is_cuda() && k_cache.is_cuda() && out.is_cuda(), "paged_attention_decode: CUDA tensors");
  TORCH_CHECK(q.dim() == 3 && out.dim() == 3 && k_cache.dim() == 4, "q/out [B,H,D], caches [N,bs,Hkv,D]");
  TORCH_CHECK(k_cache.is_contiguous() && v_cache.is_contiguous(), "caches must be contiguous");
  TORCH_CHECK(q.scalar_type() == k_cache.scalar_type() && out.scalar_type() == q.scalar_type() &&
              v_cache.scalar_type() == q.scalar_type(), "q, out and caches must share a dtype");
  TORCH_CHECK(block_tables.scalar_type() == at::kLong && seq_lens.scalar_type() == at::kLong,
              "block_tables and seq_lens must be int64");
  TORCH_CHECK(block_tables.stride(1) == 1 && seq_lens.is_contiguous(), "block_tables rows contiguous");
  TORCH_CHECK(aligned16(q) && out.stride(-1) == 1, "q must have 16-byte aligned rows, out unit stride");
  // The kernels dereference these raw pointers: a host or other-device tensor, a short
  // seq_lens / block_tables, or a misaligned cache view would be an illegal address that
  // poisons the CUDA context (every later op and test in the process fails), not an error.
  TORCH_CHECK(v_cache.device() == q.device() && k_cache.device() == q.device() && out.device() == q.device() &&
              block_tables.device() == q.device() && seq_lens.device() == q.device(),
              "paged_attention_decode: all tensors on q's device");
  TORCH_CHECK(out.sizes() == q.sizes() && v_cache.sizes() == k_cache.sizes(),
              "paged_attention_decode: out like q, v_cache like k_cache");
  TORCH_CHECK(block_tables.dim() == 2 && block_tables.size(0) >= q.size(0) && seq_lens.dim() == 1 &&
              seq_lens.size(0) >= q.size(0), "paged_attention_decode: block_tables [B, n], seq_lens [B]");
  TORCH_CHECK(reinterpret_cast<uintptr_t>(k_cache.data_ptr()) % 16 == 0 &&
              reinterpret_cast<uintptr_t>(v_cache.data_ptr()) % 16 == 0,
              "paged_attention_decode: caches must be 16-byte aligned");
  TORCH_CHECK(q.size(0) <= 65535, "paged_attention_decode: at most 65535 sequences per call (grid.y)");
  const c10::cuda::CUDAGuard guard(q.device());
  continuum::PagedDecodeParams p{};
  p.num_seqs = (int)q.size(0);
  p.num_heads = (int)q.size(1);
  p.head_size = (int)q.size(2);
  p.num_kv_heads = (int)k_cache.size(2);
  p.block_size = (int)k_cache.size(1);
  TORCH_CHECK(p.num_heads % p.num_kv_heads == 0, "num_heads must be a multiple of num_kv_heads");
  TORCH_CHECK((p.block_size & (p.block_size - 1)) == 0, "block_size must be a power of two");
  TORCH_CHECK(k_cache.size(3) == p.head_size, "head size mismatch");
  p.block_shift = 0;
  while ((1 << p.block_shift) < p.block_size) ++p.block_shift;
  p.out = out.data_ptr();
  p.q = q.data_ptr();
  p.k_cache = k_cache.data_ptr();
  p.v_cache = v_cache.data_ptr();
  p.block_tables = block_tables.data_ptr<int64_t>();
  p.seq_lens = seq_lens.data_ptr<int64_t>();
  p.q_stride_b = q.stride(0);
  p.q_stride_h = q.stride(1);
  p.out_stride_b = out.stride(0);
  p.out_stride_h = out.stride(1);
  p.bt_stride = block_tables.stride(0);
  p.scale_log2 = (float)(scale * 1.4426950408889634);
  // The split plan needs the device's SM count; querying it is a driver call, so it is cached
  // per device index (a process may drive GPUs of different kinds; a device's count never
  // changes while the process runs). Atomics because several engines' threads may launch at
  // once: two racing launches at worst both query and store the same value. Indices past the
  // table are queried every call.
  static std::atomic<int> sms_of[kMaxCachedDevices];   // static storage: zero (not yet known)
  const int dev = q.device().index();
  int sms = dev < kMaxCachedDevices ? sms_of[dev].load(std::memory_order_relaxed) : 0;
  if (sms == 0) {
    check_cuda(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev), "multiprocessor count");
    if (dev < kMaxCachedDevices) sms_of[dev].store(sms, std::memory_order_relaxed);
  }
  continuum::paged_decode_plan(p, (int)max_seq_len, sms);
  TORCH_CHECK(p.num_splits <= 65535, "paged_attention_decode: max_seq_len too long (grid.z)");
  at::Tensor tmp_out, tmp_ml;
  if (p.num_splits > 1) {
    const int64_t rows = (int64_t)p.num_seqs * p.num_heads * p.num_splits;
    if (workspace.has_value() && workspace->defined()) {
      const at::Tensor& ws = *workspace;
      TORCH_CHECK(ws.is_cuda() && ws.device() == q.device() && ws.scalar_type() == at::kFloat &&
                  ws.is_contiguous(), "paged_attention_decode: workspace must be a contiguous fp32 "
                  "tensor on q's device");
      TORCH_CHECK(ws.numel() >= rows * (p.head_size + 2), "paged_attention_decode: the workspace holds ",
                  ws.numel(), " floats, this call needs ", rows * (p.head_size + 2), " (", p.num_seqs,
                  " sequences x ", p.num_heads, " heads x ", p.num_splits, " splits x (head size + 2)): "
                  "it was sized for fewer sequences or a shorter max_seq_len");
      p.tmp_out = ws.data_ptr<float>();
      p.tmp_ml = p.tmp_out + rows * p.head_size;
    } else {
      auto f = q.options().dtype(at::kFloat);
      tmp_out = at::empty({p.num_seqs, p.num_heads, p.num_splits, p.head_size}, f);
      tmp_ml = at::empty({p.num_seqs, p.num_heads, p.num_splits, 2}, f);
      p.tmp_out = tmp_out.data_ptr<float>();
      p.tmp_ml = tmp_ml.data_ptr<float>();
    }
  }
  check_cuda(continuum::paged_decode_launch(p, dtype_of(q), c10::cuda::getCurrentCUDAStream()),
             "paged_attention_decode");
}

// Every sequence of a step in one launch (prefill chunks over cached prefixes, whole prompts,
// decodes): rows query_start_loc[i] .. query_start_loc[i+1]-1 of q/out [T, H, D] are sequence
// i's new tokens, the last of its seq_lens[i] cached tokens (bottom-right causal). Reads no
// host data (no synchronisation): the grid is sized from the shapes.
void paged_attention_varlen(at::Tensor& out, const at::Tensor& q, const at::Tensor& k_cache,
                            const at::Tensor& v_cache, const at::Tensor& block_tables,
                            const at::Tensor& seq_lens, const at::Tensor& query_start_loc, double scale) {
  TORCH_CHECK(q.is_cuda() && k_cache.is_cuda() && out.is_cuda(), "paged_attention_varlen: CUDA tensors");
  TORCH_CHECK(q.dim() == 3 && out.dim() == 3 && k_cache.dim() == 4, "q/out [T,H,D], caches [N,bs,Hkv,D]");
  TORCH_CHECK(k_cache.is_contiguous() && v_cache.is_contiguous(), "caches must be contiguous");
  TORCH_CHECK(q.scalar_type() == k_cache.scalar_type() && out.scalar_type() == q.scalar_type() &&
              v_cache.scalar_type() == q.scalar_type(), "q, out and caches must share a dtype");
  TORCH_CHECK(block_tables.scalar_type() == at::kLong && seq_lens.scalar_type() == at::kLong &&
              query_start_loc.scalar_type() == at::kLong,
              "block_tables, seq_lens and query_start_loc must be int64");
  TORCH_CHECK(block_tables.dim() == 2 && block_tables.stride(1) == 1 && seq_lens.is_contiguous() &&
              query_start_loc.is_contiguous(), "block_tables rows, seq_lens, query_start_loc contiguous");
  TORCH_CHECK(aligned16(q) && out.stride(-1) == 1, "q must have 16-byte aligned rows, out unit stride");
  TORCH_CHECK(v_cache.device() == q.device() && k_cache.device() == q.device() && out.device() == q.device() &&
              block_tables.device() == q.device() && seq_lens.device() == q.device() &&
              query_start_loc.device() == q.device(), "paged_attention_varlen: all tensors on q's device");
  TORCH_CHECK(out.sizes() == q.sizes() && v_cache.sizes() == k_cache.sizes(),
              "paged_attention_varlen: out like q, v_cache like k_cache");
  const int64_t S = seq_lens.dim() == 1 ? seq_lens.size(0) : -1;
  TORCH_CHECK(S >= 0 && query_start_loc.dim() == 1 && query_start_loc.size(0) == S + 1 &&
              block_tables.size(0) >= S, "paged_attention_varlen: seq_lens [S], query_start_loc [S+1], "
              "block_tables [>=S, n]");
  TORCH_CHECK(reinterpret_cast<uintptr_t>(k_cache.data_ptr()) % 16 == 0 &&
              reinterpret_cast<uintptr_t>(v_cache.data_ptr()) % 16 == 0,
              "paged_attention_varlen: caches must be 16-byte aligned");
  const int64_t d = q.size(2);
  TORCH_CHECK(d == 64 || d == 128 || d == 256, "paged_attention_varlen: head size ", d,
              " is not compiled (64, 128 or 256); use the torch reference (continuum.ops routes it there)");
  TORCH_CHECK(k_cache.size(3) == d, "head size mismatch");
  const int64_t hkv = k_cache.size(2), h = q.size(1);
  TORCH_CHECK(h % hkv == 0, "num_heads must be a multiple of num_kv_heads");
  TORCH_CHECK(h / hkv <= continuum::varlen_max_group((int)d), "paged_attention_varlen: ", h / hkv,
              " query heads per KV head; at most ", continuum::varlen_max_group((int)d), " at head size ", d);
  TORCH_CHECK(hkv <= 65535, "paged_attention_varlen: at most 65535 KV heads (grid.y)");
  const int64_t bs = k_cache.size(1);
  TORCH_CHECK(bs > 0 && (bs & (bs - 1)) == 0, "block_size must be a power of two");
  TORCH_CHECK(q.size(0) < (int64_t{1} << 30) && S < (int64_t{1} << 30), "paged_attention_varlen: too many tokens");
  const c10::cuda::CUDAGuard guard(q.device());
  continuum::PagedVarlenParams p{};
  p.out = out.data_ptr();
  p.q = q.data_ptr();
  p.k_cache = k_cache.data_ptr();
  p.v_cache = v_cache.data_ptr();
  p.block_tables = block_tables.data_ptr<int64_t>();
  p.seq_lens = seq_lens.data_ptr<int64_t>();
  p.query_start_loc = query_start_loc.data_ptr<int64_t>();
  p.q_stride_t = q.stride(0);
  p.q_stride_h = q.stride(1);
  p.out_stride_t = out.stride(0);
  p.out_stride_h = out.stride(1);
  p.bt_stride = block_tables.stride(0);
  p.num_seqs = (int)S;
  p.num_tokens = (int)q.size(0);
  p.num_heads = (int)h;
  p.num_kv_heads = (int)hkv;
  p.head_size = (int)d;
  p.block_size = (int)bs;
  p.block_shift = 0;
  while ((1 << p.block_shift) < p.block_size) ++p.block_shift;
  p.max_blocks = (int)std::min<int64_t>(block_tables.size(1), (int64_t{1} << 30) >> p.block_shift);
  p.scale_log2 = (float)(scale * 1.4426950408889634);
  continuum::paged_varlen_plan(p);
  check_cuda(continuum::paged_varlen_launch(p, dtype_of(q), c10::cuda::getCurrentCUDAStream()),
             "paged_attention_varlen");
}

void reshape_and_cache(const at::Tensor& key, const at::Tensor& value, at::Tensor& key_cache,
                       at::Tensor& value_cache, const at::Tensor& slot_mapping) {
  TORCH_CHECK(key.is_cuda() && key_cache.is_cuda() && slot_mapping.is_cuda(), "reshape_and_cache: CUDA tensors");
  TORCH_CHECK(key.scalar_type() == key_cache.scalar_type() && value.scalar_type() == value_cache.scalar_type(),
              "reshape_and_cache: cast key/value to the cache dtype first");
  TORCH_CHECK(key_cache.is_contiguous() && value_cache.is_contiguous(), "caches must be contiguous");
  TORCH_CHECK(slot_mapping.scalar_type() == at::kLong && slot_mapping.is_contiguous(), "slot_mapping int64");
  const int64_t hkv = key_cache.size(2), d = key_cache.size(3);
  // Each token's [Hkv, D] must be contiguous; the token stride is free (a view of fused qkv).
  TORCH_CHECK(key.size(1) == hkv && key.size(2) == d && key.stride(2) == 1 && key.stride(1) == d &&
              value.stride(2) == 1 && value.stride(1) == d, "key/value [T, Hkv, D] with contiguous heads");
  TORCH_CHECK(value.sizes() == key.sizes() && value_cache.sizes() == key_cache.sizes() &&
              slot_mapping.dim() == 1 && slot_mapping.size(0) == key.size(0),
              "reshape_and_cache: value like key, value_cache like key_cache, one slot per token");
  TORCH_CHECK(value.device() == key.device() && key_cache.device() == key.device() &&
              value_cache.device() == key.device() && slot_mapping.device() == key.device(),
              "reshape_and_cache: all tensors on one device");
  const c10::cuda::CUDAGuard guard(key.device());
  const int64_t e = key.element_size();
  check_cuda(continuum::reshape_and_cache_launch(
                 key.data_ptr(), value.data_ptr(), key_cache.data_ptr(), value_cache.data_ptr(),
                 slot_mapping.data_ptr<int64_t>(), key.size(0), key.stride(0) * e, value.stride(0) * e,
                 hkv * d * e, c10::cuda::getCurrentCUDAStream()),
             "reshape_and_cache");
}

at::Tensor pointer_array(const std::vector<at::Tensor>& ts, const at::Device& dev) {
  std::vector<int64_t> ptrs;
  ptrs.reserve(ts.size());
  for (const auto& t : ts) ptrs.push_back(reinterpret_cast<int64_t>(t.data_ptr()));
  return at::from_blob(ptrs.data(), {(int64_t)ptrs.size()}, at::kLong).to(dev);   // synchronous copy
}

int64_t block_bytes_of(const at::Tensor& t) { return t[0].numel() * t.element_size(); }

void launch_block_copy(const std::vector<at::Tensor>& srcs, const std::vector<at::Tensor>& dsts,
                       const at::Tensor& block_mapping, const at::Device& dev) {
  TORCH_CHECK(srcs.size() == dsts.size(), "as many sources as destinations");
  if (srcs.empty() || block_mapping.numel() == 0) return;
  const int64_t bb = block_bytes_of(srcs[0]);
  // copy_blocks_launch picks its access width from the block size alone (16, 4 or 1 bytes):
  // every base pointer must be aligned to it (a cache view at an odd offset would fault).
  const uintptr_t unit = bb % 16 == 0 ? 16 : bb % 4 == 0 ? 4 : 1;
  for (size_t i = 0; i < srcs.size(); ++i) {
    TORCH_CHECK(reinterpret_cast<uintptr_t>(srcs[i].data_ptr()) % unit == 0 &&
                reinterpret_cast<uintptr_t>(dsts[i].data_ptr()) % unit == 0,
                "block copy: cache base pointers must be ", unit, "-byte aligned");
    TORCH_CHECK(srcs[i].is_contiguous() && dsts[i].is_contiguous(), "caches must be contiguous");
    TORCH_CHECK(block_bytes_of(srcs[i]) == bb && block_bytes_of(dsts[i]) == bb, "all blocks the same size");
    TORCH_CHECK(srcs[i].is_cuda() || srcs[i].is_pinned(), "host tensors must be pinned");
    TORCH_CHECK(dsts[i].is_cuda() || dsts[i].is_pinned(), "host tensors must be pinned");
  }
  const c10::cuda::CUDAGuard guard(dev);
  at::Tensor mapping = block_mapping.to(dev, at::kLong).contiguous();
  at::Tensor sp = pointer_array(srcs, dev), dp = pointer_array(dsts, dev);
  check_cuda(continuum::copy_blocks_launch(sp.data_ptr<int64_t>(), dp.data_ptr<int64_t>(),
                                           mapping.data_ptr<int64_t>(), (int64_t)srcs.size(),
                                           mapping.size(0), bb, c10::cuda::getCurrentCUDAStream()),
             "copy_blocks");
}

// vLLM: copy block src -> dst (both on the GPU) in every layer's K and V caches, one launch.
void copy_blocks(std::vector<at::Tensor> key_caches, std::vector<at::Tensor> value_caches,
                 const at::Tensor& block_mapping) {
  TORCH_CHECK(!key_caches.empty() && key_caches[0].is_cuda(), "copy_blocks: CUDA caches");
  std::vector<at::Tensor> all(key_caches);
  all.insert(all.end(), value_caches.begin(), value_caches.end());
  launch_block_copy(all, all, block_mapping, key_caches[0].device());
}

// vLLM: swap blocks between one device cache and one (pinned) host cache, or two device caches.
// block_mapping: [n, 2] int64 (src id, dst id), read on the host.
void swap_blocks(const at::Tensor& src, at::Tensor& dst, const at::Tensor& block_mapping) {
  TORCH_CHECK(src.is_cuda() || dst.is_cuda(), "swap_blocks: one side must be on the GPU");
  TORCH_CHECK(src.is_cuda() || src.is_pinned(), "swap_blocks: host source must be pinned");
  TORCH_CHECK(dst.is_cuda() || dst.is_pinned(), "swap_blocks: host destination must be pinned");
  TORCH_CHECK(src.is_contiguous() && dst.is_contiguous(), "swap_blocks: contiguous caches");
  const int64_t bb = block_bytes_of(src);
  TORCH_CHECK(block_bytes_of(dst) == bb, "swap_blocks: block sizes differ");
  const at::Tensor m = block_mapping.to(at::kCPU, at::kLong).contiguous();
  const c10::cuda::CUDAGuard guard(src.is_cuda() ? src.device() : dst.device());
  check_cuda(continuum::swap_blocks_runs(src.data_ptr(), dst.data_ptr(), m.data_ptr<int64_t>(), m.size(0),
                                         bb, c10::cuda::getCurrentCUDAStream(), nullptr),
             "swap_blocks");
}

// All layers in one kernel launch; host sides are read/written in place through UVA.
void swap_blocks_batched(std::vector<at::Tensor> srcs, std::vector<at::Tensor> dsts,
                         const at::Tensor& block_mapping) {
  TORCH_CHECK(!srcs.empty(), "swap_blocks_batched: no tensors");
  const at::Device dev = srcs[0].is_cuda() ? srcs[0].device() : dsts[0].device();
  TORCH_CHECK(dev.is_cuda(), "swap_blocks_batched: one side must be on the GPU");
  launch_block_copy(srcs, dsts, block_mapping, dev);
}

}  // namespace

TORCH_LIBRARY(continuum_C, m) {
  m.def("paged_attention_decode(Tensor(a!) out, Tensor q, Tensor k_cache, Tensor v_cache, "
        "Tensor block_tables, Tensor seq_lens, float scale, int max_seq_len, Tensor(b!)? workspace=None) -> ()");
  m.def("paged_attention_varlen(Tensor(a!) out, Tensor q, Tensor k_cache, Tensor v_cache, "
        "Tensor block_tables, Tensor seq_lens, Tensor query_start_loc, float scale) -> ()");
  m.def("reshape_and_cache(Tensor key, Tensor value, Tensor(a!) key_cache, Tensor(b!) value_cache, "
        "Tensor slot_mapping) -> ()");
  m.def("copy_blocks(Tensor(a!)[] key_caches, Tensor(b!)[] value_caches, Tensor block_mapping) -> ()");
  // Host/device mixes: registered for every backend (catch-all), the function checks devices.
  m.def("swap_blocks(Tensor src, Tensor(a!) dst, Tensor block_mapping) -> ()", &swap_blocks);
  m.def("swap_blocks_batched(Tensor[] srcs, Tensor(a!)[] dsts, Tensor block_mapping) -> ()",
        &swap_blocks_batched);
}

TORCH_LIBRARY_IMPL(continuum_C, CUDA, m) {
  m.impl("paged_attention_decode", &paged_attention_decode);
  m.impl("paged_attention_varlen", &paged_attention_varlen);
  m.impl("reshape_and_cache", &reshape_and_cache);
  m.impl("copy_blocks", &copy_blocks);
}
