// sampleProjection(options) and computeFeatures(x, rows, featureMap, logSpace).
#include "addon/feature_map_bindings.h"

#include <cmath>

#include "addon/backend_bindings.h"
#include "addon/convert.h"
#include "core/orthogonal.h"

namespace pa_addon {
namespace {

Napi::Value sample_projection(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsObject()) throw_type_error(env, "options: expected an object");
  const Napi::Object options = info[0].As<Napi::Object>();
  pa::ProjectionSpec spec;
  spec.num_features = size_property(options, "numFeatures");
  spec.head_dim = size_property(options, "headDim");
  if (spec.num_features == 0 || spec.head_dim == 0) throw_range_error(env, "numFeatures and headDim must be >= 1");
  const double seed = number_property(options, "seed", 0.0);
  if (!(seed >= 0.0) || seed != std::floor(seed) || seed > 9007199254740991.0) {
    throw_range_error(env, "seed: expected an integer from 0 to 2^53 - 1");
  }
  spec.seed = static_cast<std::uint64_t>(seed);
  spec.orthogonal = bool_property(options, "orthogonal", true);
  const std::string norm = string_property(options, "normScaling", "chi");
  if (norm == "chi") {
    spec.norm_scaling = pa::NormScaling::kChi;
  } else if (norm == "sqrt") {
    spec.norm_scaling = pa::NormScaling::kSqrt;
  } else {
    throw_range_error(env, "normScaling: expected 'chi' or 'sqrt'");
  }
  spec.sign_fix = bool_property(options, "signFix", true);
  Napi::Float32Array out = Napi::Float32Array::New(env, checked_mul(env, spec.num_features, spec.head_dim));
  pa::sample_projection(spec, active_kernels(), out.Data());
  return out;
}

Napi::Value compute_features(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const FloatView x = float32_array(info[0], "x");
  if (!info[2].IsObject()) throw_type_error(env, "featureMap: expected an object");
  const Napi::Object options = info[2].As<Napi::Object>();
  const std::size_t head_dim = size_property(options, "headDim");
  const pa::FeatureMapSpec spec = parse_feature_map_spec(options, head_dim);
  const double rows_number = info[1].IsNumber() ? info[1].As<Napi::Number>().DoubleValue() : -1.0;
  if (!(rows_number >= 0) || rows_number != std::floor(rows_number)) throw_range_error(env, "rows: expected an integer");
  const std::size_t rows = static_cast<std::size_t>(rows_number);
  if (checked_mul(env, rows, head_dim) != x.length) {
    throw_range_error(env, "x: expected " + std::to_string(rows * head_dim) + " elements, received " +
                               std::to_string(x.length));
  }
  const bool log_space = info[3].IsBoolean() && info[3].As<Napi::Boolean>().Value();
  Napi::Float32Array out = Napi::Float32Array::New(env, checked_mul(env, rows, spec.feature_count()));
  const PendingError error =
      capture_errors([&] { pa::compute_features(spec, active_kernels(), x.data, rows, log_space, out.Data()); });
  if (!error.empty()) throw make_error(env, error.kind, error.message, error.code);
  return out;
}

// packProjection(projection | null, numProjections, headDim): the layout the
// feature maps multiply by (see pa::pack_projection), computed once per FeatureMap.
Napi::Value pack_projection(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const bool identity = info[0].IsNull() || info[0].IsUndefined();
  const FloatView projection = identity ? FloatView{} : float32_array(info[0], "projection");
  const double m = info[1].IsNumber() ? info[1].As<Napi::Number>().DoubleValue() : 0;
  const double d = info[2].IsNumber() ? info[2].As<Napi::Number>().DoubleValue() : 0;
  if (!(m >= 1 && d >= 1) || m != std::floor(m) || d != std::floor(d)) throw_range_error(env, "sizes: expected integers >= 1");
  const std::size_t size = checked_mul(env, static_cast<std::size_t>(m), static_cast<std::size_t>(d));
  if (!identity && projection.length != size) throw_range_error(env, "projection: wrong length");
  Napi::Float32Array out = Napi::Float32Array::New(env, size);
  pa::pack_projection(projection.data, static_cast<std::size_t>(m), static_cast<std::size_t>(d), out.Data());
  return out;
}

}  // namespace

pa::FeatureMapSpec parse_feature_map_spec(const Napi::Object& options, std::size_t head_dim) {
  Napi::Env env = options.Env();
  pa::FeatureMapSpec spec;
  const std::string kernel = string_property(options, "kernel", "softmax");
  if (!pa::parse_kernel(kernel, &spec.kernel)) throw_range_error(env, "kernel: unknown kernel \"" + kernel + "\"");
  spec.head_dim = head_dim;
  spec.num_projections = size_property(options, "numProjections");
  if (spec.num_projections == 0) throw_range_error(env, "numProjections must be >= 1");
  spec.kernel_epsilon = static_cast<float>(number_property(options, "kernelEpsilon", 1e-3));
  if (!(spec.kernel_epsilon >= 0.0f) || !std::isfinite(spec.kernel_epsilon)) {
    throw_range_error(env, "kernelEpsilon: expected a finite number >= 0");
  }
  const Napi::Value projection = options.Get("projection");
  if (projection.IsNull() || projection.IsUndefined()) {
    const bool generalized = spec.kernel != pa::Kernel::kSoftmax && spec.kernel != pa::Kernel::kSoftmaxHyperbolic &&
                             spec.kernel != pa::Kernel::kTrig;
    if (!generalized || spec.num_projections != head_dim) {
      throw_range_error(env, "projection: required unless a generalized kernel uses no projection");
    }
  } else {
    const FloatView view = float32_array(projection, "projection");
    if (view.length != checked_mul(env, spec.num_projections, head_dim)) {
      throw_range_error(env, "projection: expected " + std::to_string(spec.num_projections * head_dim) +
                                 " elements, received " + std::to_string(view.length));
    }
    spec.projection = view.data;
  }
  const Napi::Value packed = options.Get("packedProjection");
  if (!packed.IsNull() && !packed.IsUndefined()) {
    const FloatView view = float32_array(packed, "packedProjection");
    if (view.length != checked_mul(env, spec.num_projections, head_dim)) {
      throw_range_error(env, "packedProjection: expected " + std::to_string(spec.num_projections * head_dim) +
                                 " elements, received " + std::to_string(view.length));
    }
    spec.packed_projection = view.data;
  }
  return spec;
}

void register_feature_map_bindings(Napi::Env env, Napi::Object exports) {
  exports.Set("sampleProjection", Napi::Function::New(env, sample_projection, "sampleProjection"));
  exports.Set("computeFeatures", Napi::Function::New(env, compute_features, "computeFeatures"));
  exports.Set("packProjection", Napi::Function::New(env, pack_projection, "packProjection"));
}

}  // namespace pa_addon
