// The adaptive-feature helpers: eigendecomposition, the FAVOR++ optimum, the
// projection of a = 0 (FAVOR+), parameter checks and the causal rule.
#include <cmath>
#include <random>
#include <vector>

#include "core/adaptive_features.h"
#include "core/favor.h"
#include "kernels/dispatch.h"
#include "test_harness.h"

namespace {

// max |A V - V diag(values)| and max |V^T V - I| for a symmetric A.
void check_eigen(std::size_t d, const std::vector<double>& A) {
  std::vector<double> work = A, values(d), V(d * d);
  pa::symmetric_eigen(d, work.data(), values.data(), V.data());
  double scale = 1e-300, residual = 0.0, orth = 0.0;
  for (double x : A) scale = std::max(scale, std::fabs(x));
  for (std::size_t i = 0; i < d; ++i) {
    for (std::size_t k = 0; k < d; ++k) {
      double av = 0.0, vv = 0.0;
      for (std::size_t j = 0; j < d; ++j) {
        av += A[i * d + j] * V[j * d + k];
        vv += V[j * d + i] * V[j * d + k];
      }
      residual = std::max(residual, std::fabs(av - values[k] * V[i * d + k]));
      orth = std::max(orth, std::fabs(vv - (i == k ? 1.0 : 0.0)));
    }
  }
  CHECK(residual <= 1e-12 * scale * static_cast<double>(d));
  CHECK(orth <= 1e-12 * static_cast<double>(d));
}

}  // namespace

TEST("favor/adaptive: symmetric eigendecomposition, random, low-rank and repeated eigenvalues") {
  std::mt19937_64 rng(5);
  std::normal_distribution<double> normal;
  for (std::size_t d : {1, 2, 3, 17, 64, 128}) {
    std::vector<double> X(d * d), A(d * d), low(d * d, 0.0), eye(d * d, 0.0);
    for (double& x : X) x = normal(rng);
    for (std::size_t i = 0; i < d; ++i) {
      eye[i * d + i] = 2.0;
      for (std::size_t j = 0; j < d; ++j) {
        A[i * d + j] = X[i * d + j] + X[j * d + i];
        low[i * d + j] = X[i] * X[j];  // rank one: d - 1 zero eigenvalues
      }
    }
    check_eigen(d, A);
    check_eigen(d, low);
    check_eigen(d, eye);
  }
}

TEST("favor/adaptive: A* is 0 at rho = 0 and a stationary point of the variance") {
  CHECK(pa::optimal_coefficient(0.0, 64.0) == 0.0);
  for (double d : {1.0, 16.0, 64.0}) {
    for (double rho : {0.1, 1.0, 10.0, 100.0}) {
      const double a = pa::optimal_coefficient(rho, d);
      CHECK(a < 0.0);
      // log of the second moment: d log(1 - 4A) - d/2 log(1 - 8A) + rho / (1 - 8A).
      auto f = [&](double x) {
        return d * std::log1p(-4 * x) - 0.5 * d * std::log1p(-8 * x) + rho / (1 - 8 * x);
      };
      const double h = 1e-6 * std::max(1.0, std::fabs(a));
      CHECK(f(a) <= f(a + h) && f(a) <= f(a - h));
    }
  }
}

TEST("favor/adaptive: a = 0 packs the softmax projection bit for bit; bad parameters are refused") {
  const std::size_t m = 12, d = 8;
  std::mt19937_64 rng(9);
  std::normal_distribution<float> normal;
  std::vector<float> w(m * d), packed(d * m), ours(d * m), bias(m);
  for (float& x : w) x = normal(rng);
  pa::pack_projection(w.data(), m, d, packed.data());
  pa::AdaptiveParams params;
  params.a.assign(d, 0.0);
  for (int dense = 0; dense < 2; ++dense) {
    params.basis.clear();
    if (dense) {
      params.basis.assign(d * d, 0.0);
      for (std::size_t i = 0; i < d; ++i) params.basis[i * d + i] = 1.0;
    }
    const double log_d = pa::adaptive_projection(w.data(), m, d, params, pa::kScalarKernels,
                                                 ours.data(), bias.data());
    CHECK(log_d == 0.0);
    CHECK(ours == packed);
    for (float b : bias) CHECK(b == 0.0f);
  }
  params.a[3] = 0.125;
  bool threw = false;
  try {
    pa::check_params(params, d);
  } catch (const pa::InputError&) {
    threw = true;
  }
  CHECK(threw);
}

TEST("favor/adaptive: causal attention without fixed parameters is an InputError") {
  const std::size_t m = 8, d = 4, L = 5;
  std::vector<float> w(m * d, 0.5f), q(L * d, 0.1f), k(L * d, 0.2f), v(L, 1.0f), out(L);
  pa::FavorOptions options;
  options.feature_map.kernel = pa::Kernel::kSoftmaxOpt;
  options.feature_map.head_dim = d;
  options.feature_map.num_projections = m;
  options.feature_map.projection = w.data();
  options.causal = true;
  pa::ThreadPool pool(1);
  bool threw = false;
  try {
    pa::favor_attention(pa::AttentionDims{1, 1, L, L, d, 1}, q.data(), k.data(), v.data(),
                        out.data(), options, pa::kScalarKernels, pool);
  } catch (const pa::InputError&) {
    threw = true;
  }
  CHECK(threw);
  options.causal = false;  // bidirectional: estimated from the call
  pa::favor_attention(pa::AttentionDims{1, 1, L, L, d, 1}, q.data(), k.data(), v.data(), out.data(),
                      options, pa::kScalarKernels, pool);
  for (float x : out) CHECK_NEAR(x, 1.0, 1e-6);
}
