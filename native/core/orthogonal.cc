#include "core/orthogonal.h"

#include <cmath>
#include <vector>

#include "core/rng.h"

namespace pa {
namespace {

// Householder QR of the d x d column-major matrix `a` (overwritten). Returns Q
// (column-major) with the sign fix applied when asked: column k of Q times
// sign(R_kk), which makes Q Haar-distributed (uniform over the orthogonal group).
std::vector<double> orthogonal_factor(std::vector<double>& a, std::size_t d, bool sign_fix,
                                      const KernelSet& kernels) {
  std::vector<double> householder(d * d, 0.0);  // column k: reflector v_k (zero above k)
  std::vector<double> r_diag(d, 0.0);
  for (std::size_t k = 0; k < d; ++k) {
    const double norm = std::sqrt(kernels.dot_f64(d - k, &a[k * d + k], &a[k * d + k]));
    const double x0 = a[k * d + k];
    // alpha has the opposite sign of x0 to avoid cancellation in v = x - alpha e1.
    const double alpha = x0 >= 0.0 ? -norm : norm;
    r_diag[k] = alpha;
    double* v = &householder[k * d];
    for (std::size_t i = k; i < d; ++i) v[i] = a[k * d + i];
    v[k] -= alpha;
    const double v_norm2 = kernels.dot_f64(d - k, v + k, v + k);
    if (v_norm2 == 0.0) continue;  // column already reduced (probability zero)
    for (std::size_t j = k; j < d; ++j) {
      const double f = 2.0 * kernels.dot_f64(d - k, v + k, &a[j * d + k]) / v_norm2;
      kernels.axpy_f64(d - k, f, v + k, &a[j * d + k]);
    }
    // keep v with its squared norm folded in
    const double inv = 1.0 / std::sqrt(v_norm2);
    for (std::size_t i = k; i < d; ++i) v[i] *= inv;
  }
  // Q = H_0 H_1 ... H_{d-1} applied to the identity, from the right-most reflector.
  std::vector<double> q(d * d, 0.0);
  for (std::size_t i = 0; i < d; ++i) q[i * d + i] = 1.0;
  for (std::size_t kk = d; kk-- > 0;) {
    const double* v = &householder[kk * d];
    for (std::size_t j = 0; j < d; ++j) {
      const double f = 2.0 * kernels.dot_f64(d - kk, v + kk, &q[j * d + kk]);
      kernels.axpy_f64(d - kk, f, v + kk, &q[j * d + kk]);
    }
  }
  if (sign_fix) {
    for (std::size_t k = 0; k < d; ++k) {
      if (r_diag[k] < 0.0) {
        for (std::size_t i = 0; i < d; ++i) q[k * d + i] = -q[k * d + i];
      }
    }
  }
  return q;
}

// A chi-distributed norm with d degrees of freedom (the norm of a N(0, I_d)
// vector) from few draws: sqrt(2 G) with G ~ Gamma(d/2, 1) by Marsaglia and
// Tsang's method, d = 1: |N(0, 1)|. Uses only basic arithmetic, sqrt and
// portable_log, so the bits are the same everywhere.
double chi_norm(Rng& rng, std::size_t d) {
  if (d == 1) return std::fabs(rng.normal());
  const double shape = 0.5 * static_cast<double>(d) - 1.0 / 3.0;
  const double c = 1.0 / std::sqrt(9.0 * shape);
  for (;;) {
    const double x = rng.normal();
    double v = 1.0 + c * x;
    if (v <= 0.0) continue;
    v = v * v * v;
    const double u = rng.uniform();
    const double x2 = x * x;
    if (u < 1.0 - 0.0331 * x2 * x2 ||
        (u > 0.0 && portable_log(u) < 0.5 * x2 + shape * (1.0 - v + portable_log(v)))) {
      return std::sqrt(2.0 * shape * v);
    }
  }
}

}  // namespace

void sample_projection(const ProjectionSpec& spec, const KernelSet& kernels, float* out) {
  const std::size_t m = spec.num_features;
  const std::size_t d = spec.head_dim;
  Rng rng(spec.seed);
  std::vector<double> rows(m * d);
  if (spec.orthogonal) {
    const std::size_t blocks = (m + d - 1) / d;
    std::vector<double> gaussian(d * d);
    for (std::size_t b = 0; b < blocks; ++b) {
      for (auto& g : gaussian) g = rng.normal();
      std::vector<double> q = orthogonal_factor(gaussian, d, spec.sign_fix, kernels);
      // Row r of this block is column r of Q (an orthonormal direction).
      for (std::size_t r = 0; r < d && b * d + r < m; ++r) {
        for (std::size_t i = 0; i < d; ++i) rows[(b * d + r) * d + i] = q[r * d + i];
      }
    }
  } else {
    for (auto& g : rows) g = rng.normal();
  }
  // Row norms. Orthogonal rows are unit vectors: chi gives them the norm of a fresh
  // Gaussian vector. I.i.d. Gaussian rows already have chi norms.
  for (std::size_t r = 0; r < m; ++r) {
    double* row = &rows[r * d];
    double scale = 1.0;
    if (spec.norm_scaling == NormScaling::kSqrt) {
      double norm2 = 0.0;
      for (std::size_t i = 0; i < d; ++i) norm2 += row[i] * row[i];
      scale = std::sqrt(static_cast<double>(d)) / std::sqrt(norm2);
    } else if (spec.orthogonal) {
      scale = chi_norm(rng, d);
    }
    for (std::size_t i = 0; i < d; ++i) out[r * d + i] = static_cast<float>(row[i] * scale);
  }
}

}  // namespace pa
