// One attention call (FAVOR or exact softmax) as a plain C++ job: converted from
// JavaScript arguments on the main thread, run anywhere. Used by the attention
// functions and by the layer plans.
#pragma once

#include <napi.h>

#include <atomic>
#include <memory>

#include "core/favor.h"
#include "core/softmax_attention.h"
#include "core/thread_pool.h"
#include "kernels/kernels.h"

namespace pa_addon {

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

  // Makes the drivers check `flag` between blocks.
  void set_cancel(const std::atomic<bool>* flag) {
    favor.cancel = flag;
    softmax.cancel = flag;
  }
  void run() const;
};

// Arguments (validated in TypeScript; checked here only for types and lengths, the
// core checks the ranges): q, k, v, out: Float32Array; dims: { batch, heads,
// queryLength, keyLength, headDim, valueDim }; options: feature map spec and causal,
// keyPadding, epsilon, chunkSize, state (FAVOR) or causal, keyPadding, scale (softmax).
// epsilon, chunkSize and scale are required: their defaults are TypeScript's.
AttentionJob parse_attention_job(Napi::Env env, const Napi::Value& q, const Napi::Value& k,
                                 const Napi::Value& v, const Napi::Value& out,
                                 const Napi::Value& dims, const Napi::Value& options,
                                 AttentionKind kind);

// The objects of `options` an async job must keep alive (masks, projections, state).
void attention_option_arrays(const Napi::Object& options, std::vector<Napi::Value>* keep_alive);

}  // namespace pa_addon
