#include "gradstate/core/backend.h"

#include "gradstate/core/errors.h"

namespace gradstate {

Backend& backend_for(DeviceKind kind) { return kind == DeviceKind::metal ? metal_backend() : cpu_backend(); }

DeviceKind default_device_kind() { return metal_backend().available() ? DeviceKind::metal : DeviceKind::cpu; }

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
