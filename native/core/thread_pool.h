// One process-wide pool of worker threads for every native call.
//
// parallel_for runs body(begin, end, slot) over [0, n) in pieces, on the pool's
// workers and on the calling thread. Calls from several threads at once (several
// async requests) take turns: one parallel region runs at a time, so concurrent
// requests never put more busy threads on the CPU than the pool has.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace pa {

// Multiply-adds below which a piece of pool work is not handed to another thread:
// the one granularity every driver splits its work by.
constexpr std::size_t kMinWorkPerPiece = std::size_t{1} << 20;

class ThreadPool {
 public:
  using Body = std::function<void(std::size_t begin, std::size_t end, std::size_t slot)>;

  explicit ThreadPool(std::size_t threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  // Total threads that run a region, the caller included; slots are 0 .. size()-1.
  std::size_t size() const { return workers_.size() + 1; }

  // Exceptions thrown by body are rethrown here (the first one), after every
  // piece has finished or been skipped.
  void parallel_for(std::size_t n, std::size_t grain, const Body& body);

 private:
  void worker_loop(std::size_t slot);
  void run_pieces(std::size_t slot);

  std::vector<std::thread> workers_;
  std::mutex region_mutex_;  // one region at a time

  std::mutex mutex_;
  std::condition_variable wake_;
  std::condition_variable done_;
  const Body* body_ = nullptr;
  std::size_t n_ = 0, grain_ = 1, next_ = 0, busy_ = 0;
  std::uint64_t generation_ = 0;
  bool stopping_ = false;
  std::exception_ptr error_;
};

// The shared pool. Its size is PERFORMER_ATTENTION_THREADS when set, else the
// number of hardware threads; set_global_thread_count() replaces it. Callers hold
// the returned pointer for the whole call, so a resize never pulls a pool away
// from a call that is using it.
std::shared_ptr<ThreadPool> global_pool();
void set_global_thread_count(std::size_t threads);

}  // namespace pa
