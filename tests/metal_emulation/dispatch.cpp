// dispatch_threadgroups: checks a dispatch's arguments against the kernel's parameters, then runs its
// threadgroups one at a time, every GPU thread on a fiber. A scheduling round resumes every ready thread
// until it blocks (at a threadgroup_barrier or a simd collective) or returns; then the collectives whose
// lanes have all arrived are completed, and when only barrier waiters are left the barrier is released.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <exception>
#include <memory>
#include <new>
#include <string>
#include <vector>

#include "diagnostics.h"
#include "emulator.h"
#include "fibers.h"
#include "kernel_abi.h"
#include "kernel_registry.h"

namespace msl_emulator {

void Bindings::set_buffer(int index, void* data, std::size_t length) { buffers_[index] = {data, length}; }

void Bindings::set_threadgroup_memory_length(int index, std::size_t length) {
  threadgroup_memory_lengths_[index] = length;
}

namespace detail {
namespace {

// Apple GPU limits.
constexpr std::uint64_t kMaxThreadsPerThreadgroup = 1024;
constexpr std::size_t kMaxThreadgroupMemoryBytes = 32 * 1024;
constexpr std::size_t kThreadgroupMemoryLengthGranule = 16;  // setThreadgroupMemoryLength wants multiples

constexpr std::size_t kThreadgroupMemoryAlignment = 16;  // enough for every MSL type
// Room for a kernel thread's frames under AddressSanitizer, which enlarges them with redzones.
constexpr std::size_t kFiberStackBytes = 256 * 1024;
// Fresh threadgroup memory holds these bytes: read as a float they are NaN, as an integer all ones, so a read
// before any write (or before the barrier that orders it) shows in the results.
constexpr unsigned char kPoisonByte = 0xFF;

std::string describe(Uint3 v) {
  return "(" + std::to_string(v.x) + ", " + std::to_string(v.y) + ", " + std::to_string(v.z) + ")";
}

std::string describe(CallSite site) { return std::string(site.file) + ":" + std::to_string(site.line); }

bool same_site(CallSite a, CallSite b) {
  return a.line == b.line && (a.file == b.file || std::strcmp(a.file, b.file) == 0);
}

// Threadgroup memory of exactly the requested size, so that AddressSanitizer sees accesses past its end.
class MemoryBlock {
 public:
  MemoryBlock(std::size_t bytes, std::size_t alignment)
      : bytes_(bytes), alignment_(alignment), data_(::operator new(bytes, std::align_val_t(alignment))) {
    poison();
  }
  ~MemoryBlock() { ::operator delete(data_, std::align_val_t(alignment_)); }
  MemoryBlock(const MemoryBlock&) = delete;
  MemoryBlock& operator=(const MemoryBlock&) = delete;

  void* data() const { return data_; }
  void poison() { std::memset(data_, kPoisonByte, bytes_); }

 private:
  std::size_t bytes_;
  std::size_t alignment_;
  void* data_;
};

// splitmix64: the same sequence on every platform, which std::shuffle with a standard distribution does not
// promise, so that a seed names one schedule everywhere.
class Shuffler {
 public:
  explicit Shuffler(unsigned seed) : state_(seed) {}

  template <class T>
  void shuffle(std::vector<T>& items) {
    for (std::size_t i = items.size(); i > 1; --i) std::swap(items[i - 1], items[next() % i]);
  }

 private:
  std::uint64_t next() {
    std::uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }

  std::uint64_t state_;
};

enum class ThreadState { ready, at_threadgroup_barrier, at_simd_collective, finished };

struct GpuThread {
  ThreadInfo info;
  ThreadState state = ThreadState::ready;
  CallSite site{};                                      // where it waits
  alignas(16) unsigned char value[kMaxLaneValueBytes];  // its contribution to the collective it waits at
  SimdExchange exchange{};                              // the outcome of that collective
};

// What every lane contributed to one completed collective.
struct LaneValues {
  unsigned char values[kMaxSimdWidth][kMaxLaneValueBytes];
};

class Dispatch {
 public:
  Dispatch(const KernelDescriptor& kernel, const Options& options, Diagnostics& diagnostics)
      : kernel_(kernel), options_(options), diagnostics_(diagnostics), shuffler_(options.seed) {}

  // Checks the launch against the kernel and Metal's limits and binds the arguments; false when the kernel
  // must not run.
  bool bind(const Bindings& bindings, Dim3 threadgroups, Dim3 threads_per_threadgroup);
  void run();
  std::size_t threadgroup_memory_bytes() const { return static_bytes_ + dynamic_bytes_; }

  // Called on the fibers.
  void run_fiber();
  void* threadgroup_variable(int slot, std::size_t bytes, std::size_t alignment);
  void wait_at_threadgroup_barrier(CallSite site);
  SimdExchange exchange_in_simdgroup(const void* value, std::size_t bytes, CallSite site);
  void warn(const char* message, CallSite site) {
    diagnostics_.warning(std::string(message) + " at " + describe(site), where());
  }

 private:
  std::string where() const { return "threadgroup " + describe(threadgroup_); }
  void check_limits(Dim3 threadgroups, Dim3 threads_per_threadgroup);
  void bind_arguments(const Bindings& bindings);
  void run_threadgroup(Uint3 position);
  void start_threads(Uint3 position);
  bool complete_simd_collectives();
  bool release_threadgroup_barrier();

  const KernelDescriptor& kernel_;
  const Options options_;
  Diagnostics& diagnostics_;
  Shuffler shuffler_;

  Uint3 threadgroups_{};
  Uint3 threadgroup_size_{};
  std::size_t thread_count_ = 0;
  unsigned simdgroup_count_ = 0;

  std::vector<void*> arguments_;                              // per kernel parameter
  std::vector<std::unique_ptr<MemoryBlock>> dynamic_memory_;  // [[threadgroup(i)]] blocks
  std::vector<std::unique_ptr<MemoryBlock>> static_memory_;   // kernel-scope variables, by slot
  std::size_t dynamic_bytes_ = 0;
  std::size_t static_bytes_ = 0;

  FiberSet* fibers_ = nullptr;
  std::vector<GpuThread> threads_;
  std::vector<std::size_t> round_;  // the threads resumed in this scheduling round, in order
  std::size_t running_ = 0;         // the thread whose fiber runs
  bool shutting_down_ = false;
  Uint3 threadgroup_{};

  std::vector<std::unique_ptr<LaneValues>> lane_values_;  // reused by every completion pass
  std::vector<CallSite> sites_;
};

thread_local Dispatch* t_dispatch = nullptr;

// Makes a dispatch the one the runtime calls of this host thread reach, restoring the previous one after.
class ActiveDispatch {
 public:
  explicit ActiveDispatch(Dispatch* dispatch) : previous_(t_dispatch) { t_dispatch = dispatch; }
  ~ActiveDispatch() { t_dispatch = previous_; }
  ActiveDispatch(const ActiveDispatch&) = delete;
  ActiveDispatch& operator=(const ActiveDispatch&) = delete;

 private:
  Dispatch* previous_;
};

void fiber_entry() { t_dispatch->run_fiber(); }

bool Dispatch::bind(const Bindings& bindings, Dim3 threadgroups, Dim3 threads_per_threadgroup) {
  check_limits(threadgroups, threads_per_threadgroup);
  for (const auto& [index, length] : bindings.threadgroup_memory_lengths()) {
    if (length % kThreadgroupMemoryLengthGranule != 0) {
      diagnostics_.error("setThreadgroupMemoryLength at index " + std::to_string(index) + ": " +
                         std::to_string(length) + " bytes is not a multiple of 16");
    }
  }
  bind_arguments(bindings);
  if (dynamic_bytes_ > kMaxThreadgroupMemoryBytes) {
    diagnostics_.error("threadgroup memory lengths add up to " + std::to_string(dynamic_bytes_) +
                       " bytes, more than the 32 KiB of a threadgroup");
  }
  return !diagnostics_.has_errors();
}

void Dispatch::check_limits(Dim3 threadgroups, Dim3 threads_per_threadgroup) {
  threadgroups_ = {threadgroups.x, threadgroups.y, threadgroups.z};
  threadgroup_size_ = {threads_per_threadgroup.x, threads_per_threadgroup.y, threads_per_threadgroup.z};
  const std::uint64_t threads =
      std::uint64_t(threadgroup_size_.x) * threadgroup_size_.y * threadgroup_size_.z;
  if (threadgroups.x == 0 || threadgroups.y == 0 || threadgroups.z == 0) {
    diagnostics_.error("threadgroups per grid " + describe(threadgroups_) + " has a zero dimension");
  }
  if (threads == 0) {
    diagnostics_.error("threads per threadgroup " + describe(threadgroup_size_) + " has a zero dimension");
  } else if (threads > kMaxThreadsPerThreadgroup) {
    diagnostics_.error("threads per threadgroup " + describe(threadgroup_size_) + " makes " +
                       std::to_string(threads) + " threads, more than 1024");
  } else if (kernel_.max_total_threads_per_threadgroup != 0 &&
             threads > kernel_.max_total_threads_per_threadgroup) {
    diagnostics_.error("threads per threadgroup " + describe(threadgroup_size_) + " makes " +
                       std::to_string(threads) + " threads, more than the kernel's " +
                       "[[max_total_threads_per_threadgroup(" +
                       std::to_string(kernel_.max_total_threads_per_threadgroup) + ")]]");
  }
  if (options_.simd_width == 0 || options_.simd_width > kMaxSimdWidth) {
    diagnostics_.error("simd width " + std::to_string(options_.simd_width) + " is not within 1 to 64");
  }
  thread_count_ = static_cast<std::size_t>(threads);
}

void Dispatch::bind_arguments(const Bindings& bindings) {
  arguments_.assign(kernel_.argument_count, nullptr);
  for (std::size_t i = 0; i < kernel_.argument_count; ++i) {
    const ArgumentSpec& spec = kernel_.arguments[i];
    const std::string parameter = "parameter " + std::to_string(i) + " of " + kernel_.name;
    if (spec.kind == ArgumentKind::buffer) {
      const std::string attribute = "[[buffer(" + std::to_string(spec.index) + ")]]";
      auto it = bindings.buffers().find(spec.index);
      if (it == bindings.buffers().end() || it->second.data == nullptr) {
        diagnostics_.error(attribute + " (" + parameter + ") is not bound");
      } else if (it->second.length < kernel_.reference_bytes[i]) {
        diagnostics_.error(attribute + " (" + parameter + ") is a reference to " +
                           std::to_string(kernel_.reference_bytes[i]) + " bytes, but only " +
                           std::to_string(it->second.length) + " are bound");
      } else {
        arguments_[i] = it->second.data;
      }
    } else if (spec.kind == ArgumentKind::threadgroup_memory) {
      auto it = bindings.threadgroup_memory_lengths().find(spec.index);
      if (it == bindings.threadgroup_memory_lengths().end()) {
        diagnostics_.error("[[threadgroup(" + std::to_string(spec.index) + ")]] (" + parameter +
                           ") has no threadgroup memory length");
      } else {
        dynamic_memory_.push_back(std::make_unique<MemoryBlock>(it->second, kThreadgroupMemoryAlignment));
        dynamic_bytes_ += it->second;
        arguments_[i] = dynamic_memory_.back()->data();
      }
    }
  }
}

void Dispatch::run() {
  FiberSet fibers(thread_count_, kFiberStackBytes, &fiber_entry);
  if (!fibers.ok()) {
    diagnostics_.error("could not map " + std::to_string(thread_count_) + " fiber stacks");
    return;
  }
  fibers_ = &fibers;
  threads_.assign(thread_count_, GpuThread{});
  round_.reserve(thread_count_);
  simdgroup_count_ = unsigned((thread_count_ + options_.simd_width - 1) / options_.simd_width);

  const std::uint64_t per_slice = std::uint64_t(threadgroups_.x) * threadgroups_.y;
  std::vector<std::uint64_t> order(per_slice * threadgroups_.z);
  for (std::uint64_t i = 0; i < order.size(); ++i) order[i] = i;
  if (options_.seed != 0) shuffler_.shuffle(order);
  for (std::uint64_t i : order) {
    const std::uint64_t in_slice = i % per_slice;
    run_threadgroup({unsigned(in_slice % threadgroups_.x), unsigned(in_slice / threadgroups_.x),
                     unsigned(i / per_slice)});
  }

  // Let every fiber leave its loop, so that no frame stays behind on the stacks.
  shutting_down_ = true;
  for (std::size_t i = 0; i < thread_count_; ++i) {
    if (!fibers.started(i)) continue;
    running_ = i;
    fibers.resume(i);
  }
  fibers_ = nullptr;
}

void Dispatch::run_threadgroup(Uint3 position) {
  start_threads(position);
  for (const auto& block : dynamic_memory_) block->poison();
  for (const auto& block : static_memory_) {
    if (block) block->poison();
  }
  for (;;) {
    round_.clear();
    for (std::size_t i = 0; i < thread_count_; ++i) {
      if (threads_[i].state == ThreadState::ready) round_.push_back(i);
    }
    if (options_.seed != 0) shuffler_.shuffle(round_);
    for (std::size_t i : round_) {
      running_ = i;
      fibers_->resume(i);
    }
    // Every thread now waits or has returned.
    if (complete_simd_collectives()) continue;
    if (!release_threadgroup_barrier()) return;
  }
}

void Dispatch::start_threads(Uint3 position) {
  threadgroup_ = position;
  const unsigned width = options_.simd_width;
  const Uint3 size = threadgroup_size_;
  const Uint3 grid = {threadgroups_.x * size.x, threadgroups_.y * size.y, threadgroups_.z * size.z};
  for (std::size_t k = 0; k < thread_count_; ++k) {
    const Uint3 local = {unsigned(k % size.x), unsigned(k / size.x % size.y), unsigned(k / size.x / size.y)};
    ThreadInfo& info = threads_[k].info;
    info.thread_position_in_threadgroup = local;
    info.thread_position_in_grid = {position.x * size.x + local.x, position.y * size.y + local.y,
                                    position.z * size.z + local.z};
    info.threadgroup_position_in_grid = position;
    info.threads_per_threadgroup = size;
    info.threadgroups_per_grid = threadgroups_;
    info.threads_per_grid = grid;
    info.thread_index_in_threadgroup = unsigned(k);
    info.thread_index_in_simdgroup = unsigned(k % width);
    info.simdgroup_index_in_threadgroup = unsigned(k / width);
    info.threads_per_simdgroup = width;
    info.simdgroups_per_threadgroup = simdgroup_count_;
    threads_[k].state = ThreadState::ready;
  }
}

// The lanes of a simdgroup waiting at the same call site take part in one collective; lanes that returned or
// wait elsewhere are inactive in it, as lanes of a divergent branch are on the GPU.
bool Dispatch::complete_simd_collectives() {
  const unsigned width = options_.simd_width;
  std::size_t used = 0;
  for (unsigned simdgroup = 0; simdgroup < simdgroup_count_; ++simdgroup) {
    const std::size_t first = std::size_t(simdgroup) * width;
    const std::size_t end = std::min(thread_count_, first + width);
    sites_.clear();
    for (std::size_t i = first; i < end; ++i) {
      const GpuThread& thread = threads_[i];
      if (thread.state != ThreadState::at_simd_collective) continue;
      auto same = [&](CallSite site) { return same_site(site, thread.site); };
      if (std::none_of(sites_.begin(), sites_.end(), same)) sites_.push_back(thread.site);
    }
    if (sites_.size() > 1) {
      diagnostics_.warning("lanes of simdgroup " + std::to_string(simdgroup) +
                               " wait at different simd collectives (" + describe(sites_[0]) + " and " +
                               describe(sites_[1]) + "): each set of lanes exchanges only among itself",
                           where());
    }
    for (CallSite site : sites_) {
      if (used == lane_values_.size()) lane_values_.push_back(std::make_unique<LaneValues>());
      LaneValues& values = *lane_values_[used++];
      std::uint64_t active = 0;
      for (std::size_t i = first; i < end; ++i) {
        GpuThread& thread = threads_[i];
        if (thread.state != ThreadState::at_simd_collective || !same_site(thread.site, site)) continue;
        active |= std::uint64_t(1) << (i - first);
        std::memcpy(values.values[i - first], thread.value, kMaxLaneValueBytes);
      }
      for (std::size_t i = first; i < end; ++i) {
        GpuThread& thread = threads_[i];
        if (thread.state != ThreadState::at_simd_collective || !same_site(thread.site, site)) continue;
        thread.exchange = {active, unsigned(i - first), width, values.values};
        thread.state = ThreadState::ready;
      }
    }
  }
  return used > 0;
}

// False when every thread has returned. A barrier must be reached by every thread of the threadgroup, all at
// the same call: otherwise the GPU may hang or let threads pass without waiting for the others.
bool Dispatch::release_threadgroup_barrier() {
  std::size_t waiting = 0;
  std::size_t returned = 0;
  const GpuThread* first = nullptr;
  const GpuThread* elsewhere = nullptr;
  for (const GpuThread& thread : threads_) {
    if (thread.state == ThreadState::finished) {
      ++returned;
    } else if (thread.state == ThreadState::at_threadgroup_barrier) {
      ++waiting;
      if (first == nullptr) {
        first = &thread;
      } else if (elsewhere == nullptr && !same_site(thread.site, first->site)) {
        elsewhere = &thread;
      }
    }
  }
  if (waiting == 0) return false;
  if (returned > 0) {
    diagnostics_.error("threadgroup_barrier at " + describe(first->site) + " reached by " +
                           std::to_string(waiting) + " threads while " + std::to_string(returned) +
                           " threads of the threadgroup returned without reaching it",
                       where());
  }
  if (elsewhere != nullptr) {
    diagnostics_.error("threads of one threadgroup wait at different threadgroup_barrier calls: thread " +
                           std::to_string(first->info.thread_index_in_threadgroup) + " at " +
                           describe(first->site) + ", thread " +
                           std::to_string(elsewhere->info.thread_index_in_threadgroup) + " at " +
                           describe(elsewhere->site),
                       where());
  }
  for (GpuThread& thread : threads_) {
    if (thread.state == ThreadState::at_threadgroup_barrier) thread.state = ThreadState::ready;
  }
  return true;
}

// Every fiber loops: it runs its thread of the current threadgroup, then waits for the next threadgroup.
void Dispatch::run_fiber() {
  const std::size_t index = running_;
  fibers_->entered();
  while (!shutting_down_) {
    try {
      kernel_.run_thread(arguments_.data(), kernel_.arguments, threads_[index].info);
    } catch (const std::exception& e) {
      diagnostics_.error(std::string("a kernel thread threw: ") + e.what(), where());
    } catch (...) {
      diagnostics_.error("a kernel thread threw an exception", where());
    }
    threads_[index].state = ThreadState::finished;
    fibers_->suspend(index);
  }
  fibers_->finish();
}

void* Dispatch::threadgroup_variable(int slot, std::size_t bytes, std::size_t alignment) {
  if (std::size_t(slot) >= static_memory_.size()) static_memory_.resize(std::size_t(slot) + 1);
  std::unique_ptr<MemoryBlock>& block = static_memory_[std::size_t(slot)];
  if (!block) {
    block = std::make_unique<MemoryBlock>(bytes, std::max(alignment, kThreadgroupMemoryAlignment));
    const bool was_within_limit = threadgroup_memory_bytes() <= kMaxThreadgroupMemoryBytes;
    static_bytes_ += bytes;
    if (was_within_limit && threadgroup_memory_bytes() > kMaxThreadgroupMemoryBytes) {
      diagnostics_.error("threadgroup memory of " + std::to_string(static_bytes_) +
                         " bytes in kernel-scope " + "variables and " + std::to_string(dynamic_bytes_) +
                         " bytes of threadgroup memory lengths is more than the 32 KiB of a threadgroup");
    }
  }
  return block->data();
}

void Dispatch::wait_at_threadgroup_barrier(CallSite site) {
  const std::size_t index = running_;
  threads_[index].state = ThreadState::at_threadgroup_barrier;
  threads_[index].site = site;
  fibers_->suspend(index);
}

SimdExchange Dispatch::exchange_in_simdgroup(const void* value, std::size_t bytes, CallSite site) {
  const std::size_t index = running_;
  GpuThread& thread = threads_[index];
  std::memcpy(thread.value, value, std::min(bytes, kMaxLaneValueBytes));
  thread.state = ThreadState::at_simd_collective;
  thread.site = site;
  fibers_->suspend(index);
  return thread.exchange;
}

}  // namespace

void* threadgroup_variable(int slot, std::size_t bytes, std::size_t alignment) {
  return t_dispatch->threadgroup_variable(slot, bytes, alignment);
}

void wait_at_threadgroup_barrier(CallSite site) { t_dispatch->wait_at_threadgroup_barrier(site); }

SimdExchange exchange_in_simdgroup(const void* value, std::size_t bytes, CallSite site) {
  return t_dispatch->exchange_in_simdgroup(value, bytes, site);
}

void warn(const char* message, CallSite site) { t_dispatch->warn(message, site); }

}  // namespace detail

Report dispatch_threadgroups(const std::string& kernel, const Bindings& bindings, Dim3 threadgroups,
                             Dim3 threads_per_threadgroup, const Options& options) {
  Report report;
  detail::Diagnostics diagnostics;
  try {
    const detail::KernelDescriptor* descriptor = detail::find_kernel(kernel);
    if (descriptor == nullptr) {
      diagnostics.error("no kernel named " + kernel + " is linked");
    } else {
      detail::Dispatch dispatch(*descriptor, options, diagnostics);
      if (dispatch.bind(bindings, threadgroups, threads_per_threadgroup)) {
        detail::ActiveDispatch active(&dispatch);
        dispatch.run();
      }
      report.threadgroup_memory_bytes = dispatch.threadgroup_memory_bytes();
    }
  } catch (const std::exception& e) {
    diagnostics.error(std::string("the emulator failed: ") + e.what());
  }
  report.errors = diagnostics.errors();
  report.warnings = diagnostics.warnings();
  return report;
}

}  // namespace msl_emulator
