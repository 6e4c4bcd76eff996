// Orthogonal random projections: structure of the blocks and the row norms.
#include <cmath>
#include <cstdio>
#include <cstring>
#include <vector>

#include "core/orthogonal.h"
#include "kernels/dispatch.h"
#include "test_harness.h"

namespace {

std::vector<float> sample(std::size_t m, std::size_t d, std::uint64_t seed, bool orthogonal,
                          pa::NormScaling norm, bool sign_fix = true,
                          const pa::KernelSet& kernels = pa::kScalarKernels) {
  pa::ProjectionSpec spec;
  spec.num_features = m;
  spec.head_dim = d;
  spec.seed = seed;
  spec.orthogonal = orthogonal;
  spec.norm_scaling = norm;
  spec.sign_fix = sign_fix;
  std::vector<float> w(m * d);
  pa::sample_projection(spec, kernels, w.data());
  return w;
}

double dot(const float* a, const float* b, std::size_t d) {
  double s = 0;
  for (std::size_t i = 0; i < d; ++i) s += static_cast<double>(a[i]) * b[i];
  return s;
}

}  // namespace

TEST("orthogonal/rows of each block are orthogonal with norm sqrt(d)") {
  for (std::size_t d : {1u, 2u, 7u, 16u, 64u}) {
    const std::size_t m = 2 * d + 3;  // two full blocks and a partial one
    const auto w = sample(m, d, 5, true, pa::NormScaling::kSqrt);
    for (std::size_t r = 0; r < m; ++r) {
      CHECK_NEAR(dot(&w[r * d], &w[r * d], d), static_cast<double>(d), 1e-4 * d);
      for (std::size_t s = (r / d) * d; s < r; ++s)
        CHECK_NEAR(dot(&w[r * d], &w[s * d], d), 0.0, 1e-4 * d);
    }
  }
}

TEST("orthogonal/blocks are independent of each other") {
  const std::size_t d = 8;
  const auto w = sample(2 * d, d, 9, true, pa::NormScaling::kSqrt);
  double worst = 0;
  for (std::size_t r = 0; r < d; ++r) {
    for (std::size_t s = d; s < 2 * d; ++s)
      worst = std::fmax(worst, std::fabs(dot(&w[r * d], &w[s * d], d)));
  }
  CHECK(worst > 1e-2);  // rows of different blocks are not orthogonal to each other
}

TEST("orthogonal/seeded: same seed same bits, other seed other bits") {
  const auto a = sample(40, 16, 123, true, pa::NormScaling::kChi);
  const auto b = sample(40, 16, 123, true, pa::NormScaling::kChi);
  const auto c = sample(40, 16, 124, true, pa::NormScaling::kChi);
  CHECK(a == b);
  CHECK(a != c);
}

TEST("orthogonal/chi norms have mean d of the squared norm") {
  const std::size_t d = 16, m = 64;
  double sum = 0, sum2 = 0;
  int n = 0;
  for (std::uint64_t seed = 0; seed < 200; ++seed) {
    const auto w = sample(m, d, seed, true, pa::NormScaling::kChi);
    for (std::size_t r = 0; r < m; ++r) {
      const double n2 = dot(&w[r * d], &w[r * d], d);
      sum += n2;
      sum2 += n2 * n2;
      ++n;
    }
  }
  const double mean = sum / n, var = sum2 / n - mean * mean;
  CHECK_NEAR(mean, static_cast<double>(d), 5 * std::sqrt(2.0 * d / n));
  CHECK_NEAR(var, 2.0 * d, 0.1 * 2.0 * d);
}

TEST("orthogonal/the sign fix makes directions isotropic") {
  // The first row of each block is the first column of Q; without the sign fix a
  // Householder QR makes its first coordinate always negative.
  const std::size_t d = 8;
  double with_fix = 0, without_fix = 0;
  const int seeds = 2000;
  for (int seed = 0; seed < seeds; ++seed) {
    const auto a = sample(d, d, seed, true, pa::NormScaling::kSqrt, true);
    const auto b = sample(d, d, seed, true, pa::NormScaling::kSqrt, false);
    with_fix += a[0] / std::sqrt(static_cast<double>(d));
    without_fix += b[0] / std::sqrt(static_cast<double>(d));
  }
  with_fix /= seeds;
  without_fix /= seeds;
  const double standard_error = std::sqrt(1.0 / d / seeds);
  CHECK(std::fabs(with_fix) < 5 * standard_error);
  CHECK(without_fix < -20 * standard_error);
}

TEST("orthogonal/every kernel set gives the same bits") {
  for (std::size_t d : {1u, 3u, 16u, 64u, 67u}) {
    const auto reference = sample(2 * d + 5, d, 77, true, pa::NormScaling::kChi);
    for (const pa::KernelSet* set : pa::available_kernel_sets()) {
      const auto got = sample(2 * d + 5, d, 77, true, pa::NormScaling::kChi, true, *set);
      bool same = true;
      for (std::size_t i = 0; i < got.size(); ++i) {
        std::uint32_t a, b;
        std::memcpy(&a, &got[i], 4);
        std::memcpy(&b, &reference[i], 4);
        same = same && a == b;
      }
      if (!same) std::fprintf(stderr, "  [%s] d=%zu differs from scalar\n", set->name, d);
      CHECK(same);
    }
  }
}
