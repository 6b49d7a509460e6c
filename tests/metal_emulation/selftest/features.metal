// Correct kernels that exercise the builtins, vector types, math, simd collectives and atomics; selftest.cpp
// computes every expected value on the host.
#include <metal_stdlib>
#include "selftest_types.h"
using namespace metal;

constant float kOffset = 0.25f;

kernel void record_builtins(device BuiltinRecord* records [[buffer(0)]],
                            uint3 gid [[thread_position_in_grid]],
                            ushort3 lid [[thread_position_in_threadgroup]],
                            uint3 group [[threadgroup_position_in_grid]],
                            uint3 size [[threads_per_threadgroup]],
                            ushort3 groups [[threadgroups_per_grid]],
                            ushort2 gid2 [[thread_position_in_grid]],
                            uint gid_x [[thread_position_in_grid]],
                            uint index [[thread_index_in_threadgroup]],
                            ushort lane [[thread_index_in_simdgroup]],
                            uint simdgroup [[simdgroup_index_in_threadgroup]],
                            uint width [[threads_per_simdgroup]],
                            ushort simdgroups [[simdgroups_per_threadgroup]],
                            uint3 grid [[threads_per_grid]]) {
  device BuiltinRecord& r = records[(gid.z * grid.y + gid.y) * grid.x + gid.x];
  uint3 values[5] = {gid, uint3(lid), group, size, uint3(groups)};
  for (int k = 0; k < 3; ++k) {
    r.position_in_grid[k] = values[0][k];
    r.position_in_threadgroup[k] = values[1][k];
    r.threadgroup_position[k] = values[2][k];
    r.threads_per_threadgroup[k] = values[3][k];
    r.threadgroups_per_grid[k] = values[4][k];
  }
  r.grid_position_2d[0] = gid2.x;
  r.grid_position_2d[1] = gid2.y;
  r.grid_x = gid_x;
  r.index_in_threadgroup = index;
  r.index_in_simdgroup = lane;
  r.simdgroup_index = simdgroup;
  r.threads_per_simdgroup = width;
  r.simdgroups_per_threadgroup = simdgroups;
}

// Vector arithmetic, swizzles, conversions and math on one float4 per thread.
kernel void vector_math(device const float4* input [[buffer(0)]],
                        device float4* output [[buffer(1)]],
                        device half4* halves [[buffer(2)]],
                        device uint* bits [[buffer(3)]],
                        uint gid [[thread_position_in_grid]]) {
  float4 x = input[gid];
  float4 y = x * 2.0f + float4(1.0f, 0.0f, 0.0f, -1.0f);
  float2 low = y.xy;
  y.zw = low;
  y.xy += float2(kOffset);
  float3 tail = float3(y.yzw);
  float4 z = float4(tail.zyx, dot(x, float4(1.0f)));
  z = clamp(z, -100.0f, 100.0f);
  z.x = mix(z.x, z.y, 0.5f) + fma(x.x, x.y, 1.0f);
  z.y = select(z.y, floor(z.y) + ceil(x.z), x.w > 0.0f);
  z.z = precise::sqrt(fabs(x.x)) + rsqrt(4.0f) + fast::exp(0.0f) + log(1.0f);
  z.w = max(min(z.w, 50.0f), abs(-1.0f));
  output[gid] = z;
  halves[gid] = half4(y);
  bits[gid] = as_type<uint>(x.x) ^ as_type<uint>(half2(1.0h, 2.0h));
}

// Simd collectives over one simdgroup per threadgroup; lane values are small integers, so float sums are
// exact.
kernel void simd_collectives(device const int* input [[buffer(0)]],
                             device int* output [[buffer(1)]],
                             device atomic_uint* positives [[buffer(2)]],
                             device atomic_int* total [[buffer(3)]],
                             uint gid [[thread_position_in_grid]],
                             uint lane [[thread_index_in_simdgroup]]) {
  const int v = input[gid];
  device int* out = output + gid * 12;
  out[0] = int(simd_sum(float(v)));
  out[1] = simd_prefix_exclusive_sum(v);
  out[2] = simd_prefix_inclusive_sum(v);
  out[3] = simd_max(v);
  out[4] = simd_min(v);
  out[5] = simd_shuffle_xor(v, ushort(1));
  out[6] = simd_shuffle_down(v, ushort(3));
  out[7] = simd_shuffle_up(v, ushort(2));
  out[8] = simd_broadcast(v, ushort(5));
  out[9] = simd_all(v > -100) ? 1 : 0;
  out[10] = simd_any(v == 7) ? 1 : 0;
  out[11] = simd_shuffle(v, ushort(31 - lane));
  if (v > 0) {
    atomic_fetch_add_explicit(positives, 1u, memory_order_relaxed);
  }
  atomic_fetch_add_explicit(total, v, memory_order_relaxed);
  simdgroup_barrier(mem_flags::mem_none);
}
