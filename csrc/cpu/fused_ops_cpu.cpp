// Fused elementwise layers on the CPU: RMSNorm (with the residual add), SiLU-and-mul, and
// NeoX-style rotary embedding. Each is one pass over its rows in one parallel region, where
// the torch composition is 4-8 ops, each a full pass over memory and an OpenMP region of its
// own (at decode batch sizes the regions, not the flops, are the cost).
//
// Rounding follows the torch/transformers composition the model code used before, so bf16
// results are the same bits except where a float reduction's order differs:
// - rms_norm: sum of squares in fp32, x * rsqrt(mean + eps) rounded to the input dtype, then
//   multiplied by the weight (rounded again), as HF's LlamaRMSNorm; the residual sum is
//   rounded to the model dtype first (HF's ``residual + hidden_states``).
// - silu_and_mul: silu(gate) in fp32 rounded to the dtype, times up, rounded (F.silu(g) * u).
// - rotary: per pair, round(round(x1*cos) - round(x2*sin)) and round(round(x2*cos) +
//   round(x1*sin)) with cos/sin in the dtype of the table (bf16 models keep a bf16 table).
// Registered as torch.ops.continuum_cpu_ops.* (the .so is loaded by cpu_kernels.load()).
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include "cpu_common.h"
#include "avx512_common.h"

#include <cmath>
#include <cstdint>
#include <cstring>

namespace {

// Round to the storage type and back (round-to-nearest-even, as torch's conversions).
template <typename T> inline float rnd(float x) { return to_f(static_cast<T>(x)); }
template <> inline float rnd<float>(float x) { return x; }

constexpr int64_t kGrain = 8;   // rows per task: small batches still split across threads

#if defined(__AVX512F__)
// fp32 -> bf16 bits per lane, round to nearest even, NaN -> 0x7FC0: c10::BFloat16's own
// conversion, so vector and scalar results are the same bits.
inline __m256i bf16_bits(__m512 x) {
  const __m512i u = _mm512_castps_si512(x);
  const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
  __m512i r = _mm512_add_epi32(u, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7FFF)));
  r = _mm512_mask_mov_epi32(r, _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q), _mm512_set1_epi32(0x7FC00000));
  return _mm512_cvtepi32_epi16(_mm512_srli_epi32(r, 16));
}

// rnd<bf16>: round to bf16 and back to fp32.
inline __m512 round_bf16(__m512 x) {
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(bf16_bits(x)), 16));
}
#endif


#if defined(__AVX512F__)
// One bf16 row of rms_norm_rows (d a multiple of 16).
inline void rms_norm_row_avx512(const c10::BFloat16* xr, const c10::BFloat16* rr, c10::BFloat16* ro,
                                const c10::BFloat16* w, c10::BFloat16* o, int64_t d, float eps) {
  using avx512::load16;
  __m512 acc = _mm512_setzero_ps();
  const c10::BFloat16* src = xr;
  if (rr != nullptr) {          // s = round(x + residual), stored, and normalised below
    for (int64_t i = 0; i < d; i += 16) {
      const __m256i sb = bf16_bits(_mm512_add_ps(load16(xr + i), load16(rr + i)));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(ro + i), sb);
      const __m512 f = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(sb), 16));
      acc = _mm512_fmadd_ps(f, f, acc);
    }
    src = ro;
  } else {
    for (int64_t i = 0; i < d; i += 16) {
      const __m512 f = load16(xr + i);
      acc = _mm512_fmadd_ps(f, f, acc);
    }
  }
  const float ss = _mm512_reduce_add_ps(acc);
  const __m512 inv = _mm512_set1_ps(1.f / std::sqrt(ss / static_cast<float>(d) + eps));
  for (int64_t i = 0; i < d; i += 16) {
    const __m512 y = _mm512_mul_ps(load16(w + i), round_bf16(_mm512_mul_ps(load16(src + i), inv)));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(o + i), bf16_bits(y));
  }
}

// One bf16 row of silu_and_mul_rows (d a multiple of 16): exp by avx512::exp2, whose error
// (~1e-7 relative) moves a bf16 output only when it lies within that of a rounding boundary.
inline void silu_and_mul_row_avx512(const c10::BFloat16* g, const c10::BFloat16* u, c10::BFloat16* o,
                                    int64_t d) {
  using avx512::load16;
  const __m512 one = _mm512_set1_ps(1.f), neg_log2e = _mm512_set1_ps(-1.4426950408889634f);
  for (int64_t i = 0; i < d; i += 16) {
    const __m512 gf = load16(g + i);
    const __m512 e = avx512::exp2(_mm512_mul_ps(gf, neg_log2e));
    const __m512 silu = round_bf16(_mm512_div_ps(gf, _mm512_add_ps(one, e)));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(o + i), bf16_bits(_mm512_mul_ps(silu, load16(u + i))));
  }
}
#endif

template <typename T>
void rms_norm_rows(const T* x, const T* res_in, T* res_out, const T* w, T* out, int64_t rows,
                   int64_t d, float eps) {
  at::parallel_for(0, rows, kGrain, [&](int64_t begin, int64_t end) {
    std::vector<float> buf(d);
    for (int64_t r = begin; r < end; ++r) {
      const T* xr = x + r * d;
      float ss = 0.f;
#if defined(__AVX512F__)
      // bf16 rows of whole vectors: the same per-element roundings as the loops below; only
      // the sum of squares is added in another order (16 lanes, then across).
      if constexpr (std::is_same_v<T, c10::BFloat16>) {
        if (d % 16 == 0) {
          rms_norm_row_avx512(xr, res_in ? res_in + r * d : nullptr, res_in ? res_out + r * d : nullptr,
                              w, out + r * d, d, eps);
          continue;
        }
      }
#endif
      if (res_in != nullptr) {
        const T* rr = res_in + r * d;
        T* ro = res_out + r * d;
        for (int64_t i = 0; i < d; ++i) {
          T s = static_cast<T>(to_f(xr[i]) + to_f(rr[i]));
          ro[i] = s;
          float f = to_f(s);
          buf[i] = f;
          ss += f * f;
        }
      } else {
#pragma omp simd reduction(+ : ss)
        for (int64_t i = 0; i < d; ++i) {
          float f = to_f(xr[i]);
          buf[i] = f;
          ss += f * f;
        }
      }
      const float inv = 1.f / std::sqrt(ss / static_cast<float>(d) + eps);
      T* o = out + r * d;
      for (int64_t i = 0; i < d; ++i) o[i] = static_cast<T>(to_f(w[i]) * rnd<T>(buf[i] * inv));
    }
  });
}

template <typename T>
void silu_and_mul_rows(const T* x, T* out, int64_t rows, int64_t d) {
  at::parallel_for(0, rows, kGrain, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const T* g = x + r * 2 * d;
      const T* u = g + d;
      T* o = out + r * d;
#if defined(__AVX512F__)
      if constexpr (std::is_same_v<T, c10::BFloat16>) {
        if (d % 16 == 0) {
          silu_and_mul_row_avx512(g, u, o, d);
          continue;
        }
      }
#endif
      for (int64_t i = 0; i < d; ++i) {
        float gf = to_f(g[i]);
        o[i] = static_cast<T>(rnd<T>(gf / (1.f + std::exp(-gf))) * to_f(u[i]));
      }
    }
  });
}

#if defined(__AVX512F__)
// One head of one bf16 token, 16 pairs at a time (half a multiple of 16): the scalar loop's
// operations lane by lane (products rounded to bf16 before the sum, no FMA).
template <typename C>
inline void rotary_head_avx512(const c10::BFloat16* xr, const C* c_row, c10::BFloat16* o, int64_t half) {
  using avx512::load16;
  for (int64_t i = 0; i < half; i += 16) {
    const __m512 c = load16(c_row + i), s = load16(c_row + half + i);
    const __m512 x1 = load16(xr + i), x2 = load16(xr + half + i);
    const __m512 o1 = _mm512_sub_ps(round_bf16(_mm512_mul_ps(x1, c)), round_bf16(_mm512_mul_ps(x2, s)));
    const __m512 o2 = _mm512_add_ps(round_bf16(_mm512_mul_ps(x2, c)), round_bf16(_mm512_mul_ps(x1, s)));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(o + i), bf16_bits(o1));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(o + half + i), bf16_bits(o2));
  }
}
#endif

template <typename T, typename C>
void rotary_rows(const T* x, const C* cs, T* out, int64_t rows, int64_t heads, int64_t hd,
                 int64_t x_stride, int64_t cs_stride) {
  const int64_t half = hd / 2;
  at::parallel_for(0, rows, kGrain, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const C* c_row = cs + r * cs_stride;    // [cos(half) | sin(half)] of this token
      for (int64_t h = 0; h < heads; ++h) {
        const T* xr = x + r * x_stride + h * hd;
        T* o = out + (r * heads + h) * hd;
#if defined(__AVX512F__)
        // bf16 activations (the fused path's case) with a bf16 or fp32 table: at decode batch
        // sizes the scalar conversions made this 4% of a SmolLM2 step.
        if constexpr (std::is_same_v<T, c10::BFloat16> &&
                      (std::is_same_v<C, c10::BFloat16> || std::is_same_v<C, float>)) {
          if (half % 16 == 0) {
            rotary_head_avx512(xr, c_row, o, half);
            continue;
          }
        }
#endif
        for (int64_t i = 0; i < half; ++i) {
          float c = to_f(c_row[i]), s = to_f(c_row[half + i]);
          float x1 = to_f(xr[i]), x2 = to_f(xr[half + i]);
          o[i] = static_cast<T>(rnd<T>(x1 * c) - rnd<T>(x2 * s));
          o[half + i] = static_cast<T>(rnd<T>(x2 * c) + rnd<T>(x1 * s));
        }
      }
    }
  });
}

// NaN test on the bits: the kernels build with -ffast-math, under which std::isnan is false.
inline bool nan_bits(float v) {
  uint32_t u;
  std::memcpy(&u, &v, sizeof(u));
  return (u & 0x7FFFFFFFu) > 0x7F800000u;
}
inline bool nan_bits(double v) {
  uint64_t u;
  std::memcpy(&u, &v, sizeof(u));
  return (u & 0x7FFFFFFFFFFFFFFFull) > 0x7FF0000000000000ull;
}

// torch.argmax of one row: the first index of the maximum, or of the first NaN if there is one
// (torch orders NaN above everything).
template <typename T>
int64_t argmax_row(const T* x, int64_t n) {
  int64_t i = 0, best = 0;
#if defined(__AVX512F__)
  if constexpr (!std::is_same_v<T, double>) {
    // Per lane: the first index of that lane's maximum (strict >). The row's answer is the
    // smallest such index among the lanes holding the overall maximum.
    __m512 vmax = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
    __m512i vidx = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    __m512i cur = vidx;
    const __m512i step = _mm512_set1_epi32(16);
    __mmask16 nan = 0;
    const int64_t n16 = n / 16 * 16;
    if (n16 > 0 && n < (int64_t{1} << 31)) {
      for (; i < n16; i += 16) {
        const __m512 v = avx512::load16(x + i);
        nan |= _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
        const __mmask16 gt = _mm512_cmp_ps_mask(v, vmax, _CMP_GT_OQ);
        vmax = _mm512_mask_mov_ps(vmax, gt, v);
        vidx = _mm512_mask_mov_epi32(vidx, gt, cur);
        cur = _mm512_add_epi32(cur, step);
      }
      if (nan) {
        i = 0;   // rare: the scalar scan below finds the first NaN
      } else {
        const float m = _mm512_reduce_max_ps(vmax);
        const __mmask16 at = _mm512_cmp_ps_mask(vmax, _mm512_set1_ps(m), _CMP_EQ_OQ);
        best = _mm512_mask_reduce_min_epi32(at, vidx);
      }
    }
  }
#endif
  using Acc = std::conditional_t<std::is_same_v<T, double>, double, float>;
  Acc bv = static_cast<Acc>(x[best]);
  if (i == 0 && nan_bits(bv)) return 0;
  for (; i < n; ++i) {
    const Acc v = static_cast<Acc>(x[i]);
    if (nan_bits(v)) return i;
    if (v > bv) bv = v, best = i;
  }
  return best;
}

void check_rows(const torch::Tensor& t, const char* name) {
  TORCH_CHECK(t.device().is_cpu() && t.dim() == 2 && t.stride(1) == 1, name, ": a CPU [rows, d] tensor with unit stride");
}

}  // namespace

// out = norm(x) * w; with residual: s = x + residual, out = norm(s) * w; returns (out, s).
std::vector<torch::Tensor> rms_norm(torch::Tensor x, std::optional<torch::Tensor> residual,
                                    torch::Tensor weight, double eps) {
  x = x.contiguous();
  check_rows(x, "rms_norm x");
  TORCH_CHECK(weight.dtype() == x.dtype() && weight.numel() == x.size(1), "rms_norm: weight [d] in x's dtype");
  weight = weight.contiguous();
  auto out = torch::empty_like(x);
  torch::Tensor sum;
  if (residual) {
    TORCH_CHECK(residual->sizes() == x.sizes() && residual->dtype() == x.dtype(), "rms_norm: residual like x");
    sum = torch::empty_like(x);
  }
  torch::Tensor res = residual ? residual->contiguous() : torch::Tensor();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "rms_norm", [&] {
    rms_norm_rows<scalar_t>(x.data_ptr<scalar_t>(), residual ? res.data_ptr<scalar_t>() : nullptr,
                            residual ? sum.data_ptr<scalar_t>() : nullptr, weight.data_ptr<scalar_t>(),
                            out.data_ptr<scalar_t>(), x.size(0), x.size(1), static_cast<float>(eps));
  });
  if (residual) return {out, sum};
  return {out};
}

// logits [N, V] -> int64 [N]: torch.argmax(logits, -1) (the same index, NaN rules included),
// rows in parallel, read in the logits' own dtype (no fp32 copy of [N, V] first).
torch::Tensor argmax_rows(torch::Tensor x) {
  x = x.contiguous();
  check_rows(x, "argmax_rows x");
  TORCH_CHECK(x.size(1) > 0, "argmax_rows: empty rows");
  auto out = torch::empty({x.size(0)}, x.options().dtype(torch::kLong));
  int64_t* o = out.data_ptr<int64_t>();
  const int64_t V = x.size(1);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "argmax_rows", [&] {
    const scalar_t* p = x.data_ptr<scalar_t>();
    at::parallel_for(0, x.size(0), 1, [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) o[r] = argmax_row<scalar_t>(p + r * V, V);
    });
  });
  return out;
}

torch::Tensor silu_and_mul(torch::Tensor x) {
  x = x.contiguous();
  check_rows(x, "silu_and_mul x");
  TORCH_CHECK(x.size(1) % 2 == 0, "silu_and_mul: last dim must be even");
  auto out = torch::empty({x.size(0), x.size(1) / 2}, x.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "silu_and_mul", [&] {
    silu_and_mul_rows<scalar_t>(x.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), x.size(0), x.size(1) / 2);
  });
  return out;
}

// x [T, heads*hd] (rows may be strided, e.g. a slice of fused qkv); cs [T, hd]: each token's
// cos (first half) and sin (second half), gathered once per step for all layers.
torch::Tensor rotary(torch::Tensor x, torch::Tensor cs, int64_t head_size) {
  TORCH_CHECK(x.device().is_cpu() && x.dim() == 2 && x.stride(1) == 1, "rotary x: [T, n*hd] with unit stride");
  TORCH_CHECK(x.size(1) % head_size == 0 && head_size % 2 == 0, "rotary: width must be heads * even head_size");
  TORCH_CHECK(cs.dim() == 2 && cs.size(0) == x.size(0) && cs.size(1) == head_size && cs.stride(1) == 1,
              "rotary: cs [T, head_size] with unit stride");
  auto out = torch::empty({x.size(0), x.size(1)}, x.options());
  const int64_t heads = x.size(1) / head_size;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "rotary", [&] {
    using T = scalar_t;
    if (cs.scalar_type() == torch::kFloat) {
      rotary_rows<T, float>(x.data_ptr<T>(), cs.data_ptr<float>(), out.data_ptr<T>(), x.size(0), heads,
                            head_size, x.stride(0), cs.stride(0));
    } else {
      TORCH_CHECK(cs.scalar_type() == x.scalar_type(), "rotary: cs in fp32 or x's dtype");
      rotary_rows<T, T>(x.data_ptr<T>(), cs.data_ptr<T>(), out.data_ptr<T>(), x.size(0), heads, head_size,
                        x.stride(0), cs.stride(0));
    }
  });
  return out;
}

// Write each token's key/value [Hkv, D] at row slot_mapping[t] of the caches (flash layout
// [num_blocks, block_size, Hkv, D]); slot < 0 skips the token. key/value rows may be strided
// (slices of the fused qkv output); each token's [Hkv, D] must be contiguous.
void reshape_and_cache(torch::Tensor key, torch::Tensor value, torch::Tensor key_cache,
                       torch::Tensor value_cache, torch::Tensor slot_mapping) {
  TORCH_CHECK(key.dim() == 3 && value.sizes() == key.sizes(), "reshape_and_cache: key/value [T, Hkv, D]");
  TORCH_CHECK(key_cache.is_contiguous() && value_cache.is_contiguous() && key_cache.dim() == 4,
              "reshape_and_cache: contiguous caches [num_blocks, block_size, Hkv, D]");
  const int64_t T = key.size(0), row = key.size(1) * key.size(2);
  TORCH_CHECK(key_cache.size(2) * key_cache.size(3) == row, "reshape_and_cache: cache rows are not [Hkv, D]");
  TORCH_CHECK(key.stride(2) == 1 && key.stride(1) == key.size(2) && value.stride(2) == 1 &&
              value.stride(1) == value.size(2), "reshape_and_cache: each token's [Hkv, D] must be contiguous");
  TORCH_CHECK(key.scalar_type() == key_cache.scalar_type() && value.scalar_type() == value_cache.scalar_type(),
              "reshape_and_cache: key/value in the caches' dtype");
  TORCH_CHECK(slot_mapping.scalar_type() == torch::kLong && slot_mapping.numel() == T, "reshape_and_cache: slot_mapping int64 [T]");
  slot_mapping = slot_mapping.contiguous();
  const int64_t* slots = slot_mapping.data_ptr<int64_t>();
  const int64_t num_slots = key_cache.size(0) * key_cache.size(1);
  for (int64_t t = 0; t < T; ++t)
    TORCH_CHECK(slots[t] < num_slots, "reshape_and_cache: slot ", slots[t], " is outside the cache");
  const int64_t bytes = row * key.element_size();
  char* kc = static_cast<char*>(key_cache.data_ptr());
  char* vc = static_cast<char*>(value_cache.data_ptr());
  const char* k = static_cast<const char*>(key.data_ptr());
  const char* v = static_cast<const char*>(value.data_ptr());
  const int64_t ks = key.stride(0) * key.element_size(), vs = value.stride(0) * value.element_size();
  // A memcpy per token: at decode batch sizes one thread is faster than a parallel region.
  for (int64_t t = 0; t < T; ++t) {
    if (slots[t] < 0) continue;
    std::memcpy(kc + slots[t] * bytes, k + t * ks, bytes);
    std::memcpy(vc + slots[t] * bytes, v + t * vs, bytes);
  }
}

TORCH_LIBRARY(continuum_cpu_ops, m) {
  m.def("reshape_and_cache(Tensor key, Tensor value, Tensor(a!) key_cache, Tensor(b!) value_cache, Tensor slot_mapping) -> ()",
        &reshape_and_cache);
  m.def("rms_norm(Tensor x, Tensor? residual, Tensor weight, float eps) -> Tensor[]", &rms_norm);
  m.def("silu_and_mul(Tensor x) -> Tensor", &silu_and_mul);
  m.def("argmax_rows(Tensor x) -> Tensor", &argmax_rows);
  m.def("rotary(Tensor x, Tensor cs, int head_size) -> Tensor", &rotary);
}
