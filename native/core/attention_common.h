// Shapes, input errors and input checks shared by the attention drivers.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "core/thread_pool.h"

namespace pa {

// q [batch, heads, q_len, head_dim], k [batch, heads, k_len, head_dim],
// v [batch, heads, k_len, value_dim], out [batch, heads, q_len, value_dim];
// all contiguous row-major.
struct AttentionDims {
  std::size_t batch = 0, heads = 0, q_len = 0, k_len = 0, head_dim = 0, value_dim = 0;
};

// Thrown by the drivers between blocks once a call's cancel flag is set (the
// async bindings turn it into an AbortError).
class Cancelled : public std::exception {
 public:
  const char* what() const noexcept override { return "cancelled"; }
};

inline void check_cancel(const std::atomic<bool>* flag) {
  if (flag != nullptr && flag->load(std::memory_order_relaxed)) throw Cancelled();
}

// A problem with the values handed in (not with the program): the bindings turn it
// into a RangeError carrying `code`.
class InputError : public std::runtime_error {
 public:
  InputError(const std::string& message, const char* code = "ERR_OUT_OF_RANGE")
      : std::runtime_error(message), code_(code) {}
  const char* code() const { return code_; }

 private:
  const char* code_;
};

// Largest squared row norm and largest |value| of the inputs.
struct InputStats {
  double max_query_norm2 = 0.0;
  double max_key_norm2 = 0.0;
  double max_abs_value = 0.0;
};

// Throws InputError naming the tensor and flat index of the first NaN or infinity
// (in the first row block that has one). Rows are scanned on the pool.
InputStats scan_inputs(const AttentionDims& dims, const float* q, const float* k, const float* v,
                       ThreadPool& pool);

// The largest |x| of rows x width floats; throws InputError naming `name` and the
// flat index of the first NaN or infinity, as scan_inputs does.
double scan_abs_max(const char* name, const float* x, std::size_t rows, std::size_t width,
                    ThreadPool& pool);

// Throws InputError when sums of k_len values of this magnitude could overflow float32.
void check_value_magnitude(const AttentionDims& dims, const InputStats& stats);

}  // namespace pa
