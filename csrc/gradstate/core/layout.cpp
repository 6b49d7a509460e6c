#include "gradstate/core/layout.h"

#include <limits>

#include "gradstate/core/errors.h"

namespace gradstate {

Layout parse_layout(const std::string& name) {
  if (name == "NHWC") return Layout::NHWC;
  if (name == "NCHW") return Layout::NCHW;
  throw ValueError(concat("layout: expected 'NHWC' or 'NCHW', got '", name, "'"));
}

const char* layout_name(Layout layout) { return layout == Layout::NHWC ? "NHWC" : "NCHW"; }

Shape activation_shape(Layout layout, const ActivationDims& dims) {
  if (layout == Layout::NHWC) return {dims.n, dims.h, dims.w, dims.c};
  return {dims.n, dims.c, dims.h, dims.w};
}

ActivationDims activation_dims(const char* argument, const Shape& shape, Layout layout) {
  const char* order = layout == Layout::NHWC ? "(N, H, W, C)" : "(N, C, H, W)";
  if (shape.size() != 4) {
    throw ValueError(concat(argument, ": expected 4 dimensions ", order, " for layout '", layout_name(layout),
                            "', got ", shape.size(), " (shape ", shape_string(shape), ")"));
  }
  for (std::int64_t extent : shape) {
    if (extent <= 0) {
      throw ValueError(
          concat(argument, ": expected every dimension to be at least 1, got shape ", shape_string(shape)));
    }
    // Kernel parameters hold 32-bit extents (see params.h).
    if (extent > std::numeric_limits<std::int32_t>::max()) {
      throw ValueError(
          concat(argument, ": expected every dimension to be below 2**31, got shape ", shape_string(shape)));
    }
  }
  if (layout == Layout::NHWC) return {shape[0], shape[3], shape[1], shape[2]};
  return {shape[0], shape[1], shape[2], shape[3]};
}

}  // namespace gradstate
