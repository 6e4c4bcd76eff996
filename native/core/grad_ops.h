// Reverse-mode building blocks for training the transformer layers: the gradients of
// layer_ops.h (linear, layer_norm, the activations) and of model_ops.h (embedding,
// ScaleNorm, ReZero's scaled add, token shift, the GLU gate), plus the softmax
// cross-entropy loss. Plain C++ on raw arrays: the caller validates shapes and owns
// every buffer (token ids and targets are checked again here, so a bad one throws
// InputError instead of writing out of bounds).
//
// Conventions:
// - "accumulate": false overwrites the gradient output, true adds to it. Parameter
//   gradients (dweight, dbias, dgamma, dbeta, dtable, dpositions, dg) are always added to.
// - Reductions over rows (parameter gradients, losses) use a partition of the rows fixed
//   by the problem size and sum the parts in a fixed order, so the result bits never
//   depend on the pool's thread count (nor does anything else here).
// - Nulls: an optional output that is null is not computed.
#pragma once

#include <cstddef>
#include <cstdint>

#include "core/thread_pool.h"
#include "kernels/kernels.h"

namespace pa {

// Softmax cross-entropy over rows of logits [rows, classes]. For every row with
// targets[r] >= 0 (negative targets are ignored: no loss, a zero gradient row):
//   loss[0] += -log softmax(logits[r])[targets[r]]  (max-subtracted, log-sum-exp in double)
//   loss[1] += 1
//   dlogits[r] = grad_scale * (softmax(logits[r]) - onehot(targets[r]))
// The row losses are summed in row order. dlogits may be logits (in place), no other
// overlap. A target >= classes throws InputError (before anything is written).
void cross_entropy(std::size_t rows, std::size_t classes, const float* logits,
                   const std::int32_t* targets, float grad_scale, double* loss, float* dlogits,
                   const KernelSet& kernels, ThreadPool& pool);

// Gradients of y = x W^T + b (layer_ops.h linear; W [out, in] row-major, not packed):
//   dx = dy W          [rows, in]  (accumulate: dx += dy W)         null: skipped
//   dweight += dy^T x  [out, in]                                      null: skipped
//   dbias += column sums of dy [out] (summed in double, row order)   null: skipped
// dy is [rows, out]; x rows have stride x_stride >= in. No output overlaps an input or
// another output. Uses this thread's thread_scratch (callers must not hold theirs across
// the call) and a pooled copy of W.
void linear_backward(std::size_t rows, std::size_t in, std::size_t out, const float* dy,
                     const float* x, std::size_t x_stride, const float* weight, float* dx,
                     bool accumulate, float* dweight, float* dbias, const KernelSet& kernels,
                     ThreadPool& pool);

// Gradients of y = (x - mean) * rstd * gamma + beta (layer_ops.h layer_norm; mean and rstd
// recomputed in double as layer_norm does), with g = dy * gamma (gamma null: 1):
//   dx = rstd * (g - mean(g) - xhat * mean(g * xhat))  (accumulate: dx += ...)
//   dgamma += sum over rows of dy * xhat,  dbeta += sum over rows of dy  (null: skipped)
// dx may be dy or x exactly (row-wise in place); no other overlap.
void layer_norm_backward(std::size_t rows, std::size_t dim, const float* x, const float* gamma,
                         float eps, const float* dy, float* dx, bool accumulate, float* dgamma,
                         float* dbeta, ThreadPool& pool);

// y = gelu(x), exact erf form, computed by kernels.gelu_bias (the bits of linear's
// fused GELU). y may be x; no other overlap.
void gelu(std::size_t n, const float* x, float* y, const KernelSet& kernels, ThreadPool& pool);

// dx = dy * gelu'(pre), gelu'(v) = Phi(v) + v phi(v); within ~5e-7 of the exact value
// relative to |Phi(v)| + |v phi(v)|. dx may be dy; no other overlap.
void gelu_backward(std::size_t n, const float* pre, const float* dy, float* dx,
                   const KernelSet& kernels, ThreadPool& pool);

// dx = pre > 0 ? dy : 0 (NaN pre gives 0). dx may be dy; no other overlap.
void relu_backward(std::size_t n, const float* pre, const float* dy, float* dx, ThreadPool& pool);

// Gradients of model_ops.h embed_tokens (rows = batch * len, row r at position
// start + r % len):
//   dtable[tokens[r]] += dx[r]
//   dpositions[start + r % len] += dx[r]   (null: skipped; [start + len, dim] at least)
// Each touched row of dtable / dpositions gets the sum (in double, row order) of its
// contributions added once. tokens must be in [0, num_tokens) (InputError otherwise).
void embed_backward(std::size_t rows, std::size_t len, std::size_t dim, const std::int32_t* tokens,
                    std::size_t num_tokens, const float* dx, float* dtable, std::size_t start,
                    float* dpositions, ThreadPool& pool);

// Gradient of y = gelu(a) * b with h = [a | b] ([rows, 2 hidden], model_ops.h glu_gelu):
//   dh[:, :hidden] = dy * b * gelu'(a),  dh[:, hidden:] = dy * gelu(a)  (overwritten)
// dh must not overlap h or dy.
void glu_gelu_backward(std::size_t rows, std::size_t hidden, const float* h, const float* dy,
                       float* dh, const KernelSet& kernels, ThreadPool& pool);

// Gradients of y = x / max(||x||, eps) * g per row (model_ops.h scale_norm; the norm in
// double). With n the norm used:
//   ||x|| > eps:  dx = g / n * (dy - x * (x . dy) / n^2)
//   ||x|| <= eps: dx = g / eps * dy   (the norm is the constant eps)
//   dg[0] += sum over rows of (x . dy) / n
// (accumulate: dx += ...). dx may be x or dy (row-wise in place); no other overlap.
void scale_norm_backward(std::size_t rows, std::size_t dim, const float* x, float g, float eps,
                         const float* dy, float* dx, bool accumulate, float* dg, ThreadPool& pool);

// Gradients of y = residual + x * g (model_ops.h scaled_add; the residual's gradient is
// dy itself): dg[0] += sum(dy * x) (in double), dx = g * dy (accumulate: +=; null:
// skipped). dx may be x or dy (in place); no other overlap.
void scaled_add_backward(std::size_t n, const float* x, const float* dy, float g, float* dg,
                         float* dx, bool accumulate, ThreadPool& pool);

// Adjoint of model_ops.h token_shift without history: piece s (dim / segments features)
// of dx row u gets piece s of dy row u + shifts[s] of the same sequence (zero when that
// row is outside the sequence, or when the piece is shifted and keep[b, u] is 0: a
// masked row gave zeros); the remaining features get dy of the same row (accumulate:
// dx += ...). keep may be null (every row kept). dx must not overlap dy.
void token_shift_backward(std::size_t batch, std::size_t len, std::size_t dim, const float* dy,
                          const int* shifts, std::size_t segments, const std::uint8_t* keep,
                          float* dx, bool accumulate, ThreadPool& pool);

// Inverted dropout with a counter-based mask, so that the forward and the backward pass
// (and any thread count) draw the same mask without storing it: element i of `stream`
// under `seed` is kept iff dropout_keeps(seed, stream, i, p); kept elements are scaled by
// 1 / (1 - p), the others are 0 (p >= 1: all 0).
//   y = (residual +) x * mask / (1 - p)      residual may be null
// The gradient with respect to x is the same call on dy (no residual). y may be x or
// residual exactly; no other overlap. p must be in [0, 1].
void dropout(std::size_t n, const float* x, const float* residual, float* y, float p,
             std::uint64_t seed, std::uint64_t stream, ThreadPool& pool);

// Whether dropout keeps element i: the top 24 bits of a SplitMix64 hash of (seed, stream,
// i) compared with p * 2^24 (rounded), so the kept fraction is 1 - p within 2^-25.
bool dropout_keeps(std::uint64_t seed, std::uint64_t stream, std::uint64_t i, float p);

}  // namespace pa
