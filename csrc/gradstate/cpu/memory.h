// Memory a kernel needs for the length of one call (packed weights, partial sums, layout copies), freed when
// the call ends — also when it ends by an exception. Defined out of line, so that the per-ISA kernel files
// that use it share no inline code (see kernels/kernels.h). Blocks come from the host block cache
// (core/host_memory.h), so a call that repeats the last one's sizes does not page-fault its memory in again.
#pragma once

#include <cstddef>
#include <cstdint>

namespace gradstate::cpu {

class Memory {
 public:
  // At least `bytes`, 64-byte aligned, zero-filled when `zeroed`; MemoryError when it cannot be had.
  explicit Memory(std::int64_t bytes, bool zeroed = false);
  ~Memory();
  Memory(const Memory&) = delete;
  Memory& operator=(const Memory&) = delete;

  float* floats() const { return static_cast<float*>(data_); }
  void* data() const { return data_; }

 private:
  void* data_;
  std::size_t bytes_;
};

// Throws the MemoryError of a kernel's working memory of `bytes` that could not be had (Memory's, or a
// thread's scratch), which says its size.
[[noreturn]] void throw_working_memory_error(std::int64_t bytes);

}  // namespace gradstate::cpu
