// A persistent pool of worker threads for the CPU kernels (no OpenMP, so nothing extra is needed to build
// on any platform).
//
// parallel_for runs task(i) for every i in [0, count) on the pool and the calling thread, and returns when
// all are done. Which thread runs which task varies from call to call, so kernels that want the same bits
// for any thread count give every task a fixed piece of the work and combine the pieces in a fixed order.
//
// This header is included by the per-ISA kernel files, so it defines nothing that those files could
// instantiate differently: the template below is specific to each caller's lambda type.
#pragma once

#include <cstdint>
#include <type_traits>

namespace gradstate::cpu {

// Threads that kernels use, the caller included: GRADSTATE_NUM_THREADS, else the hardware's count.
int num_threads();
// Resizes the pool; n >= 1.
void set_num_threads(std::int64_t n);

void parallel_for_raw(std::int64_t count, void (*task)(void* context, std::int64_t index), void* context);

template <typename Task>
void parallel_for(std::int64_t count, Task&& task) {
  using Callable = std::remove_reference_t<Task>;
  parallel_for_raw(
      count, [](void* context, std::int64_t index) { (*static_cast<Callable*>(context))(index); },
      const_cast<void*>(static_cast<const void*>(&task)));
}

// Scratch memory of the calling thread, at least `bytes`, 64-byte aligned, reused across calls; valid
// until the same thread asks again for the same slot, and kept at its largest while the thread lives (a
// worker until the pool is resized).
// Slot 0 or 1: slot 1 is for a task that keeps data there while it calls kernels that use slot 0 (its
// copies of a block of the inputs, say).
void* thread_scratch(std::int64_t bytes, int slot = 0);

// The most scratch memory any one thread has held in all its slots at once, in bytes.
std::int64_t peak_thread_scratch_bytes();

}  // namespace gradstate::cpu
