// The online-softmax update of one score row, shared by the softmax forward and the
// first pass of its backward so both keep the same running max, sum and bits.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>

#include "kernels/kernels.h"

namespace pa {

// s holds m scores of which the first `keep` may be visible; new_max is the larger
// of `max` and their max. Rescales acc (Dv floats) and sum to new_max, turns s into
// exp(s - new_max) (zero past `keep`) and adds its sum to `sum`. A row that sees
// nothing yet (new_max is -inf) only gets s zeroed.
inline void online_softmax_row(const KernelSet& kernels, float* s, std::size_t keep, std::size_t m,
                               float new_max, float& max, float& sum, float* acc, std::size_t Dv) {
  if (new_max == -std::numeric_limits<float>::infinity()) {
    std::fill(s, s + m, 0.0f);
    return;
  }
  if (new_max > max && max != -std::numeric_limits<float>::infinity()) {
    const float correction = std::exp(max - new_max);
    for (std::size_t t = 0; t < Dv; ++t) acc[t] *= correction;
    sum *= correction;
  }
  max = new_max;
  sum += kernels.exp_bias(keep, s, nullptr, -new_max, s);
  std::fill(s + keep, s + m, 0.0f);
}

}  // namespace pa
