// Portable micro-kernels: plain C++ with no intrinsics, for any CPU (arm64 included)
// and as the reference path that tests can force. Loops are written so that the
// compiler can vectorize them for the baseline ISA.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>

#include "gelu_tail.h"
#include "kernels.h"

namespace pa {
namespace {

// c[n] += a0 b0[n] + a1 b1[n] + a2 b2[n] + a3 b3[n], added left to right. Four rows of
// B per pass cut the loads and stores of C by four; __restrict (C never aliases B)
// lets the compiler vectorize without runtime overlap checks.
void axpy4_scalar(std::size_t n, float a0, const float* __restrict b0, float a1,
                  const float* __restrict b1, float a2, const float* __restrict b2, float a3,
                  const float* __restrict b3, float* __restrict c) {
  for (std::size_t j = 0; j < n; ++j) {
    c[j] = c[j] + a0 * b0[j] + a1 * b1[j] + a2 * b2[j] + a3 * b3[j];
  }
}

void axpy1_scalar(std::size_t n, float a0, const float* __restrict b0, float* __restrict c) {
  for (std::size_t j = 0; j < n; ++j) c[j] += a0 * b0[j];
}

// Loops i, k, n: the innermost loop runs along contiguous rows of B and C.
void gemm_scalar(std::size_t M, std::size_t N, std::size_t K, const float* a,
                 std::size_t a_row_stride, std::size_t a_col_stride, const float* b,
                 std::size_t ldb, float* c, std::size_t ldc, bool accumulate) {
  if (N == 0) return;
  for (std::size_t i = 0; i < M; ++i) {
    const float* ai = a + i * a_row_stride;
    float* ci = c + i * ldc;
    if (!accumulate) std::memset(ci, 0, N * sizeof(float));
    std::size_t k = 0;
    for (; k + 4 <= K; k += 4) {
      const float* bk = b + k * ldb;
      axpy4_scalar(N, ai[k * a_col_stride], bk, ai[(k + 1) * a_col_stride], bk + ldb,
                   ai[(k + 2) * a_col_stride], bk + 2 * ldb, ai[(k + 3) * a_col_stride],
                   bk + 3 * ldb, ci);
    }
    for (; k < K; ++k) axpy1_scalar(N, ai[k * a_col_stride], b + k * ldb, ci);
  }
}

// The argument is (x[i] + bias[i]) + offset rounded in float, in that order, as in
// every kernel set; std::exp(float) handles overflow, denormals and NaN.
float exp_bias_scalar(std::size_t n, const float* x, const float* bias, float offset, float* y) {
  float total = 0.0f;
  if (bias != nullptr) {
    for (std::size_t i = 0; i < n; ++i) {
      const float s = x[i] + bias[i];
      y[i] = std::exp(s + offset);
      total += y[i];
    }
  } else {
    for (std::size_t i = 0; i < n; ++i) {
      y[i] = std::exp(x[i] + offset);
      total += y[i];
    }
  }
  return total;
}

// `v > m` is false for NaN, so NaN inputs are skipped.
float max_bias_scalar(std::size_t n, const float* x, const float* bias) {
  float m = -std::numeric_limits<float>::infinity();
  if (bias != nullptr) {
    for (std::size_t i = 0; i < n; ++i) {
      const float v = x[i] + bias[i];
      if (v > m) m = v;
    }
  } else {
    for (std::size_t i = 0; i < n; ++i) {
      if (x[i] > m) m = x[i];
    }
  }
  return m;
}

// acc = fmax(acc, x): a NaN on either side yields the other operand.
void max_accumulate_scalar(std::size_t n, const float* x, float* acc) {
  for (std::size_t i = 0; i < n; ++i) {
    const float a = acc[i], v = x[i];
    if (v > a || a != a) acc[i] = v;
  }
}

// Four partial sums: a fixed order without one long chain of dependent adds. For
// doubles this is the sampling helpers' reference arithmetic (see kernels.h): the
// other sets must match it bit for bit.
// The formula of gelu_tail.h; a^2 - hi is exact in double (a * a has 48 bits).
void gelu_bias_scalar(std::size_t n, const float* bias, float* x) {
  for (std::size_t i = 0; i < n; ++i) {
    const float v = bias != nullptr ? x[i] + bias[i] : x[i];
    const float a = std::fmin(std::fabs(v), kGeluMaxArg);  // NaN gives kGeluMaxArg; v keeps the NaN
    const float hi = a * a;
    const float lo = static_cast<float>(static_cast<double>(a) * a - hi);
    float e = std::exp(-0.5f * hi);
    e = e - 0.5f * e * lo;
    const float t = 1.0f / (1.0f + 0.25f * a);
    float p = kGeluTail[kGeluDegree];
    for (int k = kGeluDegree - 1; k >= 0; --k) p = p * t + kGeluTail[k];
    const float tail = 0.5f * p * e;
    x[i] = v * (v >= 0.0f ? 1.0f - tail : tail);
  }
}

template <typename T>
T dot4(std::size_t n, const T* a, const T* b) {
  T s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  std::size_t i = 0;
  for (; i + 4 <= n; i += 4) {
    s0 += a[i] * b[i];
    s1 += a[i + 1] * b[i + 1];
    s2 += a[i + 2] * b[i + 2];
    s3 += a[i + 3] * b[i + 3];
  }
  for (; i < n; ++i) s0 += a[i] * b[i];
  return (s0 + s1) + (s2 + s3);
}

float dot_scalar(std::size_t n, const float* a, const float* b) { return dot4(n, a, b); }
double dot_f64_scalar(std::size_t n, const double* a, const double* b) { return dot4(n, a, b); }

void axpy_f64_scalar(std::size_t n, double f, const double* x, double* y) {
  for (std::size_t i = 0; i < n; ++i) y[i] -= f * x[i];
}

// Narrow weights widened exactly: int8 to float, bf16 as the top 16 bits of a float.
inline float widen(std::int8_t q) { return static_cast<float>(q); }
inline float widen(std::uint16_t h) {
  const std::uint32_t bits = static_cast<std::uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

// Loops i, k, n as in gemm_scalar; the column scale (int8) multiplies the finished sums.
template <class W>
void quant_linear_scalar(std::size_t M, std::size_t N, std::size_t K, const float* x,
                         std::size_t ldx, const W* w, std::size_t ldw, const float* scale, float* c,
                         std::size_t ldc) {
  for (std::size_t i = 0; i < M; ++i) {
    float* __restrict ci = c + i * ldc;
    std::memset(ci, 0, N * sizeof(float));
    for (std::size_t k = 0; k < K; ++k) {
      const float xk = x[i * ldx + k];
      const W* __restrict wk = w + k * ldw;
      for (std::size_t n = 0; n < N; ++n) ci[n] += xk * widen(wk[n]);
    }
    if (scale != nullptr) {
      for (std::size_t n = 0; n < N; ++n) ci[n] *= scale[n];
    }
  }
}

void linear_int8_scalar(std::size_t M, std::size_t N, std::size_t K, const float* x,
                        std::size_t ldx, const std::int8_t* w, std::size_t ldw, const float* scale,
                        float* c, std::size_t ldc) {
  quant_linear_scalar(M, N, K, x, ldx, w, ldw, scale, c, ldc);
}

void linear_bf16_scalar(std::size_t M, std::size_t N, std::size_t K, const float* x,
                        std::size_t ldx, const std::uint16_t* w, std::size_t ldw, float* c,
                        std::size_t ldc) {
  quant_linear_scalar(M, N, K, x, ldx, w, ldw, static_cast<const float*>(nullptr), c, ldc);
}

}  // namespace

// The portable build's multiply-add rate (the compiler may vectorize this loop
// for the baseline ISA, as it does the other scalar kernels).
static double fma_peak_scalar(std::size_t iterations, float* sink) {
  float acc[16];
  for (int i = 0; i < 16; ++i) acc[i] = 1.0f + 0.001f * i;
  const float b = 0.999999f, c = 1e-7f;
  for (std::size_t it = 0; it < iterations; ++it) {
    for (int i = 0; i < 16; ++i) acc[i] = acc[i] * b + c;
  }
  float total = 0.0f;
  for (int i = 0; i < 16; ++i) total += acc[i];
  *sink = total;
  return static_cast<double>(iterations) * 16 * 2;
}

void transpose_scalar(std::size_t rows, std::size_t cols, const float* src, std::size_t lds,
                      float* dst, std::size_t ldd) {
  for (std::size_t r = 0; r < rows; ++r) {
    for (std::size_t c = 0; c < cols; ++c) dst[c * ldd + r] = src[r * lds + c];
  }
}

const KernelSet kScalarKernels = {
    "scalar",           gemm_scalar,
    gemm_scalar,  // row by row already: a row's bits never depend on M
    exp_bias_scalar,    max_bias_scalar,    max_accumulate_scalar, gelu_bias_scalar,
    dot_scalar,         dot_f64_scalar,     axpy_f64_scalar,       fma_peak_scalar,
    linear_int8_scalar, linear_bf16_scalar, transpose_scalar};

}  // namespace pa
