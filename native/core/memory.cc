#include "core/memory.h"

#include <cstdlib>
#include <new>
#include <utility>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace pa {
namespace {

constexpr std::size_t kHugePage = std::size_t(2) << 20;
constexpr std::size_t kScratchKeepFloats = std::size_t(16) << 20;  // 64 MiB
constexpr std::size_t kPoolBuffers = 8;

}  // namespace

void* allocate_large(std::size_t bytes) {
  if (bytes == 0) bytes = 64;
  const std::size_t alignment = bytes >= kHugePage ? kHugePage : 64;
  const std::size_t rounded = (bytes + alignment - 1) / alignment * alignment;
  void* pointer = nullptr;
  if (posix_memalign(&pointer, alignment, rounded) != 0) throw std::bad_alloc();
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  if (rounded >= kHugePage)
    madvise(pointer, rounded, MADV_HUGEPAGE);  // advice only: failure is harmless
#endif
  return pointer;
}

void free_large(void* pointer) { std::free(pointer); }

FloatBuffer::FloatBuffer(std::size_t floats)
    : data_(static_cast<float*>(allocate_large(floats * sizeof(float)))), size_(floats) {}

FloatBuffer::~FloatBuffer() { free_large(data_); }

FloatBuffer::FloatBuffer(FloatBuffer&& other) noexcept
    : data_(std::exchange(other.data_, nullptr)), size_(std::exchange(other.size_, 0)) {}

FloatBuffer& FloatBuffer::operator=(FloatBuffer&& other) noexcept {
  if (this != &other) {
    free_large(data_);
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
  }
  return *this;
}

namespace {

thread_local FloatBuffer scratch;

std::mutex& pool_mutex() {
  static std::mutex m;
  return m;
}

std::vector<FloatBuffer>& pool() {
  static std::vector<FloatBuffer> buffers;
  return buffers;
}

}  // namespace

float* thread_scratch(std::size_t floats) {
  if (scratch.size() < floats) {
    scratch = FloatBuffer();  // free first: peak memory is the new size only
    scratch = FloatBuffer(floats + floats / 4);
  }
  return scratch.data();
}

void trim_thread_scratch() {
  if (scratch.size() > kScratchKeepFloats) scratch = FloatBuffer();
}

PooledBuffer::PooledBuffer(std::size_t floats) {
  {
    std::lock_guard<std::mutex> lock(pool_mutex());
    auto& buffers = pool();
    // The smallest pooled buffer that fits.
    std::size_t best = buffers.size();
    for (std::size_t i = 0; i < buffers.size(); ++i) {
      if (buffers[i].size() >= floats &&
          (best == buffers.size() || buffers[i].size() < buffers[best].size())) {
        best = i;
      }
    }
    if (best != buffers.size()) {
      buffer_ = std::move(buffers[best]);
      buffers.erase(buffers.begin() + static_cast<std::ptrdiff_t>(best));
      return;
    }
  }
  buffer_ = FloatBuffer(floats);
}

PooledBuffer::~PooledBuffer() {
  if (buffer_.size() == 0 || buffer_.size() > kScratchKeepFloats)
    return;  // large ones go back to the OS
  std::lock_guard<std::mutex> lock(pool_mutex());
  auto& buffers = pool();
  if (buffers.size() >= kPoolBuffers) buffers.erase(buffers.begin());  // drop the oldest
  buffers.push_back(std::move(buffer_));
}

}  // namespace pa
