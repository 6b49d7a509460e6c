// The kernels linked into the program, by host name.
#pragma once

#include <string>

#include "kernel_abi.h"

namespace msl_emulator {
namespace detail {

// Null when no kernel of that name is linked.
const KernelDescriptor* find_kernel(const std::string& name);

}  // namespace detail
}  // namespace msl_emulator
