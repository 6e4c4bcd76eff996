// Backward pass of exact softmax attention against a double-precision reference of
// the gradient formulas (itself checked by finite differences), on every kernel set.
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "attention_reference.h"
#include "core/softmax_attention_backward.h"
#include "kernels/dispatch.h"
#include "test_harness.h"

namespace {

// Visible keys of query i (causal bottom-right aligned, key padding).
bool attends(std::size_t i, std::size_t j, std::size_t Lq, std::size_t Lk, bool causal,
             const std::uint8_t* pad) {
  if (pad && !pad[j]) return false;
  return !causal || static_cast<long long>(j) <= static_cast<long long>(i) +
                                                     static_cast<long long>(Lk) -
                                                     static_cast<long long>(Lq);
}

// Scaled scores of query row i against every key into *s (-inf where hidden); returns
// their max (-inf when the row sees no key).
double score_row(const double* q, const double* k, std::size_t i, std::size_t Lq, std::size_t Lk,
                 std::size_t d, double scale, bool causal, const std::uint8_t* pad,
                 std::vector<double>* s) {
  s->assign(Lk, -std::numeric_limits<double>::infinity());
  double top = -std::numeric_limits<double>::infinity();
  for (std::size_t j = 0; j < Lk; ++j) {
    if (!attends(i, j, Lq, Lk, causal, pad)) continue;
    double dot = 0;
    for (std::size_t t = 0; t < d; ++t) dot += q[i * d + t] * k[j * d + t];
    (*s)[j] = dot * scale;
    top = std::max(top, (*s)[j]);
  }
  return top;
}

// out of one (batch, head) in double.
std::vector<double> forward_double(const double* q, const double* k, const double* v,
                                   std::size_t Lq, std::size_t Lk, std::size_t d, std::size_t Dv,
                                   double scale, bool causal, const std::uint8_t* pad) {
  std::vector<double> out(Lq * Dv, 0.0);
  for (std::size_t i = 0; i < Lq; ++i) {
    std::vector<double> s;
    const double top = score_row(q, k, i, Lq, Lk, d, scale, causal, pad, &s);
    if (top == -std::numeric_limits<double>::infinity()) continue;
    double total = 0;
    for (std::size_t j = 0; j < Lk; ++j) total += std::exp(s[j] - top);
    for (std::size_t j = 0; j < Lk; ++j) {
      const double p = std::exp(s[j] - top) / total;
      for (std::size_t e = 0; e < Dv; ++e) out[i * Dv + e] += p * v[j * Dv + e];
    }
  }
  return out;
}

struct Grads {
  std::vector<double> dq, dk, dv;
  // The same sums over the absolute values of their terms (scale |dS|-like weights
  // P (|dP| + |D|) times |k| or |q|): the scale of the rounding error of dq and dk,
  // whose terms cancel (sum_j dS_ij = 0 for every row).
  std::vector<double> mq, mk;
};

// The formulas of the backward pass, plainly, in double, for one (batch, head).
Grads backward_double(const double* q, const double* k, const double* v, const double* g,
                      std::size_t Lq, std::size_t Lk, std::size_t d, std::size_t Dv, double scale,
                      bool causal, const std::uint8_t* pad) {
  Grads r{std::vector<double>(Lq * d, 0.0), std::vector<double>(Lk * d, 0.0),
          std::vector<double>(Lk * Dv, 0.0), std::vector<double>(Lq * d, 0.0),
          std::vector<double>(Lk * d, 0.0)};
  const auto out = forward_double(q, k, v, Lq, Lk, d, Dv, scale, causal, pad);
  for (std::size_t i = 0; i < Lq; ++i) {
    std::vector<double> s;
    const double top = score_row(q, k, i, Lq, Lk, d, scale, causal, pad, &s);
    if (top == -std::numeric_limits<double>::infinity()) continue;  // attends no key
    double total = 0;
    for (std::size_t j = 0; j < Lk; ++j) total += std::exp(s[j] - top);
    double D = 0;
    for (std::size_t e = 0; e < Dv; ++e) D += g[i * Dv + e] * out[i * Dv + e];
    for (std::size_t j = 0; j < Lk; ++j) {
      if (s[j] == -std::numeric_limits<double>::infinity()) continue;
      const double p = std::exp(s[j] - top) / total;
      double dp = 0;
      for (std::size_t e = 0; e < Dv; ++e) {
        dp += g[i * Dv + e] * v[j * Dv + e];
        r.dv[j * Dv + e] += p * g[i * Dv + e];
      }
      const double ds = p * (dp - D);
      const double size = std::fabs(scale) * p * (std::fabs(dp) + std::fabs(D));
      for (std::size_t t = 0; t < d; ++t) {
        r.dq[i * d + t] += scale * ds * k[j * d + t];
        r.dk[j * d + t] += scale * ds * q[i * d + t];
        r.mq[i * d + t] += size * std::fabs(k[j * d + t]);
        r.mk[j * d + t] += size * std::fabs(q[i * d + t]);
      }
    }
  }
  return r;
}

std::vector<double> widen(const float* x, std::size_t n) { return std::vector<double>(x, x + n); }

double norm(const std::vector<double>& x) {
  double s = 0;
  for (double v : x) s += v * v;
  return std::sqrt(s);
}

// Frobenius norm of got - want over `den` (the norm of want, or of the magnitude of
// the terms summed into want).
double error_over(const float* got, const std::vector<double>& want, double den) {
  double num = 0;
  for (std::size_t i = 0; i < want.size(); ++i) num += (got[i] - want[i]) * (got[i] - want[i]);
  return std::sqrt(num) / std::max(den, 1e-300);
}

struct Problem {
  std::size_t B, H, Lq, Lk, d, Dv;
  bool causal;
  int padding;  // 0 none; 1 a pattern (the first key and every third padded); 2 pattern + the last
                // batch fully padded
  double sigma = 1.0;
  bool integer = false;  // round q and k to integers (exact float scores)
};

struct Data {
  pa::AttentionDims dims;
  std::vector<float> q, k, v, g;
  std::vector<std::uint8_t> pad;
  pa::SoftmaxOptions options;
};

Data make(const Problem& t, std::uint64_t seed) {
  Data x;
  x.dims = pa::AttentionDims{t.B, t.H, t.Lq, t.Lk, t.d, t.Dv};
  const std::size_t bh = t.B * t.H;
  x.q = pa_test::gaussian(bh * t.Lq * t.d, t.sigma, seed);
  x.k = pa_test::gaussian(bh * t.Lk * t.d, t.sigma, seed + 1);
  x.v = pa_test::gaussian(bh * t.Lk * t.Dv, 1.0, seed + 2);
  x.g = pa_test::gaussian(bh * t.Lq * t.Dv, 1.0, seed + 3);
  if (t.integer) {
    for (auto& a : x.q) a = std::nearbyint(a);
    for (auto& a : x.k) a = std::nearbyint(a);
  }
  x.pad.assign(t.B * t.Lk, 1);
  if (t.padding > 0) {
    for (std::size_t b = 0; b < t.B; ++b) {
      for (std::size_t j = 0; j < t.Lk; ++j) {
        if (j == 0 || j % 3 == 2) x.pad[b * t.Lk + j] = 0;
      }
      if (t.Lk > 1) x.pad[b * t.Lk + t.Lk - 1] = 1;  // at least one key visible
    }
    if (t.padding == 2) std::fill(x.pad.end() - static_cast<long>(t.Lk), x.pad.end(), 0);
  }
  x.options.causal = t.causal;
  x.options.key_padding = t.padding > 0 ? x.pad.data() : nullptr;
  x.options.scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(t.d)));
  return x;
}

struct Result {
  std::vector<float> dq, dk, dv;
};

Result run(const Data& x, const pa::KernelSet& kernels, pa::ThreadPool& pool) {
  const float nan = std::numeric_limits<float>::quiet_NaN();  // every element must be overwritten
  Result r{std::vector<float>(x.q.size(), nan), std::vector<float>(x.k.size(), nan),
           std::vector<float>(x.v.size(), nan)};
  pa::softmax_attention_backward(x.dims, x.q.data(), x.k.data(), x.v.data(), x.g.data(), x.options,
                                 {r.dq.data(), r.dk.data(), r.dv.data()}, kernels, pool);
  return r;
}

// Largest error of the three gradients against the reference, per (batch, head).
// Plain: relative Frobenius error of each gradient. A dq or dk that is exactly zero in
// the reference (every row attends at most one key, so dS = P (dP - D) = 0) is
// measured against the magnitude of its terms instead, since float rounding leaves
// ~1e-7 of that. Conditioned: dq and dk always against the magnitude of their terms,
// the scale of their unavoidable rounding error when the terms cancel.
double compare(const Problem& t, const Data& x, const Result& r, const char* kernel_name,
               double tolerance, bool conditioned = false) {
  double worst = 0;
  const std::size_t bh = t.B * t.H;
  for (std::size_t p = 0; p < bh; ++p) {
    const auto q = widen(&x.q[p * t.Lq * t.d], t.Lq * t.d);
    const auto k = widen(&x.k[p * t.Lk * t.d], t.Lk * t.d);
    const auto v = widen(&x.v[p * t.Lk * t.Dv], t.Lk * t.Dv);
    const auto g = widen(&x.g[p * t.Lq * t.Dv], t.Lq * t.Dv);
    const std::uint8_t* pad = x.options.key_padding ? &x.pad[(p / t.H) * t.Lk] : nullptr;
    const Grads want = backward_double(q.data(), k.data(), v.data(), g.data(), t.Lq, t.Lk, t.d,
                                       t.Dv, x.options.scale, t.causal, pad);
    auto den = [&](const std::vector<double>& grad, const std::vector<double>& terms) {
      const double n = norm(grad);
      return conditioned || n == 0 ? norm(terms) : n;
    };
    const double e[3] = {error_over(&r.dq[p * t.Lq * t.d], want.dq, den(want.dq, want.mq)),
                         error_over(&r.dk[p * t.Lk * t.d], want.dk, den(want.dk, want.mk)),
                         error_over(&r.dv[p * t.Lk * t.Dv], want.dv, norm(want.dv))};
    for (int i = 0; i < 3; ++i) {
      if (!(e[i] <= tolerance)) {
        std::fprintf(
            stderr,
            "  [%s] B=%zu H=%zu Lq=%zu Lk=%zu d=%zu Dv=%zu causal=%d pad=%d head %zu: d%c err %.3g\n",
            kernel_name, t.B, t.H, t.Lq, t.Lk, t.d, t.Dv, t.causal, t.padding, p, "qkv"[i], e[i]);
      }
      worst = std::max(worst, std::isnan(e[i]) ? 1e300 : e[i]);
    }
  }
  return worst;
}

}  // namespace

TEST("softmax/backward equals the double reference of the gradient formulas on every kernel set") {
  pa::ThreadPool pool(2);
  const std::size_t lens[] = {1, 7, 64, 65, 257, 300};
  const std::size_t widths[] = {1, 8, 33, 64};
  std::vector<Problem> problems;
  std::size_t index = 0;
  // Every (q_len, k_len) pair, causal and not; head and value widths, batch, heads and
  // the padding pattern cycle through their values.
  for (std::size_t Lq : lens) {
    for (std::size_t Lk : lens) {
      for (bool causal : {false, true}) {
        const std::size_t d = widths[index % 4], Dv = widths[(index / 4 + 1) % 4];
        const int padding = static_cast<int>(index % 3);
        const std::size_t B = padding == 2 ? 2 : 1 + index % 2, H = 1 + index % 3;
        problems.push_back({B, H, Lq, Lk, d, Dv, causal, padding});
        ++index;
      }
    }
  }
  int count = 0;
  for (const pa::KernelSet* kernels : pa::available_kernel_sets()) {
    double worst = 0;
    for (const Problem& t : problems) {
      const Data x = make(t, 11 + 4 * (count++));
      worst = std::max(worst, compare(t, x, run(x, *kernels, pool), kernels->name, 1e-5));
    }
    std::printf("  [%s] %zu shapes, worst relative error %.3g\n", kernels->name, problems.size(),
                worst);
    CHECK(worst <= 1e-5);
  }
}

TEST("softmax/backward reference equals central finite differences of the double forward") {
  struct Tiny {
    std::size_t Lq, Lk, d, Dv;
    bool causal, padded;
  };
  // 5 x 3 causal: the first two queries attend no key.
  const Tiny cases[] = {{3, 4, 3, 2, false, false},
                        {4, 4, 2, 3, true, false},
                        {5, 3, 3, 2, true, false},
                        {3, 5, 2, 2, true, true},
                        {4, 6, 3, 3, false, true}};
  double worst = 0;
  std::uint64_t seed = 101;
  for (const Tiny& t : cases) {
    auto q = widen(pa_test::gaussian(t.Lq * t.d, 1.0, seed).data(), t.Lq * t.d);
    auto k = widen(pa_test::gaussian(t.Lk * t.d, 1.0, seed + 1).data(), t.Lk * t.d);
    auto v = widen(pa_test::gaussian(t.Lk * t.Dv, 1.0, seed + 2).data(), t.Lk * t.Dv);
    const auto g = widen(pa_test::gaussian(t.Lq * t.Dv, 1.0, seed + 3).data(), t.Lq * t.Dv);
    seed += 4;
    std::vector<std::uint8_t> pad(t.Lk, 1);
    if (t.padded) pad[1] = 0;
    const std::uint8_t* p = t.padded ? pad.data() : nullptr;
    const double scale = 0.7;
    auto loss = [&] {
      const auto out =
          forward_double(q.data(), k.data(), v.data(), t.Lq, t.Lk, t.d, t.Dv, scale, t.causal, p);
      double total = 0;
      for (std::size_t i = 0; i < out.size(); ++i) total += g[i] * out[i];
      return total;
    };
    const Grads want = backward_double(q.data(), k.data(), v.data(), g.data(), t.Lq, t.Lk, t.d,
                                       t.Dv, scale, t.causal, p);
    auto numeric = [&](std::vector<double>& x) {
      std::vector<double> grad(x.size());
      const double h = 1e-5;
      for (std::size_t i = 0; i < x.size(); ++i) {
        const double keep = x[i];
        x[i] = keep + h;
        const double up = loss();
        x[i] = keep - h;
        const double down = loss();
        x[i] = keep;
        grad[i] = (up - down) / (2 * h);
      }
      return grad;
    };
    const std::pair<std::vector<double>, const std::vector<double>*> pairs[] = {
        {numeric(q), &want.dq}, {numeric(k), &want.dk}, {numeric(v), &want.dv}};
    for (const auto& [num, analytic] : pairs) {
      double diff = 0;
      for (std::size_t i = 0; i < num.size(); ++i)
        diff += (num[i] - (*analytic)[i]) * (num[i] - (*analytic)[i]);
      const double err = std::sqrt(diff) / norm(num);
      worst = std::max(worst, err);
    }
  }
  std::printf("  worst relative error %.3g\n", worst);
  CHECK(worst <= 1e-6);
}

TEST("softmax/backward stays accurate when exp of the raw scores would overflow") {
  pa::ThreadPool pool(2);
  // q, k ~ N(0, 30^2): scores reach thousands, so exp(s) overflows float and double
  // without the max subtraction, and the softmax rows are nearly one-hot. Then
  // dS_ij = P_ij (dP_ij - D_i) cancels almost entirely (D_i ~ dP_ij at the top key),
  // in float32 as in any float32 implementation, so dq and dk are measured against
  // the magnitude of their terms (dv, a sum of positive weights, stays plainly
  // relative). Integer q and k (scale 1/4) make the float scores exact; real ones
  // add the rounding of the scores (~|s| 2^-24), which the max subtraction keeps from
  // growing: both stay within 1e-5.
  for (const pa::KernelSet* kernels : pa::available_kernel_sets()) {
    for (bool integer : {true, false}) {
      for (bool causal : {false, true}) {
        Problem t{2, 2, 65, 300, 16, 8, causal, 1, 30.0, integer};
        const Data x = make(t, integer ? 77 : 78);
        float top = 0;
        for (std::size_t i = 0; i < t.Lq; ++i) {
          for (std::size_t j = 0; j < t.Lk; ++j) {
            float s = 0;
            for (std::size_t e = 0; e < t.d; ++e) s += x.q[i * t.d + e] * x.k[j * t.d + e];
            top = std::max(top, std::fabs(s * x.options.scale));
          }
        }
        CHECK(top > 1000.0f);  // exp(top) is +inf in float and double
        const Result r = run(x, *kernels, pool);
        bool finite = true;
        for (const auto* grad : {&r.dq, &r.dk, &r.dv}) {
          for (float a : *grad) finite = finite && std::isfinite(a);
        }
        CHECK(finite);
        const double tolerance = 1e-5;
        const double worst = compare(t, x, r, kernels->name, tolerance, true);
        std::printf("  [%s] %s q, k, causal=%d: worst error %.3g\n", kernels->name,
                    integer ? "integer" : "real", causal, worst);
        CHECK(worst <= tolerance);
      }
    }
  }
}

TEST("softmax/backward gives the same bits on 1 and 3 threads") {
  pa::ThreadPool one(1), three(3);
  // Few heads and long sequences: heads are split into parts (query groups, key blocks).
  const Problem problems[] = {{1, 1, 700, 900, 16, 8, false, 1},
                              {1, 2, 900, 700, 8, 16, true, 0},
                              {1, 1, 1100, 1100, 8, 8, true, 1},
                              {2, 9, 130, 300, 8, 8, true, 2}};
  for (const pa::KernelSet* kernels : pa::available_kernel_sets()) {
    for (const Problem& t : problems) {
      const Data x = make(t, 300);
      const Result a = run(x, *kernels, one), b = run(x, *kernels, three);
      CHECK(std::memcmp(a.dq.data(), b.dq.data(), a.dq.size() * sizeof(float)) == 0);
      CHECK(std::memcmp(a.dk.data(), b.dk.data(), a.dk.size() * sizeof(float)) == 0);
      CHECK(std::memcmp(a.dv.data(), b.dv.data(), a.dv.size() * sizeof(float)) == 0);
      CHECK(compare(t, x, a, kernels->name, 1e-5) <= 1e-5);
    }
  }
}

TEST("softmax/backward rejects non-finite inputs and honours the cancel flag") {
  pa::ThreadPool pool(2);
  const pa::KernelSet& kernels = pa::default_kernel_set();
  const Problem t{1, 2, 9, 7, 4, 3, true, 0};
  auto message_of = [&](const Data& x) -> std::string {
    try {
      run(x, kernels, pool);
    } catch (const pa::InputError& e) {
      return e.what();
    }
    return "";
  };
  Data x = make(t, 5);
  x.g[2 * 3 + 1] = std::numeric_limits<float>::quiet_NaN();
  const std::string nan_message = message_of(x);
  CHECK(nan_message == "gradOut: values must be finite, received NaN at flat index 7");
  x = make(t, 5);
  x.g[30] = -std::numeric_limits<float>::infinity();
  CHECK(message_of(x).find("gradOut: values must be finite, received -Infinity at flat index 30") ==
        0);
  x = make(t, 5);
  x.q[5] = std::numeric_limits<float>::infinity();
  CHECK(message_of(x).find("query:") == 0);
  x = make(t, 5);
  x.v[3] = std::numeric_limits<float>::quiet_NaN();
  CHECK(message_of(x).find("value:") == 0);
  x = make(t, 5);
  x.g[0] = 3e37f;
  CHECK(message_of(x).find("gradOut:") == 0);  // gradients would overflow float32

  x = make(t, 5);
  std::atomic<bool> cancel{true};
  x.options.cancel = &cancel;
  bool cancelled = false;
  try {
    run(x, kernels, pool);
  } catch (const pa::Cancelled&) {
    cancelled = true;
  }
  CHECK(cancelled);
}
