// The AVX-512 (F, DQ, VL) target of simd_kernels_inl.h: 16 float lanes in a zmm
// register. Include only from a file compiled with those flags (avx512.cc).
// Everything sits in an anonymous namespace so no inline function leaves the
// translation unit built with these flags.
#pragma once

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

#include <cstddef>
#include <cstdint>

#include "transpose_avx.h"

namespace pa {
namespace {

struct Avx512 {
  using F = __m512;         // a vector of floats
  using Mask = __mmask16;   // a comparison result, one bit per lane
  using Lanes = __mmask16;  // the first lanes of a vector

  static constexpr std::size_t kLanes = 16;
  // Mask registers make a row's last partial vector as cheap as a full one: it is
  // folded into the vector accumulators before they are reduced.
  static constexpr bool kMaskedTails = true;

  // gemm: panels of 64 columns; k blocks of <= 128 so that the B block in use
  // (128 x 64 floats = 32 KiB) stays in L1d while every row tile of A streams past it.
  // A last panel of one vector would sweep A once more for a sliver of C (as in
  // [V | 1] with 65 columns): it is folded into the panel before, 5 vectors wide.
  // The main tile keeps MR*NV accumulators + NV B vectors + 1 broadcast within the
  // 32 zmm registers (6x4: 24 + 4 + 1; 5x5: 25 + 5 + 1).
  static constexpr int kPanelVectors = 4;
  static constexpr bool kFoldLastVector = true;
  static constexpr std::size_t kMaxKc = 128;
  static constexpr std::size_t main_rows(int nv) { return nv >= 5 ? 5 : (nv >= 4 ? 6 : 8); }
  // Quantized linear tiles: at most kQuantAccumulators accumulators, and accumulators,
  // widened weights and the broadcast all within the 32 registers (a spilled
  // accumulator would chain every k step through a store and a load).
  static constexpr int kQuantAccumulators = 16;
  static constexpr int kRegisters = 32;

  // transpose: blocks of 8 x 8, in ymm registers.
  static constexpr std::size_t kTransposeBlock = 8;
  static void transpose_block(const float* src, std::size_t lds, float* dst, std::size_t ldd) {
    transpose8x8_ymm(src, lds, dst, ldd);
  }

  static F zero() { return _mm512_setzero_ps(); }
  static F set1(float x) { return _mm512_set1_ps(x); }
  static F load(const float* p) { return _mm512_loadu_ps(p); }
  static void store(float* p, F v) { _mm512_storeu_ps(p, v); }
  static F broadcast(const float* p) { return _mm512_set1_ps(*p); }
  // Widening loads of 16 narrow weights, exact: int8 -> int32 -> float, and bf16 ->
  // float by moving the 16 bits to the top of each lane.
  static F load_i8(const std::int8_t* p) {
    const __m128i q = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(q));
  }
  static F load_bf16(const std::uint16_t* p) {
    const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
  }

  // 0 <= n <= 16. Masked loads read nothing beyond the row and masked stores leave
  // the other lanes untouched.
  static Lanes first_lanes(std::size_t n) { return static_cast<__mmask16>((1u << n) - 1u); }
  static F load_first(Lanes m, const float* p) { return _mm512_maskz_loadu_ps(m, p); }
  static void store_first(float* p, Lanes m, F v) { _mm512_mask_storeu_ps(p, m, v); }
  // a op b in the lanes of m, src elsewhere.
  static F mask_add(F src, Lanes m, F a, F b) { return _mm512_mask_add_ps(src, m, a, b); }
  static F mask_max(F src, Lanes m, F a, F b) { return _mm512_mask_max_ps(src, m, a, b); }

  static F add(F a, F b) { return _mm512_add_ps(a, b); }
  static F sub(F a, F b) { return _mm512_sub_ps(a, b); }
  static F mul(F a, F b) { return _mm512_mul_ps(a, b); }
  static F div(F a, F b) { return _mm512_div_ps(a, b); }
  // max/min return b when either operand is NaN.
  static F max(F a, F b) { return _mm512_max_ps(a, b); }
  static F min(F a, F b) { return _mm512_min_ps(a, b); }
  static F fmadd(F a, F b, F c) { return _mm512_fmadd_ps(a, b, c); }    // a b + c
  static F fnmadd(F a, F b, F c) { return _mm512_fnmadd_ps(a, b, c); }  // c - a b
  static F fmsub(F a, F b, F c) { return _mm512_fmsub_ps(a, b, c); }    // a b - c
  static F abs(F v) { return _mm512_abs_ps(v); }

  static Mask ge(F a, F b) { return _mm512_cmp_ps_mask(a, b, _CMP_GE_OQ); }
  static Mask is_nan(F a) { return _mm512_cmp_ps_mask(a, a, _CMP_UNORD_Q); }
  // b where m is set, a elsewhere.
  static F select(Mask m, F a, F b) { return _mm512_mask_mov_ps(a, m, b); }

  static F round_nearest(F x) {
    return _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  }
  // p * 2^n: vscalefps does it with a single rounding, so denormal results are
  // correctly rounded from p and overflow gives +inf.
  static F mul_pow2(F p, F n) { return _mm512_scalef_ps(p, n); }

  static float reduce_max(F v) { return _mm512_reduce_max_ps(v); }
};

}  // namespace
}  // namespace pa
