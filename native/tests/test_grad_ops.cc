// The training gradients (core/grad_ops.h) against plain double-precision references:
// every reference is first checked against central finite differences of its forward
// formula (in double), then each op runs on every kernel set this CPU can run (the ops
// that take no kernel set once) over sizes around the vector widths, with guard cells
// around every array, accumulate on and off, null optional outputs and in-place
// aliasing where allowed. linear_backward, layer_norm_backward and embed_backward (the
// ops with reductions split over the pool) must give the same bits on 1, 2 and 3 threads.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <limits>
#include <random>
#include <stdexcept>
#include <vector>

#include "core/attention_common.h"
#include "core/grad_ops.h"
#include "core/model_ops.h"
#include "kernels/dispatch.h"
#include "test_harness.h"
#include "test_util.h"

namespace {

using pa_test::for_size_pairs;
using pa_test::for_size_triples;
using pa_test::Guarded;
using pa_test::same_bits;

constexpr std::size_t kSizes[] = {1, 7, 8, 9, 16, 17, 63, 64, 65};
constexpr double kTol = 1e-5;    // float results, relative to the sum of |terms|
constexpr double kFdTol = 1e-6;  // references against finite differences

// CHECKs one case: err within kTol, guard cells intact, outputs not asked for left
// alone. When it fails, `describe` prints the case and the reasons follow.
template <class Describe>
bool check_case(double err, const char* err_name, bool guards, bool untouched, const char* touched,
                Describe describe) {
  const bool ok = err <= kTol && guards && untouched;
  if (!ok) {
    describe();
    std::fprintf(stderr, ": %s %.3g%s%s\n", err_name, err,
                 guards ? "" : ", guard cells overwritten", untouched ? "" : touched);
  }
  CHECK(ok);
  return ok;
}

// Runs `outputs(pool)` on pools of 1, 2 and 3 threads: every output it returns must
// keep the bits of the 1-thread run.
template <class Outputs>
void check_same_bits_on_threads(Outputs outputs) {
  std::vector<std::vector<float>> first;
  for (std::size_t threads : {1, 2, 3}) {
    pa::ThreadPool pool(threads);
    const std::vector<std::vector<float>> got = outputs(pool);
    if (first.empty()) {
      first = got;
    } else {
      for (std::size_t i = 0; i < got.size(); ++i)
        CHECK(same_bits(first[i].data(), got[i].data(), got[i].size()));
    }
  }
}

// Worst |got - want| / scale over the elements (NaN counts as infinitely wrong).
double worst_error(const float* got, const std::vector<double>& want,
                   const std::vector<double>& scale) {
  double worst = 0;
  for (std::size_t i = 0; i < want.size(); ++i) {
    const double err = std::fabs(got[i] - want[i]) / (scale[i] + 1e-30);
    if (!(err <= worst)) worst = std::isnan(err) ? INFINITY : err;
  }
  return worst;
}

// Expected values of an output that starts at `init` (accumulate) or is overwritten.
void add_initial(const std::vector<double>& init, bool accumulate, std::vector<double>* want,
                 std::vector<double>* scale) {
  if (!accumulate) return;
  for (std::size_t i = 0; i < want->size(); ++i) {
    (*want)[i] += init[i];
    (*scale)[i] += std::fabs(init[i]);
  }
}

// Central differences of f at p, one element at a time.
std::vector<double> numeric_gradient(const std::function<double(const std::vector<double>&)>& f,
                                     std::vector<double> p, double h = 1e-5) {
  std::vector<double> grad(p.size());
  for (std::size_t i = 0; i < p.size(); ++i) {
    const double keep = p[i], step = h * std::max(1.0, std::fabs(keep));
    p[i] = keep + step;
    const double up = f(p);
    p[i] = keep - step;
    const double down = f(p);
    p[i] = keep;
    grad[i] = (up - down) / (2 * step);
  }
  return grad;
}

// ||analytic - numeric|| / ||numeric|| (Frobenius).
double fd_error(const std::vector<double>& analytic, const std::vector<double>& numeric) {
  double diff = 0, norm = 0;
  for (std::size_t i = 0; i < numeric.size(); ++i) {
    diff += (analytic[i] - numeric[i]) * (analytic[i] - numeric[i]);
    norm += numeric[i] * numeric[i];
  }
  return std::sqrt(diff) / (std::sqrt(norm) + 1e-300);
}

#define CHECK_FD(name, analytic, numeric)                                                 \
  do {                                                                                    \
    const double fd_err = fd_error(analytic, numeric);                                    \
    if (!(fd_err <= kFdTol)) std::fprintf(stderr, "  %s: FD error %.3g\n", name, fd_err); \
    CHECK(fd_err <= kFdTol);                                                              \
  } while (0)

std::vector<double> random_doubles(std::size_t n, std::mt19937& rng, double lo, double hi) {
  std::uniform_real_distribution<double> uni(lo, hi);
  std::vector<double> v(n);
  for (auto& e : v) e = uni(rng);
  return v;
}

double dot(const std::vector<double>& a, const std::vector<double>& b) {
  double s = 0;
  for (std::size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

// ---------------------------------------------------------------------------------
// References (double in, double out)
// ---------------------------------------------------------------------------------

constexpr double kPi = 3.14159265358979323846;
double cdf_ref(double v) { return 0.5 * std::erfc(-v / std::sqrt(2.0)); }
double pdf_ref(double v) { return std::exp(-0.5 * v * v) / std::sqrt(2 * kPi); }
double gelu_ref(double v) { return v * cdf_ref(v); }
double gelu_grad_ref(double v) { return cdf_ref(v) + v * pdf_ref(v); }
double gelu_grad_scale(double v) { return std::fabs(cdf_ref(v)) + std::fabs(v * pdf_ref(v)); }

// m = the largest of a row of logits, s = sum_j exp(x_j - m).
void row_max_and_sum(const double* x, std::size_t classes, double* m_out, double* s_out) {
  double m = x[0];
  for (std::size_t j = 1; j < classes; ++j) m = std::max(m, x[j]);
  double s = 0;
  for (std::size_t j = 0; j < classes; ++j) s += std::exp(x[j] - m);
  *m_out = m;
  *s_out = s;
}

// Sum over counted rows of -log softmax(logits)[target].
double ce_loss_ref(std::size_t rows, std::size_t classes, const std::vector<double>& logits,
                   const std::vector<std::int32_t>& targets) {
  double total = 0;
  for (std::size_t r = 0; r < rows; ++r) {
    if (targets[r] < 0) continue;
    const double* x = logits.data() + r * classes;
    double m, s;
    row_max_and_sum(x, classes, &m, &s);
    total += std::log(s) + m - x[targets[r]];
  }
  return total;
}

// dlogits = scale (softmax - onehot); `mag` gets |scale| (p + onehot).
void ce_grad_ref(std::size_t rows, std::size_t classes, const std::vector<double>& logits,
                 const std::vector<std::int32_t>& targets, double scale, std::vector<double>* grad,
                 std::vector<double>* mag) {
  grad->assign(rows * classes, 0.0);
  mag->assign(rows * classes, 0.0);
  for (std::size_t r = 0; r < rows; ++r) {
    if (targets[r] < 0) continue;
    const double* x = logits.data() + r * classes;
    double m, s;
    row_max_and_sum(x, classes, &m, &s);
    for (std::size_t j = 0; j < classes; ++j) {
      const double p = std::exp(x[j] - m) / s,
                   hot = static_cast<std::int32_t>(j) == targets[r] ? 1.0 : 0.0;
      (*grad)[r * classes + j] = scale * (p - hot);
      (*mag)[r * classes + j] = std::fabs(scale) * (p + hot);
    }
  }
}

struct LinearGrads {
  std::vector<double> dx, dx_mag, dw, dw_mag, db, db_mag;
};

// Gradients of y = x W^T + b: dx = dy W, dW = dy^T x, db = column sums of dy.
LinearGrads linear_grad_ref(std::size_t rows, std::size_t in, std::size_t out,
                            const std::vector<double>& dy, const std::vector<double>& x,
                            std::size_t xs, const std::vector<double>& w) {
  LinearGrads g;
  g.dx.assign(rows * in, 0);
  g.dx_mag.assign(rows * in, 0);
  g.dw.assign(out * in, 0);
  g.dw_mag.assign(out * in, 0);
  g.db.assign(out, 0);
  g.db_mag.assign(out, 0);
  for (std::size_t r = 0; r < rows; ++r) {
    for (std::size_t o = 0; o < out; ++o) {
      const double d = dy[r * out + o];
      g.db[o] += d;
      g.db_mag[o] += std::fabs(d);
      for (std::size_t i = 0; i < in; ++i) {
        g.dx[r * in + i] += d * w[o * in + i];
        g.dx_mag[r * in + i] += std::fabs(d * w[o * in + i]);
        g.dw[o * in + i] += d * x[r * xs + i];
        g.dw_mag[o * in + i] += std::fabs(d * x[r * xs + i]);
      }
    }
  }
  return g;
}

struct NormGrads {
  std::vector<double> dx, dx_mag, dgamma, dgamma_mag, dbeta, dbeta_mag;
};

void row_mean_rstd(const double* x, std::size_t dim, double eps, double* mean, double* rstd) {
  double m = 0, v = 0;
  for (std::size_t i = 0; i < dim; ++i) m += x[i];
  m /= dim;
  for (std::size_t i = 0; i < dim; ++i) v += (x[i] - m) * (x[i] - m);
  v /= dim;
  *mean = m;
  *rstd = 1.0 / std::sqrt(v + eps);
}

double layer_norm_loss(std::size_t rows, std::size_t dim, const std::vector<double>& x,
                       const double* gamma, const double* beta, double eps,
                       const std::vector<double>& dy) {
  double total = 0;
  for (std::size_t r = 0; r < rows; ++r) {
    double mean, rstd;
    row_mean_rstd(x.data() + r * dim, dim, eps, &mean, &rstd);
    for (std::size_t i = 0; i < dim; ++i) {
      const double y =
          (x[r * dim + i] - mean) * rstd * (gamma ? gamma[i] : 1.0) + (beta ? beta[i] : 0.0);
      total += dy[r * dim + i] * y;
    }
  }
  return total;
}

NormGrads layer_norm_grad_ref(std::size_t rows, std::size_t dim, const std::vector<double>& x,
                              const double* gamma, double eps, const std::vector<double>& dy) {
  NormGrads g;
  g.dx.assign(rows * dim, 0);
  g.dx_mag.assign(rows * dim, 0);
  g.dgamma.assign(dim, 0);
  g.dgamma_mag.assign(dim, 0);
  g.dbeta.assign(dim, 0);
  g.dbeta_mag.assign(dim, 0);
  std::vector<double> xhat(dim), gg(dim);
  for (std::size_t r = 0; r < rows; ++r) {
    double mean, rstd;
    row_mean_rstd(x.data() + r * dim, dim, eps, &mean, &rstd);
    double mg = 0, mgx = 0, mag_g = 0, mag_gx = 0;
    for (std::size_t i = 0; i < dim; ++i) {
      xhat[i] = (x[r * dim + i] - mean) * rstd;
      gg[i] = dy[r * dim + i] * (gamma ? gamma[i] : 1.0);
      mg += gg[i] / dim;
      mgx += gg[i] * xhat[i] / dim;
      mag_g += std::fabs(gg[i]) / dim;
      mag_gx += std::fabs(gg[i] * xhat[i]) / dim;
      g.dgamma[i] += dy[r * dim + i] * xhat[i];
      g.dgamma_mag[i] += std::fabs(dy[r * dim + i] * xhat[i]);
      g.dbeta[i] += dy[r * dim + i];
      g.dbeta_mag[i] += std::fabs(dy[r * dim + i]);
    }
    for (std::size_t i = 0; i < dim; ++i) {
      g.dx[r * dim + i] = rstd * (gg[i] - mg - xhat[i] * mgx);
      g.dx_mag[r * dim + i] = rstd * (std::fabs(gg[i]) + mag_g + std::fabs(xhat[i]) * mag_gx);
    }
  }
  return g;
}

// y = x / max(||x||, eps) * g per row.
double scale_norm_loss(std::size_t rows, std::size_t dim, const std::vector<double>& x, double g,
                       double eps, const std::vector<double>& dy) {
  double total = 0;
  for (std::size_t r = 0; r < rows; ++r) {
    double s = 0;
    for (std::size_t j = 0; j < dim; ++j) s += x[r * dim + j] * x[r * dim + j];
    const double n = std::max(std::sqrt(s), eps);
    for (std::size_t j = 0; j < dim; ++j) total += dy[r * dim + j] * x[r * dim + j] / n * g;
  }
  return total;
}

struct ScaleNormGrads {
  std::vector<double> dx, dx_mag;
  double dg = 0, dg_mag = 0;
};

ScaleNormGrads scale_norm_grad_ref(std::size_t rows, std::size_t dim, const std::vector<double>& x,
                                   double g, double eps, const std::vector<double>& dy) {
  ScaleNormGrads out;
  out.dx.assign(rows * dim, 0);
  out.dx_mag.assign(rows * dim, 0);
  for (std::size_t r = 0; r < rows; ++r) {
    const double* xr = x.data() + r * dim;
    const double* d = dy.data() + r * dim;
    double s = 0, xd = 0, xd_mag = 0;
    for (std::size_t j = 0; j < dim; ++j) {
      s += xr[j] * xr[j];
      xd += xr[j] * d[j];
      xd_mag += std::fabs(xr[j] * d[j]);
    }
    const double norm = std::sqrt(s);
    const bool clamped = !(norm > eps);
    const double n = clamped ? eps : norm;
    for (std::size_t j = 0; j < dim; ++j) {
      if (clamped) {
        out.dx[r * dim + j] = g / n * d[j];
        out.dx_mag[r * dim + j] = std::fabs(g / n * d[j]);
      } else {
        out.dx[r * dim + j] = g / n * (d[j] - xr[j] * xd / s);
        out.dx_mag[r * dim + j] =
            std::fabs(g / n) * (std::fabs(d[j]) + std::fabs(xr[j]) * xd_mag / s);
      }
    }
    out.dg += xd / n;
    out.dg_mag += xd_mag / n;
  }
  return out;
}

// copy(to, from) for each element token_shift (no history) copies: y[to] = x[from],
// flat indices, in a fixed order.
template <class Copy>
void token_shift_copies(std::size_t batch, std::size_t len, std::size_t dim,
                        const std::vector<int>& shifts, const std::uint8_t* keep, Copy copy) {
  const std::size_t segments = shifts.size(), piece = dim / segments;
  for (std::size_t b = 0; b < batch; ++b) {
    for (std::size_t t = 0; t < len; ++t) {
      for (std::size_t s = 0; s < segments; ++s) {
        const long long from = static_cast<long long>(t) - shifts[s];
        if (from < 0 || from >= static_cast<long long>(len)) continue;
        if (shifts[s] != 0 && keep != nullptr && keep[b * len + from] == 0) continue;
        for (std::size_t j = 0; j < piece; ++j) {
          copy((b * len + t) * dim + s * piece + j,
               (b * len + static_cast<std::size_t>(from)) * dim + s * piece + j);
        }
      }
      for (std::size_t j = segments * piece; j < dim; ++j)
        copy((b * len + t) * dim + j, (b * len + t) * dim + j);
    }
  }
}

// token_shift's forward (no history) in double, and its adjoint by scattering.
std::vector<double> token_shift_ref(std::size_t batch, std::size_t len, std::size_t dim,
                                    const std::vector<double>& x, const std::vector<int>& shifts,
                                    const std::uint8_t* keep) {
  std::vector<double> y(batch * len * dim, 0.0);
  token_shift_copies(batch, len, dim, shifts, keep,
                     [&](std::size_t to, std::size_t from) { y[to] = x[from]; });
  return y;
}

std::vector<double> token_shift_grad_ref(std::size_t batch, std::size_t len, std::size_t dim,
                                         const std::vector<double>& dy,
                                         const std::vector<int>& shifts, const std::uint8_t* keep) {
  std::vector<double> dx(batch * len * dim, 0.0);
  token_shift_copies(batch, len, dim, shifts, keep,
                     [&](std::size_t to, std::size_t from) { dx[from] += dy[to]; });
  return dx;
}

}  // namespace

// ---------------------------------------------------------------------------------
// The references against finite differences of the forward formulas
// ---------------------------------------------------------------------------------

TEST("grads/references: every reference gradient matches central finite differences (1e-6)") {
  std::mt19937 rng(101);
  {  // cross-entropy: d(sum of losses)/dlogits = dlogits / gradScale
    const std::size_t rows = 5, classes = 7;
    const std::vector<double> logits = random_doubles(rows * classes, rng, -3, 3);
    const std::vector<std::int32_t> targets = {3, -1, 0, 6, 2};
    std::vector<double> grad, mag;
    ce_grad_ref(rows, classes, logits, targets, 1.0, &grad, &mag);
    const auto numeric = numeric_gradient(
        [&](const std::vector<double>& p) { return ce_loss_ref(rows, classes, p, targets); },
        logits);
    CHECK_FD("crossEntropy dlogits", grad, numeric);
  }
  {  // linear: L = sum dy * (x W^T + b)
    const std::size_t rows = 4, in = 5, out = 3, xs = 7;
    const std::vector<double> x = random_doubles(rows * xs, rng, -1, 1),
                              w = random_doubles(out * in, rng, -1, 1);
    const std::vector<double> b = random_doubles(out, rng, -1, 1),
                              dy = random_doubles(rows * out, rng, -1, 1);
    const LinearGrads g = linear_grad_ref(rows, in, out, dy, x, xs, w);
    auto loss = [&](const std::vector<double>& xv, const std::vector<double>& wv,
                    const std::vector<double>& bv) {
      double total = 0;
      for (std::size_t r = 0; r < rows; ++r) {
        for (std::size_t o = 0; o < out; ++o) {
          double y = bv[o];
          for (std::size_t i = 0; i < in; ++i) y += xv[r * xs + i] * wv[o * in + i];
          total += dy[r * out + o] * y;
        }
      }
      return total;
    };
    auto nx = numeric_gradient([&](const std::vector<double>& p) { return loss(p, w, b); }, x);
    std::vector<double> dx_strided(rows * xs, 0.0);  // the reference's dx in x's strided layout
    for (std::size_t r = 0; r < rows; ++r) {
      for (std::size_t i = 0; i < in; ++i) dx_strided[r * xs + i] = g.dx[r * in + i];
    }
    CHECK_FD("linear dx", dx_strided, nx);
    CHECK_FD("linear dweight", g.dw,
             numeric_gradient([&](const std::vector<double>& p) { return loss(x, p, b); }, w));
    CHECK_FD("linear dbias", g.db,
             numeric_gradient([&](const std::vector<double>& p) { return loss(x, w, p); }, b));
  }
  {  // layer norm, with and without gamma
    const std::size_t rows = 3, dim = 6;
    const double eps = 1e-5;
    const std::vector<double> x = random_doubles(rows * dim, rng, -2, 2),
                              dy = random_doubles(rows * dim, rng, -1, 1);
    const std::vector<double> gamma = random_doubles(dim, rng, -2, 2),
                              beta = random_doubles(dim, rng, -1, 1);
    for (bool affine : {true, false}) {
      const NormGrads g =
          layer_norm_grad_ref(rows, dim, x, affine ? gamma.data() : nullptr, eps, dy);
      CHECK_FD("layerNorm dx", g.dx,
               numeric_gradient(
                   [&](const std::vector<double>& p) {
                     return layer_norm_loss(rows, dim, p, affine ? gamma.data() : nullptr,
                                            beta.data(), eps, dy);
                   },
                   x));
      if (affine) {
        CHECK_FD("layerNorm dgamma", g.dgamma,
                 numeric_gradient(
                     [&](const std::vector<double>& p) {
                       return layer_norm_loss(rows, dim, x, p.data(), beta.data(), eps, dy);
                     },
                     gamma));
        CHECK_FD("layerNorm dbeta", g.dbeta,
                 numeric_gradient(
                     [&](const std::vector<double>& p) {
                       return layer_norm_loss(rows, dim, x, gamma.data(), p.data(), eps, dy);
                     },
                     beta));
      }
    }
  }
  {  // gelu'(x), relu'(x)
    std::vector<double> x = random_doubles(40, rng, -6, 6);
    x.push_back(-0.7518);  // near the zero of gelu'
    x.push_back(0.0);
    std::vector<double> analytic, numeric;
    for (double v : x) {
      analytic.push_back(gelu_grad_ref(v));
      numeric.push_back((gelu_ref(v + 1e-5) - gelu_ref(v - 1e-5)) / 2e-5);
    }
    CHECK_FD("gelu'", analytic, numeric);
  }
  {  // GLU gate: y = gelu(a) * b
    const std::size_t rows = 2, hidden = 5;
    const std::vector<double> h = random_doubles(rows * 2 * hidden, rng, -3, 3),
                              dy = random_doubles(rows * hidden, rng, -1, 1);
    auto loss = [&](const std::vector<double>& p) {
      double total = 0;
      for (std::size_t r = 0; r < rows; ++r) {
        for (std::size_t j = 0; j < hidden; ++j) {
          total +=
              dy[r * hidden + j] * gelu_ref(p[r * 2 * hidden + j]) * p[r * 2 * hidden + hidden + j];
        }
      }
      return total;
    };
    std::vector<double> analytic(rows * 2 * hidden);
    for (std::size_t r = 0; r < rows; ++r) {
      for (std::size_t j = 0; j < hidden; ++j) {
        const double a = h[r * 2 * hidden + j], b = h[r * 2 * hidden + hidden + j],
                     d = dy[r * hidden + j];
        analytic[r * 2 * hidden + j] = d * b * gelu_grad_ref(a);
        analytic[r * 2 * hidden + hidden + j] = d * gelu_ref(a);
      }
    }
    CHECK_FD("gluGelu dh", analytic, numeric_gradient(loss, h));
  }
  {  // embedding: y[r] = table[tok[r]] + pos[start + r % len]
    const std::size_t batch = 3, len = 4, dim = 3, num_tokens = 5, start = 2, pos_rows = 7,
                      rows = batch * len;
    const std::vector<std::int32_t> tokens = {0, 4, 4, 1, 2, 0, 4, 3, 3, 3, 0, 1};
    const std::vector<double> table = random_doubles(num_tokens * dim, rng, -1, 1),
                              pos = random_doubles(pos_rows * dim, rng, -1, 1);
    const std::vector<double> dx = random_doubles(rows * dim, rng, -1, 1);
    auto loss = [&](const std::vector<double>& t, const std::vector<double>& p) {
      double total = 0;
      for (std::size_t r = 0; r < rows; ++r) {
        for (std::size_t j = 0; j < dim; ++j) {
          total += dx[r * dim + j] * (t[tokens[r] * dim + j] + p[(start + r % len) * dim + j]);
        }
      }
      return total;
    };
    std::vector<double> dtable(num_tokens * dim, 0.0), dpos(pos_rows * dim, 0.0);
    for (std::size_t r = 0; r < rows; ++r) {
      for (std::size_t j = 0; j < dim; ++j) {
        dtable[tokens[r] * dim + j] += dx[r * dim + j];
        dpos[(start + r % len) * dim + j] += dx[r * dim + j];
      }
    }
    CHECK_FD("embed dtable", dtable,
             numeric_gradient([&](const std::vector<double>& p) { return loss(p, pos); }, table));
    CHECK_FD("embed dpositions", dpos,
             numeric_gradient([&](const std::vector<double>& p) { return loss(table, p); }, pos));
  }
  {  // ScaleNorm, the norm above eps and below it
    const std::size_t rows = 3, dim = 5;
    const double g = 1.7, eps = 1e-3;
    std::vector<double> x = random_doubles(rows * dim, rng, -1, 1);
    for (std::size_t j = 0; j < dim; ++j) x[dim + j] *= 1e-4;  // row 1: ||x|| < eps
    const std::vector<double> dy = random_doubles(rows * dim, rng, -1, 1);
    const ScaleNormGrads sg = scale_norm_grad_ref(rows, dim, x, g, eps, dy);
    CHECK_FD(
        "scaleNorm dx", sg.dx,
        numeric_gradient(
            [&](const std::vector<double>& p) { return scale_norm_loss(rows, dim, p, g, eps, dy); },
            x, 1e-7));
    const double ng = (scale_norm_loss(rows, dim, x, g + 1e-5, eps, dy) -
                       scale_norm_loss(rows, dim, x, g - 1e-5, eps, dy)) /
                      2e-5;
    CHECK_FD("scaleNorm dg", std::vector<double>{sg.dg}, std::vector<double>{ng});
  }
  {  // scaled add: y = residual + x g
    const std::size_t n = 9;
    const std::vector<double> x = random_doubles(n, rng, -1, 1), dy = random_doubles(n, rng, -1, 1);
    const double g = -0.6;
    auto loss = [&](const std::vector<double>& xv, double gv) {
      double total = 0;
      for (std::size_t i = 0; i < n; ++i) total += dy[i] * xv[i] * gv;
      return total;
    };
    std::vector<double> dx(n);
    for (std::size_t i = 0; i < n; ++i) dx[i] = g * dy[i];
    CHECK_FD("scaledAdd dx", dx,
             numeric_gradient([&](const std::vector<double>& p) { return loss(p, g); }, x));
    const double ng = (loss(x, g + 1e-5) - loss(x, g - 1e-5)) / 2e-5;
    CHECK_FD("scaledAdd dg", std::vector<double>{dot(dy, x)}, std::vector<double>{ng});
  }
  {  // token shift, with a mask and a remainder
    const std::size_t batch = 2, len = 4, dim = 7;
    const std::vector<int> shifts = {1, -1, 0};
    const std::uint8_t keep[] = {1, 0, 1, 1, 0, 1, 1, 0};
    const std::vector<double> x = random_doubles(batch * len * dim, rng, -1, 1),
                              dy = random_doubles(batch * len * dim, rng, -1, 1);
    CHECK_FD("tokenShift dx", token_shift_grad_ref(batch, len, dim, dy, shifts, keep),
             numeric_gradient(
                 [&](const std::vector<double>& p) {
                   return dot(dy, token_shift_ref(batch, len, dim, p, shifts, keep));
                 },
                 x));
  }
}

// ---------------------------------------------------------------------------------
// cross_entropy
// ---------------------------------------------------------------------------------

namespace {

bool check_cross_entropy(std::size_t rows, std::size_t classes, bool in_place, float grad_scale,
                         float spread, float offset, const pa::KernelSet& kernels,
                         pa::ThreadPool& pool, std::mt19937& rng) {
  Guarded logits(rows * classes, rows % 2), dlogits(rows * classes, 1);
  logits.fill(rng, -spread, spread);
  for (std::size_t i = 0; i < rows * classes; ++i) logits[i] += offset;
  std::vector<std::int32_t> targets(rows);
  std::uniform_int_distribution<int> pick(-1, static_cast<int>(classes) - 1);
  for (auto& t : targets) t = pick(rng);  // some -1: ignored
  std::vector<double> grad, mag;
  const std::vector<double> lv = logits.values();
  ce_grad_ref(rows, classes, lv, targets, grad_scale, &grad, &mag);
  const double want_loss = ce_loss_ref(rows, classes, lv, targets);
  double loss_mag = 0;
  std::size_t counted = 0;
  for (std::size_t r = 0; r < rows; ++r) counted += targets[r] >= 0;
  for (std::size_t r = 0; r < rows; ++r) {
    if (targets[r] >= 0)
      loss_mag += std::fabs(ce_loss_ref(
          1, classes, std::vector<double>(lv.begin() + r * classes, lv.begin() + (r + 1) * classes),
          {targets[r]}));
  }
  double loss[2] = {1.25, 3.0};  // added to
  float* out = in_place ? logits.data() : dlogits.data();
  pa::cross_entropy(rows, classes, logits.data(), targets.data(), grad_scale, loss, out, kernels,
                    pool);
  const double err = worst_error(out, grad, mag);
  const double loss_err = std::fabs(loss[0] - 1.25 - want_loss) / (loss_mag + 1e-30);
  const bool ok = err <= kTol && loss_err <= 1e-6 && loss[1] == 3.0 + counted &&
                  logits.guards_intact() && dlogits.guards_intact();
  if (!ok) {
    std::fprintf(
        stderr,
        "  [%s] crossEntropy rows=%zu classes=%zu in_place=%d offset=%g: dlogits err %.3g, loss err %.3g\n",
        kernels.name, rows, classes, in_place, offset, err, loss_err);
  }
  CHECK(ok);
  return ok;
}

}  // namespace

TEST("grads/crossEntropy: sizes, ignored targets, in place, large offsets, every kernel set") {
  pa::ThreadPool pool(2);
  std::mt19937 rng(201);
  for (const pa::KernelSet* kernels : pa::available_kernel_sets()) {
    for_size_pairs(kSizes, [&](std::size_t rows, std::size_t classes, std::size_t index) {
      return check_cross_entropy(rows, classes, index % 2 == 0, index % 3 == 0 ? 1.0f : 0.37f, 4.0f,
                                 0.0f, *kernels, pool, rng);
    });
    // Offsets that overflow exp without the max, wide spreads, many classes, parallel rows.
    check_cross_entropy(9, 65, true, 1.0f, 3.0f, 1000.0f, *kernels, pool, rng);
    check_cross_entropy(9, 65, false, 2.0f, 3.0f, -1000.0f, *kernels, pool, rng);
    check_cross_entropy(17, 33, false, 1.0f, 40.0f, 0.0f, *kernels, pool, rng);
    check_cross_entropy(300, 1000, true, 0.5f, 8.0f, 0.0f, *kernels, pool, rng);
  }
}

TEST("grads/crossEntropy: ignored rows are zero, an out-of-range target throws before writing") {
  pa::ThreadPool pool(2);
  const pa::KernelSet& kernels = pa::default_kernel_set();
  std::vector<float> logits = {1, 2, 3, 4, 5, 6}, d(6, 9.0f);
  std::vector<std::int32_t> targets = {-1, -7};
  double loss[2] = {0, 0};
  pa::cross_entropy(2, 3, logits.data(), targets.data(), 1.0f, loss, d.data(), kernels, pool);
  for (float v : d) CHECK(v == 0.0f);
  CHECK(loss[0] == 0.0 && loss[1] == 0.0);
  targets = {0, 3};
  std::fill(d.begin(), d.end(), 9.0f);
  bool threw = false;
  try {
    pa::cross_entropy(2, 3, logits.data(), targets.data(), 1.0f, loss, d.data(), kernels, pool);
  } catch (const pa::InputError&) {
    threw = true;
  }
  CHECK(threw);
  for (float v : d) CHECK(v == 9.0f);
  // One class: the loss is 0 and so is the gradient.
  targets = {0, 0};
  pa::cross_entropy(6, 1, logits.data(), std::vector<std::int32_t>(6, 0).data(), 1.0f, loss,
                    d.data(), kernels, pool);
  for (float v : d) CHECK(v == 0.0f);
  CHECK(loss[0] == 0.0 && loss[1] == 6.0);
}

// ---------------------------------------------------------------------------------
// linear_backward
// ---------------------------------------------------------------------------------

namespace {

struct LinearBackwardCase {
  std::size_t rows, in, out;
  std::size_t x_extra;  // x_stride = in + x_extra
  bool want_dx, want_dw, want_db, accumulate;
  std::size_t offset;
};

bool check_linear_backward(const LinearBackwardCase& t, const pa::KernelSet& kernels,
                           pa::ThreadPool& pool, std::mt19937& rng) {
  const std::size_t xs = t.in + t.x_extra;
  Guarded dy(t.rows * t.out, t.offset), x(t.rows * xs, t.offset), w(t.out * t.in, t.offset);
  Guarded dx(t.rows * t.in, t.offset), dw(t.out * t.in, 1 - t.offset), db(t.out, t.offset);
  dy.fill(rng, -1, 1);
  x.fill(rng, -1, 1);
  w.fill(rng, -1, 1);
  dx.fill(rng, -1, 1);
  dw.fill(rng, -1, 1);
  db.fill(rng, -1, 1);
  const std::vector<double> dx0 = dx.values(), dw0 = dw.values(), db0 = db.values();
  LinearGrads g = linear_grad_ref(t.rows, t.in, t.out, dy.values(), x.values(), xs, w.values());
  add_initial(dx0, t.accumulate, &g.dx, &g.dx_mag);
  add_initial(dw0, true, &g.dw, &g.dw_mag);
  add_initial(db0, true, &g.db, &g.db_mag);
  pa::linear_backward(t.rows, t.in, t.out, dy.data(), x.data(), xs, w.data(),
                      t.want_dx ? dx.data() : nullptr, t.accumulate,
                      t.want_dw ? dw.data() : nullptr, t.want_db ? db.data() : nullptr, kernels,
                      pool);
  double worst = 0;
  bool untouched = true;  // outputs not asked for keep their bits
  if (t.want_dx)
    worst = std::max(worst, worst_error(dx.data(), g.dx, g.dx_mag));
  else
    untouched = untouched && dx.values() == dx0;
  if (t.want_dw)
    worst = std::max(worst, worst_error(dw.data(), g.dw, g.dw_mag));
  else
    untouched = untouched && dw.values() == dw0;
  if (t.want_db)
    worst = std::max(worst, worst_error(db.data(), g.db, g.db_mag));
  else
    untouched = untouched && db.values() == db0;
  const bool guards = dy.guards_intact() && x.guards_intact() && w.guards_intact() &&
                      dx.guards_intact() && dw.guards_intact() && db.guards_intact();
  return check_case(worst, "worst err", guards, untouched, ", a null output was written", [&] {
    std::fprintf(
        stderr,
        "  [%s] linearBackward rows=%zu in=%zu out=%zu x_stride=%zu dx=%d dw=%d db=%d accumulate=%d",
        kernels.name, t.rows, t.in, t.out, xs, t.want_dx, t.want_dw, t.want_db, t.accumulate);
  });
}

}  // namespace

TEST("grads/linearBackward: sizes around the vector widths, every option, every kernel set") {
  pa::ThreadPool pool(2);
  std::mt19937 rng(301);
  std::size_t cases = 0;
  for (const pa::KernelSet* kernels : pa::available_kernel_sets()) {
    cases += for_size_triples(
        kSizes, [&](std::size_t rows, std::size_t in, std::size_t out, std::size_t index) {
          // Options cycle with different periods so the 729 cases mix them; every third
          // case drops one output (dx, dweight or dbias).
          const std::size_t drop = index % 3 == 0 ? (index / 3) % 3 : 3;
          const LinearBackwardCase t{rows,           in,        out,       (index / 5) % 3,
                                     drop != 0,      drop != 1, drop != 2, (index / 2) % 2 == 1,
                                     (index / 7) % 2};
          return check_linear_backward(t, *kernels, pool, rng);
        });
  }
  std::printf("  %zu linearBackward cases\n", cases);
}

TEST("grads/linearBackward: several passes, row and column blocks, tails, strided x") {
  pa::ThreadPool pool(3);
  std::mt19937 rng(302);
  const LinearBackwardCase cases[] = {
      {530, 3000, 40, 0, true, true, true, false, 0},   // passes of 256 rows: 256, 256, 18
      {300, 70, 300, 5, true, true, true, true, 1},     // 64 x 64 blocks, several row blocks
      {70, 520, 260, 0, true, true, true, true, 0},     // 128 x 256 blocks with tails
      {257, 129, 131, 3, false, true, true, false, 1},  // dweight and dbias only
      {257, 129, 131, 0, false, false, true, true, 0},  // dbias alone (its own loop)
      {3, 1000, 900, 0, true, false, false, true, 0},   // few rows: dx alone
      {0, 16, 16, 0, true, true, true, false, 0},       // no rows: nothing changes
  };
  for (const pa::KernelSet* kernels : pa::available_kernel_sets()) {
    for (const LinearBackwardCase& t : cases) check_linear_backward(t, *kernels, pool, rng);
  }
}

TEST(
    "grads/linearBackward: the same bits for 1, 2 and 3 threads; dbias the same with or without dweight") {
  std::mt19937 rng(303);
  std::normal_distribution<float> normal;
  const std::size_t shapes[][3] = {
      {600, 300, 200}, {530, 3000, 40}, {64, 1000, 96}, {1100, 40, 33}, {5, 17, 700}};
  for (const pa::KernelSet* kernels : pa::available_kernel_sets()) {
    for (const auto& s : shapes) {
      const std::size_t rows = s[0], in = s[1], out = s[2];
      std::vector<float> dy(rows * out), x(rows * in), w(out * in), dx0(rows * in), dw0(out * in),
          db0(out);
      for (auto* v : {&dy, &x, &w, &dx0, &dw0, &db0}) {
        for (auto& e : *v) e = normal(rng);
      }
      check_same_bits_on_threads([&](pa::ThreadPool& pool) {
        std::vector<float> dx = dx0, dw = dw0, db = db0, db_alone = db0;
        pa::linear_backward(rows, in, out, dy.data(), x.data(), in, w.data(), dx.data(), true,
                            dw.data(), db.data(), *kernels, pool);
        pa::linear_backward(rows, in, out, dy.data(), x.data(), in, w.data(), nullptr, false,
                            nullptr, db_alone.data(), *kernels, pool);
        CHECK(same_bits(db.data(), db_alone.data(), out));
        return std::vector<std::vector<float>>{dx, dw, db};
      });
    }
  }
}

// ---------------------------------------------------------------------------------
// layer_norm_backward
// ---------------------------------------------------------------------------------

namespace {

enum class Alias { kNone, kX, kDy };

bool check_layer_norm_backward(std::size_t rows, std::size_t dim, bool affine, bool want_params,
                               bool accumulate, Alias alias, float offset, float eps,
                               pa::ThreadPool& pool, std::mt19937& rng) {
  Guarded x(rows * dim, rows % 2), gamma(dim, 1), dy(rows * dim, 0), dx(rows * dim, 1),
      dgamma(dim, 0), dbeta(dim, 1);
  x.fill(rng, -2, 2);
  for (std::size_t i = 0; i < rows * dim; ++i) x[i] += offset;
  gamma.fill(rng, -2, 2);
  dy.fill(rng, -1, 1);
  dx.fill(rng, -1, 1);
  dgamma.fill(rng, -1, 1);
  dbeta.fill(rng, -1, 1);
  const std::vector<double> xv = x.values(), gv = gamma.values(), dyv = dy.values();
  NormGrads g = layer_norm_grad_ref(rows, dim, xv, affine ? gv.data() : nullptr, eps, dyv);
  // The output's initial values: dx's own, or those of the array it aliases.
  float* out = alias == Alias::kX ? x.data() : alias == Alias::kDy ? dy.data() : dx.data();
  const std::vector<double> out0(out, out + rows * dim), dgamma0 = dgamma.values(),
                                                         dbeta0 = dbeta.values();
  add_initial(out0, accumulate, &g.dx, &g.dx_mag);
  add_initial(dgamma0, true, &g.dgamma, &g.dgamma_mag);
  add_initial(dbeta0, true, &g.dbeta, &g.dbeta_mag);
  pa::layer_norm_backward(rows, dim, x.data(), affine ? gamma.data() : nullptr, eps, dy.data(), out,
                          accumulate, want_params ? dgamma.data() : nullptr,
                          want_params ? dbeta.data() : nullptr, pool);
  double worst = worst_error(out, g.dx, g.dx_mag);
  if (want_params) {
    worst = std::max(worst, worst_error(dgamma.data(), g.dgamma, g.dgamma_mag));
    worst = std::max(worst, worst_error(dbeta.data(), g.dbeta, g.dbeta_mag));
  }
  const bool untouched = want_params || (dgamma.values() == dgamma0 && dbeta.values() == dbeta0);
  const bool guards = x.guards_intact() && gamma.guards_intact() && dy.guards_intact() &&
                      dx.guards_intact() && dgamma.guards_intact() && dbeta.guards_intact();
  return check_case(worst, "worst err", guards, untouched, ", a null output was written", [&] {
    std::fprintf(
        stderr,
        "  layerNormBackward rows=%zu dim=%zu affine=%d params=%d accumulate=%d alias=%d offset=%g",
        rows, dim, affine, want_params, accumulate, static_cast<int>(alias), offset);
  });
}

}  // namespace

TEST("grads/layerNormBackward: sizes, gamma or not, accumulate, in place, null outputs, offsets") {
  pa::ThreadPool pool(2);
  std::mt19937 rng(401);
  for_size_pairs(kSizes, [&](std::size_t rows, std::size_t dim, std::size_t index) {
    const Alias alias = static_cast<Alias>(index % 3);
    return check_layer_norm_backward(rows, dim, index % 2 == 0, index % 5 != 3,
                                     (index / 2) % 2 == 1, alias, 0.0f, 1e-5f, pool, rng);
  });
  // Many rows (several reduction chunks), wide rows, a large common offset, a large eps.
  check_layer_norm_backward(3000, 40, true, true, true, Alias::kNone, 0.0f, 1e-5f, pool, rng);
  check_layer_norm_backward(70, 768, true, true, false, Alias::kDy, 0.0f, 1e-5f, pool, rng);
  check_layer_norm_backward(20, 64, true, true, false, Alias::kNone, 1e3f, 1e-5f, pool, rng);
  check_layer_norm_backward(20, 64, false, true, true, Alias::kX, 0.0f, 0.5f, pool, rng);
}

TEST("grads/layerNormBackward: the same bits for 1, 2 and 3 threads") {
  std::mt19937 rng(402);
  std::normal_distribution<float> normal;
  // The last shape's dy has +-1e12 in pairs of rows that cancel, then a row of 1e-6:
  // its double sums for dgamma and dbeta round the small values away differently for
  // each grouping of the rows, so a partition that followed the pool would show in the
  // float bits.
  const std::size_t shapes[][2] = {{2000, 100}, {513, 1024}, {64, 7}, {10000, 16}, {5001, 100}};
  for (const auto& s : shapes) {
    const std::size_t rows = s[0], dim = s[1];
    std::vector<float> x(rows * dim), gamma(dim), dy(rows * dim), dgamma0(dim), dbeta0(dim);
    for (auto* v : {&x, &gamma, &dy, &dgamma0, &dbeta0}) {
      for (auto& e : *v) e = normal(rng);
    }
    if (rows == 5001) {
      for (std::size_t r = 0; r + 2 < rows; r += 3) {
        for (std::size_t i = 0; i < dim; ++i) {
          const float big = 1e12f * normal(rng);
          dy[r * dim + i] = big;
          dy[(r + 1) * dim + i] = -big;
          dy[(r + 2) * dim + i] *= 1e-6f;
        }
      }
    }
    check_same_bits_on_threads([&](pa::ThreadPool& pool) {
      std::vector<float> dx(rows * dim), dgamma = dgamma0, dbeta = dbeta0;
      pa::layer_norm_backward(rows, dim, x.data(), gamma.data(), 1e-5f, dy.data(), dx.data(), false,
                              dgamma.data(), dbeta.data(), pool);
      return std::vector<std::vector<float>>{dx, dgamma, dbeta};
    });
  }
}

// ---------------------------------------------------------------------------------
// gelu, gelu_backward, relu_backward, glu_gelu_backward
// ---------------------------------------------------------------------------------

TEST(
    "grads/gelu: forward and backward against erf in double, every kernel set, -16 to 16 and specials") {
  pa::ThreadPool pool(2);
  std::vector<float> x;
  for (int i = -40000; i <= 40000; ++i) x.push_back(static_cast<float>(i) * 4e-4f);
  for (float v : {1e-30f, -1e-30f, 1e-40f, 0.0f, -0.0f, 30.0f, -30.0f, 1e30f, -1e30f, -0.7518f})
    x.push_back(v);
  const std::size_t n = x.size();
  std::mt19937 rng(501);
  std::uniform_real_distribution<float> uni(-2.0f, 2.0f);
  std::vector<float> dy(n);
  for (auto& v : dy) v = uni(rng);
  for (const pa::KernelSet* kernels : pa::available_kernel_sets()) {
    // Forward: separate output and in place.
    std::vector<float> y(n), inplace = x;
    pa::gelu(n, x.data(), y.data(), *kernels, pool);
    pa::gelu(n, inplace.data(), inplace.data(), *kernels, pool);
    CHECK(same_bits(y.data(), inplace.data(), n));
    double worst_forward = 0, worst_backward = 0;
    bool ok = true;
    for (std::size_t i = 0; i < n && ok; ++i) {
      const double want = gelu_ref(x[i]);
      const double err = std::fabs(y[i] - want);
      ok = err <= 1e-6 * std::fabs(want) + 1e-43;
      if (!ok)
        std::fprintf(stderr, "  [%s] gelu(%.9g) = %.9g, expected %.9g\n", kernels->name, x[i], y[i],
                     want);
      if (std::fabs(want) > 1e-37) worst_forward = std::max(worst_forward, err / std::fabs(want));
    }
    CHECK(ok);
    // Backward: dx = dy gelu'(x), relative to |dy| (|Phi| + |x phi|).
    std::vector<float> dx(n), dx_inplace = dy;
    pa::gelu_backward(n, x.data(), dy.data(), dx.data(), *kernels, pool);
    pa::gelu_backward(n, x.data(), dx_inplace.data(), dx_inplace.data(), *kernels, pool);
    CHECK(same_bits(dx.data(), dx_inplace.data(), n));
    ok = true;
    for (std::size_t i = 0; i < n && ok; ++i) {
      const double want = dy[i] * gelu_grad_ref(x[i]),
                   scale = std::fabs(dy[i]) * gelu_grad_scale(x[i]);
      const double err = std::fabs(dx[i] - want);
      ok = err <= 1e-6 * scale + 1e-43;
      if (!ok) {
        std::fprintf(stderr, "  [%s] dy %.9g * gelu'(%.9g) = %.9g, expected %.9g\n", kernels->name,
                     dy[i], x[i], dx[i], want);
      }
      if (scale > 1e-37) worst_backward = std::max(worst_backward, err / scale);
    }
    CHECK(ok);
    std::printf("  [%s] gelu worst relative error %.3g, gelu' %.3g\n", kernels->name, worst_forward,
                worst_backward);
    // Specials: gelu'(+inf) = 1, gelu'(-inf) = 0, NaN stays NaN.
    const float nan = std::numeric_limits<float>::quiet_NaN();
    std::vector<float> special = {INFINITY, -INFINITY, nan}, ones = {1.0f, 1.0f, 1.0f}, dspecial(3);
    pa::gelu_backward(3, special.data(), ones.data(), dspecial.data(), *kernels, pool);
    CHECK(dspecial[0] == 1.0f);
    CHECK(dspecial[1] == 0.0f);
    CHECK(std::isnan(dspecial[2]));
  }
}

TEST("grads/gelu and reluBackward: sizes around the vector widths, guard cells, every kernel set") {
  pa::ThreadPool pool(2);
  std::mt19937 rng(502);
  for (const pa::KernelSet* kernels : pa::available_kernel_sets()) {
    for (std::size_t n : {1, 7, 8, 9, 16, 17, 63, 64, 65, 16385, 40000}) {
      for (std::size_t offset : {0, 1}) {
        Guarded x(n, offset), y(n, 1 - offset), dy(n, offset), dx(n, 1 - offset);
        x.fill(rng, -5, 5);
        if (n > 3) x[3] = 0.0f;  // relu'(0) = 0
        dy.fill(rng, -1, 1);
        pa::gelu(n, x.data(), y.data(), *kernels, pool);
        std::vector<double> want(n), scale(n);
        for (std::size_t i = 0; i < n; ++i) {
          want[i] = gelu_ref(x[i]);
          scale[i] = std::fabs(want[i]) + 1e-30;
        }
        const double forward_err = worst_error(y.data(), want, scale);
        pa::gelu_backward(n, x.data(), dy.data(), dx.data(), *kernels, pool);
        for (std::size_t i = 0; i < n; ++i) {
          want[i] = dy[i] * gelu_grad_ref(x[i]);
          scale[i] = std::fabs(dy[i]) * gelu_grad_scale(x[i]);
        }
        const double backward_err = worst_error(dx.data(), want, scale);
        pa::relu_backward(n, x.data(), dy.data(), dx.data(), pool);
        bool relu_ok = true;
        for (std::size_t i = 0; i < n; ++i)
          relu_ok = relu_ok && dx[i] == (x[i] > 0.0f ? dy[i] : 0.0f);
        pa::relu_backward(n, x.data(), dy.data(), dy.data(), pool);  // in place
        for (std::size_t i = 0; i < n; ++i) relu_ok = relu_ok && dy[i] == dx[i];
        const bool guards =
            x.guards_intact() && y.guards_intact() && dy.guards_intact() && dx.guards_intact();
        const bool ok = forward_err <= 1e-6 && backward_err <= 1e-6 && relu_ok && guards;
        if (!ok) {
          std::fprintf(
              stderr,
              "  [%s] gelu/relu n=%zu offset=%zu: gelu err %.3g, gelu' err %.3g, relu %s%s\n",
              kernels->name, n, offset, forward_err, backward_err, relu_ok ? "ok" : "wrong",
              guards ? "" : ", guard cells overwritten");
        }
        CHECK(ok);
      }
    }
  }
}

TEST("grads/gluGeluBackward: sizes around the vector widths, guard cells, every kernel set") {
  pa::ThreadPool pool(2);
  std::mt19937 rng(503);
  for (const pa::KernelSet* kernels : pa::available_kernel_sets()) {
    bool ok = true;
    for (std::size_t rows : kSizes) {
      for (std::size_t hidden : {1, 7, 8, 9, 16, 17, 63, 64, 65, 300}) {
        if (!ok) break;
        Guarded h(rows * 2 * hidden, rows % 2), dy(rows * hidden, 1), dh(rows * 2 * hidden, 0);
        h.fill(rng, -4, 4);
        dy.fill(rng, -1, 1);
        std::vector<double> want(rows * 2 * hidden), scale(rows * 2 * hidden);
        for (std::size_t r = 0; r < rows; ++r) {
          for (std::size_t j = 0; j < hidden; ++j) {
            const double a = h[r * 2 * hidden + j], b = h[r * 2 * hidden + hidden + j],
                         d = dy[r * hidden + j];
            want[r * 2 * hidden + j] = d * b * gelu_grad_ref(a);
            scale[r * 2 * hidden + j] = std::fabs(d * b) * gelu_grad_scale(a);
            want[r * 2 * hidden + hidden + j] = d * gelu_ref(a);
            scale[r * 2 * hidden + hidden + j] = std::fabs(d * gelu_ref(a));
          }
        }
        pa::glu_gelu_backward(rows, hidden, h.data(), dy.data(), dh.data(), *kernels, pool);
        const double err = worst_error(dh.data(), want, scale);
        const bool guards = h.guards_intact() && dy.guards_intact() && dh.guards_intact();
        ok = err <= kTol && guards;
        if (!ok) {
          std::fprintf(stderr, "  [%s] gluGeluBackward rows=%zu hidden=%zu: err %.3g%s\n",
                       kernels->name, rows, hidden, err, guards ? "" : ", guard cells overwritten");
        }
        CHECK(ok);
      }
    }
  }
}

// ---------------------------------------------------------------------------------
// embed_backward
// ---------------------------------------------------------------------------------

namespace {

bool check_embed_backward(std::size_t batch, std::size_t len, std::size_t dim,
                          std::size_t num_tokens, std::size_t start, bool positions,
                          pa::ThreadPool& pool, std::mt19937& rng) {
  const std::size_t rows = batch * len, pos_rows = start + len + 2;
  std::vector<std::int32_t> tokens(rows);
  std::uniform_int_distribution<int> pick(0, static_cast<int>(num_tokens) - 1);
  for (auto& t : tokens) t = pick(rng);
  if (rows > 4) tokens[rows - 1] = tokens[0];  // a repeat
  Guarded dx(rows * dim, rows % 2), dtable(num_tokens * dim, 1), dpos(pos_rows * dim, 0);
  dx.fill(rng, -1, 1);
  dtable.fill(rng, -1, 1);
  dpos.fill(rng, -1, 1);
  std::vector<double> want_t = dtable.values(), want_p = dpos.values();
  std::vector<double> mag_t(want_t.size()), mag_p(want_p.size());
  for (std::size_t i = 0; i < want_t.size(); ++i) mag_t[i] = std::fabs(want_t[i]);
  for (std::size_t i = 0; i < want_p.size(); ++i) mag_p[i] = std::fabs(want_p[i]);
  for (std::size_t r = 0; r < rows; ++r) {
    for (std::size_t j = 0; j < dim; ++j) {
      const double v = dx[r * dim + j];
      want_t[tokens[r] * dim + j] += v;
      mag_t[tokens[r] * dim + j] += std::fabs(v);
      want_p[(start + r % len) * dim + j] += v;
      mag_p[(start + r % len) * dim + j] += std::fabs(v);
    }
  }
  const std::vector<double> dpos0 = dpos.values();
  pa::embed_backward(rows, len, dim, tokens.data(), num_tokens, dx.data(), dtable.data(), start,
                     positions ? dpos.data() : nullptr, pool);
  double err = worst_error(dtable.data(), want_t, mag_t);
  if (positions) err = std::max(err, worst_error(dpos.data(), want_p, mag_p));
  const bool untouched = positions || dpos.values() == dpos0;
  const bool guards = dx.guards_intact() && dtable.guards_intact() && dpos.guards_intact();
  return check_case(err, "err", guards, untouched, ", null dpositions written", [&] {
    std::fprintf(stderr,
                 "  embedBackward batch=%zu len=%zu dim=%zu tokens=%zu start=%zu positions=%d",
                 batch, len, dim, num_tokens, start, positions);
  });
}

}  // namespace

TEST("grads/embedBackward: sizes, repeated tokens, positions or not, guard cells") {
  pa::ThreadPool pool(2);
  std::mt19937 rng(601);
  for_size_pairs(kSizes, [&](std::size_t len, std::size_t dim, std::size_t index) {
    return check_embed_backward(1 + index % 3, len, dim, 1 + (index * 7) % 70, index % 4,
                                index % 2 == 0, pool, rng);
  });
  check_embed_backward(64, 128, 48, 1000, 5, true, pool,
                       rng);  // many rows, parallel tokens and positions
  check_embed_backward(300, 40, 16, 3, 0, true, pool, rng);  // few tokens, each many times
}

TEST("grads/embedBackward: the same bits for 1, 2 and 3 threads; bad tokens throw before writing") {
  std::mt19937 rng(602);
  std::normal_distribution<float> normal;
  const std::size_t batch = 48, len = 100, dim = 40, num_tokens = 300, rows = batch * len;
  std::vector<std::int32_t> tokens(rows);
  std::uniform_int_distribution<int> pick(0, 40);  // mostly a few ids, many repeats
  for (auto& t : tokens) t = pick(rng) * 7;
  std::vector<float> dx(rows * dim), dtable0(num_tokens * dim), dpos0((len + 3) * dim);
  for (auto* v : {&dx, &dtable0, &dpos0}) {
    for (auto& e : *v) e = normal(rng);
  }
  check_same_bits_on_threads([&](pa::ThreadPool& pool) {
    std::vector<float> dtable = dtable0, dpos = dpos0;
    pa::embed_backward(rows, len, dim, tokens.data(), num_tokens, dx.data(), dtable.data(), 3,
                       dpos.data(), pool);
    return std::vector<std::vector<float>>{dtable, dpos};
  });
  pa::ThreadPool pool(2);
  for (std::int32_t bad : {-1, 300}) {
    std::vector<std::int32_t> bad_tokens = tokens;
    bad_tokens[rows - 1] = bad;
    std::vector<float> dtable = dtable0;
    bool threw = false;
    try {
      pa::embed_backward(rows, len, dim, bad_tokens.data(), num_tokens, dx.data(), dtable.data(), 0,
                         nullptr, pool);
    } catch (const pa::InputError&) {
      threw = true;
    }
    CHECK(threw);
    CHECK(dtable == dtable0);
  }
}

// ---------------------------------------------------------------------------------
// scale_norm_backward, scaled_add_backward
// ---------------------------------------------------------------------------------

TEST("grads/scaleNormBackward: sizes, the norm above and below eps, accumulate, in place") {
  pa::ThreadPool pool(2);
  std::mt19937 rng(701);
  std::size_t index = 0;
  bool ok = true;
  for (std::size_t rows : {1, 7, 8, 9, 16, 17, 63, 64, 65, 3000}) {
    for (std::size_t dim : kSizes) {
      if (!ok) break;
      const bool accumulate = index % 2 == 1;
      const Alias alias = static_cast<Alias>(index % 3);
      const float g = index % 4 == 0 ? 1.0f : -0.75f, eps = 1e-3f;
      ++index;
      Guarded x(rows * dim, rows % 2), dy(rows * dim, 1), dx(rows * dim, 0), dg(1, 1);
      x.fill(rng, -1, 1);
      for (std::size_t r = 0; r < rows; r += 3) {  // every third row below eps, one all zeros
        for (std::size_t j = 0; j < dim; ++j)
          x[r * dim + j] = r == 3 ? 0.0f : x[r * dim + j] * 1e-5f;
      }
      dy.fill(rng, -1, 1);
      dx.fill(rng, -1, 1);
      dg[0] = 0.5f;
      const std::vector<double> xv = x.values();
      ScaleNormGrads sg = scale_norm_grad_ref(rows, dim, xv, g, eps, dy.values());
      float* out = alias == Alias::kX ? x.data() : alias == Alias::kDy ? dy.data() : dx.data();
      add_initial(std::vector<double>(out, out + rows * dim), accumulate, &sg.dx, &sg.dx_mag);
      pa::scale_norm_backward(rows, dim, x.data(), g, eps, dy.data(), out, accumulate, dg.data(),
                              pool);
      const double err = worst_error(out, sg.dx, sg.dx_mag);
      const double dg_err = std::fabs(dg[0] - (0.5 + sg.dg)) / (0.5 + sg.dg_mag);
      const bool guards =
          x.guards_intact() && dy.guards_intact() && dx.guards_intact() && dg.guards_intact();
      ok = err <= kTol && dg_err <= kTol && guards;
      if (!ok) {
        std::fprintf(
            stderr,
            "  scaleNormBackward rows=%zu dim=%zu accumulate=%d alias=%d: dx err %.3g, dg err %.3g%s\n",
            rows, dim, accumulate, static_cast<int>(alias), err, dg_err,
            guards ? "" : ", guard cells overwritten");
      }
      CHECK(ok);
    }
  }
}

TEST("grads/scaledAddBackward: sizes, null dx, accumulate, in place, many chunks") {
  pa::ThreadPool pool(2);
  std::mt19937 rng(702);
  std::size_t index = 0;
  for (std::size_t n : {0, 1, 7, 8, 9, 16, 17, 63, 64, 65, 16384, 16385, 100000}) {
    for (int mode = 0; mode < 4;
         ++mode) {  // 0: dx, 1: dx accumulate, 2: no dx, 3: dx in place over dy
      Guarded x(n, index % 2), dy(n, 1), dx(n, 0), dg(1, 1);
      ++index;
      x.fill(rng, -1, 1);
      dy.fill(rng, -1, 1);
      dx.fill(rng, -1, 1);
      dg[0] = -0.25f;
      const float g = 0.8f;
      const bool accumulate = mode == 1;
      float* out = mode == 2 ? nullptr : mode == 3 ? dy.data() : dx.data();
      std::vector<double> want(n), scale(n);
      double want_dg = -0.25, dg_mag = 0.25;
      for (std::size_t i = 0; i < n; ++i) {
        want[i] = g * static_cast<double>(dy[i]) + (accumulate ? dx[i] : 0.0);
        scale[i] =
            std::fabs(g * static_cast<double>(dy[i])) + (accumulate ? std::fabs(dx[i]) : 0.0);
        want_dg += static_cast<double>(dy[i]) * x[i];
        dg_mag += std::fabs(static_cast<double>(dy[i]) * x[i]);
      }
      const std::vector<double> dx0 = dx.values();
      pa::scaled_add_backward(n, x.data(), dy.data(), g, dg.data(), out, accumulate, pool);
      const double err = out != nullptr ? worst_error(out, want, scale) : 0.0;
      const double dg_err = std::fabs(dg[0] - want_dg) / dg_mag;
      const bool untouched = mode != 2 || dx.values() == dx0;
      const bool guards =
          x.guards_intact() && dy.guards_intact() && dx.guards_intact() && dg.guards_intact();
      const bool ok = err <= kTol && dg_err <= kTol && untouched && guards;
      if (!ok) {
        std::fprintf(stderr, "  scaledAddBackward n=%zu mode=%d: dx err %.3g, dg err %.3g%s%s\n", n,
                     mode, err, dg_err, untouched ? "" : ", null dx written",
                     guards ? "" : ", guard cells overwritten");
      }
      CHECK(ok);
    }
  }
}

// ---------------------------------------------------------------------------------
// token_shift_backward
// ---------------------------------------------------------------------------------

TEST("grads/tokenShiftBackward: exact adjoint of token_shift, masks, remainders, accumulate") {
  pa::ThreadPool pool(2);
  std::mt19937 rng(801);
  const std::vector<std::vector<int>> shift_sets = {
      {1}, {0}, {-1}, {1, -1}, {1, 0, -1}, {0, 1}, {-1, -1, 1, 0, 1}};
  std::size_t index = 0;
  for (std::size_t batch : {1, 3}) {
    for (std::size_t len : {1, 2, 7, 17, 64}) {
      for (std::size_t dim : {1, 7, 8, 9, 16, 17, 65}) {
        for (const auto& shifts : shift_sets) {
          if (shifts.size() > dim) continue;
          const bool masked = index % 2 == 0, accumulate = index % 3 == 1;
          ++index;
          const std::size_t n = batch * len * dim;
          std::vector<std::uint8_t> keep(batch * len);
          for (auto& k : keep) k = static_cast<std::uint8_t>(rng() % 3 != 0 ? 1 + rng() % 200 : 0);
          const std::uint8_t* mask = masked ? keep.data() : nullptr;
          Guarded dy(n, index % 2), dx(n, 1), x(n, 0), y(n, 1);
          dy.fill(rng, -1, 1);
          dx.fill(rng, -1, 1);
          x.fill(rng, -1, 1);
          std::vector<double> want =
              token_shift_grad_ref(batch, len, dim, dy.values(), shifts, mask);
          std::vector<double> scale(n);
          for (std::size_t i = 0; i < n; ++i) scale[i] = std::fabs(want[i]);
          add_initial(dx.values(), accumulate, &want, &scale);
          pa::token_shift_backward(batch, len, dim, dy.data(), shifts.data(), shifts.size(), mask,
                                   dx.data(), accumulate, pool);
          // Without accumulate the adjoint is a pure copy: exact. With it, one float add.
          double err = 0;
          for (std::size_t i = 0; i < n; ++i) {
            const double e = std::fabs(dx[i] - want[i]);
            err = std::max(err, accumulate ? e / (scale[i] + 1e-30) : e);
          }
          // And it is the adjoint of the real forward: <dy, T x> = <T' dy, x>.
          bool adjoint_ok = true;
          if (!accumulate) {
            pa::token_shift(batch, len, dim, x.data(), shifts.data(), shifts.size(), mask, nullptr,
                            y.data());
            double lhs = 0, rhs = 0, mag = 0;
            for (std::size_t i = 0; i < n; ++i) {
              lhs += static_cast<double>(dy[i]) * y[i];
              rhs += static_cast<double>(dx[i]) * x[i];
              mag += std::fabs(static_cast<double>(dy[i]) * y[i]);
            }
            adjoint_ok = std::fabs(lhs - rhs) <= 1e-12 * (mag + 1);
          }
          const bool guards =
              dy.guards_intact() && dx.guards_intact() && x.guards_intact() && y.guards_intact();
          const bool ok = (accumulate ? err <= kTol : err == 0.0) && adjoint_ok && guards;
          if (!ok) {
            std::fprintf(
                stderr,
                "  tokenShiftBackward batch=%zu len=%zu dim=%zu segments=%zu masked=%d accumulate=%d: "
                "err %.3g%s%s\n",
                batch, len, dim, shifts.size(), masked, accumulate, err,
                adjoint_ok ? "" : ", not the adjoint", guards ? "" : ", guard cells overwritten");
          }
          CHECK(ok);
        }
      }
    }
  }
}

// ---------------------------------------------------------------------------------
// dropout
// ---------------------------------------------------------------------------------

TEST(
    "grads/dropout: the mask of dropout_keeps, scale, residual, in place, p = 0 and 1, guard cells") {
  pa::ThreadPool pool(2);
  std::mt19937 rng(901);
  std::size_t index = 0;
  for (std::size_t n : {0, 1, 7, 8, 9, 17, 65, 16385, 100000}) {
    for (float p : {0.0f, 0.1f, 0.5f, 0.9f, 1.0f}) {
      for (int mode = 0; mode < 3; ++mode) {  // 0: y apart, 1: residual, 2: in place over x
        Guarded x(n, index % 2), residual(n, 1), y(n, 0);
        ++index;
        x.fill(rng, -1, 1);
        residual.fill(rng, -1, 1);
        const std::vector<double> x0 = x.values();
        const std::uint64_t seed = 12345 + index, stream = index % 5;
        float* out = mode == 2 ? x.data() : y.data();
        pa::dropout(n, x.data(), mode == 1 ? residual.data() : nullptr, out, p, seed, stream, pool);
        const double scale = p >= 1.0f ? 0.0 : 1.0 / (1.0 - p);
        bool ok = x.guards_intact() && residual.guards_intact() && y.guards_intact();
        for (std::size_t i = 0; i < n && ok; ++i) {
          const double v = pa::dropout_keeps(seed, stream, i, p) ? x0[i] * scale : 0.0;
          const double want = (mode == 1 ? residual[i] : 0.0) + v;
          ok = std::fabs(out[i] - want) <= 1e-6 * (std::fabs(want) + 1.0);
          if (p == 0.0f) ok = ok && pa::dropout_keeps(seed, stream, i, p);
          if (p == 1.0f) ok = ok && !pa::dropout_keeps(seed, stream, i, p);
        }
        if (!ok)
          std::fprintf(stderr, "  dropout n=%zu p=%g mode=%d: wrong values or guard cells\n", n, p,
                       mode);
        CHECK(ok);
      }
    }
  }
}

TEST(
    "grads/dropout: kept fraction 1 - p, streams and seeds independent, the same bits for 1, 2, 3 threads") {
  const std::size_t n = 1000000;
  for (float p : {0.1f, 0.3f, 0.75f}) {
    std::size_t kept = 0, agree_stream = 0, agree_seed = 0;
    for (std::size_t i = 0; i < n; ++i) {
      const bool a = pa::dropout_keeps(7, 0, i, p);
      kept += a;
      agree_stream += a == pa::dropout_keeps(7, 1, i, p);
      agree_seed += a == pa::dropout_keeps(8, 0, i, p);
    }
    const double q = 1.0 - p, sd = std::sqrt(p * q / n);
    const double agree = p * p + q * q, sd_agree = std::sqrt(agree * (1 - agree) / n);
    CHECK_NEAR(static_cast<double>(kept) / n, q, 5 * sd);
    CHECK_NEAR(static_cast<double>(agree_stream) / n, agree, 5 * sd_agree);
    CHECK_NEAR(static_cast<double>(agree_seed) / n, agree, 5 * sd_agree);
  }
  std::mt19937 rng(902);
  Guarded x(n);
  x.fill(rng, -1, 1);
  check_same_bits_on_threads([&](pa::ThreadPool& pool) {
    std::vector<float> y(n);
    pa::dropout(n, x.data(), nullptr, y.data(), 0.3f, 99, 4, pool);
    return std::vector<std::vector<float>>{y};
  });
}
