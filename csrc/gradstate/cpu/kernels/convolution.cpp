// Convolution forward and data-gradient kernels of one ISA level (see kernels.h). The weight gradient is in
// convolution_weights.cpp.
//
// The forward pass of layers with at least min_gemm_channels output channels per group is a GEMM per group:
// y[p, o] = b[o] + sum over the im2col columns j of X[p, j] * W[o, j]. The weights are packed once into
// vector blocks of output channels; each task takes a block of output pixels, whose im2col rows the
// microkernel reads in place from x where no tap reads the padding and from a packed panel elsewhere, and
// accumulates MR pixels by NR output channels. The data gradient of stride-1 layers is such a
// forward pass too (see convolution_data_gradient), and so is each stride phase of larger strides
// (data_gradient_phases) but for the 3x3 stride-2 layers that Winograd's scheme takes
// (convolution_winograd.cpp). Depthwise layers run vectors across channels (along rows for large
// stride-1 NCHW inputs, convolution_depthwise_nchw.cpp), layers with small groups vectors across groups
// (convolution_grouped.cpp); the rest direct loops over the formulas.
#include <algorithm>
#include <array>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <type_traits>
#include <utility>
#include <vector>

#include "gradstate/cpu/kernels/conv_geometry.h"
#include "gradstate/cpu/kernels/convolution_depthwise_nchw.h"
#include "gradstate/cpu/kernels/convolution_grouped.h"
#include "gradstate/cpu/kernels/convolution_pointwise_nchw.h"
#include "gradstate/cpu/kernels/convolution_winograd.h"
#include "gradstate/cpu/kernels/depthwise_nchw_blocks.h"
#include "gradstate/cpu/kernels/gemm.h"
#include "gradstate/cpu/kernels/kernels.h"
#include "gradstate/cpu/memory.h"
#include "gradstate/cpu/thread_pool.h"

namespace gradstate::cpu::GRADSTATE_ISA_NAMESPACE {
namespace {

constexpr std::int64_t min_gemm_channels = 8;
constexpr std::int64_t max_forward_pixels = 96;  // output pixels of one task: its im2col rows stay in L2

// Layers whose kernel rows span fewer im2col columns than this are packed: each run in place costs the
// microkernel a restart.
constexpr std::int64_t min_run_columns = 16;

// The distance in x between the taps of consecutive pixels of an output row.
std::int64_t in_place_lda(const ConvParams& p) { return static_cast<std::int64_t>(p.stride_x) * p.in_c; }

// Where the MR output pixels from pixel k read x in place, as the im2col rows of a microkernel tile: x at
// tap (0, 0) of the first pixel, each next pixel's taps stride_x * in_c further on. That holds when no
// tap of theirs reads the padding, their kernel rows are contiguous in x (one group, no dilation across)
// and the pixels' taps do lie stride_x * in_c apart (pixels of one output row; also consecutive rows of a
// 1x1 kernel that keeps the image's size). Null otherwise: the tile is packed.
template <int MR>
const float* in_place_corner(const Geometry& geo, const float* x, std::int64_t k) {
  const ConvParams& p = geo.p;
  const std::int64_t lda = in_place_lda(p);
  if (p.groups != 1 || p.dilation_x != 1 || static_cast<std::int64_t>(p.kernel_w) * p.in_c < min_run_columns)
    return nullptr;
  std::int64_t img, oh, ow, first = 0;
  pixel_of(p, k, img, oh, ow);
  for (int m = 0; m < MR; ++m, next_pixel(p, img, oh, ow)) {
    const std::int64_t ih = geo.input_row(oh, 0), iw = geo.input_col(ow, 0);
    if (ih < 0 || geo.input_row(oh, p.kernel_h - 1) >= p.in_h || iw < 0 || iw + p.kernel_w > p.in_w)
      return nullptr;
    const std::int64_t at = geo.x_offset(img, ih, iw, 0);
    if (m == 0) first = at;
    if (at != first + m * lda) return nullptr;
  }
  return x + first;
}

// Whether an NHWC output dst of `pixels` pixels of `channels` values is streamed past the caches: when it is
// large and its pixels are whole cache lines, for a writer that fills each line before it leaves it (a
// pixel's vectors in order, say), so that no line reaches memory in parts.
bool streams_lines(std::int64_t pixels, std::int64_t channels, const float* dst) {
  return pixels * channels >= stream_floats && channels % line_floats == 0 && aligned(dst);
}

// The same for the GEMM paths, which stream with 64-byte vectors only, each store a whole line: with 32-byte
// vectors and tiles of 16 columns (whole lines), streaming made no difference to r1x1_256to64's dx or the
// 7x7 stride-2 first layer's forward pass.
bool streams_pixels(std::int64_t pixels, std::int64_t channels, const float* dst) {
  return sizeof(Vec) == 64 && streams_lines(pixels, channels, dst);
}

// Where output pixel (n, oh, ow) of a forward GEMM lies: y + first + n * image + oh * row + ow * col. The
// data gradient's stride phases (data_gradient_phases) write every stride-th pixel of dx this way.
struct OutputPixels {
  std::int64_t first, image, row, col;
};

// The forward GEMM for NHWC activations (see the top of this file), writing y's dense rows, or the pixels
// `scattered` places: those a task computes into its scratch and copies out at its end.
template <int MR, int NV>
void forward_gemm(const ConvParams& p, const float* x, const float* w, const float* b, float* y,
                  const OutputPixels* scattered) {
  constexpr std::int64_t NR = NV * lanes;
  const Geometry geo(p);
  const std::int64_t og = geo.out_per_group,
                     n = static_cast<std::int64_t>(p.kernel_h) * p.kernel_w * geo.in_per_group;
  const std::int64_t o_blocks = ceil_div(og, NR), ld = round_up(n, lanes);
  const std::int64_t row_cols = p.kernel_w * geo.in_per_group;
  // packed[g][o block][j][NR] = w[g * og + o block * NR + r][j], zero past the group's channels; then
  // bias[g][o block][NR] likewise, zero without b: each tile starts from it.
  const Memory packed_memory(sizeof(float) * p.groups * o_blocks * (n + 1) * NR);
  float* packed = packed_memory.floats();
  float* bias = packed + p.groups * o_blocks * n * NR;
  parallel_for(p.groups * o_blocks, [&](std::int64_t gb) {
    const std::int64_t first = (gb / o_blocks) * og + (gb % o_blocks) * NR;
    const std::int64_t count = min_of(NR, (gb / o_blocks + 1) * og - first);
    float* dst = packed + gb * n * NR;
    transpose(w + first * n, count, n, n, dst, NR);
    if (count < NR)
      for (std::int64_t j = 0; j < n; ++j) std::fill(dst + j * NR + count, dst + (j + 1) * NR, 0.0f);
    for (std::int64_t r = 0; r < NR; ++r) bias[gb * NR + r] = b && r < count ? b[first + r] : 0.0f;
  });
  const std::int64_t pixels = static_cast<std::int64_t>(p.batch) * p.out_h * p.out_w;
  // Smaller blocks when there are few pixels, so that every thread has several tasks. (Each output value is
  // computed by one task whatever the blocks are, so the bits do not depend on the thread count.)
  const std::int64_t per_task = ceil_div(pixels, 4 * num_threads() * p.groups);
  const std::int64_t forward_pixels =
      min_of(max_forward_pixels, max_of<std::int64_t>(MR, round_up(per_task, MR)));
  const std::int64_t tasks_per_group = ceil_div(pixels, forward_pixels);
  constexpr std::int64_t panel_rows = round_up(max_forward_pixels, MR);
  // y's values are written once, and streamed past the caches when y is large: by the tiles, or by the
  // copies out of the scratch (whole vectors, aligned).
  const bool streaming =
      scattered ? og % lanes == 0 && streams_pixels(p.batch * scattered->image / p.out_c, p.out_c, y)
                : streams_pixels(pixels, p.out_c, y);
  parallel_for(p.groups * tasks_per_group, [&](std::int64_t task) {
    const std::int64_t g = task / tasks_per_group, k0 = (task % tasks_per_group) * forward_pixels;
    const std::int64_t kc = min_of(forward_pixels, pixels - k0);
    float* panel =
        static_cast<float*>(thread_scratch(sizeof(float) * panel_rows * (ld + (scattered ? og : 0))));
    // The task's output rows: in y, or in the scratch after the panel.
    float* out = scattered ? panel + panel_rows * ld : y + k0 * p.out_c + g * og;
    const std::int64_t ldc = scattered ? og : p.out_c;
    // Tiles that can read x in place do; the others are packed, one im2col row per pixel.
    const float* corner[panel_rows / MR];
    for (std::int64_t r = 0; r < kc; r += MR) {
      const std::int64_t rows = min_of<std::int64_t>(MR, kc - r);
      corner[r / MR] = rows == MR ? in_place_corner<MR>(geo, x, k0 + r) : nullptr;
      if (corner[r / MR] == nullptr) pack_columns<false>(geo, x, ld, g, 0, n, k0 + r, rows, panel + r * ld);
    }
    // The last tile may run past kc; its extra rows are computed (never stored) from zeros.
    std::memset(panel + kc * ld, 0, sizeof(float) * (round_up(kc, MR) - kc) * ld);
    // Each tile takes all n columns at once, so that each output value is stored once, and the o blocks
    // in turn over the task's tiles, so that a block's packed weights stay in the outer caches meanwhile.
    // (Blocks of 256 columns, with the o blocks inside the tiles, were 2-4% slower on 3x3 stride-2 layers of
    // 128-256 channels and 15% slower with 512 channels.)
    for (std::int64_t ob = 0; ob < o_blocks; ++ob) {
      const int cols = static_cast<int>(min_of(NR, og - ob * NR));
      for (std::int64_t r = 0; r < kc; r += MR) {
        const int rows = static_cast<int>(min_of<std::int64_t>(MR, kc - r));
        const float* at = corner[r / MR];
        const Runs runs = at ? Runs{at, p.dilation_y * geo.x.h, p.kernel_h, row_cols, in_place_lda(p)}
                             : Runs{panel + r * ld, 0, 1, n, ld};
        // The first o block asks for the lines of the next tile in place (the same runs, displaced).
        const float* next = r + MR < kc ? corner[r / MR + 1] : nullptr;
        const std::int64_t ahead = ob == 0 && at && next ? next - at : 0;
        microkernel_runs<MR, NV>(runs, packed + (g * o_blocks + ob) * n * NR, streaming && !scattered,
                                 bias + (g * o_blocks + ob) * NR, out + r * ldc + ob * NR, ldc, rows, cols,
                                 ahead);
      }
    }
    if (scattered) {
      std::int64_t img, oh, ow;
      pixel_of(p, k0, img, oh, ow);
      for (std::int64_t k = 0; k < kc; ++k, next_pixel(p, img, oh, ow)) {
        float* dst = y + scattered->first + img * scattered->image + oh * scattered->row +
                     ow * scattered->col + g * og;
        if (streaming) {
          for (std::int64_t o = 0; o < og; o += lanes) stream(dst + o, load(out + k * og + o));
        } else {
          std::memcpy(dst, out + k * og, sizeof(float) * og);
        }
      }
    }
    if (streaming) stream_fence();
  });
}

// dx for strides above 1, NHWC: per image and group, dX_cols = dy * W over blocks of MR output pixels (a GEMM
// whose A operand is dy itself, row by row), then col2im: each column of a pixel adds into the input pixel
// its tap reads. A task owns one image's channels of one group, so no two tasks write the same dx values and
// each adds in a fixed order.
template <int MR, int NV>
void data_gradient_col2im(const ConvParams& p, const float* dy, const float* w, float* dx) {
  constexpr std::int64_t NR = NV * lanes;
  const Geometry geo(p);
  const std::int64_t og = geo.out_per_group, ig = geo.in_per_group;
  const std::int64_t n = static_cast<std::int64_t>(p.kernel_h) * p.kernel_w * ig, j_blocks = ceil_div(n, NR);
  // packed[g][column block][o][NR] = w[g * og + o][column block * NR + r], zero past n.
  const Memory packed_memory(sizeof(float) * p.groups * j_blocks * og * NR);
  float* packed = packed_memory.floats();
  parallel_for(p.groups * j_blocks, [&](std::int64_t gb) {
    const std::int64_t g = gb / j_blocks, j0 = (gb % j_blocks) * NR;
    float* dst = packed + gb * og * NR;
    for (std::int64_t o = 0; o < og; ++o)
      for (std::int64_t r = 0; r < NR; ++r)
        dst[o * NR + r] = j0 + r < n ? w[(g * og + o) * n + j0 + r] : 0.0f;
  });
  // Each column block's columns as runs of one tap's channels, found once: worked out per pixel, with three
  // divisions per run, they took most of the time of layers of few input channels (the 7x7 stride-2 first
  // layer's 49 taps of 3 channels: 47-50 -> 36-39 ms on 2 threads).
  struct Run {
    std::int64_t first, end, kh, kw, channel;  // columns [first, end) of the block; tap (kh, kw) from channel
  };
  std::vector<Run> runs;
  std::vector<std::int64_t> block_runs(j_blocks + 1, 0);
  for (std::int64_t jb = 0; jb < j_blocks; ++jb) {
    const std::int64_t j0 = jb * NR, j1 = min_of(n, j0 + NR);
    for (std::int64_t j = j0; j < j1;) {
      const std::int64_t tap = j / ig, end = min_of(j1, (tap + 1) * ig);
      runs.push_back({j - j0, end - j0, tap / p.kernel_w, tap % p.kernel_w, j - tap * ig});
      j = end;
    }
    block_runs[jb + 1] = static_cast<std::int64_t>(runs.size());
  }
  std::memset(dx, 0, sizeof(float) * p.batch * p.in_c * p.in_h * p.in_w);
  const std::int64_t image_pixels = static_cast<std::int64_t>(p.out_h) * p.out_w;
  parallel_for(p.batch * p.groups, [&](std::int64_t task) {
    const std::int64_t img = task / p.groups, g = task % p.groups;
    float* scratch = static_cast<float*>(thread_scratch(sizeof(float) * (MR * NR + MR * og)));
    float* tile = scratch;
    float* rows_copy = scratch + MR * NR;  // the last, partial block of pixels, zero-padded
    for (std::int64_t p0 = 0; p0 < image_pixels; p0 += MR) {
      const std::int64_t rows = min_of<std::int64_t>(MR, image_pixels - p0);
      const float* a = dy + (img * image_pixels + p0) * p.out_c + g * og;
      std::int64_t lda = p.out_c;
      if (rows < MR) {
        std::memset(rows_copy, 0, sizeof(float) * MR * og);
        for (std::int64_t m = 0; m < rows; ++m)
          std::memcpy(rows_copy + m * og, a + m * p.out_c, sizeof(float) * og);
        a = rows_copy, lda = og;
      }
      for (std::int64_t jb = 0; jb < j_blocks; ++jb) {
        microkernel<MR, NV, true, false>(og, a, lda, packed + (g * j_blocks + jb) * og * NR, tile, NR, MR,
                                         NR);
        // col2im: the block's columns, tap by tap, each tap's channels one contiguous run of dx.
        std::int64_t oh = p0 / p.out_w, ow = p0 % p.out_w;
        for (std::int64_t m = 0; m < rows; ++m) {
          for (std::int64_t r = block_runs[jb]; r < block_runs[jb + 1]; ++r) {
            const Run& run = runs[r];
            const std::int64_t ih = geo.input_row(oh, run.kh), iw = geo.input_col(ow, run.kw);
            if (geo.row_inside(ih) && geo.col_inside(iw)) {
              float* out = dx + geo.x_offset(img, ih, iw, g) + run.channel;
              const float* in = tile + m * NR + run.first;
              for (std::int64_t e = 0; e < run.end - run.first; ++e) out[e] += in[e];
            }
          }
          if (++ow == p.out_w) ow = 0, ++oh;
        }
      }
    }
  });
}

// The tile that pads the group's output channels least (pixels are always plenty); y's pixels where
// `scattered` places them, or dense when it is null.
void forward_gemm_tiled(const ConvParams& p, const float* x, const float* w, const float* b, float* y,
                        const OutputPixels* scattered) {
  if (tile_a_pads_least(p.out_c / p.groups)) {
    forward_gemm<tile_a[0], tile_a[1]>(p, x, w, b, y, scattered);
  } else {
    forward_gemm<tile_b[0], tile_b[1]>(p, x, w, b, y, scattered);
  }
}

void forward_gemm_nhwc(const ConvParams& p, const float* x, const float* w, const float* b, float* y) {
  forward_gemm_tiled(p, x, w, b, y, nullptr);
}

// Along one axis of dx at stride s (dilation 1), the phase r: the input lines i with (i + pad) % s == r.
// Only the taps r, r + s, r + 2s, ... read them; line i = j * s + r - pad gets tap r + u * s from output
// line j - u. So the phase is a stride-1 pass over dy whose output line j' is input line (first + j') * s +
// r - pad, with the taps in reverse order (tap u' is r + (taps - 1 - u') * s) and padding taps - 1 - first
// (negative when first is past the last tap).
struct Phase {
  Phase(std::int64_t r, std::int64_t stride, std::int64_t kernel, std::int64_t pad, std::int64_t inputs)
      : r(r), stride(stride), pad(pad), taps(r < kernel ? ceil_div(kernel - r, stride) : 0) {
    // The lines are 0 <= j * s + r - pad <= inputs - 1.
    const IndexRange lines =
        indices_between(pad - r, inputs - 1 + pad - r, stride, std::numeric_limits<std::int64_t>::max());
    first = lines.first, count = lines.end - lines.first;
  }
  std::int64_t input(std::int64_t j) const { return (first + j) * stride + r - pad; }
  std::int64_t tap(std::int64_t u) const { return r + (taps - 1 - u) * stride; }
  std::int64_t pass_padding() const { return taps - 1 - first; }
  std::int64_t r, stride, pad, taps, first = 0, count = 0;
};

// The forward pass over dy that gives dx, or one stride phase of it: each group's input and output channels
// exchanged, stride 1, w's dilation, the given output size, taps and padding.
ConvParams dy_pass(const ConvParams& p, std::int64_t out_h, std::int64_t out_w, std::int64_t taps_y,
                   std::int64_t taps_x, std::int64_t pad_top, std::int64_t pad_left) {
  ConvParams t = p;
  t.in_h = p.out_h, t.in_w = p.out_w, t.in_c = p.out_c;
  t.out_h = static_cast<int32>(out_h), t.out_w = static_cast<int32>(out_w), t.out_c = p.in_c;
  t.kernel_h = static_cast<int32>(taps_y), t.kernel_w = static_cast<int32>(taps_x);
  t.stride_y = t.stride_x = 1;
  t.pad_top = static_cast<int32>(pad_top), t.pad_left = static_cast<int32>(pad_left);
  return t;
}

// Whether the layer's weights are all finite.
bool weights_finite(const ConvParams& p, const float* w) {
  return all_finite(w, 1, p.out_c * taps_of(p) * (p.in_c / p.groups), 0);
}

// The OHWI weights of such a pass, whose tap (u, v) reads with w's tap (tap_y(u), tap_x(v)) (flipped: the
// pass walks dy the other way round). Returns whether they are all finite: a NaN or Inf weight must not go
// through a pass over dy padded with zeros (see convolution_data_gradient). Each task checks the block it
// wrote while its cache holds it.
template <typename TapY, typename TapX>
bool dy_pass_weights(const ConvParams& p, const float* w, std::int64_t taps_y, std::int64_t taps_x,
                     TapY&& tap_y, TapX&& tap_x, float* pass_w) {
  const Geometry geo(p);
  const std::int64_t og = geo.out_per_group, ig = geo.in_per_group, taps = taps_y * taps_x;
  std::atomic<bool> finite{true};
  parallel_for(p.groups * taps, [&](std::int64_t task) {
    const std::int64_t g = task / taps, u = task % taps / taps_x, v = task % taps_x;
    float* block = pass_w + (g * ig * taps + u * taps_x + v) * og;
    transpose(w + geo.w_offset(g * og, tap_y(u), tap_x(v)), og, ig,
              static_cast<std::int64_t>(p.kernel_h) * p.kernel_w * ig, block, taps * og);
    if (!all_finite(block, ig, og, taps * og)) finite.store(false, std::memory_order_relaxed);
  });
  return finite.load();
}

// Whether dx runs as stride phases: dense problems need no dilation, and enough input channels per group
// to fill the forward GEMM's vectors of output channels.
constexpr std::int64_t min_phase_channels = 32;
bool data_gradient_phases_apply(const ConvParams& p) {
  return p.dilation_y == 1 && p.dilation_x == 1 && p.in_c / p.groups >= min_phase_channels;
}

// dx for strides above 1, NHWC, as stride_y * stride_x dense stride-1 problems (see Phase), each a forward
// GEMM over dy with its taps' weights (flipped, input and output channels exchanged) that writes its every
// stride-th pixel of dx. Nothing is zero-inserted or added twice: each dx value is written once. Phases
// that no tap reads (kernels smaller than the stride) are zeros. Returns false, dx unfinished, for weights
// with a NaN or Inf.
bool data_gradient_phases(const ConvParams& p, const float* dy, const float* w, float* dx) {
  const Geometry geo(p);
  for (std::int64_t ry = 0; ry < p.stride_y; ++ry) {
    for (std::int64_t rx = 0; rx < p.stride_x; ++rx) {
      const Phase rows(ry, p.stride_y, p.kernel_h, p.pad_top, p.in_h);
      const Phase cols(rx, p.stride_x, p.kernel_w, p.pad_left, p.in_w);
      if (rows.count == 0 || cols.count == 0) continue;
      const OutputPixels pixels{geo.x_offset(0, rows.input(0), cols.input(0), 0), geo.x.n,
                                p.stride_y * geo.x.h, p.stride_x * geo.x.w};
      if (rows.taps == 0 || cols.taps == 0) {
        parallel_for(p.batch * rows.count, [&](std::int64_t line) {
          float* row =
              dx + pixels.first + (line / rows.count) * pixels.image + (line % rows.count) * pixels.row;
          for (std::int64_t j = 0; j < cols.count; ++j)
            std::memset(row + j * pixels.col, 0, sizeof(float) * p.in_c);
        });
        continue;
      }
      const Memory phase_memory(sizeof(float) * p.in_c * rows.taps * cols.taps * geo.out_per_group);
      const ConvParams t =
          dy_pass(p, rows.count, cols.count, rows.taps, cols.taps, rows.pass_padding(), cols.pass_padding());
      if (!dy_pass_weights(
              p, w, rows.taps, cols.taps, [&](std::int64_t u) { return rows.tap(u); },
              [&](std::int64_t v) { return cols.tap(v); }, phase_memory.floats()))
        return false;
      forward_gemm_tiled(t, dy, phase_memory.floats(), nullptr, dx, &pixels);
    }
  }
  return true;
}

// Runs nhwc(params, src copy, dst copy) on an NHWC copy of the NCHW tensor src (src_c channels of src_plane
// pixels per image), then copies its NHWC result into the NCHW tensor dst (dst_c channels of dst_plane).
template <typename Op>
void on_nhwc_copies(const ConvParams& p, const float* src, std::int64_t src_c, std::int64_t src_plane,
                    float* dst, std::int64_t dst_c, std::int64_t dst_plane, Op&& nhwc) {
  const std::int64_t src_image = src_c * src_plane, dst_image = dst_c * dst_plane;
  const Memory copies(sizeof(float) * p.batch * (src_image + dst_image));
  float* src_copy = copies.floats();
  float* dst_copy = src_copy + p.batch * src_image;
  transpose_images(src, p.batch, src_c, src_plane, src_copy);
  ConvParams q = p;
  q.layout = Layout::NHWC;
  nhwc(q, src_copy, dst_copy);
  transpose_images(dst_copy, p.batch, dst_plane, dst_c, dst);
}

// forward(p, x, w, b, y) of an NHWC kernel, on NHWC copies of x and y when the layout is NCHW; returns what
// the kernel returns.
template <typename Result>
Result forward_in_nhwc(Result (*forward)(const ConvParams&, const float*, const float*, const float*, float*),
                       const ConvParams& p, const float* x, const float* w, const float* b, float* y) {
  if (p.layout == Layout::NHWC) return forward(p, x, w, b, y);
  if constexpr (std::is_void_v<Result>) {
    on_nhwc_copies(p, x, p.in_c, in_plane_of(p), y, p.out_c, out_plane_of(p),
                   [&](const ConvParams& q, const float* xs, float* ys) { forward(q, xs, w, b, ys); });
  } else {
    Result result{};
    on_nhwc_copies(
        p, x, p.in_c, in_plane_of(p), y, p.out_c, out_plane_of(p),
        [&](const ConvParams& q, const float* xs, float* ys) { result = forward(q, xs, w, b, ys); });
    return result;
  }
}

// The data gradient in stride phases, or else (or for weights with a NaN or Inf) col2im with the tile that
// pads the im2col columns least; on NHWC copies for NCHW. col2im adds each product only into the input pixel
// it belongs to (see convolution_data_gradient).
void data_gradient_gemm(const ConvParams& p, const float* dy, const float* w, float* dx) {
  const std::int64_t n = static_cast<std::int64_t>(p.kernel_h) * p.kernel_w * (p.in_c / p.groups);
  auto run = [&](const ConvParams& q, const float* dy_nhwc, float* dx_nhwc) {
    if (data_gradient_phases_apply(q) && data_gradient_phases(q, dy_nhwc, w, dx_nhwc)) return;
    if (tile_a_pads_least(n)) {
      data_gradient_col2im<tile_a[0], tile_a[1]>(q, dy_nhwc, w, dx_nhwc);
    } else {
      data_gradient_col2im<tile_b[0], tile_b[1]>(q, dy_nhwc, w, dx_nhwc);
    }
  };
  if (p.layout == Layout::NHWC) return run(p, dy, dx);
  on_nhwc_copies(p, dy, p.out_c, out_plane_of(p), dx, p.in_c, in_plane_of(p), run);
}

// ---- depthwise (one input and one output channel per group), NHWC: vectors across channels ----------------

// wt[tap][c] = w[c][tap]: the weights of one tap for consecutive channels, ready for vector loads.
void depthwise_taps_first(const ConvParams& p, const float* w, float* wt) {
  const std::int64_t taps = static_cast<std::int64_t>(p.kernel_h) * p.kernel_w;
  transpose(w, p.out_c, taps, taps, wt, p.out_c);
}

constexpr std::int64_t depthwise_columns = 4;  // interior output columns computed together

// The output columns of a row whose taps all read inside the image: ow * stride - pad_left >= 0 and
// ow * stride - pad_left + (KW - 1) * dilation <= in_w - 1.
IndexRange interior_columns(const ConvParams& p) {
  return indices_between(p.pad_left,
                         p.in_w - 1 + p.pad_left - static_cast<std::int64_t>(p.kernel_w - 1) * p.dilation_x,
                         p.stride_x, p.out_w);
}

// Channels [0, vector_channels) of output row oh, pixel by pixel so that x is read in the order it lies in
// memory (channel by channel, a pixel's taps being over a kilobyte apart, would leave the prefetchers
// behind): the border columns check every tap, the interior ones run depthwise_columns at a time without
// checks. The weights are reloaded per vector from wt, which stays in L1.
template <bool Stream>
void depthwise_forward_row(const ConvParams& p, const Geometry& geo, const IndexRange& interior,
                           const float* x, const float* wt, const float* b, std::int64_t n, std::int64_t oh,
                           std::int64_t vector_channels, float* y) {
  const std::int64_t channels = p.out_c;
  // Rows of x the taps read, null for rows in the padding.
  const float* rows[max_vector_taps];
  for (std::int64_t kh = 0; kh < p.kernel_h; ++kh) {
    const std::int64_t ih = geo.input_row(oh, kh);
    rows[kh] = geo.row_inside(ih) ? x + geo.x_offset(n, ih, 0, 0) : nullptr;
  }
  float* out = y + geo.y_offset(n, oh, 0, 0);
  const auto write = [&](float* at, Vec v) { Stream ? stream(at, v) : store(at, v); };
  // Vectors vectors of channels from c on at column ow, checking every tap.
  const auto border_block = [&](auto vectors, std::int64_t ow, std::int64_t c) {
    constexpr int Vectors = decltype(vectors)::value;
    Vec acc[Vectors];
    for (int v = 0; v < Vectors; ++v) acc[v] = b ? load(b + c + v * lanes) : Vec{};
    for (std::int64_t kh = 0; kh < p.kernel_h; ++kh) {
      if (rows[kh] == nullptr) continue;
      for (std::int64_t kw = 0; kw < p.kernel_w; ++kw) {
        const std::int64_t iw = geo.input_col(ow, kw);
        if (!geo.col_inside(iw)) continue;
        const float* weights = wt + (kh * p.kernel_w + kw) * channels + c;
        const float* in = rows[kh] + iw * channels + c;
        for (int v = 0; v < Vectors; ++v) acc[v] += load(weights + v * lanes) * load(in + v * lanes);
      }
    }
    for (int v = 0; v < Vectors; ++v) write(out + ow * channels + c + v * lanes, acc[v]);
  };
  // Four vectors at a time, four chains of FMAs: one at a time, a border column took as long as four
  // interior ones (dw3x3_256_s2's 14 columns have 2 border ones).
  const auto border_column = [&](std::int64_t ow) {
    std::int64_t c = 0;
    for (; c + 4 * lanes <= vector_channels; c += 4 * lanes)
      border_block(std::integral_constant<int, 4>{}, ow, c);
    for (; c < vector_channels; c += lanes) border_block(std::integral_constant<int, 1>{}, ow, c);
  };
  const std::int64_t step = p.stride_x * channels, tap_step = p.dilation_x * channels;
  // Vectors vectors of channels from c on, at depthwise_columns interior columns from ow on.
  const auto interior_block = [&](auto vectors, std::int64_t ow, std::int64_t c) {
    constexpr int Vectors = decltype(vectors)::value;
    Vec acc[Vectors][depthwise_columns];
    for (int v = 0; v < Vectors; ++v)
      for (std::int64_t q = 0; q < depthwise_columns; ++q) acc[v][q] = b ? load(b + c + v * lanes) : Vec{};
    for (std::int64_t kh = 0; kh < p.kernel_h; ++kh) {
      if (rows[kh] == nullptr) continue;
      const float* first = rows[kh] + geo.input_col(ow, 0) * channels + c;
      const float* weights = wt + kh * p.kernel_w * channels + c;
      for (std::int64_t kw = 0; kw < p.kernel_w; ++kw)
        for (int v = 0; v < Vectors; ++v) {
          const Vec wv = load(weights + kw * channels + v * lanes);
          for (std::int64_t q = 0; q < depthwise_columns; ++q)
            acc[v][q] += wv * load(first + q * step + kw * tap_step + v * lanes);
        }
    }
    // A pixel's vectors in turn, so that a streamed line is whole before the next pixel's.
    for (std::int64_t q = 0; q < depthwise_columns; ++q)
      for (int v = 0; v < Vectors; ++v) write(out + (ow + q) * channels + c + v * lanes, acc[v][q]);
  };
  // The input rows that the next output row reads and this one does not, asked for a share per column group.
  LinesAhead ahead = next_rows_ahead(geo, x, n, oh, (interior.end - interior.first) / depthwise_columns);
  std::int64_t ow = 0;
  for (; ow < interior.first; ++ow) border_column(ow);
  for (; ow + depthwise_columns <= interior.end; ow += depthwise_columns) {
    ahead.next();
    // Two vectors at a time: eight chains of FMAs, so that each FMA's latency is hidden behind the others.
    std::int64_t c = 0;
    for (; c + 2 * lanes <= vector_channels; c += 2 * lanes)
      interior_block(std::integral_constant<int, 2>{}, ow, c);
    for (; c < vector_channels; c += lanes) interior_block(std::integral_constant<int, 1>{}, ow, c);
  }
  for (; ow < p.out_w; ++ow) border_column(ow);
}

// y[n, oh, ow, c] = b[c] + sum over taps of w[c, tap] * x[n, ih, iw, c]; a task per output row.
void depthwise_forward_nhwc(const ConvParams& p, const float* x, const float* w, const float* b, float* y) {
  const Geometry geo(p);
  const std::int64_t channels = p.out_c, taps = static_cast<std::int64_t>(p.kernel_h) * p.kernel_w;
  const Memory wt_memory(sizeof(float) * taps * channels);
  float* wt = wt_memory.floats();
  depthwise_taps_first(p, w, wt);
  const IndexRange interior = interior_columns(p);
  // depthwise_forward_row keeps a pointer per kernel row at hand.
  const std::int64_t vector_channels = p.kernel_h <= max_vector_taps ? channels / lanes * lanes : 0;
  const bool streaming = streams_lines(static_cast<std::int64_t>(p.batch) * p.out_h * p.out_w, channels, y);
  parallel_for(static_cast<std::int64_t>(p.batch) * p.out_h, [&](std::int64_t row) {
    const std::int64_t n = row / p.out_h, oh = row % p.out_h;
    if (vector_channels > 0) {
      streaming ? depthwise_forward_row<true>(p, geo, interior, x, wt, b, n, oh, vector_channels, y)
                : depthwise_forward_row<false>(p, geo, interior, x, wt, b, n, oh, vector_channels, y);
    }
    if (streaming) stream_fence();
    // The channels past the last whole vector (all of them for kernels of more than max_vector_taps rows).
    for (std::int64_t ow = 0; ow < p.out_w; ++ow) {
      float* out = y + geo.y_offset(n, oh, ow, 0);
      for (std::int64_t c = vector_channels; c < channels; ++c) {
        float acc = b ? b[c] : 0.0f;
        for (std::int64_t t = 0; t < taps; ++t) {
          const std::int64_t ih = geo.input_row(oh, t / p.kernel_w), iw = geo.input_col(ow, t % p.kernel_w);
          if (geo.row_inside(ih) && geo.col_inside(iw))
            acc += wt[t * channels + c] * x[geo.x_offset(n, ih, iw, 0) + c];
        }
        out[c] = acc;
      }
    }
  });
}

// For `pixels` input pixels `out_step` floats apart: out[c] = the sum over readers t of weights[t][c] *
// grads[t][c], each grads[t] moving on by grads_step per pixel. Count fixes the number of readers (-1: read
// from count) so that the loop over them unrolls: a loop inside the loop over channel vectors left its exit
// branch mispredicted on most vectors, the count changing from pixel to pixel.
constexpr int max_unrolled_readers = 9;
template <int Count>
void gather_pixels(const float* const* weights, const float* const* grads, std::int64_t count,
                   std::int64_t pixels, std::int64_t grads_step, std::int64_t out_step, std::int64_t channels,
                   bool streaming, float* out) {
  const std::int64_t readers = Count >= 0 ? Count : count;
  // Fixed counts keep the pointers in registers (read through the arrays, they were reloaded after every
  // store to out, which might have changed them).
  constexpr int kept = Count > 0 ? Count : 1;
  const float* w[kept];
  const float* g[kept];
  if constexpr (Count > 0) {
    std::copy_n(weights, Count, w);
    std::copy_n(grads, Count, g);
  }
  const float* const* ws = Count >= 0 ? w : weights;
  const float* const* gs = Count >= 0 ? g : grads;
  for (std::int64_t pixel = 0; pixel < pixels; ++pixel, out += out_step) {
    const std::int64_t at = pixel * grads_step;
    const auto gather = [&](std::int64_t c, auto zero, auto read) {
      auto acc = zero;
      for (std::int64_t t = 0; t < readers; ++t) acc += read(ws[t] + c) * read(gs[t] + at + c);
      return acc;
    };
    std::int64_t c = 0;
    for (; c + lanes <= channels; c += lanes) {
      const Vec acc = gather(c, Vec{}, load);
      streaming ? stream(out + c, acc) : store(out + c, acc);
    }
    for (; c < channels; ++c) out[c] = gather(c, 0.0f, [](const float* p) { return *p; });
  }
}

template <int... Counts>
constexpr auto gather_table(std::integer_sequence<int, Counts...>) {
  using Gather = void (*)(const float* const*, const float* const*, std::int64_t, std::int64_t, std::int64_t,
                          std::int64_t, std::int64_t, bool, float*);
  return std::array<Gather, sizeof...(Counts)>{gather_pixels<Counts>...};
}

void gather(const float* const* weights, const float* const* grads, std::int64_t count, std::int64_t pixels,
            std::int64_t grads_step, std::int64_t out_step, std::int64_t channels, bool streaming,
            float* out) {
  static constexpr auto gathers = gather_table(std::make_integer_sequence<int, max_unrolled_readers + 1>{});
  (count <= max_unrolled_readers ? gathers[count] : gather_pixels<-1>)(weights, grads, count, pixels,
                                                                       grads_step, out_step, channels,
                                                                       streaming, out);
}

// dx[n, ih, iw, c] = sum over the taps that read (ih, iw) of w[c, tap] * dy[n, oh, ow, c]: each input pixel
// gathers its few readers (at stride s, about (K / s)^2 of them) and is written once, a task per input row.
// Away from the borders the readers of a row's columns repeat with its stride phases, so each phase's
// columns run as one gather whose dy pointers move on a pixel at a time; a pixel at a time, setting its
// readers up took a third of the time.
void depthwise_data_gradient_nhwc(const ConvParams& p, const float* dy, const float* w, float* dx) {
  const Geometry geo(p);
  const std::int64_t channels = p.out_c, taps = static_cast<std::int64_t>(p.kernel_h) * p.kernel_w;
  const Memory wt_memory(sizeof(float) * taps * channels);
  float* wt = wt_memory.floats();
  depthwise_taps_first(p, w, wt);
  const Readers rows(p.in_h, p.out_h, p.kernel_h, p.stride_y, p.pad_top, p.dilation_y);
  const Readers cols(p.in_w, p.out_w, p.kernel_w, p.stride_x, p.pad_left, p.dilation_x);
  const std::vector<ColumnPhase> phases = column_phases(p);
  const std::vector<bool> border = border_columns(p, phases);
  const bool streaming = streams_lines(static_cast<std::int64_t>(p.batch) * p.in_h * p.in_w, channels, dx);
  const std::int64_t most_readers = rows.most() * cols.most();
  parallel_for(static_cast<std::int64_t>(p.batch) * p.in_h, [&](std::int64_t row) {
    const std::int64_t n = row / p.in_h, ih = row % p.in_h;
    const float** weights = static_cast<const float**>(thread_scratch(2 * sizeof(float*) * most_readers));
    const float** grads = weights + most_readers;
    const Readers::Pair* row_pairs = rows.of(ih);
    for (const ColumnPhase& phase : phases) {
      if (phase.first == phase.end) continue;
      std::int64_t count = 0;
      for (std::int64_t r = 0; r < rows.counts[ih]; ++r)
        for (const ColumnPhase::Tap& tap : phase.taps) {
          weights[count] = wt + (row_pairs[r].tap * p.kernel_w + tap.kw) * channels;
          grads[count++] = dy + geo.y_offset(n, row_pairs[r].out, phase.first + tap.offset, 0);
        }
      gather(weights, grads, count, phase.end - phase.first, geo.y.w, p.stride_x * geo.x.w, channels,
             streaming, dx + geo.x_offset(n, ih, phase.residue + phase.first * p.stride_x, 0));
    }
    for (std::int64_t iw = 0; iw < p.in_w; ++iw) {
      if (!border[iw]) continue;
      const Readers::Pair* col_pairs = cols.of(iw);
      std::int64_t count = 0;
      for (std::int64_t r = 0; r < rows.counts[ih]; ++r)
        for (std::int64_t q = 0; q < cols.counts[iw]; ++q, ++count) {
          weights[count] = wt + (row_pairs[r].tap * p.kernel_w + col_pairs[q].tap) * channels;
          grads[count] = dy + geo.y_offset(n, row_pairs[r].out, col_pairs[q].out, 0);
        }
      gather(weights, grads, count, 1, 0, 0, channels, streaming, dx + geo.x_offset(n, ih, iw, 0));
    }
    if (streaming) stream_fence();
  });
}

bool is_depthwise(const ConvParams& p) { return p.groups == p.in_c && p.groups == p.out_c; }

// Runs nhwc(params, first channel, src copy, dst copy) of an NHWC depthwise kernel on NHWC copies of the NCHW
// tensor src (planes of src_plane pixels), then copies its NHWC result into the NCHW tensor dst (planes of
// dst_plane): per block of channels of a vector or more (depthwise_nchw_blocks.h) where those make enough
// tasks, else on copies of the whole tensors, the kernel spreading its own tasks over the threads.
template <typename Op>
void depthwise_on_nhwc_copies(const ConvParams& p, const float* src, std::int64_t src_plane, float* dst,
                              std::int64_t dst_plane, Op&& nhwc) {
  const std::int64_t floats_per_channel = src_plane + dst_plane, min_vectors = 1;
  if (!nchw_blocks_apply(p, floats_per_channel, min_vectors)) {
    return on_nhwc_copies(
        p, src, p.in_c, src_plane, dst, p.out_c, dst_plane,
        [&](const ConvParams& q, const float* src_copy, float* dst_copy) { nhwc(q, 0, src_copy, dst_copy); });
  }
  for_each_nchw_block(p, floats_per_channel, min_vectors, [&](const NchwBlock& block, float* scratch) {
    float* src_copy = scratch;
    float* dst_copy = scratch + block.count * src_plane;
    copy_block_to_nhwc(block, src, src_plane, src_copy);
    nhwc(block.params, block.first, src_copy, dst_copy);
    copy_block_to_nchw(block, dst_copy, dst_plane, dst);
  });
}

}  // namespace

void convolution_forward(const ConvParams& p, const float* x, const float* w, const float* b, float* y) {
  // The reference multiplies the weights by the zeros that pad x, so that a NaN or Inf weight makes NaN
  // (0 x Inf) of the outputs whose taps read the padding. The depthwise paths and the direct sums at the end
  // skip those products; with such weights, their layers take the GEMM, which pads x as the reference does.
  // (The check reads their weights once; they are few: a depthwise layer's, or those of a few output
  // channels.)
  const bool gemm = p.out_c / p.groups >= min_gemm_channels;
  const bool padding_matters = (is_depthwise(p) || !gemm) && !weights_finite(p, w);
  if (is_depthwise(p) && !padding_matters) {
    if (p.layout == Layout::NHWC) return depthwise_forward_nhwc(p, x, w, b, y);
    if (depthwise_nchw_forward_applies(p)) return depthwise_forward_nchw(p, x, w, b, y);
    return depthwise_on_nhwc_copies(p, x, in_plane_of(p), y, out_plane_of(p),
                                    [&](const ConvParams& q, std::int64_t first, const float* xs, float* ys) {
                                      depthwise_forward_nhwc(q, xs, w + first * taps_of(p),
                                                             b ? b + first : nullptr, ys);
                                    });
  }
  if (pointwise_nchw_forward_applies(p)) return pointwise_forward_nchw(p, x, w, b, y);
  if (grouped_forward_applies(p)) return forward_in_nhwc(grouped_forward_nhwc, p, x, w, b, y);
  // Where Winograd's outputs come out NaN or Inf, the GEMM's direct sums put them where they belong.
  if (winograd_forward_applies(p) && forward_in_nhwc(winograd_forward_nhwc, p, x, w, b, y)) return;
  if (gemm || padding_matters) return forward_in_nhwc(forward_gemm_nhwc, p, x, w, b, y);
  const Geometry geo(p);
  for (std::int64_t n = 0; n < p.batch; ++n)
    for (std::int64_t oh = 0; oh < p.out_h; ++oh)
      for (std::int64_t ow = 0; ow < p.out_w; ++ow)
        for (std::int64_t o = 0; o < p.out_c; ++o) y[geo.y_offset(n, oh, ow, o)] = b ? b[o] : 0.0f;
  for_each_tap(geo, [&](std::int64_t n, std::int64_t oh, std::int64_t ow, std::int64_t o, std::int64_t kh,
                        std::int64_t kw, std::int64_t x_at) {
    const float* wo = w + geo.w_offset(o, kh, kw);
    float sum = 0.0f;
    for (std::int64_t i = 0; i < geo.in_per_group; ++i) sum += wo[i] * x[x_at + i * geo.x.c];
    y[geo.y_offset(n, oh, ow, o)] += sum;
  });
}

void convolution_data_gradient(const ConvParams& p, const float* dy, const float* w, float* dx) {
  // The reference adds each weight's products with dy only into the input pixels its taps read. The faster
  // paths below also multiply weights by the zeros that pad dy in a forward pass over it, or mix them in
  // Winograd's transforms: that changes nothing for finite weights, but 0 x Inf is NaN. So weights with a
  // NaN or Inf take col2im: Winograd's passes note any NaN or Inf output, and the weights of the passes over
  // dy are checked as they are copied (dy_pass_weights). At larger strides, the gather of small groups reads
  // zeros past dy's edges too: their few weights are checked first. (A check of every layer's weights first
  // made dx of 8x512x7x7, 3x3, 6% slower on 2 threads: 3.34 -> 3.56 ms.)
  if ((p.stride_y > 1 || p.stride_x > 1) && grouped_data_gradient_applies(p) && !weights_finite(p, w))
    return data_gradient_gemm(p, dy, w, dx);
  // With stride 1, dx is a forward convolution of dy with the flipped weights, input and output channels
  // of each group exchanged: dx[ih] = sum over taps kh and channels o of W[o, kh, i] * dy[ih + pad - kh * d],
  // which is tap KH - 1 - kh of a convolution padded by (KH - 1) * d - pad.
  // Depthwise layers and small groups take this way too: their forward passes read dy in memory order and
  // run their interior columns without checks, where the gathers of depthwise_data_gradient_nhwc and
  // grouped_data_gradient_nhwc check every reader. (The pass over dy of small groups has their input and
  // output channels exchanged, so it is vectors across groups exactly when the gather would be.)
  if (p.stride_y == 1 && p.stride_x == 1 &&
      (p.in_c / p.groups >= min_gemm_channels || is_depthwise(p) || grouped_data_gradient_applies(p))) {
    const std::int64_t kh = p.kernel_h, kw = p.kernel_w;
    const ConvParams t = dy_pass(p, p.in_h, p.in_w, kh, kw, (kh - 1) * p.dilation_y - p.pad_top,
                                 (kw - 1) * p.dilation_x - p.pad_left);
    // (Where Winograd's outputs come out NaN or Inf, the forward pass below takes them again: from its own
    // Winograd pass, then from the GEMM.)
    if (winograd_forward_applies(t) &&
        forward_in_nhwc(winograd_data_gradient_pass_nhwc, t, dy, w, nullptr, dx))
      return;
    const Memory flipped(sizeof(float) * p.out_c * kh * kw * (p.in_c / p.groups));
    if (dy_pass_weights(
            p, w, kh, kw, [&](std::int64_t u) { return kh - 1 - u; },
            [&](std::int64_t v) { return kw - 1 - v; }, flipped.floats())) {
      convolution_forward(t, dy, flipped.floats(), nullptr, dx);
      return;
    }
    return data_gradient_gemm(p, dy, w, dx);
  }
  if (is_depthwise(p)) {
    if (p.layout == Layout::NHWC) return depthwise_data_gradient_nhwc(p, dy, w, dx);
    return depthwise_on_nhwc_copies(
        p, dy, out_plane_of(p), dx, in_plane_of(p),
        [&](const ConvParams& q, std::int64_t first, const float* dys, float* dxs) {
          depthwise_data_gradient_nhwc(q, dys, w + first * taps_of(p), dxs);
        });
  }
  if (grouped_data_gradient_applies(p)) {
    if (p.layout == Layout::NHWC) return grouped_data_gradient_nhwc(p, dy, w, dx);
    return on_nhwc_copies(p, dy, p.out_c, out_plane_of(p), dx, p.in_c, in_plane_of(p),
                          [&](const ConvParams& q, const float* dys, float* dxs) {
                            grouped_data_gradient_nhwc(q, dys, w, dxs);
                          });
  }
  if (winograd_stride_two_data_gradient_applies(p)) {
    const ConvParams t = dy_pass(p, p.in_h, p.in_w, 3, 3, p.pad_top, p.pad_left);
    // Where its outputs come out NaN or Inf, the GEMM below puts them where they belong.
    if (forward_in_nhwc(winograd_stride_two_data_gradient_nhwc, t, dy, w, nullptr, dx)) return;
  }
  if (p.out_c / p.groups >= min_gemm_channels || data_gradient_phases_apply(p))
    return data_gradient_gemm(p, dy, w, dx);
  const Geometry geo(p);
  std::memset(dx, 0, sizeof(float) * p.batch * p.in_c * p.in_h * p.in_w);
  for_each_tap(geo, [&](std::int64_t n, std::int64_t oh, std::int64_t ow, std::int64_t o, std::int64_t kh,
                        std::int64_t kw, std::int64_t x_at) {
    const float* wo = w + geo.w_offset(o, kh, kw);
    const float d = dy[geo.y_offset(n, oh, ow, o)];
    for (std::int64_t i = 0; i < geo.in_per_group; ++i) dx[x_at + i * geo.x.c] += wo[i] * d;
  });
}

}  // namespace gradstate::cpu::GRADSTATE_ISA_NAMESPACE
