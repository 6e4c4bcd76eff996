// Layer ops (linear, layer_norm, split/merge heads) against plain double-precision
// references, on every kernel set this CPU can run: sizes around the vector widths,
// misaligned pointers, strided x, residual aliasing y, null bias, each activation,
// guard cells around every output, and the same bits for any pool size.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "core/layer_ops.h"
#include "kernels/dispatch.h"
#include "linear_reference.h"
#include "test_harness.h"
#include "test_util.h"

namespace {

using pa::Activation;
using pa_test::Guarded;

using pa_test::gelu_ref;

const char* act_name(Activation act) {
  return act == Activation::kRelu ? "relu" : act == Activation::kGelu ? "gelu" : "none";
}

using pa_test::LinearCase;
using pa_test::Residual;

// Runs one case on one kernel set; false (after reporting) when it fails.
bool check_linear(const LinearCase& t, const pa::KernelSet& kernels, pa::ThreadPool& pool,
                  std::mt19937& rng) {
  std::uniform_real_distribution<float> uni(-1.0f, 1.0f);
  const std::size_t x_stride = t.in + t.x_extra;
  Guarded x(std::max<std::size_t>(t.rows * x_stride, 1), t.offset);
  Guarded w(std::max<std::size_t>(t.out * t.in, 1), t.offset);
  Guarded bias(t.out, t.offset);
  Guarded res(t.rows * t.out, t.offset);
  Guarded y(t.rows * t.out, t.offset);
  for (std::size_t i = 0; i < t.rows * x_stride; ++i) x[i] = uni(rng);
  for (std::size_t i = 0; i < t.out * t.in; ++i) w[i] = uni(rng);
  for (std::size_t i = 0; i < t.out; ++i) bias[i] = uni(rng);
  for (std::size_t i = 0; i < t.rows * t.out; ++i) res[i] = uni(rng);
  const std::size_t packed_size = pa::linear_packed_size(t.in, t.out);
  Guarded packed(std::max<std::size_t>(packed_size, 1), t.offset);
  pa::linear_pack(t.in, t.out, w.data(), packed.data());

  // The reference, before y is touched (y holds the residual when aliased).
  const pa_test::LinearReference ref(t.rows, t.in, t.out, x.data(), x_stride, w.data(),
                                     t.bias ? bias.data() : nullptr,
                                     t.residual != Residual::kNone ? res.data() : nullptr, t.act);
  const float* residual = pa_test::linear_residual_arg(t, res.data(), y.data());
  pa::linear(t.rows, t.in, t.out, x.data(), x_stride, packed.data(), t.bias ? bias.data() : nullptr,
             residual, t.act, y.data(), kernels, pool);

  const double worst = ref.worst_error(y.data());
  const bool guards = x.guards_intact() && w.guards_intact() && bias.guards_intact() &&
                      res.guards_intact() && y.guards_intact() && packed.guards_intact();
  const bool ok = worst <= 1e-5 && guards;
  if (!ok) {
    std::fprintf(
        stderr,
        "  [%s] linear rows=%zu in=%zu out=%zu act=%s bias=%d residual=%d offset=%zu x_stride=%zu: "
        "worst err %.3g%s\n",
        kernels.name, t.rows, t.in, t.out, act_name(t.act), t.bias, static_cast<int>(t.residual),
        t.offset, x_stride, worst, guards ? "" : ", guard cells overwritten");
  }
  CHECK(ok);
  return ok;
}

}  // namespace

TEST("layers/linear: sizes around the vector widths, every option, every kernel set") {
  pa::ThreadPool pool(2);
  const std::size_t sizes[] = {1, 7, 8, 9, 15, 16, 17, 33, 100};
  std::mt19937 rng(11);
  std::size_t cases = 0;
  for (const pa::KernelSet* kernels : pa::available_kernel_sets()) {
    cases += pa_test::for_size_triples(
        sizes, [&](std::size_t rows, std::size_t in, std::size_t out, std::size_t index) {
          // 729 cases, mixing the options.
          const LinearCase t = pa_test::cycled_linear_case(rows, in, out, index);
          return check_linear(t, *kernels, pool, rng);
        });
  }
  std::printf("  %zu linear cases\n", cases);
}

TEST("layers/linear: several row tiles and column groups, few rows, column tails") {
  pa::ThreadPool pool(2);
  std::mt19937 rng(12);
  for (const pa::KernelSet* kernels : pa::available_kernel_sets()) {
    for (const LinearCase& t : pa_test::linear_tiling_cases()) check_linear(t, *kernels, pool, rng);
  }
}

TEST("layers/linear: the same bits for 1, 2 and 3 threads") {
  std::mt19937 rng(13);
  std::normal_distribution<float> normal;
  const std::size_t shapes[][3] = {{200, 96, 300}, {16, 512, 1000}, {5, 80, 700}, {1, 33, 129}};
  for (const pa::KernelSet* kernels : pa::available_kernel_sets()) {
    for (const auto& s : shapes) {
      const std::size_t rows = s[0], in = s[1], out = s[2];
      std::vector<float> x(rows * in), w(out * in), b(out), packed(pa::linear_packed_size(in, out));
      for (auto& v : x) v = normal(rng);
      for (auto& v : w) v = normal(rng);
      for (auto& v : b) v = normal(rng);
      pa::linear_pack(in, out, w.data(), packed.data());
      std::vector<float> first;
      for (std::size_t threads : {1, 2, 3}) {
        pa::ThreadPool pool(threads);
        std::vector<float> y(rows * out);
        pa::linear(rows, in, out, x.data(), in, packed.data(), b.data(), nullptr, Activation::kGelu,
                   y.data(), *kernels, pool);
        if (first.empty()) {
          first = y;
        } else {
          CHECK(std::memcmp(first.data(), y.data(), y.size() * sizeof(float)) == 0);
        }
      }
    }
  }
}

TEST(
    "layers/linear: GELU and ReLU to 1e-6 relative from -16 to 16, through bias, vector bodies and tails") {
  pa::ThreadPool pool(2);
  // in = 1 with W = 1: y[r, o] = act(float(x[r] + bias[o])), the activation alone. 37
  // columns: full vectors of every kernel set and a tail.
  const std::size_t out = 37;
  std::vector<float> x;
  for (int i = -40000; i <= 40000; ++i) x.push_back(static_cast<float>(i) * 4e-4f);
  for (float v : {1e-30f, -1e-30f, 1e-40f, 0.0f, -0.0f, 100.0f, -100.0f, 1e30f, -1e30f})
    x.push_back(v);
  std::vector<float> ones(out, 1.0f), bias(out), packed(pa::linear_packed_size(1, out));
  for (std::size_t o = 0; o < out; ++o) bias[o] = static_cast<float>(o) * 1e-5f;
  pa::linear_pack(1, out, ones.data(), packed.data());
  for (const pa::KernelSet* kernels : pa::available_kernel_sets()) {
    std::vector<float> y(x.size() * out);
    pa::linear(x.size(), 1, out, x.data(), 1, packed.data(), bias.data(), nullptr,
               Activation::kGelu, y.data(), *kernels, pool);
    double worst = 0;
    bool ok = true;
    for (std::size_t i = 0; i < y.size() && ok; ++i) {
      const float v = x[i / out] + bias[i % out];
      const double want = gelu_ref(v);
      const double err = std::fabs(y[i] - want);
      ok = err <= 1e-6 * std::fabs(want) + 1e-43;
      if (!ok)
        std::fprintf(stderr, "  [%s] gelu(%.9g) = %.9g, expected %.9g\n", kernels->name, v, y[i],
                     want);
      if (std::fabs(want) > 1e-37) worst = std::max(worst, err / std::fabs(want));
    }
    CHECK(ok);
    std::printf("  [%s] gelu worst relative error %.3g\n", kernels->name, worst);
    const float nan = std::numeric_limits<float>::quiet_NaN();
    std::vector<float> special = {nan, INFINITY}, special_y(2 * out);
    pa::linear(2, 1, out, special.data(), 1, packed.data(), nullptr, nullptr, Activation::kGelu,
               special_y.data(), *kernels, pool);
    for (std::size_t o = 0; o < out; ++o) {
      CHECK(std::isnan(special_y[o]));
      CHECK(special_y[out + o] == INFINITY);
    }
    pa::linear(x.size(), 1, out, x.data(), 1, packed.data(), bias.data(), nullptr,
               Activation::kRelu, y.data(), *kernels, pool);
    for (std::size_t i = 0; i < y.size(); ++i) {
      const float v = x[i / out] + bias[i % out];
      if (!(y[i] == (v < 0 ? 0.0f : v))) {
        CHECK(false);
        break;
      }
    }
  }
}

namespace {

// One layer_norm case against the double reference; y aliases x when `in_place`.
void check_layer_norm(std::size_t rows, std::size_t dim, const std::vector<float>& input,
                      bool affine, bool in_place, std::size_t offset, float eps,
                      pa::ThreadPool& pool, std::mt19937& rng) {
  std::uniform_real_distribution<float> uni(-2.0f, 2.0f);
  Guarded x(rows * dim, offset), y(rows * dim, offset), gamma(dim, offset), beta(dim, offset);
  for (std::size_t i = 0; i < rows * dim; ++i) x[i] = input[i];
  for (std::size_t i = 0; i < dim; ++i) {
    gamma[i] = uni(rng);
    beta[i] = uni(rng);
  }
  std::vector<double> want(rows * dim);
  for (std::size_t r = 0; r < rows; ++r) {
    double mean = 0, var = 0;
    for (std::size_t i = 0; i < dim; ++i) mean += x[r * dim + i];
    mean /= dim;
    for (std::size_t i = 0; i < dim; ++i) var += (x[r * dim + i] - mean) * (x[r * dim + i] - mean);
    var /= dim;
    for (std::size_t i = 0; i < dim; ++i) {
      const double n = (x[r * dim + i] - mean) / std::sqrt(var + eps);
      want[r * dim + i] = affine ? n * gamma[i] + beta[i] : n;
    }
  }
  float* out = in_place ? x.data() : y.data();
  pa::layer_norm(rows, dim, x.data(), affine ? gamma.data() : nullptr,
                 affine ? beta.data() : nullptr, eps, out, pool);
  bool ok = x.guards_intact() && y.guards_intact() && gamma.guards_intact() && beta.guards_intact();
  for (std::size_t i = 0; i < rows * dim && ok; ++i) {
    ok = std::fabs(out[i] - want[i]) <= 1e-6 * (1.0 + std::fabs(want[i]));
    if (!ok) std::fprintf(stderr, "  element %zu: %.9g, expected %.9g\n", i, out[i], want[i]);
  }
  if (!ok) {
    std::fprintf(stderr,
                 "  layer_norm rows=%zu dim=%zu affine=%d in_place=%d offset=%zu eps=%g failed\n",
                 rows, dim, affine, in_place, offset, eps);
  }
  CHECK(ok);
}

}  // namespace

TEST("layers/layer_norm: sizes, affine or not, in place, misaligned, against double") {
  pa::ThreadPool pool(2);
  std::mt19937 rng(21);
  std::normal_distribution<float> normal;
  std::size_t index = 0;
  for (std::size_t dim : {1, 7, 8, 9, 15, 16, 17, 33, 100, 512}) {
    for (std::size_t rows : {1, 3, 70}) {
      std::vector<float> input(rows * dim);
      for (auto& v : input) v = 3.0f * normal(rng) + 0.5f;
      check_layer_norm(rows, dim, input, index % 2 == 0, index % 3 == 0, (index / 2) % 2, 1e-5f,
                       pool, rng);
      ++index;
    }
  }
}

TEST("layers/layer_norm: constant rows give beta; a mean of 1e4 with small noise stays accurate") {
  pa::ThreadPool pool(2);
  std::mt19937 rng(22);
  std::normal_distribution<float> normal;
  for (std::size_t dim : {1, 9, 64, 768}) {
    // Constant rows: var = 0, so y = beta (0 without affine), exactly.
    std::vector<float> x(3 * dim), y(3 * dim);
    for (std::size_t i = 0; i < dim; ++i) {
      x[i] = 0.0f;
      x[dim + i] = 12345.678f;
      x[2 * dim + i] = -3.25e-3f;
    }
    std::vector<float> beta(dim);
    for (auto& v : beta) v = normal(rng);
    const std::vector<float> gamma(dim, 2.0f);
    pa::layer_norm(3, dim, x.data(), gamma.data(), beta.data(), 1e-5f, y.data(), pool);
    for (std::size_t i = 0; i < 3 * dim; ++i) CHECK(y[i] == beta[i % dim]);
    pa::layer_norm(3, dim, x.data(), nullptr, nullptr, 1e-5f, y.data(), pool);
    for (std::size_t i = 0; i < 3 * dim; ++i) CHECK(y[i] == 0.0f);
    // Large common offset with noise at 1e-2 (and a larger eps than the variance).
    for (float offset : {1e4f, -3e4f}) {
      std::vector<float> input(4 * dim);
      for (auto& v : input) v = offset + 1e-2f * normal(rng);
      check_layer_norm(4, dim, input, true, false, 1, 1e-5f, pool, rng);
      check_layer_norm(4, dim, input, false, true, 0, 1e-3f, pool, rng);
    }
  }
}

TEST("layers/split_heads and merge_heads: exact, strided source, guards, round trip") {
  std::mt19937 rng(31);
  std::uniform_real_distribution<float> uni(-1.0f, 1.0f);
  const std::size_t shapes[][4] = {
      {1, 1, 1, 1}, {2, 7, 3, 5}, {3, 33, 4, 16}, {1, 100, 8, 9}, {2, 5, 1, 17}};
  for (std::size_t threads : {1, 2, 3}) {
    pa::ThreadPool pool(threads);
    for (const auto& s : shapes) {
      const std::size_t B = s[0], L = s[1], H = s[2], dh = s[3], width = H * dh;
      for (std::size_t extra : {0, 3}) {
        // A slice of a wider projection: columns [extra, extra + width) of rows of width + 2 extra.
        const std::size_t stride = width + 2 * extra;
        Guarded src(B * L * stride, extra % 2), heads(B * H * L * dh, 1), merged(B * L * width, 0);
        for (std::size_t i = 0; i < B * L * stride; ++i) src[i] = uni(rng);
        pa::split_heads(B, L, H, dh, src.data() + extra, stride, heads.data(), pool);
        bool ok = true;
        for (std::size_t b = 0; b < B; ++b) {
          for (std::size_t h = 0; h < H; ++h) {
            for (std::size_t l = 0; l < L; ++l) {
              for (std::size_t e = 0; e < dh; ++e) {
                ok = ok && heads[((b * H + h) * L + l) * dh + e] ==
                               src[(b * L + l) * stride + extra + h * dh + e];
              }
            }
          }
        }
        pa::merge_heads(B, L, H, dh, heads.data(), merged.data(), H * dh, pool);
        for (std::size_t row = 0; row < B * L; ++row) {
          for (std::size_t c = 0; c < width; ++c)
            ok = ok && merged[row * width + c] == src[row * stride + extra + c];
        }
        ok = ok && src.guards_intact() && heads.guards_intact() && merged.guards_intact();
        if (!ok)
          std::fprintf(stderr, "  B=%zu L=%zu H=%zu dh=%zu extra=%zu threads=%zu\n", B, L, H, dh,
                       extra, threads);
        CHECK(ok);
      }
    }
  }
}
