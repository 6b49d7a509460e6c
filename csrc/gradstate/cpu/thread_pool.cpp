#include "gradstate/cpu/thread_pool.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <exception>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "gradstate/core/errors.h"
#include "gradstate/cpu/memory.h"

#if defined(__unix__) || defined(__APPLE__)
#include <pthread.h>
#endif

namespace gradstate::cpu {
namespace {

int default_thread_count() {
  if (const char* text = std::getenv("GRADSTATE_NUM_THREADS")) {
    char* end = nullptr;
    const long n = std::strtol(text, &end, 10);
    if (end != text && *end == '\0' && n >= 1 && n <= 1024) return static_cast<int>(n);
    throw ValueError(concat("GRADSTATE_NUM_THREADS: expected an integer from 1 to 1024, got '", text, "'"));
  }
  return static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
}

// Spins of a thread that waits for a job, or for the helpers of its job to leave, before it sleeps: waking a
// sleeping thread took 30 us or more (a 4x4 image's forward pass took 36 us on 2 threads against 3 us on
// one), and a kernel's parallel steps often follow each other within that time.
constexpr std::chrono::microseconds spin_time{50};

inline void pause_briefly() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

// Whether `ready()` held within spin_time of polling.
template <typename Ready>
bool spin_until(Ready ready) {
  const auto end = std::chrono::steady_clock::now() + spin_time;
  for (int i = 1; !ready(); ++i) {
    pause_briefly();
    if (i % 64 == 0 && std::chrono::steady_clock::now() > end) return ready();
  }
  return true;
}

// Whether this thread is running a job's tasks. A kernel called from a task (a parallel_for nested in
// another) then runs its own tasks itself, without trying the job lock, which this very thread may hold:
// try_lock on a std::mutex the caller owns is undefined.
thread_local bool running_tasks = false;

// Marks the calling thread as running tasks while it lives.
class RunningTasks {
 public:
  RunningTasks() : was_running_(running_tasks) { running_tasks = true; }
  ~RunningTasks() { running_tasks = was_running_; }
  RunningTasks(const RunningTasks&) = delete;
  RunningTasks& operator=(const RunningTasks&) = delete;

 private:
  bool was_running_;
};

void run_here(std::int64_t count, void (*task)(void*, std::int64_t), void* context) {
  const RunningTasks running;
  for (std::int64_t i = 0; i < count; ++i) task(context, i);
}

// Workers wait (spinning, then asleep) until a job is posted, join it while it is open, take task indices
// from a shared counter, and leave. The caller waits only for the workers that joined: one still asleep when
// the tasks ran out never touches the job.
class ThreadPool {
 public:
  explicit ThreadPool(int threads) { start(threads); }
  ~ThreadPool() { stop(); }

  int threads() const { return static_cast<int>(workers_.size()) + 1; }

  // A count equal to the current one keeps the workers (and their scratch) as they are.
  void resize(int threads) {
    std::lock_guard<std::mutex> job_lock(job_mutex_);
    if (threads == this->threads()) return;
    stop();
    start(threads);
  }

  void run(std::int64_t count, void (*task)(void*, std::int64_t), void* context) {
    // A single task runs at once, as a caller of its own: kernels it calls may use the pool.
    if (count == 1 && !running_tasks) return task(context, 0);
    // One job at a time; a second caller (a kernel nested in a task, or another Python thread) runs its
    // tasks itself rather than wait.
    if (running_tasks) return run_here(count, task, context);
    std::unique_lock<std::mutex> job_lock(job_mutex_, std::try_to_lock);
    if (!job_lock.owns_lock() || workers_.empty()) return run_here(count, task, context);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      task_ = task;
      context_ = context;
      count_ = count;
      // Each take claims a share of the tasks still left, down to one: few takes for many small tasks (the
      // counter's cache line moves between cores on every take), and threads that finish within about one
      // task of each other. Runs of a fixed length left one thread idle for up to a whole run at the end
      // (3-5% of a 9 ms pass of 66 tasks on 2 threads).
      share_divisor_ = 2 * threads();
      next_.store(0);
      error_ = nullptr;
      open_ = true;
      generation_.fetch_add(1);
    }
    wake_.notify_all();
    work();
    {
      std::lock_guard<std::mutex> lock(mutex_);
      open_ = false;  // from here on no worker joins, so the job's context (the caller's frame) can end
    }
    if (!spin_until([&] { return joined_.load() == 0; })) {
      std::unique_lock<std::mutex> lock(mutex_);
      done_.wait(lock, [&] { return joined_.load() == 0; });
    }
    std::lock_guard<std::mutex> lock(mutex_);
    if (error_) std::rethrow_exception(std::exchange(error_, nullptr));
  }

 private:
  // Called with no job running. New workers start from the current generation: a worker that took an
  // older one for a new job would join a finished job.
  void start(int threads) {
    stopping_ = false;
    for (int i = 1; i < threads; ++i) {
      workers_.emplace_back([this, seen = generation_.load()] { worker(seen); });
    }
  }

  void stop() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stopping_ = true;
    }
    wake_.notify_all();
    for (std::thread& worker : workers_) worker.join();
    workers_.clear();
  }

  // Runs tasks until none is left. A task that throws (std::bad_alloc, say) ends the job early: its
  // exception is kept for run() to rethrow once every thread is done, the remaining tasks are skipped.
  void work() {
    const RunningTasks running;
    try {
      std::int64_t first = next_.load();
      while (first < count_) {
        const std::int64_t last = first + std::max<std::int64_t>(1, (count_ - first) / share_divisor_);
        if (!next_.compare_exchange_weak(first, last)) continue;  // first now holds the counter's value
        for (std::int64_t i = first; i < last; ++i) task_(context_, i);
        first = next_.load();
      }
    } catch (...) {
      next_.store(count_);
      std::lock_guard<std::mutex> lock(mutex_);
      if (!error_) error_ = std::current_exception();
    }
  }

  void worker(std::uint64_t seen) {
    for (;;) {
      spin_until([&] { return stopping_.load() || generation_.load() != seen; });
      {
        std::unique_lock<std::mutex> lock(mutex_);
        wake_.wait(lock, [&] { return stopping_.load() || generation_.load() != seen; });
        if (stopping_) return;
        seen = generation_.load();
        if (!open_) continue;  // its tasks are done and the caller gone
        joined_.fetch_add(1);
      }
      work();
      std::lock_guard<std::mutex> lock(mutex_);
      if (joined_.fetch_sub(1) == 1) done_.notify_one();
    }
  }

  std::mutex job_mutex_;  // held for a whole job
  std::mutex mutex_;      // guards the fields below (the atomic ones are also polled without it)
  std::condition_variable wake_, done_;
  std::vector<std::thread> workers_;
  std::atomic<bool> stopping_{false};
  std::atomic<std::uint64_t> generation_{0};
  bool open_ = false;  // whether workers may join the current job
  std::atomic<int> joined_{0};
  void (*task_)(void*, std::int64_t) = nullptr;
  void* context_ = nullptr;
  std::int64_t count_ = 0;
  std::int64_t share_divisor_ = 1;
  std::exception_ptr error_;
  std::atomic<std::int64_t> next_{0};
};

// The pool of this process. A child made by fork() inherits the pool's memory but not its threads: it drops
// the inherited pool (never destroyed — its threads do not exist there) and makes its own on first use.
std::atomic<ThreadPool*> current_pool{nullptr};

ThreadPool& pool() {
  static std::once_flag registered;
  std::call_once(registered, [] {
#if defined(__unix__) || defined(__APPLE__)
    pthread_atfork(nullptr, nullptr, [] { current_pool.store(nullptr); });
#endif
  });
  ThreadPool* p = current_pool.load();
  if (p == nullptr) {
    static std::mutex creating;
    std::lock_guard<std::mutex> lock(creating);
    p = current_pool.load();
    if (p == nullptr) {
      p = new ThreadPool(default_thread_count());  // lives until the process ends
      current_pool.store(p);
    }
  }
  return *p;
}

struct AlignedFree {
  void operator()(void* p) const { std::free(p); }
};

struct Scratch {
  std::unique_ptr<void, AlignedFree> memory;
  std::int64_t bytes = 0;
};

constexpr int scratch_slots = 2;
thread_local Scratch scratch[scratch_slots];
std::atomic<std::int64_t> peak_scratch{0};

}  // namespace

int num_threads() { return pool().threads(); }

void set_num_threads(std::int64_t n) {
  if (n < 1 || n > 1024) throw ValueError(concat("n: expected a thread count from 1 to 1024, got ", n));
  pool().resize(static_cast<int>(n));
}

void parallel_for_raw(std::int64_t count, void (*task)(void*, std::int64_t), void* context) {
  if (count > 0) pool().run(count, task, context);
}

void* thread_scratch(std::int64_t bytes, int slot) {
  Scratch& own = scratch[slot];
  if (bytes > own.bytes) {
    const std::int64_t rounded = (bytes + 63) / 64 * 64;
    own.memory.reset();  // release before allocating, so the peak counts one buffer of this slot
    own.bytes = 0;
    own.memory.reset(std::aligned_alloc(64, static_cast<std::size_t>(rounded)));
    if (!own.memory) throw_working_memory_error(bytes);
    own.bytes = rounded;
    std::int64_t held = 0;
    for (const Scratch& s : scratch) held += s.bytes;
    std::int64_t peak = peak_scratch.load();
    while (held > peak && !peak_scratch.compare_exchange_weak(peak, held)) {
    }
  }
  return own.memory.get();
}

std::int64_t peak_thread_scratch_bytes() { return peak_scratch.load(); }

}  // namespace gradstate::cpu
