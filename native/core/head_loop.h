// The outer loop of exact attention: (batch, head) pairs, each cut into independent
// parts, spread over the thread pool, each pool slot with its own scratch object made
// once per call.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "core/attention_common.h"
#include "core/thread_pool.h"

namespace pa {

// Calls head.run(q, k, v, out, padding, part) with the pointers of each pair, for
// each part in [0, parts): a pair's work cut into pieces that do not depend on each
// other, so that a few heads still fill the pool and a core slowed by its neighbours
// takes fewer pieces. `make` returns a std::unique_ptr<Head> holding that slot's scratch.
template <typename Head, typename Make>
void run_heads(ThreadPool& pool, const AttentionDims& dims, std::size_t parts, const float* q,
               const float* k, const float* v, float* out, const std::uint8_t* key_padding,
               Make make) {
  std::vector<std::unique_ptr<Head>> heads(pool.size());
  pool.parallel_for(dims.batch * dims.heads * parts, 1,
                    [&](std::size_t begin, std::size_t end, std::size_t slot) {
                      if (!heads[slot]) heads[slot] = make();
                      for (std::size_t u = begin; u < end; ++u) {
                        const std::size_t p = u / parts;
                        const std::uint8_t* pad =
                            key_padding ? key_padding + (p / dims.heads) * dims.k_len : nullptr;
                        heads[slot]->run(q + p * dims.q_len * dims.head_dim,
                                         k + p * dims.k_len * dims.head_dim,
                                         v + p * dims.k_len * dims.value_dim,
                                         out + p * dims.q_len * dims.value_dim, pad, u % parts);
                      }
                    });
}

}  // namespace pa
