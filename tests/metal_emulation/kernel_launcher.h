// Glue between one kernel function and the emulator, instantiated by the registrations msl2cpp.py appends
// to every generated translation unit: a kernel's descriptor (its parameters' attributes and the sizes of its
// reference parameters) and the function that calls it for one GPU thread. The C++ compiler deduces the
// parameter types, so msl2cpp.py only has to read the attributes.
//
// Included at the top of the generated file, before the MSL shim defines its keyword macros and poisons the
// identifiers MSL lacks (std, new, ...): the templates here are parsed before those take effect.
#pragma once

#include <array>
#include <cstddef>
#include <type_traits>
#include <utility>

#include "kernel_abi.h"

namespace msl_emulator {
namespace detail {

template <class T>
constexpr bool is_builtin_scalar_v = std::is_same_v<T, unsigned> || std::is_same_v<T, unsigned short>;

// A builtin converted to the parameter's declared type: uint or ushort (the x component), or a 2- or
// 3-component vector of those.
template <class P>
P builtin_as(Uint3 value) {
  if constexpr (std::is_arithmetic_v<P>) {
    static_assert(is_builtin_scalar_v<P>, "a builtin parameter is uint, ushort or a vector of them");
    return P(value.x);
  } else {
    static_assert(is_builtin_scalar_v<typename P::value_type>, "a builtin vector is of uint or ushort");
    static_assert(P::size == 2 || P::size == 3, "a builtin vector has 2 or 3 components");
    if constexpr (P::size == 2) {
      return P(value.x, value.y);
    } else {
      return P(value.x, value.y, value.z);
    }
  }
}

inline Uint3 builtin_value(ArgumentKind kind, const ThreadInfo& t) {
  switch (kind) {
    case ArgumentKind::thread_position_in_grid:
      return t.thread_position_in_grid;
    case ArgumentKind::thread_position_in_threadgroup:
      return t.thread_position_in_threadgroup;
    case ArgumentKind::threadgroup_position_in_grid:
      return t.threadgroup_position_in_grid;
    case ArgumentKind::threads_per_threadgroup:
      return t.threads_per_threadgroup;
    case ArgumentKind::threadgroups_per_grid:
      return t.threadgroups_per_grid;
    case ArgumentKind::threads_per_grid:
      return t.threads_per_grid;
    case ArgumentKind::thread_index_in_threadgroup:
      return {t.thread_index_in_threadgroup, 0, 0};
    case ArgumentKind::thread_index_in_simdgroup:
      return {t.thread_index_in_simdgroup, 0, 0};
    case ArgumentKind::simdgroup_index_in_threadgroup:
      return {t.simdgroup_index_in_threadgroup, 0, 0};
    case ArgumentKind::threads_per_simdgroup:
      return {t.threads_per_simdgroup, 0, 0};
    case ArgumentKind::simdgroups_per_threadgroup:
      return {t.simdgroups_per_threadgroup, 0, 0};
    case ArgumentKind::buffer:
    case ArgumentKind::threadgroup_memory:
      break;
  }
  return {0, 0, 0};
}

// One parameter's value: a pointer or reference into the bound memory, or a builtin.
template <class P>
P bind_argument(void* bound, ArgumentKind kind, const ThreadInfo& thread) {
  if constexpr (std::is_pointer_v<P>) {
    return static_cast<P>(bound);
  } else if constexpr (std::is_reference_v<P>) {
    return *static_cast<std::remove_reference_t<P>*>(bound);
  } else {
    return builtin_as<P>(builtin_value(kind, thread));
  }
}

template <class P>
constexpr std::size_t reference_bytes() {
  if constexpr (std::is_reference_v<P>) {
    return sizeof(std::remove_reference_t<P>);
  } else {
    return 0;
  }
}

template <auto Kernel>
struct KernelEntry;

template <class... P, void (*Kernel)(P...)>
struct KernelEntry<Kernel> {
  static constexpr std::size_t kArgumentCount = sizeof...(P);
  static constexpr std::array<std::size_t, sizeof...(P)> kReferenceBytes = {reference_bytes<P>()...};

  static void run_thread(void* const* arguments, const ArgumentSpec* specs, const ThreadInfo& thread) {
    call(arguments, specs, thread, std::index_sequence_for<P...>{});
  }

 private:
  template <std::size_t... I>
  static void call(void* const* arguments, const ArgumentSpec* specs, const ThreadInfo& thread,
                   std::index_sequence<I...>) {
    Kernel(bind_argument<P>(arguments[I], specs[I].kind, thread)...);
  }
};

// The descriptor of `Kernel`, whose parameters have the attributes `arguments` (one per parameter).
template <auto Kernel, std::size_t N>
KernelDescriptor describe_kernel(const char* name, const ArgumentSpec (&arguments)[N],
                                 unsigned max_total_threads_per_threadgroup) {
  using Entry = KernelEntry<Kernel>;
  static_assert(Entry::kArgumentCount == N, "msl2cpp.py found a different number of kernel parameters");
  return {name,
          arguments,
          Entry::kReferenceBytes.data(),
          N,
          max_total_threads_per_threadgroup,
          &Entry::run_thread};
}

// The storage of a kernel-scope `threadgroup T name;` (T may be an array type) in the running threadgroup:
// msl2cpp.py numbers these declarations in each translation unit.
template <class T>
T& threadgroup_storage(int slot) {
  return *static_cast<T*>(threadgroup_variable(slot, sizeof(T), alignof(T)));
}

// A static object of this type in a kernel's translation unit registers the kernel at program start.
struct KernelRegistration {
  explicit KernelRegistration(const KernelDescriptor& kernel) : descriptor(kernel) {
    register_kernel(descriptor);
  }
  KernelDescriptor descriptor;
};

}  // namespace detail
}  // namespace msl_emulator
