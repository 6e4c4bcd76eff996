// Random projections W (m x d, row-major) for the feature maps.
#pragma once

#include <cstddef>
#include <cstdint>

#include "kernels/kernels.h"

namespace pa {

enum class NormScaling {
  kChi,   // each row times the norm of a fresh N(0, I_d) vector: unbiased (default)
  kSqrt,  // each row has norm sqrt(d): the regularized variant
};

struct ProjectionSpec {
  std::size_t num_features = 0;  // m
  std::size_t head_dim = 0;      // d
  std::uint64_t seed = 0;
  bool orthogonal = true;  // false: i.i.d. Gaussian rows
  NormScaling norm_scaling = NormScaling::kChi;
  // Only tests turn this off, to show that the isotropy test catches its absence.
  bool sign_fix = true;
};

// Fills out[m * d]. Orthogonal: ceil(m/d) independent d x d blocks, each the Q of a
// Householder QR of a Gaussian matrix with Q <- Q diag(sign(diag R)), rows of the
// stack kept up to m, then rescaled. Draw order (part of the reproducibility
// contract): all Gaussian blocks in order (column-major entries), then the m chi
// norms in row order, each sqrt(2 G) with G ~ Gamma(d/2, 1) drawn by Marsaglia and
// Tsang's method (x = normal(), v = (1 + x / sqrt(9 (d/2 - 1/3)))^3, rejected while
// v <= 0, then u = uniform(), accepted when u < 1 - 0.0331 x^4 or
// log u < x^2/2 + (d/2 - 1/3)(1 - v + log v)); for d = 1, |normal()|.
// Computed in double, rounded to float once at the end; every kernel set gives
// the same bits (see DotF64Fn in kernels.h).
void sample_projection(const ProjectionSpec& spec, const KernelSet& kernels, float* out);

}  // namespace pa
