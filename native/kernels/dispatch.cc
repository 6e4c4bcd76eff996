#include "dispatch.h"

#include <cstdlib>

namespace pa {
namespace {

bool cpu_has(const std::string& name) {
  if (name == "scalar") return true;
#if defined(__x86_64__) || defined(_M_X64)
  __builtin_cpu_init();
  // GCC and Clang check that the OS saves the wide registers (XCR0) as well.
  if (name == "avx2") return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  if (name == "avx512") {
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx2") &&
           __builtin_cpu_supports("fma");
  }
#endif
  return false;
}

std::vector<const KernelSet*> compiled_sets() {
  std::vector<const KernelSet*> sets{&kScalarKernels};
#if defined(PA_HAVE_AVX2)
  sets.push_back(&kAvx2Kernels);
#endif
#if defined(PA_HAVE_AVX512)
  sets.push_back(&kAvx512Kernels);
#endif
  return sets;
}

}  // namespace

const std::vector<const KernelSet*>& available_kernel_sets() {
  static const std::vector<const KernelSet*> sets = [] {
    std::vector<const KernelSet*> usable;
    for (const KernelSet* set : compiled_sets()) {
      if (cpu_has(set->name)) usable.push_back(set);
    }
    return usable;
  }();
  return sets;
}

const KernelSet* find_kernel_set(const std::string& name) {
  for (const KernelSet* set : available_kernel_sets()) {
    if (name == set->name) return set;
  }
  return nullptr;
}

const KernelSet& default_kernel_set() {
  static const KernelSet* chosen = [] {
    const char* forced = std::getenv("PERFORMER_ATTENTION_ISA");
    if (forced != nullptr && *forced != '\0') {
      if (const KernelSet* set = find_kernel_set(forced)) return set;
    }
    return available_kernel_sets().back();
  }();
  return *chosen;
}

std::vector<std::string> compiled_kernel_set_names() {
  std::vector<std::string> names;
  for (const KernelSet* set : compiled_sets()) names.emplace_back(set->name);
  return names;
}

}  // namespace pa
