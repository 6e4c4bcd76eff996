#include "addon/async_job.h"

#include <atomic>
#include <utility>

namespace pa_addon {
namespace {
std::atomic<long> g_pending{0};
}  // namespace

Napi::Promise queue_job(Napi::Env env, std::function<void()> run, Napi::Value result,
                        const std::vector<Napi::Value>& keep_alive) {
  auto* worker = new AsyncJob(env, std::move(run), result, keep_alive);
  Napi::Promise promise = worker->promise();
  worker->Queue();
  return promise;
}

std::shared_ptr<std::atomic<bool>> install_cancel(const Napi::CallbackInfo& info,
                                                  std::size_t index) {
  if (info.Length() <= index || !info[index].IsObject()) return nullptr;
  auto flag = std::make_shared<std::atomic<bool>>(false);
  info[index].As<Napi::Object>().Set(
      "cancel",
      Napi::Function::New(info.Env(), [flag](const Napi::CallbackInfo& call) -> Napi::Value {
        flag->store(true, std::memory_order_relaxed);
        return call.Env().Undefined();
      }));
  return flag;
}

long pending_async_calls() { return g_pending.load(std::memory_order_relaxed); }

AsyncJob::AsyncJob(Napi::Env env, std::function<void()> run, Napi::Value result,
                   const std::vector<Napi::Value>& keep_alive)
    : Napi::AsyncWorker(env, "performer-attention"),
      run_(std::move(run)),
      deferred_(Napi::Promise::Deferred::New(env)) {
  // References to primitives need Node-API 10: a non-object result resolves to undefined.
  if (result.IsObject()) result_ = Napi::Reference<Napi::Value>::New(result, 1);
  for (const Napi::Value& value : keep_alive) {
    if (value.IsObject()) references_.push_back(Napi::Persistent(value.As<Napi::Object>()));
  }
  g_pending.fetch_add(1, std::memory_order_relaxed);
}

AsyncJob::~AsyncJob() { g_pending.fetch_sub(1, std::memory_order_relaxed); }

void AsyncJob::Execute() {
  error_ = capture_errors([this] { run_(); });
}

// A worker_thread terminated with this call in flight: its environment can no
// longer run JS, so every Node-API call here fails with a Napi::Error. That must
// not escape (it would terminate the process): the Promise is gone anyway.
void AsyncJob::OnOK() {
  try {
    // The library marks the caller's buffers untransferable; one detached by other
    // means (another addon) while the worker ran leaves no defined result.
    for (const Napi::ObjectReference& ref : references_) {
      const Napi::Value value = ref.Value();
      if (value.IsTypedArray() && value.As<Napi::TypedArray>().ArrayBuffer().IsDetached()) {
        deferred_.Reject(
            make_error(
                Env(), "TypeError",
                "an input or output ArrayBuffer was detached while the call ran; the result is undefined",
                "ERR_INVALID_STATE")
                .Value());
        return;
      }
    }
    if (error_.empty()) {
      deferred_.Resolve(result_.IsEmpty() ? Env().Undefined() : result_.Value());
    } else {
      deferred_.Reject(make_error(Env(), error_.kind, error_.message, error_.code).Value());
    }
  } catch (const Napi::Error&) {
  }
}

void AsyncJob::OnError(const Napi::Error& error) {
  try {
    deferred_.Reject(error.Value());
  } catch (const Napi::Error&) {
  }
}

}  // namespace pa_addon
