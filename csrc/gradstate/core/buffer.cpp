#include "gradstate/core/buffer.h"

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <new>
#include <utility>

namespace gradstate {
namespace {

std::atomic<std::int64_t> live_bytes{0};

std::size_t round_up(std::size_t bytes, std::size_t multiple) {
  return (bytes + multiple - 1) / multiple * multiple;
}

}  // namespace

std::shared_ptr<Buffer> Buffer::allocate(DType dtype, Shape shape, DeviceKind device) {
  const std::size_t nbytes = static_cast<std::size_t>(element_count(shape)) * itemsize(dtype);
  // aligned_alloc needs a size that is a multiple of the alignment, and a zero-sized request may give
  // nullptr, so every buffer owns at least one aligned block.
  const std::size_t padded = round_up(nbytes > 0 ? nbytes : 1, alignment);
  void* data = std::aligned_alloc(alignment, padded);
  if (data == nullptr) throw std::bad_alloc();
  std::memset(data, 0, padded);
  live_bytes.fetch_add(static_cast<std::int64_t>(nbytes), std::memory_order_relaxed);
  return std::shared_ptr<Buffer>(new Buffer(data, true, dtype, std::move(shape), device));
}

Buffer Buffer::borrow(void* data, DType dtype, Shape shape) {
  return Buffer(data, false, dtype, std::move(shape), DeviceKind::cpu);
}

Buffer::Buffer(void* data, bool owned, DType dtype, Shape shape, DeviceKind device)
    : data_(data), owned_(owned), dtype_(dtype), shape_(std::move(shape)), device_(device) {}

Buffer::Buffer(Buffer&& other) noexcept
    : data_(std::exchange(other.data_, nullptr)),
      owned_(std::exchange(other.owned_, false)),
      dtype_(other.dtype_),
      shape_(std::move(other.shape_)),
      device_(other.device_) {}

Buffer::~Buffer() {
  if (!owned_) return;
  live_bytes.fetch_sub(static_cast<std::int64_t>(nbytes()), std::memory_order_relaxed);
  std::free(data_);
}

std::int64_t live_native_bytes() { return live_bytes.load(std::memory_order_relaxed); }

}  // namespace gradstate
