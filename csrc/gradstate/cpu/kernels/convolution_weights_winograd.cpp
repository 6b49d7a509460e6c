// The weight gradient of dense 3x3 stride-1 layers by Winograd's F(2x2, 3x3), NHWC (see winograd.h and
// convolution_winograd.cpp).
//
// The forward pass computes each tile's outputs as Y = A^T [U ⊙ V] A with U = G g G^T, so
//   dU = sum over tiles of Z ⊙ V,   Z = A dY A^T,   dg = G^T dU G,
// and at each of the 16 positions xi, dU for all pairs of input and output channels is a GEMM over tiles:
//   dU[xi][c][o] = sum over tiles t of V[xi][t][c] * Z[xi][t][o],
// 16 multiply-adds per tile and channel pair instead of 36.
//
// The work is a fixed number of items: the tiles split into parts, each with its own dU, and the output
// channels into groups. An item runs on one thread from start to end: blocks of its tiles are transformed
// (patches of x into V, patches of dy into Z for its output channels) into the thread's scratch, and the
// microkernel adds their 16 GEMMs into its part's dU while they are still in the core's cache. The parts'
// dU, summed in order, are finally transformed into dW. Layers of many channels and few tiles go to
// convolution_weights_winograd_few_tiles.cpp instead, which keeps dU out of memory (see
// min_few_tiles_du_bytes).
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

// Beyond this size of dU its trip through memory costs more than the transforms save (512 x 512 channels
// measured no faster than the GEMM path).
constexpr std::int64_t max_du_bytes = std::int64_t{8} << 20;
// From this size of dU on, layers whose tiles fit the bound of convolution_weights_winograd_few_tiles.cpp
// take that scheme (dW on 2 threads, ms: 128 channels of 14x14 images 1.49 -> 1.18, 256 of 14x14
// 5.08 -> 4.40, 512 of 7x7 9.8 -> 5.9 by the GEMM path). Below it, dU stays in the core's cache here and
// this scheme is the faster (64 channels of 28x28 images 1.28 against 1.69, 32 of 56x56 0.99 against 1.77).
constexpr std::int64_t min_few_tiles_du_bytes = std::int64_t{1} << 20;
// The work is split into this many items whatever the thread count (so each value is summed in one order),
// which shares out evenly over 1, 2, 4 or 8 threads.
constexpr std::int64_t work_items = 8;
constexpr std::int64_t max_partials_bytes = std::int64_t{8} << 20;  // the parts' dU, all together
constexpr std::int64_t min_part_tiles = 64;
// A block's V and Z stay in the core's cache between their transforms and the GEMMs; a block is never so
// short that loading and storing the GEMMs' dU tiles outweighs their multiply-adds.
constexpr std::int64_t block_bytes = std::int64_t{512} << 10;
constexpr std::int64_t min_block_tiles = 64;

// The size of the fewest equal pieces of `count` that are at most `most` each (a short last block is slow).
std::int64_t even_split(std::int64_t count, std::int64_t most) {
  const std::int64_t pieces = ceil_div(count, most);
  return ceil_div(count, pieces);
}

// Parts come in powers of two, so that they and the groups of output channels make work_items items.
std::int64_t floor_power_of_two(std::int64_t n) {
  std::int64_t power = 1;
  while (power * 2 <= n) power *= 2;
  return power;
}

std::int64_t layer_du_bytes(const ConvParams& p) {
  return std::int64_t{sizeof(float)} * StrideOne::positions * p.in_c * p.out_c;
}

bool takes_few_tiles(const ConvParams& p) {
  return layer_du_bytes(p) >= min_few_tiles_du_bytes && few_tiles_weights_gradient_fits(p);
}

template <int MR, int NV>
struct WinogradWeights : WinogradWeightsLayer {
  static constexpr std::int64_t NR = NV * lanes;

  WinogradWeights(const ConvParams& p, const float* dy, const float* x)
      : WinogradWeightsLayer(p, dy, x),
        o_blocks(ceil_div(outputs, NR)),
        // V is the microkernel's k-major A operand: its rows run over channels in steps of MR.
        ldv(round_up(channels, MR)),
        ldz(o_blocks * NR),
        parts(floor_power_of_two(max_of<std::int64_t>(
            1, min_of(min_of(work_items, max_partials_bytes / du_bytes()), grid.count / min_part_tiles)))),
        part_tiles(ceil_div(grid.count, parts)),
        group_blocks(ceil_div(o_blocks, min_of(o_blocks, work_items / parts))),
        o_groups(ceil_div(o_blocks, group_blocks)),
        block_tiles(even_split(part_tiles, max_of(min_block_tiles, block_bytes / tile_bytes()))) {}

  std::int64_t du_floats() const { return positions * ldv * ldz; }
  std::int64_t du_bytes() const { return std::int64_t{sizeof(float)} * du_floats(); }
  // A tile's V and the Z of an item's output channels.
  std::int64_t tile_bytes() const {
    return std::int64_t{sizeof(float)} * positions * (ldv + group_blocks * NR);
  }

  // The work item's tiles and output channel blocks: part `part` and group `group`.
  struct Item {
    std::int64_t t_begin, t_end, ob_begin, ob_end;
  };
  Item item(std::int64_t index) const {
    const std::int64_t part = index / o_groups, group = index % o_groups;
    return {part * part_tiles, min_of(grid.count, (part + 1) * part_tiles), group * group_blocks,
            min_of(o_blocks, (group + 1) * group_blocks)};
  }
  std::int64_t items() const { return parts * o_groups; }

  // A block's V and Z: v[xi][tile][ldv] and z[xi][o block of the item][tile][NR] for block_tiles tiles,
  // then a pixel of zeros for the patches' padding.
  std::int64_t v_floats() const { return positions * block_tiles * ldv; }
  std::int64_t scratch_floats() const {
    return v_floats() + positions * group_blocks * block_tiles * NR + ldv;
  }
  // Where z[xi][ob - it.ob_begin][tile 0] is in the scratch.
  std::int64_t z_offset(const Item& it, int xi, std::int64_t ob) const {
    return v_floats() + (xi * (it.ob_end - it.ob_begin) + ob - it.ob_begin) * block_tiles * NR;
  }

  // The transforms write only real channels; what lies past them (rows of the last microkernel tile, columns
  // of the last vector block) only reaches results that are not stored, and is zeroed so that it is not
  // garbage the multiply-adds would be slow on. So is the zero pixel.
  void zero_pads(float* v, const Item& it) const {
    const std::int64_t z_used = min_of(NR, outputs - (it.ob_end - 1) * NR);
    for (int xi = 0; xi < positions; ++xi) {
      float* z_last = v + z_offset(it, xi, it.ob_end - 1);
      for (std::int64_t t = 0; t < block_tiles; ++t) {
        std::memset(v + (xi * block_tiles + t) * ldv + channels, 0, sizeof(float) * (ldv - channels));
        std::memset(z_last + t * NR + z_used, 0, sizeof(float) * (NR - z_used));
      }
    }
    std::memset(v + scratch_floats() - ldv, 0, sizeof(float) * ldv);
  }

  // The item's part of dU[xi][c][o] (overwritten for its first block) += sum over the block's `count` tiles
  // of V[xi][tile][c] Z[xi][tile][o].
  void multiply(const float* v, std::int64_t count, const Item& it, bool first, float* du) const {
    for (int xi = 0; xi < positions; ++xi) {
      for (std::int64_t ob = it.ob_begin; ob < it.ob_end; ++ob) {
        const float* zb = v + z_offset(it, xi, ob);
        const int cols = static_cast<int>(min_of(NR, outputs - ob * NR));
        for (std::int64_t c = 0; c < channels; c += MR) {
          const int rows = static_cast<int>(min_of<std::int64_t>(MR, channels - c));
          const float* a = v + xi * block_tiles * ldv + c;
          float* out = du + (xi * ldv + c) * ldz + ob * NR;
          if (first) {
            microkernel<MR, NV, false, false>(count, a, ldv, zb, out, ldz, rows, cols);
          } else {
            microkernel<MR, NV>(count, a, ldv, zb, out, ldz, rows, cols);
          }
        }
      }
    }
  }

  // One item, on one thread: its tiles in blocks, each transformed into the thread's scratch and multiplied
  // while there. Its part's dU and db (of its output channels) get the sums over its tiles, in tile order.
  void run_item(const Item& it, float* du, float* db) const {
    float* v = static_cast<float*>(thread_scratch(std::int64_t{sizeof(float)} * scratch_floats()));
    zero_pads(v, it);
    const float* zeros = v + scratch_floats() - ldv;
    const std::int64_t o_begin = it.ob_begin * NR;
    std::memset(db + o_begin, 0, sizeof(float) * (min_of(outputs, it.ob_end * NR) - o_begin));
    TilePatches<S> patches(geo, grid, x, zeros, it.t_begin);
    for (std::int64_t t0 = it.t_begin; t0 < it.t_end; t0 += block_tiles) {
      const std::int64_t count = min_of(block_tiles, it.t_end - t0);
      for (std::int64_t t = 0; t < count; ++t) {
        patches.transform_next(v + t * ldv, block_tiles * ldv);
        transform_gradients(t0 + t, it, v + t * NR, db);
      }
      multiply(v, count, it, t0 == it.t_begin, du);
    }
  }

  // Z[xi][tile][o] for the item's output channels at z + z_offset(it, xi, o / NR) + o % NR, z being the
  // scratch advanced to the tile's slot; db += the tile's dy for them.
  void transform_gradients(std::int64_t tile, const Item& it, float* z, float* db) const {
    const float* src[4];  // null outside the output
    grid.output_pixels(geo, tile, dy, src);
    auto at = [&](int xi, std::int64_t o) { return z + z_offset(it, xi, o / NR) + o % NR; };
    transform_tile_gradients<S>(src, it.ob_begin * NR, min_of(outputs, it.ob_end * NR), db, at);
  }

  // Each part's dU and db, summed over the parts in order.
  void run(float* dw, float* db) const {
    const Memory partials_memory(sizeof(float) * parts * (du_floats() + outputs));
    float* du = partials_memory.floats();
    float* part_db = du + parts * du_floats();
    parallel_for(items(), [&](std::int64_t index) {
      const std::int64_t part = index / o_groups;
      run_item(item(index), du + part * du_floats(), part_db + part * outputs);
    });
    for (std::int64_t o = 0; o < outputs; ++o) {
      float sum = 0.0f;
      for (std::int64_t part = 0; part < parts; ++part) sum += part_db[part * outputs + o];
      db[o] = sum;
    }
    transform_to_weights(du, dw);
  }

  // dW from dU, the sum of the parts' in order. A task takes `lanes` output channels (a vector of a row of
  // dU) and transforms with vectors across them, `lanes` input channels at a time; each tap's results are
  // then transposed into rows of dW.
  void transform_to_weights(const float* du, float* dw) const {
    parallel_for(ceil_div(outputs, lanes), [&](std::int64_t task) {
      const std::int64_t o0 = task * lanes, o_count = min_of<std::int64_t>(lanes, outputs - o0);
      for (std::int64_t c0 = 0; c0 < channels; c0 += lanes) {
        const std::int64_t c_count = min_of<std::int64_t>(lanes, channels - c0);
        float g[9][lanes][lanes];  // g[tap][c - c0][o - o0]
        for (std::int64_t c = 0; c < c_count; ++c) {
          Vec u[positions], gv[9];
          for (int xi = 0; xi < positions; ++xi) {
            const float* at = du + (xi * ldv + c0 + c) * ldz + o0;
            u[xi] = load(at);
            for (std::int64_t part = 1; part < parts; ++part) u[xi] += load(at + part * du_floats());
          }
          transform_kernel_gradient<S>(u, gv);
          for (int tap = 0; tap < 9; ++tap) store(g[tap][c], gv[tap]);
        }
        for (int tap = 0; tap < 9; ++tap) {
          float t[lanes][lanes];  // t[o - o0][c - c0]
          transpose(g[tap][0], c_count, o_count, lanes, t[0], lanes);
          for (std::int64_t o = 0; o < o_count; ++o) {
            float* out = dw + ((o0 + o) * 9 + tap) * channels + c0;
            if (c_count == lanes) {
              store(out, load(t[o]));
            } else {
              for (std::int64_t c = 0; c < c_count; ++c) out[c] = t[o][c];
            }
          }
        }
      }
    });
  }

  std::int64_t o_blocks, ldv, ldz, parts, part_tiles, group_blocks, o_groups, block_tiles;
};

}  // namespace

bool winograd_weights_gradient_applies(const ConvParams& p) {
  return p.layout == Layout::NHWC && winograd_shape(p) && p.stride_y == 1 &&
         (layer_du_bytes(p) <= max_du_bytes || takes_few_tiles(p));
}

void winograd_weights_gradient_nhwc(const ConvParams& p, const float* dy, const float* x, float* dw,
                                    float* db) {
  if (takes_few_tiles(p)) return few_tiles_weights_gradient_nhwc(p, dy, x, dw, db);
  if (tile_a_pads_least(p.out_c)) {
    WinogradWeights<tile_a[0], tile_a[1]>(p, dy, x).run(dw, db);
  } else {
    WinogradWeights<tile_b[0], tile_b[1]>(p, dy, x).run(dw, db);
  }
}

}  // namespace gradstate::cpu::GRADSTATE_ISA_NAMESPACE
