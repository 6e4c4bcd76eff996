#pragma once

#include <napi.h>

#include "core/feature_map.h"

namespace pa_addon {

// Reads { kernel, numProjections, projection (Float32Array | null), kernelEpsilon }
// into a spec for inputs of width head_dim. The spec points into the JS
// projection's memory: the caller keeps that array alive while the spec is used.
pa::FeatureMapSpec parse_feature_map_spec(const Napi::Object& options, std::size_t head_dim);

void register_feature_map_bindings(Napi::Env env, Napi::Object exports);

}  // namespace pa_addon
