#include "core/favor_worker.h"

#include <algorithm>
#include <cmath>

namespace pa {
namespace favor_internal {

void StateLayout::merge(const StateView& dst, const StateView& src) const {
  for (std::size_t f = 0; f < F; ++f) {
    if (src.c[f] == kNegInf) continue;  // src has nothing in this feature
    float* d_row = dst.s + f * Dv;
    const float* s_row = src.s + f * Dv;
    if (dst.c[f] >= src.c[f]) {
      const float factor = std::exp(src.c[f] - dst.c[f]);
      for (std::size_t e = 0; e < Dv; ++e) d_row[e] += factor * s_row[e];
      dst.z[f] += factor * src.z[f];
    } else {
      const float factor = dst.c[f] == kNegInf ? 0.0f : std::exp(dst.c[f] - src.c[f]);
      for (std::size_t e = 0; e < Dv; ++e) d_row[e] = factor * d_row[e] + s_row[e];
      dst.z[f] = factor * dst.z[f] + src.z[f];
      dst.c[f] = src.c[f];
    }
  }
  for (std::size_t e = 0; e <= Dv; ++e) dst.values[e] += src.values[e];
}

FavorWorker::FavorWorker(const AttentionDims& dims, const FavorOptions& options,
                         const FeatureEvaluator& features, const KernelSet& kernels)
    : dims_(dims),
      options_(options),
      features_(&features),
      kernels_(kernels),
      F_(features.feature_count()),
      Dv_(dims.value_dim),
      rows_(options.causal ? std::min(options.chunk_size, kMaxChunkSize) : kBlockRows),
      eps_(options.epsilon) {
  const std::size_t R = rows_, F = F_;
  const bool causal = options.causal, signs = features.is_signed();
  auto layout = [&](Carver& carve) {
    zk_ = carve.take(R * F);
    zq_ = carve.take(R * F);
    sk_ = signs ? carve.take(R * F) : nullptr;
    sq_ = signs ? carve.take(R * F) : nullptr;
    kf_ = carve.take(R * F);
    qf_ = carve.take(R * F);
    work_ = carve.take(R * std::max(features.work_per_row(), F));
    kf_t_ = causal ? carve.take(F * R) : nullptr;
    scores_ = causal ? carve.take(R * R) : nullptr;
    for (float** p : {&ones_, &row_eps_}) *p = carve.take(R);
    for (float** p : {&neg_c_, &chunk_max_, &prefix_max_}) *p = carve.take(F);
    running_values_ = carve.take(Dv_ + 1);
  };
  Carver at(thread_scratch(carved_floats(layout)));
  layout(at);
  std::fill(ones_, ones_ + R, 1.0f);
}

void FavorWorker::absorb(const StateView& st, const float* k, const float* v,
                         const std::uint8_t* pad, std::size_t j_begin, std::size_t j_end) {
  for (std::size_t j0 = j_begin; j0 < j_end; j0 += rows_) {
    check_cancel(options_.cancel);
    const std::size_t n = std::min(rows_, j_end - j0);
    key_log_features(k, pad, j0, n);
    std::copy(st.c, st.c + F_, chunk_max_);
    for (std::size_t r = 0; r < n; ++r) kernels_.max_accumulate(F_, zk_ + r * F_, chunk_max_);
    raise_reference(st, chunk_max_);
    key_features(st, 0, n);
    accumulate(st, v + j0 * Dv_, pad, j0, 0, n);
  }
}

void FavorWorker::emit(const StateView& st, const float* q, float* out, std::size_t i_begin,
                       std::size_t i_end) {
  for (std::size_t i0 = i_begin; i0 < i_end; i0 += rows_) {
    check_cancel(options_.cancel);
    const std::size_t n = std::min(rows_, i_end - i0);
    features_->log_features(q + i0 * dims_.head_dim, n, zq_, sq_, work_);
    for (std::size_t r = 0; r < n; ++r) {
      query_features(st.c, r, kernels_.max_bias(F_, zq_ + r * F_, st.c), st.c);
    }
    float* out_rows = out + i0 * Dv_;
    kernels_.gemm(n, Dv_, F_, qf_, F_, 1, st.s, Dv_, out_rows, Dv_, false);
    for (std::size_t r = 0; r < n; ++r) {
      finish_row(out_rows + r * Dv_, kernels_.dot(F_, qf_ + r * F_, st.z), row_eps_[r], st.values);
    }
  }
}

void FavorWorker::causal(const StateView& st, const float* q, const float* k, const float* v,
                         float* out, const std::uint8_t* pad, std::size_t i_begin,
                         std::size_t i_end, long long offset) {
  for (std::size_t i0 = i_begin; i0 < i_end; i0 += rows_) {
    check_cancel(options_.cancel);
    const std::size_t n = std::min(rows_, i_end - i0);
    const std::size_t j0 = static_cast<std::size_t>(static_cast<long long>(i0) + offset);
    key_log_features(k, pad, j0, n);
    features_->log_features(q + i0 * dims_.head_dim, n, zq_, sq_, work_);
    causal_rows(st, v + j0 * Dv_, out + i0 * Dv_, pad, j0, 0, n);
  }
}

void FavorWorker::key_log_features(const float* k, const std::uint8_t* pad, std::size_t j0,
                                   std::size_t n) {
  features_->log_features(k + j0 * dims_.head_dim, n, zk_, sk_, work_);
  for (std::size_t r = 0; r < n; ++r) {
    if (!attends(pad, j0 + r)) std::fill(zk_ + r * F_, zk_ + (r + 1) * F_, kNegInf);
  }
}

void FavorWorker::raise_reference(const StateView& st, const float* new_c) {
  for (std::size_t f = 0; f < F_; ++f) {
    if (new_c[f] > st.c[f]) {
      if (st.c[f] != kNegInf) {
        const float factor = std::exp(st.c[f] - new_c[f]);
        float* row = st.s + f * Dv_;
        for (std::size_t e = 0; e < Dv_; ++e) row[e] *= factor;
        st.z[f] *= factor;
      }
      st.c[f] = new_c[f];
    }
    neg_c_[f] = st.c[f] == kNegInf ? 0.0f : -st.c[f];
  }
}

void FavorWorker::key_features(const StateView& st, std::size_t r0, std::size_t r1) {
  for (std::size_t r = r0; r < r1; ++r) {
    float* kf = kf_ + r * F_;
    kernels_.exp_bias(F_, zk_ + r * F_, neg_c_, 0.0f, kf);
    if (sk_ != nullptr) {
      for (std::size_t f = 0; f < F_; ++f) kf[f] *= sk_[r * F_ + f];
    }
  }
}

void FavorWorker::query_features(const float* c, std::size_t r, float m, const float* own) {
  float* qf = qf_ + r * F_;
  if (m == kNegInf) {
    std::fill(qf, qf + F_, 0.0f);  // no feature of this row meets any key feature
  } else {
    kernels_.exp_bias(F_, zq_ + r * F_, c, -m, qf);
    if (sq_ != nullptr) {
      for (std::size_t f = 0; f < F_; ++f) qf[f] *= sq_[r * F_ + f];
    }
  }
  row_eps_[r] = 0.0f;
  if (eps_ == 0.0f) return;
  double a_sum = 0.0;
  if (m != kNegInf) {
    kernels_.exp_bias(F_, zq_ + r * F_, own, -m, work_);
    for (std::size_t f = 0; f < F_; ++f) a_sum += work_[f];
  }
  for (std::size_t f = 0; f < F_; ++f) {
    // eps exp(c_f - own_f); a feature no attended key has (own_f = -inf) is unused.
    if (own[f] != kNegInf) qf[f] += eps_ * std::exp(c[f] - own[f]);
  }
  row_eps_[r] = static_cast<float>(eps_ * (a_sum + static_cast<double>(eps_) * F_));
}

void FavorWorker::accumulate(const StateView& st, const float* v_rows, const std::uint8_t* pad,
                             std::size_t j0, std::size_t r0, std::size_t r1) {
  const std::size_t n = r1 - r0;
  if (n == 0) return;
  kernels_.gemm(F_, Dv_, n, kf_ + r0 * F_, 1, F_, v_rows, Dv_, st.s, Dv_, true);
  kernels_.gemm(1, F_, n, ones_, 0, 1, kf_ + r0 * F_, F_, st.z, F_, true);
  if (eps_ == 0.0f) return;
  for (std::size_t r = r0; r < r1; ++r) {
    if (!attends(pad, j0 + r)) continue;
    const float* vr = v_rows + (r - r0) * Dv_;
    for (std::size_t e = 0; e < Dv_; ++e) st.values[e] += vr[e];
    st.values[Dv_] += 1.0f;
  }
}

void FavorWorker::finish_row(float* out_row, float den, float w, const float* sums) const {
  if (w != 0.0f) den += w * sums[Dv_];
  bool ok = den != 0.0f && std::isfinite(den);
  if (ok) {
    const float inv = 1.0f / den;
    if (w != 0.0f) {
      for (std::size_t e = 0; e < Dv_; ++e) out_row[e] = (out_row[e] + w * sums[e]) * inv;
    } else {
      for (std::size_t e = 0; e < Dv_; ++e) out_row[e] *= inv;
    }
    // x * 0 is 0 for finite x and NaN otherwise: one check for the row, in loops
    // without an early exit and with four independent sums, which vectorize.
    float p[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    std::size_t e = 0;
    for (; e + 4 <= Dv_; e += 4) {
      for (std::size_t l = 0; l < 4; ++l) p[l] += out_row[e + l] * 0.0f;
    }
    for (; e < Dv_; ++e) p[0] += out_row[e] * 0.0f;
    ok = (p[0] + p[1]) + (p[2] + p[3]) == 0.0f;
  }
  if (!ok) std::fill(out_row, out_row + Dv_, 0.0f);
}

// Chunk rows [r0, r1): query row r attends the state and chunk keys r0..r.
//
// Each row's reference is the prefix max p_r of the keys up to r, and m_r =
// max_f (zq_rf + p_rf) is the largest log-term it can actually reach, so its
// normalizer is >= 1 for positive kernels. Features are formed against the
// chunk-end reference c >= p_r: query features are then bounded by exp(gap_r),
// gap_r = max_f (zq_rf + c_f) - m_r (and, with epsilon, max_f (c_f - p_rf)).
// When a gap passes kMaxChunkGap the chunk is split in two (down to single rows,
// where the gaps are 0), so no feature overflows and no term that matters underflows.
// Query features are formed in the same pass as the gaps (against c, which the
// state's reference becomes below); a split discards them.
void FavorWorker::causal_rows(const StateView& st, const float* v_chunk, float* out_chunk,
                              const std::uint8_t* pad, std::size_t j0, std::size_t r0,
                              std::size_t r1) {
  const std::size_t n = r1 - r0;
  std::copy(st.c, st.c + F_, chunk_max_);  // becomes the chunk-end reference
  for (std::size_t r = r0; r < r1; ++r) kernels_.max_accumulate(F_, zk_ + r * F_, chunk_max_);
  std::copy(st.c, st.c + F_, prefix_max_);
  for (std::size_t r = r0; r < r1; ++r) {
    kernels_.max_accumulate(F_, zk_ + r * F_, prefix_max_);
    const float row_max = kernels_.max_bias(F_, zq_ + r * F_, prefix_max_);
    if (n > 1 && row_max != kNegInf) {
      float gap = kernels_.max_bias(F_, zq_ + r * F_, chunk_max_) - row_max;
      if (eps_ != 0.0f) {
        for (std::size_t f = 0; f < F_; ++f) {
          if (prefix_max_[f] != kNegInf) gap = std::max(gap, chunk_max_[f] - prefix_max_[f]);
        }
      }
      if (gap > kMaxChunkGap) {
        const std::size_t mid = r0 + n / 2;
        causal_rows(st, v_chunk, out_chunk, pad, j0, r0, mid);
        causal_rows(st, v_chunk, out_chunk, pad, j0, mid, r1);
        return;
      }
    }
    query_features(chunk_max_, r, row_max, prefix_max_);
  }
  raise_reference(st, chunk_max_);  // st.c becomes chunk_max_ (>= it everywhere)
  key_features(st, r0, r1);

  // scores = Q'_c K'_c^T, causal within the chunk; num = Q'_c S + scores V_c.
  // The chunk's rows in two bands, each against the keys up to its last row, so the
  // products skip the top-right quarter that the mask would zero.
  float* out_rows = out_chunk + r0 * Dv_;
  const float* v_rows = v_chunk + r0 * Dv_;
  kernels_.transpose(n, F_, kf_ + r0 * F_, F_, kf_t_, n);
  kernels_.gemm(n, Dv_, F_, qf_ + r0 * F_, F_, 1, st.s, Dv_, out_rows, Dv_, false);
  const std::size_t bounds[3] = {0, n >= 16 ? n / 2 : n, n};
  for (int b = 0; b < 2; ++b) {
    const std::size_t begin = bounds[b], end = bounds[b + 1];  // rows; keys [0, end)
    if (begin == end) continue;
    float* band = scores_ + begin * n;
    kernels_.gemm(end - begin, end, F_, qf_ + (r0 + begin) * F_, F_, 1, kf_t_, n, band, n, false);
    for (std::size_t r = begin; r < end; ++r) {
      float* row = band + (r - begin) * n;
      std::fill(row + r + 1, row + end, 0.0f);
    }
    kernels_.gemm(end - begin, Dv_, end, band, n, 1, v_rows, Dv_, out_rows + begin * Dv_, Dv_,
                  true);
  }
  // den = Q'_c z + scores 1 (row r's sum stops at column r).
  if (eps_ != 0.0f) std::copy(st.values, st.values + Dv_ + 1, running_values_);
  for (std::size_t r = 0; r < n; ++r) {
    if (eps_ != 0.0f && attends(pad, j0 + r0 + r)) {
      const float* vr = v_rows + r * Dv_;
      for (std::size_t e = 0; e < Dv_; ++e) running_values_[e] += vr[e];
      running_values_[Dv_] += 1.0f;
    }
    const float den =
        kernels_.dot(F_, qf_ + (r0 + r) * F_, st.z) + kernels_.dot(r + 1, scores_ + r * n, ones_);
    finish_row(out_rows + r * Dv_, den, row_eps_[r0 + r], running_values_);
  }
  accumulate(st, v_rows, pad, j0, r0, r1);
}

}  // namespace favor_internal
}  // namespace pa
