// The weight gradient of depthwise layers in NHWC: dW[c, kh, kw] = sum over output pixels of
// dy[pixel, c] * x[the pixel's tap (kh, kw), c], and db[c] = sum of dy[pixel, c]; and, for 3x3 kernels at
// stride 1 or 2, of small groups with as many channels in as out (see sweep_row_in_groups and sweep_outer).
//
// Channels lie contiguous in dy and x, so vectors run across channels and nothing is packed (but for groups
// of 4 channels, below). An output row is swept once per kernel row, chunk of at most sweep_taps of its
// taps, and block of V vectors of channels (up to 128 channels on AVX-512): pixel after pixel, so pixels of
// up to a block of channels are read whole, in the order they lie in memory. (Sweeping a row once per 2
// vectors of channels, at a stride of a whole pixel, left the prefetchers behind and the loads waiting on
// memory.) A block's sums for the chunk's taps stay in registers during a sweep and wait in memory between
// sweeps. While it sweeps a row, a block asks for the lines of x and dy that the next output row reads
// first: each sweep reads lines fetched by the sweeps before it but for one new row of x or dy, and a single
// stream fetched on demand leaves the loads waiting on memory (dw3x3_128 dW 1.06 -> 0.70-0.73 ms on 2
// threads). 3x3 kernels at stride 1 or 2 without dilation sweep two output rows at once instead (sweep_rows,
// below) where the registers hold that (but for AVX-512 at stride 2 in place), or else one row in groups of
// pixels (sweep_row_in_groups), which on AVX2 and AVX-512 also take groups of 2 channels (groups of 4 take
// sweeps of outer products, sweep_outer). A task takes a band of output rows of one image (or, for NCHW
// layers, all rows of one image's block of channels, copied) and leaves a partial dW and db; the partials
// are summed in task order, so the result does not depend on the thread count.
#include "gradstate/cpu/kernels/convolution_weights_paths.h"

#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>

#include "gradstate/cpu/kernels/conv_geometry.h"
#include "gradstate/cpu/kernels/depthwise_nchw_blocks.h"
#include "gradstate/cpu/kernels/gemm.h"
#include "gradstate/cpu/kernels/partial_sums.h"
#include "gradstate/cpu/kernels/vec.h"
#include "gradstate/cpu/memory.h"
#include "gradstate/cpu/thread_pool.h"

namespace gradstate::cpu::GRADSTATE_ISA_NAMESPACE {
namespace {

// A sweep's sums are sweep_taps x V vectors: 24 of the registers with 32, 12 with 16.
constexpr int sweep_taps = 3;
constexpr int max_block_vectors = vector_registers / 4;
// Tasks (bands of output rows) a layer is split into, at least (but see min_band_rows): enough for the
// threads to share, and as few as that allows, since the rows of x on either side of a band's edge are read
// by both bands, and those of each task from memory (dw3x3_128's dW took 0.71-0.76 ms in bands of 9 rows,
// 0.45-0.55 ms in bands of 28). The tasks depend on the layer only, never on the thread count.
constexpr std::int64_t target_tasks = 16;
// Bands hold at least this many output rows (or a whole image), for fewer tasks where that leaves fewer: on 2
// threads, medians of alternating runs, bands of 7 rows -> 14: dw3x3_256_s2's dW 0.093-0.106 -> 0.079-0.089
// ms, 8x512x14x14's 0.145-0.149 -> 0.122-0.124 ms (at stride 2, 0.089-0.091 -> 0.068-0.074); 1x256x28x28's,
// in bands of 2 rows before, 0.042-0.049 -> 0.029-0.035 ms. Bands of at least 28 rows were no faster.
constexpr std::int64_t min_band_rows = 14;

// What a sweep asks for, for the next output row: the lines of x its taps read there (when no later sweep
// of this row reads them), and the lines of dy (by the row's first sweep of each block).
struct Ahead {
  bool x, dy;
};

// The channels [c0, c0 + V * lanes) of the taps [k0, k0 + T) of kernel row kh, over output row oh of image
// n: sums[t][channel] += the row's sum of dy * x at tap t. Away from the borders the inner loop reads x at
// fixed offsets from one moving pointer without checks; a border pixel's taps that read the padding read a
// block of zeros instead.
template <int T, int V>
void sweep_row(const Geometry& geo, const float* dy, const float* x, std::int64_t n, std::int64_t oh,
               std::int64_t kh, std::int64_t k0, std::int64_t c0, Ahead ahead, float* sums) {
  constexpr std::int64_t width = V * lanes;
  alignas(64) static const float zeros[width] = {};
  const ConvParams& p = geo.p;
  const std::int64_t ih = geo.input_row(oh, kh), first_col = k0 * p.dilation_x;
  const std::int64_t tap_step = p.dilation_x * geo.x.w, pixel_step = p.stride_x * geo.x.w;
  // Output columns [lo, hi) read inside the row at every tap: iw0 + first_col >= 0 and
  // iw0 + last_col <= in_w - 1, with iw0 = ow * stride - pad_left.
  std::int64_t lo = p.out_w, hi = p.out_w;
  if (geo.row_inside(ih)) {
    const std::int64_t last_col = first_col + (T - 1) * p.dilation_x;
    const IndexRange inside =
        indices_between(p.pad_left - first_col, p.in_w - 1 + p.pad_left - last_col, p.stride_x, p.out_w);
    lo = inside.first, hi = inside.end;
  }
  Vec acc[T][V];
  for (int t = 0; t < T; ++t)
    for (int v = 0; v < V; ++v) acc[t][v] = load(sums + t * width + v * lanes);
  const auto add_pixel = [&](const float* d, const float* const* at) {
    for (int v = 0; v < V; ++v) {
      const Vec dv = load(d + v * lanes);
      for (int t = 0; t < T; ++t) acc[t][v] += dv * load(at[t] + v * lanes);
    }
  };
  const float* d = dy + geo.y_offset(n, oh, 0, c0);
  const auto border_pixel = [&](std::int64_t ow) {
    const float* at[T];
    for (int t = 0; t < T; ++t) {
      const std::int64_t iw = geo.input_col(ow, k0 + t);
      at[t] = geo.row_inside(ih) && geo.col_inside(iw) ? x + geo.x_offset(n, ih, iw, c0) : zeros;
    }
    add_pixel(d + ow * geo.y.w, at);
  };
  for (std::int64_t ow = 0; ow < lo; ++ow) border_pixel(ow);
  if (lo < hi) {
    const float* xs = x + geo.x_offset(n, ih, geo.input_col(lo, k0), c0);
    // The next output row's taps read x stride_y rows down; along the row, the pixel's last stride_x taps
    // read every column that no earlier pixel did (with dilation, some that one did too).
    const std::int64_t next_x = p.stride_y * geo.x.h, next_dy = geo.y.h;
    const int first_new_tap = max_of(0, T - p.stride_x);
    for (std::int64_t ow = lo; ow < hi; ++ow, xs += pixel_step) {
      const float* at[T];
      for (int t = 0; t < T; ++t) at[t] = xs + t * tap_step;
      if (ahead.x)
        for (int t = first_new_tap; t < T; ++t)
          for (int v = 0; v < V; ++v) __builtin_prefetch(at[t] + next_x + v * lanes, 0, 2);
      if (ahead.dy)
        for (int v = 0; v < V; ++v) __builtin_prefetch(d + ow * geo.y.w + next_dy + v * lanes, 0, 2);
      add_pixel(d + ow * geo.y.w, at);
    }
  }
  for (std::int64_t ow = hi; ow < p.out_w; ++ow) border_pixel(ow);
  for (int t = 0; t < T; ++t)
    for (int v = 0; v < V; ++v) store(sums + t * width + v * lanes, acc[t][v]);
}

// dy_sum[channel] += the sum of dy over output row oh of image n, for the channels [c0, c0 + V * lanes).
// (Summed apart from the sweeps: their sums already take 24 of the 32 vector registers.)
template <int V>
void sum_dy_row(const Geometry& geo, const float* dy, std::int64_t n, std::int64_t oh, std::int64_t c0,
                float* dy_sum) {
  Vec total[V];
  for (int v = 0; v < V; ++v) total[v] = load(dy_sum + v * lanes);
  const float* d = dy + geo.y_offset(n, oh, 0, c0);
  for (std::int64_t ow = 0; ow < geo.p.out_w; ++ow, d += geo.y.w)
    for (int v = 0; v < V; ++v) total[v] += load(d + v * lanes);
  for (int v = 0; v < V; ++v) store(dy_sum + v * lanes, total[v]);
}

// part = dW[o][tap][i] then db[c] from the sums of each block of `width` channels, the last block ending at
// the last channel, in groups of `group` channels (1 for depthwise layers). A block's sums lie
// [j][tap][channel] and then, for j = 0, [channel] the sums of dy: the sums of x at the block's channel
// c = (its group's first) + i times dy at channel o = (its group's first) + j.
void write_part(const ConvParams& p, std::int64_t width, std::int64_t group, const float* sums, float* part) {
  const std::int64_t channels = p.out_c, taps = static_cast<std::int64_t>(p.kernel_h) * p.kernel_w;
  const std::int64_t blocks = ceil_div(channels, width), j_floats = (taps + 1) * width;
  for (std::int64_t b = 0; b < blocks; ++b) {
    const std::int64_t c0 = min_of(b * width, channels - width);
    const float* block_sums = sums + b * group * j_floats;
    for (std::int64_t c = c0; c < c0 + width; ++c) {
      const std::int64_t i = c % group;
      for (std::int64_t j = 0; j < group; ++j)
        for (std::int64_t t = 0; t < taps; ++t)
          part[((c - i + j) * taps + t) * group + i] = block_sums[j * j_floats + t * width + c - c0];
      part[channels * taps * group + c] = block_sums[taps * width + c - c0];
    }
  }
}

// The band of output rows [oh_begin, oh_end) of image n with blocks of V vectors of channels: part gets
// dW[c][tap] then db[c].
template <int V>
void sweep_band(const Geometry& geo, const float* dy, const float* x, std::int64_t n, std::int64_t oh_begin,
                std::int64_t oh_end, float* part) {
  using Sweep = void (*)(const Geometry&, const float*, const float*, std::int64_t, std::int64_t,
                         std::int64_t, std::int64_t, std::int64_t, Ahead, float*);
  static_assert(sweep_taps == 3, "one sweep per tap count");
  static constexpr Sweep sweeps[sweep_taps] = {sweep_row<1, V>, sweep_row<2, V>, sweep_row<3, V>};
  constexpr std::int64_t width = V * lanes;
  const ConvParams& p = geo.p;
  const std::int64_t channels = p.out_c, taps = static_cast<std::int64_t>(p.kernel_h) * p.kernel_w;
  const std::int64_t blocks = ceil_div(channels, width);
  // Per block: taps x width sums of dy * x, then width sums of dy.
  const std::int64_t block_floats = (taps + 1) * width;
  float* sums = static_cast<float*>(thread_scratch(sizeof(float) * blocks * block_floats));
  std::memset(sums, 0, sizeof(float) * blocks * block_floats);
  // Kernel row kh reads x's row of the next output row here already when kernel row kh + stride / dilation
  // does.
  const auto read_again = [&](std::int64_t kh) {
    return p.stride_y % p.dilation_y == 0 && kh + p.stride_y / p.dilation_y < p.kernel_h;
  };
  for (std::int64_t oh = oh_begin; oh < oh_end; ++oh) {
    const bool next_row = oh + 1 < p.out_h;
    bool first_sweep = true;
    // Kernel rows in the padding add dy x 0: nothing, unless a dy of the output row is NaN or Inf, where the
    // reference's 0 x Inf makes NaN; the sweeps then read zeros there. Whether the row is finite is found
    // when a kernel row first reads the padding.
    int finite_row = -1;
    const auto padding_adds_nothing = [&] {
      if (finite_row < 0) finite_row = all_finite(dy + geo.y_offset(n, oh, 0, 0), p.out_w, channels, geo.y.w);
      return finite_row != 0;
    };
    for (std::int64_t kh = 0; kh < p.kernel_h; ++kh) {
      if (!geo.row_inside(geo.input_row(oh, kh)) && padding_adds_nothing()) continue;
      const bool ask_x = next_row && !read_again(kh) && geo.row_inside(geo.input_row(oh + 1, kh));
      for (std::int64_t k0 = 0; k0 < p.kernel_w; k0 += sweep_taps) {
        const std::int64_t count = min_of<std::int64_t>(sweep_taps, p.kernel_w - k0);
        const Ahead ahead{ask_x, next_row && first_sweep};
        first_sweep = false;
        for (std::int64_t b = 0; b < blocks; ++b) {
          // The last block ends at the last channel, overlapping the one before: the overlapping channels
          // get the same sums from both.
          const std::int64_t c0 = min_of(b * width, channels - width);
          sweeps[count - 1](geo, dy, x, n, oh, kh, k0, c0, ahead,
                            sums + b * block_floats + (kh * p.kernel_w + k0) * width);
        }
      }
    }
    for (std::int64_t b = 0; b < blocks; ++b)
      sum_dy_row<V>(geo, dy, n, oh, min_of(b * width, channels - width),
                    sums + b * block_floats + taps * width);
  }
  write_part(p, width, 1, sums, part);
}

// 3x3 kernels at stride 1 or 2 without dilation (most depthwise layers) take sweeps of two output rows at
// once, over one vector of channels (dw3x3_128's dW: 0.71-0.76 -> 0.45-0.55 ms on 2 threads, with the bands
// of target_tasks; 1.46x faster from the caches). Tap kw + S of a pixel reads the column that tap kw of the
// next pixel reads, and kernel row kh + S of an output row the row of x that kernel row kh of the next
// output row reads (S the stride); so the two rows' taps read S + 3 rows of x, of each of which a window of
// 3 columns stays in registers and shifts along the rows by S columns a pixel. At stride 1 a step of the
// sweep makes 18 products from 4 loads of x and 2 of dy; the sweeps of a kernel row above make 24 from 32
// loads, which wait on the L2 cache. The sums of the 9 taps and of dy and the window take 23 (stride 1) or
// 26 (stride 2) vector registers, of 32 on AVX-512 and NEON; AVX2's 16 would spill them. At stride 2, the
// sweeps of groups of pixels below read a layer in place faster on AVX-512, whole pixels in the order they
// lie (dw3x3_256_s2's dW, min of alternating processes, 1 thread: 0.218-0.225 -> 0.167-0.183 ms; 2 threads
// 0.100-0.157 -> 0.088-0.096 ms), but the copies of NCHW blocks, in the caches, slower (the same layer in
// NCHW, 2 threads: 0.108-0.119 -> 0.141-0.148 ms). At stride 1 the pairs were faster in place too
// (dw3x3_128, 2 threads: 0.37 against 0.39 ms; groups of 8 pixels were slower at both strides). NEON, not
// timed, keeps the pairs at stride 2 and packs small groups of channels.
constexpr bool pairs_fit = vector_registers >= 32;
constexpr bool groups_over_pairs = pairs_fit && lanes == 16;  // AVX-512
constexpr int pair_kernel = 3;                                // kernel rows and columns
constexpr int pair_sums = pair_kernel * pair_kernel + 1;      // vectors: the taps', then db

// 3x3 at stride 1 or 2 without dilation, which the sweeps of two rows (or of groups of pixels) take.
bool three_by_three_small_stride(const ConvParams& p) {
  return p.kernel_h == pair_kernel && p.kernel_w == pair_kernel && p.stride_y == p.stride_x &&
         (p.stride_x == 1 || p.stride_x == 2) && p.dilation_y == 1 && p.dilation_x == 1;
}

// The channels per group of a layer the depthwise sweeps take: 1 (depthwise), or where the sweeps of
// groups of pixels apply, 2 or 4 channels in and out (dividing the lanes).
std::int64_t channels_per_group(const ConvParams& p) { return p.in_c / p.groups; }

// Where the sweeps read x and dy: the layer's own arrays, or copies of a block of them, which the caches
// hold.
enum class Reads { in_place, cached_copies };

bool pairs_apply(const ConvParams& p, Reads reads) {
  return pairs_fit && channels_per_group(p) == 1 && three_by_three_small_stride(p) &&
         (p.stride_x == 1 || reads == Reads::cached_copies || !groups_over_pairs);
}

// Rows (1 or 2) output rows from oh of image n at stride S, channels [c0, c0 + lanes): sums[tap][channel]
// and then sums[9][channel] (db) += the rows' sums. With `ahead`, asks for the lines of x and dy that the
// next sweep, Rows rows down, reads first.
template <int Rows, int S>
void sweep_rows(const Geometry& geo, const float* dy, const float* x, std::int64_t n, std::int64_t oh,
                std::int64_t c0, bool ahead, float* sums) {
  constexpr int K = pair_kernel, x_rows = (Rows - 1) * S + K,
                kept = K - S;  // kept: taps read by the pixel before
  alignas(64) static const float zeros[lanes] = {};
  const ConvParams& p = geo.p;
  // A row of x in the padding reads zeros from a pointer that does not move along the row.
  const float* row[x_rows];
  std::int64_t step[x_rows];
  for (int j = 0; j < x_rows; ++j) {
    const std::int64_t ih = geo.input_row(oh, j);
    row[j] = geo.row_inside(ih) ? x + geo.x_offset(n, ih, 0, c0) : zeros;
    step[j] = geo.row_inside(ih) ? geo.x.w : 0;
  }
  const float* d[Rows];
  for (int r = 0; r < Rows; ++r) d[r] = dy + geo.y_offset(n, oh + r, 0, c0);
  Vec acc[K * K], db = load(sums + K * K * lanes);
  for (int t = 0; t < K * K; ++t) acc[t] = load(sums + t * lanes);
  // window[j][kw]: the column of x row j that tap kw of the current pixel reads.
  Vec window[x_rows][K];
  const auto column = [&](int j, std::int64_t iw) {
    return geo.col_inside(iw) ? load(row[j] + iw * step[j]) : Vec{};
  };
  for (int j = 0; j < x_rows; ++j)
    for (int kw = 0; kw < kept; ++kw) window[j][kw] = column(j, geo.input_col(0, kw));
  const auto add_pixel = [&](std::int64_t ow) {
    for (int r = 0; r < Rows; ++r) {
      const Vec dv = load(d[r] + ow * geo.y.w);
      db += dv;
      for (int kh = 0; kh < K; ++kh)
        for (int kw = 0; kw < K; ++kw) acc[kh * K + kw] += dv * window[r * S + kh][kw];
    }
    for (int j = 0; j < x_rows; ++j)
      for (int kw = 0; kw < kept; ++kw) window[j][kw] = window[j][kw + S];
  };
  const auto border_pixel = [&](std::int64_t ow) {
    for (int j = 0; j < x_rows; ++j)
      for (int kw = kept; kw < K; ++kw) window[j][kw] = column(j, geo.input_col(ow, kw));
    add_pixel(ow);
  };
  // Output columns whose new taps all read inside the row.
  const IndexRange inside = indices_between(p.pad_left - kept, p.in_w - 1 + p.pad_left - (K - 1), S, p.out_w);
  std::int64_t ow = 0;
  for (; ow < inside.first; ++ow) border_pixel(ow);
  // The next sweep's new rows of x and dy, where they exist, from the columns the interior reads first.
  const float* next_x[Rows * S];
  const float* next_dy[Rows];
  int x_asks = 0, dy_asks = 0;
  for (int i = 0; ahead && i < Rows * S; ++i) {
    const std::int64_t ih = geo.input_row(oh, x_rows + i);
    if (geo.row_inside(ih)) next_x[x_asks++] = x + geo.x_offset(n, ih, geo.input_col(0, kept), c0);
  }
  for (int r = 0; ahead && r < Rows; ++r)
    if (oh + Rows + r < p.out_h) next_dy[dy_asks++] = d[r] + Rows * geo.y.h;
  const float* at[x_rows];
  for (int j = 0; j < x_rows; ++j) at[j] = row[j] + geo.input_col(ow, kept) * step[j];
  for (; ow < inside.end; ++ow) {
    for (int a = 0; a < x_asks; ++a)
      for (int s = 0; s < S; ++s) __builtin_prefetch(next_x[a] + (ow * S + s) * geo.x.w, 0, 2);
    for (int a = 0; a < dy_asks; ++a) __builtin_prefetch(next_dy[a] + ow * geo.y.w, 0, 2);
    for (int j = 0; j < x_rows; ++j) {
      for (int kw = kept; kw < K; ++kw) window[j][kw] = load(at[j] + (kw - kept) * step[j]);
      at[j] += S * step[j];
    }
    add_pixel(ow);
  }
  for (; ow < p.out_w; ++ow) border_pixel(ow);
  for (int t = 0; t < K * K; ++t) store(sums + t * lanes, acc[t]);
  store(sums + K * K * lanes, db);
}

// The band of output rows [oh_begin, oh_end) of image n in sweeps of two rows at stride S: part gets
// dW[c][tap] then db[c].
template <int S>
void sweep_band_in_pairs(const Geometry& geo, const float* dy, const float* x, std::int64_t n,
                         std::int64_t oh_begin, std::int64_t oh_end, float* part) {
  const ConvParams& p = geo.p;
  const std::int64_t channels = p.out_c, blocks = ceil_div(channels, std::int64_t{lanes});
  const std::int64_t block_floats = pair_sums * lanes;
  float* sums = static_cast<float*>(thread_scratch(sizeof(float) * blocks * block_floats));
  std::memset(sums, 0, sizeof(float) * blocks * block_floats);
  for (std::int64_t oh = oh_begin; oh < oh_end; oh += 2) {
    const bool ahead = oh + 2 < oh_end;
    for (std::int64_t b = 0; b < blocks; ++b) {
      const std::int64_t c0 = min_of<std::int64_t>(b * lanes, channels - lanes);
      if (oh + 1 < oh_end) {
        sweep_rows<2, S>(geo, dy, x, n, oh, c0, ahead, sums + b * block_floats);
      } else {
        sweep_rows<1, S>(geo, dy, x, n, oh, c0, ahead, sums + b * block_floats);
      }
    }
  }
  write_part(p, lanes, 1, sums, part);
}

// Where the pairs do not fit (AVX2's 16 registers, the scalar level) and, on AVX-512, for layers read in
// place at stride 2 and for groups, 3x3 kernels at stride 1 or 2 without dilation sweep one output row with
// all 9 taps, in groups of group_pixels output pixels: for each group every vector of channels in turn loads
// its 9 tap sums and its sum of dy from a block in L1, adds the group's products and stores them back. The
// group's vectors of dy stay in registers, so each column of x the group's taps read is loaded once for every
// tap that reads it (at stride 1, 18 loads of x make 36 products; sweep_row's 3-tap sweeps loaded x once per
// product and dy once per kernel row). The sums, 4 vectors of dy and a column of x take 15 registers. A group
// reads its pixels of x and dy whole, all their channels before the next group, in the order they lie in
// memory, and asks for the lines the next row reads first (LinesAhead): at stride 1, from memory, the
// sweeps were 1.4x slower without the asks (AVX2, 8x64x28x28 and 8x128x28x28, 2 threads). At stride 2 a
// row reads two new rows of x, which the prefetchers follow better: it asks only when the layer's x and dy
// (or a copied NCHW block's, which are in the caches) are larger than the caches hold (cached_bytes). From
// the caches the asks cost more than they saved (dw3x3_256_s2's dW, 2 threads, median of call-by-call ratios:
// 19% faster without them on AVX-512 and AVX2; 8x512x14x14 5%), from memory they saved 1-8% on such layers,
// and 1.5x on 8x64x112x112 (32 MB).
//
// Layers with groups of 2 channels in and out take the same sweeps, once for each channel j of a group: dy's
// vector shuffled so that every lane holds channel j of its own group (group_mask), times x at the lane's own
// channel, sums dW[group's first + j, tap, lane's channel in its group]. The sweep for j = 1 finds the
// group's columns of x in L1, so x and dy are read from memory once, as for depthwise layers, and nothing is
// packed. (Groups of 4 took these sweeps too before the outer products below; groups of 8 would need a
// shuffle across 128-bit lanes, and measured 1.6-2x slower than packing.)
constexpr int group_pixels = 4;
constexpr int group_span = (group_pixels - 1) * 2 + pair_kernel;  // the columns a group reads, at most

bool groups_apply(const ConvParams& p, Reads reads) {
  return three_by_three_small_stride(p) && !pairs_apply(p, reads) && (!pairs_fit || groups_over_pairs);
}

// Calls f(std::integral_constant<int, j>) for j = 0, ..., Count - 1.
template <typename F, int... J>
void call_with_each(F& f, std::integer_sequence<int, J...>) {
  (f(std::integral_constant<int, J>{}), ...);
}
template <int Count, typename F>
void for_each_constant(F&& f) {
  call_with_each(f, std::make_integer_sequence<int, Count>{});
}

// The floats of one vector of channels' sums in the groups path: per channel j of a group, 9 taps' and
// then dy's (used for j = 0 only).
template <int Group>
constexpr std::int64_t group_block_floats = Group * pair_sums * lanes;

// acc[tap] += dv[q] * x at pixel q's tap, for P pixels whose taps in kernel row r read the columns
// column(r, 0), column(r, 1), ... of x (pixel q reads column q * S + kw at tap kw), channels [c, c + lanes).
template <int P, int S, typename Column>
void add_products(Vec (&acc)[pair_sums - 1], const Vec (&dv)[P], Column column, std::int64_t c) {
  constexpr int K = pair_kernel, span = (P - 1) * S + K;  // span: the columns the group's taps read
  for (int r = 0; r < K; ++r) {
#pragma GCC unroll 16
    for (int col = 0; col < span; ++col) {
      const Vec xv = load(column(r, col) + c);
#pragma GCC unroll 3
      for (int kw = 0; kw < K; ++kw) {
        if (col >= kw && (col - kw) % S == 0 && (col - kw) / S < P)
          acc[r * K + kw] += dv[(col - kw) / S] * xv;
      }
    }
  }
}

// Output row oh of image n: each block of lanes channels (the last ending at the last channel) adds the row's
// products to its sums (sums + block * group_block_floats<Group>: for each channel j of a group, 9 vectors
// of sums of x times dy at channel j of the lane's group, and one of dy, used for j = 0). zeros: group_span
// pixels of zeros, which kernel rows and columns in the padding read. With `ahead`, asks for the rows of x
// and dy the next row reads first.
template <int S, int Group>
void sweep_row_in_groups(const Geometry& geo, const float* dy, const float* x, const float* zeros,
                         std::int64_t n, std::int64_t oh, bool ahead, float* sums) {
  constexpr int K = pair_kernel;
  const ConvParams& p = geo.p;
  const std::int64_t channels = p.out_c, blocks = ceil_div(channels, std::int64_t{lanes});
  const float* row[K];
  std::int64_t step[K];
  for (int r = 0; r < K; ++r) {
    const std::int64_t ih = geo.input_row(oh, r);
    row[r] = geo.row_inside(ih) ? x + geo.x_offset(n, ih, 0, 0) : zeros;
    step[r] = geo.row_inside(ih) ? geo.x.w : 0;
  }
  const float* d = dy + geo.y_offset(n, oh, 0, 0);
  const auto each_block = [&](auto add) {
    for (std::int64_t b = 0; b < blocks; ++b)
      add(min_of<std::int64_t>(b * lanes, channels - lanes), sums + b * group_block_floats<Group>);
  };
  // Output columns whose taps all read inside the row.
  const IndexRange inside = indices_between(p.pad_left, p.in_w - 1 + p.pad_left - (K - 1), S, p.out_w);
  const std::int64_t groups = p.out_w / group_pixels;
  // The next row reads S new rows of x below this one's last, and its own row of dy.
  LinesAhead next_x, next_dy;
  if (ahead) {
    next_x = next_rows_ahead(geo, x, n, oh, groups);
    next_dy = LinesAhead(d + geo.y.h, geo.y.h, groups);
  }
  // visit(P, ow, column) for each group of P pixels from ow along the row, group_pixels at a time and the
  // last few alone. Interior groups read their columns at a fixed step from one pointer per kernel row (a
  // kernel row in the padding reads the pixels of zeros); groups at the borders find each column's pixel,
  // the pixel of zeros in the padding.
  const auto each_pixel_group = [&](auto visit) {
    const auto interior_group = [&](auto pixels, std::int64_t ow) {
      const float* columns[K];
      for (int r = 0; r < K; ++r) columns[r] = row[r] + geo.input_col(ow, 0) * step[r];
      const std::int64_t column_step = geo.x.w;
      visit(pixels, ow, [&](int r, int col) { return columns[r] + col * column_step; });
    };
    const auto border_group = [&](auto pixels, std::int64_t ow) {
      constexpr int span = (decltype(pixels)::value - 1) * S + K;
      const float* at[K][span];
      for (int r = 0; r < K; ++r)
        for (int col = 0; col < span; ++col) {
          const std::int64_t iw = geo.input_col(ow, 0) + col;
          at[r][col] = geo.col_inside(iw) ? row[r] + iw * step[r] : zeros;
        }
      visit(pixels, ow, [&](int r, int col) { return at[r][col]; });
    };
    const auto group = [&](auto pixels, std::int64_t ow) {
      if (ow >= inside.first && ow + decltype(pixels)::value <= inside.end) {
        interior_group(pixels, ow);
      } else {
        border_group(pixels, ow);
      }
    };
    std::int64_t ow = 0;
    for (; ow + group_pixels <= p.out_w; ow += group_pixels) {
      next_x.next();
      next_dy.next();
      group(std::integral_constant<int, group_pixels>{}, ow);
    }
    for (; ow < p.out_w; ++ow) group(std::integral_constant<int, 1>{}, ow);
  };
  // Every block in turn at each group of pixels, so that x and dy are read in the order they lie. (Sweeping
  // the row once per block and channel j of a group, sums in registers, reads it a whole pixel apart:
  // grp3x3_g32's dW, when it took these sweeps, on one thread took 1.65-2.2 ms that way, 1.1 ms this way.)
  // With groups, the group's columns are read again from L1 once for each channel j of a group.
  each_pixel_group([&](auto pixels, std::int64_t ow, auto column) {
    constexpr int P = decltype(pixels)::value;
    for_each_constant<Group>([&](auto channel) {
      constexpr int j = decltype(channel)::value;
      each_block([&](std::int64_t c, float* block) {
        float* j_sums = block + j * pair_sums * lanes;
        Vec acc[K * K], dv[P], db{};
        for (int t = 0; t < K * K; ++t) acc[t] = load(j_sums + t * lanes);
        if constexpr (j == 0) db = load(j_sums + K * K * lanes);
        for (int q = 0; q < P; ++q) {
          const Vec raw = load(d + (ow + q) * geo.y.w + c);
          if constexpr (j == 0) db += raw;
          dv[q] = __builtin_shuffle(raw, group_mask<Group>(j));
        }
        add_products<P, S>(acc, dv, column, c);
        for (int t = 0; t < K * K; ++t) store(j_sums + t * lanes, acc[t]);
        if constexpr (j == 0) store(j_sums + K * K * lanes, db);
      });
    });
  });
}

// The band of output rows [oh_begin, oh_end) of image n a row at a time at stride S, in groups of Group
// channels: part gets dW[o][tap][i] then db[c].
template <int S, int Group>
void sweep_band_in_groups(const Geometry& geo, const float* dy, const float* x, std::int64_t n,
                          std::int64_t oh_begin, std::int64_t oh_end, float* part) {
  const ConvParams& p = geo.p;
  const std::int64_t sums_floats = ceil_div(p.out_c, std::int64_t{lanes}) * group_block_floats<Group>;
  // The sums, then the pixels of zeros a group of pixels reads in a kernel row in the padding.
  const std::int64_t floats = sums_floats + group_span * geo.x.w;
  float* sums = static_cast<float*>(thread_scratch(sizeof(float) * floats));
  std::memset(sums, 0, sizeof(float) * floats);
  const float* zeros = sums + sums_floats;
  const std::int64_t input_floats = p.batch * (in_plane_of(p) * p.in_c + out_plane_of(p) * p.out_c);
  const bool asks = S == 1 || std::int64_t{sizeof(float)} * input_floats > cached_bytes;
  for (std::int64_t oh = oh_begin; oh < oh_end; ++oh)
    sweep_row_in_groups<S, Group>(geo, dy, x, zeros, n, oh, asks && oh + 1 < oh_end, sums);
  write_part(p, lanes, Group, sums, part);
}

// Groups of 4 channels in and out take sweeps of outer products instead: the sweeps of groups of
// pixels above, once per channel j of a group, load and store the sums of the 9 taps for every group of 4
// pixels (31 loads and 9 stores per 36 products), and the loads and stores, not the products, bound them.
// Here lane l of vector h of a tap sums dy at channel j = h * outer_j + l / 4 of a group times x at channel
// i = l % 4, so a group's dW for a tap, its 4 x 4 sums, takes 4 / outer_j vectors (2 on AVX2). x's 4 channels
// are repeated across a vector (one broadcast load) and dy's spread in blocks of 4 lanes (one broadcast load
// and a shuffle per vector). A sweep runs along an output row for one group with its sums in registers:
// on AVX2 those of kernel rows 0 and 1 (12 vectors: 12 products per pixel from 7 loads), then those of kernel
// row 2 and of dy (6 products from 4 loads); with 16 lanes, a tap's sums in one vector, those of all 9 taps
// and of dy at once (9 products from 10 loads; with the columns of x kept in registers, from 4 at stride 1;
// grp3x3_g32's dW on AVX-512, 1 thread, min: 0.55 ms packed as other groups are, 0.55 in the two sweeps,
// 0.50-0.51 in one; sweeping two groups at once was no faster).
//
// The sweeps read x from copies of its rows, each group's columns contiguous and zeros for the padding: in
// place, a group's 16 bytes of each pixel lie a whole pixel apart, so that a row's lines crowd a few sets of
// L1 (a pixel of 128 channels is 512 bytes apart: 8 sets), and border pixels would need code of their own. A
// band copies each row of x it reads once, into a ring of 3 rows that its next output rows read too.
// grp3x3_g32's dW on one thread: 1.06-1.08 ms (min) in the sweeps of groups of pixels, 0.95-0.97 ms here with
// copies of x made 4 floats at a time; on 2 threads 0.53 -> 0.48 ms (timed again later, when the machine was
// slower: those copies 1.00 ms, the copies of two columns below 0.92-0.94). Tried and slower: sweeps of all
// 9 taps for one vector h at a time (1.10 ms); copies of x spread for each h, with dy read in place (1.4-2.1
// ms: 4 times the stores), or of dy spread too (1.2 ms); the next rows' copies made a group at a time between
// the sweeps (1.36 ms). Tried and no faster (against 0.91-0.93 ms with the copies of two columns below):
// kernel row 2 swept two pixels at a time into two sets of sums, with dy summed apart; dy spread once by the
// first sweep for the second (1.06 ms); sweeps along two output rows, loading and storing the sums half as
// often (0.92-0.96 ms).
constexpr int outer_group = 4;
// Channels j of dy per vector (the 1 only keeps levels of fewer than 4 lanes, which never take these
// sweeps, from dividing by zero).
constexpr int outer_j = lanes >= outer_group ? lanes / outer_group : 1;
constexpr int outer_vectors = outer_group / outer_j;  // vectors per tap
// Per group: 9 taps of outer_vectors vectors, then a vector of sums of dy.
constexpr std::int64_t outer_group_floats = (pair_kernel * pair_kernel * outer_vectors + 1) * lanes;

// The shuffle mask that spreads a vector holding dy's 4 channels of a group repeated: lane l takes channel
// h * outer_j + l / 4.
inline VecIndex spread_mask(int h) {
  VecIndex mask;
  for (int l = 0; l < lanes; ++l) mask[l] = l - l % outer_group + h * outer_j + l / outer_group;
  return mask;
}

// The columns of x that an output row's taps read: from input column input_col(0, 0) on.
std::int64_t outer_columns(const ConvParams& p) { return (p.out_w - 1) * p.stride_x + pair_kernel; }

// Columns, and groups, that copy_row_outer copies at a time: as many groups as one vector holds.
constexpr int copy_columns = outer_j;

// The mask that interleaves the blocks of 4 channels of two vectors x and y, of the first half of their
// blocks for k = 0, of the second for k = 1: x's first block, y's first, x's second, ...
inline VecIndex interleave_mask(int k) {
  VecIndex mask;
  for (int l = 0; l < lanes; ++l) {
    const int block = l / outer_group;
    mask[l] = block % 2 * lanes + (block / 2 + k * copy_columns / 2) * outer_group + l % outer_group;
  }
  return mask;
}

// v[i] holds copy_columns blocks of 4 floats; afterwards v[j] holds block j of each v[i], in order of i (a
// transpose of blocks, in log2(copy_columns) rounds of interleaving v[i] with v[i + copy_columns / 2]).
inline void transpose_blocks(Vec (&v)[copy_columns]) {
  for (int round = 1; round < copy_columns; round *= 2) {
    Vec t[copy_columns];
    for (int i = 0; i < copy_columns / 2; ++i) {
      t[2 * i] = __builtin_shuffle(v[i], v[i + copy_columns / 2], interleave_mask(0));
      t[2 * i + 1] = __builtin_shuffle(v[i], v[i + copy_columns / 2], interleave_mask(1));
    }
    for (int i = 0; i < copy_columns; ++i) v[i] = t[i];
  }
}

// Row ih of image n of x into `row`: for each group, its 4 channels of each column read (zeros in the
// padding), column after column. A vector's worth of columns at a time (2 on AVX2, 4 on AVX-512): one load
// of as many groups from each column gives, its blocks transposed, each group's columns, which lie side by
// side in the copy, in one store. grp3x3_g32's dW against copying 4 floats at a time, min: AVX2, one
// thread, 1.00 -> 0.92-0.94 ms; AVX-512, one thread 0.510-0.517 -> 0.488-0.500 ms, two 0.301-0.305 ->
// 0.288-0.294 ms.
void copy_row_outer(const Geometry& geo, const float* x, std::int64_t n, std::int64_t ih, float* row) {
  const std::int64_t columns = outer_columns(geo.p), groups = geo.p.in_c / outer_group;
  const std::int64_t group_floats = columns * outer_group;  // of the copy
  // Column q's pixel, or null in the padding.
  const auto pixel_of = [&](std::int64_t q) -> const float* {
    const std::int64_t iw = geo.input_col(0, 0) + q;
    return geo.col_inside(iw) ? x + geo.x_offset(n, ih, iw, 0) : nullptr;
  };
  // Group g's channels of a pixel (or zeros) into `to`.
  const auto copy_group = [&](const float* pixel, std::int64_t g, float* to) {
    if (pixel) {
      std::memcpy(to, pixel + g * outer_group, sizeof(float) * outer_group);
    } else {
      std::memset(to, 0, sizeof(float) * outer_group);
    }
  };
  std::int64_t q = 0;
  if constexpr (copy_columns >= 2) {
    for (; q + copy_columns <= columns; q += copy_columns) {
      const float* pixel[copy_columns];
      for (int c = 0; c < copy_columns; ++c) pixel[c] = pixel_of(q + c);
      float* to = row + q * outer_group;
      std::int64_t g = 0;
      for (; g + copy_columns <= groups; g += copy_columns, to += copy_columns * group_floats) {
        Vec v[copy_columns];
        for (int c = 0; c < copy_columns; ++c) v[c] = pixel[c] ? load(pixel[c] + g * outer_group) : Vec{};
        transpose_blocks(v);
        for (int c = 0; c < copy_columns; ++c) store(to + c * group_floats, v[c]);
      }
      for (; g < groups; ++g, to += group_floats)
        for (int c = 0; c < copy_columns; ++c) copy_group(pixel[c], g, to + c * outer_group);
    }
  }
  for (; q < columns; ++q) {
    const float* pixel = pixel_of(q);
    for (std::int64_t g = 0; g < groups; ++g) copy_group(pixel, g, row + g * group_floats + q * outer_group);
  }
}

// Kernel rows [r0, r0 + Rows) of an output row of one group, whose copied rows of x are rows[r0], ...: sums
// for those taps += the products, and with Db, the group's sums of dy += dy (lane l: channel l % 4). d: dy at
// the group's first channel of the row's first pixel.
template <int S, int Rows, bool Db>
void sweep_outer(const Geometry& geo, const float* d, const float* const* rows, int r0, float* sums) {
  constexpr int K = pair_kernel, H = outer_vectors;
  Vec acc[Rows][K][H], db{};
  float* row_sums = sums + r0 * K * H * lanes;
  float* db_sum = sums + K * K * H * lanes;
  for (int r = 0; r < Rows; ++r)
    for (int kw = 0; kw < K; ++kw)
      for (int h = 0; h < H; ++h) acc[r][kw][h] = load(row_sums + ((r * K + kw) * H + h) * lanes);
  if constexpr (Db) db = load(db_sum);
  const float* at[Rows];
  for (int r = 0; r < Rows; ++r) at[r] = rows[r0 + r];
  // In the one-sweep outer products (a tap's sums in one vector, 32 registers: AVX-512), the columns of x
  // stay in registers from one pixel to the next, whose columns kw are this one's kw + S: each pixel loads S
  // new columns of each kernel row instead of K (grp3x3_g32's dW, min: 1 thread 0.50-0.52 -> 0.39-0.40 ms,
  // 2 threads 0.26-0.30 -> 0.21 ms). In the two sweeps of 16 registers (AVX2) they would push a sum out to
  // memory, and each pixel would wait on its store, so there the compiler is kept from seeing that they
  // repeat.
  constexpr bool keep_columns = H == 1;
  [[maybe_unused]] Vec xv[Rows][K];  // xv[r][kw]: the column of kernel row r that tap kw reads
  if constexpr (keep_columns) {
    for (int r = 0; r < Rows; ++r)
      for (int kw = 0; kw < K - S; ++kw) xv[r][kw + S] = repeat4(at[r] + kw * outer_group);
  }
  for (std::int64_t ow = 0; ow < geo.p.out_w; ++ow, d += geo.y.w) {
    const Vec raw = repeat4(d);
    if constexpr (Db) db += raw;
    Vec dv[H];
    for (int h = 0; h < H; ++h) dv[h] = __builtin_shuffle(raw, spread_mask(h));
    for (int r = 0; r < Rows; ++r) {
      if constexpr (keep_columns) {
        for (int kw = 0; kw < K - S; ++kw) xv[r][kw] = xv[r][kw + S];
        for (int kw = K - S; kw < K; ++kw) xv[r][kw] = repeat4(at[r] + kw * outer_group);
        for (int kw = 0; kw < K; ++kw) acc[r][kw][0] += dv[0] * xv[r][kw];
      } else {
        for (int kw = 0; kw < K; ++kw) {
          const Vec column = repeat4(at[r] + kw * outer_group);
          for (int h = 0; h < H; ++h) acc[r][kw][h] += dv[h] * column;
        }
      }
      at[r] += S * outer_group;
      if constexpr (!keep_columns) asm("" : "+r"(at[r]));
    }
  }
  for (int r = 0; r < Rows; ++r)
    for (int kw = 0; kw < K; ++kw)
      for (int h = 0; h < H; ++h) store(row_sums + ((r * K + kw) * H + h) * lanes, acc[r][kw][h]);
  if constexpr (Db) store(db_sum, db);
}

// part = dW[o][tap][i] then db[c] from the groups' sums.
void write_outer_part(const ConvParams& p, const float* sums, float* part) {
  constexpr int H = outer_vectors;
  const std::int64_t channels = p.out_c, taps = static_cast<std::int64_t>(p.kernel_h) * p.kernel_w;
  for (std::int64_t g = 0; g < channels / outer_group; ++g) {
    const float* group_sums = sums + g * outer_group_floats;
    for (std::int64_t t = 0; t < taps; ++t)
      for (int h = 0; h < H; ++h)
        for (int l = 0; l < lanes; ++l) {
          const std::int64_t j = h * outer_j + l / outer_group, i = l % outer_group;
          part[((g * outer_group + j) * taps + t) * outer_group + i] = group_sums[(t * H + h) * lanes + l];
        }
    for (int i = 0; i < outer_group; ++i)
      part[channels * taps * outer_group + g * outer_group + i] = group_sums[taps * H * lanes + i];
  }
}

// The band of output rows [oh_begin, oh_end) of image n at stride S, groups of 4 channels, in outer products:
// part gets dW[o][tap][i] then db[c].
template <int S>
void sweep_band_outer(const Geometry& geo, const float* dy, const float* x, std::int64_t n,
                      std::int64_t oh_begin, std::int64_t oh_end, float* part) {
  constexpr int K = pair_kernel;
  const ConvParams& p = geo.p;
  const std::int64_t groups = p.out_c / outer_group, columns = outer_columns(p);
  const std::int64_t sums_floats = groups * outer_group_floats, row_floats = columns * p.in_c;
  const std::int64_t group_floats = columns * outer_group;  // of a copied row
  // The sums, a row of zeros for rows in the padding, then the ring of copied rows.
  float* sums = static_cast<float*>(thread_scratch(sizeof(float) * (sums_floats + (K + 1) * row_floats)));
  std::memset(sums, 0, sizeof(float) * (sums_floats + row_floats));
  const float* zero_row = sums + sums_floats;
  float* ring = sums + sums_floats + row_floats;
  std::int64_t ring_row[K];  // the row of x each slot holds
  for (std::int64_t& row : ring_row) row = -1;
  for (std::int64_t oh = oh_begin; oh < oh_end; ++oh) {
    const float* rows[K];
    for (int r = 0; r < K; ++r) {
      const std::int64_t ih = geo.input_row(oh, r);
      if (!geo.row_inside(ih)) {
        rows[r] = zero_row;
        continue;
      }
      float* slot = ring + (ih % K) * row_floats;
      if (ring_row[ih % K] != ih) copy_row_outer(geo, x, n, ih, slot);
      ring_row[ih % K] = ih;
      rows[r] = slot;
    }
    // While this row is swept, the lines of x and dy the next one reads first.
    LinesAhead next_x, next_dy;
    if (oh + 1 < oh_end) {
      next_x = next_rows_ahead(geo, x, n, oh, groups);
      next_dy = LinesAhead(dy + geo.y_offset(n, oh + 1, 0, 0), geo.y.h, groups);
    }
    const float* d = dy + geo.y_offset(n, oh, 0, 0);
    for (std::int64_t g = 0; g < groups; ++g) {
      next_x.next();
      next_dy.next();
      const float* group_rows[K];
      for (int r = 0; r < K; ++r) group_rows[r] = rows[r] + g * group_floats;
      float* group_sums = sums + g * outer_group_floats;
      if constexpr (outer_vectors == 1) {
        sweep_outer<S, 3, true>(geo, d + g * outer_group, group_rows, 0, group_sums);
      } else {
        sweep_outer<S, 2, false>(geo, d + g * outer_group, group_rows, 0, group_sums);
        sweep_outer<S, 1, true>(geo, d + g * outer_group, group_rows, 2, group_sums);
      }
    }
  }
  write_outer_part(p, sums, part);
}

using Band = void (*)(const Geometry&, const float*, const float*, std::int64_t, std::int64_t, std::int64_t,
                      float*);

// The sweeps of a band for `group` channels per group: in groups of pixels for 1 or 2, of outer products
// for 4; or none.
template <int S>
Band band_in_groups(std::int64_t group) {
  switch (group) {
    case 1:
      return sweep_band_in_groups<S, 1>;
    case 2:
      return sweep_band_in_groups<S, 2>;
    case 4:
      if constexpr (lanes % outer_group == 0) return sweep_band_outer<S>;
      return nullptr;
    default:
      return nullptr;
  }
}

// The sweeps of a band that a layer these sweeps apply to takes: two rows, or groups of pixels (or outer
// products) where they apply, else the widest block of channels that fits in the layer's channels.
Band band_of(const ConvParams& p, Reads reads) {
  const std::int64_t channels = p.out_c, group = channels_per_group(p);
  if (pairs_apply(p, reads)) return p.stride_x == 1 ? sweep_band_in_pairs<1> : sweep_band_in_pairs<2>;
  if (groups_apply(p, reads)) return p.stride_x == 1 ? band_in_groups<1>(group) : band_in_groups<2>(group);
  return channels >= max_block_vectors * lanes ? sweep_band<max_block_vectors>
         : channels >= 4 * lanes               ? sweep_band<4>
                                               : sweep_band<2>;
}

}  // namespace

bool depthwise_weights_gradient_applies(const ConvParams& p) {
  if (p.layout != Layout::NHWC || p.in_c != p.out_c || p.out_c < 2 * lanes) return false;
  const std::int64_t group = channels_per_group(p);
  // (Groups of channels never take the pairs, wherever they read.)
  return group == 1 ||
         (groups_apply(p, Reads::in_place) && lanes % group == 0 && band_in_groups<1>(group) != nullptr);
}

void depthwise_weights_gradient(const ConvParams& p, const float* dy, const float* x, float* dw, float* db,
                                bool accumulate) {
  const Geometry geo(p);
  const std::int64_t channels = p.out_c, group = channels_per_group(p);
  const std::int64_t dw_size = channels * p.kernel_h * p.kernel_w * group, part = dw_size + channels;
  std::int64_t band_rows = ceil_div(p.out_h, ceil_div(target_tasks, p.batch));
  band_rows = min_of<std::int64_t>(p.out_h, max_of(band_rows, min_band_rows));
  if (pairs_apply(p, Reads::in_place)) band_rows = round_up(band_rows, 2);
  const std::int64_t bands = ceil_div(p.out_h, band_rows);
  const Band band = band_of(p, Reads::in_place);
  const Memory partials_memory(sizeof(float) * p.batch * bands * part);
  float* partials = partials_memory.floats();
  parallel_for(p.batch * bands, [&](std::int64_t task) {
    const std::int64_t n = task / bands, oh_begin = (task % bands) * band_rows;
    band(geo, dy, x, n, oh_begin, min_of<std::int64_t>(p.out_h, oh_begin + band_rows),
         partials + task * part);
  });
  sum_partials(partials, p.batch * bands, dw_size, channels, dw, db, accumulate);
}

// What a task of depthwise_weights_gradient_from_nchw holds per channel: its plane of x, of dy, then its dW
// and db; and the vectors of channels a block needs (the sweeps take at least 2).
std::int64_t nchw_floats_per_channel(const ConvParams& p) {
  return in_plane_of(p) + out_plane_of(p) + taps_of(p) + 1;
}
constexpr std::int64_t nchw_min_vectors = 2;

// At any stride: at stride 1 too the blocks beat the planes in place (convolution_depthwise_nchw.cpp).
// Measured on AVX2, 2 threads, medians, planes -> blocks: 8x128x56x56 3x3 1.58-1.79 -> 1.26-1.31 ms,
// 8x64x112x112 3x3 3.36-3.56 -> 2.76-2.97 ms, 8x96x56x56 5x5 2.47-2.50 -> 2.11-2.17 ms; and layers with
// short rows, through whole NHWC copies before: 8x512x14x14 3x3 0.57 -> 0.34 ms, 1x256x28x28 5x5 0.32 ->
// 0.19 ms.
bool depthwise_weights_gradient_from_nchw_applies(const ConvParams& p) {
  ConvParams nhwc = p;
  nhwc.layout = Layout::NHWC;
  return p.layout == Layout::NCHW && p.groups == p.in_c && depthwise_weights_gradient_applies(nhwc) &&
         nchw_blocks_apply(p, nchw_floats_per_channel(p), nchw_min_vectors);
}

void depthwise_weights_gradient_from_nchw(const ConvParams& p, const float* dy, const float* x, float* dw,
                                          float* db, bool accumulate) {
  const std::int64_t channels = p.out_c, taps = taps_of(p), in_plane = in_plane_of(p),
                     out_plane = out_plane_of(p);
  const std::int64_t dw_size = channels * taps, part = dw_size + channels;
  const Memory partials_memory(sizeof(float) * p.batch * part);
  float* partials = partials_memory.floats();
  for_each_nchw_block(
      p, nchw_floats_per_channel(p), nchw_min_vectors, [&](const NchwBlock& block, float* scratch) {
        float* xs = scratch;
        float* dys = xs + block.count * in_plane;
        float* block_part = dys + block.count * out_plane;  // dW[c][tap] then db[c] of the block's channels
        copy_block_to_nhwc(block, x, in_plane, xs);
        copy_block_to_nhwc(block, dy, out_plane, dys);
        band_of(block.params, Reads::cached_copies)(Geometry(block.params), dys, xs, 0, 0, p.out_h,
                                                    block_part);
        float* image_part = partials + block.n * part;
        std::memcpy(image_part + block.first * taps, block_part, sizeof(float) * block.count * taps);
        std::memcpy(image_part + dw_size + block.first, block_part + block.count * taps,
                    sizeof(float) * block.count);
      });
  sum_partials(partials, p.batch, dw_size, channels, dw, db, accumulate);
}

}  // namespace gradstate::cpu::GRADSTATE_ISA_NAMESPACE
