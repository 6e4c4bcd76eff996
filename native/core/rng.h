// A documented, portable random number generator: the same seed gives the same
// bits on every platform, compiler, build and thread count.
//
//   state  = four successive outputs of SplitMix64 seeded with `seed`
//   next() = xoshiro256** (Blackman & Vigna)
//   uniform() = (next() >> 11) * 2^-53, in [0, 1)
//   normal()  = Marsaglia's polar method: u = 2 uniform() - 1, v = 2 uniform() - 1,
//               rejected unless 0 < s = u^2 + v^2 < 1; returns u f and keeps v f
//               (f = sqrt(-2 log(s) / s)) for the next call; using
//               portable_log() below instead of the C library's log, so the
//               result does not depend on the platform's libm.
//
// Only IEEE-754 double +, -, *, / and sqrt (all correctly rounded) are used; the
// files are compiled with -ffp-contract=off so no fused multiply-add changes a bit.
#pragma once

#include <cstdint>

namespace pa {

class Rng {
 public:
  explicit Rng(std::uint64_t seed);
  std::uint64_t next();
  double uniform();
  double normal();

 private:
  std::uint64_t s_[4];
  bool has_spare_ = false;
  double spare_ = 0.0;
};

// Natural logarithm of a positive, finite double using only basic arithmetic
// (argument reduction by frexp, then the atanh series). Accurate to ~1 ulp.
double portable_log(double x);

}  // namespace pa
