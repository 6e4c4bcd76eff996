// Helpers several native test files share: guarded arrays that catch stray writes,
// bitwise comparisons and the InputError check.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <random>
#include <vector>

#include "core/attention_common.h"

namespace pa_test {

constexpr float kGuard = -7777.25f;  // fills memory an op must not write
constexpr std::size_t kGuardFloats = 16;

// n floats whose first one sits `offset` floats past a 64-byte boundary, between guard
// zones of kGuard.
class Guarded {
 public:
  Guarded(std::size_t n, std::size_t offset = 0)
      : n_(n), storage_(n + offset + 2 * kGuardFloats + 16, kGuard) {
    const auto addr = reinterpret_cast<std::uintptr_t>(storage_.data() + kGuardFloats);
    data_ = storage_.data() + kGuardFloats + ((64 - addr % 64) % 64) / sizeof(float) + offset;
  }
  float* data() { return data_; }
  const float* data() const { return data_; }
  std::size_t size() const { return n_; }
  float& operator[](std::size_t i) { return data_[i]; }
  float operator[](std::size_t i) const { return data_[i]; }
  void fill(std::mt19937& rng, float lo, float hi) {
    std::uniform_real_distribution<float> uni(lo, hi);
    for (std::size_t i = 0; i < n_; ++i) data_[i] = uni(rng);
  }
  std::vector<double> values() const { return std::vector<double>(data_, data_ + n_); }
  bool guards_intact() const {
    for (std::size_t i = 1; i <= kGuardFloats; ++i) {
      if (!same_bits(data_[-static_cast<std::ptrdiff_t>(i)], kGuard) ||
          !same_bits(data_[n_ + i - 1], kGuard)) {
        return false;
      }
    }
    return true;
  }
  static bool same_bits(float a, float b) { return std::memcmp(&a, &b, sizeof a) == 0; }

 private:
  std::size_t n_;
  std::vector<float> storage_;
  float* data_;
};

inline bool same_bits(const float* a, const float* b, std::size_t n) {
  return std::memcmp(a, b, n * sizeof(float)) == 0;
}

inline bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() &&
         (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);
}

inline bool throws_input_error(const std::function<void()>& f) {
  try {
    f();
  } catch (const pa::InputError&) {
    return true;
  }
  return false;
}

// check(a, b, index) for every pair of `sizes` (index counts the pairs) until one fails.
template <class Sizes, class Check>
void for_size_pairs(const Sizes& sizes, Check check) {
  std::size_t index = 0;
  bool ok = true;
  for (std::size_t a : sizes) {
    for (std::size_t b : sizes) {
      if (ok) ok = check(a, b, index);
      ++index;
    }
  }
}

// check(a, b, c, index) for every triple of `sizes` (index counts the triples) until
// one fails; returns the number of triples.
template <class Sizes, class Check>
std::size_t for_size_triples(const Sizes& sizes, Check check) {
  std::size_t index = 0;
  bool ok = true;
  for (std::size_t a : sizes) {
    for (std::size_t b : sizes) {
      for (std::size_t c : sizes) {
        if (ok) ok = check(a, b, c, index);
        ++index;
      }
    }
  }
  return index;
}

}  // namespace pa_test
