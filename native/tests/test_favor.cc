// FAVOR drivers against the double-precision reference, on every kernel set.
#include <cstdio>
#include <vector>

#include "attention_reference.h"
#include "core/favor.h"
#include "core/orthogonal.h"
#include "kernels/dispatch.h"
#include "test_harness.h"

namespace {

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
    for (std::size_t j = 0; j < t.Lk; j += 3) pad[j] = 0;  // every third key of item 0
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
    const auto want = pa_test::favor_reference(&q[p * t.Lq * t.d], &k[p * t.Lk * t.d], &v[p * t.Lk * t.Dv], t.Lq,
                                               t.Lk, t.d, t.Dv, w.data(), t.m, t.causal,
                                               t.padded ? &pad[b * t.Lk] : nullptr);
    const std::vector<float> got(out.begin() + p * t.Lq * t.Dv, out.begin() + (p + 1) * t.Lq * t.Dv);
    bool all_zero_expected = true;
    for (double x : want) all_zero_expected = all_zero_expected && x == 0.0;
    if (all_zero_expected) {
      for (float x : got) CHECK(x == 0.0f);
    } else {
      const double err = pa_test::relative_frobenius(got, want);
      if (!(err < 2e-5)) {
        std::fprintf(stderr, "  [%s] Lq=%zu Lk=%zu d=%zu m=%zu sigma=%g causal=%d chunk=%zu pair=%zu: err %.3g\n",
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
      {33, 33, 16, 16, 40, 1.0, false, false, 64}, {70, 50, 8, 5, 24, 1.0, false, true, 64},
      {65, 65, 16, 16, 32, 1.0, true, false, 64},  {65, 65, 16, 16, 32, 1.0, true, false, 1},
      {65, 65, 16, 16, 32, 1.0, true, false, 7},   {40, 65, 16, 9, 32, 1.0, true, true, 16},
      {65, 40, 16, 9, 32, 1.0, true, false, 16},   {1, 1, 1, 1, 1, 1.0, true, false, 64},
      {130, 130, 32, 32, 64, 8.0, false, false, 64}, {130, 130, 32, 32, 64, 8.0, true, false, 64},
  };
  for (const pa::KernelSet* kernels : pa::available_kernel_sets()) {
    for (const Case& t : cases) check_case(t, *kernels, pool);
  }
}
