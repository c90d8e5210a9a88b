// Host stand-in for cuda_fp16.h (emulation test only), via the compiler's _Float16.
#pragma once
struct __half { _Float16 x; };
inline float __half2float(__half h) { return (float)h.x; }
inline __half __float2half_rn(float f) { return {(_Float16)f}; }
