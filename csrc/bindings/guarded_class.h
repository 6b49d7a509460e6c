// guarded_class: pybind11::class_ for the module's classes, whose objects can only be made whole.
//
// pybind11 lets Cls.__new__(Cls) make an object whose C++ value was never constructed; using it then reads
// unconstructed memory (garbage or a crash). Objects of a guarded class are made only by calling the class,
// which runs its __init__, or by the core itself, which returns objects it made without calling __new__;
// Cls.__new__ alone raises TypeError.
#pragma once

#include <pybind11/pybind11.h>

namespace gradstate::bindings {

// The metaclass of guarded classes: calling one allows its next __new__.
pybind11::metaclass guarded_metaclass();

// Makes a class's __new__ refuse unless a call of the class allowed it.
pybind11::custom_type_setup guarded_new();

template <typename... Options>
class guarded_class : public pybind11::class_<Options...> {
 public:
  template <typename... Extra>
  guarded_class(pybind11::handle scope, const char* name, const Extra&... extra)
      : pybind11::class_<Options...>(scope, name, guarded_metaclass(), guarded_new(), extra...) {}
};

}  // namespace gradstate::bindings
