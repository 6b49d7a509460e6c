#include "gradstate/cpu/cpu_backend.h"

namespace gradstate {

std::string CpuBackend::device_name() const { return "cpu"; }

Backend& cpu_backend() {
  static CpuBackend backend;
  return backend;
}

}  // namespace gradstate
