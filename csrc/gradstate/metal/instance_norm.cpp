// Launchers of the instance-normalization kernels (kernels/instance_norm.metal, whose opening comment lists
// each kernel's bindings and dispatch geometry).
#include <algorithm>
#include <cstddef>

#include "gradstate/core/integer_math.h"
#include "gradstate/metal/commands.h"
#include "gradstate/metal/metal_backend.h"

namespace gradstate::metal {
namespace {

// Threads of one plane's threadgroup: at most 256, the maximum the plane kernels declare (their partial sums
// per simdgroup are sized for it); a small plane gets fewer, whole 32-wide simdgroups covering its pixels.
constexpr std::size_t max_plane_threads = 256;
constexpr std::size_t simd_width = 32;
// Threads of a threadgroup of instance_norm_sum_over_batch, one per channel.
constexpr std::size_t channel_threads = 256;

Size plane_threadgroups(const NormParams& p) {
  return {static_cast<objc::UInt>(p.channels), static_cast<objc::UInt>(p.batch), 1};
}

Size plane_threadgroup(const Commands& commands, const NormParams& p) {
  const std::size_t pixels = static_cast<std::size_t>(p.height) * static_cast<std::size_t>(p.width);
  const std::size_t covering = round_up(pixels, simd_width);
  return {std::min({max_plane_threads, covering, commands.max_threads_per_threadgroup()}), 1, 1};
}

// Binds gamma or beta, or when it is absent a few bytes the kernel never reads (its flag in NormDispatch is
// 0): every buffer index a kernel declares needs a binding, and binding another argument in its place could
// stage that argument twice.
void set_optional_buffer(Commands& commands, const Buffer* buffer, int index) {
  static constexpr float absent[4] = {};
  if (buffer != nullptr) return commands.set_buffer(*buffer, index);
  commands.set_bytes(absent, sizeof(absent), index);
}

}  // namespace

void instance_norm_forward(Device& device, const NormParams& p, const Buffer& x, const Buffer* gamma,
                           const Buffer* beta, Buffer& y, Buffer& mean, Buffer& inv_std) {
  const NormDispatch d{gamma != nullptr, beta != nullptr, 0, 0};
  Commands commands(device);
  commands.set_kernel("instance_norm_forward");
  commands.set_params(p, 0);
  commands.set_params(d, 1);
  commands.set_buffer(x, 2);
  set_optional_buffer(commands, gamma, 3);
  set_optional_buffer(commands, beta, 4);
  commands.set_output(y, 5);
  commands.set_output(mean, 6);
  commands.set_output(inv_std, 7);
  commands.dispatch_threadgroups(plane_threadgroups(p), plane_threadgroup(commands, p));
  commands.run();
}

void instance_norm_backward(Device& device, const NormParams& p, const Buffer& dy, const Buffer& x,
                            const Buffer* gamma, const Buffer& mean, const Buffer& inv_std, Buffer& dx,
                            Buffer& dgamma, Buffer& dbeta, bool accumulate) {
  const NormDispatch d{gamma != nullptr, 0, accumulate, 0};
  // Each plane's gamma and beta gradients, summed over the images by the second kernel.
  const auto plane_dgamma = Buffer::allocate(DType::float32, {p.batch, p.channels}, DeviceKind::metal);
  const auto plane_dbeta = Buffer::allocate(DType::float32, {p.batch, p.channels}, DeviceKind::metal);
  Commands commands(device);

  commands.set_kernel("instance_norm_backward");
  commands.set_params(p, 0);
  commands.set_params(d, 1);
  commands.set_buffer(dy, 2);
  commands.set_buffer(x, 3);
  set_optional_buffer(commands, gamma, 4);
  commands.set_buffer(mean, 5);
  commands.set_buffer(inv_std, 6);
  commands.set_output(dx, 7);
  commands.set_output(*plane_dgamma, 8);
  commands.set_output(*plane_dbeta, 9);
  commands.dispatch_threadgroups(plane_threadgroups(p), plane_threadgroup(commands, p));

  commands.set_kernel("instance_norm_sum_over_batch");
  commands.set_params(p, 0);
  commands.set_params(d, 1);
  commands.set_buffer(*plane_dgamma, 2);
  commands.set_buffer(*plane_dbeta, 3);
  commands.set_output(dgamma, 4);
  commands.set_output(dbeta, 5);
  const std::size_t threads = std::min(channel_threads, commands.max_threads_per_threadgroup());
  const std::size_t threadgroups = ceil_div(static_cast<std::size_t>(p.channels), threads);
  commands.dispatch_threadgroups({threadgroups, 1, 1}, {threads, 1, 1});
  commands.run();
}

}  // namespace gradstate::metal
