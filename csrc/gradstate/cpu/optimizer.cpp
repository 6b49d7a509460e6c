// Optimizer updates on the CPU backend: the kernels of the ISA level chosen for this process.
#include "gradstate/cpu/cpu_backend.h"
#include "gradstate/cpu/dispatch.h"

namespace gradstate {

void CpuBackend::sgd_update(const OptimizerParams& p, const Buffer& gradient, Buffer& values,
                            Buffer* momentum) {
  cpu::cpu_kernels().sgd_update(p, values.size(), gradient.f32(), values.f32(),
                                momentum ? momentum->f32() : nullptr);
}

void CpuBackend::rmsprop_update(const OptimizerParams& p, const Buffer& gradient, Buffer& values,
                                Buffer& sum_of_squares) {
  cpu::cpu_kernels().rmsprop_update(p, values.size(), gradient.f32(), values.f32(), sum_of_squares.f32());
}

void CpuBackend::adam_update(const OptimizerParams& p, const Buffer& gradient, Buffer& values,
                             Buffer& momentum, Buffer& velocity, Buffer* maximum_velocity) {
  cpu::cpu_kernels().adam_update(p, values.size(), gradient.f32(), values.f32(), momentum.f32(),
                                 velocity.f32(), maximum_velocity ? maximum_velocity->f32() : nullptr);
}

}  // namespace gradstate
