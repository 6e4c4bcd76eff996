#include "core/local_attention.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>
#include <vector>

namespace pa {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// The scratch of one thread: a window of queries against its look-around.
class LocalWorker {
 public:
  LocalWorker(const AttentionDims& dims, const LocalAttentionOptions& o, const KernelSet& kernels)
      : dims_(dims),
        o_(o),
        kernels_(kernels),
        w_(o.window),
        d_(dims.head_dim),
        Dv_(dims.value_dim),
        slots_(o.causal ? 2 * o.window : 3 * o.window),
        scale_(static_cast<float>(1.0 / std::sqrt(static_cast<double>(dims.head_dim)))) {
    // Scratch for this call's rows only: a window larger than the sequence needs no more.
    const std::size_t len = dims.k_len + (o.ring != nullptr ? std::min(o.start, 2 * w_) : 0);
    const std::size_t rows = std::min(w_, dims.q_len), cols = std::min(slots_, len);
    kt_.resize(d_ * cols);
    scores_.resize(std::max(rows * cols, o.ring != nullptr ? std::min(2 * w_, len) : 0));
    hidden_.resize(rows);
  }

  // The backward pass's scratch too.
  void prepare_backward() {
    vt_.resize(Dv_ * kt_.size() / std::max<std::size_t>(d_, 1));
    dp_.resize(scores_.size());
  }

  // Every row of one head (no ring: a whole sequence from position 0).
  void head(const float* q, const float* k, const float* v, const std::uint8_t* keep, float* out) {
    const std::size_t L = dims_.k_len;
    for (std::size_t i0 = 0; i0 < L; i0 += w_) {
      check_cancel(o_.cancel);
      const Window win = window(i0, keep);
      const std::size_t nk = win.hi - win.lo;
      window_probabilities(q, k, keep, i0, win.nq, win.lo, nk, win.visible_pads, scores_.data());
      kernels_.gemm(win.nq, Dv_, nk, scores_.data(), nk, 1, v + win.lo * Dv_, Dv_, out + i0 * Dv_,
                    Dv_, false);
      for (std::size_t r = 0; r < win.nq; ++r) {
        if (hidden_[r] == 0) continue;
        float* y = out + (i0 + r) * Dv_;
        if (o_.pytorch_numerics) {
          hidden_row_average(v, win, y);
        } else {
          std::fill(y, y + Dv_, 0.0f);
        }
      }
    }
  }

  // Gradients of every row of one head (as head()): dq overwritten, dk and dv accumulated
  // window by window (the caller zeroes them).
  void head_backward(const float* q, const float* k, const float* v, const std::uint8_t* keep,
                     const float* g, float* dq, float* dk, float* dv) {
    const std::size_t L = dims_.k_len;
    for (std::size_t i0 = 0; i0 < L; i0 += w_) {
      check_cancel(o_.cancel);
      const Window win = window(i0, keep);
      const std::size_t nq = win.nq, lo = win.lo, nk = win.hi - win.lo;
      const long long first = win.first, last = win.last;
      float* p = scores_.data();
      window_probabilities(q, k, keep, i0, nq, lo, nk, win.visible_pads, p);
      const float* gw = g + i0 * Dv_;
      // dv += P^T g
      kernels_.gemm(nk, Dv_, nq, p, 1, nk, gw, Dv_, dv + lo * Dv_, Dv_, true);
      // dP = g V^T, then dS = P (dP - rowsum(P dP)) / sqrt(d) in place.
      for (std::size_t j = 0; j < nk; ++j) {
        for (std::size_t e = 0; e < Dv_; ++e) vt_[e * nk + j] = v[(lo + j) * Dv_ + e];
      }
      float* ds = dp_.data();
      kernels_.gemm(nq, nk, Dv_, gw, Dv_, 1, vt_.data(), nk, ds, nk, false);
      for (std::size_t r = 0; r < nq; ++r) {
        float* pr = p + r * nk;
        float* dr = ds + r * nk;
        if (hidden_[r] != 0) {
          std::fill(dr, dr + nk, 0.0f);
          if (o_.pytorch_numerics) {
            // y = (sum of the real values - slots holding -1) / slots
            const float share = 1.0f / static_cast<float>(last - first);
            for (std::size_t j = 0; j < nk; ++j) {
              for (std::size_t e = 0; e < Dv_; ++e)
                dv[(lo + j) * Dv_ + e] += gw[r * Dv_ + e] * share;
            }
          }
          continue;
        }
        double dot = 0.0;
        for (std::size_t j = 0; j < nk; ++j) dot += static_cast<double>(pr[j]) * dr[j];
        const float mean = static_cast<float>(dot);
        for (std::size_t j = 0; j < nk; ++j) dr[j] = pr[j] * (dr[j] - mean) * scale_;
      }
      // dq = dS K, dk += dS^T Q
      kernels_.gemm(nq, d_, nk, ds, nk, 1, k + lo * d_, d_, dq + i0 * d_, d_, false);
      kernels_.gemm(nk, d_, nq, ds, 1, nk, q + i0 * d_, d_, dk + lo * d_, d_, true);
    }
  }

  // Rows of one head at positions start.. through the ring (decoding).
  void ring_rows(const float* q, const float* k, const float* v, float* ring, std::size_t start,
                 float* out) {
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
      for (std::size_t j = 0; j < nk; ++j)
        row[j] = kernels_.dot(d_, q + r * d_, ring_k + ((lo + j) % cap) * d_) * scale_;
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
  // The window of queries at i0: look-around positions [first, last) (possibly outside
  // the sequence), the real keys [lo, hi) among them, and the padding rows (zero keys and
  // values) visible in it: only in local-attention's non-causal, unmasked case.
  struct Window {
    std::size_t nq, lo, hi, padded, visible_pads;
    long long first, last;
  };
  Window window(std::size_t i0, const std::uint8_t* keep) const {
    const std::size_t L = dims_.k_len;
    Window win{};
    win.nq = std::min(w_, L - i0);
    win.padded = (L + w_ - 1) / w_ * w_;
    win.first = (static_cast<long long>(i0 / w_) - 1) * static_cast<long long>(w_);
    win.last = win.first + static_cast<long long>(slots_);
    win.lo = static_cast<std::size_t>(std::max<long long>(0, win.first));
    win.hi = static_cast<std::size_t>(std::min<long long>(static_cast<long long>(L), win.last));
    const long long pad_lo = std::max<long long>(win.first, static_cast<long long>(L));
    const long long pad_hi = std::min<long long>(win.last, static_cast<long long>(win.padded));
    const std::size_t pads = pad_hi > pad_lo ? static_cast<std::size_t>(pad_hi - pad_lo) : 0;
    win.visible_pads = o_.pytorch_numerics && !o_.causal && keep == nullptr ? pads : 0;
    return win;
  }

  // The softmax probabilities of the window's queries [i0, i0 + nq) over keys [lo, lo + nk)
  // into p [nq, nk] (zeros for hidden rows, flagged in hidden_), as head() computes them.
  void window_probabilities(const float* q, const float* k, const std::uint8_t* keep,
                            std::size_t i0, std::size_t nq, std::size_t lo, std::size_t nk,
                            std::size_t zeros, float* p) {
    for (std::size_t j = 0; j < nk; ++j) {
      for (std::size_t i = 0; i < d_; ++i) kt_[i * nk + j] = k[(lo + j) * d_ + i];
    }
    kernels_.gemm(nq, nk, d_, q + i0 * d_, d_, 1, kt_.data(), nk, p, nk, false);
    for (std::size_t r = 0; r < nq; ++r) {
      const std::size_t i = i0 + r;
      float* row = p + r * nk;
      for (std::size_t j = 0; j < nk; ++j) {
        const std::size_t pos = lo + j;
        bool visible = !(o_.causal && pos > i);
        if (keep != nullptr)
          visible = visible && keep[pos] != 0 && (!o_.pytorch_numerics || keep[i] != 0);
        row[j] = visible ? row[j] * scale_ : kNegInf;
      }
      hidden_[r] = softmax_row(row, nk, zeros) ? 0 : 1;
      if (hidden_[r] != 0) std::fill(row, row + nk, 0.0f);
    }
  }

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
  void hidden_row_average(const float* v, const Window& win, float* y) const {
    const std::size_t lo = win.lo, hi = win.hi, padded = win.padded;
    const long long first = win.first, last = win.last;
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
    for (std::size_t e = 0; e < Dv_; ++e)
      y[e] = static_cast<float>((acc[e] - static_cast<double>(minus_one)) / slots);
  }

  const AttentionDims& dims_;
  const LocalAttentionOptions& o_;
  const KernelSet& kernels_;
  const std::size_t w_, d_, Dv_, slots_;
  const float scale_;
  std::vector<float> kt_, scores_, vt_, dp_;
  std::vector<std::uint8_t> hidden_;
};

}  // namespace

std::size_t local_ring_floats(std::size_t window, std::size_t head_dim, std::size_t value_dim) {
  return 2 * window * (head_dim + value_dim);
}

void local_attention(const AttentionDims& dims, const float* q, const float* k, const float* v,
                     float* out, const LocalAttentionOptions& o, const KernelSet& kernels,
                     ThreadPool& pool) {
  if (o.window == 0) throw InputError("window must be >= 1");
  if (dims.q_len != dims.k_len)
    throw InputError("local attention is self-attention: query and key lengths must be equal");
  if (o.ring != nullptr && (!o.causal || o.keep != nullptr)) {
    throw InputError("a decoding ring continues causal local attention without a mask");
  }
  check_cancel(o.cancel);
  scan_inputs(dims, q, k, v, pool);
  const std::size_t heads = dims.batch * dims.heads, L = dims.q_len, d = dims.head_dim,
                    Dv = dims.value_dim;
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

void local_attention_backward(const AttentionDims& dims, const float* q, const float* k,
                              const float* v, const float* grad_out, float* dq, float* dk,
                              float* dv, const LocalAttentionOptions& o, const KernelSet& kernels,
                              ThreadPool& pool) {
  if (o.window == 0) throw InputError("window must be >= 1");
  if (dims.q_len != dims.k_len)
    throw InputError("local attention is self-attention: query and key lengths must be equal");
  if (o.ring != nullptr)
    throw InputError(
        "the backward pass of local attention takes whole sequences, not a decoding ring");
  check_cancel(o.cancel);
  scan_inputs(dims, q, k, v, pool);
  const std::size_t heads = dims.batch * dims.heads, L = dims.q_len, d = dims.head_dim,
                    Dv = dims.value_dim;
  for (std::size_t i = 0; i < heads * L * Dv; ++i) {
    if (!std::isfinite(grad_out[i])) throw InputError("the output gradient holds NaN or infinity");
  }
  std::vector<std::unique_ptr<LocalWorker>> workers(pool.size());
  const std::size_t unit_work = std::max<std::size_t>(1, L * 3 * o.window * (d + Dv));
  const std::size_t grain = std::max<std::size_t>(1, kMinWorkPerPiece / unit_work);
  pool.parallel_for(heads, grain, [&](std::size_t begin, std::size_t end, std::size_t slot) {
    if (!workers[slot]) {
      workers[slot] = std::make_unique<LocalWorker>(dims, o, kernels);
      workers[slot]->prepare_backward();
    }
    for (std::size_t h = begin; h < end; ++h) {
      std::fill(dk + h * L * d, dk + (h + 1) * L * d, 0.0f);
      std::fill(dv + h * L * Dv, dv + (h + 1) * L * Dv, 0.0f);
      const std::uint8_t* keep = o.keep != nullptr ? o.keep + (h / dims.heads) * L : nullptr;
      workers[slot]->head_backward(q + h * L * d, k + h * L * d, v + h * L * Dv, keep,
                                   grad_out + h * L * Dv, dq + h * L * d, dk + h * L * d,
                                   dv + h * L * Dv);
    }
  });
}

}  // namespace pa
