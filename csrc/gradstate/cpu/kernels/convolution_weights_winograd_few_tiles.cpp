// The weight gradient of dense 3x3 stride-1 layers of many channels and few tiles (small images, as
// r3x3_512's 7x7), by the F(2x2, 3x3) of convolution_weights_winograd.cpp, NHWC.
//
// There, dU[xi][c][o] goes through memory between its GEMMs and its transform into dW: for 512 x 512
// channels, 16 MiB written and read back, and more than the transforms save. Here every tile is transformed
// once, up front: V[xi][c block][tile][NR] (the GEMMs' B operand, packed) and Z[xi][tile][o] (their
// k-major A operand), 4 MiB each for r3x3_512. Then a task takes a few tiles of MR output channels and a
// block of NR input channels: the 16 GEMMs over all the tiles, gemm_tiles at a time, give those blocks of dU
// in the task's scratch, transformed into dW at once, so dU never leaves the core's cache. Each value of dW
// is one task's, so the result does not depend on the thread count.
#include <cstdint>
#include <cstring>

#include "gradstate/cpu/kernels/conv_geometry.h"
#include "gradstate/cpu/kernels/convolution_winograd.h"
#include "gradstate/cpu/kernels/gemm.h"
#include "gradstate/cpu/kernels/vec.h"
#include "gradstate/cpu/kernels/winograd.h"
#include "gradstate/cpu/memory.h"
#include "gradstate/cpu/thread_pool.h"

namespace gradstate::cpu::GRADSTATE_ISA_NAMESPACE {
namespace {

// V and Z of all the tiles together are at most this size (r3x3_512's are 8 MiB).
constexpr std::int64_t max_transformed_bytes = std::int64_t{16} << 20;
constexpr std::int64_t chunk_tiles = 16;  // tiles transformed by one task, whose dy it sums for db
constexpr std::int64_t task_rows = 8;     // microkernel tiles of output channels per task, at most
constexpr std::int64_t gemm_tiles = 128;  // tiles per GEMM, at most (see weights_rows)
// Tasks per thread, at least, where the blocks allow: a thread's share of uneven tasks evens out.
constexpr std::int64_t tasks_per_thread = 4;

template <int MR, int NV>
struct FewTiles : WinogradWeightsLayer {
  static constexpr std::int64_t NR = NV * lanes;

  FewTiles(const ConvParams& p, const float* dy, const float* x)
      : WinogradWeightsLayer(p, dy, x),
        tiles(grid.count),
        c_blocks(ceil_div(channels, NR)),
        ldz(round_up(outputs, MR)),
        chunks(ceil_div(tiles, chunk_tiles)) {}

  std::int64_t transformed_bytes() const {
    return std::int64_t{sizeof(float)} * positions * tiles * (c_blocks * NR + ldz);
  }

  // V[xi][c block][tile][NR], zero past the channels.
  float* v_at(float* v, int xi, std::int64_t tile, std::int64_t c) const {
    return v + ((xi * c_blocks + c / NR) * tiles + tile) * NR + c % NR;
  }

  // V and Z of the tiles of chunk `chunk`, and the chunk's sum of dy into its db.
  void transform_chunk(std::int64_t chunk, const float* zeros, float* v, float* z, float* db) const {
    const std::int64_t first = chunk * chunk_tiles, end = min_of(tiles, first + chunk_tiles);
    std::memset(db, 0, sizeof(float) * outputs);
    TilePatches<S> patches(geo, grid, x, zeros, first);
    for (std::int64_t t = first; t < end; ++t) {
      patches.transform_next_to([&](int xi, std::int64_t c) { return v_at(v, xi, t, c); });
      // The columns past the channels and the rows past the outputs only reach values that are not stored,
      // and are zeroed so that they are not garbage the multiply-adds would be slow on.
      for (int xi = 0; xi < positions; ++xi) {
        if (channels % NR) std::memset(v_at(v, xi, t, channels), 0, sizeof(float) * (NR - channels % NR));
        std::memset(z + (xi * tiles + t) * ldz + outputs, 0, sizeof(float) * (ldz - outputs));
      }
      const float* src[4];  // null outside the output
      grid.output_pixels(geo, t, dy, src);
      auto at = [&](int xi, std::int64_t o) { return z + (xi * tiles + t) * ldz + o; };
      transform_tile_gradients<S>(src, 0, outputs, db, at);
    }
  }

  // dW for the output channels of microkernel tiles [first, last) (rows past the outputs computed, never
  // stored) and the input channels of block cb: each tile's block of dU from the 16 GEMMs over all the tiles,
  // in du (positions x MR x NR floats per tile of outputs), then G^T dU G with vectors across the input
  // channels. The GEMMs run over gemm_tiles tiles at a time for all the task's tiles of outputs, so that
  // those tiles' V and Z stay in the core's cache while every tile of outputs reads them: over all the
  // tiles at once, V and Z of 392 tiles (r3x3_256) took 800 KiB, more than the 512 KiB L2 of some cores
  // (r3x3_256's dW on such a core with AVX2, fastest of 10 or 20 calls: 19-25 -> 16-19 ms on 1 thread,
  // 10.4-16 -> 9.3-9.6 ms on 2).
  void weights_rows(const float* v, const float* z, std::int64_t first, std::int64_t last, std::int64_t cb,
                    float* du, float* dw) const {
    for (std::int64_t k0 = 0; k0 < tiles; k0 += gemm_tiles) {
      const std::int64_t kc = min_of(gemm_tiles, tiles - k0);
      for (std::int64_t r = first; r < last; ++r)
        for (int xi = 0; xi < positions; ++xi) {
          const float* a = z + (xi * tiles + k0) * ldz + r * MR;
          const float* b = v + ((xi * c_blocks + cb) * tiles + k0) * NR;
          float* c = du + ((r - first) * positions + xi) * MR * NR;
          if (k0 == 0) {
            microkernel<MR, NV, false, false>(kc, a, ldz, b, c, NR, MR, NR);
          } else {
            microkernel<MR, NV, false, true>(kc, a, ldz, b, c, NR, MR, NR);
          }
        }
    }
    for (std::int64_t r = first; r < last; ++r) {
      const std::int64_t o0 = r * MR;
      const float* block = du + (r - first) * positions * MR * NR;
      for (int m = 0; m < min_of<std::int64_t>(MR, outputs - o0); ++m) {
        for (std::int64_t c = cb * NR; c < min_of(channels, (cb + 1) * NR); c += lanes) {
          Vec u[positions], g[9];
          for (int xi = 0; xi < positions; ++xi) u[xi] = load(block + (xi * MR + m) * NR + c % NR);
          transform_kernel_gradient<S>(u, g);
          const std::int64_t count = min_of<std::int64_t>(lanes, channels - c);
          for (int tap = 0; tap < 9; ++tap) {
            float* out = dw + ((o0 + m) * 9 + tap) * channels + c;
            if (count == lanes) {
              store(out, g[tap]);
            } else {
              float values[lanes];
              store(values, g[tap]);
              for (std::int64_t i = 0; i < count; ++i) out[i] = values[i];
            }
          }
        }
      }
    }
  }

  // The chunks' transforms, db from their sums of dy in chunk order, then dW block by block.
  void run(float* dw, float* db) const {
    const std::int64_t v_floats = positions * c_blocks * tiles * NR, z_floats = positions * tiles * ldz;
    const Memory memory(sizeof(float) * (v_floats + z_floats + chunks * outputs + channels));
    float* v = memory.floats();
    float* z = v + v_floats;
    float* chunk_db = z + z_floats;
    float* zeros = chunk_db + chunks * outputs;
    std::memset(zeros, 0, sizeof(float) * channels);
    parallel_for(
        chunks, [&](std::int64_t chunk) { transform_chunk(chunk, zeros, v, z, chunk_db + chunk * outputs); });
    for (std::int64_t o = 0; o < outputs; ++o) {
      float sum = 0.0f;
      for (std::int64_t chunk = 0; chunk < chunks; ++chunk) sum += chunk_db[chunk * outputs + o];
      db[o] = sum;
    }
    // Each value of dW is one task's whatever the tasks, so they may follow the thread count: at most
    // task_rows tiles of output channels each, and several tasks per thread.
    const std::int64_t row_tiles = ceil_div(outputs, MR);
    const std::int64_t per_task =
        max_of<std::int64_t>(1, min_of(task_rows, c_blocks * row_tiles / (tasks_per_thread * num_threads())));
    const std::int64_t row_groups = ceil_div(row_tiles, per_task);
    parallel_for(c_blocks * row_groups, [&](std::int64_t task) {
      const std::int64_t cb = task / row_groups, first = task % row_groups * per_task;
      float* du = static_cast<float*>(thread_scratch(sizeof(float) * per_task * positions * MR * NR));
      weights_rows(v, z, first, min_of(row_tiles, first + per_task), cb, du, dw);
    });
  }

  std::int64_t tiles, c_blocks, ldz, chunks;
};

// Calls f(FewTiles<MR, NV>) with the microkernel tile that pads the input channels least.
template <typename F>
void with_few_tiles(const ConvParams& p, const float* dy, const float* x, F&& f) {
  if (tile_a_pads_least(p.in_c)) return f(FewTiles<tile_a[0], tile_a[1]>(p, dy, x));
  f(FewTiles<tile_b[0], tile_b[1]>(p, dy, x));
}

}  // namespace

bool few_tiles_weights_gradient_fits(const ConvParams& p) {
  bool fits = false;
  with_few_tiles(p, nullptr, nullptr,
                 [&](const auto& scheme) { fits = scheme.transformed_bytes() <= max_transformed_bytes; });
  return fits;
}

void few_tiles_weights_gradient_nhwc(const ConvParams& p, const float* dy, const float* x, float* dw,
                                     float* db) {
  with_few_tiles(p, dy, x, [&](const auto& scheme) { scheme.run(dw, db); });
}

}  // namespace gradstate::cpu::GRADSTATE_ISA_NAMESPACE
