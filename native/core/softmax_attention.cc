#include "core/softmax_attention.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>
#include <vector>

#include "core/head_loop.h"
#include "core/memory.h"
#include "core/online_softmax.h"

namespace pa {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();
// A block's scores (48 x 128 floats, 24 KiB) stay in L1 between the QK^T product, the
// row max, the exp and the PV product; 64 x 256 (64 KiB) went to L2 for each pass. 48 rows
// are whole register tiles of every kernel set (6, 8, 12 or 16 rows).
constexpr std::size_t kQueryBlock = 48;
constexpr std::size_t kKeyBlock = 128;
// Row stride of the packed K^T and of the scores: rows 128 floats apart (512 bytes)
// would share 8 of L1's 64 sets and evict each other; 144 spreads them over all.
constexpr std::size_t kKeyStride = kKeyBlock + 16;
constexpr std::size_t kGroupRows =
    4 * kQueryBlock;  // query rows sharing one packing of a key block

// Scratch of one thread (kept between calls) and one head's computation:
// flash-style tiles, scores of kQueryBlock x kKeyBlock at a time, with a running
// row max and row sum (the exp kernel returns each row's sum).
class SoftmaxHead {
 public:
  SoftmaxHead(const AttentionDims& dims, const SoftmaxOptions& options, const KernelSet& kernels)
      : dims_(dims), options_(options), kernels_(kernels), Dv_(dims.value_dim) {
    const std::size_t d = dims.head_dim;
    auto layout = [&](Carver& carve) {
      q_scaled_ = carve.take(kGroupRows * d);
      k_t_ = carve.take(d * kKeyStride);
      scores_ = carve.take(kQueryBlock * kKeyStride);
      acc_ = carve.take(kGroupRows * Dv_);
      row_max_ = carve.take(kGroupRows);
      row_sum_ = carve.take(kGroupRows);
      padded_ = reinterpret_cast<std::size_t*>(
          carve.take(kKeyBlock * sizeof(std::size_t) / sizeof(float)));
    };
    Carver at(thread_scratch(carved_floats(layout)));
    layout(at);
  }

  // Query rows of group `group` (kGroupRows from group * kGroupRows) of one head.
  void run(const float* q, const float* k, const float* v, float* out, const std::uint8_t* pad,
           std::size_t group) {
    const std::size_t Lq = dims_.q_len, Lk = dims_.k_len, d = dims_.head_dim;
    const long long offset = static_cast<long long>(Lk) - static_cast<long long>(Lq);
    const std::size_t g0 = group * kGroupRows;
    check_cancel(options_.cancel);
    const std::size_t group_rows = std::min(kGroupRows, Lq - g0);
    // Keys this group can see: all, or up to its last row's causal limit.
    std::size_t key_end = Lk;
    if (options_.causal) {
      const long long limit = static_cast<long long>(g0 + group_rows - 1) + offset + 1;
      key_end =
          static_cast<std::size_t>(std::clamp<long long>(limit, 0, static_cast<long long>(Lk)));
    }
    // The scale is folded into the queries once, so scores come out of the GEMM final.
    for (std::size_t t = 0; t < group_rows * d; ++t) q_scaled_[t] = q[g0 * d + t] * options_.scale;
    std::fill(row_max_, row_max_ + group_rows, kNegInf);
    std::fill(row_sum_, row_sum_ + group_rows, 0.0f);
    std::fill(acc_, acc_ + group_rows * Dv_, 0.0f);
    // Each key block is packed once for the whole group of query blocks.
    for (std::size_t j0 = 0; j0 < key_end; j0 += kKeyBlock) {
      const std::size_t m = std::min(kKeyBlock, key_end - j0);
      pack_keys(k, pad, j0, m);
      prefetch_rows(k + (j0 + m) * d, std::min(kKeyBlock, key_end - j0 - m) * d);
      for (std::size_t b0 = 0; b0 < group_rows; b0 += kQueryBlock) {
        const std::size_t n = std::min(kQueryBlock, group_rows - b0);
        if (options_.causal &&
            static_cast<long long>(j0) > static_cast<long long>(g0 + b0 + n - 1) + offset) {
          continue;  // the whole block is above the diagonal
        }
        block(g0 + b0, b0, n, j0, m, offset, v);
      }
    }
    for (std::size_t r = 0; r < group_rows; ++r)
      finish_row(acc_ + r * Dv_, row_sum_[r], out + (g0 + r) * Dv_);
  }

 private:
  // Query rows [i0, i0 + n) (local row b0 of the group) against packed keys [j0, j0 + m).
  // A causal block on the diagonal computes only the columns its last row sees: the
  // ones past them would be masked for every row.
  void block(std::size_t i0, std::size_t b0, std::size_t n, std::size_t j0, std::size_t m,
             long long offset, const float* v) {
    const std::size_t d = dims_.head_dim;
    auto visible = [&](std::size_t i) {  // keys of [j0, j0 + m) that query i sees
      const long long count = static_cast<long long>(i) + offset + 1 - static_cast<long long>(j0);
      return static_cast<std::size_t>(std::clamp<long long>(count, 0, static_cast<long long>(m)));
    };
    const std::size_t cols = options_.causal ? visible(i0 + n - 1) : m;
    kernels_.gemm(n, cols, d, q_scaled_ + b0 * d, d, 1, k_t_, kKeyStride, scores_, kKeyStride,
                  false);
    for (std::size_t r = 0; r < n; ++r) {
      float* s = scores_ + r * kKeyStride;
      float& row_max = row_max_[b0 + r];
      for (std::size_t t = 0; t < padded_count_; ++t) s[padded_[t]] = kNegInf;
      // Keys after this row's limit are hidden: a tail of the block.
      if (options_.causal) std::fill(s + visible(i0 + r), s + cols, kNegInf);
      const float new_max = std::max(row_max, kernels_.max_bias(cols, s, nullptr));
      online_softmax_row(kernels_, s, cols, cols, new_max, row_max, row_sum_[b0 + r],
                         acc_ + (b0 + r) * Dv_, Dv_);
    }
    // acc += P V, straight from the caller's values.
    kernels_.gemm(n, Dv_, cols, scores_, kKeyStride, 1, v + j0 * Dv_, Dv_, acc_ + b0 * Dv_, Dv_,
                  true);
  }

  void finish_row(const float* acc, float sum, float* dst) const {
    const std::size_t Dv = Dv_;
    if (sum > 0.0f) {
      const float inv = 1.0f / sum;
      for (std::size_t t = 0; t < Dv; ++t) dst[t] = acc[t] * inv;
    } else {
      std::fill(dst, dst + Dv, 0.0f);  // attends no key
    }
  }

  // Asks for the next key block while this one's products run: past L2 (long
  // sequences) its rows would otherwise arrive one by one during the transpose.
  static void prefetch_rows(const float* x, std::size_t count) {
#if defined(__GNUC__) || defined(__clang__)
    for (std::size_t i = 0; i < count; i += 16) __builtin_prefetch(x + i);
#else
    (void)x;
    (void)count;
#endif
  }

  // k_t_ = K[j0 .. j0+m)^T (d x m, rows kKeyStride apart), padded_ = padded columns.
  void pack_keys(const float* k, const std::uint8_t* pad, std::size_t j0, std::size_t m) {
    const std::size_t d = dims_.head_dim;
    kernels_.transpose(m, d, k + j0 * d, d, k_t_, kKeyStride);
    padded_count_ = 0;
    if (pad != nullptr) {
      for (std::size_t j = 0; j < m; ++j) {
        if (pad[j0 + j] == 0) padded_[padded_count_++] = j;
      }
    }
  }

  const AttentionDims& dims_;
  const SoftmaxOptions& options_;
  const KernelSet& kernels_;
  const std::size_t Dv_;
  float *q_scaled_, *k_t_, *scores_, *acc_, *row_max_, *row_sum_;
  std::size_t* padded_;
  std::size_t padded_count_ = 0;
};

}  // namespace

void softmax_attention(const AttentionDims& dims, const float* q, const float* k, const float* v,
                       float* out, const SoftmaxOptions& options, const KernelSet& kernels,
                       ThreadPool& pool) {
  if (!std::isfinite(options.scale)) throw InputError("scale must be a finite number");
  check_cancel(options.cancel);
  const InputStats stats = scan_inputs(dims, q, k, v, pool);
  // |q.k * scale| <= |scale| ||q|| ||k||: keep scores finite in float32.
  const double bound = std::fabs(static_cast<double>(options.scale)) *
                       std::sqrt(stats.max_query_norm2) * std::sqrt(stats.max_key_norm2);
  if (bound > 1e37) {
    throw InputError("query/key: magnitudes so large that attention scores overflow float32");
  }
  check_value_magnitude(dims, stats);
  // Each head's query groups are independent pieces of pool work (the same bits
  // whichever thread takes them).
  const std::size_t groups = (dims.q_len + kGroupRows - 1) / kGroupRows;
  run_heads<SoftmaxHead>(pool, dims, groups, q, k, v, out, options.key_padding,
                         [&] { return std::make_unique<SoftmaxHead>(dims, options, kernels); });
}

}  // namespace pa
