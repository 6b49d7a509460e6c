#include "gradstate/core/buffer.h"

#include "gradstate/core/backend.h"

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <new>
#include <utility>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace gradstate {
namespace {

std::atomic<std::int64_t> live_bytes{0};

std::size_t round_up(std::size_t bytes, std::size_t multiple) {
  return (bytes + multiple - 1) / multiple * multiple;
}

// Large buffers are placed on 2 MiB boundaries and offered to the kernel as huge pages: touching fresh
// memory page by page costs a fault per 4 KiB, which for the outputs of large layers can take longer than
// the kernel that fills them.
constexpr std::size_t huge_page = std::size_t{2} << 20;
constexpr std::size_t huge_threshold = std::size_t{4} << 20;

// aligned_alloc needs a size that is a multiple of the alignment, and a zero-sized request may give
// nullptr, so every buffer owns at least one aligned block.
std::size_t block_alignment(std::size_t nbytes) {
  return nbytes >= huge_threshold ? huge_page : Buffer::alignment;
}

std::size_t block_bytes(std::size_t nbytes) {
  return round_up(nbytes > 0 ? nbytes : 1, block_alignment(nbytes));
}

// Freed large blocks, kept for the next buffer of the same size: a training loop allocates the same
// outputs every step, and reusing their memory saves the operating system's page faults and zeroing,
// which for large activations cost more than the kernels. At most `limit` bytes are kept.
class BlockCache {
 public:
  static constexpr std::size_t min_bytes = std::size_t{1} << 20;
  static constexpr std::size_t limit = std::size_t{256} << 20;

  void* take(std::size_t bytes) {
    std::lock_guard<std::mutex> lock(mutex_);
    const auto found = blocks_.find(bytes);
    if (found == blocks_.end()) return nullptr;
    void* data = found->second;
    blocks_.erase(found);
    held_ -= bytes;
    return data;
  }

  // Keeps the block, or frees it when it is small; evicts the smallest blocks to stay within the limit (the
  // large ones save the most page faults).
  void give(void* data, std::size_t bytes) {
    if (bytes < min_bytes || bytes > limit) return std::free(data);
    std::lock_guard<std::mutex> lock(mutex_);
    while (held_ + bytes > limit) {
      const auto smallest = blocks_.begin();
      held_ -= smallest->first;
      std::free(smallest->second);
      blocks_.erase(smallest);
    }
    blocks_.emplace(bytes, data);
    held_ += bytes;
  }

 private:
  std::mutex mutex_;
  std::multimap<std::size_t, void*> blocks_;
  std::size_t held_ = 0;
};

// Never destroyed: buffers can outlive static destruction (a numpy array freed at interpreter exit).
BlockCache& cache() {
  static BlockCache* instance = new BlockCache;
  return *instance;
}

void* allocate_bytes(std::size_t nbytes) {
  const std::size_t bytes = block_bytes(nbytes);
  if (void* reused = cache().take(bytes)) return reused;
  const std::size_t align = block_alignment(nbytes);
  void* data = std::aligned_alloc(align, bytes);
  if (data == nullptr) throw std::bad_alloc();
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  if (align == huge_page) madvise(data, bytes, MADV_HUGEPAGE);  // a hint; failure changes nothing
#endif
  return data;
}

}  // namespace

std::shared_ptr<Buffer> Buffer::allocate(DType dtype, Shape shape, DeviceKind device, Fill fill) {
  const std::int64_t count = element_count(shape);
  if (count > (std::int64_t{1} << 56) / static_cast<std::int64_t>(itemsize(dtype))) throw std::bad_alloc();
  const std::size_t nbytes = static_cast<std::size_t>(count) * itemsize(dtype);
  const DeviceMemory device_memory = backend_for(device).allocate_memory(nbytes);
  void* data = device_memory.data;
  if (data == nullptr) {
    data = allocate_bytes(nbytes);
    if (fill == Fill::zeros) std::memset(data, 0, nbytes);
  }
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
    cache().give(data_, block_bytes(nbytes()));
  }
}

std::int64_t live_native_bytes() { return live_bytes.load(std::memory_order_relaxed); }

}  // namespace gradstate
