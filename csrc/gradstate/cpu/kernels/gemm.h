// The GEMM machinery of the convolution kernels of one ISA level: the register-blocked microkernel and the
// packing of im2col panels (the input pixels each kernel tap of an output pixel reads), never materialised
// beyond one panel.
#pragma once

#include <cstdint>

#include "gradstate/cpu/kernels/conv_geometry.h"
#include "gradstate/cpu/kernels/vec.h"
#include "gradstate/cpu/thread_pool.h"

namespace gradstate::cpu::GRADSTATE_ISA_NAMESPACE {

// The register tile of the microkernel is MR rows by NV vectors (NR columns) of the output: two shapes per
// level, and each problem takes the one that wastes the fewest multiply-adds on padding. AVX2 has 16
// vector registers (tiles of 12 accumulators); AVX-512 and NEON have 32 (24 accumulators).
#if GRADSTATE_VECTOR_BYTES == 32
constexpr int tile_a[2] = {6, 2}, tile_b[2] = {4, 3};
#elif GRADSTATE_VECTOR_BYTES >= 16
constexpr int tile_a[2] = {6, 4}, tile_b[2] = {8, 3};
#else
constexpr int tile_a[2] = {4, 4}, tile_b[2] = {4, 4};
#endif

// Whether tile_a's vectors cover `count` columns with no more padding than tile_b's.
inline bool tile_a_pads_least(std::int64_t count) {
  auto padded = [&](const int (&tile)[2]) {
    return (count + tile[1] * lanes - 1) / (tile[1] * lanes) * tile[1] * lanes;
  };
  return padded(tile_a) <= padded(tile_b);
}

// Padded tile area per useful element when the tile's MR rows run over `rows` values and its NV vectors
// over `cols` values.
inline double tile_waste(std::int64_t rows, std::int64_t cols, const int (&tile)[2]) {
  const std::int64_t mr = tile[0], nr = tile[1] * lanes;
  return static_cast<double>(round_up(rows, mr)) * round_up(cols, nr) / (static_cast<double>(rows) * cols);
}

// acc (MR x NR) += a (kc x MR) * b (kc x NR), row k of b at b[k * ldb] (row by row when packed). a is
// k-major (a[k * lda + m]), or m-major with RowMajorA (a[m * lda + k]).
template <int MR, int NV, bool RowMajorA>
__attribute__((always_inline)) inline void accumulate(Vec (&acc)[MR][NV], std::int64_t kc, const float* a,
                                                      std::int64_t lda, const float* b,
                                                      std::int64_t ldb = NV * lanes) {
  for (std::int64_t k = 0; k < kc; ++k) {
    Vec bv[NV];
    for (int v = 0; v < NV; ++v) bv[v] = load(b + k * ldb + v * lanes);
    for (int m = 0; m < MR; ++m) {
      const Vec av = broadcast(RowMajorA ? a[m * lda + k] : a[k * lda + m]);
      for (int v = 0; v < NV; ++v) acc[m][v] += av * bv[v];
    }
  }
}

// c[rows x cols] += acc (c has row stride ldc), or c[rows x cols] = acc without Accumulate.
template <int MR, int NV, bool Accumulate>
__attribute__((always_inline)) inline void store_tile(const Vec (&acc)[MR][NV], float* c, std::int64_t ldc,
                                                      int rows, int cols) {
  constexpr int NR = NV * lanes;
  if (rows == MR && cols == NR) {
    for (int m = 0; m < MR; ++m)
      for (int v = 0; v < NV; ++v)
        store(c + m * ldc + v * lanes, Accumulate ? load(c + m * ldc + v * lanes) + acc[m][v] : acc[m][v]);
    return;
  }
  for (int m = 0; m < rows; ++m) {
    float row[NR];
    for (int v = 0; v < NV; ++v) store(row + v * lanes, acc[m][v]);
    for (int j = 0; j < cols; ++j) c[m * ldc + j] = Accumulate ? c[m * ldc + j] + row[j] : row[j];
  }
}

// The register tile of the microkernel is MR x NR of the output c: c[rows x cols] (+)= a (kc x MR) *
// b (kc x NR), see accumulate and store_tile.
template <int MR, int NV, bool RowMajorA = false, bool Accumulate = true>
inline void microkernel(std::int64_t kc, const float* a, std::int64_t lda, const float* b, float* c,
                        std::int64_t ldc, int rows, int cols) {
  Vec acc[MR][NV] = {};
  accumulate<MR, NV, RowMajorA>(acc, kc, a, lda, b);
  store_tile<MR, NV, Accumulate>(acc, c, ldc, rows, cols);
}

// The A operand of a tile, as `count` stretches of the k dimension of `kc` each, one after another: row m
// of stretch i at a + i * stride + m * lda. In place in x, a stretch is a kernel row, whose taps are
// contiguous; a packed panel is one stretch.
struct Runs {
  const float* a;
  std::int64_t stride;
  int count;
  std::int64_t kc, lda;
};

// c[rows x cols] = init + the product over the runs of k (b holds their rows one after another), summed in
// registers and stored once; init is one row of NR values added to every row of the tile. With `streaming`
// (an output too large to cache) whole tiles go past the caches, whose lines are then never read before
// they are written. A nonzero `ahead` asks, a cache line at a time, for the lines of A that many floats
// further on: those of the next tile, read from far caches or memory the first time.
template <int MR, int NV>
inline void microkernel_runs(const Runs& runs, const float* b, bool streaming, const float* init, float* c,
                             std::int64_t ldc, int rows, int cols, std::int64_t ahead) {
  constexpr int NR = NV * lanes;
  const bool streamed = streaming && rows == MR && cols == NR && aligned(c) && ldc % lanes == 0;
  // The first write of c's lines: fetched while the tile is computed rather than when it is stored.
  if (!streamed)
    for (int m = 0; m < rows; ++m)
      for (int j = 0; j < cols; j += lanes) __builtin_prefetch(c + m * ldc + j, 1);
  Vec acc[MR][NV];
  for (int v = 0; v < NV; ++v) {
    const Vec start = load(init + v * lanes);
    for (int m = 0; m < MR; ++m) acc[m][v] = start;
  }
  for (int r = 0; r < runs.count; ++r, b += runs.kc * NR) {
    const float* a = runs.a + r * runs.stride;
    if (ahead == 0) {
      accumulate<MR, NV, true>(acc, runs.kc, a, runs.lda, b);
      continue;
    }
    // Steps of a line from a, which need not start one: the row's last line is asked for on its own.
    for (int m = 0; m < MR; ++m) __builtin_prefetch(a + m * runs.lda + runs.kc - 1 + ahead);
    for (std::int64_t k = 0; k < runs.kc; k += line_floats) {
      for (int m = 0; m < MR; ++m) __builtin_prefetch(a + m * runs.lda + k + ahead);
      accumulate<MR, NV, true>(acc, min_of(line_floats, runs.kc - k), a + k, runs.lda, b + k * NR);
    }
  }
  if (streamed) {
    for (int m = 0; m < MR; ++m)
      for (int v = 0; v < NV; ++v) stream(c + m * ldc + v * lanes, acc[m][v]);
  } else {
    store_tile<MR, NV, false>(acc, c, ldc, rows, cols);
  }
}

// Packing asks for the source lines of the pixel this many columns ahead on its output row: the loads of
// each pixel's runs otherwise wait on memory in turn (r3x3_128_s2's weight gradient on two threads, medians
// of alternating runs: 9.98-10.25 -> 9.64-9.72 ms).
constexpr std::int64_t pack_ahead = 4;

// Asks for the cache lines of [p, p + count).
inline void ask_for_lines(const float* p, std::int64_t count) {
  for (std::int64_t i = 0; i < count; i += line_floats) __builtin_prefetch(p + i);
  __builtin_prefetch(p + count - 1);
}

// Output pixel k (counted over the batch) as (image, output row, output column).
inline void pixel_of(const ConvParams& p, std::int64_t k, std::int64_t& img, std::int64_t& oh,
                     std::int64_t& ow) {
  ow = k % p.out_w;
  const std::int64_t rest = k / p.out_w;
  oh = rest % p.out_h;
  img = rest / p.out_h;
}

// The output pixel after (img, oh, ow).
inline void next_pixel(const ConvParams& p, std::int64_t& img, std::int64_t& oh, std::int64_t& ow) {
  if (++ow == p.out_w) {
    ow = 0;
    if (++oh == p.out_h) oh = 0, ++img;
  }
}

// Writes `count` values into columns [col, col + count) of row k of a panel b[W-block][k][W] of kc rows,
// splitting them at block boundaries: src[0], src[1], ... or zeros when src is null.
inline void put(std::int64_t W, float* b, std::int64_t kc, std::int64_t k, std::int64_t col,
                std::int64_t count, const float* src) {
  while (count > 0) {
    const std::int64_t lane = col % W, piece = min_of<std::int64_t>(W - lane, count);
    float* dst = b + (col / W) * kc * W + k * W + lane;
    // Explicit vector loops: the pieces are short, and library copies of unknown length start slowly.
    std::int64_t i = 0;
    if (src == nullptr) {
      for (; i + lanes <= piece; i += lanes) store(dst + i, Vec{});
      for (; i < piece; ++i) dst[i] = 0.0f;
    } else {
      for (; i + lanes <= piece; i += lanes) store(dst + i, load(src + i));
      for (; i < piece; ++i) dst[i] = src[i];
      src += piece;
    }
    col += piece;
    count -= piece;
  }
}

// b[W-block][k][W] = columns [j0, j0 + nc) of X (im2col of group g's input) for output pixels
// [k0, k0 + kc), zero in the padding and beyond nc; with W >= nc, a row-major panel of row stride W. Column j
// = (kh * KW + kw) * ig + i; one kernel row kh spans KW * ig columns. x is NHWC here (run_planar converts
// NCHW), so each tap's ig channels are contiguous. With AskAhead (for long runs of pixels, as the weight
// gradient packs), it asks for the source lines pack_ahead pixels on.
template <bool AskAhead>
void pack_columns(const Geometry& geo, const float* x, std::int64_t W, std::int64_t g, std::int64_t j0,
                  std::int64_t nc, std::int64_t k0, std::int64_t kc, float* b) {
  const ConvParams& p = geo.p;
  const std::int64_t ig = geo.in_per_group, row_cols = p.kernel_w * ig;
  const std::int64_t padded_nc = round_up(nc, W);
  // Without groups and dilation, the taps of one kernel row read one contiguous run of x.
  const bool contiguous_rows = p.groups == 1 && p.dilation_x == 1;
  const bool ask_ahead = AskAhead && p.stride_x * geo.x.w >= line_floats;
  std::int64_t img, oh, ow;
  pixel_of(p, k0, img, oh, ow);
  for (std::int64_t k = 0; k < kc; ++k) {
    for (std::int64_t kh = j0 / row_cols; kh < p.kernel_h && kh * row_cols < j0 + nc; ++kh) {
      const std::int64_t row = kh * row_cols;
      const std::int64_t first = max_of(row, j0), last = min_of(row + row_cols, j0 + nc);
      const std::int64_t ih = geo.input_row(oh, kh);
      if (!geo.row_inside(ih)) {
        put(W, b, kc, k, first - j0, last - first, nullptr);
      } else if (contiguous_rows) {
        // Taps kw in [kw_lo, kw_hi) read inside the image.
        const std::int64_t left = geo.input_col(ow, 0);
        const std::int64_t kw_lo = min_of<std::int64_t>(p.kernel_w, max_of<std::int64_t>(0, -left));
        const std::int64_t kw_hi = max_of(kw_lo, min_of<std::int64_t>(p.kernel_w, p.in_w - left));
        const std::int64_t v0 = min_of(max_of(row + kw_lo * ig, first), last);
        const std::int64_t v1 = min_of(max_of(row + kw_hi * ig, v0), last);
        // Column j's value is x[run + j]; the offset is negative when the row starts in the padding.
        const std::int64_t run = geo.x_offset(img, ih, left, 0) - row;
        put(W, b, kc, k, first - j0, v0 - first, nullptr);
        if (v1 > v0) {
          put(W, b, kc, k, v0 - j0, v1 - v0, x + (run + v0));
          // The same taps pack_ahead pixels on, while they still read inside this row of x, when a pixel's
          // run starts a line or more past the last one's (nearer, the lines are already on their way).
          if (ask_ahead && ow + pack_ahead < p.out_w && geo.input_col(ow + pack_ahead, kw_hi - 1) < p.in_w)
            ask_for_lines(x + (run + v0 + pack_ahead * p.stride_x * geo.x.w), v1 - v0);
        }
        put(W, b, kc, k, v1 - j0, last - v1, nullptr);
      } else {
        for (std::int64_t j = first; j < last;) {
          const std::int64_t kw = (j - row) / ig, tap_end = min_of(row + (kw + 1) * ig, last);
          const std::int64_t iw = geo.input_col(ow, kw);
          const float* src =
              geo.col_inside(iw) ? x + geo.x_offset(img, ih, iw, g) + (j - row - kw * ig) : nullptr;
          put(W, b, kc, k, j - j0, tap_end - j, src);
          j = tap_end;
        }
      }
    }
    put(W, b, kc, k, nc, padded_nc - nc, nullptr);
    next_pixel(p, img, oh, ow);
  }
}

// dst[c * dst_stride + r] = src[r * src_stride + c] for r < rows and c < cols, element by element.
inline void transpose_elements(const float* src, std::int64_t rows, std::int64_t cols,
                               std::int64_t src_stride, float* dst, std::int64_t dst_stride) {
  for (std::int64_t c = 0; c < cols; ++c)
    for (std::int64_t r = 0; r < rows; ++r) dst[c * dst_stride + r] = src[r * src_stride + c];
}

constexpr std::int64_t transpose_tile = 16;

#if GRADSTATE_VECTOR_BYTES == 32 && defined(__AVX__)
// transpose_elements for 8 x 8 values, in registers: pairs of rows interleaved, then pairs of pairs, then
// the 128-bit halves exchanged (8 loads, 24 shuffles, 8 stores).
inline void transpose_8x8(const float* src, std::int64_t src_stride, float* dst, std::int64_t dst_stride) {
  __m256 r[8], t[8];
  for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(src + i * src_stride);
  for (int i = 0; i < 8; i += 2) {
    t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
  }
  // r[4h + q]: in each 128-bit half, column q (and q + 4) of rows 4h..4h+3.
  for (int h = 0; h < 2; ++h) {
    const __m256 *a = t + 4 * h, *b = t + 4 * h + 2;
    r[4 * h] = _mm256_shuffle_ps(a[0], b[0], 0x44);
    r[4 * h + 1] = _mm256_shuffle_ps(a[0], b[0], 0xEE);
    r[4 * h + 2] = _mm256_shuffle_ps(a[1], b[1], 0x44);
    r[4 * h + 3] = _mm256_shuffle_ps(a[1], b[1], 0xEE);
  }
  for (int q = 0; q < 4; ++q) {
    _mm256_storeu_ps(dst + q * dst_stride, _mm256_permute2f128_ps(r[q], r[4 + q], 0x20));
    _mm256_storeu_ps(dst + (4 + q) * dst_stride, _mm256_permute2f128_ps(r[q], r[4 + q], 0x31));
  }
}
#endif

#if GRADSTATE_VECTOR_BYTES == 64
// Shuffle masks of two 16-lane vectors a and b (lane values 0-15 take a's lanes, 16-31 b's), each one
// instruction on AVX-512. Written with the vector extension rather than AVX-512 intrinsics, so that test
// builds compiling this level for AVX2 (GRADSTATE_X86_V4_ON_AVX2) run the very same steps.

// In each 128-bit block, pieces of `width` lanes from a and b in turn, from the block's lane `first` on:
// unpcklps (width 1, first 0), unpckhps (1, 2), unpcklpd (2, 0), unpckhpd (2, 2).
inline VecIndex interleave_mask(int width, int first) {
  VecIndex mask;
  for (int l = 0; l < lanes; ++l) {
    const int block = l / 4, p = l % 4, from_b = (p / width) % 2;
    mask[l] = from_b * lanes + block * 4 + first + p / (2 * width) * width + p % width;
  }
  return mask;
}

// 128-bit blocks first and first + 2 of a, then the same of b: shuff32x4 with 0x88 (first 0), 0xDD (1).
inline VecIndex blocks_mask(int first) {
  VecIndex mask;
  for (int l = 0; l < lanes; ++l) {
    const int k = l / 4, from_b = k / 2, block = first + 2 * (k % 2);
    mask[l] = from_b * lanes + block * 4 + l % 4;
  }
  return mask;
}
#endif

// transpose_elements for one tile of 16 x 16 values: in registers with 16-lane vectors (16 rows loaded
// whole, 64 shuffles, 16 stores) and, in four blocks of 8 x 8, on AVX2.
inline void transpose_tile_of_16(const float* src, std::int64_t src_stride, float* dst,
                                 std::int64_t dst_stride) {
#if GRADSTATE_VECTOR_BYTES == 32 && defined(__AVX__)
  for (int i = 0; i < 16; i += 8)
    for (int j = 0; j < 16; j += 8)
      transpose_8x8(src + i * src_stride + j, src_stride, dst + j * dst_stride + i, dst_stride);
#elif GRADSTATE_VECTOR_BYTES == 64
  Vec r[16], t[16];
  for (int i = 0; i < 16; ++i) r[i] = load(src + i * src_stride);
  // Within each 128-bit block: pairs of rows interleaved, then groups of four (block k of r[4i + j] holds
  // rows 4i..4i+3 of column 4k + j) ...
  for (int i = 0; i < 16; i += 2) {
    t[i] = __builtin_shuffle(r[i], r[i + 1], interleave_mask(1, 0));
    t[i + 1] = __builtin_shuffle(r[i], r[i + 1], interleave_mask(1, 2));
  }
  for (int i = 0; i < 16; i += 4) {
    r[i] = __builtin_shuffle(t[i], t[i + 2], interleave_mask(2, 0));
    r[i + 1] = __builtin_shuffle(t[i], t[i + 2], interleave_mask(2, 2));
    r[i + 2] = __builtin_shuffle(t[i + 1], t[i + 3], interleave_mask(2, 0));
    r[i + 3] = __builtin_shuffle(t[i + 1], t[i + 3], interleave_mask(2, 2));
  }
  // ... then the blocks gathered across the groups: column 4k + j from block k of r[j], r[4 + j], r[8 + j]
  // and r[12 + j].
  for (int j = 0; j < 4; ++j) {
    const Vec u0 = __builtin_shuffle(r[j], r[4 + j], blocks_mask(0)),
              u1 = __builtin_shuffle(r[j], r[4 + j], blocks_mask(1));
    const Vec u2 = __builtin_shuffle(r[8 + j], r[12 + j], blocks_mask(0)),
              u3 = __builtin_shuffle(r[8 + j], r[12 + j], blocks_mask(1));
    store(dst + j * dst_stride, __builtin_shuffle(u0, u2, blocks_mask(0)));
    store(dst + (4 + j) * dst_stride, __builtin_shuffle(u1, u3, blocks_mask(0)));
    store(dst + (8 + j) * dst_stride, __builtin_shuffle(u0, u2, blocks_mask(1)));
    store(dst + (12 + j) * dst_stride, __builtin_shuffle(u1, u3, blocks_mask(1)));
  }
#else
  transpose_elements(src, transpose_tile, transpose_tile, src_stride, dst, dst_stride);
#endif
}

// dst[c * dst_stride + r] = src[r * src_stride + c] for r < rows and c < cols (NCHW <-> NHWC per image,
// weight layouts), in tiles of 16 x 16 values so that reads and writes both use whole cache lines.
inline void transpose(const float* src, std::int64_t rows, std::int64_t cols, std::int64_t src_stride,
                      float* dst, std::int64_t dst_stride) {
  for (std::int64_t r0 = 0; r0 < rows; r0 += transpose_tile)
    for (std::int64_t c0 = 0; c0 < cols; c0 += transpose_tile) {
      const float* from = src + r0 * src_stride + c0;
      float* to = dst + c0 * dst_stride + r0;
      const std::int64_t tile_rows = min_of(transpose_tile, rows - r0),
                         tile_cols = min_of(transpose_tile, cols - c0);
      if (tile_rows == transpose_tile && tile_cols == transpose_tile) {
        transpose_tile_of_16(from, src_stride, to, dst_stride);
      } else {
        transpose_elements(from, tile_rows, tile_cols, src_stride, to, dst_stride);
      }
    }
}

// Image i of dst = image i of src transposed (rows x cols into cols x rows), for `images` images one after
// another, a task per image: NCHW tensors into NHWC (rows the channels) and back (rows the pixels).
inline void transpose_images(const float* src, std::int64_t images, std::int64_t rows, std::int64_t cols,
                             float* dst) {
  parallel_for(images, [&](std::int64_t i) {
    transpose(src + i * rows * cols, rows, cols, cols, dst + i * rows * cols, rows);
  });
}

}  // namespace gradstate::cpu::GRADSTATE_ISA_NAMESPACE
