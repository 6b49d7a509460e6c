// Convolution on the CPU backend: the kernels of the ISA level chosen for this process.
#include "gradstate/cpu/cpu_backend.h"
#include "gradstate/cpu/dispatch.h"

namespace gradstate {

void CpuBackend::convolution_forward(const ConvParams& p, const Buffer& x, const Buffer& weights,
                                     const Buffer* bias, Buffer& y) {
  cpu::cpu_kernels().convolution_forward(p, x.f32(), weights.f32(), bias ? bias->f32() : nullptr, y.f32());
}

void CpuBackend::convolution_data_gradient(const ConvParams& p, const Buffer& dy, const Buffer& weights,
                                           Buffer& dx) {
  cpu::cpu_kernels().convolution_data_gradient(p, dy.f32(), weights.f32(), dx.f32());
}

void CpuBackend::convolution_weights_gradient(const ConvParams& p, const Buffer& dy, const Buffer& x,
                                              Buffer& dweights, Buffer& dbias, bool accumulate) {
  cpu::cpu_kernels().convolution_weights_gradient(p, dy.f32(), x.f32(), dweights.f32(), dbias.f32(),
                                                  accumulate);
}

}  // namespace gradstate
