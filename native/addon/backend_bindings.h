#pragma once

#include <napi.h>

#include "kernels/kernels.h"

namespace pa_addon {

// The kernel set new calls use (the CPU's best one unless set otherwise).
const pa::KernelSet& active_kernels();

void register_backend_bindings(Napi::Env env, Napi::Object exports);

}  // namespace pa_addon
