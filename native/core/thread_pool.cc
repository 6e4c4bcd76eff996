#include "core/thread_pool.h"

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <memory>

namespace pa {

ThreadPool::ThreadPool(std::size_t threads) {
  const std::size_t extra = threads > 1 ? threads - 1 : 0;
  workers_.reserve(extra);
  for (std::size_t i = 0; i < extra; ++i) workers_.emplace_back([this, i] { worker_loop(i + 1); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  for (auto& t : workers_) t.join();
}

void ThreadPool::run_pieces(std::size_t slot) {
  std::unique_lock<std::mutex> lock(mutex_);
  while (next_ < n_) {
    const std::size_t begin = next_;
    const std::size_t end = std::min(n_, begin + grain_);
    next_ = end;
    const Body* body = body_;
    const bool skip = static_cast<bool>(error_);
    lock.unlock();
    if (!skip) {
      try {
        (*body)(begin, end, slot);
      } catch (...) {
        std::lock_guard<std::mutex> error_lock(mutex_);
        if (!error_) error_ = std::current_exception();
      }
    }
    lock.lock();
  }
}

void ThreadPool::worker_loop(std::size_t slot) {
  std::uint64_t seen = 0;
  std::unique_lock<std::mutex> lock(mutex_);
  for (;;) {
    wake_.wait(lock, [&] { return stopping_ || generation_ != seen; });
    if (stopping_) return;
    seen = generation_;
    ++busy_;
    lock.unlock();
    run_pieces(slot);
    lock.lock();
    if (--busy_ == 0) done_.notify_all();
  }
}

void ThreadPool::parallel_for(std::size_t n, std::size_t grain, const Body& body) {
  if (n == 0) return;
  grain = std::max<std::size_t>(grain, 1);
  if (workers_.empty() || n <= grain) {
    body(0, n, 0);
    return;
  }
  std::lock_guard<std::mutex> region(region_mutex_);
  {
    std::lock_guard<std::mutex> lock(mutex_);
    body_ = &body;
    n_ = n;
    grain_ = grain;
    next_ = 0;
    error_ = nullptr;
    ++generation_;
  }
  wake_.notify_all();
  run_pieces(0);
  std::exception_ptr error;
  {
    std::unique_lock<std::mutex> lock(mutex_);
    done_.wait(lock, [&] { return busy_ == 0; });
    body_ = nullptr;
    error = error_;
    error_ = nullptr;
  }
  if (error) std::rethrow_exception(error);
}

namespace {

std::size_t default_thread_count() {
  if (const char* env = std::getenv("PERFORMER_ATTENTION_THREADS")) {
    char* end = nullptr;
    const long value = std::strtol(env, &end, 10);
    if (end != env && *end == '\0' && value >= 1 && value <= 1024)
      return static_cast<std::size_t>(value);
  }
  const unsigned hw = std::thread::hardware_concurrency();
  return hw == 0 ? 1 : hw;
}

std::mutex& pool_mutex() {
  static std::mutex m;
  return m;
}

std::shared_ptr<ThreadPool>& pool_slot() {
  static std::shared_ptr<ThreadPool> pool;
  return pool;
}

}  // namespace

std::shared_ptr<ThreadPool> global_pool() {
  std::lock_guard<std::mutex> lock(pool_mutex());
  auto& pool = pool_slot();
  if (!pool) pool = std::make_shared<ThreadPool>(default_thread_count());
  return pool;
}

void set_global_thread_count(std::size_t threads) {
  std::lock_guard<std::mutex> lock(pool_mutex());
  // Calls in flight keep their own reference to the old pool; it is destroyed
  // (its threads joined) when the last of them finishes.
  auto& pool = pool_slot();
  if (pool && pool->size() == threads) return;
  pool = std::make_shared<ThreadPool>(threads);
}

}  // namespace pa
