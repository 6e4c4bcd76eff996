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
constexpr std::size_t kMinWorkPerPiece = std::size_t{1} << 20;

// One (batch, head) state: S_e (F x Dv), z_e (F), value sums (Dv), then the key count
// and M.
struct State {
  float* s;
  float* z;
  float* vsum;
  float* count;
  float* max;
};

struct StateLayout {
  std::size_t F, Dv;
  std::size_t floats() const {
    return Carver::round_up(F * Dv) + Carver::round_up(F) + Carver::round_up(Dv) + Carver::round_up(2);
  }
  State view(float* base) const {
    Carver carve(base);
    float* s = carve.take(F * Dv);
    float* z = carve.take(F);
    float* vsum = carve.take(Dv);
    float* tail = carve.take(2);
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
  Worker(const AttentionDims& dims, const PytorchFavorOptions& o, const KernelSet& kernels, std::size_t F)
      : dims_(dims), o_(o), kernels_(kernels), F_(F), Dv_(dims.value_dim), d_(dims.head_dim) {
    const std::size_t R = kRows;
    scratch_.resize(6 * R * F + R * R + R * Dv_ + 3 * R + 3 * F);
    float* at = scratch_.data();
    auto take = [&](std::size_t n) {
      float* p = at;
      at += n;
      return p;
    };
    u_ = take(R * F);
    e_ = take(R * F);
    kf_ = take(R * F);
    kf_t_ = take(R * F);
    qf_ = take(R * F);
    work_ = take(R * F);
    a_ = take(R * R);
    vm_ = take(R * Dv_);
    ones_ = take(R);
    std::fill(ones_, ones_ + R, 1.0f);
    den_ = take(R);
    half_norm_ = take(R);
    col_max_ = take(F);
    col_scale_ = take(F);
    z_ = take(F);
    r_ = o.features == PytorchFeatures::kSoftmax ? static_cast<float>(1.0 / std::sqrt(static_cast<double>(F))) : 1.0f;
    eps_ = o.features == PytorchFeatures::kSoftmax ? kSoftmaxEps : o.features == PytorchFeatures::kRelu ? kReluEps : 0.0f;
  }

  // Bidirectional attention of one head.
  void bidirectional(const float* q, const float* k, const float* v, const std::uint8_t* keep, float* out,
                     float* s) {
    const std::size_t Lk = dims_.k_len, Lq = dims_.q_len;
    float* z = z_;
    std::fill(s, s + F_ * Dv_, 0.0f);
    std::fill(z, z + F_, 0.0f);
    float key_max = 0.0f;
    if (o_.features == PytorchFeatures::kSoftmax) key_max = max_projection(k, 0, Lk);
    if (o_.features == PytorchFeatures::kNoProjection) key_softmax_statistics(k, keep, Lk);
    for (std::size_t j0 = 0; j0 < Lk; j0 += kRows) {
      check_cancel(o_.cancel);
      const std::size_t n = std::min(kRows, Lk - j0);
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
      kernels_.gemm(F_, Dv_, n, kf_, 1, F_, vm_, Dv_, s, Dv_, true);
      kernels_.gemm(1, F_, n, ones_, 0, 1, kf_, F_, z, F_, true);
    }
    for (std::size_t i0 = 0; i0 < Lq; i0 += kRows) {
      check_cancel(o_.cancel);
      const std::size_t n = std::min(kRows, Lq - i0);
      query_features(q, i0, n);
      float* rows = out + i0 * Dv_;
      kernels_.gemm(n, Dv_, F_, qf_, F_, 1, s, Dv_, rows, Dv_, false);
      for (std::size_t r = 0; r < n; ++r) {
        const float inv = 1.0f / kernels_.dot(F_, qf_ + r * F_, z);
        for (std::size_t e = 0; e < Dv_; ++e) rows[r * Dv_ + e] *= inv;
      }
    }
  }

  // Causal attention of one head, continuing from st (q_len = k_len rows).
  void causal(const float* q, const float* k, const float* v, const std::uint8_t* keep, float* out, const State& st,
              bool* rose) {
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
      for (std::size_t r = 0; r < n; ++r) {
        for (std::size_t f = 0; f < F_; ++f) kf_t_[f * n + r] = kf_[r * F_ + f];
      }
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
        den_[r] = r_ * kernels_.dot(F_, qf, st.z) + prior_eps * *st.count + within + kCausalEps * qsum;
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
            throw InputError("key: exp(" + std::to_string(k[j0 * d_ + i]) +
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
          for (std::size_t f = 0; f < F_; ++f) qf[f] = r_ * (qf[f] + eps_);
        }
        break;
      case PytorchFeatures::kRelu:
        kernels_.gemm(n, F_, d_, q + i0 * d_, d_, 1, o_.packed_projection, F_, u_, F_, false);
        for (std::size_t i = 0; i < n * F_; ++i) qf_[i] = (u_[i] > 0.0f ? u_[i] : 0.0f) + eps_;
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
  float *u_, *e_, *kf_, *kf_t_, *qf_, *work_, *a_, *vm_, *ones_, *den_, *half_norm_, *col_max_, *col_scale_, *z_;
};

}  // namespace

std::size_t pytorch_favor_feature_count(const PytorchFavorOptions& options, std::size_t head_dim) {
  return options.features == PytorchFeatures::kNoProjection ? head_dim : options.num_features;
}

std::size_t pytorch_favor_state_floats(std::size_t feature_count, std::size_t value_dim) {
  return StateLayout{feature_count, value_dim}.floats();
}

void pytorch_favor_state_reset(float* state, std::size_t heads, std::size_t feature_count, std::size_t value_dim) {
  const StateLayout layout{feature_count, value_dim};
  for (std::size_t h = 0; h < heads; ++h) layout.reset(state + h * layout.floats());
}

void pytorch_favor_attention(const AttentionDims& dims, const float* q, const float* k, const float* v, float* out,
                             const PytorchFavorOptions& o, const KernelSet& kernels, ThreadPool& pool) {
  const std::size_t F = pytorch_favor_feature_count(o, dims.head_dim);
  if (F == 0) throw InputError("numFeatures must be >= 1");
  if (o.features != PytorchFeatures::kNoProjection && o.packed_projection == nullptr) {
    throw InputError("softmax and relu features need a projection");
  }
  if (o.causal && dims.q_len != dims.k_len) throw InputError("causal attention here is self-attention: query and key lengths must be equal");
  if (o.state != nullptr && !o.causal) throw InputError("a decoding state continues causal attention");
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
      throw InputError(o.features == PytorchFeatures::kNoProjection
                           ? "attention output overflows float32: with no_projection, performer-pytorch's numerics "
                             "exponentiate keys without a stabilizer (use numerics 'exact')"
                           : "attention output overflows float32 (inputs too large)");
    }
  }
  if (o.state != nullptr) std::copy(states.data(), states.data() + heads * layout.floats(), o.state);
  if (o.max_rose != nullptr && std::find(rose.begin(), rose.end(), 1) != rose.end()) *o.max_rose = 1;
}

}  // namespace pa
