// Exact softmax attention against the double-precision reference, on every kernel set.
#include <cmath>
#include <cstdio>
#include <vector>

#include "attention_reference.h"
#include "core/softmax_attention.h"
#include "kernels/dispatch.h"
#include "test_harness.h"

TEST("softmax/blockwise online softmax equals the double reference on every kernel set") {
  pa::ThreadPool pool(2);
  struct Case {
    std::size_t Lq, Lk, d, Dv;
    bool causal, padded;
    double sigma;
  };
  const Case cases[] = {
      {1, 1, 1, 1, false, false, 1.0},
      {63, 129, 17, 9, false, true, 1.0},
      {129, 129, 16, 16, true, false, 1.0},
      {65, 200, 8, 8, true, true, 1.0},
      {200, 65, 8, 8, true, false, 1.0},
      {130, 130, 64, 64, false, false, 8.0},
      // Three query groups of 192 rows (the pieces of pool work), the last one partial.
      {500, 450, 16, 8, true, true, 1.0},
      {450, 500, 16, 8, false, true, 1.0}};
  for (const pa::KernelSet* kernels : pa::available_kernel_sets()) {
    for (const Case& t : cases) {
      const std::size_t B = 2, H = 2;
      pa::AttentionDims dims{B, H, t.Lq, t.Lk, t.d, t.Dv};
      const auto q = pa_test::gaussian(B * H * t.Lq * t.d, t.sigma, 5);
      const auto k = pa_test::gaussian(B * H * t.Lk * t.d, t.sigma, 6);
      const auto v = pa_test::gaussian(B * H * t.Lk * t.Dv, 1.0, 7);
      std::vector<std::uint8_t> pad(B * t.Lk, 1);
      if (t.padded) {
        for (std::size_t j = 1; j < t.Lk; j += 4) pad[j] = 0;
      }
      pa::SoftmaxOptions options;
      options.causal = t.causal;
      options.key_padding = t.padded ? pad.data() : nullptr;
      options.scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(t.d)));
      std::vector<float> out(B * H * t.Lq * t.Dv);
      pa::softmax_attention(dims, q.data(), k.data(), v.data(), out.data(), options, *kernels,
                            pool);
      for (std::size_t p = 0; p < B * H; ++p) {
        const auto want = pa_test::softmax_reference(
            &q[p * t.Lq * t.d], &k[p * t.Lk * t.d], &v[p * t.Lk * t.Dv], t.Lq, t.Lk, t.d, t.Dv,
            options.scale, t.causal, t.padded ? &pad[(p / H) * t.Lk] : nullptr);
        const std::vector<float> got(out.begin() + p * t.Lq * t.Dv,
                                     out.begin() + (p + 1) * t.Lq * t.Dv);
        const double err = pa_test::relative_frobenius(got, want);
        if (!(err < 1e-5))
          std::fprintf(stderr, "  [%s] Lq=%zu Lk=%zu: err %.3g\n", kernels->name, t.Lq, t.Lk, err);
        CHECK(err < 1e-5);
      }
    }
  }
}
