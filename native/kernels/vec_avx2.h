// The AVX2 + FMA target of simd_kernels_inl.h: 8 float lanes in a ymm register.
// Include only from a file compiled with -mavx2 -mfma (avx2.cc). Everything sits in
// an anonymous namespace so no inline function leaves the translation unit built
// with these flags.
#pragma once

#include <immintrin.h>

#include <cstddef>
#include <cstdint>

#include "transpose_avx.h"

namespace pa {
namespace {

struct Avx2 {
  using F = __m256;       // a vector of floats
  using Mask = __m256;    // a comparison result, all-ones lanes where true
  using Lanes = __m256i;  // the first lanes of a vector, for vmaskmovps

  static constexpr std::size_t kLanes = 8;
  // No masked arithmetic and slow masked moves: a row's last partial vector is
  // finished after the full ones, in scalar code or through a local vector.
  static constexpr bool kMaskedTails = false;

  // gemm: panels of 16 columns; k blocks of <= 256 keep the B block in use (16 KiB)
  // in L1d while every row tile of A streams past it. Only 16 ymm registers: the 6x2
  // main tile holds 12 accumulators + 2 B vectors + 1 broadcast.
  static constexpr int kPanelVectors = 2;
  static constexpr bool kFoldLastVector = false;
  static constexpr std::size_t kMaxKc = 256;
  static constexpr std::size_t main_rows(int nv) { return nv >= 2 ? 6 : 8; }
  // Quantized linear tiles: at most kQuantAccumulators accumulators, and accumulators,
  // widened weights and the broadcast all within the 16 registers (a spilled
  // accumulator would chain every k step through a store and a load).
  static constexpr int kQuantAccumulators = 8;
  static constexpr int kRegisters = 16;

  // transpose: blocks of 8 x 8, in ymm registers.
  static constexpr std::size_t kTransposeBlock = 8;
  static void transpose_block(const float* src, std::size_t lds, float* dst, std::size_t ldd) {
    transpose8x8_ymm(src, lds, dst, ldd);
  }

  static F zero() { return _mm256_setzero_ps(); }
  static F set1(float x) { return _mm256_set1_ps(x); }
  static F load(const float* p) { return _mm256_loadu_ps(p); }
  static void store(float* p, F v) { _mm256_storeu_ps(p, v); }
  static F broadcast(const float* p) { return _mm256_broadcast_ss(p); }
  // Widening loads of 8 narrow weights, exact: int8 -> int32 -> float, and bf16 ->
  // float by moving the 16 bits to the top of each lane.
  static F load_i8(const std::int8_t* p) {
    const __m128i q = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p));
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q));
  }
  static F load_bf16(const std::uint16_t* p) {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
  }

  // 0 <= n <= 8. vmaskmovps neither reads nor writes the other lanes (nor faults on them).
  static Lanes first_lanes(std::size_t n) {
    static const std::int32_t kTable[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};
    return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(kTable + kLanes - n));
  }
  static F load_first(Lanes m, const float* p) { return _mm256_maskload_ps(p, m); }
  static void store_first(float* p, Lanes m, F v) { _mm256_maskstore_ps(p, m, v); }

  static F add(F a, F b) { return _mm256_add_ps(a, b); }
  static F sub(F a, F b) { return _mm256_sub_ps(a, b); }
  static F mul(F a, F b) { return _mm256_mul_ps(a, b); }
  static F div(F a, F b) { return _mm256_div_ps(a, b); }
  // max/min return b when either operand is NaN.
  static F max(F a, F b) { return _mm256_max_ps(a, b); }
  static F min(F a, F b) { return _mm256_min_ps(a, b); }
  static F fmadd(F a, F b, F c) { return _mm256_fmadd_ps(a, b, c); }    // a b + c
  static F fnmadd(F a, F b, F c) { return _mm256_fnmadd_ps(a, b, c); }  // c - a b
  static F fmsub(F a, F b, F c) { return _mm256_fmsub_ps(a, b, c); }    // a b - c
  static F abs(F v) { return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), v); }

  static Mask ge(F a, F b) { return _mm256_cmp_ps(a, b, _CMP_GE_OQ); }
  static Mask is_nan(F a) { return _mm256_cmp_ps(a, a, _CMP_UNORD_Q); }
  // b where m is set, a elsewhere.
  static F select(Mask m, F a, F b) { return _mm256_blendv_ps(a, b, m); }

  static F round_nearest(F x) {
    return _mm256_round_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  }
  // p * 2^n for the integral n of exp, in [-150, 128]: 2^n = 2^n1 * 2^n2 with
  // n1 = floor(n/2), n2 = n - n1, both in [-75, 64] so each factor is a normal float
  // built from its exponent bits. p * 2^n1 is exact and the second product rounds
  // once: denormal results are correctly rounded from p, and overflow gives +inf.
  // For NaN, n converts to INT_MIN and the factors are meaningless, but p is NaN.
  static F mul_pow2(F p, F n) {
    const __m256i ni = _mm256_cvtps_epi32(n);
    const __m256i n1 = _mm256_srai_epi32(ni, 1);
    const __m256i n2 = _mm256_sub_epi32(ni, n1);
    const __m256i bias = _mm256_set1_epi32(127);
    const __m256 f1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n1, bias), 23));
    const __m256 f2 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n2, bias), 23));
    return _mm256_mul_ps(_mm256_mul_ps(p, f1), f2);
  }

  static float reduce_max(F v) {
    __m128 h = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    h = _mm_max_ps(h, _mm_movehl_ps(h, h));
    h = _mm_max_ss(h, _mm_movehdup_ps(h));
    return _mm_cvtss_f32(h);
  }
};

}  // namespace
}  // namespace pa
