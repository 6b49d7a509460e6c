// The depthwise forward pass in NCHW at stride 1: each (image, channel) plane is an independent 2-D
// convolution, run with vectors along the output row.
//
// A task copies its plane once into zero-padded rows, so that the pixels a tap reads for consecutive output
// columns are consecutive there: every tap is then one unaligned vector load and one FMA per output
// vector, with no bounds checks.
#include "gradstate/cpu/kernels/convolution_depthwise_nchw.h"

#include <cstring>

#include "gradstate/cpu/kernels/conv_geometry.h"
#include "gradstate/cpu/kernels/vec.h"
#include "gradstate/cpu/thread_pool.h"

namespace gradstate::cpu::GRADSTATE_ISA_NAMESPACE {
namespace {

// Where the padded rows of one plane live, and how long each is.
struct PaddedRows {
  std::int64_t length;  // floats per row: whole output vectors plus the farthest tap's offset
  float* rows;          // [in_h][length]

  const float* row(std::int64_t ih) const { return rows + ih * length; }
};

PaddedRows padded_rows_of(const ConvParams& p, float* memory) {
  const std::int64_t vectors = ceil_div(p.out_w, lanes);
  return {vectors * lanes + static_cast<std::int64_t>(p.kernel_w - 1) * p.dilation_x + 1, memory};
}

std::int64_t padded_rows_floats(const ConvParams& p) { return p.in_h * padded_rows_of(p, nullptr).length; }

// rows[ih][i] = plane[ih][i - pad_left], zero outside the plane.
void fill_padded_rows(const ConvParams& p, const float* plane, const PaddedRows& rows) {
  const auto [first, end] = indices_between(p.pad_left, p.in_w - 1 + p.pad_left, 1, rows.length);
  for (std::int64_t ih = 0; ih < p.in_h; ++ih) {
    float* out = rows.rows + ih * rows.length;
    std::memset(out, 0, sizeof(float) * first);
    std::memcpy(out + first, plane + ih * p.in_w + (first - p.pad_left), sizeof(float) * (end - first));
    std::memset(out + end, 0, sizeof(float) * (rows.length - end));
  }
}

void forward_plane(const ConvParams& p, const float* plane, const float* w, float bias, float* out,
                   const PaddedRows& rows) {
  const std::int64_t taps = static_cast<std::int64_t>(p.kernel_h) * p.kernel_w;
  Vec weight[max_vector_taps];
  for (std::int64_t t = 0; t < taps; ++t) weight[t] = broadcast(w[t]);
  fill_padded_rows(p, plane, rows);
  for (std::int64_t oh = 0; oh < p.out_h; ++oh) {
    float* y = out + oh * p.out_w;
    for (std::int64_t ow = 0; ow < p.out_w; ow += lanes) {
      Vec acc = broadcast(bias);
      for (std::int64_t kh = 0; kh < p.kernel_h; ++kh) {
        const std::int64_t ih = oh - p.pad_top + kh * p.dilation_y;
        if (ih < 0 || ih >= p.in_h) continue;
        for (std::int64_t kw = 0; kw < p.kernel_w; ++kw)
          acc += weight[kh * p.kernel_w + kw] * load(rows.row(ih) + ow + kw * p.dilation_x);
      }
      if (ow + lanes <= p.out_w) {
        store(y + ow, acc);
      } else {
        for (std::int64_t l = 0; l < p.out_w - ow; ++l) y[ow + l] = acc[l];
      }
    }
  }
}

}  // namespace

// Copying each plane into padded rows and filling vectors along its output rows pays off only at stride 1
// on inputs too large for the caches: there the copies that the NHWC kernel needs cost more (3x3 over
// 8x128x56x56: 2.6 ms here, 3.3 ms through NHWC copies; 6 images: 3.5 against 3.7 ms). Elsewhere those
// copies stay in cache and the NHWC kernel wins (8x256x28x28 at stride 2: 0.32 against 0.96 ms;
// 16x64x56x56 at stride 2: 1.3 against 1.8 ms; 3x128x56x56 at stride 1: 1.4 against 1.7 ms; 8x512x7x7:
// 0.11 against 0.37 ms; 2 threads).
bool depthwise_nchw_forward_applies(const ConvParams& p) {
  return static_cast<std::int64_t>(p.kernel_h) * p.kernel_w <= max_vector_taps && p.stride_y == 1 &&
         p.stride_x == 1 && static_cast<std::int64_t>(p.batch) * p.in_c * p.in_h * p.in_w >= stream_floats;
}

void depthwise_forward_nchw(const ConvParams& p, const float* x, const float* w, const float* b, float* y) {
  const std::int64_t taps = static_cast<std::int64_t>(p.kernel_h) * p.kernel_w;
  const std::int64_t in_plane = static_cast<std::int64_t>(p.in_h) * p.in_w,
                     out_plane = static_cast<std::int64_t>(p.out_h) * p.out_w;
  parallel_for(static_cast<std::int64_t>(p.batch) * p.out_c, [&](std::int64_t plane) {
    const std::int64_t c = plane % p.out_c;
    float* scratch = static_cast<float*>(thread_scratch(sizeof(float) * padded_rows_floats(p)));
    forward_plane(p, x + plane * in_plane, w + c * taps, b ? b[c] : 0.0f, y + plane * out_plane,
                  padded_rows_of(p, scratch));
  });
}

}  // namespace gradstate::cpu::GRADSTATE_ISA_NAMESPACE
