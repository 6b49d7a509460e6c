// The pieces of the Winograd schemes for 3x3 kernels (F(2x2, 3x3) at stride 1, its stride-2 counterpart and
// the data gradient's at stride 2) shared by the forward pass and the data gradient
// (convolution_winograd.cpp) and the weight gradient (convolution_weights_winograd.cpp): the transforms and
// the tilings.
#pragma once

#include <algorithm>
#include <cstdint>

#include "gradstate/cpu/kernels/conv_geometry.h"
#include "gradstate/cpu/kernels/vec.h"

namespace gradstate::cpu::GRADSTATE_ISA_NAMESPACE {

// Fewer channels than this leave the GEMMs too short to pay for the transforms.
constexpr std::int64_t min_winograd_channels = 16;

struct TileGrid;
struct StrideTwoDataGrid;

// A scheme computes `tile` outputs of a 3-tap filter along a line from `patch` inputs with `points` products,
// by 1D transforms: input (B^T, patch -> points), kernel (G, 3 -> points), output (A^T, points -> tile) and,
// for the weight gradient, the gradients of the last two (A and G^T). Nested, rows then columns, they give
// the 2D scheme, points x points products per pair of input and output channels for a tile x tile block of
// outputs; see separable. Grid places the tiles and their patches in the tensors.
//
// Stride 1, Winograd's F(2, 3): 4 inputs d0..d3, B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1],
// G = [1 0 0; 1/2 1/2 1/2; 1/2 -1/2 1/2; 0 0 1], A^T = [1 1 1 0; 0 1 -1 -1]. With dilation d, the inputs
// and the tile's two outputs are d apart.
struct StrideOne {
  using Grid = TileGrid;
  static constexpr int patch = 4, points = 4, tile = 2, positions = points * points;
  template <typename T>
  static void input(const T (&d)[4], T (&v)[4]) {
    v[0] = d[0] - d[2], v[1] = d[1] + d[2], v[2] = d[2] - d[1], v[3] = d[1] - d[3];
  }
  template <typename T>
  static void kernel(const T (&g)[3], T (&u)[4]) {
    u[0] = g[0], u[1] = (g[0] + g[1] + g[2]) * 0.5f, u[2] = (g[0] - g[1] + g[2]) * 0.5f, u[3] = g[2];
  }
  template <typename T>
  static void output(const T (&m)[4], T (&y)[2]) {
    y[0] = m[0] + m[1] + m[2], y[1] = m[1] - m[2] - m[3];
  }
  template <typename T>
  static void output_gradient(const T (&dy)[2], T (&dz)[4]) {
    dz[0] = dy[0], dz[1] = dy[0] + dy[1], dz[2] = dy[0] - dy[1], dz[3] = -dy[1];
  }
  template <typename T>
  static void kernel_gradient(const T (&du)[4], T (&dg)[3]) {
    dg[0] = du[0] + (du[1] + du[2]) * 0.5f, dg[1] = (du[1] - du[2]) * 0.5f,
    dg[2] = (du[1] + du[2]) * 0.5f + du[3];
  }
};

// Stride 2: outputs y0 = g0 d0 + g1 d1 + g2 d2 and y1 = g0 d2 + g1 d3 + g2 d4 from 5 inputs. The even taps
// (g0, g2) over the even inputs (d0, d2, d4) are F(2, 2) with 3 products, the odd tap g1 takes one product
// per output: 5 instead of 6, all coefficients 0 or 1 (25 products instead of 36 in 2D). The forward pass
// only: the weight gradient's transforms cost more than its 30% fewer multiply-adds save (3x3 stride 2, 128
// channels, 56x56 inputs: 11.2 against 10.5 ms for the GEMM path on 2 threads).
// B^T = [1 0 -1 0 0; 0 0 1 0 0; 0 0 -1 0 1; 0 1 0 0 0; 0 0 0 1 0], G = [1 0 0; 1 0 1; 0 0 1; 0 1 0; 0 1 0],
// A^T = [1 1 0 1 0; 0 1 1 0 1].
struct StrideTwo {
  using Grid = TileGrid;
  static constexpr int patch = 5, points = 5, tile = 2, positions = points * points;
  template <typename T>
  static void input(const T (&d)[5], T (&v)[5]) {
    v[0] = d[0] - d[2], v[1] = d[2], v[2] = d[4] - d[2], v[3] = d[1], v[4] = d[3];
  }
  template <typename T>
  static void kernel(const T (&g)[3], T (&u)[5]) {
    u[0] = g[0], u[1] = g[0] + g[2], u[2] = g[2], u[3] = g[1], u[4] = g[1];
  }
  template <typename T>
  static void output(const T (&m)[5], T (&y)[2]) {
    y[0] = m[0] + m[1] + m[3], y[1] = m[1] + m[2] + m[4];
  }
};

// The data gradient at stride 2 (no dilation), the forward pass over dy that gives dx, for odd padding: dx
// line i = 4t + j (j < 4) of tile t reads the taps k with i + pad - k even, from dy line (i + pad - k) / 2.
// With q = 4t + pad (odd) and dy lines a, b, c from s = (q - 1) / 2 on, the lines are g1 a, g2 a + g0 b,
// g1 b, g2 b + g0 c: the even taps over (a, b, c) are F(2, 2), 3 products for 4, and the middle tap one
// product per line with i + pad odd, 5 products for 6 (25 for 36 in 2D, 16 pixels of dx from 3x3 pixels of
// dy). In the kernels h of the pass, the layer's flipped (h0 = g2, h1 = g1, h2 = g0; see
// winograd_data_gradient_pass_nhwc): B^T = [1 -1 0; 0 1 0; 0 -1 1; 1 0 0; 0 1 0], G as StrideTwo's,
// A^T = [0 0 0 1 0; 1 1 0 0 0; 0 0 0 0 1; 0 1 1 0 0].
struct StrideTwoData {
  using Grid = StrideTwoDataGrid;
  static constexpr int patch = 3, points = 5, tile = 4, positions = points * points;
  template <typename T>
  static void input(const T (&d)[3], T (&v)[5]) {
    v[0] = d[0] - d[1], v[1] = d[1], v[2] = d[2] - d[1], v[3] = d[0], v[4] = d[1];
  }
  template <typename T>
  static void kernel(const T (&h)[3], T (&u)[5]) {
    StrideTwo::kernel(h, u);
  }
  template <typename T>
  static void output(const T (&m)[5], T (&y)[4]) {
    y[0] = m[3], y[1] = m[0] + m[1], y[2] = m[4], y[3] = m[1] + m[2];
  }
};

// out (Out x Out, row-major) = F in F^T for an In x In `in`, where line(a, b) computes b = F a along one
// line: first down each column of in, then along each row of the result.
template <int In, int Out, typename T, typename Line>
__attribute__((always_inline)) inline void separable(const T (&in)[In * In], T (&out)[Out * Out], Line line) {
  T columns[In][Out];  // columns[j] = F times column j of in
  for (int j = 0; j < In; ++j) {
    T column[In];
    for (int i = 0; i < In; ++i) column[i] = in[i * In + j];
    line(column, columns[j]);
  }
  for (int i = 0; i < Out; ++i) {
    T row[In], result[Out];
    for (int j = 0; j < In; ++j) row[j] = columns[j][i];
    line(row, result);
    for (int j = 0; j < Out; ++j) out[i * Out + j] = result[j];
  }
}

// V = B^T d B for a patch d of inputs.
template <typename S, typename T>
__attribute__((always_inline)) inline void transform_patch(const T (&d)[S::patch * S::patch],
                                                           T (&v)[S::positions]) {
  separable<S::patch, S::points>(d, v, [](const T(&a)[S::patch], T(&b)[S::points]) { S::input(a, b); });
}

// y (a tile of outputs) = A^T m A for a product m.
template <typename S, typename T>
__attribute__((always_inline)) inline void transform_product(const T (&m)[S::positions],
                                                             T (&y)[S::tile * S::tile]) {
  separable<S::points, S::tile>(m, y, [](const T(&a)[S::points], T(&b)[S::tile]) { S::output(a, b); });
}

// U = G g G^T for a 3x3 kernel g.
template <typename S, typename T>
__attribute__((always_inline)) inline void transform_kernel(const T (&g)[9], T (&u)[S::positions]) {
  separable<3, S::points>(g, u, [](const T(&a)[3], T(&b)[S::points]) { S::kernel(a, b); });
}

// dZ = A dy A^T for a tile dy, the gradient of the product whose transform gave y (see transform_product).
template <typename S, typename T>
__attribute__((always_inline)) inline void transform_output_gradient(const T (&dy)[S::tile * S::tile],
                                                                     T (&dz)[S::positions]) {
  separable<S::tile, S::points>(dy, dz,
                                [](const T(&a)[S::tile], T(&b)[S::points]) { S::output_gradient(a, b); });
}

// dg = G^T dU G, the gradient of the 3x3 kernel whose transform is U (see transform_kernel).
template <typename S, typename T>
__attribute__((always_inline)) inline void transform_kernel_gradient(const T (&du)[S::positions],
                                                                     T (&dg)[9]) {
  separable<S::points, 3>(du, dg, [](const T(&a)[S::points], T(&b)[3]) { S::kernel_gradient(a, b); });
}

// Whether a scheme computes the layer's forward pass: groups of 1, a 3x3 kernel, enough channels, and
// stride 1 (any dilation) or stride 2 (no dilation) both ways.
inline bool winograd_shape(const ConvParams& p) {
  const bool stride_one = p.stride_y == 1 && p.stride_x == 1;
  const bool stride_two = p.stride_y == 2 && p.stride_x == 2 && p.dilation_y == 1 && p.dilation_x == 1;
  return p.groups == 1 && p.kernel_h == 3 && p.kernel_w == 3 && (stride_one || stride_two) &&
         p.in_c >= min_winograd_channels && p.out_c >= min_winograd_channels;
}

// The output in tiles of 2x2 pixels. With dilation d, a tile's two output rows are d apart (its patch rows
// too, as the taps'), so the rows of a tile are those of one residue modulo d: tile row t starts at output
// row (t / d) * 2d + t % d. The last tile rows of some residues may start past the output: they hold no
// pixel.
struct TileGrid {
  explicit TileGrid(const ConvParams& p)
      : p(p),
        rows(lines(p.out_h, p.dilation_y)),
        cols(lines(p.out_w, p.dilation_x)),
        count(p.batch * rows * cols) {}

  static std::int64_t lines(std::int64_t outputs, std::int64_t d) { return ceil_div(outputs, 2 * d) * d; }
  static std::int64_t first_line(std::int64_t t, std::int64_t d) { return t / d * 2 * d + t % d; }

  // Tile `tile`'s image and its first output pixel.
  void locate(std::int64_t tile, std::int64_t& n, std::int64_t& oh, std::int64_t& ow) const {
    n = tile / (rows * cols);
    oh = first_line(tile / cols % rows, p.dilation_y);
    ow = first_line(tile % cols, p.dilation_x);
  }

  // Where the tile's four output pixels (row-major) are in `out`, an NHWC activation of the output's shape;
  // null for those past the output.
  template <typename T>
  void output_pixels(const Geometry& geo, std::int64_t tile, T* out, T* (&at)[4]) const {
    std::int64_t n, oh, ow;
    locate(tile, n, oh, ow);
    for (int i = 0; i < 4; ++i) {
      const std::int64_t row = oh + i / 2 * p.dilation_y, col = ow + i % 2 * p.dilation_x;
      at[i] = row < p.out_h && col < p.out_w ? out + geo.y_offset(n, row, col, 0) : nullptr;
    }
  }

  // src[i] = where input pixel i of the tile's Patch x Patch patch (row-major) starts in x, an NHWC
  // activation; `zeros` (a pixel of zeros) for those in the padding.
  template <int Patch>
  void patch_pixels(const Geometry& geo, const float* x, const float* zeros, std::int64_t tile,
                    const float* (&src)[Patch * Patch]) const {
    std::int64_t n, oh, ow;
    locate(tile, n, oh, ow);
    for (int i = 0; i < Patch * Patch; ++i) {
      const std::int64_t ih = geo.input_row(oh, i / Patch), iw = geo.input_col(ow, i % Patch);
      src[i] = geo.row_inside(ih) && geo.col_inside(iw) ? x + geo.x_offset(n, ih, iw, 0) : zeros;
    }
  }

  const ConvParams& p;
  std::int64_t rows, cols, count;
};

// The tiles of StrideTwoData: dx in blocks of 4x4 pixels from (4 * row, 4 * column), each reading 3x3
// pixels of dy from line (4t + pad - 1) / 2 on along each axis. `pass` is the forward pass over dy that
// gives dx (its input dy, its output dx, its channels the layer's exchanged) with the layer's padding, odd
// both ways (see winograd_stride_two_data_gradient_applies); only its sizes and padding are read.
struct StrideTwoDataGrid {
  explicit StrideTwoDataGrid(const ConvParams& pass)
      : p(pass),
        rows(ceil_div(pass.out_h, 4)),
        cols(ceil_div(pass.out_w, 4)),
        count(pass.batch * rows * cols) {}

  // Tile `tile`'s image and its row and column in the grid.
  void locate(std::int64_t tile, std::int64_t& n, std::int64_t& row, std::int64_t& col) const {
    n = tile / (rows * cols);
    row = tile / cols % rows;
    col = tile % cols;
  }

  // Where the tile's 16 pixels of dx (row-major) are in `out`, null for those past dx.
  void output_pixels(const Geometry& geo, std::int64_t tile, float* out, float* (&at)[16]) const {
    std::int64_t n, row, col;
    locate(tile, n, row, col);
    for (int i = 0; i < 16; ++i) {
      const std::int64_t ih = 4 * row + i / 4, iw = 4 * col + i % 4;
      at[i] = ih < p.out_h && iw < p.out_w ? out + geo.y_offset(n, ih, iw, 0) : nullptr;
    }
  }

  // src[i] = where pixel i of the tile's 3x3 patch of dy (row-major) starts in dy; `zeros` for those past
  // its borders.
  template <int Patch>
  void patch_pixels(const Geometry& geo, const float* dy, const float* zeros, std::int64_t tile,
                    const float* (&src)[Patch * Patch]) const {
    static_assert(Patch == 3);
    std::int64_t n, row, col;
    locate(tile, n, row, col);
    const std::int64_t top = (4 * row + p.pad_top - 1) / 2, left = (4 * col + p.pad_left - 1) / 2;
    for (int i = 0; i < 9; ++i) {
      const std::int64_t oh = top + i / 3, ow = left + i % 3;
      src[i] = oh < p.in_h && ow < p.in_w ? dy + geo.x_offset(n, oh, ow, 0) : zeros;
    }
  }

  const ConvParams& p;
  std::int64_t rows, cols, count;
};

// A dense 3x3 stride-1 layer as both weight-gradient schemes see it (convolution_weights_winograd.cpp and
// convolution_weights_winograd_few_tiles.cpp): its geometry, its tiles, dy and x.
struct WinogradWeightsLayer {
  using S = StrideOne;  // see StrideTwo for why not at stride 2
  static constexpr int positions = S::positions;

  WinogradWeightsLayer(const ConvParams& p, const float* dy, const float* x)
      : geo(p), grid(p), dy(dy), x(x), channels(p.in_c), outputs(p.out_c) {}

  Geometry geo;
  TileGrid grid;
  const float* dy;
  const float* x;
  std::int64_t channels, outputs;
};

// The weight gradient's Z = A dY A^T of one tile, for the output channels [o, o_end): `src` are the tile's
// four pixels of dy (null outside the output), at(xi, o) where Z[xi] of channel o goes (the `lanes` values of
// a vector from o lie contiguous); db[o] += the pixels' dy.
template <typename S, typename At>
__attribute__((always_inline)) inline void transform_tile_gradients(const float* const (&src)[4],
                                                                    std::int64_t o, std::int64_t o_end,
                                                                    float* db, const At& at) {
  for (; o + lanes <= o_end; o += lanes) {
    Vec d[4], zv[S::positions], sum = load(db + o);
    for (int i = 0; i < 4; ++i) d[i] = src[i] ? load(src[i] + o) : Vec{};
    for (int i = 0; i < 4; ++i) sum += d[i];
    store(db + o, sum);
    transform_output_gradient<S>(d, zv);
    for (int xi = 0; xi < S::positions; ++xi) store(at(xi, o), zv[xi]);
  }
  for (; o < o_end; ++o) {
    float d[4], zv[S::positions];
    for (int i = 0; i < 4; ++i) d[i] = src[i] ? src[i][o] : 0.0f;
    for (int i = 0; i < 4; ++i) db[o] += d[i];
    transform_output_gradient<S>(d, zv);
    for (int xi = 0; xi < S::positions; ++xi) *at(xi, o) = zv[xi];
  }
}

// Transforms the input patches of consecutive tiles, from a first one: v[xi * stride + c] = V[xi][tile][c] =
// (B^T d B)[xi] for every channel c of the tile's input patch d (an NHWC x; `zeros` holds a pixel of zeros
// for the padding). The patch's pixels are as many streams as it has pixels, too many for the hardware
// prefetchers to follow: the next tile's are asked for meanwhile, a vector of channels at a time, and their
// places carried over to that tile.
template <typename S>
class TilePatches {
 public:
  static constexpr int pixels = S::patch * S::patch, positions = S::positions;

  TilePatches(const Geometry& geo, const typename S::Grid& grid, const float* x, const float* zeros,
              std::int64_t tile)
      : geo_(geo), grid_(grid), x_(x), zeros_(zeros), tile_(tile) {
    if (tile_ < grid_.count) locate_next();  // none for empty ranges
  }

  // Transforms the next tile's patch into v (the tile must be in the grid).
  void transform_next(float* v, std::int64_t stride) {
    transform_next_to([&](int xi, std::int64_t c) { return v + xi * stride + c; });
  }

  // The same into at(xi, c), where the `lanes` values of a vector of channels from c lie contiguous.
  template <typename At>
  void transform_next_to(const At& at) {
    const float* src[pixels];
    std::copy_n(next_, pixels, src);
    if (++tile_ < grid_.count) locate_next();
    const std::int64_t channels = geo_.p.in_c;
    std::int64_t c = 0;
    for (; c + lanes <= channels; c += lanes) {
      Vec d[pixels], t[positions];
      for (int i = 0; i < pixels; ++i) __builtin_prefetch(next_[i] + c);
      for (int i = 0; i < pixels; ++i) d[i] = load(src[i] + c);
      transform_patch<S>(d, t);
      for (int i = 0; i < positions; ++i) store(at(i, c), t[i]);
    }
    for (; c < channels; ++c) {
      float d[pixels], t[positions];
      for (int i = 0; i < pixels; ++i) d[i] = src[i][c];
      transform_patch<S>(d, t);
      for (int i = 0; i < positions; ++i) *at(i, c) = t[i];
    }
  }

 private:
  void locate_next() { grid_.template patch_pixels<S::patch>(geo_, x_, zeros_, tile_, next_); }

  const Geometry& geo_;
  const typename S::Grid& grid_;
  const float* x_;
  const float* zeros_;
  std::int64_t tile_;  // the next tile to transform
  const float* next_[pixels] = {};
};

}  // namespace gradstate::cpu::GRADSTATE_ISA_NAMESPACE
