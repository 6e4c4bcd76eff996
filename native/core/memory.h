// Memory for the drivers. Fresh pages are expensive on the machines we target
// (the first touch of a 4 KiB page costs microseconds), so:
// - large buffers are 2 MiB aligned and advised to use transparent huge pages;
// - per-thread scratch is kept between calls and only grows (no zeroing);
// - per-call buffers come from a small pool of buffers returned by earlier calls.
#pragma once

#include <cstddef>
#include <memory>
#include <mutex>
#include <vector>

namespace pa {

// An uninitialized float array, 64-byte aligned; from 2 MiB up, 2 MiB aligned and
// advised MADV_HUGEPAGE where the OS has it. Throws std::bad_alloc.
class FloatBuffer {
 public:
  FloatBuffer() = default;
  explicit FloatBuffer(std::size_t floats);
  ~FloatBuffer();
  FloatBuffer(FloatBuffer&& other) noexcept;
  FloatBuffer& operator=(FloatBuffer&& other) noexcept;
  FloatBuffer(const FloatBuffer&) = delete;
  FloatBuffer& operator=(const FloatBuffer&) = delete;

  float* data() const { return data_; }
  std::size_t size() const { return size_; }

 private:
  float* data_ = nullptr;
  std::size_t size_ = 0;
};

// Allocates `bytes` with the same alignment and huge-page advice; release with
// free_large().
void* allocate_large(std::size_t bytes);
void free_large(void* pointer);

// This thread's scratch: at least `floats` floats, kept for the next call.
// Contents are undefined. Scratch above 64 MiB is released by trim_thread_scratch().
float* thread_scratch(std::size_t floats);
void trim_thread_scratch();

// Buffers for one call, returned to a process-wide pool when the handle dies.
class PooledBuffer {
 public:
  explicit PooledBuffer(std::size_t floats);
  ~PooledBuffer();
  PooledBuffer(const PooledBuffer&) = delete;
  PooledBuffer& operator=(const PooledBuffer&) = delete;
  float* data() const { return buffer_.data(); }

 private:
  FloatBuffer buffer_;
};

// Carves consecutive 64-byte aligned float arrays out of one block. A Carver made
// without a block only counts (take() returns null), so one list of takes both
// sizes a block and carves it: see carved_floats().
class Carver {
 public:
  Carver() = default;
  explicit Carver(float* base) : base_(base) {}
  float* take(std::size_t floats) {
    float* result = base_ == nullptr ? nullptr : base_ + used_;
    used_ += round_up(floats);
    return result;
  }
  std::size_t used() const { return used_; }
  static std::size_t round_up(std::size_t floats) {
    return (floats + 15) & ~static_cast<std::size_t>(15);
  }

 private:
  float* base_ = nullptr;
  std::size_t used_ = 0;
};

// The floats that `carve` (a callable taking a Carver&) takes in all.
template <class Carve>
std::size_t carved_floats(Carve&& carve) {
  Carver count;
  carve(count);
  return count.used();
}

// floats() and view(base) of a layout whose Derived::carve(Carver&) takes its arrays
// in order and returns its view of them: the size and the views follow one list.
template <class Derived>
class CarvedLayout {
 public:
  std::size_t floats() const {
    return carved_floats([&](Carver& count) { self().carve(count); });
  }
  auto view(float* base) const {
    Carver at(base);
    return self().carve(at);
  }

 private:
  const Derived& self() const { return static_cast<const Derived&>(*this); }
};

}  // namespace pa
