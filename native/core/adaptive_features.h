// Data-adaptive positive features: FAVOR++ (optimal positive random features,
// kernel softmax-opt) and dense exponential features (SDERF, softmax-dense).
//
// Both are phi_f(x) = D m^(-1/2) exp(b_f + w'_f . x_hat - ||x_hat||^2 / 2) with
//   w'_f = Q (w_f (.) sqrt(1 - 4a)),  b_f = sum_k a_k w_fk^2,  D = prod_k (1 - 4a_k)^(1/4),
// where Q is orthogonal and a_k < 1/8. softmax-opt is Q = I with every a_k = A.
// So a head's features are the softmax features with a projection and a bias per
// feature; the attention drivers and their stabilization stay as they are.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "core/feature_map.h"
#include "kernels/kernels.h"

namespace pa {

// The parameters of one head: a (d) and Q (d x d row-major, eigenvectors in
// columns; empty = identity).
struct AdaptiveParams {
  std::vector<double> a;
  std::vector<double> basis;
};

// A* = -rho / (d - 2 rho + sqrt((2 rho + d)^2 + 8 d rho)): the variance-optimal A
// for the mean rho of ||x + y||^2 (stable at rho = 0, where it is 0; always <= 0).
double optimal_coefficient(double rho, double d);

// Sums over rows of one head, in x_hat = d^(-1/4) x units.
struct PairMoments {
  std::size_t d = 0;
  bool dense = false;
  double count_q = 0, count_k = 0;
  double norm2_q = 0, norm2_k = 0;       // sum ||x_hat||^2
  std::vector<double> sum_q, sum_k;      // d
  std::vector<double> outer_q, outer_k;  // d x d (dense only)
  void init(std::size_t head_dim, bool dense_moments);
  // rows x d (contiguous); keys with pad[r] == 0 are skipped (pad may be null).
  // Means and norms are summed in double; the second moments (dense only) are
  // float32 GEMM products over blocks of 256 rows, summed in double.
  void add(const float* x, std::size_t rows, bool is_key, const std::uint8_t* pad,
           const KernelSet& kernels);
};

// The optimal parameters from moments: softmax-opt from rho (O(d)), softmax-dense
// from the eigendecomposition of P = M_x + M_y + mu_x mu_y^T + mu_y mu_x^T.
// Requires at least one query and one key.
AdaptiveParams params_from_moments(const PairMoments& moments, bool dense);

// Symmetric eigendecomposition in double (Householder tridiagonalization, then
// implicit QR with Wilkinson shifts): a (d x d, row-major, destroyed) =
// V diag(values) V^T, V's columns the eigenvectors.
void symmetric_eigen(std::size_t d, double* a, double* values, double* vectors);

// For projection W (m x d row-major): packed (d x m) = d^(-1/4) W'^T and
// bias (m); returns log D.
double adaptive_projection(const float* projection, std::size_t m, std::size_t d,
                           const AdaptiveParams& params, const KernelSet& kernels, float* packed,
                           float* bias);

// Throws InputError unless every a_k is finite and < 1/8 and Q (when given) is
// finite; the variance of the estimator is infinite from 1/8 on.
void check_params(const AdaptiveParams& params, std::size_t d);

// Fixed parameter set h of an adaptive spec (checked).
AdaptiveParams fixed_params(const FeatureMapSpec& spec, std::size_t h);

// One head's feature map: spec with its packed projection, bias and log D.
struct HeadFeatures {
  std::vector<float> packed, bias;
  FeatureMapSpec spec;
};
void prepare_head(const FeatureMapSpec& spec, const AdaptiveParams& params,
                  const KernelSet& kernels, HeadFeatures* out);

}  // namespace pa
