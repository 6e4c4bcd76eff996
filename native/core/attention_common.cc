#include "core/attention_common.h"

#include <algorithm>
#include <cmath>
#include <sstream>
#include <vector>

namespace pa {
namespace {

// Squared norm (or max |x| when want_abs_max) of one row, in float with four
// independent partial results so the loop is not one long dependency chain.
float row_statistic(const float* row, std::size_t width, bool want_abs_max) {
  float a0 = 0, a1 = 0, a2 = 0, a3 = 0;
  std::size_t i = 0;
  if (want_abs_max) {
    // Plain comparisons (maxss) rather than fmax calls; NaN is caught by `poison`.
    auto larger = [](float a, float b) { return b > a ? b : a; };
    float poison = 0.0f;  // 0 * x: NaN when any x is NaN or infinite
    for (; i + 4 <= width; i += 4) {
      a0 = larger(a0, std::fabs(row[i]));
      a1 = larger(a1, std::fabs(row[i + 1]));
      a2 = larger(a2, std::fabs(row[i + 2]));
      a3 = larger(a3, std::fabs(row[i + 3]));
      poison += (row[i] * 0.0f + row[i + 1] * 0.0f) + (row[i + 2] * 0.0f + row[i + 3] * 0.0f);
    }
    for (; i < width; ++i) {
      a0 = larger(a0, std::fabs(row[i]));
      poison += row[i] * 0.0f;
    }
    return larger(larger(a0, a1), larger(a2, a3)) + poison;
  }
  for (; i + 4 <= width; i += 4) {
    a0 += row[i] * row[i];
    a1 += row[i + 1] * row[i + 1];
    a2 += row[i + 2] * row[i + 2];
    a3 += row[i + 3] * row[i + 3];
  }
  for (; i < width; ++i) a0 += row[i] * row[i];
  return (a0 + a1) + (a2 + a3);
}

[[noreturn]] void report_non_finite(const char* name, const float* row, std::size_t r,
                                    std::size_t width) {
  for (std::size_t i = 0; i < width; ++i) {
    if (!std::isfinite(row[i])) {
      std::ostringstream message;
      const char* shown = std::isnan(row[i]) ? "NaN" : row[i] > 0 ? "Infinity" : "-Infinity";
      message << name << ": values must be finite, received " << shown << " at flat index "
              << r * width + i;
      throw InputError(message.str());
    }
  }
  // Finite values whose squares overflow float: report them as too large.
  std::ostringstream message;
  message << name << ": values near " << row[0]
          << " are too large (their squares overflow float32)";
  throw InputError(message.str());
}

// The largest row statistic; throws InputError at the first non-finite value.
double scan_rows(const char* name, const float* x, std::size_t rows, std::size_t width,
                 bool want_abs_max, ThreadPool& pool) {
  const std::size_t block = std::max<std::size_t>(1, 16384 / std::max<std::size_t>(width, 1));
  const std::size_t blocks = (rows + block - 1) / block;
  std::vector<float> partial(blocks, 0.0f);
  std::vector<std::size_t> bad_row(blocks, rows);
  pool.parallel_for(blocks, 1, [&](std::size_t begin, std::size_t end, std::size_t) {
    for (std::size_t b = begin; b < end; ++b) {
      float result = 0.0f;
      for (std::size_t r = b * block; r < std::min(rows, (b + 1) * block); ++r) {
        const float value = row_statistic(x + r * width, width, want_abs_max);
        if (!std::isfinite(value)) {
          bad_row[b] = r;
          break;
        }
        result = value > result ? value : result;
      }
      partial[b] = result;
    }
  });
  double result = 0.0;
  for (std::size_t b = 0; b < blocks; ++b) {
    if (bad_row[b] != rows) report_non_finite(name, x + bad_row[b] * width, bad_row[b], width);
    result = std::fmax(result, partial[b]);
  }
  return result;
}

}  // namespace

InputStats scan_inputs(const AttentionDims& dims, const float* q, const float* k, const float* v,
                       ThreadPool& pool) {
  const std::size_t bh = dims.batch * dims.heads;
  InputStats stats;
  stats.max_query_norm2 = scan_rows("query", q, bh * dims.q_len, dims.head_dim, false, pool);
  stats.max_key_norm2 = scan_rows("key", k, bh * dims.k_len, dims.head_dim, false, pool);
  stats.max_abs_value = scan_rows("value", v, bh * dims.k_len, dims.value_dim, true, pool);
  return stats;
}

double scan_abs_max(const char* name, const float* x, std::size_t rows, std::size_t width,
                    ThreadPool& pool) {
  return scan_rows(name, x, rows, width, true, pool);
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
