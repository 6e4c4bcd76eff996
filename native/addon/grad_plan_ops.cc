// Training steps ({ op, ... }); every array is length-checked here, token ids and
// targets too, and no output may overlap another array unless listed as "may be":
//   crossEntropy       logits, targets (Int32Array; < 0: ignored), rows, classes,
//                      gradScale (default 1), loss (Float64Array [2]: += loss sum, count),
//                      dlogits (may be logits)
//   linearBackward     rows, in, out, dy, x, xStride?, weight ([out, in], not packed),
//                      dx?, accumulate?, dweight?, dbias?
//   layerNormBackward  rows, dim, x, gamma?, eps (default 1e-5), dy, dx (may be x or dy),
//                      accumulate?, dgamma?, dbeta?
//   gelu               n, x, y (may be x)
//   geluBackward       n, pre, dy, dx (may be dy)
//   reluBackward       n, pre, dy, dx (may be dy)
//   embedBackward      tokens (Int32Array), rows, len, dim, numTokens, dx, dtable, start?,
//                      dpositions?, posRows (with dpositions)
//   gluGeluBackward    rows, hidden, h, dy, dh
//   scaleNormBackward  rows, dim, x, g, eps, dy, dx (may be x or dy), accumulate?, dg ([1])
//   scaledAddBackward  n, x, dy, g, dg ([1]), dx? (may be x or dy), accumulate?
//   tokenShiftBackward batch, len, dim, shifts (array of -1 / 0 / 1), keep?, dy, dx,
//                      accumulate?
//   fill               x, n, value (x[0, n) = value: zeroes a reused temporary at run time)
//   dropout            n, x, p ([0, 1]), seed (integer < 2^53), stream (integer < 2^53),
//                      residual?, y (may be x or residual)
// accumulate (default false): dx-like outputs are added to instead of overwritten;
// parameter gradients (dweight, dbias, dgamma, dbeta, dtable, dpositions, dg) and the
// loss are always added to.
#include "addon/grad_plan_ops.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <string>

#include "addon/convert.h"
#include "core/grad_ops.h"

namespace pa_addon {
namespace {

// A byte range of one array, for the overlap checks.
struct Region {
  const void* data;
  std::size_t bytes;
  const char* name;
};

template <typename T>
Region region(const T* data, std::size_t count, const char* name) {
  return {data, data == nullptr ? 0 : count * sizeof(T), name};
}

// RangeError when `out` overlaps `other`; with may_be_same, the very same range is allowed.
void check_apart(Napi::Env env, const char* op, const Region& out, const Region& other,
                 bool may_be_same = false) {
  if (out.bytes == 0 || other.bytes == 0) return;
  const auto a = reinterpret_cast<std::uintptr_t>(out.data),
             b = reinterpret_cast<std::uintptr_t>(other.data);
  if (a < b + other.bytes && b < a + out.bytes) {
    if (may_be_same && a == b && out.bytes == other.bytes) return;
    throw_range_error(env, std::string(op) + ": " + out.name + " overlaps " + other.name +
                               (may_be_same ? " without being it" : ""));
  }
}

// A Float32Array output property, or null when absent (undefined / null).
float* optional_output(const PlanContext& ctx, const Napi::Object& s, const char* key,
                       std::size_t needed) {
  const Napi::Value value = s.Get(key);
  if (value.IsUndefined() || value.IsNull()) return nullptr;
  return float_field(ctx, s, key, needed);
}

// A finite number property (also finite as a float32); `fallback` when absent, or a
// RangeError when absent and there is no fallback (NaN).
float finite_property(const Napi::Object& s, const char* op, const char* key, double fallback) {
  const double value = number_property(s, key, fallback);
  if (!std::isfinite(value) || !std::isfinite(static_cast<float>(value))) {
    throw_range_error(s.Env(), std::string(op) + ": " + key + " must be a finite number");
  }
  return static_cast<float>(value);
}

float positive_eps(const Napi::Object& s, const char* op, double fallback) {
  const float eps = finite_property(s, op, "eps", fallback);
  if (!(eps > 0.0f)) throw_range_error(s.Env(), std::string(op) + ": eps must be > 0");
  return eps;
}

Step parse_cross_entropy(const PlanContext& ctx, const Napi::Object& s) {
  const char* op = "crossEntropy";
  const std::size_t rows = size_property(s, "rows"), classes = size_property(s, "classes");
  if (classes == 0) throw_range_error(ctx.env, "crossEntropy: classes must be >= 1");
  const std::size_t n = checked_mul(ctx.env, rows, classes);
  const float* logits = float_field(ctx, s, "logits", n);
  const std::int32_t* targets = int32_field(ctx, s, "targets", rows);
  for (std::size_t r = 0; r < rows; ++r) {
    if (targets[r] >= 0 && static_cast<std::size_t>(targets[r]) >= classes) {
      throw_range_error(ctx.env, "crossEntropy: target " + std::to_string(targets[r]) + " at " +
                                     std::to_string(r) + " is outside [0, " +
                                     std::to_string(classes) + ") (negative targets are ignored)");
    }
  }
  const float grad_scale = finite_property(s, op, "gradScale", 1.0);
  double* loss = float64_field(ctx, s, "loss", 2);
  float* dlogits = float_field(ctx, s, "dlogits", n);
  const Region r_logits = region(logits, n, "logits"), r_targets = region(targets, rows, "targets");
  const Region r_loss = region(loss, 2, "loss"), r_dlogits = region(dlogits, n, "dlogits");
  check_apart(ctx.env, op, r_dlogits, r_logits, true);
  check_apart(ctx.env, op, r_dlogits, r_targets);
  check_apart(ctx.env, op, r_loss, r_logits);
  check_apart(ctx.env, op, r_loss, r_targets);
  check_apart(ctx.env, op, r_loss, r_dlogits);
  const pa::KernelSet* kernels = ctx.kernels;
  std::shared_ptr<pa::ThreadPool> pool = ctx.pool;
  return [=] {
    pa::cross_entropy(rows, classes, logits, targets, grad_scale, loss, dlogits, *kernels, *pool);
  };
}

Step parse_linear_backward(const PlanContext& ctx, const Napi::Object& s) {
  const char* op = "linearBackward";
  const std::size_t rows = size_property(s, "rows"), in = size_property(s, "in"),
                    out = size_property(s, "out");
  if (in == 0 || out == 0) throw_range_error(ctx.env, "linearBackward: in and out must be >= 1");
  const Napi::Value stride_value = s.Get("xStride");
  const std::size_t x_stride =
      stride_value.IsUndefined() || stride_value.IsNull() ? in : size_property(s, "xStride");
  const std::size_t x_len = strided_extent(ctx.env, rows, x_stride, in);
  const std::size_t dy_len = checked_mul(ctx.env, rows, out),
                    dx_len = checked_mul(ctx.env, rows, in);
  const std::size_t w_len = checked_mul(ctx.env, out, in);
  const float* dy = float_field(ctx, s, "dy", dy_len);
  const float* x = float_field(ctx, s, "x", x_len);
  const float* weight = float_field(ctx, s, "weight", w_len);
  float* dx = optional_output(ctx, s, "dx", dx_len);
  float* dweight = optional_output(ctx, s, "dweight", w_len);
  float* dbias = optional_output(ctx, s, "dbias", out);
  const bool accumulate = bool_property(s, "accumulate", false);
  const Region inputs[] = {region(dy, dy_len, "dy"), region(x, x_len, "x"),
                           region(weight, w_len, "weight")};
  const Region outputs[] = {region(dx, dx_len, "dx"), region(dweight, w_len, "dweight"),
                            region(dbias, out, "dbias")};
  for (std::size_t o = 0; o < 3; ++o) {
    for (const Region& in_region : inputs) check_apart(ctx.env, op, outputs[o], in_region);
    for (std::size_t p = o + 1; p < 3; ++p) check_apart(ctx.env, op, outputs[o], outputs[p]);
  }
  const pa::KernelSet* kernels = ctx.kernels;
  std::shared_ptr<pa::ThreadPool> pool = ctx.pool;
  return [=] {
    pa::linear_backward(rows, in, out, dy, x, x_stride, weight, dx, accumulate, dweight, dbias,
                        *kernels, *pool);
  };
}

Step parse_layer_norm_backward(const PlanContext& ctx, const Napi::Object& s) {
  const char* op = "layerNormBackward";
  const std::size_t rows = size_property(s, "rows"), dim = size_property(s, "dim");
  if (dim == 0) throw_range_error(ctx.env, "layerNormBackward: dim must be >= 1");
  const std::size_t n = checked_mul(ctx.env, rows, dim);
  const float* x = float_field(ctx, s, "x", n);
  const float* gamma = optional_float_field(ctx, s, "gamma", dim);
  const float eps = positive_eps(s, op, std::nan(""));
  const float* dy = float_field(ctx, s, "dy", n);
  float* dx = float_field(ctx, s, "dx", n);
  const bool accumulate = bool_property(s, "accumulate", false);
  float* dgamma = optional_output(ctx, s, "dgamma", dim);
  float* dbeta = optional_output(ctx, s, "dbeta", dim);
  const Region r_x = region(x, n, "x"), r_gamma = region(gamma, dim, "gamma"),
               r_dy = region(dy, n, "dy");
  const Region r_dx = region(dx, n, "dx"), r_dgamma = region(dgamma, dim, "dgamma"),
               r_dbeta = region(dbeta, dim, "dbeta");
  check_apart(ctx.env, op, r_dx, r_x, true);
  check_apart(ctx.env, op, r_dx, r_dy, true);
  check_apart(ctx.env, op, r_dx, r_gamma);
  for (const Region& out : {r_dgamma, r_dbeta}) {
    for (const Region& other : {r_x, r_gamma, r_dy, r_dx}) check_apart(ctx.env, op, out, other);
  }
  check_apart(ctx.env, op, r_dgamma, r_dbeta);
  std::shared_ptr<pa::ThreadPool> pool = ctx.pool;
  return [=] {
    pa::layer_norm_backward(rows, dim, x, gamma, eps, dy, dx, accumulate, dgamma, dbeta, *pool);
  };
}

Step parse_gelu(const PlanContext& ctx, const Napi::Object& s) {
  const std::size_t n = size_property(s, "n");
  const float* x = float_field(ctx, s, "x", n);
  float* y = float_field(ctx, s, "y", n);
  check_apart(ctx.env, "gelu", region(y, n, "y"), region(x, n, "x"), true);
  const pa::KernelSet* kernels = ctx.kernels;
  std::shared_ptr<pa::ThreadPool> pool = ctx.pool;
  return [=] { pa::gelu(n, x, y, *kernels, *pool); };
}

Step parse_fill(const PlanContext& ctx, const Napi::Object& s) {
  const std::size_t n = size_property(s, "n");
  float* x = float_field(ctx, s, "x", n);
  const double value = number_property(s, "value", 0.0);
  if (!std::isfinite(value)) throw_range_error(ctx.env, "fill: value must be finite");
  const float v = static_cast<float>(value);
  return [=] { std::fill(x, x + n, v); };
}

Step parse_dropout(const PlanContext& ctx, const Napi::Object& s) {
  const char* op = "dropout";
  const std::size_t n = size_property(s, "n");
  const float* x = float_field(ctx, s, "x", n);
  const float* residual = optional_float_field(ctx, s, "residual", n);
  float* y = float_field(ctx, s, "y", n);
  const float p = finite_property(s, op, "p", std::nan(""));
  if (!(p >= 0.0f && p <= 1.0f)) throw_range_error(ctx.env, "dropout: p must be in [0, 1]");
  const std::uint64_t seed = size_property(s, "seed"), stream = size_property(s, "stream");
  check_apart(ctx.env, op, region(y, n, "y"), region(x, n, "x"), true);
  check_apart(ctx.env, op, region(y, n, "y"), region(residual, n, "residual"), true);
  std::shared_ptr<pa::ThreadPool> pool = ctx.pool;
  return [=] { pa::dropout(n, x, residual, y, p, seed, stream, *pool); };
}

struct ActivationGrad {
  std::size_t n;
  const float *pre, *dy;
  float* dx;
};

// n, pre, dy, dx of geluBackward / reluBackward: dx may be dy, not pre.
ActivationGrad parse_activation_grad(const PlanContext& ctx, const Napi::Object& s,
                                     const char* op) {
  ActivationGrad a{};
  a.n = size_property(s, "n");
  a.pre = float_field(ctx, s, "pre", a.n);
  a.dy = float_field(ctx, s, "dy", a.n);
  a.dx = float_field(ctx, s, "dx", a.n);
  check_apart(ctx.env, op, region(a.dx, a.n, "dx"), region(a.dy, a.n, "dy"), true);
  check_apart(ctx.env, op, region(a.dx, a.n, "dx"), region(a.pre, a.n, "pre"));
  return a;
}

Step parse_gelu_backward(const PlanContext& ctx, const Napi::Object& s) {
  const ActivationGrad a = parse_activation_grad(ctx, s, "geluBackward");
  const pa::KernelSet* kernels = ctx.kernels;
  std::shared_ptr<pa::ThreadPool> pool = ctx.pool;
  return [=] { pa::gelu_backward(a.n, a.pre, a.dy, a.dx, *kernels, *pool); };
}

Step parse_relu_backward(const PlanContext& ctx, const Napi::Object& s) {
  const ActivationGrad a = parse_activation_grad(ctx, s, "reluBackward");
  std::shared_ptr<pa::ThreadPool> pool = ctx.pool;
  return [=] { pa::relu_backward(a.n, a.pre, a.dy, a.dx, *pool); };
}

Step parse_embed_backward(const PlanContext& ctx, const Napi::Object& s) {
  const char* op = "embedBackward";
  const std::size_t rows = size_property(s, "rows"), len = size_property(s, "len"),
                    dim = size_property(s, "dim");
  const std::size_t num_tokens = size_property(s, "numTokens");
  if (len == 0 || dim == 0 || num_tokens == 0 || rows % len != 0) {
    throw_range_error(
        ctx.env, "embedBackward: len, dim and numTokens must be >= 1 and rows a multiple of len");
  }
  const Napi::Value start_value = s.Get("start");
  const std::size_t start =
      start_value.IsUndefined() || start_value.IsNull() ? 0 : size_property(s, "start");
  const std::int32_t* tokens = int32_field(ctx, s, "tokens", rows);
  for (std::size_t r = 0; r < rows; ++r) {
    if (tokens[r] < 0 || static_cast<std::size_t>(tokens[r]) >= num_tokens) {
      throw_range_error(ctx.env, "embedBackward: token " + std::to_string(tokens[r]) + " at " +
                                     std::to_string(r) + " is outside [0, " +
                                     std::to_string(num_tokens) + ")");
    }
  }
  const std::size_t dx_len = checked_mul(ctx.env, rows, dim),
                    table_len = checked_mul(ctx.env, num_tokens, dim);
  const float* dx = float_field(ctx, s, "dx", dx_len);
  float* dtable = float_field(ctx, s, "dtable", table_len);
  std::size_t pos_len = 0;
  float* dpositions = nullptr;
  const Napi::Value positions_value = s.Get("dpositions");
  if (!positions_value.IsUndefined() && !positions_value.IsNull()) {
    const std::size_t pos_rows = size_property(s, "posRows");
    pos_len = checked_mul(ctx.env, pos_rows, dim);
    dpositions = float_field(ctx, s, "dpositions", pos_len);
    if (rows > 0 && (start > pos_rows || len > pos_rows - start)) {
      throw_range_error(ctx.env, "embedBackward: positions start + len = " + std::to_string(start) +
                                     " + " + std::to_string(len) +
                                     " run past posRows = " + std::to_string(pos_rows));
    }
  }
  const Region r_dx = region(dx, dx_len, "dx"), r_tokens = region(tokens, rows, "tokens");
  const Region r_table = region(dtable, table_len, "dtable"),
               r_pos = region(dpositions, pos_len, "dpositions");
  for (const Region& out : {r_table, r_pos}) {
    check_apart(ctx.env, op, out, r_dx);
    check_apart(ctx.env, op, out, r_tokens);
  }
  check_apart(ctx.env, op, r_table, r_pos);
  std::shared_ptr<pa::ThreadPool> pool = ctx.pool;
  return [=] {
    pa::embed_backward(rows, len, dim, tokens, num_tokens, dx, dtable, start, dpositions, *pool);
  };
}

Step parse_glu_gelu_backward(const PlanContext& ctx, const Napi::Object& s) {
  const char* op = "gluGeluBackward";
  const std::size_t rows = size_property(s, "rows"), hidden = size_property(s, "hidden");
  const std::size_t h_len = checked_mul(ctx.env, rows, checked_mul(ctx.env, 2, hidden));
  const std::size_t dy_len = checked_mul(ctx.env, rows, hidden);
  const float* h = float_field(ctx, s, "h", h_len);
  const float* dy = float_field(ctx, s, "dy", dy_len);
  float* dh = float_field(ctx, s, "dh", h_len);
  check_apart(ctx.env, op, region(dh, h_len, "dh"), region(h, h_len, "h"));
  check_apart(ctx.env, op, region(dh, h_len, "dh"), region(dy, dy_len, "dy"));
  const pa::KernelSet* kernels = ctx.kernels;
  std::shared_ptr<pa::ThreadPool> pool = ctx.pool;
  return [=] { pa::glu_gelu_backward(rows, hidden, h, dy, dh, *kernels, *pool); };
}

Step parse_scale_norm_backward(const PlanContext& ctx, const Napi::Object& s) {
  const char* op = "scaleNormBackward";
  const std::size_t rows = size_property(s, "rows"), dim = size_property(s, "dim");
  const std::size_t n = checked_mul(ctx.env, rows, dim);
  const float* x = float_field(ctx, s, "x", n);
  const float g = finite_property(s, op, "g", std::nan(""));
  const float eps = positive_eps(s, op, std::nan(""));
  const float* dy = float_field(ctx, s, "dy", n);
  float* dx = float_field(ctx, s, "dx", n);
  const bool accumulate = bool_property(s, "accumulate", false);
  float* dg = float_field(ctx, s, "dg", 1);
  const Region r_x = region(x, n, "x"), r_dy = region(dy, n, "dy"), r_dx = region(dx, n, "dx"),
               r_dg = region(dg, 1, "dg");
  check_apart(ctx.env, op, r_dx, r_x, true);
  check_apart(ctx.env, op, r_dx, r_dy, true);
  for (const Region& other : {r_x, r_dy, r_dx}) check_apart(ctx.env, op, r_dg, other);
  std::shared_ptr<pa::ThreadPool> pool = ctx.pool;
  return [=] { pa::scale_norm_backward(rows, dim, x, g, eps, dy, dx, accumulate, dg, *pool); };
}

Step parse_scaled_add_backward(const PlanContext& ctx, const Napi::Object& s) {
  const char* op = "scaledAddBackward";
  const std::size_t n = size_property(s, "n");
  const float* x = float_field(ctx, s, "x", n);
  const float* dy = float_field(ctx, s, "dy", n);
  const float g = finite_property(s, op, "g", std::nan(""));
  float* dg = float_field(ctx, s, "dg", 1);
  float* dx = optional_output(ctx, s, "dx", n);
  const bool accumulate = bool_property(s, "accumulate", false);
  const Region r_x = region(x, n, "x"), r_dy = region(dy, n, "dy"), r_dx = region(dx, n, "dx"),
               r_dg = region(dg, 1, "dg");
  check_apart(ctx.env, op, r_dx, r_x, true);
  check_apart(ctx.env, op, r_dx, r_dy, true);
  for (const Region& other : {r_x, r_dy, r_dx}) check_apart(ctx.env, op, r_dg, other);
  std::shared_ptr<pa::ThreadPool> pool = ctx.pool;
  return [=] { pa::scaled_add_backward(n, x, dy, g, dg, dx, accumulate, *pool); };
}

Step parse_token_shift_backward(const PlanContext& ctx, const Napi::Object& s) {
  const char* op = "tokenShiftBackward";
  const std::size_t batch = size_property(s, "batch"), len = size_property(s, "len"),
                    dim = size_property(s, "dim");
  const std::size_t rows = checked_mul(ctx.env, batch, len);
  const std::size_t n = checked_mul(ctx.env, rows, dim);
  const std::vector<int> shifts = shifts_property(ctx.env, s, op, dim);
  const std::uint8_t* keep = uint8_field(ctx, s, "keep", rows, true);
  const float* dy = float_field(ctx, s, "dy", n);
  float* dx = float_field(ctx, s, "dx", n);
  const bool accumulate = bool_property(s, "accumulate", false);
  check_apart(ctx.env, op, region(dx, n, "dx"), region(dy, n, "dy"));
  check_apart(ctx.env, op, region(dx, n, "dx"), region(keep, rows, "keep"));
  std::shared_ptr<pa::ThreadPool> pool = ctx.pool;
  return [=] {
    pa::token_shift_backward(batch, len, dim, dy, shifts.data(), shifts.size(), keep, dx,
                             accumulate, *pool);
  };
}

}  // namespace

double* float64_field(const PlanContext& ctx, const Napi::Object& step, const char* key,
                      std::size_t needed) {
  const Napi::Value value = step.Get(key);
  if (ctx.arrays != nullptr) ctx.arrays->push_back(value);
  if (!value.IsTypedArray() ||
      value.As<Napi::TypedArray>().TypedArrayType() != napi_float64_array) {
    throw_type_error(step.Env(), std::string(key) + ": expected a Float64Array");
  }
  auto array = value.As<Napi::Float64Array>();
  if (array.ArrayBuffer().IsDetached()) {
    throw_type_error(step.Env(), std::string(key) + ": its ArrayBuffer is detached",
                     "ERR_INVALID_STATE");
  }
  if (array.ElementLength() < needed) {
    throw_range_error(step.Env(), std::string(key) + ": expected at least " +
                                      std::to_string(needed) + " elements, received " +
                                      std::to_string(array.ElementLength()));
  }
  return array.Data();
}

bool parse_grad_step(const PlanContext& ctx, const std::string& op, const Napi::Object& step,
                     std::vector<Step>* steps) {
  return parse_step_with({{"crossEntropy", parse_cross_entropy},
                          {"linearBackward", parse_linear_backward},
                          {"layerNormBackward", parse_layer_norm_backward},
                          {"gelu", parse_gelu},
                          {"geluBackward", parse_gelu_backward},
                          {"reluBackward", parse_relu_backward},
                          {"embedBackward", parse_embed_backward},
                          {"gluGeluBackward", parse_glu_gelu_backward},
                          {"scaleNormBackward", parse_scale_norm_backward},
                          {"scaledAddBackward", parse_scaled_add_backward},
                          {"tokenShiftBackward", parse_token_shift_backward},
                          {"fill", parse_fill},
                          {"dropout", parse_dropout}},
                         ctx, op, step, steps);
}

}  // namespace pa_addon
