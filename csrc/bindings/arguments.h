// Reading the Python forms of arguments (ints or pairs, padding specs, devices, layouts) into core types.
// Only types are checked here; the core checks ranges and consistency.
#pragma once

#include <pybind11/pybind11.h>

#include <optional>
#include <string>
#include <string_view>

#include "gradstate/core/device.h"
#include "gradstate/core/errors.h"
#include "gradstate/core/params.h"
#include "gradstate/ops/padding.h"

namespace gradstate::bindings {

namespace py = pybind11;

// A Python integer (anything with __index__ but bool); TypeError naming `argument` otherwise.
std::int64_t as_int(const char* argument, py::handle value);

// A real number (a Python or numpy int or float, not a bool); TypeError naming `argument` otherwise,
// ValueError when it does not fit in a double.
double as_real(const char* argument, py::handle value);

// True or False (Python's or numpy's); TypeError naming `argument` otherwise.
bool as_bool(const char* argument, py::handle value);

// An int n meaning (n, n), or a pair (vertical, horizontal).
Pair as_pair(const char* argument, py::handle value);

// int | (ph, pw) | (top, bottom, left, right) | "valid" | "same" | "full".
Padding as_padding(py::handle value);

// None (the default device), a gradstate.Device, "cpu" or "metal".
DeviceKind as_device(py::handle value);

// "NHWC" or "NCHW".
Layout as_layout(py::handle value);
// As as_layout, or nothing for None.
std::optional<Layout> as_optional_layout(py::handle value);

// A Python class name, and a value's repr(), for messages.
std::string type_name(py::handle value);
std::string repr_of(py::handle value);

}  // namespace gradstate::bindings

namespace gradstate::bindings {

// An argument that must be an instance of the bound class T (a state, a layer); TypeError naming it
// otherwise.
// `expected` names the class with its article ("a Convolution").
template <typename T>
T& as_instance(const char* argument, py::handle value, const std::string& expected) {
  if (!py::isinstance<T>(value)) {
    throw TypeError(std::string(argument) + ": expected " + expected + ", got " + type_name(value));
  }
  return value.cast<T&>();
}

// The state argument of a gradient call.
template <typename State>
State& as_state(py::handle value, const char* state_class) {
  const bool vowel = std::string_view("AEIOU").find(state_class[0]) != std::string_view::npos;
  return as_instance<State>("state", value, std::string(vowel ? "an " : "a ") + state_class);
}

}  // namespace gradstate::bindings
