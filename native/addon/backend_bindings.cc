// backendInfo(), setIsa(name), setThreads(n), measureFmaPeak(options).
#include "addon/backend_bindings.h"

#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

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
  if (set == nullptr)
    throw_range_error(info.Env(), "isa: \"" + name + "\" is not available on this CPU or build");
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

// Runs the ISA's FMA loop on `threads` threads at once for about `milliseconds`
// and returns { gflops, perThread }: the multiply-add peak that benchmarks
// compare their achieved rates against. Blocks the calling thread (a benchmark tool).
Napi::Value measure_fma_peak(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsObject()) throw_type_error(env, "options: expected an object");
  const Napi::Object options = info[0].As<Napi::Object>();
  const std::string isa = string_property(options, "isa");
  const pa::KernelSet* set = pa::find_kernel_set(isa);
  if (set == nullptr)
    throw_range_error(env, "isa: \"" + isa + "\" is not available on this CPU or build");
  const double threads = number_property(options, "threads");
  const double milliseconds = number_property(options, "milliseconds");
  if (!(threads >= 1 && threads <= 1024) ||
      threads != static_cast<double>(static_cast<long>(threads))) {
    throw_range_error(env, "threads: expected an integer from 1 to 1024");
  }
  if (!(milliseconds >= 1 && milliseconds <= 60000))
    throw_range_error(env, "milliseconds: expected 1 to 60000");
  const std::size_t n = static_cast<std::size_t>(threads);
  std::vector<double> rates(n, 0.0);
  std::vector<float> sinks(n, 0.0f);
  std::vector<std::thread> pool;
  for (std::size_t t = 0; t < n; ++t) {
    pool.emplace_back([&, t] {
      using clock = std::chrono::steady_clock;
      const auto start = clock::now();
      const auto deadline = start + std::chrono::duration<double, std::milli>(milliseconds);
      double flops = 0.0;
      auto now = start;
      do {
        flops += set->fma_peak(1 << 16, &sinks[t]);
        now = clock::now();
      } while (now < deadline);
      rates[t] = flops / std::chrono::duration<double>(now - start).count() / 1e9;
    });
  }
  for (auto& thread : pool) thread.join();
  Napi::Object result = Napi::Object::New(env);
  Napi::Array per_thread = Napi::Array::New(env, n);
  double total = 0.0;
  for (std::size_t t = 0; t < n; ++t) {
    per_thread.Set(static_cast<uint32_t>(t), rates[t]);
    total += rates[t];
  }
  result.Set("isa", set->name);
  result.Set("gflops", total);
  result.Set("perThread", per_thread);
  return result;
}

}  // namespace

const pa::KernelSet& active_kernels() { return *active_slot().load(); }

void register_backend_bindings(Napi::Env env, Napi::Object exports) {
  export_functions(env, exports,
                   {{"backendInfo", backend_info},
                    {"setIsa", set_isa},
                    {"setThreads", set_threads},
                    {"measureFmaPeak", measure_fma_peak}});
}

}  // namespace pa_addon
