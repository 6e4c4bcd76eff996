// The vector micro-kernels, written once against a target V (vec_avx2.h,
// vec_avx512.h) that supplies the lane count, the operations, the gemm tile shapes
// and how a row's last partial vector is handled (V::kMaskedTails: with masks it
// joins the vector accumulators; without, it is finished after the reduction). Each
// ISA file includes its target header, then this one, and fills its KernelSet with
// kernel_set<V>. Everything is in an anonymous namespace: the same template built
// with other -m flags in another file must stay a separate function.
// The statement order is the one each ISA's kernels have always had; reshaping a
// loop or factoring a helper can change the generated schedule, so compare the
// disassembly of both ISA files before and after such a change.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>

#include "exp_poly.h"
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
namespace simd {

// ---------------------------------------------------------------------------------
// gemm
// ---------------------------------------------------------------------------------

// C tile of MR rows x NV vector columns over kc steps of k. A(i, k) is broadcast one
// element at a time, so A's strides are free; each B row contributes NV contiguous
// (unaligned) loads. With MASKED the last column vector covers only the lanes in
// `last` (N tail), and nothing outside them is read or written.
//
// FMA latency 4 x 2 pipes needs >= 8 independent accumulators; thin tiles (MR*NV < 8)
// split k over KS accumulator sets that are summed at the end, unless ROW_STABLE: then
// every tile sums k in one order, so a row's result does not depend on how many rows
// share the call (slower for thin tiles whose B is in cache).
template <class V, int MR, int NV, bool MASKED, bool ROW_STABLE = false>
void gemm_tile(std::size_t kc, const float* a, std::size_t ars, std::size_t acs, const float* b,
               std::size_t ldb, float* c, std::size_t ldc, bool load_c, typename V::Lanes last) {
  using F = typename V::F;
  constexpr std::size_t kLanes = V::kLanes;
  constexpr int KS = ROW_STABLE || MR * NV >= 8 ? 1 : (MR * NV >= 4 ? 2 : 4);
  F acc[KS][MR][NV];
  PA_UNROLL
  for (int s = 0; s < KS; ++s) {
    PA_UNROLL
    for (int r = 0; r < MR; ++r) {
      PA_UNROLL
      for (int v = 0; v < NV; ++v) acc[s][r][v] = V::zero();
    }
  }
  if (load_c) {
    PA_UNROLL
    for (int r = 0; r < MR; ++r) {
      PA_UNROLL
      for (int v = 0; v < NV; ++v) {
        const float* pc = c + r * ldc + v * kLanes;
        acc[0][r][v] = (MASKED && v == NV - 1) ? V::load_first(last, pc) : V::load(pc);
      }
    }
  }

  std::size_t k = 0;
  for (; k + KS <= kc; k += KS) {
    PA_UNROLL
    for (int s = 0; s < KS; ++s) {
      const float* pa = a + (k + s) * acs;
      const float* pb = b + (k + s) * ldb;
      F bv[NV];
      PA_UNROLL
      for (int v = 0; v < NV; ++v) {
        bv[v] = (MASKED && v == NV - 1) ? V::load_first(last, pb + v * kLanes)
                                        : V::load(pb + v * kLanes);
      }
      PA_UNROLL
      for (int r = 0; r < MR; ++r) {
        const F av = V::broadcast(pa + r * ars);
        PA_UNROLL
        for (int v = 0; v < NV; ++v) acc[s][r][v] = V::fmadd(av, bv[v], acc[s][r][v]);
      }
    }
  }
  for (; k < kc; ++k) {  // k tail of the split sets (KS > 1 only)
    const float* pa = a + k * acs;
    const float* pb = b + k * ldb;
    F bv[NV];
    PA_UNROLL
    for (int v = 0; v < NV; ++v) {
      bv[v] =
          (MASKED && v == NV - 1) ? V::load_first(last, pb + v * kLanes) : V::load(pb + v * kLanes);
    }
    PA_UNROLL
    for (int r = 0; r < MR; ++r) {
      const F av = V::broadcast(pa + r * ars);
      PA_UNROLL
      for (int v = 0; v < NV; ++v) acc[0][r][v] = V::fmadd(av, bv[v], acc[0][r][v]);
    }
  }

  PA_UNROLL
  for (int r = 0; r < MR; ++r) {
    PA_UNROLL
    for (int v = 0; v < NV; ++v) {
      F sum = acc[0][r][v];
      PA_UNROLL
      for (int s = 1; s < KS; ++s) sum = V::add(sum, acc[s][r][v]);
      float* pc = c + r * ldc + v * kLanes;
      if (MASKED && v == NV - 1) {
        V::store_first(pc, last, sum);
      } else {
        V::store(pc, sum);
      }
    }
  }
}

// All M rows of one column panel (NV vectors wide) for one k block: the target's
// main tile, then 4-, 2- and 1-row tiles for the leftover rows.
template <class V, int NV, bool MASKED, bool ROW_STABLE>
void gemm_panel(std::size_t M, std::size_t kc, const float* a, std::size_t ars, std::size_t acs,
                const float* b, std::size_t ldb, float* c, std::size_t ldc, bool load_c,
                typename V::Lanes last) {
  constexpr std::size_t MR = V::main_rows(NV);
  // When the rows left after the main tiles would need a thin tile that is
  // load-bound (2 rows: as many loads as multiply-adds) and one main tile plus
  // them make 8, the last main tile's rows go to two 4-row tiles instead
  // (32 rows: 4 x 6 + 4 + 4, not 5 x 6 + 2).
  const std::size_t rest = M % MR;
  const std::size_t main_end = M >= MR && rest != 0 && rest + MR == 8 ? M - 8 : M - rest;
  std::size_t i = 0;
  for (; i < main_end; i += MR) {
    gemm_tile<V, MR, NV, MASKED, ROW_STABLE>(kc, a + i * ars, ars, acs, b, ldb, c + i * ldc, ldc,
                                             load_c, last);
  }
  for (; M - i >= 4; i += 4) {
    gemm_tile<V, 4, NV, MASKED, ROW_STABLE>(kc, a + i * ars, ars, acs, b, ldb, c + i * ldc, ldc,
                                            load_c, last);
  }
  if (M - i >= 2) {
    gemm_tile<V, 2, NV, MASKED, ROW_STABLE>(kc, a + i * ars, ars, acs, b, ldb, c + i * ldc, ldc,
                                            load_c, last);
    i += 2;
  }
  if (M - i >= 1) {
    gemm_tile<V, 1, NV, MASKED, ROW_STABLE>(kc, a + i * ars, ars, acs, b, ldb, c + i * ldc, ldc,
                                            load_c, last);
  }
}

// A panel NV vectors wide, masked or not.
template <class V, int NV, bool ROW_STABLE>
void gemm_panel_any(bool masked, std::size_t M, std::size_t kc, const float* a, std::size_t ars,
                    std::size_t acs, const float* b, std::size_t ldb, float* c, std::size_t ldc,
                    bool load_c, typename V::Lanes last) {
  if (masked) {
    gemm_panel<V, NV, true, ROW_STABLE>(M, kc, a, ars, acs, b, ldb, c, ldc, load_c, last);
  } else {
    gemm_panel<V, NV, false, ROW_STABLE>(M, kc, a, ars, acs, b, ldb, c, ldc, load_c, last);
  }
}

template <class V, bool ROW_STABLE = false>
void gemm(std::size_t M, std::size_t N, std::size_t K, const float* a, std::size_t a_row_stride,
          std::size_t a_col_stride, const float* b, std::size_t ldb, float* c, std::size_t ldc,
          bool accumulate) {
  if (M == 0 || N == 0) return;
  if (K == 0) {
    if (!accumulate) {
      for (std::size_t i = 0; i < M; ++i) std::memset(c + i * ldc, 0, N * sizeof(float));
    }
    return;
  }
  constexpr std::size_t kLanes = V::kLanes;
  constexpr std::size_t kPanel = V::kPanelVectors * kLanes;
  constexpr int kWidest = V::kPanelVectors + (V::kFoldLastVector ? 1 : 0);
  static_assert(kWidest >= 1 && kWidest <= 5, "the panel switch below covers 1 to 5 vectors");
  const std::size_t k_blocks = (K + V::kMaxKc - 1) / V::kMaxKc;
  const std::size_t kc_step = (K + k_blocks - 1) / k_blocks;  // even split, no tiny block

  std::size_t n_start = 0;
  // Row-stable thin rows (a decoding step: M of 1 to 3) lose the split accumulators, so
  // they run one row at a time in tiles 64 floats wide instead: as many independent
  // accumulators again, and the same order of k per element as every other tile.
  constexpr int kWideVectors = static_cast<int>(64 / kLanes);
  if constexpr (ROW_STABLE && kWideVectors > V::kPanelVectors) {
    constexpr std::size_t kWide = kWideVectors * kLanes;
    if (M < 4) {
      for (; n_start + kWide <= N; n_start += kWide) {
        for (std::size_t k0 = 0; k0 < K; k0 += kc_step) {
          const std::size_t kc = std::min(kc_step, K - k0);
          for (std::size_t i = 0; i < M; ++i) {
            gemm_tile<V, 1, kWideVectors, false, true>(
                kc, a + i * a_row_stride + k0 * a_col_stride, a_row_stride, a_col_stride,
                b + k0 * ldb + n_start, ldb, c + i * ldc + n_start, ldc, accumulate || k0 > 0,
                V::first_lanes(kLanes));
          }
        }
      }
    }
  }

  for (std::size_t n0 = n_start; n0 < N;) {
    // With kFoldLastVector, a last panel of one vector joins the panel before.
    const std::size_t left = N - n0;
    const std::size_t nb = V::kFoldLastVector && left > kPanel && left <= kPanel + kLanes
                               ? left
                               : std::min(kPanel, left);
    const std::size_t nv = (nb + kLanes - 1) / kLanes;
    const std::size_t rem = nb - (nv - 1) * kLanes;  // lanes used in the last vector
    const bool masked = rem != kLanes;
    const typename V::Lanes last = V::first_lanes(rem);
    for (std::size_t k0 = 0; k0 < K; k0 += kc_step) {
      const std::size_t kc = std::min(kc_step, K - k0);
      const bool load_c = accumulate || k0 > 0;
      const float* ap = a + k0 * a_col_stride;
      const float* bp = b + k0 * ldb + n0;
      float* cp = c + n0;
#define PA_PANEL(NV)                                                                            \
  gemm_panel_any<V, NV, ROW_STABLE>(masked, M, kc, ap, a_row_stride, a_col_stride, bp, ldb, cp, \
                                    ldc, load_c, last)
      // Cases wider than the target's widest panel are never taken: they fall through.
      switch (nv) {
        case 5:
          if constexpr (kWidest >= 5) {
            PA_PANEL(5);
            break;
          }
          [[fallthrough]];
        case 4:
          if constexpr (kWidest >= 4) {
            PA_PANEL(4);
            break;
          }
          [[fallthrough]];
        case 3:
          if constexpr (kWidest >= 3) {
            PA_PANEL(3);
            break;
          }
          [[fallthrough]];
        case 2:
          if constexpr (kWidest >= 2) {
            PA_PANEL(2);
            break;
          }
          [[fallthrough]];
        default:
          PA_PANEL(1);
          break;
      }
#undef PA_PANEL
    }
    n0 += nb;
  }
}

// ---------------------------------------------------------------------------------
// exp (exp_poly.h)
// ---------------------------------------------------------------------------------

template <class V>
inline typename V::F exp_vec(typename V::F s) {
  using F = typename V::F;
  s = V::max(V::set1(kExpMinArg), s);
  s = V::min(V::set1(kExpMaxArg), s);
  const F n = V::round_nearest(V::mul(s, V::set1(kExpLog2e)));
  F r = V::fnmadd(n, V::set1(kExpLn2Hi), s);
  r = V::fnmadd(n, V::set1(kExpLn2Lo), r);
  // Horner steps written out: the unrolled-loop form compiles to another schedule.
  F q = V::set1(kExpPoly[4]);
  q = V::fmadd(q, r, V::set1(kExpPoly[3]));
  q = V::fmadd(q, r, V::set1(kExpPoly[2]));
  q = V::fmadd(q, r, V::set1(kExpPoly[1]));
  q = V::fmadd(q, r, V::set1(kExpPoly[0]));
  const F r2 = V::mul(r, r);
  const F p = V::add(V::fmadd(q, r2, r), V::set1(1.0f));
  return V::mul_pow2(p, n);
}

// The argument is (x[i] + bias[i]) + offset rounded in float, in that order, as in
// every kernel set.
template <class V, bool kBias>
float exp_bias_impl(std::size_t n, const float* x, const float* bias, float offset, float* y) {
  using F = typename V::F;
  constexpr std::size_t kLanes = V::kLanes;
  const F off = V::set1(offset);
  F sum = V::zero();
  std::size_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    F s = V::load(x + i);
    if (kBias) s = V::add(s, V::load(bias + i));
    const F e = exp_vec<V>(V::add(s, off));
    V::store(y + i, e);
    sum = V::add(sum, e);
  }
  if constexpr (V::kMaskedTails) {
    if (i < n) {
      const typename V::Lanes m = V::first_lanes(n - i);
      F s = V::load_first(m, x + i);
      if (kBias) s = V::add(s, V::load_first(m, bias + i));
      const F e = exp_vec<V>(V::add(s, off));
      V::store_first(y + i, m, e);
      sum = V::mask_add(sum, m, sum, e);
    }
  }
  float lanes[kLanes];
  V::store(lanes, sum);
  float total = 0.0f;
  for (float lane : lanes) total += lane;
  if constexpr (!V::kMaskedTails) {
    if (i < n) {
      // Tail through a local vector, so it gets the very same function as the body.
      const std::size_t rest = n - i;
      float xs[kLanes] = {}, bs[kLanes] = {}, ys[kLanes];
      std::memcpy(xs, x + i, rest * sizeof(float));
      if (kBias) std::memcpy(bs, bias + i, rest * sizeof(float));
      F s = V::load(xs);
      if (kBias) s = V::add(s, V::load(bs));
      V::store(ys, exp_vec<V>(V::add(s, off)));
      std::memcpy(y + i, ys, rest * sizeof(float));
      for (std::size_t t = 0; t < rest; ++t) total += ys[t];
    }
  }
  return total;
}

template <class V>
float exp_bias(std::size_t n, const float* x, const float* bias, float offset, float* y) {
  return bias != nullptr ? exp_bias_impl<V, true>(n, x, bias, offset, y)
                         : exp_bias_impl<V, false>(n, x, bias, offset, y);
}

// ---------------------------------------------------------------------------------
// gelu
// ---------------------------------------------------------------------------------

// The formula of gelu_tail.h.
template <class V>
inline typename V::F gelu_vec(typename V::F v) {
  using F = typename V::F;
  const F a = V::min(V::abs(v), V::set1(kGeluMaxArg));
  const F hi = V::mul(a, a);
  const F lo = V::fmsub(a, a, hi);  // a^2 - hi, exact
  F e = exp_vec<V>(V::mul(hi, V::set1(-0.5f)));
  e = V::fnmadd(V::mul(e, V::set1(0.5f)), lo, e);  // e (1 - lo / 2)
  const F t = V::div(V::set1(1.0f), V::fmadd(a, V::set1(0.25f), V::set1(1.0f)));
  F p = V::set1(kGeluTail[kGeluDegree]);
  PA_UNROLL
  for (int k = kGeluDegree - 1; k >= 0; --k) p = V::fmadd(p, t, V::set1(kGeluTail[k]));
  const F tail = V::mul(V::mul(p, V::set1(0.5f)), e);  // Phi(-a)
  const F phi = V::select(V::ge(v, V::zero()), tail, V::sub(V::set1(1.0f), tail));
  return V::mul(v, phi);
}

template <class V>
void gelu_bias(std::size_t n, const float* bias, float* x) {
  using F = typename V::F;
  constexpr std::size_t kLanes = V::kLanes;
  std::size_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    F v = V::load(x + i);
    if (bias != nullptr) v = V::add(v, V::load(bias + i));
    V::store(x + i, gelu_vec<V>(v));
  }
  if constexpr (V::kMaskedTails) {
    if (i < n) {
      const typename V::Lanes m = V::first_lanes(n - i);
      F v = V::load_first(m, x + i);
      if (bias != nullptr) v = V::add(v, V::load_first(m, bias + i));
      V::store_first(x + i, m, gelu_vec<V>(v));
    }
  } else if (i < n) {  // through a local vector, as in exp_bias
    const std::size_t rest = n - i;
    float xs[kLanes] = {}, bs[kLanes] = {};
    std::memcpy(xs, x + i, rest * sizeof(float));
    if (bias != nullptr) std::memcpy(bs, bias + i, rest * sizeof(float));
    V::store(xs, gelu_vec<V>(V::add(V::load(xs), V::load(bs))));
    std::memcpy(x + i, xs, rest * sizeof(float));
  }
}

// ---------------------------------------------------------------------------------
// max
// ---------------------------------------------------------------------------------

// V::max(v, m) returns m when v is NaN: NaN inputs are skipped, and the accumulators
// (starting at -inf) never hold a NaN. The scalar tail's `v > m` skips NaN the same way.
template <class V, bool kBias>
float max_bias_impl(std::size_t n, const float* x, const float* bias) {
  using F = typename V::F;
  constexpr std::size_t kLanes = V::kLanes;
  // Four accumulators: the max latency would otherwise bound the loop.
  F m0 = V::set1(-std::numeric_limits<float>::infinity()), m1 = m0, m2 = m0, m3 = m0;
  auto load = [&](std::size_t i) {
    F v = V::load(x + i);
    if (kBias) v = V::add(v, V::load(bias + i));
    return v;
  };
  std::size_t i = 0;
  for (; i + 4 * kLanes <= n; i += 4 * kLanes) {
    m0 = V::max(load(i), m0);
    m1 = V::max(load(i + kLanes), m1);
    m2 = V::max(load(i + 2 * kLanes), m2);
    m3 = V::max(load(i + 3 * kLanes), m3);
  }
  for (; i + kLanes <= n; i += kLanes) m0 = V::max(load(i), m0);
  if constexpr (V::kMaskedTails) {
    if (i < n) {
      const typename V::Lanes m = V::first_lanes(n - i);
      F v = V::load_first(m, x + i);
      if (kBias) v = V::add(v, V::load_first(m, bias + i));
      m1 = V::mask_max(m1, m, v, m1);
    }
    return V::reduce_max(V::max(V::max(m0, m1), V::max(m2, m3)));
  } else {
    float m = V::reduce_max(V::max(V::max(m0, m1), V::max(m2, m3)));
    for (; i < n; ++i) {
      const float v = kBias ? x[i] + bias[i] : x[i];
      if (v > m) m = v;
    }
    return m;
  }
}

template <class V>
float max_bias(std::size_t n, const float* x, const float* bias) {
  return bias != nullptr ? max_bias_impl<V, true>(n, x, bias) : max_bias_impl<V, false>(n, x, bias);
}

// acc = fmax(acc, x): a NaN on either side yields the other operand.
template <class V>
inline typename V::F fmax_vec(typename V::F acc, typename V::F x) {
  const typename V::F m = V::max(x, acc);  // acc when x is NaN
  return V::select(V::is_nan(acc), m, x);
}

template <class V>
void max_accumulate(std::size_t n, const float* x, float* acc) {
  constexpr std::size_t kLanes = V::kLanes;
  std::size_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    V::store(acc + i, fmax_vec<V>(V::load(acc + i), V::load(x + i)));
  }
  if constexpr (V::kMaskedTails) {
    if (i < n) {
      const typename V::Lanes m = V::first_lanes(n - i);
      V::store_first(acc + i, m, fmax_vec<V>(V::load_first(m, acc + i), V::load_first(m, x + i)));
    }
  } else {
    for (; i < n; ++i) {
      const float a = acc[i], v = x[i];
      if (v > a || a != a) acc[i] = v;
    }
  }
}

// ---------------------------------------------------------------------------------
// dot
// ---------------------------------------------------------------------------------

// Four accumulators so the adds of consecutive vectors do not wait on each other.
template <class V>
float dot(std::size_t n, const float* a, const float* b) {
  using F = typename V::F;
  constexpr std::size_t kLanes = V::kLanes;
  F s0 = V::zero(), s1 = V::zero(), s2 = V::zero(), s3 = V::zero();
  std::size_t i = 0;
  for (; i + 4 * kLanes <= n; i += 4 * kLanes) {
    s0 = V::fmadd(V::load(a + i), V::load(b + i), s0);
    s1 = V::fmadd(V::load(a + i + kLanes), V::load(b + i + kLanes), s1);
    s2 = V::fmadd(V::load(a + i + 2 * kLanes), V::load(b + i + 2 * kLanes), s2);
    s3 = V::fmadd(V::load(a + i + 3 * kLanes), V::load(b + i + 3 * kLanes), s3);
  }
  for (; i + kLanes <= n; i += kLanes) s0 = V::fmadd(V::load(a + i), V::load(b + i), s0);
  if constexpr (V::kMaskedTails) {
    if (i < n) {
      const typename V::Lanes m = V::first_lanes(n - i);
      s1 = V::fmadd(V::load_first(m, a + i), V::load_first(m, b + i), s1);
    }
  }
  float lanes[kLanes];
  V::store(lanes, V::add(V::add(s0, s1), V::add(s2, s3)));
  float total = 0.0f;
  for (float lane : lanes) total += lane;
  if constexpr (!V::kMaskedTails) {
    for (; i < n; ++i) total += a[i] * b[i];
  }
  return total;
}

// The machine's multiply-add peak: 12 independent accumulators, since two FMA pipes
// with 4-cycle latency need at least 8.
template <class V>
double fma_peak(std::size_t iterations, float* sink) {
  using F = typename V::F;
  F acc[12];
  for (int i = 0; i < 12; ++i) acc[i] = V::set1(1.0f + 0.001f * i);
  const F b = V::set1(0.999999f), c = V::set1(1e-7f);
  for (std::size_t it = 0; it < iterations; ++it) {
    PA_UNROLL
    for (int i = 0; i < 12; ++i) acc[i] = V::fmadd(acc[i], b, c);
  }
  F total = acc[0];
  for (int i = 1; i < 12; ++i) total = V::add(total, acc[i]);
  float lanes[V::kLanes];
  V::store(lanes, total);
  *sink = lanes[0] + lanes[V::kLanes - 1];
  return static_cast<double>(iterations) * 12 * V::kLanes * 2;
}

// ---------------------------------------------------------------------------------
// weight-only quantized linear (int8, bf16)
// ---------------------------------------------------------------------------------

template <class V>
inline typename V::F load_weights(const std::int8_t* p) {
  return V::load_i8(p);
}
template <class V>
inline typename V::F load_weights(const std::uint16_t* p) {
  return V::load_bf16(p);
}

// C tile of MR rows x NV vector columns over all of k: each k step broadcasts the MR
// x values, then widens each weight vector once and uses it for all MR rows right away
// (so a few rows cost little more than one, and one widened vector is live at a time).
// Every column
// is one chain of FMAs in ascending k, whatever MR and NV are (no split accumulator sets):
// a row gets the same bits in any tile, so batched decoding steps equal single ones.
// The tile reads NV whole vectors of every weight row and stores its first `cols`
// columns, times scale[n] when scale is set.

// The widest tile for MR rows: at most 64 columns and kQuantAccumulators vectors, halved
// until the accumulators, the MR broadcasts and one widened vector fit in the registers
// (a spilled accumulator chains every k step through memory). With k never split, the
// NV x MR independent chains are what hide the FMA latency.
template <class V>
constexpr int quant_vectors(int MR) {
  int nv = std::min(64 / static_cast<int>(V::kLanes), std::max(1, V::kQuantAccumulators / MR));
  while (nv > 1 && MR * nv + MR + 1 > V::kRegisters) nv /= 2;
  return nv;
}

template <class V, class W, int MR, int NV>
void quant_tile(std::size_t K, const float* x, std::size_t ldx, const W* w, std::size_t ldw,
                const float* scale, float* c, std::size_t ldc, std::size_t cols) {
  using F = typename V::F;
  constexpr std::size_t kLanes = V::kLanes;
  constexpr std::size_t kWidth = NV * kLanes;
  F acc[MR][NV];
  PA_UNROLL
  for (int r = 0; r < MR; ++r) {
    PA_UNROLL
    for (int v = 0; v < NV; ++v) acc[r][v] = V::zero();
  }
  for (std::size_t k = 0; k < K; ++k) {
    const W* pw = w + k * ldw;
    F xv[MR];
    PA_UNROLL
    for (int r = 0; r < MR; ++r) xv[r] = V::broadcast(x + r * ldx + k);
    PA_UNROLL
    for (int v = 0; v < NV; ++v) {
      const F wv = load_weights<V>(pw + v * kLanes);
      PA_UNROLL
      for (int r = 0; r < MR; ++r) acc[r][v] = V::fmadd(xv[r], wv, acc[r][v]);
    }
  }

  PA_UNROLL
  for (int r = 0; r < MR; ++r) {
    float* pc = c + r * ldc;
    if (cols == kWidth) {
      PA_UNROLL
      for (int v = 0; v < NV; ++v) {
        const F out = scale != nullptr ? V::mul(acc[r][v], V::load(scale + v * kLanes)) : acc[r][v];
        V::store(pc + v * kLanes, out);
      }
    } else {  // the last columns, through a local tile: the same single product
      float lanes[kWidth];
      PA_UNROLL
      for (int v = 0; v < NV; ++v) V::store(lanes + v * kLanes, acc[r][v]);
      for (std::size_t j = 0; j < cols; ++j)
        pc[j] = scale != nullptr ? lanes[j] * scale[j] : lanes[j];
    }
  }
}

// MR rows, all N columns: tiles as wide as quant_vectors allows, then tiles of 16 columns (8 for
// one-vector AVX2 tiles), which never read past the zero padding of the weight rows (whole groups
// of 16 columns).
template <class V, class W, int MR>
void quant_rows(std::size_t N, std::size_t K, const float* x, std::size_t ldx, const W* w,
                std::size_t ldw, const float* scale, float* c, std::size_t ldc) {
  constexpr int kLanes = static_cast<int>(V::kLanes);
  constexpr int NV = quant_vectors<V>(MR);
  constexpr int NT = std::min(NV, std::max(1, 16 / kLanes));
  constexpr std::size_t kMain = NV * V::kLanes, kTail = NT * V::kLanes;
  std::size_t n = 0;
  for (; n + kMain <= N; n += kMain) {
    quant_tile<V, W, MR, NV>(K, x, ldx, w + n, ldw, scale != nullptr ? scale + n : nullptr, c + n,
                             ldc, kMain);
  }
  for (; n < N; n += kTail) {
    quant_tile<V, W, MR, NT>(K, x, ldx, w + n, ldw, scale != nullptr ? scale + n : nullptr, c + n,
                             ldc, std::min(kTail, N - n));
  }
}

// Row tiles of kRows, then 4, 2 and 1 for the rest: a decoding step of 1 to 8 sessions
// is one or two passes over the weights. With 16 registers an 8-row tile holds one
// vector per row and pays 8 broadcasts per widened vector; two 4 x 2 tiles do better.
template <class V, class W>
void quant_linear(std::size_t M, std::size_t N, std::size_t K, const float* x, std::size_t ldx,
                  const W* w, std::size_t ldw, const float* scale, float* c, std::size_t ldc) {
  constexpr int kRows = V::kRegisters >= 32 ? 8 : 4;
  std::size_t i = 0;
  for (; i + kRows <= M; i += kRows) {
    quant_rows<V, W, kRows>(N, K, x + i * ldx, ldx, w, ldw, scale, c + i * ldc, ldc);
  }
  if (kRows > 4 && M - i >= 4) {
    quant_rows<V, W, 4>(N, K, x + i * ldx, ldx, w, ldw, scale, c + i * ldc, ldc);
    i += 4;
  }
  if (M - i >= 2) {
    quant_rows<V, W, 2>(N, K, x + i * ldx, ldx, w, ldw, scale, c + i * ldc, ldc);
    i += 2;
  }
  if (M - i >= 1) quant_rows<V, W, 1>(N, K, x + i * ldx, ldx, w, ldw, scale, c + i * ldc, ldc);
}

template <class V>
void linear_int8(std::size_t M, std::size_t N, std::size_t K, const float* x, std::size_t ldx,
                 const std::int8_t* w, std::size_t ldw, const float* scale, float* c,
                 std::size_t ldc) {
  quant_linear<V>(M, N, K, x, ldx, w, ldw, scale, c, ldc);
}

template <class V>
void linear_bf16(std::size_t M, std::size_t N, std::size_t K, const float* x, std::size_t ldx,
                 const std::uint16_t* w, std::size_t ldw, float* c, std::size_t ldc) {
  quant_linear<V>(M, N, K, x, ldx, w, ldw, static_cast<const float*>(nullptr), c, ldc);
}

// ---------------------------------------------------------------------------------
// transpose
// ---------------------------------------------------------------------------------

// Whole blocks in registers; the right and bottom edges element by element.
template <class V>
void transpose(std::size_t rows, std::size_t cols, const float* src, std::size_t lds, float* dst,
               std::size_t ldd) {
  constexpr std::size_t kB = V::kTransposeBlock;
  const std::size_t rows_b = rows - rows % kB, cols_b = cols - cols % kB;
  for (std::size_t r = 0; r < rows_b; r += kB) {
    for (std::size_t c = 0; c < cols_b; c += kB) {
      V::transpose_block(src + r * lds + c, lds, dst + c * ldd + r, ldd);
    }
    for (std::size_t c = cols_b; c < cols; ++c) {
      for (std::size_t i = r; i < r + kB; ++i) dst[c * ldd + i] = src[i * lds + c];
    }
  }
  for (std::size_t r = rows_b; r < rows; ++r) {
    for (std::size_t c = 0; c < cols; ++c) dst[c * ldd + r] = src[r * lds + c];
  }
}

// The kernel set of target V; the double-precision helpers are the caller's.
template <class V>
constexpr KernelSet kernel_set(const char* name, DotF64Fn dot_f64, AxpyF64Fn axpy_f64) {
  return {name,           gemm<V>,     gemm<V, true>, exp_bias<V>, max_bias<V>, max_accumulate<V>,
          gelu_bias<V>,   dot<V>,      dot_f64,       axpy_f64,    fma_peak<V>, linear_int8<V>,
          linear_bf16<V>, transpose<V>};
}

}  // namespace simd
}  // namespace
}  // namespace pa
