// Convolution on the Metal backend: the launchers of the kernels in kernels/convolution.metal, whose opening
// comment lists each kernel's arguments and dispatch geometry.
#include <algorithm>
#include <cstdint>
#include <memory>

#include "gradstate/core/integer_math.h"
#include "gradstate/metal/commands.h"
#include "gradstate/metal/metal_backend.h"

namespace gradstate::metal {
namespace {

// Every kernel runs 256 threads per threadgroup; the GEMM kernels as 16 x 16 threads on a 64 x 64 output
// tile, reducing 16 values per staged tile.
constexpr objc::UInt threadgroup_threads = 256;
constexpr std::int64_t tile_width = 64;
constexpr std::int64_t tile_depth = 16;

// The weights gradient's split of the pixels aims at this many threadgroups, enough to keep every core of
// a large GPU busy.
constexpr std::int64_t target_threadgroups = 512;
// A split sums at least this many pixels, so that its partial sums are worth writing and adding.
constexpr std::int64_t min_pixels_per_split = 256;
// The partial sums stay below this many floats (64 MiB).
constexpr std::int64_t max_partial_floats = std::int64_t{1} << 24;

objc::UInt tiles(std::int64_t extent) { return static_cast<objc::UInt>(ceil_div(extent, tile_width)); }

// Threadgroups of the kernels with one thread per value, for `values` values.
objc::UInt threadgroups_for(std::int64_t values) {
  return static_cast<objc::UInt>(ceil_div(values, std::int64_t{threadgroup_threads}));
}

// One input channel per group: the depthwise kernels replace the GEMM kernels, whose tiles would be
// mostly empty.
bool is_depthwise(const ConvParams& p) { return p.groups == p.in_c; }

std::int64_t output_pixels(const ConvParams& p) { return std::int64_t{p.batch} * p.out_h * p.out_w; }

// Columns of the weights gradient per output channel: kernel taps x input channels of a group.
std::int64_t weights_per_output_channel(const ConvParams& p) {
  return std::int64_t{p.kernel_h} * p.kernel_w * (p.in_c / p.groups);
}

// The dW and db values of one split's partial sums.
std::int64_t partial_sums_per_split(const ConvParams& p) {
  return std::int64_t{p.out_c} * weights_per_output_channel(p) + p.out_c;
}

// The grid of the weights gradient's partial sums (a slice per split along the last used axis).
Size partial_sums_grid(const ConvParams& p, std::int64_t splits) {
  if (is_depthwise(p)) {
    return {threadgroups_for(std::int64_t{p.kernel_h} * p.kernel_w * p.out_c), objc::UInt(splits), 1};
  }
  return {tiles(weights_per_output_channel(p)), tiles(p.out_c / p.groups), objc::UInt(p.groups * splits)};
}

// How the weights gradient splits the pixels: enough splits to reach target_threadgroups, but none smaller
// than min_pixels_per_split and no more than the partial sums' memory allows. It depends on the shape only,
// so the (fixed-order) sum of the splits gives the same bits on every run.
ConvDispatch weights_gradient_split(const ConvParams& p, bool accumulate) {
  const std::int64_t pixels = output_pixels(p);
  const Size one_split = partial_sums_grid(p, 1);
  const auto threadgroups_per_split = std::int64_t(one_split.width * one_split.height * one_split.depth);
  std::int64_t splits = ceil_div(target_threadgroups, threadgroups_per_split);
  splits = std::min(splits, ceil_div(pixels, min_pixels_per_split));
  splits = std::max<std::int64_t>(1, std::min(splits, max_partial_floats / partial_sums_per_split(p)));
  // Whole staged tiles per split; recounting the splits then leaves none empty.
  const std::int64_t pixels_per_split =
      std::max(tile_depth, ceil_div(ceil_div(pixels, splits), tile_depth) * tile_depth);
  ConvDispatch d{};
  d.accumulate = accumulate ? 1 : 0;
  d.splits = static_cast<std::int32_t>(ceil_div(pixels, pixels_per_split));
  d.pixels_per_split = static_cast<std::int32_t>(pixels_per_split);
  return d;
}

}  // namespace

void convolution_forward(Device& device, const ConvParams& p, const Buffer& x, const Buffer& weights,
                         const Buffer* bias, Buffer& y) {
  if (output_pixels(p) == 0) return;
  ConvDispatch d{};
  d.has_bias = bias != nullptr ? 1 : 0;
  Commands commands(device);
  commands.set_kernel(is_depthwise(p) ? "conv_forward_depthwise" : "conv_forward");
  commands.set_params(p, 0);
  commands.set_params(d, 1);
  commands.set_buffer(x, 2);
  commands.set_buffer(weights, 3);
  // Without a bias the kernel reads nothing there, but every argument must be bound: the weights stand in.
  commands.set_buffer(bias != nullptr ? *bias : weights, 4);
  commands.set_output(y, 5);
  if (is_depthwise(p)) {
    commands.dispatch_threadgroups({threadgroups_for(output_pixels(p) * p.out_c), 1, 1},
                                   {threadgroup_threads, 1, 1});
  } else {
    commands.dispatch_threadgroups({tiles(output_pixels(p)), tiles(p.out_c / p.groups), objc::UInt(p.groups)},
                                   {threadgroup_threads, 1, 1});
  }
  commands.run();
}

void convolution_data_gradient(Device& device, const ConvParams& p, const Buffer& dy, const Buffer& weights,
                               Buffer& dx) {
  const std::int64_t input_pixels = std::int64_t{p.batch} * p.in_h * p.in_w;
  if (input_pixels == 0) return;
  Commands commands(device);
  commands.set_kernel(is_depthwise(p) ? "conv_data_gradient_depthwise" : "conv_data_gradient");
  commands.set_params(p, 0);
  commands.set_buffer(dy, 1);
  commands.set_buffer(weights, 2);
  commands.set_output(dx, 3);
  if (is_depthwise(p)) {
    commands.dispatch_threadgroups({threadgroups_for(input_pixels * p.in_c), 1, 1},
                                   {threadgroup_threads, 1, 1});
  } else {
    // One slice of the grid per (group, phase): a phase is the input pixels with the same
    // (row % stride_y, column % stride_x), and the first phase has the most pixels.
    const std::int64_t largest_phase =
        std::int64_t{p.batch} * ceil_div(p.in_h, p.stride_y) * ceil_div(p.in_w, p.stride_x);
    const auto phases = objc::UInt(p.stride_y) * objc::UInt(p.stride_x);
    commands.dispatch_threadgroups(
        {tiles(largest_phase), tiles(p.in_c / p.groups), objc::UInt(p.groups) * phases},
        {threadgroup_threads, 1, 1});
  }
  commands.run();
}

void convolution_weights_gradient(Device& device, const ConvParams& p, const Buffer& dy, const Buffer& x,
                                  Buffer& dweights, Buffer& dbias, bool accumulate) {
  const ConvDispatch d = weights_gradient_split(p, accumulate);
  const std::int64_t per_split = partial_sums_per_split(p);
  // Every partial sum is written by the first kernel before the second reads it.
  const std::shared_ptr<Buffer> partials =
      Buffer::allocate(DType::float32, {d.splits, per_split}, DeviceKind::metal, Buffer::Fill::none);
  Commands commands(device);
  if (d.splits > 0) {
    commands.set_kernel(is_depthwise(p) ? "conv_weights_gradient_partial_depthwise"
                                        : "conv_weights_gradient_partial");
    commands.set_params(p, 0);
    commands.set_params(d, 1);
    commands.set_buffer(dy, 2);
    commands.set_buffer(x, 3);
    commands.set_output(*partials, 4);
    commands.dispatch_threadgroups(partial_sums_grid(p, d.splits), {threadgroup_threads, 1, 1});
  }
  commands.set_kernel("conv_weights_gradient_sum");
  commands.set_params(p, 0);
  commands.set_params(d, 1);
  commands.set_buffer(*partials, 2);
  commands.set_output(dweights, 3);
  commands.set_output(dbias, 4);
  commands.dispatch_threadgroups({threadgroups_for(per_split), 1, 1}, {threadgroup_threads, 1, 1});
  commands.run();
}

}  // namespace gradstate::metal
