// AVX-512 helpers shared by decode_avx512.h and varlen_avx512.h; included only where the compiler
// targets AVX-512F.
#pragma once

#if defined(__AVX512F__)
#include <immintrin.h>

#include <cstdint>

#include "cpu_common.h"

namespace {
namespace avx512 {

// 16 consecutive elements as fp32.
inline __m512 load16(const float* p) { return _mm512_loadu_ps(p); }
inline __m512 load16(const c10::BFloat16* p) {
  const __m512i w = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  return _mm512_castsi512_ps(_mm512_slli_epi32(w, 16));  // bf16 -> fp32 is a 16-bit shift
}
inline __m512 load16(const c10::Half* p) {
  return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}

// dst[0..n) = src[0..n) as fp32; n a multiple of 16.
template <typename T>
inline void row_to_f32(const T* src, float* dst, int64_t n) {
  for (int64_t i = 0; i < n; i += 16) _mm512_storeu_ps(dst + i, load16(src + i));
}

// 2^x per lane for x <= 0 (what softmax needs: score minus a running max), relative error
// ~1e-7. x = n + f with n = round(x), f in [-1/2, 1/2]; 2^f by its degree-7 Taylor polynomial
// (truncation < 6e-9), scaled by 2^n with vscalefps. x is clamped at -125, so -inf/-1e30
// inputs give ~2e-38 (a normal number, no denormal slow path), never NaN; callers that need
// an exact 0 (masked keys) zero those lanes themselves.
inline __m512 exp2(__m512 x) {
  x = _mm512_max_ps(x, _mm512_set1_ps(-125.f));
  const __m512 n = _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m512 f = _mm512_sub_ps(x, n);
  // c_k = ln(2)^k / k!
  __m512 p = _mm512_set1_ps(1.5252734e-5f);
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.5403530e-4f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.3333558e-3f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(9.6181291e-3f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(5.5504109e-2f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(2.4022651e-1f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(6.9314718e-1f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.f));
  return _mm512_scalef_ps(p, n);
}

}  // namespace avx512
}  // namespace
#endif  // __AVX512F__
