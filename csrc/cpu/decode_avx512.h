// AVX-512 decode attention for one (sequence, KV head) task; included by paged_attention_cpu.cpp
// only where the compiler targets AVX-512F (-march=native on such a CPU). Other machines, and
// head sizes that are not a compile-time multiple of 32, run the portable decode_kernel.
//
// Per task the context is walked in chunks of 16 keys (a chunk may span cache blocks: the task's
// key offsets are listed once, no division per key), prefetching two chunks ahead.
// - Scores: for each query head of the GQA group, 16 dot-product partial vectors (one per key,
//   16 lanes over D) are reduced by one transposed sum (sum16) into one vector of 16 scores,
//   instead of 16 horizontal sums. The chunk's K rows stay in L1 across the group's heads, so
//   each K row is read from memory once per task. bf16 uses vdpbf16ps where the CPU has
//   AVX512-BF16 (q and k are bf16 already; products are exact and accumulate in fp32).
// - Softmax: exact, per head over the whole context (max, exp, sum); 1/sum is applied to the
//   output row, not to each weight.
// - V: per chunk, each V row slice is converted to fp32 once and FMA'd into the accumulators of
//   up to 4 heads x 64 dims held in registers.
#pragma once

#if defined(__AVX512F__)
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include <ATen/Parallel.h>

#include "avx512_common.h"
#include "cpu_common.h"

namespace {
namespace avx512 {

constexpr int64_t KC = 16;  // keys per chunk: one vector of fp32 scores

// Lane t of the result = sum of the 16 lanes of v[t]. Four levels of shuffle + add (15 adds in
// all) instead of 16 horizontal sums.
inline __m512 sum16(const __m512* v) {
  __m512 a[8], b[4];
  for (int i = 0; i < 8; ++i)  // per 128-bit lane: [x0+x2, y0+y2, x1+x3, y1+y3]
    a[i] = _mm512_add_ps(_mm512_unpacklo_ps(v[2 * i], v[2 * i + 1]), _mm512_unpackhi_ps(v[2 * i], v[2 * i + 1]));
  for (int i = 0; i < 4; ++i) {  // per 128-bit lane: partial sums of v[4i..4i+3]
    const __m512d x = _mm512_castps_pd(a[2 * i]), y = _mm512_castps_pd(a[2 * i + 1]);
    b[i] = _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(x, y)), _mm512_castpd_ps(_mm512_unpackhi_pd(x, y)));
  }
  // Fold the four 128-bit lanes: c0 = [b0 l0+l1, b0 l2+l3, b1 l0+l1, b1 l2+l3], likewise c1.
  const __m512 c0 = _mm512_add_ps(_mm512_shuffle_f32x4(b[0], b[1], 0x88), _mm512_shuffle_f32x4(b[0], b[1], 0xDD));
  const __m512 c1 = _mm512_add_ps(_mm512_shuffle_f32x4(b[2], b[3], 0x88), _mm512_shuffle_f32x4(b[2], b[3], 0xDD));
  return _mm512_add_ps(_mm512_shuffle_f32x4(c0, c1, 0x88), _mm512_shuffle_f32x4(c0, c1, 0xDD));
}

// One query head's q row, held in registers, and its 16-lane partial dot with a key row.
template <typename T, int64_t D>
struct QRow {
  __m512 v[D / 16];
  explicit QRow(const T* q) {
    for (int64_t c = 0; c < D / 16; ++c) v[c] = load16(q + 16 * c);
  }
  __m512 dot(const T* k) const {
    __m512 s = _mm512_mul_ps(v[0], load16(k));
    for (int64_t c = 1; c < D / 16; ++c) s = _mm512_fmadd_ps(v[c], load16(k + 16 * c), s);
    return s;
  }
};

#if defined(__AVX512BF16__)
template <int64_t D>
struct QRow<c10::BFloat16, D> {
  __m512bh v[D / 32];
  explicit QRow(const c10::BFloat16* q) {
    for (int64_t c = 0; c < D / 32; ++c) v[c] = (__m512bh)_mm512_loadu_si512(q + 32 * c);
  }
  __m512 dot(const c10::BFloat16* k) const {
    __m512 s = _mm512_setzero_ps();
    for (int64_t c = 0; c < D / 32; ++c) s = _mm512_dpbf16_ps(s, v[c], (__m512bh)_mm512_loadu_si512(k + 32 * c));
    return s;
  }
};
#endif

// Element offsets (into k_cache / v_cache) of one task's keys 0..L-1: a running (table index,
// offset in block) walk, no division per key. Both passes read them, and they let each pass
// prefetch keys ahead across cache-block boundaries, where the hardware prefetcher loses the stream.
inline void key_offsets(const int64_t* table, int64_t L, int64_t bs, int64_t blk_stride, int64_t tok_stride,
                        int64_t head_off, int64_t* out) {
  int64_t t = 0;
  for (int64_t blk = 0; t < L; ++blk) {
    const int64_t base = table[blk] * blk_stride + head_off;
    for (int64_t o = 0; o < bs && t < L; ++o, ++t) out[t] = base + o * tok_stride;
  }
}

constexpr int64_t PF = 2 * KC;  // prefetch distance in keys

// Prefetch the rows of keys t .. t+KC-1 (those below L).
template <typename T, int64_t D, int HINT = _MM_HINT_T0>
inline void prefetch_rows(const T* cache, const int64_t* offs, int64_t t, int64_t L) {
  const int64_t n = std::min(KC, L - t);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t byte = 0; byte < D * static_cast<int64_t>(sizeof(T)); byte += 64)
      _mm_prefetch(reinterpret_cast<const char*>(cache + offs[t + i]) + byte, static_cast<_mm_hint>(HINT));
}

// acc[j][d0 .. d0+NV*16) += sum_t p[j][t] * v_t[d0 ..] for GT heads of one chunk; the
// accumulators live in registers for the chunk.
template <typename T, int64_t GT, int64_t NV>
inline void accumulate_v(const T* vc, const int64_t* offs, int64_t nk, const float* p, int64_t p_stride,
                         float* acc, int64_t acc_stride, int64_t d0) {
  __m512 a[GT][NV];
  for (int64_t j = 0; j < GT; ++j)
    for (int64_t c = 0; c < NV; ++c) a[j][c] = _mm512_loadu_ps(acc + j * acc_stride + d0 + 16 * c);
  for (int64_t t = 0; t < nk; ++t) {
    const T* v = vc + offs[t] + d0;
    __m512 x[NV];
    for (int64_t c = 0; c < NV; ++c) x[c] = load16(v + 16 * c);
    for (int64_t j = 0; j < GT; ++j) {
      const __m512 pj = _mm512_set1_ps(p[j * p_stride + t]);
      for (int64_t c = 0; c < NV; ++c) a[j][c] = _mm512_fmadd_ps(pj, x[c], a[j][c]);
    }
  }
  for (int64_t j = 0; j < GT; ++j)
    for (int64_t c = 0; c < NV; ++c) _mm512_storeu_ps(acc + j * acc_stride + d0 + 16 * c, a[j][c]);
}

template <typename T, int64_t GT, int64_t D>
inline void accumulate_v_dims(const T* vc, const int64_t* offs, int64_t nk, const float* p, int64_t p_stride,
                              float* acc, int64_t acc_stride) {
  constexpr int64_t NV = D < 64 ? D / 16 : 4;   // 64 dims (4 vectors) per pass
  for (int64_t d0 = 0; d0 < D; d0 += 16 * NV)
    accumulate_v<T, GT, NV>(vc, offs, nk, p, p_stride, acc, acc_stride, d0);
}

// Per-thread scratch of decode_task (grown as needed, reused across tasks).
template <typename T, int64_t D>
struct DecodeScratch {
  std::vector<float> scores, acc, inv;
  std::vector<QRow<T, D>> qrows;
  std::vector<int64_t> offsets;
};

// One (sequence, KV head) decode task: the g query rows q[j * D ..] (the GQA group of KV head kh,
// contiguous) attend to keys 0..L-1 of the sequence whose block-table row is `table`; writes
// out[j * D ..]. D: a compile-time multiple of 32. Also serves the varlen kernel's one-query items.
template <typename T, int64_t D>
void decode_task(const T* q, const T* kc, const T* vc, const int64_t* table, int64_t L, int64_t g,
                 int64_t kh, int64_t Hkv, int64_t bs, float scale, T* out, DecodeScratch<T, D>& sc) {
  static_assert(D % 32 == 0, "the AVX-512 decode kernel needs a head size that is a multiple of 32");
  const int64_t tok_stride = Hkv * D, blk_stride = bs * tok_stride;
  const __m512 vscale = _mm512_set1_ps(scale);
  const __m512 ninf = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
  const int64_t Lp = (L + KC - 1) / KC * KC;   // scores row stride; padding is -inf
  sc.qrows.clear();
  for (int64_t j = 0; j < g; ++j) sc.qrows.emplace_back(q + j * D);
  sc.scores.resize(g * Lp);
  sc.offsets.resize(L);
  key_offsets(table, L, bs, blk_stride, tok_stride, kh * D, sc.offsets.data());
  // Pass 1: scores[j][t] = q_j . k_t * scale, 16 keys at a time.
  for (int64_t t0 = 0; t0 < L; t0 += KC) {
    const int64_t nk = std::min(KC, L - t0);
    const int64_t* offs = sc.offsets.data() + t0;
    if (t0 + PF < L) prefetch_rows<T, D>(kc, sc.offsets.data(), t0 + PF, L);
    const __mmask16 valid = static_cast<__mmask16>((1u << nk) - 1u);
    for (int64_t j = 0; j < g; ++j) {
      __m512 part[KC];
      for (int64_t t = 0; t < KC; ++t)   // keys past the context are never read
        part[t] = t < nk ? sc.qrows[j].dot(kc + offs[t]) : _mm512_setzero_ps();
      const __m512 s = _mm512_mul_ps(sum16(part), vscale);
      _mm512_storeu_ps(sc.scores.data() + j * Lp + t0, _mm512_mask_blend_ps(valid, ninf, s));
    }
  }
  // Softmax numerators per head (exact: max-subtracted over the whole context); 1/sum is
  // applied to the output.
  sc.inv.resize(g);
  for (int64_t j = 0; j < g; ++j) sc.inv[j] = softmax_numerators(sc.scores.data() + j * Lp, L);
  // Pass 2: acc[j] = sum_t p[j][t] * v_t, heads in tiles of up to 4.
  sc.acc.assign(g * D, 0.f);
  for (int64_t t0 = 0; t0 < L; t0 += KC) {
    const int64_t nk = std::min(KC, L - t0);
    const int64_t* offs = sc.offsets.data() + t0;
    if (t0 + PF < L) prefetch_rows<T, D>(vc, sc.offsets.data(), t0 + PF, L);
    for (int64_t j0 = 0; j0 < g; j0 += 4) {
      const float* p = sc.scores.data() + j0 * Lp + t0;
      float* a = sc.acc.data() + j0 * D;
      switch (std::min<int64_t>(4, g - j0)) {
        case 4: accumulate_v_dims<T, 4, D>(vc, offs, nk, p, Lp, a, D); break;
        case 3: accumulate_v_dims<T, 3, D>(vc, offs, nk, p, Lp, a, D); break;
        case 2: accumulate_v_dims<T, 2, D>(vc, offs, nk, p, Lp, a, D); break;
        default: accumulate_v_dims<T, 1, D>(vc, offs, nk, p, Lp, a, D);
      }
    }
  }
  for (int64_t j = 0; j < g; ++j) {
    const float* aj = sc.acc.data() + j * D;
    for (int64_t d = 0; d < D; ++d) out[j * D + d] = static_cast<T>(aj[d] * sc.inv[j]);
  }
}

// Pure-decode step: one task per (sequence, KV head). D: a compile-time multiple of 32.
template <typename T, int64_t D>
void decode_kernel(const T* q, const T* kc, const T* vc, const int64_t* tables, const int64_t* seq_lens, T* out,
                   int64_t B, int64_t H, int64_t Hkv, int64_t bs, int64_t max_blocks, float scale) {
  const int64_t g = H / Hkv;
  at::parallel_for(0, B * Hkv, 1, [&](int64_t begin, int64_t end) {
    DecodeScratch<T, D> sc;
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / Hkv, kh = task % Hkv;
      const int64_t off = (b * H + kh * g) * D;
      decode_task<T, D>(q + off, kc, vc, tables + b * max_blocks, seq_lens[b], g, kh, Hkv, bs, scale, out + off, sc);
    }
  });
}

}  // namespace avx512
}  // namespace
#endif  // __AVX512F__
