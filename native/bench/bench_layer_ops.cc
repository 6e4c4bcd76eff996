// GFLOP/s of pa::linear against the kernel set's FMA peak, on 1 and 2 threads (and
// the time of one layer_norm).
// Not a test (ctest does not run it). Build and run:
//   cmake --build build/native-tests --target bench_layer_ops
//   build/native-tests/bench_layer_ops [isa] [repetitions]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "bench_util.h"
#include "core/layer_ops.h"

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

}  // namespace

int main(int argc, char** argv) {
  const pa::KernelSet* kernels = pa_bench::kernel_set_arg(argc, argv);
  if (kernels == nullptr) return 2;
  const int reps = argc > 2 ? std::atoi(argv[2]) : 5;
  struct Shape {
    std::size_t rows, in, out;
    pa::Activation act;
    const char* label;
  };
  const Shape shapes[] = {{4096, 512, 512, pa::Activation::kNone, "none"},
                          {4096, 512, 2048, pa::Activation::kNone, "none"},
                          {4096, 512, 2048, pa::Activation::kGelu, "gelu"},
                          {4096, 2048, 512, pa::Activation::kNone, "none"},
                          {1, 512, 2048, pa::Activation::kGelu, "gelu, one row"}};
  std::mt19937 rng(1);
  std::normal_distribution<float> normal;
  for (std::size_t threads : {1, 2}) {
    pa::ThreadPool pool(threads);
    const double peak = pa_bench::fma_peak(*kernels, threads);
    std::printf("%s, %zu thread%s: FMA peak %.1f GFLOP/s\n", kernels->name, threads,
                threads > 1 ? "s" : "", peak);
    for (const Shape& s : shapes) {
      std::vector<float> x(s.rows * s.in), w(s.in * s.out), b(s.out), y(s.rows * s.out);
      for (auto& v : x) v = normal(rng);
      for (auto& v : w) v = normal(rng);
      for (auto& v : b) v = normal(rng);
      std::vector<float> packed(pa::linear_packed_size(s.in, s.out));
      pa::linear_pack(s.in, s.out, w.data(), packed.data());
      std::vector<double> times;
      for (int r = 0; r <= reps; ++r) {  // the first run warms up
        const auto start = Clock::now();
        pa::linear(s.rows, s.in, s.out, x.data(), s.in, packed.data(), b.data(), nullptr, s.act,
                   y.data(), *kernels, pool);
        if (r > 0) times.push_back(seconds_since(start));
      }
      std::sort(times.begin(), times.end());
      const double flops = 2.0 * s.rows * s.in * s.out;
      const double best = flops / times.front() / 1e9,
                   median = flops / times[times.size() / 2] / 1e9;
      std::printf(
          "  linear %zu x %zu -> %zu (%s): best %.1f GFLOP/s (%.0f%% of peak), median %.1f, %.2f ms best\n",
          s.rows, s.in, s.out, s.label, best, 100 * best / peak, median, 1e3 * times.front());
    }
    {
      const std::size_t rows = 4096, dim = 512;
      std::vector<float> x(rows * dim), g(dim, 1.5f), b(dim, 0.25f), y(rows * dim);
      for (auto& v : x) v = normal(rng);
      double best = 1e30;
      for (int r = 0; r <= reps; ++r) {
        const auto start = Clock::now();
        pa::layer_norm(rows, dim, x.data(), g.data(), b.data(), 1e-5f, y.data(), pool);
        if (r > 0) best = std::min(best, seconds_since(start));
      }
      std::printf("  layer_norm %zu x %zu: %.2f ms best (%.1f GB/s read + written)\n", rows, dim,
                  1e3 * best, 2.0 * rows * dim * sizeof(float) / best / 1e9);
    }
  }
  return 0;
}
