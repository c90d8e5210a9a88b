// Element types as the torch binding names them (host-only header: no device code).
#pragma once

namespace continuum {

enum class DType : int { kFloat32 = 0, kFloat16 = 1, kBFloat16 = 2 };

}  // namespace continuum
