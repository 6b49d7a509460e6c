// Convolution kernels of the CPU backend: direct loops over the formulas of the API documentation,
// for any stride, dilation, padding, group count and either activation layout.
#include <algorithm>
#include <cstdint>

#include "gradstate/core/layout.h"
#include "gradstate/cpu/cpu_backend.h"

namespace gradstate {
namespace {

// Index arithmetic shared by the three kernels: where the activations' elements are, and which input
// pixel a (output pixel, kernel tap) pair reads.
struct ConvGeometry {
  explicit ConvGeometry(const ConvParams& p)
      : p(p),
        x(activation_strides(p.layout, p.in_c, p.in_h, p.in_w)),
        y(activation_strides(p.layout, p.out_c, p.out_h, p.out_w)),
        in_per_group(p.in_c / p.groups),
        out_per_group(p.out_c / p.groups) {}

  // Input row read by output row `oh` at tap `kh`; outside [0, in_h) means a zero from the padding.
  std::int64_t input_row(std::int64_t oh, std::int64_t kh) const {
    return oh * p.stride_y - p.pad_top + kh * p.dilation_y;
  }
  std::int64_t input_col(std::int64_t ow, std::int64_t kw) const {
    return ow * p.stride_x - p.pad_left + kw * p.dilation_x;
  }
  bool inside(std::int64_t ih, std::int64_t iw) const {
    return ih >= 0 && ih < p.in_h && iw >= 0 && iw < p.in_w;
  }

  // Offset of x[n, ih, iw, first channel of group g].
  std::int64_t x_offset(std::int64_t n, std::int64_t ih, std::int64_t iw, std::int64_t g) const {
    return n * x.n + ih * x.h + iw * x.w + g * in_per_group * x.c;
  }
  std::int64_t y_offset(std::int64_t n, std::int64_t oh, std::int64_t ow, std::int64_t o) const {
    return n * y.n + oh * y.h + ow * y.w + o * y.c;
  }
  // Offset of weights[o, kh, kw, 0] in OHWI.
  std::int64_t w_offset(std::int64_t o, std::int64_t kh, std::int64_t kw) const {
    return ((o * p.kernel_h + kh) * p.kernel_w + kw) * in_per_group;
  }

  const ConvParams& p;
  ActivationStrides x, y;
  std::int64_t in_per_group, out_per_group;
};

// Calls visit(n, oh, ow, o, kh, kw, x_offset) for every (output element, kernel tap) pair whose tap reads
// inside the image; taps that read the zero padding contribute nothing to any of the three gradients.
template <typename Visit>
void for_each_tap(const ConvGeometry& geo, Visit&& visit) {
  const ConvParams& p = geo.p;
  for (std::int64_t n = 0; n < p.batch; ++n) {
    for (std::int64_t oh = 0; oh < p.out_h; ++oh) {
      for (std::int64_t ow = 0; ow < p.out_w; ++ow) {
        for (std::int64_t o = 0; o < p.out_c; ++o) {
          const std::int64_t g = o / geo.out_per_group;
          for (std::int64_t kh = 0; kh < p.kernel_h; ++kh) {
            const std::int64_t ih = geo.input_row(oh, kh);
            for (std::int64_t kw = 0; kw < p.kernel_w; ++kw) {
              const std::int64_t iw = geo.input_col(ow, kw);
              if (geo.inside(ih, iw)) visit(n, oh, ow, o, kh, kw, geo.x_offset(n, ih, iw, g));
            }
          }
        }
      }
    }
  }
}

}  // namespace

void CpuBackend::convolution_forward(const ConvParams& p, const Buffer& x, const Buffer& weights,
                                     const Buffer* bias, Buffer& y) {
  const ConvGeometry geo(p);
  const float* xs = x.f32();
  const float* ws = weights.f32();
  float* ys = y.f32();
  for (std::int64_t n = 0; n < p.batch; ++n)
    for (std::int64_t oh = 0; oh < p.out_h; ++oh)
      for (std::int64_t ow = 0; ow < p.out_w; ++ow)
        for (std::int64_t o = 0; o < p.out_c; ++o)
          ys[geo.y_offset(n, oh, ow, o)] = bias ? bias->f32()[o] : 0.0f;
  for_each_tap(geo, [&](std::int64_t n, std::int64_t oh, std::int64_t ow, std::int64_t o, std::int64_t kh,
                        std::int64_t kw, std::int64_t x_at) {
    const float* w = ws + geo.w_offset(o, kh, kw);
    float sum = 0.0f;
    for (std::int64_t i = 0; i < geo.in_per_group; ++i) sum += w[i] * xs[x_at + i * geo.x.c];
    ys[geo.y_offset(n, oh, ow, o)] += sum;
  });
}

void CpuBackend::convolution_data_gradient(const ConvParams& p, const Buffer& dy, const Buffer& weights,
                                           Buffer& dx) {
  const ConvGeometry geo(p);
  const float* dys = dy.f32();
  const float* ws = weights.f32();
  float* dxs = dx.f32();
  std::fill(dxs, dxs + dx.size(), 0.0f);
  for_each_tap(geo, [&](std::int64_t n, std::int64_t oh, std::int64_t ow, std::int64_t o, std::int64_t kh,
                        std::int64_t kw, std::int64_t x_at) {
    const float* w = ws + geo.w_offset(o, kh, kw);
    const float d = dys[geo.y_offset(n, oh, ow, o)];
    for (std::int64_t i = 0; i < geo.in_per_group; ++i) dxs[x_at + i * geo.x.c] += w[i] * d;
  });
}

void CpuBackend::convolution_weights_gradient(const ConvParams& p, const Buffer& dy, const Buffer& x,
                                              Buffer& dweights, Buffer& dbias, bool accumulate) {
  const ConvGeometry geo(p);
  const float* dys = dy.f32();
  const float* xs = x.f32();
  float* dw = dweights.f32();
  float* db = dbias.f32();
  if (!accumulate) {
    std::fill(dw, dw + dweights.size(), 0.0f);
    std::fill(db, db + dbias.size(), 0.0f);
  }
  for (std::int64_t n = 0; n < p.batch; ++n)
    for (std::int64_t oh = 0; oh < p.out_h; ++oh)
      for (std::int64_t ow = 0; ow < p.out_w; ++ow)
        for (std::int64_t o = 0; o < p.out_c; ++o) db[o] += dys[geo.y_offset(n, oh, ow, o)];
  for_each_tap(geo, [&](std::int64_t n, std::int64_t oh, std::int64_t ow, std::int64_t o, std::int64_t kh,
                        std::int64_t kw, std::int64_t x_at) {
    float* w = dw + geo.w_offset(o, kh, kw);
    const float d = dys[geo.y_offset(n, oh, ow, o)];
    for (std::int64_t i = 0; i < geo.in_per_group; ++i) w[i] += d * xs[x_at + i * geo.x.c];
  });
}

}  // namespace gradstate
