#include "core/favor_backward.h"

#include <algorithm>
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "core/favor_worker.h"

namespace pa {
namespace {

using favor_internal::kBlockRows;
using favor_internal::kMaxChunkGap;
using favor_internal::kNegInf;

bool supported(Kernel kernel) {
  switch (kernel) {
    case Kernel::kSoftmax:
    case Kernel::kSoftmaxHyperbolic:
    case Kernel::kRelu:
    case Kernel::kElu:
    case Kernel::kExp:
    case Kernel::kAbs:
      return true;
    default:
      return false;
  }
}

// d log(f(u) + eps) / du for the generalized kernels, from u (f(u) + eps > 0).
float generalized_slope(Kernel kernel, float u, float eps) {
  switch (kernel) {
    case Kernel::kRelu:
      return u > 0.0f ? 1.0f / (u + eps) : 0.0f;
    case Kernel::kElu:  // elu(u) + 1: u + 1 for u > 0, exp(u) below
      if (u > 0.0f) return 1.0f / (u + 1.0f + eps);
      return 1.0f / (1.0f + eps * std::exp(-u));
    case Kernel::kExp:  // exp(u) / (exp(u) + eps), written so that nothing overflows
      return 1.0f / (1.0f + eps * std::exp(-u));
    case Kernel::kAbs:
      return u > 0.0f ? 1.0f / (u + eps) : u < 0.0f ? -1.0f / (-u + eps) : 0.0f;
    default:
      return 0.0f;
  }
}

// One thread's scratch and the work on one (batch, head).
class BackwardWorker {
 public:
  BackwardWorker(const AttentionDims& dims, const FavorOptions& o, const FeatureEvaluator& features,
                 const KernelSet& kernels, std::size_t rows)
      : dims_(dims),
        o_(o),
        spec_(o.feature_map),
        features_(features),
        kernels_(kernels),
        F_(features.feature_count()),
        m_(spec_.num_projections),
        d_(dims.head_dim),
        Dv_(dims.value_dim),
        R_(rows),
        c_(static_cast<float>(std::pow(static_cast<double>(dims.head_dim), -0.25))) {
    auto grow = [](std::vector<float>& v, std::size_t n) {
      v.resize(n);
      return v.data();
    };
    zq_ = grow(zq_buf_, R_ * F_);
    zk_ = grow(zk_buf_, R_ * F_);
    uq_ = grow(uq_buf_, R_ * m_);
    uk_ = grow(uk_buf_, R_ * m_);
    qf_ = grow(qf_buf_, R_ * F_);
    kf_ = grow(kf_buf_, R_ * F_);
    dqf_ = grow(dqf_buf_, R_ * F_);
    dkf_ = grow(dkf_buf_, R_ * F_);
    kf_t_ = grow(kf_t_buf_, F_ * R_);
    t_ = grow(t_buf_, F_ * std::max(R_, Dv_));
    g_ = grow(g_buf_, R_ * m_);
    a_ = grow(a_buf_, R_ * R_);
    b_ = grow(b_buf_, R_ * R_);
    num_ = grow(num_buf_, R_ * Dv_);
    vt_ = grow(vt_buf_, Dv_ * R_);
    ones_ = grow(ones_buf_, R_);
    std::fill(ones_, ones_ + R_, 1.0f);
    den_ = grow(den_buf_, R_);
    row_max_ = grow(row_max_buf_, R_);
    norm_ = grow(norm_buf_, R_);
    c_ref_ = grow(c_ref_buf_, F_);
    neg_c_ = grow(neg_c_buf_, F_);
    prefix_ = grow(prefix_buf_, F_);
    chunk_max_ = grow(chunk_max_buf_, F_);
    s_ = grow(s_buf_, F_ * Dv_);
    st_ = grow(st_buf_, Dv_ * F_);
    z_ = grow(z_buf_, F_);
    ds_ = grow(ds_buf_, F_ * Dv_);
    dz_ = grow(dz_buf_, F_);
  }

  // dW of the heads this worker ran (unscaled: sum of g^T x), or null.
  void set_projection_grad(float* dw) { dw_ = dw; }

  void bidirectional(const float* q, const float* k, const float* v, const float* g,
                     const std::uint8_t* pad, float* dq, float* dk, float* dv) {
    const std::size_t Lq = dims_.q_len, Lk = dims_.k_len;
    // Per-feature key reference c_f (max over attended keys), then S and z.
    std::fill(c_ref_, c_ref_ + F_, kNegInf);
    for (std::size_t j0 = 0; j0 < Lk; j0 += R_) {
      check_cancel(o_.cancel);
      const std::size_t n = std::min(R_, Lk - j0);
      key_logs(k, pad, j0, n);
      for (std::size_t r = 0; r < n; ++r) kernels_.max_accumulate(F_, zk_ + r * F_, c_ref_);
    }
    for (std::size_t f = 0; f < F_; ++f) neg_c_[f] = c_ref_[f] == kNegInf ? 0.0f : -c_ref_[f];
    std::fill(s_, s_ + F_ * Dv_, 0.0f);
    std::fill(z_, z_ + F_, 0.0f);
    for (std::size_t j0 = 0; j0 < Lk; j0 += R_) {
      check_cancel(o_.cancel);
      const std::size_t n = std::min(R_, Lk - j0);
      key_logs(k, pad, j0, n);
      key_features(zk_, n);
      kernels_.gemm(F_, Dv_, n, kf_, 1, F_, v + j0 * Dv_, Dv_, s_, Dv_, true);
      kernels_.gemm(1, F_, n, ones_, 0, 1, kf_, F_, z_, F_, true);
    }
    transpose(s_, F_, Dv_, st_);
    std::fill(ds_, ds_ + F_ * Dv_, 0.0f);
    std::fill(dz_, dz_ + F_, 0.0f);
    for (std::size_t i0 = 0; i0 < Lq; i0 += R_) {
      check_cancel(o_.cancel);
      const std::size_t n = std::min(R_, Lq - i0);
      features_.log_features(q + i0 * d_, n, zq_, nullptr, uq_);
      for (std::size_t r = 0; r < n; ++r) {
        row_max_[r] = kernels_.max_bias(F_, zq_ + r * F_, c_ref_);
        query_feature_row(r, zq_ + r * F_, c_ref_, row_max_[r]);
      }
      // num = Q' S, den = Q' z; then dnum = g / den and dden = -(g . out) / den in place.
      kernels_.gemm(n, Dv_, F_, qf_, F_, 1, s_, Dv_, num_, Dv_, false);
      float* dnum = num_;
      for (std::size_t r = 0; r < n; ++r) den_[r] = kernels_.dot(F_, qf_ + r * F_, z_);
      output_gradients(g + i0 * Dv_, n, dnum, den_);
      // dq' = dnum S^T + dden z^T
      kernels_.gemm(n, F_, Dv_, dnum, Dv_, 1, st_, F_, dqf_, F_, false);
      for (std::size_t r = 0; r < n; ++r) {
        for (std::size_t f = 0; f < F_; ++f) dqf_[r * F_ + f] += den_[r] * z_[f];
      }
      // dS += Q'^T dnum, dz += Q'^T dden (den_ holds dden now).
      kernels_.gemm(F_, Dv_, n, qf_, 1, F_, dnum, Dv_, ds_, Dv_, true);
      kernels_.gemm(1, F_, n, den_, 0, 1, qf_, F_, dz_, F_, true);
      feature_backward(q + i0 * d_, uq_, qf_, dqf_, n, dq + i0 * d_);
    }
    transpose(ds_, F_, Dv_, st_);  // st_ now holds dS^T
    for (std::size_t j0 = 0; j0 < Lk; j0 += R_) {
      check_cancel(o_.cancel);
      const std::size_t n = std::min(R_, Lk - j0);
      key_logs(k, pad, j0, n);
      key_features(zk_, n);
      // dk' = v dS^T + dz, zero for padded keys; dv = K' dS.
      kernels_.gemm(n, F_, Dv_, v + j0 * Dv_, Dv_, 1, st_, F_, dkf_, F_, false);
      add_normalizer_grad(pad, j0, n, dz_);
      kernels_.gemm(n, Dv_, F_, kf_, F_, 1, ds_, Dv_, dv + j0 * Dv_, Dv_, false);
      feature_backward(k + j0 * d_, uk_, kf_, dkf_, n, dk + j0 * d_);
    }
  }

  // Causal self-attention (q_len = k_len): a forward sweep that rebuilds the prefix
  // states and gives dq, then a reverse sweep over the same segments with suffix states
  // that gives dk and dv.
  void causal(const float* q, const float* k, const float* v, const float* g,
              const std::uint8_t* pad, float* dq, float* dk, float* dv) {
    const std::size_t L = dims_.q_len;
    dnum_.resize(L * Dv_);
    dden_.resize(L);
    mrow_.resize(L);
    segments_.clear();
    refs_.clear();
    std::fill(c_ref_, c_ref_ + F_, kNegInf);
    std::fill(s_, s_ + F_ * Dv_, 0.0f);
    std::fill(z_, z_ + F_, 0.0f);
    for (std::size_t i0 = 0; i0 < L; i0 += R_) {
      check_cancel(o_.cancel);
      const std::size_t n = std::min(R_, L - i0);
      key_logs(k, pad, i0, n);
      features_.log_features(q + i0 * d_, n, zq_, nullptr, uq_);
      forward_rows(q, v, g, dq, i0, 0, n);
    }
    // Reverse sweep: R (F x Dv) and r (F) over the rows after the segment, with query
    // features relative to the segment's reference.
    std::fill(s_, s_ + F_ * Dv_, 0.0f);  // s_ holds R, z_ holds r
    std::fill(z_, z_ + F_, 0.0f);
    const float* later = nullptr;
    for (std::size_t s = segments_.size(); s-- > 0;) {
      check_cancel(o_.cancel);
      const std::size_t a = segments_[s].first, b = segments_[s].second, n = b - a;
      const float* ref = refs_.data() + s * F_;
      if (later != nullptr) {
        for (std::size_t f = 0; f < F_; ++f) {
          // Moving to an earlier (smaller) reference: a factor <= 1.
          const float factor = ref[f] == kNegInf ? 0.0f : std::exp(ref[f] - later[f]);
          if (factor == 1.0f) continue;
          for (std::size_t e = 0; e < Dv_; ++e) s_[f * Dv_ + e] *= factor;
          z_[f] *= factor;
        }
      }
      later = ref;
      std::copy(ref, ref + F_, c_ref_);
      for (std::size_t f = 0; f < F_; ++f) neg_c_[f] = c_ref_[f] == kNegInf ? 0.0f : -c_ref_[f];
      key_logs(k, pad, a, n);
      key_features(zk_, n);
      features_.log_features(q + a * d_, n, zq_, nullptr, uq_);
      for (std::size_t r = 0; r < n; ++r) query_feature_row(r, zq_ + r * F_, c_ref_, mrow_[a + r]);
      const float* dnum = dnum_.data() + a * Dv_;
      const float* dden = dden_.data() + a;
      const float* vr = v + a * Dv_;
      product_a(n);
      product_b(vr, dnum, dden, n);
      // dk' = v R^T + r + B^T Q'  (as (R v^T)^T, transposed into dkf_)
      transpose(vr, n, Dv_, vt_);
      kernels_.gemm(F_, n, Dv_, s_, Dv_, 1, vt_, n, t_, n, false);
      transpose(t_, F_, n, dkf_);
      kernels_.gemm(n, F_, n, b_, 1, n, qf_, F_, dkf_, F_, true);
      add_normalizer_grad(pad, a, n, z_);
      // dv = K' R + A^T dnum
      kernels_.gemm(n, Dv_, F_, kf_, F_, 1, s_, Dv_, dv + a * Dv_, Dv_, false);
      kernels_.gemm(n, Dv_, n, a_, 1, n, dnum, Dv_, dv + a * Dv_, Dv_, true);
      feature_backward(k + a * d_, uk_, kf_, dkf_, n, dk + a * d_);
      // R += Q'^T dnum, r += Q'^T dden
      kernels_.gemm(F_, Dv_, n, qf_, 1, F_, dnum, Dv_, s_, Dv_, true);
      kernels_.gemm(1, F_, n, dden, 0, 1, qf_, F_, z_, F_, true);
    }
  }

 private:
  // Rows [r0, r1) of the chunk at i0 (zk_, zq_, uq_ hold the chunk's rows): one segment
  // with one reference, or two halves when a query feature could pass e^40 (favor.cc's rule).
  void forward_rows(const float* q, const float* v, const float* g, float* dq, std::size_t i0,
                    std::size_t r0, std::size_t r1) {
    const std::size_t n = r1 - r0;
    std::copy(c_ref_, c_ref_ + F_, chunk_max_);
    for (std::size_t r = r0; r < r1; ++r) kernels_.max_accumulate(F_, zk_ + r * F_, chunk_max_);
    std::copy(c_ref_, c_ref_ + F_, prefix_);
    for (std::size_t r = r0; r < r1; ++r) {
      kernels_.max_accumulate(F_, zk_ + r * F_, prefix_);
      row_max_[r] = kernels_.max_bias(F_, zq_ + r * F_, prefix_);
      if (n == 1 || row_max_[r] == kNegInf) continue;
      if (kernels_.max_bias(F_, zq_ + r * F_, chunk_max_) - row_max_[r] > kMaxChunkGap) {
        const std::size_t mid = r0 + n / 2;
        forward_rows(q, v, g, dq, i0, r0, mid);
        forward_rows(q, v, g, dq, i0, mid, r1);
        return;
      }
    }
    // Raise the reference to the segment's end, rescaling the prefix state.
    for (std::size_t f = 0; f < F_; ++f) {
      if (chunk_max_[f] > c_ref_[f]) {
        if (c_ref_[f] != kNegInf) {
          const float factor = std::exp(c_ref_[f] - chunk_max_[f]);
          for (std::size_t e = 0; e < Dv_; ++e) s_[f * Dv_ + e] *= factor;
          z_[f] *= factor;
        }
        c_ref_[f] = chunk_max_[f];
      }
      neg_c_[f] = c_ref_[f] == kNegInf ? 0.0f : -c_ref_[f];
    }
    segments_.emplace_back(i0 + r0, i0 + r1);
    refs_.insert(refs_.end(), c_ref_, c_ref_ + F_);
    key_features(zk_ + r0 * F_, n);
    for (std::size_t r = 0; r < n; ++r) {
      mrow_[i0 + r0 + r] = row_max_[r0 + r];
      query_feature_row(r, zq_ + (r0 + r) * F_, c_ref_, row_max_[r0 + r]);
    }
    const std::size_t a = i0 + r0;
    const float* vr = v + a * Dv_;
    // num = Q' S + (A masked) V, den = Q' z + A 1.
    product_a(n);
    kernels_.gemm(n, Dv_, F_, qf_, F_, 1, s_, Dv_, num_, Dv_, false);
    kernels_.gemm(n, Dv_, n, a_, n, 1, vr, Dv_, num_, Dv_, true);
    for (std::size_t r = 0; r < n; ++r)
      den_[r] = kernels_.dot(F_, qf_ + r * F_, z_) + kernels_.dot(r + 1, a_ + r * n, ones_);
    float* dnum = dnum_.data() + a * Dv_;
    std::copy(num_, num_ + n * Dv_, dnum);
    output_gradients(g + a * Dv_, n, dnum, den_);
    std::copy(den_, den_ + n, dden_.data() + a);
    // dq' = dnum S^T + dden z^T + (B masked) K'
    transpose(s_, F_, Dv_, st_);
    kernels_.gemm(n, F_, Dv_, dnum, Dv_, 1, st_, F_, dqf_, F_, false);
    for (std::size_t r = 0; r < n; ++r) {
      for (std::size_t f = 0; f < F_; ++f) dqf_[r * F_ + f] += den_[r] * z_[f];
    }
    product_b(vr, dnum, den_, n);
    kernels_.gemm(n, F_, n, b_, n, 1, kf_, F_, dqf_, F_, true);
    feature_backward(q + a * d_, uq_ + r0 * m_, qf_, dqf_, n, dq + a * d_);
    // Absorb the segment's keys (padded ones have zero features).
    kernels_.gemm(F_, Dv_, n, kf_, 1, F_, vr, Dv_, s_, Dv_, true);
    kernels_.gemm(1, F_, n, ones_, 0, 1, kf_, F_, z_, F_, true);
  }

  // Log-features of key rows [j0, j0 + n) into zk_ (and u into uk_); padded keys get -inf.
  void key_logs(const float* k, const std::uint8_t* pad, std::size_t j0, std::size_t n) {
    features_.log_features(k + j0 * d_, n, zk_, nullptr, uk_);
    for (std::size_t r = 0; r < n; ++r) {
      if (pad != nullptr && pad[j0 + r] == 0) std::fill(zk_ + r * F_, zk_ + (r + 1) * F_, kNegInf);
    }
  }

  // dkf_ rows of keys [j0, j0 + n): zero for a padded key, else plus the
  // normalizer's gradient dz (F floats).
  void add_normalizer_grad(const std::uint8_t* pad, std::size_t j0, std::size_t n,
                           const float* dz) {
    for (std::size_t r = 0; r < n; ++r) {
      float* row = dkf_ + r * F_;
      if (pad != nullptr && pad[j0 + r] == 0) {
        std::fill(row, row + F_, 0.0f);
      } else {
        for (std::size_t f = 0; f < F_; ++f) row[f] += dz[f];
      }
    }
  }

  // kf_ = exp(zk - c) for n rows of log-features zk.
  void key_features(const float* zk, std::size_t n) {
    for (std::size_t r = 0; r < n; ++r)
      kernels_.exp_bias(F_, zk + r * F_, neg_c_, 0.0f, kf_ + r * F_);
  }

  // qf_ row r = exp(zq + c - m) of one row of log-features; zero when the row attends
  // nothing (m = -inf).
  void query_feature_row(std::size_t r, const float* zq, const float* c, float m) {
    float* qf = qf_ + r * F_;
    if (m == kNegInf) {
      std::fill(qf, qf + F_, 0.0f);
    } else {
      kernels_.exp_bias(F_, zq, c, -m, qf);
    }
  }

  // num holds the numerators, den the normalizers: num becomes dnum = g / den and den
  // becomes dden = -(g . out) / den. Rows with den = 0 (no key) get zeros.
  void output_gradients(const float* g, std::size_t n, float* num, float* den) const {
    for (std::size_t r = 0; r < n; ++r) {
      float* row = num + r * Dv_;
      const float* gr = g + r * Dv_;
      if (!(den[r] > 0.0f) || !std::isfinite(den[r])) {
        std::fill(row, row + Dv_, 0.0f);
        den[r] = 0.0f;
        continue;
      }
      const float inv = 1.0f / den[r];
      double dot = 0.0;
      for (std::size_t e = 0; e < Dv_; ++e) {
        dot += static_cast<double>(gr[e]) * (row[e] * inv);  // g . out
        row[e] = gr[e] * inv;
      }
      den[r] = static_cast<float>(-dot) * inv;
    }
  }

  // a_ = Q' K'^T of the segment, kept on and below the diagonal (query i, key j <= i).
  void product_a(std::size_t n) {
    transpose(kf_, n, F_, kf_t_);
    kernels_.gemm(n, n, F_, qf_, F_, 1, kf_t_, n, a_, n, false);
    for (std::size_t r = 0; r < n; ++r) std::fill(a_ + r * n + r + 1, a_ + (r + 1) * n, 0.0f);
  }

  // b_ = dnum V^T + dden 1^T of the segment, on and below the diagonal.
  void product_b(const float* v, const float* dnum, const float* dden, std::size_t n) {
    transpose(v, n, Dv_, vt_);
    kernels_.gemm(n, n, Dv_, dnum, Dv_, 1, vt_, n, b_, n, false);
    for (std::size_t r = 0; r < n; ++r) {
      for (std::size_t j = 0; j <= r; ++j) b_[r * n + j] += dden[r];
      std::fill(b_ + r * n + r + 1, b_ + (r + 1) * n, 0.0f);
    }
  }

  // dx for n rows x (with u and features phi) from dphi: sum_f (dphi phi)_f d log phi_f / dx.
  void feature_backward(const float* x, const float* u, const float* phi, const float* dphi,
                        std::size_t n, float* dx) {
    const float eps = spec_.kernel_epsilon;
    for (std::size_t r = 0; r < n; ++r) {
      const float* p = phi + r * F_;
      const float* dp = dphi + r * F_;
      const float* ur = u + r * m_;
      float* gr = g_ + r * m_;
      double norm = 0.0;
      switch (spec_.kernel) {
        case Kernel::kSoftmax:
          for (std::size_t f = 0; f < m_; ++f) {
            gr[f] = dp[f] * p[f];
            norm += gr[f];
          }
          break;
        case Kernel::kSoftmaxHyperbolic:
          for (std::size_t f = 0; f < m_; ++f) {
            const float plus = dp[f] * p[f], minus = dp[m_ + f] * p[m_ + f];
            gr[f] = plus - minus;
            norm += static_cast<double>(plus) + minus;
          }
          break;
        default:
          for (std::size_t f = 0; f < m_; ++f)
            gr[f] = dp[f] * p[f] * generalized_slope(spec_.kernel, ur[f], eps);
          break;
      }
      norm_[r] = static_cast<float>(norm);
    }
    const float* w = spec_.projection;
    if (w != nullptr) {
      kernels_.gemm(n, d_, m_, g_, m_, 1, w, d_, dx, d_, false);
    } else {
      std::copy(g_, g_ + n * m_, dx);  // identity projection: m = d
    }
    const bool softmax_kernel =
        spec_.kernel == Kernel::kSoftmax || spec_.kernel == Kernel::kSoftmaxHyperbolic;
    const float c2 = c_ * c_;
    for (std::size_t r = 0; r < n; ++r) {
      float* row = dx + r * d_;
      const float* xr = x + r * d_;
      for (std::size_t i = 0; i < d_; ++i)
        row[i] = c_ * row[i] - (softmax_kernel ? c2 * norm_[r] * xr[i] : 0.0f);
    }
    if (dw_ != nullptr) kernels_.gemm(m_, d_, n, g_, 1, m_, x, d_, dw_, d_, true);
  }

  // dst = src^T for a row-major rows x cols src.
  void transpose(const float* src, std::size_t rows, std::size_t cols, float* dst) const {
    kernels_.transpose(rows, cols, src, cols, dst, rows);
  }

  const AttentionDims& dims_;
  const FavorOptions& o_;
  const FeatureMapSpec& spec_;
  const FeatureEvaluator& features_;
  const KernelSet& kernels_;
  const std::size_t F_, m_, d_, Dv_, R_;
  const float c_;
  float* dw_ = nullptr;
  std::vector<float> zq_buf_, zk_buf_, uq_buf_, uk_buf_, qf_buf_, kf_buf_, dqf_buf_, dkf_buf_,
      kf_t_buf_, t_buf_, g_buf_, a_buf_, b_buf_, num_buf_, vt_buf_, ones_buf_, den_buf_,
      row_max_buf_, norm_buf_, c_ref_buf_, neg_c_buf_, prefix_buf_, chunk_max_buf_, s_buf_, st_buf_,
      z_buf_, ds_buf_, dz_buf_;
  float *zq_, *zk_, *uq_, *uk_, *qf_, *kf_, *dqf_, *dkf_, *kf_t_, *t_, *g_, *a_, *b_, *num_, *vt_,
      *ones_, *den_, *row_max_, *norm_, *c_ref_, *neg_c_, *prefix_, *chunk_max_, *s_, *st_, *z_,
      *ds_, *dz_;
  // Causal: per-row results of the forward sweep and its segments with their references.
  std::vector<float> dnum_, dden_, mrow_, refs_;
  std::vector<std::pair<std::size_t, std::size_t>> segments_;
};

// NaN / infinity in the output gradient: an InputError naming the first one.
void check_grad_out(const float* g, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) {
    if (!std::isfinite(g[i])) {
      throw InputError(std::string("gradOut: ") + (std::isnan(g[i]) ? "NaN" : "infinity") +
                       " at flat index " + std::to_string(i) + "; gradients must be finite");
    }
  }
}

}  // namespace

void favor_attention_backward(const AttentionDims& dims, const float* q, const float* k,
                              const float* v, const float* grad_out, const FavorOptions& options,
                              const FavorGradients& grads, const KernelSet& kernels,
                              ThreadPool& pool) {
  const FeatureMapSpec& fm = options.feature_map;
  if (fm.head_dim != dims.head_dim)
    throw InputError("feature map head dimension does not match the query");
  if (!supported(fm.kernel)) {
    throw InputError(
        "backward: the kernel must be softmax, softmax-hyperbolic, relu, elu, exp or abs (trig features are signed, "
        "softmax-opt / softmax-dense have data-dependent parameters)");
  }
  if (options.epsilon != 0.0f)
    throw InputError("backward: epsilon must be 0 (it does not cancel like the stabilizers)");
  if (options.state != nullptr || options.absorb_into != nullptr || options.keys_state != nullptr) {
    throw InputError("backward: decoding states and split calls have no backward pass");
  }
  if (options.causal && dims.q_len != dims.k_len) {
    throw InputError(
        "backward: causal attention needs equal query and key lengths (self-attention)");
  }
  check_favor_numbers(options);
  if (grads.dprojection != nullptr && fm.projection == nullptr) {
    throw InputError(
        "backward: a projection gradient needs a projection (this feature map has none)");
  }
  check_cancel(options.cancel);
  const InputStats stats = scan_inputs(dims, q, k, v, pool);
  if (std::max(stats.max_query_norm2, stats.max_key_norm2) /
          std::sqrt(static_cast<double>(dims.head_dim)) >
      1e30) {
    throw InputError("query/key: squared row norms above 1e30 overflow the feature map in float32");
  }
  check_value_magnitude(dims, stats);
  const std::size_t heads = dims.batch * dims.heads;
  check_grad_out(grad_out, heads * dims.q_len * dims.value_dim);

  const FeatureEvaluator features(fm, kernels);
  const std::size_t F = features.feature_count(), m = fm.num_projections, d = dims.head_dim,
                    Dv = dims.value_dim;
  const std::size_t rows =
      options.causal ? std::min(options.chunk_size, kMaxChunkSize) : kBlockRows;
  // One dW partial per head, summed in head order: the bits do not depend on the threads.
  std::vector<float> dw_parts(grads.dprojection != nullptr ? heads * m * d : 0, 0.0f);
  std::vector<std::unique_ptr<BackwardWorker>> workers(pool.size());
  const std::size_t unit_work =
      std::max<std::size_t>(1, std::max(dims.q_len, dims.k_len) * F * (d + Dv));
  const std::size_t grain = std::max<std::size_t>(1, kMinWorkPerPiece / unit_work);
  pool.parallel_for(heads, grain, [&](std::size_t begin, std::size_t end, std::size_t slot) {
    if (!workers[slot])
      workers[slot] = std::make_unique<BackwardWorker>(dims, options, features, kernels, rows);
    BackwardWorker& w = *workers[slot];
    for (std::size_t h = begin; h < end; ++h) {
      const std::uint8_t* pad = options.key_padding != nullptr
                                    ? options.key_padding + (h / dims.heads) * dims.k_len
                                    : nullptr;
      w.set_projection_grad(dw_parts.empty() ? nullptr : dw_parts.data() + h * m * d);
      const float* qh = q + h * dims.q_len * d;
      const float* kh = k + h * dims.k_len * d;
      const float* vh = v + h * dims.k_len * Dv;
      const float* gh = grad_out + h * dims.q_len * Dv;
      float* dqh = grads.dq + h * dims.q_len * d;
      float* dkh = grads.dk + h * dims.k_len * d;
      float* dvh = grads.dv + h * dims.k_len * Dv;
      if (options.causal) {
        w.causal(qh, kh, vh, gh, pad, dqh, dkh, dvh);
      } else {
        w.bidirectional(qh, kh, vh, gh, pad, dqh, dkh, dvh);
      }
    }
  });
  if (grads.dprojection != nullptr) {
    const float c = static_cast<float>(std::pow(static_cast<double>(d), -0.25));
    std::fill(grads.dprojection, grads.dprojection + m * d, 0.0f);
    for (std::size_t h = 0; h < heads; ++h) {
      const float* part = dw_parts.data() + h * m * d;
      for (std::size_t i = 0; i < m * d; ++i) grads.dprojection[i] += part[i];
    }
    for (std::size_t i = 0; i < m * d; ++i) grads.dprojection[i] *= c;
  }
}

}  // namespace pa
