// Argument checks shared by the ops.
#pragma once

#include <algorithm>
#include <cstring>
#include <memory>

#include "gradstate/core/buffer.h"
#include "gradstate/core/errors.h"
#include "gradstate/core/shape.h"

namespace gradstate {

// ValueError "<argument>: expected shape <expected> (<why>), got <actual>" unless the shapes match.
inline void check_shape(const char* argument, const Shape& actual, const Shape& expected, const char* why) {
  if (actual != expected) {
    throw ValueError(concat(argument, ": expected shape ", shape_string(expected), " (", why, "), got ",
                            shape_string(actual)));
  }
}

// A private copy of `source`, so later changes by the caller do not reach the layer.
inline std::shared_ptr<Buffer> copy_of(const Buffer& source) {
  auto copy = Buffer::allocate(source.dtype(), source.shape(), source.device(), Buffer::Fill::none);
  std::copy_n(source.f32(), source.size(), copy->f32());
  return copy;
}

// Copies source's values into destination, a buffer of the same size.
inline void copy_into(Buffer& destination, const Buffer& source) {
  std::memmove(destination.data(), source.data(), source.nbytes());
}

// A new float32 buffer of `shape` with every value `value`.
inline std::shared_ptr<Buffer> filled(const Shape& shape, float value, DeviceKind device) {
  auto buffer = Buffer::allocate(DType::float32, shape, device, Buffer::Fill::none);
  std::fill_n(buffer->f32(), buffer->size(), value);
  return buffer;
}

}  // namespace gradstate
