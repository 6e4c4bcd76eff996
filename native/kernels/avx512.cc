// The AVX-512 kernel set (F, DQ, VL; with AVX2 and FMA): the shared vector kernels
// (simd_kernels_inl.h) on the target of vec_avx512.h. The build compiles this file
// alone with those flags; dispatch.cc only hands it out after checking the CPU.
// Without PA_HAVE_AVX512 (non-x86 builds) nothing here is compiled.
#if defined(PA_HAVE_AVX512)

#include "vec_avx512.h"  // first: the shared kernels need the target's intrinsics

#include "f64_avx256.h"
#include "simd_kernels_inl.h"

namespace pa {

const KernelSet kAvx512Kernels =
    simd::kernel_set<Avx512>("avx512", dot_f64_avx256, axpy_f64_avx256);

}  // namespace pa

#endif  // PA_HAVE_AVX512
