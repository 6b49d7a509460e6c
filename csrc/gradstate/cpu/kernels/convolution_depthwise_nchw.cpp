// The depthwise forward pass in NCHW: each (image, channel) plane is an independent 2-D convolution, run with
// vectors along the output row.
//
// A task copies its plane once into zero-padded "phase rows": for stride s, phase f of input row ih holds the
// pixels ih, f - pad_left + i * s for i = 0, 1, ..., so that the pixels a tap reads for consecutive output
// columns are consecutive there. Every tap is then one unaligned vector load and one FMA per output vector,
// with no bounds checks and no lanes wasted on the stride.
#include "gradstate/cpu/kernels/convolution_depthwise_nchw.h"

#include <cstring>

#include "gradstate/cpu/kernels/conv_geometry.h"
#include "gradstate/cpu/kernels/vec.h"
#include "gradstate/cpu/thread_pool.h"

namespace gradstate::cpu::GRADSTATE_ISA_NAMESPACE {
namespace {

// Where the phase rows of one plane live, and how long each is.
struct PhaseRows {
  std::int64_t length;  // floats per phase row: whole output vectors plus the farthest tap's offset
  std::int64_t phases;  // the horizontal stride
  float* rows;          // [in_h][phases][length]

  const float* row(std::int64_t ih, std::int64_t phase) const {
    return rows + (ih * phases + phase) * length;
  }
};

PhaseRows phase_rows_of(const ConvParams& p, float* memory) {
  const std::int64_t vectors = ceil_div(p.out_w, lanes);
  const std::int64_t reach = static_cast<std::int64_t>(p.kernel_w - 1) * p.dilation_x / p.stride_x;
  return {vectors * lanes + reach + 1, p.stride_x, memory};
}

std::int64_t phase_rows_floats(const ConvParams& p) {
  const PhaseRows shape = phase_rows_of(p, nullptr);
  return static_cast<std::int64_t>(p.in_h) * shape.phases * shape.length;
}

// rows[ih][f][i] = plane[ih][f - pad_left + i * stride_x], zero outside the plane: zeros, then the pixels the
// phase takes (a copy at stride 1), then zeros.
void fill_phase_rows(const ConvParams& p, const float* plane, const PhaseRows& rows) {
  const std::int64_t s = p.stride_x;
  for (std::int64_t f = 0; f < rows.phases; ++f) {
    // The phase's pixels are iw = f - pad_left + i * s for i in [first, end).
    const std::int64_t lead = p.pad_left - f;
    const auto [first, end] = indices_between(lead, p.in_w - 1 + lead, s, rows.length);
    for (std::int64_t ih = 0; ih < p.in_h; ++ih) {
      const float* in = plane + ih * p.in_w + (first * s - lead);
      float* out = rows.rows + (ih * rows.phases + f) * rows.length;
      std::memset(out, 0, sizeof(float) * first);
      if (s == 1) {
        std::memcpy(out + first, in, sizeof(float) * (end - first));
      } else {
        for (std::int64_t i = first; i < end; ++i) out[i] = in[(i - first) * s];
      }
      std::memset(out + end, 0, sizeof(float) * (rows.length - end));
    }
  }
}

void forward_plane(const ConvParams& p, const float* plane, const float* w, float bias, float* out,
                   const PhaseRows& rows) {
  const std::int64_t taps = static_cast<std::int64_t>(p.kernel_h) * p.kernel_w;
  Vec weight[max_vector_taps];
  for (std::int64_t t = 0; t < taps; ++t) weight[t] = broadcast(w[t]);
  fill_phase_rows(p, plane, rows);
  for (std::int64_t oh = 0; oh < p.out_h; ++oh) {
    float* y = out + oh * p.out_w;
    for (std::int64_t ow = 0; ow < p.out_w; ow += lanes) {
      Vec acc = broadcast(bias);
      for (std::int64_t kh = 0; kh < p.kernel_h; ++kh) {
        const std::int64_t ih = oh * p.stride_y - p.pad_top + kh * p.dilation_y;
        if (ih < 0 || ih >= p.in_h) continue;
        for (std::int64_t kw = 0; kw < p.kernel_w; ++kw) {
          const std::int64_t shift = kw * p.dilation_x;
          acc +=
              weight[kh * p.kernel_w + kw] * load(rows.row(ih, shift % p.stride_x) + ow + shift / p.stride_x);
        }
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

bool depthwise_nchw_forward_applies(const ConvParams& p) {
  return static_cast<std::int64_t>(p.kernel_h) * p.kernel_w <= max_vector_taps;
}

void depthwise_forward_nchw(const ConvParams& p, const float* x, const float* w, const float* b, float* y) {
  const std::int64_t taps = static_cast<std::int64_t>(p.kernel_h) * p.kernel_w;
  const std::int64_t in_plane = static_cast<std::int64_t>(p.in_h) * p.in_w,
                     out_plane = static_cast<std::int64_t>(p.out_h) * p.out_w;
  parallel_for(static_cast<std::int64_t>(p.batch) * p.out_c, [&](std::int64_t plane) {
    const std::int64_t c = plane % p.out_c;
    float* scratch = static_cast<float*>(thread_scratch(sizeof(float) * phase_rows_floats(p)));
    forward_plane(p, x + plane * in_plane, w + c * taps, b ? b[c] : 0.0f, y + plane * out_plane,
                  phase_rows_of(p, scratch));
  });
}

}  // namespace gradstate::cpu::GRADSTATE_ISA_NAMESPACE
