// FAVOR drivers against the double-precision reference, on every kernel set.
#include <cstdio>
#include <cstring>
#include <vector>

#include "attention_reference.h"
#include "core/favor.h"
#include "core/orthogonal.h"
#include "kernels/dispatch.h"
#include "test_harness.h"
#include "test_util.h"

namespace {

using pa_test::throws_input_error;

struct Case {
  std::size_t Lq, Lk, d, Dv, m;
  double sigma;
  bool causal, padded;
  std::size_t chunk;
};

void check_case(const Case& t, const pa::KernelSet& kernels, pa::ThreadPool& pool) {
  const std::size_t B = 2, H = 2;
  pa::AttentionDims dims{B, H, t.Lq, t.Lk, t.d, t.Dv};
  const auto q = pa_test::gaussian(B * H * t.Lq * t.d, t.sigma, 1);
  const auto k = pa_test::gaussian(B * H * t.Lk * t.d, t.sigma, 2);
  const auto v = pa_test::gaussian(B * H * t.Lk * t.Dv, 1.0, 3);
  std::vector<float> w(t.m * t.d);
  pa::ProjectionSpec spec;
  spec.num_features = t.m;
  spec.head_dim = t.d;
  spec.seed = 4;
  pa::sample_projection(spec, pa::kScalarKernels, w.data());
  std::vector<std::uint8_t> pad(B * t.Lk, 1);
  if (t.padded) {
    for (std::size_t j = 0; j < t.Lk; j += 3) pad[j] = 0;      // every third key of item 0
    for (std::size_t j = 0; j < t.Lk; ++j) pad[t.Lk + j] = 0;  // item 1: no key at all
  }
  pa::FavorOptions options;
  options.feature_map.head_dim = t.d;
  options.feature_map.num_projections = t.m;
  options.feature_map.projection = w.data();
  options.causal = t.causal;
  options.key_padding = t.padded ? pad.data() : nullptr;
  options.chunk_size = t.chunk;
  std::vector<float> out(B * H * t.Lq * t.Dv, -1.0f);
  pa::favor_attention(dims, q.data(), k.data(), v.data(), out.data(), options, kernels, pool);
  for (std::size_t p = 0; p < B * H; ++p) {
    const std::size_t b = p / H;
    const auto want = pa_test::favor_reference(&q[p * t.Lq * t.d], &k[p * t.Lk * t.d],
                                               &v[p * t.Lk * t.Dv], t.Lq, t.Lk, t.d, t.Dv, w.data(),
                                               t.m, t.causal, t.padded ? &pad[b * t.Lk] : nullptr);
    const std::vector<float> got(out.begin() + p * t.Lq * t.Dv,
                                 out.begin() + (p + 1) * t.Lq * t.Dv);
    bool all_zero_expected = true;
    for (double x : want) all_zero_expected = all_zero_expected && x == 0.0;
    if (all_zero_expected) {
      for (float x : got) CHECK(x == 0.0f);
    } else {
      const double err = pa_test::relative_frobenius(got, want);
      if (!(err < 2e-5)) {
        std::fprintf(
            stderr,
            "  [%s] Lq=%zu Lk=%zu d=%zu m=%zu sigma=%g causal=%d chunk=%zu pair=%zu: err %.3g\n",
            kernels.name, t.Lq, t.Lk, t.d, t.m, t.sigma, t.causal, t.chunk, p, err);
      }
      CHECK(err < 2e-5);
    }
  }
}

}  // namespace

TEST("favor/bidirectional and causal equal the double reference on every kernel set") {
  pa::ThreadPool pool(2);
  const Case cases[] = {
      {33, 33, 16, 16, 40, 1.0, false, false, 64},
      {70, 50, 8, 5, 24, 1.0, false, true, 64},
      {65, 65, 16, 16, 32, 1.0, true, false, 64},
      {65, 65, 16, 16, 32, 1.0, true, false, 1},
      {65, 65, 16, 16, 32, 1.0, true, false, 7},
      {40, 65, 16, 9, 32, 1.0, true, true, 16},
      {65, 40, 16, 9, 32, 1.0, true, false, 16},
      {1, 1, 1, 1, 1, 1.0, true, false, 64},
      {130, 130, 32, 32, 64, 8.0, false, false, 64},
      {130, 130, 32, 32, 64, 8.0, true, false, 64},
      // Chunks of 19 rows (bands of 9 and 10, odd) and 15 (one band), padded keys.
      {60, 60, 16, 16, 32, 1.0, true, true, 19},
      {60, 60, 16, 16, 32, 1.0, true, true, 15},
  };
  for (const pa::KernelSet* kernels : pa::available_kernel_sets()) {
    for (const Case& t : cases) check_case(t, *kernels, pool);
  }
}

namespace {

struct SplitCase {
  pa::Kernel kernel;
  std::size_t Lq, Lk;
  float epsilon;
  bool padded;
};

// Keys absorbed into states once (absorb_into), queries emitted against them
// (keys_state): the same outputs as the bidirectional call on queries and keys.
void check_split(const SplitCase& t, const pa::KernelSet& kernels, pa::ThreadPool& pool) {
  const std::size_t B = 2, H = 2, d = 8, Dv = 6, m = 24;
  const auto q = pa_test::gaussian(B * H * t.Lq * d, 1.0, 11);
  const auto k = pa_test::gaussian(B * H * t.Lk * d, 1.0, 12);
  const auto v = pa_test::gaussian(B * H * t.Lk * Dv, 1.0, 13);
  std::vector<float> w(m * d);
  pa::ProjectionSpec spec;
  spec.num_features = m;
  spec.head_dim = d;
  spec.seed = 14;
  pa::sample_projection(spec, pa::kScalarKernels, w.data());
  std::vector<std::uint8_t> pad(B * t.Lk, 1);
  if (t.padded) {
    for (std::size_t j = 1; j < t.Lk; j += 3) pad[j] = 0;
    for (std::size_t j = 0; j < t.Lk; ++j) pad[t.Lk + j] = 0;  // item 1 attends no key
  }
  // Fixed adaptive parameters (one set shared by the heads).
  std::vector<double> a(d), basis(d * d, 0.0);
  for (std::size_t i = 0; i < d; ++i) a[i] = 0.01 * static_cast<double>(i) - 0.03;
  for (std::size_t i = 0; i < d; ++i)
    basis[i * d + (i + 1) % d] = 1.0;  // a permutation: orthogonal
  pa::FavorOptions options;
  options.feature_map.kernel = t.kernel;
  options.feature_map.head_dim = d;
  options.feature_map.num_projections = m;
  options.feature_map.projection = w.data();
  if (options.feature_map.is_adaptive()) {
    options.feature_map.adaptive_heads = 1;
    options.feature_map.adaptive_a = a.data();
    options.feature_map.adaptive_basis = basis.data();
  }
  options.key_padding = t.padded ? pad.data() : nullptr;
  options.epsilon = t.epsilon;
  std::vector<float> want(B * H * t.Lq * Dv, -1.0f);
  pa::favor_attention(pa::AttentionDims{B, H, t.Lq, t.Lk, d, Dv}, q.data(), k.data(), v.data(),
                      want.data(), options, kernels, pool);

  const std::size_t floats = pa::favor_state_floats(options.feature_map.feature_count(), Dv);
  std::vector<float> states(B * H * floats, 7.0f), again(B * H * floats, -7.0f);
  pa::FavorOptions absorb = options;
  absorb.absorb_into = states.data();
  pa::favor_attention(pa::AttentionDims{B, H, 0, t.Lk, d, Dv}, nullptr, k.data(), v.data(), nullptr,
                      absorb, kernels, pool);
  absorb.absorb_into = again.data();
  pa::favor_attention(pa::AttentionDims{B, H, 0, t.Lk, d, Dv}, nullptr, k.data(), v.data(), nullptr,
                      absorb, kernels, pool);
  CHECK(std::memcmp(states.data(), again.data(), states.size() * sizeof(float)) ==
        0);  // padding included

  pa::FavorOptions emit = options;
  emit.key_padding = nullptr;
  emit.keys_state = states.data();
  const std::vector<float> kept = states;
  std::vector<float> got(want.size(), -1.0f);
  pa::favor_attention(pa::AttentionDims{B, H, t.Lq, 0, d, Dv}, q.data(), nullptr, nullptr,
                      got.data(), emit, kernels, pool);
  CHECK(std::memcmp(states.data(), kept.data(), states.size() * sizeof(float)) ==
        0);  // emit absorbs nothing
  for (std::size_t p = 0; p < B * H; ++p) {
    const std::vector<float> g(got.begin() + p * t.Lq * Dv, got.begin() + (p + 1) * t.Lq * Dv);
    const std::vector<double> w_rows(want.begin() + p * t.Lq * Dv,
                                     want.begin() + (p + 1) * t.Lq * Dv);
    bool zero = true;
    for (double x : w_rows) zero = zero && x == 0.0;
    if (zero) {
      for (float x : g) CHECK(x == 0.0f);
      continue;
    }
    const double err = pa_test::relative_frobenius(g, w_rows);
    if (!(err < 1e-5)) {
      std::fprintf(stderr, "  [%s] kernel=%d Lq=%zu Lk=%zu eps=%g pair=%zu: err %.3g\n",
                   kernels.name, static_cast<int>(t.kernel), t.Lq, t.Lk, t.epsilon, p, err);
    }
    CHECK(err < 1e-5);
  }
}

}  // namespace

TEST("favor/absorb_into then keys_state equals the bidirectional call on every kernel set") {
  pa::ThreadPool pool(2);
  using K = pa::Kernel;
  const SplitCase cases[] = {
      {K::kSoftmax, 1, 50, 0.0f, true},
      {K::kSoftmax, 70, 600, 0.0f, true},  // 600 keys: absorbed in parts
      {K::kSoftmax, 3, 600, 0.05f, true},
      {K::kSoftmaxHyperbolic, 5, 90, 0.0f, false},
      {K::kTrig, 4, 70, 0.0f, true},
      {K::kRelu, 2, 65, 0.01f, true},
      {K::kSoftmaxOpt, 6, 300, 0.0f, true},
      {K::kSoftmaxDense, 6, 130, 0.02f, false},
  };
  for (const pa::KernelSet* kernels : pa::available_kernel_sets()) {
    for (const SplitCase& t : cases) check_split(t, *kernels, pool);
  }
}

TEST("favor/absorb_into and keys_state reject what they cannot split") {
  pa::ThreadPool pool(1);
  const std::size_t m = 8, d = 4, L = 5;
  std::vector<float> w(m * d, 0.25f), q(L * d, 0.1f), k(L * d, 0.2f), v(L, 1.0f), out(L);
  pa::FavorOptions options;
  options.feature_map.head_dim = d;
  options.feature_map.num_projections = m;
  options.feature_map.projection = w.data();
  std::vector<float> states(pa::favor_state_floats(m, 1), 3.0f);
  const std::vector<float> before = states;
  auto absorb = [&](std::size_t q_len, const pa::FavorOptions& o) {
    pa::FavorOptions with = o;
    with.absorb_into = states.data();
    pa::favor_attention(pa::AttentionDims{1, 1, q_len, L, d, 1}, q.data(), k.data(), v.data(),
                        out.data(), with, pa::kScalarKernels, pool);
  };
  auto emit = [&](std::size_t k_len, const pa::FavorOptions& o) {
    pa::FavorOptions with = o;
    with.keys_state = states.data();
    pa::favor_attention(pa::AttentionDims{1, 1, L, k_len, d, 1}, q.data(), k.data(), v.data(),
                        out.data(), with, pa::kScalarKernels, pool);
  };
  CHECK(throws_input_error([&] { absorb(L, options); }));  // queries with absorb_into
  CHECK(throws_input_error([&] { emit(L, options); }));    // keys with keys_state
  pa::FavorOptions causal = options;
  causal.causal = true;
  CHECK(throws_input_error([&] { absorb(0, causal); }));
  CHECK(throws_input_error([&] { emit(0, causal); }));
  pa::FavorOptions adaptive = options;
  adaptive.feature_map.kernel = pa::Kernel::kSoftmaxOpt;  // parameters estimated per call: no split
  CHECK(throws_input_error([&] { absorb(0, adaptive); }));
  CHECK(throws_input_error([&] { emit(0, adaptive); }));
  CHECK(std::memcmp(states.data(), before.data(), states.size() * sizeof(float)) == 0);
  absorb(0, options);
  emit(0, options);
  for (float x : out) CHECK_NEAR(x, 1.0, 1e-6);  // every value is 1
}
