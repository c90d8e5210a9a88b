// Varlen paged attention: every sequence of a step (prefill chunks over cached prefixes, whole
// prompts, decodes) in one launch, K/V read in place through the block table. Counting and
// design: docs/kernels.md §2.
//
// CTA = (one query tile of one item, one KV head). Its M rows are (query token, query head of
// the KV head) pairs, row r = token r / G, head r % G, so the G heads sharing a KV head share
// every K/V byte the CTA reads (no repeat for GQA). Keys are walked in tiles of BK = 32 rows
// staged in shared memory as fp32; scores and the output accumulate in fp32 with a flash-style
// online softmax in the log2 domain. Plain CUDA cores (no MMA), 128 threads.
#pragma once

#include <float.h>
#include <math.h>

#include "common.cuh"
#include "paged_attention_varlen.h"

namespace continuum {

constexpr int kVarlenThreads = 128;   // 16 row groups x 8 lanes

template <typename T, int D>
struct VarlenShape {
  static constexpr int M = varlen_rows_per_cta(D);   // query rows per CTA
  static constexpr int BK = 32;                      // keys per KV tile
  static constexpr int RPT = M / 16;                 // rows per thread: ty + 16 * i
  static constexpr int KPT = BK / 8;                 // keys per thread (scores): tx + 8 * j
  static constexpr int DC = D / 32;                  // 4-float dim chunks per thread (P.V): tx + 8 * j
  static constexpr int SD = D + 4;                   // padded smem row (floats): conflict-free float4 reads
  static constexpr int SP = BK + 1;
  static constexpr int VEC = Vec16<T>::N;            // elements per 16-byte load
  static constexpr int VPR = D / VEC;                // 16-byte vectors per head row
  static constexpr int SMEM_FLOATS = M * SD + 2 * BK * SD + M * SP;
  static_assert(D % 32 == 0 && M % 16 == 0, "head size must be a multiple of 32");
};

// Stage one 16-byte vector (VEC elements) into shared memory as floats, times `mul`.
template <typename T>
__device__ __forceinline__ void stage16(float* dst, const uint4& raw, float mul) {
  float f[Vec16<T>::N];
  unpack16<T>(raw, f);
#pragma unroll
  for (int i = 0; i < Vec16<T>::N; i += 4)
    *reinterpret_cast<float4*>(dst + i) = make_float4(f[i] * mul, f[i + 1] * mul, f[i + 2] * mul, f[i + 3] * mul);
}

// grid (num_tiles, Hkv), kVarlenThreads threads, dynamic shared memory SMEM_FLOATS floats.
// Min 3 CTAs per SM: caps registers at 170 (ptxas otherwise squeezed D=64 into 128 with
// spills); the shared memory (42 / 74 / 102 KiB for D = 64 / 128 / 256) allows 5 / 2 / 2 CTAs.
template <typename T, int D>
__global__ void __launch_bounds__(kVarlenThreads, 3)
paged_varlen_kernel(const PagedVarlenParams p) {
  using S = VarlenShape<T, D>;
  extern __shared__ float smem[];
  float* sQ = smem;                  // [M][SD]  q * scale * log2(e)
  float* sK = sQ + S::M * S::SD;     // [BK][SD]
  float* sV = sK + S::BK * S::SD;    // [BK][SD]
  float* sP = sV + S::BK * S::SD;    // [M][SP]  unnormalised probabilities of the tile

  // Which item and which of its query tiles (see paged_varlen_plan): the largest i with
  // qsl[i] / tile + i <= blockIdx.x.
  const int bx = blockIdx.x, kvh = blockIdx.y, BQ = p.tile_tokens, G = p.group;
  int lo = 0, hi = p.num_seqs - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if ((int)(p.query_start_loc[mid] / BQ) + mid <= bx) lo = mid; else hi = mid - 1;
  }
  const int item = lo;
  const int64_t qs = p.query_start_loc[item];
  const int ql = (int)(p.query_start_loc[item + 1] - qs);
  const int q0 = (bx - (int)(qs / BQ) - item) * BQ;
  if (q0 >= ql) return;                        // a spare slot: the whole CTA leaves together
  const int nq = min(BQ, ql - q0);             // query tokens of this tile
  const int rows = nq * G;
  const int ctx0 = (int)p.seq_lens[item] - ql;  // position of the item's first query
  // Keys this tile sees: 0 .. its last query's position (never past the block table).
  const int kv_end = min(ctx0 + q0 + nq, p.max_blocks << p.block_shift);
  const int64_t* bt = p.block_tables + (int64_t)item * p.bt_stride;
  const int tid = threadIdx.x, ty = tid / 8, tx = tid % 8;
  // Row slots i < ni of this warp hold real rows (rows are a prefix 0..rows-1 and warp w owns
  // rows 4w..4w+3 + 16i): a warp-uniform bound, so a decode item (G rows) or a short last tile
  // computes only its real rows instead of all M (16x less work for a decode at G = 4).
  const int ni = max(0, min(S::RPT, (rows - 4 * (tid / 32) + 15) / 16));

  // Q rows of the tile -> smem, pre-scaled; rows past `rows` are zero (and fully masked).
  const T* qbase = (const T*)p.q + (qs + q0) * p.q_stride_t + (int64_t)kvh * G * p.q_stride_h;
  for (int idx = tid; idx < S::M * S::VPR; idx += kVarlenThreads) {
    const int r = idx / S::VPR, v = idx % S::VPR;
    float* dst = sQ + r * S::SD + v * S::VEC;
    if (r < rows) {
      stage16<T>(dst, ld16(qbase + (r / G) * p.q_stride_t + (r % G) * p.q_stride_h + v * S::VEC), p.scale_log2);
    } else {
#pragma unroll
      for (int i = 0; i < S::VEC; ++i) dst[i] = 0.f;
    }
  }

  int pos[S::RPT];                             // each row's position; -1: no row (fully masked)
  float m[S::RPT], l[S::RPT];                  // running max (log2 domain), this lane's partial sum
  float acc[S::RPT][S::DC][4];
#pragma unroll
  for (int i = 0; i < S::RPT; ++i) {
    const int r = ty + 16 * i;
    pos[i] = r < rows ? ctx0 + q0 + r / G : -1;
    m[i] = -INFINITY;
    l[i] = 0.f;
#pragma unroll
    for (int j = 0; j < S::DC; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[i][j][e] = 0.f;
  }

  const int64_t tok_stride = (int64_t)p.num_kv_heads * D;
  const T* kc = (const T*)p.k_cache + kvh * D;
  const T* vc = (const T*)p.v_cache + kvh * D;
  const int bmask = p.block_size - 1;
  for (int kt = 0; kt < kv_end; kt += S::BK) {
    __syncthreads();                           // the previous tile's K/V/P readers are done
    // K/V tile -> smem as fp32: 16-byte loads, a key row's vectors on consecutive lanes.
    for (int idx = tid; idx < S::BK * S::VPR; idx += kVarlenThreads) {
      const int key = idx / S::VPR, v = idx % S::VPR, tok = kt + key;
      uint4 rk = make_uint4(0, 0, 0, 0), rv = make_uint4(0, 0, 0, 0);
      if (tok < kv_end) {
        const int64_t slot = bt[tok >> p.block_shift] * (int64_t)p.block_size + (tok & bmask);
        rk = ld16(kc + slot * tok_stride + v * S::VEC);
        rv = ld16(vc + slot * tok_stride + v * S::VEC);
      }
      stage16<T>(sK + key * S::SD + v * S::VEC, rk, 1.f);
      stage16<T>(sV + key * S::SD + v * S::VEC, rv, 1.f);
    }
    __syncthreads();

    // Scores of this lane's RPT rows x KPT keys (float4 smem reads, fp32 FMAs).
    float s[S::RPT][S::KPT];
#pragma unroll
    for (int i = 0; i < S::RPT; ++i)
#pragma unroll
      for (int j = 0; j < S::KPT; ++j) s[i][j] = 0.f;
#pragma unroll 2
    for (int d = 0; d < D && ni > 0; d += 4) {
      float4 qv[S::RPT], kv[S::KPT];
#pragma unroll
      for (int j = 0; j < S::KPT; ++j) kv[j] = *reinterpret_cast<const float4*>(sK + (tx + 8 * j) * S::SD + d);
#pragma unroll
      for (int i = 0; i < S::RPT; ++i) {
        if (i >= ni) break;
        qv[i] = *reinterpret_cast<const float4*>(sQ + (ty + 16 * i) * S::SD + d);
#pragma unroll
        for (int j = 0; j < S::KPT; ++j) {
          s[i][j] = fmaf(qv[i].x, kv[j].x, s[i][j]);
          s[i][j] = fmaf(qv[i].y, kv[j].y, s[i][j]);
          s[i][j] = fmaf(qv[i].z, kv[j].z, s[i][j]);
          s[i][j] = fmaf(qv[i].w, kv[j].w, s[i][j]);
        }
      }
    }

    // Online softmax: mask (causal, past the tile), row max over the 8 lanes of the row group
    // (xor 1, 2, 4 stay inside the aligned group of 8), rescale factor, probabilities.
    float alpha[S::RPT];
#pragma unroll
    for (int i = 0; i < S::RPT; ++i) {
      alpha[i] = 1.f;
      if (i >= ni) continue;                   // warp-uniform: the shuffles below stay full-warp
      float mx = -INFINITY;
#pragma unroll
      for (int j = 0; j < S::KPT; ++j) {
        const int key = kt + tx + 8 * j;
        if (key > pos[i]) s[i][j] = -INFINITY;   // pos < kv_end: also masks keys past the tile
        mx = fmaxf(mx, s[i][j]);
      }
#pragma unroll
      for (int o = 1; o < 8; o *= 2) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
      const float m_new = fmaxf(m[i], mx);
      // m_new == -inf: nothing visible to this row yet (or no row): keep everything at 0.
      alpha[i] = m_new == -INFINITY ? 1.f : exp2f(m[i] - m_new);
      float sum = 0.f;
#pragma unroll
      for (int j = 0; j < S::KPT; ++j) {
        const float pr = s[i][j] == -INFINITY ? 0.f : exp2f(s[i][j] - m_new);
        sum += pr;
        sP[(ty + 16 * i) * S::SP + tx + 8 * j] = pr;
      }
      l[i] = l[i] * alpha[i] + sum;
      m[i] = m_new;
    }
    __syncthreads();                           // P of every row visible

    // acc = acc * alpha + P V over the tile's keys; this lane owns dims 4 * (tx + 8 j) .. + 3.
#pragma unroll
    for (int i = 0; i < S::RPT; ++i)
#pragma unroll
      for (int j = 0; j < S::DC; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) acc[i][j][e] *= alpha[i];
    const int nk = ni > 0 ? min(S::BK, kv_end - kt) : 0;
#pragma unroll 4
    for (int k = 0; k < nk; ++k) {
      float w[S::RPT];
#pragma unroll
      for (int i = 0; i < S::RPT; ++i) w[i] = i < ni ? sP[(ty + 16 * i) * S::SP + k] : 0.f;
#pragma unroll
      for (int j = 0; j < S::DC; ++j) {
        const float4 vv = *reinterpret_cast<const float4*>(sV + k * S::SD + 4 * (tx + 8 * j));
#pragma unroll
        for (int i = 0; i < S::RPT; ++i) {
          if (i >= ni) break;
          acc[i][j][0] = fmaf(w[i], vv.x, acc[i][j][0]);
          acc[i][j][1] = fmaf(w[i], vv.y, acc[i][j][1]);
          acc[i][j][2] = fmaf(w[i], vv.z, acc[i][j][2]);
          acc[i][j][3] = fmaf(w[i], vv.w, acc[i][j][3]);
        }
      }
    }
  }

  // Row sums over the row group's 8 lanes, then normalise and write the valid rows.
#pragma unroll
  for (int i = 0; i < S::RPT; ++i) {
    if (i >= ni) continue;                     // warp-uniform, as above
#pragma unroll
    for (int o = 1; o < 8; o *= 2) l[i] += __shfl_xor_sync(0xffffffffu, l[i], o);
    const int r = ty + 16 * i;
    if (r >= rows) continue;
    // l >= 1 for a real row: its max key contributes exp2(0).
    const float inv = l[i] > 0.f ? 1.f / l[i] : 0.f;
    T* o = (T*)p.out + (qs + q0 + r / G) * p.out_stride_t + (int64_t)(kvh * G + r % G) * p.out_stride_h;
#pragma unroll
    for (int j = 0; j < S::DC; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) o[4 * (tx + 8 * j) + e] = from_float<T>(acc[i][j][e] * inv);
  }
}

}  // namespace continuum
