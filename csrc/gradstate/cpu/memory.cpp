#include "gradstate/cpu/memory.h"

#include <cstdlib>
#include <cstring>
#include <new>

namespace gradstate::cpu {

Memory::Memory(std::int64_t bytes, bool zeroed) {
  constexpr std::int64_t alignment = 64;
  if (bytes < 0 || bytes > (std::int64_t{1} << 48)) throw std::bad_alloc();
  const std::size_t rounded = static_cast<std::size_t>((bytes + alignment) / alignment * alignment);
  data_ = std::aligned_alloc(alignment, rounded);
  if (data_ == nullptr) throw std::bad_alloc();
  if (zeroed) std::memset(data_, 0, rounded);
}

Memory::~Memory() { std::free(data_); }

}  // namespace gradstate::cpu
