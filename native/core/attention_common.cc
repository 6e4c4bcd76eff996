#include "core/attention_common.h"

#include <cmath>
#include <sstream>

namespace pa {
namespace {

double scan_rows(const char* name, const float* x, std::size_t rows, std::size_t width,
                 bool want_abs_max) {
  double result = 0.0;
  for (std::size_t r = 0; r < rows; ++r) {
    const float* row = x + r * width;
    double norm2 = 0.0, abs_max = 0.0;
    for (std::size_t i = 0; i < width; ++i) {
      const double value = row[i];
      norm2 += value * value;
      abs_max = std::fmax(abs_max, std::fabs(value));
    }
    if (!std::isfinite(norm2)) {
      for (std::size_t i = 0; i < width; ++i) {
        if (!std::isfinite(row[i])) {
          std::ostringstream message;
          const char* shown = std::isnan(row[i]) ? "NaN" : row[i] > 0 ? "Infinity" : "-Infinity";
          message << name << ": values must be finite, received " << shown << " at flat index "
                  << r * width + i;
          throw InputError(message.str());
        }
      }
    }
    result = std::fmax(result, want_abs_max ? abs_max : norm2);
  }
  return result;
}

}  // namespace

InputStats scan_inputs(const AttentionDims& dims, const float* q, const float* k, const float* v) {
  const std::size_t bh = dims.batch * dims.heads;
  InputStats stats;
  stats.max_query_norm2 = scan_rows("query", q, bh * dims.q_len, dims.head_dim, false);
  stats.max_key_norm2 = scan_rows("key", k, bh * dims.k_len, dims.head_dim, false);
  stats.max_abs_value = scan_rows("value", v, bh * dims.k_len, dims.value_dim, true);
  return stats;
}

void check_value_magnitude(const AttentionDims& dims, const InputStats& stats) {
  // Outputs are weighted sums of up to k_len value rows; keep them inside float range.
  if (stats.max_abs_value * static_cast<double>(dims.k_len) > 1e36) {
    std::ostringstream message;
    message << "value: magnitudes up to " << stats.max_abs_value << " over " << dims.k_len
            << " keys could overflow float32 sums; scale the values down";
    throw InputError(message.str());
  }
}

}  // namespace pa
