// Plan steps of training: the gradients of the layer and model steps (core/grad_ops.h)
// and the softmax cross-entropy loss.
#pragma once

#include <napi.h>

#include <cstddef>
#include <string>
#include <vector>

#include "addon/plan_context.h"

namespace pa_addon {

// Parses one such step into `steps`; false when `op` is none of them.
bool parse_grad_step(const PlanContext& ctx, const std::string& op, const Napi::Object& step,
                     std::vector<Step>* steps);

// A Float64Array property holding at least `needed` elements (kept alive like float_field).
double* float64_field(const PlanContext& ctx, const Napi::Object& step, const char* key,
                      std::size_t needed);

}  // namespace pa_addon
