#include "core/model_ops.h"

#include <algorithm>
#include <cmath>
#include <cstring>

namespace pa {
namespace {

// Rows per piece of pool work for row-wise ops of `dim` floats (about 64 K floats).
std::size_t row_grain(std::size_t dim) {
  return std::max<std::size_t>(1, (std::size_t{1} << 16) / std::max<std::size_t>(1, dim));
}

}  // namespace

bool Sinusoid::at(std::size_t t, std::size_t i, float* s, float* c) const {
  if (table != nullptr && t < rows) {
    const float* row = table + t * 2 * half;
    *s = row[i];
    *c = row[half + i];
    return true;
  }
  if (inv_freq == nullptr) return false;
  const float angle = static_cast<float>(t) * inv_freq[i];
  *s = static_cast<float>(std::sin(static_cast<double>(angle)));
  *c = static_cast<float>(std::cos(static_cast<double>(angle)));
  return true;
}

void embed_tokens(std::size_t rows, std::size_t len, std::size_t dim, const std::int32_t* tokens,
                  const float* table, const Sinusoid* sinusoid, const float* learned_positions,
                  std::size_t start, float* out, ThreadPool& pool) {
  pool.parallel_for(rows, row_grain(dim), [&](std::size_t begin, std::size_t end, std::size_t) {
    for (std::size_t r = begin; r < end; ++r) {
      const float* emb = table + static_cast<std::size_t>(tokens[r]) * dim;
      float* y = out + r * dim;
      const std::size_t t = start + r % len;
      if (learned_positions != nullptr) {
        const float* p = learned_positions + t * dim;
        for (std::size_t j = 0; j < dim; ++j) y[j] = emb[j] + p[j];
      } else if (sinusoid != nullptr) {
        const std::size_t n = sinusoid->half;
        for (std::size_t i = 0; i < n; ++i) {
          float s = 0.0f, c = 0.0f;
          sinusoid->at(t, i, &s, &c);
          y[i] = emb[i] + s;
          y[n + i] = emb[n + i] + c;
        }
      } else {
        std::memcpy(y, emb, dim * sizeof(float));
      }
    }
  });
}

void scale_norm(std::size_t rows, std::size_t dim, const float* x, float g, float eps, float* y,
                ThreadPool& pool) {
  pool.parallel_for(rows, row_grain(dim), [&](std::size_t begin, std::size_t end, std::size_t) {
    for (std::size_t r = begin; r < end; ++r) {
      const float* xr = x + r * dim;
      double sum = 0.0;
      for (std::size_t j = 0; j < dim; ++j) sum += static_cast<double>(xr[j]) * xr[j];
      const float n = std::max(static_cast<float>(std::sqrt(sum)), eps);
      float* yr = y + r * dim;
      for (std::size_t j = 0; j < dim; ++j) {
        const float scaled = xr[j] / n;
        yr[j] = scaled * g;
      }
    }
  });
}

void scaled_add(std::size_t n, const float* x, float g, const float* residual, float* y) {
  for (std::size_t i = 0; i < n; ++i) {
    const float product = x[i] * g;
    y[i] = residual[i] + product;
  }
}

void token_shift(std::size_t batch, std::size_t len, std::size_t dim, const float* x,
                 const int* shifts, std::size_t segments, const std::uint8_t* keep, float* history,
                 float* y) {
  const std::size_t piece = dim / segments;
  for (std::size_t b = 0; b < batch; ++b) {
    const float* xb = x + b * len * dim;
    float* yb = y + b * len * dim;
    const std::uint8_t* kb = keep != nullptr ? keep + b * len : nullptr;
    for (std::size_t t = 0; t < len; ++t) {
      float* yr = yb + t * dim;
      for (std::size_t s = 0; s < segments; ++s) {
        const long long from = static_cast<long long>(t) - shifts[s];
        float* dst = yr + s * piece;
        const float* src = nullptr;
        if (from >= 0 && from < static_cast<long long>(len)) {
          // Only shifted pieces see the mask (an unshifted piece keeps its values).
          const bool kept = shifts[s] == 0 || kb == nullptr || kb[from] != 0;
          if (kept) src = xb + static_cast<std::size_t>(from) * dim + s * piece;
        } else if (from == -1 && history != nullptr) {
          src = history + b * dim + s * piece;
        }
        if (src != nullptr) {
          std::memcpy(dst, src, piece * sizeof(float));
        } else {
          std::fill(dst, dst + piece, 0.0f);
        }
      }
      const std::size_t done = segments * piece;
      std::memcpy(yr + done, xb + t * dim + done, (dim - done) * sizeof(float));
    }
    if (history != nullptr && len > 0)
      std::memcpy(history + b * dim, xb + (len - 1) * dim, dim * sizeof(float));
  }
}

void glu_gelu(std::size_t rows, std::size_t hidden, const float* h, float* y,
              const KernelSet& kernels, ThreadPool& pool) {
  pool.parallel_for(rows, row_grain(2 * hidden),
                    [&](std::size_t begin, std::size_t end, std::size_t) {
                      for (std::size_t r = begin; r < end; ++r) {
                        const float* a = h + r * 2 * hidden;
                        const float* gate = a + hidden;
                        float* yr = y + r * hidden;
                        std::memcpy(yr, a, hidden * sizeof(float));
                        kernels.gelu_bias(hidden, nullptr, yr);
                        for (std::size_t j = 0; j < hidden; ++j) yr[j] *= gate[j];
                      }
                    });
}

void rotary(std::size_t heads, std::size_t len, std::size_t d, std::size_t start,
            RotaryLayout layout, const Sinusoid& sinusoid, float* x, ThreadPool& pool,
            bool inverse) {
  const std::size_t half = d / 2;
  pool.parallel_for(
      len, row_grain(heads * d), [&](std::size_t begin, std::size_t end, std::size_t) {
        // sin / cos of one position, shared by every head.
        float sines[512], cosines[512];
        for (std::size_t t = begin; t < end; ++t) {
          for (std::size_t i0 = 0; i0 < half; i0 += 512) {
            const std::size_t n = std::min<std::size_t>(512, half - i0);
            for (std::size_t i = 0; i < n; ++i) {
              sinusoid.at(start + t, i0 + i, &sines[i], &cosines[i]);
              if (inverse) sines[i] = -sines[i];
            }
            for (std::size_t h = 0; h < heads; ++h) {
              float* row = x + (h * len + t) * d;
              for (std::size_t i = 0; i < n; ++i) {
                const std::size_t a = layout == RotaryLayout::kInterleaved ? 2 * (i0 + i) : i0 + i;
                const std::size_t b = layout == RotaryLayout::kInterleaved ? a + 1 : a + half;
                const float xa = row[a], xb = row[b];
                const float s = sines[i], c = cosines[i];
                // x * cos + rotate(x) * sin, each product rounded before the sum.
                const float a_cos = xa * c, b_sin = xb * s, b_cos = xb * c, a_sin = xa * s;
                row[a] = a_cos - b_sin;
                row[b] = b_cos + a_sin;
              }
            }
          }
        }
      });
}

}  // namespace pa
