#include "gradstate/core/unavailable_backend.h"

#include "gradstate/core/errors.h"

namespace gradstate {

void UnavailableBackend::refuse() const { throw ValueError(unavailable_message(*this)); }

void UnavailableBackend::convolution_forward(const ConvParams&, const Buffer&, const Buffer&, const Buffer*,
                                             Buffer&) {
  refuse();
}
void UnavailableBackend::convolution_data_gradient(const ConvParams&, const Buffer&, const Buffer&, Buffer&) {
  refuse();
}
void UnavailableBackend::convolution_weights_gradient(const ConvParams&, const Buffer&, const Buffer&,
                                                      Buffer&, Buffer&, bool) {
  refuse();
}
void UnavailableBackend::instance_norm_forward(const NormParams&, const Buffer&, const Buffer*, const Buffer*,
                                               Buffer&, Buffer&, Buffer&) {
  refuse();
}
void UnavailableBackend::instance_norm_backward(const NormParams&, const Buffer&, const Buffer&,
                                                const Buffer*, const Buffer&, const Buffer&, Buffer&, Buffer&,
                                                Buffer&, bool) {
  refuse();
}
void UnavailableBackend::sgd_update(const OptimizerParams&, const Buffer&, Buffer&, Buffer*) { refuse(); }
void UnavailableBackend::rmsprop_update(const OptimizerParams&, const Buffer&, Buffer&, Buffer&) { refuse(); }
void UnavailableBackend::adam_update(const OptimizerParams&, const Buffer&, Buffer&, Buffer&, Buffer&,
                                     Buffer*) {
  refuse();
}

}  // namespace gradstate
