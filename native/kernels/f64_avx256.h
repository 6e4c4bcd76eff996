// The double-precision sampling helpers (see DotF64Fn in kernels.h) with 256-bit
// vectors, shared by the AVX2 and AVX-512 sets: lane l of the accumulator is exactly
// the scalar reference's s_l, and mul/add stay separate, so the bits match it.
// Include only from files compiled with -mavx2.
#pragma once

#include <immintrin.h>

#include <cstddef>

namespace pa {
namespace {

inline double dot_f64_avx256(std::size_t n, const double* a, const double* b) {
  __m256d acc = _mm256_setzero_pd();
  std::size_t i = 0;
  for (; i + 4 <= n; i += 4)
    acc = _mm256_add_pd(acc, _mm256_mul_pd(_mm256_loadu_pd(a + i), _mm256_loadu_pd(b + i)));
  double s[4];
  _mm256_storeu_pd(s, acc);
  for (; i < n; ++i) s[0] += a[i] * b[i];
  return (s[0] + s[1]) + (s[2] + s[3]);
}

inline void axpy_f64_avx256(std::size_t n, double f, const double* x, double* y) {
  const __m256d fv = _mm256_set1_pd(f);
  std::size_t i = 0;
  for (; i + 4 <= n; i += 4) {
    _mm256_storeu_pd(
        y + i, _mm256_sub_pd(_mm256_loadu_pd(y + i), _mm256_mul_pd(fv, _mm256_loadu_pd(x + i))));
  }
  for (; i < n; ++i) y[i] -= f * x[i];
}

}  // namespace
}  // namespace pa
