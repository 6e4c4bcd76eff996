// Dense building blocks of the transformer layers: linear (x W^T + b with a fused
// activation and residual add), layer normalization, and the head split / merge
// between [B, L, H*dh] and [B, H, L, dh]. Plain C++ on raw arrays: the caller
// validates shapes and owns every buffer.
#pragma once

#include <cstddef>
#include <functional>

#include "core/thread_pool.h"
#include "kernels/kernels.h"

namespace pa {

enum class Activation {
  kNone,
  kRelu,
  kGelu
};  // kGelu = exact erf form: 0.5 x (1 + erf(x / sqrt 2))

// Packs W [out, in] (PyTorch layout) into whatever layout linear() wants; returns the float count
// of the packed buffer, so the caller can allocate it (a Float32Array owned by JS).
std::size_t linear_packed_size(std::size_t in, std::size_t out);
void linear_pack(std::size_t in, std::size_t out, const float* w, float* packed);

// y[r, o] = act(sum_i x[r, i] * W[o, i] + bias[o]) + residual[r, o], rows r < rows.
// bias and residual may be null; residual may alias y (in-place residual add); x never aliases y.
// x rows have stride x_stride (>= in) so a caller can feed a slice; y and residual are dense [rows,
// out]. Splits rows (and columns when rows are few) over the pool; result bits must not depend on
// the pool size.
// row_stable: every row gets the same bits whatever `rows` is (gemm_row_stable), which
// decoding steps need so that a step of many sessions equals single steps.
void linear(std::size_t rows, std::size_t in, std::size_t out, const float* x, std::size_t x_stride,
            const float* packed, const float* bias, const float* residual, Activation act, float* y,
            const KernelSet& kernels, ThreadPool& pool, bool row_stable = false);

// The tiling linear() runs for any weight format: columns in blocks of kLinearBlockCols, rows
// in tiles, items split over the pool by problem size only (so the bits never depend on the
// pool size). product(m, c0, width, x_tile, tile) writes tile[m, width] = x_tile W^T for
// the columns c0 .. c0 + width of W, x_tile being m rows of stride x_stride; bias,
// activation and residual are then applied as in linear().
constexpr std::size_t kLinearBlockCols = 64;
using LinearBlockProduct = std::function<void(std::size_t m, std::size_t c0, std::size_t width,
                                              const float* x_tile, float* tile)>;
void linear_tiled(std::size_t rows, std::size_t in, std::size_t out, const float* x,
                  std::size_t x_stride, const LinearBlockProduct& product, const float* bias,
                  const float* residual, Activation act, float* y, const KernelSet& kernels,
                  ThreadPool& pool);

// y[r, :] = (x[r, :] - mean) / sqrt(var + eps) * gamma + beta (biased variance, like PyTorch);
// gamma/beta may be null (1 / 0). y may alias x. Mean and variance accumulated in double.
void layer_norm(std::size_t rows, std::size_t dim, const float* x, const float* gamma,
                const float* beta, float eps, float* y, ThreadPool& pool);
// The mean and 1 / sqrt(var + eps) of one row as layer_norm computes them (its
// backward recomputes them with this, for the same bits).
void layer_norm_row_stats(std::size_t dim, const float* xr, float eps, double* mean, double* rstd);

// [B, L, H*dh] (row stride src_stride / dst_stride >= H*dh, so a slice of a wider
// projection works) <-> [B, H, L, dh] dense
void split_heads(std::size_t batch, std::size_t len, std::size_t heads, std::size_t head_dim,
                 const float* src, std::size_t src_stride, float* dst, ThreadPool& pool);
void merge_heads(std::size_t batch, std::size_t len, std::size_t heads, std::size_t head_dim,
                 const float* src, float* dst, std::size_t dst_stride, ThreadPool& pool);

}  // namespace pa
