// sampleProjection(options) and computeFeatures(x, rows, featureMap, logSpace).
#include "addon/feature_map_bindings.h"

#include <cmath>

#include "addon/backend_bindings.h"
#include "addon/convert.h"
#include "core/adaptive_features.h"
#include "core/orthogonal.h"

namespace pa_addon {
namespace {

// Rows of x (width d) must be finite, with squared norms of x_hat = d^(-1/4) x up to
// 1e30, as attention requires: beyond that the float32 log-features overflow and the
// features or the calibration statistics would be NaN.
void check_rows(Napi::Env env, const char* name, const float* x, std::size_t rows, std::size_t d) {
  const double normalizer2 = 1.0 / std::sqrt(static_cast<double>(d));
  for (std::size_t r = 0; r < rows; ++r) {
    const float* row = x + r * d;
    // Four independent sums (no long dependency chain); NaN or infinity makes them NaN or Inf.
    double s[4] = {0.0, 0.0, 0.0, 0.0};
    std::size_t i = 0;
    for (; i + 4 <= d; i += 4) {
      for (std::size_t j = 0; j < 4; ++j) s[j] += static_cast<double>(row[i + j]) * row[i + j];
    }
    for (; i < d; ++i) s[0] += static_cast<double>(row[i]) * row[i];
    const double norm2 = (s[0] + s[1]) + (s[2] + s[3]);
    if (!std::isfinite(norm2)) {
      for (std::size_t j = 0; j < d; ++j) {
        if (!std::isfinite(row[j])) {
          throw_range_error(env, std::string(name) + ": values must be finite, received " +
                                     (std::isnan(row[j]) ? "NaN"
                                      : row[j] > 0       ? "Infinity"
                                                         : "-Infinity") +
                                     " at flat index " + std::to_string(r * d + j));
        }
      }
    }
    if (norm2 * normalizer2 > 1e30) {
      throw_range_error(
          env,
          std::string(name) + ": row " + std::to_string(r) +
              " is too large (squared norm of d^(-1/4) x above 1e30 overflows float32 features)");
    }
  }
}

Napi::Value sample_projection(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsObject()) throw_type_error(env, "options: expected an object");
  const Napi::Object options = info[0].As<Napi::Object>();
  pa::ProjectionSpec spec;
  spec.num_features = size_property(options, "numFeatures");
  spec.head_dim = size_property(options, "headDim");
  if (spec.num_features == 0 || spec.head_dim == 0)
    throw_range_error(env, "numFeatures and headDim must be >= 1");
  const double seed = number_property(options, "seed");
  if (!(seed >= 0.0) || seed != std::floor(seed) || seed > 9007199254740991.0) {
    throw_range_error(env, "seed: expected an integer from 0 to 2^53 - 1");
  }
  spec.seed = static_cast<std::uint64_t>(seed);
  spec.orthogonal = bool_property(options, "orthogonal");
  const std::string norm = string_property(options, "normScaling");
  if (norm == "chi") {
    spec.norm_scaling = pa::NormScaling::kChi;
  } else if (norm == "sqrt") {
    spec.norm_scaling = pa::NormScaling::kSqrt;
  } else {
    throw_range_error(env, "normScaling: expected 'chi' or 'sqrt'");
  }
  spec.sign_fix = bool_property(options, "signFix", true);
  Napi::Float32Array out =
      new_float32_array(env, checked_mul(env, spec.num_features, spec.head_dim),
                        "projection (numFeatures x headDim)");
  // Orthogonal blocks need a headDim x headDim workspace: it may not fit either.
  run_or_throw(env, [&] { pa::sample_projection(spec, active_kernels(), out.Data()); });
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
  if (!(rows_number >= 0) || rows_number != std::floor(rows_number))
    throw_range_error(env, "rows: expected an integer");
  const std::size_t rows = static_cast<std::size_t>(rows_number);
  if (checked_mul(env, rows, head_dim) != x.length) {
    throw_range_error(env, "x: expected " + std::to_string(rows * head_dim) +
                               " elements, received " + std::to_string(x.length));
  }
  const bool log_space = info[3].IsBoolean() && info[3].As<Napi::Boolean>().Value();
  check_rows(env, "x", x.data, rows, head_dim);
  Napi::Float32Array out =
      new_float32_array(env, checked_mul(env, rows, spec.feature_count()), "features");
  run_or_throw(env, [&] {
    pa::compute_features(spec, active_kernels(), x.data, rows, log_space, out.Data());
  });
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
  if (!(m >= 1 && d >= 1) || m != std::floor(m) || d != std::floor(d))
    throw_range_error(env, "sizes: expected integers >= 1");
  const std::size_t size =
      checked_mul(env, static_cast<std::size_t>(m), static_cast<std::size_t>(d));
  if (!identity && projection.length != size) throw_range_error(env, "projection: wrong length");
  Napi::Float32Array out = new_float32_array(env, size, "packed projection");
  pa::pack_projection(projection.data, static_cast<std::size_t>(m), static_cast<std::size_t>(d),
                      out.Data());
  return out;
}

// A Float64Array of exactly `length` elements (TypeError / RangeError otherwise).
const double* float64_array(const Napi::Value& value, const char* name, std::size_t length) {
  Napi::Env env = value.Env();
  if (!value.IsTypedArray() ||
      value.As<Napi::TypedArray>().TypedArrayType() != napi_float64_array) {
    throw_type_error(env, std::string(name) + ": expected a Float64Array");
  }
  const Napi::Float64Array array = value.As<Napi::Float64Array>();
  if (array.ElementLength() != length) {
    throw_range_error(env, std::string(name) + ": expected " + std::to_string(length) +
                               " elements, received " + std::to_string(array.ElementLength()));
  }
  return array.Data();
}

// calibrateFeatures(query, key, rows: {batch, heads, queryLength, keyLength, headDim}, kernel):
// the optimal parameters per head from the moments of every batch entry of that
// head: {coefficients: heads x d, basis: heads x d x d | null}.
Napi::Value calibrate_features(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const FloatView q = float32_array(info[0], "query");
  const FloatView k = float32_array(info[1], "key");
  if (!info[2].IsObject()) throw_type_error(env, "dims: expected an object");
  const Napi::Object dims = info[2].As<Napi::Object>();
  const std::size_t batch = size_property(dims, "batch"), heads = size_property(dims, "heads");
  const std::size_t lq = size_property(dims, "queryLength"), lk = size_property(dims, "keyLength");
  const std::size_t d = size_property(dims, "headDim");
  if (batch == 0 || heads == 0 || lq == 0 || lk == 0 || d == 0)
    throw_range_error(env, "dims: every size must be >= 1");
  if (checked_mul(env, checked_mul(env, batch * heads, lq), d) != q.length ||
      checked_mul(env, checked_mul(env, batch * heads, lk), d) != k.length) {
    throw_range_error(env, "query/key: lengths do not match dims");
  }
  const std::string kernel = info[3].IsString() ? info[3].As<Napi::String>().Utf8Value() : "";
  if (kernel != "softmax-opt" && kernel != "softmax-dense")
    throw_range_error(env, "kernel: expected softmax-opt or softmax-dense");
  const bool dense = kernel == "softmax-dense";
  check_rows(env, "query", q.data, q.length / d, d);
  check_rows(env, "key", k.data, k.length / d, d);
  Napi::Float64Array coefficients =
      new_float64_array(env, checked_mul(env, heads, d), "coefficients");
  Napi::Value basis = env.Null();
  Napi::Float64Array basis_array;
  if (dense) {
    basis_array = new_float64_array(env, checked_mul(env, checked_mul(env, heads, d), d), "basis");
    basis = basis_array;
  }
  run_or_throw(env, [&] {
    pa::PairMoments total;
    for (std::size_t h = 0; h < heads; ++h) {
      total.init(d, dense);
      for (std::size_t b = 0; b < batch; ++b) {
        const std::size_t bh = b * heads + h;
        total.add(q.data + bh * lq * d, lq, false, nullptr, active_kernels());
        total.add(k.data + bh * lk * d, lk, true, nullptr, active_kernels());
      }
      const pa::AdaptiveParams params = pa::params_from_moments(total, dense);
      // Checked like fixed parameters: a set that attention would refuse is an error here.
      for (const double a : params.a) {
        if (!std::isfinite(a) || !(a < 0.125))
          throw pa::InputError("query/key: the statistics give no finite optimal parameters");
      }
      for (const double x : params.basis) {
        if (!std::isfinite(x))
          throw pa::InputError("query/key: the statistics give no finite optimal parameters");
      }
      std::copy(params.a.begin(), params.a.end(), coefficients.Data() + h * d);
      if (dense)
        std::copy(params.basis.begin(), params.basis.end(), basis_array.Data() + h * d * d);
    }
  });
  Napi::Object out = Napi::Object::New(env);
  out.Set("coefficients", coefficients);
  out.Set("basis", basis);
  return out;
}

}  // namespace

pa::FeatureMapSpec parse_feature_map_spec(const Napi::Object& options, std::size_t head_dim) {
  Napi::Env env = options.Env();
  pa::FeatureMapSpec spec;
  const std::string kernel = string_property(options, "kernel");
  if (!pa::parse_kernel(kernel, &spec.kernel))
    throw_range_error(env, "kernel: unknown kernel \"" + kernel + "\"");
  spec.head_dim = head_dim;
  spec.num_projections = size_property(options, "numProjections");
  if (spec.num_projections == 0) throw_range_error(env, "numProjections must be >= 1");
  spec.kernel_epsilon = static_cast<float>(number_property(options, "kernelEpsilon"));
  if (!(spec.kernel_epsilon >= 0.0f) || !std::isfinite(spec.kernel_epsilon)) {
    throw_range_error(env, "kernelEpsilon: expected a finite number >= 0");
  }
  const Napi::Value projection = options.Get("projection");
  if (projection.IsNull() || projection.IsUndefined()) {
    const bool generalized = spec.kernel != pa::Kernel::kSoftmax &&
                             spec.kernel != pa::Kernel::kSoftmaxHyperbolic &&
                             spec.kernel != pa::Kernel::kTrig;
    if (!generalized || spec.num_projections != head_dim) {
      throw_range_error(env, "projection: required unless a generalized kernel uses no projection");
    }
  } else {
    const FloatView view = float32_array(projection, "projection");
    if (view.length != checked_mul(env, spec.num_projections, head_dim)) {
      throw_range_error(env, "projection: expected " +
                                 std::to_string(spec.num_projections * head_dim) +
                                 " elements, received " + std::to_string(view.length));
    }
    spec.projection = view.data;
  }
  const Napi::Value packed = options.Get("packedProjection");
  if (!packed.IsNull() && !packed.IsUndefined()) {
    const FloatView view = float32_array(packed, "packedProjection");
    if (view.length != checked_mul(env, spec.num_projections, head_dim)) {
      throw_range_error(env, "packedProjection: expected " +
                                 std::to_string(spec.num_projections * head_dim) +
                                 " elements, received " + std::to_string(view.length));
    }
    spec.packed_projection = view.data;
  }
  if (spec.is_adaptive()) {
    if (spec.projection == nullptr)
      throw_range_error(env, "projection: required by the adaptive kernels");
    spec.adaptive_heads = static_cast<std::size_t>(number_property(options, "adaptiveHeads", 0.0));
    spec.adaptive_head = static_cast<std::size_t>(number_property(options, "adaptiveHead", 0.0));
    if (spec.adaptive_heads > 0) {
      spec.adaptive_a = float64_array(options.Get("adaptiveCoefficients"), "adaptiveCoefficients",
                                      checked_mul(env, spec.adaptive_heads, head_dim));
      if (spec.kernel == pa::Kernel::kSoftmaxDense) {
        spec.adaptive_basis = float64_array(
            options.Get("adaptiveBasis"), "adaptiveBasis",
            checked_mul(env, checked_mul(env, spec.adaptive_heads, head_dim), head_dim));
      }
      // Checked here too so that a bad set fails on the main thread.
      run_or_throw(env, [&] {
        for (std::size_t h = 0; h < spec.adaptive_heads; ++h) pa::fixed_params(spec, h);
      });
    }
  }
  return spec;
}

void register_feature_map_bindings(Napi::Env env, Napi::Object exports) {
  export_functions(env, exports,
                   {{"sampleProjection", sample_projection},
                    {"computeFeatures", compute_features},
                    {"calibrateFeatures", calibrate_features},
                    {"packProjection", pack_projection}});
}

}  // namespace pa_addon
