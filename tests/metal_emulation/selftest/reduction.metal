// Correct kernels: two-level reductions (simd_sum, then threadgroup memory, then simd_sum again).
#include <metal_stdlib>
#include "selftest_types.h"
using namespace metal;

// One partial sum per threadgroup of scale * input, through dynamic threadgroup memory (one float per
// simdgroup).
kernel void reduce_sum(device const float* input [[buffer(0)]],
                       device float* partial_sums [[buffer(1)]],
                       constant ReduceParams& params [[buffer(2)]],
                       threadgroup float* simdgroup_sums [[threadgroup(0)]],
                       uint gid [[thread_position_in_grid]],
                       uint lid [[thread_index_in_threadgroup]],
                       uint group [[threadgroup_position_in_grid]],
                       uint lane [[thread_index_in_simdgroup]],
                       uint simdgroup [[simdgroup_index_in_threadgroup]],
                       uint simdgroups [[simdgroups_per_threadgroup]]) {
  float value = gid < params.count ? input[gid] * params.scale : 0.0f;
  value = simd_sum(value);
  if (lane == 0) {
    simdgroup_sums[simdgroup] = value;
  }
  threadgroup_barrier(mem_flags::mem_threadgroup);
  if (simdgroup == 0) {
    float total = lane < simdgroups ? simdgroup_sums[lane] : 0.0f;
    total = simd_sum(total);
    if (lid == 0) {
      partial_sums[group] = total;
    }
  }
}

// One maximum per threadgroup, through a kernel-scope threadgroup array; instantiated for float and int.
template <typename T>
[[max_total_threads_per_threadgroup(1024)]] kernel void reduce_max(
    device const T* input [[buffer(0)]],
    device T* maxima [[buffer(1)]],
    uint2 gid [[thread_position_in_grid]],
    ushort lid [[thread_index_in_threadgroup]],
    uint2 group [[threadgroup_position_in_grid]],
    uint2 groups [[threadgroups_per_grid]],
    uint2 grid [[threads_per_grid]],
    ushort lane [[thread_index_in_simdgroup]],
    ushort simdgroup [[simdgroup_index_in_threadgroup]],
    ushort simdgroups [[simdgroups_per_threadgroup]]) {
  threadgroup T simdgroup_maxima[32];
  T value = simd_max(input[gid.y * grid.x + gid.x]);
  if (lane == 0) {
    simdgroup_maxima[simdgroup] = value;
  }
  threadgroup_barrier(mem_flags::mem_threadgroup);
  if (simdgroup == 0) {
    value = simdgroup_maxima[min(ushort(lane), ushort(simdgroups - 1))];
    value = simd_max(value);
    if (lid == 0) {
      maxima[group.y * groups.x + group.x] = value;
    }
  }
}

template [[host_name("reduce_max_float")]] kernel void reduce_max<float>(device const float*, device float*,
                                                                        uint2, ushort, uint2, uint2, uint2,
                                                                        ushort, ushort, ushort);
template [[host_name("reduce_max_int")]] kernel void reduce_max<int>(device const int*, device int*, uint2,
                                                                    ushort, uint2, uint2, uint2, ushort,
                                                                    ushort, ushort);
