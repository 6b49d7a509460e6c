#include "device.h"

#include <pybind11/stl.h>

#include <string>
#include <vector>

#include "gradstate/core/backend.h"
#include "guarded_class.h"

namespace gradstate::bindings {

namespace py = pybind11;

void bind_device(py::module_& m) {
  guarded_class<Device>(m, "Device", "A device kernels can run on (the counterpart of an MTLDevice).")
      .def_property_readonly(
          "type", [](const Device& d) { return std::string(device_kind_name(d.kind)); }, "'cpu' or 'metal'.")
      .def_property_readonly(
          "name", [](const Device& d) { return backend_for(d.kind).device_name(); }, "The device's name.")
      .def_property_readonly(
          "available", [](const Device& d) { return backend_for(d.kind).available(); },
          "Whether kernels can run on it in this process.")
      .def_property_readonly(
          "unavailable_reason", [](const Device& d) { return backend_for(d.kind).unavailable_reason(); },
          "Why it is not available; empty when it is.")
      // Anything but a Device is left to the other operand (so it compares unequal).
      .def("__eq__",
           [](const Device& a, py::handle b) -> py::object {
             if (!py::isinstance<Device>(b)) return py::reinterpret_borrow<py::object>(Py_NotImplemented);
             return py::bool_(a.kind == b.cast<const Device&>().kind);
           })
      .def("__hash__", [](const Device& d) { return static_cast<int>(d.kind); })
      .def("__repr__", [](const Device& d) {
        const Backend& backend = backend_for(d.kind);
        std::string text = "Device(type='" + std::string(device_kind_name(d.kind)) + "', name='" +
                           backend.device_name() + "', available=" + (backend.available() ? "True" : "False");
        if (!backend.available()) text += ", unavailable_reason='" + backend.unavailable_reason() + "'";
        return text + ")";
      });
  m.def(
      "devices", [] { return std::vector<Device>{{DeviceKind::cpu}, {DeviceKind::metal}}; },
      "Every device kind gradstate knows, available or not.");
  m.def(
      "default_device", [] { return Device{default_device_kind()}; },
      "The device used when none is given: GRADSTATE_DEFAULT_DEVICE ('cpu' or 'metal') when set, else Metal "
      "where available, else the CPU.");
}

}  // namespace gradstate::bindings
