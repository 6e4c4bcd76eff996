#include "core/quantized_linear.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

namespace pa {
namespace {

constexpr std::size_t kGroup = 16;  // the padding unit of the last block

std::size_t round_up(std::size_t n, std::size_t unit) { return (n + unit - 1) / unit * unit; }

// Padded width of the block starting at column c0.
std::size_t block_stride(std::size_t out, std::size_t c0) {
  return round_up(std::min(kLinearBlockCols, out - c0), kGroup);
}

// Calls f(o, i, index) for every weight, index being its place in the packed buffer.
template <class F>
void for_each_packed(std::size_t in, std::size_t out, F f) {
  for (std::size_t c0 = 0; c0 < out; c0 += kLinearBlockCols) {
    const std::size_t width = std::min(kLinearBlockCols, out - c0), ld = block_stride(out, c0);
    for (std::size_t j = 0; j < width; ++j) {
      for (std::size_t i = 0; i < in; ++i) f(c0 + j, i, c0 * in + i * ld + j);
    }
  }
}

// Packs values [out, in] of either format, zeros in the padding columns.
template <class T>
void pack_values(std::size_t in, std::size_t out, const T* values, T* packed) {
  std::fill(packed, packed + linear_quant_packed_size(in, out), T{0});
  for_each_packed(in, out, [&](std::size_t o, std::size_t i, std::size_t index) {
    packed[index] = values[o * in + i];
  });
}

}  // namespace

std::size_t linear_quant_packed_size(std::size_t in, std::size_t out) {
  return in * round_up(out, kGroup);
}

void linear_quantize_int8(std::size_t in, std::size_t out, const float* w, std::int8_t* q,
                          float* scales) {
  for (std::size_t o = 0; o < out; ++o) {
    const float* row = w + o * in;
    float amax = 0.0f;
    for (std::size_t i = 0; i < in; ++i) amax = std::max(amax, std::fabs(row[i]));
    const float scale = amax / 127.0f;
    scales[o] = scale;
    for (std::size_t i = 0; i < in; ++i) {
      // std::nearbyint rounds half to even in the default rounding mode.
      const float v = scale > 0.0f ? std::nearbyint(row[i] / scale) : 0.0f;
      q[o * in + i] = static_cast<std::int8_t>(std::min(127.0f, std::max(-127.0f, v)));
    }
  }
}

void linear_pack_int8_values(std::size_t in, std::size_t out, const std::int8_t* q,
                             std::int8_t* packed) {
  pack_values(in, out, q, packed);
}

void linear_pack_int8(std::size_t in, std::size_t out, const float* w, std::int8_t* packed,
                      float* scales) {
  std::vector<std::int8_t> q(in * out);
  linear_quantize_int8(in, out, w, q.data(), scales);
  linear_pack_int8_values(in, out, q.data(), packed);
}

void linear_unpack_int8(std::size_t in, std::size_t out, const std::int8_t* packed,
                        std::int8_t* q) {
  for_each_packed(in, out, [&](std::size_t o, std::size_t i, std::size_t index) {
    q[o * in + i] = packed[index];
  });
}

void linear_dequantize_int8(std::size_t in, std::size_t out, const std::int8_t* packed,
                            const float* scales, float* w) {
  for_each_packed(in, out, [&](std::size_t o, std::size_t i, std::size_t index) {
    w[o * in + i] = static_cast<float>(packed[index]) * scales[o];
  });
}

std::uint16_t float_to_bf16(float f) {
  std::uint32_t bits;
  std::memcpy(&bits, &f, sizeof bits);
  if (std::isnan(f)) return static_cast<std::uint16_t>((bits >> 16) | 0x0040u);  // stays NaN
  bits += 0x7fffu + ((bits >> 16) & 1u);  // to nearest, ties to even; overflow gives inf
  return static_cast<std::uint16_t>(bits >> 16);
}

float bf16_to_float(std::uint16_t h) {
  const std::uint32_t bits = static_cast<std::uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

void linear_pack_bf16_values(std::size_t in, std::size_t out, const std::uint16_t* h,
                             std::uint16_t* packed) {
  pack_values(in, out, h, packed);
}

void linear_pack_bf16(std::size_t in, std::size_t out, const float* w, std::uint16_t* packed) {
  std::vector<std::uint16_t> h(in * out);
  std::transform(w, w + in * out, h.begin(), float_to_bf16);
  linear_pack_bf16_values(in, out, h.data(), packed);
}

void linear_unpack_bf16(std::size_t in, std::size_t out, const std::uint16_t* packed,
                        std::uint16_t* h) {
  for_each_packed(in, out, [&](std::size_t o, std::size_t i, std::size_t index) {
    h[o * in + i] = packed[index];
  });
}

void linear_dequantize_bf16(std::size_t in, std::size_t out, const std::uint16_t* packed,
                            float* w) {
  for_each_packed(in, out, [&](std::size_t o, std::size_t i, std::size_t index) {
    w[o * in + i] = bf16_to_float(packed[index]);
  });
}

void linear_int8(std::size_t rows, std::size_t in, std::size_t out, const float* x,
                 std::size_t x_stride, const std::int8_t* packed, const float* scales,
                 const float* bias, const float* residual, Activation act, float* y,
                 const KernelSet& kernels, ThreadPool& pool) {
  linear_tiled(
      rows, in, out, x, x_stride,
      [&](std::size_t m, std::size_t c0, std::size_t width, const float* x_tile, float* tile) {
        kernels.linear_int8(m, width, in, x_tile, x_stride, packed + c0 * in, block_stride(out, c0),
                            scales + c0, tile, width);
      },
      bias, residual, act, y, kernels, pool);
}

void linear_bf16(std::size_t rows, std::size_t in, std::size_t out, const float* x,
                 std::size_t x_stride, const std::uint16_t* packed, const float* bias,
                 const float* residual, Activation act, float* y, const KernelSet& kernels,
                 ThreadPool& pool) {
  linear_tiled(
      rows, in, out, x, x_stride,
      [&](std::size_t m, std::size_t c0, std::size_t width, const float* x_tile, float* tile) {
        kernels.linear_bf16(m, width, in, x_tile, x_stride, packed + c0 * in, block_stride(out, c0),
                            tile, width);
      },
      bias, residual, act, y, kernels, pool);
}

}  // namespace pa
