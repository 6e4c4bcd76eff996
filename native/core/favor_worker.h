// The per-(batch, head) half of FAVOR attention: the running key state of one
// head and FavorWorker, which absorbs keys into a state and emits query outputs
// from it. favor.cc decides which rows of which head each call covers and on
// which thread; keeping the arithmetic here leaves it only the scheduling.
// Internal to the core.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <limits>

#include "core/attention_common.h"
#include "core/favor.h"
#include "core/feature_map.h"
#include "core/memory.h"
#include "kernels/kernels.h"

namespace pa {
namespace favor_internal {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();
// Rows per block of the bidirectional passes, forward and backward.
constexpr std::size_t kBlockRows = 64;
// Inside a causal chunk, query features may exceed 1 by at most exp(kMaxChunkGap)
// (see FavorWorker::causal_rows); past that the chunk is split in two, in the forward
// and the backward pass alike.
constexpr float kMaxChunkGap = 40.0f;

// The running key statistics of one (batch, head), relative to a per-feature
// reference c (b_jf = exp(zk_jf - c_f)):
//   s[f * Dv + e] = sum_j b_jf v_je,  z[f] = sum_j b_jf
//   values[e] = sum_j v_je, values[Dv] = number of keys (epsilon only)
// over the attended (unpadded) keys absorbed so far.
struct StateView {
  float* s;
  float* z;
  float* c;
  float* values;
};

struct StateLayout : CarvedLayout<StateLayout> {
  StateLayout(std::size_t F, std::size_t Dv) : F(F), Dv(Dv) {}
  std::size_t F, Dv;
  StateView carve(Carver& at) const {
    float* s = at.take(F * Dv);
    float* z = at.take(F);
    float* c = at.take(F);
    return {s, z, c, at.take(Dv + 1)};
  }
  void reset(const StateView& st) const {
    std::fill(st.s, st.s + F * Dv, 0.0f);
    std::fill(st.z, st.z + F, 0.0f);
    std::fill(st.c, st.c + F, kNegInf);
    std::fill(st.values, st.values + Dv + 1, 0.0f);
  }
  // dst <- the state of dst's keys and src's keys together.
  void merge(const StateView& dst, const StateView& src) const;
};

// Scratch of one thread and the operations on a state; the driver in favor.cc
// decides which rows of which head each call covers.
//
// Epsilon. With epsilon > 0, query row i uses the stabilized features
//   a_if + eps = exp(zq_if + p_f - m_i) + eps   and   b_jf + eps = exp(zk_jf - p_f) + eps,
// where p_f is the max over the keys row i attends (so a causal row never depends
// on keys it cannot see). Expanding the product, the state only needs the exact
// parts (s) plus the sum of attended values and their count:
//   num_i = sum_f (a_if + eps) S_f + eps (sum_f a_if + eps F) sum_j v_j
// and likewise for the normalizer. When the state is kept relative to a larger
// reference c_f, the query feature becomes (a_if + eps) exp(c_f - p_f).
class FavorWorker {
 public:
  FavorWorker(const AttentionDims& dims, const FavorOptions& options,
              const FeatureEvaluator& features, const KernelSet& kernels);

  // The feature map of the head the next calls work on (adaptive kernels have one
  // per head; every one has the same feature count and scratch needs).
  void use(const FeatureEvaluator& features) { features_ = &features; }

  // Keys [j_begin, j_end) of one head into st, block by block.
  void absorb(const StateView& st, const float* k, const float* v, const std::uint8_t* pad,
              std::size_t j_begin, std::size_t j_end);

  // Outputs of query rows [i_begin, i_end) of one head against the finished state.
  void emit(const StateView& st, const float* q, float* out, std::size_t i_begin,
            std::size_t i_end);

  // Causal outputs of query rows [i_begin, i_end) of one head, whose keys are
  // j = i + offset; st holds every attended key before key i_begin + offset and
  // is advanced past the last one.
  void causal(const StateView& st, const float* q, const float* k, const float* v, float* out,
              const std::uint8_t* pad, std::size_t i_begin, std::size_t i_end, long long offset);

 private:
  static bool attends(const std::uint8_t* pad, std::size_t j) {
    return pad == nullptr || pad[j] != 0;
  }

  // Log-features of key rows [j0, j0 + n) into zk_; padded keys get -inf (feature 0).
  void key_log_features(const float* k, const std::uint8_t* pad, std::size_t j0, std::size_t n);

  // Raises the state's reference c to new_c (elementwise max), rescaling the rows
  // of s so that it stays expressed relative to c. Also refreshes neg_c_.
  void raise_reference(const StateView& st, const float* new_c);

  // kf_ rows [r0, r1) = stabilized key features b_j from zk_ (relative to c).
  void key_features(const StateView& st, std::size_t r0, std::size_t r1);

  // qf_ row r: the query features against the reference c (the state's), for a
  // row whose own reference is `own` (c itself when bidirectional) and whose
  // largest log-term is m. Sets row_eps_[r] = eps (sum_f a_rf + eps F).
  void query_features(const float* c, std::size_t r, float m, const float* own);

  // st.s += kf_[r0..r1)^T v_rows and st.z += column sums of kf_[r0..r1) (v_rows is
  // row r0's value; row r is key j0 + r); value sums for epsilon.
  void accumulate(const StateView& st, const float* v_rows, const std::uint8_t* pad, std::size_t j0,
                  std::size_t r0, std::size_t r1);

  // out_row holds the numerator; makes it (num + w sums[:Dv]) / (den + w sums[Dv]).
  // A row whose normalizer is zero (it attends no key) or whose result is not
  // finite (only possible with `trig` features, whose normalizer can cancel) gets zeros.
  void finish_row(float* out_row, float den, float w, const float* sums) const;

  // Chunk rows [r0, r1): query row r attends the state and chunk keys r0..r;
  // the chunk is split in two where features would leave float range.
  void causal_rows(const StateView& st, const float* v_chunk, float* out_chunk,
                   const std::uint8_t* pad, std::size_t j0, std::size_t r0, std::size_t r1);

  const AttentionDims& dims_;
  const FavorOptions& options_;
  const FeatureEvaluator* features_;
  const KernelSet& kernels_;
  const std::size_t F_, Dv_, rows_;
  const float eps_;
  // Views into this thread's scratch.
  float *zk_, *zq_, *sk_, *sq_, *kf_, *qf_, *work_, *kf_t_, *scores_, *ones_;
  float *row_eps_, *neg_c_, *chunk_max_, *prefix_max_, *running_values_;
};

}  // namespace favor_internal
}  // namespace pa
