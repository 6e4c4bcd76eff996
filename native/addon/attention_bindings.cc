// favorAttention / softmaxAttention, sync and async.
//
// Arguments (validated in TypeScript, checked again here):
//   (q, k, v, out: Float32Array, dims: { batch, heads, queryLength, keyLength,
//    headDim, valueDim }, options)
// The options are converted into a plain C++ job on the main thread. The async
// variants then run the job on a libuv worker thread that never touches V8, and
// hold references to every array the job points into until it has finished.
#include "addon/attention_bindings.h"

#include <atomic>
#include <cmath>
#include <memory>
#include <vector>

#include "addon/backend_bindings.h"
#include "addon/convert.h"
#include "addon/feature_map_bindings.h"
#include "core/favor.h"
#include "core/softmax_attention.h"

namespace pa_addon {
namespace {

enum class AttentionKind { kFavor, kSoftmax };

struct AttentionJob {
  AttentionKind kind = AttentionKind::kFavor;
  pa::AttentionDims dims;
  const float* q = nullptr;
  const float* k = nullptr;
  const float* v = nullptr;
  float* out = nullptr;
  pa::FavorOptions favor;
  pa::SoftmaxOptions softmax;
  const pa::KernelSet* kernels = nullptr;
  std::shared_ptr<pa::ThreadPool> pool;
  // Async calls only: set from the main thread by control.cancel(), read by the
  // drivers between blocks. Shared with that function, which may outlive the job.
  std::shared_ptr<std::atomic<bool>> cancel;

  void run() const {
    if (kind == AttentionKind::kFavor) {
      pa::favor_attention(dims, q, k, v, out, favor, *kernels, *pool);
    } else {
      pa::softmax_attention(dims, q, k, v, out, softmax, *kernels, *pool);
    }
  }
};

void expect_length(Napi::Env env, const char* name, const FloatView& view, std::size_t expected) {
  if (view.length != expected) {
    throw_range_error(env, std::string(name) + ": expected " + std::to_string(expected) +
                               " elements, received " + std::to_string(view.length));
  }
}

AttentionJob parse_job(const Napi::CallbackInfo& info, AttentionKind kind) {
  Napi::Env env = info.Env();
  AttentionJob job;
  job.kind = kind;
  if (!info[4].IsObject()) throw_type_error(env, "dims: expected an object");
  if (!info[5].IsObject()) throw_type_error(env, "options: expected an object");
  const Napi::Object dims = info[4].As<Napi::Object>();
  const Napi::Object options = info[5].As<Napi::Object>();
  job.dims.batch = size_property(dims, "batch");
  job.dims.heads = size_property(dims, "heads");
  job.dims.q_len = size_property(dims, "queryLength");
  job.dims.k_len = size_property(dims, "keyLength");
  job.dims.head_dim = size_property(dims, "headDim");
  job.dims.value_dim = size_property(dims, "valueDim");
  const pa::AttentionDims& d = job.dims;
  if (d.batch == 0 || d.heads == 0 || d.q_len == 0 || d.k_len == 0 || d.head_dim == 0 || d.value_dim == 0) {
    throw_range_error(env, "dims: every size must be >= 1");
  }
  const std::size_t bh = checked_mul(env, d.batch, d.heads);
  const FloatView q = float32_array(info[0], "query");
  const FloatView k = float32_array(info[1], "key");
  const FloatView v = float32_array(info[2], "value");
  const FloatView out = float32_array(info[3], "out");
  expect_length(env, "query", q, checked_mul(env, checked_mul(env, bh, d.q_len), d.head_dim));
  expect_length(env, "key", k, checked_mul(env, checked_mul(env, bh, d.k_len), d.head_dim));
  expect_length(env, "value", v, checked_mul(env, checked_mul(env, bh, d.k_len), d.value_dim));
  expect_length(env, "out", out, checked_mul(env, checked_mul(env, bh, d.q_len), d.value_dim));
  job.q = q.data;
  job.k = k.data;
  job.v = v.data;
  job.out = out.data;
  const std::uint8_t* pad =
      optional_uint8_array(options.Get("keyPadding"), "keyPaddingMask", checked_mul(env, d.batch, d.k_len));
  const bool causal = bool_property(options, "causal", false);
  if (kind == AttentionKind::kFavor) {
    job.favor.feature_map = parse_feature_map_spec(options, d.head_dim);
    job.favor.causal = causal;
    job.favor.key_padding = pad;
    job.favor.epsilon = static_cast<float>(number_property(options, "epsilon", 0.0));
    if (!std::isfinite(job.favor.epsilon) || job.favor.epsilon < 0.0f) {
      throw_range_error(env, "epsilon: expected a finite number >= 0");
    }
    const double chunk = number_property(options, "chunkSize", 32.0);
    if (!(chunk >= 1 && chunk <= static_cast<double>(pa::kMaxChunkSize)) || chunk != std::floor(chunk)) {
      throw_range_error(env, "chunkSize: expected an integer from 1 to 4096");
    }
    job.favor.chunk_size = static_cast<std::size_t>(chunk);
  } else {
    job.softmax.causal = causal;
    job.softmax.key_padding = pad;
    job.softmax.scale = static_cast<float>(
        number_property(options, "scale", 1.0 / std::sqrt(static_cast<double>(d.head_dim))));
    if (!std::isfinite(job.softmax.scale)) throw_range_error(env, "scale: expected a finite number");
  }
  job.kernels = &active_kernels();
  job.pool = pa::global_pool();
  return job;
}

class AttentionWorker : public Napi::AsyncWorker {
 public:
  AttentionWorker(const Napi::CallbackInfo& info, AttentionJob job)
      : Napi::AsyncWorker(info.Env(), "performer-attention"),
        job_(std::move(job)),
        deferred_(Napi::Promise::Deferred::New(info.Env())) {
    // Keep every array the job reads or writes alive until it is done.
    for (std::size_t i = 0; i < 4; ++i) keep_alive(info[i]);
    const Napi::Object options = info[5].As<Napi::Object>();
    keep_alive(options.Get("keyPadding"));
    keep_alive(options.Get("projection"));
    keep_alive(options.Get("packedProjection"));
    keep_alive(options.Get("adaptiveCoefficients"));
    keep_alive(options.Get("adaptiveBasis"));
    out_ = Napi::Persistent(info[3].As<Napi::Object>());
  }

  Napi::Promise promise() const { return deferred_.Promise(); }

  void Execute() override { error_ = capture_errors([this] { job_.run(); }); }

  void OnOK() override {
    // A worker_thread terminated with this call in flight: its environment can no
    // longer run JS, so every Node-API call here fails with a Napi::Error. That
    // must not escape (it would terminate the process): the Promise is gone anyway.
    try {
      settle();
    } catch (const Napi::Error&) {
    }
  }

  void OnError(const Napi::Error& error) override {
    try {
      deferred_.Reject(error.Value());
    } catch (const Napi::Error&) {
    }
  }

 private:
  void settle() {
    Napi::Env env = Env();
    // The library marks these buffers untransferable; a detach by other means (another
    // addon) while the worker ran leaves no defined result.
    for (std::size_t i = 0; i < 4 && i < references_.size(); ++i) {
      const Napi::Value array = references_[i].Value();
      if (array.IsTypedArray() && array.As<Napi::TypedArray>().ArrayBuffer().IsDetached()) {
        deferred_.Reject(make_error(env, "TypeError",
                                    "an input or output ArrayBuffer was detached while the call ran; the result is undefined",
                                    "ERR_INVALID_STATE")
                             .Value());
        return;
      }
    }
    if (error_.empty()) {
      deferred_.Resolve(out_.Value());
    } else {
      deferred_.Reject(make_error(env, error_.kind, error_.message, error_.code).Value());
    }
  }

  void keep_alive(const Napi::Value& value) {
    if (value.IsObject()) references_.push_back(Napi::Persistent(value.As<Napi::Object>()));
  }

  AttentionJob job_;
  Napi::Promise::Deferred deferred_;
  std::vector<Napi::ObjectReference> references_;
  Napi::ObjectReference out_;
  PendingError error_;
};

Napi::Value run_sync(const Napi::CallbackInfo& info, AttentionKind kind) {
  const AttentionJob job = parse_job(info, kind);
  const PendingError error = capture_errors([&] { job.run(); });
  if (!error.empty()) throw make_error(info.Env(), error.kind, error.message, error.code);
  return info[3];
}

// info[6], optional: a control object; it receives cancel(), which makes a queued
// call skip its work and a running one stop at its next block (AbortError).
Napi::Value run_async(const Napi::CallbackInfo& info, AttentionKind kind) {
  AttentionJob job = parse_job(info, kind);
  if (info.Length() > 6 && info[6].IsObject()) {
    job.cancel = std::make_shared<std::atomic<bool>>(false);
    job.favor.cancel = job.cancel.get();
    job.softmax.cancel = job.cancel.get();
    std::shared_ptr<std::atomic<bool>> flag = job.cancel;
    info[6].As<Napi::Object>().Set(
        "cancel", Napi::Function::New(info.Env(), [flag](const Napi::CallbackInfo& call) -> Napi::Value {
          flag->store(true, std::memory_order_relaxed);
          return call.Env().Undefined();
        }));
  }
  auto* worker = new AttentionWorker(info, std::move(job));  // deletes itself when done
  Napi::Promise promise = worker->promise();
  worker->Queue();
  return promise;
}

Napi::Value favor_sync(const Napi::CallbackInfo& info) { return run_sync(info, AttentionKind::kFavor); }
Napi::Value favor_async(const Napi::CallbackInfo& info) { return run_async(info, AttentionKind::kFavor); }
Napi::Value softmax_sync(const Napi::CallbackInfo& info) { return run_sync(info, AttentionKind::kSoftmax); }
Napi::Value softmax_async(const Napi::CallbackInfo& info) { return run_async(info, AttentionKind::kSoftmax); }

}  // namespace

void register_attention_bindings(Napi::Env env, Napi::Object exports) {
  exports.Set("favorAttentionSync", Napi::Function::New(env, favor_sync, "favorAttentionSync"));
  exports.Set("favorAttentionAsync", Napi::Function::New(env, favor_async, "favorAttentionAsync"));
  exports.Set("softmaxAttentionSync", Napi::Function::New(env, softmax_sync, "softmaxAttentionSync"));
  exports.Set("softmaxAttentionAsync", Napi::Function::New(env, softmax_async, "softmaxAttentionAsync"));
}

}  // namespace pa_addon
