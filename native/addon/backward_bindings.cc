// favorAttentionBackward / softmaxAttentionBackward, sync and async.
//
// Arguments: (q, k, v, gradOut, grads, dims, options[, control]) where grads is
// { query, key, value[, projection] } (Float32Arrays the gradients are written to) and
// q, k, v, dims and options are as for the forward calls (attention_job.h; gradOut has
// the output's shape). Returns grads (the Promise resolves to it).
#include "addon/backward_bindings.h"

#include <atomic>
#include <memory>
#include <vector>

#include "addon/async_job.h"
#include "addon/attention_job.h"
#include "addon/convert.h"
#include "addon/plan_context.h"
#include "core/favor_backward.h"
#include "core/softmax_attention_backward.h"

namespace pa_addon {
namespace {

struct BackwardJob {
  AttentionJob job;  // its `out` is the output gradient
  float* dq = nullptr;
  float* dk = nullptr;
  float* dv = nullptr;
  float* dprojection = nullptr;

  void run() const {
    if (job.kind == AttentionKind::kFavor) {
      pa::favor_attention_backward(job.dims, job.q, job.k, job.v, job.out, job.favor,
                                   {dq, dk, dv, dprojection}, *job.kernels, *job.pool);
    } else {
      pa::softmax_attention_backward(job.dims, job.q, job.k, job.v, job.out, job.softmax,
                                     {dq, dk, dv}, *job.kernels, *job.pool);
    }
  }
};

bool overlaps(const float* a, std::size_t na, const float* b, std::size_t nb) {
  return a < b + nb && b < a + na;
}

float* gradient_array(Napi::Env env, const Napi::Object& grads, const char* key,
                      std::size_t expected) {
  const FloatView view = float32_array(grads.Get(key), key);
  if (view.length != expected) {
    throw_range_error(env, std::string("gradient ") + key + ": expected " +
                               std::to_string(expected) + " elements, received " +
                               std::to_string(view.length));
  }
  return view.data;
}

BackwardJob parse_backward(const Napi::CallbackInfo& info, AttentionKind kind) {
  Napi::Env env = info.Env();
  BackwardJob b;
  b.job = parse_attention_job(env, info[0], info[1], info[2], info[3], info[5], info[6], kind);
  if (!info[4].IsObject()) throw_type_error(env, "grads: expected an object");
  const Napi::Object grads = info[4].As<Napi::Object>();
  const pa::AttentionDims& d = b.job.dims;
  const std::size_t bh = checked_mul(env, d.batch, d.heads);
  const std::size_t nq = checked_mul(env, checked_mul(env, bh, d.q_len), d.head_dim);
  const std::size_t nk = checked_mul(env, checked_mul(env, bh, d.k_len), d.head_dim);
  const std::size_t nv = checked_mul(env, checked_mul(env, bh, d.k_len), d.value_dim);
  const std::size_t ng = checked_mul(env, checked_mul(env, bh, d.q_len), d.value_dim);
  b.dq = gradient_array(env, grads, "query", nq);
  b.dk = gradient_array(env, grads, "key", nk);
  b.dv = gradient_array(env, grads, "value", nv);
  std::size_t np = 0;
  const Napi::Value projection = grads.Get("projection");
  if (!projection.IsUndefined() && !projection.IsNull()) {
    if (kind != AttentionKind::kFavor)
      throw_range_error(env, "grads.projection: softmax attention has no projection");
    np = checked_mul(env, b.job.favor.feature_map.num_projections, d.head_dim);
    b.dprojection = gradient_array(env, grads, "projection", np);
  }
  // Every gradient is written while every input is read: none may share memory.
  const std::vector<std::pair<const float*, std::size_t>> inputs{
      {b.job.q, nq}, {b.job.k, nk}, {b.job.v, nv}, {b.job.out, ng}};
  const std::vector<std::pair<const float*, std::size_t>> outputs{
      {b.dq, nq}, {b.dk, nk}, {b.dv, nv}, {b.dprojection, np}};
  for (std::size_t i = 0; i < outputs.size(); ++i) {
    if (outputs[i].first == nullptr) continue;
    for (const auto& in : inputs) {
      if (overlaps(outputs[i].first, outputs[i].second, in.first, in.second))
        throw_range_error(env, "grads: overlap an input");
    }
    for (std::size_t j = i + 1; j < outputs.size(); ++j) {
      if (outputs[j].first != nullptr &&
          overlaps(outputs[i].first, outputs[i].second, outputs[j].first, outputs[j].second)) {
        throw_range_error(env, "grads: overlap each other");
      }
    }
  }
  return b;
}

Napi::Value run_sync(const Napi::CallbackInfo& info, AttentionKind kind) {
  const BackwardJob b = parse_backward(info, kind);
  run_or_throw(info.Env(), [&] { b.run(); });
  return info[4];
}

Napi::Value run_async(const Napi::CallbackInfo& info, AttentionKind kind) {
  BackwardJob b = parse_backward(info, kind);
  std::shared_ptr<std::atomic<bool>> cancel = install_cancel(info, 7);
  b.job.set_cancel(cancel.get());
  std::vector<Napi::Value> keep{info[0], info[1], info[2], info[3], info[4]};
  const Napi::Object grads = info[4].As<Napi::Object>();
  for (const char* key : {"query", "key", "value", "projection"}) keep.push_back(grads.Get(key));
  attention_option_arrays(info[6].As<Napi::Object>(), &keep);
  return queue_job(info.Env(), [b, cancel] { b.run(); }, info[4], keep);
}

// Plan steps favorBackward / softmaxBackward: q, k, v, gradOut, dq, dk, dv, dims, options
// (as the forward steps)[, dprojection][, label].
Step parse_backward_step(const PlanContext& ctx, const Napi::Object& s, AttentionKind kind) {
  Napi::Env env = ctx.env;
  BackwardJob b;
  b.job = parse_attention_job(env, s.Get("q"), s.Get("k"), s.Get("v"), s.Get("gradOut"),
                              s.Get("dims"), s.Get("options"), kind);
  b.job.set_cancel(ctx.cancel);
  if (ctx.arrays != nullptr) {
    for (const char* key : {"q", "k", "v", "gradOut"}) ctx.arrays->push_back(s.Get(key));
    attention_option_arrays(s.Get("options").As<Napi::Object>(), ctx.arrays);
  }
  const pa::AttentionDims& d = b.job.dims;
  const std::size_t bh = checked_mul(env, d.batch, d.heads);
  b.dq = float_field(ctx, s, "dq", checked_mul(env, checked_mul(env, bh, d.q_len), d.head_dim));
  b.dk = float_field(ctx, s, "dk", checked_mul(env, checked_mul(env, bh, d.k_len), d.head_dim));
  b.dv = float_field(ctx, s, "dv", checked_mul(env, checked_mul(env, bh, d.k_len), d.value_dim));
  if (kind == AttentionKind::kFavor) {
    const Napi::Value projection = s.Get("dprojection");
    if (!projection.IsUndefined() && !projection.IsNull()) {
      b.dprojection =
          float_field(ctx, s, "dprojection",
                      checked_mul(env, b.job.favor.feature_map.num_projections, d.head_dim));
    }
  }
  return labelled(s, [b] { b.run(); });
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

bool parse_attention_backward_step(const PlanContext& ctx, const std::string& op,
                                   const Napi::Object& step, std::vector<Step>* steps) {
  if (op == "favorBackward") {
    steps->push_back(parse_backward_step(ctx, step, AttentionKind::kFavor));
  } else if (op == "softmaxBackward") {
    steps->push_back(parse_backward_step(ctx, step, AttentionKind::kSoftmax));
  } else {
    return false;
  }
  return true;
}

void register_backward_bindings(Napi::Env env, Napi::Object exports) {
  export_functions(env, exports,
                   {{"favorAttentionBackwardSync", favor_sync},
                    {"favorAttentionBackwardAsync", favor_async},
                    {"softmaxAttentionBackwardSync", softmax_sync},
                    {"softmaxAttentionBackwardAsync", softmax_async}});
}

}  // namespace pa_addon
