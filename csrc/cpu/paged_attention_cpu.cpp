// Paged attention on the CPU, K/V read in place from the block table (flash layout
// [num_blocks, block_size, num_kv_heads, head_size]):
//
// - paged_attention_decode: one query token per sequence (pure-decode steps);
// - paged_attention_varlen: any step (prefill chunks over cached prefixes, whole prompts and
//   decodes in one batch), flash-style online softmax, work items planned by varlen_plan.
//
// Decode kernel (portable version below; on AVX-512 builds head sizes 32/64/128/256 run
// avx512::decode_kernel from decode_avx512.h, which scores 16 keys per transposed sum):
// Cost per (sequence, kv head): the context's K and V rows are each read once (2 * L * D
// elements); the g = num_heads / num_kv_heads query heads that share them are served from the
// same reads, so GQA costs no extra memory traffic. Scores are kept in a per-task buffer
// (g * L floats), softmax is exact (max-subtracted), accumulation is in fp32.
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include "cpu_common.h"
#include "decode_avx512.h"
#include "varlen_avx512.h"

#include <algorithm>
#include <array>
#include <atomic>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <limits>
#include <vector>

namespace {

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
        const float inv = softmax_numerators(sj, L);
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
      constexpr int64_t DC = decltype(head_size)::value;
#if defined(__AVX512F__)
      if constexpr (DC != 0 && DC % 32 == 0 && !std::is_same_v<scalar_t, double>) {  // fp64: portable
        avx512::decode_kernel<scalar_t, DC>(
            q.data_ptr<scalar_t>(), k_cache.data_ptr<scalar_t>(), v_cache.data_ptr<scalar_t>(),
            block_tables.data_ptr<int64_t>(), seq_lens.data_ptr<int64_t>(), out.data_ptr<scalar_t>(),
            B, H, Hkv, bs, block_tables.size(1), static_cast<float>(scale));
        return;
      }
#endif
      decode_kernel<scalar_t, DC>(
          q.data_ptr<scalar_t>(), k_cache.data_ptr<scalar_t>(), v_cache.data_ptr<scalar_t>(),
          block_tables.data_ptr<int64_t>(), seq_lens.data_ptr<int64_t>(), out.data_ptr<scalar_t>(),
          B, H, Hkv, D, bs, block_tables.size(1), static_cast<float>(scale));
    };
    // Compile-time head sizes let the inner loops unroll into whole vector registers.
    with_head_size(D, run);
  });
  return out;
}

// ---------------------------------------------------------------------------------------------
// Varlen kernel. Sequence i owns query tokens qsl[i]..qsl[i+1] (ql of them) and a context of
// sl = seq_lens[i] tokens whose last ql are the new ones: query j sits at absolute position
// sl - ql + j and sees keys 0..that position (causal, bottom-right aligned; no dense mask).
//
// Work item = (sequence, kv head, first query q0, nq queries). Its R = nq * g rows (the g query
// heads of the kv head, for each of its queries) share every K/V read: keys are walked in
// chunks of KC tokens that never cross a cache block; each chunk is converted to fp32 once
// (K transposed to [D][KC] so that scores vectorise over keys with no horizontal sums, V as
// [KC][D]) and serves all R rows. Softmax is online (running max and sum per row, fp32), so
// no score matrix of the context's length exists. Rows whose position lies before a chunk are
// skipped, so the causal triangle costs nothing. This is the portable version: on AVX-512
// builds fp32 and bf16 with head sizes 32/64/128/256 run avx512::varlen_kernel from
// varlen_avx512.h (16-row tiles, one row per vector lane; bf16 Q.K and P.V by vdpbf16ps).
namespace {

constexpr int64_t KC = 16;  // keys per chunk: one 512-bit vector of fp32 scores
constexpr int64_t MR = 4;   // rows per scores micro-kernel (4 x KC accumulators in registers)

// Per-thread scratch (floats) for items of up to `rows` rows and head size D.
inline int64_t workspace_floats(int64_t rows, int64_t D) {
  const int64_t r = round_up(std::max<int64_t>(rows, 1), MR);
  const int64_t portable = 2 * r * D + 2 * r + D * KC + KC * D + D;
#if defined(__AVX512F__)
  return std::max(portable, avx512::varlen_scratch_floats(rows, D));
#else
  return portable;
#endif
}

// Default query tile: about 384 rows (queries x group) per item, 4..128 queries. Bigger tiles
// read each K/V chunk for more rows (fewer re-reads and conversions per FLOP: 128 queries ran
// 1.5x faster than 32 on a 3k-token prefix, fp32); ~384 rows keep Q and the fp32 accumulators
// (2 x rows x D floats) within L2.
inline int64_t auto_q_tile(int64_t group) {
  return std::max<int64_t>(4, std::min<int64_t>(128, 384 / std::max<int64_t>(group, 1)));
}

template <typename T, int64_t DC>
void varlen_item(const Item& it, const T* q, const T* kc, const T* vc, const int64_t* tables,
                 const int64_t* seq_lens, const int64_t* qsl, T* out, int64_t H, int64_t Hkv,
                 int64_t d_runtime, int64_t bs, int64_t max_blocks, float scale, float* ws) {
  const int64_t D = DC ? DC : d_runtime;
  const int64_t g = H / Hkv;
  const int64_t tok_stride = Hkv * D, blk_stride = bs * tok_stride;
  const int64_t ql = qsl[it.seq + 1] - qsl[it.seq], sl = seq_lens[it.seq];
  const int64_t R = it.nq * g, Rp = round_up(R, MR);
  const int64_t p_first = sl - ql + it.q0;           // position of the item's first query
  const int64_t kv_end = p_first + it.nq;            // keys 0..kv_end-1 are visible to some row
  const int64_t* table = tables + it.seq * max_blocks;
  const int64_t tok0 = qsl[it.seq] + it.q0;          // flat index of the first query token
  // Scratch layout: Q [Rp][D] (pre-scaled), Acc [Rp][D], M [Rp], L [Rp], KT [D][KC], V [KC][D], row [D].
  float* Q = ws;
  float* Acc = Q + Rp * D;
  float* M = Acc + Rp * D;
  float* Ls = M + Rp;
  float* KT = Ls + Rp;
  float* V = KT + D * KC;
  float* row = V + KC * D;
  for (int64_t qi = 0; qi < it.nq; ++qi)
    for (int64_t j = 0; j < g; ++j) {
      float* dst = Q + (qi * g + j) * D;
      row_to_float(q + ((tok0 + qi) * H + it.kvh * g + j) * D, dst, D);
#pragma omp simd
      for (int64_t d = 0; d < D; ++d) dst[d] *= scale;
    }
  std::fill(Q + R * D, Q + Rp * D, 0.f);             // padding rows: computed, never used
  std::fill(Acc, Acc + Rp * D, 0.f);
  std::fill(M, M + Rp, -std::numeric_limits<float>::infinity());
  std::fill(Ls, Ls + Rp, 0.f);

  for (int64_t t0 = 0; t0 < kv_end;) {
    const int64_t off = t0 % bs;
    const int64_t nk = std::min({KC, bs - off, kv_end - t0});
    const int64_t base = table[t0 / bs] * blk_stride + off * tok_stride + it.kvh * D;
    for (int64_t t = 0; t < nk; ++t) {
      row_to_float(kc + base + t * tok_stride, row, D);
      for (int64_t d = 0; d < D; ++d) KT[d * KC + t] = row[d];
      row_to_float(vc + base + t * tok_stride, V + t * D, D);
    }
    if (nk < KC)
      for (int64_t d = 0; d < D; ++d)
        for (int64_t t = nk; t < KC; ++t) KT[d * KC + t] = 0.f;
    // Rows of queries at positions < t0 see none of this chunk.
    const int64_t r_lo = std::max<int64_t>(0, t0 - p_first) * g / MR * MR;
    for (int64_t r = r_lo; r < R; r += MR) {
      alignas(64) float s[MR][KC] = {};
      const float* q0r = Q + r * D;
      for (int64_t d = 0; d < D; ++d) {
        const float* __restrict kd = KT + d * KC;
#pragma GCC unroll 4
        for (int64_t m = 0; m < MR; ++m) {
          const float qv = q0r[m * D + d];
#pragma omp simd
          for (int64_t t = 0; t < KC; ++t) s[m][t] += qv * kd[t];
        }
      }
      // Online softmax per row: s becomes the chunk's weights (0 for keys a row must not see,
      // all 0 for rows before the chunk and padding rows), the row's acc rescaled if its max grew.
      const int64_t mr = std::min(MR, R - r);
      for (int64_t m = 0; m < MR; ++m) {
        const int64_t rr = r + m;
        const int64_t pos = p_first + rr / g;
        float* sm = s[m];
        if (m >= mr || pos < t0) {
          std::fill(sm, sm + KC, 0.f);
          continue;
        }
        const int64_t valid = std::min(nk, pos - t0 + 1);   // keys t0..pos of this chunk
        float mx = -std::numeric_limits<float>::infinity();
#pragma omp simd reduction(max : mx)
        for (int64_t t = 0; t < KC; ++t) mx = (t < valid && sm[t] > mx) ? sm[t] : mx;
        if (mx > M[rr]) {
          const float corr = std::exp(M[rr] - mx);         // exp(-inf) = 0 on the first chunk
          Ls[rr] *= corr;
          float* acc = Acc + rr * D;
#pragma omp simd
          for (int64_t d = 0; d < D; ++d) acc[d] *= corr;
          M[rr] = mx;
        }
        const float mrow = M[rr];
        float sum = 0.f;
#pragma omp simd reduction(+ : sum)
        for (int64_t t = 0; t < KC; ++t) {
          const float p = t < valid ? std::exp(sm[t] - mrow) : 0.f;
          sm[t] = p;
          sum += p;
        }
        Ls[rr] += sum;
      }
      // acc[m] += sum_t s[m][t] * V[t], MR rows x (up to) 64 dims held in registers.
      for (int64_t d0 = 0; d0 < D; d0 += 64) {
        const int64_t dn = DC ? (DC < 64 ? DC : 64) : std::min<int64_t>(64, D - d0);
        alignas(64) float a[MR][64];
        for (int64_t m = 0; m < MR; ++m)
#pragma omp simd
          for (int64_t d = 0; d < dn; ++d) a[m][d] = Acc[(r + m) * D + d0 + d];
        for (int64_t t = 0; t < nk; ++t) {
          const float* __restrict vt = V + t * D + d0;
#pragma GCC unroll 4
          for (int64_t m = 0; m < MR; ++m) {
            const float p = s[m][t];
#pragma omp simd
            for (int64_t d = 0; d < dn; ++d) a[m][d] += p * vt[d];
          }
        }
        for (int64_t m = 0; m < MR; ++m)
#pragma omp simd
          for (int64_t d = 0; d < dn; ++d) Acc[(r + m) * D + d0 + d] = a[m][d];
      }
    }
    t0 += nk;
  }
  for (int64_t qi = 0; qi < it.nq; ++qi)
    for (int64_t j = 0; j < g; ++j) {
      const int64_t rr = qi * g + j;
      const float inv = 1.f / Ls[rr];
      const float* acc = Acc + rr * D;
      T* o = out + ((tok0 + qi) * H + it.kvh * g + j) * D;
      for (int64_t d = 0; d < D; ++d) o[d] = static_cast<T>(acc[d] * inv);
    }
}

template <typename T, int64_t DC>
void varlen_kernel(const T* q, const T* kc, const T* vc, const int64_t* tables,
                   const int64_t* seq_lens, const int64_t* qsl, const int64_t* work, int64_t n_items,
                   T* out, int64_t H, int64_t Hkv, int64_t d_runtime, int64_t bs,
                   int64_t max_blocks, float scale, float* workspace, int64_t ws_stride,
                   int64_t n_slots) {
  struct NoState {};
  for_each_item<NoState>(work, n_items, n_slots, [&](int64_t slot, const Item& it, NoState&) {
    varlen_item<T, DC>(it, q, kc, vc, tables, seq_lens, qsl, out, H, Hkv, d_runtime, bs, max_blocks, scale,
                       workspace + slot * ws_stride);
  });
}

}  // namespace

// Every sequence's query_len lies in [0, seq_len] and (when max_tokens >= 0) its context fits
// its block-table row, so no item reads outside the table or the rows it owns.
static void check_lens(const int64_t* sl, const int64_t* qsl, int64_t S, int64_t max_tokens) {
  for (int64_t i = 0; i < S; ++i) {
    const int64_t ql = qsl[i + 1] - qsl[i];
    TORCH_CHECK(ql >= 0 && ql <= sl[i], "sequence ", i, ": query_len ", ql, " must lie in [0, seq_len ", sl[i], "]");
    TORCH_CHECK(max_tokens < 0 || sl[i] <= max_tokens, "sequence ", i, ": seq_len ", sl[i],
                " exceeds its block table (", max_tokens, " tokens)");
  }
}

// Work partition of one step (host tensors): rows (seq, kv_head, q0, nq), sorted by decreasing
// cost (nq * g * visible keys). Query tiles of up to `max_q_tile` tokens (<= 0: auto_q_tile), halved (down to 4)
// while the step has fewer than 4 items per thread or its costliest item exceeds a
// 1/(2 * num_threads) share of the step, so one long prefill chunk spreads over all threads.
torch::Tensor varlen_plan(torch::Tensor seq_lens, torch::Tensor query_start_loc, int64_t num_kv_heads,
                          int64_t group, int64_t num_threads, int64_t max_q_tile) {
  TORCH_CHECK(seq_lens.scalar_type() == torch::kLong && query_start_loc.scalar_type() == torch::kLong,
              "seq_lens and query_start_loc must be int64");
  TORCH_CHECK(query_start_loc.numel() == seq_lens.numel() + 1, "query_start_loc must have num_seqs + 1 entries");
  TORCH_CHECK(num_kv_heads >= 1 && group >= 1, "bad plan sizes");
  if (max_q_tile <= 0) max_q_tile = auto_q_tile(group);
  auto sl_t = seq_lens.cpu().contiguous();
  auto qsl_t = query_start_loc.cpu().contiguous();
  const int64_t S = sl_t.numel();
  const int64_t* sl = sl_t.data_ptr<int64_t>();
  const int64_t* qsl = qsl_t.data_ptr<int64_t>();
  check_lens(sl, qsl, S, -1);
  num_threads = std::max<int64_t>(num_threads, 1);
  auto cost = [&](int64_t i, int64_t q0, int64_t nq) {   // rows x visible keys (+ per-item overhead)
    return nq * group * (sl[i] - (qsl[i + 1] - qsl[i]) + q0 + nq) + 64;
  };
  int64_t tile = max_q_tile;
  std::vector<std::array<int64_t, 5>> items;
  for (;;) {
    items.clear();
    int64_t total = 0, worst = 0;
    for (int64_t i = 0; i < S; ++i) {
      const int64_t ql = qsl[i + 1] - qsl[i];
      for (int64_t q0 = 0; q0 < ql; q0 += tile) {
        const int64_t nq = std::min(tile, ql - q0), c = cost(i, q0, nq);
        for (int64_t h = 0; h < num_kv_heads; ++h) items.push_back({c, i, h, q0, nq});
        total += c * num_kv_heads;
        worst = std::max(worst, c);
      }
    }
    const bool few = static_cast<int64_t>(items.size()) < 4 * num_threads;
    const bool lumpy = worst * 2 * num_threads > total;
    if (tile <= 4 || !(few || lumpy)) break;
    tile /= 2;
  }
  std::stable_sort(items.begin(), items.end(), [](const auto& a, const auto& b) { return a[0] > b[0]; });
  auto work = torch::empty({static_cast<int64_t>(items.size()), 4}, torch::kLong);
  int64_t* w = work.data_ptr<int64_t>();
  for (size_t k = 0; k < items.size(); ++k)
    for (int c = 0; c < 4; ++c) w[4 * k + c] = items[k][c + 1];
  return work;
}

// Floats of scratch one thread needs for items of up to max_q_tile (<= 0: auto) queries of
// `group` heads.
int64_t varlen_workspace_floats(int64_t max_q_tile, int64_t group, int64_t head_size) {
  if (max_q_tile <= 0) max_q_tile = auto_q_tile(group);
  return workspace_floats(max_q_tile * group, head_size);
}

// q [T, H, D]; k_cache/v_cache [num_blocks, block_size, Hkv, D]; block_tables [S, max_blocks];
// seq_lens [S]; query_start_loc [S+1] (all int64). work: varlen_plan's output (planned here if
// absent). workspace: fp32 [slots, floats] per-thread scratch (allocated here if absent or too
// small). Returns [T, H, D] in q's dtype; rows of tokens no sequence owns are left unwritten.
torch::Tensor paged_attention_varlen(torch::Tensor q, torch::Tensor k_cache, torch::Tensor v_cache,
                                     torch::Tensor block_tables, torch::Tensor seq_lens,
                                     torch::Tensor query_start_loc, double scale,
                                     c10::optional<torch::Tensor> work_opt,
                                     c10::optional<torch::Tensor> workspace_opt) {
  TORCH_CHECK(q.dim() == 3 && k_cache.dim() == 4 && v_cache.sizes() == k_cache.sizes(), "bad shapes");
  TORCH_CHECK(q.device().is_cpu() && k_cache.device().is_cpu(), "CPU tensors only");
  TORCH_CHECK(q.scalar_type() == k_cache.scalar_type() && v_cache.scalar_type() == k_cache.scalar_type(),
              "q and the caches must share a dtype");
  TORCH_CHECK(block_tables.scalar_type() == torch::kLong && seq_lens.scalar_type() == torch::kLong &&
                  query_start_loc.scalar_type() == torch::kLong,
              "block_tables, seq_lens and query_start_loc must be int64");
  TORCH_CHECK(k_cache.is_contiguous() && v_cache.is_contiguous(), "caches must be contiguous");
  q = q.contiguous();
  block_tables = block_tables.contiguous();
  seq_lens = seq_lens.contiguous();
  query_start_loc = query_start_loc.contiguous();
  const int64_t T = q.size(0), H = q.size(1), D = q.size(2);
  const int64_t bs = k_cache.size(1), Hkv = k_cache.size(2);
  TORCH_CHECK(k_cache.size(3) == D && H % Hkv == 0, "head sizes disagree");
  const int64_t S = seq_lens.numel();
  TORCH_CHECK(query_start_loc.numel() == S + 1 && block_tables.size(0) == S, "metadata sizes disagree");
  TORCH_CHECK(query_start_loc.data_ptr<int64_t>()[0] == 0 && query_start_loc.data_ptr<int64_t>()[S] <= T,
              "query_start_loc must start at 0 and end within q");
  check_lens(seq_lens.data_ptr<int64_t>(), query_start_loc.data_ptr<int64_t>(), S, block_tables.size(1) * bs);
  const int64_t g = H / Hkv;
  const int64_t nthreads = at::get_num_threads();
  torch::Tensor work = work_opt.has_value() ? work_opt->contiguous()
                                            : varlen_plan(seq_lens, query_start_loc, Hkv, g, nthreads, 0);
  TORCH_CHECK(work.scalar_type() == torch::kLong && work.dim() == 2 && work.size(1) == 4, "work must be int64 [N, 4]");
  const int64_t n_items = work.size(0);
  const int64_t* wp = work.data_ptr<int64_t>();
  const int64_t* qsl_p = query_start_loc.data_ptr<int64_t>();
  int64_t max_nq = 1;
  for (int64_t i = 0; i < n_items; ++i) {
    const int64_t sq = wp[4 * i];
    TORCH_CHECK(sq >= 0 && sq < S && wp[4 * i + 1] >= 0 && wp[4 * i + 1] < Hkv && wp[4 * i + 2] >= 0 &&
                    wp[4 * i + 3] >= 1 &&
                    wp[4 * i + 2] + wp[4 * i + 3] <= qsl_p[sq + 1] - qsl_p[sq],
                "work item ", i, " names no (sequence, kv head, queries) of this batch");
    max_nq = std::max(max_nq, wp[4 * i + 3]);
  }
  const int64_t need = workspace_floats(max_nq * g, D);
  const int64_t slots = std::max<int64_t>(1, std::min(nthreads, n_items));
  torch::Tensor ws;
  if (workspace_opt.has_value() && workspace_opt->scalar_type() == torch::kFloat &&
      workspace_opt->is_contiguous() && workspace_opt->dim() == 2 && workspace_opt->size(0) >= slots &&
      workspace_opt->size(1) >= need) {
    ws = *workspace_opt;
  } else {
    ws = torch::empty({slots, need}, torch::kFloat);
  }
  auto out = torch::empty_like(q);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, q.scalar_type(), "paged_attention_varlen", [&] {
    auto run = [&](auto head_size) {
      constexpr int64_t DC = decltype(head_size)::value;
#if defined(__AVX512F__)
      if constexpr (DC != 0 && DC % 32 == 0 &&
                    (std::is_same_v<scalar_t, float> || std::is_same_v<scalar_t, c10::BFloat16>)) {
        avx512::varlen_kernel<scalar_t, DC>(
            q.data_ptr<scalar_t>(), k_cache.data_ptr<scalar_t>(), v_cache.data_ptr<scalar_t>(),
            block_tables.data_ptr<int64_t>(), seq_lens.data_ptr<int64_t>(),
            query_start_loc.data_ptr<int64_t>(), wp, n_items, out.data_ptr<scalar_t>(), H, Hkv, bs,
            block_tables.size(1), static_cast<float>(scale), ws.data_ptr<float>(), ws.size(1), slots);
        return;
      }
#endif
      varlen_kernel<scalar_t, DC>(
          q.data_ptr<scalar_t>(), k_cache.data_ptr<scalar_t>(), v_cache.data_ptr<scalar_t>(),
          block_tables.data_ptr<int64_t>(), seq_lens.data_ptr<int64_t>(),
          query_start_loc.data_ptr<int64_t>(), wp, n_items, out.data_ptr<scalar_t>(), H, Hkv, D, bs,
          block_tables.size(1), static_cast<float>(scale), ws.data_ptr<float>(), ws.size(1), slots);
    };
    with_head_size(D, run);
  });
  return out;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("paged_attention_decode", &paged_attention_decode, "paged attention decode (CPU)");
  m.def("paged_attention_varlen", &paged_attention_varlen, "paged attention, any mix of prefill chunks and decodes (CPU)",
        py::arg("q"), py::arg("k_cache"), py::arg("v_cache"), py::arg("block_tables"), py::arg("seq_lens"),
        py::arg("query_start_loc"), py::arg("scale"), py::arg("work") = py::none(),
        py::arg("workspace") = py::none());
  m.def("varlen_plan", &varlen_plan, "work items of one step for paged_attention_varlen", py::arg("seq_lens"),
        py::arg("query_start_loc"), py::arg("num_kv_heads"), py::arg("group"), py::arg("num_threads"),
        py::arg("max_q_tile") = 0);
  m.def("varlen_workspace_floats", &varlen_workspace_floats, "per-thread scratch floats of the varlen kernel");
}
