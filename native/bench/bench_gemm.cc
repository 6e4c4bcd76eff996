// GFLOP/s of the gemm kernel on the shapes attention calls it with, against the
// kernel set's own multiply-add peak (fma_peak), operands in cache (the same
// buffers every call, as inside a head's loop). Shows which products of a FAVOR+
// chunk or block, or of an exact-attention tile, run far below the peak.
// Not a test (ctest does not run it). Build and run:
//   cmake --build build/native-tests --target bench_gemm
//   build/native-tests/bench_gemm [isa] [runs]
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

#include "bench_util.h"

namespace {

struct Shape {
  const char* what;
  std::size_t M, N, K;
  bool a_transposed;  // A read as the transpose of a K x M row-major matrix
  bool accumulate;
};

}  // namespace

int main(int argc, char** argv) {
  const pa::KernelSet* kernels = pa_bench::kernel_set_arg(argc, argv);
  if (kernels == nullptr) return 2;
  const int runs = argc > 2 ? std::atoi(argv[2]) : 7;
  // d = Dv = 64, m = 256 features, causal chunks of 32 rows, bidirectional blocks of 64,
  // exact-attention tiles of 48 queries x 128 keys.
  const Shape shapes[] = {
      {"features: rows x W^T (chunk 32)", 32, 256, 64, false, false},
      {"features: rows x W^T (block 64)", 64, 256, 64, false, false},
      {"scores: Q' K'^T (chunk 32)", 32, 32, 256, false, false},
      {"out: Q' S (chunk 32)", 32, 64, 256, false, false},
      {"out: Q' S (block 64)", 64, 64, 256, false, false},
      {"out += scores V (chunk 32)", 32, 64, 32, false, true},
      {"S += K'^T V (chunk 32)", 256, 64, 32, true, true},
      {"S += K'^T V (block 64)", 256, 64, 64, true, true},
      {"z += 1^T K' (chunk 32)", 1, 256, 32, false, true},
      {"exact: Q K^T (48 x 128)", 48, 128, 64, false, false},
      {"exact: acc += P V (48 x 128)", 48, 64, 128, false, true},
  };
  const double peak = pa_bench::fma_peak(*kernels, 1);  // GFLOP/s
  float sink = 0;
  std::printf("%s, 1 thread, FMA peak %.1f GFLOP/s; median of %d runs\n", kernels->name, peak,
              runs);
  std::printf("%-34s %5s %5s %5s %10s %8s\n", "product", "M", "N", "K", "GFLOP/s", "% peak");
  std::mt19937 rng(1);
  std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
  for (const Shape& s : shapes) {
    std::vector<float> a(s.M * s.K), b(s.K * s.N), c(s.M * s.N);
    for (auto& x : a) x = uniform(rng);
    for (auto& x : b) x = uniform(rng);
    for (auto& x : c) x = uniform(rng) * 1e-3f;
    const std::size_t ars = s.a_transposed ? 1 : s.K, acs = s.a_transposed ? s.M : 1;
    const double seconds = pa_bench::median_seconds_per_call(runs, [&] {
      kernels->gemm(s.M, s.N, s.K, a.data(), ars, acs, b.data(), s.N, c.data(), s.N, s.accumulate);
    });
    const double gflops = 2.0 * static_cast<double>(s.M * s.N * s.K) / seconds / 1e9;
    std::printf("%-34s %5zu %5zu %5zu %10.1f %7.0f%%\n", s.what, s.M, s.N, s.K, gflops,
                100.0 * gflops / peak);
    sink += c[0];
  }
  return sink == 12345.0f ? 1 : 0;  // keeps the products observable
}
