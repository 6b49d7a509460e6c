// Structs shared by the self-test kernels and their host driver: plain 32-bit fields, one layout in both.
#pragma once

struct ReduceParams {
  unsigned int count;  // elements in the input
  float scale;         // every element is multiplied by it
};

// Every builtin as one thread of `record_builtins` saw it; vectors are stored as x, y, z.
struct BuiltinRecord {
  unsigned int position_in_grid[3];
  unsigned int position_in_threadgroup[3];
  unsigned int threadgroup_position[3];
  unsigned int threads_per_threadgroup[3];
  unsigned int threadgroups_per_grid[3];
  unsigned int grid_position_2d[2];  // thread_position_in_grid as ushort2
  unsigned int grid_x;               // thread_position_in_grid as uint
  unsigned int index_in_threadgroup;
  unsigned int index_in_simdgroup;
  unsigned int simdgroup_index;
  unsigned int threads_per_simdgroup;
  unsigned int simdgroups_per_threadgroup;
};
