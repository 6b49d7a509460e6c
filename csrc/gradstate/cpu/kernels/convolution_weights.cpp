// The convolution weight gradient of one ISA level (see kernels.h).
//
// Dense and wide-group layers: a GEMM per group, dW[o, j] += sum over pixels k of dy[k, o] * X[k, j], where
// column j = (kh, kw, i) of X is the input pixel that tap (kh, kw) of output pixel k reads (zero in the
// padding) — im2col, but never materialised: panels of KC pixels are packed into cache-sized buffers and a
// register-blocked microkernel accumulates MR x NR tiles of dW.
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "gradstate/cpu/kernels/conv_geometry.h"
#include "gradstate/cpu/kernels/convolution_depthwise_nchw.h"
#include "gradstate/cpu/kernels/convolution_pointwise_nchw.h"
#include "gradstate/cpu/kernels/convolution_weights_paths.h"
#include "gradstate/cpu/kernels/convolution_winograd.h"
#include "gradstate/cpu/kernels/gemm.h"
#include "gradstate/cpu/kernels/kernels.h"
#include "gradstate/cpu/kernels/partial_sums.h"
#include "gradstate/cpu/kernels/vec.h"
#include "gradstate/cpu/memory.h"
#include "gradstate/cpu/thread_pool.h"

namespace gradstate::cpu::GRADSTATE_ISA_NAMESPACE {
namespace {

// Cache blocking: a panel of KC pixels by at most max_columns columns of X is packed per step, next to KC
// pixels of dy for every output channel of the group.
constexpr std::int64_t KC = 256;
constexpr std::int64_t max_columns = 512;

// Work is split into items of (group, column block, pixel segment). The segments depend on the problem
// only — never on the thread count — and are summed in a fixed order, so every thread count gives the
// same bits. Pixels are split into segments only when there are too few column blocks to keep this many
// threads busy, and only as far as the segments' partial dW stays within the memory bound. (The column
// blocks may follow the thread count, see split_for: each value of dW lies in one block whatever they
// are.)
constexpr std::int64_t target_items = 16;
constexpr std::int64_t min_segment_pixels = 4 * KC;
constexpr std::int64_t max_partial_bytes = 8 << 20;

// One group's GEMM: dW (M x N, row stride N) over K pixels, with the microkernel tile MR x NV, transposed
// or not (see run).
template <int MR, int NV, bool Transposed>
struct WeightsGemm {
  static constexpr int NR = NV * lanes;
  // Column blocks are whole microkernel tiles: NR columns, or MR when transposed.
  static constexpr std::int64_t unit = Transposed ? MR : NR;
  static constexpr std::int64_t max_nc = max_columns / unit * unit;

  // About `blocks` column blocks (see split_for), equal and of whole microkernel tiles, so that no
  // block packs dy for a sliver of columns.
  WeightsGemm(const ConvParams& p, const float* dy, const float* x, std::int64_t blocks)
      : geo(p),
        dy(dy),
        x(x),
        m(geo.out_per_group),
        n(p.kernel_h * p.kernel_w * geo.in_per_group),
        k(static_cast<std::int64_t>(p.batch) * p.out_h * p.out_w),
        nc(ceil_div(n, blocks * unit) * unit),
        column_blocks(ceil_div(n, nc)) {}

  // How the work splits into items (see gemm_weights_gradient): column blocks of at most max_columns and
  // segments of the pixel sum (enough for target_items items, of at least min_segment_pixels each, their
  // partial dW and db within max_partial_bytes). When that leaves few items that the threads cannot share
  // evenly, a few more, narrower column blocks make their number a multiple of the threads': each value of
  // dW is still summed by one item in one order, so the bits stay the same. (A 3x3 stride-2 layer of 128
  // channels and 196 pixels, in 3 column blocks, left one of 2 threads waiting for the third: 4 blocks took
  // 0.30-0.32 ms instead of 0.40-0.43 ms.)
  struct Split {
    std::int64_t blocks, segments;
  };
  static Split split_for(const ConvParams& p) {
    const Geometry geo(p);
    const std::int64_t n = p.kernel_h * p.kernel_w * geo.in_per_group;
    const std::int64_t pixels = static_cast<std::int64_t>(p.batch) * p.out_h * p.out_w;
    const std::int64_t partial = p.out_c * (n + 1);
    const std::int64_t widest = ceil_div(n, max_nc);
    std::int64_t segments =
        min_of(ceil_div(target_items, p.groups * widest), ceil_div(pixels, min_segment_pixels));
    segments = max_of<std::int64_t>(1, min_of<std::int64_t>(segments, max_partial_bytes / (4 * partial)));
    const std::int64_t threads = num_threads(), per_block = p.groups * segments;
    if (per_block * widest >= 4 * threads) return {widest, segments};
    // Asked for b blocks, the constructor makes this many (equal blocks of whole tiles may need fewer).
    const auto made = [&](std::int64_t b) { return ceil_div(n, ceil_div(n, b * unit) * unit); };
    for (std::int64_t b = widest; b <= ceil_div(n, unit); ++b)
      if (per_block * made(b) % threads == 0) return {made(b), segments};
    return {widest, segments};
  }

  // a[W-block][k][W] = dy of pixels [k0, k0 + kc) for the group's output channels, zero beyond m; adds the
  // values to db when db is not null. Like pack_x, it reads NHWC data (see weights_gradient_on_nhwc_copies).
  template <int W>
  void pack_dy(std::int64_t g, std::int64_t k0, std::int64_t kc, float* a, float* db) const {
    // Rows past m stay zero, so the last tile's extra output channels accumulate nothing.
    const std::int64_t blocks = ceil_div(m, W);
    std::memset(a + (blocks - 1) * kc * W, 0, sizeof(float) * kc * W);
    std::int64_t img, oh, ow;
    pixel_of(geo.p, k0, img, oh, ow);
    for (std::int64_t k = 0; k < kc; ++k) {
      const float* src = dy + geo.y_offset(img, oh, ow, g * m);
      put(W, a, kc, k, 0, m, src);
      if (ow + pack_ahead < geo.p.out_w) ask_for_lines(src + pack_ahead * geo.y.w, m);
      if (db != nullptr) add_to(db, src, m);
      next_pixel(geo.p, img, oh, ow);
    }
  }

  // sum[i] += values[i] for i < count.
  static void add_to(float* sum, const float* values, std::int64_t count) {
    std::int64_t i = 0;
    for (; i + lanes <= count; i += lanes) store(sum + i, load(sum + i) + load(values + i));
    for (; i < count; ++i) sum[i] += values[i];
  }

  // b[W-block][k][W] = columns [j0, j0 + nc) of X for pixels [k0, k0 + kc) (see pack_columns).
  void pack_x(std::int64_t W, std::int64_t g, std::int64_t j0, std::int64_t nc, std::int64_t k0,
              std::int64_t kc, float* b) const {
    pack_columns<true>(geo, x, W, g, j0, nc, k0, kc, b);
  }

  // c[:, j0 : j0 + nc] += the product over pixels [k_begin, k_end), or = it when `overwrite` (c's earlier
  // values are then never read); db (when not null) += dy over them. Normally the microkernel's rows are
  // output channels and its vectors columns of X, accumulating straight into c; transposed, its rows are
  // columns of X and its vectors output channels (for few, odd columns, as in a first layer), accumulating
  // into a transposed tile that is added to c at the end.
  void run(std::int64_t g, std::int64_t j0, std::int64_t k_begin, std::int64_t k_end, float* c, float* db,
           bool overwrite) const {
    const std::int64_t nc = min_of(this->nc, n - j0);
    const std::int64_t row_blocks = Transposed ? ceil_div(nc, MR) : ceil_div(m, MR);
    const std::int64_t vector_blocks = Transposed ? ceil_div(m, NR) : ceil_div(nc, NR);
    const std::int64_t tile_floats = Transposed ? row_blocks * MR * vector_blocks * NR : 0;
    float* a = static_cast<float*>(
        thread_scratch(sizeof(float) * (KC * (row_blocks * MR + vector_blocks * NR) + tile_floats)));
    float* b = a + KC * row_blocks * MR;
    float* tile = b + KC * vector_blocks * NR;
    const std::int64_t ldt = vector_blocks * NR;
    // Transposed, the X panel is row-major (one row of row_blocks * MR columns per pixel): a pixel's columns
    // then are one copy per kernel row, where blocks of MR would cut them into many short pieces.
    const std::int64_t lda = Transposed ? row_blocks * MR : MR;
    std::memset(tile, 0, sizeof(float) * tile_floats);
    for (std::int64_t k0 = k_begin; k0 < k_end; k0 += KC) {
      const std::int64_t kc = min_of(KC, k_end - k0);
      if (Transposed) {
        pack_x(lda, g, j0, nc, k0, kc, a);
        pack_dy<NR>(g, k0, kc, b, db);
      } else {
        pack_dy<MR>(g, k0, kc, a, db);
        pack_x(NR, g, j0, nc, k0, kc, b);
      }
      for (std::int64_t vb = 0; vb < vector_blocks; ++vb) {
        for (std::int64_t rb = 0; rb < row_blocks; ++rb) {
          const float* ap = Transposed ? a + rb * MR : a + rb * kc * MR;
          const float* bp = b + vb * kc * NR;
          if (Transposed) {
            microkernel<MR, NV>(kc, ap, lda, bp, tile + rb * MR * ldt + vb * NR, ldt, MR, NR);
          } else {
            const int rows = static_cast<int>(min_of<std::int64_t>(MR, m - rb * MR));
            const int cols = static_cast<int>(min_of<std::int64_t>(NR, nc - vb * NR));
            float* out = c + rb * MR * n + j0 + vb * NR;
            if (overwrite && k0 == k_begin) {
              microkernel<MR, NV, false, false>(kc, ap, lda, bp, out, n, rows, cols);
            } else {
              microkernel<MR, NV>(kc, ap, lda, bp, out, n, rows, cols);
            }
          }
        }
      }
    }
    if (!Transposed) return;
    for (std::int64_t o = 0; o < m; ++o)
      for (std::int64_t j = 0; j < nc; ++j)
        c[o * n + j0 + j] = (overwrite ? 0.0f : c[o * n + j0 + j]) + tile[j * ldt + o];
  }

  Geometry geo;
  const float* dy;
  const float* x;
  std::int64_t m, n, k, nc, column_blocks;
};

template <int MR, int NV, bool Transposed>
void gemm_weights_gradient(const ConvParams& p, const float* dy, const float* x, float* dw, float* db,
                           bool accumulate) {
  using Gemm = WeightsGemm<MR, NV, Transposed>;
  const typename Gemm::Split split = Gemm::split_for(p);
  const Gemm gemm(p, dy, x, split.blocks);
  const std::int64_t weights_per_group = gemm.m * gemm.n;
  const std::int64_t dw_size = p.groups * weights_per_group;
  const std::int64_t tiles = p.groups * gemm.column_blocks, segments = split.segments;
  const std::int64_t segment_pixels = ceil_div(gemm.k, segments);

  // With one segment the items write dW and db directly; with several, each segment sums into its own
  // partial, and the partials are added in segment order below. An item overwrites its part of dW or of a
  // partial, so only the db it adds to is zeroed first. (No segment is empty: there are S <= 16 of them and
  // more than min_segment_pixels * (S - 1) pixels, so S - 1 segments of ceil(pixels / S) leave some over.)
  const Memory partials_memory(segments == 1 ? 0 : sizeof(float) * segments * (dw_size + p.out_c));
  float* partials = segments == 1 ? nullptr : partials_memory.floats();
  const bool overwrite = partials || !accumulate;
  auto dw_of = [&](std::int64_t s) { return partials ? partials + s * (dw_size + p.out_c) : dw; };
  auto db_of = [&](std::int64_t s) { return partials ? partials + s * (dw_size + p.out_c) + dw_size : db; };
  if (overwrite)
    for (std::int64_t s = 0; s < segments; ++s) std::memset(db_of(s), 0, sizeof(float) * p.out_c);

  parallel_for(segments * tiles, [&](std::int64_t item) {
    const std::int64_t s = item / tiles, tile = item % tiles;
    const std::int64_t g = tile / gemm.column_blocks, jb = tile % gemm.column_blocks;
    const std::int64_t k_begin = s * segment_pixels, k_end = min_of(gemm.k, k_begin + segment_pixels);
    // The first column block of each group also sums db while it packs dy.
    float* group_db = jb == 0 ? db_of(s) + g * gemm.m : nullptr;
    gemm.run(g, jb * gemm.nc, k_begin, k_end, dw_of(s) + g * weights_per_group, group_db, overwrite);
  });

  if (partials == nullptr) return;
  sum_partials(partials, segments, dw_size, p.out_c, dw, db, accumulate);
}

// ---- groups of few channels (depthwise included) ----------------------------------------------------------

// Vectors run across groups: for each pair (o, i) of an output and an input channel of a group,
// dW[g * Og + o, kh, kw, i] over all groups g is a depthwise problem between channel o of dy and channel i
// of x. A task takes one image and a block of `group_block` groups, packs its dy and x into planes
// [channel in group][row][column][group] (x with its zero padding written out, so the inner loop has no
// bounds checks) and accumulates the image's partial dW. The images' partials are then summed in order, so
// the result does not depend on the thread count.
//
// Taps accumulated per sweep: 9 taps x group_vectors. A sweep over fewer taps repeats its first tap into the
// unused slots and drops their sums. With 16 registers, 18 sums of two vectors would spill: 1 vector there
// (grp3x3_g32's dW on AVX2, 2 threads: 1.16-1.55 -> 0.87-0.97 ms, before such layers took the depthwise
// sweeps there).
constexpr int group_vectors = vector_registers >= 32 ? 2 : 1;
constexpr std::int64_t group_block = group_vectors * lanes;
constexpr int tap_block = 9;
// A task packs a whole padded input plane per channel of a group; planes larger than this (huge padding)
// take the GEMM path, which packs only the pixels it reads.
constexpr std::int64_t max_packed_floats = std::int64_t{16} << 20;

struct GroupedGeometry {
  explicit GroupedGeometry(const ConvParams& p)
      : geo(p),
        og(geo.out_per_group),
        ig(geo.in_per_group),
        taps(static_cast<std::int64_t>(p.kernel_h) * p.kernel_w),
        padded_h((static_cast<std::int64_t>(p.out_h) - 1) * p.stride_y + (p.kernel_h - 1) * p.dilation_y + 1),
        padded_w((static_cast<std::int64_t>(p.out_w) - 1) * p.stride_x + (p.kernel_w - 1) * p.dilation_x + 1),
        out_pixels(static_cast<std::int64_t>(p.out_h) * p.out_w),
        blocks(ceil_div(p.groups, group_block)) {}

  // Floats of one task's packed dy and x.
  std::int64_t dy_floats() const { return og * out_pixels * group_block; }
  std::int64_t x_floats() const { return ig * padded_h * padded_w * group_block; }

  Geometry geo;
  std::int64_t og, ig, taps, padded_h, padded_w, out_pixels, blocks;
};

// dst[j * plane + g] = src[g * count + j] for g < groups and j < count: the channels of one NHWC pixel,
// group by group, into one plane per channel of a group. With a whole block of groups and a count fixed at
// compile time, the compiler turns this transpose into vector shuffles (2.4x faster than a strided copy per
// channel, for 4 channels per group). src and dst never overlap; unmarked, the copy checked that at every
// pixel.
template <int Count>
void unpack_block(const float* __restrict src, std::int64_t plane, float* __restrict dst) {
  for (std::int64_t g = 0; g < group_block; ++g)
    for (int j = 0; j < Count; ++j) dst[j * plane + g] = src[g * Count + j];
}

void unpack_groups(const float* src, std::int64_t groups, std::int64_t count, std::int64_t plane,
                   float* dst) {
  if (groups == group_block) {
    switch (count) {
      case 1:
        return unpack_block<1>(src, plane, dst);
      case 2:
        return unpack_block<2>(src, plane, dst);
      case 4:
        return unpack_block<4>(src, plane, dst);
      case 8:
        return unpack_block<8>(src, plane, dst);
      default:
        break;
    }
  }
  for (std::int64_t g = 0; g < groups; ++g)
    for (std::int64_t j = 0; j < count; ++j) dst[j * plane + g] = src[g * count + j];
}

// Packs image n's dy and x for groups [g0, g0 + group_block) (zeros past the last group and in x's
// padding) and adds the image's dy to db_part.
void pack_groups(const GroupedGeometry& gg, const float* dy, const float* x, std::int64_t n, std::int64_t g0,
                 float* pdy, float* px, float* db_part) {
  const ConvParams& p = gg.geo.p;
  const std::int64_t groups = min_of<std::int64_t>(group_block, p.groups - g0);
  const std::int64_t dy_plane = gg.out_pixels * group_block,
                     x_plane = gg.padded_h * gg.padded_w * group_block;
  // Whole blocks of groups leave no lane of dy to zero; x's padding is zeroed row by row below.
  if (groups < group_block) {
    std::memset(pdy, 0, sizeof(float) * gg.dy_floats());
    std::memset(px, 0, sizeof(float) * gg.x_floats());
  }
  // The block reads a few lines of each pixel, a pixel apart, which the prefetchers do not follow: it asks
  // for them pack_ahead pixels ahead (grp3x3_g32 dW on AVX2, 2 threads: 1.0-1.27 -> 0.80-1.0 ms, before
  // such layers took the depthwise sweeps there).
  for (std::int64_t pix = 0; pix < gg.out_pixels; ++pix) {
    const float* src = dy + gg.geo.y_offset(n, pix / p.out_w, pix % p.out_w, g0 * gg.og);
    if (pix + pack_ahead < gg.out_pixels) ask_for_lines(src + pack_ahead * gg.geo.y.w, groups * gg.og);
    unpack_groups(src, groups, gg.og, dy_plane, pdy + pix * group_block);
    for (std::int64_t c = 0; c < groups * gg.og; ++c) db_part[g0 * gg.og + c] += src[c];
  }
  // Packed row r is input row r - pad_top, column c input column c - pad_left.
  const std::int64_t left = min_of<std::int64_t>(p.pad_left, gg.padded_w);
  const std::int64_t right = max_of(left, min_of<std::int64_t>(p.pad_left + p.in_w, gg.padded_w));
  for (std::int64_t r = 0; r < gg.padded_h; ++r) {
    const std::int64_t ih = r - p.pad_top;
    float* row = px + r * gg.padded_w * group_block;
    if (ih < 0 || ih >= p.in_h) {
      for (std::int64_t i = 0; i < gg.ig; ++i)
        std::memset(row + i * x_plane, 0, sizeof(float) * gg.padded_w * group_block);
      continue;
    }
    for (std::int64_t i = 0; i < gg.ig; ++i) {
      std::memset(row + i * x_plane, 0, sizeof(float) * left * group_block);
      std::memset(row + i * x_plane + right * group_block, 0,
                  sizeof(float) * (gg.padded_w - right) * group_block);
    }
    for (std::int64_t c = left; c < right; ++c) {
      const float* src = x + gg.geo.x_offset(n, ih, c - p.pad_left, g0);
      if (c + pack_ahead < right) ask_for_lines(src + pack_ahead * gg.geo.x.w, groups * gg.ig);
      unpack_groups(src, groups, gg.ig, x_plane, row + c * group_block);
    }
  }
}

// acc[t] = sum over output pixels of dy_plane * x_plane shifted by tap t's offset, for tap_block taps.
void sweep_taps(const GroupedGeometry& gg, const float* pdy, const float* px, const std::int64_t* tap_offset,
                float* out) {
  const ConvParams& p = gg.geo.p;
  Vec acc[tap_block][group_vectors] = {};
  for (std::int64_t oh = 0; oh < p.out_h; ++oh) {
    const float* dy_row = pdy + oh * p.out_w * group_block;
    const float* x_row = px + oh * p.stride_y * gg.padded_w * group_block;
    for (std::int64_t ow = 0; ow < p.out_w; ++ow) {
      const float* d = dy_row + ow * group_block;
      const float* xs = x_row + ow * p.stride_x * group_block;
      Vec dv[group_vectors];
      for (int v = 0; v < group_vectors; ++v) dv[v] = load(d + v * lanes);
      for (int t = 0; t < tap_block; ++t) {
        for (int v = 0; v < group_vectors; ++v) acc[t][v] += dv[v] * load(xs + tap_offset[t] + v * lanes);
      }
    }
  }
  for (int t = 0; t < tap_block; ++t)
    for (int v = 0; v < group_vectors; ++v) store(out + (t * group_vectors + v) * lanes, acc[t][v]);
}

void grouped_weights_gradient(const ConvParams& p, const float* dy, const float* x, float* dw, float* db,
                              bool accumulate) {
  const GroupedGeometry gg(p);
  const std::int64_t dw_size = static_cast<std::int64_t>(p.out_c) * gg.taps * gg.ig, part = dw_size + p.out_c;
  // Offsets of every tap in a packed x plane.
  const Memory offsets_memory(sizeof(std::int64_t) * gg.taps);
  auto* offsets = static_cast<std::int64_t*>(offsets_memory.data());
  for (std::int64_t t = 0; t < gg.taps; ++t) {
    offsets[t] =
        ((t / p.kernel_w) * p.dilation_y * gg.padded_w + (t % p.kernel_w) * p.dilation_x) * group_block;
  }
  const Memory partials_memory(sizeof(float) * (p.batch * part), true);
  float* partials = partials_memory.floats();
  parallel_for(p.batch * gg.blocks, [&](std::int64_t task) {
    const std::int64_t n = task / gg.blocks, g0 = (task % gg.blocks) * group_block;
    const std::int64_t groups = min_of<std::int64_t>(group_block, p.groups - g0);
    float* scratch = static_cast<float*>(
        thread_scratch(sizeof(float) * (gg.dy_floats() + gg.x_floats() + tap_block * group_block)));
    float *pdy = scratch, *px = pdy + gg.dy_floats(), *sums = px + gg.x_floats();
    float* dw_part = partials + n * part;
    // sums[t][group] is dW[group * og + o, tap t0 + t, i].
    auto store_sums = [&](std::int64_t o, std::int64_t i, std::int64_t t0) {
      for (std::int64_t t = 0; t < min_of<std::int64_t>(tap_block, gg.taps - t0); ++t) {
        for (std::int64_t g = 0; g < groups; ++g) {
          dw_part[(((g0 + g) * gg.og + o) * gg.taps + t0 + t) * gg.ig + i] = sums[t * group_block + g];
        }
      }
    };
    pack_groups(gg, dy, x, n, g0, pdy, px, dw_part + dw_size);
    for (std::int64_t o = 0; o < gg.og; ++o) {
      for (std::int64_t i = 0; i < gg.ig; ++i) {
        for (std::int64_t t0 = 0; t0 < gg.taps; t0 += tap_block) {
          std::int64_t block_offsets[tap_block];
          for (int t = 0; t < tap_block; ++t) block_offsets[t] = offsets[t0 + t < gg.taps ? t0 + t : t0];
          sweep_taps(gg, pdy + o * gg.out_pixels * group_block,
                     px + i * gg.padded_h * gg.padded_w * group_block, block_offsets, sums);
          store_sums(o, i, t0);
        }
      }
    }
  });
  sum_partials(partials, p.batch, dw_size, p.out_c, dw, db, accumulate);
}

// The GEMM with the tile and orientation that waste the least (the first of equals). The transposed
// orientation packs X into narrower blocks and transposes its result, so it must save more than that costs.
void gemm_weights_gradient(const ConvParams& p, const float* dy, const float* x, float* dw, float* db,
                           bool accumulate) {
  const std::int64_t m = p.out_c / p.groups,
                     n = static_cast<std::int64_t>(p.kernel_h) * p.kernel_w * (p.in_c / p.groups);
  constexpr double transposed_cost = 1.2;
  const double waste[4] = {tile_waste(m, n, tile_a), tile_waste(m, n, tile_b),
                           transposed_cost * tile_waste(n, m, tile_a),
                           transposed_cost * tile_waste(n, m, tile_b)};
  int best = 0;
  for (int i = 1; i < 4; ++i) best = waste[i] < waste[best] ? i : best;
  using Gemm = void (*)(const ConvParams&, const float*, const float*, float*, float*, bool);
  static constexpr Gemm gemms[4] = {
      gemm_weights_gradient<tile_a[0], tile_a[1], false>, gemm_weights_gradient<tile_b[0], tile_b[1], false>,
      gemm_weights_gradient<tile_a[0], tile_a[1], true>, gemm_weights_gradient<tile_b[0], tile_b[1], true>};
  gemms[best](p, dy, x, dw, db, accumulate);
}

// NCHW x and dy copied into NHWC at most this many bytes (a few images) at a time; see
// weights_gradient_on_nhwc_copies.
constexpr std::int64_t max_copy_bytes = 8 << 20;

// The weight gradient of an NCHW layer from copies of x and dy in NHWC, a few whole images at a time, each
// chunk's dW and db added to those before. Every path reads NHWC: the channels of a pixel together, where
// NCHW has them a plane apart. (Copies of a few rows per work item, as the GEMM path once made, were slower
// on every layer measured: 3x3 stride 2 of 128 channels 16-17 against 13-15 ms, 7x7 stride-2 first layer
// 16.3 against 15.0 ms, 3x3 of 512 channels 12.2-12.8 against 11.0-11.7 ms; and they left Winograd's,
// the in-place and the depthwise paths to NHWC alone.)
void weights_gradient_on_nhwc_copies(const ConvParams& p, const float* dy, const float* x, float* dw,
                                     float* db, bool accumulate) {
  const std::int64_t in_plane = static_cast<std::int64_t>(p.in_h) * p.in_w,
                     out_plane = static_cast<std::int64_t>(p.out_h) * p.out_w;
  const std::int64_t x_image = p.in_c * in_plane, dy_image = p.out_c * out_plane;
  const std::int64_t per_chunk =
      min_of<std::int64_t>(p.batch, max_of<std::int64_t>(1, max_copy_bytes / (4 * (x_image + dy_image))));
  const Memory copies(sizeof(float) * per_chunk * (x_image + dy_image));
  float* xs = copies.floats();
  float* dys = xs + per_chunk * x_image;
  for (std::int64_t n0 = 0; n0 < p.batch; n0 += per_chunk) {
    const std::int64_t count = min_of(per_chunk, p.batch - n0);
    transpose_images(x + n0 * x_image, count, p.in_c, in_plane, xs);
    transpose_images(dy + n0 * dy_image, count, p.out_c, out_plane, dys);
    ConvParams chunk = p;
    chunk.layout = Layout::NHWC, chunk.batch = static_cast<std::int32_t>(count);
    convolution_weights_gradient(chunk, dys, xs, dw, db, accumulate || n0 > 0);
  }
}

// Winograd's weight gradient, unless it comes out with a NaN or Inf: its transforms mix the pixels of a
// tile, so that an Inf in x or dy can turn into NaN, and a NaN or Inf reach taps whose direct sums never
// read it. Returns false for the caller to compute dw and db by the direct sums: with accumulate, the result
// went through scratch and dw and db are untouched; without, they are the caller's to overwrite. The check
// reads dW once, just written (its 590,000 values for 3x3 and 256 channels).
bool winograd_weights_gradient_if_finite(const ConvParams& p, const float* dy, const float* x, float* dw,
                                         float* db, bool accumulate) {
  const std::int64_t dw_count = std::int64_t{9} * p.out_c * p.in_c;
  if (!accumulate) {
    winograd_weights_gradient_nhwc(p, dy, x, dw, db);
    return all_finite(dw, 1, dw_count, 0);
  }
  const Memory result(sizeof(float) * (dw_count + p.out_c));
  float* result_dw = result.floats();
  float* result_db = result_dw + dw_count;
  winograd_weights_gradient_nhwc(p, dy, x, result_dw, result_db);
  if (!all_finite(result_dw, 1, dw_count, 0)) return false;
  sum_partials(result_dw, 1, dw_count, p.out_c, dw, db, true);
  return true;
}

}  // namespace

void convolution_weights_gradient(const ConvParams& p, const float* dy, const float* x, float* dw, float* db,
                                  bool accumulate) {
  const std::int64_t og = p.out_c / p.groups, ig = p.in_c / p.groups;
  if (depthwise_weights_gradient_from_nchw_applies(p))
    return depthwise_weights_gradient_from_nchw(p, dy, x, dw, db, accumulate);
  if (depthwise_nchw_weights_gradient_applies(p))
    return depthwise_weights_gradient_nchw(p, dy, x, dw, db, accumulate);
  if (pointwise_nchw_weights_gradient_applies(p))
    return pointwise_weights_gradient_nchw(p, dy, x, dw, db, accumulate);
  if (p.layout == Layout::NCHW) return weights_gradient_on_nhwc_copies(p, dy, x, dw, db, accumulate);
  // Groups of a few channels leave most of a GEMM tile empty; vectors across groups fill them.
  if (winograd_weights_gradient_applies(p) &&
      winograd_weights_gradient_if_finite(p, dy, x, dw, db, accumulate))
    return;
  if (in_place_weights_gradient_applies(p)) {
    in_place_weights_gradient(p, dy, x, dw, db, accumulate);
  } else if (depthwise_weights_gradient_applies(p)) {
    depthwise_weights_gradient(p, dy, x, dw, db, accumulate);
  } else if (p.groups > 1 && og <= 8 && ig <= 8 && GroupedGeometry(p).x_floats() <= max_packed_floats) {
    grouped_weights_gradient(p, dy, x, dw, db, accumulate);
  } else {
    gemm_weights_gradient(p, dy, x, dw, db, accumulate);
  }
}

}  // namespace gradstate::cpu::GRADSTATE_ISA_NAMESPACE
