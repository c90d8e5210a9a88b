// AVX-512 varlen attention items (prefill chunks, whole prompts, decodes in one step); included
// by paged_attention_cpu.cpp only where the compiler targets AVX-512F, and used there for fp32
// and bf16 with a compile-time head size that is a multiple of 32. Other dtypes, head sizes and
// builds run the portable varlen_item. Same plan, items and numerics contract: fp32 online
// softmax and accumulation, outputs within the tests' tolerances of the torch reference.
//
// Layout: an item's R = nq * g rows (query-major: row r is query r / g, head r % g) are cut
// into tiles of 16 rows, one row per vector lane, so that every per-row quantity of the online
// softmax (scores of one key, running max, running sum, exp) is one vector op for 16 rows:
// - Q is packed once per item, transposed per tile: fp32 [D][16], or for bf16 with
//   AVX512-BF16 pairs of dims [D/2][16] (one 32-bit lane = q[2i], q[2i+1]).
// - Per chunk of 16 keys (never crossing a cache block) the K rows are copied into a
//   contiguous buffer (bf16 kept as is; fp32, or bf16 without AVX512-BF16, as fp32) and the
//   V rows converted to fp32 once; every tile reads them from L1.
// - Scores of a tile x chunk: 16 accumulators (one per key, lanes = rows), each step one Q
//   vector times a key element broadcast from the buffer: an fp32 FMA per dim, or one
//   vdpbf16ps per pair of dims for bf16 (bf16 products are exact, sums fp32), no horizontal
//   sums and no per-chunk K conversion.
// - Online softmax in fp32 in the log2 domain (scores scaled by scale * log2 e, exp2 by a
//   polynomial): the chunk's row max is 15 vertical max ops, the masked (causal or past the
//   chunk) keys get weight exactly 0.
// - P.V: the output accumulators are kept transposed, [D][16] per tile, rescaled by the
//   max correction once per chunk, and updated as acc[d] += p[t] * v[t][d] with the 16
//   weight vectors in registers and v broadcast from the fp32 V buffer.
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

// Online-softmax update of one tile by one chunk (keys t0 .. t0+nk-1), then acc += P V.
// s: raw scores; pos: each row's query position (a row sees keys <= pos); m, l: the rows'
// running max (log2 domain) and sum; acc [D][16]; vf [16][D] fp32 (rows past nk are zero).
template <int64_t D>
inline void tile_update(__m512* s, __m512i pos, int64_t t0, int64_t nk, __m512 c, float* m, float* l,
                        float* acc, const float* vf) {
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
  constexpr int64_t DG = 8;   // dims per pass: 8 accumulators + 16 weight vectors in registers
  for (int64_t d0 = 0; d0 < D; d0 += DG) {
    __m512 a[DG];
#pragma GCC unroll 8
    for (int64_t i = 0; i < DG; ++i) a[i] = _mm512_mul_ps(_mm512_loadu_ps(acc + (d0 + i) * RT), corr);
#pragma GCC unroll 16
    for (int64_t t = 0; t < KC; ++t)
#pragma GCC unroll 8
      for (int64_t i = 0; i < DG; ++i) a[i] = _mm512_fmadd_ps(s[t], _mm512_set1_ps(vf[t * D + d0 + i]), a[i]);
#pragma GCC unroll 8
    for (int64_t i = 0; i < DG; ++i) _mm512_storeu_ps(acc + (d0 + i) * RT, a[i]);
  }
}

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
  // Scratch: Q [tiles][DE][16], Acc [tiles][D][16], M [Rp], L [Rp], pos [Rp], K [16][DE], V [16][D].
  E* Q = reinterpret_cast<E*>(ws);
  float* Acc = ws + Rp * D;
  float* M = Acc + Rp * D;
  float* Ls = M + Rp;
  int32_t* pos = reinterpret_cast<int32_t*>(Ls + Rp);
  E* Kb = reinterpret_cast<E*>(Ls + 2 * Rp);
  float* Vf = Ls + 2 * Rp + KC * D;
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
      row_to_f32(vc + base + t * tok_stride, Vf + t * D, D);
    }
    if (nk < KC) {   // zeros, not stale rows: a stale NaN times a zero weight would be NaN
      std::fill(Kb + nk * DE, Kb + KC * DE, E{0});
      std::fill(Vf + nk * D, Vf + KC * D, 0.f);
    }
    // Tiles whose rows all sit before t0 see none of this chunk.
    const int64_t tile_lo = std::max<int64_t>(0, t0 - p_first) * g / RT;
    for (int64_t tile = tile_lo; tile < n_tiles; ++tile) {
      __m512 s[KC];
      tile_scores<D>(Q + tile * DE * RT, Kb, s);
      const __m512i pv = _mm512_loadu_si512(pos + tile * RT);
      tile_update<D>(s, pv, t0, nk, c, M + tile * RT, Ls + tile * RT, Acc + tile * D * RT, Vf);
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
