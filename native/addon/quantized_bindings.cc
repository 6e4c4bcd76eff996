// Weight-only quantized linear layers from JavaScript: quantizing W [out, in] once
// (the values stay [out, in] so they can be stored or checked), then packing them into
// the layout linear plan steps read (see quantized_linear.h).
#include "addon/quantized_bindings.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "addon/convert.h"
#include "core/quantized_linear.h"

namespace pa_addon {
namespace {

// The element count of an [out, in] array, checked against `length`.
std::size_t check_weight_count(Napi::Env env, const char* name, std::size_t length, std::size_t in,
                               std::size_t out) {
  const std::size_t n = checked_mul(env, in, out);
  if (length != n) {
    throw_range_error(env, std::string(name) + ": expected " + std::to_string(out) + " x " +
                               std::to_string(in) + " = " + std::to_string(n) +
                               " elements, received " + std::to_string(length));
  }
  return n;
}

[[noreturn]] void throw_bad_weight(Napi::Env env, std::size_t index, const char* what) {
  throw_range_error(env, "weight: " + std::string(what) + " at index " + std::to_string(index) +
                             "; quantized weights must be finite");
}

// (weight [out, in], inFeatures, outFeatures, 'int8' | 'bf16') -> { values, scales }
Napi::Value linear_quantize(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const FloatView w = float32_array(info[0], "weight");
  const std::size_t in = size_argument(info, 1, "inFeatures", 1);
  const std::size_t out = size_argument(info, 2, "outFeatures", 1);
  const std::size_t n = check_weight_count(env, "weight", w.length, in, out);
  const std::string format = info[3].IsString() ? info[3].As<Napi::String>().Utf8Value() : "";
  if (format != "int8" && format != "bf16")
    throw_type_error(env, "format: expected 'int8' or 'bf16'");
  for (std::size_t i = 0; i < n; ++i) {
    if (!std::isfinite(w.data[i]))
      throw_bad_weight(env, i, std::isnan(w.data[i]) ? "NaN" : "infinity");
  }
  Napi::Object result = Napi::Object::New(env);
  if (format == "int8") {
    Napi::Int8Array values = new_int8_array(env, n, "values");
    Napi::Float32Array scales = new_float32_array(env, out, "scales");
    // Read after the allocations, which may run the garbage collector.
    const float* weight = float32_array(info[0], "weight").data;
    pa::linear_quantize_int8(in, out, weight, values.Data(), scales.Data());
    result.Set("values", values);
    result.Set("scales", scales);
  } else {
    Napi::Uint16Array values = new_uint16_array(env, n, "values");
    const float* weight = float32_array(info[0], "weight").data;
    std::uint16_t* h = values.Data();
    std::transform(weight, weight + n, h, pa::float_to_bf16);
    for (std::size_t i = 0; i < n; ++i) {
      if (std::isinf(pa::bf16_to_float(h[i]))) throw_bad_weight(env, i, "a value beyond bf16");
    }
    result.Set("values", values);
    result.Set("scales", env.Null());
  }
  return result;
}

// (values [out, in]: Int8Array | Uint16Array, inFeatures, outFeatures) -> packed, same type
Napi::Value linear_pack_quantized(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const Napi::Value value = info[0];
  const napi_typedarray_type type =
      value.IsTypedArray() ? value.As<Napi::TypedArray>().TypedArrayType() : napi_float32_array;
  if (type != napi_int8_array && type != napi_uint16_array)
    throw_type_error(env, "values: expected an Int8Array (int8) or a Uint16Array (bf16)");
  if (value.As<Napi::TypedArray>().ArrayBuffer().IsDetached())
    throw_type_error(env, "values: its ArrayBuffer is detached", "ERR_INVALID_STATE");
  const std::size_t in = size_argument(info, 1, "inFeatures", 1);
  const std::size_t out = size_argument(info, 2, "outFeatures", 1);
  check_weight_count(env, "values", value.As<Napi::TypedArray>().ElementLength(), in, out);
  const std::size_t size = pa::linear_quant_packed_size(in, out);
  if (type == napi_int8_array) {
    Napi::Int8Array packed = new_int8_array(env, size, "packed");
    pa::linear_pack_int8_values(in, out, value.As<Napi::Int8Array>().Data(), packed.Data());
    return packed;
  }
  Napi::Uint16Array packed = new_uint16_array(env, size, "packed");
  pa::linear_pack_bf16_values(in, out, value.As<Napi::Uint16Array>().Data(), packed.Data());
  return packed;
}

}  // namespace

void register_quantized_bindings(Napi::Env env, Napi::Object exports) {
  export_functions(
      env, exports,
      {{"linearQuantize", linear_quantize}, {"linearPackQuantized", linear_pack_quantized}});
}

}  // namespace pa_addon
