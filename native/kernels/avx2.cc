// The AVX2 + FMA kernel set: the shared vector kernels (simd_kernels_inl.h) on the
// target of vec_avx2.h. The build compiles this file alone with -mavx2 -mfma;
// dispatch.cc only hands it out after checking the CPU. Without PA_HAVE_AVX2
// (non-x86 builds) nothing here is compiled.
#if defined(PA_HAVE_AVX2)

#include "vec_avx2.h"  // first: the shared kernels need the target's intrinsics

#include "f64_avx256.h"
#include "simd_kernels_inl.h"

namespace pa {

const KernelSet kAvx2Kernels = simd::kernel_set<Avx2>("avx2", dot_f64_avx256, axpy_f64_avx256);

}  // namespace pa

#endif  // PA_HAVE_AVX2
