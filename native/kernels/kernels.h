// Micro-kernels: the innermost loops, one implementation per instruction set.
//
// Every family has one signature; each ISA file (scalar.cc, avx2.cc, avx512.cc)
// fills a KernelSet with its own versions (the vector ones are one body each,
// simd_kernels_inl.h, instantiated per target). Drivers in native/core never call an
// ISA directly: they receive a KernelSet chosen once at load time (dispatch.cc),
// so tests can run every compiled path, not only the one the CPU would pick.
#pragma once

#include <cstddef>
#include <cstdint>

namespace pa {

// C[M x N] = (accumulate ? C : 0) + A[M x K] * B[K x N]
//   A(i, k) = a[i * a_row_stride + k * a_col_stride]  (any strides: A may be a transpose)
//   B(k, n) = b[k * ldb + n]                          (rows contiguous)
//   C(i, n) = c[i * ldc + n]                          (rows contiguous)
// No alignment is assumed for any pointer. K == 0 with accumulate == false writes zeros.
using GemmFn = void (*)(std::size_t M, std::size_t N, std::size_t K, const float* a,
                        std::size_t a_row_stride, std::size_t a_col_stride, const float* b,
                        std::size_t ldb, float* c, std::size_t ldc, bool accumulate);

// Weight-only quantized products, C[M x N] = X[M x K] * W[K x N] with W stored narrow
// and widened in registers (never expanded to a float buffer):
//   X(i, k) = x[i * ldx + k], C(i, n) = c[i * ldc + n] (rows contiguous, C written, not added to)
//   W(k, n) = w[k * ldw + n]; each row of w is readable up to round_up(N, 16) columns
//   (the packing pads with zeros), so the kernels load whole vectors.
// int8: C(i, n) = (sum_k X(i, k) * float(q(k, n))) * scale[n]: the sum in float, then one
// multiplication by the column's scale.
// bf16: the weight is the exact float whose upper 16 bits are w(k, n) (lower bits 0);
// the sum is in float.
// Row-stable: each C(i, n) is one chain of multiply-adds over k in ascending order (fused
// or not, as the kernel set's own), so row i gets the same bits whatever M is and
// whichever row tile it lands in: a batched decoding step equals its rows run alone.
// No alignment is assumed for any pointer; K == 0 writes zeros.
using LinearInt8Fn = void (*)(std::size_t M, std::size_t N, std::size_t K, const float* x,
                              std::size_t ldx, const std::int8_t* w, std::size_t ldw,
                              const float* scale, float* c, std::size_t ldc);
using LinearBf16Fn = void (*)(std::size_t M, std::size_t N, std::size_t K, const float* x,
                              std::size_t ldx, const std::uint16_t* w, std::size_t ldw, float* c,
                              std::size_t ldc);

// y[i] = exp(x[i] + (bias ? bias[i] : 0) + offset), for i < n. y may alias x.
// Accurate to a few ulp over the whole float range: large arguments give +inf,
// very negative ones give 0 (or a denormal), NaN stays NaN.
// Returns the sum of the y[i] (float partial sums; the order is the kernel's own),
// which softmax needs and which costs almost nothing while y is in registers.
using ExpBiasFn = float (*)(std::size_t n, const float* x, const float* bias, float offset,
                            float* y);

// max over i < n of (x[i] + (bias ? bias[i] : 0)); -inf when n == 0. NaN inputs are ignored.
using MaxBiasFn = float (*)(std::size_t n, const float* x, const float* bias);

// acc[i] = max(acc[i], x[i]) for i < n (running per-feature maximum).
using MaxAccumulateFn = void (*)(std::size_t n, const float* x, float* acc);

// x[i] = gelu(x[i] + (bias ? bias[i] : 0)) for i < n, in place: the exact erf form
// 0.5 v (1 + erf(v / sqrt 2)), within ~5e-7 relative everywhere (negative v included;
// results below ~1e-38 are denormal or 0; see gelu_tail.h). NaN stays NaN.
using GeluBiasFn = void (*)(std::size_t n, const float* bias, float* x);

// sum over i < n of a[i] * b[i] (float partial sums; the order is the kernel's own).
using DotFn = float (*)(std::size_t n, const float* a, const float* b);

// Double-precision helpers of the seeded sampling, which must give the same bits
// in every kernel set: products and sums are rounded separately (never fused) and
// in one fixed order.
// dot: four partial sums s_l += a[i + l] * b[i + l] over the full groups of four,
// the tail added to s_0, result (s_0 + s_1) + (s_2 + s_3).
using DotF64Fn = double (*)(std::size_t n, const double* a, const double* b);
// y[i] = y[i] - f * x[i] for i < n.
using AxpyF64Fn = void (*)(std::size_t n, double f, const double* x, double* y);

// dst(c, r) = src(r, c) for r < rows, c < cols: src(r, c) = src[r * lds + c],
// dst(c, r) = dst[c * ldd + r]. Only those elements of dst are written; no alignment
// is assumed. Packs a GEMM operand whose rows must be contiguous (K'^T, K^T, S^T).
using TransposeFn = void (*)(std::size_t rows, std::size_t cols, const float* src, std::size_t lds,
                             float* dst, std::size_t ldd);

// The machine's multiply-add peak with this ISA: runs `iterations` rounds of
// independent vector FMAs held in registers and returns the flops performed
// (writes a value derived from them to *sink so nothing is optimized away).
// Benchmarks report achieved GFLOP/s against it.
using FmaPeakFn = double (*)(std::size_t iterations, float* sink);

struct KernelSet {
  const char* name;  // "scalar", "avx2", "avx512"
  GemmFn gemm;
  // The same product, where each row of C gets the same bits whatever M is (the rows
  // of one call never change how k is summed): batched decoding steps equal single ones.
  // Thin tiles lose their split accumulators, so it is slower when B sits in cache.
  GemmFn gemm_row_stable;
  ExpBiasFn exp_bias;
  MaxBiasFn max_bias;
  MaxAccumulateFn max_accumulate;
  GeluBiasFn gelu_bias;
  DotFn dot;
  DotF64Fn dot_f64;
  AxpyF64Fn axpy_f64;
  FmaPeakFn fma_peak;
  LinearInt8Fn linear_int8;
  LinearBf16Fn linear_bf16;
  TransposeFn transpose;
};

// The ISA files each define one of these; the AVX ones only on x86-64 builds
// (PA_HAVE_AVX2 / PA_HAVE_AVX512 are defined by both build systems there).
extern const KernelSet kScalarKernels;
#if defined(PA_HAVE_AVX2)
extern const KernelSet kAvx2Kernels;
#endif
#if defined(PA_HAVE_AVX512)
extern const KernelSet kAvx512Kernels;
#endif

}  // namespace pa
