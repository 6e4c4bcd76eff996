// The double-precision reference of a linear layer, act(x W^T + bias) + residual, and
// its error measure, shared by the fp32 and the quantized linear tests.
#pragma once

#include <cmath>
#include <cstddef>
#include <vector>

#include "core/layer_ops.h"

namespace pa_test {

inline double gelu_ref(double v) { return 0.5 * v * std::erfc(-v / std::sqrt(2.0)); }

inline double act_ref(pa::Activation act, double v) {
  if (act == pa::Activation::kRelu) return v < 0 ? 0.0 : v;
  if (act == pa::Activation::kGelu) return gelu_ref(v);
  return v;
}

// want[r, o] in double from float inputs; scale[r, o] sums the magnitudes of its terms,
// the measure errors are relative to. w is [out, in]; bias and residual may be null.
struct LinearReference {
  std::vector<double> want, scale;

  LinearReference(std::size_t rows, std::size_t in, std::size_t out, const float* x,
                  std::size_t x_stride, const float* w, const float* bias, const float* residual,
                  pa::Activation act)
      : want(rows * out), scale(rows * out) {
    for (std::size_t r = 0; r < rows; ++r) {
      for (std::size_t o = 0; o < out; ++o) {
        double s = bias != nullptr ? bias[o] : 0.0, mag = std::fabs(s);
        for (std::size_t i = 0; i < in; ++i) {
          const double p = static_cast<double>(x[r * x_stride + i]) * w[o * in + i];
          s += p;
          mag += std::fabs(p);
        }
        double v = act_ref(act, s);
        if (residual != nullptr) {
          v += residual[r * out + o];
          mag += std::fabs(residual[r * out + o]);
        }
        want[r * out + o] = v;
        scale[r * out + o] = mag;
      }
    }
  }

  // The largest |y - want| / scale (inf when any is NaN).
  double worst_error(const float* y) const {
    double worst = 0;
    for (std::size_t i = 0; i < want.size(); ++i) {
      const double err = std::fabs(y[i] - want[i]) / (scale[i] + 1e-30);
      if (!(err <= worst)) worst = std::isnan(err) ? INFINITY : err;
    }
    return worst;
  }
};

}  // namespace pa_test
