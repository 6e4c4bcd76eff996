// The exp of the vector kernel sets (simd_kernels_inl.h), at most 1.01 ulp over all
// 2^32 float inputs (checked exhaustively), denormal results within 0.75 of their
// spacing. exp(s) = 2^n * exp(r), n = round(s / ln2), r = s - n ln2 in [-ln2/2, ln2/2]:
//  - s is first clamped to [-104, 89]: exp(-104) rounds to 0 and exp(89) overflows, so
//    no result changes, and n stays in [-150, 128]. max/min return their second
//    operand when one is NaN, so a NaN passes through the clamp (and the rest).
//  - r by Cody-Waite: ln2 = ln2_hi + ln2_lo with ln2_hi = float(ln2); n*ln2_hi is a
//    multiple of 2^-24 and |r| < 0.35, so the first FMA is exact.
//  - exp(r) = 1 + r + r^2 q(r), q of degree 4 fitted (minimax relative error, 3.7e-9
//    with these float coefficients) on [-0.3467, 0.3467].
//  - the product by 2^n is the target's own (mul_pow2 in vec_*.h), rounded once.
// The scalar set uses std::exp instead.
#pragma once

namespace pa {

constexpr float kExpMinArg = -104.0f;
constexpr float kExpMaxArg = 89.0f;
constexpr float kExpLog2e = 0x1.715476p+0f;
constexpr float kExpLn2Hi = 0x1.62e43p-1f;
constexpr float kExpLn2Lo = -0x1.05c61p-29f;
// Coefficients of q (degree 4), constant term first.
constexpr float kExpPoly[5] = {0x1.fffffcp-2f, 0x1.555492p-3f, 0x1.5558f2p-5f, 0x1.123a0ap-7f,
                               0x1.6a23f2p-10f};

}  // namespace pa
