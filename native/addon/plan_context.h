// What the parsers of plan steps share (plan_bindings.cc for the layer steps,
// model_plan_ops.cc for the steps of performer-pytorch models): the context of one
// plan and length-checked access to the arrays a step names.
#pragma once

#include <napi.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "core/thread_pool.h"
#include "kernels/kernels.h"

namespace pa_addon {

// One step of a plan, converted: plain C++, runs on any thread.
using Step = std::function<void()>;

struct PlanContext {
  Napi::Env env;
  const pa::KernelSet* kernels;
  std::shared_ptr<pa::ThreadPool> pool;
  // Async plans: every array a step reads or writes, kept alive until the worker is
  // done and checked for detachment then. Null for sync plans.
  std::vector<Napi::Value>* arrays;
  // Set by attention steps: the worker checks it between blocks (null: never cancelled).
  const std::atomic<bool>* cancel;
};

// step, rethrowing the InputError it throws prefixed with the step's `label` property
// when it has one, so errors from inside a layer or module name it.
Step labelled(const Napi::Object& step_fields, Step step);

// A parser of the steps whose op is `op`.
struct StepParser {
  const char* op;
  Step (*parse)(const PlanContext& ctx, const Napi::Object& step);
};

// Appends `step` parsed by the parser of `op` to *steps; false when none has that op.
bool parse_step_with(std::initializer_list<StepParser> parsers, const PlanContext& ctx,
                     const std::string& op, const Napi::Object& step, std::vector<Step>* steps);

// The `shifts` of a token-shift step: 1 to dim of them, each -1, 0 or 1; errors name `op`.
std::vector<int> shifts_property(Napi::Env env, const Napi::Object& step, const char* op,
                                 std::size_t dim);

// A Float32Array property holding at least `needed` elements.
float* float_field(const PlanContext& ctx, const Napi::Object& step, const char* key,
                   std::size_t needed);
// The same, or null when the property is absent.
const float* optional_float_field(const PlanContext& ctx, const Napi::Object& step, const char* key,
                                  std::size_t needed);
// A Uint8Array / Int32Array property of exactly `length` elements (optional: null when absent).
std::uint8_t* uint8_field(const PlanContext& ctx, const Napi::Object& step, const char* key,
                          std::size_t length, bool optional);
const std::int32_t* int32_field(const PlanContext& ctx, const Napi::Object& step, const char* key,
                                std::size_t length);
// An Int8Array / Uint16Array property of exactly `length` elements (quantized weights).
const std::int8_t* int8_field(const PlanContext& ctx, const Napi::Object& step, const char* key,
                              std::size_t length);
const std::uint16_t* uint16_field(const PlanContext& ctx, const Napi::Object& step, const char* key,
                                  std::size_t length);

// End of the rows [0, rows) of width `width` at stride `stride` (0 rows: 0).
std::size_t strided_extent(Napi::Env env, std::size_t rows, std::size_t stride, std::size_t width);
bool overlaps(const float* a, std::size_t na, const float* b, std::size_t nb);

}  // namespace pa_addon
