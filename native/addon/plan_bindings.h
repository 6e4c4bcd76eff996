#pragma once

#include <napi.h>

namespace pa_addon {

// runPlanSync / runPlanAsync (a layer's forward pass as one list of native steps),
// linearPack, favorStateFloats / favorStateReset, pendingCalls.
void register_plan_bindings(Napi::Env env, Napi::Object exports);

}  // namespace pa_addon
