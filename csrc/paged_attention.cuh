// Paged-attention decode kernels (flash KV layout). Counting and design: docs/kernels.md §1.
//
// CTA = (one KV head, up to GP query heads sharing it, one sequence, one split of the context).
// Each K/V byte of a sequence is read from DRAM exactly once per head chunk.
#pragma once

#include <float.h>

#include "common.cuh"
#include "paged_attention.h"

namespace continuum {

constexpr int kDecodeThreads = 128;   // 4 warps: enough loads in flight, cheap block reductions
constexpr int kDecodeUnroll = 4;      // token rows loaded per lane before the first is used

template <typename T, int D>
struct DecodeShape {
  static constexpr int VEC = Vec16<T>::N;                            // elements per 16 B
  static constexpr int TG = (D / VEC) < 32 ? (D / VEC) : 32;         // lanes per token row
  static constexpr int NV = D / (VEC * TG);                          // 16 B vectors per lane
  static constexpr int TPW = 32 / TG;                                // tokens per warp step
  static constexpr int NW = kDecodeThreads / 32;
  static constexpr int STEP = NW * kDecodeUnroll * TPW;              // tokens per CTA step
  static_assert(D % (VEC * TG) == 0, "head size must be a multiple of 16 bytes * lanes");
};

// Load the (up to kDecodeUnroll) token rows this lane reads in one step: raw 16-byte vectors.
// Rows past `end` read nothing and stay zero; `tok` receives each row's token index.
template <typename T, int D>
__device__ __forceinline__ void load_rows(const T* __restrict__ cache, const int64_t* __restrict__ bt,
                                          int base, int end, int warp, int lane, int block_shift,
                                          int64_t tok_stride, uint4 (&raw)[kDecodeUnroll][DecodeShape<T, D>::NV],
                                          int (&tok)[kDecodeUnroll]) {
  using S = DecodeShape<T, D>;
  const int tg_lane = lane % S::TG;
  const int mask = (1 << block_shift) - 1;
#pragma unroll
  for (int u = 0; u < kDecodeUnroll; ++u) {
    tok[u] = base + (warp * kDecodeUnroll + u) * S::TPW + lane / S::TG;
    if (tok[u] < end) {
      const int64_t blk = bt[tok[u] >> block_shift];
      const T* row = cache + (blk * (int64_t)(mask + 1) + (tok[u] & mask)) * tok_stride;
#pragma unroll
      for (int v = 0; v < S::NV; ++v) raw[u][v] = ld16(row + (v * S::TG + tg_lane) * S::VEC);
    } else {
#pragma unroll
      for (int v = 0; v < S::NV; ++v) raw[u][v] = make_uint4(0, 0, 0, 0);
    }
  }
}

template <int GP>
__device__ __forceinline__ void block_reduce(float (&x)[GP], float (*s_red)[GP], bool is_max) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
#pragma unroll
  for (int g = 0; g < GP; ++g) {
#pragma unroll
    for (int o = 16; o > 0; o /= 2) {
      const float y = __shfl_xor_sync(0xffffffffu, x[g], o);
      x[g] = is_max ? fmaxf(x[g], y) : x[g] + y;
    }
  }
  if (lane == 0) {
#pragma unroll
    for (int g = 0; g < GP; ++g) s_red[warp][g] = x[g];
  }
  __syncthreads();
#pragma unroll
  for (int g = 0; g < GP; ++g) {
    float r = s_red[0][g];
#pragma unroll
    for (int w = 1; w < kDecodeThreads / 32; ++w) r = is_max ? fmaxf(r, s_red[w][g]) : r + s_red[w][g];
    x[g] = r;
  }
  __syncthreads();   // s_red may be reused by the next reduction
}

// grid (Hkv * head_chunks, B, num_splits), kDecodeThreads threads,
// dynamic shared memory: max(GP * partition_size, NW * GP * D) floats.
template <typename T, int D, int GP>
__global__ void __launch_bounds__(kDecodeThreads)
paged_decode_kernel(const PagedDecodeParams p) {
  using S = DecodeShape<T, D>;
  extern __shared__ float smem[];
  __shared__ float s_red[S::NW][GP];

  const int b = blockIdx.y, split = blockIdx.z;
  const int kvh = blockIdx.x / p.head_chunks, chunk = blockIdx.x % p.head_chunks;
  const int h0 = kvh * p.group + chunk * GP;
  const int nh = min(GP, p.group - chunk * GP);
  const int L = (int)p.seq_lens[b];
  const int start = split * p.partition_size;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, tg_lane = lane % S::TG;
  const bool direct = p.num_splits == 1;   // write the final output, no reduction pass

  if (start >= L) {
    // Past this sequence's end. Only a length-0 sequence (graph padding) with a single split
    // must still write something: zeros. With several splits the reduction writes them.
    if (L <= 0 && split == 0 && direct) {
      T* out = (T*)p.out + b * p.out_stride_b;
      for (int i = threadIdx.x; i < nh * D; i += kDecodeThreads)
        out[(h0 + i / D) * p.out_stride_h + i % D] = from_float<T>(0.f);
    }
    return;
  }
  const int end = min(start + p.partition_size, L);
  const int n = end - start;
  const int64_t tok_stride = (int64_t)p.num_kv_heads * D;
  const int64_t* bt = p.block_tables + b * p.bt_stride;

  // q of this CTA's heads, pre-scaled by scale*log2(e), in registers.
  float qr[GP][S::NV][S::VEC];
  const T* qb = (const T*)p.q + b * p.q_stride_b;
#pragma unroll
  for (int g = 0; g < GP; ++g) {
#pragma unroll
    for (int v = 0; v < S::NV; ++v) {
      if (g < nh) {
        unpack16<T>(ld16(qb + (h0 + g) * p.q_stride_h + (v * S::TG + tg_lane) * S::VEC), qr[g][v]);
#pragma unroll
        for (int i = 0; i < S::VEC; ++i) qr[g][v][i] *= p.scale_log2;
      } else {
#pragma unroll
        for (int i = 0; i < S::VEC; ++i) qr[g][v][i] = 0.f;
      }
    }
  }

  // Phase 1: logits of every token of the partition -> smem[g * partition_size + j].
  const T* kbase = (const T*)p.k_cache + kvh * D;
  float lmax[GP];
#pragma unroll
  for (int g = 0; g < GP; ++g) lmax[g] = -FLT_MAX;
  for (int base = start; base < end; base += S::STEP) {
    uint4 raw[kDecodeUnroll][S::NV];
    int tok[kDecodeUnroll];
    load_rows<T, D>(kbase, bt, base, end, warp, lane, p.block_shift, tok_stride, raw, tok);
#pragma unroll
    for (int u = 0; u < kDecodeUnroll; ++u) {
      float dot[GP];
#pragma unroll
      for (int g = 0; g < GP; ++g) dot[g] = 0.f;
#pragma unroll
      for (int v = 0; v < S::NV; ++v) {
        float k[S::VEC];
        unpack16<T>(raw[u][v], k);
#pragma unroll
        for (int g = 0; g < GP; ++g)
#pragma unroll
          for (int i = 0; i < S::VEC; ++i) dot[g] = fmaf(qr[g][v][i], k[i], dot[g]);
      }
      // Sum over the TG lanes of this row (all lanes take part: no divergence before here).
#pragma unroll
      for (int g = 0; g < GP; ++g)
#pragma unroll
        for (int o = S::TG / 2; o > 0; o /= 2) dot[g] += __shfl_xor_sync(0xffffffffu, dot[g], o);
      if (tok[u] < end) {
#pragma unroll
        for (int g = 0; g < GP; ++g) {
          lmax[g] = fmaxf(lmax[g], dot[g]);
          if (g < nh && tg_lane == 0) smem[g * p.partition_size + tok[u] - start] = dot[g];
        }
      }
    }
  }
  block_reduce<GP>(lmax, s_red, /*is_max=*/true);   // its barrier also publishes the logits

  // Phase 2: probabilities (unnormalised) and their sums.
  float lsum[GP];
#pragma unroll
  for (int g = 0; g < GP; ++g) {
    lsum[g] = 0.f;
    if (g < nh) {
      for (int j = threadIdx.x; j < n; j += kDecodeThreads) {
        const float e = exp2f(smem[g * p.partition_size + j] - lmax[g]);
        smem[g * p.partition_size + j] = e;
        lsum[g] += e;
      }
    }
  }
  block_reduce<GP>(lsum, s_red, /*is_max=*/false);   // barrier: probabilities visible

  // Phase 3: acc[g][d] = sum_j p[g][j] * V[j][d], lanes owning 16-byte slices of each row.
  const T* vbase = (const T*)p.v_cache + kvh * D;
  float acc[GP][S::NV][S::VEC];
#pragma unroll
  for (int g = 0; g < GP; ++g)
#pragma unroll
    for (int v = 0; v < S::NV; ++v)
#pragma unroll
      for (int i = 0; i < S::VEC; ++i) acc[g][v][i] = 0.f;
  for (int base = start; base < end; base += S::STEP) {
    uint4 raw[kDecodeUnroll][S::NV];
    int tok[kDecodeUnroll];
    load_rows<T, D>(vbase, bt, base, end, warp, lane, p.block_shift, tok_stride, raw, tok);
#pragma unroll
    for (int u = 0; u < kDecodeUnroll; ++u) {
      if (tok[u] >= end) continue;
      float w[GP];
#pragma unroll
      for (int g = 0; g < GP; ++g) w[g] = g < nh ? smem[g * p.partition_size + tok[u] - start] : 0.f;
#pragma unroll
      for (int v = 0; v < S::NV; ++v) {
        float x[S::VEC];
        unpack16<T>(raw[u][v], x);
#pragma unroll
        for (int g = 0; g < GP; ++g)
#pragma unroll
          for (int i = 0; i < S::VEC; ++i) acc[g][v][i] = fmaf(w[g], x[i], acc[g][v][i]);
      }
    }
  }
  // Sum over the warp's token groups (lanes with equal tg_lane), then over warps via smem.
#pragma unroll
  for (int g = 0; g < GP; ++g)
#pragma unroll
    for (int v = 0; v < S::NV; ++v)
#pragma unroll
      for (int i = 0; i < S::VEC; ++i)
#pragma unroll
        for (int o = S::TG; o < 32; o *= 2) acc[g][v][i] += __shfl_xor_sync(0xffffffffu, acc[g][v][i], o);
  __syncthreads();   // every warp is done reading the probabilities: reuse smem
  if (lane < S::TG) {
#pragma unroll
    for (int g = 0; g < GP; ++g)
#pragma unroll
      for (int v = 0; v < S::NV; ++v)
#pragma unroll
        for (int i = 0; i < S::VEC; ++i)
          smem[(warp * GP + g) * D + (v * S::TG + lane) * S::VEC + i] = acc[g][v][i];
  }
  __syncthreads();
  for (int idx = threadIdx.x; idx < nh * D; idx += kDecodeThreads) {
    const int g = idx / D, d = idx % D;
    float r = 0.f;
#pragma unroll
    for (int w = 0; w < S::NW; ++w) r += smem[(w * GP + g) * D + d];
    // lsum[g] >= 1: the max logit contributes exp2(0).
    float inv = 1.f;
#pragma unroll
    for (int gg = 0; gg < GP; ++gg) if (gg == g) inv = 1.f / lsum[gg];   // constant indices only
    r *= inv;
    const int h = h0 + g;
    if (direct) {
      ((T*)p.out)[b * p.out_stride_b + h * p.out_stride_h + d] = from_float<T>(r);
    } else {
      p.tmp_out[(((int64_t)b * p.num_heads + h) * p.num_splits + split) * D + d] = r;
    }
  }
  if (!direct && threadIdx.x < nh) {
    float m = 0.f, s = 0.f;
#pragma unroll
    for (int g = 0; g < GP; ++g) if (g == (int)threadIdx.x) { m = lmax[g]; s = lsum[g]; }
    float* ml = p.tmp_ml + (((int64_t)b * p.num_heads + h0 + threadIdx.x) * p.num_splits + split) * 2;
    ml[0] = m;
    ml[1] = s;
  }
}

// grid (H, B), D threads: combine the splits of one (sequence, head).
template <typename T, int D>
__global__ void __launch_bounds__(256) paged_decode_reduce_kernel(const PagedDecodeParams p) {
  const int h = blockIdx.x, b = blockIdx.y, d = threadIdx.x;
  const int L = (int)p.seq_lens[b];
  // min(): a context longer than the planned max_seq_len must not read other rows' partials
  // (past the end of tmp_ml/tmp_out for the last row); its output is wrong, never a fault.
  const int ns = L <= 0 ? 0 : min((L + p.partition_size - 1) / p.partition_size, p.num_splits);
  T* out = (T*)p.out + b * p.out_stride_b + h * p.out_stride_h;
  const int64_t row = ((int64_t)b * p.num_heads + h) * p.num_splits;
  const float* ml = p.tmp_ml + row * 2;
  const float* po = p.tmp_out + row * D;
  float M = -FLT_MAX;
  for (int s = 0; s < ns; ++s) M = fmaxf(M, ml[2 * s]);
  float num = 0.f, den = 0.f;
  for (int s = 0; s < ns; ++s) {
    const float w = ml[2 * s + 1] * exp2f(ml[2 * s] - M);
    num = fmaf(w, po[s * D + d], num);
    den += w;
  }
  out[d] = from_float<T>(ns == 0 ? 0.f : num / den);
}

}  // namespace continuum
