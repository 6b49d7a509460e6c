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

}  // namespace gradstate::cpu::GRADSTATE_ISA_NAMESPACE
