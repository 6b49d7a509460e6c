// Instance-normalization kernels of the CPU backend: per (image, channel) plane statistics in double
// precision, either activation layout.
#include <cmath>
#include <cstdint>
#include <vector>

#include "gradstate/core/layout.h"
#include "gradstate/cpu/cpu_backend.h"

namespace gradstate {
namespace {

// The elements of one (image, channel) plane, visited in storage order of either layout.
struct Plane {
  Plane(const NormParams& p, std::int64_t n, std::int64_t c)
      : strides(activation_strides(p.layout, p.channels, p.height, p.width)),
        base(n * strides.n + c * strides.c),
        height(p.height),
        width(p.width) {}

  template <typename Visit>
  void for_each(Visit&& visit) const {
    for (std::int64_t h = 0; h < height; ++h)
      for (std::int64_t w = 0; w < width; ++w) visit(base + h * strides.h + w * strides.w);
  }

  ActivationStrides strides;
  std::int64_t base, height, width;
};

}  // namespace

void CpuBackend::instance_norm_forward(const NormParams& p, const Buffer& x, const Buffer* gamma,
                                       const Buffer* beta, Buffer& y, Buffer& mean, Buffer& inv_std) {
  const float* xs = x.f32();
  float* ys = y.f32();
  const double pixels = static_cast<double>(p.height) * p.width;
  for (std::int64_t n = 0; n < p.batch; ++n) {
    for (std::int64_t c = 0; c < p.channels; ++c) {
      const Plane plane(p, n, c);
      // Two passes (mean, then squared deviations) so that data far from zero keeps its precision.
      double sum = 0.0;
      plane.for_each([&](std::int64_t at) { sum += xs[at]; });
      const double mu = sum / pixels;
      double squares = 0.0;
      plane.for_each([&](std::int64_t at) { squares += (xs[at] - mu) * (xs[at] - mu); });
      const double inv = 1.0 / std::sqrt(squares / pixels + p.epsilon);
      const double scale = (gamma ? gamma->f32()[c] : 1.0) * inv;
      const double shift = beta ? beta->f32()[c] : 0.0;
      plane.for_each([&](std::int64_t at) { ys[at] = static_cast<float>((xs[at] - mu) * scale + shift); });
      mean.f32()[n * p.channels + c] = static_cast<float>(mu);
      inv_std.f32()[n * p.channels + c] = static_cast<float>(inv);
    }
  }
}

void CpuBackend::instance_norm_backward(const NormParams& p, const Buffer& dy, const Buffer& x,
                                        const Buffer* gamma, const Buffer& mean, const Buffer& inv_std,
                                        Buffer& dx, Buffer& dgamma, Buffer& dbeta, bool accumulate) {
  const float* xs = x.f32();
  const float* dys = dy.f32();
  float* dxs = dx.f32();
  const double pixels = static_cast<double>(p.height) * p.width;
  std::vector<double> dgamma_sum(p.channels, 0.0), dbeta_sum(p.channels, 0.0);
  for (std::int64_t n = 0; n < p.batch; ++n) {
    for (std::int64_t c = 0; c < p.channels; ++c) {
      const Plane plane(p, n, c);
      const double mu = mean.f32()[n * p.channels + c];
      const double inv = inv_std.f32()[n * p.channels + c];
      double sum_dy = 0.0, sum_dy_xhat = 0.0;
      plane.for_each([&](std::int64_t at) {
        sum_dy += dys[at];
        sum_dy_xhat += dys[at] * (xs[at] - mu) * inv;
      });
      // dx = gamma * inv_std * (dy - mean(dy) - xhat * mean(dy * xhat))
      const double scale = (gamma ? gamma->f32()[c] : 1.0) * inv;
      const double mean_dy = sum_dy / pixels, mean_dy_xhat = sum_dy_xhat / pixels;
      plane.for_each([&](std::int64_t at) {
        const double xhat = (xs[at] - mu) * inv;
        dxs[at] = static_cast<float>(scale * (dys[at] - mean_dy - xhat * mean_dy_xhat));
      });
      dgamma_sum[c] += sum_dy_xhat;
      dbeta_sum[c] += sum_dy;
    }
  }
  for (std::int64_t c = 0; c < p.channels; ++c) {
    const float base_gamma = accumulate ? dgamma.f32()[c] : 0.0f;
    const float base_beta = accumulate ? dbeta.f32()[c] : 0.0f;
    dgamma.f32()[c] = static_cast<float>(base_gamma + dgamma_sum[c]);
    dbeta.f32()[c] = static_cast<float>(base_beta + dbeta_sum[c]);
  }
}

}  // namespace gradstate
