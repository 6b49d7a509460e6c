// A mock Metal device for Linux, reached through the same Objective-C runtime functions that the host code
// calls on macOS (objc_getClass, sel_registerName, object_getClass, class_respondsToSelector,
// class_getMethodImplementation, sel_getName) and MTLCreateSystemDefaultDevice. Its compute dispatches run
// the real .metal kernels in the emulator when the command buffer is waited on, and it checks how the host
// uses the API: encoder order, indices, setBytes sizes, threadgroup sizes and memory, commit and wait,
// reference counts and autorelease pools.
//
// This header is the harness's control panel.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include "emulator.h"

namespace mock_metal {

// One dispatch as the mock executed it.
struct DispatchRecord {
  std::string kernel;
  msl_emulator::Dim3 threadgroups;
  msl_emulator::Dim3 threads_per_threadgroup;
  std::size_t threadgroup_memory_bytes;
  unsigned seed;
};

// The emulator schedule of the following dispatches (0: threads in index order; else shuffled).
void set_schedule_seed(unsigned seed);

// Dispatches run since the last call.
std::vector<DispatchRecord> take_dispatches();

// API misuse and kernel errors seen since the last call (each also fails its command buffer).
std::vector<std::string> take_errors();

// Mock objects of `class_name` alive now (e.g. "MTLBuffer", "MTLCommandBuffer").
std::size_t live_objects(const std::string& class_name);

// A launcher bug planted in the next command buffer, to prove the harness notices it.
enum class Fault {
  none,
  drop_first_set_bytes,       // the encoder ignores its first setBytes:length:atIndex:
  swap_first_buffer_indices,  // the first two setBuffer:offset:atIndex: calls trade indices
  shorten_first_set_bytes,    // the first setBytes passes 4 bytes fewer than the struct
};
void inject_fault(Fault fault);

}  // namespace mock_metal
