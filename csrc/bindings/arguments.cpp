#include "arguments.h"

#include <string>
#include <vector>

#include "device.h"
#include "gradstate/core/backend.h"
#include "gradstate/core/errors.h"
#include "gradstate/core/layout.h"

namespace gradstate::bindings {
namespace {

bool is_sequence(py::handle value) {
  return py::isinstance<py::tuple>(value) || py::isinstance<py::list>(value);
}

}  // namespace

std::string repr_of(py::handle value) { return py::repr(value).cast<std::string>(); }

std::string type_name(py::handle value) { return py::type::of(value).attr("__name__").cast<std::string>(); }

std::int64_t as_int(const char* argument, py::handle value) {
  if (!py::isinstance<py::bool_>(value) && PyIndex_Check(value.ptr())) {
    py::object index = py::reinterpret_steal<py::object>(PyNumber_Index(value.ptr()));
    if (index) {
      const long long result = PyLong_AsLongLong(index.ptr());
      if (!(result == -1 && PyErr_Occurred())) return result;
      PyErr_Clear();
      throw ValueError(concat(argument, ": expected an integer that fits in 64 bits, got ", repr_of(value)));
    }
    PyErr_Clear();
  }
  throw TypeError(
      concat(argument, ": expected an integer, got ", repr_of(value), " (", type_name(value), ")"));
}

double as_real(const char* argument, py::handle value) {
  // Held for the life of the process (released, so that no destructor runs after the interpreter is gone).
  static const py::handle real = py::object(py::module_::import("numbers").attr("Real")).release();
  if (py::isinstance<py::bool_>(value) || !py::isinstance(value, real)) {
    throw TypeError(
        concat(argument, ": expected a number, got ", repr_of(value), " (", type_name(value), ")"));
  }
  const double result = PyFloat_AsDouble(value.ptr());
  if (result == -1.0 && PyErr_Occurred()) {
    PyErr_Clear();
    throw ValueError(concat(argument, ": expected a number that fits in a double, got ", repr_of(value)));
  }
  return result;
}

bool as_bool(const char* argument, py::handle value) {
  static const py::handle numpy_bool = py::object(py::module_::import("numpy").attr("bool_")).release();
  if (!py::isinstance<py::bool_>(value) && !py::isinstance(value, numpy_bool)) {
    throw TypeError(
        concat(argument, ": expected True or False, got ", repr_of(value), " (", type_name(value), ")"));
  }
  return PyObject_IsTrue(value.ptr()) == 1;
}

Pair as_pair(const char* argument, py::handle value) {
  if (!is_sequence(value)) {
    const std::int64_t n = as_int(argument, value);
    return {n, n};
  }
  py::sequence items = py::reinterpret_borrow<py::sequence>(value);
  if (items.size() != 2) {
    throw ValueError(concat(argument, ": expected an int or a pair of ints, got ", repr_of(value)));
  }
  return {as_int(argument, items[0]), as_int(argument, items[1])};
}

Padding as_padding(py::handle value) {
  static const char* forms = "an int, (ph, pw), (top, bottom, left, right), 'valid', 'same' or 'full'";
  if (py::isinstance<py::str>(value)) {
    const std::string name = value.cast<std::string>();
    if (name == "valid") return Padding::policy(Padding::Kind::valid);
    if (name == "same") return Padding::policy(Padding::Kind::same);
    if (name == "full") return Padding::policy(Padding::Kind::full);
    throw ValueError(concat("padding: expected ", forms, ", got ", repr_of(value)));
  }
  if (!is_sequence(value)) {
    const std::int64_t p = as_int("padding", value);
    return Padding::sizes(p, p, p, p);
  }
  py::sequence items = py::reinterpret_borrow<py::sequence>(value);
  std::vector<std::int64_t> sizes;
  for (py::handle item : items) sizes.push_back(as_int("padding", item));
  if (sizes.size() == 2) return Padding::sizes(sizes[0], sizes[0], sizes[1], sizes[1]);
  if (sizes.size() == 4) return Padding::sizes(sizes[0], sizes[1], sizes[2], sizes[3]);
  throw ValueError(concat("padding: expected ", forms, ", got ", repr_of(value)));
}

DeviceKind as_device(py::handle value) {
  if (value.is_none()) return default_device_kind();
  if (py::isinstance<Device>(value)) return value.cast<const Device&>().kind;
  if (py::isinstance<py::str>(value)) {
    const std::string name = value.cast<std::string>();
    if (name == "cpu") return DeviceKind::cpu;
    if (name == "metal") return DeviceKind::metal;
    throw ValueError(
        concat("device: expected None, a gradstate.Device, 'cpu' or 'metal', got ", repr_of(value)));
  }
  throw TypeError(concat("device: expected None, a gradstate.Device, 'cpu' or 'metal', got ", repr_of(value),
                         " (", type_name(value), ")"));
}

Layout as_layout(py::handle value) {
  if (!py::isinstance<py::str>(value)) {
    throw TypeError(
        concat("layout: expected 'NHWC' or 'NCHW', got ", repr_of(value), " (", type_name(value), ")"));
  }
  return parse_layout(value.cast<std::string>());
}

std::optional<Layout> as_optional_layout(py::handle value) {
  if (value.is_none()) return std::nullopt;
  return as_layout(value);
}

}  // namespace gradstate::bindings
