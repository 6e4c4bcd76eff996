// Feature maps phi(x) for FAVOR attention, computed as log-magnitudes.
//
// Every kernel is evaluated as phi_f(x) = scale * sign_f * exp(z_f(x)), where the
// constant `scale` (e.g. m^-1/2) is left out of z because it cancels in attention,
// and sign_f is +1 except for `trig`. Working with z keeps large inputs finite:
// the attention drivers subtract per-feature and per-row maxima before exp.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include "kernels/kernels.h"

namespace pa {

enum class Kernel {
  kSoftmax,
  kSoftmaxHyperbolic,
  kTrig,
  kRelu,
  kElu,
  kExp,
  kAbs,
  kSoftmaxOpt,
  kSoftmaxDense
};

// "softmax", "softmax-hyperbolic", "trig", "relu", "elu", "exp", "abs", "softmax-opt",
// "softmax-dense".
bool parse_kernel(const std::string& name, Kernel* kernel);

struct FeatureMapSpec {
  Kernel kernel = Kernel::kSoftmax;
  std::size_t head_dim = 0;           // d
  std::size_t num_projections = 0;    // rows of the projection (m); d when projection is null
  const float* projection = nullptr;  // m x d row-major; null = identity (generalized kernels only)
  // Optional: pack_projection() of `projection`, made once by the caller so that a
  // call does not repack it.
  const float* packed_projection = nullptr;
  float kernel_epsilon = 1e-3f;  // added to generalized kernels' features
  // Adaptive kernels (softmax-opt, softmax-dense; see adaptive_features.h). A
  // prepared head has its own packed projection and `bias` (m log-terms added to
  // z) and log D. Fixed parameters: adaptive_heads sets of a (d each) and, for
  // softmax-dense, Q (d x d each); adaptive_heads = 0 estimates them per call
  // (bidirectional only). adaptive_head picks the set compute_features uses.
  const float* bias = nullptr;
  double log_d = 0.0;
  const double* adaptive_a = nullptr;
  const double* adaptive_basis = nullptr;
  std::size_t adaptive_heads = 0;
  std::size_t adaptive_head = 0;

  // Features per input row: 2m for softmax-hyperbolic and trig, else m.
  std::size_t feature_count() const;
  bool is_signed() const { return kernel == Kernel::kTrig; }
  bool is_adaptive() const {
    return kernel == Kernel::kSoftmaxOpt || kernel == Kernel::kSoftmaxDense;
  }
  // log(scale): -1/2 log m (softmax, trig), -1/2 log 2m (hyperbolic), 0 (generalized),
  // -1/2 log m + log D (adaptive).
  double log_scale() const;
};

// out[d x m] = d^(-1/4) W^T: the projection transposed with the data normalizer
// folded in, so u = W x_hat is one GEMM per row block.
void pack_projection(const float* projection, std::size_t num_projections, std::size_t head_dim,
                     float* out);

// A feature map prepared for one call (uses the packed projection when given).
class FeatureEvaluator {
 public:
  FeatureEvaluator(const FeatureMapSpec& spec, const KernelSet& kernels);

  std::size_t feature_count() const { return spec_.feature_count(); }
  bool is_signed() const { return spec_.is_signed(); }
  // Floats of scratch that log_features needs per row.
  std::size_t work_per_row() const { return spec_.num_projections; }

  // For rows x[r * d .. r * d + d), r < rows (contiguous): z[r * F + f] = z_f(x_r),
  // and sign[r * F + f] = +-1 for signed kernels (sign may be null otherwise).
  void log_features(const float* x, std::size_t rows, float* z, float* sign, float* work) const;

 private:
  FeatureMapSpec spec_;
  const KernelSet& kernels_;
  float normalizer_;
  std::vector<float> own_packed_;  // when the spec has no packed projection
  const float* packed_;            // d x m
};

// phi(x) itself (scale included), rows x d in, rows x F out: float32
// log-magnitudes, exponentiated in double; values beyond float range become +-Infinity. With
// log_space, writes log|phi| instead (finite for every finite input of the
// positive kernels).
void compute_features(const FeatureMapSpec& spec, const KernelSet& kernels, const float* x,
                      std::size_t rows, bool log_space, float* out);

}  // namespace pa
