// Shared by the CPU kernels of csrc/cpu (each .cpp is its own translation unit; everything
// here is inline in an anonymous namespace).
#pragma once

#include <torch/extension.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <cstring>
#include <type_traits>

namespace {

inline float to_f(float x) { return x; }
// bf16 -> fp32 is a 16-bit shift of the raw bits.
inline float to_f(c10::BFloat16 x) {
  uint32_t bits = static_cast<uint32_t>(x.x) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}
inline float to_f(c10::Half x) { return static_cast<float>(x); }

// Call run(std::integral_constant<int64_t, D>{}) for the common head sizes (their loops unroll
// into whole vector registers), or run(std::integral_constant<int64_t, 0>{}) for any other D,
// which the kernel then reads at run time.
template <typename F>
inline void with_head_size(int64_t D, F&& run) {
  switch (D) {
    case 64: run(std::integral_constant<int64_t, 64>{}); break;
    case 128: run(std::integral_constant<int64_t, 128>{}); break;
    case 256: run(std::integral_constant<int64_t, 256>{}); break;
    case 32: run(std::integral_constant<int64_t, 32>{}); break;
    default: run(std::integral_constant<int64_t, 0>{});
  }
}

// One query head's softmax numerators in place: s[t] <- exp(s[t] - max s) over L scores.
// Returns 1 / their sum (callers scale the scores or the output by it).
inline float softmax_numerators(float* s, int64_t L) {
  float m = -std::numeric_limits<float>::infinity();
#pragma omp simd reduction(max : m)
  for (int64_t t = 0; t < L; ++t) m = s[t] > m ? s[t] : m;
  float sum = 0.f;
#pragma omp simd reduction(+ : sum)
  for (int64_t t = 0; t < L; ++t) { s[t] = std::exp(s[t] - m); sum += s[t]; }
  return 1.f / sum;
}

}  // namespace
