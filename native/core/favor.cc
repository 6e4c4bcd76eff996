#include "core/favor.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>
#include <vector>

#include "core/adaptive_features.h"
#include "core/memory.h"

namespace pa {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();
constexpr std::size_t kBlockRows = 64;  // rows per block of the bidirectional passes
// Inside a causal chunk, query features may exceed 1 by at most exp(kMaxChunkGap)
// (see FavorWorker::causal_rows); past that the chunk is split in two.
constexpr float kMaxChunkGap = 40.0f;
// A head is split into parts (key ranges, query ranges, causal segments) only
// when there are fewer than kSplitUnits heads, and never below this many rows a
// part. The split depends on the problem size only, never on the pool size:
// merging partial states is not associative in float32, so a thread-count
// dependent split would make the bits depend on the machine.
constexpr std::size_t kMinRowsPerPart = 256;
constexpr std::size_t kSplitUnits = 16;
// Multiply-adds below which a piece of pool work is not handed to another thread.
constexpr std::size_t kMinWorkPerPiece = std::size_t{1} << 20;

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

struct StateLayout {
  std::size_t F, Dv;
  std::size_t floats() const {
    return Carver::round_up(F * Dv) + 2 * Carver::round_up(F) + Carver::round_up(Dv + 1);
  }
  StateView view(float* base) const {
    Carver carve(base);
    float* s = carve.take(F * Dv);
    float* z = carve.take(F);
    float* c = carve.take(F);
    return {s, z, c, carve.take(Dv + 1)};
  }
  void reset(const StateView& st) const {
    std::fill(st.s, st.s + F * Dv, 0.0f);
    std::fill(st.z, st.z + F, 0.0f);
    std::fill(st.c, st.c + F, kNegInf);
    std::fill(st.values, st.values + Dv + 1, 0.0f);
  }
  // dst <- the state of dst's keys and src's keys together.
  void merge(const StateView& dst, const StateView& src) const {
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
};

// Scratch of one thread and the operations on a state; the drivers below decide
// which rows of which head each call covers.
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
  FavorWorker(const AttentionDims& dims, const FavorOptions& options, const FeatureEvaluator& features,
              const KernelSet& kernels)
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
    const std::size_t sizes[] = {R * F, R * F, signs ? R * F : 0, signs ? R * F : 0, R * F, R * F,
                                 R * std::max(features.work_per_row(), F), causal ? F * R : 0,
                                 causal ? R * R : 0, R, R, R, F, F, F, Dv_ + 1};
    std::size_t total = 0;
    for (std::size_t size : sizes) total += Carver::round_up(size);
    Carver carve(thread_scratch(total));
    zk_ = carve.take(R * F);
    zq_ = carve.take(R * F);
    sk_ = signs ? carve.take(R * F) : nullptr;
    sq_ = signs ? carve.take(R * F) : nullptr;
    kf_ = carve.take(R * F);
    qf_ = carve.take(R * F);
    work_ = carve.take(R * std::max(features.work_per_row(), F));
    kf_t_ = causal ? carve.take(F * R) : nullptr;
    scores_ = causal ? carve.take(R * R) : nullptr;
    ones_ = carve.take(R);
    std::fill(ones_, ones_ + R, 1.0f);
    row_max_ = carve.take(R);
    row_eps_ = carve.take(R);
    neg_c_ = carve.take(F);
    chunk_max_ = carve.take(F);
    prefix_max_ = carve.take(F);
    running_values_ = carve.take(Dv_ + 1);
  }

  // The feature map of the head the next calls work on (adaptive kernels have one
  // per head; every one has the same feature count and scratch needs).
  void use(const FeatureEvaluator& features) { features_ = &features; }

  // Keys [j_begin, j_end) of one head into st, block by block.
  void absorb(const StateView& st, const float* k, const float* v, const std::uint8_t* pad, std::size_t j_begin,
              std::size_t j_end) {
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

  // Outputs of query rows [i_begin, i_end) of one head against the finished state.
  void emit(const StateView& st, const float* q, float* out, std::size_t i_begin, std::size_t i_end) {
    for (std::size_t i0 = i_begin; i0 < i_end; i0 += rows_) {
      check_cancel(options_.cancel);
      const std::size_t n = std::min(rows_, i_end - i0);
      features_->log_features(q + i0 * dims_.head_dim, n, zq_, sq_, work_);
      for (std::size_t r = 0; r < n; ++r) {
        query_features(st, r, kernels_.max_bias(F_, zq_ + r * F_, st.c), st.c);
      }
      float* out_rows = out + i0 * Dv_;
      kernels_.gemm(n, Dv_, F_, qf_, F_, 1, st.s, Dv_, out_rows, Dv_, false);
      for (std::size_t r = 0; r < n; ++r) {
        finish_row(out_rows + r * Dv_, kernels_.dot(F_, qf_ + r * F_, st.z), row_eps_[r], st.values);
      }
    }
  }

  // Causal outputs of query rows [i_begin, i_end) of one head, whose keys are
  // j = i + offset; st holds every attended key before key i_begin + offset and
  // is advanced past the last one.
  void causal(const StateView& st, const float* q, const float* k, const float* v, float* out,
              const std::uint8_t* pad, std::size_t i_begin, std::size_t i_end, long long offset) {
    for (std::size_t i0 = i_begin; i0 < i_end; i0 += rows_) {
      check_cancel(options_.cancel);
      const std::size_t n = std::min(rows_, i_end - i0);
      const std::size_t j0 = static_cast<std::size_t>(static_cast<long long>(i0) + offset);
      key_log_features(k, pad, j0, n);
      features_->log_features(q + i0 * dims_.head_dim, n, zq_, sq_, work_);
      causal_rows(st, v + j0 * Dv_, out + i0 * Dv_, pad, j0, 0, n);
    }
  }

 private:
  static bool attends(const std::uint8_t* pad, std::size_t j) { return pad == nullptr || pad[j] != 0; }

  // Log-features of key rows [j0, j0 + n) into zk_; padded keys get -inf (feature 0).
  void key_log_features(const float* k, const std::uint8_t* pad, std::size_t j0, std::size_t n) {
    features_->log_features(k + j0 * dims_.head_dim, n, zk_, sk_, work_);
    for (std::size_t r = 0; r < n; ++r) {
      if (!attends(pad, j0 + r)) std::fill(zk_ + r * F_, zk_ + (r + 1) * F_, kNegInf);
    }
  }

  // Raises the state's reference c to new_c (elementwise max), rescaling the rows
  // of s so that it stays expressed relative to c. Also refreshes neg_c_.
  void raise_reference(const StateView& st, const float* new_c) {
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

  // kf_ rows [r0, r1) = stabilized key features b_j from zk_ (relative to c).
  void key_features(const StateView& st, std::size_t r0, std::size_t r1) {
    for (std::size_t r = r0; r < r1; ++r) {
      float* kf = kf_ + r * F_;
      kernels_.exp_bias(F_, zk_ + r * F_, neg_c_, 0.0f, kf);
      if (sk_ != nullptr) {
        for (std::size_t f = 0; f < F_; ++f) kf[f] *= sk_[r * F_ + f];
      }
    }
  }

  // qf_ row r: the query features against the state's reference c, for a row
  // whose own reference is `own` (c itself when bidirectional) and whose largest
  // log-term is m. Sets row_eps_[r] = eps (sum_f a_rf + eps F).
  void query_features(const StateView& st, std::size_t r, float m, const float* own) {
    float* qf = qf_ + r * F_;
    if (m == kNegInf) {
      std::fill(qf, qf + F_, 0.0f);  // no feature of this row meets any key feature
    } else {
      kernels_.exp_bias(F_, zq_ + r * F_, st.c, -m, qf);
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
      if (own[f] != kNegInf) qf[f] += eps_ * std::exp(st.c[f] - own[f]);
    }
    row_eps_[r] = static_cast<float>(eps_ * (a_sum + static_cast<double>(eps_) * F_));
  }

  // st.s += kf_[r0..r1)^T v_rows and st.z += column sums of kf_[r0..r1) (v_rows is
  // row r0's value; row r is key j0 + r); value sums for epsilon.
  void accumulate(const StateView& st, const float* v_rows, const std::uint8_t* pad, std::size_t j0,
                  std::size_t r0, std::size_t r1) {
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

  // out_row holds the numerator; makes it (num + w sums[:Dv]) / (den + w sums[Dv]).
  // A row whose normalizer is zero (it attends no key) or whose result is not
  // finite (only possible with `trig` features, whose normalizer can cancel) gets zeros.
  void finish_row(float* out_row, float den, float w, const float* sums) const {
    if (w != 0.0f) den += w * sums[Dv_];
    bool ok = den != 0.0f && std::isfinite(den);
    if (ok) {
      const float inv = 1.0f / den;
      for (std::size_t e = 0; e < Dv_; ++e) {
        out_row[e] = (w != 0.0f ? out_row[e] + w * sums[e] : out_row[e]) * inv;
        ok = ok && std::isfinite(out_row[e]);
      }
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
  void causal_rows(const StateView& st, const float* v_chunk, float* out_chunk, const std::uint8_t* pad,
                   std::size_t j0, std::size_t r0, std::size_t r1) {
    const std::size_t n = r1 - r0;
    std::copy(st.c, st.c + F_, chunk_max_);  // becomes the chunk-end reference
    for (std::size_t r = r0; r < r1; ++r) kernels_.max_accumulate(F_, zk_ + r * F_, chunk_max_);
    std::copy(st.c, st.c + F_, prefix_max_);
    for (std::size_t r = r0; r < r1; ++r) {
      kernels_.max_accumulate(F_, zk_ + r * F_, prefix_max_);
      row_max_[r] = kernels_.max_bias(F_, zq_ + r * F_, prefix_max_);
      if (n == 1 || row_max_[r] == kNegInf) continue;
      float gap = kernels_.max_bias(F_, zq_ + r * F_, chunk_max_) - row_max_[r];
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
    std::copy(st.c, st.c + F_, prefix_max_);  // the reference before this chunk
    raise_reference(st, chunk_max_);
    key_features(st, r0, r1);
    for (std::size_t r = r0; r < r1; ++r) {
      kernels_.max_accumulate(F_, zk_ + r * F_, prefix_max_);
      query_features(st, r, row_max_[r], prefix_max_);
    }

    // scores = Q'_c K'_c^T, causal within the chunk.
    for (std::size_t r = 0; r < n; ++r) {
      for (std::size_t f = 0; f < F_; ++f) kf_t_[f * n + r] = kf_[(r0 + r) * F_ + f];
    }
    kernels_.gemm(n, n, F_, qf_ + r0 * F_, F_, 1, kf_t_, n, scores_, n, false);
    for (std::size_t r = 0; r < n; ++r) std::fill(scores_ + r * n + r + 1, scores_ + (r + 1) * n, 0.0f);
    // num = Q'_c S + scores V_c; den = Q'_c z + scores 1.
    float* out_rows = out_chunk + r0 * Dv_;
    const float* v_rows = v_chunk + r0 * Dv_;
    kernels_.gemm(n, Dv_, F_, qf_ + r0 * F_, F_, 1, st.s, Dv_, out_rows, Dv_, false);
    kernels_.gemm(n, Dv_, n, scores_, n, 1, v_rows, Dv_, out_rows, Dv_, true);
    if (eps_ != 0.0f) std::copy(st.values, st.values + Dv_ + 1, running_values_);
    for (std::size_t r = 0; r < n; ++r) {
      if (eps_ != 0.0f && attends(pad, j0 + r0 + r)) {
        const float* vr = v_rows + r * Dv_;
        for (std::size_t e = 0; e < Dv_; ++e) running_values_[e] += vr[e];
        running_values_[Dv_] += 1.0f;
      }
      const float den = kernels_.dot(F_, qf_ + (r0 + r) * F_, st.z) + kernels_.dot(r + 1, scores_ + r * n, ones_);
      finish_row(out_rows + r * Dv_, den, row_eps_[r0 + r], running_values_);
    }
    accumulate(st, v_rows, pad, j0, r0, r1);
  }

  const AttentionDims& dims_;
  const FavorOptions& options_;
  const FeatureEvaluator* features_;
  const KernelSet& kernels_;
  const std::size_t F_, Dv_, rows_;
  const float eps_;
  // Views into this thread's scratch.
  float *zk_, *zq_, *sk_, *sq_, *kf_, *qf_, *work_, *kf_t_, *scores_, *ones_;
  float *row_max_, *row_eps_, *neg_c_, *chunk_max_, *prefix_max_, *running_values_;
};

// Splits [begin, end) into `parts` nearly equal ranges; returns range `p`.
std::pair<std::size_t, std::size_t> part_range(std::size_t begin, std::size_t end, std::size_t parts, std::size_t p) {
  const std::size_t n = end - begin;
  return {begin + n * p / parts, begin + n * (p + 1) / parts};
}

}  // namespace

void favor_attention(const AttentionDims& dims, const float* q, const float* k, const float* v,
                     float* out, const FavorOptions& options, const KernelSet& kernels,
                     ThreadPool& pool) {
  const FeatureMapSpec& fm = options.feature_map;
  if (fm.head_dim != dims.head_dim) throw InputError("feature map head dimension does not match the query");
  if (options.causal && (options.chunk_size < 1 || options.chunk_size > kMaxChunkSize)) {
    throw InputError("chunkSize must be between 1 and 4096");
  }
  if (options.state != nullptr && (!options.causal || dims.q_len != dims.k_len)) {
    throw InputError("a decoding state continues causal self-attention: causal must be set and query and key lengths equal");
  }
  const bool absorb_only = options.absorb_into != nullptr, emit_only = options.keys_state != nullptr;
  if (absorb_only || emit_only) {
    if (absorb_only && emit_only) throw InputError("absorb_into and keys_state exclude each other");
    if (options.causal || options.state != nullptr) {
      throw InputError("absorb_into / keys_state split bidirectional attention: causal and state must be unset");
    }
    if (absorb_only && dims.q_len != 0) throw InputError("absorb_into absorbs keys only: the query length must be 0");
    if (emit_only && dims.k_len != 0) throw InputError("keys_state holds the keys: the key length must be 0");
    if (fm.is_adaptive() && fm.adaptive_heads == 0) {
      throw InputError(
          "softmax-opt / softmax-dense attention split into absorbing keys and emitting queries needs fixed parameters: "
          "estimating them from one half would give the halves different features");
    }
  }
  if (options.epsilon != 0.0f && fm.is_signed()) {
    throw InputError("epsilon applies to positive feature maps; trig features are signed");
  }
  check_cancel(options.cancel);
  const InputStats stats = scan_inputs(dims, q, k, v, pool);
  // log-features hold ||x_hat||^2 / 2 in float32: keep it far from overflow.
  const double normalizer2 = 1.0 / std::sqrt(static_cast<double>(dims.head_dim));
  if (std::max(stats.max_query_norm2, stats.max_key_norm2) * normalizer2 > 1e30) {
    throw InputError("query/key: squared row norms above 1e30 overflow the feature map in float32");
  }
  check_value_magnitude(dims, stats);

  const std::size_t heads = dims.batch * dims.heads;
  // Adaptive kernels: one feature map per (batch, head), from fixed parameters or
  // estimated here from that head's queries and attended keys.
  std::vector<HeadFeatures> head_maps;
  std::vector<std::unique_ptr<FeatureEvaluator>> evaluators;
  if (fm.is_adaptive()) {
    if (fm.projection == nullptr) throw InputError("adaptive features need a projection");
    if (fm.adaptive_heads == 0 && options.causal) {
      throw InputError(
          "causal attention with softmax-opt / softmax-dense needs fixed parameters (calibrate on a prefix or set them): "
          "estimating them from the call would let a row depend on keys it cannot attend");
    }
    if (fm.adaptive_heads != 0 && fm.adaptive_heads != 1 && fm.adaptive_heads != dims.heads) {
      throw InputError("adaptive parameters: expected 1 set or one per head (" + std::to_string(dims.heads) + "), received " +
                       std::to_string(fm.adaptive_heads));
    }
    std::vector<AdaptiveParams> fixed;
    for (std::size_t h = 0; h < fm.adaptive_heads; ++h) fixed.push_back(fixed_params(fm, h));
    // Fixed parameters: one feature map per set, shared by the heads that use it.
    const std::size_t maps = fixed.empty() ? heads : fixed.size();
    head_maps.resize(maps);
    const bool dense = fm.kernel == Kernel::kSoftmaxDense;
    pool.parallel_for(maps, 1, [&](std::size_t begin, std::size_t end, std::size_t) {
      PairMoments moments;
      for (std::size_t h = begin; h < end; ++h) {
        if (!fixed.empty()) {
          prepare_head(fm, fixed[h], kernels, &head_maps[h]);
          continue;
        }
        moments.init(dims.head_dim, dense);
        moments.add(q + h * dims.q_len * dims.head_dim, dims.q_len, false, nullptr, kernels);
        const std::uint8_t* pad = options.key_padding ? options.key_padding + (h / dims.heads) * dims.k_len : nullptr;
        moments.add(k + h * dims.k_len * dims.head_dim, dims.k_len, true, pad, kernels);
        AdaptiveParams params;
        if (moments.count_k == 0) {
          params.a.assign(dims.head_dim, 0.0);  // no key attends: every row is zero anyway
        } else {
          params = params_from_moments(moments, dense);
        }
        prepare_head(fm, params, kernels, &head_maps[h]);
      }
    });
    for (const HeadFeatures& map : head_maps) evaluators.push_back(std::make_unique<FeatureEvaluator>(map.spec, kernels));
  }
  const std::size_t sets = fm.is_adaptive() ? fm.adaptive_heads : 0;
  const FeatureEvaluator features(fm.is_adaptive() ? head_maps[0].spec : fm, kernels);
  auto evaluator_of = [&](std::size_t h) -> const FeatureEvaluator& {
    if (evaluators.empty()) return features;
    if (sets == 0) return *evaluators[h];         // estimated per (batch, head)
    return *evaluators[sets == 1 ? 0 : h % dims.heads];  // fixed set of head h
  };
  const std::size_t Lq = dims.q_len, Lk = dims.k_len, d = dims.head_dim, Dv = dims.value_dim;
  // Causal geometry: query i sees keys j <= i + offset (bottom-right aligned);
  // the first `blind` queries see none, the first `prefix` keys every query sees.
  const long long offset = static_cast<long long>(Lk) - static_cast<long long>(Lq);
  const std::size_t prefix = offset > 0 ? static_cast<std::size_t>(offset) : 0;
  const std::size_t blind = offset < 0 ? std::min(Lq, static_cast<std::size_t>(-offset)) : 0;

  // Parts per head: about kSplitUnits units of work when heads are few.
  const std::size_t rows = options.causal ? Lq - blind : absorb_only ? Lk : emit_only ? Lq : std::min(Lq, Lk);
  std::size_t parts = heads >= kSplitUnits ? 1 : (kSplitUnits + heads - 1) / heads;
  parts = std::max<std::size_t>(1, std::min(parts, rows / kMinRowsPerPart));

  const StateLayout layout{features.feature_count(), Dv};
  PooledBuffer states(heads * parts * layout.floats());
  auto state = [&](std::size_t h, std::size_t p) { return layout.view(states.data() + (h * parts + p) * layout.floats()); };
  auto pad_of = [&](std::size_t h) {
    return options.key_padding ? options.key_padding + (h / dims.heads) * Lk : nullptr;
  };
  std::vector<std::unique_ptr<FavorWorker>> workers(pool.size());
  auto worker = [&](std::size_t slot) -> FavorWorker& {
    if (!workers[slot]) workers[slot] = std::make_unique<FavorWorker>(dims, options, features, kernels);
    return *workers[slot];
  };
  // Runs body(head, part, worker) for every (head, part) on the pool.
  // Units too small to be worth waking a thread for (a decoding step: one row per
  // head) run together; which thread runs a unit never changes its bits.
  const std::size_t unit_work = std::max<std::size_t>(1, rows / parts) * features.feature_count() * (d + Dv);
  const std::size_t grain = std::max<std::size_t>(1, kMinWorkPerPiece / unit_work);
  auto for_each_part = [&](std::size_t count, const auto& body) {
    pool.parallel_for(heads * count, grain, [&](std::size_t begin, std::size_t end, std::size_t slot) {
      for (std::size_t u = begin; u < end; ++u) body(u / count, u % count, worker(slot));
    });
  };
  const float* qh = q;
  const float* kh = k;
  const float* vh = v;
  auto q_of = [&](std::size_t h) { return qh + h * Lq * d; };
  auto k_of = [&](std::size_t h) { return kh + h * Lk * d; };
  auto v_of = [&](std::size_t h) { return vh + h * Lk * Dv; };
  auto out_of = [&](std::size_t h) { return out + h * Lq * Dv; };

  if (!options.causal) {
    const std::size_t floats = layout.floats();
    if (emit_only) {
      // The caller's states are only read (emit leaves a state as it is).
      for_each_part(parts, [&](std::size_t h, std::size_t p, FavorWorker& w) {
        w.use(evaluator_of(h));
        const StateView st = layout.view(const_cast<float*>(options.keys_state) + h * floats);
        const auto range = part_range(0, Lq, parts, p);
        w.emit(st, q_of(h), out_of(h), range.first, range.second);
      });
      return;
    }
    // Padding included: the states handed back compare bitwise.
    if (absorb_only) std::fill(states.data(), states.data() + heads * parts * floats, 0.0f);
    // Copies the absorbed states out once every head is done (a cancelled call
    // leaves the caller's states as they were).
    auto hand_back = [&] {
      for (std::size_t h = 0; h < heads; ++h) {
        const float* src = state(h, 0).s;  // s comes first in the layout
        std::copy(src, src + floats, options.absorb_into + h * floats);
      }
    };
    if (parts == 1) {
      for_each_part(1, [&](std::size_t h, std::size_t, FavorWorker& w) {
        w.use(evaluator_of(h));
        const StateView st = state(h, 0);
        layout.reset(st);
        w.absorb(st, k_of(h), v_of(h), pad_of(h), 0, Lk);
        if (!absorb_only) w.emit(st, q_of(h), out_of(h), 0, Lq);
      });
      if (absorb_only) hand_back();
      return;
    }
    // Key ranges into partial states, merged per head, then query ranges.
    for_each_part(parts, [&](std::size_t h, std::size_t p, FavorWorker& w) {
      w.use(evaluator_of(h));
      const StateView st = state(h, p);
      layout.reset(st);
      const auto range = part_range(0, Lk, parts, p);
      w.absorb(st, k_of(h), v_of(h), pad_of(h), range.first, range.second);
    });
    for_each_part(1, [&](std::size_t h, std::size_t, FavorWorker&) {
      for (std::size_t p = 1; p < parts; ++p) layout.merge(state(h, 0), state(h, p));
    });
    if (absorb_only) return hand_back();
    for_each_part(parts, [&](std::size_t h, std::size_t p, FavorWorker& w) {
      w.use(evaluator_of(h));
      const auto range = part_range(0, Lq, parts, p);
      w.emit(state(h, 0), q_of(h), out_of(h), range.first, range.second);
    });
    return;
  }

  for (std::size_t h = 0; h < heads; ++h) std::fill(out_of(h), out_of(h) + blind * Dv, 0.0f);
  // A caller's decoding state is copied in and out (its memory need not be aligned,
  // and it stays untouched when the call throws).
  const std::size_t user_floats = layout.floats();
  auto start = [&](std::size_t h, const StateView& st) {
    if (options.state == nullptr) {
      layout.reset(st);
    } else {
      const float* src = options.state + h * user_floats;
      std::copy(src, src + user_floats, st.s);  // s comes first in the layout
    }
  };
  auto finish = [&](std::size_t h, const StateView& st) {
    if (options.state == nullptr) return;
    const float* src = st.s;
    std::copy(src, src + user_floats, options.state + h * user_floats);
  };
  // An uncancellable single-part call has checked its inputs already: past this
  // point only a failed scratch allocation could throw, so it advances the caller's
  // states in place (a decoding step then copies nothing).
  const bool in_place = options.state != nullptr && options.cancel == nullptr && parts == 1;
  if (in_place) {
    for_each_part(1, [&](std::size_t h, std::size_t, FavorWorker& w) {
      w.use(evaluator_of(h));
      const StateView st = layout.view(options.state + h * user_floats);
      w.causal(st, q_of(h), k_of(h), v_of(h), out_of(h), pad_of(h), blind, Lq, offset);
    });
    return;
  }
  if (parts == 1) {
    for_each_part(1, [&](std::size_t h, std::size_t, FavorWorker& w) {
      w.use(evaluator_of(h));
      const StateView st = state(h, 0);
      start(h, st);
      w.absorb(st, k_of(h), v_of(h), pad_of(h), 0, prefix);
      w.causal(st, q_of(h), k_of(h), v_of(h), out_of(h), pad_of(h), blind, Lq, offset);
    });
    // Only once every head has finished: a cancelled call leaves the states as they were.
    for (std::size_t h = 0; h < heads && options.state != nullptr; ++h) finish(h, state(h, 0));
    return;
  }
  // Segments of queries: state p first holds the keys of segment p - 1 (state 0
  // the prefix keys); a prefix combine then makes it hold every key before
  // segment p, and the segments run in parallel from there.
  auto key_index = [&](std::size_t i) { return static_cast<std::size_t>(static_cast<long long>(i) + offset); };
  for_each_part(parts, [&](std::size_t h, std::size_t p, FavorWorker& w) {
    w.use(evaluator_of(h));
    const StateView st = state(h, p);
    if (p == 0) {
      start(h, st);
      w.absorb(st, k_of(h), v_of(h), pad_of(h), 0, prefix);
    } else {
      layout.reset(st);
      const auto range = part_range(blind, Lq, parts, p - 1);
      w.absorb(st, k_of(h), v_of(h), pad_of(h), key_index(range.first), key_index(range.second));
    }
  });
  for_each_part(1, [&](std::size_t h, std::size_t, FavorWorker&) {
    for (std::size_t p = 1; p < parts; ++p) layout.merge(state(h, p), state(h, p - 1));
  });
  for_each_part(parts, [&](std::size_t h, std::size_t p, FavorWorker& w) {
    w.use(evaluator_of(h));
    const auto range = part_range(blind, Lq, parts, p);
    w.causal(state(h, p), q_of(h), k_of(h), v_of(h), out_of(h), pad_of(h), range.first, range.second, offset);
  });
  // The last segment's state has absorbed every key.
  for (std::size_t h = 0; h < heads && options.state != nullptr; ++h) finish(h, state(h, parts - 1));
}

std::size_t favor_state_floats(std::size_t feature_count, std::size_t value_dim) {
  return StateLayout{feature_count, value_dim}.floats();
}

void favor_state_reset(float* state, std::size_t heads, std::size_t feature_count, std::size_t value_dim) {
  const StateLayout layout{feature_count, value_dim};
  for (std::size_t h = 0; h < heads; ++h) {
    float* base = state + h * layout.floats();
    std::fill(base, base + layout.floats(), 0.0f);  // padding too: serialized states compare bitwise
    layout.reset(layout.view(base));
  }
}

}  // namespace pa
