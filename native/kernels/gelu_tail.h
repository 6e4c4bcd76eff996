// The GELU of every kernel set, gelu(v) = v Phi(v) with Phi the standard normal CDF
// (the exact erf form 0.5 v (1 + erf(v / sqrt 2))). Each set evaluates the same
// formula with its own instructions:
//   a = min(|v|, kGeluMaxArg),  Phi(-a) = 0.5 P(t) exp(-a^2 / 2),  t = 1 / (1 + a / 4),
//   gelu(v) = v (1 - Phi(-a)) for v >= 0, v Phi(-a) for v < 0.
// Phi(-a) is computed directly, so negative v keep their relative accuracy (no
// cancellation in 1 + erf). a^2 = hi + lo exactly (hi = float(a * a)); exp(-hi / 2)
// has an exact argument, and exp(-lo / 2) = 1 - lo / 2 to 1e-11 since |lo| < 2^-24 hi.
// At a = 15, exp(-hi / 2) is already 0 in float, so larger |v| give v or -0.
// P is a degree-9 fit of erfc(a / sqrt 2) exp(a^2 / 2) in t over 0 <= a <= 15,
// relative error 1.9e-8 (scripts/fit-gelu-tail.py); in float the whole GELU is within
// about 5e-7 of the exact value (relative), down to results near 1e-38.
#pragma once

namespace pa {

constexpr float kGeluMaxArg = 15.0f;
constexpr int kGeluDegree = 9;
// Coefficients of P, constant term first.
constexpr float kGeluTail[kGeluDegree + 1] = {
    -0x1.32a9e0p-15f, 0x1.9a4626p-3f,  0x1.869528p-3f, 0x1.e79e58p-3f,  -0x1.aae892p-6f,
    0x1.299b84p-1f,   -0x1.44340ap-1f, 0x1.875c32p-1f, -0x1.867546p-2f, 0x1.0da4dap-4f};

}  // namespace pa
