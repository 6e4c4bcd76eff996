#include "addon/plan_context.h"

#include <string>

#include "addon/convert.h"
#include "core/attention_common.h"

namespace pa_addon {

Step labelled(const Napi::Object& step_fields, Step step) {
  const std::string label = string_property(step_fields, "label", "");
  if (label.empty()) return step;
  return [step, label] {
    try {
      step();
    } catch (const pa::InputError& error) {
      throw pa::InputError(label + ": " + error.what(), error.code());
    }
  };
}

bool parse_step_with(std::initializer_list<StepParser> parsers, const PlanContext& ctx,
                     const std::string& op, const Napi::Object& step, std::vector<Step>* steps) {
  for (const StepParser& parser : parsers) {
    if (op == parser.op) {
      steps->push_back(parser.parse(ctx, step));
      return true;
    }
  }
  return false;
}

std::vector<int> shifts_property(Napi::Env env, const Napi::Object& step, const char* op,
                                 std::size_t dim) {
  const Napi::Value shifts_value = step.Get("shifts");
  if (!shifts_value.IsArray()) throw_type_error(env, std::string(op) + ": shifts must be an array");
  const Napi::Array shift_array = shifts_value.As<Napi::Array>();
  std::vector<int> shifts;
  for (std::uint32_t i = 0; i < shift_array.Length(); ++i) {
    const Napi::Value value = shift_array.Get(i);
    const double shift = value.IsNumber() ? value.As<Napi::Number>().DoubleValue() : 99.0;
    if (shift != -1.0 && shift != 0.0 && shift != 1.0)
      throw_range_error(env, std::string(op) + ": shifts must be -1, 0 or 1");
    shifts.push_back(static_cast<int>(shift));
  }
  if (shifts.empty() || shifts.size() > dim)
    throw_range_error(env, std::string(op) + ": 1 to dim segments");
  return shifts;
}

float* float_field(const PlanContext& ctx, const Napi::Object& step, const char* key,
                   std::size_t needed) {
  const Napi::Value value = step.Get(key);
  if (ctx.arrays != nullptr) ctx.arrays->push_back(value);
  const FloatView view = float32_array(value, key);
  if (view.length < needed) {
    throw_range_error(step.Env(), std::string(key) + ": expected at least " +
                                      std::to_string(needed) + " elements, received " +
                                      std::to_string(view.length));
  }
  return view.data;
}

const float* optional_float_field(const PlanContext& ctx, const Napi::Object& step, const char* key,
                                  std::size_t needed) {
  const Napi::Value value = step.Get(key);
  if (value.IsUndefined() || value.IsNull()) return nullptr;
  return float_field(ctx, step, key, needed);
}

namespace {

// A typed array property of `type`, exactly `length` elements, not detached.
template <typename T>
T* typed_field(const PlanContext& ctx, const Napi::Object& step, const char* key,
               std::size_t length, napi_typedarray_type type, const char* type_name) {
  const Napi::Value value = step.Get(key);
  if (ctx.arrays != nullptr) ctx.arrays->push_back(value);
  if (!value.IsTypedArray() || value.As<Napi::TypedArray>().TypedArrayType() != type) {
    throw_type_error(step.Env(), std::string(key) + ": expected " + type_name);
  }
  auto array = value.As<Napi::TypedArrayOf<T>>();
  if (array.ArrayBuffer().IsDetached()) {
    throw_type_error(step.Env(), std::string(key) + ": its ArrayBuffer is detached",
                     "ERR_INVALID_STATE");
  }
  if (array.ElementLength() != length) {
    throw_range_error(step.Env(), std::string(key) + ": expected " + std::to_string(length) +
                                      " elements, received " +
                                      std::to_string(array.ElementLength()));
  }
  return array.Data();
}

}  // namespace

std::uint8_t* uint8_field(const PlanContext& ctx, const Napi::Object& step, const char* key,
                          std::size_t length, bool optional) {
  const Napi::Value value = step.Get(key);
  if (optional && (value.IsUndefined() || value.IsNull())) return nullptr;
  return typed_field<std::uint8_t>(ctx, step, key, length, napi_uint8_array, "a Uint8Array");
}

const std::int32_t* int32_field(const PlanContext& ctx, const Napi::Object& step, const char* key,
                                std::size_t length) {
  return typed_field<std::int32_t>(ctx, step, key, length, napi_int32_array, "an Int32Array");
}

const std::int8_t* int8_field(const PlanContext& ctx, const Napi::Object& step, const char* key,
                              std::size_t length) {
  return typed_field<std::int8_t>(ctx, step, key, length, napi_int8_array, "an Int8Array");
}

const std::uint16_t* uint16_field(const PlanContext& ctx, const Napi::Object& step, const char* key,
                                  std::size_t length) {
  return typed_field<std::uint16_t>(ctx, step, key, length, napi_uint16_array, "a Uint16Array");
}

std::size_t strided_extent(Napi::Env env, std::size_t rows, std::size_t stride, std::size_t width) {
  if (rows == 0) return 0;
  if (stride < width) throw_range_error(env, "stride: smaller than the row width");
  return checked_mul(env, rows - 1, stride) + width;
}

bool overlaps(const float* a, std::size_t na, const float* b, std::size_t nb) {
  return a < b + nb && b < a + na;
}

}  // namespace pa_addon
