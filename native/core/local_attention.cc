#include "core/local_attention.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>
#include <vector>

namespace pa {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();
constexpr std::size_t kMinWorkPerPiece = std::size_t{1} << 20;

// The scratch of one thread: a window of queries against its look-around.
class LocalWorker {
 public:
  LocalWorker(const AttentionDims& dims, const LocalAttentionOptions& o, const KernelSet& kernels)
      : dims_(dims), o_(o), kernels_(kernels), w_(o.window), d_(dims.head_dim), Dv_(dims.value_dim),
        slots_(o.causal ? 2 * o.window : 3 * o.window),
        scale_(static_cast<float>(1.0 / std::sqrt(static_cast<double>(dims.head_dim)))) {
    // Scratch for this call's rows only: a window larger than the sequence needs no more.
    const std::size_t len = dims.k_len + (o.ring != nullptr ? std::min(o.start, 2 * w_) : 0);
    const std::size_t rows = std::min(w_, dims.q_len), cols = std::min(slots_, len);
    kt_.resize(d_ * cols);
    scores_.resize(std::max(rows * cols, o.ring != nullptr ? std::min(2 * w_, len) : 0));
    hidden_.resize(rows);
  }

  // Every row of one head (no ring: a whole sequence from position 0).
  void head(const float* q, const float* k, const float* v, const std::uint8_t* keep, float* out) {
    const std::size_t L = dims_.k_len;
    const std::size_t padded = (L + w_ - 1) / w_ * w_;
    for (std::size_t i0 = 0; i0 < L; i0 += w_) {
      check_cancel(o_.cancel);
      const std::size_t wb = i0 / w_;
      const std::size_t nq = std::min(w_, L - i0);
      // Look-around positions [first, last) (possibly outside the sequence) and the real
      // keys [lo, hi) among them.
      const long long first = (static_cast<long long>(wb) - 1) * static_cast<long long>(w_);
      const long long last = first + static_cast<long long>(slots_);
      const std::size_t lo = static_cast<std::size_t>(std::max<long long>(0, first));
      const std::size_t hi = static_cast<std::size_t>(std::min<long long>(static_cast<long long>(L), last));
      const std::size_t nk = hi - lo;
      for (std::size_t j = 0; j < nk; ++j) {
        for (std::size_t i = 0; i < d_; ++i) kt_[i * nk + j] = k[(lo + j) * d_ + i];
      }
      kernels_.gemm(nq, nk, d_, q + i0 * d_, d_, 1, kt_.data(), nk, scores_.data(), nk, false);
      // Padding rows (zero keys and values) in the look-around: visible only in
      // local-attention's non-causal, unmasked case.
      const long long pad_lo = std::max<long long>(first, static_cast<long long>(L));
      const long long pad_hi = std::min<long long>(last, static_cast<long long>(padded));
      const std::size_t pads = pad_hi > pad_lo ? static_cast<std::size_t>(pad_hi - pad_lo) : 0;
      const bool pads_visible = o_.pytorch_numerics && !o_.causal && keep == nullptr && pads > 0;
      for (std::size_t r = 0; r < nq; ++r) {
        const std::size_t i = i0 + r;
        float* row = scores_.data() + r * nk;
        for (std::size_t j = 0; j < nk; ++j) {
          const std::size_t p = lo + j;
          bool visible = !(o_.causal && p > i);
          if (keep != nullptr) visible = visible && keep[p] != 0 && (!o_.pytorch_numerics || keep[i] != 0);
          row[j] = visible ? row[j] * scale_ : kNegInf;
        }
        hidden_[r] = softmax_row(row, nk, pads_visible ? pads : 0) ? 0 : 1;
        if (hidden_[r] != 0) std::fill(row, row + nk, 0.0f);
      }
      kernels_.gemm(nq, Dv_, nk, scores_.data(), nk, 1, v + lo * Dv_, Dv_, out + i0 * Dv_, Dv_, false);
      for (std::size_t r = 0; r < nq; ++r) {
        if (hidden_[r] == 0) continue;
        float* y = out + (i0 + r) * Dv_;
        if (o_.pytorch_numerics) {
          hidden_row_average(v, lo, hi, first, last, padded, y);
        } else {
          std::fill(y, y + Dv_, 0.0f);
        }
      }
    }
  }

  // Rows of one head at positions start.. through the ring (decoding).
  void ring_rows(const float* q, const float* k, const float* v, float* ring, std::size_t start, float* out) {
    const std::size_t cap = 2 * w_;
    float* ring_k = ring;
    float* ring_v = ring + cap * d_;
    for (std::size_t r = 0; r < dims_.q_len; ++r) {
      const std::size_t t = start + r;
      std::copy(k + r * d_, k + (r + 1) * d_, ring_k + (t % cap) * d_);
      std::copy(v + r * Dv_, v + (r + 1) * Dv_, ring_v + (t % cap) * Dv_);
      const std::size_t wb = t / w_;
      const std::size_t lo = wb >= 1 ? (wb - 1) * w_ : 0;
      const std::size_t nk = t - lo + 1;
      float* row = scores_.data();
      for (std::size_t j = 0; j < nk; ++j) row[j] = kernels_.dot(d_, q + r * d_, ring_k + ((lo + j) % cap) * d_) * scale_;
      softmax_row(row, nk, 0);
      float* y = out + r * Dv_;
      std::fill(y, y + Dv_, 0.0f);
      for (std::size_t j = 0; j < nk; ++j) {
        const float* vr = ring_v + ((lo + j) % cap) * Dv_;
        for (std::size_t e = 0; e < Dv_; ++e) y[e] += row[j] * vr[e];
      }
    }
  }

  // Keeps the last positions of a sequence of L rows (from position 0) in the ring.
  void fill_ring(const float* k, const float* v, float* ring) const {
    const std::size_t cap = 2 * w_, L = dims_.k_len;
    for (std::size_t p = L > cap ? L - cap : 0; p < L; ++p) {
      std::copy(k + p * d_, k + (p + 1) * d_, ring + (p % cap) * d_);
      std::copy(v + p * Dv_, v + (p + 1) * Dv_, ring + cap * d_ + (p % cap) * Dv_);
    }
  }

 private:
  // Softmax of row[0, n) in place (hidden entries are -inf), with `zeros` more visible
  // entries of score 0 and value 0. Returns false when nothing is visible.
  bool softmax_row(float* row, std::size_t n, std::size_t zeros) {
    float m = kernels_.max_bias(n, row, nullptr);
    if (zeros > 0) m = std::max(m, 0.0f);
    if (m == kNegInf) return false;
    kernels_.exp_bias(n, row, nullptr, -m, row);
    double total = 0.0;
    for (std::size_t j = 0; j < n; ++j) total += row[j];
    if (zeros > 0) total += static_cast<double>(zeros) * std::exp(static_cast<double>(-m));
    const float inv = 1.0f / static_cast<float>(total);
    for (std::size_t j = 0; j < n; ++j) row[j] *= inv;
    return true;
  }

  // local-attention's output for a row whose every slot is hidden: the mean of all
  // value slots of the look-around [first, last).
  void hidden_row_average(const float* v, std::size_t lo, std::size_t hi, long long first, long long last,
                          std::size_t padded, float* y) const {
    std::vector<double> acc(Dv_, 0.0);
    for (std::size_t p = lo; p < hi; ++p) {
      for (std::size_t e = 0; e < Dv_; ++e) acc[e] += v[p * Dv_ + e];
    }
    // Slots before the start or past the padding hold -1; padding rows hold 0.
    std::size_t minus_one = 0;
    for (long long p = first; p < last; ++p) {
      if (p < 0 || p >= static_cast<long long>(padded)) ++minus_one;
    }
    const double slots = static_cast<double>(last - first);
    for (std::size_t e = 0; e < Dv_; ++e) y[e] = static_cast<float>((acc[e] - static_cast<double>(minus_one)) / slots);
  }

  const AttentionDims& dims_;
  const LocalAttentionOptions& o_;
  const KernelSet& kernels_;
  const std::size_t w_, d_, Dv_, slots_;
  const float scale_;
  std::vector<float> kt_, scores_;
  std::vector<std::uint8_t> hidden_;
};

}  // namespace

std::size_t local_ring_floats(std::size_t window, std::size_t head_dim, std::size_t value_dim) {
  return 2 * window * (head_dim + value_dim);
}

void local_attention(const AttentionDims& dims, const float* q, const float* k, const float* v, float* out,
                     const LocalAttentionOptions& o, const KernelSet& kernels, ThreadPool& pool) {
  if (o.window == 0) throw InputError("window must be >= 1");
  if (dims.q_len != dims.k_len) throw InputError("local attention is self-attention: query and key lengths must be equal");
  if (o.ring != nullptr && (!o.causal || o.keep != nullptr)) {
    throw InputError("a decoding ring continues causal local attention without a mask");
  }
  check_cancel(o.cancel);
  scan_inputs(dims, q, k, v, pool);
  const std::size_t heads = dims.batch * dims.heads, L = dims.q_len, d = dims.head_dim, Dv = dims.value_dim;
  const std::size_t ring_floats = local_ring_floats(o.window, d, Dv);
  const bool from_ring = o.ring != nullptr && o.start > 0;
  // A call that continues a ring works on copies, handed back once every head is done.
  std::vector<float> rings(o.ring != nullptr ? heads * ring_floats : 0);
  if (o.ring != nullptr) std::copy(o.ring, o.ring + heads * ring_floats, rings.begin());
  std::vector<std::unique_ptr<LocalWorker>> workers(pool.size());
  const std::size_t unit_work = std::max<std::size_t>(1, L * 3 * o.window * (d + Dv));
  const std::size_t grain = std::max<std::size_t>(1, kMinWorkPerPiece / unit_work);
  pool.parallel_for(heads, grain, [&](std::size_t begin, std::size_t end, std::size_t slot) {
    if (!workers[slot]) workers[slot] = std::make_unique<LocalWorker>(dims, o, kernels);
    LocalWorker& w = *workers[slot];
    for (std::size_t h = begin; h < end; ++h) {
      const float* qh = q + h * L * d;
      const float* kh = k + h * L * d;
      const float* vh = v + h * L * Dv;
      float* oh = out + h * L * Dv;
      float* ring = o.ring != nullptr ? rings.data() + h * ring_floats : nullptr;
      if (from_ring) {
        w.ring_rows(qh, kh, vh, ring, o.start, oh);
        continue;
      }
      const std::uint8_t* keep = o.keep != nullptr ? o.keep + (h / dims.heads) * L : nullptr;
      w.head(qh, kh, vh, keep, oh);
      if (ring != nullptr) w.fill_ring(kh, vh, ring);
    }
  });
  if (o.ring != nullptr) std::copy(rings.begin(), rings.end(), o.ring);
}

}  // namespace pa
