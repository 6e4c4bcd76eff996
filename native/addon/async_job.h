// One Node-API AsyncWorker for every async call: the job is plain C++ built on the
// main thread; Execute() runs it on a libuv worker thread without touching V8. The
// arrays the job points into are kept alive until it has finished.
#pragma once

#include <napi.h>

#include <atomic>
#include <functional>
#include <memory>
#include <vector>

#include "addon/convert.h"

namespace pa_addon {

class AsyncJob : public Napi::AsyncWorker {
 public:
  // run() does the work; `result` resolves the Promise; `keep_alive` lists objects
  // (arrays, or objects holding them) the job reads or writes.
  AsyncJob(Napi::Env env, std::function<void()> run, Napi::Value result,
           const std::vector<Napi::Value>& keep_alive);
  ~AsyncJob() override;

  Napi::Promise promise() const { return deferred_.Promise(); }

  void Execute() override;
  void OnOK() override;
  void OnError(const Napi::Error& error) override;

 private:
  std::function<void()> run_;
  Napi::Promise::Deferred deferred_;
  std::vector<Napi::ObjectReference> references_;
  Napi::Reference<Napi::Value> result_;
  PendingError error_;
};

// Queues run() on a worker thread as an AsyncJob (which deletes itself) and returns
// its Promise, resolved with `result`.
Napi::Promise queue_job(Napi::Env env, std::function<void()> run, Napi::Value result,
                        const std::vector<Napi::Value>& keep_alive);

// info[index], optional: a control object; it receives cancel(), which sets the
// returned flag (a queued call then skips its work, a running one stops at its
// next block with an AbortError). Null when no control object was passed.
std::shared_ptr<std::atomic<bool>> install_cancel(const Napi::CallbackInfo& info,
                                                  std::size_t index);

// Async calls queued or running and not yet settled, in this process.
long pending_async_calls();

}  // namespace pa_addon
