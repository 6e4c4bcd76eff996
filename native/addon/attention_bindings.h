#pragma once

#include <napi.h>

namespace pa_addon {

void register_attention_bindings(Napi::Env env, Napi::Object exports);

}  // namespace pa_addon
