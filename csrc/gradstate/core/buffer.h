// Buffer: a typed, shaped block of device-visible memory, the counterpart of an MTLBuffer.
//
// Buffers are shared through std::shared_ptr, whose reference count is atomic, so a buffer lives as long
// as any holder — a gradient state, a numpy array viewing it, another thread — and no longer. Memory is
// zero-filled (as MTLDevice newBufferWithLength: does) unless the caller is about to overwrite all of it,
// and 64-byte aligned so that every SIMD load of a row start is aligned to a cache line.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

#include "gradstate/core/device.h"
#include "gradstate/core/dtype.h"
#include "gradstate/core/shape.h"

namespace gradstate {

// Memory that a device API owns (a shared-storage MTLBuffer): the address where the CPU sees it, the API's
// object, and how to release that object.
struct DeviceMemory {
  void* data;
  void* handle;
  void (*release)(void* handle);
};

class Buffer {
 public:
  static constexpr std::size_t alignment = 64;

  enum class Fill { zeros, none };

  // Allocates memory for element_count(shape) values of dtype: zeroed, or left as it is for an output that
  // a kernel writes entirely. A backend with memory of its own (Metal) provides it; it is always zeroed.
  static std::shared_ptr<Buffer> allocate(DType dtype, Shape shape, DeviceKind device = DeviceKind::cpu,
                                          Fill fill = Fill::zeros);

  // Wraps memory owned by someone else (an input array) for the duration of one call; never freed here.
  static Buffer borrow(void* data, DType dtype, Shape shape);

  Buffer(Buffer&& other) noexcept;
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  Buffer& operator=(Buffer&&) = delete;
  ~Buffer();

  void* data() const { return data_; }
  // The device API's object behind the memory (an MTLBuffer), or null for host memory.
  void* native_handle() const { return device_memory_.handle; }
  float* f32() const { return static_cast<float*>(data_); }
  DType dtype() const { return dtype_; }
  const Shape& shape() const { return shape_; }
  DeviceKind device() const { return device_; }
  std::int64_t size() const { return element_count(shape_); }
  std::size_t nbytes() const { return static_cast<std::size_t>(size()) * itemsize(dtype_); }

 private:
  Buffer(void* data, bool owned, DType dtype, Shape shape, DeviceKind device, DeviceMemory device_memory);

  void* data_;
  bool owned_;
  DeviceMemory device_memory_;
  DType dtype_;
  Shape shape_;
  DeviceKind device_;
};

// Bytes held by all owning Buffers alive right now; leak tests compare it with a baseline.
std::int64_t live_native_bytes();

}  // namespace gradstate
