// Backward pass of exact softmax attention (softmax_attention.h), flash-attention
// style: nothing of size q_len x k_len is ever stored. A first pass recomputes each
// query row's softmax statistics (row max, row sum) and D_i = dout_i . out_i; a
// second pass walks key blocks and, inside each, query blocks, recomputing the
// probabilities tile by tile from those statistics.
//
// Per (batch, head), with s_ij = scale q_i.k_j over the attended pairs, P = softmax_j(s),
// out = P v and G = dL/dout:
//   D_i = G_i . out_i          dV_j = sum_i P_ij G_i        dP_ij = G_i . v_j
//   dS_ij = P_ij (dP_ij - D_i) dQ_i = scale sum_j dS_ij k_j  dK_j = scale sum_i dS_ij q_i
// A query that attends no key contributes nothing (its out is a zero row); a key no
// query attends gets zero dk and dv.
//
// Extra memory: per-thread tiles (O(block^2)), three floats per query row, and when a
// call has few (batch, head) pairs, one dq partial per extra part of a head.
// The result bits do not depend on the pool's thread count.
#pragma once

#include "core/softmax_attention.h"

namespace pa {

// Same shapes as q, k and v; every element is overwritten. None may alias an input.
struct SoftmaxGradients {
  float* dq;
  float* dk;
  float* dv;
};

// Gradients of sum(grad_out * softmax_attention(q, k, v)) with respect to q, k, v, for
// the same dims and options as the forward call (causal, key_padding, scale, cancel).
// Throws InputError for non-finite inputs (naming "query", "key", "value" or
// "gradOut") or magnitudes that would overflow float32, Cancelled when the cancel
// flag is set (the gradients are then unspecified).
void softmax_attention_backward(const AttentionDims& dims, const float* q, const float* k,
                                const float* v, const float* grad_out,
                                const SoftmaxOptions& options, const SoftmaxGradients& grads,
                                const KernelSet& kernels, ThreadPool& pool);

}  // namespace pa
