#include "guarded_class.h"

namespace gradstate::bindings {

namespace py = pybind11;

namespace {

// The class whose call is making an object on this thread, until its __new__ runs.
thread_local PyTypeObject* allowed = nullptr;

PyTypeObject* pybind11_metaclass() { return py::detail::get_internals().default_metaclass; }

// Calling a class runs its __new__ first (type.__call__), so that is the __new__ this call allows; the call
// restores what an enclosing call allowed. (A Python subclass's __new__ that never calls the base's leaves
// the allowance unused until then: it allows nothing else.)
extern "C" PyObject* call_class(PyObject* cls, PyObject* args, PyObject* kwargs) {
  PyTypeObject* const enclosing = allowed;
  allowed = reinterpret_cast<PyTypeObject*>(cls);
  PyObject* made = pybind11_metaclass()->tp_call(cls, args, kwargs);
  allowed = enclosing;
  return made;
}

extern "C" PyObject* new_if_allowed(PyTypeObject* cls, PyObject* args, PyObject* kwargs) {
  if (cls != allowed) {
    PyObject* name = PyObject_GetAttrString(reinterpret_cast<PyObject*>(cls), "__name__");
    if (name == nullptr) return nullptr;
    PyErr_Format(PyExc_TypeError,
                 "%U.__new__() alone makes no usable object: %U objects are made by calling the class or the "
                 "methods that return them",
                 name, name);
    Py_DECREF(name);
    return nullptr;
  }
  allowed = nullptr;
  return py::detail::pybind11_object_new(cls, args, kwargs);
}

}  // namespace

py::metaclass guarded_metaclass() {
  // Made once, and alive as long as the classes it makes.
  static PyObject* const metaclass = [] {
    static PyType_Slot slots[] = {{Py_tp_call, reinterpret_cast<void*>(call_class)}, {0, nullptr}};
    static PyType_Spec spec = {"gradstate._core.GuardedClass", 0, 0, Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
                               slots};
    const py::tuple bases = py::make_tuple(py::handle(reinterpret_cast<PyObject*>(pybind11_metaclass())));
    PyObject* made = PyType_FromSpecWithBases(&spec, bases.ptr());
    if (made == nullptr) throw py::error_already_set();
    return made;
  }();
  return py::metaclass(metaclass);
}

py::custom_type_setup guarded_new() {
  return py::custom_type_setup(
      [](PyHeapTypeObject* heap_type) { heap_type->ht_type.tp_new = new_if_allowed; });
}

}  // namespace gradstate::bindings
