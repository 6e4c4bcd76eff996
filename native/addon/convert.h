// Conversions between JavaScript values and plain C++ data, and JS errors in
// Node's style (TypeError / RangeError with a `code`). Validation proper happens
// in TypeScript; these checks make sure the native side is never handed memory
// it could overrun, whatever calls it.
#pragma once

#include <napi.h>

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <utility>

#include "core/attention_common.h"

namespace pa_addon {

[[noreturn]] void throw_type_error(Napi::Env env, const std::string& message,
                                   const char* code = "ERR_INVALID_ARG_TYPE");
[[noreturn]] void throw_range_error(Napi::Env env, const std::string& message,
                                    const char* code = "ERR_OUT_OF_RANGE");
Napi::Error make_error(Napi::Env env, const std::string& kind, const std::string& message,
                       const std::string& code);

struct FloatView {
  float* data = nullptr;
  std::size_t length = 0;
};

// A Float32Array argument (TypeError otherwise).
FloatView float32_array(const Napi::Value& value, const char* name);
// A Uint8Array argument, or null/undefined (nullptr).
const std::uint8_t* optional_uint8_array(const Napi::Value& value, const char* name,
                                         std::size_t expected_length);

// Non-negative integer property (RangeError when missing, fractional or negative).
std::size_t size_property(const Napi::Object& object, const char* key);
// The sizes of a dims object { batch, heads, queryLength, keyLength, headDim,
// valueDim }, each read with size_property (the caller checks them further).
pa::AttentionDims dims_property(const Napi::Object& dims);
double number_property(const Napi::Object& object, const char* key, double fallback);
bool bool_property(const Napi::Object& object, const char* key, bool fallback);
std::string string_property(const Napi::Object& object, const char* key, const char* fallback);
// Typed properties as above, with a `fallback` only where absence has a structural
// meaning (such as "no label"); these are required (TypeError when absent): TypeScript
// owns the defaults of user options and always passes them.
double number_property(const Napi::Object& object, const char* key);
bool bool_property(const Napi::Object& object, const char* key);
std::string string_property(const Napi::Object& object, const char* key);

// A new zero-filled typed array of `length` elements, made by the JS constructor: an
// allocation that cannot succeed becomes a RangeError with code
// ERR_MEMORY_ALLOCATION_FAILED naming `name` (napi_create_arraybuffer would end the
// process instead).
Napi::Float32Array new_float32_array(Napi::Env env, std::size_t length, const char* name);
Napi::Float64Array new_float64_array(Napi::Env env, std::size_t length, const char* name);
Napi::Int8Array new_int8_array(Napi::Env env, std::size_t length, const char* name);
Napi::Uint16Array new_uint16_array(Napi::Env env, std::size_t length, const char* name);

// a * b, or a RangeError when it overflows size_t.
std::size_t checked_mul(Napi::Env env, std::size_t a, std::size_t b);

// info[i] as an integer from `min` to 2^53 - 1; RangeError naming `name` otherwise.
std::size_t size_argument(const Napi::CallbackInfo& info, std::size_t i, const char* name,
                          std::size_t min = 0);

// Errors caught on a worker thread, rethrown as JS errors on the main thread.
struct PendingError {
  std::string kind;  // "RangeError", "Error"
  std::string message;
  std::string code;
  bool empty() const { return message.empty(); }
};

// Runs fn, converting C++ exceptions into a PendingError.
template <typename Fn>
PendingError capture_errors(Fn&& fn);

// Runs fn on the main thread; a C++ exception becomes the JS error capture_errors
// describes, thrown.
template <typename Fn>
void run_or_throw(Napi::Env env, Fn&& fn);

// exports[name] = a JS function calling fn, for each (name, fn).
void export_functions(
    Napi::Env env, Napi::Object exports,
    std::initializer_list<std::pair<const char*, Napi::Function::Callback>> functions);

}  // namespace pa_addon

#include "addon/convert_inl.h"
