// Activation layouts: names, shapes and element strides.
#pragma once

#include <cstdint>
#include <string>

#include "gradstate/core/params.h"
#include "gradstate/core/shape.h"

namespace gradstate {

// Throws ValueError naming `layout` for anything but "NHWC" and "NCHW".
Layout parse_layout(const std::string& name);
const char* layout_name(Layout layout);

// The four dimensions of an activation, whatever order they are stored in.
struct ActivationDims {
  std::int64_t n, c, h, w;
};

// The numpy shape of an activation: (n, h, w, c) for NHWC, (n, c, h, w) for NCHW.
Shape activation_shape(Layout layout, const ActivationDims& dims);

// Reads the dims of a 4-D shape; throws ValueError naming `argument` unless it is 4-D with no empty
// dimension.
ActivationDims activation_dims(const char* argument, const Shape& shape, Layout layout);

}  // namespace gradstate
