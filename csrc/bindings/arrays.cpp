#include "arrays.h"

#include <new>

#include "gradstate/core/errors.h"

namespace gradstate::bindings {

FloatArray as_float32(const char* argument, py::handle value) {
  py::array array;
  try {
    array = py::module_::import("numpy").attr("asarray")(value);
  } catch (py::error_already_set&) {
    throw TypeError(concat(argument,
                           ": expected a floating-point array, got an object numpy cannot convert (",
                           py::str(py::type::of(value).attr("__name__")).cast<std::string>(), ")"));
  }
  // Integers, booleans and complex numbers are refused rather than converted: a cast would silently
  // change the meaning of the data.
  if (array.dtype().kind() != 'f') {
    throw TypeError(concat(argument, ": expected a floating-point array, got dtype ",
                           py::str(array.dtype()).cast<std::string>()));
  }
  FloatArray converted = FloatArray::ensure(array);
  if (!converted) throw std::bad_alloc();  // the float32 copy could not be made
  return converted;
}

std::optional<FloatArray> as_optional_float32(const char* argument, py::handle value) {
  if (value.is_none()) return std::nullopt;
  return as_float32(argument, value);
}

Buffer borrow(const FloatArray& array) {
  Shape shape(array.shape(), array.shape() + array.ndim());
  // Kernels only read inputs; the const_cast lets read-only arrays (broadcasts, frozen views) be inputs.
  return Buffer::borrow(const_cast<float*>(array.data()), DType::float32, std::move(shape));
}

py::array to_numpy(const std::shared_ptr<Buffer>& buffer) {
  std::vector<py::ssize_t> shape(buffer->shape().begin(), buffer->shape().end());
  return py::array(py::dtype::of<float>(), shape, buffer->data(), py::cast(buffer));
}

}  // namespace gradstate::bindings
