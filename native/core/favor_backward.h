// Gradients of FAVOR attention (favor.h) with respect to queries, keys, values and,
// optionally, the projection W, for the positive kernels (softmax, softmax-hyperbolic)
// and the generalized ones (relu, elu, exp, abs).
//
// The stabilizers of the forward pass (per-feature key maxima, per-row query maxima)
// are constants here: each multiplies a query row, or a feature on both sides, so it
// cancels in out_i = q'_i S / q'_i z and has no gradient. Features are recomputed
// with the same references as the forward pass (no L x m feature matrix is kept).
//
// Bidirectional: dq'_i = (g_i / den_i) S^T - (g_i . out_i / den_i) z^T, dS = Q'^T (G / den),
// dz = Q'^T dden, dk'_j = dS v_j + dz, dv_j = dS^T k'_j. Causal: the same with prefix
// states in a forward sweep (dq') and suffix states R = sum_{i >= j} q'_i (g_i / den_i)^T
// in a reverse sweep (dk', dv), chunk by chunk, with masked products inside a chunk:
// O(L (Dv + 2) + segments x m) extra memory per head, never an L x m or m x d per-row
// matrix. Then dx = sum_f (dphi_f phi_f) d log phi_f / dx for each row.
#pragma once

#include <cstddef>

#include "core/favor.h"

namespace pa {

struct FavorGradients {
  float* dq = nullptr;  // [batch, heads, q_len, d], overwritten
  float* dk = nullptr;  // [batch, heads, k_len, d], overwritten
  float* dv = nullptr;  // [batch, heads, k_len, Dv], overwritten
  // Optional: [m, d], overwritten with the gradient summed over every (batch, head).
  float* dprojection = nullptr;
};

// Throws InputError for what the backward pass does not cover (trig and adaptive
// kernels, epsilon != 0, decoding states, causal attention with q_len != k_len) and
// for non-finite inputs or output gradients. Bits do not depend on the pool size.
void favor_attention_backward(const AttentionDims& dims, const float* q, const float* k,
                              const float* v, const float* grad_out, const FavorOptions& options,
                              const FavorGradients& grads, const KernelSet& kernels,
                              ThreadPool& pool);

}  // namespace pa
