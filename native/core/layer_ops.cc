#include "core/layer_ops.h"

#include <algorithm>
#include <cmath>
#include <cstring>

namespace pa {
namespace {

// Packed W: column blocks of kBlockCols output columns (the last one narrower), each
// stored as its own [in, width] row-major array, one after the other. A block is the
// B operand of one gemm call with rows of `width` contiguous floats, so the k rows the
// micro-kernel walks are 256 bytes apart whatever `out` is (a plain [in, out] layout
// puts them `out` floats apart, which for out = 2048 maps them all to a few L1 sets).
constexpr std::size_t kBlockCols = kLinearBlockCols;
// Rows of x per gemm call. The x tile (kRowTile x in) is read once per column block
// and stays in L2 across the blocks of a work item; the output tile (kRowTile x 64)
// gets bias, activation and residual while it is still in L1.
constexpr std::size_t kRowTile = 64;
// Column blocks per work item: a thread walks consecutive row tiles of one group of
// blocks, so the group's slice of W (in x 256 floats, 512 KiB for in = 512) stays in L2.
constexpr std::size_t kGroupBlocks = 4;
// With fewer work items than this, groups are single blocks (few rows: split columns).
constexpr std::size_t kMinItems = 8;
// A decoding step's single row stays under kMinWorkPerPiece: it runs on the calling thread.

std::size_t ceil_div(std::size_t a, std::size_t b) { return (a + b - 1) / b; }

// y[r, :] = act(tile[r, :] + bias) + residual[r, :] for r < m, over `width` columns.
// tile is [m, width] (modified); y and residual have row stride ld and may alias.
void finish_tile(std::size_t m, std::size_t width, float* tile, const float* bias,
                 const float* residual, std::size_t ld, Activation act, float* y,
                 const KernelSet& kernels) {
  for (std::size_t r = 0; r < m; ++r) {
    float* t = tile + r * width;
    if (act == Activation::kGelu) {
      kernels.gelu_bias(width, bias, t);  // the kernel set's vectorized GELU, bias included
    } else {
      if (bias != nullptr) {
        for (std::size_t j = 0; j < width; ++j) t[j] += bias[j];
      }
      if (act == Activation::kRelu) {
        for (std::size_t j = 0; j < width; ++j) t[j] = t[j] < 0.0f ? 0.0f : t[j];  // NaN stays NaN
      }
    }
    float* y_row = y + r * ld;
    if (residual != nullptr) {
      const float* res_row = residual + r * ld;
      for (std::size_t j = 0; j < width; ++j) y_row[j] = t[j] + res_row[j];
    } else {
      std::memcpy(y_row, t, width * sizeof(float));
    }
  }
}

}  // namespace

std::size_t linear_packed_size(std::size_t in, std::size_t out) { return in * out; }

void linear_pack(std::size_t in, std::size_t out, const float* w, float* packed) {
  for (std::size_t c0 = 0; c0 < out; c0 += kBlockCols) {
    const std::size_t width = std::min(kBlockCols, out - c0);
    float* block = packed + c0 * in;
    for (std::size_t j = 0; j < width; ++j) {
      const float* w_row = w + (c0 + j) * in;
      for (std::size_t i = 0; i < in; ++i) block[i * width + j] = w_row[i];
    }
  }
}

void linear_tiled(std::size_t rows, std::size_t in, std::size_t out, const float* x,
                  std::size_t x_stride, const LinearBlockProduct& product, const float* bias,
                  const float* residual, Activation act, float* y, const KernelSet& kernels,
                  ThreadPool& pool) {
  if (rows == 0 || out == 0) return;
  // The work split depends on the problem size only, so every thread count gives the
  // same block products and thus the same bits.
  const std::size_t blocks = ceil_div(out, kBlockCols);
  const std::size_t row_tiles = ceil_div(rows, kRowTile);
  const std::size_t group_blocks =
      row_tiles * ceil_div(blocks, kGroupBlocks) < kMinItems ? 1 : kGroupBlocks;
  const std::size_t groups = ceil_div(blocks, group_blocks);
  const std::size_t item_work = std::min(rows, kRowTile) * std::max<std::size_t>(in, 1) *
                                std::min(out, group_blocks * kBlockCols);
  const std::size_t grain = std::max<std::size_t>(1, kMinWorkPerPiece / item_work);
  pool.parallel_for(
      groups * row_tiles, grain, [&](std::size_t begin, std::size_t end, std::size_t) {
        // 16 KiB on the stack rather than thread_scratch, so a caller may hold its own
        // thread_scratch across the call.
        alignas(64) float tile[kRowTile * kBlockCols];
        for (std::size_t item = begin; item < end; ++item) {
          const std::size_t group = item / row_tiles, r0 = (item % row_tiles) * kRowTile;
          const std::size_t m = std::min(kRowTile, rows - r0);
          const std::size_t b_end = std::min(blocks, (group + 1) * group_blocks);
          for (std::size_t b = group * group_blocks; b < b_end; ++b) {
            const std::size_t c0 = b * kBlockCols, width = std::min(kBlockCols, out - c0);
            product(m, c0, width, x + r0 * x_stride, tile);
            finish_tile(m, width, tile, bias != nullptr ? bias + c0 : nullptr,
                        residual != nullptr ? residual + r0 * out + c0 : nullptr, out, act,
                        y + r0 * out + c0, kernels);
          }
        }
      });
}

void linear(std::size_t rows, std::size_t in, std::size_t out, const float* x, std::size_t x_stride,
            const float* packed, const float* bias, const float* residual, Activation act, float* y,
            const KernelSet& kernels, ThreadPool& pool, bool row_stable) {
  const GemmFn gemm = row_stable ? kernels.gemm_row_stable : kernels.gemm;
  linear_tiled(
      rows, in, out, x, x_stride,
      [&](std::size_t m, std::size_t c0, std::size_t width, const float* x_tile, float* tile) {
        gemm(m, width, in, x_tile, x_stride, 1, packed + c0 * in, width, tile, width, false);
      },
      bias, residual, act, y, kernels, pool);
}

// Two passes in double: the mean, then the squared deviations from it, so a
// large common offset (1e4 + small noise) does not cancel away the variance.
void layer_norm_row_stats(std::size_t dim, const float* xr, float eps, double* mean_out,
                          double* rstd_out) {
  double s[4] = {0, 0, 0, 0};
  std::size_t i = 0;
  for (; i + 4 <= dim; i += 4) {
    for (std::size_t l = 0; l < 4; ++l) s[l] += xr[i + l];
  }
  for (; i < dim; ++i) s[0] += xr[i];
  const double mean = ((s[0] + s[1]) + (s[2] + s[3])) / static_cast<double>(dim);
  double q[4] = {0, 0, 0, 0};
  for (i = 0; i + 4 <= dim; i += 4) {
    for (std::size_t l = 0; l < 4; ++l) {
      const double d = xr[i + l] - mean;
      q[l] += d * d;
    }
  }
  for (; i < dim; ++i) {
    const double d = xr[i] - mean;
    q[0] += d * d;
  }
  const double var = ((q[0] + q[1]) + (q[2] + q[3])) / static_cast<double>(dim);
  *mean_out = mean;
  *rstd_out = 1.0 / std::sqrt(var + static_cast<double>(eps));
}

void layer_norm(std::size_t rows, std::size_t dim, const float* x, const float* gamma,
                const float* beta, float eps, float* y, ThreadPool& pool) {
  if (rows == 0 || dim == 0) return;
  const std::size_t grain = std::max<std::size_t>(1, 16384 / dim);
  pool.parallel_for(rows, grain, [&](std::size_t begin, std::size_t end, std::size_t) {
    for (std::size_t r = begin; r < end; ++r) {
      const float* xr = x + r * dim;
      float* yr = y + r * dim;
      double mean, rstd;
      layer_norm_row_stats(dim, xr, eps, &mean, &rstd);
      for (std::size_t i = 0; i < dim; ++i) {
        double v = (xr[i] - mean) * rstd;
        if (gamma != nullptr) v *= gamma[i];
        if (beta != nullptr) v += beta[i];
        yr[i] = static_cast<float>(v);
      }
    }
  });
}

void split_heads(std::size_t batch, std::size_t len, std::size_t heads, std::size_t head_dim,
                 const float* src, std::size_t src_stride, float* dst, ThreadPool& pool) {
  const std::size_t width = heads * head_dim;
  if (batch * len == 0 || width == 0) return;
  const std::size_t grain = std::max<std::size_t>(1, 16384 / width);
  pool.parallel_for(batch * len, grain, [&](std::size_t begin, std::size_t end, std::size_t) {
    for (std::size_t row = begin; row < end; ++row) {  // row = b * len + l
      const std::size_t b = row / len, l = row % len;
      const float* s = src + row * src_stride;
      for (std::size_t h = 0; h < heads; ++h) {
        std::memcpy(dst + ((b * heads + h) * len + l) * head_dim, s + h * head_dim,
                    head_dim * sizeof(float));
      }
    }
  });
}

void merge_heads(std::size_t batch, std::size_t len, std::size_t heads, std::size_t head_dim,
                 const float* src, float* dst, std::size_t dst_stride, ThreadPool& pool) {
  const std::size_t width = heads * head_dim;
  if (batch * len == 0 || width == 0) return;
  const std::size_t grain = std::max<std::size_t>(1, 16384 / width);
  pool.parallel_for(batch * len, grain, [&](std::size_t begin, std::size_t end, std::size_t) {
    for (std::size_t row = begin; row < end; ++row) {
      const std::size_t b = row / len, l = row % len;
      float* d = dst + row * dst_stride;
      for (std::size_t h = 0; h < heads; ++h) {
        std::memcpy(d + h * head_dim, src + ((b * heads + h) * len + l) * head_dim,
                    head_dim * sizeof(float));
      }
    }
  });
}

}  // namespace pa
