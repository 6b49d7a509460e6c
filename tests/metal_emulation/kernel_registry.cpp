#include "kernel_registry.h"

#include <cstdio>
#include <cstdlib>
#include <map>

#include "emulator.h"

namespace msl_emulator {
namespace detail {
namespace {

// Filled by static initializers before main; only read afterwards, so lookups need no lock. A function-local
// static is constructed on first use, whatever the order in which translation units are initialized.
std::map<std::string, const KernelDescriptor*>& registry() {
  static std::map<std::string, const KernelDescriptor*> kernels;
  return kernels;
}

}  // namespace

void register_kernel(const KernelDescriptor& kernel) {
  if (!registry().emplace(kernel.name, &kernel).second) {
    std::fprintf(stderr, "msl_emulator: two kernels are named %s\n", kernel.name);
    std::abort();
  }
}

const KernelDescriptor* find_kernel(const std::string& name) {
  auto it = registry().find(name);
  return it == registry().end() ? nullptr : it->second;
}

}  // namespace detail

bool has_kernel(const std::string& name) { return detail::find_kernel(name) != nullptr; }

std::vector<std::string> kernel_names() {
  std::vector<std::string> names;
  for (const auto& entry : detail::registry()) names.push_back(entry.first);
  return names;
}

}  // namespace msl_emulator
