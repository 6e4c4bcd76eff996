// The building blocks of performer-pytorch models (model_ops.h, pytorch_favor.h,
// local_attention.h) against plain double-precision references written from the
// header comments, which are the contract. Ops that take a KernelSet run on every
// available set; the attention drivers must give the same bits on 1 and 3 threads.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "attention_reference.h"
#include "core/feature_map.h"
#include "core/local_attention.h"
#include "core/model_ops.h"
#include "core/pytorch_favor.h"
#include "kernels/dispatch.h"
#include "test_harness.h"
#include "test_util.h"

namespace {

using pa::PytorchFeatures;
using pa::RotaryLayout;
using pa_test::same_bits;
using pa_test::throws_input_error;

// ---------------------------------------------------------------------------
// Helpers: inputs, comparisons, slicing.

// Per (batch, head) block of `block` floats: exact zeros where the reference block is
// all zero, else relative Frobenius error <= tol. Reports the first failing block.
bool check_blocks(const std::vector<float>& got, const std::vector<double>& want, std::size_t block,
                  double tol, const std::string& label) {
  bool ok = got.size() == want.size();
  for (std::size_t p = 0; ok && p * block < got.size(); ++p) {
    const std::vector<float> g(got.begin() + p * block, got.begin() + (p + 1) * block);
    const std::vector<double> w(want.begin() + p * block, want.begin() + (p + 1) * block);
    bool zero = true;
    for (double x : w) zero = zero && x == 0.0;
    if (zero) {
      for (std::size_t i = 0; i < block && ok; ++i) {
        ok = g[i] == 0.0f;
        if (!ok) {
          std::fprintf(stderr, "  %s: head %zu element %zu = %.9g, expected exactly 0\n",
                       label.c_str(), p, i, g[i]);
        }
      }
      continue;
    }
    const double err = pa_test::relative_frobenius(g, w);
    ok = err <= tol;
    if (!ok)
      std::fprintf(stderr, "  %s: head %zu relative error %.3g > %.3g\n", label.c_str(), p, err,
                   tol);
  }
  return ok;
}

// Rows [r0, r1) of each of `groups` blocks of `len` rows of `width` elements.
template <typename T>
std::vector<T> slice_rows(const std::vector<T>& x, std::size_t groups, std::size_t len,
                          std::size_t width, std::size_t r0, std::size_t r1) {
  std::vector<T> out;
  for (std::size_t g = 0; g < groups; ++g) {
    out.insert(out.end(), x.begin() + (g * len + r0) * width, x.begin() + (g * len + r1) * width);
  }
  return out;
}

template <typename T>
void place_rows(std::vector<T>& x, const std::vector<T>& part, std::size_t groups, std::size_t len,
                std::size_t width, std::size_t r0, std::size_t r1) {
  const std::size_t n = (r1 - r0) * width;
  for (std::size_t g = 0; g < groups; ++g) {
    std::copy(part.begin() + g * n, part.begin() + (g + 1) * n, x.begin() + (g * len + r0) * width);
  }
}

// ---------------------------------------------------------------------------
// Positions and rotary.

// performer-pytorch's and local-attention's inverse frequencies, 1 / 10000^(2i / d), in float32.
std::vector<float> inv_freq(std::size_t d) {
  std::vector<float> f(d / 2);
  for (std::size_t i = 0; i < f.size(); ++i)
    f[i] = static_cast<float>(1.0 / std::pow(10000.0, 2.0 * i / d));
  return f;
}

// A [rows, 2n] table that is deliberately NOT the formula (a phase of 0.5 rad), so
// that the tests see which source each position came from.
std::vector<float> phased_table(std::size_t rows, const std::vector<float>& f) {
  const std::size_t n = f.size();
  std::vector<float> table(rows * 2 * n);
  for (std::size_t t = 0; t < rows; ++t) {
    for (std::size_t i = 0; i < n; ++i) {
      const double angle = static_cast<double>(t) * f[i] + 0.5;
      table[t * 2 * n + i] = static_cast<float>(std::sin(angle));
      table[t * 2 * n + n + i] = static_cast<float>(std::cos(angle));
    }
  }
  return table;
}

// sin and cos of frequency i at position t as Sinusoid documents them: the table below
// `rows`, else the angle t f_i rounded once to float32, then sin / cos in double.
void sinusoid_ref(const pa::Sinusoid& s, std::size_t t, std::size_t i, double* sn, double* cs) {
  if (s.table != nullptr && t < s.rows) {
    *sn = s.table[t * 2 * s.half + i];
    *cs = s.table[t * 2 * s.half + s.half + i];
    return;
  }
  // t and f_i are exact in double and their product has at most 53 bits: one rounding.
  const float angle = static_cast<float>(static_cast<double>(t) * s.inv_freq[i]);
  *sn = std::sin(static_cast<double>(angle));
  *cs = std::cos(static_cast<double>(angle));
}

std::vector<double> rotary_ref(std::size_t heads, std::size_t len, std::size_t d, std::size_t start,
                               RotaryLayout layout, const pa::Sinusoid& s,
                               const std::vector<float>& x) {
  const std::size_t half = d / 2;
  std::vector<double> y(x.begin(), x.end());
  for (std::size_t h = 0; h < heads; ++h) {
    for (std::size_t t = 0; t < len; ++t) {
      const std::size_t row = (h * len + t) * d;
      for (std::size_t i = 0; i < half; ++i) {
        const std::size_t a = layout == RotaryLayout::kInterleaved ? 2 * i : i;
        const std::size_t b = layout == RotaryLayout::kInterleaved ? a + 1 : a + half;
        double sn = 0, cs = 0;
        sinusoid_ref(s, start + t, i, &sn, &cs);
        const double xa = x[row + a], xb = x[row + b];
        y[row + a] = xa * cs - xb * sn;
        y[row + b] = xb * cs + xa * sn;
      }
    }
  }
  return y;
}

double gelu_ref(double v) { return 0.5 * v * std::erfc(-v / std::sqrt(2.0)); }

// Token shift as model_ops.h describes it; history may be null (row -1 is zero).
std::vector<float> token_shift_ref(std::size_t batch, std::size_t len, std::size_t dim,
                                   const std::vector<float>& x, const std::vector<int>& shifts,
                                   const std::uint8_t* keep, const float* history) {
  const std::size_t segments = shifts.size(), piece = dim / segments;
  std::vector<float> y(batch * len * dim);
  for (std::size_t b = 0; b < batch; ++b) {
    for (std::size_t t = 0; t < len; ++t) {
      float* yr = &y[(b * len + t) * dim];
      for (std::size_t s = 0; s < segments; ++s) {
        const long long from = static_cast<long long>(t) - shifts[s];
        for (std::size_t e = 0; e < piece; ++e) {
          float value = 0.0f;
          if (from >= 0 && from < static_cast<long long>(len)) {
            const bool hidden = shifts[s] != 0 && keep != nullptr && keep[b * len + from] == 0;
            if (!hidden) value = x[(b * len + from) * dim + s * piece + e];
          } else if (from == -1 && history != nullptr) {
            value = history[b * dim + s * piece + e];
          }
          yr[s * piece + e] = value;
        }
      }
      for (std::size_t e = segments * piece; e < dim; ++e) yr[e] = x[(b * len + t) * dim + e];
    }
  }
  return y;
}

const char* layout_name(RotaryLayout layout) {
  return layout == RotaryLayout::kInterleaved ? "interleaved" : "halves";
}

}  // namespace

TEST(
    "models/rotary: both layouts, table rows then inv_freq past the table, start > 0, against double") {
  pa::ThreadPool pool1(1), pool3(3);
  std::size_t cases = 0;
  double worst = 0;
  // d = 1030: more pairs than one 512-pair block of sin / cos.
  for (std::size_t d : {2, 8, 30, 64, 1030}) {
    const auto f = inv_freq(d);
    const std::size_t table_rows = 20;
    const auto table = phased_table(table_rows, f);
    for (RotaryLayout layout : {RotaryLayout::kInterleaved, RotaryLayout::kHalves}) {
      for (bool with_table : {false, true}) {
        // start 7 crosses the table's end; 3000 tells a float32-rounded angle from a double one.
        for (std::size_t start : {0, 7, 3000}) {
          const std::size_t heads = 3, len = 30;
          pa::Sinusoid s;
          s.table = with_table ? table.data() : nullptr;
          s.rows = with_table ? table_rows : 0;
          s.inv_freq = f.data();
          s.half = d / 2;
          const auto x = pa_test::gaussian(heads * len * d, 1.0, 100 + cases);
          const auto want = rotary_ref(heads, len, d, start, layout, s, x);
          auto y1 = x, y3 = x;
          pa::rotary(heads, len, d, start, layout, s, y1.data(), pool1);
          pa::rotary(heads, len, d, start, layout, s, y3.data(), pool3);
          CHECK(same_bits(y1, y3));
          bool ok = true;
          for (std::size_t row = 0; row < heads * len && ok; ++row) {
            double err = 0, norm = 0;
            for (std::size_t e = 0; e < d; ++e) {
              const double diff = y1[row * d + e] - want[row * d + e];
              err += diff * diff;
              norm += static_cast<double>(x[row * d + e]) * x[row * d + e];
            }
            const double rel = std::sqrt(err / norm);
            worst = std::max(worst, rel);
            ok = rel <= 1e-6;
            if (!ok) {
              std::fprintf(
                  stderr,
                  "  rotary %s d=%zu table=%d start=%zu: row %zu (position %zu) error %.3g of the row norm\n",
                  layout_name(layout), d, with_table, start, row, start + row % len, rel);
            }
          }
          CHECK(ok);
          ++cases;
        }
      }
    }
  }
  std::printf("  %zu rotary cases, worst %.3g of the row norm\n", cases, worst);
}

TEST(
    "models/embed_tokens: token rows plus learned positions, sinusoid table then formula, or nothing") {
  pa::ThreadPool pool1(1), pool3(3);
  const std::size_t vocab = 50, dim = 12, batch = 3, len = 17, n = dim / 2, table_rows = 10;
  std::vector<std::int32_t> tokens(batch * len);
  pa::Rng rng(200);
  for (auto& t : tokens) t = static_cast<std::int32_t>(rng.next() % vocab);
  const auto table = pa_test::gaussian(vocab * dim, 1.0, 201);
  const auto f = inv_freq(dim);
  const auto sin_table = phased_table(table_rows, f);
  pa::Sinusoid s;
  s.table = sin_table.data();
  s.rows = table_rows;
  s.inv_freq = f.data();
  s.half = n;
  // Sinusoid::at: the table below `rows`, the formula past it, false when neither covers t.
  float at_sin = 0.0f, at_cos = 0.0f;
  CHECK(s.at(9, 2, &at_sin, &at_cos) && at_sin == sin_table[9 * dim + 2] &&
        at_cos == sin_table[9 * dim + n + 2]);
  CHECK(s.at(10, 2, &at_sin, &at_cos) &&
        at_sin == static_cast<float>(std::sin(static_cast<double>(10.0f * f[2]))));
  pa::Sinusoid table_only = s;
  table_only.inv_freq = nullptr;
  CHECK(table_only.at(9, 0, &at_sin, &at_cos));
  CHECK(!table_only.at(10, 0, &at_sin, &at_cos));
  // start 4: positions cross the sinusoid table's end; 3000: a float32 angle differs from a double
  // one.
  for (std::size_t start : {0, 4, 3000}) {
    const auto learned = pa_test::gaussian((start + len) * dim, 1.0, 202 + start);
    for (int mode = 0; mode < 3; ++mode) {  // learned, sinusoid, none
      const float* positions = mode == 0 ? learned.data() : nullptr;
      const pa::Sinusoid* sinusoid = mode == 1 ? &s : nullptr;
      std::vector<float> y1(batch * len * dim, -1.0f), y3(batch * len * dim, -2.0f);
      pa::embed_tokens(batch * len, len, dim, tokens.data(), table.data(), sinusoid, positions,
                       start, y1.data(), pool1);
      pa::embed_tokens(batch * len, len, dim, tokens.data(), table.data(), sinusoid, positions,
                       start, y3.data(), pool3);
      CHECK(same_bits(y1, y3));
      bool ok = true;
      for (std::size_t r = 0; r < batch * len && ok; ++r) {
        const std::size_t t = start + r % len;
        for (std::size_t j = 0; j < dim && ok; ++j) {
          const double e = table[static_cast<std::size_t>(tokens[r]) * dim + j];
          double p = 0;
          if (mode == 0) p = learned[t * dim + j];
          if (mode == 1) {
            double sn = 0, cs = 0;
            sinusoid_ref(s, t, j % n, &sn, &cs);
            p = j < n ? sn : cs;
          }
          // Two roundings at most: the position to float32, then the sum.
          const double want = e + p, tol = std::ldexp(std::fabs(e) + std::fabs(p), -23);
          ok = mode == 2 ? y1[r * dim + j] == table[static_cast<std::size_t>(tokens[r]) * dim + j]
                         : std::fabs(y1[r * dim + j] - want) <= tol;
          if (!ok) {
            std::fprintf(
                stderr,
                "  embed_tokens mode=%d start=%zu row %zu (position %zu) feature %zu: %.9g, expected %.9g\n",
                mode, start, r, t, j, y1[r * dim + j], want);
          }
        }
      }
      CHECK(ok);
    }
  }
}

TEST("models/scale_norm: x / max(||x||, eps) * g in double, zero and sub-eps rows, in place") {
  pa::ThreadPool pool1(1), pool3(3);
  const float g = 1.7f, eps = 1e-5f;
  for (std::size_t dim : {1, 7, 16, 33, 100}) {
    const std::size_t rows = 6;
    auto x = pa_test::gaussian(rows * dim, 1.0, 300 + dim);
    for (std::size_t j = 0; j < dim; ++j) {
      x[j] = 0.0f;             // row 0: zero, eps keeps it 0 (not NaN)
      x[dim + j] *= 1e-8f;     // row 1: norm below eps, divided by eps
      x[2 * dim + j] *= 1e3f;  // row 2: large
    }
    for (bool in_place : {false, true}) {
      std::vector<double> want(rows * dim);
      for (std::size_t r = 0; r < rows; ++r) {
        double n2 = 0;
        for (std::size_t j = 0; j < dim; ++j)
          n2 += static_cast<double>(x[r * dim + j]) * x[r * dim + j];
        const double norm = std::max(std::sqrt(n2), static_cast<double>(eps));
        for (std::size_t j = 0; j < dim; ++j) want[r * dim + j] = x[r * dim + j] / norm * g;
      }
      std::vector<float> y1 = x, y3 = x;
      if (!in_place) {
        std::fill(y1.begin(), y1.end(), -1.0f);
        std::fill(y3.begin(), y3.end(), -1.0f);
      }
      pa::scale_norm(rows, dim, in_place ? y1.data() : x.data(), g, eps, y1.data(), pool1);
      pa::scale_norm(rows, dim, in_place ? y3.data() : x.data(), g, eps, y3.data(), pool3);
      CHECK(same_bits(y1, y3));
      bool ok = true;
      for (std::size_t i = 0; i < rows * dim && ok; ++i) {
        ok = std::fabs(y1[i] - want[i]) <= 1e-6 * std::fabs(want[i]) + 1e-37;
        if (!ok) {
          std::fprintf(stderr,
                       "  scale_norm dim=%zu in_place=%d element %zu: %.9g, expected %.9g\n", dim,
                       in_place, i, y1[i], want[i]);
        }
      }
      CHECK(ok);
      for (std::size_t j = 0; j < dim; ++j) CHECK(y1[j] == 0.0f);
    }
  }
}

TEST("models/scaled_add: residual + (x * g) with the product rounded first, aliasing y") {
  const std::size_t n = 37;
  const auto x = pa_test::gaussian(n, 1.0, 400), residual = pa_test::gaussian(n, 3.0, 401);
  const float g = 0.37f;
  // The header's order: the product rounded to float32, then the sum.
  std::vector<float> want(n);
  for (std::size_t i = 0; i < n; ++i) {
    const float product = x[i] * g;
    want[i] = residual[i] + product;
    CHECK_NEAR(want[i], residual[i] + static_cast<double>(x[i]) * g,
               std::ldexp(std::fabs(residual[i]) + std::fabs(x[i] * g), -22));
  }
  std::vector<float> y(n, -1.0f);
  pa::scaled_add(n, x.data(), g, residual.data(), y.data());
  CHECK(same_bits(y, want));
  std::vector<float> into_residual = residual;
  pa::scaled_add(n, x.data(), g, into_residual.data(), into_residual.data());
  CHECK(same_bits(into_residual, want));
  std::vector<float> into_x = x;
  pa::scaled_add(n, into_x.data(), g, residual.data(), into_x.data());
  CHECK(same_bits(into_x, want));
}

TEST("models/token_shift: shifted pieces, copied remainder, keep mask on shifted pieces only") {
  const std::vector<std::vector<int>> shift_sets = {{0, 1}, {-1, 0, 1}, {2, 0, -1, 1}};
  const std::size_t batch = 2, len = 9;
  std::size_t cases = 0;
  for (const auto& shifts : shift_sets) {
    for (std::size_t dim : {7, 11, 12}) {  // 7 and 11: a remainder is copied for every shift set
      const auto x = pa_test::gaussian(batch * len * dim, 1.0, 500 + dim);
      std::vector<std::uint8_t> keep(batch * len);
      for (std::size_t i = 0; i < keep.size(); ++i) keep[i] = (i * 7) % 3 != 0;
      for (bool masked : {false, true}) {
        const std::uint8_t* kp = masked ? keep.data() : nullptr;
        const auto want = token_shift_ref(batch, len, dim, x, shifts, kp, nullptr);
        std::vector<float> y(x.size(), -1.0f);
        pa::token_shift(batch, len, dim, x.data(), shifts.data(), shifts.size(), kp, nullptr,
                        y.data());
        if (!same_bits(y, want)) {
          std::fprintf(
              stderr,
              "  token_shift shifts=%zu segments dim=%zu masked=%d differs from the reference\n",
              shifts.size(), dim, masked);
        }
        CHECK(same_bits(y, want));
        ++cases;
      }
    }
  }
  std::printf("  %zu token_shift cases\n", cases);
}

TEST(
    "models/token_shift: with history, a sequence in pieces equals one call; history ends as the last row") {
  const std::vector<int> shifts = {0, 1};
  const std::size_t batch = 2, len = 9, dim = 11;
  const auto x = pa_test::gaussian(batch * len * dim, 1.0, 510);
  std::vector<float> whole(x.size());
  pa::token_shift(batch, len, dim, x.data(), shifts.data(), 2, nullptr, nullptr, whole.data());
  std::vector<float> last_rows = slice_rows(x, batch, len, dim, len - 1, len);
  // A zero history is the zero row -1 of a plain call.
  std::vector<float> history(batch * dim, 0.0f), y(x.size());
  pa::token_shift(batch, len, dim, x.data(), shifts.data(), 2, nullptr, history.data(), y.data());
  CHECK(same_bits(y, whole));
  CHECK(same_bits(history, last_rows));
  for (const std::vector<std::size_t>& cuts : {std::vector<std::size_t>{0, 1, len},
                                               {0, 4, len},
                                               {0, 8, len},
                                               {0, 1, 2, 3, 4, 5, 6, 7, 8, 9}}) {
    std::fill(history.begin(), history.end(), 0.0f);
    std::vector<float> pieces(x.size(), -1.0f);
    for (std::size_t c = 0; c + 1 < cuts.size(); ++c) {
      const auto part = slice_rows(x, batch, len, dim, cuts[c], cuts[c + 1]);
      std::vector<float> out(part.size());
      pa::token_shift(batch, cuts[c + 1] - cuts[c], dim, part.data(), shifts.data(), 2, nullptr,
                      history.data(), out.data());
      place_rows(pieces, out, batch, len, dim, cuts[c], cuts[c + 1]);
    }
    if (!same_bits(pieces, whole)) {
      std::fprintf(stderr, "  token_shift in %zu pieces differs from one call\n", cuts.size() - 1);
    }
    CHECK(same_bits(pieces, whole));
    CHECK(same_bits(history, last_rows));
  }
  // A non-zero history is row -1.
  const auto start = pa_test::gaussian(batch * dim, 1.0, 511);
  history = start;
  pa::token_shift(batch, len, dim, x.data(), shifts.data(), 2, nullptr, history.data(), y.data());
  CHECK(same_bits(y, token_shift_ref(batch, len, dim, x, shifts, nullptr, start.data())));
}

TEST(
    "models/glu_gelu: exact-erf GELU gate to 1e-6 relative, hidden sizes around the vector widths, every kernel set") {
  pa::ThreadPool pool1(1), pool3(3);
  double worst = 0;
  for (const pa::KernelSet* kernels : pa::available_kernel_sets()) {
    for (std::size_t hidden : {1, 7, 8, 9, 16, 17, 33}) {
      // 2500 rows of 33: several pieces of pool work.
      for (std::size_t rows : {std::size_t{5}, hidden == 33 ? std::size_t{2500} : std::size_t{1}}) {
        auto h = pa_test::gaussian(rows * 2 * hidden, 3.0, 600 + hidden);
        for (std::size_t r = 0; r < rows; ++r) {
          for (std::size_t j = 0; j < hidden; ++j) {
            float& a = h[r * 2 * hidden + j];
            a = std::min(12.0f, std::max(-12.0f, a));  // gelu(-12) ~ -2e-32: still a normal float
          }
        }
        h[0] = 0.0f;
        std::vector<float> y1(rows * hidden, -1.0f), y3(rows * hidden, -2.0f);
        pa::glu_gelu(rows, hidden, h.data(), y1.data(), *kernels, pool1);
        pa::glu_gelu(rows, hidden, h.data(), y3.data(), *kernels, pool3);
        CHECK(same_bits(y1, y3));
        bool ok = true;
        for (std::size_t r = 0; r < rows && ok; ++r) {
          for (std::size_t j = 0; j < hidden && ok; ++j) {
            const double a = h[r * 2 * hidden + j], gate = h[r * 2 * hidden + hidden + j];
            const double want = gelu_ref(a) * gate, got = y1[r * hidden + j];
            const double err = std::fabs(got - want);
            if (want != 0) worst = std::max(worst, err / std::fabs(want));
            ok = err <= 1e-6 * std::fabs(want);
            if (!ok) {
              std::fprintf(
                  stderr,
                  "  [%s] glu_gelu hidden=%zu row %zu: gelu(%.9g) * %.9g = %.9g, expected %.9g\n",
                  kernels->name, hidden, r, a, gate, got, want);
            }
          }
        }
        CHECK(ok);
      }
    }
  }
  std::printf("  glu_gelu worst relative error %.3g\n", worst);
}

// ---------------------------------------------------------------------------
// FAVOR+ with performer-pytorch's numerics.

namespace {

const char* features_name(PytorchFeatures f) {
  return f == PytorchFeatures::kSoftmax ? "softmax"
         : f == PytorchFeatures::kRelu  ? "relu"
                                        : "no-projection";
}

// One (batch, head) of pytorch_favor.h's formulas in double. w is the m x d projection.
std::vector<double> pytorch_favor_ref(const float* q, const float* k, const float* v,
                                      std::size_t Lq, std::size_t Lk, std::size_t d, std::size_t Dv,
                                      const float* w, std::size_t m, PytorchFeatures features,
                                      bool causal, const std::uint8_t* keep, bool drop) {
  const std::size_t F = features == PytorchFeatures::kNoProjection ? d : m;
  const double c = std::pow(static_cast<double>(d), -0.25);
  // u = c x W^T into u; returns s = c^2 ||x||^2 / 2.
  auto project = [&](const float* x, double* u) {
    double n2 = 0;
    for (std::size_t i = 0; i < d; ++i) n2 += static_cast<double>(x[i]) * x[i];
    for (std::size_t f = 0; f < m; ++f) {
      double a = 0;
      for (std::size_t i = 0; i < d; ++i) a += static_cast<double>(w[f * d + i]) * (c * x[i]);
      u[f] = a;
    }
    return c * c * n2 / 2;
  };
  std::vector<double> qf(Lq * F), kf(Lk * F), u(F);
  if (features == PytorchFeatures::kSoftmax) {
    const double r = 1.0 / std::sqrt(static_cast<double>(m));
    std::vector<double> ku(Lk * F), ks(Lk);
    double M =
        -std::numeric_limits<double>::infinity();  // over every key row (kept or not) and feature
    for (std::size_t j = 0; j < Lk; ++j) {
      ks[j] = project(k + j * d, &ku[j * F]);
      for (std::size_t f = 0; f < F; ++f) M = std::max(M, ku[j * F + f]);
    }
    for (std::size_t j = 0; j < Lk; ++j) {
      for (std::size_t f = 0; f < F; ++f)
        kf[j * F + f] = r * (std::exp(ku[j * F + f] - ks[j] - M) + 1e-4);
    }
    for (std::size_t i = 0; i < Lq; ++i) {
      const double s = project(q + i * d, u.data());
      const double top = *std::max_element(u.begin(), u.end());
      for (std::size_t f = 0; f < F; ++f) qf[i * F + f] = r * (std::exp(u[f] - s - top) + 1e-4);
    }
  } else if (features == PytorchFeatures::kRelu) {
    for (std::size_t j = 0; j < Lk; ++j) {
      project(k + j * d, u.data());
      for (std::size_t f = 0; f < F; ++f) kf[j * F + f] = std::max(u[f], 0.0) + 1e-3;
    }
    for (std::size_t i = 0; i < Lq; ++i) {
      project(q + i * d, u.data());
      for (std::size_t f = 0; f < F; ++f) qf[i * F + f] = std::max(u[f], 0.0) + 1e-3;
    }
  } else {
    for (std::size_t i = 0; i < Lq; ++i) {  // softmax over the query's d entries
      const double top = *std::max_element(q + i * d, q + (i + 1) * d);
      double sum = 0;
      for (std::size_t f = 0; f < F; ++f) sum += qf[i * F + f] = std::exp(q[i * d + f] - top);
      for (std::size_t f = 0; f < F; ++f) qf[i * F + f] /= sum;
    }
    for (std::size_t f = 0; f < F; ++f) {
      if (causal) {
        for (std::size_t j = 0; j < Lk; ++j)
          kf[j * F + f] = std::exp(static_cast<double>(k[j * d + f]));
        continue;
      }
      // softmax over the keys, per entry; with drop, over kept keys only and the others leave the
      // sums.
      auto in = [&](std::size_t j) { return !(drop && keep != nullptr && keep[j] == 0); };
      double top = -std::numeric_limits<double>::infinity(), sum = 0;
      for (std::size_t j = 0; j < Lk; ++j) {
        if (in(j)) top = std::max(top, static_cast<double>(k[j * d + f]));
      }
      for (std::size_t j = 0; j < Lk; ++j) {
        if (in(j)) sum += std::exp(k[j * d + f] - top);
      }
      for (std::size_t j = 0; j < Lk; ++j)
        kf[j * F + f] = in(j) ? std::exp(k[j * d + f] - top) / sum : 0.0;
    }
  }
  // out_i = q'_i S / q'_i z; values of keys not kept are zero, their features stay in z.
  std::vector<double> out(Lq * Dv), S(F * Dv, 0.0), z(F, 0.0);
  auto absorb = [&](std::size_t j) {
    const bool kept = keep == nullptr || keep[j] != 0;
    for (std::size_t f = 0; f < F; ++f) {
      z[f] += kf[j * F + f];
      if (!kept) continue;
      for (std::size_t e = 0; e < Dv; ++e) S[f * Dv + e] += kf[j * F + f] * v[j * Dv + e];
    }
  };
  auto emit = [&](std::size_t i, double z_eps) {
    double den = 0;
    for (std::size_t f = 0; f < F; ++f) den += qf[i * F + f] * (z[f] + z_eps);
    for (std::size_t e = 0; e < Dv; ++e) {
      double num = 0;
      for (std::size_t f = 0; f < F; ++f) num += qf[i * F + f] * S[f * Dv + e];
      out[i * Dv + e] = num / den;
    }
  };
  if (causal) {
    for (std::size_t i = 0; i < Lq; ++i) {
      absorb(i);
      emit(i, 1e-6);
    }
  } else {
    for (std::size_t j = 0; j < Lk; ++j) absorb(j);
    for (std::size_t i = 0; i < Lq; ++i) emit(i, 0.0);
  }
  return out;
}

// Inputs of a FAVOR test: q, k [B, H, L, d] from N(0, 0.5^2), v from N(0, 1), W m x d.
struct FavorInputs {
  std::size_t B, H, Lq, Lk, d, Dv, m;
  std::vector<float> q, k, v, w, packed;
  FavorInputs(std::size_t B_, std::size_t H_, std::size_t Lq_, std::size_t Lk_, std::size_t d_,
              std::size_t Dv_, std::size_t m_, std::uint64_t seed)
      : B(B_),
        H(H_),
        Lq(Lq_),
        Lk(Lk_),
        d(d_),
        Dv(Dv_),
        m(m_),
        q(pa_test::gaussian(B_ * H_ * Lq_ * d_, 0.5, seed)),
        k(pa_test::gaussian(B_ * H_ * Lk_ * d_, 0.5, seed + 1)),
        v(pa_test::gaussian(B_ * H_ * Lk_ * Dv_, 1.0, seed + 2)),
        w(pa_test::gaussian(m_ * d_, 1.0, seed + 3)),
        packed(m_ * d_) {
    pa::pack_projection(w.data(), m, d, packed.data());
  }
  pa::AttentionDims dims() const { return pa::AttentionDims{B, H, Lq, Lk, d, Dv}; }
  pa::PytorchFavorOptions options(PytorchFeatures features, bool causal) const {
    pa::PytorchFavorOptions o;
    o.features = features;
    o.causal = causal;
    if (features != PytorchFeatures::kNoProjection) {
      o.packed_projection = packed.data();
      o.num_features = m;
    }
    return o;
  }
  // The reference over every (batch, head).
  std::vector<double> reference(const pa::PytorchFavorOptions& o) const {
    std::vector<double> want;
    for (std::size_t p = 0; p < B * H; ++p) {
      const auto one = pytorch_favor_ref(
          &q[p * Lq * d], &k[p * Lk * d], &v[p * Lk * Dv], Lq, Lk, d, Dv, w.data(), m, o.features,
          o.causal, o.keep ? o.keep + (p / H) * Lk : nullptr, o.drop_masked_keys);
      want.insert(want.end(), one.begin(), one.end());
    }
    return want;
  }
};

// Keys of item 0: every third one hidden; item 1: none kept (a head whose output is 0)
// or, when dropping masked keys (which needs one kept key), every second one.
std::vector<std::uint8_t> favor_keep(std::size_t B, std::size_t L, bool drop) {
  std::vector<std::uint8_t> keep(B * L, 1);
  for (std::size_t j = 0; j < L; ++j) {
    keep[j] = j % 3 != 1;
    if (B > 1) keep[L + j] = drop ? j % 2 == 0 : 0;
  }
  return keep;
}

std::vector<float> run_favor(const pa::AttentionDims& dims, const std::vector<float>& q,
                             const std::vector<float>& k, const std::vector<float>& v,
                             const pa::PytorchFavorOptions& o, const pa::KernelSet& kernels,
                             pa::ThreadPool& pool) {
  std::vector<float> out(dims.batch * dims.heads * dims.q_len * dims.value_dim, -1.0f);
  pa::pytorch_favor_attention(dims, q.data(), k.data(), v.data(), out.data(), o, kernels, pool);
  return out;
}

}  // namespace

TEST(
    "models/pytorch_favor: softmax, relu, no projection; bidirectional and causal; masks; against double") {
  pa::ThreadPool pool1(1), pool3(3);
  const std::size_t lengths[] = {1, 63, 64, 65, 130};
  const std::size_t dims_d[] = {8, 16, 33}, dims_m[] = {7, 64};
  std::size_t cases = 0;
  for (const pa::KernelSet* kernels : pa::available_kernel_sets()) {
    std::size_t index = 0;
    for (PytorchFeatures features :
         {PytorchFeatures::kSoftmax, PytorchFeatures::kRelu, PytorchFeatures::kNoProjection}) {
      for (bool causal : {false, true}) {
        for (bool masked : {false, true}) {
          for (std::size_t li = 0; li < 5; ++li) {
            const bool can_drop = features == PytorchFeatures::kNoProjection && !causal && masked;
            for (bool drop : {false, true}) {
              if (drop && !can_drop) continue;
              // Sizes cycle with different periods; bidirectional calls have q_len != k_len.
              const std::size_t Lk = lengths[li], Lq = causal ? Lk : lengths[(li + 2) % 5];
              const std::size_t d = dims_d[index % 3], m = dims_m[(index / 3) % 2],
                                Dv = index % 2 ? d : 5;
              ++index;
              const FavorInputs in(2, 2, Lq, Lk, d, Dv, m, 1000 + index);
              const auto keep = favor_keep(2, Lk, drop);
              auto o = in.options(features, causal);
              o.keep = masked ? keep.data() : nullptr;
              o.drop_masked_keys = drop;
              const auto out1 = run_favor(in.dims(), in.q, in.k, in.v, o, *kernels, pool1);
              const auto out3 = run_favor(in.dims(), in.q, in.k, in.v, o, *kernels, pool3);
              CHECK(same_bits(out1, out3));
              char label[200];
              std::snprintf(label, sizeof label,
                            "[%s] %s causal=%d masked=%d drop=%d Lq=%zu Lk=%zu d=%zu m=%zu Dv=%zu",
                            kernels->name, features_name(features), causal, masked, drop, Lq, Lk, d,
                            m, Dv);
              CHECK(check_blocks(out1, in.reference(o), Lq * Dv, 2e-5, label));
              ++cases;
            }
          }
        }
      }
    }
  }
  std::printf("  %zu pytorch_favor cases\n", cases);
}

namespace {

// Runs a causal call over rows [0, L) as pieces [cuts[c], cuts[c + 1]) through `state`.
std::vector<float> favor_in_pieces(const FavorInputs& in, const std::vector<std::uint8_t>* keep,
                                   pa::PytorchFavorOptions o, const std::vector<std::size_t>& cuts,
                                   std::vector<float>& state, std::uint8_t* rose,
                                   const pa::KernelSet& kernels, pa::ThreadPool& pool) {
  const std::size_t BH = in.B * in.H, L = in.Lq;
  std::vector<float> out(BH * L * in.Dv, -1.0f);
  o.state = state.data();
  o.max_rose = rose;
  for (std::size_t c = 0; c + 1 < cuts.size(); ++c) {
    const std::size_t r0 = cuts[c], r1 = cuts[c + 1];
    const auto q = slice_rows(in.q, BH, L, in.d, r0, r1), k = slice_rows(in.k, BH, L, in.d, r0, r1);
    const auto v = slice_rows(in.v, BH, L, in.Dv, r0, r1);
    std::vector<std::uint8_t> part_keep;
    if (keep != nullptr) part_keep = slice_rows(*keep, in.B, L, 1, r0, r1);
    o.keep = keep != nullptr ? part_keep.data() : nullptr;
    const auto part = run_favor(pa::AttentionDims{in.B, in.H, r1 - r0, r1 - r0, in.d, in.Dv}, q, k,
                                v, o, kernels, pool);
    place_rows(out, part, BH, L, in.Dv, r0, r1);
  }
  return out;
}

// Rows [r0, r1) of every head of `out` (as double, for check_blocks).
std::vector<double> rows_as_double(const std::vector<float>& out, std::size_t BH, std::size_t L,
                                   std::size_t Dv, std::size_t r0, std::size_t r1) {
  const auto part = slice_rows(out, BH, L, Dv, r0, r1);
  return std::vector<double>(part.begin(), part.end());
}

}  // namespace

TEST("models/pytorch_favor: causal decoding in pieces through a state equals one call") {
  pa::ThreadPool pool1(1), pool3(3);
  const std::size_t B = 2, H = 2, d = 16, Dv = 8, m = 64;
  const std::size_t none = std::numeric_limits<std::size_t>::max();
  std::size_t cases = 0;
  for (const pa::KernelSet* kernels : pa::available_kernel_sets()) {
    for (PytorchFeatures features :
         {PytorchFeatures::kSoftmax, PytorchFeatures::kRelu, PytorchFeatures::kNoProjection}) {
      for (std::size_t L : {12, 130}) {
        // 5 rows, then 1 row at a time, then the rest.
        const std::vector<std::size_t> cuts = {0, 5, 6, 7, 8, 9, 10, L};
        // A key whose projection dominates (u = 10) at row 2 (first piece), 7 (a one-row
        // piece) or L - 2 (the last piece); softmax needs it to know where M rises.
        std::vector<std::size_t> bigs = {2, 7, L - 2};
        if (features != PytorchFeatures::kSoftmax) bigs.push_back(none);
        for (std::size_t big : bigs) {
          for (bool masked : {false, true}) {
            FavorInputs in(B, H, L, L, d, Dv, m, 2000 + L + big % 1000);
            const double c = std::pow(static_cast<double>(d), -0.25);
            double w0 = 0;
            for (std::size_t i = 0; i < d; ++i) w0 += static_cast<double>(in.w[i]) * in.w[i];
            w0 = std::sqrt(w0);
            if (big != none) {
              for (std::size_t p = 0; p < B * H; ++p) {
                for (std::size_t i = 0; i < d; ++i)
                  in.k[(p * L + big) * d + i] = static_cast<float>(10.0 / (c * w0 * w0) * in.w[i]);
              }
            }
            // relu and no projection match everywhere; softmax from the piece holding the big
            // key on (where the continued M is the one call's M).
            std::size_t piece = 0;
            while (cuts[piece + 1] <= big && piece + 2 < cuts.size()) ++piece;
            const std::size_t match_from = features == PytorchFeatures::kSoftmax ? cuts[piece] : 0;
            if (features == PytorchFeatures::kSoftmax) {
              // The premise, in double: the big key's u beats every other key's by 0.5 or more.
              double big_u = -1e300, other_u = -1e300;
              for (std::size_t p = 0; p < B * H; ++p) {
                for (std::size_t j = 0; j < L; ++j) {
                  for (std::size_t f = 0; f < m; ++f) {
                    double u = 0;
                    for (std::size_t i = 0; i < d; ++i)
                      u += static_cast<double>(in.w[f * d + i]) * c * in.k[(p * L + j) * d + i];
                    if (j == big) {
                      big_u = std::max(big_u, u);
                    } else {
                      other_u = std::max(other_u, u);
                    }
                  }
                }
              }
              if (!(big_u > other_u + 0.5)) {
                std::fprintf(stderr, "  test premise broken: big u %.3g, others up to %.3g\n",
                             big_u, other_u);
              }
              CHECK(big_u > other_u + 0.5);
            }
            const auto keep = favor_keep(B, L, false);
            auto o = in.options(features, true);
            o.keep = masked ? keep.data() : nullptr;
            const auto whole = run_favor(in.dims(), in.q, in.k, in.v, o, *kernels, pool1);
            char label[200];
            std::snprintf(label, sizeof label, "[%s] %s L=%zu big key at %lld masked=%d",
                          kernels->name, features_name(features), L,
                          big == none ? -1LL : static_cast<long long>(big), masked);
            CHECK(check_blocks(whole, in.reference(o), L * Dv, 2e-5,
                               std::string(label) + " one call"));

            const std::size_t F = pa::pytorch_favor_feature_count(o, d);
            std::vector<float> state1(B * H * pa::pytorch_favor_state_floats(F, Dv)),
                state3(state1.size());
            pa::pytorch_favor_state_reset(state1.data(), B * H, F, Dv);
            pa::pytorch_favor_state_reset(state3.data(), B * H, F, Dv);
            // A reset state starts a sequence: its first piece is a plain causal call on those
            // rows.
            {
              std::vector<float> fresh = state1;
              const auto first = favor_in_pieces(in, masked ? &keep : nullptr, o, {0, 5}, fresh,
                                                 nullptr, *kernels, pool1);
              FavorInputs head5 = in;
              head5.Lq = head5.Lk = 5;
              head5.q = slice_rows(in.q, B * H, L, d, 0, 5);
              head5.k = slice_rows(in.k, B * H, L, d, 0, 5);
              head5.v = slice_rows(in.v, B * H, L, Dv, 0, 5);
              const auto keep5 = slice_rows(keep, B, L, 1, 0, 5);
              auto o5 = o;
              o5.keep = masked ? keep5.data() : nullptr;
              const auto plain =
                  run_favor(head5.dims(), head5.q, head5.k, head5.v, o5, *kernels, pool1);
              CHECK(same_bits(slice_rows(first, B * H, L, Dv, 0, 5), plain));
            }
            std::uint8_t rose1 = 0, rose3 = 0;
            const auto pieces1 = favor_in_pieces(in, masked ? &keep : nullptr, o, cuts, state1,
                                                 &rose1, *kernels, pool1);
            const auto pieces3 = favor_in_pieces(in, masked ? &keep : nullptr, o, cuts, state3,
                                                 &rose3, *kernels, pool3);
            CHECK(same_bits(pieces1, pieces3));
            CHECK(same_bits(state1, state3));
            CHECK(rose1 == rose3);
            // M rises exactly when the big key comes after the first piece (softmax only).
            const std::uint8_t rose_want =
                features == PytorchFeatures::kSoftmax && big != none && big >= cuts[1];
            if (rose1 != rose_want)
              std::fprintf(stderr, "  %s: max_rose = %d, expected %d\n", label, rose1, rose_want);
            CHECK(rose1 == rose_want);
            CHECK(check_blocks(
                slice_rows(pieces1, B * H, L, Dv, match_from, L),
                rows_as_double(whole, B * H, L, Dv, match_from, L), (L - match_from) * Dv, 2e-5,
                std::string(label) + " pieces from row " + std::to_string(match_from)));
            CHECK(check_blocks(slice_rows(pieces1, B * H, L, Dv, L - 1, L),
                               rows_as_double(whole, B * H, L, Dv, L - 1, L), Dv, 2e-5,
                               std::string(label) + " last row"));
            ++cases;
          }
        }
      }
    }
  }
  std::printf("  %zu decoding cases\n", cases);
}

TEST(
    "models/pytorch_favor: non-finite inputs and exp overflow throw InputError and leave the state unchanged") {
  pa::ThreadPool pool1(1), pool3(3);
  const std::size_t B = 1, H = 2, L = 70, d = 8, Dv = 4, m = 16;
  const float nan = std::numeric_limits<float>::quiet_NaN(),
              inf = std::numeric_limits<float>::infinity();
  for (const pa::KernelSet* kernels : pa::available_kernel_sets()) {
    for (pa::ThreadPool* pool : {&pool1, &pool3}) {
      for (PytorchFeatures features :
           {PytorchFeatures::kSoftmax, PytorchFeatures::kRelu, PytorchFeatures::kNoProjection}) {
        const FavorInputs in(B, H, L, L, d, Dv, m, 3000);
        const std::size_t F = pa::pytorch_favor_feature_count(in.options(features, true), d);
        std::vector<float> state(B * H * pa::pytorch_favor_state_floats(F, Dv));
        pa::pytorch_favor_state_reset(state.data(), B * H, F, Dv);
        std::uint8_t rose = 0;
        favor_in_pieces(in, nullptr, in.options(features, true), {0, 5}, state, &rose, *kernels,
                        *pool);
        const std::vector<float> saved = state;
        // The next 70 rows of the sequence, continued from the state.
        FavorInputs next(B, H, L, L, d, Dv, m, 3100);
        auto continued = next.options(features, true);
        continued.state = state.data();
        continued.max_rose = &rose;
        auto expect_throw = [&](std::vector<float> q, std::vector<float> k, std::vector<float> v,
                                const char* what) {
          const bool threw = throws_input_error(
              [&] { run_favor(next.dims(), q, k, v, continued, *kernels, *pool); });
          if (!threw) {
            std::fprintf(stderr, "  [%s] %s causal: %s did not throw InputError\n", kernels->name,
                         features_name(features), what);
          }
          CHECK(threw);
          if (!same_bits(state, saved)) {
            std::fprintf(stderr, "  [%s] %s: %s changed the state\n", kernels->name,
                         features_name(features), what);
          }
          CHECK(same_bits(state, saved));
          CHECK(rose == 0);
          const bool threw_bidirectional = throws_input_error([&] {
            run_favor(next.dims(), q, k, v, next.options(features, false), *kernels, *pool);
          });
          CHECK(threw_bidirectional);
        };
        // Bad entries in row 66 of head 1: the input scan rejects non-finite ones up front.
        auto q = next.q;
        q[(L + 66) * d + 3] = nan;
        expect_throw(q, next.k, next.v, "NaN query");
        auto k = next.k;
        k[(L + 66) * d + 3] = inf;
        expect_throw(next.q, k, next.v, "infinite key");
        auto v = next.v;
        v[(L + 66) * Dv + 1] = -inf;
        expect_throw(next.q, next.k, v, "infinite value");
        v[(L + 66) * Dv + 1] = nan;
        expect_throw(next.q, next.k, v, "NaN value");
        if (features == PytorchFeatures::kNoProjection) {
          // exp(100) overflows float32 inside the call, after head 1's first row block was
          // absorbed.
          k = next.k;
          k[(L + 66) * d + 3] = 100.0f;
          const bool threw = throws_input_error(
              [&] { run_favor(next.dims(), next.q, k, next.v, continued, *kernels, *pool); });
          CHECK(threw);
          CHECK(same_bits(state, saved));
          // exp(88) is finite, but sums of three overflow: the output check throws after every head
          // ran.
          k = next.k;
          v = next.v;
          for (std::size_t r = 0; r < 3; ++r) {
            for (std::size_t i = 0; i < d; ++i) k[(L + r) * d + i] = 88.0f;
            for (std::size_t e = 0; e < Dv; ++e) v[(L + r) * Dv + e] = 10.0f;
          }
          const bool threw_late = throws_input_error(
              [&] { run_favor(next.dims(), next.q, k, v, continued, *kernels, *pool); });
          if (!threw_late) {
            std::fprintf(stderr, "  [%s] no projection: keys of 88 did not overflow the output\n",
                         kernels->name);
          }
          CHECK(threw_late);
          CHECK(same_bits(state, saved));
        }
        // The state still continues the sequence after the failed calls; max_rose is never cleared.
        rose = 1;
        run_favor(next.dims(), next.q, next.k, next.v, continued, *kernels, *pool);
        CHECK(!same_bits(state, saved));
        CHECK(rose == 1);
      }
    }
  }
}

// ---------------------------------------------------------------------------
// Local attention.

namespace {

// One (batch, head) of local_attention.h's description in double (inputs float or double).
template <typename T>
std::vector<double> local_ref(const T* q, const T* k, const T* v, std::size_t L, std::size_t d,
                              std::size_t Dv, std::size_t w, bool causal, const std::uint8_t* keep,
                              bool pytorch) {
  const long long n = static_cast<long long>(L), W = static_cast<long long>(w);
  const long long padded = (n + W - 1) / W * W;
  const double scale = 1.0 / std::sqrt(static_cast<double>(d));
  std::vector<double> out(L * Dv, 0.0);
  for (long long i = 0; i < n; ++i) {
    const long long first = (i / W - 1) * W, last = first + (causal ? 2 : 3) * W;
    std::vector<double> scores;
    std::vector<long long> keys;  // -1 stands for a padding row (zero key and value)
    for (long long p = first; p < last; ++p) {
      if (p >= 0 && p < n) {
        bool visible = !(causal && p > i);
        if (keep != nullptr) visible = visible && keep[p] != 0 && (!pytorch || keep[i] != 0);
        if (!visible) continue;
        double dot = 0;
        for (std::size_t e = 0; e < d; ++e) dot += static_cast<double>(q[i * d + e]) * k[p * d + e];
        scores.push_back(dot * scale);
        keys.push_back(p);
      } else if (p >= n && p < padded && pytorch && !causal && keep == nullptr) {
        scores.push_back(0.0);
        keys.push_back(-1);
      }
    }
    double* y = &out[i * Dv];
    if (!scores.empty()) {
      const double top = *std::max_element(scores.begin(), scores.end());
      double total = 0;
      for (std::size_t s = 0; s < scores.size(); ++s) {
        const double weight = std::exp(scores[s] - top);
        total += weight;
        if (keys[s] < 0) continue;
        for (std::size_t e = 0; e < Dv; ++e) y[e] += weight * v[keys[s] * Dv + e];
      }
      for (std::size_t e = 0; e < Dv; ++e) y[e] /= total;
    } else if (pytorch) {
      // Every slot hidden: the plain mean of the look-around's value slots.
      for (long long p = first; p < last; ++p) {
        for (std::size_t e = 0; e < Dv; ++e)
          y[e] += p < 0 || p >= padded ? -1.0 : p >= n ? 0.0 : v[p * Dv + e];
      }
      for (std::size_t e = 0; e < Dv; ++e) y[e] /= static_cast<double>(last - first);
    }
  }
  return out;
}

std::vector<double> local_ref_all(std::size_t B, std::size_t H, std::size_t L, std::size_t d,
                                  std::size_t Dv, const std::vector<float>& q,
                                  const std::vector<float>& k, const std::vector<float>& v,
                                  const pa::LocalAttentionOptions& o) {
  std::vector<double> want;
  for (std::size_t p = 0; p < B * H; ++p) {
    const auto one =
        local_ref(&q[p * L * d], &k[p * L * d], &v[p * L * Dv], L, d, Dv, o.window, o.causal,
                  o.keep ? o.keep + (p / H) * L : nullptr, o.pytorch_numerics);
    want.insert(want.end(), one.begin(), one.end());
  }
  return want;
}

std::vector<float> run_local(std::size_t B, std::size_t H, std::size_t L, std::size_t d,
                             std::size_t Dv, const std::vector<float>& q,
                             const std::vector<float>& k, const std::vector<float>& v,
                             const pa::LocalAttentionOptions& o, const pa::KernelSet& kernels,
                             pa::ThreadPool& pool) {
  std::vector<float> out(B * H * L * Dv, -1.0f);
  pa::local_attention(pa::AttentionDims{B, H, L, L, d, Dv}, q.data(), k.data(), v.data(),
                      out.data(), o, kernels, pool);
  return out;
}

// Masks of three batch items of length L: item 0, runs of two hidden positions (rows whose
// keys are all hidden for w = 1); item 1, every second position; item 2, nothing kept.
std::vector<std::uint8_t> local_keep(std::size_t L) {
  std::vector<std::uint8_t> keep(3 * L);
  for (std::size_t j = 0; j < L; ++j) {
    keep[j] = j % 5 != 1 && j % 5 != 2;
    keep[L + j] = j % 2 == 0;
    keep[2 * L + j] = 0;
  }
  return keep;
}

pa::LocalAttentionOptions local_options(std::size_t w, bool causal, const std::uint8_t* keep,
                                        bool pytorch) {
  pa::LocalAttentionOptions o;
  o.window = w;
  o.causal = causal;
  o.keep = keep;
  o.pytorch_numerics = pytorch;
  return o;
}

// Lengths 1, w - 1, w, w + 1, 3w + 2 without 0 or repeats.
std::vector<std::size_t> local_lengths(std::size_t w) {
  std::vector<std::size_t> out;
  for (std::size_t L : {std::size_t{1}, w - 1, w, w + 1, 3 * w + 2}) {
    if (L > 0 && std::find(out.begin(), out.end(), L) == out.end()) out.push_back(L);
  }
  return out;
}

}  // namespace

TEST(
    "models/local_attention: windows 1, 3, 8, edge lengths, causal or not, masks, both numerics, against double") {
  pa::ThreadPool pool1(1), pool3(3);
  const std::size_t B = 3, H = 2;
  std::size_t cases = 0;
  for (const pa::KernelSet* kernels : pa::available_kernel_sets()) {
    std::size_t index = 0;
    for (std::size_t w : {1, 3, 8}) {
      for (std::size_t L : local_lengths(w)) {
        for (bool causal : {false, true}) {
          for (bool masked : {false, true}) {
            for (bool pytorch : {false, true}) {
              // Periods 6 and 5: head sizes mix with every option of the innermost loops.
              const std::size_t d = (index / 3) % 2 ? 16 : 4, Dv = index % 5 ? d : 3;
              ++index;
              const auto q = pa_test::gaussian(B * H * L * d, 1.0, 4000 + index);
              const auto k = pa_test::gaussian(B * H * L * d, 1.0, 5000 + index);
              const auto v = pa_test::gaussian(B * H * L * Dv, 1.0, 6000 + index);
              const std::vector<std::uint8_t> keep = local_keep(L);
              const pa::LocalAttentionOptions o =
                  local_options(w, causal, masked ? keep.data() : nullptr, pytorch);
              const auto out1 = run_local(B, H, L, d, Dv, q, k, v, o, *kernels, pool1);
              const auto out3 = run_local(B, H, L, d, Dv, q, k, v, o, *kernels, pool3);
              CHECK(same_bits(out1, out3));
              const auto want = local_ref_all(B, H, L, d, Dv, q, k, v, o);
              char label[200];
              std::snprintf(label, sizeof label,
                            "[%s] local w=%zu L=%zu causal=%d masked=%d pytorch=%d d=%zu Dv=%zu",
                            kernels->name, w, L, causal, masked, pytorch, d, Dv);
              CHECK(check_blocks(out1, want, L * Dv, 2e-5, label));
              // Rows the reference leaves at zero (hidden rows of the exact numerics) must be
              // exactly zero.
              bool zeros = true;
              for (std::size_t r = 0; r < B * H * L; ++r) {
                bool zero = true;
                for (std::size_t e = 0; e < Dv; ++e) zero = zero && want[r * Dv + e] == 0.0;
                for (std::size_t e = 0; zero && e < Dv; ++e)
                  zeros = zeros && out1[r * Dv + e] == 0.0f;
              }
              if (!zeros)
                std::fprintf(stderr, "  %s: a row with no visible key is not zero\n", label);
              CHECK(zeros);
              ++cases;
            }
          }
        }
      }
    }
  }
  std::printf("  %zu local_attention cases\n", cases);
}

TEST(
    "models/local_attention backward: central differences of the double reference, every option, every kernel set") {
  pa::ThreadPool pool1(1), pool3(3);
  const std::size_t B = 3, H = 1, d = 4, Dv = 3;
  std::size_t cases = 0, index = 0;
  for (const pa::KernelSet* kernels : pa::available_kernel_sets()) {
    for (std::size_t w : {1, 3, 8}) {
      for (std::size_t L : local_lengths(w)) {
        for (bool causal : {false, true}) {
          for (bool masked : {false, true}) {
            for (bool pytorch : {false, true}) {
              ++index;
              const auto q = pa_test::gaussian(B * H * L * d, 1.0, 7000 + index);
              const auto k = pa_test::gaussian(B * H * L * d, 1.0, 8000 + index);
              const auto v = pa_test::gaussian(B * H * L * Dv, 1.0, 9000 + index);
              const auto g = pa_test::gaussian(B * H * L * Dv, 1.0, 9500 + index);
              const std::vector<std::uint8_t> keep = local_keep(L);
              const pa::LocalAttentionOptions o =
                  local_options(w, causal, masked ? keep.data() : nullptr, pytorch);
              const pa::AttentionDims dims{B, H, L, L, d, Dv};
              std::vector<float> dq(q.size(), -7.0f), dk(k.size(), -7.0f), dv(v.size(), -7.0f);
              pa::local_attention_backward(dims, q.data(), k.data(), v.data(), g.data(), dq.data(),
                                           dk.data(), dv.data(), o, *kernels, pool1);
              std::vector<float> dq3(q.size()), dk3(k.size()), dv3(v.size());
              pa::local_attention_backward(dims, q.data(), k.data(), v.data(), g.data(), dq3.data(),
                                           dk3.data(), dv3.data(), o, *kernels, pool3);
              CHECK(same_bits(dq, dq3) && same_bits(dk, dk3) && same_bits(dv, dv3));
              // sum(g * out) in double, one (batch, head) at a time, against central differences.
              double num = 0.0, den = 0.0;
              for (std::size_t p = 0; p < B * H; ++p) {
                std::vector<double> qd(&q[p * L * d], &q[(p + 1) * L * d]),
                    kd(&k[p * L * d], &k[(p + 1) * L * d]);
                std::vector<double> vd(&v[p * L * Dv], &v[(p + 1) * L * Dv]);
                const std::uint8_t* kp = o.keep ? o.keep + (p / H) * L : nullptr;
                auto objective = [&] {
                  const auto out =
                      local_ref(qd.data(), kd.data(), vd.data(), L, d, Dv, w, causal, kp, pytorch);
                  double total = 0.0;
                  for (std::size_t i = 0; i < out.size(); ++i) total += out[i] * g[p * L * Dv + i];
                  return total;
                };
                auto compare = [&](std::vector<double>& x, const std::vector<float>& grad,
                                   std::size_t offset) {
                  for (std::size_t i = 0; i < x.size(); ++i) {
                    const double keep_value = x[i], h = 1e-5;
                    x[i] = keep_value + h;
                    const double up = objective();
                    x[i] = keep_value - h;
                    const double down = objective();
                    x[i] = keep_value;
                    const double fd = (up - down) / (2 * h);
                    num += (grad[offset + i] - fd) * (grad[offset + i] - fd);
                    den += fd * fd;
                  }
                };
                compare(qd, dq, p * L * d);
                compare(kd, dk, p * L * d);
                compare(vd, dv, p * L * Dv);
              }
              const bool ok = den == 0.0 ? num == 0.0 : std::sqrt(num / den) <= 1e-4;
              if (!ok) {
                std::fprintf(
                    stderr,
                    "  [%s] local backward w=%zu L=%zu causal=%d masked=%d pytorch=%d: error %.3g\n",
                    kernels->name, w, L, causal, masked, pytorch,
                    den == 0.0 ? std::sqrt(num) : std::sqrt(num / den));
              }
              CHECK(ok);
              ++cases;
            }
          }
        }
      }
    }
  }
  std::printf("  %zu local_attention backward cases\n", cases);
}

TEST(
    "models/local_attention: a decoding ring continues a causal sequence, row by row or in pieces") {
  pa::ThreadPool pool1(1), pool3(3);
  const std::size_t B = 2, H = 2, d = 8, Dv = 6, BH = B * H;
  std::size_t cases = 0;
  for (const pa::KernelSet* kernels : pa::available_kernel_sets()) {
    for (std::size_t w : {1, 3, 8}) {
      for (std::size_t L : local_lengths(w)) {
        for (bool pytorch : {false, true}) {
          const std::size_t L2 = L + 2 * w + 3;  // the ring wraps
          const auto q = pa_test::gaussian(BH * L2 * d, 1.0, 7000 + L * 10 + w);
          const auto k = pa_test::gaussian(BH * L2 * d, 1.0, 7100 + L * 10 + w);
          const auto v = pa_test::gaussian(BH * L2 * Dv, 1.0, 7200 + L * 10 + w);
          pa::LocalAttentionOptions o;
          o.window = w;
          o.causal = true;
          o.pytorch_numerics = pytorch;
          const auto whole = run_local(B, H, L2, d, Dv, q, k, v, o, *kernels, pool1);
          char label[200];
          std::snprintf(label, sizeof label, "[%s] ring w=%zu L=%zu pytorch=%d", kernels->name, w,
                        L, pytorch);
          CHECK(check_blocks(whole, local_ref_all(B, H, L2, d, Dv, q, k, v, o), L2 * Dv, 2e-5,
                             std::string(label) + " one call"));
          // Piece sizes after the first L rows: 1 (row by row), or 3.
          for (std::size_t step : {1, 3}) {
            std::vector<float> results[2], rings[2];
            pa::ThreadPool* pools[2] = {&pool1, &pool3};
            for (int run = 0; run < 2; ++run) {
              // Slots the call does not fill must never be read: NaN would show.
              std::vector<float> ring(BH * pa::local_ring_floats(w, d, Dv),
                                      std::numeric_limits<float>::quiet_NaN());
              std::vector<float> out(BH * L2 * Dv, -1.0f);
              for (std::size_t r0 = 0; r0 < L2;) {
                const std::size_t r1 = r0 == 0 ? L : std::min(L2, r0 + step);
                pa::LocalAttentionOptions part = o;
                part.ring = ring.data();
                part.start = r0;
                const auto piece =
                    run_local(B, H, r1 - r0, d, Dv, slice_rows(q, BH, L2, d, r0, r1),
                              slice_rows(k, BH, L2, d, r0, r1), slice_rows(v, BH, L2, Dv, r0, r1),
                              part, *kernels, *pools[run]);
                place_rows(out, piece, BH, L2, Dv, r0, r1);
                r0 = r1;
              }
              results[run] = out;
              rings[run] = ring;
            }
            CHECK(same_bits(results[0], results[1]));
            CHECK(same_bits(rings[0], rings[1]));
            const std::vector<double> want(whole.begin(), whole.end());
            CHECK(check_blocks(results[0], want, L2 * Dv, 2e-5,
                               std::string(label) + " step " + std::to_string(step)));
            ++cases;
          }
        }
      }
    }
  }
  std::printf("  %zu ring cases\n", cases);
}

TEST("models/local_attention: non-finite inputs throw InputError") {
  pa::ThreadPool pool(1);
  const std::size_t B = 1, H = 2, L = 10, d = 4, Dv = 3;
  const float nan = std::numeric_limits<float>::quiet_NaN(),
              inf = std::numeric_limits<float>::infinity();
  const auto q = pa_test::gaussian(B * H * L * d, 1.0, 8000),
             k = pa_test::gaussian(B * H * L * d, 1.0, 8001);
  const auto v = pa_test::gaussian(B * H * L * Dv, 1.0, 8002);
  for (const pa::KernelSet* kernels : pa::available_kernel_sets()) {
    for (bool causal : {false, true}) {
      pa::LocalAttentionOptions o;
      o.window = 3;
      o.causal = causal;
      auto bad_q = q, bad_k = k, bad_v = v;
      bad_q[L * d + 5] = nan;
      bad_k[L * d + 7] = -inf;
      bad_v[L * Dv + 2] = inf;
      CHECK(throws_input_error([&] { run_local(B, H, L, d, Dv, bad_q, k, v, o, *kernels, pool); }));
      CHECK(throws_input_error([&] { run_local(B, H, L, d, Dv, q, bad_k, v, o, *kernels, pool); }));
      CHECK(throws_input_error([&] { run_local(B, H, L, d, Dv, q, k, bad_v, o, *kernels, pool); }));
    }
  }
}

TEST("models/attention drivers: the same bits on 1 and 3 threads when heads run in parallel") {
  pa::ThreadPool pool1(1), pool3(3);
  const std::size_t B = 2, H = 3;
  for (const pa::KernelSet* kernels : pa::available_kernel_sets()) {
    // Large enough that every head is its own piece of pool work.
    const std::size_t L = 300, d = 32, Dv = 32, m = 64;
    const FavorInputs in(B, H, L, L, d, Dv, m, 9000);
    const auto keep = favor_keep(B, L, false);
    for (PytorchFeatures features :
         {PytorchFeatures::kSoftmax, PytorchFeatures::kRelu, PytorchFeatures::kNoProjection}) {
      for (bool causal : {false, true}) {
        auto o = in.options(features, causal);
        o.keep = keep.data();
        const auto out1 = run_favor(in.dims(), in.q, in.k, in.v, o, *kernels, pool1);
        const auto out3 = run_favor(in.dims(), in.q, in.k, in.v, o, *kernels, pool3);
        if (!same_bits(out1, out3)) {
          std::fprintf(stderr, "  [%s] %s causal=%d: 1 and 3 threads differ\n", kernels->name,
                       features_name(features), causal);
        }
        CHECK(same_bits(out1, out3));
        char label[120];
        std::snprintf(label, sizeof label, "[%s] %s causal=%d L=300", kernels->name,
                      features_name(features), causal);
        CHECK(check_blocks(out1, in.reference(o), L * Dv, 2e-5, label));
      }
    }
    const std::size_t w = 40;
    const auto q = pa_test::gaussian(B * H * L * d, 1.0, 9100),
               k = pa_test::gaussian(B * H * L * d, 1.0, 9101);
    const auto v = pa_test::gaussian(B * H * L * Dv, 1.0, 9102);
    std::vector<std::uint8_t> local_keep(B * L);
    for (std::size_t j = 0; j < B * L; ++j) local_keep[j] = j % 7 != 3;
    for (bool causal : {false, true}) {
      for (bool pytorch : {false, true}) {
        pa::LocalAttentionOptions o;
        o.window = w;
        o.causal = causal;
        o.keep = local_keep.data();
        o.pytorch_numerics = pytorch;
        const auto out1 = run_local(B, H, L, d, Dv, q, k, v, o, *kernels, pool1);
        const auto out3 = run_local(B, H, L, d, Dv, q, k, v, o, *kernels, pool3);
        if (!same_bits(out1, out3)) {
          std::fprintf(stderr, "  [%s] local causal=%d pytorch=%d: 1 and 3 threads differ\n",
                       kernels->name, causal, pytorch);
        }
        CHECK(same_bits(out1, out3));
        char label[120];
        std::snprintf(label, sizeof label, "[%s] local w=40 L=300 causal=%d pytorch=%d",
                      kernels->name, causal, pytorch);
        CHECK(check_blocks(out1, local_ref_all(B, H, L, d, Dv, q, k, v, o), L * Dv, 2e-5, label));
      }
    }
  }
}
