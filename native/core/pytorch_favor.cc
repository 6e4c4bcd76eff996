#include "core/pytorch_favor.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "core/memory.h"

namespace pa {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();
constexpr std::size_t kRows = 64;  // rows per key / query block and per causal chunk
constexpr float kSoftmaxEps = 1e-4f;
constexpr float kReluEps = 1e-3f;
constexpr float kCausalEps = 1e-6f;

// One (batch, head) state: S_e (F x Dv), z_e (F), value sums (Dv), then the key count
// and M.
struct State {
  float* s;
  float* z;
  float* vsum;
  float* count;
  float* max;
};

struct StateLayout : CarvedLayout<StateLayout> {
  StateLayout(std::size_t F, std::size_t Dv) : F(F), Dv(Dv) {}
  std::size_t F, Dv;
  State carve(Carver& at) const {
    float* s = at.take(F * Dv);
    float* z = at.take(F);
    float* vsum = at.take(Dv);
    float* tail = at.take(2);
    return {s, z, vsum, tail, tail + 1};
  }
  void reset(float* base) const {
    std::fill(base, base + floats(), 0.0f);  // padding too: serialized states compare bitwise
    *view(base).max = kNegInf;
  }
};

// The per-thread work of one call: features of row blocks and the products built
// from them. Rows of one head go through it in order.
class Worker {
 public:
  Worker(const AttentionDims& dims, const PytorchFavorOptions& o, const KernelSet& kernels,
         std::size_t F)
      : dims_(dims), o_(o), kernels_(kernels), F_(F), Dv_(dims.value_dim), d_(dims.head_dim) {
    const std::size_t R = kRows;
    auto layout = [&](Carver& carve) {
      for (float** p : {&u_, &e_, &kf_, &kf_t_, &qf_, &work_}) *p = carve.take(R * F);
      a_ = carve.take(R * R);
      vm_ = carve.take(R * Dv_);
      for (float** p : {&ones_, &den_, &half_norm_}) *p = carve.take(R);
      for (float** p : {&col_max_, &col_scale_, &z_}) *p = carve.take(F);
    };
    scratch_.resize(carved_floats(layout));
    Carver at(scratch_.data());
    layout(at);
    std::fill(ones_, ones_ + R, 1.0f);
    r_ = o.features == PytorchFeatures::kSoftmax
             ? static_cast<float>(1.0 / std::sqrt(static_cast<double>(F)))
             : 1.0f;
    eps_ = o.features == PytorchFeatures::kSoftmax ? kSoftmaxEps
           : o.features == PytorchFeatures::kRelu  ? kReluEps
                                                   : 0.0f;
  }

  // Bidirectional attention of one head.
  void bidirectional(const float* q, const float* k, const float* v, const std::uint8_t* keep,
                     float* out, float* s) {
    const std::size_t Lq = dims_.q_len;
    key_sums(k, v, keep, s);
    for (std::size_t i0 = 0; i0 < Lq; i0 += kRows) {
      check_cancel(o_.cancel);
      const std::size_t n = std::min(kRows, Lq - i0);
      query_features(q, i0, n);
      float* rows = out + i0 * Dv_;
      kernels_.gemm(n, Dv_, F_, qf_, F_, 1, s, Dv_, rows, Dv_, false);
      for (std::size_t r = 0; r < n; ++r) {
        const float inv = 1.0f / kernels_.dot(F_, qf_ + r * F_, z_);
        for (std::size_t e = 0; e < Dv_; ++e) rows[r * Dv_ + e] *= inv;
      }
    }
  }

  // s (F x Dv) = K'^T V and z_ (F) = K'^T 1 over the keys of one head, values not
  // kept dropping out of s; returns the key stabilizer the features used.
  float key_sums(const float* k, const float* v, const std::uint8_t* keep, float* s) {
    const std::size_t Lk = dims_.k_len;
    std::fill(s, s + F_ * Dv_, 0.0f);
    std::fill(z_, z_ + F_, 0.0f);
    const float key_max =
        o_.features == PytorchFeatures::kSoftmax ? max_projection(k, 0, Lk) : 0.0f;
    if (o_.features == PytorchFeatures::kNoProjection) key_softmax_statistics(k, keep, Lk);
    for (std::size_t j0 = 0; j0 < Lk; j0 += kRows) {
      check_cancel(o_.cancel);
      const std::size_t n = std::min(kRows, Lk - j0);
      key_block(k, v, keep, j0, n, key_max);
      kernels_.gemm(F_, Dv_, n, kf_, 1, F_, vm_, Dv_, s, Dv_, true);
      kernels_.gemm(1, F_, n, ones_, 0, 1, kf_, F_, z_, F_, true);
    }
    return key_max;
  }

  // kf_ rows: the features of key rows [j0, j0 + n); vm_ rows: their values, zero
  // where the key is not kept.
  void key_block(const float* k, const float* v, const std::uint8_t* keep, std::size_t j0,
                 std::size_t n, float key_max) {
    if (o_.features == PytorchFeatures::kNoProjection) {
      // softmax over the keys, per entry: exp(k - max) / sum.
      for (std::size_t r = 0; r < n; ++r) {
        float* kf = kf_ + r * F_;
        const bool dropped = o_.drop_masked_keys && keep != nullptr && keep[j0 + r] == 0;
        if (dropped) {
          std::fill(kf, kf + F_, 0.0f);
          continue;
        }
        const float* kr = k + (j0 + r) * d_;
        for (std::size_t f = 0; f < F_; ++f) work_[f] = kr[f] - col_max_[f];
        kernels_.exp_bias(F_, work_, nullptr, 0.0f, kf);
        for (std::size_t f = 0; f < F_; ++f) kf[f] = kf[f] / col_scale_[f];
      }
    } else {
      key_exponents(k, j0, n, key_max);  // e_
      for (std::size_t i = 0; i < n * F_; ++i) kf_[i] = materialize(e_[i]);
    }
    masked_values(v, keep, j0, n);
  }

  // Causal attention of one head, continuing from st (q_len = k_len rows).
  void causal(const float* q, const float* k, const float* v, const std::uint8_t* keep, float* out,
              const State& st, bool* rose) {
    const std::size_t L = dims_.k_len;
    if (o_.features == PytorchFeatures::kSoftmax && L > 0) {
      const float call_max = max_projection(k, 0, L);
      if (call_max > *st.max) {
        if (*st.count > 0.0f) {
          const float factor = std::exp(*st.max - call_max);
          for (std::size_t i = 0; i < F_ * Dv_; ++i) st.s[i] *= factor;
          for (std::size_t f = 0; f < F_; ++f) st.z[f] *= factor;
          *rose = true;
        }
        *st.max = call_max;
      }
    }
    for (std::size_t i0 = 0; i0 < L; i0 += kRows) {
      check_cancel(o_.cancel);
      const std::size_t n = std::min(kRows, L - i0);
      key_exponents(k, i0, n, *st.max);
      for (std::size_t i = 0; i < n * F_; ++i) kf_[i] = materialize(e_[i]);
      transpose(kf_, n, F_, kf_t_);
      query_features(q, i0, n);
      masked_values(v, keep, i0, n);
      // A = Q' K'^T within the chunk, lower triangle.
      kernels_.gemm(n, n, F_, qf_, F_, 1, kf_t_, n, a_, n, false);
      for (std::size_t r = 0; r < n; ++r) std::fill(a_ + r * n + r + 1, a_ + (r + 1) * n, 0.0f);
      float* rows = out + i0 * Dv_;
      // num = r Q' S_e + r eps qsum vsum^T + A V; den likewise from z_e, the count and A 1.
      kernels_.gemm(n, Dv_, F_, qf_, F_, 1, st.s, Dv_, rows, Dv_, false);
      for (std::size_t r = 0; r < n; ++r) {
        float* row = rows + r * Dv_;
        const float* qf = qf_ + r * F_;
        float qsum = 0.0f;
        for (std::size_t f = 0; f < F_; ++f) qsum += qf[f];
        const float prior_eps = r_ * eps_ * qsum;
        for (std::size_t e = 0; e < Dv_; ++e) row[e] = r_ * row[e] + prior_eps * st.vsum[e];
        float within = 0.0f;
        for (std::size_t j = 0; j <= r; ++j) within += a_[r * n + j];
        den_[r] =
            r_ * kernels_.dot(F_, qf, st.z) + prior_eps * *st.count + within + kCausalEps * qsum;
      }
      kernels_.gemm(n, Dv_, n, a_, n, 1, vm_, Dv_, rows, Dv_, true);
      for (std::size_t r = 0; r < n; ++r) {
        const float inv = 1.0f / den_[r];
        for (std::size_t e = 0; e < Dv_; ++e) rows[r * Dv_ + e] *= inv;
      }
      // Absorb the chunk's keys.
      kernels_.gemm(F_, Dv_, n, e_, 1, F_, vm_, Dv_, st.s, Dv_, true);
      kernels_.gemm(1, F_, n, ones_, 0, 1, e_, F_, st.z, F_, true);
      kernels_.gemm(1, Dv_, n, ones_, 0, 1, vm_, Dv_, st.vsum, Dv_, true);
      *st.count += static_cast<float>(n);
    }
  }

 private:
  // Key feature from its M-dependent part.
  float materialize(float e) const { return r_ * (e + eps_); }

  // u = c x W^T for rows [i0, i0 + n) of x into u_, and s = c^2 ||x||^2 / 2 per row.
  void project(const float* x, std::size_t i0, std::size_t n) {
    kernels_.gemm(n, F_, d_, x + i0 * d_, d_, 1, o_.packed_projection, F_, u_, F_, false);
    const double c2 = 1.0 / std::sqrt(static_cast<double>(d_));
    for (std::size_t r = 0; r < n; ++r) {
      const float* xr = x + (i0 + r) * d_;
      double sum = 0.0;
      for (std::size_t i = 0; i < d_; ++i) sum += static_cast<double>(xr[i]) * xr[i];
      half_norm_[r] = static_cast<float>(sum * c2 / 2.0);
    }
  }

  // max of u over rows [j0, j1) and every feature.
  float max_projection(const float* k, std::size_t j0, std::size_t j1) {
    float m = kNegInf;
    for (std::size_t i0 = j0; i0 < j1; i0 += kRows) {
      const std::size_t n = std::min(kRows, j1 - i0);
      kernels_.gemm(n, F_, d_, k + i0 * d_, d_, 1, o_.packed_projection, F_, u_, F_, false);
      m = std::max(m, kernels_.max_bias(n * F_, u_, nullptr));
    }
    return m;
  }

  // e_ rows: the M-dependent part of the key features of rows [j0, j0 + n).
  void key_exponents(const float* k, std::size_t j0, std::size_t n, float key_max) {
    switch (o_.features) {
      case PytorchFeatures::kSoftmax:
        project(k, j0, n);
        for (std::size_t r = 0; r < n; ++r) {
          // exp((u - s) - M), each difference rounded as PyTorch rounds it.
          float* u = u_ + r * F_;
          for (std::size_t f = 0; f < F_; ++f) u[f] = (u[f] - half_norm_[r]) - key_max;
          kernels_.exp_bias(F_, u, nullptr, 0.0f, e_ + r * F_);
        }
        break;
      case PytorchFeatures::kRelu:
        kernels_.gemm(n, F_, d_, k + j0 * d_, d_, 1, o_.packed_projection, F_, u_, F_, false);
        for (std::size_t i = 0; i < n * F_; ++i) e_[i] = u_[i] > 0.0f ? u_[i] : 0.0f;
        break;
      case PytorchFeatures::kNoProjection:
        kernels_.exp_bias(n * F_, k + j0 * d_, nullptr, 0.0f, e_);
        for (std::size_t i = 0; i < n * F_; ++i) {
          if (!std::isfinite(e_[i])) {
            throw InputError(
                "key: exp(" + std::to_string(k[j0 * d_ + i]) +
                ") overflows float32; with no_projection and causal attention, performer-pytorch's numerics "
                "exponentiate keys without a stabilizer (use numerics 'exact')");
          }
        }
        break;
    }
  }

  // qf_ rows: query features of rows [i0, i0 + n), and their sums.
  void query_features(const float* q, std::size_t i0, std::size_t n) {
    switch (o_.features) {
      case PytorchFeatures::kSoftmax:
        project(q, i0, n);
        for (std::size_t r = 0; r < n; ++r) {
          float* u = u_ + r * F_;
          const float row_max = kernels_.max_bias(F_, u, nullptr);
          for (std::size_t f = 0; f < F_; ++f) u[f] = (u[f] - half_norm_[r]) - row_max;
          float* qf = qf_ + r * F_;
          kernels_.exp_bias(F_, u, nullptr, 0.0f, qf);
          if (eq_ != nullptr) std::copy(qf, qf + F_, eq_ + r * F_);
          for (std::size_t f = 0; f < F_; ++f) qf[f] = r_ * (qf[f] + eps_);
        }
        break;
      case PytorchFeatures::kRelu:
        kernels_.gemm(n, F_, d_, q + i0 * d_, d_, 1, o_.packed_projection, F_, u_, F_, false);
        for (std::size_t i = 0; i < n * F_; ++i) qf_[i] = (u_[i] > 0.0f ? u_[i] : 0.0f) + eps_;
        if (eq_ != nullptr) {
          for (std::size_t i = 0; i < n * F_; ++i) eq_[i] = u_[i] > 0.0f ? u_[i] : 0.0f;
        }
        break;
      case PytorchFeatures::kNoProjection:
        for (std::size_t r = 0; r < n; ++r) {
          const float* qr = q + (i0 + r) * d_;
          const float row_max = kernels_.max_bias(F_, qr, nullptr);
          float* qf = qf_ + r * F_;
          kernels_.exp_bias(F_, qr, nullptr, -row_max, qf);
          double sum = 0.0;
          for (std::size_t f = 0; f < F_; ++f) sum += qf[f];
          const float total = static_cast<float>(sum);
          for (std::size_t f = 0; f < F_; ++f) qf[f] = qf[f] / total;
        }
        break;
    }
  }

  // Per-entry max and sum of exp over the keys (no projection, bidirectional).
  void key_softmax_statistics(const float* k, const std::uint8_t* keep, std::size_t Lk) {
    const bool drop = o_.drop_masked_keys && keep != nullptr;
    std::fill(col_max_, col_max_ + F_, kNegInf);
    for (std::size_t j = 0; j < Lk; ++j) {
      if (drop && keep[j] == 0) continue;
      kernels_.max_accumulate(F_, k + j * d_, col_max_);
    }
    std::vector<double> sums(F_, 0.0);
    for (std::size_t j = 0; j < Lk; ++j) {
      if (drop && keep[j] == 0) continue;
      const float* kr = k + j * d_;
      for (std::size_t f = 0; f < F_; ++f) work_[f] = kr[f] - col_max_[f];
      kernels_.exp_bias(F_, work_, nullptr, 0.0f, work_);
      for (std::size_t f = 0; f < F_; ++f) sums[f] += work_[f];
    }
    for (std::size_t f = 0; f < F_; ++f) col_scale_[f] = static_cast<float>(sums[f]);
  }

  // vm_ rows: values of rows [j0, j0 + n), zero where the key is not kept.
  void masked_values(const float* v, const std::uint8_t* keep, std::size_t j0, std::size_t n) {
    for (std::size_t r = 0; r < n; ++r) {
      float* dst = vm_ + r * Dv_;
      if (keep != nullptr && keep[j0 + r] == 0) {
        std::fill(dst, dst + Dv_, 0.0f);
      } else {
        std::copy(v + (j0 + r) * Dv_, v + (j0 + r + 1) * Dv_, dst);
      }
    }
  }

  const AttentionDims& dims_;
  const PytorchFavorOptions& o_;
  const KernelSet& kernels_;
  const std::size_t F_, Dv_, d_;
  float r_ = 1.0f, eps_ = 0.0f;
  std::vector<float> scratch_;
  float *u_, *e_, *kf_, *kf_t_, *qf_, *work_, *a_, *vm_, *ones_, *den_, *half_norm_, *col_max_,
      *col_scale_, *z_;
  float* eq_ = nullptr;  // query exponents, kept by the backward pass (else null)

 public:
  // ---- gradients (the stabilizers max_f u and M are constants, as performer-pytorch detaches
  // them)

  // Scratch of the backward pass and the (materialized) features' gradients.
  void prepare_backward() {
    const std::size_t R = kRows;
    auto layout = [&](Carver& carve) {
      for (float** p : {&eq_, &dqf_, &dkf_, &g_}) *p = carve.take(R * F_);
      dnum_ = carve.take(R * Dv_);
      b_ = carve.take(R * R);
      st_ = carve.take(F_ * Dv_);
      ds_ = carve.take(F_ * Dv_);
      t_ = carve.take(F_ * std::max(R, Dv_));
      vt_ = carve.take(Dv_ * R);
      dz_ = carve.take(F_);
      zeps_ = carve.take(F_);
      dden_ = carve.take(R);
      (void)carve.take(Dv_ * R);
    };
    back_.resize(carved_floats(layout));
    Carver at(back_.data());
    layout(at);
  }

  void backward_bidirectional(const float* q, const float* k, const float* v, const float* g,
                              const std::uint8_t* keep, float* dq, float* dk, float* dv, float* s) {
    const std::size_t Lk = dims_.k_len, Lq = dims_.q_len;
    const float key_max = key_sums(k, v, keep, s);  // no_projection has no backward
    transpose(s, F_, Dv_, st_);
    std::fill(ds_, ds_ + F_ * Dv_, 0.0f);
    std::fill(dz_, dz_ + F_, 0.0f);
    for (std::size_t i0 = 0; i0 < Lq; i0 += kRows) {
      check_cancel(o_.cancel);
      const std::size_t n = std::min(kRows, Lq - i0);
      query_features(q, i0, n);
      kernels_.gemm(n, Dv_, F_, qf_, F_, 1, s, Dv_, dnum_, Dv_, false);
      for (std::size_t r = 0; r < n; ++r) den_[r] = kernels_.dot(F_, qf_ + r * F_, z_);
      output_gradients(g + i0 * Dv_, n);
      kernels_.gemm(n, F_, Dv_, dnum_, Dv_, 1, st_, F_, dqf_, F_, false);
      for (std::size_t r = 0; r < n; ++r) {
        for (std::size_t f = 0; f < F_; ++f) dqf_[r * F_ + f] += dden_[r] * z_[f];
      }
      kernels_.gemm(F_, Dv_, n, qf_, 1, F_, dnum_, Dv_, ds_, Dv_, true);
      kernels_.gemm(1, F_, n, dden_, 0, 1, qf_, F_, dz_, F_, true);
      feature_backward(q + i0 * d_, eq_, dqf_, n, dq + i0 * d_);
    }
    transpose(ds_, F_, Dv_, st_);  // dS^T
    for (std::size_t j0 = 0; j0 < Lk; j0 += kRows) {
      check_cancel(o_.cancel);
      const std::size_t n = std::min(kRows, Lk - j0);
      key_block(k, v, keep, j0, n, key_max);
      // dk' = v_masked dS^T + dz (a masked key stays in the normalizer); dv = K' dS, zero where
      // masked.
      kernels_.gemm(n, F_, Dv_, vm_, Dv_, 1, st_, F_, dkf_, F_, false);
      for (std::size_t r = 0; r < n; ++r) {
        for (std::size_t f = 0; f < F_; ++f) dkf_[r * F_ + f] += dz_[f];
      }
      kernels_.gemm(n, Dv_, F_, kf_, F_, 1, ds_, Dv_, dv + j0 * Dv_, Dv_, false);
      zero_masked(keep, j0, n, dv + j0 * Dv_);
      feature_backward(k + j0 * d_, e_, dkf_, n, dk + j0 * d_);
    }
  }

  // Causal (q_len = k_len), from no state: a forward sweep (prefix sums, dq) then a
  // reverse sweep (suffix sums, dk and dv). dnum (L x Dv) and dden (L) are the caller's.
  void backward_causal(const float* q, const float* k, const float* v, const float* g,
                       const std::uint8_t* keep, float* dq, float* dk, float* dv, float* s,
                       float* dnum_all, float* dden_all) {
    const std::size_t L = dims_.k_len;
    const float key_max =
        o_.features == PytorchFeatures::kSoftmax && L > 0 ? max_projection(k, 0, L) : 0.0f;
    std::fill(s, s + F_ * Dv_, 0.0f);
    std::fill(z_, z_ + F_, 0.0f);
    for (std::size_t i0 = 0; i0 < L; i0 += kRows) {
      check_cancel(o_.cancel);
      const std::size_t n = std::min(kRows, L - i0);
      chunk_features(q, k, v, keep, i0, n, key_max);
      // num = Q' S + A V; den = Q' (z + 1e-6) + A 1.
      kernels_.gemm(n, Dv_, F_, qf_, F_, 1, s, Dv_, dnum_, Dv_, false);
      kernels_.gemm(n, Dv_, n, a_, n, 1, vm_, Dv_, dnum_, Dv_, true);
      for (std::size_t f = 0; f < F_; ++f) zeps_[f] = z_[f] + kCausalEps;
      for (std::size_t r = 0; r < n; ++r) {
        float within = 0.0f;
        for (std::size_t j = 0; j <= r; ++j) within += a_[r * n + j];
        den_[r] = kernels_.dot(F_, qf_ + r * F_, zeps_) + within;
      }
      output_gradients(g + i0 * Dv_, n);
      std::copy(dnum_, dnum_ + n * Dv_, dnum_all + i0 * Dv_);
      std::copy(dden_, dden_ + n, dden_all + i0);
      // dq' = dnum S^T + dden (z + 1e-6) + B K'
      transpose(s, F_, Dv_, st_);
      kernels_.gemm(n, F_, Dv_, dnum_, Dv_, 1, st_, F_, dqf_, F_, false);
      for (std::size_t r = 0; r < n; ++r) {
        for (std::size_t f = 0; f < F_; ++f) dqf_[r * F_ + f] += dden_[r] * zeps_[f];
      }
      product_b(n);
      kernels_.gemm(n, F_, n, b_, n, 1, kf_, F_, dqf_, F_, true);
      feature_backward(q + i0 * d_, eq_, dqf_, n, dq + i0 * d_);
      kernels_.gemm(F_, Dv_, n, kf_, 1, F_, vm_, Dv_, s, Dv_, true);
      kernels_.gemm(1, F_, n, ones_, 0, 1, kf_, F_, z_, F_, true);
    }
    // Reverse sweep: s holds R, z_ holds r.
    std::fill(s, s + F_ * Dv_, 0.0f);
    std::fill(z_, z_ + F_, 0.0f);
    const std::size_t chunks = (L + kRows - 1) / kRows;
    for (std::size_t c = chunks; c-- > 0;) {
      check_cancel(o_.cancel);
      const std::size_t i0 = c * kRows, n = std::min(kRows, L - i0);
      chunk_features(q, k, v, keep, i0, n, key_max);
      std::copy(dnum_all + i0 * Dv_, dnum_all + (i0 + n) * Dv_, dnum_);
      std::copy(dden_all + i0, dden_all + i0 + n, dden_);
      product_b(n);
      // dk' = v R^T + r + B^T Q'
      transpose(vm_, n, Dv_, vt_);
      kernels_.gemm(F_, n, Dv_, s, Dv_, 1, vt_, n, t_, n, false);
      transpose(t_, F_, n, dkf_);
      kernels_.gemm(n, F_, n, b_, 1, n, qf_, F_, dkf_, F_, true);
      for (std::size_t r = 0; r < n; ++r) {
        for (std::size_t f = 0; f < F_; ++f) dkf_[r * F_ + f] += z_[f];
      }
      // dv = K' R + A^T dnum, zero where masked.
      kernels_.gemm(n, Dv_, F_, kf_, F_, 1, s, Dv_, dv + i0 * Dv_, Dv_, false);
      kernels_.gemm(n, Dv_, n, a_, 1, n, dnum_, Dv_, dv + i0 * Dv_, Dv_, true);
      zero_masked(keep, i0, n, dv + i0 * Dv_);
      feature_backward(k + i0 * d_, e_, dkf_, n, dk + i0 * d_);
      kernels_.gemm(F_, Dv_, n, qf_, 1, F_, dnum_, Dv_, s, Dv_, true);
      kernels_.gemm(1, F_, n, dden_, 0, 1, qf_, F_, z_, F_, true);
    }
  }

 private:
  // The chunk's key features (e_, kf_), query features (eq_, qf_), masked values (vm_) and
  // A = Q' K'^T on and below the diagonal (a_).
  void chunk_features(const float* q, const float* k, const float* v, const std::uint8_t* keep,
                      std::size_t i0, std::size_t n, float key_max) {
    key_exponents(k, i0, n, key_max);
    for (std::size_t i = 0; i < n * F_; ++i) kf_[i] = materialize(e_[i]);
    query_features(q, i0, n);
    masked_values(v, keep, i0, n);
    transpose(kf_, n, F_, kf_t_);
    kernels_.gemm(n, n, F_, qf_, F_, 1, kf_t_, n, a_, n, false);
    for (std::size_t r = 0; r < n; ++r) std::fill(a_ + r * n + r + 1, a_ + (r + 1) * n, 0.0f);
  }

  // b_ = dnum V^T + dden 1^T on and below the diagonal.
  void product_b(std::size_t n) {
    transpose(vm_, n, Dv_, vt_);
    kernels_.gemm(n, n, Dv_, dnum_, Dv_, 1, vt_, n, b_, n, false);
    for (std::size_t r = 0; r < n; ++r) {
      for (std::size_t j = 0; j <= r; ++j) b_[r * n + j] += dden_[r];
      std::fill(b_ + r * n + r + 1, b_ + (r + 1) * n, 0.0f);
    }
  }

  // dnum_ holds the numerators and den_ the normalizers: dnum_ = g / den, dden_ = -(g . out) / den.
  void output_gradients(const float* g, std::size_t n) {
    for (std::size_t r = 0; r < n; ++r) {
      float* row = dnum_ + r * Dv_;
      const float* gr = g + r * Dv_;
      const float inv = 1.0f / den_[r];
      double dot = 0.0;
      for (std::size_t e = 0; e < Dv_; ++e) {
        dot += static_cast<double>(gr[e]) * (row[e] * inv);
        row[e] = gr[e] * inv;
      }
      dden_[r] = static_cast<float>(-dot) * inv;
    }
  }

  // dx of n rows from the gradients of their features (exp parts or ReLU values in e).
  void feature_backward(const float* x, const float* e, const float* dphi, std::size_t n,
                        float* dx) {
    const bool softmax = o_.features == PytorchFeatures::kSoftmax;
    const float c = static_cast<float>(std::pow(static_cast<double>(d_), -0.25));
    for (std::size_t r = 0; r < n; ++r) {
      double sum = 0.0;
      for (std::size_t f = 0; f < F_; ++f) {
        const std::size_t i = r * F_ + f;
        // phi = r (e + eps): dphi/du = r e (softmax, then -s); relu: [u > 0].
        g_[i] = softmax ? dphi[i] * r_ * e[i] : (e[i] > 0.0f ? dphi[i] : 0.0f);
        sum += g_[i];
      }
      den_[r] = static_cast<float>(sum);
    }
    kernels_.gemm(n, d_, F_, g_, F_, 1, o_.projection, d_, dx, d_, false);
    for (std::size_t r = 0; r < n; ++r) {
      float* row = dx + r * d_;
      const float* xr = x + r * d_;
      for (std::size_t i = 0; i < d_; ++i)
        row[i] = c * row[i] - (softmax ? c * c * den_[r] * xr[i] : 0.0f);
    }
  }

  void zero_masked(const std::uint8_t* keep, std::size_t j0, std::size_t n, float* rows) const {
    if (keep == nullptr) return;
    for (std::size_t r = 0; r < n; ++r) {
      if (keep[j0 + r] == 0) std::fill(rows + r * Dv_, rows + (r + 1) * Dv_, 0.0f);
    }
  }

  // dst = src^T for a row-major rows x cols src.
  void transpose(const float* src, std::size_t rows, std::size_t cols, float* dst) const {
    kernels_.transpose(rows, cols, src, cols, dst, rows);
  }

  std::vector<float> back_;
  float *dqf_ = nullptr, *dkf_ = nullptr, *g_ = nullptr, *dnum_ = nullptr, *b_ = nullptr,
        *st_ = nullptr, *ds_ = nullptr, *t_ = nullptr, *vt_ = nullptr, *dz_ = nullptr,
        *zeps_ = nullptr, *dden_ = nullptr;
};

}  // namespace

std::size_t pytorch_favor_feature_count(const PytorchFavorOptions& options, std::size_t head_dim) {
  return options.features == PytorchFeatures::kNoProjection ? head_dim : options.num_features;
}

std::size_t pytorch_favor_state_floats(std::size_t feature_count, std::size_t value_dim) {
  return StateLayout{feature_count, value_dim}.floats();
}

void pytorch_favor_state_reset(float* state, std::size_t heads, std::size_t feature_count,
                               std::size_t value_dim) {
  const StateLayout layout{feature_count, value_dim};
  for (std::size_t h = 0; h < heads; ++h) layout.reset(state + h * layout.floats());
}

void pytorch_favor_attention(const AttentionDims& dims, const float* q, const float* k,
                             const float* v, float* out, const PytorchFavorOptions& o,
                             const KernelSet& kernels, ThreadPool& pool) {
  const std::size_t F = pytorch_favor_feature_count(o, dims.head_dim);
  if (F == 0) throw InputError("numFeatures must be >= 1");
  if (o.features != PytorchFeatures::kNoProjection && o.packed_projection == nullptr) {
    throw InputError("softmax and relu features need a projection");
  }
  if (o.causal && dims.q_len != dims.k_len)
    throw InputError(
        "causal attention here is self-attention: query and key lengths must be equal");
  if (o.state != nullptr && !o.causal)
    throw InputError("a decoding state continues causal attention");
  if (o.drop_masked_keys && (o.causal || o.features != PytorchFeatures::kNoProjection)) {
    throw InputError("drop_masked_keys applies to bidirectional attention without projection");
  }
  check_cancel(o.cancel);
  scan_inputs(dims, q, k, v, pool);
  const std::size_t heads = dims.batch * dims.heads;
  const std::size_t Lq = dims.q_len, Lk = dims.k_len, d = dims.head_dim, Dv = dims.value_dim;
  const StateLayout layout{F, Dv};
  // Causal calls work on copies of the states, handed back once every head is done.
  PooledBuffer states(o.causal ? heads * layout.floats() : 1);
  if (o.causal) {
    for (std::size_t h = 0; h < heads; ++h) {
      float* dst = states.data() + h * layout.floats();
      if (o.state != nullptr) {
        std::copy(o.state + h * layout.floats(), o.state + (h + 1) * layout.floats(), dst);
      } else {
        layout.reset(dst);
      }
    }
  }
  std::vector<std::unique_ptr<Worker>> workers(pool.size());
  std::vector<std::vector<float>> sums(pool.size());
  std::vector<std::uint8_t> rose(heads, 0);
  const std::size_t unit_work = std::max<std::size_t>(1, std::max(Lq, Lk) * F * (d + Dv));
  const std::size_t grain = std::max<std::size_t>(1, kMinWorkPerPiece / unit_work);
  pool.parallel_for(heads, grain, [&](std::size_t begin, std::size_t end, std::size_t slot) {
    if (!workers[slot]) workers[slot] = std::make_unique<Worker>(dims, o, kernels, F);
    Worker& w = *workers[slot];
    for (std::size_t h = begin; h < end; ++h) {
      const std::uint8_t* keep = o.keep != nullptr ? o.keep + (h / dims.heads) * Lk : nullptr;
      const float* qh = q + h * Lq * d;
      const float* kh = k + h * Lk * d;
      const float* vh = v + h * Lk * Dv;
      float* oh = out + h * Lq * Dv;
      if (o.causal) {
        bool raised = false;
        w.causal(qh, kh, vh, keep, oh, layout.view(states.data() + h * layout.floats()), &raised);
        rose[h] = raised ? 1 : 0;
      } else {
        sums[slot].resize(F * Dv);
        w.bidirectional(qh, kh, vh, keep, oh, sums[slot].data());
      }
    }
  });
  const std::size_t total = heads * Lq * Dv;
  for (std::size_t i = 0; i < total; ++i) {
    if (!std::isfinite(out[i])) {
      throw InputError(
          o.features == PytorchFeatures::kNoProjection
              ? "attention output overflows float32: with no_projection, performer-pytorch's numerics "
                "exponentiate keys without a stabilizer (use numerics 'exact')"
              : "attention output overflows float32 (inputs too large)");
    }
  }
  if (o.state != nullptr)
    std::copy(states.data(), states.data() + heads * layout.floats(), o.state);
  if (o.max_rose != nullptr && std::find(rose.begin(), rose.end(), 1) != rose.end())
    *o.max_rose = 1;
}

void pytorch_favor_backward(const AttentionDims& dims, const float* q, const float* k,
                            const float* v, const float* grad_out, const PytorchFavorOptions& o,
                            float* dq, float* dk, float* dv, const KernelSet& kernels,
                            ThreadPool& pool) {
  if (o.features == PytorchFeatures::kNoProjection)
    throw InputError("backward: no_projection features are not covered");
  if (o.packed_projection == nullptr || o.projection == nullptr)
    throw InputError("backward: needs the projection and its packed form");
  if (o.state != nullptr || o.drop_masked_keys)
    throw InputError("backward: decoding states and dropped keys have no backward pass");
  if (o.causal && dims.q_len != dims.k_len)
    throw InputError(
        "causal attention here is self-attention: query and key lengths must be equal");
  check_cancel(o.cancel);
  scan_inputs(dims, q, k, v, pool);
  const std::size_t heads = dims.batch * dims.heads;
  const std::size_t Lq = dims.q_len, Lk = dims.k_len, d = dims.head_dim, Dv = dims.value_dim,
                    F = o.num_features;
  for (std::size_t i = 0; i < heads * Lq * Dv; ++i) {
    if (!std::isfinite(grad_out[i]))
      throw InputError("gradOut: values must be finite, received " + std::to_string(grad_out[i]) +
                       " at flat index " + std::to_string(i));
  }
  std::vector<std::unique_ptr<Worker>> workers(pool.size());
  std::vector<std::vector<float>> scratch(pool.size());
  const std::size_t unit_work = std::max<std::size_t>(1, std::max(Lq, Lk) * F * (d + Dv));
  const std::size_t grain = std::max<std::size_t>(1, kMinWorkPerPiece / unit_work);
  pool.parallel_for(heads, grain, [&](std::size_t begin, std::size_t end, std::size_t slot) {
    if (!workers[slot]) {
      workers[slot] = std::make_unique<Worker>(dims, o, kernels, F);
      workers[slot]->prepare_backward();
    }
    Worker& w = *workers[slot];
    std::vector<float>& buf = scratch[slot];
    buf.resize(F * Dv + (o.causal ? Lk * (Dv + 1) : 0));
    for (std::size_t h = begin; h < end; ++h) {
      const std::uint8_t* keep = o.keep != nullptr ? o.keep + (h / dims.heads) * Lk : nullptr;
      const float* qh = q + h * Lq * d;
      const float* kh = k + h * Lk * d;
      const float* vh = v + h * Lk * Dv;
      const float* gh = grad_out + h * Lq * Dv;
      if (o.causal) {
        w.backward_causal(qh, kh, vh, gh, keep, dq + h * Lq * d, dk + h * Lk * d, dv + h * Lk * Dv,
                          buf.data(), buf.data() + F * Dv, buf.data() + F * Dv + Lk * Dv);
      } else {
        w.backward_bidirectional(qh, kh, vh, gh, keep, dq + h * Lq * d, dk + h * Lk * d,
                                 dv + h * Lk * Dv, buf.data());
      }
    }
  });
}

}  // namespace pa
