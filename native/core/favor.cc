#include "core/favor.h"

#include <algorithm>
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "core/adaptive_features.h"
#include "core/favor_worker.h"
#include "core/memory.h"

namespace pa {
namespace {

using favor_internal::FavorWorker;
using favor_internal::StateLayout;
using favor_internal::StateView;

// A head is split into parts (key ranges, query ranges, causal segments) only
// when there are fewer than kSplitUnits heads (kCausalSplitUnits when causal),
// and never below this many rows a part. The split depends on the problem size
// only, never on the pool size: merging partial states is not associative in
// float32, so a thread-count dependent split would make the bits depend on the
// machine. A causal split costs work: segment p first absorbs the keys of segment
// p - 1 again (about a fifth more arithmetic at two parts), which only pays where
// the heads alone leave cores idle; 8 heads keep 8 cores busy unsplit.
constexpr std::size_t kMinRowsPerPart = 256;
constexpr std::size_t kSplitUnits = 16;
constexpr std::size_t kCausalSplitUnits = 8;

// Splits [begin, end) into `parts` nearly equal ranges; returns range `p`.
std::pair<std::size_t, std::size_t> part_range(std::size_t begin, std::size_t end,
                                               std::size_t parts, std::size_t p) {
  const std::size_t n = end - begin;
  return {begin + n * p / parts, begin + n * (p + 1) / parts};
}

}  // namespace

void check_favor_numbers(const FavorOptions& options) {
  if (!(options.epsilon >= 0.0f) || !std::isfinite(options.epsilon)) {
    throw InputError("epsilon must be a finite number >= 0");
  }
  if (options.causal && (options.chunk_size < 1 || options.chunk_size > kMaxChunkSize)) {
    throw InputError("chunkSize must be between 1 and " + std::to_string(kMaxChunkSize));
  }
}

void favor_attention(const AttentionDims& dims, const float* q, const float* k, const float* v,
                     float* out, const FavorOptions& options, const KernelSet& kernels,
                     ThreadPool& pool) {
  const FeatureMapSpec& fm = options.feature_map;
  if (fm.head_dim != dims.head_dim)
    throw InputError("feature map head dimension does not match the query");
  check_favor_numbers(options);
  if (options.state != nullptr && (!options.causal || dims.q_len != dims.k_len)) {
    throw InputError(
        "a decoding state continues causal self-attention: causal must be set and query and key lengths equal");
  }
  const bool absorb_only = options.absorb_into != nullptr,
             emit_only = options.keys_state != nullptr;
  if (absorb_only || emit_only) {
    if (absorb_only && emit_only) throw InputError("absorb_into and keys_state exclude each other");
    if (options.causal || options.state != nullptr) {
      throw InputError(
          "absorb_into / keys_state split bidirectional attention: causal and state must be unset");
    }
    if (absorb_only && dims.q_len != 0)
      throw InputError("absorb_into absorbs keys only: the query length must be 0");
    if (emit_only && dims.k_len != 0)
      throw InputError("keys_state holds the keys: the key length must be 0");
    if (fm.is_adaptive() && fm.adaptive_heads == 0) {
      throw InputError(
          "softmax-opt / softmax-dense attention split into absorbing keys and emitting queries needs fixed parameters: "
          "estimating them from one half would give the halves different features");
    }
  }
  if (options.epsilon != 0.0f && fm.is_signed()) {
    throw InputError("epsilon applies to positive feature maps; trig features are signed");
  }
  check_cancel(options.cancel);
  const InputStats stats = scan_inputs(dims, q, k, v, pool);
  // log-features hold ||x_hat||^2 / 2 in float32: keep it far from overflow.
  const double normalizer2 = 1.0 / std::sqrt(static_cast<double>(dims.head_dim));
  if (std::max(stats.max_query_norm2, stats.max_key_norm2) * normalizer2 > 1e30) {
    throw InputError("query/key: squared row norms above 1e30 overflow the feature map in float32");
  }
  check_value_magnitude(dims, stats);

  const std::size_t heads = dims.batch * dims.heads;
  // Adaptive kernels: one feature map per (batch, head), from fixed parameters or
  // estimated here from that head's queries and attended keys.
  std::vector<HeadFeatures> head_maps;
  std::vector<std::unique_ptr<FeatureEvaluator>> evaluators;
  if (fm.is_adaptive()) {
    if (fm.projection == nullptr) throw InputError("adaptive features need a projection");
    if (fm.adaptive_heads == 0 && options.causal) {
      throw InputError(
          "causal attention with softmax-opt / softmax-dense needs fixed parameters (calibrate on a prefix or set them): "
          "estimating them from the call would let a row depend on keys it cannot attend");
    }
    if (fm.adaptive_heads != 0 && fm.adaptive_heads != 1 && fm.adaptive_heads != dims.heads) {
      throw InputError("adaptive parameters: expected 1 set or one per head (" +
                       std::to_string(dims.heads) + "), received " +
                       std::to_string(fm.adaptive_heads));
    }
    std::vector<AdaptiveParams> fixed;
    for (std::size_t h = 0; h < fm.adaptive_heads; ++h) fixed.push_back(fixed_params(fm, h));
    // Fixed parameters: one feature map per set, shared by the heads that use it.
    const std::size_t maps = fixed.empty() ? heads : fixed.size();
    head_maps.resize(maps);
    const bool dense = fm.kernel == Kernel::kSoftmaxDense;
    pool.parallel_for(maps, 1, [&](std::size_t begin, std::size_t end, std::size_t) {
      PairMoments moments;
      for (std::size_t h = begin; h < end; ++h) {
        if (!fixed.empty()) {
          prepare_head(fm, fixed[h], kernels, &head_maps[h]);
          continue;
        }
        moments.init(dims.head_dim, dense);
        moments.add(q + h * dims.q_len * dims.head_dim, dims.q_len, false, nullptr, kernels);
        const std::uint8_t* pad =
            options.key_padding ? options.key_padding + (h / dims.heads) * dims.k_len : nullptr;
        moments.add(k + h * dims.k_len * dims.head_dim, dims.k_len, true, pad, kernels);
        AdaptiveParams params;
        if (moments.count_k == 0) {
          params.a.assign(dims.head_dim, 0.0);  // no key attends: every row is zero anyway
        } else {
          params = params_from_moments(moments, dense);
        }
        prepare_head(fm, params, kernels, &head_maps[h]);
      }
    });
    for (const HeadFeatures& map : head_maps)
      evaluators.push_back(std::make_unique<FeatureEvaluator>(map.spec, kernels));
  }
  const std::size_t sets = fm.is_adaptive() ? fm.adaptive_heads : 0;
  const FeatureEvaluator features(fm.is_adaptive() ? head_maps[0].spec : fm, kernels);
  auto evaluator_of = [&](std::size_t h) -> const FeatureEvaluator& {
    if (evaluators.empty()) return features;
    if (sets == 0) return *evaluators[h];                // estimated per (batch, head)
    return *evaluators[sets == 1 ? 0 : h % dims.heads];  // fixed set of head h
  };
  const std::size_t Lq = dims.q_len, Lk = dims.k_len, d = dims.head_dim, Dv = dims.value_dim;
  // Causal geometry: query i sees keys j <= i + offset (bottom-right aligned);
  // the first `blind` queries see none, the first `prefix` keys every query sees.
  const long long offset = static_cast<long long>(Lk) - static_cast<long long>(Lq);
  const std::size_t prefix = offset > 0 ? static_cast<std::size_t>(offset) : 0;
  const std::size_t blind = offset < 0 ? std::min(Lq, static_cast<std::size_t>(-offset)) : 0;

  // Parts per head: about split_units units of work when heads are few.
  const std::size_t rows = options.causal ? Lq - blind
                           : absorb_only  ? Lk
                           : emit_only    ? Lq
                                          : std::min(Lq, Lk);
  const std::size_t split_units = options.causal ? kCausalSplitUnits : kSplitUnits;
  std::size_t parts = heads >= split_units ? 1 : (split_units + heads - 1) / heads;
  parts = std::max<std::size_t>(1, std::min(parts, rows / kMinRowsPerPart));

  const StateLayout layout{features.feature_count(), Dv};
  PooledBuffer states(heads * parts * layout.floats());
  auto state = [&](std::size_t h, std::size_t p) {
    return layout.view(states.data() + (h * parts + p) * layout.floats());
  };
  auto pad_of = [&](std::size_t h) {
    return options.key_padding ? options.key_padding + (h / dims.heads) * Lk : nullptr;
  };
  std::vector<std::unique_ptr<FavorWorker>> workers(pool.size());
  auto worker = [&](std::size_t slot) -> FavorWorker& {
    if (!workers[slot])
      workers[slot] = std::make_unique<FavorWorker>(dims, options, features, kernels);
    return *workers[slot];
  };
  // Runs body(head, part, worker) for every (head, part) on the pool.
  // Units too small to be worth waking a thread for (a decoding step: one row per
  // head) run together; which thread runs a unit never changes its bits.
  const std::size_t unit_work =
      std::max<std::size_t>(1, rows / parts) * features.feature_count() * (d + Dv);
  const std::size_t grain = std::max<std::size_t>(1, kMinWorkPerPiece / unit_work);
  auto for_each_part = [&](std::size_t count, const auto& body) {
    pool.parallel_for(heads * count, grain,
                      [&](std::size_t begin, std::size_t end, std::size_t slot) {
                        for (std::size_t u = begin; u < end; ++u)
                          body(u / count, u % count, worker(slot));
                      });
  };
  const float* qh = q;
  const float* kh = k;
  const float* vh = v;
  auto q_of = [&](std::size_t h) { return qh + h * Lq * d; };
  auto k_of = [&](std::size_t h) { return kh + h * Lk * d; };
  auto v_of = [&](std::size_t h) { return vh + h * Lk * Dv; };
  auto out_of = [&](std::size_t h) { return out + h * Lq * Dv; };

  if (!options.causal) {
    const std::size_t floats = layout.floats();
    if (emit_only) {
      // The caller's states are only read (emit leaves a state as it is).
      for_each_part(parts, [&](std::size_t h, std::size_t p, FavorWorker& w) {
        w.use(evaluator_of(h));
        const StateView st = layout.view(const_cast<float*>(options.keys_state) + h * floats);
        const auto range = part_range(0, Lq, parts, p);
        w.emit(st, q_of(h), out_of(h), range.first, range.second);
      });
      return;
    }
    // Padding included: the states handed back compare bitwise.
    if (absorb_only) std::fill(states.data(), states.data() + heads * parts * floats, 0.0f);
    // Copies the absorbed states out once every head is done (a cancelled call
    // leaves the caller's states as they were).
    auto hand_back = [&] {
      for (std::size_t h = 0; h < heads; ++h) {
        const float* src = state(h, 0).s;  // s comes first in the layout
        std::copy(src, src + floats, options.absorb_into + h * floats);
      }
    };
    if (parts == 1) {
      for_each_part(1, [&](std::size_t h, std::size_t, FavorWorker& w) {
        w.use(evaluator_of(h));
        const StateView st = state(h, 0);
        layout.reset(st);
        w.absorb(st, k_of(h), v_of(h), pad_of(h), 0, Lk);
        if (!absorb_only) w.emit(st, q_of(h), out_of(h), 0, Lq);
      });
      if (absorb_only) hand_back();
      return;
    }
    // Key ranges into partial states, merged per head, then query ranges.
    for_each_part(parts, [&](std::size_t h, std::size_t p, FavorWorker& w) {
      w.use(evaluator_of(h));
      const StateView st = state(h, p);
      layout.reset(st);
      const auto range = part_range(0, Lk, parts, p);
      w.absorb(st, k_of(h), v_of(h), pad_of(h), range.first, range.second);
    });
    for_each_part(1, [&](std::size_t h, std::size_t, FavorWorker&) {
      for (std::size_t p = 1; p < parts; ++p) layout.merge(state(h, 0), state(h, p));
    });
    if (absorb_only) return hand_back();
    for_each_part(parts, [&](std::size_t h, std::size_t p, FavorWorker& w) {
      w.use(evaluator_of(h));
      const auto range = part_range(0, Lq, parts, p);
      w.emit(state(h, 0), q_of(h), out_of(h), range.first, range.second);
    });
    return;
  }

  for (std::size_t h = 0; h < heads; ++h) std::fill(out_of(h), out_of(h) + blind * Dv, 0.0f);
  // A caller's decoding state is copied in and out (its memory need not be aligned,
  // and it stays untouched when the call throws).
  const std::size_t user_floats = layout.floats();
  auto start = [&](std::size_t h, const StateView& st) {
    if (options.state == nullptr) {
      layout.reset(st);
    } else {
      const float* src = options.state + h * user_floats;
      std::copy(src, src + user_floats, st.s);  // s comes first in the layout
    }
  };
  auto finish = [&](std::size_t h, const StateView& st) {
    if (options.state == nullptr) return;
    const float* src = st.s;
    std::copy(src, src + user_floats, options.state + h * user_floats);
  };
  // An uncancellable single-part call has checked its inputs already: past this
  // point only a failed scratch allocation could throw, so it advances the caller's
  // states in place (a decoding step then copies nothing).
  const bool in_place = options.state != nullptr && options.cancel == nullptr && parts == 1;
  if (in_place) {
    for_each_part(1, [&](std::size_t h, std::size_t, FavorWorker& w) {
      w.use(evaluator_of(h));
      const StateView st = layout.view(options.state + h * user_floats);
      w.causal(st, q_of(h), k_of(h), v_of(h), out_of(h), pad_of(h), blind, Lq, offset);
    });
    return;
  }
  if (parts == 1) {
    for_each_part(1, [&](std::size_t h, std::size_t, FavorWorker& w) {
      w.use(evaluator_of(h));
      const StateView st = state(h, 0);
      start(h, st);
      w.absorb(st, k_of(h), v_of(h), pad_of(h), 0, prefix);
      w.causal(st, q_of(h), k_of(h), v_of(h), out_of(h), pad_of(h), blind, Lq, offset);
    });
    // Only once every head has finished: a cancelled call leaves the states as they were.
    for (std::size_t h = 0; h < heads && options.state != nullptr; ++h) finish(h, state(h, 0));
    return;
  }
  // Segments of queries: state p first holds the keys of segment p - 1 (state 0
  // the prefix keys); a prefix combine then makes it hold every key before
  // segment p, and the segments run in parallel from there.
  auto key_index = [&](std::size_t i) {
    return static_cast<std::size_t>(static_cast<long long>(i) + offset);
  };
  for_each_part(parts, [&](std::size_t h, std::size_t p, FavorWorker& w) {
    w.use(evaluator_of(h));
    const StateView st = state(h, p);
    if (p == 0) {
      start(h, st);
      w.absorb(st, k_of(h), v_of(h), pad_of(h), 0, prefix);
    } else {
      layout.reset(st);
      const auto range = part_range(blind, Lq, parts, p - 1);
      w.absorb(st, k_of(h), v_of(h), pad_of(h), key_index(range.first), key_index(range.second));
    }
  });
  for_each_part(1, [&](std::size_t h, std::size_t, FavorWorker&) {
    for (std::size_t p = 1; p < parts; ++p) layout.merge(state(h, p), state(h, p - 1));
  });
  for_each_part(parts, [&](std::size_t h, std::size_t p, FavorWorker& w) {
    w.use(evaluator_of(h));
    const auto range = part_range(blind, Lq, parts, p);
    w.causal(state(h, p), q_of(h), k_of(h), v_of(h), out_of(h), pad_of(h), range.first,
             range.second, offset);
  });
  // The last segment's state has absorbed every key.
  for (std::size_t h = 0; h < heads && options.state != nullptr; ++h)
    finish(h, state(h, parts - 1));
}

std::size_t favor_state_floats(std::size_t feature_count, std::size_t value_dim) {
  return StateLayout{feature_count, value_dim}.floats();
}

void favor_state_reset(float* state, std::size_t heads, std::size_t feature_count,
                       std::size_t value_dim) {
  const StateLayout layout{feature_count, value_dim};
  for (std::size_t h = 0; h < heads; ++h) {
    float* base = state + h * layout.floats();
    std::fill(base, base + layout.floats(),
              0.0f);  // padding too: serialized states compare bitwise
    layout.reset(layout.view(base));
  }
}

}  // namespace pa
