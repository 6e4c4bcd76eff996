// backendInfo(), setIsa(name), setThreads(n).
#include "addon/backend_bindings.h"

#include <atomic>

#include "addon/convert.h"
#include "core/thread_pool.h"
#include "kernels/dispatch.h"

namespace pa_addon {
namespace {

std::atomic<const pa::KernelSet*>& active_slot() {
  static std::atomic<const pa::KernelSet*> slot{&pa::default_kernel_set()};
  return slot;
}

Napi::Value backend_info(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object result = Napi::Object::New(env);
  result.Set("isa", active_kernels().name);
  Napi::Array available = Napi::Array::New(env);
  uint32_t i = 0;
  for (const pa::KernelSet* set : pa::available_kernel_sets()) available.Set(i++, set->name);
  result.Set("available", available);
  Napi::Array compiled = Napi::Array::New(env);
  i = 0;
  for (const std::string& name : pa::compiled_kernel_set_names()) compiled.Set(i++, name);
  result.Set("compiled", compiled);
  result.Set("threads", static_cast<double>(pa::global_pool()->size()));
  return result;
}

Napi::Value set_isa(const Napi::CallbackInfo& info) {
  if (!info[0].IsString()) throw_type_error(info.Env(), "isa: expected a string");
  const std::string name = info[0].As<Napi::String>().Utf8Value();
  const pa::KernelSet* set = pa::find_kernel_set(name);
  if (set == nullptr) throw_range_error(info.Env(), "isa: \"" + name + "\" is not available on this CPU or build");
  active_slot().store(set);
  return info.Env().Undefined();
}

Napi::Value set_threads(const Napi::CallbackInfo& info) {
  const double n = info[0].IsNumber() ? info[0].As<Napi::Number>().DoubleValue() : -1;
  if (!(n >= 1 && n <= 1024) || n != static_cast<double>(static_cast<long>(n))) {
    throw_range_error(info.Env(), "threads: expected an integer from 1 to 1024");
  }
  pa::set_global_thread_count(static_cast<std::size_t>(n));
  return info.Env().Undefined();
}

}  // namespace

const pa::KernelSet& active_kernels() { return *active_slot().load(); }

void register_backend_bindings(Napi::Env env, Napi::Object exports) {
  exports.Set("backendInfo", Napi::Function::New(env, backend_info, "backendInfo"));
  exports.Set("setIsa", Napi::Function::New(env, set_isa, "setIsa"));
  exports.Set("setThreads", Napi::Function::New(env, set_threads, "setThreads"));
}

}  // namespace pa_addon
