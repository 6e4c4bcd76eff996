// AVX-512 micro-kernels (F, DQ, VL; with AVX2 and FMA). The build compiles this file
// alone with those flags; dispatch.cc only hands it out after checking the CPU.
// Without PA_HAVE_AVX512 (non-x86 builds) nothing here is compiled.
#if defined(PA_HAVE_AVX512)

// GCC 12's avx512fintrin.h initializes _mm512_undefined_ps() from itself, which
// -Wmaybe-uninitialized reports wherever an intrinsic using it is inlined (GCC bug
// 105593, fixed in later releases). Silence that one warning for the header only.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

#include <algorithm>
#include <cstddef>
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

constexpr std::size_t kLanes = 16;

// The first n lanes (0 <= n <= 16).
inline __mmask16 first_lanes(std::size_t n) {
  return static_cast<__mmask16>((1u << n) - 1u);
}

// ---------------------------------------------------------------------------------
// gemm
// ---------------------------------------------------------------------------------

// C tile of MR rows x NV zmm columns over kc steps of k. A(i, k) is broadcast one
// element at a time, so A's strides are free; each B row contributes NV contiguous
// (unaligned) loads. With MASKED the last column vector covers only the lanes in
// `last` (N tail): masked loads read nothing beyond the row and masked stores leave
// the rest of C untouched.
//
// FMA latency 4 x 2 pipes needs >= 8 independent accumulators; thin tiles (MR*NV < 8)
// split k over KS accumulator sets that are summed at the end.
template <int MR, int NV, bool MASKED>
void gemm_avx512_tile(std::size_t kc, const float* a, std::size_t ars, std::size_t acs,
                      const float* b, std::size_t ldb, float* c, std::size_t ldc,
                      bool load_c, __mmask16 last) {
  constexpr int KS = MR * NV >= 8 ? 1 : (MR * NV >= 4 ? 2 : 4);
  __m512 acc[KS][MR][NV];
  PA_UNROLL
  for (int s = 0; s < KS; ++s) {
    PA_UNROLL
    for (int r = 0; r < MR; ++r) {
      PA_UNROLL
      for (int v = 0; v < NV; ++v) acc[s][r][v] = _mm512_setzero_ps();
    }
  }
  if (load_c) {
    PA_UNROLL
    for (int r = 0; r < MR; ++r) {
      PA_UNROLL
      for (int v = 0; v < NV; ++v) {
        const float* pc = c + r * ldc + v * kLanes;
        acc[0][r][v] = (MASKED && v == NV - 1) ? _mm512_maskz_loadu_ps(last, pc)
                                                : _mm512_loadu_ps(pc);
      }
    }
  }

  std::size_t k = 0;
  for (; k + KS <= kc; k += KS) {
    PA_UNROLL
    for (int s = 0; s < KS; ++s) {
      const float* pa = a + (k + s) * acs;
      const float* pb = b + (k + s) * ldb;
      __m512 bv[NV];
      PA_UNROLL
      for (int v = 0; v < NV; ++v) {
        bv[v] = (MASKED && v == NV - 1) ? _mm512_maskz_loadu_ps(last, pb + v * kLanes)
                                        : _mm512_loadu_ps(pb + v * kLanes);
      }
      PA_UNROLL
      for (int r = 0; r < MR; ++r) {
        const __m512 av = _mm512_set1_ps(pa[r * ars]);
        PA_UNROLL
        for (int v = 0; v < NV; ++v) acc[s][r][v] = _mm512_fmadd_ps(av, bv[v], acc[s][r][v]);
      }
    }
  }
  for (; k < kc; ++k) {  // k tail of the split sets (KS > 1 only)
    const float* pa = a + k * acs;
    const float* pb = b + k * ldb;
    __m512 bv[NV];
    PA_UNROLL
    for (int v = 0; v < NV; ++v) {
      bv[v] = (MASKED && v == NV - 1) ? _mm512_maskz_loadu_ps(last, pb + v * kLanes)
                                      : _mm512_loadu_ps(pb + v * kLanes);
    }
    PA_UNROLL
    for (int r = 0; r < MR; ++r) {
      const __m512 av = _mm512_set1_ps(pa[r * ars]);
      PA_UNROLL
      for (int v = 0; v < NV; ++v) acc[0][r][v] = _mm512_fmadd_ps(av, bv[v], acc[0][r][v]);
    }
  }

  PA_UNROLL
  for (int r = 0; r < MR; ++r) {
    PA_UNROLL
    for (int v = 0; v < NV; ++v) {
      __m512 sum = acc[0][r][v];
      PA_UNROLL
      for (int s = 1; s < KS; ++s) sum = _mm512_add_ps(sum, acc[s][r][v]);
      float* pc = c + r * ldc + v * kLanes;
      if (MASKED && v == NV - 1) {
        _mm512_mask_storeu_ps(pc, last, sum);
      } else {
        _mm512_storeu_ps(pc, sum);
      }
    }
  }
}

// All M rows of one column panel (NV vectors wide) for one k block. The main tile
// keeps MR*NV accumulators + NV B vectors + 1 broadcast within the 32 zmm registers
// (6x4: 24 + 4 + 1; 5x5: 25 + 5 + 1); leftover rows take 4-, 2- and 1-row tiles.
template <int NV, bool MASKED>
void gemm_avx512_panel(std::size_t M, std::size_t kc, const float* a, std::size_t ars,
                       std::size_t acs, const float* b, std::size_t ldb, float* c,
                       std::size_t ldc, bool load_c, __mmask16 last) {
  constexpr std::size_t MR = NV >= 5 ? 5 : (NV >= 4 ? 6 : 8);
  std::size_t i = 0;
  for (; i + MR <= M; i += MR) {
    gemm_avx512_tile<MR, NV, MASKED>(kc, a + i * ars, ars, acs, b, ldb, c + i * ldc, ldc,
                                     load_c, last);
  }
  if (M - i >= 4) {
    gemm_avx512_tile<4, NV, MASKED>(kc, a + i * ars, ars, acs, b, ldb, c + i * ldc, ldc,
                                    load_c, last);
    i += 4;
  }
  if (M - i >= 2) {
    gemm_avx512_tile<2, NV, MASKED>(kc, a + i * ars, ars, acs, b, ldb, c + i * ldc, ldc,
                                    load_c, last);
    i += 2;
  }
  if (M - i >= 1) {
    gemm_avx512_tile<1, NV, MASKED>(kc, a + i * ars, ars, acs, b, ldb, c + i * ldc, ldc,
                                    load_c, last);
  }
}

template <int NV>
void gemm_avx512_panel_any(bool masked, std::size_t M, std::size_t kc, const float* a,
                           std::size_t ars, std::size_t acs, const float* b, std::size_t ldb,
                           float* c, std::size_t ldc, bool load_c, __mmask16 last) {
  if (masked) {
    gemm_avx512_panel<NV, true>(M, kc, a, ars, acs, b, ldb, c, ldc, load_c, last);
  } else {
    gemm_avx512_panel<NV, false>(M, kc, a, ars, acs, b, ldb, c, ldc, load_c, last);
  }
}

void gemm_avx512(std::size_t M, std::size_t N, std::size_t K, const float* a,
                 std::size_t a_row_stride, std::size_t a_col_stride, const float* b,
                 std::size_t ldb, float* c, std::size_t ldc, bool accumulate) {
  if (M == 0 || N == 0) return;
  if (K == 0) {
    if (!accumulate) {
      for (std::size_t i = 0; i < M; ++i) std::memset(c + i * ldc, 0, N * sizeof(float));
    }
    return;
  }
  // Panels of 64 columns; k blocks of <= 128 so that the B block in use (128 x 64
  // floats = 32 KiB) stays in L1d while every row tile of A streams past it.
  constexpr std::size_t kPanel = 4 * kLanes;
  constexpr std::size_t kMaxKc = 128;
  const std::size_t k_blocks = (K + kMaxKc - 1) / kMaxKc;
  const std::size_t kc_step = (K + k_blocks - 1) / k_blocks;  // even split, no tiny block

  for (std::size_t n0 = 0; n0 < N;) {
    // A last panel of one vector would sweep A once more for a sliver of C (as in
    // [V | 1] with 65 columns): fold it into the panel before, 5 vectors wide.
    const std::size_t left = N - n0;
    const std::size_t nb = left > kPanel && left <= kPanel + kLanes ? left : std::min(kPanel, left);
    const std::size_t nv = (nb + kLanes - 1) / kLanes;
    const std::size_t rem = nb - (nv - 1) * kLanes;  // lanes used in the last vector
    const bool masked = rem != kLanes;
    const __mmask16 last = first_lanes(rem);
    for (std::size_t k0 = 0; k0 < K; k0 += kc_step) {
      const std::size_t kc = std::min(kc_step, K - k0);
      const bool load_c = accumulate || k0 > 0;
      const float* ap = a + k0 * a_col_stride;
      const float* bp = b + k0 * ldb + n0;
      float* cp = c + n0;
      switch (nv) {
        case 5:
          gemm_avx512_panel_any<5>(masked, M, kc, ap, a_row_stride, a_col_stride, bp, ldb, cp,
                                   ldc, load_c, last);
          break;
        case 4:
          gemm_avx512_panel_any<4>(masked, M, kc, ap, a_row_stride, a_col_stride, bp, ldb, cp,
                                   ldc, load_c, last);
          break;
        case 3:
          gemm_avx512_panel_any<3>(masked, M, kc, ap, a_row_stride, a_col_stride, bp, ldb, cp,
                                   ldc, load_c, last);
          break;
        case 2:
          gemm_avx512_panel_any<2>(masked, M, kc, ap, a_row_stride, a_col_stride, bp, ldb, cp,
                                   ldc, load_c, last);
          break;
        default:
          gemm_avx512_panel_any<1>(masked, M, kc, ap, a_row_stride, a_col_stride, bp, ldb, cp,
                                   ldc, load_c, last);
          break;
      }
    }
    n0 += nb;
  }
}

// ---------------------------------------------------------------------------------
// exp
// ---------------------------------------------------------------------------------

// exp of 16 floats: at most 1.01 ulp over all 2^32 inputs (checked exhaustively), and
// denormal results within 0.75 of their spacing.
// exp(s) = 2^n * exp(r), n = round(s / ln2), r = s - n ln2 in [-ln2/2, ln2/2]:
//  - s is first clamped to [-104, 89]: exp(-104) rounds to 0 and exp(89) overflows, so
//    no result changes, and n stays in [-150, 128]. max/min return their second
//    operand when one is NaN, so a NaN passes through the clamp (and the rest).
//  - r by Cody-Waite: ln2 = ln2_hi + ln2_lo with ln2_hi = float(ln2); n*ln2_hi is a
//    multiple of 2^-24 and |r| < 0.35, so the first FMA is exact.
//  - exp(r) = 1 + r + r^2 q(r), q of degree 4 fitted (minimax relative error, 3.7e-9
//    with these float coefficients) on [-0.3467, 0.3467].
//  - vscalefps multiplies by 2^n with a single rounding: denormal results are
//    correctly rounded from p, overflow gives +inf.
inline __m512 exp_avx512_16(__m512 s) {
  s = _mm512_max_ps(_mm512_set1_ps(-104.0f), s);
  s = _mm512_min_ps(_mm512_set1_ps(89.0f), s);
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(s, _mm512_set1_ps(0x1.715476p+0f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0x1.62e43p-1f), s);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-0x1.05c61p-29f), r);
  __m512 q = _mm512_set1_ps(0x1.6a23f2p-10f);
  q = _mm512_fmadd_ps(q, r, _mm512_set1_ps(0x1.123a0ap-7f));
  q = _mm512_fmadd_ps(q, r, _mm512_set1_ps(0x1.5558f2p-5f));
  q = _mm512_fmadd_ps(q, r, _mm512_set1_ps(0x1.555492p-3f));
  q = _mm512_fmadd_ps(q, r, _mm512_set1_ps(0x1.fffffcp-2f));
  const __m512 r2 = _mm512_mul_ps(r, r);
  const __m512 p = _mm512_add_ps(_mm512_fmadd_ps(q, r2, r), _mm512_set1_ps(1.0f));
  return _mm512_scalef_ps(p, n);
}

// The argument is (x[i] + bias[i]) + offset rounded in float, in that order, as in
// every kernel set.
template <bool kBias>
float exp_bias_avx512_impl(std::size_t n, const float* x, const float* bias, float offset,
                           float* y) {
  const __m512 off = _mm512_set1_ps(offset);
  __m512 sum = _mm512_setzero_ps();
  std::size_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    __m512 s = _mm512_loadu_ps(x + i);
    if (kBias) s = _mm512_add_ps(s, _mm512_loadu_ps(bias + i));
    const __m512 e = exp_avx512_16(_mm512_add_ps(s, off));
    _mm512_storeu_ps(y + i, e);
    sum = _mm512_add_ps(sum, e);
  }
  if (i < n) {
    const __mmask16 m = first_lanes(n - i);
    __m512 s = _mm512_maskz_loadu_ps(m, x + i);
    if (kBias) s = _mm512_add_ps(s, _mm512_maskz_loadu_ps(m, bias + i));
    const __m512 e = exp_avx512_16(_mm512_add_ps(s, off));
    _mm512_mask_storeu_ps(y + i, m, e);
    sum = _mm512_mask_add_ps(sum, m, sum, e);
  }
  float lanes[kLanes];
  _mm512_storeu_ps(lanes, sum);
  float total = 0.0f;
  for (float lane : lanes) total += lane;
  return total;
}

float exp_bias_avx512(std::size_t n, const float* x, const float* bias, float offset,
                      float* y) {
  return bias != nullptr ? exp_bias_avx512_impl<true>(n, x, bias, offset, y)
                         : exp_bias_avx512_impl<false>(n, x, bias, offset, y);
}

// ---------------------------------------------------------------------------------
// gelu
// ---------------------------------------------------------------------------------

// gelu of 16 floats, the formula of gelu_tail.h.
inline __m512 gelu_avx512_16(__m512 v) {
  const __m512 a = _mm512_min_ps(_mm512_abs_ps(v), _mm512_set1_ps(kGeluMaxArg));
  const __m512 hi = _mm512_mul_ps(a, a);
  const __m512 lo = _mm512_fmsub_ps(a, a, hi);  // a^2 - hi, exact
  __m512 e = exp_avx512_16(_mm512_mul_ps(hi, _mm512_set1_ps(-0.5f)));
  e = _mm512_fnmadd_ps(_mm512_mul_ps(e, _mm512_set1_ps(0.5f)), lo, e);  // e (1 - lo / 2)
  const __m512 t =
      _mm512_div_ps(_mm512_set1_ps(1.0f), _mm512_fmadd_ps(a, _mm512_set1_ps(0.25f), _mm512_set1_ps(1.0f)));
  __m512 p = _mm512_set1_ps(kGeluTail[kGeluDegree]);
  PA_UNROLL
  for (int k = kGeluDegree - 1; k >= 0; --k) p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(kGeluTail[k]));
  const __m512 tail = _mm512_mul_ps(_mm512_mul_ps(p, _mm512_set1_ps(0.5f)), e);  // Phi(-a)
  const __mmask16 nonneg = _mm512_cmp_ps_mask(v, _mm512_setzero_ps(), _CMP_GE_OQ);
  const __m512 phi = _mm512_mask_sub_ps(tail, nonneg, _mm512_set1_ps(1.0f), tail);
  return _mm512_mul_ps(v, phi);
}

void gelu_bias_avx512(std::size_t n, const float* bias, float* x) {
  std::size_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    __m512 v = _mm512_loadu_ps(x + i);
    if (bias != nullptr) v = _mm512_add_ps(v, _mm512_loadu_ps(bias + i));
    _mm512_storeu_ps(x + i, gelu_avx512_16(v));
  }
  if (i < n) {
    const __mmask16 m = first_lanes(n - i);
    __m512 v = _mm512_maskz_loadu_ps(m, x + i);
    if (bias != nullptr) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(m, bias + i));
    _mm512_mask_storeu_ps(x + i, m, gelu_avx512_16(v));
  }
}

// ---------------------------------------------------------------------------------
// max
// ---------------------------------------------------------------------------------

// _mm512_max_ps(v, m) returns m when v is NaN: NaN inputs are skipped, and the
// accumulators (starting at -inf) never hold a NaN.
template <bool kBias>
float max_bias_avx512_impl(std::size_t n, const float* x, const float* bias) {
  const __m512 neg_inf = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
  // Four accumulators: the max latency would otherwise bound the loop.
  __m512 m0 = neg_inf, m1 = neg_inf, m2 = neg_inf, m3 = neg_inf;
  auto load = [&](std::size_t i) {
    __m512 v = _mm512_loadu_ps(x + i);
    if (kBias) v = _mm512_add_ps(v, _mm512_loadu_ps(bias + i));
    return v;
  };
  std::size_t i = 0;
  for (; i + 4 * kLanes <= n; i += 4 * kLanes) {
    m0 = _mm512_max_ps(load(i), m0);
    m1 = _mm512_max_ps(load(i + kLanes), m1);
    m2 = _mm512_max_ps(load(i + 2 * kLanes), m2);
    m3 = _mm512_max_ps(load(i + 3 * kLanes), m3);
  }
  for (; i + kLanes <= n; i += kLanes) m0 = _mm512_max_ps(load(i), m0);
  if (i < n) {
    const __mmask16 m = first_lanes(n - i);
    __m512 v = _mm512_maskz_loadu_ps(m, x + i);
    if (kBias) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(m, bias + i));
    m1 = _mm512_mask_max_ps(m1, m, v, m1);
  }
  return _mm512_reduce_max_ps(_mm512_max_ps(_mm512_max_ps(m0, m1), _mm512_max_ps(m2, m3)));
}

float max_bias_avx512(std::size_t n, const float* x, const float* bias) {
  return bias != nullptr ? max_bias_avx512_impl<true>(n, x, bias)
                         : max_bias_avx512_impl<false>(n, x, bias);
}

// acc = fmax(acc, x): a NaN on either side yields the other operand.
inline __m512 fmax_avx512_16(__m512 acc, __m512 x) {
  const __m512 m = _mm512_max_ps(x, acc);  // acc when x is NaN
  const __mmask16 acc_nan = _mm512_cmp_ps_mask(acc, acc, _CMP_UNORD_Q);
  return _mm512_mask_mov_ps(m, acc_nan, x);
}

void max_accumulate_avx512(std::size_t n, const float* x, float* acc) {
  std::size_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    _mm512_storeu_ps(acc + i, fmax_avx512_16(_mm512_loadu_ps(acc + i), _mm512_loadu_ps(x + i)));
  }
  if (i < n) {
    const __mmask16 m = first_lanes(n - i);
    const __m512 r =
        fmax_avx512_16(_mm512_maskz_loadu_ps(m, acc + i), _mm512_maskz_loadu_ps(m, x + i));
    _mm512_mask_storeu_ps(acc + i, m, r);
  }
}

// Four accumulators so the adds of consecutive vectors do not wait on each other.
float dot_avx512(std::size_t n, const float* a, const float* b) {
  __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps(), s2 = _mm512_setzero_ps(),
         s3 = _mm512_setzero_ps();
  std::size_t i = 0;
  for (; i + 4 * kLanes <= n; i += 4 * kLanes) {
    s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), s0);
    s1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + kLanes), _mm512_loadu_ps(b + i + kLanes), s1);
    s2 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 2 * kLanes), _mm512_loadu_ps(b + i + 2 * kLanes), s2);
    s3 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 3 * kLanes), _mm512_loadu_ps(b + i + 3 * kLanes), s3);
  }
  for (; i + kLanes <= n; i += kLanes) {
    s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), s0);
  }
  if (i < n) {
    const __mmask16 m = first_lanes(n - i);
    s1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + i), _mm512_maskz_loadu_ps(m, b + i), s1);
  }
  float lanes[kLanes];
  _mm512_storeu_ps(lanes, _mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3)));
  float total = 0.0f;
  for (float lane : lanes) total += lane;
  return total;
}

}  // namespace

// 12 independent accumulators: two FMA pipes with 4-cycle latency need at least 8.
static double fma_peak_avx512(std::size_t iterations, float* sink) {
  __m512 acc[12];
  for (int i = 0; i < 12; ++i) acc[i] = _mm512_set1_ps(1.0f + 0.001f * i);
  const __m512 b = _mm512_set1_ps(0.999999f), c = _mm512_set1_ps(1e-7f);
  for (std::size_t it = 0; it < iterations; ++it) {
    PA_UNROLL
    for (int i = 0; i < 12; ++i) acc[i] = _mm512_fmadd_ps(acc[i], b, c);
  }
  __m512 total = acc[0];
  for (int i = 1; i < 12; ++i) total = _mm512_add_ps(total, acc[i]);
  float lanes[16];
  _mm512_storeu_ps(lanes, total);
  *sink = lanes[0] + lanes[15];
  return static_cast<double>(iterations) * 12 * 16 * 2;
}

const KernelSet kAvx512Kernels = {"avx512", gemm_avx512, exp_bias_avx512, max_bias_avx512,
                                  max_accumulate_avx512, gelu_bias_avx512, dot_avx512, dot_f64_avx256,
                                  axpy_f64_avx256, fma_peak_avx512};

}  // namespace pa

#endif  // PA_HAVE_AVX512
