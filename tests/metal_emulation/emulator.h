// Runs Metal compute kernels on the CPU. The kernels are the project's .metal files, rewritten by msl2cpp.py
// into C++ translation units that include the MSL shim (shim/metal_stdlib) and register every kernel by name.
// This header is the host side: it defines no MSL keywords, so the mock Metal device and tests include it
// like any C++ header.
//
// Kernels register themselves through static initializers in their generated translation units. Link those
// as object files or sources: a static library would let the linker drop them, and the kernels with them.
#pragma once

#include <cstddef>
#include <map>
#include <string>
#include <vector>

namespace msl_emulator {

struct Dim3 {
  unsigned x = 1, y = 1, z = 1;
};

struct Options {
  // 0: threads resumed in thread-index order and threadgroups run in grid order; otherwise a shuffled order
  // drawn from this seed at every scheduling round (threadgroup order shuffled too). The same seed gives the
  // same schedule.
  unsigned seed = 0;
  unsigned simd_width = 32;  // 1 to 64
};

struct Report {
  std::vector<std::string> errors;           // contract violations and barrier misuse: the dispatch is wrong
  std::vector<std::string> warnings;         // e.g. divergent simd collectives
  std::size_t threadgroup_memory_bytes = 0;  // static (kernel-scope arrays) + dynamic ([[threadgroup(i)]])
};

// What an encoder has set: the arguments of one dispatch.
class Bindings {
 public:
  // setBuffer:offset:atIndex: (data is the contents plus the offset, length what remains of the buffer) and
  // setBytes:length:atIndex:. The caller keeps the bytes alive until the dispatch returns.
  void set_buffer(int index, void* data, std::size_t length);
  // setThreadgroupMemoryLength:atIndex:
  void set_threadgroup_memory_length(int index, std::size_t length);

  struct Buffer {
    void* data;
    std::size_t length;
  };
  const std::map<int, Buffer>& buffers() const { return buffers_; }
  const std::map<int, std::size_t>& threadgroup_memory_lengths() const { return threadgroup_memory_lengths_; }

 private:
  std::map<int, Buffer> buffers_;
  std::map<int, std::size_t> threadgroup_memory_lengths_;
};

bool has_kernel(const std::string& name);
std::vector<std::string> kernel_names();

// Runs every threadgroup of the grid (dispatchThreadgroups:threadsPerThreadgroup:), one threadgroup at a
// time, each GPU thread a fiber. Contract violations are reported as errors, never thrown and never a crash:
// a
// [[buffer(i)]] the host did not bind, a `constant T&` whose bound length is < sizeof(T), a
// [[threadgroup(i)]] without a length, more than 1024 threads per threadgroup (or more than the kernel's
// [[max_total_threads_per_threadgroup]]), more than 32 KiB of threadgroup memory (static + dynamic), a
// dynamic length not a multiple of 16, a threadgroup_barrier not reached by every thread of the threadgroup
// or reached at different call sites, an exception thrown by a kernel thread. The kernel does not run when
// its arguments are wrong. Dispatches from different host threads are independent.
Report dispatch_threadgroups(const std::string& kernel, const Bindings& bindings, Dim3 threadgroups,
                             Dim3 threads_per_threadgroup, const Options& options);

}  // namespace msl_emulator
