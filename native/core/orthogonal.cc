#include "core/orthogonal.h"

#include <cmath>
#include <vector>

#include "core/rng.h"

namespace pa {
namespace {

// Householder QR of the d x d column-major matrix `a` (overwritten). Returns Q
// (column-major) with the sign fix applied when asked: column k of Q times
// sign(R_kk), which makes Q Haar-distributed (uniform over the orthogonal group).
std::vector<double> orthogonal_factor(std::vector<double>& a, std::size_t d, bool sign_fix) {
  std::vector<double> householder(d * d, 0.0);  // column k: reflector v_k (zero above k)
  std::vector<double> r_diag(d, 0.0);
  for (std::size_t k = 0; k < d; ++k) {
    double norm2 = 0.0;
    for (std::size_t i = k; i < d; ++i) norm2 += a[k * d + i] * a[k * d + i];
    const double norm = std::sqrt(norm2);
    const double x0 = a[k * d + k];
    // alpha has the opposite sign of x0 to avoid cancellation in v = x - alpha e1.
    const double alpha = x0 >= 0.0 ? -norm : norm;
    r_diag[k] = alpha;
    double* v = &householder[k * d];
    for (std::size_t i = k; i < d; ++i) v[i] = a[k * d + i];
    v[k] -= alpha;
    double v_norm2 = 0.0;
    for (std::size_t i = k; i < d; ++i) v_norm2 += v[i] * v[i];
    if (v_norm2 == 0.0) continue;  // column already reduced (probability zero)
    for (std::size_t j = k; j < d; ++j) {
      double dot = 0.0;
      for (std::size_t i = k; i < d; ++i) dot += v[i] * a[j * d + i];
      const double f = 2.0 * dot / v_norm2;
      for (std::size_t i = k; i < d; ++i) a[j * d + i] -= f * v[i];
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
      double dot = 0.0;
      for (std::size_t i = kk; i < d; ++i) dot += v[i] * q[j * d + i];
      for (std::size_t i = kk; i < d; ++i) q[j * d + i] -= 2.0 * dot * v[i];
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

}  // namespace

void sample_projection(const ProjectionSpec& spec, float* out) {
  const std::size_t m = spec.num_features;
  const std::size_t d = spec.head_dim;
  Rng rng(spec.seed);
  std::vector<double> rows(m * d);
  if (spec.orthogonal) {
    const std::size_t blocks = (m + d - 1) / d;
    std::vector<double> gaussian(d * d);
    for (std::size_t b = 0; b < blocks; ++b) {
      for (auto& g : gaussian) g = rng.normal();
      std::vector<double> q = orthogonal_factor(gaussian, d, spec.sign_fix);
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
      double norm2 = 0.0;
      for (std::size_t i = 0; i < d; ++i) {
        const double g = rng.normal();
        norm2 += g * g;
      }
      scale = std::sqrt(norm2);
    }
    for (std::size_t i = 0; i < d; ++i) out[r * d + i] = static_cast<float>(row[i] * scale);
  }
}

}  // namespace pa
