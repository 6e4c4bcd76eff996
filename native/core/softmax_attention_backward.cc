#include "core/softmax_attention_backward.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "core/memory.h"
#include "core/online_softmax.h"

namespace pa {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();
// Tiles: kQueryBlock query rows x kKeyBlock keys. Both passes use the same tiles (same
// GEMM calls on the same operands), so the scores of the second pass are the bits the
// first pass took its row max from: exp(s - max) <= 1 exactly, whatever the scale of s.
constexpr std::size_t kQueryBlock = 64;
constexpr std::size_t kKeyBlock = 128;
constexpr std::size_t kGroupRows =
    4 * kQueryBlock;  // first pass: query rows sharing one packing of a key block
// A head is split into parts (query groups in the first pass, key blocks in the
// second) only when there are fewer than kSplitUnits (batch, head) pairs, and never
// below kMinRowsPerPart rows a part. The split depends on the problem size only,
// never on the pool size: the dq partials of a head's parts are summed in a fixed
// order, so the bits do not depend on the machine.
constexpr std::size_t kSplitUnits = 16;
constexpr std::size_t kMinRowsPerPart = 256;

// Which tiles a causal mask hides entirely.
struct Tiling {
  std::size_t Lq, Lk;
  long long offset;  // query i sees keys j <= i + offset (causal)
  bool causal;

  std::size_t query_blocks() const { return (Lq + kQueryBlock - 1) / kQueryBlock; }
  std::size_t key_blocks() const { return (Lk + kKeyBlock - 1) / kKeyBlock; }
  // True when no query row of [i0, i0 + n) sees any key from j0 on.
  bool hidden(std::size_t i0, std::size_t n, std::size_t j0) const {
    return causal && static_cast<long long>(j0) > static_cast<long long>(i0 + n) - 1 + offset;
  }
  // Tiles (query block x key block) of key block kb that are not hidden.
  std::size_t key_block_cost(std::size_t kb) const {
    std::size_t count = 0;
    for (std::size_t i0 = 0; i0 < Lq; i0 += kQueryBlock) {
      if (!hidden(i0, std::min(kQueryBlock, Lq - i0), kb * kKeyBlock)) ++count;
    }
    return count;
  }
  // Tiles of the query rows of group gi (kGroupRows rows) that are not hidden.
  std::size_t group_cost(std::size_t gi) const {
    std::size_t count = 0;
    const std::size_t end = std::min(Lq, (gi + 1) * kGroupRows);
    for (std::size_t i0 = gi * kGroupRows; i0 < end; i0 += kQueryBlock) {
      for (std::size_t j0 = 0; j0 < Lk; j0 += kKeyBlock) {
        if (!hidden(i0, std::min(kQueryBlock, Lq - i0), j0)) ++count;
      }
    }
    return count;
  }
};

// Parts per head for `units` (batch, head) pairs and this many blocks (of
// `block_rows` rows each) with work in them.
std::size_t parts_per_head(std::size_t units, std::size_t busy_blocks, std::size_t block_rows) {
  std::size_t parts = units >= kSplitUnits ? 1 : (kSplitUnits + units - 1) / units;
  const std::size_t by_rows = busy_blocks * block_rows / kMinRowsPerPart;
  return std::max<std::size_t>(1, std::min(parts, by_rows));
}

// Contiguous ranges of blocks, about equal in cost: part p is [bounds[p], bounds[p + 1]).
std::vector<std::size_t> split_by_cost(const std::vector<std::size_t>& cost, std::size_t parts) {
  std::size_t total = 0;
  for (std::size_t c : cost) total += c;
  std::vector<std::size_t> bounds(parts + 1, 0);
  std::size_t b = 0, prefix = 0;
  for (std::size_t p = 1; p < parts; ++p) {
    while (b < cost.size() && prefix * parts < p * total) prefix += cost[b++];
    bounds[p] = b;
  }
  bounds[parts] = cost.size();
  return bounds;
}

// Per query row of one (batch, head), written by the first pass: the row max of the
// scores, 1 / the row sum of exp(s - max) (0 for a row that attends no key) and
// D_i / row sum. With G'_i = G_i / sum_i and e_ij = exp(s_ij - max_i):
//   dV_j = sum_i e_ij G'_i,  dS_ij = e_ij (G'_i . v_j - D_i / sum_i).
struct RowStats {
  float* max;
  float* inv_sum;
  float* delta;
};

RowStats row_stats(float* base, std::size_t Lq) { return {base, base + Lq, base + 2 * Lq}; }

// One thread's tiles (carved from its thread_scratch for one unit of work) and the
// two passes over the rows or keys of one (batch, head).
class BackwardWorker {
 public:
  BackwardWorker(const AttentionDims& dims, const SoftmaxOptions& options, const KernelSet& kernels,
                 const Tiling& tiling)
      : options_(options),
        kernels_(kernels),
        tiling_(tiling),
        d_(dims.head_dim),
        Dv_(dims.value_dim) {
    auto layout = [&](Carver& carve) {
      k_t_ = carve.take(d_ * kKeyBlock);
      v_t_ = carve.take(Dv_ * kKeyBlock);
      scores_ = carve.take(kQueryBlock * kKeyBlock);
      dscores_ = carve.take(kQueryBlock * kKeyBlock);
      acc_ = carve.take(kGroupRows * Dv_);
      grad_ = carve.take(kQueryBlock * Dv_);
      row_sum_ = carve.take(kGroupRows);
      padded_ = reinterpret_cast<std::size_t*>(
          carve.take(kKeyBlock * sizeof(std::size_t) / sizeof(float)));
    };
    Carver at(thread_scratch(carved_floats(layout)));
    layout(at);
  }

  // First pass over query groups [group_begin, group_end): the online softmax of the
  // forward, keeping each row's max and sum, then D_i = G_i . out_i.
  void statistics(const float* q, const float* k, const float* v, const float* g,
                  const std::uint8_t* pad, const RowStats& stats, std::size_t group_begin,
                  std::size_t group_end) {
    const std::size_t Lq = tiling_.Lq, Lk = tiling_.Lk;
    for (std::size_t gi = group_begin; gi < group_end; ++gi) {
      check_cancel(options_.cancel);
      const std::size_t g0 = gi * kGroupRows;
      const std::size_t group_rows = std::min(kGroupRows, Lq - g0);
      float* row_max = stats.max + g0;
      std::fill(row_max, row_max + group_rows, kNegInf);
      std::fill(row_sum_, row_sum_ + group_rows, 0.0f);
      std::fill(acc_, acc_ + group_rows * Dv_, 0.0f);
      for (std::size_t j0 = 0; j0 < Lk; j0 += kKeyBlock) {
        if (tiling_.hidden(g0, group_rows, j0)) break;  // and every later key block
        const std::size_t m = std::min(kKeyBlock, Lk - j0);
        if (!pack_keys(k, pad, j0, m)) continue;  // every key of the block is padded
        for (std::size_t b0 = 0; b0 < group_rows; b0 += kQueryBlock) {
          const std::size_t n = std::min(kQueryBlock, group_rows - b0);
          if (tiling_.hidden(g0 + b0, n, j0)) continue;
          forward_block(q, v, g0 + b0, b0, n, j0, m, row_max);
        }
      }
      for (std::size_t r = 0; r < group_rows; ++r) {
        const std::size_t i = g0 + r;
        float* out = acc_ + r * Dv_;
        if (row_sum_[r] > 0.0f) {
          const float inv = 1.0f / row_sum_[r];
          for (std::size_t t = 0; t < Dv_; ++t) out[t] *= inv;
          stats.inv_sum[i] = inv;
          stats.delta[i] = kernels_.dot(Dv_, g + i * Dv_, out) * inv;
        } else {  // attends no key: a zero row of out, no gradient
          stats.inv_sum[i] = 0.0f;
          stats.delta[i] = 0.0f;
        }
      }
    }
  }

  // Second pass over key blocks [block_begin, block_end): dk and dv of those keys,
  // and their contributions to dq (added to `dq`, which this call zeroes first).
  void gradients(const float* q, const float* k, const float* v, const float* g,
                 const std::uint8_t* pad, const RowStats& stats, float* dq, float* dk, float* dv,
                 std::size_t block_begin, std::size_t block_end) {
    const std::size_t Lq = tiling_.Lq, Lk = tiling_.Lk, d = d_, Dv = Dv_;
    std::fill(dq, dq + Lq * d, 0.0f);
    for (std::size_t kb = block_begin; kb < block_end; ++kb) {
      check_cancel(options_.cancel);
      const std::size_t j0 = kb * kKeyBlock;
      const std::size_t m = std::min(kKeyBlock, Lk - j0);
      float* dk_block = dk + j0 * d;
      float* dv_block = dv + j0 * Dv;
      std::fill(dk_block, dk_block + m * d, 0.0f);
      std::fill(dv_block, dv_block + m * Dv, 0.0f);
      if (!pack_keys(k, pad, j0, m)) continue;  // no query attends these keys
      kernels_.transpose(m, Dv, v + j0 * Dv, Dv, v_t_, m);
      for (std::size_t i0 = 0; i0 < Lq; i0 += kQueryBlock) {
        const std::size_t n = std::min(kQueryBlock, Lq - i0);
        if (tiling_.hidden(i0, n, j0)) continue;
        backward_block(q, k, g, stats, i0, n, j0, m, dq, dk_block, dv_block);
      }
    }
  }

 private:
  // scores_ = q[i0 .. i0+n) (scale k[j0 .. j0+m))^T: the one GEMM both passes use.
  void scores(const float* q, std::size_t i0, std::size_t n, std::size_t m) {
    kernels_.gemm(n, m, d_, q + i0 * d_, d_, 1, k_t_, m, scores_, m, false);
  }

  // Hides the padded keys of row i of the tile with -inf and returns how many leading
  // columns its causal limit leaves (the rest must be treated as hidden by the caller).
  std::size_t mask_row(float* s, std::size_t i, std::size_t j0, std::size_t m) const {
    std::size_t keep = m;
    if (tiling_.causal) {
      const long long visible =
          static_cast<long long>(i) + tiling_.offset + 1 - static_cast<long long>(j0);
      keep = static_cast<std::size_t>(std::clamp<long long>(visible, 0, static_cast<long long>(m)));
    }
    for (std::size_t t = 0; t < padded_count_; ++t) {
      if (padded_[t] < keep) s[padded_[t]] = kNegInf;
    }
    return keep;
  }

  // First pass, one tile: running max and sum of query rows [i0, i0 + n) (local row
  // b0 of the group), acc += exp(s - max) v.
  void forward_block(const float* q, const float* v, std::size_t i0, std::size_t b0, std::size_t n,
                     std::size_t j0, std::size_t m, float* row_max) {
    scores(q, i0, n, m);
    for (std::size_t r = 0; r < n; ++r) {
      float* s = scores_ + r * m;
      const std::size_t keep = mask_row(s, i0 + r, j0, m);
      float& max = row_max[b0 + r];
      const float new_max = keep > 0 ? std::max(max, kernels_.max_bias(keep, s, nullptr)) : max;
      online_softmax_row(kernels_, s, keep, m, new_max, max, row_sum_[b0 + r],
                         acc_ + (b0 + r) * Dv_, Dv_);
    }
    kernels_.gemm(n, Dv_, m, scores_, m, 1, v + j0 * Dv_, Dv_, acc_ + b0 * Dv_, Dv_, true);
  }

  // Second pass, one tile: query rows [i0, i0 + n) x keys [j0, j0 + m).
  void backward_block(const float* q, const float* k, const float* g, const RowStats& stats,
                      std::size_t i0, std::size_t n, std::size_t j0, std::size_t m, float* dq,
                      float* dk_block, float* dv_block) {
    const std::size_t d = d_, Dv = Dv_;
    const float scale = options_.scale;
    // e = exp(s - max): the probabilities times each row's sum.
    scores(q, i0, n, m);
    for (std::size_t r = 0; r < n; ++r) {
      const std::size_t i = i0 + r;
      float* s = scores_ + r * m;
      const float max = stats.max[i];
      const std::size_t keep = max == kNegInf ? 0 : mask_row(s, i, j0, m);
      if (keep > 0) kernels_.exp_bias(keep, s, nullptr, -max, s);
      std::fill(s + keep, s + m, 0.0f);
      // G' = G / sum (zero for a row that attends no key).
      const float inv = stats.inv_sum[i];
      const float* gi = g + i * Dv;
      float* gr = grad_ + r * Dv;
      for (std::size_t t = 0; t < Dv; ++t) gr[t] = gi[t] * inv;
    }
    // dV += e^T G'
    kernels_.gemm(m, Dv, n, scores_, 1, m, grad_, Dv, dv_block, Dv, true);
    // dS = scale e (G' V^T - D / sum)
    kernels_.gemm(n, m, Dv, grad_, Dv, 1, v_t_, m, dscores_, m, false);
    for (std::size_t r = 0; r < n; ++r) {
      const float delta = stats.delta[i0 + r];
      const float* e = scores_ + r * m;
      float* ds = dscores_ + r * m;
      for (std::size_t c = 0; c < m; ++c) ds[c] = e[c] * (ds[c] - delta) * scale;
    }
    // dQ += dS K, dK += dS^T Q
    kernels_.gemm(n, d, m, dscores_, m, 1, k + j0 * d, d, dq + i0 * d, d, true);
    kernels_.gemm(m, d, n, dscores_, 1, m, q + i0 * d, d, dk_block, d, true);
  }

  // k_t_ = scale K[j0 .. j0+m)^T (d x m), padded_ = padded columns. False when every
  // key of the block is padded (then k_t_ is not written).
  bool pack_keys(const float* k, const std::uint8_t* pad, std::size_t j0, std::size_t m) {
    padded_count_ = 0;
    if (pad != nullptr) {
      for (std::size_t j = 0; j < m; ++j) {
        if (pad[j0 + j] == 0) padded_[padded_count_++] = j;
      }
      if (padded_count_ == m) return false;
    }
    const float scale = options_.scale;
    for (std::size_t j = 0; j < m; ++j) {
      const float* row = k + (j0 + j) * d_;
      for (std::size_t t = 0; t < d_; ++t) k_t_[t * m + j] = row[t] * scale;
    }
    return true;
  }

  const SoftmaxOptions& options_;
  const KernelSet& kernels_;
  const Tiling& tiling_;
  const std::size_t d_, Dv_;
  float *k_t_, *v_t_, *scores_, *dscores_, *acc_, *grad_, *row_sum_;
  std::size_t* padded_;
  std::size_t padded_count_ = 0;
};

}  // namespace

void softmax_attention_backward(const AttentionDims& dims, const float* q, const float* k,
                                const float* v, const float* grad_out,
                                const SoftmaxOptions& options, const SoftmaxGradients& grads,
                                const KernelSet& kernels, ThreadPool& pool) {
  if (!std::isfinite(options.scale)) throw InputError("scale must be a finite number");
  check_cancel(options.cancel);
  const std::size_t heads = dims.batch * dims.heads;
  const std::size_t Lq = dims.q_len, Lk = dims.k_len, d = dims.head_dim, Dv = dims.value_dim;
  const InputStats stats = scan_inputs(dims, q, k, v, pool);
  // |q.k * scale| <= |scale| ||q|| ||k||: keep scores finite in float32.
  const double q_norm = std::sqrt(stats.max_query_norm2), k_norm = std::sqrt(stats.max_key_norm2);
  const double scale = std::fabs(static_cast<double>(options.scale));
  if (scale * q_norm * k_norm > 1e37) {
    throw InputError("query/key: magnitudes so large that attention scores overflow float32");
  }
  check_value_magnitude(dims, stats);
  const double max_grad = scan_abs_max("gradOut", grad_out, heads * Lq, Dv, pool);
  // |dP|, |D| <= Dv max|G| max|v|; |dQ| <= scale 2 |dP| max|k|; |dK| <= scale 2 |dP| Lq max|q|;
  // |dV| <= Lq max|G|.
  const double dp_bound = 2.0 * static_cast<double>(Dv) * max_grad * stats.max_abs_value;
  const double bound = std::max({dp_bound, scale * dp_bound * k_norm,
                                 scale * dp_bound * static_cast<double>(Lq) * q_norm,
                                 static_cast<double>(Lq) * max_grad});
  if (bound > 1e36) {
    throw InputError(
        "gradOut: magnitudes so large that the gradients could overflow float32; scale them down");
  }
  if (heads == 0) return;
  if (Lq == 0 || Lk == 0) {  // nothing attends anything
    std::fill(grads.dq, grads.dq + heads * Lq * d, 0.0f);
    std::fill(grads.dk, grads.dk + heads * Lk * d, 0.0f);
    std::fill(grads.dv, grads.dv + heads * Lk * Dv, 0.0f);
    return;
  }

  const Tiling tiling{Lq, Lk, static_cast<long long>(Lk) - static_cast<long long>(Lq),
                      options.causal};
  auto pad_of = [&](std::size_t h) {
    return options.key_padding ? options.key_padding + (h / dims.heads) * Lk : nullptr;
  };
  // Parts of a head: ranges of blocks of about equal work.
  auto plan = [&](std::size_t blocks, std::size_t block_rows, auto cost_of) {
    std::vector<std::size_t> cost(blocks);
    std::size_t busy = 0;
    for (std::size_t b = 0; b < blocks; ++b) {
      cost[b] = cost_of(b);
      busy += cost[b] > 0 ? 1 : 0;
    }
    return split_by_cost(cost, parts_per_head(heads, busy, block_rows));
  };

  // Pass 1: row statistics, query groups split over parts.
  PooledBuffer row_buffer(heads * 3 * Lq);
  auto stats_of = [&](std::size_t h) { return row_stats(row_buffer.data() + h * 3 * Lq, Lq); };
  const auto groups = plan((Lq + kGroupRows - 1) / kGroupRows, kGroupRows,
                           [&](std::size_t gi) { return tiling.group_cost(gi); });
  const std::size_t group_parts = groups.size() - 1;
  pool.parallel_for(heads * group_parts, 1, [&](std::size_t begin, std::size_t end, std::size_t) {
    BackwardWorker worker(dims, options, kernels, tiling);
    for (std::size_t u = begin; u < end; ++u) {
      const std::size_t h = u / group_parts, p = u % group_parts;
      worker.statistics(q + h * Lq * d, k + h * Lk * d, v + h * Lk * Dv, grad_out + h * Lq * Dv,
                        pad_of(h), stats_of(h), groups[p], groups[p + 1]);
    }
  });

  // Pass 2: gradients, key blocks split over parts; part 0 adds into dq itself, the
  // others into partials summed afterwards in part order.
  const auto keys = plan(tiling.key_blocks(), kKeyBlock,
                         [&](std::size_t kb) { return tiling.key_block_cost(kb); });
  const std::size_t key_parts = keys.size() - 1;
  PooledBuffer partials(key_parts > 1 ? heads * (key_parts - 1) * Lq * d : 0);
  auto dq_of = [&](std::size_t h, std::size_t p) {
    return p == 0 ? grads.dq + h * Lq * d
                  : partials.data() + (h * (key_parts - 1) + p - 1) * Lq * d;
  };
  pool.parallel_for(heads * key_parts, 1, [&](std::size_t begin, std::size_t end, std::size_t) {
    BackwardWorker worker(dims, options, kernels, tiling);
    for (std::size_t u = begin; u < end; ++u) {
      const std::size_t h = u / key_parts, p = u % key_parts;
      worker.gradients(q + h * Lq * d, k + h * Lk * d, v + h * Lk * Dv, grad_out + h * Lq * Dv,
                       pad_of(h), stats_of(h), dq_of(h, p), grads.dk + h * Lk * d,
                       grads.dv + h * Lk * Dv, keys[p], keys[p + 1]);
    }
  });
  if (key_parts > 1) {
    check_cancel(options.cancel);
    pool.parallel_for(heads, 1, [&](std::size_t begin, std::size_t end, std::size_t) {
      for (std::size_t h = begin; h < end; ++h) {
        float* dq = dq_of(h, 0);
        for (std::size_t p = 1; p < key_parts; ++p) {
          const float* part = dq_of(h, p);
          for (std::size_t t = 0; t < Lq * d; ++t) dq[t] += part[t];
        }
      }
    });
  }
}

}  // namespace pa
