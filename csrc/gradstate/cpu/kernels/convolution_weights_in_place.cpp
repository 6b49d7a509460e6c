// The weight gradient with x read in place, NHWC, for layers whose kernel rows are few values (a network's
// first layer), and for others whose output rows are long enough to pay for the accumulators' trips.
//
// With one group and no dilation across, kernel row kh of output pixel (oh, ow) reads KW * C consecutive
// values of x, and along an output row those runs start stride_x * C values apart. So a block of MR of a
// kernel row's values is, over the pixels of an output row, a k-major operand read from x in place with
// row stride stride_x * C: the microkernel accumulates dW[o][kh][j..j+MR) (its rows) for a block of output
// channels (its vectors, from dy) without the im2col panel the GEMM path packs. For first layers that
// panel costs as much as the multiply-adds; for 1x1 kernels it is a copy of x; for larger kernels its packing
// (each value of x copied once per tap that reads it) took a fifth of the time. Pixels whose block reaches
// outside the input row (the padding) are gathered one by one with zeros. A task takes a run of bands of
// output rows (image by image), keeps every tile's accumulators in memory between rows (so output rows
// must be long enough to pay for those trips), and leaves them and its db as partial sums; the partials are
// added in task order, so the result does not depend on the thread count, and their sum is turned into dW.
#include "gradstate/cpu/kernels/convolution_weights_paths.h"

#include <cstdint>
#include <cstring>

#include "gradstate/cpu/kernels/conv_geometry.h"
#include "gradstate/cpu/kernels/gemm.h"
#include "gradstate/cpu/kernels/partial_sums.h"
#include "gradstate/cpu/kernels/vec.h"
#include "gradstate/cpu/memory.h"
#include "gradstate/cpu/thread_pool.h"

namespace gradstate::cpu::GRADSTATE_ISA_NAMESPACE {
namespace {

constexpr int MR = tile_a[0], NV = tile_a[1], NR = NV * lanes;
constexpr std::int64_t tile_floats = MR * NR;  // one tile's accumulators
// First layers: any output row. (Also with accumulators past 256 KiB, the bound before the one below: 7x7
// stride 2 from 3 to 512 channels at 112 x 112, 336 KiB, took 10.9 -> 9.5 ms in place.)
constexpr std::int32_t max_channels = 4;
// Other layers need output rows of at least this many pixels. 1x1 layers with shorter rows (14 pixels
// measured; and 512 channels at 28, 1.18x slower) run faster through the GEMM path. Larger kernels at 28
// pixels were faster in place (dW on 2 threads, medians of call-by-call alternations: 3x3 stride 2 of 128
// channels 4.79 -> 4.34 ms, of 64 channels at 112 x 112 5.73 -> 4.01 ms; 5x5 of 64 channels at 56 x 56
// 14.4 -> 10.6 ms; 7x7 of 72 channels 31.2 -> 22.8 ms; on AVX2 20-28% faster) and slower at 14 (3x3 stride 2
// of 128 channels, 1.2x).
constexpr std::int32_t min_1x1_row = 32;
constexpr std::int32_t min_row = 28;
// The tiles' accumulators (dW padded to whole tiles) stay in a core's 1 MiB L2; larger layers run the GEMM
// path. The largest measured, 882 KiB (7x7 from 72 to 64 channels), was still 27% faster in place. 1x1
// layers, whose GEMM packs no copies of x, stop at half that: at 56 x 56, 256 channels to 256 (258 KiB) took
// 9.6 -> 8.5 ms in place, 512 to 256 (516 KiB) 17.0 -> 17.9 ms.
constexpr std::int64_t max_accumulator_bytes = 1 << 20;
constexpr std::int64_t max_1x1_accumulator_bytes = 512 << 10;
// Output pixels per band: enough to amortise the accumulators' trips to memory and keep the partials few
// (each as large as the accumulators), few enough for work to share among the threads. A task takes a run
// of (image, band) pairs, as many tasks as the partials' memory bound allows (their sum takes one more).
constexpr std::int64_t band_pixels = 4096;
constexpr std::int64_t max_partial_bytes = 8 << 20;
// Layers of larger kernels take this path only with at least this many (image, band) pairs, so that the
// threads have work to share: else the GEMM path splits the pixels. (One image of 3x3 stride 2 and 128
// channels, one band, took 1.44x the GEMM's time on 2 threads; cut into bands of 112 pixels, whose partials
// of 576 KiB each cost about as much as their sums, 1.65x. Four images took 2.39 -> 2.20 ms in place, and
// the NCHW copies of r3x3_128_s2, made four images at a time, 5.58 -> 5.05 ms.)
constexpr std::int64_t min_units = 4;

// Floor of a / b for b > 0.
std::int64_t floor_div(std::int64_t a, std::int64_t b) { return a >= 0 ? a / b : -ceil_div(-a, b); }

struct InPlaceRows {
  explicit InPlaceRows(const ConvParams& p)
      : geo(p),
        row_values(static_cast<std::int64_t>(p.kernel_w) * p.in_c),
        row_blocks(ceil_div(row_values, MR)),
        o_blocks(ceil_div(p.out_c, NR)),
        ldb(o_blocks * NR),
        tiles(p.kernel_h * row_blocks * o_blocks),
        acc_floats(tiles * tile_floats),
        part_floats(acc_floats + round_up(static_cast<std::int64_t>(p.out_c), line_floats)),
        step(static_cast<std::int64_t>(p.stride_x) * p.in_c),
        row_start(-static_cast<std::int64_t>(p.pad_left) * p.in_c),
        row_end(static_cast<std::int64_t>(p.in_w) * p.in_c),
        band_rows(max_of<std::int64_t>(1, band_pixels / p.out_w)),
        bands(ceil_div(p.out_h, band_rows)) {}

  // Output columns [lo, hi) whose block of values [j, j + MR) lies inside the input row [0, row_end):
  // pixel ow's block starts at ow * step + row_start + j.
  void interior(std::int64_t j, std::int64_t& lo, std::int64_t& hi) const {
    const std::int64_t out_w = geo.p.out_w, shift = -row_start - j;
    lo = min_of(out_w, max_of<std::int64_t>(0, floor_div(shift + step - 1, step)));
    hi = max_of(lo, min_of(out_w, floor_div(row_end - MR + shift, step) + 1));
  }

  // The partial sums of (image, band) pairs [u0, u1), part_floats values: the tiles' accumulators
  // (acc_floats values, see put_tiles), then db (out_c values, then zeros to a whole cache line, so that
  // each part's tiles start on a line of their own). The partials keep the tiles' layout, and only their sum
  // is turned into dW: turning each task's tiles into dW took 7% of 3x3 stride 2 of 128 channels.
  void run(const float* dy, const float* x, std::int64_t u0, std::int64_t u1, float* partial) const {
    const ConvParams& p = geo.p;
    // One output row of dy padded to whole vector blocks.
    float* dy_row =
        static_cast<float*>(thread_scratch(sizeof(float) * static_cast<std::int64_t>(p.out_w) * ldb));
    std::memset(dy_row, 0, sizeof(float) * p.out_w * ldb);
    std::memset(partial, 0, sizeof(float) * part_floats);
    float* db = partial + acc_floats;
    for (std::int64_t u = u0; u < u1; ++u) {
      const std::int64_t n = u / bands, oh0 = u % bands * band_rows;
      for (std::int64_t oh = oh0; oh < min_of<std::int64_t>(p.out_h, oh0 + band_rows); ++oh)
        add_row(dy, x, n, oh, partial, dy_row, db);
    }
  }

  // dw (OHWI) = the tiles' accumulators at acc, or += them with accumulate. Tile (kh, rb, ob) row m, lane o
  // holds dW[ob * NR + o][kh][rb * MR + m]; rows past the kernel row and lanes past the last output channel
  // are dropped.
  void put_tiles(const float* acc, float* dw, bool accumulate) const {
    const ConvParams& p = geo.p;
    for (std::int64_t kh = 0; kh < p.kernel_h; ++kh)
      for (std::int64_t rb = 0; rb < row_blocks; ++rb)
        for (std::int64_t ob = 0; ob < o_blocks; ++ob) {
          const float* saved = acc + ((kh * row_blocks + rb) * o_blocks + ob) * tile_floats;
          for (std::int64_t m = 0; m < min_of<std::int64_t>(MR, row_values - rb * MR); ++m)
            for (std::int64_t o = 0; o < min_of<std::int64_t>(NR, p.out_c - ob * NR); ++o) {
              float& at = dw[((ob * NR + o) * p.kernel_h + kh) * row_values + rb * MR + m];
              at = (accumulate ? at : 0.0f) + saved[m * NR + o];
            }
        }
  }

  // Adds output row oh of image n to the tiles' accumulators and db, through dy_row.
  void add_row(const float* dy, const float* x, std::int64_t n, std::int64_t oh, float* acc_memory,
               float* dy_row, float* db) const {
    const ConvParams& p = geo.p;
    for (std::int64_t ow = 0; ow < p.out_w; ++ow) {
      const float* src = dy + geo.y_offset(n, oh, ow, 0);
      float* dst = dy_row + ow * ldb;
      std::int64_t o = 0;
      for (; o + lanes <= p.out_c; o += lanes) {
        const Vec d = load(src + o);
        store(dst + o, d);
        store(db + o, load(db + o) + d);
      }
      for (; o < p.out_c; ++o) dst[o] = src[o], db[o] += src[o];
    }
    // The sweeps ask for the next output row's dy (the next row in memory, if any), a share each: else the
    // copy above waits on memory at the start of every row (medians of alternating runs, stem7x7_s2's dW on
    // 1 thread: 10.0-10.3 -> 9.0-9.2 ms; r1x1_256to64's on 2 threads: 2.13-2.16 -> 1.94-1.97 ms).
    LinesAhead next_dy;
    if (n + 1 < p.batch || oh + 1 < p.out_h)
      next_dy = LinesAhead(dy + geo.y_offset(n, oh, 0, 0) + geo.y.h, p.out_w * p.out_c, tiles);
    for (std::int64_t kh = 0; kh < p.kernel_h; ++kh) {
      const std::int64_t ih = geo.input_row(oh, kh);
      if (!geo.row_inside(ih)) {
        add_padding_row(kh, dy_row, db, acc_memory);
        continue;
      }
      // Value v of the input row is x_row[v]; pixel ow's kernel row starts at ow * step + row_start.
      const float* x_row = x + geo.x_offset(n, ih, 0, 0);
      // Where the next output row reads this row's values, when that row is inside the image.
      const std::int64_t next_row_offset = p.stride_y * geo.x.h;
      const bool next_row_inside = ih + p.stride_y < p.in_h;
      for (std::int64_t rb = 0; rb < row_blocks; ++rb) {
        const std::int64_t j = rb * MR;
        std::int64_t lo, hi;
        interior(j, lo, hi);
        for (std::int64_t ob = 0; ob < o_blocks; ++ob) {
          float* saved = acc_memory + ((kh * row_blocks + rb) * o_blocks + ob) * tile_floats;
          next_dy.next();
          Vec acc[MR][NV];
          for (int m = 0; m < MR; ++m)
            for (int v = 0; v < NV; ++v) acc[m][v] = load(saved + (m * NV + v) * lanes);
          const float* b = dy_row + ob * NR;
          auto border = [&](std::int64_t ow) {
            float a[MR];
            for (int m = 0; m < MR; ++m) {
              const std::int64_t at = ow * step + row_start + j + m;
              a[m] = at >= 0 && at < row_end ? x_row[at] : 0.0f;
            }
            accumulate<MR, NV, false>(acc, 1, a, MR, b + ow * ldb);
          };
          for (std::int64_t ow = 0; ow < lo; ++ow) border(ow);
          // With many channels each pixel's block is on cache lines of its own, too far from the next pixel's
          // for the hardware prefetchers, and each pass over the row is the first to read some of its lines:
          // each pixel asks (once, with the first output block) for the same block of the input row the next
          // output row reads, a row ahead.
          const bool ahead = ob == 0 && next_row_inside;
          for (std::int64_t ow = lo; ow < hi; ++ow) {
            const float* a = x_row + (ow * step + row_start + j);
            if (ahead) __builtin_prefetch(a + next_row_offset);
            accumulate<MR, NV, false>(acc, 1, a, step, b + ow * ldb);
          }
          for (std::int64_t ow = hi; ow < p.out_w; ++ow) border(ow);
          for (int m = 0; m < MR; ++m)
            for (int v = 0; v < NV; ++v) store(saved + (m * NV + v) * lanes, acc[m][v]);
        }
      }
    }
  }

  // Kernel row kh of the output row in dy_row reads the padding: the products with its zeros add nothing,
  // unless a dy is NaN or Inf, where 0 x Inf makes NaN of the row's taps, as in the reference. Those adds
  // are left out for finite rows, whose results stay bitwise as they were: db, the task's sums of dy so far,
  // this row's included, tells most of them apart at once.
  void add_padding_row(std::int64_t kh, const float* dy_row, const float* db, float* acc_memory) const {
    if (all_finite(db, 1, geo.p.out_c, 0) || all_finite(dy_row, geo.p.out_w, geo.p.out_c, ldb)) return;
    for (std::int64_t ob = 0; ob < o_blocks; ++ob) {
      Vec zeroed[NV] = {};  // sum over the row's pixels of dy x 0
      for (std::int64_t ow = 0; ow < geo.p.out_w; ++ow)
        for (int v = 0; v < NV; ++v) zeroed[v] += load(dy_row + ow * ldb + ob * NR + v * lanes) * 0.0f;
      for (std::int64_t rb = 0; rb < row_blocks; ++rb) {
        float* saved = acc_memory + ((kh * row_blocks + rb) * o_blocks + ob) * tile_floats;
        for (int m = 0; m < MR; ++m)
          for (int v = 0; v < NV; ++v)
            store(saved + (m * NV + v) * lanes, load(saved + (m * NV + v) * lanes) + zeroed[v]);
      }
    }
  }

  Geometry geo;
  std::int64_t row_values, row_blocks, o_blocks, ldb, tiles, acc_floats, part_floats, step, row_start,
      row_end, band_rows, bands;
};

}  // namespace

bool in_place_weights_gradient_applies(const ConvParams& p) {
  if (p.layout != Layout::NHWC || p.groups != 1 || p.dilation_x != 1) return false;
  const bool pointwise = p.kernel_h == 1 && p.kernel_w == 1;
  const InPlaceRows layer(p);
  if (p.in_c > max_channels &&
      (pointwise ? p.out_w < min_1x1_row : p.out_w < min_row || p.batch * layer.bands < min_units))
    return false;
  return std::int64_t{sizeof(float)} * layer.acc_floats <=
         (pointwise ? max_1x1_accumulator_bytes : max_accumulator_bytes);
}

void in_place_weights_gradient(const ConvParams& p, const float* dy, const float* x, float* dw, float* db,
                               bool accumulate) {
  const InPlaceRows layer(p);
  const std::int64_t part = layer.part_floats, units = p.batch * layer.bands;
  const std::int64_t tasks =
      max_of<std::int64_t>(1, min_of(units, max_partial_bytes / (std::int64_t{sizeof(float)} * part)));
  // The tasks' partials, then their sum.
  const Memory partials_memory(sizeof(float) * (tasks + 1) * part);
  float* partials = partials_memory.floats();
  parallel_for(tasks, [&](std::int64_t task) {
    layer.run(dy, x, task * units / tasks, (task + 1) * units / tasks, partials + task * part);
  });
  float* sum = partials + tasks * part;
  sum_partials(partials, tasks, layer.acc_floats, part - layer.acc_floats, sum, sum + layer.acc_floats,
               false);
  layer.put_tiles(sum, dw, accumulate);
  for (std::int64_t o = 0; o < p.out_c; ++o) db[o] = (accumulate ? db[o] : 0.0f) + sum[layer.acc_floats + o];
}

}  // namespace gradstate::cpu::GRADSTATE_ISA_NAMESPACE
