// AVX2 + FMA micro-kernels. The build compiles this file alone with -mavx2 -mfma;
// dispatch.cc only hands it out after checking the CPU. Without PA_HAVE_AVX2
// (non-x86 builds) nothing here is compiled.
#if defined(PA_HAVE_AVX2)

#include <immintrin.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>

#include "f64_avx256.h"
#include "gelu_tail.h"
#include "kernels.h"

// Full unrolling of the small constant-bound loops over the register tile, so the
// accumulator arrays below live in registers and never on the stack.
#if defined(__clang__)
#define PA_UNROLL _Pragma("unroll")
#elif defined(__GNUC__)
#define PA_UNROLL _Pragma("GCC unroll 16")
#else
#define PA_UNROLL
#endif

namespace pa {
namespace {

constexpr std::size_t kLanes = 8;

// Mask (for vmaskmovps) of the first n lanes, 0 <= n <= 8.
inline __m256i first_lanes(std::size_t n) {
  static const std::int32_t kTable[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(kTable + kLanes - n));
}

// ---------------------------------------------------------------------------------
// gemm
// ---------------------------------------------------------------------------------

// C tile of MR rows x NV ymm columns over kc steps of k. A(i, k) is broadcast one
// element at a time, so A's strides are free; each B row contributes NV contiguous
// (unaligned) loads. With MASKED the last column vector covers only the lanes in
// `last` (N tail): vmaskmovps neither reads nor writes the other lanes (and does not
// fault on them).
//
// FMA latency 4 x 2 pipes needs >= 8 independent accumulators; thin tiles (MR*NV < 8)
// split k over KS accumulator sets that are summed at the end.
template <int MR, int NV, bool MASKED>
void gemm_avx2_tile(std::size_t kc, const float* a, std::size_t ars, std::size_t acs,
                    const float* b, std::size_t ldb, float* c, std::size_t ldc, bool load_c,
                    __m256i last) {
  constexpr int KS = MR * NV >= 8 ? 1 : (MR * NV >= 4 ? 2 : 4);
  __m256 acc[KS][MR][NV];
  PA_UNROLL
  for (int s = 0; s < KS; ++s) {
    PA_UNROLL
    for (int r = 0; r < MR; ++r) {
      PA_UNROLL
      for (int v = 0; v < NV; ++v) acc[s][r][v] = _mm256_setzero_ps();
    }
  }
  if (load_c) {
    PA_UNROLL
    for (int r = 0; r < MR; ++r) {
      PA_UNROLL
      for (int v = 0; v < NV; ++v) {
        const float* pc = c + r * ldc + v * kLanes;
        acc[0][r][v] = (MASKED && v == NV - 1) ? _mm256_maskload_ps(pc, last)
                                                : _mm256_loadu_ps(pc);
      }
    }
  }

  std::size_t k = 0;
  for (; k + KS <= kc; k += KS) {
    PA_UNROLL
    for (int s = 0; s < KS; ++s) {
      const float* pa = a + (k + s) * acs;
      const float* pb = b + (k + s) * ldb;
      __m256 bv[NV];
      PA_UNROLL
      for (int v = 0; v < NV; ++v) {
        bv[v] = (MASKED && v == NV - 1) ? _mm256_maskload_ps(pb + v * kLanes, last)
                                        : _mm256_loadu_ps(pb + v * kLanes);
      }
      PA_UNROLL
      for (int r = 0; r < MR; ++r) {
        const __m256 av = _mm256_broadcast_ss(pa + r * ars);
        PA_UNROLL
        for (int v = 0; v < NV; ++v) acc[s][r][v] = _mm256_fmadd_ps(av, bv[v], acc[s][r][v]);
      }
    }
  }
  for (; k < kc; ++k) {  // k tail of the split sets (KS > 1 only)
    const float* pa = a + k * acs;
    const float* pb = b + k * ldb;
    __m256 bv[NV];
    PA_UNROLL
    for (int v = 0; v < NV; ++v) {
      bv[v] = (MASKED && v == NV - 1) ? _mm256_maskload_ps(pb + v * kLanes, last)
                                      : _mm256_loadu_ps(pb + v * kLanes);
    }
    PA_UNROLL
    for (int r = 0; r < MR; ++r) {
      const __m256 av = _mm256_broadcast_ss(pa + r * ars);
      PA_UNROLL
      for (int v = 0; v < NV; ++v) acc[0][r][v] = _mm256_fmadd_ps(av, bv[v], acc[0][r][v]);
    }
  }

  PA_UNROLL
  for (int r = 0; r < MR; ++r) {
    PA_UNROLL
    for (int v = 0; v < NV; ++v) {
      __m256 sum = acc[0][r][v];
      PA_UNROLL
      for (int s = 1; s < KS; ++s) sum = _mm256_add_ps(sum, acc[s][r][v]);
      float* pc = c + r * ldc + v * kLanes;
      if (MASKED && v == NV - 1) {
        _mm256_maskstore_ps(pc, last, sum);
      } else {
        _mm256_storeu_ps(pc, sum);
      }
    }
  }
}

// All M rows of one column panel (NV vectors wide) for one k block. Only 16 ymm
// registers: the 6x2 main tile holds 12 accumulators + 2 B vectors + 1 broadcast;
// leftover rows take 4-, 2- and 1-row tiles.
template <int NV, bool MASKED>
void gemm_avx2_panel(std::size_t M, std::size_t kc, const float* a, std::size_t ars,
                     std::size_t acs, const float* b, std::size_t ldb, float* c,
                     std::size_t ldc, bool load_c, __m256i last) {
  constexpr std::size_t MR = NV >= 2 ? 6 : 8;
  std::size_t i = 0;
  for (; i + MR <= M; i += MR) {
    gemm_avx2_tile<MR, NV, MASKED>(kc, a + i * ars, ars, acs, b, ldb, c + i * ldc, ldc,
                                   load_c, last);
  }
  if (M - i >= 4) {
    gemm_avx2_tile<4, NV, MASKED>(kc, a + i * ars, ars, acs, b, ldb, c + i * ldc, ldc, load_c,
                                  last);
    i += 4;
  }
  if (M - i >= 2) {
    gemm_avx2_tile<2, NV, MASKED>(kc, a + i * ars, ars, acs, b, ldb, c + i * ldc, ldc, load_c,
                                  last);
    i += 2;
  }
  if (M - i >= 1) {
    gemm_avx2_tile<1, NV, MASKED>(kc, a + i * ars, ars, acs, b, ldb, c + i * ldc, ldc, load_c,
                                  last);
  }
}

void gemm_avx2(std::size_t M, std::size_t N, std::size_t K, const float* a,
               std::size_t a_row_stride, std::size_t a_col_stride, const float* b,
               std::size_t ldb, float* c, std::size_t ldc, bool accumulate) {
  if (M == 0 || N == 0) return;
  if (K == 0) {
    if (!accumulate) {
      for (std::size_t i = 0; i < M; ++i) std::memset(c + i * ldc, 0, N * sizeof(float));
    }
    return;
  }
  // Panels of 16 columns; k blocks of <= 256 keep the B block in use (16 KiB) in L1d
  // while every row tile of A streams past it.
  constexpr std::size_t kPanel = 2 * kLanes;
  constexpr std::size_t kMaxKc = 256;
  const std::size_t k_blocks = (K + kMaxKc - 1) / kMaxKc;
  const std::size_t kc_step = (K + k_blocks - 1) / k_blocks;  // even split, no tiny block

  for (std::size_t n0 = 0; n0 < N; n0 += kPanel) {
    const std::size_t nb = std::min(kPanel, N - n0);
    const std::size_t nv = (nb + kLanes - 1) / kLanes;
    const std::size_t rem = nb - (nv - 1) * kLanes;  // lanes used in the last vector
    const bool masked = rem != kLanes;
    const __m256i last = first_lanes(rem);
    for (std::size_t k0 = 0; k0 < K; k0 += kc_step) {
      const std::size_t kc = std::min(kc_step, K - k0);
      const bool load_c = accumulate || k0 > 0;
      const float* ap = a + k0 * a_col_stride;
      const float* bp = b + k0 * ldb + n0;
      float* cp = c + n0;
      if (nv == 2) {
        if (masked) {
          gemm_avx2_panel<2, true>(M, kc, ap, a_row_stride, a_col_stride, bp, ldb, cp, ldc,
                                   load_c, last);
        } else {
          gemm_avx2_panel<2, false>(M, kc, ap, a_row_stride, a_col_stride, bp, ldb, cp, ldc,
                                    load_c, last);
        }
      } else if (masked) {
        gemm_avx2_panel<1, true>(M, kc, ap, a_row_stride, a_col_stride, bp, ldb, cp, ldc,
                                 load_c, last);
      } else {
        gemm_avx2_panel<1, false>(M, kc, ap, a_row_stride, a_col_stride, bp, ldb, cp, ldc,
                                  load_c, last);
      }
    }
  }
}

// ---------------------------------------------------------------------------------
// exp
// ---------------------------------------------------------------------------------

// exp of 8 floats: at most 1.01 ulp over all 2^32 inputs (checked exhaustively), and
// denormal results within 0.75 of their spacing.
// exp(s) = 2^n * exp(r), n = round(s / ln2), r = s - n ln2 in [-ln2/2, ln2/2]:
//  - s is first clamped to [-104, 89]: exp(-104) rounds to 0 and exp(89) overflows, so
//    no result changes, and n stays in [-150, 128]. max/min return their second
//    operand when one is NaN, so a NaN passes through the clamp (and the rest).
//  - r by Cody-Waite: ln2 = ln2_hi + ln2_lo with ln2_hi = float(ln2); n*ln2_hi is a
//    multiple of 2^-24 and |r| < 0.35, so the first FMA is exact.
//  - exp(r) = 1 + r + r^2 q(r), q of degree 4 fitted (minimax relative error, 3.7e-9
//    with these float coefficients) on [-0.3467, 0.3467].
//  - 2^n = 2^n1 * 2^n2 with n1 = floor(n/2), n2 = n - n1, both in [-75, 64] so each
//    factor is a normal float built from its exponent bits. p * 2^n1 is exact and
//    the second product rounds once: denormal results are correctly rounded from p,
//    and overflow gives +inf.
inline __m256 exp_avx2_8(__m256 s) {
  s = _mm256_max_ps(_mm256_set1_ps(-104.0f), s);
  s = _mm256_min_ps(_mm256_set1_ps(89.0f), s);
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(s, _mm256_set1_ps(0x1.715476p+0f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0x1.62e43p-1f), s);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-0x1.05c61p-29f), r);
  __m256 q = _mm256_set1_ps(0x1.6a23f2p-10f);
  q = _mm256_fmadd_ps(q, r, _mm256_set1_ps(0x1.123a0ap-7f));
  q = _mm256_fmadd_ps(q, r, _mm256_set1_ps(0x1.5558f2p-5f));
  q = _mm256_fmadd_ps(q, r, _mm256_set1_ps(0x1.555492p-3f));
  q = _mm256_fmadd_ps(q, r, _mm256_set1_ps(0x1.fffffcp-2f));
  const __m256 r2 = _mm256_mul_ps(r, r);
  const __m256 p = _mm256_add_ps(_mm256_fmadd_ps(q, r2, r), _mm256_set1_ps(1.0f));

  // For NaN, n converts to INT_MIN and the factors are meaningless, but p is NaN.
  const __m256i ni = _mm256_cvtps_epi32(n);
  const __m256i n1 = _mm256_srai_epi32(ni, 1);
  const __m256i n2 = _mm256_sub_epi32(ni, n1);
  const __m256i bias = _mm256_set1_epi32(127);
  const __m256 f1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n1, bias), 23));
  const __m256 f2 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n2, bias), 23));
  return _mm256_mul_ps(_mm256_mul_ps(p, f1), f2);
}

// The argument is (x[i] + bias[i]) + offset rounded in float, in that order, as in
// every kernel set.
template <bool kBias>
float exp_bias_avx2_impl(std::size_t n, const float* x, const float* bias, float offset,
                         float* y) {
  const __m256 off = _mm256_set1_ps(offset);
  __m256 sum = _mm256_setzero_ps();
  std::size_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    __m256 s = _mm256_loadu_ps(x + i);
    if (kBias) s = _mm256_add_ps(s, _mm256_loadu_ps(bias + i));
    const __m256 e = exp_avx2_8(_mm256_add_ps(s, off));
    _mm256_storeu_ps(y + i, e);
    sum = _mm256_add_ps(sum, e);
  }
  float lanes[kLanes];
  _mm256_storeu_ps(lanes, sum);
  float total = 0.0f;
  for (float lane : lanes) total += lane;
  if (i < n) {
    // Tail through a local vector, so it gets the very same function as the body.
    const std::size_t rest = n - i;
    float xs[kLanes] = {}, bs[kLanes] = {}, ys[kLanes];
    std::memcpy(xs, x + i, rest * sizeof(float));
    if (kBias) std::memcpy(bs, bias + i, rest * sizeof(float));
    __m256 s = _mm256_loadu_ps(xs);
    if (kBias) s = _mm256_add_ps(s, _mm256_loadu_ps(bs));
    _mm256_storeu_ps(ys, exp_avx2_8(_mm256_add_ps(s, off)));
    std::memcpy(y + i, ys, rest * sizeof(float));
    for (std::size_t t = 0; t < rest; ++t) total += ys[t];
  }
  return total;
}

float exp_bias_avx2(std::size_t n, const float* x, const float* bias, float offset, float* y) {
  return bias != nullptr ? exp_bias_avx2_impl<true>(n, x, bias, offset, y)
                         : exp_bias_avx2_impl<false>(n, x, bias, offset, y);
}

// ---------------------------------------------------------------------------------
// gelu
// ---------------------------------------------------------------------------------

// gelu of 8 floats, the formula of gelu_tail.h.
inline __m256 gelu_avx2_8(__m256 v) {
  const __m256 a = _mm256_min_ps(_mm256_andnot_ps(_mm256_set1_ps(-0.0f), v), _mm256_set1_ps(kGeluMaxArg));
  const __m256 hi = _mm256_mul_ps(a, a);
  const __m256 lo = _mm256_fmsub_ps(a, a, hi);  // a^2 - hi, exact
  __m256 e = exp_avx2_8(_mm256_mul_ps(hi, _mm256_set1_ps(-0.5f)));
  e = _mm256_fnmadd_ps(_mm256_mul_ps(e, _mm256_set1_ps(0.5f)), lo, e);  // e (1 - lo / 2)
  const __m256 t =
      _mm256_div_ps(_mm256_set1_ps(1.0f), _mm256_fmadd_ps(a, _mm256_set1_ps(0.25f), _mm256_set1_ps(1.0f)));
  __m256 p = _mm256_set1_ps(kGeluTail[kGeluDegree]);
  PA_UNROLL
  for (int k = kGeluDegree - 1; k >= 0; --k) p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(kGeluTail[k]));
  const __m256 tail = _mm256_mul_ps(_mm256_mul_ps(p, _mm256_set1_ps(0.5f)), e);  // Phi(-a)
  const __m256 nonneg = _mm256_cmp_ps(v, _mm256_setzero_ps(), _CMP_GE_OQ);
  const __m256 phi = _mm256_blendv_ps(tail, _mm256_sub_ps(_mm256_set1_ps(1.0f), tail), nonneg);
  return _mm256_mul_ps(v, phi);
}

void gelu_bias_avx2(std::size_t n, const float* bias, float* x) {
  std::size_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    __m256 v = _mm256_loadu_ps(x + i);
    if (bias != nullptr) v = _mm256_add_ps(v, _mm256_loadu_ps(bias + i));
    _mm256_storeu_ps(x + i, gelu_avx2_8(v));
  }
  if (i < n) {  // tail through a local vector, as in exp_bias
    const std::size_t rest = n - i;
    float xs[kLanes] = {}, bs[kLanes] = {};
    std::memcpy(xs, x + i, rest * sizeof(float));
    if (bias != nullptr) std::memcpy(bs, bias + i, rest * sizeof(float));
    _mm256_storeu_ps(xs, gelu_avx2_8(_mm256_add_ps(_mm256_loadu_ps(xs), _mm256_loadu_ps(bs))));
    std::memcpy(x + i, xs, rest * sizeof(float));
  }
}

// ---------------------------------------------------------------------------------
// max
// ---------------------------------------------------------------------------------

// _mm256_max_ps(v, m) returns m when v is NaN: NaN inputs are skipped, and the
// accumulators (starting at -inf) never hold a NaN. The scalar tail's `v > m` skips
// NaN the same way.
template <bool kBias>
float max_bias_avx2_impl(std::size_t n, const float* x, const float* bias) {
  const float neg_inf = -std::numeric_limits<float>::infinity();
  // Four accumulators: the max latency would otherwise bound the loop.
  __m256 m0 = _mm256_set1_ps(neg_inf), m1 = m0, m2 = m0, m3 = m0;
  auto load = [&](std::size_t i) {
    __m256 v = _mm256_loadu_ps(x + i);
    if (kBias) v = _mm256_add_ps(v, _mm256_loadu_ps(bias + i));
    return v;
  };
  std::size_t i = 0;
  for (; i + 4 * kLanes <= n; i += 4 * kLanes) {
    m0 = _mm256_max_ps(load(i), m0);
    m1 = _mm256_max_ps(load(i + kLanes), m1);
    m2 = _mm256_max_ps(load(i + 2 * kLanes), m2);
    m3 = _mm256_max_ps(load(i + 3 * kLanes), m3);
  }
  for (; i + kLanes <= n; i += kLanes) m0 = _mm256_max_ps(load(i), m0);
  m0 = _mm256_max_ps(_mm256_max_ps(m0, m1), _mm256_max_ps(m2, m3));
  __m128 h = _mm_max_ps(_mm256_castps256_ps128(m0), _mm256_extractf128_ps(m0, 1));
  h = _mm_max_ps(h, _mm_movehl_ps(h, h));
  h = _mm_max_ss(h, _mm_movehdup_ps(h));
  float m = _mm_cvtss_f32(h);
  for (; i < n; ++i) {
    const float v = kBias ? x[i] + bias[i] : x[i];
    if (v > m) m = v;
  }
  return m;
}

float max_bias_avx2(std::size_t n, const float* x, const float* bias) {
  return bias != nullptr ? max_bias_avx2_impl<true>(n, x, bias)
                         : max_bias_avx2_impl<false>(n, x, bias);
}

// acc = fmax(acc, x): a NaN on either side yields the other operand.
inline __m256 fmax_avx2_8(__m256 acc, __m256 x) {
  const __m256 m = _mm256_max_ps(x, acc);  // acc when x is NaN
  return _mm256_blendv_ps(m, x, _mm256_cmp_ps(acc, acc, _CMP_UNORD_Q));
}

void max_accumulate_avx2(std::size_t n, const float* x, float* acc) {
  std::size_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    _mm256_storeu_ps(acc + i, fmax_avx2_8(_mm256_loadu_ps(acc + i), _mm256_loadu_ps(x + i)));
  }
  for (; i < n; ++i) {
    const float a = acc[i], v = x[i];
    if (v > a || a != a) acc[i] = v;
  }
}

// Four accumulators so the adds of consecutive vectors do not wait on each other.
float dot_avx2(std::size_t n, const float* a, const float* b) {
  __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps(), s2 = _mm256_setzero_ps(),
         s3 = _mm256_setzero_ps();
  std::size_t i = 0;
  for (; i + 4 * kLanes <= n; i += 4 * kLanes) {
    s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
    s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + kLanes), _mm256_loadu_ps(b + i + kLanes), s1);
    s2 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 2 * kLanes), _mm256_loadu_ps(b + i + 2 * kLanes), s2);
    s3 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 3 * kLanes), _mm256_loadu_ps(b + i + 3 * kLanes), s3);
  }
  for (; i + kLanes <= n; i += kLanes) {
    s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
  }
  float lanes[kLanes];
  _mm256_storeu_ps(lanes, _mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
  float total = 0.0f;
  for (float lane : lanes) total += lane;
  for (; i < n; ++i) total += a[i] * b[i];
  return total;
}

}  // namespace

// 12 independent accumulators: two FMA pipes with 4-cycle latency need at least 8.
static double fma_peak_avx2(std::size_t iterations, float* sink) {
  __m256 acc[12];
  for (int i = 0; i < 12; ++i) acc[i] = _mm256_set1_ps(1.0f + 0.001f * i);
  const __m256 b = _mm256_set1_ps(0.999999f), c = _mm256_set1_ps(1e-7f);
  for (std::size_t it = 0; it < iterations; ++it) {
    PA_UNROLL
    for (int i = 0; i < 12; ++i) acc[i] = _mm256_fmadd_ps(acc[i], b, c);
  }
  __m256 total = acc[0];
  for (int i = 1; i < 12; ++i) total = _mm256_add_ps(total, acc[i]);
  float lanes[8];
  _mm256_storeu_ps(lanes, total);
  *sink = lanes[0] + lanes[7];
  return static_cast<double>(iterations) * 12 * 8 * 2;
}

const KernelSet kAvx2Kernels = {"avx2", gemm_avx2, exp_bias_avx2, max_bias_avx2,
                                max_accumulate_avx2, gelu_bias_avx2, dot_avx2, dot_f64_avx256,
                                axpy_f64_avx256, fma_peak_avx2};

}  // namespace pa

#endif  // PA_HAVE_AVX2
