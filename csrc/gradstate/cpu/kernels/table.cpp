// The kernel table of the level this file is compiled for.
#include "gradstate/cpu/kernels/kernels.h"

namespace gradstate::cpu {

const CpuKernels& GRADSTATE_ISA_TABLE() {
  using namespace GRADSTATE_ISA_NAMESPACE;
  static const CpuKernels table{convolution_forward,
                                convolution_data_gradient,
                                convolution_weights_gradient,
                                instance_norm_forward,
                                instance_norm_backward,
                                sgd_update,
                                rmsprop_update,
                                adam_update};
  return table;
}

}  // namespace gradstate::cpu
