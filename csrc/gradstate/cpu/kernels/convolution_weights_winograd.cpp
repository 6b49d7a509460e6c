// The weight gradient of dense 3x3 stride-1 layers by Winograd's F(2x2, 3x3), NHWC (see winograd.h and
// convolution_winograd.cpp).
//
// The forward pass computes each tile's outputs as Y = A^T [U ⊙ V] A with U = G g G^T, so
//   dU = sum over tiles of Z ⊙ V,   Z = A dY A^T,   dg = G^T dU G,
// and at each of the 16 positions xi, dU for all pairs of input and output channels is a GEMM over tiles:
//   dU[xi][c][o] = sum over tiles t of V[xi][t][c] * Z[xi][t][o],
// 16 multiply-adds per tile and channel pair instead of 36. Blocks of tiles go through two steps: their
// patches of x are transformed into V and their patches of dy into Z, then the microkernel accumulates the
// 16 GEMMs into dU. dU is finally transformed into dW.
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

// Beyond this size of dU the GEMM path is as fast (512 x 512 channels measured no faster: their few tiles
// per image leave the transforms little to save).
constexpr std::int64_t max_du_bytes = std::int64_t{8} << 20;
constexpr std::int64_t max_block_bytes = std::int64_t{8} << 20;  // a block's V and Z
constexpr std::int64_t tile_chunk = 16;                          // tiles whose patches one task transforms

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
        block_tiles(min_of(
            grid.count, max_of<std::int64_t>(
                            1, max_block_bytes / (std::int64_t{sizeof(float)} * positions * (ldv + ldz))))) {}

  // A block's V and Z: v[xi][tile][ldv] and z[xi][o block][tile][NR] for block_tiles tiles, then a pixel
  // of zeros for the patches' padding.
  std::int64_t v_floats() const { return positions * block_tiles * ldv; }
  std::int64_t block_floats() const { return v_floats() + positions * o_blocks * block_tiles * NR + ldv; }

  // The transforms write only real channels. What lies past them, channels past the last (rows of the last
  // microkernel tile) and output channels past the last (columns of the last vector block), and the zero
  // pixel, are zeroed once.
  void zero_pads(float* v) const {
    float* z_last = v + v_floats() + (o_blocks - 1) * block_tiles * NR;
    const std::int64_t z_used = outputs - (o_blocks - 1) * NR;
    for (int xi = 0; xi < positions; ++xi) {
      for (std::int64_t t = 0; t < block_tiles; ++t) {
        std::memset(v + (xi * block_tiles + t) * ldv + channels, 0, sizeof(float) * (ldv - channels));
        std::memset(z_last + (xi * o_blocks * block_tiles + t) * NR + z_used, 0,
                    sizeof(float) * (NR - z_used));
      }
    }
    std::memset(v + block_floats() - ldv, 0, sizeof(float) * ldv);
  }

  // The microkernel's dU[xi][c][o] += sum over the block's `count` tiles of V[xi][tile][c] Z[xi][tile][o]
  // for output channel block ob.
  void multiply(const float* v, std::int64_t count, int xi, std::int64_t ob, float* du) const {
    const float* zb = v + v_floats() + (xi * o_blocks + ob) * block_tiles * NR;
    const int cols = static_cast<int>(min_of(NR, outputs - ob * NR));
    for (std::int64_t c = 0; c < channels; c += MR) {
      const int rows = static_cast<int>(min_of<std::int64_t>(MR, channels - c));
      microkernel<MR, NV>(count, v + xi * block_tiles * ldv + c, ldv, zb, du + (xi * ldv + c) * ldz + ob * NR,
                          ldz, rows, cols);
    }
  }

  // The threads share each step of a block: the input patches split by chunks of tiles and the gradients
  // by output channel blocks (each adding its channels' dy to db in tile order), then the GEMMs by
  // position and output channel block. Each value of dU and db sums the tiles in one order whatever the
  // thread count, and dU is loaded and stored once per block.
  void accumulate_blocks(float* du, float* db) const {
    const Memory block_memory(sizeof(float) * block_floats());
    float* v = block_memory.floats();
    zero_pads(v);
    float* z = v + v_floats();
    const float* zeros = v + block_floats() - ldv;
    for (std::int64_t t0 = 0; t0 < grid.count; t0 += block_tiles) {
      const std::int64_t count = min_of(block_tiles, grid.count - t0);
      const std::int64_t chunks = (count + tile_chunk - 1) / tile_chunk;
      parallel_for(chunks + o_blocks, [&](std::int64_t task) {
        if (task >= chunks) {
          const std::int64_t ob = task - chunks, o_end = min_of(outputs, (ob + 1) * NR);
          for (std::int64_t t = 0; t < count; ++t)
            transform_gradients(t0 + t, ob * NR, o_end, z + t * NR, db);
          return;
        }
        for (std::int64_t t = task * tile_chunk; t < min_of(count, (task + 1) * tile_chunk); ++t)
          transform_input_patches(geo, grid, x, zeros, t0 + t, v + t * ldv, block_tiles * ldv);
      });
      parallel_for(positions * o_blocks, [&](std::int64_t item) {
        multiply(v, count, static_cast<int>(item / o_blocks), item % o_blocks, du);
      });
    }
  }

  // z[((xi * o_blocks + o / NR) * block_tiles) * NR + o % NR] = Z[xi][tile][o] for output channels
  // [o_begin, o_end); db += the tile's dy for them.
  void transform_gradients(std::int64_t tile, std::int64_t o_begin, std::int64_t o_end, float* z,
                           float* db) const {
    const float* src[4];  // null outside the output
    grid.output_pixels(geo, tile, dy, src);
    const std::int64_t stride = o_blocks * block_tiles * NR;
    auto at = [&](std::int64_t o) { return (o / NR) * block_tiles * NR + o % NR; };
    std::int64_t o = o_begin;
    for (; o + lanes <= o_end; o += lanes) {
      Vec d[4], zv[positions], sum = load(db + o);
      for (int i = 0; i < 4; ++i) d[i] = src[i] ? load(src[i] + o) : Vec{};
      for (int i = 0; i < 4; ++i) sum += d[i];
      store(db + o, sum);
      transform_output_gradient(d, zv);
      for (int xi = 0; xi < positions; ++xi) store(z + xi * stride + at(o), zv[xi]);
    }
    for (; o < o_end; ++o) {
      float d[4], zv[positions];
      for (int i = 0; i < 4; ++i) d[i] = src[i] ? src[i][o] : 0.0f;
      for (int i = 0; i < 4; ++i) db[o] += d[i];
      transform_output_gradient(d, zv);
      for (int xi = 0; xi < positions; ++xi) z[xi * stride + at(o)] = zv[xi];
    }
  }

  void run(float* dw, float* db, bool accumulate) const {
    const Memory du_memory(sizeof(float) * positions * ldv * ldz, true);
    if (!accumulate) std::memset(db, 0, sizeof(float) * outputs);
    accumulate_blocks(du_memory.floats(), db);
    transform_to_weights(du_memory.floats(), dw, accumulate);
  }

  // dW from dU. A task takes `lanes` output channels (a vector of a row of dU) and transforms with vectors
  // across them, `lanes` input channels at a time; each tap's results are then transposed into rows of dW.
  void transform_to_weights(const float* du, float* dw, bool accumulate) const {
    parallel_for((outputs + lanes - 1) / lanes, [&](std::int64_t task) {
      const std::int64_t o0 = task * lanes, o_count = min_of<std::int64_t>(lanes, outputs - o0);
      for (std::int64_t c0 = 0; c0 < channels; c0 += lanes) {
        const std::int64_t c_count = min_of<std::int64_t>(lanes, channels - c0);
        float g[9][lanes][lanes];  // g[tap][c - c0][o - o0]
        for (std::int64_t c = 0; c < c_count; ++c) {
          Vec u[positions], gv[9];
          for (int xi = 0; xi < positions; ++xi) u[xi] = load(du + (xi * ldv + c0 + c) * ldz + o0);
          transform_kernel_gradient(u, gv);
          for (int tap = 0; tap < 9; ++tap) store(g[tap][c], gv[tap]);
        }
        for (int tap = 0; tap < 9; ++tap) {
          float t[lanes][lanes];  // t[o - o0][c - c0]
          transpose(g[tap][0], c_count, o_count, lanes, t[0], lanes);
          for (std::int64_t o = 0; o < o_count; ++o) {
            float* out = dw + ((o0 + o) * 9 + tap) * channels + c0;
            if (c_count == lanes) {
              store(out, accumulate ? load(out) + load(t[o]) : load(t[o]));
            } else {
              for (std::int64_t c = 0; c < c_count; ++c) out[c] = accumulate ? out[c] + t[o][c] : t[o][c];
            }
          }
        }
      }
    });
  }

  Geometry geo;
  TileGrid grid;
  const float* dy;
  const float* x;
  std::int64_t channels, outputs, o_blocks, ldv, ldz, block_tiles;
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
