#pragma once

#include <napi.h>

namespace pa_addon {

// favorAttentionBackwardSync / Async, softmaxAttentionBackwardSync / Async.
void register_backward_bindings(Napi::Env env, Napi::Object exports);

}  // namespace pa_addon
