// Row-wise building blocks of performer-pytorch models (PerformerLM, Performer) that
// the transformer layers do not have: token embeddings plus positions, ScaleNorm,
// ReZero's scaled residual, token shift, the GLU gate of the feed-forward and rotary
// position embeddings. Plain C++ on raw arrays: the caller validates shapes, token
// ranges and buffer sizes. The order of float32 operations follows PyTorch's where
// it is cheap to (a product rounded before the sum that uses it), so that outputs
// stay within a few ulp of the reference package.
#pragma once

#include <cstddef>
#include <cstdint>

#include "core/thread_pool.h"
#include "kernels/kernels.h"

namespace pa {

// A fixed sinusoid as performer-pytorch stores it: row t of width 2n is
// [sin(t f_0) .. sin(t f_{n-1}), cos(t f_0) .. cos(t f_{n-1})]. Rows below `rows` come
// from `table` (the checkpoint's float32 buffer, which is what PyTorch reads); later
// positions are computed from `inv_freq` (f_i as float32; the angle t f_i is rounded
// to float32 as PyTorch's einsum does, then sin and cos are taken in double).
struct Sinusoid {
  const float* table = nullptr;  // [rows, 2n] or null
  std::size_t rows = 0;
  const float* inv_freq = nullptr;  // [n]; may be null when every position is in the table
  std::size_t half = 0;             // n
  // sin and cos of frequency i at position t; false when neither source covers t.
  bool at(std::size_t t, std::size_t i, float* s, float* c) const;
};

// out[r, :] = table[tokens[r], :] + position(start + r % len) for r < rows (rows =
// batch * len). positions may be null (no positional term). tokens are in range.
void embed_tokens(std::size_t rows, std::size_t len, std::size_t dim, const std::int32_t* tokens,
                  const float* table, const Sinusoid* sinusoid, const float* learned_positions,
                  std::size_t start, float* out, ThreadPool& pool);

// y[r, :] = x[r, :] / max(||x[r, :]||, eps) * g (performer-pytorch's PreScaleNorm; the norm in
// double). y may alias x.
void scale_norm(std::size_t rows, std::size_t dim, const float* x, float g, float eps, float* y,
                ThreadPool& pool);

// y[i] = residual[i] + x[i] * g for i < n (ReZero: the sub-layer's output times its gain,
// then the residual). y may alias residual or x.
void scaled_add(std::size_t n, const float* x, float g, const float* residual, float* y);

// Token shift: the width is cut into `segments` pieces of dim / segments features;
// piece s of row t is taken from row t - shifts[s] of the same sequence (zero outside
// the sequence), the remaining features are copied. With keep (nonzero = keep, [batch,
// len]), the rows a shifted piece comes from are zeroed when not kept. With history
// ([batch, dim], decoding), row -1 of each sequence is history[b] instead of zero, and
// history[b] becomes the sequence's last row afterwards; history needs shifts in
// {0, 1} and no keep mask. y must not alias x.
void token_shift(std::size_t batch, std::size_t len, std::size_t dim, const float* x,
                 const int* shifts, std::size_t segments, const std::uint8_t* keep, float* history,
                 float* y);

// y[r, :] = gelu(h[r, :hidden]) * h[r, hidden:] (the GLU feed-forward's gate; h is the
// first linear's output with its bias). y must not alias h.
void glu_gelu(std::size_t rows, std::size_t hidden, const float* h, float* y,
              const KernelSet& kernels, ThreadPool& pool);

enum class RotaryLayout {
  kInterleaved,  // pairs (x_2i, x_2i+1) turn by angle t f_i: performer-pytorch's global heads
  kHalves,       // pairs (x_i, x_i+d/2): local-attention's heads
};

// Rotates rows of x [heads, len, d] in place: row t of every head is at position
// start + t, its sin / cos from `sinusoid` (width d). performer-pytorch's global heads
// (kInterleaved) have a stored table; local-attention (kHalves) computes them from its
// inv_freq buffer ([d / 2] float32), so callers give it no table.
// inverse: rotate by -angle instead (the adjoint: the gradient of a rotation).
void rotary(std::size_t heads, std::size_t len, std::size_t d, std::size_t start,
            RotaryLayout layout, const Sinusoid& sinusoid, float* x, ThreadPool& pool,
            bool inverse = false);

}  // namespace pa
