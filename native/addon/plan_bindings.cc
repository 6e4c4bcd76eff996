// Layer plans: a forward pass (projections, layer norms, head reshapes, attention)
// is handed over as one array of steps, converted into plain C++ on the main thread
// and run in order, synchronously or on a worker thread (one async hop per pass, not
// one per step). Every array a step touches is length-checked here.
//
// Steps ({ op, ... }) (the steps of performer-pytorch models are in model_plan_ops.cc):
//   linear      x, xStride, rows, in, out, packed, scales?, bias?, residual?, activation, y
//               (packed: Float32Array from linearPack, or from linearPackQuantized an
//               Int8Array, with `out` scales, or a Uint16Array of bf16 values)
//   layerNorm   x, rows, dim, gamma?, beta?, eps, y
//   splitHeads  src, srcStride, batch, len, heads, headDim, dst
//   mergeHeads  src, batch, len, heads, headDim, dst, dstStride
//   favor / softmax   q, k, v, out, dims, options[, label]   (as the attention functions;
//               label prefixes their input errors, e.g. the layer's name)
//   checkFinite x, name[, why][, shape]  (RangeError naming the first NaN / infinity and
//               its index; why: the message's end)
#include "addon/plan_bindings.h"

#include <cmath>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "addon/async_job.h"
#include "addon/attention_job.h"
#include "addon/backend_bindings.h"
#include "addon/backward_bindings.h"
#include "addon/convert.h"
#include "addon/grad_plan_ops.h"
#include "addon/model_plan_ops.h"
#include "addon/plan_context.h"
#include "core/favor.h"
#include "core/layer_ops.h"
#include "core/quantized_linear.h"

namespace pa_addon {
namespace {

pa::Activation parse_activation(const Napi::Object& step) {
  const std::string name = string_property(step, "activation", "none");
  if (name == "none") return pa::Activation::kNone;
  if (name == "relu") return pa::Activation::kRelu;
  if (name == "gelu") return pa::Activation::kGelu;
  throw_range_error(step.Env(),
                    "activation: expected 'none', 'relu' or 'gelu', received '" + name + "'");
}

// The weights of a linear step, told apart by the array type of `packed`: fp32
// (linearPack), int8 with per-output-channel scales or bf16 (linearPackQuantized).
struct LinearWeights {
  const float* fp32 = nullptr;
  const std::int8_t* int8 = nullptr;
  const float* scales = nullptr;
  const std::uint16_t* bf16 = nullptr;
};

LinearWeights parse_linear_weights(const PlanContext& ctx, const Napi::Object& s, std::size_t in,
                                   std::size_t out) {
  const Napi::Value packed = s.Get("packed");
  const napi_typedarray_type type = packed.IsTypedArray()
                                        ? packed.As<Napi::TypedArray>().TypedArrayType()
                                        : napi_float32_array;  // float_field names the error
  const Napi::Value scales = s.Get("scales");
  const bool has_scales = !scales.IsUndefined() && !scales.IsNull();
  LinearWeights w;
  if (type == napi_int8_array) {
    if (!has_scales) {
      throw_type_error(ctx.env, "linear: int8 weights need scales, a Float32Array of " +
                                    std::to_string(out) + " floats");
    }
    w.int8 = int8_field(ctx, s, "packed", pa::linear_quant_packed_size(in, out));
    w.scales = float_field(ctx, s, "scales", out);
    return w;
  }
  if (has_scales) {
    throw_type_error(ctx.env,
                     "linear: scales are for int8 weights only (packed is not an Int8Array)");
  }
  if (type == napi_uint16_array) {
    w.bf16 = uint16_field(ctx, s, "packed", pa::linear_quant_packed_size(in, out));
  } else {
    w.fp32 = float_field(ctx, s, "packed", pa::linear_packed_size(in, out));
  }
  return w;
}

Step parse_linear(const PlanContext& ctx, const Napi::Object& s) {
  const std::size_t rows = size_property(s, "rows"), in = size_property(s, "in"),
                    out = size_property(s, "out");
  const std::size_t x_stride = s.Has("xStride") ? size_property(s, "xStride") : in;
  if (in == 0 || out == 0) throw_range_error(ctx.env, "linear: in and out must be >= 1");
  const std::size_t x_len = strided_extent(ctx.env, rows, x_stride, in);
  const std::size_t y_len = checked_mul(ctx.env, rows, out);
  const float* x = float_field(ctx, s, "x", x_len);
  const LinearWeights w = parse_linear_weights(ctx, s, in, out);
  const float* bias = optional_float_field(ctx, s, "bias", out);
  const float* residual = optional_float_field(ctx, s, "residual", y_len);
  float* y = float_field(ctx, s, "y", y_len);
  if (overlaps(x, x_len, y, y_len)) throw_range_error(ctx.env, "linear: x and y overlap");
  if (residual != nullptr && residual != y && overlaps(residual, y_len, y, y_len)) {
    throw_range_error(ctx.env, "linear: residual overlaps y without being y");
  }
  const pa::Activation act = parse_activation(s);
  // Quantized steps are always row-stable (quantized_linear.h).
  const bool row_stable = s.Has("rowStable") && s.Get("rowStable").ToBoolean().Value();
  const pa::KernelSet* kernels = ctx.kernels;
  std::shared_ptr<pa::ThreadPool> pool = ctx.pool;
  return [=] {
    if (w.int8 != nullptr) {
      pa::linear_int8(rows, in, out, x, x_stride, w.int8, w.scales, bias, residual, act, y,
                      *kernels, *pool);
    } else if (w.bf16 != nullptr) {
      pa::linear_bf16(rows, in, out, x, x_stride, w.bf16, bias, residual, act, y, *kernels, *pool);
    } else {
      pa::linear(rows, in, out, x, x_stride, w.fp32, bias, residual, act, y, *kernels, *pool,
                 row_stable);
    }
  };
}

Step parse_layer_norm(const PlanContext& ctx, const Napi::Object& s) {
  const std::size_t rows = size_property(s, "rows"), dim = size_property(s, "dim");
  if (dim == 0) throw_range_error(ctx.env, "layerNorm: dim must be >= 1");
  const std::size_t n = checked_mul(ctx.env, rows, dim);
  const float* x = float_field(ctx, s, "x", n);
  const float* gamma = optional_float_field(ctx, s, "gamma", dim);
  const float* beta = optional_float_field(ctx, s, "beta", dim);
  float* y = float_field(ctx, s, "y", n);
  if (x != y && overlaps(x, n, y, n))
    throw_range_error(ctx.env, "layerNorm: x overlaps y without being y");
  const double eps = number_property(s, "eps");
  if (!(eps > 0.0) || !std::isfinite(eps))
    throw_range_error(ctx.env, "layerNorm: eps must be a finite number > 0");
  std::shared_ptr<pa::ThreadPool> pool = ctx.pool;
  const float e = static_cast<float>(eps);
  return [=] { pa::layer_norm(rows, dim, x, gamma, beta, e, y, *pool); };
}

struct HeadShape {
  std::size_t batch, len, heads, head_dim, width, rows;
};

HeadShape parse_head_shape(const PlanContext& ctx, const Napi::Object& s) {
  HeadShape h{size_property(s, "batch"),
              size_property(s, "len"),
              size_property(s, "heads"),
              size_property(s, "headDim"),
              0,
              0};
  h.width = checked_mul(ctx.env, h.heads, h.head_dim);
  h.rows = checked_mul(ctx.env, h.batch, h.len);
  if (h.width == 0) throw_range_error(ctx.env, "heads and headDim must be >= 1");
  return h;
}

Step parse_split_heads(const PlanContext& ctx, const Napi::Object& s) {
  const HeadShape h = parse_head_shape(ctx, s);
  const std::size_t stride = s.Has("srcStride") ? size_property(s, "srcStride") : h.width;
  const std::size_t src_len = strided_extent(ctx.env, h.rows, stride, h.width);
  const std::size_t dst_len = checked_mul(ctx.env, h.rows, h.width);
  const float* src = float_field(ctx, s, "src", src_len);
  float* dst = float_field(ctx, s, "dst", dst_len);
  if (overlaps(src, src_len, dst, dst_len))
    throw_range_error(ctx.env, "splitHeads: src and dst overlap");
  std::shared_ptr<pa::ThreadPool> pool = ctx.pool;
  return [=] { pa::split_heads(h.batch, h.len, h.heads, h.head_dim, src, stride, dst, *pool); };
}

Step parse_merge_heads(const PlanContext& ctx, const Napi::Object& s) {
  const HeadShape h = parse_head_shape(ctx, s);
  const std::size_t n = checked_mul(ctx.env, h.rows, h.width);
  const std::size_t stride = s.Has("dstStride") ? size_property(s, "dstStride") : h.width;
  const std::size_t dst_len = strided_extent(ctx.env, h.rows, stride, h.width);
  const float* src = float_field(ctx, s, "src", n);
  float* dst = float_field(ctx, s, "dst", dst_len);
  if (overlaps(src, n, dst, dst_len)) throw_range_error(ctx.env, "mergeHeads: src and dst overlap");
  std::shared_ptr<pa::ThreadPool> pool = ctx.pool;
  return [=] { pa::merge_heads(h.batch, h.len, h.heads, h.head_dim, src, dst, stride, *pool); };
}

Step parse_check_finite(const PlanContext& ctx, const Napi::Object& s) {
  const Napi::Value value = s.Get("x");
  if (ctx.arrays != nullptr) ctx.arrays->push_back(value);
  const FloatView x = float32_array(value, "x");
  const std::string name = string_property(s, "name", "input");
  const std::string why = string_property(s, "why", "inputs must be finite");
  // Optional shape: the message then gives the index per dimension too.
  std::vector<std::size_t> shape;
  const Napi::Value shape_value = s.Get("shape");
  if (shape_value.IsArray()) {
    const Napi::Array dims = shape_value.As<Napi::Array>();
    for (std::uint32_t d = 0; d < dims.Length(); ++d) {
      const Napi::Value dim = dims.Get(d);
      if (!dim.IsNumber() || dim.As<Napi::Number>().DoubleValue() < 1)
        throw_range_error(ctx.env, "checkFinite: bad shape");
      shape.push_back(static_cast<std::size_t>(dim.As<Napi::Number>().DoubleValue()));
    }
  }
  return [x, name, why, shape] {
    for (std::size_t i = 0; i < x.length; ++i) {
      if (!std::isfinite(x.data[i])) {
        std::string at = "flat index " + std::to_string(i);
        if (!shape.empty()) {
          std::string index;
          std::size_t rest = i;
          for (std::size_t d = shape.size(); d-- > 0;) {
            index = std::to_string(rest % shape[d]) + (index.empty() ? "" : ", ") + index;
            rest /= shape[d];
          }
          at = "[" + index + "] (" + at + ")";
        }
        throw pa::InputError(name + ": " + (std::isnan(x.data[i]) ? "NaN" : "infinity") + " at " +
                             at + "; " + why);
      }
    }
  };
}

struct Plan {
  std::vector<Step> steps;
  std::shared_ptr<std::atomic<bool>> cancel;
  // Atomic plans are cancelled only before they start (a decoding step through
  // several layers must advance all of their states or none).
  bool atomic = false;
  void run() const {
    for (std::size_t i = 0; i < steps.size(); ++i) {
      if (i == 0 || !atomic) pa::check_cancel(cancel.get());
      steps[i]();
    }
  }
};

// Parses info[0] (the steps); attention steps check `cancel` between blocks.
Plan parse_plan(const Napi::CallbackInfo& info, std::shared_ptr<std::atomic<bool>> cancel,
                bool atomic, std::vector<Napi::Value>* keep_alive) {
  Napi::Env env = info.Env();
  if (!info[0].IsArray()) throw_type_error(env, "plan: expected an array of steps");
  const Napi::Array steps = info[0].As<Napi::Array>();
  PlanContext ctx{env, &active_kernels(), pa::global_pool(), keep_alive,
                  atomic ? nullptr : cancel.get()};
  Plan plan;
  plan.cancel = cancel;
  plan.atomic = atomic;
  for (std::uint32_t i = 0; i < steps.Length(); ++i) {
    const Napi::Value value = steps.Get(i);
    if (!value.IsObject())
      throw_type_error(env, "plan step " + std::to_string(i) + ": expected an object");
    const Napi::Object s = value.As<Napi::Object>();
    const std::string op = string_property(s, "op", "");
    if (parse_step_with({{"linear", parse_linear},
                         {"layerNorm", parse_layer_norm},
                         {"splitHeads", parse_split_heads},
                         {"mergeHeads", parse_merge_heads},
                         {"checkFinite", parse_check_finite}},
                        ctx, op, s, &plan.steps)) {
    } else if (op == "favor" || op == "softmax") {
      AttentionJob job = parse_attention_job(
          env, s.Get("q"), s.Get("k"), s.Get("v"), s.Get("out"), s.Get("dims"), s.Get("options"),
          op == "favor" ? AttentionKind::kFavor : AttentionKind::kSoftmax);
      job.set_cancel(atomic ? nullptr : cancel.get());
      if (keep_alive != nullptr) {
        for (const char* key : {"q", "k", "v", "out"}) keep_alive->push_back(s.Get(key));
        attention_option_arrays(s.Get("options").As<Napi::Object>(), keep_alive);
      }
      // Attention inputs inside a layer are the layer's projections: errors name the layer.
      plan.steps.push_back(labelled(s, [job] { job.run(); }));
    } else if (parse_attention_backward_step(ctx, op, s, &plan.steps)) {
      // favorBackward / softmaxBackward (backward_bindings.cc)
    } else if (parse_grad_step(ctx, op, s, &plan.steps)) {
    } else if (!parse_model_step(ctx, op, s, &plan.steps)) {
      throw_range_error(env, "plan step " + std::to_string(i) + ": unknown op '" + op + "'");
    }
  }
  return plan;
}

Napi::Value run_plan_sync(const Napi::CallbackInfo& info) {
  const Plan plan = parse_plan(info, nullptr, false, nullptr);
  run_or_throw(info.Env(), [&] { plan.run(); });
  return info.Env().Undefined();
}

// (steps[, control[, atomic]]) -> Promise<undefined>
Napi::Value run_plan_async(const Napi::CallbackInfo& info) {
  std::shared_ptr<std::atomic<bool>> cancel = install_cancel(info, 1);
  const bool atomic =
      info.Length() > 2 && info[2].IsBoolean() && info[2].As<Napi::Boolean>().Value();
  std::vector<Napi::Value> keep;
  Plan plan = parse_plan(info, cancel, atomic, &keep);
  keep.push_back(info[0]);
  return queue_job(info.Env(), [plan] { plan.run(); }, info.Env().Undefined(), keep);
}

// (w [out, in], in, out) -> packed Float32Array for linear steps.
Napi::Value linear_pack(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const FloatView w = float32_array(info[0], "weight");
  const std::size_t in = static_cast<std::size_t>(info[1].As<Napi::Number>().DoubleValue());
  const std::size_t out = static_cast<std::size_t>(info[2].As<Napi::Number>().DoubleValue());
  if (in == 0 || out == 0 || w.length != checked_mul(env, in, out)) {
    throw_range_error(
        env, "weight: expected " + std::to_string(out) + " x " + std::to_string(in) + " elements");
  }
  Napi::Float32Array packed =
      new_float32_array(env, pa::linear_packed_size(in, out), "packed weight");
  pa::linear_pack(in, out, w.data, packed.Data());
  return packed;
}

// (featureCount, valueDim) -> floats of one (batch, head) state
Napi::Value state_floats(const Napi::CallbackInfo& info) {
  const std::size_t f = static_cast<std::size_t>(info[0].As<Napi::Number>().DoubleValue());
  const std::size_t dv = static_cast<std::size_t>(info[1].As<Napi::Number>().DoubleValue());
  return Napi::Number::New(info.Env(), static_cast<double>(pa::favor_state_floats(f, dv)));
}

// (state, heads, featureCount, valueDim): every state "no keys yet".
Napi::Value state_reset(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const FloatView state = float32_array(info[0], "state");
  const std::size_t heads = static_cast<std::size_t>(info[1].As<Napi::Number>().DoubleValue());
  const std::size_t f = static_cast<std::size_t>(info[2].As<Napi::Number>().DoubleValue());
  const std::size_t dv = static_cast<std::size_t>(info[3].As<Napi::Number>().DoubleValue());
  if (state.length != checked_mul(env, heads, pa::favor_state_floats(f, dv))) {
    throw_range_error(env, "state: length does not match heads x favorStateFloats");
  }
  pa::favor_state_reset(state.data, heads, f, dv);
  return env.Undefined();
}

Napi::Value pending_calls(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), static_cast<double>(pending_async_calls()));
}

}  // namespace

void register_plan_bindings(Napi::Env env, Napi::Object exports) {
  export_functions(env, exports,
                   {{"runPlanSync", run_plan_sync},
                    {"runPlanAsync", run_plan_async},
                    {"linearPack", linear_pack},
                    {"favorStateFloats", state_floats},
                    {"favorStateReset", state_reset},
                    {"pendingCalls", pending_calls}});
}

}  // namespace pa_addon
