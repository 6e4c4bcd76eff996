// Chooses a KernelSet once at load time from what the CPU supports.
#pragma once

#include <string>
#include <vector>

#include "kernels.h"

namespace pa {

// Kernel sets that are compiled in AND supported by this CPU, slowest first.
const std::vector<const KernelSet*>& available_kernel_sets();

// The set in use by default: the fastest available one, unless the environment
// variable PERFORMER_ATTENTION_ISA names another available set ("scalar", "avx2", "avx512").
const KernelSet& default_kernel_set();

// The available set with this name, or nullptr.
const KernelSet* find_kernel_set(const std::string& name);

// Names of every set compiled into this binary (supported by the CPU or not).
std::vector<std::string> compiled_kernel_set_names();

}  // namespace pa
