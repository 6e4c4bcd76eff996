// Module entry point: each binding file registers its own functions.
#include <napi.h>

#include "addon/attention_bindings.h"
#include "addon/backend_bindings.h"
#include "addon/backward_bindings.h"
#include "addon/feature_map_bindings.h"
#include "addon/model_plan_ops.h"
#include "addon/plan_bindings.h"
#include "addon/quantized_bindings.h"

namespace {

Napi::Object init(Napi::Env env, Napi::Object exports) {
  pa_addon::register_backend_bindings(env, exports);
  pa_addon::register_feature_map_bindings(env, exports);
  pa_addon::register_attention_bindings(env, exports);
  pa_addon::register_backward_bindings(env, exports);
  pa_addon::register_plan_bindings(env, exports);
  pa_addon::register_quantized_bindings(env, exports);
  pa_addon::register_model_bindings(env, exports);
  return exports;
}

}  // namespace

NODE_API_MODULE(performer_attention, init)
