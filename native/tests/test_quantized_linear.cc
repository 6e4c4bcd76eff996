// Weight-only quantized linear layers (int8 with per-channel scales, bf16): the packing
// (round trip, rounding ties, zero rows, extremes, NaN and inf) and linear_int8 /
// linear_bf16 on every kernel set this CPU can run, against double references over the
// dequantized weights: sizes around the vector widths, misaligned pointers, strided x,
// residual aliasing y, each activation, the same bits for any pool size and for a row
// alone or in a batch of any size.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "core/layer_ops.h"
#include "core/quantized_linear.h"
#include "kernels/dispatch.h"
#include "linear_reference.h"
#include "test_harness.h"
#include "test_util.h"

namespace {

using pa::Activation;
using pa_test::Guarded;

float from_bits(std::uint32_t bits) {
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

enum class Format { kInt8, kBf16 };

// W [out, in] packed in one format, plus its dequantized floats (what the reference uses).
// The packed buffers have their exact size, so a sanitizer build catches any read beyond.
struct Packed {
  Format format;
  std::vector<std::int8_t> q;
  std::vector<float> scales;
  std::vector<std::uint16_t> h;
  std::vector<float> dequantized;

  Packed(Format f, std::size_t in, std::size_t out, const float* w)
      : format(f), dequantized(in * out) {
    const std::size_t n = pa::linear_quant_packed_size(in, out);
    if (f == Format::kInt8) {
      q.resize(n);
      scales.resize(out);
      pa::linear_pack_int8(in, out, w, q.data(), scales.data());
      pa::linear_dequantize_int8(in, out, q.data(), scales.data(), dequantized.data());
    } else {
      h.resize(n);
      pa::linear_pack_bf16(in, out, w, h.data());
      pa::linear_dequantize_bf16(in, out, h.data(), dequantized.data());
    }
  }

  void run(std::size_t rows, std::size_t in, std::size_t out, const float* x, std::size_t x_stride,
           const float* bias, const float* residual, Activation act, float* y,
           const pa::KernelSet& kernels, pa::ThreadPool& pool) const {
    if (format == Format::kInt8) {
      pa::linear_int8(rows, in, out, x, x_stride, q.data(), scales.data(), bias, residual, act, y,
                      kernels, pool);
    } else {
      pa::linear_bf16(rows, in, out, x, x_stride, h.data(), bias, residual, act, y, kernels, pool);
    }
  }
};

using pa_test::LinearCase;
using pa_test::Residual;

// One case on one kernel set against the double reference over the dequantized weights
// (so the only error is the float accumulation), with the tolerance of the fp32 linear
// test: 1e-5 relative to the sum of the magnitudes.
bool check_case(const LinearCase& t, Format format, const pa::KernelSet& kernels,
                pa::ThreadPool& pool, std::mt19937& rng) {
  std::uniform_real_distribution<float> uni(-1.0f, 1.0f);
  const std::size_t x_stride = t.in + t.x_extra;
  Guarded x(std::max<std::size_t>(t.rows * x_stride, 1), t.offset);
  Guarded bias(t.out, t.offset), res(t.rows * t.out, t.offset), y(t.rows * t.out, t.offset);
  std::vector<float> w(t.out * t.in);
  for (std::size_t i = 0; i < t.rows * x_stride; ++i) x[i] = uni(rng);
  for (auto& v : w) v = uni(rng);
  for (std::size_t i = 0; i < t.out; ++i) bias[i] = uni(rng);
  for (std::size_t i = 0; i < t.rows * t.out; ++i) res[i] = uni(rng);
  const Packed packed(format, t.in, t.out, w.data());

  const pa_test::LinearReference ref(t.rows, t.in, t.out, x.data(), x_stride,
                                     packed.dequantized.data(), t.bias ? bias.data() : nullptr,
                                     t.residual != Residual::kNone ? res.data() : nullptr, t.act);
  const float* residual = pa_test::linear_residual_arg(t, res.data(), y.data());
  packed.run(t.rows, t.in, t.out, x.data(), x_stride, t.bias ? bias.data() : nullptr, residual,
             t.act, y.data(), kernels, pool);

  const double worst = ref.worst_error(y.data());
  const bool guards =
      x.guards_intact() && bias.guards_intact() && res.guards_intact() && y.guards_intact();
  const bool ok = worst <= 1e-5 && guards;
  if (!ok) {
    std::fprintf(stderr,
                 "  [%s] linear_%s rows=%zu in=%zu out=%zu act=%d bias=%d residual=%d offset=%zu "
                 "x_stride=%zu: worst err %.3g%s\n",
                 kernels.name, format == Format::kInt8 ? "int8" : "bf16", t.rows, t.in, t.out,
                 static_cast<int>(t.act), t.bias, static_cast<int>(t.residual), t.offset, x_stride,
                 worst, guards ? "" : ", guard cells overwritten");
  }
  CHECK(ok);
  return ok;
}

}  // namespace

TEST("layers/quantized pack int8: scales, rounding ties, zero rows, extremes, round trip") {
  // Row 0: amax 127 gives scale 1 exactly, so q = W rounded half to even.
  // Row 1: zeros; row 2: too small for a nonzero scale; row 3: near the float maximum;
  // row 4: tiny values beside a large one round to 0.
  const std::size_t in = 9, out = 5;
  const float tiny = std::numeric_limits<float>::denorm_min();
  const float big = 3.0e38f;
  const float w[out * in] = {
      0.5f,   1.5f, 2.5f,    -0.5f, -2.5f, 126.5f,  -126.5f, 127.0f, -127.0f,   0,    0, 0,
      0,      0,    0,       0,     0,     0,       tiny,    -tiny,  0,         tiny, 0, 0,
      0,      0,    0,       big,   -big,  big / 2, 0,       1.0f,   -big,      0,    0, 0,
      1e-30f, 2.0f, -1e-30f, -1.0f, 0.0f,  0.5f,    0,       0,      0.0078125f};
  const std::int8_t want_row0[in] = {0, 2, 2, 0, -2, 126, -126, 127, -127};
  std::vector<std::int8_t> packed(pa::linear_quant_packed_size(in, out)), q(in * out);
  std::vector<float> scales(out), deq(in * out);
  CHECK(packed.size() == in * 16);
  pa::linear_pack_int8(in, out, w, packed.data(), scales.data());
  pa::linear_unpack_int8(in, out, packed.data(), q.data());
  pa::linear_dequantize_int8(in, out, packed.data(), scales.data(), deq.data());
  CHECK(scales[0] == 1.0f);
  for (std::size_t i = 0; i < in; ++i) CHECK(q[i] == want_row0[i]);
  CHECK(scales[1] == 0.0f && scales[2] == 0.0f);
  for (std::size_t i = in; i < 3 * in; ++i) CHECK(q[i] == 0 && deq[i] == 0.0f);
  CHECK(scales[3] == big / 127.0f);
  CHECK(q[3 * in] == 127 && q[3 * in + 1] == -127 && q[3 * in + 2] == 64 && q[3 * in + 4] == 0);
  CHECK(std::isfinite(deq[3 * in]) && std::fabs(deq[3 * in] - big) <= big * 1e-6f);
  CHECK(scales[4] == 2.0f / 127.0f);
  CHECK(q[4 * in] == 0 && q[4 * in + 1] == 127 && q[4 * in + 3] == -64 && q[4 * in + 8] == 0);
  for (float v : deq) CHECK(std::isfinite(v));
  // The padding columns of the block (out = 5 -> 16 columns) are zeros.
  for (std::size_t i = 0; i < in; ++i) {
    for (std::size_t j = out; j < 16; ++j) CHECK(packed[i * 16 + j] == 0);
  }

  // Random rows, several blocks and a padded last one: |W - W'| <= scale / 2, q recomputes.
  std::mt19937 rng(41);
  std::normal_distribution<float> normal;
  for (const auto& s : {std::pair<std::size_t, std::size_t>{33, 130}, {1, 64}, {100, 17}}) {
    const std::size_t n_in = s.first, n_out = s.second;
    std::vector<float> wr(n_in * n_out), dr(n_in * n_out), sc(n_out);
    for (auto& v : wr) v = normal(rng) * 0.1f;
    std::vector<std::int8_t> pr(pa::linear_quant_packed_size(n_in, n_out)), qr(n_in * n_out);
    pa::linear_pack_int8(n_in, n_out, wr.data(), pr.data(), sc.data());
    pa::linear_unpack_int8(n_in, n_out, pr.data(), qr.data());
    pa::linear_dequantize_int8(n_in, n_out, pr.data(), sc.data(), dr.data());
    bool ok = true;
    for (std::size_t o = 0; o < n_out; ++o) {
      float amax = 0;
      for (std::size_t i = 0; i < n_in; ++i) amax = std::max(amax, std::fabs(wr[o * n_in + i]));
      ok = ok && sc[o] == amax / 127.0f;
      for (std::size_t i = 0; i < n_in; ++i) {
        const std::size_t k = o * n_in + i;
        ok = ok && qr[k] == static_cast<std::int8_t>(std::nearbyint(wr[k] / sc[o]));
        ok = ok && std::fabs(dr[k] - wr[k]) <= 0.5001f * sc[o];
        ok = ok && dr[k] == static_cast<float>(qr[k]) * sc[o];
      }
    }
    CHECK(ok);
    // The same values unpacked, and packed again from them, as linearQuantize and
    // linearPackQuantized do.
    std::vector<std::int8_t> qu(n_in * n_out), repacked(pr.size(), 1);
    std::vector<float> su(n_out);
    pa::linear_quantize_int8(n_in, n_out, wr.data(), qu.data(), su.data());
    pa::linear_pack_int8_values(n_in, n_out, qu.data(), repacked.data());
    CHECK(qu == qr && su == sc && repacked == pr);
  }
}

TEST("layers/quantized pack bf16: nearest even, inf, NaN, overflow, exact round trip") {
  const std::uint32_t cases[][2] = {
      {0x3f800000u, 0x3f80u},  // 1
      {0x3f808000u, 0x3f80u},  // tie, to even (down)
      {0x3f818000u, 0x3f82u},  // tie, to even (up)
      {0x3f808001u, 0x3f81u},  // above the tie
      {0x3f807fffu, 0x3f80u},  // below the tie
      {0xbf818000u, 0xbf82u},  // negative tie
      {0x7f800000u, 0x7f80u},  // inf
      {0xff800000u, 0xff80u},  // -inf
      {0x7f7fffffu, 0x7f80u},  // the float maximum rounds to inf
      {0x7f7f7fffu, 0x7f7fu},  // the bf16 maximum stays
      {0x00000001u, 0x0000u},  // smallest denormal
      {0x80000000u, 0x8000u},  // -0
      {0x00018000u, 0x0002u},  // denormal tie, to even
  };
  for (const auto& c : cases) {
    const std::uint16_t got = pa::float_to_bf16(from_bits(c[0]));
    if (got != c[1])
      std::fprintf(stderr, "  bf16(0x%08x) = 0x%04x, want 0x%04x\n", c[0], got, c[1]);
    CHECK(got == c[1]);
  }
  for (std::uint32_t nan : {0x7fc00000u, 0x7f800001u, 0xff800001u, 0x7fffffffu}) {
    const std::uint16_t got = pa::float_to_bf16(from_bits(nan));
    CHECK(std::isnan(pa::bf16_to_float(got)));
    CHECK((got >> 15) == (nan >> 31));  // the sign stays
  }
  bool exact = true;  // every bf16 value converts to float and back unchanged
  for (std::uint32_t h = 0; h < 0x10000u; ++h) {
    const float f = pa::bf16_to_float(static_cast<std::uint16_t>(h));
    std::uint32_t bits;
    std::memcpy(&bits, &f, sizeof bits);
    exact = exact && bits == h << 16;
    if (!std::isnan(f)) exact = exact && pa::float_to_bf16(f) == h;
  }
  CHECK(exact);

  std::mt19937 rng(42);
  std::normal_distribution<float> normal;
  const std::size_t in = 37, out = 150;
  std::vector<float> w(in * out), back(in * out);
  for (auto& v : w) v = normal(rng);
  w[5] = INFINITY;
  w[6] = -INFINITY;
  w[7] = std::numeric_limits<float>::quiet_NaN();
  std::vector<std::uint16_t> packed(pa::linear_quant_packed_size(in, out)), h(in * out);
  CHECK(packed.size() == in * 160);
  pa::linear_pack_bf16(in, out, w.data(), packed.data());
  pa::linear_unpack_bf16(in, out, packed.data(), h.data());
  pa::linear_dequantize_bf16(in, out, packed.data(), back.data());
  bool ok = true;
  for (std::size_t k = 0; k < in * out; ++k) {
    ok = ok && h[k] == pa::float_to_bf16(w[k]);
    ok = ok &&
         (std::isnan(w[k])
              ? std::isnan(back[k])
              : (std::isinf(w[k]) ? back[k] == w[k]
                                  : std::fabs(back[k] - w[k]) <= std::ldexp(std::fabs(w[k]), -8)));
  }
  CHECK(ok);
  std::vector<std::uint16_t> repacked(packed.size(), 1);
  pa::linear_pack_bf16_values(in, out, h.data(), repacked.data());
  CHECK(repacked == packed);
  // The last block (22 columns) is padded to 32 with zeros.
  for (std::size_t i = 0; i < in; ++i) {
    for (std::size_t j = 22; j < 32; ++j) CHECK(packed[128 * in + i * 32 + j] == 0);
  }
}

TEST("layers/quantized linear: sizes around the vector widths, every option, every kernel set") {
  pa::ThreadPool pool(2);
  const std::size_t rows_list[] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 17, 70};
  const std::size_t in_list[] = {1, 7, 8, 9, 15, 16, 17, 33, 100};
  const std::size_t out_list[] = {1, 7, 8, 9, 15, 16, 17, 33, 63, 64, 65, 100, 130};
  std::mt19937 rng(43);
  std::size_t cases = 0;
  for (const pa::KernelSet* kernels : pa::available_kernel_sets()) {
    for (Format format : {Format::kInt8, Format::kBf16}) {
      bool ok = true;
      std::size_t index = 0;
      for (std::size_t rows : rows_list) {
        for (std::size_t in : in_list) {
          for (std::size_t out : out_list) {
            const LinearCase t = pa_test::cycled_linear_case(rows, in, out, index);
            if (ok) ok = check_case(t, format, *kernels, pool, rng);
            ++index;
          }
        }
      }
      cases += index;
    }
  }
  std::printf("  %zu quantized linear cases\n", cases);
}

TEST("layers/quantized linear: row tiles, column groups, decoding shapes, in = 0") {
  pa::ThreadPool pool(2);
  std::mt19937 rng(44);
  std::vector<LinearCase> cases = pa_test::linear_tiling_cases();
  // Decoding steps of 1 and 8 sessions on the model's shapes, and a long in.
  cases.push_back({1, 512, 1536, Activation::kNone, true, Residual::kNone, 1, 0});
  cases.push_back({8, 512, 256, Activation::kGelu, true, Residual::kAliased, 0, 0});
  cases.push_back({3, 2048, 80, Activation::kNone, false, Residual::kSeparate, 1, 1});
  for (const pa::KernelSet* kernels : pa::available_kernel_sets()) {
    for (Format format : {Format::kInt8, Format::kBf16}) {
      for (const LinearCase& t : cases) check_case(t, format, *kernels, pool, rng);
    }
  }
}

TEST("layers/quantized linear: the same bits for 1, 2 and 3 threads") {
  std::mt19937 rng(45);
  std::normal_distribution<float> normal;
  const std::size_t shapes[][3] = {{200, 96, 300}, {16, 512, 1000}, {5, 80, 700}, {1, 33, 129}};
  for (const pa::KernelSet* kernels : pa::available_kernel_sets()) {
    for (Format format : {Format::kInt8, Format::kBf16}) {
      for (const auto& s : shapes) {
        const std::size_t rows = s[0], in = s[1], out = s[2];
        std::vector<float> x(rows * in), w(out * in), b(out);
        for (auto& v : x) v = normal(rng);
        for (auto& v : w) v = normal(rng);
        for (auto& v : b) v = normal(rng);
        const Packed packed(format, in, out, w.data());
        std::vector<float> first;
        for (std::size_t threads : {1, 2, 3}) {
          pa::ThreadPool pool(threads);
          std::vector<float> y(rows * out);
          packed.run(rows, in, out, x.data(), in, b.data(), nullptr, Activation::kGelu, y.data(),
                     *kernels, pool);
          if (first.empty()) {
            first = y;
          } else {
            CHECK(pa_test::same_bits(first, y));
          }
        }
      }
    }
  }
}

TEST("layers/quantized linear: each row of an M-row call has the bits it gets alone") {
  // Batched decoding steps must equal single ones: no row tile, tail tile or pool split
  // may change how a row is summed. The 64 single rows are computed once per shape.
  pa::ThreadPool pool1(1), pool3(3);
  std::mt19937 rng(47);
  std::normal_distribution<float> normal;
  const std::size_t out_list[] = {1, 15, 16, 17, 63, 64, 65, 200};
  const std::size_t in_list[] = {1, 7, 64, 300};
  std::vector<std::size_t> rows_list;
  for (std::size_t m = 1; m <= 17; ++m) rows_list.push_back(m);
  rows_list.push_back(64);
  const std::size_t max_rows = 64;
  for (const pa::KernelSet* kernels : pa::available_kernel_sets()) {
    for (Format format : {Format::kInt8, Format::kBf16}) {
      bool ok = true;
      for (std::size_t in : in_list) {
        for (std::size_t out : out_list) {
          std::vector<float> x(max_rows * in), w(out * in), b(out), alone(max_rows * out);
          for (auto& v : x) v = normal(rng);
          for (auto& v : w) v = normal(rng);
          for (auto& v : b) v = normal(rng);
          const Packed packed(format, in, out, w.data());
          for (std::size_t r = 0; r < max_rows; ++r) {
            packed.run(1, in, out, x.data() + r * in, in, b.data(), nullptr, Activation::kGelu,
                       alone.data() + r * out, *kernels, pool1);
          }
          for (std::size_t rows : rows_list) {
            for (pa::ThreadPool* pool : {&pool1, &pool3}) {
              std::vector<float> y(rows * out);
              packed.run(rows, in, out, x.data(), in, b.data(), nullptr, Activation::kGelu,
                         y.data(), *kernels, *pool);
              if (!pa_test::same_bits(alone.data(), y.data(), rows * out)) {
                std::fprintf(stderr, "  [%s] linear_%s rows=%zu in=%zu out=%zu threads=%zu\n",
                             kernels->name, format == Format::kInt8 ? "int8" : "bf16", rows, in,
                             out, pool == &pool1 ? std::size_t{1} : std::size_t{3});
                ok = false;
              }
            }
          }
        }
      }
      CHECK(ok);
    }
  }
}

TEST("layers/quantized linear: bf16 weights exact in bf16 match fp32 linear()") {
  pa::ThreadPool pool(2);
  std::mt19937 rng(46);
  std::normal_distribution<float> normal;
  const std::size_t shapes[][3] = {{1, 512, 512}, {8, 100, 130}, {70, 33, 65}};
  for (const pa::KernelSet* kernels : pa::available_kernel_sets()) {
    for (const auto& s : shapes) {
      const std::size_t rows = s[0], in = s[1], out = s[2];
      std::vector<float> x(rows * in), w(out * in), b(out);
      for (auto& v : x) v = normal(rng);
      for (auto& v : w) v = pa::bf16_to_float(pa::float_to_bf16(normal(rng)));
      for (auto& v : b) v = normal(rng);
      const Packed bf16(Format::kBf16, in, out, w.data());
      CHECK(bf16.dequantized == w);
      std::vector<float> packed(pa::linear_packed_size(in, out));
      pa::linear_pack(in, out, w.data(), packed.data());
      std::vector<float> y32(rows * out), y16(rows * out);
      pa::linear(rows, in, out, x.data(), in, packed.data(), b.data(), nullptr, Activation::kRelu,
                 y32.data(), *kernels, pool);
      bf16.run(rows, in, out, x.data(), in, b.data(), nullptr, Activation::kRelu, y16.data(),
               *kernels, pool);
      double worst = 0;
      for (std::size_t r = 0; r < rows; ++r) {
        for (std::size_t o = 0; o < out; ++o) {
          double mag = std::fabs(b[o]);
          for (std::size_t i = 0; i < in; ++i)
            mag += std::fabs(double{x[r * in + i]} * w[o * in + i]);
          const double err = std::fabs(double{y16[r * out + o]} - y32[r * out + o]) / (mag + 1e-30);
          worst = std::isnan(err) ? INFINITY : std::max(worst, err);
        }
      }
      if (!(worst <= 1e-5))
        std::fprintf(stderr, "  [%s] bf16 vs fp32 rows=%zu in=%zu out=%zu: %.3g\n", kernels->name,
                     rows, in, out, worst);
      CHECK(worst <= 1e-5);
    }
  }
}
