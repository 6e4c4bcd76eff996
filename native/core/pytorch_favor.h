// FAVOR+ with performer-pytorch 1.1.4's numerics (its FastAttention), so that a model
// trained with that package gives here the outputs it gave in Python. This is not the
// library's own FAVOR+ (favor.h): the epsilons below change the function, and the key
// stabilizer M makes every row depend on the largest key feature of the whole call.
//
// Features, with c = d^-1/4, u = c x W^T (m values), s = c^2 ||x||^2 / 2, r = m^-1/2:
//   softmax        query  r (exp(u - s - max_f u) + 1e-4)
//                  key    r (exp(u - s - M) + 1e-4), M = max of u over every key row
//                         and feature of the call, per (batch, head)
//   relu           relu(u) + 1e-3, queries and keys
//   no projection  query: softmax over its d entries; key: exp(k) when causal, else a
//                  softmax over the keys, per entry
// Attention: out_i = q'_i S / q'_i z, S = sum_j k'_j v_j^T and z = sum_j k'_j over every
// key (bidirectional) or over j <= i with 1e-6 added to every entry of z (causal). A key
// that is not kept has its value zeroed; its features stay in z.
//
// Decoding: a key feature splits as k'_j = r (e_j + eps), where only e_j depends on M.
// A state keeps S_e = sum_j e_j v_j^T and z_e = sum_j e_j relative to its M, the sum of
// the (zeroed when masked) values and the key count; when M rises, S_e and z_e are
// rescaled by exp(M_old - M_new), which reproduces a recompute of this attention over
// the whole prefix up to rounding.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

#include "core/attention_common.h"
#include "core/thread_pool.h"
#include "kernels/kernels.h"

namespace pa {

enum class PytorchFeatures { kSoftmax, kRelu, kNoProjection };

struct PytorchFavorOptions {
  PytorchFeatures features = PytorchFeatures::kSoftmax;
  // d x m: d^-1/4 W^T (pack_projection of the m x d projection); softmax and relu.
  const float* packed_projection = nullptr;
  std::size_t num_features = 0;  // m; no projection: d
  bool causal = false;
  // [batch, k_len], nonzero = keep; null keeps every key.
  const std::uint8_t* keep = nullptr;
  // No projection, bidirectional only (the library's 'exact' numerics): the softmax over
  // the keys runs over kept keys only, and keys not kept leave the sums.
  bool drop_masked_keys = false;
  // Causal: one state per (batch, head), pytorch_favor_state_floats() each. The call
  // continues from it (q_len = k_len, the keys after those absorbed) and advances it; a
  // reset state starts a sequence. Left unchanged when the call throws.
  float* state = nullptr;
  // Set to 1 (never cleared) when a state that already held keys had its M raised.
  std::uint8_t* max_rose = nullptr;
  // The m x d projection itself: only the backward pass reads it.
  const float* projection = nullptr;
  const std::atomic<bool>* cancel = nullptr;
};

std::size_t pytorch_favor_feature_count(const PytorchFavorOptions& options, std::size_t head_dim);
std::size_t pytorch_favor_state_floats(std::size_t feature_count, std::size_t value_dim);
void pytorch_favor_state_reset(float* state, std::size_t heads, std::size_t feature_count,
                               std::size_t value_dim);

// out [batch, heads, q_len, value_dim]. Throws InputError for non-finite inputs and for
// outputs that overflow float32 (possible only with no projection: exp(k) is not
// stabilized in performer-pytorch).
void pytorch_favor_attention(const AttentionDims& dims, const float* q, const float* k,
                             const float* v, float* out, const PytorchFavorOptions& options,
                             const KernelSet& kernels, ThreadPool& pool);

// Gradients of pytorch_favor_attention (softmax and relu features; no decoding state) with
// respect to q, k and v, overwritten. The stabilizers (each query row's max of u, the
// call's key maximum M) are constants, as performer-pytorch detaches them; the values of
// masked keys get zero gradients (they were zeroed), their features stay in the normalizer.
void pytorch_favor_backward(const AttentionDims& dims, const float* q, const float* k,
                            const float* v, const float* grad_out,
                            const PytorchFavorOptions& options, float* dq, float* dk, float* dv,
                            const KernelSet& kernels, ThreadPool& pool);

}  // namespace pa
