#pragma once

#include <napi.h>

namespace pa_addon {

// linearQuantize (fp32 weights to int8 values with per-output-channel scales, or bf16)
// and linearPackQuantized (those values packed for linear plan steps).
void register_quantized_bindings(Napi::Env env, Napi::Object exports);

}  // namespace pa_addon
