// Moving arrays between numpy and gradstate Buffers.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <memory>
#include <optional>

#include "gradstate/core/buffer.h"

namespace gradstate::bindings {

namespace py = pybind11;

// forcecast: float64 to float32 is a narrowing cast numpy does only when asked.
using FloatArray = py::array_t<float, py::array::c_style | py::array::forcecast>;

// A float32 C-contiguous array of `value`: float32 C-contiguous input as it is, any other floating dtype or
// memory order converted (a copy). TypeError naming `argument` for anything that is not floating point.
FloatArray as_float32(const char* argument, py::handle value);

// as_float32, or nothing for None.
std::optional<FloatArray> as_optional_float32(const char* argument, py::handle value);

// A Buffer over the array's memory, valid while the array is.
Buffer borrow(const FloatArray& array);

// A numpy array over the buffer's memory whose base keeps the buffer alive.
py::array to_numpy(const std::shared_ptr<Buffer>& buffer);

}  // namespace gradstate::bindings
