// The Metal backend of a build without Metal: present so everything links, reported as unavailable.
#include "gradstate/core/unavailable_backend.h"

namespace gradstate {

Backend& metal_backend() {
#if defined(__APPLE__)
  static UnavailableBackend backend(DeviceKind::metal, "this build of gradstate has no Metal backend");
#else
  static UnavailableBackend backend(DeviceKind::metal, "Metal needs macOS");
#endif
  return backend;
}

}  // namespace gradstate
