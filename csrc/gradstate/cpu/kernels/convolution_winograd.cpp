// Winograd's minimal filtering F(2x2, 3x3) (Lavin and Gray, "Fast Algorithms for Convolutional Neural
// Networks", 2016) for the forward pass of dense 3x3 stride-1 layers, NHWC, and its stride-2 counterpart
// (see winograd.h). The data gradient of stride-1 layers is a forward pass too (convolution.cpp), so it runs
// here as well, and so does that of stride-2 layers, as the forward pass over dy that StrideTwoData computes.
//
// Each block of output pixels (a "tile": 2x2, or 4x4 pixels of dx for StrideTwoData) is computed from the
// input pixels d it reads (4x4 at stride 1, 5x5 at stride 2, 3x3 of dy for StrideTwoData) as
//   Y = A^T [ U ⊙ V ] A,   U = G g G^T (the 3x3 kernel g transformed), V = B^T d B,
// P^2 multiplications (16 or 25, P the points of the scheme) per pair of input and output channels instead
// of the 36 of the direct sums (9 taps for each of 4 outputs; for StrideTwoData's 16 pixels of dx too, each
// dy pixel reaching them through 9 taps). Summed over the input
// channels, the product at each of the P^2 positions xi of the transforms is a GEMM:
//   M[xi][tile][o] = sum over c of V[xi][tile][c] * U[xi][c][o],
// run by the convolution microkernel. U is transformed and packed once per call; blocks of tiles then go
// through three steps: their input patches into V, the P^2 GEMMs into M, M into the output pixels (see run
// for who takes which part). Each output value is computed in one order whatever the blocks, so the bits do
// not depend on the thread count.
//
// The transforms mix the pixels of a tile: an Inf in an input turns into NaN where it meets its own negation
// (B^T d B subtracts inputs), and a NaN or Inf reaches outputs of its tile that the direct sums never take
// it to. So the output transform notes whether any output came out NaN or Inf, and the caller then computes
// the outputs again by direct sums (convolution.cpp); finite outputs cost one add per vector.
#include "gradstate/cpu/kernels/convolution_winograd.h"

#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "gradstate/cpu/kernels/conv_geometry.h"
#include "gradstate/cpu/kernels/gemm.h"
#include "gradstate/cpu/kernels/vec.h"
#include "gradstate/cpu/kernels/winograd.h"
#include "gradstate/cpu/memory.h"
#include "gradstate/cpu/thread_pool.h"

namespace gradstate::cpu::GRADSTATE_ISA_NAMESPACE {
namespace {

// A task's V and M: enough tiles that the packed U it streams through is well used, few enough that they
// stay in the outer caches.
constexpr std::int64_t max_task_tiles = 96;
constexpr std::int64_t max_task_bytes = std::int64_t{2} << 20;
// Beyond this size of U, blocks are shared by the threads (see run), and their V and M kept within this.
// (A 3x3 stride-2 layer of 128 channels, 1.6 MiB of U, took 8.0-8.5 ms with local blocks against 8.3-13 ms
// shared.)
constexpr std::int64_t max_local_u_bytes = std::int64_t{2} << 20;
constexpr std::int64_t max_shared_bytes = std::int64_t{8} << 20;
// The channels of one task of the kernel transform.
constexpr std::int64_t u_chunk_channels = 64;

// How w holds the 3x3 kernels: as the layer's OHWI weights w[o][tap][c], or as those of the layer whose data
// gradient the pass computes, w[c][8 - tap][o] (see winograd_data_gradient_pass_nhwc).
enum class WinogradKernels { forward, exchanged };

template <typename S, int MR, int NV>
struct Winograd {
  static constexpr std::int64_t NR = NV * lanes;
  static constexpr int positions = S::positions;

  Winograd(const ConvParams& p, const float* x, const float* w, WinogradKernels kernels, const float* b,
           float* y)
      : geo(p),
        x(x),
        w(w),
        kernels(kernels),
        b(b),
        y(y),
        grid(p),
        channels(p.in_c),
        outputs(p.out_c),
        o_blocks(ceil_div(outputs, NR)),
        ldv(round_up(channels, lanes)),
        ldm(o_blocks * NR),
        tiles(grid.count),
        u_memory(sizeof(float) * positions * o_blocks * channels * NR),
        zeros(sizeof(float) * ldv, true) {
    // u[xi][o block][c][NR] = U[xi][c][o block * NR + lane]. A task takes one o block and a chunk of its
    // channels. A U large enough to be shared (see run) streams past the caches when each vector store
    // fills a cache line: its lines then cost no read before their write (measured: r3x3_512's 16 MiB of U
    // went from 23% of the forward pass to 15%).
    const std::int64_t u_bytes = sizeof(float) * positions * channels * outputs;
    shared = u_bytes > max_local_u_bytes;
    const bool streamed = shared && sizeof(Vec) == 64;
    const std::int64_t chunks = ceil_div(channels, u_chunk_channels);
    parallel_for(o_blocks * chunks, [&](std::int64_t task) {
      const std::int64_t c0 = task % chunks * u_chunk_channels;
      transform_kernels(task / chunks, c0, min_of(channels, c0 + u_chunk_channels), streamed);
      if (streamed) stream_fence();
    });
    // Blocks of whole microkernel tiles within the memory bound of their mode (see run).
    const std::int64_t tile_bytes = sizeof(float) * positions * (ldv + ldm);
    const std::int64_t fit =
        shared ? max_shared_bytes / tile_bytes : min_of(max_task_tiles, max_task_bytes / tile_bytes);
    const std::int64_t most = max_of<std::int64_t>(1, fit / MR);  // microkernel tiles
    std::int64_t count = ceil_div(tiles, most * MR);
    // Local blocks in a number that shares evenly among the threads; shared ones as few as fit.
    if (!shared) count = round_up(count, num_threads());
    block_tiles = round_up(ceil_div(tiles, count), MR);
    blocks = ceil_div(tiles, block_tiles);
  }

  // Where a block's V and M are: v[xi][row][ldv] and m[xi][row][ldm] for block_tiles rows.
  struct Block {
    std::int64_t first_tile, count, rows;  // rows: count rounded up to whole microkernel tiles
    float* v;
    float* m;
  };

  // When U is small, each task takes a block of tiles through all three steps, its V and M in its own
  // cache, and streams all of U. When U is large, streaming it for every small block would cost more than
  // the GEMMs, so larger blocks go through each step together, the threads sharing the step's work, and
  // each part of U is read once per block. Returns false where an output may be NaN or Inf (see
  // transform_outputs).
  bool run() const {
    const std::int64_t block_floats = positions * block_tiles * (ldv + ldm);
    if (!shared) {
      parallel_for(blocks, [&](std::int64_t block) {
        float* v = static_cast<float*>(thread_scratch(sizeof(float) * block_floats));
        const Block blk = block_of(block, v);
        transform_inputs(blk, 0, blk.rows);
        for (int xi = 0; xi < positions; ++xi)
          for (std::int64_t ob = 0; ob < o_blocks; ++ob) multiply(blk, xi, ob);
        transform_outputs(blk, 0, blk.count);
      });
      return !non_finite.load();
    }
    const Memory block_memory(sizeof(float) * block_floats);
    for (std::int64_t block = 0; block < blocks; ++block) {
      const Block blk = block_of(block, block_memory.floats());
      const std::int64_t chunks = blk.rows / MR;
      parallel_for(chunks, [&](std::int64_t c) { transform_inputs(blk, c * MR, (c + 1) * MR); });
      parallel_for(positions * o_blocks, [&](std::int64_t item) {
        multiply(blk, static_cast<int>(item / o_blocks), item % o_blocks);
      });
      parallel_for(chunks, [&](std::int64_t c) {
        transform_outputs(blk, min_of(blk.count, c * MR), min_of(blk.count, (c + 1) * MR));
      });
    }
    return !non_finite.load();
  }

  Block block_of(std::int64_t block, float* v) const {
    const std::int64_t first = block * block_tiles;
    const std::int64_t count = min_of(block_tiles, tiles - first);
    return {first, count, round_up(count, MR), v, v + positions * block_tiles * ldv};
  }

  // V for rows [begin, end) of the block; rows past its last tile are zero (the last microkernel tile
  // computes them, and they are never stored).
  void transform_inputs(const Block& blk, std::int64_t begin, std::int64_t end) const {
    const std::int64_t tiles_end = min_of(end, blk.count);
    if (begin < tiles_end) {
      TilePatches<S> patches(geo, grid, x, zeros.floats(), blk.first_tile + begin);
      for (std::int64_t t = begin; t < tiles_end; ++t)
        patches.transform_next(blk.v + t * ldv, block_tiles * ldv);
    }
    for (std::int64_t t = max_of(begin, blk.count); t < end; ++t)
      for (int xi = 0; xi < positions; ++xi)
        std::memset(blk.v + (xi * block_tiles + t) * ldv, 0, sizeof(float) * ldv);
  }

  // M[xi] = V[xi] U[xi] for output channel block ob.
  void multiply(const Block& blk, int xi, std::int64_t ob) const {
    const float* v = blk.v + xi * block_tiles * ldv;
    const float* u = u_memory.floats() + (xi * o_blocks + ob) * channels * NR;
    float* m = blk.m + xi * block_tiles * ldm + ob * NR;
    for (std::int64_t r = 0; r < blk.rows; r += MR)
      microkernel<MR, NV, true, false>(channels, v + r * ldv, ldv, u, m + r * ldm, ldm, MR, NR);
  }

  // Rows [c_begin, c_end) of U[xi][c][o block ob] into u, all NR of their values (zero past the last output
  // channel), so that no row of u is written by two tasks. It transforms with vectors across `lanes` output
  // channels, `lanes` channels at a time.
  void transform_kernels(std::int64_t ob, std::int64_t c_begin, std::int64_t c_end, bool streamed) const {
    float* u = u_memory.floats();
    for (std::int64_t c0 = c_begin; c0 < c_end; c0 += lanes) {
      const std::int64_t count = min_of<std::int64_t>(lanes, c_end - c0);
      for (std::int64_t o0 = ob * NR; o0 < (ob + 1) * NR; o0 += lanes) {
        float g[9][lanes][lanes];
        gather_kernels(o0, c0, count, c0 + lanes < c_end, g);
        for (std::int64_t c = 0; c < count; ++c) {
          Vec gv[9], uv[positions];
          for (int tap = 0; tap < 9; ++tap) gv[tap] = load(g[tap][c]);
          transform_kernel<S>(gv, uv);
          for (int xi = 0; xi < positions; ++xi) {
            float* row = u + ((xi * o_blocks + ob) * channels + c0 + c) * NR + (o0 - ob * NR);
            streamed ? stream(row, uv[xi]) : store(row, uv[xi]);
          }
        }
      }
    }
  }

  // g[tap][c - c0][o - o0] = tap `tap` of the kernel from input channel c to output channel o, for `count`
  // channels from c0 and `lanes` outputs from o0, zero past the last output channel. The weights of the
  // next channels are 9 * lanes short pieces of w, too many streams for the hardware prefetchers to follow:
  // with prefetch_next, they are asked for one step ahead.
  void gather_kernels(std::int64_t o0, std::int64_t c0, std::int64_t count, bool prefetch_next,
                      float (&g)[9][lanes][lanes]) const {
    const std::int64_t o_count = max_of<std::int64_t>(0, min_of<std::int64_t>(lanes, outputs - o0));
    // Lanes past the last output channel are zeroed; rows past count are never read.
    if (o_count < lanes) std::memset(g, 0, sizeof g);
    if (kernels == WinogradKernels::forward) {  // w[o][tap][c]
      for (std::int64_t i = 0; prefetch_next && i < 9 * o_count; ++i)
        __builtin_prefetch(w + (o0 * 9 + i) * channels + c0 + lanes);
      for (int tap = 0; tap < 9; ++tap)
        transpose(w + (o0 * 9 + tap) * channels + c0, o_count, count, 9 * channels, g[tap][0], lanes);
      return;
    }
    // w[c][8 - tap][o]: each piece is already a vector across output channels.
    for (std::int64_t i = 0; prefetch_next && i < 9 * lanes; ++i)
      __builtin_prefetch(w + ((c0 + lanes) * 9 + i) * outputs + o0);
    for (std::int64_t c = 0; c < count; ++c) {
      for (int tap = 0; tap < 9; ++tap) {
        const float* src = w + ((c0 + c) * 9 + 8 - tap) * outputs + o0;
        if (o_count == lanes) {
          store(g[tap][c], load(src));
        } else {
          for (std::int64_t o = 0; o < o_count; ++o) g[tap][c][o] = src[o];
        }
      }
    }
  }

  // The output pixels of the block's tiles [begin, end); notes in non_finite when any may be NaN or Inf: the
  // sum of its tile is then NaN or Inf. (So it is where finite values of 1e38 or so add up past the largest
  // float, or where a pixel past the output's edge, never stored, comes out NaN or Inf: those outputs are
  // computed again too. Each tile's sum, times 0, is added up here, so that the choice depends on the tiles,
  // not on the blocks that the thread count shapes.)
  void transform_outputs(const Block& blk, std::int64_t begin, std::int64_t end) const {
    Vec zeroed{};
    for (std::int64_t t = begin; t < end; ++t)
      zeroed += transform_products(blk.first_tile + t, blk.m + t * ldm) * 0.0f;
    if (std::isnan(sum_lanes(zeroed))) non_finite.store(true);
  }

  // The output pixels of `tile` inside the image from m[xi * block_tiles * ldm + o] = M[xi][tile][o]; returns
  // their sum.
  Vec transform_products(std::int64_t tile, const float* m) const {
    constexpr int pixels = S::tile * S::tile;
    float* out[pixels];  // null outside the output
    grid.output_pixels(geo, tile, y, out);
    const std::int64_t stride = block_tiles * ldm;
    // A sum per pixel, of the pixels past the output's edges too (from finite inputs they are finite): with
    // one sum of all the outputs each add waited for the one before, and with sums of the stored pixels only
    // the forward pass of r3x3_64 took 4% longer (1 thread), against no change here.
    Vec pixel_sums[pixels] = {};
    std::int64_t o = 0;
    for (; o + lanes <= outputs; o += lanes) {
      Vec mv[positions], yv[pixels];
      for (int i = 0; i < positions; ++i) mv[i] = load(m + i * stride + o);
      transform_product<S>(mv, yv);
      const Vec bias = b ? load(b + o) : Vec{};
      for (int i = 0; i < pixels; ++i) {
        const Vec value = yv[i] + bias;
        if (out[i]) store(out[i] + o, value);
        pixel_sums[i] += value;
      }
    }
    for (; o < outputs; ++o) {
      float mv[positions], yv[pixels];
      for (int i = 0; i < positions; ++i) mv[i] = m[i * stride + o];
      transform_product<S>(mv, yv);
      for (int i = 0; i < pixels; ++i) {
        if (!out[i]) continue;
        out[i][o] = yv[i] + (b ? b[o] : 0.0f);
        pixel_sums[i][0] += out[i][o];
      }
    }
    Vec sum{};
    for (const Vec& pixel_sum : pixel_sums) sum += pixel_sum;
    return sum;
  }

  Geometry geo;
  const float* x;
  const float* w;
  WinogradKernels kernels;
  const float* b;
  float* y;
  typename S::Grid grid;
  std::int64_t channels, outputs, o_blocks, ldv, ldm, tiles, block_tiles = 0, blocks = 0;
  bool shared = false;
  mutable std::atomic<bool> non_finite{false};
  Memory u_memory;
  Memory zeros;  // the input pixel of every patch position in the padding
};

template <typename S>
bool run_winograd(const ConvParams& p, const float* x, const float* w, WinogradKernels kernels,
                  const float* b, float* y) {
  if (tile_a_pads_least(p.out_c)) return Winograd<S, tile_a[0], tile_a[1]>(p, x, w, kernels, b, y).run();
  return Winograd<S, tile_b[0], tile_b[1]>(p, x, w, kernels, b, y).run();
}

}  // namespace

bool winograd_forward_applies(const ConvParams& p) { return winograd_shape(p); }

bool winograd_forward_nhwc(const ConvParams& p, const float* x, const float* w, const float* b, float* y) {
  if (p.stride_y == 2) return run_winograd<StrideTwo>(p, x, w, WinogradKernels::forward, b, y);
  return run_winograd<StrideOne>(p, x, w, WinogradKernels::forward, b, y);
}

bool winograd_data_gradient_pass_nhwc(const ConvParams& pass, const float* dy, const float* w, const float* b,
                                      float* dx) {
  return run_winograd<StrideOne>(pass, dy, w, WinogradKernels::exchanged, b, dx);
}

bool winograd_stride_two_data_gradient_applies(const ConvParams& p) {
  return winograd_shape(p) && p.stride_y == 2 && p.pad_top % 2 == 1 && p.pad_left % 2 == 1;
}

bool winograd_stride_two_data_gradient_nhwc(const ConvParams& pass, const float* dy, const float* w,
                                            const float* b, float* dx) {
  return run_winograd<StrideTwoData>(pass, dy, w, WinogradKernels::exchanged, b, dx);
}

}  // namespace gradstate::cpu::GRADSTATE_ISA_NAMESPACE
