#include "gradstate/core/shape.h"

#include <cstdio>
#include <new>

namespace gradstate {

std::int64_t element_count(const Shape& shape) {
  std::int64_t count = 1;
  for (std::int64_t extent : shape) {
    if (__builtin_mul_overflow(count, extent, &count)) throw std::bad_alloc();
  }
  return count;
}

std::string shape_string(const Shape& shape) {
  std::string text = "(";
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (i > 0) text += ", ";
    text += std::to_string(shape[i]);
  }
  if (shape.size() == 1) text += ",";
  return text + ")";
}

std::string byte_size_string(const Shape& shape, std::size_t itemsize) {
  static const char* const units[] = {"bytes", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB", "ZiB", "YiB"};
  long double bytes = static_cast<long double>(itemsize);
  for (std::int64_t extent : shape) bytes *= static_cast<long double>(extent);
  std::size_t unit = 0;
  for (; bytes >= 1024.0L && unit + 1 < sizeof units / sizeof units[0]; ++unit) bytes /= 1024.0L;
  char text[64];
  std::snprintf(text, sizeof text, unit == 0 ? "%.0Lf %s" : "%.1Lf %s", bytes, units[unit]);
  return text;
}

}  // namespace gradstate
