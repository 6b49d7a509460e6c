// The pieces of Winograd's F(2x2, 3x3) shared by the forward pass (convolution_winograd.cpp) and the weight
// gradient (convolution_weights_winograd.cpp): the transforms and the tiling of the output.
#pragma once

#include <cstdint>

#include "gradstate/cpu/kernels/conv_geometry.h"
#include "gradstate/cpu/kernels/vec.h"

namespace gradstate::cpu::GRADSTATE_ISA_NAMESPACE {

constexpr int positions = 16;  // of the 4x4 transforms
// Fewer channels than this leave the GEMMs too short to pay for the transforms.
constexpr std::int64_t min_winograd_channels = 16;

// Whether F(2x2, 3x3) computes the layer: groups of 1, a 3x3 kernel, stride 1 (any dilation).
inline bool winograd_shape(const ConvParams& p) {
  return p.groups == 1 && p.kernel_h == 3 && p.kernel_w == 3 && p.stride_y == 1 && p.stride_x == 1 &&
         p.in_c >= min_winograd_channels && p.out_c >= min_winograd_channels;
}

// d = B^T d B for a 4x4 patch d (row-major), with B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1].
template <typename T>
inline void transform_patch(T (&d)[positions]) {
  for (int i = 0; i < 4; ++i) {
    const T a0 = d[i], a1 = d[4 + i], a2 = d[8 + i], a3 = d[12 + i];
    d[i] = a0 - a2, d[4 + i] = a1 + a2, d[8 + i] = a2 - a1, d[12 + i] = a1 - a3;
  }
  for (int i = 0; i < 4; ++i) {
    T* row = d + 4 * i;
    const T a0 = row[0], a1 = row[1], a2 = row[2], a3 = row[3];
    row[0] = a0 - a2, row[1] = a1 + a2, row[2] = a2 - a1, row[3] = a1 - a3;
  }
}

// y (2x2, row-major) = A^T m A for a 4x4 m, with A^T = [1 1 1 0; 0 1 -1 -1].
template <typename T>
inline void transform_product(const T (&m)[positions], T (&y)[4]) {
  T t[2][4];
  for (int i = 0; i < 4; ++i) {
    t[0][i] = m[i] + m[4 + i] + m[8 + i];
    t[1][i] = m[4 + i] - m[8 + i] - m[12 + i];
  }
  for (int r = 0; r < 2; ++r) {
    y[2 * r] = t[r][0] + t[r][1] + t[r][2];
    y[2 * r + 1] = t[r][1] - t[r][2] - t[r][3];
  }
}

// u = G g G^T for a 3x3 kernel g (row-major), with G = [1 0 0; 1/2 1/2 1/2; 1/2 -1/2 1/2; 0 0 1].
template <typename T>
inline void transform_kernel(const T (&g)[9], T (&u)[positions]) {
  T gg[4][3];  // G g
  for (int i = 0; i < 3; ++i) {
    gg[0][i] = g[i];
    gg[1][i] = (g[i] + g[3 + i] + g[6 + i]) * 0.5f;
    gg[2][i] = (g[i] - g[3 + i] + g[6 + i]) * 0.5f;
    gg[3][i] = g[6 + i];
  }
  for (int r = 0; r < 4; ++r) {
    u[4 * r] = gg[r][0];
    u[4 * r + 1] = (gg[r][0] + gg[r][1] + gg[r][2]) * 0.5f;
    u[4 * r + 2] = (gg[r][0] - gg[r][1] + gg[r][2]) * 0.5f;
    u[4 * r + 3] = gg[r][2];
  }
}

// dz = A dy A^T for a 2x2 dy (row-major), the gradient of the 4x4 product whose transform gave y (see
// transform_product).
template <typename T>
inline void transform_output_gradient(const T (&dy)[4], T (&dz)[positions]) {
  T t[4][2];  // A dy
  for (int j = 0; j < 2; ++j) {
    t[0][j] = dy[j];
    t[1][j] = dy[j] + dy[2 + j];
    t[2][j] = dy[j] - dy[2 + j];
    t[3][j] = -dy[2 + j];
  }
  for (int r = 0; r < 4; ++r) {
    dz[4 * r] = t[r][0];
    dz[4 * r + 1] = t[r][0] + t[r][1];
    dz[4 * r + 2] = t[r][0] - t[r][1];
    dz[4 * r + 3] = -t[r][1];
  }
}

// dg = G^T du G, the gradient of the 3x3 kernel whose transform is u (see transform_kernel).
template <typename T>
inline void transform_kernel_gradient(const T (&du)[positions], T (&dg)[9]) {
  T t[3][4];  // G^T du, with G^T = [1 1/2 1/2 0; 0 1/2 -1/2 0; 0 1/2 1/2 1]
  for (int j = 0; j < 4; ++j) {
    t[0][j] = du[j] + (du[4 + j] + du[8 + j]) * 0.5f;
    t[1][j] = (du[4 + j] - du[8 + j]) * 0.5f;
    t[2][j] = (du[4 + j] + du[8 + j]) * 0.5f + du[12 + j];
  }
  for (int r = 0; r < 3; ++r) {
    dg[3 * r] = t[r][0] + (t[r][1] + t[r][2]) * 0.5f;
    dg[3 * r + 1] = (t[r][1] - t[r][2]) * 0.5f;
    dg[3 * r + 2] = (t[r][1] + t[r][2]) * 0.5f + t[r][3];
  }
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

  const ConvParams& p;
  std::int64_t rows, cols, count;
};

// v[xi * stride + c] = V[xi][tile][c] = (B^T d B)[xi] for every channel c of the tile's input patch d (an
// NHWC x; `zeros` holds a pixel of zeros for the padding).
inline void transform_input_patches(const Geometry& geo, const TileGrid& grid, const float* x,
                                    const float* zeros, std::int64_t tile, float* v, std::int64_t stride) {
  std::int64_t n, oh, ow;
  grid.locate(tile, n, oh, ow);
  const float* src[positions];
  for (int i = 0; i < positions; ++i) {
    const std::int64_t ih = geo.input_row(oh, i / 4), iw = geo.input_col(ow, i % 4);
    src[i] = geo.row_inside(ih) && geo.col_inside(iw) ? x + geo.x_offset(n, ih, iw, 0) : zeros;
  }
  const std::int64_t channels = geo.p.in_c;
  std::int64_t c = 0;
  for (; c + lanes <= channels; c += lanes) {
    Vec d[positions];
    for (int i = 0; i < positions; ++i) d[i] = load(src[i] + c);
    transform_patch(d);
    for (int i = 0; i < positions; ++i) store(v + i * stride + c, d[i]);
  }
  for (; c < channels; ++c) {
    float d[positions];
    for (int i = 0; i < positions; ++i) d[i] = src[i][c];
    transform_patch(d);
    for (int i = 0; i < positions; ++i) v[i * stride + c] = d[i];
  }
}

}  // namespace gradstate::cpu::GRADSTATE_ISA_NAMESPACE
