#include "core/favor.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>
#include <sstream>
#include <vector>

#include "core/head_loop.h"

namespace pa {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();
constexpr std::size_t kBlockRows = 64;  // rows per block of the bidirectional passes
// Inside a causal chunk, query features may exceed 1 by at most exp(kMaxChunkGap)
// (see process_causal_rows); past that the chunk is split in two.
constexpr float kMaxChunkGap = 40.0f;

// Divides each row of num by its normalizer. A row whose normalizer is zero (it
// attends no key) or whose result is not finite (only possible with `trig`
// features, whose normalizer can cancel) is returned as zeros.
void normalize_rows(float* out, std::size_t rows, std::size_t width, const float* den) {
  for (std::size_t r = 0; r < rows; ++r) {
    float* row = out + r * width;
    bool ok = den[r] != 0.0f && std::isfinite(den[r]);
    if (ok) {
      const float inv = 1.0f / den[r];
      for (std::size_t i = 0; i < width; ++i) {
        row[i] *= inv;
        ok = ok && std::isfinite(row[i]);
      }
    }
    if (!ok) std::fill(row, row + width, 0.0f);
  }
}

// State and scratch of one thread; run() computes one (batch, head) pair.
//
// Epsilon. With epsilon > 0, query row i uses the stabilized features
//   a_if + eps = exp(zq_if + c_f - m_i) + eps   and   b_jf + eps = exp(zk_jf - c_f) + eps,
// where c_f is the max over the keys row i attends (so a causal row never depends
// on keys it cannot see). Expanding the product, the running state only needs the
// exact parts S = sum_j b_j v_j^T, z = sum_j b_j, plus sum_j v_j and the key count:
//   num_i = sum_f (a_if + eps) S_f + eps (sum_f a_if + eps F) sum_j v_j
// and likewise for the normalizer. When the state is kept relative to a larger
// reference c'_f, the query feature becomes (a_if + eps) exp(c'_f - c_f).
class FavorHead {
 public:
  FavorHead(const AttentionDims& dims, const FavorOptions& options, const FeatureEvaluator& features,
            const KernelSet& kernels)
      : dims_(dims),
        options_(options),
        features_(features),
        kernels_(kernels),
        F_(features.feature_count()),
        Dv_(dims.value_dim),
        rows_(options.causal ? std::min(options.chunk_size, kMaxChunkSize) : kBlockRows),
        eps_(options.epsilon) {
    const std::size_t signs = features.is_signed() ? rows_ * F_ : 0;
    zk_.resize(rows_ * F_);
    zq_.resize(rows_ * F_);
    sk_.resize(signs);
    sq_.resize(signs);
    kf_.resize(rows_ * F_);
    qf_.resize(rows_ * F_);
    work_.resize(rows_ * std::max(features.work_per_row(), F_));
    if (options.causal) {
      kf_t_.resize(F_ * rows_);
      scores_.resize(rows_ * rows_);
    }
    row_max_.resize(rows_);
    row_eps_.resize(rows_);
    den_.resize(rows_);
    state_.resize(F_ * Dv_);
    state_sum_.resize(F_);
    value_sum_.resize(Dv_);
    c_.resize(F_);
    neg_c_.resize(F_);
    scratch_max_.resize(F_);
    prefix_max_.resize(F_);
  }

  void run(const float* q, const float* k, const float* v, float* out, const std::uint8_t* pad) {
    std::fill(state_.begin(), state_.end(), 0.0f);
    std::fill(state_sum_.begin(), state_sum_.end(), 0.0f);
    std::fill(value_sum_.begin(), value_sum_.end(), 0.0);
    key_count_ = 0.0;
    std::fill(c_.begin(), c_.end(), kNegInf);
    std::fill(neg_c_.begin(), neg_c_.end(), 0.0f);
    if (options_.causal) {
      run_causal(q, k, v, out, pad);
    } else {
      absorb_keys(k, v, pad, 0, dims_.k_len);
      emit_queries(q, out, 0, dims_.q_len);
    }
  }

 private:
  float* sign_or_null(std::vector<float>& s) { return s.empty() ? nullptr : s.data(); }
  static bool attends(const std::uint8_t* pad, std::size_t j) { return pad == nullptr || pad[j] != 0; }

  // Log-features of key rows [j0, j0 + n) into zk_; padded keys get -inf (feature 0).
  void key_log_features(const float* k, const std::uint8_t* pad, std::size_t j0, std::size_t n) {
    features_.log_features(k + j0 * dims_.head_dim, n, zk_.data(), sign_or_null(sk_), work_.data());
    for (std::size_t r = 0; r < n; ++r) {
      if (!attends(pad, j0 + r)) std::fill(&zk_[r * F_], &zk_[r * F_] + F_, kNegInf);
    }
  }

  // Raises the per-feature reference c to new_c (elementwise max), rescaling the
  // rows of the running state so that it stays expressed relative to c.
  void raise_reference(const float* new_c) {
    for (std::size_t f = 0; f < F_; ++f) {
      if (!(new_c[f] > c_[f])) continue;
      if (c_[f] != kNegInf) {
        const float factor = std::exp(c_[f] - new_c[f]);
        float* row = &state_[f * Dv_];
        for (std::size_t i = 0; i < Dv_; ++i) row[i] *= factor;
        state_sum_[f] *= factor;
      }
      c_[f] = new_c[f];
      neg_c_[f] = -c_[f];
    }
  }

  // kf_ rows [r0, r1) = stabilized key features b_j from zk_ (relative to c).
  void key_features(std::size_t r0, std::size_t r1) {
    for (std::size_t r = r0; r < r1; ++r) {
      float* kf = &kf_[r * F_];
      kernels_.exp_bias(F_, &zk_[r * F_], neg_c_.data(), 0.0f, kf);
      if (!sk_.empty()) {
        for (std::size_t f = 0; f < F_; ++f) kf[f] *= sk_[r * F_ + f];
      }
    }
  }

  // qf_ row r: the query features against the state's reference c (= c_), for a
  // row whose own reference is `own` (c itself when bidirectional) and whose
  // largest log-term is m. Sets row_eps_[r] = eps (sum_f a_rf + eps F).
  void query_features(std::size_t r, float m, const float* own) {
    float* qf = &qf_[r * F_];
    if (m == kNegInf) {
      std::fill(qf, qf + F_, 0.0f);  // no feature of this row meets any key feature
    } else {
      kernels_.exp_bias(F_, &zq_[r * F_], c_.data(), -m, qf);
      if (!sq_.empty()) {
        for (std::size_t f = 0; f < F_; ++f) qf[f] *= sq_[r * F_ + f];
      }
    }
    row_eps_[r] = 0.0f;
    if (eps_ == 0.0f) return;
    double a_sum = 0.0;
    if (m != kNegInf) {
      float* a = work_.data();
      kernels_.exp_bias(F_, &zq_[r * F_], own, -m, a);
      for (std::size_t f = 0; f < F_; ++f) a_sum += a[f];
    }
    for (std::size_t f = 0; f < F_; ++f) {
      // eps exp(c_f - own_f); a feature no attended key has (own_f = -inf) is unused.
      if (own[f] != kNegInf) qf[f] += eps_ * std::exp(c_[f] - own[f]);
    }
    row_eps_[r] = static_cast<float>(eps_ * (a_sum + static_cast<double>(eps_) * F_));
  }

  // state += kf_[r0..r1)^T v_rows (v_rows is row r0's value; row r is key j0 + r),
  // state_sum += column sums; value sums for epsilon.
  void accumulate_state(const float* v_rows, const std::uint8_t* pad, std::size_t j0, std::size_t r0,
                        std::size_t r1) {
    const std::size_t n = r1 - r0;
    if (n == 0) return;
    kernels_.gemm(F_, Dv_, n, &kf_[r0 * F_], 1, F_, v_rows, Dv_, state_.data(), Dv_, true);
    for (std::size_t r = r0; r < r1; ++r) {
      const float* kf = &kf_[r * F_];
      for (std::size_t f = 0; f < F_; ++f) state_sum_[f] += kf[f];
      if (eps_ != 0.0f && attends(pad, j0 + r)) {
        const float* vr = v_rows + (r - r0) * Dv_;
        for (std::size_t e = 0; e < Dv_; ++e) value_sum_[e] += vr[e];
        key_count_ += 1.0;
      }
    }
  }

  // Keys [j_begin, j_end) into the running state, block by block.
  void absorb_keys(const float* k, const float* v, const std::uint8_t* pad, std::size_t j_begin,
                   std::size_t j_end) {
    for (std::size_t j0 = j_begin; j0 < j_end; j0 += rows_) {
      const std::size_t n = std::min(rows_, j_end - j0);
      key_log_features(k, pad, j0, n);
      std::copy(c_.begin(), c_.end(), scratch_max_.begin());
      for (std::size_t r = 0; r < n; ++r) kernels_.max_accumulate(F_, &zk_[r * F_], scratch_max_.data());
      raise_reference(scratch_max_.data());
      key_features(0, n);
      accumulate_state(v + j0 * Dv_, pad, j0, 0, n);
    }
  }

  // Outputs of query rows [i_begin, i_end) against the finished state (bidirectional).
  void emit_queries(const float* q, float* out, std::size_t i_begin, std::size_t i_end) {
    for (std::size_t i0 = i_begin; i0 < i_end; i0 += rows_) {
      const std::size_t n = std::min(rows_, i_end - i0);
      features_.log_features(q + i0 * dims_.head_dim, n, zq_.data(), sign_or_null(sq_), work_.data());
      for (std::size_t r = 0; r < n; ++r) {
        query_features(r, kernels_.max_bias(F_, &zq_[r * F_], c_.data()), c_.data());
      }
      float* out_rows = out + i0 * Dv_;
      kernels_.gemm(n, Dv_, F_, qf_.data(), F_, 1, state_.data(), Dv_, out_rows, Dv_, false);
      for (std::size_t r = 0; r < n; ++r) {
        double den = dot(&qf_[r * F_], state_sum_.data(), F_);
        if (eps_ != 0.0f) {
          float* row = out_rows + r * Dv_;
          for (std::size_t e = 0; e < Dv_; ++e) row[e] += static_cast<float>(row_eps_[r] * value_sum_[e]);
          den += row_eps_[r] * key_count_;
        }
        den_[r] = static_cast<float>(den);
      }
      normalize_rows(out_rows, n, Dv_, den_.data());
    }
  }

  static double dot(const float* a, const float* b, std::size_t n) {
    double sum = 0.0;
    for (std::size_t i = 0; i < n; ++i) sum += static_cast<double>(a[i]) * b[i];
    return sum;
  }

  void run_causal(const float* q, const float* k, const float* v, float* out, const std::uint8_t* pad) {
    const std::size_t Lq = dims_.q_len, Lk = dims_.k_len;
    // Query i sees keys j <= i + offset (bottom-right aligned).
    const long long offset = static_cast<long long>(Lk) - static_cast<long long>(Lq);
    const std::size_t prefix_keys = offset > 0 ? static_cast<std::size_t>(offset) : 0;
    const std::size_t blind_queries =
        offset < 0 ? std::min(Lq, static_cast<std::size_t>(-offset)) : 0;
    std::fill(out, out + blind_queries * Dv_, 0.0f);
    absorb_keys(k, v, pad, 0, prefix_keys);
    for (std::size_t i0 = blind_queries; i0 < Lq; i0 += rows_) {
      const std::size_t n = std::min(rows_, Lq - i0);
      const std::size_t j0 = static_cast<std::size_t>(static_cast<long long>(i0) + offset);
      key_log_features(k, pad, j0, n);
      features_.log_features(q + i0 * dims_.head_dim, n, zq_.data(), sign_or_null(sq_), work_.data());
      process_causal_rows(v + j0 * Dv_, out + i0 * Dv_, pad, j0, 0, n);
    }
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
  void process_causal_rows(const float* v_chunk, float* out_chunk, const std::uint8_t* pad,
                           std::size_t j0, std::size_t r0, std::size_t r1) {
    const std::size_t n = r1 - r0;
    std::copy(c_.begin(), c_.end(), scratch_max_.begin());  // becomes the chunk-end reference
    for (std::size_t r = r0; r < r1; ++r) kernels_.max_accumulate(F_, &zk_[r * F_], scratch_max_.data());
    std::copy(c_.begin(), c_.end(), prefix_max_.begin());
    for (std::size_t r = r0; r < r1; ++r) {
      kernels_.max_accumulate(F_, &zk_[r * F_], prefix_max_.data());
      row_max_[r] = kernels_.max_bias(F_, &zq_[r * F_], prefix_max_.data());
      if (n == 1 || row_max_[r] == kNegInf) continue;
      float gap = kernels_.max_bias(F_, &zq_[r * F_], scratch_max_.data()) - row_max_[r];
      if (eps_ != 0.0f) {
        for (std::size_t f = 0; f < F_; ++f) {
          if (prefix_max_[f] != kNegInf) gap = std::max(gap, scratch_max_[f] - prefix_max_[f]);
        }
      }
      if (gap > kMaxChunkGap) {
        const std::size_t mid = r0 + n / 2;
        process_causal_rows(v_chunk, out_chunk, pad, j0, r0, mid);
        process_causal_rows(v_chunk, out_chunk, pad, j0, mid, r1);
        return;
      }
    }
    std::copy(c_.begin(), c_.end(), prefix_max_.begin());  // the reference before this chunk
    raise_reference(scratch_max_.data());
    key_features(r0, r1);
    running_values_ = value_sum_;
    double running_count = key_count_;
    for (std::size_t r = r0; r < r1; ++r) {
      kernels_.max_accumulate(F_, &zk_[r * F_], prefix_max_.data());
      query_features(r, row_max_[r], prefix_max_.data());
    }

    // scores = Q'_c K'_c^T, causal within the chunk.
    for (std::size_t r = 0; r < n; ++r) {
      for (std::size_t f = 0; f < F_; ++f) kf_t_[f * n + r] = kf_[(r0 + r) * F_ + f];
    }
    kernels_.gemm(n, n, F_, &qf_[r0 * F_], F_, 1, kf_t_.data(), n, scores_.data(), n, false);
    for (std::size_t r = 0; r < n; ++r) {
      std::fill(&scores_[r * n] + r + 1, &scores_[r * n] + n, 0.0f);
    }
    // num = Q'_c S + scores V_c; den = Q'_c z + scores 1 (+ the epsilon terms).
    float* out_rows = out_chunk + r0 * Dv_;
    kernels_.gemm(n, Dv_, F_, &qf_[r0 * F_], F_, 1, state_.data(), Dv_, out_rows, Dv_, false);
    kernels_.gemm(n, Dv_, n, scores_.data(), n, 1, v_chunk + r0 * Dv_, Dv_, out_rows, Dv_, true);
    for (std::size_t r = 0; r < n; ++r) {
      double sum = dot(&qf_[(r0 + r) * F_], state_sum_.data(), F_);
      for (std::size_t j = 0; j <= r; ++j) sum += scores_[r * n + j];
      if (eps_ != 0.0f) {
        if (attends(pad, j0 + r0 + r)) {
          const float* vr = v_chunk + (r0 + r) * Dv_;
          for (std::size_t e = 0; e < Dv_; ++e) running_values_[e] += vr[e];
          running_count += 1.0;
        }
        float* row = out_rows + r * Dv_;
        const double w = row_eps_[r0 + r];
        for (std::size_t e = 0; e < Dv_; ++e) row[e] += static_cast<float>(w * running_values_[e]);
        sum += w * running_count;
      }
      den_[r] = static_cast<float>(sum);
    }
    normalize_rows(out_rows, n, Dv_, den_.data());
    accumulate_state(v_chunk + r0 * Dv_, pad, j0, r0, r1);
  }

  const AttentionDims& dims_;
  const FavorOptions& options_;
  const FeatureEvaluator& features_;
  const KernelSet& kernels_;
  const std::size_t F_, Dv_, rows_;
  const float eps_;
  std::vector<float> zk_, zq_, sk_, sq_, kf_, qf_, kf_t_, scores_, work_;
  std::vector<float> row_max_, row_eps_, den_;
  std::vector<float> state_, state_sum_, c_, neg_c_, scratch_max_, prefix_max_;
  std::vector<double> value_sum_, running_values_;  // epsilon only: sums of attended values
  double key_count_ = 0.0;
};

}  // namespace

void favor_attention(const AttentionDims& dims, const float* q, const float* k, const float* v,
                     float* out, const FavorOptions& options, const KernelSet& kernels,
                     ThreadPool& pool) {
  const FeatureMapSpec& fm = options.feature_map;
  if (fm.head_dim != dims.head_dim) throw InputError("feature map head dimension does not match the query");
  if (options.causal && (options.chunk_size < 1 || options.chunk_size > kMaxChunkSize)) {
    throw InputError("chunkSize must be between 1 and 4096");
  }
  if (options.epsilon != 0.0f && fm.is_signed()) {
    throw InputError("epsilon applies to positive feature maps; trig features are signed");
  }
  const InputStats stats = scan_inputs(dims, q, k, v);
  // log-features hold ||x_hat||^2 / 2 in float32: keep it far from overflow.
  const double normalizer2 = 1.0 / std::sqrt(static_cast<double>(dims.head_dim));
  if (std::max(stats.max_query_norm2, stats.max_key_norm2) * normalizer2 > 1e30) {
    throw InputError("query/key: squared row norms above 1e30 overflow the feature map in float32");
  }
  check_value_magnitude(dims, stats);

  const FeatureEvaluator features(fm, kernels);
  run_heads<FavorHead>(pool, dims, q, k, v, out, options.key_padding,
                      [&] { return std::make_unique<FavorHead>(dims, options, features, kernels); });
}

}  // namespace pa
