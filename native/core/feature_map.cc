#include "core/feature_map.h"

#include "core/adaptive_features.h"
#include "core/attention_common.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace pa {
namespace {

// log(exp(a) + exp(b)) without overflow; b may be -inf.
inline float log_add_exp(float a, float b) {
  const float hi = std::max(a, b), lo = std::min(a, b);
  if (lo == -std::numeric_limits<float>::infinity()) return hi;
  return hi + std::log1p(std::exp(lo - hi));
}

}  // namespace

bool parse_kernel(const std::string& name, Kernel* kernel) {
  static const struct {
    const char* name;
    Kernel kernel;
  } table[] = {{"softmax", Kernel::kSoftmax},
               {"softmax-hyperbolic", Kernel::kSoftmaxHyperbolic},
               {"trig", Kernel::kTrig},
               {"relu", Kernel::kRelu},
               {"elu", Kernel::kElu},
               {"exp", Kernel::kExp},
               {"abs", Kernel::kAbs},
               {"softmax-opt", Kernel::kSoftmaxOpt},
               {"softmax-dense", Kernel::kSoftmaxDense}};
  for (const auto& entry : table) {
    if (name == entry.name) {
      *kernel = entry.kernel;
      return true;
    }
  }
  return false;
}

std::size_t FeatureMapSpec::feature_count() const {
  const bool doubled = kernel == Kernel::kSoftmaxHyperbolic || kernel == Kernel::kTrig;
  return doubled ? 2 * num_projections : num_projections;
}

double FeatureMapSpec::log_scale() const {
  const double m = static_cast<double>(num_projections);
  switch (kernel) {
    case Kernel::kSoftmax:
    case Kernel::kTrig:
      return -0.5 * std::log(m);
    case Kernel::kSoftmaxHyperbolic:
      return -0.5 * std::log(2.0 * m);
    case Kernel::kSoftmaxOpt:
    case Kernel::kSoftmaxDense:
      return -0.5 * std::log(m) + log_d;
    default:
      return 0.0;
  }
}

void pack_projection(const float* projection, std::size_t m, std::size_t d, float* out) {
  const float normalizer = static_cast<float>(std::pow(static_cast<double>(d), -0.25));
  for (std::size_t i = 0; i < d; ++i) {
    float* row = out + i * m;
    for (std::size_t f = 0; f < m; ++f) {
      const float w = projection ? projection[f * d + i] : (f == i ? 1.0f : 0.0f);
      row[f] = normalizer * w;
    }
  }
}

FeatureEvaluator::FeatureEvaluator(const FeatureMapSpec& spec, const KernelSet& kernels)
    : spec_(spec),
      kernels_(kernels),
      normalizer_(static_cast<float>(std::pow(static_cast<double>(spec.head_dim), -0.25))),
      packed_(spec.packed_projection) {
  if (spec.is_adaptive() && (packed_ == nullptr || spec.bias == nullptr)) {
    throw InputError("adaptive features need a prepared head (packed projection and bias)");
  }
  if (packed_ == nullptr) {
    own_packed_.resize(spec.head_dim * spec.num_projections);
    pack_projection(spec.projection, spec.num_projections, spec.head_dim, own_packed_.data());
    packed_ = own_packed_.data();
  }
}

void FeatureEvaluator::log_features(const float* x, std::size_t rows, float* z, float* sign,
                                    float* work) const {
  const std::size_t d = spec_.head_dim, m = spec_.num_projections, F = feature_count();
  const float neg_inf = -std::numeric_limits<float>::infinity();
  // u = x_hat W^T for the whole row block.
  kernels_.gemm(rows, m, d, x, d, 1, packed_, m, work, m, false);
  const float eps = spec_.kernel_epsilon;
  const float log_eps = eps > 0.0f ? std::log(eps) : neg_inf;
  for (std::size_t r = 0; r < rows; ++r) {
    const float* u = work + r * m;
    float* zr = z + r * F;
    // ||x||^2 in double with four partial sums (no long chain of dependent adds),
    // then times the normalizer^2.
    const float* xr = x + r * d;
    double p0 = 0.0, p1 = 0.0, p2 = 0.0, p3 = 0.0;
    std::size_t i = 0;
    for (; i + 4 <= d; i += 4) {
      p0 += static_cast<double>(xr[i]) * xr[i];
      p1 += static_cast<double>(xr[i + 1]) * xr[i + 1];
      p2 += static_cast<double>(xr[i + 2]) * xr[i + 2];
      p3 += static_cast<double>(xr[i + 3]) * xr[i + 3];
    }
    for (; i < d; ++i) p0 += static_cast<double>(xr[i]) * xr[i];
    const double normalizer = normalizer_;
    const float half_norm2 =
        static_cast<float>(0.5 * ((p0 + p1) + (p2 + p3)) * normalizer * normalizer);
    switch (spec_.kernel) {
      case Kernel::kSoftmax:
        for (std::size_t f = 0; f < m; ++f) zr[f] = u[f] - half_norm2;
        break;
      case Kernel::kSoftmaxOpt:
      case Kernel::kSoftmaxDense:
        for (std::size_t f = 0; f < m; ++f) zr[f] = u[f] + spec_.bias[f] - half_norm2;
        break;
      case Kernel::kSoftmaxHyperbolic:
        for (std::size_t f = 0; f < m; ++f) {
          zr[f] = u[f] - half_norm2;
          zr[m + f] = -u[f] - half_norm2;
        }
        break;
      case Kernel::kTrig: {
        float* sr = sign + r * F;
        for (std::size_t f = 0; f < m; ++f) {
          const float s = std::sin(u[f]), c = std::cos(u[f]);
          zr[f] = half_norm2 + std::log(std::fabs(s));
          zr[m + f] = half_norm2 + std::log(std::fabs(c));
          sr[f] = s < 0.0f ? -1.0f : 1.0f;
          sr[m + f] = c < 0.0f ? -1.0f : 1.0f;
        }
        break;
      }
      case Kernel::kRelu:
        for (std::size_t f = 0; f < m; ++f) zr[f] = std::log(std::max(u[f], 0.0f) + eps);
        break;
      case Kernel::kElu:  // elu(u) + 1 = u + 1 (u > 0) or exp(u) (u <= 0)
        for (std::size_t f = 0; f < m; ++f) {
          zr[f] = u[f] > 0.0f ? std::log(u[f] + 1.0f + eps) : log_add_exp(u[f], log_eps);
        }
        break;
      case Kernel::kExp:
        for (std::size_t f = 0; f < m; ++f) zr[f] = log_add_exp(u[f], log_eps);
        break;
      case Kernel::kAbs:
        for (std::size_t f = 0; f < m; ++f) zr[f] = std::log(std::fabs(u[f]) + eps);
        break;
    }
  }
}

void compute_features(const FeatureMapSpec& given, const KernelSet& kernels, const float* x,
                      std::size_t rows, bool log_space, float* out) {
  FeatureMapSpec spec = given;
  HeadFeatures head;
  if (spec.is_adaptive()) {
    if (spec.adaptive_heads == 0) {
      throw InputError(
          "features of softmax-opt / softmax-dense need fixed parameters (calibrate or setParameters)");
    }
    if (spec.adaptive_head >= spec.adaptive_heads)
      throw InputError("head: beyond the fixed parameters");
    prepare_head(given, fixed_params(given, spec.adaptive_head), kernels, &head);
    spec = head.spec;
  }
  FeatureEvaluator evaluator(spec, kernels);
  const std::size_t F = evaluator.feature_count();
  const std::size_t block = 64;
  std::vector<float> z(block * F), sign(spec.is_signed() ? block * F : 0),
      work(block * evaluator.work_per_row());
  const double log_scale = spec.log_scale();
  for (std::size_t r0 = 0; r0 < rows; r0 += block) {
    const std::size_t n = std::min(block, rows - r0);
    evaluator.log_features(x + r0 * spec.head_dim, n, z.data(),
                           sign.empty() ? nullptr : sign.data(), work.data());
    for (std::size_t i = 0; i < n * F; ++i) {
      const double lz = static_cast<double>(z[i]) + log_scale;
      float value = static_cast<float>(log_space ? lz : std::exp(lz));
      if (!log_space && !sign.empty()) value *= sign[i];
      out[(r0)*F + i] = value;
    }
  }
}

}  // namespace pa
