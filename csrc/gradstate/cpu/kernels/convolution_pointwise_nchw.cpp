// The forward pass of 1x1 stride-1 layers without padding in NCHW (and so the data gradient of those with at
// least 8 input channels, see convolution_data_gradient): per image, y (O x P) = W (O x I) x (I x P)
// + b, with P the pixels of a plane. In NCHW this is a GEMM as the tensors lie in memory: the rows of x and y
// are channel planes, so no NHWC copies are made (on 8x256x56x56 -> 64, the copies' transposes took about
// as long as the GEMM: 9.9 ms on 2 threads against 5.0 ms in NHWC).
//
// A task takes one image's block of pixels: it packs x's rows for those pixels into panels of up to
// panel_rows input channels, each row one contiguous run, and the microkernel sweeps every tile of output
// channels over each panel while it is in the core's cache. W is the microkernel's A operand in place,
// row-major O x I, with its rows padded to whole tiles.
#include "gradstate/cpu/kernels/convolution_pointwise_nchw.h"

#include <cstring>

#include "gradstate/cpu/kernels/gemm.h"
#include "gradstate/cpu/kernels/vec.h"
#include "gradstate/cpu/memory.h"
#include "gradstate/cpu/thread_pool.h"

namespace gradstate::cpu::GRADSTATE_ISA_NAMESPACE {
namespace {

constexpr std::int64_t panel_rows = 256;  // input channels of a panel
// Packing asks for the lines of the row this many rows on: rows are a plane apart, which the prefetchers do
// not follow (8x256x56x56 -> 64 on 1 thread, alternating runs: fastest 11.8-15.3 -> 10.9-11.7 ms).
constexpr std::int64_t rows_ahead = 8;
constexpr std::int64_t task_pixels = 128;  // pixels of a task, rounded down to whole tiles

template <int MR, int NV>
void pointwise_forward(const ConvParams& p, const float* x, const float* w, const float* b, float* y) {
  constexpr std::int64_t NR = NV * lanes;
  const std::int64_t pixels = static_cast<std::int64_t>(p.out_h) * p.out_w;
  const std::int64_t in_c = p.in_c, out_c = p.out_c, rows = round_up(out_c, MR);
  // W's rows, and zero rows up to a whole tile, so the last tile reads no further than the copy.
  const Memory padded(sizeof(float) * rows * in_c);
  float* a = padded.floats();
  std::memcpy(a, w, sizeof(float) * out_c * in_c);
  std::memset(a + out_c * in_c, 0, sizeof(float) * (rows - out_c) * in_c);
  const std::int64_t block_pixels = max_of<std::int64_t>(1, task_pixels / NR) * NR;
  const std::int64_t blocks = ceil_div(pixels, block_pixels);
  parallel_for(p.batch * blocks, [&](std::int64_t task) {
    const std::int64_t n = task / blocks, p0 = (task % blocks) * block_pixels;
    const std::int64_t nc = min_of(block_pixels, pixels - p0), padded_nc = round_up(nc, NR);
    const float* xs = x + n * in_c * pixels + p0;
    float* ys = y + n * out_c * pixels + p0;
    float* panel = static_cast<float*>(thread_scratch(sizeof(float) * min_of(panel_rows, in_c) * padded_nc));
    for (std::int64_t k0 = 0; k0 < in_c; k0 += panel_rows) {
      const std::int64_t kc = min_of(panel_rows, in_c - k0);
      // panel[block][k][NR] = x[k0 + k][p0 + block * NR + j], zero past the task's pixels.
      for (std::int64_t k = 0; k < kc; ++k) {
        if (k0 + k + rows_ahead < in_c) ask_for_lines(xs + (k0 + k + rows_ahead) * pixels, nc);
        put(NR, panel, kc, k, 0, nc, xs + (k0 + k) * pixels);
        put(NR, panel, kc, k, nc, padded_nc - nc, nullptr);
      }
      for (std::int64_t j = 0; j < nc; j += NR) {
        const int cols = static_cast<int>(min_of(NR, nc - j));
        const float* bp = panel + (j / NR) * kc * NR;
        for (std::int64_t m0 = 0; m0 < out_c; m0 += MR) {
          const int tile_rows = static_cast<int>(min_of<std::int64_t>(MR, out_c - m0));
          Vec acc[MR][NV];
          for (int m = 0; m < MR; ++m) {
            // The bias starts the first panel's sums; later panels add to y.
            const float start = k0 == 0 && b != nullptr && m < tile_rows ? b[m0 + m] : 0.0f;
            for (int v = 0; v < NV; ++v) acc[m][v] = broadcast(start);
          }
          accumulate<MR, NV, true>(acc, kc, a + m0 * in_c + k0, in_c, bp);
          float* c = ys + m0 * pixels + j;
          k0 == 0 ? store_tile<MR, NV, false>(acc, c, pixels, tile_rows, cols)
                  : store_tile<MR, NV, true>(acc, c, pixels, tile_rows, cols);
        }
      }
    }
  });
}

// ---- weight gradient ------------------------------------------------------------------------------------
//
// dW^T (I x O) = the sum over the images of x (I x P) times dy^T (P x O): x is the microkernel's A operand in
// place (a row per input channel, contiguous along the pixels), and dy, copied into NHWC a chunk of images
// at a time (the one of the NHWC path's two copies that this path makes), its B operand (a row per pixel). A
// task owns a block of input and output channels and sums over the pixels in order, so the sums do not depend
// on the thread count.

constexpr std::int64_t step_pixels = 256;            // pixels of a step, whose rows of dy stay in cache
constexpr std::int64_t task_rows = 64;               // input channels of a task, rounded up to whole tiles
constexpr std::int64_t task_cols = 64;               // output channels of a task, rounded up to whole tiles
constexpr std::int64_t max_dy_copy_bytes = 8 << 20;  // images of dy copied at a time: at most this, or one

// (Its flag is not called accumulate, which would hide the microkernel's accumulate.)
template <int MR, int NV>
void pointwise_weights(const ConvParams& p, const float* dy, const float* x, float* dw, float* db,
                       bool add_to_dw) {
  constexpr std::int64_t NR = NV * lanes;
  const std::int64_t pixels = static_cast<std::int64_t>(p.out_h) * p.out_w;
  const std::int64_t in_c = p.in_c, out_c = p.out_c, cols = round_up(out_c, NR);
  const std::int64_t block_rows = round_up(task_rows, MR), row_blocks = ceil_div(in_c, block_rows);
  const std::int64_t block_cols = round_up(task_cols, NR), col_blocks = ceil_div(cols, block_cols);
  const std::int64_t per_chunk =
      min_of<std::int64_t>(p.batch, max_of<std::int64_t>(1, max_dy_copy_bytes / (4 * out_c * pixels)));
  // dy's copy, and NR zeros past it, which the last pixel's tile of the last columns reads (into sums'
  // padding columns, which are never read).
  const Memory copy_memory(sizeof(float) * (per_chunk * pixels * out_c + NR));
  float* dy_copy = copy_memory.floats();
  std::memset(dy_copy + per_chunk * pixels * out_c, 0, sizeof(float) * NR);
  const Memory sums_memory(sizeof(float) * round_up(in_c, MR) * cols, true);
  // dW^T, cols floats a row: whole tiles, whose extra rows and columns are never read.
  float* sums = sums_memory.floats();
  for (std::int64_t n0 = 0; n0 < p.batch; n0 += per_chunk) {
    const std::int64_t count = min_of(per_chunk, p.batch - n0);
    transpose_images(dy + n0 * out_c * pixels, count, out_c, pixels, dy_copy);
    parallel_for(row_blocks * col_blocks, [&](std::int64_t task) {
      const std::int64_t i_begin = (task / col_blocks) * block_rows,
                         i_end = min_of(in_c, i_begin + block_rows);
      const std::int64_t o_begin = (task % col_blocks) * block_cols,
                         o_end = min_of(cols, o_begin + block_cols);
      // The last tile's rows past the input channels read zeros from a copy of its rows.
      float* partial = static_cast<float*>(thread_scratch(sizeof(float) * MR * step_pixels));
      for (std::int64_t n = 0; n < count; ++n) {
        const float* xs = x + (n0 + n) * in_c * pixels;
        const float* b = dy_copy + n * pixels * out_c;
        for (std::int64_t k0 = 0; k0 < pixels; k0 += step_pixels) {
          const std::int64_t kc = min_of(step_pixels, pixels - k0);
          for (std::int64_t i0 = i_begin; i0 < i_end; i0 += MR) {
            const int rows = static_cast<int>(min_of<std::int64_t>(MR, in_c - i0));
            const float* a = xs + i0 * pixels + k0;
            std::int64_t lda = pixels;
            if (rows < MR) {
              for (int m = 0; m < MR; ++m) {
                if (m < rows)
                  std::memcpy(partial + m * kc, a + m * pixels, sizeof(float) * kc);
                else
                  std::memset(partial + m * kc, 0, sizeof(float) * kc);
              }
              a = partial, lda = kc;
            }
            // Every tile of output channels in turn, while the tile's rows of x are in the core's cache.
            for (std::int64_t o0 = o_begin; o0 < o_end; o0 += NR) {
              float* c = sums + i0 * cols + o0;
              Vec acc[MR][NV];
              for (int m = 0; m < MR; ++m)
                for (int v = 0; v < NV; ++v) acc[m][v] = load(c + m * cols + v * lanes);
              accumulate<MR, NV, true>(acc, kc, a, lda, b + k0 * out_c + o0, out_c);
              store_tile<MR, NV, false>(acc, c, cols, MR, static_cast<int>(NR));
            }
          }
        }
      }
    });
  }
  parallel_for(out_c, [&](std::int64_t o) {
    for (std::int64_t i = 0; i < in_c; ++i)
      dw[o * in_c + i] = (add_to_dw ? dw[o * in_c + i] : 0.0f) + sums[i * cols + o];
    float total = 0.0f;
    for (std::int64_t n = 0; n < p.batch; ++n) total += sum_of(dy + (n * out_c + o) * pixels, pixels);
    db[o] = (add_to_dw ? db[o] : 0.0f) + total;
  });
}

}  // namespace

bool pointwise_nchw_forward_applies(const ConvParams& p) {
  return p.layout == Layout::NCHW && p.groups == 1 && p.kernel_h == 1 && p.kernel_w == 1 && p.stride_y == 1 &&
         p.stride_x == 1 && p.pad_top == 0 && p.pad_left == 0 && p.out_h == p.in_h && p.out_w == p.in_w;
}

// The tile that pads the output channels and the pixels least.
void pointwise_forward_nchw(const ConvParams& p, const float* x, const float* w, const float* b, float* y) {
  const std::int64_t pixels = static_cast<std::int64_t>(p.out_h) * p.out_w;
  if (tile_waste(p.out_c, pixels, tile_a) <= tile_waste(p.out_c, pixels, tile_b))
    return pointwise_forward<tile_a[0], tile_a[1]>(p, x, w, b, y);
  pointwise_forward<tile_b[0], tile_b[1]>(p, x, w, b, y);
}

// Planes of at least a step of pixels: with shorter ones the sums over the pixels are too short for the loads
// and stores of the microkernel's tiles, and the NHWC copies were as fast (8x1024x7x7 -> 256, 2 threads:
// 1.6-1.8 ms here against 1.4-1.9); on 8x256x56x56 -> 64, 6.0-6.1 against 8.3-8.7 ms.
bool pointwise_nchw_weights_gradient_applies(const ConvParams& p) {
  return pointwise_nchw_forward_applies(p) && static_cast<std::int64_t>(p.out_h) * p.out_w >= step_pixels;
}

// The tile that pads the input and the output channels least.
void pointwise_weights_gradient_nchw(const ConvParams& p, const float* dy, const float* x, float* dw,
                                     float* db, bool accumulate) {
  if (tile_waste(p.in_c, p.out_c, tile_a) <= tile_waste(p.in_c, p.out_c, tile_b))
    return pointwise_weights<tile_a[0], tile_a[1]>(p, dy, x, dw, db, accumulate);
  pointwise_weights<tile_b[0], tile_b[1]>(p, dy, x, dw, db, accumulate);
}

}  // namespace gradstate::cpu::GRADSTATE_ISA_NAMESPACE
