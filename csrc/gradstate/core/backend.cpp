#include "gradstate/core/backend.h"

#include <cstdlib>
#include <string>

#include "gradstate/core/errors.h"

namespace gradstate {

Backend& backend_for(DeviceKind kind) { return kind == DeviceKind::metal ? metal_backend() : cpu_backend(); }

DeviceKind default_device_kind() {
  const char* chosen = std::getenv("GRADSTATE_DEFAULT_DEVICE");
  if (chosen == nullptr || *chosen == '\0') {
    return metal_backend().available() ? DeviceKind::metal : DeviceKind::cpu;
  }
  const std::string name = chosen;
  if (name == "cpu") return DeviceKind::cpu;
  if (name != "metal") {
    throw ValueError(concat("GRADSTATE_DEFAULT_DEVICE: expected 'cpu' or 'metal', got '", name, "'"));
  }
  Backend& metal = metal_backend();
  if (!metal.available()) {
    throw ValueError(
        concat("GRADSTATE_DEFAULT_DEVICE: expected an available device, got metal (unavailable: ",
               metal.unavailable_reason(), ")"));
  }
  return DeviceKind::metal;
}

std::string unavailable_message(const Backend& backend) {
  return concat("device: expected an available device, got ", device_kind_name(backend.kind()),
                " (unavailable: ", backend.unavailable_reason(), ")");
}

Backend& available_backend(DeviceKind kind) {
  Backend& backend = backend_for(kind);
  if (!backend.available()) throw ValueError(unavailable_message(backend));
  return backend;
}

}  // namespace gradstate
