// What the native benchmarks share: the kernel set named on the command line, the
// machine's FMA peak and the timing of a call.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <thread>
#include <vector>

#include "kernels/dispatch.h"

namespace pa_bench {

// The set named by argv[1], or the default one without an argument; null (after saying
// why) when the name is unknown or the CPU cannot run it.
inline const pa::KernelSet* kernel_set_arg(int argc, char** argv) {
  const pa::KernelSet* kernels =
      argc > 1 ? pa::find_kernel_set(argv[1]) : &pa::default_kernel_set();
  if (kernels == nullptr) std::fprintf(stderr, "unknown or unavailable kernel set %s\n", argv[1]);
  return kernels;
}

// FMA peak in GFLOP/s of `threads` threads running the kernel set's FMA loop at once for
// ~0.2 s.
inline double fma_peak(const pa::KernelSet& kernels, std::size_t threads) {
  using Clock = std::chrono::steady_clock;
  std::vector<double> rates(threads);
  std::vector<float> sinks(threads);
  std::vector<std::thread> workers;
  for (std::size_t t = 0; t < threads; ++t) {
    workers.emplace_back([&, t] {
      const auto start = Clock::now();
      auto elapsed = [&] { return std::chrono::duration<double>(Clock::now() - start).count(); };
      double flops = 0;
      do flops += kernels.fma_peak(1 << 16, &sinks[t]);
      while (elapsed() < 0.2);
      rates[t] = flops / elapsed() / 1e9;
    });
  }
  for (auto& w : workers) w.join();
  double total = 0;
  for (double r : rates) total += r;
  return total;
}

// Median over `runs` of the mean seconds of one call(), each run >= 20 ms of calls, after
// one warm-up call.
template <class Call>
double median_seconds_per_call(int runs, Call&& call) {
  using Clock = std::chrono::steady_clock;
  std::vector<double> times;
  call();
  for (int r = 0; r < runs; ++r) {
    std::size_t calls = 0;
    const auto start = Clock::now();
    double elapsed = 0;
    do {
      call();
      ++calls;
      elapsed = std::chrono::duration<double>(Clock::now() - start).count();
    } while (elapsed < 0.02);
    times.push_back(elapsed / static_cast<double>(calls));
  }
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

}  // namespace pa_bench
