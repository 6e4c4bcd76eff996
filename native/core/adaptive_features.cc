#include "core/adaptive_features.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "core/attention_common.h"

namespace pa {

double optimal_coefficient(double rho, double d) {
  rho = std::max(rho, 0.0);  // a mean of squares; rounding must not flip the sign
  return -rho / (d - 2.0 * rho + std::sqrt((2.0 * rho + d) * (2.0 * rho + d) + 8.0 * d * rho));
}

void PairMoments::init(std::size_t head_dim, bool dense_moments) {
  d = head_dim;
  dense = dense_moments;
  count_q = count_k = norm2_q = norm2_k = 0.0;
  sum_q.assign(d, 0.0);
  sum_k.assign(d, 0.0);
  outer_q.assign(dense ? d * d : 0, 0.0);
  outer_k.assign(dense ? d * d : 0, 0.0);
}

void PairMoments::add(const float* x, std::size_t rows, bool is_key, const std::uint8_t* pad,
                      const KernelSet& kernels) {
  const double n2 = 1.0 / std::sqrt(static_cast<double>(d));  // normalizer^2 = d^(-1/2)
  std::vector<double>& sum = is_key ? sum_k : sum_q;
  std::vector<double>& outer = is_key ? outer_k : outer_q;
  double& count = is_key ? count_k : count_q;
  double& norm2 = is_key ? norm2_k : norm2_q;
  for (std::size_t r = 0; r < rows; ++r) {
    if (pad != nullptr && pad[r] == 0) continue;
    const float* xr = x + r * d;
    double s2 = 0.0;
    for (std::size_t i = 0; i < d; ++i) {
      sum[i] += xr[i];
      s2 += static_cast<double>(xr[i]) * xr[i];
    }
    norm2 += s2 * n2;
    count += 1.0;
  }
  if (!dense) return;
  // X^T X by the float32 GEMM kernel over blocks of attended rows, summed in
  // double: O(L d^2) at GEMM speed (a double loop was most of the cost at L = 4096).
  constexpr std::size_t kBlock = 256;
  std::vector<float> block(kBlock * d), product(d * d);
  std::size_t filled = 0;
  auto flush = [&] {
    if (filled == 0) return;
    kernels.gemm(d, d, filled, block.data(), 1, d, block.data(), d, product.data(), d, false);
    for (std::size_t i = 0; i < d * d; ++i) outer[i] += product[i];
    filled = 0;
  };
  for (std::size_t r = 0; r < rows; ++r) {
    if (pad != nullptr && pad[r] == 0) continue;
    std::copy(x + r * d, x + (r + 1) * d, block.data() + filled * d);
    if (++filled == kBlock) flush();
  }
  flush();
}

void symmetric_eigen(std::size_t d, double* a, double* values, double* vectors) {
  // Householder tridiagonalization a = V T V^T (V accumulated in `vectors`), then
  // implicit symmetric QR steps with Wilkinson shifts on T, rotating V along:
  // about 10 d^3 flops, against some 30 d^3 per sweep of cyclic Jacobi.
  // W = V^T (row k = eigenvector k), so that every update runs over contiguous rows.
  std::vector<double> Wt(d * d, 0.0);
  double* W = Wt.data();
  for (std::size_t i = 0; i < d; ++i) W[i * d + i] = 1.0;
  std::vector<double> v(d), p(d), r(d);
  for (std::size_t k = 0; k + 2 < d; ++k) {
    const std::size_t n = d - k - 1;  // the column below the diagonal: rows k+1 .. d-1
    double norm2 = 0.0;
    for (std::size_t i = 0; i < n; ++i) {
      v[i] = a[(k + 1 + i) * d + k];
      norm2 += v[i] * v[i];
    }
    if (norm2 == 0.0) continue;
    const double norm = std::sqrt(norm2);
    const double alpha = v[0] > 0 ? -norm : norm;
    v[0] -= alpha;
    const double vnorm = std::sqrt(norm2 - 2.0 * alpha * (v[0] + alpha) + alpha * alpha);
    for (std::size_t i = 0; i < n; ++i) v[i] /= vnorm;
    // S <- H S H with H = I - 2 v v^T on the trailing block S: p = S v, K = v.p,
    // w = p - K v, S -= 2 (v w^T + w v^T).
    double K = 0.0;
    for (std::size_t i = 0; i < n; ++i) {
      const double* row = a + (k + 1 + i) * d + k + 1;
      double s = 0.0;
      for (std::size_t j = 0; j < n; ++j) s += row[j] * v[j];
      p[i] = s;
      K += v[i] * s;
    }
    for (std::size_t i = 0; i < n; ++i) p[i] -= K * v[i];
    for (std::size_t i = 0; i < n; ++i) {
      double* row = a + (k + 1 + i) * d + k + 1;
      for (std::size_t j = 0; j < n; ++j) row[j] -= 2.0 * (v[i] * p[j] + p[i] * v[j]);
    }
    for (std::size_t i = 0; i < n; ++i) a[(k + 1 + i) * d + k] = a[k * d + k + 1 + i] = 0.0;
    a[(k + 1) * d + k] = a[k * d + k + 1] = alpha;
    // V <- V H, that is W <- H W: r = v^T W (rows k+1..), then W -= 2 v r^T.
    std::fill(r.begin(), r.end(), 0.0);
    for (std::size_t j = 0; j < n; ++j) {
      const double* row = W + (k + 1 + j) * d;
      for (std::size_t i = 0; i < d; ++i) r[i] += v[j] * row[i];
    }
    for (std::size_t j = 0; j < n; ++j) {
      double* row = W + (k + 1 + j) * d;
      for (std::size_t i = 0; i < d; ++i) row[i] -= 2.0 * v[j] * r[i];
    }
  }
  std::vector<double> diag(d), off(d, 0.0);
  for (std::size_t i = 0; i < d; ++i) diag[i] = a[i * d + i];
  for (std::size_t i = 0; i + 1 < d; ++i) off[i] = a[i * d + i + 1];

  const double eps = std::numeric_limits<double>::epsilon();
  std::size_t hi = d - 1, steps = 0;
  while (hi > 0 && d > 1 && steps < 60 * d) {
    for (std::size_t i = 0; i < hi; ++i) {
      if (std::fabs(off[i]) <= eps * (std::fabs(diag[i]) + std::fabs(diag[i + 1])) ||
          std::fabs(off[i]) < 1e-300)
        off[i] = 0.0;
    }
    if (off[hi - 1] == 0.0) {
      --hi;
      continue;
    }
    std::size_t lo = hi - 1;
    while (lo > 0 && off[lo - 1] != 0.0) --lo;
    ++steps;
    // Wilkinson shift: the eigenvalue of the trailing 2 x 2 block nearer diag[hi].
    const double delta = 0.5 * (diag[hi - 1] - diag[hi]), b2 = off[hi - 1] * off[hi - 1];
    const double mu =
        diag[hi] - b2 / (delta + (delta >= 0 ? 1.0 : -1.0) * std::sqrt(delta * delta + b2));
    double x = diag[lo] - mu, z = off[lo];
    for (std::size_t k = lo; k < hi; ++k) {
      // R = [[c, s], [-s, c]] on (k, k+1) with R (x, z)^T = (r, 0)^T; T <- R T R^T.
      const double r = std::hypot(x, z);
      const double c = x / r, s = z / r;
      if (k > lo) off[k - 1] = r;  // the bulge (k-1, k+1) is gone
      const double akk = diag[k], ak1 = diag[k + 1], bk = off[k];
      diag[k] = c * c * akk + 2.0 * c * s * bk + s * s * ak1;
      diag[k + 1] = s * s * akk - 2.0 * c * s * bk + c * c * ak1;
      off[k] = c * s * (ak1 - akk) + (c * c - s * s) * bk;
      if (k + 1 < hi) {
        z = s * off[k + 1];  // new bulge at (k, k+2)
        off[k + 1] *= c;
        x = off[k];
      }
      double* wk = W + k * d;  // V <- V R^T, that is W <- R W
      double* wk1 = wk + d;
      for (std::size_t i = 0; i < d; ++i) {
        const double u0 = wk[i], u1 = wk1[i];
        wk[i] = c * u0 + s * u1;
        wk1[i] = -s * u0 + c * u1;
      }
    }
  }
  for (std::size_t i = 0; i < d; ++i) {
    values[i] = diag[i];
    for (std::size_t k = 0; k < d; ++k) vectors[i * d + k] = W[k * d + i];
  }
}

AdaptiveParams params_from_moments(const PairMoments& mo, bool dense) {
  const std::size_t d = mo.d;
  if (mo.count_q == 0 || mo.count_k == 0)
    throw InputError("adaptive features need at least one query and one attended key");
  const double n = std::pow(static_cast<double>(d), -0.25);
  std::vector<double> mq(d), mk(d);
  for (std::size_t i = 0; i < d; ++i) {
    mq[i] = n * mo.sum_q[i] / mo.count_q;
    mk[i] = n * mo.sum_k[i] / mo.count_k;
  }
  AdaptiveParams params;
  if (!dense) {
    double cross = 0.0;
    for (std::size_t i = 0; i < d; ++i) cross += mq[i] * mk[i];
    const double rho = mo.norm2_q / mo.count_q + mo.norm2_k / mo.count_k + 2.0 * cross;
    params.a.assign(d, optimal_coefficient(rho, static_cast<double>(d)));
    return params;
  }
  // P = M_x + M_y + mu_x mu_y^T + mu_y mu_x^T (x_hat units: the outer sums times n^2).
  std::vector<double> P(d * d);
  const double n2 = n * n;
  for (std::size_t i = 0; i < d; ++i) {
    for (std::size_t j = i; j < d; ++j) {
      const double v =
          n2 * (mo.outer_q[i * d + j] / mo.count_q + mo.outer_k[i * d + j] / mo.count_k) +
          mq[i] * mk[j] + mk[i] * mq[j];
      P[i * d + j] = P[j * d + i] = v;
    }
  }
  std::vector<double> sigma(d);
  params.basis.resize(d * d);
  symmetric_eigen(d, P.data(), sigma.data(), params.basis.data());
  params.a.resize(d);
  for (std::size_t k = 0; k < d; ++k) params.a[k] = optimal_coefficient(sigma[k], 1.0);
  return params;
}

double adaptive_projection(const float* projection, std::size_t m, std::size_t d,
                           const AdaptiveParams& params, const KernelSet& kernels, float* packed,
                           float* bias) {
  // The same float normalizer as pack_projection, so that a = 0, Q = I packs the
  // same bits as the softmax kernel.
  const double nf = static_cast<float>(std::pow(static_cast<double>(d), -0.25));
  std::vector<double> b(d);
  double log_d = 0.0;
  for (std::size_t k = 0; k < d; ++k) {
    b[k] = std::sqrt(1.0 - 4.0 * params.a[k]);
    log_d += 0.25 * std::log1p(-4.0 * params.a[k]);
  }
  for (std::size_t f = 0; f < m; ++f) {
    const float* w = projection + f * d;
    double bf = 0.0;
    for (std::size_t k = 0; k < d; ++k) bf += params.a[k] * static_cast<double>(w[k]) * w[k];
    bias[f] = static_cast<float>(bf);
  }
  if (params.basis.empty()) {
    for (std::size_t i = 0; i < d; ++i) {
      for (std::size_t f = 0; f < m; ++f)
        packed[i * m + f] =
            static_cast<float>(nf * (static_cast<double>(projection[f * d + i]) * b[i]));
    }
    return log_d;
  }
  // packed = (n Q) (diag(b) W^T): one float32 GEMM, O(m d^2) at GEMM speed.
  std::vector<float> scaled_t(d * m), q(d * d);
  for (std::size_t k = 0; k < d; ++k) {
    for (std::size_t f = 0; f < m; ++f)
      scaled_t[k * m + f] = static_cast<float>(projection[f * d + k] * b[k]);
  }
  for (std::size_t i = 0; i < d * d; ++i) q[i] = static_cast<float>(nf * params.basis[i]);
  kernels.gemm(d, m, d, q.data(), d, 1, scaled_t.data(), m, packed, m, false);
  return log_d;
}

void check_params(const AdaptiveParams& params, std::size_t d) {
  if (params.a.size() != d) throw InputError("adaptive parameters: expected headDim coefficients");
  for (double a : params.a) {
    if (!std::isfinite(a) || !(a < 0.125)) {
      throw InputError(
          "adaptive parameters: every coefficient must be finite and below 1/8 (finite variance)");
    }
  }
  if (!params.basis.empty()) {
    if (params.basis.size() != d * d)
      throw InputError("adaptive parameters: the basis must be headDim x headDim");
    for (double v : params.basis) {
      if (!std::isfinite(v)) throw InputError("adaptive parameters: the basis must be finite");
    }
  }
}

AdaptiveParams fixed_params(const FeatureMapSpec& spec, std::size_t h) {
  const std::size_t d = spec.head_dim;
  AdaptiveParams params;
  params.a.assign(spec.adaptive_a + h * d, spec.adaptive_a + (h + 1) * d);
  if (spec.kernel == Kernel::kSoftmaxDense) {
    if (spec.adaptive_basis == nullptr) throw InputError("softmax-dense parameters need a basis");
    params.basis.assign(spec.adaptive_basis + h * d * d, spec.adaptive_basis + (h + 1) * d * d);
  }
  check_params(params, d);
  return params;
}

void prepare_head(const FeatureMapSpec& spec, const AdaptiveParams& params,
                  const KernelSet& kernels, HeadFeatures* out) {
  if (spec.projection == nullptr) throw InputError("adaptive features need a projection");
  const std::size_t m = spec.num_projections, d = spec.head_dim;
  out->packed.resize(d * m);
  out->bias.resize(m);
  out->spec = spec;
  out->spec.log_d = adaptive_projection(spec.projection, m, d, params, kernels, out->packed.data(),
                                        out->bias.data());
  out->spec.packed_projection = out->packed.data();
  out->spec.bias = out->bias.data();
}

}  // namespace pa
