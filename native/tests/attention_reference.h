// Plain double-precision references of the attention formulas, for the tests.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "core/rng.h"

namespace pa_test {

inline std::vector<float> gaussian(std::size_t n, double sigma, std::uint64_t seed) {
  pa::Rng rng(seed);
  std::vector<float> x(n);
  for (auto& v : x) v = static_cast<float>(sigma * rng.normal());
  return x;
}

inline double relative_frobenius(const std::vector<float>& got, const std::vector<double>& want) {
  double num = 0, den = 0;
  for (std::size_t i = 0; i < got.size(); ++i) {
    num += (got[i] - want[i]) * (got[i] - want[i]);
    den += want[i] * want[i];
  }
  return std::sqrt(num / std::max(den, 1e-300));
}

// Output row i (Dv doubles, zero on entry) of attention whose weights are
// exp(log_weight(j)) over the keys the row sees: their weighted mean of the values,
// the largest log-weight subtracted first. A row that sees no key stays zero.
template <class LogWeight>
void weighted_row(std::size_t i, std::size_t Lk, long long offset, bool causal,
                  const std::uint8_t* pad, const float* v, std::size_t Dv, double* out_row,
                  LogWeight log_weight) {
  std::vector<double> logw;
  std::vector<std::size_t> keys;
  for (std::size_t j = 0; j < Lk; ++j) {
    if (pad && !pad[j]) continue;
    if (causal && static_cast<long long>(j) > static_cast<long long>(i) + offset) continue;
    logw.push_back(log_weight(j));
    keys.push_back(j);
  }
  if (keys.empty()) return;
  const double top = *std::max_element(logw.begin(), logw.end());
  double total = 0;
  for (std::size_t t = 0; t < keys.size(); ++t) {
    const double weight = std::exp(logw[t] - top);
    total += weight;
    for (std::size_t e = 0; e < Dv; ++e) out_row[e] += weight * v[keys[t] * Dv + e];
  }
  for (std::size_t e = 0; e < Dv; ++e) out_row[e] /= total;
}

// One (batch, head) of softmax-kernel FAVOR (positive features, epsilon 0) with a
// given W (m x d): out_i = sum_j phi(q_i).phi(k_j) v_j / sum_j phi(q_i).phi(k_j),
// evaluated with log-sum-exp so it is exact for any input scale.
inline std::vector<double> favor_reference(const float* q, const float* k, const float* v,
                                           std::size_t Lq, std::size_t Lk, std::size_t d,
                                           std::size_t Dv, const float* w, std::size_t m,
                                           bool causal, const std::uint8_t* pad) {
  const double c = std::pow(static_cast<double>(d), -0.25);
  auto logf = [&](const float* x) {
    std::vector<double> z(m);
    double n2 = 0;
    for (std::size_t i = 0; i < d; ++i) n2 += (c * x[i]) * (c * x[i]);
    for (std::size_t f = 0; f < m; ++f) {
      double u = 0;
      for (std::size_t i = 0; i < d; ++i) u += w[f * d + i] * c * x[i];
      z[f] = u - n2 / 2;
    }
    return z;
  };
  std::vector<std::vector<double>> zk(Lk);
  for (std::size_t j = 0; j < Lk; ++j) zk[j] = logf(k + j * d);
  std::vector<double> out(Lq * Dv, 0.0);
  const long long offset = static_cast<long long>(Lk) - static_cast<long long>(Lq);
  for (std::size_t i = 0; i < Lq; ++i) {
    const auto zq = logf(q + i * d);
    // log of phi(q_i).phi(k_j)
    weighted_row(i, Lk, offset, causal, pad, v, Dv, out.data() + i * Dv, [&](std::size_t j) {
      double mx = -std::numeric_limits<double>::infinity();
      for (std::size_t f = 0; f < m; ++f) mx = std::max(mx, zq[f] + zk[j][f]);
      double s = 0;
      for (std::size_t f = 0; f < m; ++f) s += std::exp(zq[f] + zk[j][f] - mx);
      return mx + std::log(s);
    });
  }
  return out;
}

inline std::vector<double> softmax_reference(const float* q, const float* k, const float* v,
                                             std::size_t Lq, std::size_t Lk, std::size_t d,
                                             std::size_t Dv, double scale, bool causal,
                                             const std::uint8_t* pad) {
  std::vector<double> out(Lq * Dv, 0.0);
  const long long offset = static_cast<long long>(Lk) - static_cast<long long>(Lq);
  for (std::size_t i = 0; i < Lq; ++i) {
    weighted_row(i, Lk, offset, causal, pad, v, Dv, out.data() + i * Dv, [&](std::size_t j) {
      double dot = 0;
      for (std::size_t t = 0; t < d; ++t) dot += static_cast<double>(q[i * d + t]) * k[j * d + t];
      return dot * scale;
    });
  }
  return out;
}

}  // namespace pa_test
