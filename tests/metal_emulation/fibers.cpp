#include "fibers.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cstdlib>

#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define MSL_EMULATOR_ASAN 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__)
#define MSL_EMULATOR_ASAN 1
#endif

#if defined(MSL_EMULATOR_ASAN)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif

namespace msl_emulator {
namespace detail {
namespace {

// Announces a switch to the stack [bottom, bottom + bytes); `fake_stack` saves the fake stack of the
// context being left (null when it is left for good).
void before_switch(void** fake_stack, const void* bottom, std::size_t bytes) {
#if defined(MSL_EMULATOR_ASAN)
  __sanitizer_start_switch_fiber(fake_stack, bottom, bytes);
#else
  (void)fake_stack, (void)bottom, (void)bytes;
#endif
}

// Completes a switch back into a context whose fake stack was saved in `fake_stack`; reports the stack that
// was left.
void after_switch(void* fake_stack, const void** left_bottom, std::size_t* left_bytes) {
#if defined(MSL_EMULATOR_ASAN)
  __sanitizer_finish_switch_fiber(fake_stack, left_bottom, left_bytes);
#else
  (void)fake_stack, (void)left_bottom, (void)left_bytes;
#endif
}

}  // namespace

FiberSet::FiberSet(std::size_t count, std::size_t stack_bytes, void (*entry)())
    : fibers_(count),
      stack_bytes_(stack_bytes),
      guard_bytes_(static_cast<std::size_t>(sysconf(_SC_PAGESIZE))) {
  memory_bytes_ = count * (guard_bytes_ + stack_bytes_);
  void* memory = mmap(nullptr, memory_bytes_, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (memory == MAP_FAILED) return;
  memory_ = memory;
  for (std::size_t i = 0; i < count; ++i) {
    char* guard = static_cast<char*>(memory_) + i * (guard_bytes_ + stack_bytes_);
    mprotect(guard, guard_bytes_, PROT_NONE);
    Fiber& fiber = fibers_[i];
    fiber.stack = guard + guard_bytes_;
    getcontext(&fiber.context);
    fiber.context.uc_stack.ss_sp = fiber.stack;
    fiber.context.uc_stack.ss_size = stack_bytes_;
    fiber.context.uc_link = nullptr;  // entry never returns
    makecontext(&fiber.context, entry, 0);
    // makecontext has set up the stack; ASan's swapcontext interceptor would otherwise clear the shadow of
    // the whole stack at every resume, forgetting the redzones of the frames that were live across the
    // switch.
    fiber.context.uc_stack.ss_size = 0;
  }
}

FiberSet::~FiberSet() {
  if (memory_ == nullptr) return;
#if defined(MSL_EMULATOR_ASAN)
  // Frames left on a stack keep their redzones poisoned in ASan's shadow; clear them before the pages go
  // back to the system and come back as someone else's memory.
  for (const Fiber& fiber : fibers_) __asan_unpoison_memory_region(fiber.stack, stack_bytes_);
#endif
  munmap(memory_, memory_bytes_);
}

void FiberSet::resume(std::size_t index) {
  Fiber& fiber = fibers_[index];
  fiber.started = true;
  before_switch(&scheduler_fake_stack_, fiber.stack, stack_bytes_);
  swapcontext(&scheduler_, &fiber.context);
  after_switch(scheduler_fake_stack_, nullptr, nullptr);
}

void FiberSet::entered() { after_switch(nullptr, &scheduler_stack_bottom_, &scheduler_stack_bytes_); }

void FiberSet::suspend(std::size_t index) {
  Fiber& fiber = fibers_[index];
  before_switch(&fiber.fake_stack, scheduler_stack_bottom_, scheduler_stack_bytes_);
  swapcontext(&fiber.context, &scheduler_);
  after_switch(fiber.fake_stack, nullptr, nullptr);
}

void FiberSet::finish() {
  before_switch(nullptr, scheduler_stack_bottom_, scheduler_stack_bytes_);
  setcontext(&scheduler_);
  std::abort();  // setcontext returns only on failure
}

}  // namespace detail
}  // namespace msl_emulator
