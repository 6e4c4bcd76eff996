#include "core/adaptive_features.h"

#include <algorithm>
#include <cmath>

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

void PairMoments::add(const float* x, std::size_t rows, bool is_key, const std::uint8_t* pad) {
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
    if (dense) {
      // Upper triangle only; mirrored in params_from_moments.
      for (std::size_t i = 0; i < d; ++i) {
        const double xi = xr[i];
        double* row = outer.data() + i * d;
        for (std::size_t j = i; j < d; ++j) row[j] += xi * xr[j];
      }
    }
  }
}

void PairMoments::merge(const PairMoments& o) {
  count_q += o.count_q;
  count_k += o.count_k;
  norm2_q += o.norm2_q;
  norm2_k += o.norm2_k;
  for (std::size_t i = 0; i < d; ++i) {
    sum_q[i] += o.sum_q[i];
    sum_k[i] += o.sum_k[i];
  }
  for (std::size_t i = 0; i < outer_q.size(); ++i) {
    outer_q[i] += o.outer_q[i];
    outer_k[i] += o.outer_k[i];
  }
}

void symmetric_eigen(std::size_t d, double* a, double* values, double* vectors) {
  std::fill(vectors, vectors + d * d, 0.0);
  for (std::size_t i = 0; i < d; ++i) vectors[i * d + i] = 1.0;
  for (int sweep = 0; sweep < 60; ++sweep) {
    double off = 0.0, diag = 0.0;
    for (std::size_t p = 0; p < d; ++p) {
      diag += a[p * d + p] * a[p * d + p];
      for (std::size_t q = p + 1; q < d; ++q) off += a[p * d + q] * a[p * d + q];
    }
    if (off <= 1e-30 * diag || off == 0.0) break;
    for (std::size_t p = 0; p + 1 < d; ++p) {
      for (std::size_t q = p + 1; q < d; ++q) {
        const double apq = a[p * d + q];
        if (apq == 0.0) continue;
        const double app = a[p * d + p], aqq = a[q * d + q];
        if (std::fabs(apq) <= 1e-300 || std::fabs(apq) < 1e-18 * (std::fabs(app) + std::fabs(aqq))) {
          a[p * d + q] = a[q * d + p] = 0.0;
          continue;
        }
        // Rotation J (J_pp = J_qq = c, J_pq = s, J_qp = -s) with (J^T A J)_pq = 0.
        const double theta = (aqq - app) / (2.0 * apq);
        const double t = (theta >= 0 ? 1.0 : -1.0) / (std::fabs(theta) + std::sqrt(theta * theta + 1.0));
        const double c = 1.0 / std::sqrt(t * t + 1.0), s = t * c;
        for (std::size_t k = 0; k < d; ++k) {  // A J
          const double akp = a[k * d + p], akq = a[k * d + q];
          a[k * d + p] = c * akp - s * akq;
          a[k * d + q] = s * akp + c * akq;
        }
        for (std::size_t k = 0; k < d; ++k) {  // J^T (A J)
          const double apk = a[p * d + k], aqk = a[q * d + k];
          a[p * d + k] = c * apk - s * aqk;
          a[q * d + k] = s * apk + c * aqk;
        }
        a[p * d + q] = a[q * d + p] = 0.0;
        for (std::size_t k = 0; k < d; ++k) {  // V J
          const double vkp = vectors[k * d + p], vkq = vectors[k * d + q];
          vectors[k * d + p] = c * vkp - s * vkq;
          vectors[k * d + q] = s * vkp + c * vkq;
        }
      }
    }
  }
  for (std::size_t i = 0; i < d; ++i) values[i] = a[i * d + i];
}

AdaptiveParams params_from_moments(const PairMoments& mo, bool dense) {
  const std::size_t d = mo.d;
  if (mo.count_q == 0 || mo.count_k == 0) throw InputError("adaptive features need at least one query and one attended key");
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
      const double v = n2 * (mo.outer_q[i * d + j] / mo.count_q + mo.outer_k[i * d + j] / mo.count_k) +
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

double adaptive_projection(const float* projection, std::size_t m, std::size_t d, const AdaptiveParams& params,
                           float* packed, float* bias) {
  // The same float normalizer as pack_projection, so that a = 0, Q = I packs the
  // same bits as the softmax kernel.
  const double nf = static_cast<float>(std::pow(static_cast<double>(d), -0.25));
  std::vector<double> b(d), scaled(d);
  double log_d = 0.0;
  for (std::size_t k = 0; k < d; ++k) {
    b[k] = std::sqrt(1.0 - 4.0 * params.a[k]);
    log_d += 0.25 * std::log1p(-4.0 * params.a[k]);
  }
  const double* Q = params.basis.empty() ? nullptr : params.basis.data();
  for (std::size_t f = 0; f < m; ++f) {
    const float* w = projection + f * d;
    double bf = 0.0;
    for (std::size_t k = 0; k < d; ++k) {
      bf += params.a[k] * static_cast<double>(w[k]) * w[k];
      scaled[k] = static_cast<double>(w[k]) * b[k];
    }
    bias[f] = static_cast<float>(bf);
    for (std::size_t i = 0; i < d; ++i) {
      double s;
      if (Q == nullptr) {
        s = scaled[i];
      } else {
        s = 0.0;
        const double* qi = Q + i * d;
        for (std::size_t k = 0; k < d; ++k) s += qi[k] * scaled[k];
      }
      packed[i * m + f] = static_cast<float>(nf * s);
    }
  }
  return log_d;
}

void check_params(const AdaptiveParams& params, std::size_t d) {
  if (params.a.size() != d) throw InputError("adaptive parameters: expected headDim coefficients");
  for (double a : params.a) {
    if (!std::isfinite(a) || !(a < 0.125)) {
      throw InputError("adaptive parameters: every coefficient must be finite and below 1/8 (finite variance)");
    }
  }
  if (!params.basis.empty()) {
    if (params.basis.size() != d * d) throw InputError("adaptive parameters: the basis must be headDim x headDim");
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

void prepare_head(const FeatureMapSpec& spec, const AdaptiveParams& params, HeadFeatures* out) {
  if (spec.projection == nullptr) throw InputError("adaptive features need a projection");
  const std::size_t m = spec.num_projections, d = spec.head_dim;
  out->packed.resize(d * m);
  out->bias.resize(m);
  out->spec = spec;
  out->spec.log_d = adaptive_projection(spec.projection, m, d, params, out->packed.data(), out->bias.data());
  out->spec.packed_projection = out->packed.data();
  out->spec.bias = out->bias.data();
}

}  // namespace pa
