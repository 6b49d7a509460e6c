// Commands: one command buffer with one compute encoder, used by the launchers of every Metal op.
//
// Dispatches run in the order they are encoded, each seeing the writes of the ones before (a serial compute
// encoder). Buffers not resident in Metal memory (numpy inputs borrowed for one call) are staged in
// temporary shared buffers; outputs staged that way are copied back after the GPU is done.
#pragma once

#include <cstddef>
#include <memory>
#include <vector>

#include "gradstate/core/buffer.h"
#include "gradstate/metal/device.h"
#include "gradstate/metal/objc.h"

namespace gradstate::metal {

using objc::Size;

class Commands {
 public:
  explicit Commands(Device& device);
  ~Commands();
  Commands(const Commands&) = delete;
  Commands& operator=(const Commands&) = delete;

  // Selects the kernel of the following arguments and dispatches.
  void set_kernel(const char* name);
  // An input read by the kernel at [[buffer(index)]].
  void set_buffer(const Buffer& buffer, int index);
  // A buffer the kernel writes (and may read) at [[buffer(index)]].
  void set_output(Buffer& buffer, int index);
  // A small constant struct at [[buffer(index)]] (setBytes:length:atIndex:).
  template <class Params>
  void set_params(const Params& params, int index) {
    set_bytes(&params, sizeof(Params), index);
  }
  void set_bytes(const void* data, std::size_t size, int index);
  // The length of [[threadgroup(index)]] memory, rounded up to 16 bytes as Metal requires.
  void set_threadgroup_memory(std::size_t bytes, int index);
  void dispatch_threadgroups(Size threadgroups, Size threads_per_threadgroup);

  // Ends encoding, commits, waits, and copies staged outputs back; throws std::runtime_error naming the
  // GPU's error when the command buffer failed.
  void run();

  // The largest threadgroup the current kernel's pipeline allows.
  std::size_t max_threads_per_threadgroup() const;

 private:
  struct Staged {
    objc::Object metal_buffer;
    const void* host_data;
    Buffer* copy_back_to;  // null for inputs
  };
  objc::Id resident_or_staged(const Buffer& buffer, Buffer* output);

  Device& device_;
  objc::AutoreleasePool pool_;
  objc::Id command_buffer_;  // autoreleased, owned by pool_
  objc::Id encoder_;
  objc::Id pipeline_ = nullptr;
  std::vector<Staged> staged_;
  bool ran_ = false;
};

}  // namespace gradstate::metal
