// Shapes of buffers and activations.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace gradstate {

using Shape = std::vector<std::int64_t>;

// std::bad_alloc when the count does not fit in 64 bits (no buffer of that size can exist).
std::int64_t element_count(const Shape& shape);

// "(2, 3, 4)", "(5,)" — the way Python prints a tuple, so messages read naturally to numpy users.
std::string shape_string(const Shape& shape);

// The bytes of a buffer of that shape, `itemsize` bytes an element, as "64.0 TiB" (even past 64 bits).
std::string byte_size_string(const Shape& shape, std::size_t itemsize);

}  // namespace gradstate
