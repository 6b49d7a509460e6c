#include "gradstate/core/host_memory.h"

#include "gradstate/core/integer_math.h"

#include <cstdlib>
#include <iterator>
#include <list>
#include <mutex>
#include <new>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace gradstate {
namespace {

constexpr std::size_t alignment = 64;

// Large blocks are placed on 2 MiB boundaries and offered to the kernel as huge pages: touching fresh memory
// page by page costs a fault per 4 KiB.
constexpr std::size_t huge_page = std::size_t{2} << 20;
constexpr std::size_t huge_threshold = std::size_t{4} << 20;

std::size_t block_alignment(std::size_t nbytes) { return nbytes >= huge_threshold ? huge_page : alignment; }

// Freed blocks of at least `min_bytes` (smaller ones come from the C library's heap, already faulted in),
// kept for the next request of the same size; at most `limit` bytes are kept.
class BlockCache {
 public:
  static constexpr std::size_t min_bytes = std::size_t{1} << 20;
  static constexpr std::size_t limit = std::size_t{256} << 20;

  // The most recently kept block of that size, if any.
  void* take(std::size_t bytes) {
    std::lock_guard<std::mutex> lock(mutex_);
    for (auto block = blocks_.rbegin(); block != blocks_.rend(); ++block) {
      if (block->bytes != bytes) continue;
      void* data = block->data;
      blocks_.erase(std::next(block).base());
      held_ -= bytes;
      return data;
    }
    return nullptr;
  }

  // Keeps the block, or frees it when it is small; evicts the blocks kept longest ago to stay within the
  // limit. (Evicting the smallest first let large blocks that no later call asked for crowd out the few-MiB
  // blocks of the calls being repeated, faulted in afresh at every call.)
  void give(void* data, std::size_t bytes) {
    if (bytes < min_bytes || bytes > limit) return std::free(data);
    std::lock_guard<std::mutex> lock(mutex_);
    while (held_ + bytes > limit) {
      held_ -= blocks_.front().bytes;
      std::free(blocks_.front().data);
      blocks_.pop_front();
    }
    blocks_.push_back({bytes, data});
    held_ += bytes;
  }

  std::size_t held() {
    std::lock_guard<std::mutex> lock(mutex_);
    return held_;
  }

  void release() {
    std::lock_guard<std::mutex> lock(mutex_);
    for (const Block& block : blocks_) std::free(block.data);
    blocks_.clear();
    held_ = 0;
  }

 private:
  std::mutex mutex_;
  struct Block {
    std::size_t bytes;
    void* data;
  };
  std::list<Block> blocks_;  // in the order they were kept, oldest first
  std::size_t held_ = 0;
};

// Never destroyed: buffers can outlive static destruction (a numpy array freed at interpreter exit).
BlockCache& cache() {
  static BlockCache* instance = new BlockCache;
  return *instance;
}

}  // namespace

// aligned_alloc needs a size that is a multiple of the alignment, and a zero-sized request may give nullptr,
// so every request gets at least one aligned block.
std::size_t host_block_bytes(std::size_t nbytes) {
  return round_up(nbytes > 0 ? nbytes : 1, block_alignment(nbytes));
}

void* allocate_host_block(std::size_t nbytes) {
  const std::size_t bytes = host_block_bytes(nbytes);
  if (void* reused = cache().take(bytes)) return reused;
  const std::size_t align = block_alignment(nbytes);
  void* data = std::aligned_alloc(align, bytes);
  if (data == nullptr) throw std::bad_alloc();
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  if (align == huge_page) madvise(data, bytes, MADV_HUGEPAGE);  // a hint; failure changes nothing
#endif
  return data;
}

void free_host_block(void* data, std::size_t bytes) { cache().give(data, bytes); }

std::size_t cached_host_bytes() { return cache().held(); }

void release_cached_host_blocks() { cache().release(); }

}  // namespace gradstate
