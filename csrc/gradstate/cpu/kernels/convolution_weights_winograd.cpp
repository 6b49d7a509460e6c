// The weight gradient of dense 3x3 stride-1 layers by Winograd's F(2x2, 3x3), NHWC (see winograd.h and
// convolution_winograd.cpp).
//
// The forward pass computes each tile's outputs as Y = A^T [U ⊙ V] A with U = G g G^T, so
//   dU = sum over tiles of Z ⊙ V,   Z = A dY A^T,   dg = G^T dU G,
// and at each of the 16 positions xi, dU for all pairs of input and output channels is a GEMM over tiles:
//   dU[xi][c][o] = sum over tiles t of V[xi][t][c] * Z[xi][t][o],
// 16 multiply-adds per tile and channel pair instead of 36. The tiles are cut into a fixed number of
// segments (not depending on the thread count). A task takes one segment, block by block of tiles: it
// transforms their patches of x into V and of dy into Z, and the microkernel accumulates the 16 GEMMs into
// the segment's partial dU. The partials are added in segment order (as the other weight-gradient kernels
// add theirs), then transformed into dW.
#include <cstdint>
#include <cstring>

#include "gradstate/cpu/kernels/conv_geometry.h"
#include "gradstate/cpu/kernels/convolution_winograd.h"
#include "gradstate/cpu/kernels/gemm.h"
#include "gradstate/cpu/kernels/partial_sums.h"
#include "gradstate/cpu/kernels/vec.h"
#include "gradstate/cpu/kernels/winograd.h"
#include "gradstate/cpu/memory.h"
#include "gradstate/cpu/thread_pool.h"

namespace gradstate::cpu::GRADSTATE_ISA_NAMESPACE {
namespace {

// Beyond this size of dU, the segments' partials, loaded and stored by the microkernel for every block of
// tiles, cost more than the GEMM saves (256 x 256 channels measured slower than the GEMM path).
constexpr std::int64_t max_du_bytes = std::int64_t{1} << 20;
constexpr std::int64_t max_partials_bytes = std::int64_t{8} << 20;
constexpr std::int64_t max_segments = 16;
constexpr std::int64_t max_block_bytes = std::int64_t{2} << 20;  // a block's V and Z

template <int MR, int NV>
struct WinogradWeights {
  static constexpr std::int64_t NR = NV * lanes;

  WinogradWeights(const ConvParams& p, const float* dy, const float* x)
      : geo(p),
        grid(p),
        dy(dy),
        x(x),
        channels(p.in_c),
        outputs(p.out_c),
        o_blocks((outputs + NR - 1) / NR),
        // V is the microkernel's k-major A operand: its rows run over channels in steps of MR.
        ldv((channels + MR - 1) / MR * MR),
        ldz(o_blocks * NR),
        part(positions * ldv * ldz + outputs),
        block_tiles(max_of<std::int64_t>(1, max_block_bytes / (sizeof(float) * positions * (ldv + ldz)))),
        segments(
            max_of<std::int64_t>(1, min_of(min_of(max_segments, (grid.count + block_tiles - 1) / block_tiles),
                                           max_partials_bytes / (std::int64_t{sizeof(float)} * part)))),
        segment_tiles((grid.count + segments - 1) / segments) {}

  // partial[xi][c][ldz] (dU) then partial[positions * ldv * ldz + o] (db) over the segment's tiles.
  void run_segment(std::int64_t s, float* partial) const {
    const std::int64_t v_floats = positions * block_tiles * ldv,
                       z_floats = positions * o_blocks * block_tiles * NR;
    float* v = static_cast<float*>(thread_scratch(sizeof(float) * (v_floats + z_floats + ldv)));
    float* z = v + v_floats;
    float* zeros = z + z_floats;
    // Channels past the last (rows of the last microkernel tile) and output channels past the last
    // (columns of the last vector block) stay zero: the transforms write only real channels.
    std::memset(v, 0, sizeof(float) * (v_floats + z_floats + ldv));
    std::memset(partial, 0, sizeof(float) * part);
    float* db = partial + positions * ldv * ldz;
    const std::int64_t first = s * segment_tiles, end = min_of(grid.count, first + segment_tiles);
    for (std::int64_t t0 = first; t0 < end; t0 += block_tiles) {
      const std::int64_t count = min_of(block_tiles, end - t0);
      for (std::int64_t t = 0; t < count; ++t) {
        transform_input_patches(geo, grid, x, zeros, t0 + t, v + t * ldv, block_tiles * ldv);
        transform_gradients(t0 + t, z + t * NR, db);
      }
      for (int xi = 0; xi < positions; ++xi) {
        for (std::int64_t ob = 0; ob < o_blocks; ++ob) {
          const float* zb = z + (xi * o_blocks + ob) * block_tiles * NR;
          const int cols = static_cast<int>(min_of(NR, outputs - ob * NR));
          for (std::int64_t c = 0; c < channels; c += MR) {
            const int rows = static_cast<int>(min_of<std::int64_t>(MR, channels - c));
            microkernel<MR, NV>(count, v + xi * block_tiles * ldv + c, ldv, zb,
                                partial + (xi * ldv + c) * ldz + ob * NR, ldz, rows, cols);
          }
        }
      }
    }
  }

  // z[((xi * o_blocks + o / NR) * block_tiles) * NR + o % NR] = Z[xi][tile][o] for every output channel;
  // db += the tile's dy.
  void transform_gradients(std::int64_t tile, float* z, float* db) const {
    std::int64_t n, oh, ow;
    grid.locate(tile, n, oh, ow);
    const float* src[4];  // null outside the output
    for (int i = 0; i < 4; ++i) {
      std::int64_t row, col;
      src[i] = grid.pixel(oh, ow, i, row, col) ? dy + geo.y_offset(n, row, col, 0) : nullptr;
    }
    const std::int64_t stride = o_blocks * block_tiles * NR;
    auto at = [&](std::int64_t o) { return (o / NR) * block_tiles * NR + o % NR; };
    std::int64_t o = 0;
    for (; o + lanes <= outputs; o += lanes) {
      Vec d[4], zv[positions], sum = load(db + o);
      for (int i = 0; i < 4; ++i) d[i] = src[i] ? load(src[i] + o) : Vec{};
      for (int i = 0; i < 4; ++i) sum += d[i];
      store(db + o, sum);
      transform_output_gradient(d, zv);
      for (int xi = 0; xi < positions; ++xi) store(z + xi * stride + at(o), zv[xi]);
    }
    for (; o < outputs; ++o) {
      float d[4], zv[positions];
      for (int i = 0; i < 4; ++i) d[i] = src[i] ? src[i][o] : 0.0f;
      for (int i = 0; i < 4; ++i) db[o] += d[i];
      transform_output_gradient(d, zv);
      for (int xi = 0; xi < positions; ++xi) z[xi * stride + at(o)] = zv[xi];
    }
  }

  void run(float* dw, float* db, bool accumulate) const {
    const std::int64_t du_size = part - outputs;
    const Memory partials_memory(sizeof(float) * segments * part);
    // Zero, so that the partials add to nothing when sum_partials adds them to db's existing values.
    const Memory du_memory(sizeof(float) * du_size, true);
    float* partials = partials_memory.floats();
    float* du = du_memory.floats();
    parallel_for(segments, [&](std::int64_t s) { run_segment(s, partials + s * part); });
    sum_partials(partials, segments, du_size, outputs, du, db, accumulate);
    parallel_for(outputs, [&](std::int64_t o) {
      for (std::int64_t c = 0; c < channels; ++c) {
        float u[positions], g[9];
        for (int xi = 0; xi < positions; ++xi) u[xi] = du[(xi * ldv + c) * ldz + o];
        transform_kernel_gradient(u, g);
        for (int tap = 0; tap < 9; ++tap) {
          float& out = dw[(o * 9 + tap) * channels + c];
          out = accumulate ? out + g[tap] : g[tap];
        }
      }
    });
  }

  Geometry geo;
  TileGrid grid;
  const float* dy;
  const float* x;
  std::int64_t channels, outputs, o_blocks, ldv, ldz, part, block_tiles, segments, segment_tiles;
};

}  // namespace

bool winograd_weights_gradient_applies(const ConvParams& p) {
  return p.layout == Layout::NHWC && winograd_shape(p) &&
         std::int64_t{sizeof(float)} * positions * p.in_c * p.out_c <= max_du_bytes;
}

void winograd_weights_gradient_nhwc(const ConvParams& p, const float* dy, const float* x, float* dw,
                                    float* db, bool accumulate) {
  if (tile_a_pads_least(p.out_c)) {
    WinogradWeights<tile_a[0], tile_a[1]>(p, dy, x).run(dw, db, accumulate);
  } else {
    WinogradWeights<tile_b[0], tile_b[1]>(p, dy, x).run(dw, db, accumulate);
  }
}

}  // namespace gradstate::cpu::GRADSTATE_ISA_NAMESPACE
