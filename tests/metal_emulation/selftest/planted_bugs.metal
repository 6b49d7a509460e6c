// Kernels with planted bugs that the emulator must detect (selftest.cpp checks each).
#include <metal_stdlib>
#include "selftest_types.h"
using namespace metal;

// BUG: no threadgroup_barrier between the writes to `tile` and the read of a neighbour's element. In thread
// order every neighbour but the last has written; in a shuffled order some have not, and the read finds the
// poison (NaN) of fresh threadgroup memory.
kernel void shift_without_barrier(device const float* input [[buffer(0)]],
                                  device float* output [[buffer(1)]],
                                  uint gid [[thread_position_in_grid]],
                                  uint lid [[thread_position_in_threadgroup]],
                                  uint size [[threads_per_threadgroup]]) {
  threadgroup float tile[256];
  tile[lid] = input[gid];
  output[gid] = tile[(lid + 1) % size];
}

// BUG: a barrier inside a branch that only some threads take.
kernel void divergent_barrier(device float* output [[buffer(0)]],
                              threadgroup float* tile [[threadgroup(0)]],
                              uint lid [[thread_position_in_threadgroup]]) {
  if (lid < 16) {
    tile[lid] = float(lid);
    threadgroup_barrier(mem_flags::mem_threadgroup);
    output[lid] = tile[15 - lid];
  }
}

// BUG: odd and even threads wait at different barriers.
kernel void barriers_at_two_sites(device float* output [[buffer(0)]],
                                  uint lid [[thread_position_in_threadgroup]]) {
  if (lid % 2 == 0) {
    threadgroup_barrier(mem_flags::mem_device);
  } else {
    threadgroup_barrier(mem_flags::mem_device);
  }
  output[lid] = 1.0f;
}

// BUG: reads one element past the end of its input (found by AddressSanitizer only).
kernel void read_past_end(device const float* input [[buffer(0)]],
                          device float* output [[buffer(1)]],
                          uint gid [[thread_position_in_grid]]) {
  output[gid] = input[gid] + input[gid + 1];
}

// Correct, but the host may bind `params` with too few bytes or not at all.
kernel void scale(device const float* input [[buffer(0)]],
                  device float* output [[buffer(1)]],
                  constant ReduceParams& params [[buffer(2)]],
                  uint gid [[thread_position_in_grid]]) {
  if (gid < params.count) {
    output[gid] = input[gid] * params.scale;
  }
}

// BUG: 32 KiB in a kernel-scope array plus the host's dynamic threadgroup memory exceed the limit.
kernel void too_much_threadgroup_memory(device float* output [[buffer(0)]],
                                        threadgroup float* scratch [[threadgroup(0)]],
                                        uint lid [[thread_index_in_threadgroup]]) {
  threadgroup float big[8192];
  big[lid] = float(lid);
  scratch[0] = 0.0f;
  output[lid] = big[lid];
}

// Questionable: even and odd lanes call simd_sum at different places, so each half sums only itself.
kernel void divergent_simd_sum(device float* output [[buffer(0)]],
                               uint lane [[thread_index_in_simdgroup]]) {
  float value = 1.0f;
  if (lane % 2 == 0) {
    value = simd_sum(value);
  } else {
    value = simd_sum(value);
  }
  output[lane] = value;
}

// BUG: the lower half of the simdgroup reads lanes of the upper half, which are not in the collective.
kernel void shuffle_from_inactive_lane(device float* output [[buffer(0)]],
                                       uint lane [[thread_index_in_simdgroup]]) {
  if (lane < 16) {
    output[lane] = simd_shuffle(float(lane), ushort(lane + 16));
  }
}
