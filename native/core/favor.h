// FAVOR attention drivers: loop over (batch, head) pairs on the thread pool and,
// inside one head, over blocks of keys and queries. All arithmetic on blocks goes
// through the KernelSet handed in.
#pragma once

#include <cstddef>
#include <cstdint>

#include "core/attention_common.h"
#include "core/feature_map.h"
#include "core/thread_pool.h"
#include "kernels/kernels.h"

namespace pa {

// Rows per causal chunk: the largest allowed, and the default of C++ callers (the
// JavaScript API has its own default and always passes the value).
constexpr std::size_t kMaxChunkSize = 4096;
constexpr std::size_t kDefaultChunkSize = 32;

struct FavorOptions {
  FeatureMapSpec feature_map;
  bool causal = false;
  // [batch, k_len], nonzero = attend; null = every key attends. A padded key's
  // feature row is zero: it leaves both the numerator and the normalizer.
  const std::uint8_t* key_padding = nullptr;
  // Added to every stabilized feature of queries and keys (0 = exact estimator);
  // the stabilizer of each query row is the max over the keys it attends. Finite, >= 0.
  float epsilon = 0.0f;
  // Rows per causal chunk (1 = the recurrent form). Results do not depend on it
  // beyond rounding. 1 to kMaxChunkSize when causal.
  std::size_t chunk_size = kDefaultChunkSize;
  // Checked between blocks; when set the call throws Cancelled. Null = never.
  const std::atomic<bool>* cancel = nullptr;
  // Causal continuation (token-by-token decoding, prefill in chunks): the running
  // state of every (batch, head), favor_state_floats() floats each, made by
  // favor_state_reset(). The call attends these earlier keys as well as its own
  // (q_len must equal k_len) and leaves the state advanced past its keys. The
  // state is left unchanged when the call throws. Null = start from no keys.
  float* state = nullptr;
  // Bidirectional attention in two halves (a decoder's cross-attention over a fixed
  // memory: the keys once, the queries token by token). With absorb_into set, the
  // call only absorbs its keys (q_len must be 0; q and out are unused) into one
  // state per (batch, head), favor_state_floats() floats each, overwriting them
  // (key padding and epsilon apply as in the full call). With keys_state set, the
  // call emits its queries' outputs against such states and absorbs nothing (k_len
  // must be 0; k, v and key_padding are unused). Emitting against the absorbed
  // states equals the bidirectional call on those keys up to rounding. Adaptive
  // kernels need fixed parameters for either (the halves must share features).
  // absorb_into is left unchanged when the call throws.
  float* absorb_into = nullptr;
  const float* keys_state = nullptr;
};

// Floats of one (batch, head) decoding state: S (F x Dv), z (F), the per-feature
// reference c (F) and the value sums used by epsilon (Dv + 1), each padded.
std::size_t favor_state_floats(std::size_t feature_count, std::size_t value_dim);
// Sets `heads` consecutive states to "no keys yet".
void favor_state_reset(float* state, std::size_t heads, std::size_t feature_count,
                       std::size_t value_dim);

// Throws InputError unless the options' epsilon and (causal) chunk size are in range:
// the checks favor_attention and favor_backward share.
void check_favor_numbers(const FavorOptions& options);

// out[batch, heads, q_len, value_dim]. Causal: query i attends key j when
// j <= i + (k_len - q_len). A query that attends no key gets a zero row.
// Throws InputError for non-finite or oversized inputs.
void favor_attention(const AttentionDims& dims, const float* q, const float* k, const float* v,
                     float* out, const FavorOptions& options, const KernelSet& kernels,
                     ThreadPool& pool);

}  // namespace pa
