// Exact softmax attention, blockwise with an online (running max, running sum)
// softmax: extra memory is O(block^2) per thread, never O(q_len * k_len).
#pragma once

#include <cstdint>

#include "core/attention_common.h"
#include "core/thread_pool.h"
#include "kernels/kernels.h"

namespace pa {

struct SoftmaxOptions {
  bool causal = false;                        // key j attends query i when j <= i + (k_len - q_len)
  const std::uint8_t* key_padding = nullptr;  // [batch, k_len], nonzero = attend
  float scale = 0.0f;  // multiplies q.k; must be finite (the bindings pass 1/sqrt(d) by default)
  const std::atomic<bool>* cancel = nullptr;  // checked between blocks; set = throw Cancelled
};

// out = softmax(q k^T * scale + mask) v. A query that attends no key gets a zero row.
void softmax_attention(const AttentionDims& dims, const float* q, const float* k, const float* v,
                       float* out, const SoftmaxOptions& options, const KernelSet& kernels,
                       ThreadPool& pool);

}  // namespace pa
