#include "addon/attention_job.h"

#include <string>
#include <vector>

#include "addon/backend_bindings.h"
#include "addon/convert.h"
#include "addon/feature_map_bindings.h"

namespace pa_addon {
namespace {

void expect_length(Napi::Env env, const char* name, const FloatView& view, std::size_t expected) {
  if (view.length != expected) {
    throw_range_error(env, std::string(name) + ": expected " + std::to_string(expected) +
                               " elements, received " + std::to_string(view.length));
  }
}

bool present(const Napi::Value& value) { return !value.IsUndefined() && !value.IsNull(); }

// q, k, v or out: a Float32Array of `expected` elements; absent only when none are
// expected (the half of a split FAVOR call that does not use it).
float* attention_array(Napi::Env env, const Napi::Value& value, const char* name,
                       std::size_t expected) {
  if (expected == 0 && !present(value)) return nullptr;
  const FloatView view = float32_array(value, name);
  expect_length(env, name, view, expected);
  return view.data;
}

// A Float32Array of one FAVOR state per (batch, head).
float* state_array(Napi::Env env, const Napi::Value& value, const char* name, std::size_t heads,
                   const pa::FavorOptions& favor, std::size_t value_dim) {
  const FloatView state = float32_array(value, name);
  const std::size_t per_head = pa::favor_state_floats(favor.feature_map.feature_count(), value_dim);
  expect_length(env, name, state, checked_mul(env, heads, per_head));
  return state.data;
}

}  // namespace

void AttentionJob::run() const {
  if (kind == AttentionKind::kFavor) {
    pa::favor_attention(dims, q, k, v, out, favor, *kernels, *pool);
  } else {
    pa::softmax_attention(dims, q, k, v, out, softmax, *kernels, *pool);
  }
}

AttentionJob parse_attention_job(Napi::Env env, const Napi::Value& q_value,
                                 const Napi::Value& k_value, const Napi::Value& v_value,
                                 const Napi::Value& out_value, const Napi::Value& dims_value,
                                 const Napi::Value& options_value, AttentionKind kind) {
  AttentionJob job;
  job.kind = kind;
  if (!dims_value.IsObject()) throw_type_error(env, "dims: expected an object");
  if (!options_value.IsObject()) throw_type_error(env, "options: expected an object");
  const Napi::Object dims = dims_value.As<Napi::Object>();
  const Napi::Object options = options_value.As<Napi::Object>();
  job.dims = dims_property(dims);
  const pa::AttentionDims& d = job.dims;
  // FAVOR split into halves: absorbInto (keys only, queryLength 0) and keysState
  // (queries against absorbed keys, keyLength 0).
  const bool favor = kind == AttentionKind::kFavor;
  const Napi::Value absorb_value = favor ? options.Get("absorbInto") : env.Undefined();
  const Napi::Value keys_state_value = favor ? options.Get("keysState") : env.Undefined();
  const bool absorb = present(absorb_value), from_state = present(keys_state_value);
  if (absorb && from_state)
    throw_range_error(env, "absorbInto and keysState: pass one or the other");
  if (absorb && d.q_len != 0) {
    throw_range_error(env, "absorbInto: absorbs keys only; dims.queryLength must be 0, received " +
                               std::to_string(d.q_len));
  }
  if (from_state && d.k_len != 0) {
    throw_range_error(env, "keysState: holds the keys; dims.keyLength must be 0, received " +
                               std::to_string(d.k_len));
  }
  if (d.batch == 0 || d.heads == 0 || (d.q_len == 0 && !absorb) || (d.k_len == 0 && !from_state) ||
      d.head_dim == 0 || d.value_dim == 0) {
    throw_range_error(env, "dims: every size must be >= 1");
  }
  const std::size_t bh = checked_mul(env, d.batch, d.heads);
  job.q = attention_array(env, q_value, "query",
                          checked_mul(env, checked_mul(env, bh, d.q_len), d.head_dim));
  job.k = attention_array(env, k_value, "key",
                          checked_mul(env, checked_mul(env, bh, d.k_len), d.head_dim));
  job.v = attention_array(env, v_value, "value",
                          checked_mul(env, checked_mul(env, bh, d.k_len), d.value_dim));
  job.out = attention_array(env, out_value, "out",
                            checked_mul(env, checked_mul(env, bh, d.q_len), d.value_dim));
  const std::uint8_t* pad = optional_uint8_array(options.Get("keyPadding"), "keyPaddingMask",
                                                 checked_mul(env, d.batch, d.k_len));
  const bool causal = bool_property(options, "causal", false);
  if (kind == AttentionKind::kFavor) {
    job.favor.feature_map = parse_feature_map_spec(options, d.head_dim);
    job.favor.causal = causal;
    job.favor.key_padding = pad;
    // Ranges are the core's to check (check_favor_numbers); here only what the casts need.
    job.favor.epsilon = static_cast<float>(number_property(options, "epsilon"));
    job.favor.chunk_size = size_property(options, "chunkSize");
    const Napi::Value state_value = options.Get("state");
    if (!state_value.IsUndefined() && !state_value.IsNull()) {
      float* state = state_array(env, state_value, "state", bh, job.favor, d.value_dim);
      if (!causal || d.q_len != d.k_len) {
        throw_range_error(
            env, "state: continues causal self-attention (causal, equal query and key lengths)");
      }
      job.favor.state = state;
    }
    if (absorb || from_state) {
      const char* name = absorb ? "absorbInto" : "keysState";
      if (causal || job.favor.state != nullptr) {
        throw_range_error(
            env,
            std::string(name) + ": splits bidirectional attention; causal and state must be unset");
      }
      if (from_state && pad != nullptr) {
        throw_range_error(
            env, "keyPadding: applies when the keys are absorbed (absorbInto), not with keysState");
      }
      float* states = state_array(env, absorb ? absorb_value : keys_state_value, name, bh,
                                  job.favor, d.value_dim);
      if (absorb) {
        job.favor.absorb_into = states;
      } else {
        job.favor.keys_state = states;
      }
    }
  } else {
    job.softmax.causal = causal;
    job.softmax.key_padding = pad;
    job.softmax.scale =
        static_cast<float>(number_property(options, "scale"));  // the core checks it is finite
  }
  job.kernels = &active_kernels();
  job.pool = pa::global_pool();
  return job;
}

void attention_option_arrays(const Napi::Object& options, std::vector<Napi::Value>* keep_alive) {
  for (const char* name : {"keyPadding", "projection", "packedProjection", "adaptiveCoefficients",
                           "adaptiveBasis", "state", "absorbInto", "keysState"}) {
    keep_alive->push_back(options.Get(name));
  }
}

}  // namespace pa_addon
