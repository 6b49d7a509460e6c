// Convolution kernels of the Metal backend: the forward pass, the data gradient and the weights (and bias)
// gradient, each an implicit GEMM whose operand tiles are gathered from the activations into threadgroup
// memory; nothing the size of an im2col matrix is ever stored.
//
// Every GEMM kernel runs 256 threads per threadgroup as 16 x 16 threads, each accumulating a 4 x 4 tile
// of a 64 x 64 output tile, and stages two 16 x 64 float tiles (8 KiB of kernel-scope threadgroup memory,
// and for the data gradient 1 KiB more of flags and one atomic; no dynamic threadgroup memory). Below, P = batch * out_h * out_w (output pixels), Ig = in_c / groups,
// Og = out_c / groups, T = kernel_h * kernel_w, ceil(a / b) is written a/^b.
//
// conv_forward             y = conv(x, weights) (+ bias). M = output pixels, N = Og, K = T * Ig.
//   buffer(0) ConvParams p, buffer(1) ConvDispatch d (has_bias), buffer(2) x, buffer(3) weights (OHWI),
//   buffer(4) bias (read only when d.has_bias), buffer(5) y.
//   threadgroups (P /^ 64, Og /^ 64, groups), 256 threads.
// conv_data_gradient       dx = the transposed convolution of dy, gathered: the input pixels of one phase
//   (iy % stride_y, ix % stride_x) all receive the same kernel taps, so each threadgroup works on one
//   phase and its reduction runs over those taps only (K = taps of the phase * Og). M = the phase's input
//   pixels, N = Ig.
//   buffer(0) ConvParams p, buffer(1) dy, buffer(2) weights (OHWI), buffer(3) dx.
//   threadgroups (batch * (in_h /^ stride_y) * (in_w /^ stride_x) /^ 64, Ig /^ 64,
//   groups * stride_y * stride_x), 256 threads.
// conv_weights_gradient_partial   one split of the pixels' sum: M = Og, N = T * Ig, K = the split's pixels.
//   Writes partials[split] = (dW as OHWI, then db), D = out_c * T * Ig + out_c floats per split.
//   buffer(0) ConvParams p, buffer(1) ConvDispatch d (splits, pixels_per_split), buffer(2) dy, buffer(3) x,
//   buffer(4) partials (splits * D floats).
//   threadgroups (T * Ig /^ 64, Og /^ 64, groups * d.splits), 256 threads.
// conv_weights_gradient_sum       dW and db = (the old values when d.accumulate) + the splits, in order.
//   buffer(0) ConvParams p, buffer(1) ConvDispatch d (accumulate, splits), buffer(2) partials,
//   buffer(3) dweights (OHWI), buffer(4) dbias.
//   threadgroups (D /^ 256, 1, 1), 256 threads.
//
// With groups == in_c (depthwise) these replace the GEMM kernels, with the same arguments; each thread
// computes whole values (no threadgroup memory), 256 threads per threadgroup:
// conv_forward_depthwise                   one y value per thread: threadgroups (P * out_c /^ 256, 1, 1).
// conv_data_gradient_depthwise             one dx value per thread:
//   threadgroups (batch * in_h * in_w * in_c /^ 256, 1, 1).
// conv_weights_gradient_partial_depthwise  one dW value (and, for tap 0, db) of one split per thread:
//   threadgroups (T * out_c /^ 256, d.splits, 1).
#include <metal_stdlib>

#include "gradstate/core/params.h"

using namespace metal;
using namespace gradstate;

// A GEMM threadgroup: 16 x 16 threads, each computing kRegisterTile x kRegisterTile outputs spread 16 apart
// (so that neighbouring threads touch neighbouring words of the staged tiles).
constant constexpr uint kThreadsPerSide = 16;
constant constexpr uint kThreads = kThreadsPerSide * kThreadsPerSide;
constant constexpr uint kRegisterTile = 4;
constant constexpr uint kTileWidth = kThreadsPerSide * kRegisterTile;  // M and N extent of a tile
constant constexpr uint kTileDepth = 16;                               // K extent of a staged tile
constant constexpr uint kTileElements = kTileDepth * kTileWidth;
constant constexpr uint kLoadsPerThread = kTileElements / kThreads;

// Element strides of an activation (n, c, h, w) in either layout.
struct ActivationStrides {
  uint n, c, h, w;
};

inline ActivationStrides activation_strides(Layout layout, uint channels, uint height, uint width) {
  const uint image = channels * height * width;
  if (layout == Layout::NHWC) return {image, 1, width * channels, channels};
  return {image, height * width, width, 1};
}

// A pixel of an activation, from its index in (batch, height, width) order.
struct Pixel {
  uint n, row, col;
};

inline Pixel pixel_at(uint index, uint height, uint width) {
  const uint rows = index / width;
  return {rows / height, rows % height, index % width};
}

// A kernel tap and channel, from its index in the (kernel_h, kernel_w, channel) order of OHWI weights.
struct Tap {
  uint kh, kw, c;
};

inline Tap tap_at(uint index, uint kernel_w, uint channels) {
  const uint taps = index / channels;
  return {taps / kernel_w, taps % kernel_w, index % channels};
}

// x[n, ih, iw, channel] for the input pixel that output pixel `out` reads through tap `tap`; zero in the
// padding.
inline float input_at_tap(constant ConvParams& p, device const float* x, ActivationStrides xs, Pixel out,
                          Tap tap, uint channel) {
  const int ih = int(out.row) * p.stride_y - p.pad_top + int(tap.kh) * p.dilation_y;
  const int iw = int(out.col) * p.stride_x - p.pad_left + int(tap.kw) * p.dilation_x;
  if (ih < 0 || ih >= p.in_h || iw < 0 || iw >= p.in_w) return 0.0f;
  return x[out.n * xs.n + uint(ih) * xs.h + uint(iw) * xs.w + channel * xs.c];
}

// Where the e-th element a thread loads lands in a kTileDepth x kTileWidth tile. Consecutive threads take
// consecutive depths when the operand is contiguous along the reduction, else consecutive columns, so that
// their global reads coalesce.
struct TileSlot {
  uint depth, column;
};

inline TileSlot tile_slot(uint element, bool depth_fastest) {
  if (depth_fastest) return {element % kTileDepth, element / kTileDepth};
  return {element / kTileWidth, element % kTileWidth};
}

// The outputs of one thread: v[i][j] is tile row (row + 16 i), column (col + 16 j).
struct RegisterTile {
  float v[kRegisterTile][kRegisterTile];
};

// acc += a^T b over the depth of two staged tiles (a: depth x M, b: depth x N, row-major). With TermsOnly,
// only the elements of a whose `terms` entry is set take part: the others are zeros that stand for no term,
// whose products with an Inf or NaN of b would be NaN (see conv_data_gradient).
template <bool TermsOnly>
inline void multiply_accumulate(thread RegisterTile& acc, threadgroup const float* a,
                                threadgroup const float* b, threadgroup const bool* terms, uint row,
                                uint col) {
  for (uint k = 0; k < kTileDepth; ++k) {
    float a_values[kRegisterTile], b_values[kRegisterTile];
    bool a_terms[kRegisterTile];
    for (uint i = 0; i < kRegisterTile; ++i) {
      a_values[i] = a[k * kTileWidth + row + kThreadsPerSide * i];
      a_terms[i] = !TermsOnly || terms[k * kTileWidth + row + kThreadsPerSide * i];
    }
    for (uint j = 0; j < kRegisterTile; ++j) b_values[j] = b[k * kTileWidth + col + kThreadsPerSide * j];
    for (uint i = 0; i < kRegisterTile; ++i) {
      if (!a_terms[i]) continue;
      for (uint j = 0; j < kRegisterTile; ++j) acc.v[i][j] = fma(a_values[i], b_values[j], acc.v[i][j]);
    }
  }
}

// ---- forward ------------------------------------------------------------------------------------------

[[max_total_threads_per_threadgroup(256)]] kernel void conv_forward(
    constant ConvParams& p [[buffer(0)]], constant ConvDispatch& d [[buffer(1)]],
    device const float* x [[buffer(2)]], device const float* weights [[buffer(3)]],
    device const float* bias [[buffer(4)]], device float* y [[buffer(5)]],
    uint3 tile [[threadgroup_position_in_grid]], uint thread_index [[thread_index_in_threadgroup]]) {
  threadgroup float patches[kTileElements];  // [tap and input channel][output pixel]
  threadgroup float filters[kTileElements];  // [tap and input channel][output channel of the group]

  const bool nhwc = p.layout == Layout::NHWC;
  const ActivationStrides xs = activation_strides(p.layout, p.in_c, p.in_h, p.in_w);
  const ActivationStrides ys = activation_strides(p.layout, p.out_c, p.out_h, p.out_w);
  const uint in_per_group = p.in_c / p.groups, out_per_group = p.out_c / p.groups;
  const uint pixels = uint(p.batch) * uint(p.out_h) * uint(p.out_w);
  const uint reduction = p.kernel_h * p.kernel_w * in_per_group;
  const uint group = tile.z, first_pixel = tile.x * kTileWidth, first_out = tile.y * kTileWidth;
  // Neighbouring threads store neighbouring elements of y: channels in NHWC, pixels in NCHW.
  const uint row = nhwc ? thread_index / kThreadsPerSide : thread_index % kThreadsPerSide;
  const uint col = nhwc ? thread_index % kThreadsPerSide : thread_index / kThreadsPerSide;

  RegisterTile acc = {};
  for (uint k0 = 0; k0 < reduction; k0 += kTileDepth) {
    for (uint load = 0; load < kLoadsPerThread; ++load) {
      const uint element = thread_index + load * kThreads;
      // x is contiguous along channels (the depth) in NHWC, along pixels in NCHW.
      const TileSlot s = tile_slot(element, nhwc);
      const uint pixel = first_pixel + s.column, k = k0 + s.depth;
      float value = 0.0f;
      if (pixel < pixels && k < reduction) {
        const Tap tap = tap_at(k, p.kernel_w, in_per_group);
        value = input_at_tap(p, x, xs, pixel_at(pixel, p.out_h, p.out_w), tap, group * in_per_group + tap.c);
      }
      patches[s.depth * kTileWidth + s.column] = value;

      // Weights are contiguous along the depth.
      const TileSlot f = tile_slot(element, true);
      const uint o = first_out + f.column, kf = k0 + f.depth;
      const bool inside = o < out_per_group && kf < reduction;
      filters[f.depth * kTileWidth + f.column] =
          inside ? weights[(group * out_per_group + o) * reduction + kf] : 0.0f;
    }
    threadgroup_barrier(mem_flags::mem_threadgroup);
    multiply_accumulate<false>(acc, patches, filters, nullptr, row, col);
    threadgroup_barrier(mem_flags::mem_threadgroup);
  }

  for (uint i = 0; i < kRegisterTile; ++i) {
    const uint pixel = first_pixel + row + kThreadsPerSide * i;
    if (pixel >= pixels) continue;
    const Pixel out = pixel_at(pixel, p.out_h, p.out_w);
    for (uint j = 0; j < kRegisterTile; ++j) {
      const uint o = first_out + col + kThreadsPerSide * j;
      if (o >= out_per_group) continue;
      const uint channel = group * out_per_group + o;
      const float b = d.has_bias ? bias[channel] : 0.0f;
      y[out.n * ys.n + out.row * ys.h + out.col * ys.w + channel * ys.c] = acc.v[i][j] + b;
    }
  }
}

// ---- data gradient ------------------------------------------------------------------------------------

// Along one axis, the kernel taps k that carry output positions onto the input positions
// i = phase (mod stride): those with (phase + pad - k * dilation) divisible by stride. They form the
// arithmetic progression first, first + step, ... of `count` taps.
struct TapProgression {
  int first, step, count;
};

inline TapProgression taps_of_phase(int phase, int pad, int dilation, int stride, int kernel_size) {
  int step = 1;  // stride / gcd(dilation, stride): the period of the divisibility
  while ((step * dilation) % stride != 0) ++step;
  int first = 0;
  while (first < step && (phase + pad - first * dilation) % stride != 0) ++first;
  const int count = (first < step && first < kernel_size) ? (kernel_size - 1 - first) / step + 1 : 0;
  return {first, step, count};
}

// The k-th (tap, output channel) pair of a phase, output channels fastest as in dy's NHWC rows.
inline Tap phase_tap_at(uint k, uint out_per_group, TapProgression taps_y, TapProgression taps_x) {
  const uint t = k / out_per_group;
  return {uint(taps_y.first + int(t / uint(taps_x.count)) * taps_y.step),
          uint(taps_x.first + int(t % uint(taps_x.count)) * taps_x.step), k % out_per_group};
}

// The output position that input position i reads through tap k, or -1 when it lies outside [0, size);
// (i + pad - k * dilation) is a multiple of stride for the taps of i's phase.
inline int output_position(int i, int pad, int k, int dilation, int stride, int size) {
  const int shifted = i + pad - k * dilation;
  const int o = shifted / stride;
  return (shifted >= 0 && o < size) ? o : -1;
}

[[max_total_threads_per_threadgroup(256)]] kernel void conv_data_gradient(
    constant ConvParams& p [[buffer(0)]], device const float* dy [[buffer(1)]],
    device const float* weights [[buffer(2)]], device float* dx [[buffer(3)]],
    uint3 tile [[threadgroup_position_in_grid]], uint thread_index [[thread_index_in_threadgroup]]) {
  threadgroup float gradients[kTileElements];  // [tap and output channel][input pixel of the phase]
  threadgroup float filters[kTileElements];    // [tap and output channel][input channel of the group]
  // Whether a gradients element is a term of dx: not where its tap's output position lies outside dy (a
  // zero there). The zeros are left out of the products once a weight staged so far is NaN or Inf, where
  // 0 x Inf would make NaN of outputs the reference's direct terms leave ±Inf.
  threadgroup bool terms[kTileElements];
  threadgroup atomic_uint non_finite_weights;
  if (thread_index == 0) atomic_store_explicit(&non_finite_weights, 0u, memory_order_relaxed);
  threadgroup_barrier(mem_flags::mem_threadgroup);

  const bool nhwc = p.layout == Layout::NHWC;
  const ActivationStrides xs = activation_strides(p.layout, p.in_c, p.in_h, p.in_w);
  const ActivationStrides ys = activation_strides(p.layout, p.out_c, p.out_h, p.out_w);
  const uint in_per_group = p.in_c / p.groups, out_per_group = p.out_c / p.groups;
  const uint group = tile.z % uint(p.groups), phase = tile.z / uint(p.groups);
  const int phase_y = int(phase) / p.stride_x, phase_x = int(phase) % p.stride_x;
  const TapProgression taps_y = taps_of_phase(phase_y, p.pad_top, p.dilation_y, p.stride_y, p.kernel_h);
  const TapProgression taps_x = taps_of_phase(phase_x, p.pad_left, p.dilation_x, p.stride_x, p.kernel_w);
  const uint phase_h = phase_y < p.in_h ? uint(p.in_h - phase_y + p.stride_y - 1) / uint(p.stride_y) : 0;
  const uint phase_w = phase_x < p.in_w ? uint(p.in_w - phase_x + p.stride_x - 1) / uint(p.stride_x) : 0;
  const uint pixels = p.batch * phase_h * phase_w;
  const uint first_pixel = tile.x * kTileWidth, first_in = tile.y * kTileWidth;
  // The grid is sized for the largest phase; tiles past a smaller phase's pixels skip the reduction.
  const uint reduction = first_pixel < pixels ? uint(taps_y.count * taps_x.count) * out_per_group : 0;
  // Neighbouring threads store neighbouring elements of dx: channels in NHWC, pixels in NCHW.
  const uint row = nhwc ? thread_index / kThreadsPerSide : thread_index % kThreadsPerSide;
  const uint col = nhwc ? thread_index % kThreadsPerSide : thread_index / kThreadsPerSide;

  RegisterTile acc = {};
  for (uint k0 = 0; k0 < reduction; k0 += kTileDepth) {
    for (uint load = 0; load < kLoadsPerThread; ++load) {
      const uint element = thread_index + load * kThreads;
      // dy is contiguous along output channels (the depth) in NHWC, along pixels in NCHW.
      const TileSlot s = tile_slot(element, nhwc);
      const uint pixel = first_pixel + s.column, k = k0 + s.depth;
      float value = 0.0f;
      bool term = true;
      if (pixel < pixels && k < reduction) {
        const Pixel at = pixel_at(pixel, phase_h, phase_w);
        const Tap tap = phase_tap_at(k, out_per_group, taps_y, taps_x);
        const int iy = phase_y + int(at.row) * p.stride_y, ix = phase_x + int(at.col) * p.stride_x;
        const int oy = output_position(iy, p.pad_top, int(tap.kh), p.dilation_y, p.stride_y, p.out_h);
        const int ox = output_position(ix, p.pad_left, int(tap.kw), p.dilation_x, p.stride_x, p.out_w);
        term = oy >= 0 && ox >= 0;
        if (term) {
          value =
              dy[at.n * ys.n + uint(oy) * ys.h + uint(ox) * ys.w + (group * out_per_group + tap.c) * ys.c];
        }
      }
      gradients[s.depth * kTileWidth + s.column] = value;
      terms[s.depth * kTileWidth + s.column] = term;

      // Weights are contiguous along input channels (the columns).
      const TileSlot f = tile_slot(element, false);
      const uint c = first_in + f.column, kf = k0 + f.depth;
      float weight = 0.0f;
      if (c < in_per_group && kf < reduction) {
        const Tap tap = phase_tap_at(kf, out_per_group, taps_y, taps_x);
        const uint o = group * out_per_group + tap.c;
        weight = weights[((o * p.kernel_h + tap.kh) * p.kernel_w + tap.kw) * in_per_group + c];
      }
      filters[f.depth * kTileWidth + f.column] = weight;
      if (!isfinite(weight)) atomic_store_explicit(&non_finite_weights, 1u, memory_order_relaxed);
    }
    threadgroup_barrier(mem_flags::mem_threadgroup);
    // The same for every thread: stores to the flag come before the barrier above or after the one below.
    if (atomic_load_explicit(&non_finite_weights, memory_order_relaxed) != 0) {
      multiply_accumulate<true>(acc, gradients, filters, terms, row, col);
    } else {
      multiply_accumulate<false>(acc, gradients, filters, nullptr, row, col);
    }
    threadgroup_barrier(mem_flags::mem_threadgroup);
  }

  for (uint i = 0; i < kRegisterTile; ++i) {
    const uint pixel = first_pixel + row + kThreadsPerSide * i;
    if (pixel >= pixels) continue;
    const Pixel at = pixel_at(pixel, phase_h, phase_w);
    const uint iy = uint(phase_y) + at.row * uint(p.stride_y), ix = uint(phase_x) + at.col * uint(p.stride_x);
    for (uint j = 0; j < kRegisterTile; ++j) {
      const uint c = first_in + col + kThreadsPerSide * j;
      if (c >= in_per_group) continue;
      dx[at.n * xs.n + iy * xs.h + ix * xs.w + (group * in_per_group + c) * xs.c] = acc.v[i][j];
    }
  }
}

// ---- weights gradient ---------------------------------------------------------------------------------

[[max_total_threads_per_threadgroup(256)]] kernel void conv_weights_gradient_partial(
    constant ConvParams& p [[buffer(0)]], constant ConvDispatch& d [[buffer(1)]],
    device const float* dy [[buffer(2)]], device const float* x [[buffer(3)]],
    device float* partials [[buffer(4)]], uint3 tile [[threadgroup_position_in_grid]],
    uint thread_index [[thread_index_in_threadgroup]]) {
  threadgroup float gradients[kTileElements];  // [output pixel][output channel of the group]
  threadgroup float patches[kTileElements];    // [output pixel][tap and input channel]

  const bool nhwc = p.layout == Layout::NHWC;
  const ActivationStrides xs = activation_strides(p.layout, p.in_c, p.in_h, p.in_w);
  const ActivationStrides ys = activation_strides(p.layout, p.out_c, p.out_h, p.out_w);
  const uint in_per_group = p.in_c / p.groups, out_per_group = p.out_c / p.groups;
  const uint columns = p.kernel_h * p.kernel_w * in_per_group;
  const uint weight_count = p.out_c * columns;
  const uint group = tile.z % uint(p.groups), split = tile.z / uint(p.groups);
  const uint pixels = uint(p.batch) * uint(p.out_h) * uint(p.out_w);
  const uint first_pixel = split * d.pixels_per_split;
  const uint end_pixel = min(pixels, first_pixel + d.pixels_per_split);
  const uint first_out = tile.y * kTileWidth, first_column = tile.x * kTileWidth;
  // The first column tile of each row of tiles also sums dy for db, from the dy tile it stages anyway.
  const bool sums_bias = tile.x == 0 && thread_index < kTileWidth;
  // Neighbouring threads store neighbouring partial sums (along a row of OHWI weights).
  const uint row = thread_index / kThreadsPerSide, col = thread_index % kThreadsPerSide;

  RegisterTile acc = {};
  float bias_sum = 0.0f;
  for (uint p0 = first_pixel; p0 < end_pixel; p0 += kTileDepth) {
    for (uint load = 0; load < kLoadsPerThread; ++load) {
      // Both operands are contiguous along channels (the columns) in NHWC, along pixels in NCHW.
      const TileSlot s = tile_slot(thread_index + load * kThreads, !nhwc);
      const uint pixel = p0 + s.depth;
      float gradient = 0.0f, patch = 0.0f;
      if (pixel < end_pixel) {
        const Pixel out = pixel_at(pixel, p.out_h, p.out_w);
        const uint o = first_out + s.column, k = first_column + s.column;
        if (o < out_per_group) {
          gradient = dy[out.n * ys.n + out.row * ys.h + out.col * ys.w + (group * out_per_group + o) * ys.c];
        }
        if (k < columns) {
          const Tap tap = tap_at(k, p.kernel_w, in_per_group);
          patch = input_at_tap(p, x, xs, out, tap, group * in_per_group + tap.c);
        }
      }
      gradients[s.depth * kTileWidth + s.column] = gradient;
      patches[s.depth * kTileWidth + s.column] = patch;
    }
    threadgroup_barrier(mem_flags::mem_threadgroup);
    multiply_accumulate<false>(acc, gradients, patches, nullptr, row, col);
    if (sums_bias) {
      for (uint k = 0; k < kTileDepth; ++k) bias_sum += gradients[k * kTileWidth + thread_index];
    }
    threadgroup_barrier(mem_flags::mem_threadgroup);
  }

  device float* split_partials = partials + split * (weight_count + p.out_c);
  for (uint i = 0; i < kRegisterTile; ++i) {
    const uint o = first_out + row + kThreadsPerSide * i;
    if (o >= out_per_group) continue;
    for (uint j = 0; j < kRegisterTile; ++j) {
      const uint k = first_column + col + kThreadsPerSide * j;
      if (k < columns) split_partials[(group * out_per_group + o) * columns + k] = acc.v[i][j];
    }
  }
  if (sums_bias && first_out + thread_index < out_per_group) {
    split_partials[weight_count + group * out_per_group + first_out + thread_index] = bias_sum;
  }
}

[[max_total_threads_per_threadgroup(256)]] kernel void conv_weights_gradient_sum(
    constant ConvParams& p [[buffer(0)]], constant ConvDispatch& d [[buffer(1)]],
    device const float* partials [[buffer(2)]], device float* dweights [[buffer(3)]],
    device float* dbias [[buffer(4)]], uint index [[thread_position_in_grid]]) {
  const uint weight_count = uint(p.out_c) * uint(p.kernel_h * p.kernel_w) * uint(p.in_c / p.groups);
  const uint count = weight_count + p.out_c;
  if (index >= count) return;
  device float* out = index < weight_count ? dweights + index : dbias + (index - weight_count);
  // Splits in a fixed order, so that the result does not depend on how the GPU scheduled them.
  float sum = d.accumulate ? *out : 0.0f;
  for (int split = 0; split < d.splits; ++split) sum += partials[uint(split) * count + index];
  *out = sum;
}

// ---- depthwise ----------------------------------------------------------------------------------------
//
// With one input channel per group (groups == in_c), each output reads a single input channel, so a tile
// of a GEMM kernel would keep one useful column out of 64. These kernels give each thread whole outputs
// instead, reading straight from device memory (each input value is reused by few outputs).

// An element of an activation (n, c, h, w), from its index in memory.
struct Element {
  uint n, c, row, col;
};

inline Element element_at(uint index, Layout layout, uint channels, uint height, uint width) {
  if (layout == Layout::NHWC) {
    const Pixel at = pixel_at(index / channels, height, width);
    return {at.n, index % channels, at.row, at.col};
  }
  const uint plane = index / (height * width), in_plane = index % (height * width);
  return {plane / channels, plane % channels, in_plane / width, in_plane % width};
}

[[max_total_threads_per_threadgroup(256)]] kernel void conv_forward_depthwise(
    constant ConvParams& p [[buffer(0)]], constant ConvDispatch& d [[buffer(1)]],
    device const float* x [[buffer(2)]], device const float* weights [[buffer(3)]],
    device const float* bias [[buffer(4)]], device float* y [[buffer(5)]],
    uint index [[thread_position_in_grid]]) {
  if (index >= uint(p.batch) * uint(p.out_h) * uint(p.out_w) * uint(p.out_c)) return;
  const Element out = element_at(index, p.layout, p.out_c, p.out_h, p.out_w);
  const ActivationStrides xs = activation_strides(p.layout, p.in_c, p.in_h, p.in_w);
  const uint channel = out.c / uint(p.out_c / p.groups);
  device const float* filter = weights + out.c * uint(p.kernel_h * p.kernel_w);
  float sum = 0.0f;
  for (uint kh = 0; kh < uint(p.kernel_h); ++kh) {
    for (uint kw = 0; kw < uint(p.kernel_w); ++kw) {
      const float input = input_at_tap(p, x, xs, {out.n, out.row, out.col}, {kh, kw, 0}, channel);
      sum = fma(input, filter[kh * uint(p.kernel_w) + kw], sum);
    }
  }
  y[index] = sum + (d.has_bias ? bias[out.c] : 0.0f);
}

[[max_total_threads_per_threadgroup(256)]] kernel void conv_data_gradient_depthwise(
    constant ConvParams& p [[buffer(0)]], device const float* dy [[buffer(1)]],
    device const float* weights [[buffer(2)]], device float* dx [[buffer(3)]],
    uint index [[thread_position_in_grid]]) {
  if (index >= uint(p.batch) * uint(p.in_h) * uint(p.in_w) * uint(p.in_c)) return;
  const Element at = element_at(index, p.layout, p.in_c, p.in_h, p.in_w);
  const ActivationStrides ys = activation_strides(p.layout, p.out_c, p.out_h, p.out_w);
  const int iy = int(at.row), ix = int(at.col);
  // Only the taps of this pixel's phase land it on output positions.
  const TapProgression taps_y =
      taps_of_phase(iy % p.stride_y, p.pad_top, p.dilation_y, p.stride_y, p.kernel_h);
  const TapProgression taps_x =
      taps_of_phase(ix % p.stride_x, p.pad_left, p.dilation_x, p.stride_x, p.kernel_w);
  const uint out_per_group = uint(p.out_c / p.groups);
  float sum = 0.0f;
  for (int ty = 0; ty < taps_y.count; ++ty) {
    const int kh = taps_y.first + ty * taps_y.step;
    const int oy = output_position(iy, p.pad_top, kh, p.dilation_y, p.stride_y, p.out_h);
    if (oy < 0) continue;
    for (int tx = 0; tx < taps_x.count; ++tx) {
      const int kw = taps_x.first + tx * taps_x.step;
      const int ox = output_position(ix, p.pad_left, kw, p.dilation_x, p.stride_x, p.out_w);
      if (ox < 0) continue;
      for (uint o = at.c * out_per_group; o < (at.c + 1) * out_per_group; ++o) {
        const float gradient = dy[at.n * ys.n + uint(oy) * ys.h + uint(ox) * ys.w + o * ys.c];
        sum = fma(gradient, weights[(o * uint(p.kernel_h) + uint(kh)) * uint(p.kernel_w) + uint(kw)], sum);
      }
    }
  }
  dx[index] = sum;
}

// One thread per (tap, output channel) and split, output channels fastest; the threads of tap 0 also sum
// db. Partial sums are laid out as conv_weights_gradient_partial's, for conv_weights_gradient_sum.
[[max_total_threads_per_threadgroup(256)]] kernel void conv_weights_gradient_partial_depthwise(
    constant ConvParams& p [[buffer(0)]], constant ConvDispatch& d [[buffer(1)]],
    device const float* dy [[buffer(2)]], device const float* x [[buffer(3)]],
    device float* partials [[buffer(4)]], uint2 position [[thread_position_in_grid]]) {
  const uint taps = uint(p.kernel_h * p.kernel_w);
  const uint o = position.x % uint(p.out_c), tap_index = position.x / uint(p.out_c), split = position.y;
  if (tap_index >= taps) return;
  const ActivationStrides xs = activation_strides(p.layout, p.in_c, p.in_h, p.in_w);
  const ActivationStrides ys = activation_strides(p.layout, p.out_c, p.out_h, p.out_w);
  const Tap tap = {tap_index / uint(p.kernel_w), tap_index % uint(p.kernel_w), 0};
  const uint channel = o / uint(p.out_c / p.groups);
  const uint pixels = uint(p.batch) * uint(p.out_h) * uint(p.out_w);
  const uint first_pixel = split * uint(d.pixels_per_split);
  const uint end_pixel = min(pixels, first_pixel + uint(d.pixels_per_split));
  float weight_sum = 0.0f, bias_sum = 0.0f;
  for (uint pixel = first_pixel; pixel < end_pixel; ++pixel) {
    const Pixel out = pixel_at(pixel, p.out_h, p.out_w);
    const float gradient = dy[out.n * ys.n + out.row * ys.h + out.col * ys.w + o * ys.c];
    weight_sum = fma(gradient, input_at_tap(p, x, xs, out, tap, channel), weight_sum);
    bias_sum += gradient;
  }
  device float* split_partials = partials + split * (uint(p.out_c) * (taps + 1));
  split_partials[o * taps + tap_index] = weight_sum;
  if (tap_index == 0) split_partials[uint(p.out_c) * taps + o] = bias_sum;
}
