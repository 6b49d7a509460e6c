// The depthwise forward pass and weight gradient in NCHW: each (image, channel) plane is an
// independent 2-D convolution, run with vectors along the output row, several vectors of a row at once.
//
// A task copies its plane of x once into zero-padded rows, so that the pixels a tap reads for consecutive
// output columns are consecutive there: every tap is then one unaligned vector load and one FMA per output
// vector, with no bounds checks.
#include "gradstate/cpu/kernels/convolution_depthwise_nchw.h"

#include <cstring>
#include <limits>

#include "gradstate/cpu/kernels/conv_geometry.h"
#include "gradstate/cpu/kernels/vec.h"
#include "gradstate/cpu/thread_pool.h"

namespace gradstate::cpu::GRADSTATE_ISA_NAMESPACE {
namespace {

// The zero-padded rows of one plane of x, each split into its stride phases: phase f of a row holds its
// padded columns f, f + S, f + 2S, ... (S the stride along rows), so that the pixels a tap reads for
// consecutive output columns are consecutive there.
struct PaddedRows {
  std::int64_t length;  // floats per phase: whole output vectors plus the farthest tap's offset in the phase
  std::int64_t phases;  // S
  float* rows;          // [in_h][phases][length]
  // Where output column 0 reads at kernel column kw, from the start of its input row's phases: found once,
  // since the divisions by the stride cost more than a row's products.
  std::int64_t column[max_vector_taps];

  const float* at(std::int64_t ih, std::int64_t kw) const { return rows + ih * phases * length + column[kw]; }
};

PaddedRows padded_rows_of(const ConvParams& p, float* memory) {
  const std::int64_t vectors = ceil_div(p.out_w, lanes), farthest = (p.kernel_w - 1) * p.dilation_x;
  PaddedRows rows{vectors * lanes + farthest / p.stride_x + 1, p.stride_x, memory, {}};
  for (std::int64_t kw = 0; kw < p.kernel_w; ++kw) {
    const std::int64_t offset = kw * p.dilation_x;  // padded columns right of the first
    rows.column[kw] = offset % rows.phases * rows.length + offset / rows.phases;
  }
  return rows;
}

std::int64_t padded_rows_floats(const ConvParams& p) {
  const PaddedRows rows = padded_rows_of(p, nullptr);
  return p.in_h * rows.phases * rows.length;
}

// Phase f of row ih holds plane[ih][j * S + f - pad_left] at j, zero outside the plane.
void fill_padded_rows(const ConvParams& p, const float* plane, const PaddedRows& rows) {
  const std::int64_t S = rows.phases;
  for (std::int64_t f = 0; f < S; ++f) {
    // Column j of the phase is plane[ih][j * S + f - pad_left], inside the plane for j in [first, end).
    const auto [first, end] = indices_between(p.pad_left - f, p.in_w - 1 + p.pad_left - f, S, rows.length);
    for (std::int64_t ih = 0; ih < p.in_h; ++ih) {
      float* out = rows.rows + (ih * S + f) * rows.length;
      const float* in = plane + ih * p.in_w + (first * S + f - p.pad_left);
      std::memset(out, 0, sizeof(float) * first);
      if (S == 1) {
        std::memcpy(out + first, in, sizeof(float) * (end - first));
      } else {
        for (std::int64_t j = first; j < end; ++j) out[j] = in[(j - first) * S];
      }
      std::memset(out + end, 0, sizeof(float) * (rows.length - end));
    }
  }
}

// The taps of one output row that read inside the plane: where output column 0 reads each one, found once
// per row, and their weights. The kernel rows inside the plane are consecutive, so their taps' weights lie
// side by side from `weight` on. Filled in place: returning the struct by value copied it for every row
// (8% of 3x3 over 8x128x56x56 on one thread), and so did copying the weights.
struct RowTaps {
  int count = 0;
  const Vec* weight = nullptr;
  const float* at[max_vector_taps];
};

void row_taps(const ConvParams& p, const Vec* weight, const PaddedRows& rows, std::int64_t oh,
              RowTaps& taps) {
  taps.count = 0;
  taps.weight = nullptr;
  for (std::int64_t kh = 0; kh < p.kernel_h; ++kh) {
    const std::int64_t ih = oh * p.stride_y - p.pad_top + kh * p.dilation_y;
    if (ih < 0 || ih >= p.in_h) continue;
    if (!taps.weight) taps.weight = weight + kh * p.kernel_w;
    for (std::int64_t kw = 0; kw < p.kernel_w; ++kw, ++taps.count) taps.at[taps.count] = rows.at(ih, kw);
  }
}

// Output row oh from column ow on, Count vectors: as many independent sums, so that consecutive taps' FMAs
// need not wait for each other (one sum per vector waited on the FMA latency at every tap: 3x3 over
// 8x128x56x56, 2 threads, 2.5 ms).
template <int Count>
void forward_vectors(const ConvParams& p, const RowTaps& taps, float bias, std::int64_t ow, float* y) {
  Vec acc[Count];
  for (int v = 0; v < Count; ++v) acc[v] = broadcast(bias);
  for (int t = 0; t < taps.count; ++t) {
    const float* in = taps.at[t] + ow;
    for (int v = 0; v < Count; ++v) acc[v] += taps.weight[t] * load(in + v * lanes);
  }
  for (int v = 0; v < Count; ++v) {
    const std::int64_t at = ow + v * lanes;
    if (at + lanes <= p.out_w) {
      store(y + at, acc[v]);
    } else {
      for (std::int64_t l = 0; l < p.out_w - at; ++l) y[at + l] = acc[v][l];
    }
  }
}

// Output vectors summed at once: with AVX2's 16 registers, 8 sums leave room for the weight and the loads.
constexpr int row_block = 8;

// forward_vectors<count>, for a count below Max.
template <int Max>
void forward_last_vectors(int count, const ConvParams& p, const RowTaps& taps, float bias, std::int64_t ow,
                          float* y) {
  if constexpr (Max > 1) {
    if (count == Max - 1) return forward_vectors<Max - 1>(p, taps, bias, ow, y);
    forward_last_vectors<Max - 1>(count, p, taps, bias, ow, y);
  }
}

void forward_plane(const ConvParams& p, const float* plane, const float* next_plane, const float* w,
                   float bias, float* out, const PaddedRows& rows) {
  const std::int64_t taps = static_cast<std::int64_t>(p.kernel_h) * p.kernel_w;
  const std::int64_t vectors = ceil_div(p.out_w, lanes);
  Vec weight[max_vector_taps];
  for (std::int64_t t = 0; t < taps; ++t) weight[t] = broadcast(w[t]);
  fill_padded_rows(p, plane, rows);
  RowTaps row;
  // While this plane is swept, the lines of the next one, which its copy would otherwise wait on: 3x3 over
  // 8x128x56x56 on one thread, 3.1-3.2 -> 2.9-3.0 ms. (The next plane is this thread's next task but where
  // its run of tasks ends.)
  LinesAhead ahead;
  if (next_plane) ahead = LinesAhead(next_plane, static_cast<std::int64_t>(p.in_h) * p.in_w, p.out_h);
  for (std::int64_t oh = 0; oh < p.out_h; ++oh) {
    ahead.next();
    float* y = out + oh * p.out_w;
    row_taps(p, weight, rows, oh, row);
    std::int64_t v = 0;
    for (; v + row_block <= vectors; v += row_block) forward_vectors<row_block>(p, row, bias, v * lanes, y);
    forward_last_vectors<row_block>(static_cast<int>(vectors - v), p, row, bias, v * lanes, y);
  }
}

// ---- weight gradient ------------------------------------------------------------------------------------

// The widest kernel rows the weight gradient takes: each tap of a kernel row has its own sums in registers.
constexpr int max_weights_kernel_w = 7;

// sums[kw] += the sum over the plane of dy * x at tap (kh, kw), for the KW taps of kernel row kh: V whole
// vectors of a row at a time, V * KW independent sums (at least 8), so that the FMAs need not wait for each
// other; then the columns past the last whole vector one by one into lane 0, so that no product of dy and
// x at a pixel that the tap does not read (an Inf there would make a NaN) enters the sums.
template <int KW>
void add_kernel_row(const ConvParams& p, const PaddedRows& x_rows, const float* dy, std::int64_t kh,
                    Vec* sums) {
  constexpr int V = (8 + KW - 1) / KW;
  const std::int64_t whole = p.out_w / lanes * lanes;
  Vec acc[V][KW] = {};
  float rest[KW] = {};
  for (std::int64_t oh = 0; oh < p.out_h; ++oh) {
    const std::int64_t ih = oh * p.stride_y - p.pad_top + kh * p.dilation_y;
    const float* d = dy + oh * p.out_w;
    if (ih < 0 || ih >= p.in_h) {
      // The kernel row reads the padding: its products dy x 0 add nothing, unless a dy of the output row is
      // NaN or Inf, where the reference's 0 x Inf makes NaN of the row's taps.
      if (!all_finite(d, 1, p.out_w, p.out_w))
        for (float& r : rest) r = std::numeric_limits<float>::quiet_NaN();
      continue;
    }
    const float* x[KW];  // where output column 0 reads at each tap
    for (int kw = 0; kw < KW; ++kw) x[kw] = x_rows.at(ih, kw);
    const auto add = [&](auto count, std::int64_t at) {
      for (int u = 0; u < decltype(count)::value; ++u) {
        const Vec dv = load(d + at + u * lanes);
        for (int kw = 0; kw < KW; ++kw) acc[u][kw] += dv * load(x[kw] + at + u * lanes);
      }
    };
    std::int64_t ow = 0;
    for (; ow + V * lanes <= whole; ow += V * lanes) add(std::integral_constant<int, V>{}, ow);
    for (; ow < whole; ow += lanes) add(std::integral_constant<int, 1>{}, ow);
    for (; ow < p.out_w; ++ow)
      for (int kw = 0; kw < KW; ++kw) rest[kw] += d[ow] * x[kw][ow];
  }
  for (int kw = 0; kw < KW; ++kw) {
    for (int u = 0; u < V; ++u) sums[kw] += acc[u][kw];
    sums[kw][0] += rest[kw];
  }
}

// add_kernel_row<KW> for the layer's kernel width KW, at most Max.
template <int Max = max_weights_kernel_w>
void add_kernel_row_of(const ConvParams& p, const PaddedRows& x_rows, const float* dy, std::int64_t kh,
                       Vec* sums) {
  if constexpr (Max > 0) {
    if (p.kernel_w == Max) return add_kernel_row<Max>(p, x_rows, dy, kh, sums);
    add_kernel_row_of<Max - 1>(p, x_rows, dy, kh, sums);
  }
}

// Output rows at least this long take the planes (see depthwise_nchw_forward_applies).
constexpr std::int64_t min_row_floats = 32;

bool long_rows(const ConvParams& p) { return p.out_w >= min_row_floats; }

}  // namespace

// Copying each plane into padded rows and filling vectors along its output rows pays off where the output
// rows are at least min_row_floats long, and at stride 1 on inputs too large for the caches, where the copies
// that the NHWC kernel needs cost more (3x3 over 8x128x56x56: 2.6 ms here with one sum per vector, 3.3 ms
// through NHWC copies). Measured on AVX2, 2 threads, 3x3: 3x128x56x56 0.48-0.52 ms here against 1.9-2.0
// through NHWC copies; rows of 28, 8x64x28x28, about even (0.26 against 0.27-0.35); rows of 7, 8x512x7x7,
// 0.34-0.58 against 0.16-0.18. At stride 2, 8x64x112x112 took 4.2 ms here against 6.0-6.7; large inputs with
// short rows stay with the NHWC kernel there (16x64x56x56, rows of 28: 2.6-3.8 here against 2.8-3.0).
bool depthwise_nchw_forward_applies(const ConvParams& p) {
  const bool large = static_cast<std::int64_t>(p.batch) * p.in_c * p.in_h * p.in_w >= stream_floats;
  const bool stride_one = p.stride_y == 1 && p.stride_x == 1;
  return static_cast<std::int64_t>(p.kernel_h) * p.kernel_w <= max_vector_taps &&
         (long_rows(p) || (large && stride_one));
}

void depthwise_forward_nchw(const ConvParams& p, const float* x, const float* w, const float* b, float* y) {
  const std::int64_t taps = static_cast<std::int64_t>(p.kernel_h) * p.kernel_w;
  const std::int64_t in_plane = static_cast<std::int64_t>(p.in_h) * p.in_w,
                     out_plane = static_cast<std::int64_t>(p.out_h) * p.out_w;
  const std::int64_t planes = static_cast<std::int64_t>(p.batch) * p.out_c;
  parallel_for(planes, [&](std::int64_t plane) {
    const std::int64_t c = plane % p.out_c;
    float* scratch = static_cast<float*>(thread_scratch(sizeof(float) * padded_rows_floats(p)));
    const float* next_plane = plane + 1 < planes ? x + (plane + 1) * in_plane : nullptr;
    forward_plane(p, x + plane * in_plane, next_plane, w + c * taps, b ? b[c] : 0.0f, y + plane * out_plane,
                  padded_rows_of(p, scratch));
  });
}

// Long rows at stride 1 only: large inputs with short rows spend the sweeps in the columns past the last
// whole vector, one by one (42x1024x7x7 on 1 thread: 11-12 ms, against 6.5-7.6 through NHWC copies), and at
// stride 2 the planes' phases cost what the sweeps save (8x64x112x112: 3.8-4.4 against 3.7-3.9 ms).
bool depthwise_nchw_weights_gradient_applies(const ConvParams& p) {
  return p.layout == Layout::NCHW && p.groups == p.in_c && p.groups == p.out_c &&
         static_cast<std::int64_t>(p.kernel_h) * p.kernel_w <= max_vector_taps &&
         p.kernel_w <= max_weights_kernel_w && p.stride_y == 1 && p.stride_x == 1 && long_rows(p);
}

// A task takes one channel through all the images in order, so the sums do not depend on the thread count.
void depthwise_weights_gradient_nchw(const ConvParams& p, const float* dy, const float* x, float* dw,
                                     float* db, bool accumulate) {
  const std::int64_t taps = static_cast<std::int64_t>(p.kernel_h) * p.kernel_w;
  const std::int64_t in_plane = static_cast<std::int64_t>(p.in_h) * p.in_w,
                     out_plane = static_cast<std::int64_t>(p.out_h) * p.out_w;
  parallel_for(p.out_c, [&](std::int64_t c) {
    const PaddedRows x_rows =
        padded_rows_of(p, static_cast<float*>(thread_scratch(sizeof(float) * padded_rows_floats(p))));
    Vec sums[max_vector_taps] = {};
    float dy_sum = 0.0f;
    for (std::int64_t n = 0; n < p.batch; ++n) {
      const std::int64_t plane = n * p.out_c + c;
      const float* dys = dy + plane * out_plane;
      fill_padded_rows(p, x + plane * in_plane, x_rows);
      for (std::int64_t kh = 0; kh < p.kernel_h; ++kh)
        add_kernel_row_of(p, x_rows, dys, kh, sums + kh * p.kernel_w);
      dy_sum += sum_of(dys, out_plane);
    }
    for (std::int64_t t = 0; t < taps; ++t)
      dw[c * taps + t] = (accumulate ? dw[c * taps + t] : 0.0f) + sum_lanes(sums[t]);
    db[c] = (accumulate ? db[c] : 0.0f) + dy_sum;
  });
}

}  // namespace gradstate::cpu::GRADSTATE_ISA_NAMESPACE
