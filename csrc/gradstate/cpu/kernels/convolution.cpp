// Convolution forward and data-gradient kernels of one ISA level (see kernels.h): direct loops over the
// formulas. The weight gradient is in convolution_weights.cpp.
#include <cstdint>
#include <cstring>

#include "gradstate/cpu/kernels/conv_geometry.h"
#include "gradstate/cpu/kernels/kernels.h"

namespace gradstate::cpu::GRADSTATE_ISA_NAMESPACE {

void convolution_forward(const ConvParams& p, const float* x, const float* w, const float* b, float* y) {
  const Geometry geo(p);
  for (std::int64_t n = 0; n < p.batch; ++n)
    for (std::int64_t oh = 0; oh < p.out_h; ++oh)
      for (std::int64_t ow = 0; ow < p.out_w; ++ow)
        for (std::int64_t o = 0; o < p.out_c; ++o) y[geo.y_offset(n, oh, ow, o)] = b ? b[o] : 0.0f;
  for_each_tap(geo, [&](std::int64_t n, std::int64_t oh, std::int64_t ow, std::int64_t o, std::int64_t kh,
                        std::int64_t kw, std::int64_t x_at) {
    const float* wo = w + geo.w_offset(o, kh, kw);
    float sum = 0.0f;
    for (std::int64_t i = 0; i < geo.in_per_group; ++i) sum += wo[i] * x[x_at + i * geo.x.c];
    y[geo.y_offset(n, oh, ow, o)] += sum;
  });
}

void convolution_data_gradient(const ConvParams& p, const float* dy, const float* w, float* dx) {
  const Geometry geo(p);
  std::memset(dx, 0, sizeof(float) * p.batch * p.in_c * p.in_h * p.in_w);
  for_each_tap(geo, [&](std::int64_t n, std::int64_t oh, std::int64_t ow, std::int64_t o, std::int64_t kh,
                        std::int64_t kw, std::int64_t x_at) {
    const float* wo = w + geo.w_offset(o, kh, kw);
    const float d = dy[geo.y_offset(n, oh, ow, o)];
    for (std::int64_t i = 0; i < geo.in_per_group; ++i) dx[x_at + i * geo.x.c] += wo[i] * d;
  });
}

}  // namespace gradstate::cpu::GRADSTATE_ISA_NAMESPACE
