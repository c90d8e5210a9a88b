// AVX-512 varlen attention items (prefill chunks, whole prompts, decodes in one step); included
// by paged_attention_cpu.cpp only where the compiler targets AVX-512F, and used there for fp32
// and bf16 with a compile-time head size that is a multiple of 32. Other dtypes, head sizes and
// builds run the portable varlen_item. Same plan, items and numerics contract: fp32 online
// softmax and accumulators, outputs within the tests' tolerances of the torch reference.
//
// Layout: an item's R = nq * g rows (query-major: row r is query r / g, head r % g) are cut
// into tiles of 16 rows, one row per vector lane, so that every per-row quantity of the online
// softmax (scores of one key, running max, running sum, exp) is one vector op for 16 rows:
// - Q is packed once per item, transposed per tile: fp32 [D][16], or for bf16 with
//   AVX512-BF16 pairs of dims [D/2][16] (one 32-bit lane = q[2i], q[2i+1]).
// - Per chunk of 16 keys (never crossing a cache block) the K rows are copied into a
//   contiguous buffer (bf16 kept as is; fp32, or bf16 without AVX512-BF16, as fp32) and the
//   V rows converted once (fp32 [16][D], or for bf16 pairs of keys [8][D]); every tile reads
//   them from L1.
// - Scores of a tile x chunk: 16 accumulators (one per key, lanes = rows), each step one Q
//   vector times a key element broadcast from the buffer: an fp32 FMA per dim, or one
//   vdpbf16ps per pair of dims for bf16 (bf16 products are exact, sums fp32), no horizontal
//   sums and no per-chunk K conversion.
// - Online softmax in fp32 in the log2 domain (scores scaled by scale * log2 e, exp2 by a
//   polynomial): the chunk's row max is 15 vertical max ops, the masked (causal or past the
//   chunk) keys get weight exactly 0.
// - P.V: the output accumulators are kept transposed, [D][16] per tile, rescaled by the
//   max correction once per chunk, and updated as acc[d] += p[t] * v[t][d] with the 16
//   weight vectors in registers and v broadcast from the V buffer: fp32 FMAs, or for bf16
//   the weights rounded to bf16 and one vdpbf16ps per two keys (as FlashAttention does P.V
//   in 16 bits; the running sums stay fp32, from the unrounded weights). On the tests' bf16
//   cases the error stays at the floor set by rounding the exact result to bf16.
// Tiles whose rows all lie before a chunk skip it (the causal triangle costs nothing past the
// diagonal chunk); items of one query (decodes, and the last query of a tile) run
// decode_task, whose per-head work has no 16-row tile to pad.
#pragma once

#if defined(__AVX512F__)
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "avx512_common.h"
#include "cpu_common.h"
#include "decode_avx512.h"

namespace {
namespace avx512 {

constexpr int64_t RT = 16;          // rows per tile: one per fp32 lane
constexpr float kNeg = -1e30f;      // "no score yet" / masked key (finite: built with -ffast-math)
constexpr float kLog2e = 1.4426950408889634f;

// Whether Q.K^T of T runs as bf16 pairs (vdpbf16ps) rather than fp32 FMAs.
template <typename T>
constexpr bool kPairs =
#if defined(__AVX512BF16__)
    std::is_same_v<T, c10::BFloat16>;
#else
    false;
#endif

// Element type of the packed Q and the K buffer: raw bf16 pairs, or fp32.
template <typename T>
using QKElem = std::conditional_t<kPairs<T>, uint32_t, float>;

// Floats of per-thread scratch for items of up to `rows` rows of head size D: packed Q and
// accumulators (r x D each), max, sum and position per row, K and V chunk buffers.
inline int64_t varlen_scratch_floats(int64_t rows, int64_t D) {
  const int64_t r = round_up(std::max<int64_t>(rows, 1), RT);
  return 2 * r * D + 3 * r + 2 * KC * D;
}

// s[t] (lane m = row m of the tile) = q_m . k_t for the chunk's 16 keys; fp32.
template <int64_t D>
inline void tile_scores(const float* qt, const float* kb, __m512* s) {
#pragma GCC unroll 16
  for (int64_t t = 0; t < KC; ++t) s[t] = _mm512_setzero_ps();
  for (int64_t d = 0; d < D; ++d) {
    const __m512 qv = _mm512_loadu_ps(qt + RT * d);
#pragma GCC unroll 16
    for (int64_t t = 0; t < KC; ++t) s[t] = _mm512_fmadd_ps(qv, _mm512_set1_ps(kb[t * D + d]), s[t]);
  }
}

#if defined(__AVX512BF16__)
// The same from bf16 pairs: qt [D/2][16] and kb [16][D/2] 32-bit words of two bf16 each.
template <int64_t D>
inline void tile_scores(const uint32_t* qt, const uint32_t* kb, __m512* s) {
#pragma GCC unroll 16
  for (int64_t t = 0; t < KC; ++t) s[t] = _mm512_setzero_ps();
  for (int64_t i = 0; i < D / 2; ++i) {
    const __m512bh qv = (__m512bh)_mm512_loadu_si512(qt + RT * i);
#pragma GCC unroll 16
    for (int64_t t = 0; t < KC; ++t)
      s[t] = _mm512_dpbf16_ps(s[t], qv, (__m512bh)_mm512_set1_epi32(static_cast<int>(kb[t * (D / 2) + i])));
  }
}
#endif

// Online-softmax update of one tile by one chunk (keys t0 .. t0+nk-1): s (raw scores in, the
// chunk's weights out: 0 for keys a row must not see), pos: each row's query position (a row
// sees keys <= pos); m, l: the rows' running max (log2 domain) and sum. Returns the factor
// (per row) by which the row's accumulator must be rescaled.
inline __m512 tile_softmax(__m512* s, __m512i pos, int64_t t0, int64_t nk, __m512 c, float* m, float* l) {
  __m512 mx = _mm512_set1_ps(kNeg);
  __mmask16 valid[KC];
#pragma GCC unroll 16
  for (int64_t t = 0; t < KC; ++t) {
    valid[t] = t < nk ? _mm512_cmpge_epi32_mask(pos, _mm512_set1_epi32(static_cast<int>(t0 + t))) : 0;
    s[t] = _mm512_mask_mul_ps(_mm512_set1_ps(kNeg), valid[t], s[t], c);
    mx = _mm512_max_ps(mx, s[t]);
  }
  const __m512 m_old = _mm512_loadu_ps(m);
  const __m512 m_new = _mm512_max_ps(m_old, mx);
  const __m512 corr = exp2(_mm512_sub_ps(m_old, m_new));   // ~0 on a row's first chunk
  __m512 sum = _mm512_setzero_ps();
#pragma GCC unroll 16
  for (int64_t t = 0; t < KC; ++t) {
    s[t] = _mm512_maskz_mov_ps(valid[t], exp2(_mm512_sub_ps(s[t], m_new)));
    sum = _mm512_add_ps(sum, s[t]);
  }
  _mm512_storeu_ps(l, _mm512_fmadd_ps(_mm512_loadu_ps(l), corr, sum));
  _mm512_storeu_ps(m, m_new);
  return corr;
}

// acc [D][16] = acc * corr + sum_t p[t] v[t] with v fp32 [16][D] (rows past the chunk zero).
template <int64_t D>
inline void tile_pv(const __m512* p, __m512 corr, float* acc, const float* vf) {
  constexpr int64_t DG = 8;   // dims per pass: 8 accumulators + 16 weight vectors in registers
  for (int64_t d0 = 0; d0 < D; d0 += DG) {
    __m512 a[DG];
#pragma GCC unroll 8
    for (int64_t i = 0; i < DG; ++i) a[i] = _mm512_mul_ps(_mm512_loadu_ps(acc + (d0 + i) * RT), corr);
#pragma GCC unroll 16
    for (int64_t t = 0; t < KC; ++t)
#pragma GCC unroll 8
      for (int64_t i = 0; i < DG; ++i) a[i] = _mm512_fmadd_ps(p[t], _mm512_set1_ps(vf[t * D + d0 + i]), a[i]);
#pragma GCC unroll 8
    for (int64_t i = 0; i < DG; ++i) _mm512_storeu_ps(acc + (d0 + i) * RT, a[i]);
  }
}

#if defined(__AVX512BF16__)
// 16-bit word indices that interleave two 32-word vectors x, y into pairs (x[i], y[i]):
// kInterleave[0] for i = 0..15, kInterleave[1] for i = 16..31 (permutex2var: >= 32 picks y).
alignas(64) inline constexpr uint16_t kInterleave[2][32] = {
    {0, 32, 1, 33, 2, 34, 3, 35, 4, 36, 5, 37, 6, 38, 7, 39, 8, 40, 9, 41, 10, 42, 11, 43, 12, 44, 13, 45, 14, 46, 15, 47},
    {16, 48, 17, 49, 18, 50, 19, 51, 20, 52, 21, 53, 22, 54, 23, 55,
     24, 56, 25, 57, 26, 58, 27, 59, 28, 60, 29, 61, 30, 62, 31, 63}};

// vp [8][D] 32-bit words: vp[i][d] = (v[2i][d], v[2i+1][d]) as bf16, from the chunk's nk rows
// (the rest zero).
template <int64_t D>
inline void pack_v_pairs(const c10::BFloat16* vc, int64_t base, int64_t tok_stride, int64_t nk, uint32_t* vp) {
  const __m512i lo = _mm512_load_si512(kInterleave[0]), hi = _mm512_load_si512(kInterleave[1]);
  for (int64_t i = 0; i < KC / 2; ++i) {
    const c10::BFloat16* a = vc + base + 2 * i * tok_stride;
    const c10::BFloat16* b = a + tok_stride;
    for (int64_t d = 0; d < D; d += 32) {
      const __m512i x = 2 * i < nk ? _mm512_loadu_si512(a + d) : _mm512_setzero_si512();
      const __m512i y = 2 * i + 1 < nk ? _mm512_loadu_si512(b + d) : _mm512_setzero_si512();
      _mm512_storeu_si512(vp + i * D + d, _mm512_permutex2var_epi16(x, lo, y));
      _mm512_storeu_si512(vp + i * D + d + 16, _mm512_permutex2var_epi16(x, hi, y));
    }
  }
}

// The same as tile_pv with the weights rounded to bf16 and v as bf16 pairs vp [8][D]: one
// vdpbf16ps per two keys (products exact, sums fp32), as FlashAttention does P.V in 16 bits.
template <int64_t D>
inline void tile_pv(const __m512* p, __m512 corr, float* acc, const uint32_t* vp) {
  // pw[i] lane m = (p[2i] lane m, p[2i+1] lane m) as bf16: cvtne2ps puts 2i in words 0..15
  // and 2i+1 in 16..31; the permute interleaves them (word 2m <- m, 2m + 1 <- 16 + m).
  alignas(64) static constexpr uint16_t kHalves[32] = {0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23,
                                                       8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31};
  const __m512i il = _mm512_load_si512(kHalves);
  __m512bh pw[KC / 2];
#pragma GCC unroll 8
  for (int64_t i = 0; i < KC / 2; ++i)
    pw[i] = (__m512bh)_mm512_permutexvar_epi16(il, (__m512i)_mm512_cvtne2ps_pbh(p[2 * i + 1], p[2 * i]));
  constexpr int64_t DG = 16;   // 16 accumulators + 8 weight-pair vectors in registers
  for (int64_t d0 = 0; d0 < D; d0 += DG) {
    __m512 a[DG];
#pragma GCC unroll 16
    for (int64_t j = 0; j < DG; ++j) a[j] = _mm512_mul_ps(_mm512_loadu_ps(acc + (d0 + j) * RT), corr);
#pragma GCC unroll 8
    for (int64_t i = 0; i < KC / 2; ++i)
#pragma GCC unroll 16
      for (int64_t j = 0; j < DG; ++j)
        a[j] = _mm512_dpbf16_ps(a[j], pw[i], (__m512bh)_mm512_set1_epi32(static_cast<int>(vp[i * D + d0 + j])));
#pragma GCC unroll 16
    for (int64_t j = 0; j < DG; ++j) _mm512_storeu_ps(acc + (d0 + j) * RT, a[j]);
  }
}
#endif

// Per-thread state of the AVX-512 varlen kernel beside its workspace slot.
template <typename T, int64_t D>
struct VarlenState {
  DecodeScratch<T, D> decode;
};

// One work item; ws: this thread's varlen_scratch_floats(nq * g, D) floats.
template <typename T, int64_t D>
void varlen_item(const Item& it, const T* q, const T* kc, const T* vc, const int64_t* tables,
                 const int64_t* seq_lens, const int64_t* qsl, T* out, int64_t H, int64_t Hkv, int64_t bs,
                 int64_t max_blocks, float scale, float* ws, VarlenState<T, D>& st) {
  static_assert(D % 32 == 0, "the AVX-512 varlen kernel needs a head size that is a multiple of 32");
  using E = QKElem<T>;
  constexpr int64_t DE = kPairs<T> ? D / 2 : D;   // elements of E per row
  const int64_t g = H / Hkv;
  const int64_t tok_stride = Hkv * D, blk_stride = bs * tok_stride;
  const int64_t ql = qsl[it.seq + 1] - qsl[it.seq], sl = seq_lens[it.seq];
  const int64_t p_first = sl - ql + it.q0;           // position of the item's first query
  const int64_t kv_end = p_first + it.nq;            // keys 0..kv_end-1 are visible to some row
  const int64_t* table = tables + it.seq * max_blocks;
  const int64_t tok0 = qsl[it.seq] + it.q0;          // flat index of the first query token
  if (it.nq == 1) {
    const int64_t off = (tok0 * H + it.kvh * g) * D;
    decode_task<T, D>(q + off, kc, vc, table, kv_end, g, it.kvh, Hkv, bs, scale, out + off, st.decode);
    return;
  }
  const int64_t R = it.nq * g, Rp = round_up(R, RT), n_tiles = Rp / RT;
  // Scratch: Q [tiles][DE][16], Acc [tiles][D][16], M [Rp], L [Rp], pos [Rp], K [16][DE], V:
  // fp32 [16][D], or bf16 pairs of keys [8][D].
  E* Q = reinterpret_cast<E*>(ws);
  float* Acc = ws + Rp * D;
  float* M = Acc + Rp * D;
  float* Ls = M + Rp;
  int32_t* pos = reinterpret_cast<int32_t*>(Ls + Rp);
  E* Kb = reinterpret_cast<E*>(Ls + 2 * Rp);
  E* Vb = reinterpret_cast<E*>(Ls + 2 * Rp + KC * D);
  for (int64_t r = 0; r < Rp; ++r) {
    E* dst = Q + (r / RT) * DE * RT + r % RT;
    if (r < R) {
      const T* src = q + ((tok0 + r / g) * H + it.kvh * g + r % g) * D;
      if constexpr (kPairs<T>) {
        uint32_t w[DE];
        std::memcpy(w, src, sizeof(w));
        for (int64_t i = 0; i < DE; ++i) dst[i * RT] = w[i];
      } else {
        for (int64_t d = 0; d < D; ++d) dst[d * RT] = to_f(src[d]);
      }
    } else {
      for (int64_t i = 0; i < DE; ++i) dst[i * RT] = E{0};   // padding rows: computed, never written
    }
    pos[r] = static_cast<int32_t>(p_first + std::min(r, R - 1) / g);
  }
  std::fill(Acc, Acc + Rp * D, 0.f);
  std::fill(M, M + Rp, kNeg);
  std::fill(Ls, Ls + Rp, 0.f);
  const __m512 c = _mm512_set1_ps(scale * kLog2e);

  for (int64_t t0 = 0; t0 < kv_end;) {
    const int64_t off = t0 % bs;
    const int64_t nk = std::min({KC, bs - off, kv_end - t0});
    const int64_t base = table[t0 / bs] * blk_stride + off * tok_stride + it.kvh * D;
    // The next chunk's rows start in another block most of the time: prefetch them now.
    if (t0 + nk < kv_end) {
      const int64_t t1 = t0 + nk, off1 = t1 % bs, n1 = std::min({KC, bs - off1, kv_end - t1});
      const int64_t base1 = table[t1 / bs] * blk_stride + off1 * tok_stride + it.kvh * D;
      for (int64_t t = 0; t < n1; ++t)
        for (int64_t b = 0; b < D * static_cast<int64_t>(sizeof(T)); b += 64) {
          _mm_prefetch(reinterpret_cast<const char*>(kc + base1 + t * tok_stride) + b, _MM_HINT_T0);
          _mm_prefetch(reinterpret_cast<const char*>(vc + base1 + t * tok_stride) + b, _MM_HINT_T0);
        }
    }
    for (int64_t t = 0; t < nk; ++t) {
      const T* k = kc + base + t * tok_stride;
      if constexpr (kPairs<T>) std::memcpy(Kb + t * DE, k, D * sizeof(T));
      else row_to_f32(k, reinterpret_cast<float*>(Kb) + t * D, D);
      if constexpr (!kPairs<T>) row_to_f32(vc + base + t * tok_stride, Vb + t * D, D);
    }
    if constexpr (kPairs<T>) pack_v_pairs<D>(vc, base, tok_stride, nk, Vb);
    if (nk < KC) {   // zeros, not stale rows: a stale NaN times a zero weight would be NaN
      std::fill(Kb + nk * DE, Kb + KC * DE, E{0});
      if constexpr (!kPairs<T>) std::fill(Vb + nk * D, Vb + KC * D, 0.f);
    }
    // Tiles whose rows all sit before t0 see none of this chunk.
    const int64_t tile_lo = std::max<int64_t>(0, t0 - p_first) * g / RT;
    for (int64_t tile = tile_lo; tile < n_tiles; ++tile) {
      __m512 s[KC];
      tile_scores<D>(Q + tile * DE * RT, Kb, s);
      const __m512i pv = _mm512_loadu_si512(pos + tile * RT);
      const __m512 corr = tile_softmax(s, pv, t0, nk, c, M + tile * RT, Ls + tile * RT);
      tile_pv<D>(s, corr, Acc + tile * D * RT, Vb);
    }
    t0 += nk;
  }
  for (int64_t r = 0; r < R; ++r) {
    const float inv = 1.f / Ls[r];
    const float* acc = Acc + (r / RT) * D * RT + r % RT;
    T* o = out + ((tok0 + r / g) * H + it.kvh * g + r % g) * D;
    for (int64_t d = 0; d < D; ++d) o[d] = static_cast<T>(acc[d * RT] * inv);
  }
}

template <typename T, int64_t D>
void varlen_kernel(const T* q, const T* kc, const T* vc, const int64_t* tables, const int64_t* seq_lens,
                   const int64_t* qsl, const int64_t* work, int64_t n_items, T* out, int64_t H, int64_t Hkv,
                   int64_t bs, int64_t max_blocks, float scale, float* workspace, int64_t ws_stride,
                   int64_t n_slots) {
  for_each_item<VarlenState<T, D>>(work, n_items, n_slots, [&](int64_t slot, const Item& it, VarlenState<T, D>& st) {
    varlen_item<T, D>(it, q, kc, vc, tables, seq_lens, qsl, out, H, Hkv, bs, max_blocks, scale,
                      workspace + slot * ws_stride, st);
  });
}

}  // namespace avx512
}  // namespace
#endif  // __AVX512F__
