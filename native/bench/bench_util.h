// What the native benchmarks share: the kernel set named on the command line.
#pragma once

#include <cstdio>

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

}  // namespace pa_bench
