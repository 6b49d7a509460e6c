// Instance-normalization kernels: one threadgroup per (image, channel) plane, its threads striding over the
// plane's pixels, so any plane size runs on any threadgroup size.
//
// Kernels, bindings and dispatch geometry (threadgroup (c, n) of a plane kernel handles channel c of
// image n):
//
// instance_norm_forward: threadgroups (channels, batch, 1) of at most 256 threads (fewer for small planes;
// the kernel declares that maximum, so the pipeline reports it).
//   [[buffer(0)]] constant NormParams& p
//   [[buffer(1)]] constant NormDispatch& d     has_gamma, has_beta
//   [[buffer(2)]] device const float* x
//   [[buffer(3)]] device const float* gamma    (channels), read only when d.has_gamma
//   [[buffer(4)]] device const float* beta     (channels), read only when d.has_beta
//   [[buffer(5)]] device float* y
//   [[buffer(6)]] device float* mean           (batch, channels)
//   [[buffer(7)]] device float* inv_std        (batch, channels)
//
// instance_norm_backward: the same geometry.
//   [[buffer(0)]] constant NormParams& p
//   [[buffer(1)]] constant NormDispatch& d     has_gamma
//   [[buffer(2)]] device const float* dy
//   [[buffer(3)]] device const float* x
//   [[buffer(4)]] device const float* gamma    (channels), read only when d.has_gamma
//   [[buffer(5)]] device const float* mean     (batch, channels), as the forward pass saved it
//   [[buffer(6)]] device const float* inv_std  (batch, channels)
//   [[buffer(7)]] device float* dx
//   [[buffer(8)]] device float* plane_dgamma   (batch, channels): sum(dy * xhat) of each plane
//   [[buffer(9)]] device float* plane_dbeta    (batch, channels): sum(dy) of each plane
//
// instance_norm_sum_over_batch: threadgroups (ceil(channels / threads), 1, 1), any threadgroup size; one
// thread per channel.
//   [[buffer(0)]] constant NormParams& p
//   [[buffer(1)]] constant NormDispatch& d     accumulate
//   [[buffer(2)]] device const float* plane_dgamma
//   [[buffer(3)]] device const float* plane_dbeta
//   [[buffer(4)]] device float* dgamma         (channels), read too when d.accumulate
//   [[buffer(5)]] device float* dbeta          (channels), read too when d.accumulate
//
// The host sets no threadgroup memory: the plane kernels keep one partial sum per simdgroup in kernel-scope
// arrays (at most 32 * 16 bytes each).
//
// Numerics, in float only. The forward pass first finds the mean of x - x0 (x0 the plane's first value, so
// that data far from zero keeps its precision) and rounds the mean m to float. A second pass sums x - m and
// (x - m)^2: sum(x - m) / pixels is the error of m, which corrects the variance, the output and the saved
// mean, and the variance never subtracts two large numbers. The backward pass corrects the saved mean alike.
// Where those sums overflow (values more than about 1.8e19 from the mean, or near the top of the float
// range), both passes take them again over x scaled by a power of two (see overflow_scale), exactly, so that
// the statistics and outputs come out as finite as the reference's; other planes never scale.
#include <metal_stdlib>

#include "gradstate/core/params.h"

using namespace metal;
using gradstate::Layout;
using gradstate::NormDispatch;
using gradstate::NormParams;

// Simdgroups of a plane kernel's threadgroup: the plane kernels declare at most 256 threads, and SIMD widths
// are at least 8.
constant constexpr uint max_simdgroups = 32;

// The pixels of one (image, channel) plane: pixel i is element base + i * stride.
struct Plane {
  ulong base;
  ulong stride;
  uint pixels;
};

Plane plane_of(constant NormParams& p, uint n, uint c) {
  Plane plane;
  plane.pixels = uint(p.height) * uint(p.width);
  if (p.layout == Layout::NCHW) {
    plane.base = (ulong(n) * uint(p.channels) + c) * plane.pixels;
    plane.stride = 1;
  } else {
    plane.base = ulong(n) * plane.pixels * uint(p.channels) + c;
    plane.stride = uint(p.channels);
  }
  return plane;
}

ulong element_of(Plane plane, uint pixel) { return plane.base + ulong(pixel) * plane.stride; }

// The sum of every thread's value, returned to every thread of the threadgroup. Each thread adds the
// simdgroups' sums in the same order, so all threads get the same total, whatever the schedule.
template <typename T>
T threadgroup_sum(T value, threadgroup T* partials, uint simd_lane, uint simd_group, uint simd_groups) {
  const T simd_total = simd_sum(value);
  if (simd_lane == 0) partials[simd_group] = simd_total;
  threadgroup_barrier(mem_flags::mem_threadgroup);
  T total = T(0.0f);
  for (uint s = 0; s < simd_groups; ++s) total += partials[s];
  // A later sum may rewrite partials only once every thread has read them.
  threadgroup_barrier(mem_flags::mem_threadgroup);
  return total;
}

// The largest magnitude among the plane's x (NaN left out), returned to every thread of the threadgroup.
float plane_largest(device const float* x, Plane plane, threadgroup float* partials, uint thread_index,
                    uint threads, uint simd_lane, uint simd_group, uint simd_groups) {
  float largest = 0.0f;
  for (uint i = thread_index; i < plane.pixels; i += threads) {
    const float v = fabs(x[element_of(plane, i)]);
    largest = v > largest ? v : largest;
  }
  const float simd_largest = simd_max(largest);
  if (simd_lane == 0) partials[simd_group] = simd_largest;
  threadgroup_barrier(mem_flags::mem_threadgroup);
  float total = 0.0f;
  for (uint s = 0; s < simd_groups; ++s) total = partials[s] > total ? partials[s] : total;
  threadgroup_barrier(mem_flags::mem_threadgroup);
  return total;
}

// The power of two that brings values of at most `largest` in magnitude within 2^48, so that sums of their
// squares over up to 2^31 pixels stay within the float range; 1 where largest is Inf (which the formulas
// spread as the reference does) or 0.
float overflow_scale(float largest) {
  return isfinite(largest) && largest > 0.0f ? exp2(48.0f - ceil(log2(largest))) : 1.0f;
}

// The statistics of a plane of x * scale: its float mean m (from the plane's first value), the error of m
// (exact mean - m), and the variance.
struct Statistics {
  float plane_mean, rounding, variance;
};

Statistics plane_statistics(device const float* x, Plane plane, float scale, threadgroup float* partials,
                            threadgroup float2* pair_partials, uint thread_index, uint threads,
                            uint simd_lane, uint simd_group, uint simd_groups) {
  const float pixels = float(plane.pixels);
  const float first = x[plane.base] * scale;
  float shifted = 0.0f;
  for (uint i = thread_index; i < plane.pixels; i += threads)
    shifted += x[element_of(plane, i)] * scale - first;
  shifted = threadgroup_sum(shifted, partials, simd_lane, simd_group, simd_groups);
  Statistics s;
  s.plane_mean = first + shifted / pixels;
  // Sums of x - plane_mean and its square.
  float2 deviation = float2(0.0f);
  for (uint i = thread_index; i < plane.pixels; i += threads) {
    const float t = x[element_of(plane, i)] * scale - s.plane_mean;
    deviation += float2(t, t * t);
  }
  deviation = threadgroup_sum(deviation, pair_partials, simd_lane, simd_group, simd_groups);
  s.rounding = deviation.x / pixels;
  s.variance = deviation.y / pixels - s.rounding * s.rounding;
  return s;
}

// Sums of dy, dy * (x * scale - m) and x * scale - m over a plane (m: the saved mean times scale).
float3 backward_sums(device const float* dy, device const float* x, Plane plane, float scale, float m,
                     threadgroup float3* partials, uint thread_index, uint threads, uint simd_lane,
                     uint simd_group, uint simd_groups) {
  float3 sums = float3(0.0f);
  for (uint i = thread_index; i < plane.pixels; i += threads) {
    const ulong at = element_of(plane, i);
    const float grad = dy[at], t = x[at] * scale - m;
    sums += float3(grad, grad * t, t);
  }
  return threadgroup_sum(sums, partials, simd_lane, simd_group, simd_groups);
}

[[max_total_threads_per_threadgroup(256)]]
kernel void instance_norm_forward(constant NormParams& p [[buffer(0)]],
                                  constant NormDispatch& d [[buffer(1)]],
                                  device const float* x [[buffer(2)]],
                                  device const float* gamma [[buffer(3)]],
                                  device const float* beta [[buffer(4)]],
                                  device float* y [[buffer(5)]],
                                  device float* mean [[buffer(6)]],
                                  device float* inv_std [[buffer(7)]],
                                  uint2 group [[threadgroup_position_in_grid]],
                                  uint thread_index [[thread_index_in_threadgroup]],
                                  uint threads [[threads_per_threadgroup]],
                                  uint simd_lane [[thread_index_in_simdgroup]],
                                  uint simd_group [[simdgroup_index_in_threadgroup]],
                                  uint simd_groups [[simdgroups_per_threadgroup]]) {
  threadgroup float partials[max_simdgroups];
  threadgroup float2 pair_partials[max_simdgroups];
  const uint c = group.x, n = group.y;
  const Plane plane = plane_of(p, n, c);

  // The statistics of x * s: of x (s = 1), unless its sums overflowed.
  float s = 1.0f;
  Statistics st = plane_statistics(x, plane, s, partials, pair_partials, thread_index, threads, simd_lane,
                                   simd_group, simd_groups);
  if (!isfinite(st.plane_mean + st.rounding) || !isfinite(st.variance)) {
    s = overflow_scale(plane_largest(x, plane, partials, thread_index, threads, simd_lane, simd_group,
                                     simd_groups));
    if (s != 1.0f)
      st = plane_statistics(x, plane, s, partials, pair_partials, thread_index, threads, simd_lane,
                            simd_group, simd_groups);
  }
  // 1 / std of x * s. Rounding can make the variance slightly negative; NaN must stay NaN, which max() would
  // drop.
  const float scaled_inv = 1.0f / sqrt((st.variance < 0.0f ? 0.0f : st.variance) + p.epsilon * s * s);

  const uint statistics = n * uint(p.channels) + c;
  if (thread_index == 0) {
    mean[statistics] = (st.plane_mean + st.rounding) / s;
    inv_std[statistics] = scaled_inv * s;
  }
  const float scale = (d.has_gamma != 0 ? gamma[c] : 1.0f) * scaled_inv;
  const float offset = d.has_beta != 0 ? beta[c] : 0.0f;
  for (uint i = thread_index; i < plane.pixels; i += threads) {
    const ulong at = element_of(plane, i);
    y[at] = scale * ((x[at] * s - st.plane_mean) - st.rounding) + offset;
  }
}

// dx = a * (dy - mean(dy) - xhat * mean(dy * xhat)), with a = gamma * inv_std, from the plane's sums of dy,
// dy * (x - m) and x - m (m the saved mean).
[[max_total_threads_per_threadgroup(256)]]
kernel void instance_norm_backward(constant NormParams& p [[buffer(0)]],
                                   constant NormDispatch& d [[buffer(1)]],
                                   device const float* dy [[buffer(2)]],
                                   device const float* x [[buffer(3)]],
                                   device const float* gamma [[buffer(4)]],
                                   device const float* mean [[buffer(5)]],
                                   device const float* inv_std [[buffer(6)]],
                                   device float* dx [[buffer(7)]],
                                   device float* plane_dgamma [[buffer(8)]],
                                   device float* plane_dbeta [[buffer(9)]],
                                   uint2 group [[threadgroup_position_in_grid]],
                                   uint thread_index [[thread_index_in_threadgroup]],
                                   uint threads [[threads_per_threadgroup]],
                                   uint simd_lane [[thread_index_in_simdgroup]],
                                   uint simd_group [[simdgroup_index_in_threadgroup]],
                                   uint simd_groups [[simdgroups_per_threadgroup]]) {
  threadgroup float3 partials[max_simdgroups];
  threadgroup float largest_partials[max_simdgroups];
  const uint c = group.x, n = group.y;
  const Plane plane = plane_of(p, n, c);
  const float pixels = float(plane.pixels);
  const uint statistics = n * uint(p.channels) + c;
  const float inv = inv_std[statistics];

  // The sums over x * s: over x (s = 1), unless those over x - m overflowed (see the forward pass).
  float s = 1.0f;
  float3 sums = backward_sums(dy, x, plane, s, mean[statistics], partials, thread_index, threads, simd_lane,
                              simd_group, simd_groups);
  if (!isfinite(sums.y) || !isfinite(sums.z)) {
    s = overflow_scale(plane_largest(x, plane, largest_partials, thread_index, threads, simd_lane, simd_group,
                                     simd_groups));
    if (s != 1.0f)
      sums = backward_sums(dy, x, plane, s, mean[statistics] * s, partials, thread_index, threads, simd_lane,
                           simd_group, simd_groups);
  }
  const float plane_mean = mean[statistics] * s;
  const float rounding = sums.z / pixels;  // exact mean - plane_mean
  const float scaled_inv = inv / s;        // 1 / std of x * s
  float sum_dy_xhat = (sums.y - rounding * sums.x) * scaled_inv;
  if (!isfinite(sums.x)) {
    // dy is not finite: its correction, rounding * sum(dy), may be Inf x 0 or Inf - Inf, which would make NaN
    // of the ±Inf the formula's terms give. Summed again, term by term.
    float terms = 0.0f;
    for (uint i = thread_index; i < plane.pixels; i += threads) {
      const ulong at = element_of(plane, i);
      terms += dy[at] * (((x[at] * s - plane_mean) - rounding) * scaled_inv);
    }
    sum_dy_xhat = threadgroup_sum(float3(terms, 0.0f, 0.0f), partials, simd_lane, simd_group, simd_groups).x;
  }
  const float a = (d.has_gamma != 0 ? gamma[c] : 1.0f) * inv;
  const float mean_dy = sums.x / pixels, mean_dy_xhat = sum_dy_xhat / pixels;

  if (thread_index == 0) {
    plane_dgamma[statistics] = sum_dy_xhat;
    plane_dbeta[statistics] = sums.x;
  }
  // In a plane of two pixels of finite values the formula's terms cancel but for epsilon's share (see the
  // CPU's instance_norm.cpp): dx = a * epsilon * inv_std^2 * (dy - mean(dy)), as exact as inv_std.
  const bool two_pixels = plane.pixels == 2 && isfinite(a) && isfinite(mean_dy) && isfinite(mean_dy_xhat);
  const float scale = two_pixels ? a * (p.epsilon * inv * inv) : a;
  const float along_xhat = two_pixels ? 0.0f : mean_dy_xhat;
  // One product by the scale, as in the formula: an infinite a (gamma) gives ±Inf, where terms scaled each on
  // its own would add up to Inf - Inf. Subtracting before scaling keeps exact cancellations exact (a
  // one-pixel plane has dx = 0).
  for (uint i = thread_index; i < plane.pixels; i += threads) {
    const ulong at = element_of(plane, i);
    const float xhat = ((x[at] * s - plane_mean) - rounding) * scaled_inv;
    dx[at] = scale * ((dy[at] - mean_dy) - xhat * along_xhat);
  }
}

// dgamma and dbeta: the planes' sums added over the images in order, so the result is deterministic.
kernel void instance_norm_sum_over_batch(constant NormParams& p [[buffer(0)]],
                                         constant NormDispatch& d [[buffer(1)]],
                                         device const float* plane_dgamma [[buffer(2)]],
                                         device const float* plane_dbeta [[buffer(3)]],
                                         device float* dgamma [[buffer(4)]],
                                         device float* dbeta [[buffer(5)]],
                                         uint c [[thread_position_in_grid]]) {
  const uint channels = uint(p.channels);
  if (c >= channels) return;  // the last threadgroup's spare threads; this kernel has no barrier
  float total_gamma = d.accumulate != 0 ? dgamma[c] : 0.0f;
  float total_beta = d.accumulate != 0 ? dbeta[c] : 0.0f;
  for (uint n = 0; n < uint(p.batch); ++n) {
    total_gamma += plane_dgamma[n * channels + c];
    total_beta += plane_dbeta[n * channels + c];
  }
  dgamma[c] = total_gamma;
  dbeta[c] = total_beta;
}
