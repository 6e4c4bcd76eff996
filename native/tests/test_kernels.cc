// Tests of every kernel set this CPU can run (pa::available_kernel_sets()), each
// against references computed here in double precision: gemm over sizes around the
// vector widths, strides, misalignment and guard cells; exp over the whole float range
// in ulps; the NaN-ignoring maxima.
#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "../kernels/dispatch.h"
#include "test_harness.h"

namespace {

using pa::KernelSet;

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kGuard = -7777.25f;  // fills memory a kernel must not write

const std::vector<const KernelSet*>& sets_under_test() {
  const auto& sets = pa::available_kernel_sets();
  static bool printed = false;
  if (!printed) {
    printed = true;
    std::string names;
    for (const KernelSet* set : sets) names += std::string(" ") + set->name;
    std::string compiled;
    for (const std::string& name : pa::compiled_kernel_set_names()) compiled += " " + name;
    std::printf("  kernel sets tested:%s (compiled:%s)\n", names.c_str(), compiled.c_str());
  }
  return sets;
}

// Floats whose first element sits `offset` floats past a 64-byte boundary, with
// `guard` floats of kGuard before and after the n usable ones.
class Buffer {
 public:
  Buffer(std::size_t n, std::size_t offset, std::size_t guard = 32)
      : n_(n), guard_(guard), storage_(n + offset + 2 * guard + 16, kGuard) {
    const auto addr = reinterpret_cast<std::uintptr_t>(storage_.data() + guard);
    const std::size_t skip = ((64 - addr % 64) % 64) / sizeof(float);
    data_ = storage_.data() + guard + skip + offset;
  }
  float* data() { return data_; }
  const float* data() const { return data_; }
  float& operator[](std::size_t i) { return data_[i]; }
  std::size_t size() const { return n_; }
  // True when the guard zones on both sides still hold kGuard.
  bool guards_intact() const {
    for (std::size_t i = 1; i <= guard_; ++i) {
      if (!same_bits(data_[-static_cast<std::ptrdiff_t>(i)], kGuard)) return false;
      if (!same_bits(data_[n_ + i - 1], kGuard)) return false;
    }
    return true;
  }
  static bool same_bits(float a, float b) { return std::memcmp(&a, &b, sizeof a) == 0; }

 private:
  std::size_t n_, guard_;
  std::vector<float> storage_;
  float* data_;
};

bool same_value(float a, float b) {  // equal, or both NaN
  return a == b || (std::isnan(a) && std::isnan(b));
}

// ---------------------------------------------------------------------------------
// gemm
// ---------------------------------------------------------------------------------

enum class ALayout { kRowMajor, kTransposed, kStrided };
const char* layout_name(ALayout l) {
  return l == ALayout::kRowMajor     ? "row-major"
         : l == ALayout::kTransposed ? "transposed"
                                     : "strided";
}

struct GemmStats {
  std::size_t cases = 0;
  double worst = 0;  // max |c - ref| / bound over all entries
};

// Runs one gemm case on every set; returns false (after reporting) on the first
// failing set so that a broken kernel does not flood the log.
bool run_gemm_case(std::size_t M, std::size_t N, std::size_t K, ALayout layout, std::size_t offset,
                   std::size_t ldb_pad, std::size_t ldc_pad, bool accumulate, std::mt19937& rng,
                   std::vector<GemmStats>& stats, pa::GemmFn KernelSet::* gemm = &KernelSet::gemm) {
  const auto& sets = sets_under_test();
  std::uniform_real_distribution<float> uni(-1.0f, 1.0f);

  std::size_t ars = 0, acs = 0, a_size = 0;
  switch (layout) {
    case ALayout::kRowMajor:  // A stored M x (K + 3)
      ars = K + 3;
      acs = 1;
      a_size = M * ars;
      break;
    case ALayout::kTransposed:  // A stored as its transpose, K x (M + 2)
      ars = 1;
      acs = M + 2;
      a_size = K * acs;
      break;
    case ALayout::kStrided:  // neither stride 1
      acs = 2;
      ars = 2 * K + 5;
      a_size = M * ars;
      break;
  }
  const std::size_t ldb = N + ldb_pad, ldc = N + ldc_pad;
  Buffer a(std::max<std::size_t>(a_size, 1), offset);
  Buffer b(std::max<std::size_t>(K * ldb, 1), offset);
  for (std::size_t i = 0; i < a.size(); ++i) a[i] = uni(rng);
  for (std::size_t i = 0; i < b.size(); ++i) b[i] = uni(rng);
  auto A = [&](std::size_t i, std::size_t k) { return a[i * ars + k * acs]; };

  // Initial C: random when accumulating; NaN otherwise (a kernel that reads C when
  // it must not shows up as NaN). The ldc padding keeps kGuard.
  const std::size_t c_size = M == 0 ? 1 : (M - 1) * ldc + N;
  std::vector<float> c0(c_size, kGuard);
  for (std::size_t i = 0; i < M; ++i) {
    for (std::size_t n = 0; n < N; ++n) c0[i * ldc + n] = accumulate ? uni(rng) : kNaN;
  }

  // Reference in double and a bound for each entry: 1e-5 * (sum_k |a||b| + |c0|).
  std::vector<double> ref(M * N), bound(M * N);
  for (std::size_t i = 0; i < M; ++i) {
    for (std::size_t n = 0; n < N; ++n) {
      double sum = accumulate ? c0[i * ldc + n] : 0.0;
      double mag = accumulate ? std::fabs(c0[i * ldc + n]) : 0.0;
      for (std::size_t k = 0; k < K; ++k) {
        const double p = static_cast<double>(A(i, k)) * b[k * ldb + n];
        sum += p;
        mag += std::fabs(p);
      }
      ref[i * N + n] = sum;
      bound[i * N + n] = 1e-5 * mag;
    }
  }

  for (std::size_t s = 0; s < sets.size(); ++s) {
    Buffer c(c_size, offset);
    std::memcpy(c.data(), c0.data(), c_size * sizeof(float));
    (sets[s]->*gemm)(M, N, K, a.data(), ars, acs, b.data(), ldb, c.data(), ldc, accumulate);
    ++stats[s].cases;
    bool ok = c.guards_intact();
    for (std::size_t i = 0; i < M && ok; ++i) {
      for (std::size_t n = N; n < ldc && (i + 1) < M; ++n) {
        if (!Buffer::same_bits(c[i * ldc + n], kGuard)) ok = false;  // ldc padding
      }
      for (std::size_t n = 0; n < N; ++n) {
        const double err = std::fabs(c[i * ldc + n] - ref[i * N + n]);
        const double tol = bound[i * N + n];
        if (!(err <= tol)) {  // also catches NaN
          ok = false;
          break;
        }
        if (tol > 0) stats[s].worst = std::max(stats[s].worst, err / tol);
      }
    }
    if (!ok) {
      std::fprintf(stderr,
                   "  [%s] %s M=%zu N=%zu K=%zu A %s offset=%zu ldb=%zu ldc=%zu "
                   "accumulate=%d: wrong result or guard overwritten\n",
                   sets[s]->name, gemm == &KernelSet::gemm ? "gemm" : "gemm_row_stable", M, N, K,
                   layout_name(layout), offset, ldb, ldc, accumulate ? 1 : 0);
      CHECK(ok);
      return false;
    }
  }
  return true;
}

TEST("kernels/gemm") {
  const auto& sets = sets_under_test();
  std::vector<GemmStats> stats(sets.size());
  std::mt19937 rng(1234);
  // 8, 14 and 32 leave 2 rows past the AVX2 6-row tiles (3 past AVX-512's 5-row ones
  // at 8 and 13): those go to two 4-row tiles.
  const std::size_t Ms[] = {1, 2, 3, 4, 5, 7, 8, 9, 13, 14, 32};
  const std::size_t Ns[] = {1, 7, 8, 9, 15, 16, 17, 31, 32, 33, 64, 65, 100};
  const std::size_t Ks[] = {0, 1, 3, 8, 17, 64, 65};
  const ALayout layouts[] = {ALayout::kRowMajor, ALayout::kTransposed, ALayout::kStrided};
  int failures = 0;
  for (std::size_t M : Ms) {
    for (std::size_t N : Ns) {
      for (std::size_t K : Ks) {
        for (ALayout layout : layouts) {
          for (std::size_t offset : {0, 1}) {
            for (bool accumulate : {false, true}) {
              // Aligned: packed rows. Misaligned: padded ldb and ldc (guards in between).
              const std::size_t pad = offset == 0 ? 0 : 3;
              for (pa::GemmFn KernelSet::* gemm : {&KernelSet::gemm, &KernelSet::gemm_row_stable}) {
                if (!run_gemm_case(M, N, K, layout, offset, pad, pad, accumulate, rng, stats,
                                   gemm)) {
                  if (++failures > 10) return;
                }
              }
            }
          }
        }
      }
    }
  }
  for (std::size_t s = 0; s < sets.size(); ++s) {
    std::printf("  [%s] gemm: %zu cases, worst error %.3g of the bound\n", sets[s]->name,
                stats[s].cases, stats[s].worst);
  }
}

// Sizes past the kernels' blocking: several k blocks (128 for AVX-512, 256 for AVX2),
// several column panels and full register tiles plus tails.
TEST("kernels/gemm_large") {
  const auto& sets = sets_under_test();
  std::vector<GemmStats> stats(sets.size());
  std::mt19937 rng(99);
  struct Size {
    std::size_t M, N, K;
  };
  const Size sizes[] = {{64, 64, 256}, {256, 64, 64},  {37, 130, 300}, {6, 200, 520},
                        {1, 64, 1000}, {130, 17, 129}, {25, 48, 257},  {16, 256, 64}};
  for (const Size& sz : sizes) {
    for (ALayout layout : {ALayout::kRowMajor, ALayout::kTransposed}) {
      for (bool accumulate : {false, true}) {
        for (pa::GemmFn KernelSet::* gemm : {&KernelSet::gemm, &KernelSet::gemm_row_stable}) {
          run_gemm_case(sz.M, sz.N, sz.K, layout, 1, 5, 2, accumulate, rng, stats, gemm);
        }
      }
    }
  }
  for (std::size_t s = 0; s < sets.size(); ++s) {
    std::printf("  [%s] gemm_large: %zu cases, worst error %.3g of the bound\n", sets[s]->name,
                stats[s].cases, stats[s].worst);
  }
}

// gemm_row_stable: row i of C has the same bits whether the call holds rows 0..M-1 or
// row i alone (what makes a batched decoding step equal single steps), past the k
// blocking and over every panel width and row tile.
TEST("kernels/gemm_row_stable_rows") {
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> uni(-1.0f, 1.0f);
  struct Size {
    std::size_t N, K;
  };
  const Size sizes[] = {{1, 1}, {7, 9}, {17, 64}, {33, 300}, {130, 520}, {64, 1000}};
  for (const KernelSet* set : sets_under_test()) {
    for (const Size& sz : sizes) {
      const std::size_t M = 13, N = sz.N, K = sz.K;
      std::vector<float> a(M * K), b(K * N);
      for (float& x : a) x = uni(rng);
      for (float& x : b) x = uni(rng);
      std::vector<float> alone(M * N);
      for (std::size_t i = 0; i < M; ++i) {
        set->gemm_row_stable(1, N, K, a.data() + i * K, K, 1, b.data(), N, alone.data() + i * N, N,
                             false);
      }
      for (std::size_t rows = 2; rows <= M; ++rows) {
        for (std::size_t first = 0; first + rows <= M; first += rows) {
          std::vector<float> c(rows * N);
          set->gemm_row_stable(rows, N, K, a.data() + first * K, K, 1, b.data(), N, c.data(), N,
                               false);
          const bool same =
              std::memcmp(c.data(), alone.data() + first * N, rows * N * sizeof(float)) == 0;
          if (!same) {
            std::fprintf(stderr, "  [%s] gemm_row_stable N=%zu K=%zu rows %zu..%zu: bits differ\n",
                         set->name, N, K, first, first + rows - 1);
          }
          CHECK(same);
        }
      }
    }
  }
}

// Empty products write nothing; K == 0 writes zeros (or leaves C when accumulating).
TEST("kernels/gemm_degenerate") {
  for (const KernelSet* set : sets_under_test()) {
    const float a[8] = {1, 2, 3, 4, 5, 6, 7, 8}, b[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    for (bool accumulate : {false, true}) {
      Buffer c(12, 1);
      set->gemm(0, 3, 2, a, 2, 1, b, 3, c.data(), 3, accumulate);
      set->gemm(3, 0, 2, a, 2, 1, b, 3, c.data(), 3, accumulate);
      set->gemm(0, 0, 0, a, 2, 1, b, 3, c.data(), 3, accumulate);
      bool untouched = c.guards_intact();
      for (std::size_t i = 0; i < 12; ++i) untouched = untouched && c[i] == kGuard;
      CHECK(untouched);

      // K == 0: 3 x 5 inside rows of 7.
      Buffer d(3 * 7, 0);
      for (std::size_t i = 0; i < 21; ++i) d[i] = accumulate ? 2.5f : kNaN;
      set->gemm(3, 5, 0, a, 1, 1, b, 5, d.data(), 7, accumulate);
      bool right = d.guards_intact();
      for (std::size_t i = 0; i < 3; ++i) {
        for (std::size_t n = 0; n < 7; ++n) {
          const float initial = accumulate ? 2.5f : kNaN;
          const float want = n < 5 && !accumulate ? 0.0f : initial;  // padding kept
          right = right && same_value(d[i * 7 + n], want);
        }
      }
      if (!right) std::fprintf(stderr, "  [%s] gemm K=0 accumulate=%d\n", set->name, accumulate);
      CHECK(right);
    }
  }
}

// ---------------------------------------------------------------------------------
// exp
// ---------------------------------------------------------------------------------

// Error of `got` against the exact `want`, in units of the float spacing at `want`:
// 2^(e-24) for want in [2^(e-1), 2^e), the denormal spacing 2^-149 below FLT_MIN,
// and 2^104 just above FLT_MAX (where +inf counts as 2^128, the value that overflows).
double ulp_error(float got, double want) {
  if (std::isnan(want)) return std::isnan(got) ? 0 : INFINITY;
  if (std::isnan(got)) return INFINITY;
  if (static_cast<double>(got) == want) return 0;  // includes inf == inf
  if (std::isinf(want)) return INFINITY;
  // At or beyond FLT_MAX + half its spacing the correctly rounded result is +inf.
  if (want >= std::ldexp(1.0 - std::ldexp(1.0, -25), 128)) return got == kInf ? 0 : INFINITY;
  const double g = std::isinf(got) ? std::copysign(std::ldexp(1.0, 128), got) : got;
  int e = 0;
  std::frexp(std::fabs(want), &e);
  const double ulp = std::ldexp(1.0, std::max(std::min(e, 128) - 24, -149));
  return std::fabs(g - want) / ulp;
}

struct ExpStats {
  double max_normal = 0;    // ulps, results >= FLT_MIN
  double max_denormal = 0;  // units of 2^-149, results below FLT_MIN
  float worst_arg = 0;
  std::size_t count = 0;
};

// The argument exactly as every kernel forms it: (x + bias) + offset in float.
float exp_argument(float x, const float* bias, std::size_t i, float offset) {
  const float s = bias != nullptr ? x + bias[i] : x;
  return s + offset;
}

// Checks y against exp of the float arguments; updates stats; returns the number
// of bad entries (more than `max_ulp` off for normal results, more than 1 denormal
// spacing off below FLT_MIN, or on the wrong side of the overflow boundary).
std::size_t check_exp(const char* set_name, std::size_t n, const float* x, const float* bias,
                      float offset, const float* y, double max_ulp, ExpStats& stats) {
  std::size_t bad = 0;
  for (std::size_t i = 0; i < n; ++i) {
    const float s = exp_argument(x[i], bias, i, offset);
    const double want = std::exp(static_cast<double>(s));
    const double err = ulp_error(y[i], want);
    const bool denormal = want < FLT_MIN;
    bool ok = denormal ? err <= 1.0 : err <= max_ulp;
    // exp(s) rounds above FLT_MAX exactly from s = 88.72283935546875 (0x42b17218).
    if (s >= 0x1.62e43p+6f && y[i] != kInf) ok = false;
    if (s < 0x1.62e43p+6f && !(y[i] < kInf)) ok = false;
    if (!(y[i] >= 0) && !std::isnan(s)) ok = false;
    ++stats.count;
    if (denormal) {
      stats.max_denormal = std::max(stats.max_denormal, err);
    } else if (err > stats.max_normal) {
      stats.max_normal = err;
      stats.worst_arg = s;
    }
    if (!ok) {
      if (bad < 5) {
        std::fprintf(stderr, "  [%s] exp(%.9g) = %.9g, want %.9g (%.3g ulp)\n", set_name, s, y[i],
                     want, err);
      }
      ++bad;
    }
  }
  return bad;
}

// Inputs over the whole float range: a dense sweep, random bit patterns, specials.
std::vector<float> exp_inputs() {
  std::vector<float> xs;
  for (int i = -104 * 4096; i <= 89 * 4096; ++i) xs.push_back(static_cast<float>(i) / 4096.0f);
  std::mt19937 rng(7);
  std::uniform_int_distribution<std::uint32_t> bits;
  for (int i = 0; i < 1000000; ++i) {  // uniform in bit patterns: all magnitudes
    std::uint32_t u = bits(rng);
    float f;
    std::memcpy(&f, &u, sizeof f);
    if (std::fabs(f) <= 110.0f || std::isnan(f)) xs.push_back(f);
  }
  // Around the overflow boundary, FLT_MIN (-87.336...), the last denormal (-103.97...).
  for (float center : {0x1.62e43p+6f, -87.336544f, -103.972084f, -103.278931f, 0.0f}) {
    float f = center;
    for (int i = 0; i < 300; ++i) f = std::nextafter(f, -kInf);
    for (int i = 0; i < 600; ++i) {
      xs.push_back(f);
      f = std::nextafter(f, kInf);
    }
  }
  for (float v : {kInf,         -kInf,         kNaN,    -kNaN,    0.0f,   -0.0f,  FLT_MIN, -FLT_MIN,
                  FLT_TRUE_MIN, -FLT_TRUE_MIN, FLT_MAX, -FLT_MAX, 1e30f,  -1e30f, 88.0f,   89.0f,
                  90.0f,        -104.0f,       -105.0f, -150.0f,  1e-30f, -1e-30f}) {
    xs.push_back(v);
  }
  return xs;
}

TEST("kernels/exp_bias_range") {
  const std::vector<float> xs = exp_inputs();
  for (const KernelSet* set : sets_under_test()) {
    ExpStats stats;
    Buffer y(xs.size(), 0);
    set->exp_bias(xs.size(), xs.data(), nullptr, 0.0f, y.data());
    const std::size_t bad =
        check_exp(set->name, xs.size(), xs.data(), nullptr, 0.0f, y.data(), 3.0, stats);
    CHECK(bad == 0);
    CHECK(y.guards_intact());
    std::printf(
        "  [%s] exp: %zu inputs, max %.3f ulp (at %.9g), denormal results max %.3f "
        "x 2^-149\n",
        set->name, stats.count, stats.max_normal, stats.worst_arg, stats.max_denormal);
    CHECK(std::isnan(y[xs.size() - 20]) && std::isnan(y[xs.size() - 19]));  // +-NaN
  }
}

TEST("kernels/exp_bias_special") {
  for (const KernelSet* set : sets_under_test()) {
    // x, bias, offset -> expected (bit-exact where it must be).
    const float x[] = {kInf, -kInf, kNaN, 0.0f, -0.0f, 1.0f, kInf, 100.0f, -60.0f, -1e30f};
    const float bias[] = {0.0f, 0.0f, 1.0f, kNaN, 0.0f, -kInf, -kInf, -11.0f, -50.0f, 1e30f};
    float y[10];
    set->exp_bias(10, x, bias, 0.0f, y);
    CHECK(y[0] == kInf);
    CHECK(y[1] == 0.0f);
    CHECK(std::isnan(y[2]));
    CHECK(std::isnan(y[3]));  // NaN bias
    CHECK(y[4] == 1.0f);
    CHECK(y[5] == 0.0f);      // 1 + -inf
    CHECK(std::isnan(y[6]));  // inf + -inf
    CHECK(y[7] == kInf);      // 89 overflows
    CHECK(y[8] == 0.0f);      // -110: below half the smallest denormal
    CHECK(y[9] == 1.0f);      // -1e30 + 1e30 = 0 exactly
    // Offset alone, NaN offset.
    set->exp_bias(10, x, nullptr, kNaN, y);
    bool all_nan = true;
    for (float v : y) all_nan = all_nan && std::isnan(v);
    CHECK(all_nan);
    const float xs[3] = {-0.0f, 0.0f, 87.0f};
    set->exp_bias(3, xs, nullptr, -kInf, y);
    CHECK(y[0] == 0.0f && y[1] == 0.0f && y[2] == 0.0f);
    // exp(0) and exp(-0) are exactly 1; smallest denormal result.
    set->exp_bias(3, xs, nullptr, 0.0f, y);
    CHECK(y[0] == 1.0f && y[1] == 1.0f);
    const float tiny_arg = -103.2789f;  // exp = 1.003 * 2^-149
    set->exp_bias(1, &tiny_arg, nullptr, 0.0f, y);
    CHECK(y[0] == FLT_TRUE_MIN);
  }
}

// Bias, offset, aliasing, every length and alignment; tails must compute the very
// same function as the vector body.
TEST("kernels/exp_bias_variants") {
  std::mt19937 rng(42);
  std::uniform_real_distribution<float> uni(-60.0f, 40.0f);
  std::uniform_real_distribution<float> ub(-30.0f, 30.0f);
  for (const KernelSet* set : sets_under_test()) {
    ExpStats stats;
    std::size_t bad = 0;
    bool guards = true, consistent = true, sums_ok = true;
    for (std::size_t n = 1; n <= 70; ++n) {
      for (std::size_t offset_floats = 0; offset_floats < 3; ++offset_floats) {
        for (int with_bias = 0; with_bias < 2; ++with_bias) {
          for (float offset : {0.0f, -3.5f, 10.0f}) {
            Buffer x(n, offset_floats), bias(n, (offset_floats + 1) % 3), y(n, offset_floats);
            for (std::size_t i = 0; i < n; ++i) {
              x[i] = uni(rng);
              bias[i] = ub(rng);
            }
            const float* bp = with_bias ? bias.data() : nullptr;
            // The same inputs at the front of a long, aligned call: body path results.
            std::vector<float> long_x(n + 64, 0.0f), long_b(n + 64, 0.0f), long_y(n + 64);
            std::copy(x.data(), x.data() + n, long_x.begin());
            std::copy(bias.data(), bias.data() + n, long_b.begin());
            set->exp_bias(n + 64, long_x.data(), with_bias ? long_b.data() : nullptr, offset,
                          long_y.data());

            const float returned_sum = set->exp_bias(n, x.data(), bp, offset, y.data());
            bad += check_exp(set->name, n, x.data(), bp, offset, y.data(), 3.0, stats);
            // The returned sum is the sum of the outputs (float partial sums).
            double sum = 0.0, magnitude = 0.0;
            for (std::size_t i = 0; i < n; ++i) {
              sum += y[i];
              magnitude += std::fabs(y[i]);
            }
            if (std::isfinite(sum)) {
              sums_ok = sums_ok && std::fabs(returned_sum - sum) <= 1e-6 * magnitude + 1e-30;
            } else {
              sums_ok = sums_ok && !std::isfinite(returned_sum);
            }
            guards = guards && y.guards_intact() && x.guards_intact();
            for (std::size_t i = 0; i < n; ++i) {
              consistent = consistent && Buffer::same_bits(y[i], long_y[i]);
            }

            // In place: y aliases x.
            std::vector<float> saved(x.data(), x.data() + n);
            set->exp_bias(n, x.data(), bp, offset, x.data());
            for (std::size_t i = 0; i < n; ++i) {
              consistent = consistent && Buffer::same_bits(x[i], y[i]);
            }
            guards = guards && x.guards_intact();
          }
        }
      }
    }
    CHECK(bad == 0);
    CHECK(guards);
    CHECK(consistent);
    CHECK(sums_ok);
    std::printf("  [%s] exp_bias variants: %zu values, max %.3f ulp\n", set->name, stats.count,
                stats.max_normal);
  }
}

// ---------------------------------------------------------------------------------
// max_bias / max_accumulate
// ---------------------------------------------------------------------------------

// NaN-ignoring reference: the max of the float sums that are not NaN; -inf if none.
float max_bias_reference(std::size_t n, const float* x, const float* bias) {
  float m = -kInf;
  for (std::size_t i = 0; i < n; ++i) {
    const float v = bias != nullptr ? x[i] + bias[i] : x[i];
    if (!std::isnan(v) && v > m) m = v;
  }
  return m;
}

// Fills with random values and, by `mode`, NaNs, -infs and a planted maximum.
void fill_for_max(Buffer& v, int mode, std::mt19937& rng) {
  std::uniform_real_distribution<float> uni(-100.0f, 100.0f);
  std::uniform_int_distribution<int> pick(0, 5);
  const std::size_t n = v.size();
  for (std::size_t i = 0; i < n; ++i) {
    v[i] = uni(rng);
    if (mode >= 1 && pick(rng) == 0) v[i] = kNaN;
    if (mode >= 2 && pick(rng) == 0) v[i] = -kInf;
    if (mode == 3) v[i] = kNaN;   // all NaN
    if (mode == 4) v[i] = -kInf;  // all -inf
  }
  if (n > 0 && mode == 5) v[n - 1] = 1000.0f;  // maximum in the last (tail) element
  if (n > 0 && mode == 6) v[0] = 1000.0f;
  if (n > 0 && mode == 7) v[rng() % n] = kInf;
}

TEST("kernels/max_bias") {
  std::mt19937 rng(5);
  for (const KernelSet* set : sets_under_test()) {
    std::size_t wrong = 0, cases = 0;
    CHECK(set->max_bias(0, nullptr, nullptr) == -kInf);
    for (std::size_t n = 0; n <= 70; ++n) {
      for (std::size_t off = 0; off < 4; ++off) {
        for (int mode = 0; mode < 8; ++mode) {
          for (int with_bias = 0; with_bias < 2; ++with_bias) {
            Buffer x(n, off), bias(n, (off + 2) % 4);
            fill_for_max(x, mode, rng);
            fill_for_max(bias, mode == 3 || mode == 4 ? 0 : std::min(mode, 2), rng);
            if (mode == 2 && n > 2) bias[n / 2] = kInf;  // -inf + inf = NaN: ignored
            const float* bp = with_bias ? bias.data() : nullptr;
            const float got = set->max_bias(n, x.data(), bp);
            const float want = max_bias_reference(n, x.data(), bp);
            ++cases;
            if (!(got == want)) {
              if (wrong < 5) {
                std::fprintf(stderr, "  [%s] max_bias n=%zu off=%zu mode=%d bias=%d: %g, want %g\n",
                             set->name, n, off, mode, with_bias, got, want);
              }
              ++wrong;
            }
          }
        }
      }
    }
    CHECK(wrong == 0);
    std::printf("  [%s] max_bias: %zu cases\n", set->name, cases);
  }
}

TEST("kernels/max_accumulate") {
  std::mt19937 rng(6);
  for (const KernelSet* set : sets_under_test()) {
    std::size_t wrong = 0, cases = 0;
    for (std::size_t n = 0; n <= 70; ++n) {
      for (std::size_t off = 0; off < 4; ++off) {
        for (int mode = 0; mode < 8; ++mode) {
          Buffer x(n, off), acc(n, (off + 1) % 4);
          fill_for_max(x, mode, rng);
          fill_for_max(acc, mode == 3 ? 4 : mode == 4 ? 3 : 2, rng);
          std::vector<float> want(n);
          for (std::size_t i = 0; i < n; ++i) {  // fmax: NaN on one side gives the other
            const float a = acc[i], v = x[i];
            want[i] = std::isnan(a) ? v : std::isnan(v) ? a : std::max(a, v);
          }
          set->max_accumulate(n, x.data(), acc.data());
          ++cases;
          bool ok = acc.guards_intact() && x.guards_intact();
          for (std::size_t i = 0; i < n; ++i) ok = ok && same_value(acc[i], want[i]);
          if (!ok) {
            if (wrong < 5) {
              std::fprintf(stderr, "  [%s] max_accumulate n=%zu off=%zu mode=%d wrong\n", set->name,
                           n, off, mode);
            }
            ++wrong;
          }
        }
      }
    }
    // The four NaN combinations, explicitly.
    const float x[4] = {kNaN, 3.0f, kNaN, -kInf};
    float acc[4] = {2.0f, kNaN, kNaN, -kInf};
    set->max_accumulate(4, x, acc);
    CHECK(acc[0] == 2.0f && acc[1] == 3.0f && std::isnan(acc[2]) && acc[3] == -kInf);
    CHECK(wrong == 0);
    std::printf("  [%s] max_accumulate: %zu cases\n", set->name, cases);
  }
}

}  // namespace

TEST("kernels/dot") {
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> uni(-2.0f, 2.0f);
  for (const KernelSet* set : sets_under_test()) {
    bool ok = true;
    for (std::size_t n = 0; n <= 300; n += (n < 70 ? 1 : 37)) {
      for (std::size_t offset_floats = 0; offset_floats < 3; ++offset_floats) {
        Buffer a(n, offset_floats), b(n, (offset_floats + 2) % 3);
        double want = 0.0, magnitude = 0.0;
        for (std::size_t i = 0; i < n; ++i) {
          a[i] = uni(rng);
          b[i] = uni(rng);
          want += static_cast<double>(a[i]) * b[i];
          magnitude += std::fabs(static_cast<double>(a[i]) * b[i]);
        }
        const double got = set->dot(n, a.data(), b.data());
        if (!(std::fabs(got - want) <= 1e-6 * magnitude + 1e-30)) {
          std::fprintf(stderr, "  [%s] dot n=%zu: %.9g, expected %.9g\n", set->name, n, got, want);
          ok = false;
        }
        ok = ok && a.guards_intact() && b.guards_intact();
      }
    }
    const float x[3] = {1.0f, std::numeric_limits<float>::quiet_NaN(), 2.0f},
                y[3] = {1.0f, 1.0f, 1.0f};
    ok = ok && std::isnan(set->dot(3, x, y));
    CHECK(ok);
  }
}

// Sizes around the block (1, 7, 8, 9, 16, 17, 3 blocks + tail), strides wider than
// the matrix, misaligned pointers; every element moved bit for bit (NaN, -0 and
// infinities included) and nothing written between dst's rows or around them.
TEST("kernels/transpose") {
  std::mt19937 rng(11);
  std::uniform_real_distribution<float> uni(-3.0f, 3.0f);
  const std::size_t sizes[] = {1, 2, 7, 8, 9, 15, 16, 17, 25, 64};
  for (const KernelSet* set : sets_under_test()) {
    bool ok = true;
    for (std::size_t rows : sizes) {
      for (std::size_t cols : sizes) {
        for (std::size_t pad = 0; pad < 3; pad += 2) {
          const std::size_t lds = cols + pad, ldd = rows + 3 * pad / 2;
          Buffer src(rows * lds, pad / 2 + 1), dst(cols * ldd, pad);
          for (std::size_t i = 0; i < src.size(); ++i) src[i] = uni(rng);
          src[0] = kNaN;
          src[src.size() - 1] = -0.0f;
          if (rows * cols > 5) src[5 % lds] = -kInf;
          set->transpose(rows, cols, src.data(), lds, dst.data(), ldd);
          for (std::size_t c = 0; c < cols; ++c) {
            for (std::size_t r = 0; r < ldd; ++r) {
              const float want = r < rows ? src[r * lds + c] : kGuard;
              if (!Buffer::same_bits(dst[c * ldd + r], want)) {
                std::fprintf(stderr, "  [%s] transpose %zux%zu (lds %zu, ldd %zu): dst(%zu, %zu)\n",
                             set->name, rows, cols, lds, ldd, c, r);
                ok = false;
              }
            }
          }
          ok = ok && src.guards_intact() && dst.guards_intact();
        }
      }
    }
    CHECK(ok);
  }
}
