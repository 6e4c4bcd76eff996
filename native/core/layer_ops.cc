#include "core/layer_ops.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "core/memory.h"

namespace pa {
namespace {

// Packed W: column blocks of kBlockCols output columns (the last one narrower), each
// stored as its own [in, width] row-major array, one after the other. A block is the
// B operand of one gemm call with rows of `width` contiguous floats, so the k rows the
// micro-kernel walks are 256 bytes apart whatever `out` is (a plain [in, out] layout
// puts them `out` floats apart, which for out = 2048 maps them all to a few L1 sets).
constexpr std::size_t kBlockCols = 64;
// Rows of x per gemm call. The x tile (kRowTile x in) is read once per column block
// and stays in L2 across the blocks of a work item; the output tile (kRowTile x 64)
// gets bias, activation and residual while it is still in L1.
constexpr std::size_t kRowTile = 64;
// Column blocks per work item: a thread walks consecutive row tiles of one group of
// blocks, so the group's slice of W (in x 256 floats, 512 KiB for in = 512) stays in L2.
constexpr std::size_t kGroupBlocks = 4;
// With fewer work items than this, groups are single blocks (few rows: split columns).
constexpr std::size_t kMinItems = 8;

std::size_t ceil_div(std::size_t a, std::size_t b) { return (a + b - 1) / b; }

// a with its 12 low mantissa bits cleared: 12 significant bits, so a * a is exact.
inline float high_part(float a) {
  std::uint32_t u;
  std::memcpy(&u, &a, sizeof u);
  u &= 0xFFFFF000u;
  std::memcpy(&a, &u, sizeof a);
  return a;
}

// v[j] = gelu(v[j]) = v Phi(v) for j < n, with Phi the standard normal CDF.
// Phi(-a) for a = |v| is computed directly (no cancellation in 1 + erf for v < 0):
//   Phi(-a) = 0.5 erfc(a / sqrt 2) = 0.5 P(t) exp(-a^2 / 2),  t = 1 / (1 + a / 4),
// with P a degree-9 fit of erfc(a / sqrt 2) exp(a^2 / 2) on 0 <= a <= 15 (relative
// error 1.9e-8; scripts/fit-gelu-tail.py). a^2 / 2 is split as ah^2 / 2 + d with ah
// the 12-bit high part of a (ah^2 exact) and |d| < 0.11, so exp(-a^2 / 2) =
// exp(-ah^2 / 2) exp(-d) keeps the relative accuracy of the exp kernel even where
// a^2 / 2 is large; exp(-d) is a degree-5 Taylor polynomial (error < 3e-9).
// a is clamped to 15, where exp(-ah^2 / 2) is already 0 in float. NaN stays NaN.
// `work` holds n floats.
void gelu_inplace(std::size_t n, float* v, float* work, const KernelSet& kernels) {
  for (std::size_t j = 0; j < n; ++j) {
    const float ah = high_part(std::min(std::fabs(v[j]), 15.0f));
    work[j] = -0.5f * (ah * ah);
  }
  kernels.exp_bias(n, work, nullptr, 0.0f, work);
  for (std::size_t j = 0; j < n; ++j) {
    const float x = v[j];
    const float a = std::min(std::fabs(x), 15.0f);
    const float ah = high_part(a);
    const float d = 0.5f * ((a - ah) * (a + ah));
    const float exp_d =
        1.0f - d * (1.0f - d * (0.5f - d * (1.0f / 6 - d * (1.0f / 24 - d * (1.0f / 120)))));
    const float t = 1.0f / (1.0f + 0.25f * a);
    float p = 0x1.0da4dap-4f;
    p = p * t - 0x1.867546p-2f;
    p = p * t + 0x1.875c32p-1f;
    p = p * t - 0x1.44340ap-1f;
    p = p * t + 0x1.299b84p-1f;
    p = p * t - 0x1.aae892p-6f;
    p = p * t + 0x1.e79e58p-3f;
    p = p * t + 0x1.869528p-3f;
    p = p * t + 0x1.9a4626p-3f;
    p = p * t - 0x1.32a9e0p-15f;
    const float tail = 0.5f * p * (work[j] * exp_d);  // Phi(-|x|)
    v[j] = x * (x >= 0.0f ? 1.0f - tail : tail);
  }
}

// y[r, :] = act(tile[r, :] + bias) + residual[r, :] for r < m, over `width` columns.
// tile is [m, width] (modified); y and residual have row stride ld and may alias.
void finish_tile(std::size_t m, std::size_t width, float* tile, const float* bias, const float* residual,
                 std::size_t ld, Activation act, float* y, float* work, const KernelSet& kernels) {
  for (std::size_t r = 0; r < m; ++r) {
    float* t = tile + r * width;
    if (bias != nullptr) {
      for (std::size_t j = 0; j < width; ++j) t[j] += bias[j];
    }
    if (act == Activation::kRelu) {
      for (std::size_t j = 0; j < width; ++j) t[j] = t[j] < 0.0f ? 0.0f : t[j];  // NaN stays NaN
    } else if (act == Activation::kGelu) {
      gelu_inplace(width, t, work, kernels);
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

void linear(std::size_t rows, std::size_t in, std::size_t out, const float* x, std::size_t x_stride,
            const float* packed, const float* bias, const float* residual, Activation act, float* y,
            const KernelSet& kernels, ThreadPool& pool) {
  if (rows == 0 || out == 0) return;
  // The work split depends on the problem size only, so every thread count gives the
  // same gemm calls and thus the same bits.
  const std::size_t blocks = ceil_div(out, kBlockCols);
  const std::size_t row_tiles = ceil_div(rows, kRowTile);
  const std::size_t group_blocks = row_tiles * ceil_div(blocks, kGroupBlocks) < kMinItems ? 1 : kGroupBlocks;
  const std::size_t groups = ceil_div(blocks, group_blocks);
  pool.parallel_for(groups * row_tiles, 1, [&](std::size_t begin, std::size_t end, std::size_t) {
    float* tile = thread_scratch(kRowTile * kBlockCols + kBlockCols);
    float* work = tile + kRowTile * kBlockCols;
    for (std::size_t item = begin; item < end; ++item) {
      const std::size_t group = item / row_tiles, r0 = (item % row_tiles) * kRowTile;
      const std::size_t m = std::min(kRowTile, rows - r0);
      const std::size_t b_end = std::min(blocks, (group + 1) * group_blocks);
      for (std::size_t b = group * group_blocks; b < b_end; ++b) {
        const std::size_t c0 = b * kBlockCols, width = std::min(kBlockCols, out - c0);
        kernels.gemm(m, width, in, x + r0 * x_stride, x_stride, 1, packed + c0 * in, width, tile, width, false);
        finish_tile(m, width, tile, bias != nullptr ? bias + c0 : nullptr,
                    residual != nullptr ? residual + r0 * out + c0 : nullptr, out, act, y + r0 * out + c0, work,
                    kernels);
      }
    }
  });
}

void layer_norm(std::size_t rows, std::size_t dim, const float* x, const float* gamma, const float* beta,
                float eps, float* y, ThreadPool& pool) {
  if (rows == 0 || dim == 0) return;
  const std::size_t grain = std::max<std::size_t>(1, 16384 / dim);
  pool.parallel_for(rows, grain, [&](std::size_t begin, std::size_t end, std::size_t) {
    for (std::size_t r = begin; r < end; ++r) {
      const float* xr = x + r * dim;
      float* yr = y + r * dim;
      // Two passes in double: the mean, then the squared deviations from it, so a
      // large common offset (1e4 + small noise) does not cancel away the variance.
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
      const double rstd = 1.0 / std::sqrt(var + static_cast<double>(eps));
      for (i = 0; i < dim; ++i) {
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
        std::memcpy(dst + ((b * heads + h) * len + l) * head_dim, s + h * head_dim, head_dim * sizeof(float));
      }
    }
  });
}

void merge_heads(std::size_t batch, std::size_t len, std::size_t heads, std::size_t head_dim,
                 const float* src, float* dst, ThreadPool& pool) {
  const std::size_t width = heads * head_dim;
  if (batch * len == 0 || width == 0) return;
  const std::size_t grain = std::max<std::size_t>(1, 16384 / width);
  pool.parallel_for(batch * len, grain, [&](std::size_t begin, std::size_t end, std::size_t) {
    for (std::size_t row = begin; row < end; ++row) {
      const std::size_t b = row / len, l = row % len;
      float* d = dst + row * width;
      for (std::size_t h = 0; h < heads; ++h) {
        std::memcpy(d + h * head_dim, src + ((b * heads + h) * len + l) * head_dim, head_dim * sizeof(float));
      }
    }
  });
}

}  // namespace pa
