// The table of CPU kernel entry points. Each kernel source in this folder is compiled once per ISA level
// (cmake/GradstateIsa.cmake) inside namespace GRADSTATE_ISA_NAMESPACE, and each level's table.cpp fills one
// CpuKernels; dispatch.cpp picks the table at run time.
//
// The per-level sources include only this folder's headers (whose definitions all live in the level's
// namespace), thread_pool.h and memory.h (whose code is out of line or specific to the caller), <cmath>,
// <type_traits> and C headers: a C++ library template or inline function instantiated in two levels would
// be merged by the linker into one copy compiled for one level, which could then run on a CPU without that
// level's instructions.
#pragma once

#include <cstdint>

#include "gradstate/core/params.h"

namespace gradstate::cpu {

struct CpuKernels {
  // y = conv(x, w) + b (b may be null).
  void (*convolution_forward)(const ConvParams& p, const float* x, const float* w, const float* b, float* y);
  // dx = the transposed convolution of dy with w.
  void (*convolution_data_gradient)(const ConvParams& p, const float* dy, const float* w, float* dx);
  // dw, db summed over the batch; overwritten unless accumulate.
  void (*convolution_weights_gradient)(const ConvParams& p, const float* dy, const float* x, float* dw,
                                       float* db, bool accumulate);
  void (*instance_norm_forward)(const NormParams& p, const float* x, const float* gamma, const float* beta,
                                float* y, float* mean, float* inv_std);
  void (*instance_norm_backward)(const NormParams& p, const float* dy, const float* x, const float* gamma,
                                 const float* mean, const float* inv_std, float* dx, float* dgamma,
                                 float* dbeta, bool accumulate);
  // One optimizer update of `size` values in place from their gradient, with the optimizer's own vectors
  // (updated too; null where the options use none: SGD without momentum, Adam without AMSGrad).
  void (*sgd_update)(const OptimizerParams& p, std::int64_t size, const float* gradient, float* values,
                     float* momentum);
  void (*rmsprop_update)(const OptimizerParams& p, std::int64_t size, const float* gradient, float* values,
                         float* sum_of_squares);
  void (*adam_update)(const OptimizerParams& p, std::int64_t size, const float* gradient, float* values,
                      float* momentum, float* velocity, float* maximum_velocity);
};

// The table of each level built into this binary, defined by that level's table.cpp.
const CpuKernels& kernels_scalar();
const CpuKernels& kernels_x86_v3();
const CpuKernels& kernels_x86_v4();
const CpuKernels& kernels_neon();

#ifdef GRADSTATE_ISA_NAMESPACE
// The entry points of the level being compiled, one per CpuKernels field, defined in the file of their op.
namespace GRADSTATE_ISA_NAMESPACE {
void convolution_forward(const ConvParams& p, const float* x, const float* w, const float* b, float* y);
void convolution_data_gradient(const ConvParams& p, const float* dy, const float* w, float* dx);
void convolution_weights_gradient(const ConvParams& p, const float* dy, const float* x, float* dw, float* db,
                                  bool accumulate);
void instance_norm_forward(const NormParams& p, const float* x, const float* gamma, const float* beta,
                           float* y, float* mean, float* inv_std);
void instance_norm_backward(const NormParams& p, const float* dy, const float* x, const float* gamma,
                            const float* mean, const float* inv_std, float* dx, float* dgamma, float* dbeta,
                            bool accumulate);
void sgd_update(const OptimizerParams& p, std::int64_t size, const float* gradient, float* values,
                float* momentum);
void rmsprop_update(const OptimizerParams& p, std::int64_t size, const float* gradient, float* values,
                    float* sum_of_squares);
void adam_update(const OptimizerParams& p, std::int64_t size, const float* gradient, float* values,
                 float* momentum, float* velocity, float* maximum_velocity);
}  // namespace GRADSTATE_ISA_NAMESPACE
#endif

}  // namespace gradstate::cpu
