// favorAttention / softmaxAttention, sync and async.
//
// Arguments: (q, k, v, out, dims, options[, control]); see attention_job.h. The
// async variants run the job on a libuv worker thread (addon/async_job.h).
#include "addon/attention_bindings.h"

#include <atomic>
#include <memory>
#include <vector>

#include "addon/async_job.h"
#include "addon/attention_job.h"
#include "addon/convert.h"

namespace pa_addon {
namespace {

AttentionJob parse_job(const Napi::CallbackInfo& info, AttentionKind kind) {
  return parse_attention_job(info.Env(), info[0], info[1], info[2], info[3], info[4], info[5],
                             kind);
}

Napi::Value run_sync(const Napi::CallbackInfo& info, AttentionKind kind) {
  const AttentionJob job = parse_job(info, kind);
  run_or_throw(info.Env(), [&] { job.run(); });
  return info[3];
}

Napi::Value run_async(const Napi::CallbackInfo& info, AttentionKind kind) {
  AttentionJob job = parse_job(info, kind);
  std::shared_ptr<std::atomic<bool>> cancel = install_cancel(info, 6);
  job.set_cancel(cancel.get());
  std::vector<Napi::Value> keep{info[0], info[1], info[2], info[3]};
  attention_option_arrays(info[5].As<Napi::Object>(), &keep);
  return queue_job(info.Env(), [job, cancel] { job.run(); }, info[3], keep);
}

Napi::Value favor_sync(const Napi::CallbackInfo& info) {
  return run_sync(info, AttentionKind::kFavor);
}
Napi::Value favor_async(const Napi::CallbackInfo& info) {
  return run_async(info, AttentionKind::kFavor);
}
Napi::Value softmax_sync(const Napi::CallbackInfo& info) {
  return run_sync(info, AttentionKind::kSoftmax);
}
Napi::Value softmax_async(const Napi::CallbackInfo& info) {
  return run_async(info, AttentionKind::kSoftmax);
}

}  // namespace

void register_attention_bindings(Napi::Env env, Napi::Object exports) {
  export_functions(env, exports,
                   {{"favorAttentionSync", favor_sync},
                    {"favorAttentionAsync", favor_async},
                    {"softmaxAttentionSync", softmax_sync},
                    {"softmaxAttentionAsync", softmax_async}});
}

}  // namespace pa_addon
