// Local (windowed) softmax attention, as performer-pytorch's local heads compute it
// with local-attention 1.4.3 (window w, one window of look-back, one of look-ahead
// when not causal).
//
// Query i, in window b = i / w, sees the keys of windows b - 1 and b (and b + 1 when
// not causal), only keys j <= i when causal; scores q.k / sqrt(d), softmax, weighted
// sum of values. Keys not kept (keep mask) are hidden.
//
// With pytorch_numerics, also what local-attention 1.4.3 does at the edges:
// - the sequence is padded with zero rows to a multiple of w; without a mask and not
//   causal, those padding keys are visible (score 0, value 0: they only enlarge the
//   softmax's denominator, in the last two windows);
// - with a mask, a pair is hidden unless query and key are both kept, and a row with
//   no visible key gets the plain average of every value slot of its look-around:
//   real values, 0 for padding rows, -1 for slots before the start or after the padding.
// Without it (the library's 'exact' numerics) padding never exists, the mask hides keys
// only, and a row with no visible key is zero.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

#include "core/attention_common.h"
#include "core/thread_pool.h"
#include "kernels/kernels.h"

namespace pa {

struct LocalAttentionOptions {
  std::size_t window = 0;  // w
  bool causal = false;
  const std::uint8_t* keep = nullptr;  // [batch, len], nonzero = keep; null keeps every key
  bool pytorch_numerics = false;
  // Decoding (causal, no mask): per (batch, head), the keys and values of the last 2w
  // positions, local_ring_floats() floats each (slot p % 2w holds position p). Rows of
  // the call are at positions start, start + 1, ...; the ring must hold every position
  // before start that they see, and is left holding the call's last positions.
  float* ring = nullptr;
  std::size_t start = 0;
  const std::atomic<bool>* cancel = nullptr;
};

std::size_t local_ring_floats(std::size_t window, std::size_t head_dim, std::size_t value_dim);

// q, k [batch, heads, len, d], v and out [batch, heads, len, Dv] (q_len = k_len = len).
// Throws InputError for non-finite inputs.
void local_attention(const AttentionDims& dims, const float* q, const float* k, const float* v,
                     float* out, const LocalAttentionOptions& options, const KernelSet& kernels,
                     ThreadPool& pool);

// Gradients of local_attention (no ring) with respect to q, k and v, given grad_out =
// dL/d out [batch, heads, len, Dv]: each window's scores and softmax are recomputed, then
//   dv += P^T g,  dS = P * (g V^T - rowsum(P * g V^T)),  dq = dS K / sqrt(d),  dk += dS^T Q /
//   sqrt(d)
// (local-attention's visible padding keys only enlarge the denominators; a row with no
// visible key under pytorch_numerics, the mean of its value slots, sends g / slots to each
// real value of its look-around). dq, dk, dv are overwritten and must not overlap the
// inputs. Throws InputError for non-finite inputs or output gradients.
void local_attention_backward(const AttentionDims& dims, const float* q, const float* k,
                              const float* v, const float* grad_out, float* dq, float* dk,
                              float* dv, const LocalAttentionOptions& options,
                              const KernelSet& kernels, ThreadPool& pool);

}  // namespace pa
