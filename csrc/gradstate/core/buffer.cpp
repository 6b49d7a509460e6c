#include "gradstate/core/buffer.h"

#include "gradstate/core/backend.h"
#include "gradstate/core/errors.h"
#include "gradstate/core/host_memory.h"

#include <atomic>
#include <cstring>
#include <new>
#include <utility>

namespace gradstate {
namespace {

std::atomic<std::int64_t> live_bytes{0};

}  // namespace

std::shared_ptr<Buffer> Buffer::allocate(DType dtype, Shape shape, DeviceKind device, Fill fill) {
  DeviceMemory device_memory{};
  void* data = nullptr;
  std::size_t nbytes = 0;
  try {
    const std::int64_t count = element_count(shape);
    if (count > (std::int64_t{1} << 56) / static_cast<std::int64_t>(itemsize(dtype))) throw std::bad_alloc();
    nbytes = static_cast<std::size_t>(count) * itemsize(dtype);
    device_memory = backend_for(device).allocate_memory(nbytes);
    data = device_memory.data;
    if (data == nullptr) data = allocate_host_block(nbytes);
  } catch (const std::bad_alloc&) {
    throw MemoryError(concat("cannot allocate ", byte_size_string(shape, itemsize(dtype)), " for a ",
                             dtype_name(dtype), " buffer of shape ", shape_string(shape)));
  }
  if (device_memory.data == nullptr && fill == Fill::zeros) std::memset(data, 0, nbytes);
  live_bytes.fetch_add(static_cast<std::int64_t>(nbytes), std::memory_order_relaxed);
  return std::shared_ptr<Buffer>(new Buffer(data, true, dtype, std::move(shape), device, device_memory));
}

Buffer Buffer::borrow(void* data, DType dtype, Shape shape) {
  return Buffer(data, false, dtype, std::move(shape), DeviceKind::cpu, DeviceMemory{});
}

Buffer::Buffer(void* data, bool owned, DType dtype, Shape shape, DeviceKind device,
               DeviceMemory device_memory)
    : data_(data),
      owned_(owned),
      device_memory_(device_memory),
      dtype_(dtype),
      shape_(std::move(shape)),
      device_(device) {}

Buffer::Buffer(Buffer&& other) noexcept
    : data_(std::exchange(other.data_, nullptr)),
      owned_(std::exchange(other.owned_, false)),
      device_memory_(std::exchange(other.device_memory_, DeviceMemory{})),
      dtype_(other.dtype_),
      shape_(std::move(other.shape_)),
      device_(other.device_) {}

Buffer::~Buffer() {
  if (!owned_) return;
  live_bytes.fetch_sub(static_cast<std::int64_t>(nbytes()), std::memory_order_relaxed);
  if (device_memory_.handle != nullptr) {
    device_memory_.release(device_memory_.handle);
  } else {
    free_host_block(data_, host_block_bytes(nbytes()));
  }
}

std::int64_t live_native_bytes() { return live_bytes.load(std::memory_order_relaxed); }

}  // namespace gradstate
