#include <pybind11/pybind11.h>

#include <string>

#include "arguments.h"
#include "bindings.h"
#include "gradstate/cpu/dispatch.h"
#include "gradstate/cpu/thread_pool.h"

namespace gradstate::bindings {

namespace py = pybind11;

void bind_cpu(py::module_& m) {
  m.def(
      "cpu_info",
      [] {
        py::list usable;
        for (cpu::Isa isa : cpu::usable_isas()) usable.append(cpu::isa_name(isa));
        py::dict info;
        info["detected"] = cpu::isa_name(cpu::detected_isa());
        info["chosen"] = cpu::isa_name(cpu::chosen_isa());
        info["usable"] = usable;
        info["num_threads"] = cpu::num_threads();
        return info;
      },
      "The CPU backend's instruction-set levels: 'detected' (the best this CPU supports), 'chosen' (the one "
      "in use: GRADSTATE_CPU_ISA when set, else the best one built in), 'usable' (built in and supported), "
      "and 'num_threads'.");
  m.def(
      "set_num_threads",
      [](py::handle n) {
        const std::int64_t count = as_int("n", n);
        py::gil_scoped_release release;
        cpu::set_num_threads(count);
      },
      py::arg("n"), "Sets the number of threads CPU kernels use (the caller included).");
  m.def("get_num_threads", &cpu::num_threads, "The number of threads CPU kernels use.");
  m.def("_peak_thread_scratch_bytes", &cpu::peak_thread_scratch_bytes,
        "The most scratch memory one thread of the CPU backend has held (for the memory benchmark).");
}

}  // namespace gradstate::bindings
