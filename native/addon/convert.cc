#include "addon/convert.h"

#include <cmath>
#include <limits>

namespace pa_addon {

Napi::Error make_error(Napi::Env env, const std::string& kind, const std::string& message,
                       const std::string& code) {
  Napi::Error error = kind == "TypeError"    ? Napi::TypeError::New(env, message)
                      : kind == "RangeError" ? Napi::RangeError::New(env, message)
                                             : Napi::Error::New(env, message);
  error.Set("code", Napi::String::New(env, code));
  return error;
}

void throw_type_error(Napi::Env env, const std::string& message, const char* code) {
  throw make_error(env, "TypeError", message, code);
}

void throw_range_error(Napi::Env env, const std::string& message, const char* code) {
  throw make_error(env, "RangeError", message, code);
}

FloatView float32_array(const Napi::Value& value, const char* name) {
  if (!value.IsTypedArray() ||
      value.As<Napi::TypedArray>().TypedArrayType() != napi_float32_array) {
    throw_type_error(value.Env(), std::string(name) + ": expected a Float32Array");
  }
  auto array = value.As<Napi::Float32Array>();
  if (array.ArrayBuffer().IsDetached()) {
    throw_type_error(value.Env(), std::string(name) + ": its ArrayBuffer is detached",
                     "ERR_INVALID_STATE");
  }
  return {array.Data(), array.ElementLength()};
}

const std::uint8_t* optional_uint8_array(const Napi::Value& value, const char* name,
                                         std::size_t expected_length) {
  if (value.IsNull() || value.IsUndefined()) return nullptr;
  if (!value.IsTypedArray() || value.As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array) {
    throw_type_error(value.Env(), std::string(name) + ": expected a Uint8Array");
  }
  auto array = value.As<Napi::Uint8Array>();
  if (array.ElementLength() != expected_length) {
    throw_range_error(value.Env(), std::string(name) + ": expected " +
                                       std::to_string(expected_length) + " elements, received " +
                                       std::to_string(array.ElementLength()));
  }
  return array.Data();
}

std::size_t size_property(const Napi::Object& object, const char* key) {
  const Napi::Value value = object.Get(key);
  const double number = value.IsNumber() ? value.As<Napi::Number>().DoubleValue() : -1.0;
  if (!(number >= 0.0) || number != std::floor(number) || number > 9007199254740991.0) {
    throw_range_error(object.Env(), std::string(key) + ": expected a non-negative integer");
  }
  return static_cast<std::size_t>(number);
}

pa::AttentionDims dims_property(const Napi::Object& dims) {
  pa::AttentionDims d;
  d.batch = size_property(dims, "batch");
  d.heads = size_property(dims, "heads");
  d.q_len = size_property(dims, "queryLength");
  d.k_len = size_property(dims, "keyLength");
  d.head_dim = size_property(dims, "headDim");
  d.value_dim = size_property(dims, "valueDim");
  return d;
}

double number_property(const Napi::Object& object, const char* key, double fallback) {
  const Napi::Value value = object.Get(key);
  if (value.IsUndefined() || value.IsNull()) return fallback;
  if (!value.IsNumber()) throw_type_error(object.Env(), std::string(key) + ": expected a number");
  return value.As<Napi::Number>().DoubleValue();
}

double number_property(const Napi::Object& object, const char* key) {
  const Napi::Value value = object.Get(key);
  if (!value.IsNumber()) throw_type_error(object.Env(), std::string(key) + ": expected a number");
  return value.As<Napi::Number>().DoubleValue();
}

bool bool_property(const Napi::Object& object, const char* key, bool fallback) {
  const Napi::Value value = object.Get(key);
  if (value.IsUndefined() || value.IsNull()) return fallback;
  if (!value.IsBoolean()) throw_type_error(object.Env(), std::string(key) + ": expected a boolean");
  return value.As<Napi::Boolean>().Value();
}

bool bool_property(const Napi::Object& object, const char* key) {
  const Napi::Value value = object.Get(key);
  if (!value.IsBoolean()) throw_type_error(object.Env(), std::string(key) + ": expected a boolean");
  return value.As<Napi::Boolean>().Value();
}

std::string string_property(const Napi::Object& object, const char* key) {
  const Napi::Value value = object.Get(key);
  if (!value.IsString()) throw_type_error(object.Env(), std::string(key) + ": expected a string");
  return value.As<Napi::String>().Utf8Value();
}

std::string string_property(const Napi::Object& object, const char* key, const char* fallback) {
  const Napi::Value value = object.Get(key);
  if (value.IsUndefined() || value.IsNull()) return fallback;
  if (!value.IsString()) throw_type_error(object.Env(), std::string(key) + ": expected a string");
  return value.As<Napi::String>().Utf8Value();
}

namespace {

Napi::Value new_typed_array(Napi::Env env, const char* constructor, napi_typedarray_type type,
                            std::size_t length, std::size_t element_size, const char* name) {
  const auto fail = [&] {
    throw make_error(env, "RangeError",
                     std::string(name) + ": cannot allocate " + std::to_string(length) +
                         " elements (" +
                         std::to_string(static_cast<double>(length) *
                                        static_cast<double>(element_size) / 1073741824.0) +
                         " GiB)",
                     "ERR_MEMORY_ALLOCATION_FAILED");
  };
  // Beyond this no typed array can exist (and the double below stays exact).
  if (length > (std::size_t{1} << 50) / element_size) fail();
  Napi::Value array;
  try {
    const Napi::Function make = env.Global().Get(constructor).As<Napi::Function>();
    array = make.New({Napi::Number::New(env, static_cast<double>(length))});
  } catch (const Napi::Error&) {
    fail();
  }
  if (!array.IsTypedArray() || array.As<Napi::TypedArray>().TypedArrayType() != type ||
      array.As<Napi::TypedArray>().ElementLength() != length) {
    throw make_error(env, "Error",
                     std::string("internal error: globalThis.") + constructor + " was replaced",
                     "ERR_PERFORMER_INTERNAL");
  }
  return array;
}

}  // namespace

Napi::Float32Array new_float32_array(Napi::Env env, std::size_t length, const char* name) {
  return new_typed_array(env, "Float32Array", napi_float32_array, length, 4, name)
      .As<Napi::Float32Array>();
}

Napi::Float64Array new_float64_array(Napi::Env env, std::size_t length, const char* name) {
  return new_typed_array(env, "Float64Array", napi_float64_array, length, 8, name)
      .As<Napi::Float64Array>();
}

Napi::Int8Array new_int8_array(Napi::Env env, std::size_t length, const char* name) {
  return new_typed_array(env, "Int8Array", napi_int8_array, length, 1, name).As<Napi::Int8Array>();
}

Napi::Uint16Array new_uint16_array(Napi::Env env, std::size_t length, const char* name) {
  return new_typed_array(env, "Uint16Array", napi_uint16_array, length, 2, name)
      .As<Napi::Uint16Array>();
}

std::size_t size_argument(const Napi::CallbackInfo& info, std::size_t i, const char* name,
                          std::size_t min) {
  const double value = info[i].IsNumber() ? info[i].As<Napi::Number>().DoubleValue() : -1.0;
  if (!(value >= static_cast<double>(min)) || value != std::floor(value) ||
      value > 9007199254740991.0) {
    throw_range_error(
        info.Env(),
        std::string(name) + (min == 0 ? ": expected a non-negative integer"
                                      : ": expected an integer >= " + std::to_string(min)));
  }
  return static_cast<std::size_t>(value);
}

std::size_t checked_mul(Napi::Env env, std::size_t a, std::size_t b) {
  if (a != 0 && b > std::numeric_limits<std::size_t>::max() / a) {
    throw_range_error(env, "tensor size overflows the address space");
  }
  return a * b;
}

void export_functions(
    Napi::Env env, Napi::Object exports,
    std::initializer_list<std::pair<const char*, Napi::Function::Callback>> functions) {
  for (const auto& [name, fn] : functions) exports.Set(name, Napi::Function::New(env, fn, name));
}

}  // namespace pa_addon
