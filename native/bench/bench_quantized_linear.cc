// Time per call of linear (fp32), linear_bf16 and linear_int8 on the shapes of a dim-512
// layer, for 1, 8 and 64 rows (decoding steps of 1 and 8 sessions, a prompt chunk).
// "hot": the same weights every call (in cache after the first); "streamed": a new copy
// of the weights each call, cycling over more than the last-level cache, as a decoding
// step of a whole model reads them. Medians of several runs, each averaging many calls.
// Not a test (ctest does not run it). Build and run:
//   cmake --build build/native-tests --target bench_quantized_linear
//   build/native-tests/bench_quantized_linear [isa] [threads] [runs]
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <random>
#include <vector>

#include "bench_util.h"
#include "core/layer_ops.h"
#include "core/quantized_linear.h"

namespace {

// Weight bytes cycled over in the streamed mode: well above a 32 MiB L3.
constexpr std::size_t kStreamBytes = std::size_t{256} << 20;

// Median µs of one call(copy), the copies taken in turn.
double median_us(int runs, std::size_t copies, const std::function<void(std::size_t)>& call) {
  std::size_t next = 0;
  return 1e6 * pa_bench::median_seconds_per_call(runs, [&] { call(next++ % copies); });
}

}  // namespace

int main(int argc, char** argv) {
  const pa::KernelSet* kernels = pa_bench::kernel_set_arg(argc, argv);
  if (kernels == nullptr) return 2;
  const std::size_t threads = argc > 2 ? std::strtoul(argv[2], nullptr, 10) : 1;
  const int runs = argc > 3 ? std::atoi(argv[3]) : 7;
  pa::ThreadPool pool(threads);
  const std::size_t shapes[][2] = {{512, 1536}, {512, 512}, {512, 2048}, {2048, 512}, {512, 256}};
  std::mt19937 rng(1);
  std::normal_distribution<float> normal;
  std::printf("%s, %zu thread%s; median µs per call (speed-up vs fp32)\n", kernels->name, threads,
              threads > 1 ? "s" : "");
  std::printf("%-6s %-12s %5s | %9s %9s %9s | %9s %9s %9s\n", "", "", "", "hot fp32", "bf16",
              "int8", "strm fp32", "bf16", "int8");
  for (const auto& s : shapes) {
    const std::size_t in = s[0], out = s[1];
    std::vector<float> w(in * out), b(out);
    for (auto& v : w) v = normal(rng);
    for (auto& v : b) v = normal(rng);
    const std::size_t n32 = pa::linear_packed_size(in, out);
    const std::size_t nq = pa::linear_quant_packed_size(in, out);
    // Copies for the streamed mode, sized by the fp32 weights; the narrow formats use as
    // many copies, so every mode cycles over the same number of matrices.
    const std::size_t copies = std::max<std::size_t>(2, kStreamBytes / (n32 * sizeof(float)));
    std::vector<float> p32(copies * n32), scales(out);
    std::vector<std::uint16_t> p16(copies * nq);
    std::vector<std::int8_t> p8(copies * nq);
    pa::linear_pack(in, out, w.data(), p32.data());
    pa::linear_pack_bf16(in, out, w.data(), p16.data());
    pa::linear_pack_int8(in, out, w.data(), p8.data(), scales.data());
    for (std::size_t c = 1; c < copies; ++c) {
      std::copy(p32.begin(), p32.begin() + n32, p32.begin() + c * n32);
      std::copy(p16.begin(), p16.begin() + nq, p16.begin() + c * nq);
      std::copy(p8.begin(), p8.begin() + nq, p8.begin() + c * nq);
    }
    for (std::size_t rows : {1, 8, 64}) {
      std::vector<float> x(rows * in), y(rows * out);
      for (auto& v : x) v = normal(rng);
      const auto act = pa::Activation::kNone;
      auto f32 = [&](std::size_t c) {
        pa::linear(rows, in, out, x.data(), in, p32.data() + c * n32, b.data(), nullptr, act,
                   y.data(), *kernels, pool);
      };
      auto f16 = [&](std::size_t c) {
        pa::linear_bf16(rows, in, out, x.data(), in, p16.data() + c * nq, b.data(), nullptr, act,
                        y.data(), *kernels, pool);
      };
      auto f8 = [&](std::size_t c) {
        pa::linear_int8(rows, in, out, x.data(), in, p8.data() + c * nq, scales.data(), b.data(),
                        nullptr, act, y.data(), *kernels, pool);
      };
      double t[6];
      const std::function<void(std::size_t)> fns[3] = {f32, f16, f8};
      for (int f = 0; f < 3; ++f) {
        t[f] = median_us(runs, 1, fns[f]);
        t[3 + f] = median_us(runs, copies, fns[f]);
      }
      std::printf(
          "rows %-2zu %4zu -> %-4zu | %9.1f %4.1f (%.1fx) %4.1f (%.1fx) | %9.1f %4.1f (%.1fx) %4.1f "
          "(%.1fx)\n",
          rows, in, out, t[0], t[1], t[0] / t[1], t[2], t[0] / t[2], t[3], t[4], t[3] / t[4], t[5],
          t[3] / t[5]);
    }
  }
  return 0;
}
