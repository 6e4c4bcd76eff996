#include "core/grad_ops.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "core/attention_common.h"
#include "core/layer_ops.h"
#include "core/memory.h"
#include "kernels/gelu_tail.h"

namespace pa {
namespace {

std::size_t ceil_div(std::size_t a, std::size_t b) { return (a + b - 1) / b; }

// Rows per piece of pool work for row-wise ops of `dim` floats (about 16 K floats).
std::size_t row_grain(std::size_t dim) {
  return std::max<std::size_t>(1, 16384 / std::max<std::size_t>(1, dim));
}

// Elements per piece of pool work for element-wise ops.
constexpr std::size_t kElementGrain = 16384;

// A fixed partition of `rows` rows of `dim` floats into chunks for reductions over rows:
// at most kMaxChunks chunks of at least ~kChunkFloats floats. Depends on the sizes only.
constexpr std::size_t kMaxChunks = 64;
constexpr std::size_t kChunkFloats = 8192;
struct Chunks {
  std::size_t rows_per_chunk, count;
};
Chunks row_chunks(std::size_t rows, std::size_t dim) {
  const std::size_t min_rows =
      std::max<std::size_t>(1, kChunkFloats / std::max<std::size_t>(1, dim));
  const std::size_t per = std::max(min_rows, ceil_div(rows, kMaxChunks));
  return {per, ceil_div(rows, per)};
}

// Sum of n floats in double, four partial sums (the tail into the first), fixed order.
double sum_f64(std::size_t n, const float* x) {
  double s[4] = {0, 0, 0, 0};
  std::size_t i = 0;
  for (; i + 4 <= n; i += 4) {
    for (std::size_t l = 0; l < 4; ++l) s[l] += x[i + l];
  }
  for (; i < n; ++i) s[0] += x[i];
  return (s[0] + s[1]) + (s[2] + s[3]);
}

// out[i] = (accumulate ? out[i] : 0) + v[i] for a row of doubles.
void store_row(std::size_t n, const double* v, float* out, bool accumulate) {
  if (accumulate) {
    for (std::size_t i = 0; i < n; ++i)
      out[i] = static_cast<float>(static_cast<double>(out[i]) + v[i]);
  } else {
    for (std::size_t i = 0; i < n; ++i) out[i] = static_cast<float>(v[i]);
  }
}

// ---------------------------------------------------------------------------------
// linear_backward
// ---------------------------------------------------------------------------------

// dweight is computed in blocks of output rows x input columns (kDwShapes; each a work
// item that owns its block of dweight), walking the rows of dy and x in chunks of
// kDwChunk. Each chunk of dy (the gemm's A, read transposed) and of x (its B) is first
// copied to rows whose stride is an odd number of cache lines: at a power-of-two stride
// (in or out = 256, 1024, ...) the k rows a micro-kernel walks all map to the same few
// L1 sets, and the gemm then runs from L2 (measured 10 to 50% slower in all, copies
// included, at 8192 rows x 256 / 1024).
constexpr std::size_t kDwRows = 128;  // the largest block height (and dbias's blocks)
constexpr std::size_t kDwChunk = 256;
// Block shapes (rows x columns of dweight), largest first: the first one that gives at
// least kMinItems items is taken (the last one otherwise).
constexpr std::size_t kDwShapes[][2] = {{128, 256}, {128, 128}, {64, 128}, {64, 64}};
constexpr std::size_t kMinItems = 8;
// Floats of dy and x (together) per pass over the rows, see weight_gradient.
constexpr std::size_t kPassFloats = std::size_t{1} << 20;

// A row stride for n floats that is an odd number of 64-byte lines.
std::size_t odd_line_stride(std::size_t n) {
  std::size_t lines = ceil_div(std::max<std::size_t>(n, 1), 16);
  if (lines % 2 == 0) ++lines;
  return lines * 16;
}

// dbias[o] += sum over rows of dy[r, o] for o in [o0, o0 + m): each column summed in
// double, rows in order (the same bits as the sums fused into the dweight items).
void bias_block(std::size_t rows, std::size_t out, std::size_t o0, std::size_t m, const float* dy,
                float* dbias) {
  double acc[kDwRows];
  std::fill(acc, acc + m, 0.0);
  for (std::size_t r = 0; r < rows; ++r) {
    const float* row = dy + r * out + o0;
    for (std::size_t i = 0; i < m; ++i) acc[i] += row[i];
  }
  for (std::size_t i = 0; i < m; ++i)
    dbias[o0 + i] = static_cast<float>(static_cast<double>(dbias[o0 + i]) + acc[i]);
}

// dweight += dy^T x (and dbias += column sums of dy when not null). Work items are
// blocks of dweight; the rows are walked in passes of whole chunks (about kPassFloats
// of dy and x together), every item taking a pass before any takes the next, so a pass
// comes from DRAM about once and the other items find it in L3. Every element of
// dweight sees the same chunks in the same order whatever the pool.
void weight_gradient(std::size_t rows, std::size_t in, std::size_t out, const float* dy,
                     const float* x, std::size_t x_stride, float* dweight, float* dbias,
                     const KernelSet& kernels, ThreadPool& pool) {
  std::size_t block_rows = 0, block_cols = 0;
  for (const auto& shape : kDwShapes) {
    block_rows = shape[0];
    block_cols = shape[1];
    if (ceil_div(out, block_rows) * ceil_div(in, block_cols) >= kMinItems) break;
  }
  const std::size_t row_blocks = ceil_div(out, block_rows), col_blocks = ceil_div(in, block_cols);
  const std::size_t items = row_blocks * col_blocks;
  const std::size_t lda = odd_line_stride(block_rows), ldb = odd_line_stride(block_cols);
  const std::size_t chunk = std::min(kDwChunk, rows);
  const std::size_t pass = std::max<std::size_t>(1, kPassFloats / (chunk * (in + out))) * chunk;
  const std::size_t item_work =
      std::min(out, block_rows) * std::min(in, block_cols) * std::min(pass, rows);
  const std::size_t grain =
      std::max<std::size_t>(1, kMinWorkPerPiece / std::max<std::size_t>(item_work, 1));
  // Column sums of dy, one double per output row; the columns of a row block are shared
  // out over its items (disjoint), each summed in row order.
  std::vector<double> bias_acc(dbias != nullptr ? out : 0, 0.0);
  for (std::size_t p0 = 0; p0 < rows; p0 += pass) {
    const std::size_t p1 = std::min(rows, p0 + pass);
    pool.parallel_for(items, grain, [&](std::size_t begin, std::size_t end, std::size_t) {
      float* a = thread_scratch(chunk * (lda + ldb));
      float* b = a + chunk * lda;
      for (std::size_t item = begin; item < end; ++item) {
        const std::size_t ob = item / col_blocks, cb = item % col_blocks;
        const std::size_t o0 = ob * block_rows, m = std::min(block_rows, out - o0);
        const std::size_t n0 = cb * block_cols, nw = std::min(block_cols, in - n0);
        // This item's share of the row block's bias columns: [i0, i1) of its m.
        const std::size_t i0 = dbias != nullptr ? m * cb / col_blocks : 0;
        const std::size_t i1 = dbias != nullptr ? m * (cb + 1) / col_blocks : 0;
        double* acc = dbias != nullptr ? bias_acc.data() + o0 : nullptr;
        for (std::size_t k0 = p0; k0 < p1; k0 += chunk) {
          const std::size_t kc = std::min(chunk, p1 - k0);
          for (std::size_t k = 0; k < kc; ++k) {
            std::memcpy(a + k * lda, dy + (k0 + k) * out + o0, m * sizeof(float));
            std::memcpy(b + k * ldb, x + (k0 + k) * x_stride + n0, nw * sizeof(float));
          }
          for (std::size_t k = 0; k < kc; ++k) {
            for (std::size_t i = i0; i < i1; ++i) acc[i] += a[k * lda + i];
          }
          // dweight[o0 + i, n0 + j] += sum_k a[k, i] b[k, j]: A(i, k) = a[k * lda + i].
          kernels.gemm(m, nw, kc, a, 1, lda, b, ldb, dweight + o0 * in + n0, in, true);
        }
      }
    });
  }
  if (dbias != nullptr) {
    for (std::size_t o = 0; o < out; ++o)
      dbias[o] = static_cast<float>(static_cast<double>(dbias[o]) + bias_acc[o]);
  }
}

// ---------------------------------------------------------------------------------
// layer_norm_backward
// ---------------------------------------------------------------------------------

// Adds the per-chunk partials (chunks x n doubles, chunk order) to out[0 .. n).
void reduce_partials(std::size_t chunks, std::size_t n, const double* partials, float* out) {
  for (std::size_t i = 0; i < n; ++i) {
    double s = 0.0;
    for (std::size_t c = 0; c < chunks; ++c) s += partials[c * n + i];
    out[i] = static_cast<float>(static_cast<double>(out[i]) + s);
  }
}

// ---------------------------------------------------------------------------------
// GELU
// ---------------------------------------------------------------------------------

constexpr std::size_t kGeluBlock = 256;
constexpr float kInvSqrt2Pi = 0.3989422804014327f;

// cond ? a : b on the bits, both sides computed: with a branch-free select the compiler
// vectorizes the loops below (a float ?: makes it keep a branch around arithmetic that
// "could trap" under -ftrapping-math, and then it vectorizes nothing).
inline float select(bool cond, float a, float b) {
  std::uint32_t ua, ub;
  std::memcpy(&ua, &a, sizeof ua);
  std::memcpy(&ub, &b, sizeof ub);
  const std::uint32_t mask = 0u - static_cast<std::uint32_t>(cond);
  const std::uint32_t bits = (ua & mask) | (ub & ~mask);
  float result;
  std::memcpy(&result, &bits, sizeof result);
  return result;
}

// d[i] = gelu'(v[i]) = Phi(v) + v phi(v) for i < n <= kGeluBlock, in float with the
// kernel set's exp: Phi from gelu_tail.h's fit of the normal tail (the one every GELU
// kernel uses), phi(v) = exp(-v^2 / 2) / sqrt(2 pi) with v^2 = hi + lo split exactly
// (exp(-hi / 2) by the kernel, times 1 - lo / 2). About 5e-7 relative to
// |Phi(v)| + |v phi(v)|. |v| is clamped to 16 (where phi is 0 in float, Phi 0 or 1), so
// +-inf give 1 and 0; NaN stays NaN.
void gelu_derivative(std::size_t n, const float* v, float* d, const KernelSet& kernels) {
  alignas(64) float lo[kGeluBlock];
  alignas(64) float vc[kGeluBlock];
  for (std::size_t i = 0; i < n; ++i) {
    const float x = v[i];
    const float c = select(x > 16.0f, 16.0f, select(x < -16.0f, -16.0f, x));  // NaN stays NaN
    const double sq = static_cast<double>(c) * c;                             // exact
    const float hi = static_cast<float>(sq);
    lo[i] = static_cast<float>(sq - hi);
    d[i] = -0.5f * hi;  // exact
    vc[i] = c;
  }
  kernels.exp_bias(n, d, nullptr, 0.0f, d);  // d = exp(-hi / 2)
  static_assert(kGeluDegree == 9, "the Horner steps below are written out for degree 9");
  const float* q = kGeluTail;
  for (std::size_t i = 0; i < n; ++i) {
    const float c = vc[i];
    const float e = d[i] - 0.5f * d[i] * lo[i];  // exp(-c^2 / 2)
    const float a = std::fabs(c);
    const float t = 1.0f / (1.0f + 0.25f * a);
    float p = q[9] * t + q[8];
    p = p * t + q[7];
    p = p * t + q[6];
    p = p * t + q[5];
    p = p * t + q[4];
    p = p * t + q[3];
    p = p * t + q[2];
    p = p * t + q[1];
    p = p * t + q[0];
    const float tail = 0.5f * p * e;  // Phi(-a)
    const float upper = 1.0f - tail;
    const float cdf = select(c >= 0.0f, upper, tail);
    d[i] = cdf + c * (e * kInvSqrt2Pi);
  }
}

}  // namespace

// ---------------------------------------------------------------------------------

void cross_entropy(std::size_t rows, std::size_t classes, const float* logits,
                   const std::int32_t* targets, float grad_scale, double* loss, float* dlogits,
                   const KernelSet& kernels, ThreadPool& pool) {
  for (std::size_t r = 0; r < rows; ++r) {
    if (targets[r] >= 0 && static_cast<std::size_t>(targets[r]) >= classes) {
      throw InputError("crossEntropy: target " + std::to_string(targets[r]) + " at " +
                       std::to_string(r) + " is outside [0, " + std::to_string(classes) + ")");
    }
  }
  if (rows == 0) return;
  std::vector<double> row_loss(rows, 0.0);
  const double scale = grad_scale;
  pool.parallel_for(rows, row_grain(classes), [&](std::size_t begin, std::size_t end, std::size_t) {
    for (std::size_t r = begin; r < end; ++r) {
      const float* xr = logits + r * classes;
      float* dr = dlogits + r * classes;
      const std::int32_t target = targets[r];
      if (target < 0) {
        std::fill(dr, dr + classes, 0.0f);
        continue;
      }
      const std::size_t t = static_cast<std::size_t>(target);
      const double x_t = xr[t];  // read before an in-place dlogits overwrites it
      const float max = kernels.max_bias(classes, xr, nullptr);
      kernels.exp_bias(classes, xr, nullptr, -max, dr);  // dr[j] = exp(x_j - max)
      const double sum = sum_f64(classes, dr);
      row_loss[r] = std::log(sum) - (x_t - static_cast<double>(max));
      const double e_t = dr[t];
      const float factor = static_cast<float>(scale / sum);
      for (std::size_t j = 0; j < classes; ++j) dr[j] *= factor;
      dr[t] = static_cast<float>(scale * (e_t / sum - 1.0));
    }
  });
  double total = 0.0, counted = 0.0;
  for (std::size_t r = 0; r < rows; ++r) {
    if (targets[r] < 0) continue;
    total += row_loss[r];
    counted += 1.0;
  }
  loss[0] += total;
  loss[1] += counted;
}

void linear_backward(std::size_t rows, std::size_t in, std::size_t out, const float* dy,
                     const float* x, std::size_t x_stride, const float* weight, float* dx,
                     bool accumulate, float* dweight, float* dbias, const KernelSet& kernels,
                     ThreadPool& pool) {
  if (rows == 0 || (in == 0 && dbias == nullptr)) return;
  if (dx != nullptr && in > 0) {
    if (out == 0) {
      if (!accumulate) {
        for (std::size_t r = 0; r < rows; ++r) std::fill(dx + r * in, dx + (r + 1) * in, 0.0f);
      }
    } else {
      // dx = dy W is a linear layer with in and out swapped and weight W^T ([in, out]):
      // transpose, pack it as linear wants, and let linear tile it (accumulate: dx is
      // its residual, aliasing its output).
      PooledBuffer transposed(in * out), packed(linear_packed_size(out, in));
      float* wt = transposed.data();
      constexpr std::size_t kTile = 32;
      for (std::size_t o0 = 0; o0 < out; o0 += kTile) {
        const std::size_t o1 = std::min(out, o0 + kTile);
        for (std::size_t i0 = 0; i0 < in; i0 += kTile) {
          const std::size_t i1 = std::min(in, i0 + kTile);
          kernels.transpose(o1 - o0, i1 - i0, weight + o0 * in + i0, in, wt + i0 * out + o0, out);
        }
      }
      linear_pack(out, in, wt, packed.data());
      linear(rows, out, in, dy, out, packed.data(), nullptr, accumulate ? dx : nullptr,
             Activation::kNone, dx, kernels, pool);
    }
  }
  if (out == 0) return;
  if (dweight != nullptr && in > 0) {
    weight_gradient(rows, in, out, dy, x, x_stride, dweight, dbias, kernels, pool);
  } else if (dbias != nullptr) {
    const std::size_t blocks = ceil_div(out, kDwRows);
    pool.parallel_for(
        blocks, std::max<std::size_t>(1, (std::size_t{1} << 16) / std::max<std::size_t>(rows, 1)),
        [&](std::size_t begin, std::size_t end, std::size_t) {
          for (std::size_t b = begin; b < end; ++b) {
            const std::size_t o0 = b * kDwRows;
            bias_block(rows, out, o0, std::min(kDwRows, out - o0), dy, dbias);
          }
        });
  }
}

void layer_norm_backward(std::size_t rows, std::size_t dim, const float* x, const float* gamma,
                         float eps, const float* dy, float* dx, bool accumulate, float* dgamma,
                         float* dbeta, ThreadPool& pool) {
  if (rows == 0 || dim == 0) return;
  const Chunks chunks = row_chunks(rows, dim);
  const bool params = dgamma != nullptr || dbeta != nullptr;
  // Per chunk: dgamma partials [dim], then dbeta partials [dim].
  std::vector<double> partials(params ? chunks.count * 2 * dim : 0, 0.0);
  pool.parallel_for(chunks.count, 1, [&](std::size_t begin, std::size_t end, std::size_t) {
    std::vector<double> g(dim), xhat(dim);
    for (std::size_t c = begin; c < end; ++c) {
      double* pg = params ? partials.data() + c * 2 * dim : nullptr;
      double* pb = params ? pg + dim : nullptr;
      const std::size_t r_end = std::min(rows, (c + 1) * chunks.rows_per_chunk);
      for (std::size_t r = c * chunks.rows_per_chunk; r < r_end; ++r) {
        const float* xr = x + r * dim;
        const float* dyr = dy + r * dim;
        double mean, rstd;
        layer_norm_row_stats(dim, xr, eps, &mean, &rstd);
        for (std::size_t i = 0; i < dim; ++i) xhat[i] = (xr[i] - mean) * rstd;
        if (gamma != nullptr) {
          for (std::size_t i = 0; i < dim; ++i) g[i] = static_cast<double>(dyr[i]) * gamma[i];
        } else {
          for (std::size_t i = 0; i < dim; ++i) g[i] = dyr[i];
        }
        if (params) {
          for (std::size_t i = 0; i < dim; ++i) {
            pg[i] += dyr[i] * xhat[i];
            pb[i] += dyr[i];
          }
        }
        // sum g and sum g xhat: four partial sums each (the tail into the first), fixed order.
        double sg[4] = {0, 0, 0, 0}, sgx[4] = {0, 0, 0, 0};
        std::size_t i = 0;
        for (; i + 4 <= dim; i += 4) {
          for (std::size_t l = 0; l < 4; ++l) {
            sg[l] += g[i + l];
            sgx[l] += g[i + l] * xhat[i + l];
          }
        }
        for (; i < dim; ++i) {
          sg[0] += g[i];
          sgx[0] += g[i] * xhat[i];
        }
        const double mg = ((sg[0] + sg[1]) + (sg[2] + sg[3])) / static_cast<double>(dim);
        const double mgx = ((sgx[0] + sgx[1]) + (sgx[2] + sgx[3])) / static_cast<double>(dim);
        float* dxr = dx + r * dim;  // may be xr or dyr: both were read above
        for (i = 0; i < dim; ++i) g[i] = rstd * (g[i] - mg - xhat[i] * mgx);
        store_row(dim, g.data(), dxr, accumulate);
      }
    }
  });
  if (!params) return;
  // dgamma partials are at c * 2 dim, dbeta's at c * 2 dim + dim: reduce each in chunk order.
  std::vector<double> column(chunks.count * dim);
  for (int which = 0; which < 2; ++which) {
    float* target = which == 0 ? dgamma : dbeta;
    if (target == nullptr) continue;
    for (std::size_t c = 0; c < chunks.count; ++c) {
      std::memcpy(column.data() + c * dim, partials.data() + c * 2 * dim + which * dim,
                  dim * sizeof(double));
    }
    reduce_partials(chunks.count, dim, column.data(), target);
  }
}

void gelu(std::size_t n, const float* x, float* y, const KernelSet& kernels, ThreadPool& pool) {
  pool.parallel_for(
      ceil_div(n, kElementGrain), 1, [&](std::size_t begin, std::size_t end, std::size_t) {
        for (std::size_t b = begin; b < end; ++b) {
          const std::size_t i0 = b * kElementGrain, count = std::min(kElementGrain, n - i0);
          if (y != x) std::memcpy(y + i0, x + i0, count * sizeof(float));
          kernels.gelu_bias(count, nullptr, y + i0);
        }
      });
}

void gelu_backward(std::size_t n, const float* pre, const float* dy, float* dx,
                   const KernelSet& kernels, ThreadPool& pool) {
  pool.parallel_for(ceil_div(n, kElementGrain), 1,
                    [&](std::size_t begin, std::size_t end, std::size_t) {
                      alignas(64) float d[kGeluBlock];
                      const std::size_t stop = std::min(n, end * kElementGrain);
                      for (std::size_t i0 = begin * kElementGrain; i0 < stop; i0 += kGeluBlock) {
                        const std::size_t count = std::min(kGeluBlock, stop - i0);
                        gelu_derivative(count, pre + i0, d, kernels);
                        for (std::size_t i = 0; i < count; ++i) dx[i0 + i] = dy[i0 + i] * d[i];
                      }
                    });
}

void relu_backward(std::size_t n, const float* pre, const float* dy, float* dx, ThreadPool& pool) {
  pool.parallel_for(ceil_div(n, kElementGrain), 1,
                    [&](std::size_t begin, std::size_t end, std::size_t) {
                      const std::size_t stop = std::min(n, end * kElementGrain);
                      for (std::size_t i = begin * kElementGrain; i < stop; ++i) {
                        const float g = dy[i];  // loaded either way, so the select vectorizes
                        dx[i] = pre[i] > 0.0f ? g : 0.0f;
                      }
                    });
}

void embed_backward(std::size_t rows, std::size_t len, std::size_t dim, const std::int32_t* tokens,
                    std::size_t num_tokens, const float* dx, float* dtable, std::size_t start,
                    float* dpositions, ThreadPool& pool) {
  for (std::size_t r = 0; r < rows; ++r) {
    if (tokens[r] < 0 || static_cast<std::size_t>(tokens[r]) >= num_tokens) {
      throw InputError("embedBackward: token " + std::to_string(tokens[r]) + " at " +
                       std::to_string(r) + " is outside [0, " + std::to_string(num_tokens) + ")");
    }
  }
  if (rows == 0 || dim == 0 || len == 0) return;
  // Rows grouped by token (a stable counting sort): each table row that occurs gets the
  // sum of its rows, in row order, added once; work items own disjoint table rows.
  std::vector<std::size_t> first(num_tokens + 1, 0), order(rows);
  for (std::size_t r = 0; r < rows; ++r) ++first[static_cast<std::size_t>(tokens[r]) + 1];
  std::vector<std::int32_t> present;
  for (std::size_t t = 0; t < num_tokens; ++t) {
    if (first[t + 1] > 0) present.push_back(static_cast<std::int32_t>(t));
    first[t + 1] += first[t];
  }
  {
    std::vector<std::size_t> next(first.begin(), first.end() - 1);
    for (std::size_t r = 0; r < rows; ++r) order[next[static_cast<std::size_t>(tokens[r])]++] = r;
  }
  const std::size_t rows_per_token = ceil_div(rows, present.size());
  const std::size_t grain =
      std::max<std::size_t>(1, (std::size_t{1} << 16) / (dim * rows_per_token));
  pool.parallel_for(present.size(), grain, [&](std::size_t begin, std::size_t end, std::size_t) {
    std::vector<double> acc(dim);
    for (std::size_t p = begin; p < end; ++p) {
      const std::size_t t = static_cast<std::size_t>(present[p]);
      std::fill(acc.begin(), acc.end(), 0.0);
      for (std::size_t k = first[t]; k < first[t + 1]; ++k) {
        const float* row = dx + order[k] * dim;
        for (std::size_t j = 0; j < dim; ++j) acc[j] += row[j];
      }
      store_row(dim, acc.data(), dtable + t * dim, true);
    }
  });
  if (dpositions == nullptr) return;
  const std::size_t batch = rows / len;
  pool.parallel_for(len, std::max<std::size_t>(1, (std::size_t{1} << 16) / (dim * batch)),
                    [&](std::size_t begin, std::size_t end, std::size_t) {
                      std::vector<double> acc(dim);
                      for (std::size_t p = begin; p < end; ++p) {
                        std::fill(acc.begin(), acc.end(), 0.0);
                        for (std::size_t b = 0; b < batch; ++b) {
                          const float* row = dx + (b * len + p) * dim;
                          for (std::size_t j = 0; j < dim; ++j) acc[j] += row[j];
                        }
                        store_row(dim, acc.data(), dpositions + (start + p) * dim, true);
                      }
                    });
}

void glu_gelu_backward(std::size_t rows, std::size_t hidden, const float* h, const float* dy,
                       float* dh, const KernelSet& kernels, ThreadPool& pool) {
  if (hidden == 0) return;
  pool.parallel_for(
      rows, row_grain(2 * hidden), [&](std::size_t begin, std::size_t end, std::size_t) {
        alignas(64) float d[kGeluBlock];
        alignas(64) float gl[kGeluBlock];
        for (std::size_t r = begin; r < end; ++r) {
          const float* a = h + r * 2 * hidden;
          const float* gate = a + hidden;
          const float* dyr = dy + r * hidden;
          float* da = dh + r * 2 * hidden;
          float* dgate = da + hidden;
          for (std::size_t j0 = 0; j0 < hidden; j0 += kGeluBlock) {
            const std::size_t count = std::min(kGeluBlock, hidden - j0);
            gelu_derivative(count, a + j0, d, kernels);
            std::memcpy(gl, a + j0, count * sizeof(float));
            kernels.gelu_bias(count, nullptr, gl);  // the forward's gelu(a), bit for bit
            for (std::size_t j = 0; j < count; ++j) {
              const float g = dyr[j0 + j];
              da[j0 + j] = g * gate[j0 + j] * d[j];
              dgate[j0 + j] = g * gl[j];
            }
          }
        }
      });
}

void scale_norm_backward(std::size_t rows, std::size_t dim, const float* x, float g, float eps,
                         const float* dy, float* dx, bool accumulate, float* dg, ThreadPool& pool) {
  if (rows == 0) return;
  const Chunks chunks = row_chunks(rows, dim);
  std::vector<double> partials(chunks.count, 0.0);
  pool.parallel_for(chunks.count, 1, [&](std::size_t begin, std::size_t end, std::size_t) {
    std::vector<double> v(dim);
    for (std::size_t c = begin; c < end; ++c) {
      const std::size_t r_end = std::min(rows, (c + 1) * chunks.rows_per_chunk);
      double part = 0.0;
      for (std::size_t r = c * chunks.rows_per_chunk; r < r_end; ++r) {
        const float* xr = x + r * dim;
        const float* dyr = dy + r * dim;
        double sum = 0.0, xdy = 0.0;
        for (std::size_t j = 0; j < dim; ++j)
          sum += static_cast<double>(xr[j]) * xr[j];  // as scale_norm
        for (std::size_t j = 0; j < dim; ++j) xdy += static_cast<double>(xr[j]) * dyr[j];
        // scale_norm's branch: max(float(||x||), eps) picks eps when the norm is <= eps.
        const bool clamped = !(static_cast<float>(std::sqrt(sum)) > eps);
        const double n = clamped ? static_cast<double>(eps) : std::sqrt(sum);
        const double f = static_cast<double>(g) / n;
        if (clamped) {
          for (std::size_t j = 0; j < dim; ++j) v[j] = f * dyr[j];
        } else {
          const double c2 = xdy / sum;
          for (std::size_t j = 0; j < dim; ++j) v[j] = f * (dyr[j] - xr[j] * c2);
        }
        store_row(dim, v.data(), dx + r * dim, accumulate);
        part += xdy / n;
      }
      partials[c] = part;
    }
  });
  double total = 0.0;
  for (double p : partials) total += p;
  dg[0] = static_cast<float>(static_cast<double>(dg[0]) + total);
}

void scaled_add_backward(std::size_t n, const float* x, const float* dy, float g, float* dg,
                         float* dx, bool accumulate, ThreadPool& pool) {
  const std::size_t chunks = ceil_div(n, kElementGrain);
  std::vector<double> partials(chunks, 0.0);
  pool.parallel_for(chunks, 1, [&](std::size_t begin, std::size_t end, std::size_t) {
    for (std::size_t c = begin; c < end; ++c) {
      const std::size_t i0 = c * kElementGrain, i1 = std::min(n, i0 + kElementGrain);
      double s[4] = {0, 0, 0, 0};
      std::size_t i = i0;
      for (; i + 4 <= i1; i += 4) {
        for (std::size_t l = 0; l < 4; ++l) s[l] += static_cast<double>(dy[i + l]) * x[i + l];
      }
      for (; i < i1; ++i) s[0] += static_cast<double>(dy[i]) * x[i];
      partials[c] = (s[0] + s[1]) + (s[2] + s[3]);
      if (dx == nullptr) continue;
      if (accumulate) {
        for (i = i0; i < i1; ++i) dx[i] += g * dy[i];
      } else {
        for (i = i0; i < i1; ++i) dx[i] = g * dy[i];
      }
    }
  });
  double total = 0.0;
  for (double p : partials) total += p;
  dg[0] = static_cast<float>(static_cast<double>(dg[0]) + total);
}

void token_shift_backward(std::size_t batch, std::size_t len, std::size_t dim, const float* dy,
                          const int* shifts, std::size_t segments, const std::uint8_t* keep,
                          float* dx, bool accumulate, ThreadPool& pool) {
  if (segments == 0 || dim == 0) return;
  const std::size_t piece = dim / segments, done = segments * piece;
  pool.parallel_for(
      batch * len, row_grain(dim), [&](std::size_t begin, std::size_t end, std::size_t) {
        for (std::size_t row = begin; row < end; ++row) {
          const std::size_t b = row / len, u = row % len;
          const bool kept = keep == nullptr || keep[row] != 0;
          float* dxr = dx + row * dim;
          for (std::size_t s = 0; s < segments; ++s) {
            const long long to =
                static_cast<long long>(u) + shifts[s];  // the row piece s of u went to
            float* dst = dxr + s * piece;
            const float* src = nullptr;
            if (to >= 0 && to < static_cast<long long>(len) && (shifts[s] == 0 || kept)) {
              src = dy + (b * len + static_cast<std::size_t>(to)) * dim + s * piece;
            }
            if (accumulate) {
              if (src != nullptr) {
                for (std::size_t j = 0; j < piece; ++j) dst[j] += src[j];
              }
            } else if (src != nullptr) {
              std::memcpy(dst, src, piece * sizeof(float));
            } else {
              std::fill(dst, dst + piece, 0.0f);
            }
          }
          const float* rest = dy + row * dim;
          if (accumulate) {
            for (std::size_t j = done; j < dim; ++j) dxr[j] += rest[j];
          } else {
            std::memcpy(dxr + done, rest + done, (dim - done) * sizeof(float));
          }
        }
      });
}

namespace {

std::uint64_t mix64(std::uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

std::uint64_t dropout_key(std::uint64_t seed, std::uint64_t stream) {
  return mix64(mix64(seed + 0x9E3779B97F4A7C15ULL) ^
               (stream * 0xD1B54A32D192ED03ULL + 0x8CB92BA72F3D8DD7ULL));
}

std::uint32_t dropout_threshold(float p) {
  return static_cast<std::uint32_t>(std::lround(static_cast<double>(p) * 16777216.0));
}

}  // namespace

bool dropout_keeps(std::uint64_t seed, std::uint64_t stream, std::uint64_t i, float p) {
  return (mix64(dropout_key(seed, stream) + i * 0x9E3779B97F4A7C15ULL) >> 40) >=
         dropout_threshold(p);
}

void dropout(std::size_t n, const float* x, const float* residual, float* y, float p,
             std::uint64_t seed, std::uint64_t stream, ThreadPool& pool) {
  const std::uint64_t key = dropout_key(seed, stream);
  const std::uint32_t threshold = dropout_threshold(p);
  const float scale = p >= 1.0f ? 0.0f : static_cast<float>(1.0 / (1.0 - static_cast<double>(p)));
  pool.parallel_for(
      ceil_div(n, kElementGrain), 1, [&](std::size_t begin, std::size_t end, std::size_t) {
        const std::size_t stop = std::min(n, end * kElementGrain);
        for (std::size_t i = begin * kElementGrain; i < stop; ++i) {
          const bool keep = (mix64(key + i * 0x9E3779B97F4A7C15ULL) >> 40) >= threshold;
          const float v = keep ? x[i] * scale : 0.0f;
          y[i] = residual != nullptr ? residual[i] + v : v;
        }
      });
}

}  // namespace pa
