#pragma once

#include <napi.h>

#include <string>
#include <vector>

#include "addon/plan_context.h"

namespace pa_addon {

// Plan steps favorBackward / softmaxBackward (the attention gradients inside a training
// pass); false when `op` is neither.
bool parse_attention_backward_step(const PlanContext& ctx, const std::string& op,
                                   const Napi::Object& step, std::vector<Step>* steps);

// favorAttentionBackwardSync / Async, softmaxAttentionBackwardSync / Async.
void register_backward_bindings(Napi::Env env, Napi::Object exports);

}  // namespace pa_addon
