// Shared by the CPU kernels of csrc/cpu (each .cpp is its own translation unit; everything
// here is inline in an anonymous namespace).
#pragma once

#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <atomic>

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

inline int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

// One work item of the varlen kernel (a row of varlen_plan's output): queries q0..q0+nq-1 of
// sequence seq, the query heads of KV head kvh.
struct Item { int64_t seq, kvh, q0, nq; };

// Runs body(slot, Item, state) for every row of `work` ([n_items][4]) on n_slots threads.
// Dynamic schedule: items come sorted by decreasing cost (varlen_plan), each thread takes the
// next one, so the longest items start first and the short ones fill in (LPT order); a thread
// the OS delays on a shared box does not hold a fixed share of the step. `slot` is unique
// among the running threads (it names their scratch); `state` is one default-constructed
// State per thread, kept across its items.
template <typename State, typename Body>
inline void for_each_item(const int64_t* work, int64_t n_items, int64_t n_slots, Body&& body) {
  std::atomic<int64_t> next{0};
  at::parallel_for(0, n_slots, 1, [&](int64_t begin, int64_t end) {
    (void)end;   // begin is unique per running chunk of the range
    State state;
    for (int64_t i = next.fetch_add(1); i < n_items; i = next.fetch_add(1)) {
      const int64_t* w = work + 4 * i;
      body(begin, Item{w[0], w[1], w[2], w[3]}, state);
    }
  });
}

}  // namespace
