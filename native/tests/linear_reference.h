// What the fp32 and the quantized linear tests share: the cases they sweep and the
// double-precision reference act(x W^T + bias) + residual with its error measure.
#pragma once

#include <algorithm>
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

enum class Residual { kNone, kSeparate, kAliased };

struct LinearCase {
  std::size_t rows, in, out;
  pa::Activation act;
  bool bias;
  Residual residual;
  std::size_t offset;   // floats past 64-byte alignment of every array
  std::size_t x_extra;  // x_stride = in + x_extra
};

// Case number `index` of a sweep over sizes: every option cycles with a different
// period, so the cases of a sweep mix them.
inline LinearCase cycled_linear_case(std::size_t rows, std::size_t in, std::size_t out,
                                     std::size_t index) {
  const pa::Activation acts[] = {pa::Activation::kNone, pa::Activation::kRelu,
                                 pa::Activation::kGelu};
  return {rows,
          in,
          out,
          acts[index % 3],
          index % 4 != 1,
          static_cast<Residual>((index / 3) % 3),
          (index / 2) % 2,
          (index / 5) % 3};
}

// Several row tiles and column groups, few rows, column tails, and in = 0 (act(bias) +
// residual).
inline const std::vector<LinearCase>& linear_tiling_cases() {
  static const std::vector<LinearCase> cases = {
      {300, 70, 257, pa::Activation::kGelu, true, Residual::kAliased, 1, 3},
      {129, 64, 640, pa::Activation::kRelu, true, Residual::kSeparate, 0, 0},
      {3, 130, 600, pa::Activation::kNone, false, Residual::kNone, 1, 1},
      {1, 512, 65, pa::Activation::kGelu, true, Residual::kAliased, 0, 0},
      {65, 300, 64, pa::Activation::kNone, true, Residual::kSeparate, 1, 5},
      {20, 0, 33, pa::Activation::kRelu, true, Residual::kSeparate, 0, 0},
  };
  return cases;
}

// The residual argument of case t: null, the separate array res, or y after res is
// copied into it (the in-place residual add).
inline const float* linear_residual_arg(const LinearCase& t, const float* res, float* y) {
  if (t.residual == Residual::kSeparate) return res;
  if (t.residual == Residual::kAliased) {
    std::copy(res, res + t.rows * t.out, y);
    return y;
  }
  return nullptr;
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
