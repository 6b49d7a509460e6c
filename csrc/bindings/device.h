// gradstate.Device: a handle on one kind of device and its backend.
#pragma once

#include <pybind11/pybind11.h>

#include "gradstate/core/device.h"

namespace gradstate::bindings {

struct Device {
  DeviceKind kind;
};

void bind_device(pybind11::module_& m);

}  // namespace gradstate::bindings
