#include "core/softmax_attention.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>
#include <vector>

#include "core/head_loop.h"

namespace pa {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();
constexpr std::size_t kQueryBlock = 64;
constexpr std::size_t kKeyBlock = 128;

class SoftmaxHead {
 public:
  SoftmaxHead(const AttentionDims& dims, const SoftmaxOptions& options, const KernelSet& kernels)
      : dims_(dims), options_(options), kernels_(kernels) {
    k_t_.resize(dims.head_dim * kKeyBlock);
    scores_.resize(kQueryBlock * kKeyBlock);
    acc_.resize(kQueryBlock * dims.value_dim);
    row_max_.resize(kQueryBlock);
    row_sum_.resize(kQueryBlock);
  }

  void run(const float* q, const float* k, const float* v, float* out, const std::uint8_t* pad) {
    const std::size_t Lq = dims_.q_len, Lk = dims_.k_len, d = dims_.head_dim, Dv = dims_.value_dim;
    const long long offset = static_cast<long long>(Lk) - static_cast<long long>(Lq);
    for (std::size_t i0 = 0; i0 < Lq; i0 += kQueryBlock) {
      const std::size_t n = std::min(kQueryBlock, Lq - i0);
      // Keys this block can see: all, or up to the last row's causal limit.
      std::size_t key_end = Lk;
      if (options_.causal) {
        const long long limit = static_cast<long long>(i0 + n - 1) + offset + 1;
        key_end = static_cast<std::size_t>(std::clamp<long long>(limit, 0, static_cast<long long>(Lk)));
      }
      std::fill(row_max_.begin(), row_max_.end(), kNegInf);
      std::fill(row_sum_.begin(), row_sum_.end(), 0.0f);
      std::fill(acc_.begin(), acc_.begin() + n * Dv, 0.0f);
      for (std::size_t j0 = 0; j0 < key_end; j0 += kKeyBlock) {
        const std::size_t m = std::min(kKeyBlock, key_end - j0);
        for (std::size_t j = 0; j < m; ++j) {
          for (std::size_t t = 0; t < d; ++t) k_t_[t * m + j] = k[(j0 + j) * d + t];
        }
        kernels_.gemm(n, m, d, q + i0 * d, d, 1, k_t_.data(), m, scores_.data(), m, false);
        for (std::size_t r = 0; r < n; ++r) {
          float* s = &scores_[r * m];
          const long long limit = static_cast<long long>(i0 + r) + offset;  // last visible key
          for (std::size_t j = 0; j < m; ++j) {
            const bool hidden = (pad != nullptr && pad[j0 + j] == 0) ||
                                (options_.causal && static_cast<long long>(j0 + j) > limit);
            s[j] = hidden ? kNegInf : s[j] * options_.scale;
          }
          const float block_max = kernels_.max_bias(m, s, nullptr);
          const float new_max = std::max(row_max_[r], block_max);
          if (new_max == kNegInf) {  // nothing visible yet
            std::fill(s, s + m, 0.0f);
            continue;
          }
          const float correction = row_max_[r] == kNegInf ? 0.0f : std::exp(row_max_[r] - new_max);
          row_max_[r] = new_max;
          kernels_.exp_bias(m, s, nullptr, -new_max, s);
          float block_sum = 0.0f;
          for (std::size_t j = 0; j < m; ++j) block_sum += s[j];
          row_sum_[r] = row_sum_[r] * correction + block_sum;
          float* acc = &acc_[r * Dv];
          if (correction != 1.0f) {
            for (std::size_t t = 0; t < Dv; ++t) acc[t] *= correction;
          }
        }
        kernels_.gemm(n, Dv, m, scores_.data(), m, 1, v + j0 * Dv, Dv, acc_.data(), Dv, true);
      }
      for (std::size_t r = 0; r < n; ++r) {
        float* dst = out + (i0 + r) * Dv;
        const float* acc = &acc_[r * Dv];
        if (row_sum_[r] > 0.0f) {
          const float inv = 1.0f / row_sum_[r];
          for (std::size_t t = 0; t < Dv; ++t) dst[t] = acc[t] * inv;
        } else {
          std::fill(dst, dst + Dv, 0.0f);  // attends no key
        }
      }
    }
  }

 private:
  const AttentionDims& dims_;
  const SoftmaxOptions& options_;
  const KernelSet& kernels_;
  std::vector<float> k_t_, scores_, acc_, row_max_, row_sum_;
};

}  // namespace

void softmax_attention(const AttentionDims& dims, const float* q, const float* k, const float* v,
                       float* out, const SoftmaxOptions& options, const KernelSet& kernels,
                       ThreadPool& pool) {
  if (!std::isfinite(options.scale)) throw InputError("scale must be a finite number");
  const InputStats stats = scan_inputs(dims, q, k, v, pool);
  // |q.k * scale| <= |scale| ||q|| ||k||: keep scores finite in float32.
  const double bound = std::fabs(static_cast<double>(options.scale)) *
                       std::sqrt(stats.max_query_norm2) * std::sqrt(stats.max_key_norm2);
  if (bound > 1e37) {
    throw InputError("query/key: magnitudes so large that attention scores overflow float32");
  }
  check_value_magnitude(dims, stats);
  run_heads<SoftmaxHead>(pool, dims, q, k, v, out, options.key_padding,
                      [&] { return std::make_unique<SoftmaxHead>(dims, options, kernels); });
}

}  // namespace pa
