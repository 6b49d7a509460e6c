#include "gradstate/cpu/memory.h"

#include <cstring>
#include <new>

#include "gradstate/core/errors.h"
#include "gradstate/core/host_memory.h"
#include "gradstate/core/shape.h"

namespace gradstate::cpu {

Memory::Memory(std::int64_t bytes, bool zeroed) {
  if (bytes < 0 || bytes > (std::int64_t{1} << 48)) throw_working_memory_error(bytes);
  bytes_ = host_block_bytes(static_cast<std::size_t>(bytes));
  try {
    data_ = allocate_host_block(static_cast<std::size_t>(bytes));
  } catch (const std::bad_alloc&) {
    throw_working_memory_error(bytes);
  }
  if (zeroed) std::memset(data_, 0, static_cast<std::size_t>(bytes));  // not the rest of a rounded-up block
}

Memory::~Memory() { free_host_block(data_, bytes_); }

void throw_working_memory_error(std::int64_t bytes) {
  throw MemoryError(
      concat("cannot allocate ", byte_size_string({bytes}, 1), " of working memory for a kernel"));
}

}  // namespace gradstate::cpu
