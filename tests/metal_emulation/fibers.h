// A fixed set of fibers on which the GPU threads of a dispatch run, one fiber per thread of a threadgroup,
// reused by every threadgroup. A scheduler on the host thread's own stack resumes them; a fiber runs until it
// suspends itself (at a barrier or simd collective) or finishes.
//
// Stacks are mapped once per set, with an inaccessible guard page below each so that an overflow faults
// instead of corrupting a neighbour. Under AddressSanitizer every switch is announced
// (__sanitizer_start_switch_fiber / __sanitizer_finish_switch_fiber) so that ASan knows which stack is live:
// without that it reports false stack overflows and misses real stack errors.
#pragma once

#include <ucontext.h>

#include <cstddef>
#include <vector>

namespace msl_emulator {
namespace detail {

class FiberSet {
 public:
  // Every fiber starts in `entry`, which must end with finish() and never return.
  FiberSet(std::size_t count, std::size_t stack_bytes, void (*entry)());
  ~FiberSet();
  FiberSet(const FiberSet&) = delete;
  FiberSet& operator=(const FiberSet&) = delete;

  bool ok() const { return memory_ != nullptr; }  // false when the stacks could not be mapped
  bool started(std::size_t fiber) const { return fibers_[fiber].started; }

  // Scheduler side: runs `fiber` until it suspends or finishes.
  void resume(std::size_t fiber);

  // Fiber side. entered() is the first call of `entry` on a new fiber.
  void entered();
  void suspend(std::size_t fiber);
  [[noreturn]] void finish();

 private:
  struct Fiber {
    ucontext_t context;
    char* stack = nullptr;
    bool started = false;
    void* fake_stack = nullptr;  // ASan's fake stack of the suspended fiber
  };

  std::vector<Fiber> fibers_;
  std::size_t stack_bytes_;
  std::size_t guard_bytes_;
  void* memory_ = nullptr;
  std::size_t memory_bytes_ = 0;
  ucontext_t scheduler_{};
  void* scheduler_fake_stack_ = nullptr;
  const void* scheduler_stack_bottom_ = nullptr;
  std::size_t scheduler_stack_bytes_ = 0;
};

}  // namespace detail
}  // namespace msl_emulator
