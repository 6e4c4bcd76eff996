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

// Carves consecutive 64-byte aligned float arrays out of one block.
class Carver {
 public:
  explicit Carver(float* base) : next_(base) {}
  float* take(std::size_t floats) {
    float* result = next_;
    next_ += round_up(floats);
    return result;
  }
  static std::size_t round_up(std::size_t floats) { return (floats + 15) & ~static_cast<std::size_t>(15); }

 private:
  float* next_;
};

}  // namespace pa
