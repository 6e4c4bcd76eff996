// Plan steps of performer-pytorch models (PerformerLM, Performer): token embeddings,
// ScaleNorm, ReZero's scaled residual, token shift, the GLU gate, rotary positions,
// FAVOR+ with performer-pytorch's numerics and local attention.
#pragma once

#include <napi.h>

#include <string>
#include <vector>

#include "addon/plan_context.h"

namespace pa_addon {

// Parses one such step into `steps`; false when `op` is none of them.
bool parse_model_step(const PlanContext& ctx, const std::string& op, const Napi::Object& step,
                      std::vector<Step>* steps);

// pytorchFavorStateFloats, pytorchFavorStateReset, localRingFloats.
void register_model_bindings(Napi::Env env, Napi::Object exports);

}  // namespace pa_addon
