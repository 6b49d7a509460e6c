// Device: the Metal device gradstate runs on, its command queue, its kernels' library and a cache of
// compute pipelines, one per kernel name.
#pragma once

#include <map>
#include <mutex>
#include <string>

#include "gradstate/core/buffer.h"
#include "gradstate/metal/objc.h"

namespace gradstate::metal {

class Device {
 public:
  // The system default device, or nullptr when this machine has none (created once, never destroyed).
  static Device* system_default();

  std::string name() const;
  objc::Id queue() const { return queue_.get(); }

  // A new shared-storage MTLBuffer of at least `nbytes` (Metal refuses empty buffers), zero-filled.
  DeviceMemory allocate(std::size_t nbytes);
  // An MTLBuffer holding a copy of `nbytes` at `data`.
  objc::Object copy_to_new_buffer(const void* data, std::size_t nbytes);

  // The compute pipeline of kernel `name`, created on first use; thread-safe.
  objc::Id pipeline(const std::string& name);

 private:
  explicit Device(objc::Object device);
  void load_library();

  objc::Object device_;
  objc::Object queue_;
  std::mutex mutex_;
  objc::Object library_;
  std::map<std::string, objc::Object> pipelines_;
};

}  // namespace gradstate::metal
