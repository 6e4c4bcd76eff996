// The AVX-512 kernel set (F, DQ, VL; with AVX2 and FMA): the shared vector kernels
// (simd_kernels_inl.h) on the target of vec_avx512.h. The build compiles this file
// alone with those flags; dispatch.cc only hands it out after checking the CPU.
// Without PA_HAVE_AVX512 (non-x86 builds) nothing here is compiled.
#if defined(PA_HAVE_AVX512)

#include "vec_avx512.h"  // first: the shared kernels need the target's intrinsics

#include "f64_avx256.h"
#include "kernels.h"
#include "simd_kernels_inl.h"

namespace pa {

const KernelSet kAvx512Kernels = {
    "avx512",         simd::gemm<Avx512>,           simd::exp_bias<Avx512>,
    simd::max_bias<Avx512>, simd::max_accumulate<Avx512>, simd::gelu_bias<Avx512>,
    simd::dot<Avx512>, dot_f64_avx256,                axpy_f64_avx256,
    simd::fma_peak<Avx512>};

}  // namespace pa

#endif  // PA_HAVE_AVX512
