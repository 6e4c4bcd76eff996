// Weight-only quantized linear layers: W stored as int8 (one symmetric scale per output
// channel) or bf16, widened in registers by the kernel set, never expanded to floats.
// Same contract as linear() (layer_ops.h): bias, residual (may alias y), activation,
// x_stride, pool splitting with bits independent of the pool size. Always row-stable
// (as linear() with row_stable): each output row gets the same bits whatever `rows` is,
// since the kernels sum every column over k in one chain (see LinearInt8Fn in kernels.h).
//
// Packed layout (both formats): column blocks of kLinearBlockCols (64) output columns, each
// stored as its own [in, width] row-major array, one after the other, as for linear();
// the last block's width is rounded up to a multiple of 16 with zero columns, so the
// kernels always load whole vectors. A block row of 64 int8 weights is one cache line.
#pragma once

#include <cstddef>
#include <cstdint>

#include "core/layer_ops.h"

namespace pa {

// Elements (int8 or bf16 values) of a packed W [out, in]: in * round_up(out, 16).
std::size_t linear_quant_packed_size(std::size_t in, std::size_t out);

// int8, symmetric per output channel: scale[o] = max_i |W[o, i]| / 127 (float division),
// q = W / scale rounded to nearest even, clamped to [-127, 127]; a row with scale 0 (all
// zeros, or tiny enough that the division underflows) is all zeros. W must be finite.
// scales has `out` floats. linear_quantize_int8 gives q [out, in] (row-major, not packed),
// linear_pack_int8 the same values packed.
void linear_quantize_int8(std::size_t in, std::size_t out, const float* w, std::int8_t* q,
                          float* scales);
void linear_pack_int8(std::size_t in, std::size_t out, const float* w, std::int8_t* packed,
                      float* scales);
// Packs already quantized values q [out, in] (padding zeros included).
void linear_pack_int8_values(std::size_t in, std::size_t out, const std::int8_t* q,
                             std::int8_t* packed);
// The quantized values back as q [out, in], and the dequantized weights
// W'[o, i] = float(q[o, i]) * scale[o].
void linear_unpack_int8(std::size_t in, std::size_t out, const std::int8_t* packed, std::int8_t* q);
void linear_dequantize_int8(std::size_t in, std::size_t out, const std::int8_t* packed,
                            const float* scales, float* w);

// fp32 -> bf16 rounded to nearest even; inf stays inf, NaN stays a (quiet) NaN of the same
// sign, finite values beyond the bf16 range round to inf.
std::uint16_t float_to_bf16(float f);
float bf16_to_float(std::uint16_t h);  // exact
void linear_pack_bf16(std::size_t in, std::size_t out, const float* w, std::uint16_t* packed);
// Packs bf16 values h [out, in] (padding zeros included).
void linear_pack_bf16_values(std::size_t in, std::size_t out, const std::uint16_t* h,
                             std::uint16_t* packed);
// The bf16 values back as [out, in], and as floats.
void linear_unpack_bf16(std::size_t in, std::size_t out, const std::uint16_t* packed,
                        std::uint16_t* h);
void linear_dequantize_bf16(std::size_t in, std::size_t out, const std::uint16_t* packed, float* w);

// y[r, o] = act((sum_i x[r, i] * q[o, i]) * scale[o] + bias[o]) + residual[r, o]: the sum
// in float, then one product by the scale (see LinearInt8Fn in kernels.h).
void linear_int8(std::size_t rows, std::size_t in, std::size_t out, const float* x,
                 std::size_t x_stride, const std::int8_t* packed, const float* scales,
                 const float* bias, const float* residual, Activation act, float* y,
                 const KernelSet& kernels, ThreadPool& pool);
// y[r, o] = act(sum_i x[r, i] * bf16_to_float(h[o, i]) + bias[o]) + residual[r, o].
void linear_bf16(std::size_t rows, std::size_t in, std::size_t out, const float* x,
                 std::size_t x_stride, const std::uint16_t* packed, const float* bias,
                 const float* residual, Activation act, float* y, const KernelSet& kernels,
                 ThreadPool& pool);

}  // namespace pa
