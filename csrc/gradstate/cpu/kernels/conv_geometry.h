// Index arithmetic of a convolution, shared by the convolution kernels of one ISA level.
#pragma once

#include <algorithm>
#include <cstdint>
#include <utility>
#include <vector>

#include "gradstate/core/params.h"
#include "gradstate/cpu/kernels/vec.h"

namespace gradstate::cpu::GRADSTATE_ISA_NAMESPACE {

// Kernels of up to this many taps (9 x 9) keep one vector per tap in a local array: their weights, or their
// source pixels; larger ones run simpler code.
constexpr std::int64_t max_vector_taps = 81;

// Pixels of a plane of x and of y, and taps of the kernel.
inline std::int64_t in_plane_of(const ConvParams& p) { return static_cast<std::int64_t>(p.in_h) * p.in_w; }
inline std::int64_t out_plane_of(const ConvParams& p) { return static_cast<std::int64_t>(p.out_h) * p.out_w; }
inline std::int64_t taps_of(const ConvParams& p) {
  return static_cast<std::int64_t>(p.kernel_h) * p.kernel_w;
}

// The indices j in [0, count) with lead <= j * stride <= last, as [first, end) (first == end when there are
// none): the output columns whose taps all read inside a row, or the input lines of a stride phase. The
// bounds are rounded toward the inside, also for a negative lead or last.
struct IndexRange {
  std::int64_t first, end;
};

inline IndexRange indices_between(std::int64_t lead, std::int64_t last, std::int64_t stride,
                                  std::int64_t count) {
  const std::int64_t first = lead <= 0 ? 0 : min_of(count, ceil_div(lead, stride));
  const std::int64_t end = last < 0 ? first : max_of(first, min_of(count, last / stride + 1));
  return {first, end};
}

// Element strides of an activation (n, c, h, w) in either layout.
struct Strides {
  std::int64_t n, c, h, w;
};

inline Strides strides_of(Layout layout, std::int64_t channels, std::int64_t height, std::int64_t width) {
  const std::int64_t image = channels * height * width;
  if (layout == Layout::NHWC) return {image, 1, width * channels, channels};
  return {image, height * width, width, 1};
}

// Index arithmetic shared by the kernels: where activation elements are, and which input pixel an
// (output pixel, kernel tap) pair reads.
struct Geometry {
  explicit Geometry(const ConvParams& p)
      : p(p),
        x(strides_of(p.layout, p.in_c, p.in_h, p.in_w)),
        y(strides_of(p.layout, p.out_c, p.out_h, p.out_w)),
        in_per_group(p.in_c / p.groups),
        out_per_group(p.out_c / p.groups) {}

  // Outside [0, in_h) means a zero from the padding.
  std::int64_t input_row(std::int64_t oh, std::int64_t kh) const {
    return oh * p.stride_y - p.pad_top + kh * p.dilation_y;
  }
  std::int64_t input_col(std::int64_t ow, std::int64_t kw) const {
    return ow * p.stride_x - p.pad_left + kw * p.dilation_x;
  }
  bool row_inside(std::int64_t ih) const { return ih >= 0 && ih < p.in_h; }
  bool col_inside(std::int64_t iw) const { return iw >= 0 && iw < p.in_w; }

  // Offset of x[n, ih, iw, first channel of group g].
  std::int64_t x_offset(std::int64_t n, std::int64_t ih, std::int64_t iw, std::int64_t g) const {
    return n * x.n + ih * x.h + iw * x.w + g * in_per_group * x.c;
  }
  std::int64_t y_offset(std::int64_t n, std::int64_t oh, std::int64_t ow, std::int64_t o) const {
    return n * y.n + oh * y.h + ow * y.w + o * y.c;
  }
  // Offset of w[o, kh, kw, 0] in OHWI.
  std::int64_t w_offset(std::int64_t o, std::int64_t kh, std::int64_t kw) const {
    return ((o * p.kernel_h + kh) * p.kernel_w + kw) * in_per_group;
  }

  const ConvParams& p;
  Strides x, y;
  std::int64_t in_per_group, out_per_group;
};

// NHWC: the lines of the rows of x that output row oh + 1 of image n reads and output row oh does not (none
// after the last output row), asked for over `steps` calls of next() while row oh is swept.
inline LinesAhead next_rows_ahead(const Geometry& geo, const float* x, std::int64_t n, std::int64_t oh,
                                  std::int64_t steps) {
  const ConvParams& p = geo.p;
  if (oh + 1 >= p.out_h) return {};
  const std::int64_t first = max_of<std::int64_t>(geo.input_row(oh, p.kernel_h - 1) + 1, 0);
  const std::int64_t last = min_of<std::int64_t>(geo.input_row(oh + 1, p.kernel_h - 1), p.in_h - 1);
  if (last < first) return {};
  return LinesAhead(x + geo.x_offset(n, first, 0, 0), (last + 1 - first) * geo.x.h, steps);
}

// Along one dimension, the output line whose tap reads input line i (out * stride - pad + tap * dilation =
// i), or -1 for none.
inline std::int64_t output_reading(std::int64_t i, std::int64_t tap, std::int64_t stride, std::int64_t pad,
                                   std::int64_t dilation, std::int64_t outputs) {
  const std::int64_t at = i + pad - tap * dilation;
  if (at < 0 || at % stride != 0 || at / stride >= outputs) return -1;
  return at / stride;
}

// Along one dimension, the (tap, output line) pairs that read each input line i, by ascending output (so by
// descending tap): of(i)[r] for r < counts[i].
struct Readers {
  struct Pair {
    std::int64_t tap, out;
  };
  Readers(std::int64_t inputs, std::int64_t outputs, int kernel, int stride, int pad, int dilation)
      : kernel(kernel), counts(inputs, 0), pairs(inputs * kernel) {
    for (std::int64_t i = 0; i < inputs; ++i)
      for (std::int64_t tap = kernel - 1; tap >= 0; --tap) {
        const std::int64_t out = output_reading(i, tap, stride, pad, dilation, outputs);
        if (out >= 0) pairs[i * kernel + counts[i]++] = {tap, out};
      }
  }
  const Pair* of(std::int64_t i) const { return pairs.data() + i * kernel; }
  std::int64_t most() const { return *std::max_element(counts.begin(), counts.end()); }
  std::int64_t kernel;
  std::vector<std::int64_t> counts;
  std::vector<Pair> pairs;
};

// Along a row, the input columns of one stride phase, iw = residue + stride * j: each reads, at every tap kw
// with kw * dilation = residue + pad (mod stride), dy column ow = j + offset. Columns [first, end) of the
// phase have every such tap inside dy; the rest are border columns.
struct ColumnPhase {
  struct Tap {
    std::int64_t kw, offset;
  };
  std::int64_t residue, first, end;
  std::vector<Tap> taps;
};

inline std::vector<ColumnPhase> column_phases(const ConvParams& p) {
  std::vector<ColumnPhase> phases;
  for (std::int64_t residue = 0; residue < min_of<std::int64_t>(p.stride_x, p.in_w); ++residue) {
    ColumnPhase phase{residue, 0, ceil_div(p.in_w - residue, static_cast<std::int64_t>(p.stride_x)), {}};
    for (std::int64_t kw = 0; kw < p.kernel_w; ++kw) {
      const std::int64_t lead = residue + p.pad_left - kw * p.dilation_x;
      if (lead % p.stride_x != 0) continue;
      const std::int64_t offset = lead / p.stride_x;  // exact, so right for negative leads too
      phase.taps.push_back({kw, offset});
      phase.first = max_of(phase.first, -offset);
      phase.end = min_of(phase.end, p.out_w - offset);
    }
    phase.end = max_of(phase.first, phase.end);
    phases.push_back(std::move(phase));
  }
  return phases;
}

// Whether each input column lies outside its phase's [first, end): a border column.
inline std::vector<bool> border_columns(const ConvParams& p, const std::vector<ColumnPhase>& phases) {
  std::vector<bool> border(p.in_w, true);
  for (const ColumnPhase& phase : phases)
    for (std::int64_t j = phase.first; j < phase.end; ++j) border[phase.residue + j * p.stride_x] = false;
  return border;
}

// Calls visit(n, oh, ow, o, kh, kw, x_offset) for every (output element, tap) pair whose tap reads inside
// the image; taps that read the zero padding contribute nothing.
template <typename Visit>
void for_each_tap(const Geometry& geo, Visit&& visit) {
  const ConvParams& p = geo.p;
  for (std::int64_t n = 0; n < p.batch; ++n) {
    for (std::int64_t oh = 0; oh < p.out_h; ++oh) {
      for (std::int64_t ow = 0; ow < p.out_w; ++ow) {
        for (std::int64_t o = 0; o < p.out_c; ++o) {
          const std::int64_t g = o / geo.out_per_group;
          for (std::int64_t kh = 0; kh < p.kernel_h; ++kh) {
            const std::int64_t ih = geo.input_row(oh, kh);
            if (!geo.row_inside(ih)) continue;
            for (std::int64_t kw = 0; kw < p.kernel_w; ++kw) {
              const std::int64_t iw = geo.input_col(ow, kw);
              if (geo.col_inside(iw)) visit(n, oh, ow, o, kh, kw, geo.x_offset(n, ih, iw, g));
            }
          }
        }
      }
    }
  }
}

}  // namespace gradstate::cpu::GRADSTATE_ISA_NAMESPACE
