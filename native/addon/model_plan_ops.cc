// Steps ({ op, ... }) of performer-pytorch models; every array is length-checked here,
// token ids and positions too (TypeScript validates them first, with better messages):
//   embed          tokens (Int32Array), rows, len, dim, table, numTokens, start, out,
//                  positions: 'none' | 'sinusoid' (posTable?, posRows, invFreq?) |
//                  'learned' (posTable, posRows)
//   scaleNorm      x, rows, dim, g, eps, y
//   scaledAdd      x, n, g, residual, y
//   tokenShift     x, batch, len, dim, shifts (array), keep?, history?, y
//   gluGelu        h, rows, hidden, y
//   rotary         x, heads, len, headDim, start, layout ('interleaved' | 'halves'),
//                  table?, tableRows, invFreq?, inverse? (rotate back: the gradient)
//   pytorchFavor   q, k, v, out, dims, options { features, packedProjection?, numFeatures,
//                  causal, keep?, dropMaskedKeys, state?, maxRose? }[, label]
//   pytorchFavorBackward  as pytorchFavor with gradOut (for out), dq, dk, dv; options.projection
//   localAttention q, k, v, out, dims, options { window, causal, keep?, pytorchNumerics,
//                  ring?, start }[, label]
//   localAttentionBackward  as localAttention (no ring) with gradOut (for out), dq, dk, dv
#include "addon/model_plan_ops.h"

#include <cmath>
#include <memory>
#include <string>

#include "addon/convert.h"
#include "core/attention_common.h"
#include "core/local_attention.h"
#include "core/model_ops.h"
#include "core/pytorch_favor.h"

namespace pa_addon {
namespace {

float float_property(const Napi::Object& s, const char* key) {
  const double value = number_property(s, key, std::nan(""));
  if (!std::isfinite(value))
    throw_range_error(s.Env(), std::string(key) + ": expected a finite number");
  return static_cast<float>(value);
}

Step parse_embed(const PlanContext& ctx, const Napi::Object& s) {
  const std::size_t rows = size_property(s, "rows"), len = size_property(s, "len"),
                    dim = size_property(s, "dim");
  const std::size_t num_tokens = size_property(s, "numTokens"), start = size_property(s, "start");
  if (len == 0 || dim == 0 || num_tokens == 0 || rows % len != 0)
    throw_range_error(ctx.env, "embed: bad sizes");
  const std::int32_t* tokens = int32_field(ctx, s, "tokens", rows);
  for (std::size_t r = 0; r < rows; ++r) {
    if (tokens[r] < 0 || static_cast<std::size_t>(tokens[r]) >= num_tokens) {
      throw_range_error(ctx.env, "embed: token " + std::to_string(tokens[r]) + " at " +
                                     std::to_string(r) + " is outside [0, " +
                                     std::to_string(num_tokens) + ")");
    }
  }
  const float* table = float_field(ctx, s, "table", checked_mul(ctx.env, num_tokens, dim));
  float* out = float_field(ctx, s, "out", checked_mul(ctx.env, rows, dim));
  const std::string kind = string_property(s, "positions", "none");
  const std::size_t pos_rows = kind == "none" ? 0 : size_property(s, "posRows");
  const float* pos_table =
      optional_float_field(ctx, s, "posTable", checked_mul(ctx.env, pos_rows, dim));
  const std::size_t end = rows == 0 ? 0 : start + len;
  std::shared_ptr<pa::ThreadPool> pool = ctx.pool;
  if (kind == "none") {
    return [=] {
      pa::embed_tokens(rows, len, dim, tokens, table, nullptr, nullptr, start, out, *pool);
    };
  }
  if (kind == "learned") {
    if (pos_table == nullptr || end > pos_rows)
      throw_range_error(ctx.env, "embed: learned positions end before the last row");
    return [=] {
      pa::embed_tokens(rows, len, dim, tokens, table, nullptr, pos_table, start, out, *pool);
    };
  }
  if (kind != "sinusoid")
    throw_range_error(ctx.env, "embed: positions must be 'none', 'sinusoid' or 'learned'");
  if (dim % 2 != 0) throw_range_error(ctx.env, "embed: a sinusoid needs an even width");
  pa::Sinusoid sinusoid;
  sinusoid.table = pos_table;
  sinusoid.rows = pos_table != nullptr ? pos_rows : 0;
  sinusoid.half = dim / 2;
  sinusoid.inv_freq = optional_float_field(ctx, s, "invFreq", dim / 2);
  if (sinusoid.inv_freq == nullptr && end > sinusoid.rows)
    throw_range_error(ctx.env, "embed: positions beyond the table need invFreq");
  return [=] {
    pa::embed_tokens(rows, len, dim, tokens, table, &sinusoid, nullptr, start, out, *pool);
  };
}

Step parse_scale_norm(const PlanContext& ctx, const Napi::Object& s) {
  const std::size_t rows = size_property(s, "rows"), dim = size_property(s, "dim");
  const std::size_t n = checked_mul(ctx.env, rows, dim);
  const float* x = float_field(ctx, s, "x", n);
  float* y = float_field(ctx, s, "y", n);
  if (x != y && overlaps(x, n, y, n))
    throw_range_error(ctx.env, "scaleNorm: x overlaps y without being y");
  const float g = float_property(s, "g"), eps = float_property(s, "eps");
  if (!(eps > 0.0f)) throw_range_error(ctx.env, "scaleNorm: eps must be > 0");
  std::shared_ptr<pa::ThreadPool> pool = ctx.pool;
  return [=] { pa::scale_norm(rows, dim, x, g, eps, y, *pool); };
}

Step parse_scaled_add(const PlanContext& ctx, const Napi::Object& s) {
  const std::size_t n = size_property(s, "n");
  const float* x = float_field(ctx, s, "x", n);
  const float* residual = float_field(ctx, s, "residual", n);
  float* y = float_field(ctx, s, "y", n);
  if ((x != y && overlaps(x, n, y, n)) || (residual != y && overlaps(residual, n, y, n))) {
    throw_range_error(ctx.env, "scaledAdd: y overlaps an input without being it");
  }
  const float g = float_property(s, "g");
  return [=] { pa::scaled_add(n, x, g, residual, y); };
}

Step parse_token_shift(const PlanContext& ctx, const Napi::Object& s) {
  const std::size_t batch = size_property(s, "batch"), len = size_property(s, "len"),
                    dim = size_property(s, "dim");
  const std::size_t n = checked_mul(ctx.env, checked_mul(ctx.env, batch, len), dim);
  const std::vector<int> shifts = shifts_property(ctx.env, s, "tokenShift", dim);
  const float* x = float_field(ctx, s, "x", n);
  float* y = float_field(ctx, s, "y", n);
  if (overlaps(x, n, y, n)) throw_range_error(ctx.env, "tokenShift: x and y overlap");
  const std::uint8_t* keep = uint8_field(ctx, s, "keep", checked_mul(ctx.env, batch, len), true);
  const Napi::Value history_value = s.Get("history");
  float* history = nullptr;
  if (!history_value.IsUndefined() && !history_value.IsNull()) {
    history = float_field(ctx, s, "history", checked_mul(ctx.env, batch, dim));
    if (keep != nullptr) throw_range_error(ctx.env, "tokenShift: history (decoding) takes no mask");
    for (int shift : shifts) {
      if (shift < 0)
        throw_range_error(ctx.env, "tokenShift: history (decoding) needs causal shifts (0 or 1)");
    }
  }
  return
      [=] { pa::token_shift(batch, len, dim, x, shifts.data(), shifts.size(), keep, history, y); };
}

Step parse_glu_gelu(const PlanContext& ctx, const Napi::Object& s) {
  const std::size_t rows = size_property(s, "rows"), hidden = size_property(s, "hidden");
  const float* h = float_field(ctx, s, "h", checked_mul(ctx.env, rows, 2 * hidden));
  float* y = float_field(ctx, s, "y", checked_mul(ctx.env, rows, hidden));
  if (overlaps(h, rows * 2 * hidden, y, rows * hidden))
    throw_range_error(ctx.env, "gluGelu: h and y overlap");
  const pa::KernelSet* kernels = ctx.kernels;
  std::shared_ptr<pa::ThreadPool> pool = ctx.pool;
  return [=] { pa::glu_gelu(rows, hidden, h, y, *kernels, *pool); };
}

Step parse_rotary(const PlanContext& ctx, const Napi::Object& s) {
  const std::size_t heads = size_property(s, "heads"), len = size_property(s, "len"),
                    d = size_property(s, "headDim");
  const std::size_t start = size_property(s, "start");
  if (d == 0 || d % 2 != 0) throw_range_error(ctx.env, "rotary: headDim must be even and >= 2");
  float* x = float_field(ctx, s, "x", checked_mul(ctx.env, checked_mul(ctx.env, heads, len), d));
  const std::string layout_name = string_property(s, "layout", "");
  if (layout_name != "interleaved" && layout_name != "halves") {
    throw_range_error(ctx.env, "rotary: layout must be 'interleaved' or 'halves'");
  }
  const pa::RotaryLayout layout =
      layout_name == "interleaved" ? pa::RotaryLayout::kInterleaved : pa::RotaryLayout::kHalves;
  pa::Sinusoid sinusoid;
  sinusoid.half = d / 2;
  const Napi::Value table_value = s.Get("table");
  if (!table_value.IsUndefined() && !table_value.IsNull()) {
    sinusoid.rows = size_property(s, "tableRows");
    sinusoid.table = float_field(ctx, s, "table", checked_mul(ctx.env, sinusoid.rows, d));
  }
  sinusoid.inv_freq = optional_float_field(ctx, s, "invFreq", d / 2);
  if (layout == pa::RotaryLayout::kHalves && sinusoid.table != nullptr) {
    throw_range_error(ctx.env,
                      "rotary: the halves layout computes its angles from invFreq (no table)");
  }
  if (sinusoid.inv_freq == nullptr && (len > 0 && start + len > sinusoid.rows)) {
    throw_range_error(ctx.env, "rotary: positions beyond the table need invFreq");
  }
  const bool inverse = bool_property(s, "inverse", false);
  std::shared_ptr<pa::ThreadPool> pool = ctx.pool;
  return [=] { pa::rotary(heads, len, d, start, layout, sinusoid, x, *pool, inverse); };
}

struct AttentionArrays {
  pa::AttentionDims dims;
  const float *q, *k, *v;
  float* out;
};

// q, k, v, out and dims of a self-attention step (query and key lengths equal).
AttentionArrays parse_attention_arrays(const PlanContext& ctx, const Napi::Object& s) {
  const Napi::Value dims_value = s.Get("dims");
  if (!dims_value.IsObject()) throw_type_error(ctx.env, "dims: expected an object");
  AttentionArrays a{};
  a.dims = dims_property(dims_value.As<Napi::Object>());
  const pa::AttentionDims& d = a.dims;
  if (d.batch == 0 || d.heads == 0 || d.q_len == 0 || d.k_len == 0 || d.head_dim == 0 ||
      d.value_dim == 0) {
    throw_range_error(ctx.env, "dims: every size must be >= 1");
  }
  const std::size_t bh = checked_mul(ctx.env, d.batch, d.heads);
  a.q =
      float_field(ctx, s, "q", checked_mul(ctx.env, checked_mul(ctx.env, bh, d.q_len), d.head_dim));
  a.k =
      float_field(ctx, s, "k", checked_mul(ctx.env, checked_mul(ctx.env, bh, d.k_len), d.head_dim));
  a.v = float_field(ctx, s, "v",
                    checked_mul(ctx.env, checked_mul(ctx.env, bh, d.k_len), d.value_dim));
  const std::size_t out_len = checked_mul(ctx.env, checked_mul(ctx.env, bh, d.q_len), d.value_dim);
  a.out = float_field(ctx, s, "out", out_len);
  const std::size_t q_len = bh * d.q_len * d.head_dim, k_len = bh * d.k_len * d.head_dim,
                    v_len = bh * d.k_len * d.value_dim;
  if (overlaps(a.out, out_len, a.q, q_len) || overlaps(a.out, out_len, a.k, k_len) ||
      overlaps(a.out, out_len, a.v, v_len)) {
    throw_range_error(ctx.env, "out: overlaps an input");
  }
  return a;
}

Napi::Object options_of(const PlanContext& ctx, const Napi::Object& s) {
  const Napi::Value value = s.Get("options");
  if (!value.IsObject()) throw_type_error(ctx.env, "options: expected an object");
  return value.As<Napi::Object>();
}

pa::PytorchFavorOptions parse_pytorch_favor_options(const PlanContext& ctx, const Napi::Object& s,
                                                    const AttentionArrays& a) {
  const Napi::Object o = options_of(ctx, s);
  pa::PytorchFavorOptions options;
  const std::string features = string_property(o, "features", "softmax");
  if (features == "softmax") {
    options.features = pa::PytorchFeatures::kSoftmax;
  } else if (features == "relu") {
    options.features = pa::PytorchFeatures::kRelu;
  } else if (features == "noProjection") {
    options.features = pa::PytorchFeatures::kNoProjection;
  } else {
    throw_range_error(ctx.env, "features: expected 'softmax', 'relu' or 'noProjection'");
  }
  options.num_features = options.features == pa::PytorchFeatures::kNoProjection
                             ? a.dims.head_dim
                             : size_property(o, "numFeatures");
  if (options.num_features == 0) throw_range_error(ctx.env, "numFeatures: expected >= 1");
  if (options.features != pa::PytorchFeatures::kNoProjection) {
    options.packed_projection = float_field(
        ctx, o, "packedProjection", checked_mul(ctx.env, options.num_features, a.dims.head_dim));
  }
  options.causal = bool_property(o, "causal", false);
  options.keep =
      uint8_field(ctx, o, "keep", checked_mul(ctx.env, a.dims.batch, a.dims.k_len), true);
  options.drop_masked_keys = bool_property(o, "dropMaskedKeys", false);
  const Napi::Value state = o.Get("state");
  if (!state.IsUndefined() && !state.IsNull()) {
    const std::size_t features = pa::pytorch_favor_feature_count(options, a.dims.head_dim);
    checked_mul(ctx.env, features, a.dims.value_dim);  // the state's S fits size_t
    const std::size_t per_head = pa::pytorch_favor_state_floats(features, a.dims.value_dim);
    const std::size_t floats =
        checked_mul(ctx.env, checked_mul(ctx.env, a.dims.batch, a.dims.heads), per_head);
    options.state = float_field(ctx, o, "state", floats);
  }
  options.max_rose = uint8_field(ctx, o, "maxRose", 1, true);
  if (options.features != pa::PytorchFeatures::kNoProjection) {
    options.projection = optional_float_field(
        ctx, o, "projection", checked_mul(ctx.env, options.num_features, a.dims.head_dim));
  }
  options.cancel = ctx.cancel;
  return options;
}

Step parse_pytorch_favor(const PlanContext& ctx, const Napi::Object& s) {
  const AttentionArrays a = parse_attention_arrays(ctx, s);
  const pa::PytorchFavorOptions options = parse_pytorch_favor_options(ctx, s, a);
  return labelled(s, [=, kernels = ctx.kernels, pool = ctx.pool] {
    pa::pytorch_favor_attention(a.dims, a.q, a.k, a.v, a.out, options, *kernels, *pool);
  });
}

// dq, dk, dv of an attention backward step, length-checked against dims.
struct InputGrads {
  float *dq, *dk, *dv;
};
InputGrads parse_input_grads(const PlanContext& ctx, const Napi::Object& s,
                             const pa::AttentionDims& d) {
  const std::size_t bh = checked_mul(ctx.env, d.batch, d.heads);
  return {float_field(ctx, s, "dq",
                      checked_mul(ctx.env, checked_mul(ctx.env, bh, d.q_len), d.head_dim)),
          float_field(ctx, s, "dk",
                      checked_mul(ctx.env, checked_mul(ctx.env, bh, d.k_len), d.head_dim)),
          float_field(ctx, s, "dv",
                      checked_mul(ctx.env, checked_mul(ctx.env, bh, d.k_len), d.value_dim))};
}

// A backward step's forward fields, with gradOut where the forward step has out.
Napi::Object with_grad_out_as_out(const PlanContext& ctx, const Napi::Object& s) {
  Napi::Object fields = Napi::Object::New(ctx.env);
  for (const char* key : {"q", "k", "v", "dims", "options"}) fields.Set(key, s.Get(key));
  fields.Set("out", s.Get("gradOut"));
  return fields;
}

// The gradients of a pytorchFavor step: its fields with `gradOut` for `out`, and dq, dk, dv.
Step parse_pytorch_favor_backward(const PlanContext& ctx, const Napi::Object& s) {
  const Napi::Object fields = with_grad_out_as_out(ctx, s);
  const AttentionArrays a = parse_attention_arrays(ctx, fields);
  const pa::PytorchFavorOptions options = parse_pytorch_favor_options(ctx, s, a);
  const InputGrads g = parse_input_grads(ctx, s, a.dims);
  return labelled(s, [=, kernels = ctx.kernels, pool = ctx.pool] {
    pa::pytorch_favor_backward(a.dims, a.q, a.k, a.v, a.out, options, g.dq, g.dk, g.dv, *kernels,
                               *pool);
  });
}

pa::LocalAttentionOptions parse_local_options(const PlanContext& ctx, const Napi::Object& s,
                                              const AttentionArrays& a) {
  const Napi::Object o = options_of(ctx, s);
  pa::LocalAttentionOptions options;
  options.window = size_property(o, "window");
  if (options.window == 0 || options.window > (std::size_t{1} << 20))
    throw_range_error(ctx.env, "window: expected 1 to 2^20");
  options.causal = bool_property(o, "causal", false);
  options.keep =
      uint8_field(ctx, o, "keep", checked_mul(ctx.env, a.dims.batch, a.dims.k_len), true);
  options.pytorch_numerics = bool_property(o, "pytorchNumerics", false);
  const Napi::Value ring = o.Get("ring");
  if (!ring.IsUndefined() && !ring.IsNull()) {
    const std::size_t per_head =
        checked_mul(ctx.env, 2 * options.window,
                    a.dims.head_dim + a.dims.value_dim);  // local_ring_floats, checked
    options.ring = float_field(
        ctx, o, "ring",
        checked_mul(ctx.env, checked_mul(ctx.env, a.dims.batch, a.dims.heads), per_head));
    options.start = size_property(o, "start");
  }
  options.cancel = ctx.cancel;
  return options;
}

Step parse_local_attention(const PlanContext& ctx, const Napi::Object& s) {
  const AttentionArrays a = parse_attention_arrays(ctx, s);
  const pa::LocalAttentionOptions options = parse_local_options(ctx, s, a);
  return labelled(s, [=, kernels = ctx.kernels, pool = ctx.pool] {
    pa::local_attention(a.dims, a.q, a.k, a.v, a.out, options, *kernels, *pool);
  });
}

// The gradients of a localAttention step: its fields with `gradOut` for `out`, and dq, dk, dv.
Step parse_local_attention_backward(const PlanContext& ctx, const Napi::Object& s) {
  const Napi::Object fields = with_grad_out_as_out(ctx, s);
  const AttentionArrays a = parse_attention_arrays(ctx, fields);
  const pa::LocalAttentionOptions options = parse_local_options(ctx, fields, a);
  if (options.ring != nullptr)
    throw_range_error(ctx.env, "localAttentionBackward: takes whole sequences (no ring)");
  const InputGrads g = parse_input_grads(ctx, s, a.dims);
  return labelled(s, [=, kernels = ctx.kernels, pool = ctx.pool] {
    pa::local_attention_backward(a.dims, a.q, a.k, a.v, a.out, g.dq, g.dk, g.dv, options, *kernels,
                                 *pool);
  });
}

// (featureCount, valueDim) -> floats of one (batch, head) state
Napi::Value pytorch_favor_state_floats(const Napi::CallbackInfo& info) {
  const std::size_t floats = pa::pytorch_favor_state_floats(size_argument(info, 0, "featureCount"),
                                                            size_argument(info, 1, "valueDim"));
  return Napi::Number::New(info.Env(), static_cast<double>(floats));
}

// (state, heads, featureCount, valueDim): every state "no keys yet".
Napi::Value pytorch_favor_state_reset(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const FloatView state = float32_array(info[0], "state");
  const std::size_t heads = size_argument(info, 1, "heads");
  const std::size_t f = size_argument(info, 2, "featureCount"),
                    dv = size_argument(info, 3, "valueDim");
  if (state.length != checked_mul(env, heads, pa::pytorch_favor_state_floats(f, dv))) {
    throw_range_error(env, "state: length does not match heads x pytorchFavorStateFloats");
  }
  pa::pytorch_favor_state_reset(state.data, heads, f, dv);
  return env.Undefined();
}

// (window, headDim, valueDim) -> floats of one (batch, head) ring
Napi::Value local_ring_floats(const Napi::CallbackInfo& info) {
  const std::size_t floats =
      pa::local_ring_floats(size_argument(info, 0, "window"), size_argument(info, 1, "headDim"),
                            size_argument(info, 2, "valueDim"));
  return Napi::Number::New(info.Env(), static_cast<double>(floats));
}

}  // namespace

bool parse_model_step(const PlanContext& ctx, const std::string& op, const Napi::Object& step,
                      std::vector<Step>* steps) {
  return parse_step_with({{"embed", parse_embed},
                          {"scaleNorm", parse_scale_norm},
                          {"scaledAdd", parse_scaled_add},
                          {"tokenShift", parse_token_shift},
                          {"gluGelu", parse_glu_gelu},
                          {"rotary", parse_rotary},
                          {"pytorchFavor", parse_pytorch_favor},
                          {"pytorchFavorBackward", parse_pytorch_favor_backward},
                          {"localAttention", parse_local_attention},
                          {"localAttentionBackward", parse_local_attention_backward}},
                         ctx, op, step, steps);
}

void register_model_bindings(Napi::Env env, Napi::Object exports) {
  export_functions(env, exports,
                   {{"pytorchFavorStateFloats", pytorch_favor_state_floats},
                    {"pytorchFavorStateReset", pytorch_favor_state_reset},
                    {"localRingFloats", local_ring_floats}});
}

}  // namespace pa_addon
