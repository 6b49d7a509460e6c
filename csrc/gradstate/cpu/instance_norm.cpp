// Instance normalization on the CPU backend: the kernels of the ISA level chosen for this process.
#include "gradstate/cpu/cpu_backend.h"
#include "gradstate/cpu/dispatch.h"

namespace gradstate {

void CpuBackend::instance_norm_forward(const NormParams& p, const Buffer& x, const Buffer* gamma,
                                       const Buffer* beta, Buffer& y, Buffer& mean, Buffer& inv_std) {
  cpu::cpu_kernels().instance_norm_forward(p, x.f32(), gamma ? gamma->f32() : nullptr,
                                           beta ? beta->f32() : nullptr, y.f32(), mean.f32(), inv_std.f32());
}

void CpuBackend::instance_norm_backward(const NormParams& p, const Buffer& dy, const Buffer& x,
                                        const Buffer* gamma, const Buffer& mean, const Buffer& inv_std,
                                        Buffer& dx, Buffer& dgamma, Buffer& dbeta, bool accumulate) {
  cpu::cpu_kernels().instance_norm_backward(p, dy.f32(), x.f32(), gamma ? gamma->f32() : nullptr, mean.f32(),
                                            inv_std.f32(), dx.f32(), dgamma.f32(), dbeta.f32(), accumulate);
}

}  // namespace gradstate
