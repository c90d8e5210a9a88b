// Paged-attention decode on the CPU: one query token per sequence, K/V read in place from the
// block table (flash layout [num_blocks, block_size, num_kv_heads, head_size]).
//
// Cost per (sequence, kv head): the context's K and V rows are each read once (2 * L * D
// elements); the g = num_heads / num_kv_heads query heads that share them are served from the
// same reads, so GQA costs no extra memory traffic. Scores are kept in a per-task buffer
// (g * L floats), softmax is exact (max-subtracted), accumulation is in fp32.
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <limits>
#include <vector>

namespace {

inline float to_f(float x) { return x; }
inline float to_f(c10::BFloat16 x) {
  uint32_t bits = static_cast<uint32_t>(x.x) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}
inline float to_f(c10::Half x) { return static_cast<float>(x); }

template <typename T>
inline void row_to_float(const T* __restrict src, float* __restrict dst, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) dst[i] = to_f(src[i]);
}

// bf16 -> fp32 is a 16-bit shift; spelled on raw bits so the compiler emits vector shifts.
template <>
inline void row_to_float<c10::BFloat16>(const c10::BFloat16* __restrict src, float* __restrict dst,
                                        int64_t n) {
  const uint16_t* s = reinterpret_cast<const uint16_t*>(src);
  uint32_t* d = reinterpret_cast<uint32_t*>(dst);
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) d[i] = static_cast<uint32_t>(s[i]) << 16;
}

// DC: the head size when known at compile time (common sizes: loops unroll into whole vector
// registers), or 0 for any other size, taken from ``d_runtime``.
template <typename T, int64_t DC>
void decode_kernel(const T* q, const T* kc, const T* vc, const int64_t* tables,
                   const int64_t* seq_lens, T* out, int64_t B, int64_t H, int64_t Hkv,
                   int64_t d_runtime, int64_t bs, int64_t max_blocks, float scale) {
  const int64_t D = DC ? DC : d_runtime;
  const int64_t g = H / Hkv;
  const int64_t tok_stride = Hkv * D;           // between consecutive tokens of a block
  const int64_t blk_stride = bs * tok_stride;   // between blocks
  at::parallel_for(0, B * Hkv, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> qf, scores, acc, row_dyn(DC ? 0 : D);
    alignas(64) float row_fixed[DC ? DC : 1];
    float* row = DC ? row_fixed : row_dyn.data();
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / Hkv, kh = task % Hkv;
      const int64_t L = seq_lens[b];
      const int64_t* table = tables + b * max_blocks;
      qf.assign(g * D, 0.f);
      for (int64_t j = 0; j < g; ++j)
        row_to_float(q + (b * H + kh * g + j) * D, qf.data() + j * D, D);
      scores.resize(g * L);
      // Pass 1: scores = q . k * scale
      for (int64_t t = 0; t < L; ++t) {
        const T* k = kc + table[t / bs] * blk_stride + (t % bs) * tok_stride + kh * D;
        row_to_float(k, row, D);
        for (int64_t j = 0; j < g; ++j) {
          const float* qj = qf.data() + j * D;
          float s = 0.f;
#pragma omp simd reduction(+ : s)
          for (int64_t d = 0; d < D; ++d) s += qj[d] * row[d];
          scores[j * L + t] = s * scale;
        }
      }
      // Softmax per query head.
      for (int64_t j = 0; j < g; ++j) {
        float* sj = scores.data() + j * L;
        float m = -std::numeric_limits<float>::infinity();
#pragma omp simd reduction(max : m)
        for (int64_t t = 0; t < L; ++t) m = sj[t] > m ? sj[t] : m;
        float sum = 0.f;
#pragma omp simd reduction(+ : sum)
        for (int64_t t = 0; t < L; ++t) { sj[t] = std::exp(sj[t] - m); sum += sj[t]; }
        const float inv = 1.f / sum;
        for (int64_t t = 0; t < L; ++t) sj[t] *= inv;
      }
      // Pass 2: out = sum_t p_t * v_t
      acc.assign(g * D, 0.f);
      for (int64_t t = 0; t < L; ++t) {
        const T* v = vc + table[t / bs] * blk_stride + (t % bs) * tok_stride + kh * D;
        row_to_float(v, row, D);
        for (int64_t j = 0; j < g; ++j) {
          const float p = scores[j * L + t];
          float* aj = acc.data() + j * D;
#pragma omp simd
          for (int64_t d = 0; d < D; ++d) aj[d] += p * row[d];
        }
      }
      for (int64_t j = 0; j < g; ++j) {
        T* o = out + (b * H + kh * g + j) * D;
        for (int64_t d = 0; d < D; ++d) o[d] = static_cast<T>(acc[j * D + d]);
      }
    }
  });
}

}  // namespace

// q [B, H, D]; k_cache/v_cache [num_blocks, block_size, Hkv, D]; block_tables [B, max_blocks]
// int64; seq_lens [B] int64 (>= 1, the context including the query token). Returns [B, H, D].
torch::Tensor paged_attention_decode(torch::Tensor q, torch::Tensor k_cache, torch::Tensor v_cache,
                                     torch::Tensor block_tables, torch::Tensor seq_lens, double scale) {
  TORCH_CHECK(q.dim() == 3 && k_cache.dim() == 4 && v_cache.sizes() == k_cache.sizes(), "bad shapes");
  TORCH_CHECK(q.scalar_type() == k_cache.scalar_type(), "q and the cache must share a dtype");
  TORCH_CHECK(block_tables.scalar_type() == torch::kLong && seq_lens.scalar_type() == torch::kLong,
              "block_tables and seq_lens must be int64");
  q = q.contiguous();
  block_tables = block_tables.contiguous();
  seq_lens = seq_lens.contiguous();
  TORCH_CHECK(k_cache.is_contiguous() && v_cache.is_contiguous(), "caches must be contiguous");
  const int64_t B = q.size(0), H = q.size(1), D = q.size(2);
  const int64_t bs = k_cache.size(1), Hkv = k_cache.size(2);
  TORCH_CHECK(k_cache.size(3) == D && H % Hkv == 0, "head sizes disagree");
  auto out = torch::empty_like(q);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, q.scalar_type(), "paged_attention_decode", [&] {
    auto run = [&](auto head_size) {
      decode_kernel<scalar_t, decltype(head_size)::value>(
          q.data_ptr<scalar_t>(), k_cache.data_ptr<scalar_t>(), v_cache.data_ptr<scalar_t>(),
          block_tables.data_ptr<int64_t>(), seq_lens.data_ptr<int64_t>(), out.data_ptr<scalar_t>(),
          B, H, Hkv, D, bs, block_tables.size(1), static_cast<float>(scale));
    };
    // Compile-time head sizes let the inner loops unroll into whole vector registers.
    switch (D) {
      case 64: run(std::integral_constant<int64_t, 64>{}); break;
      case 128: run(std::integral_constant<int64_t, 128>{}); break;
      case 256: run(std::integral_constant<int64_t, 256>{}); break;
      case 32: run(std::integral_constant<int64_t, 32>{}); break;
      default: run(std::integral_constant<int64_t, 0>{});
    }
  });
  return out;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("paged_attention_decode", &paged_attention_decode, "paged attention decode (CPU)");
}
