// Instance-normalization kernels of one ISA level (see kernels.h).
//
// Statistics are sums over each (image, channel) plane: vector float sums over blocks of at most
// `block` pixels, added up in double, so that precision does not degrade with the plane's size. The forward
// pass shifts x by the plane's first value before summing (so data far from zero keeps its precision); the
// backward pass sums dy and dy * (x - mean) with the saved mean, then writes
// dx = a * dy + b * (x - mean) + c in a second sweep, while the plane is still in cache where it fits.
//
// NCHW planes are contiguous, so one task handles one plane. In NHWC the channels of a pixel are contiguous,
// so one task handles a block of channels of one image, sweeping pixel by pixel with per-channel sums.
// The per-(image, channel) gamma and beta gradients are summed over the images in a fixed order at the end,
// so the result does not depend on the thread count.
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "gradstate/cpu/kernels/kernels.h"
#include "gradstate/cpu/kernels/vec.h"
#include "gradstate/cpu/thread_pool.h"

namespace gradstate::cpu::GRADSTATE_ISA_NAMESPACE {
namespace {

constexpr std::int64_t block = 512;          // pixels summed in float before the sums move to double
constexpr std::int64_t channel_block = 256;  // channels of one NHWC task

// Sums over a contiguous run of up to `block` values, in float vectors.
struct RunSums {
  float first, second;
};

// sum(v - shift) and sum((v - shift)^2).
RunSums shifted_sums(const float* v, std::int64_t count, float shift) {
  Vec s1 = {}, s2 = {};
  std::int64_t i = 0;
  for (; i + lanes <= count; i += lanes) {
    const Vec d = load(v + i) - shift;
    s1 += d;
    s2 += d * d;
  }
  float t1 = sum_lanes(s1), t2 = sum_lanes(s2);
  for (; i < count; ++i) {
    const float d = v[i] - shift;
    t1 += d;
    t2 += d * d;
  }
  return {t1, t2};
}

// sum(dy) and sum(dy * (x - mean)).
RunSums gradient_sums(const float* dy, const float* x, std::int64_t count, float mean) {
  Vec s1 = {}, s2 = {};
  std::int64_t i = 0;
  for (; i + lanes <= count; i += lanes) {
    const Vec d = load(dy + i);
    s1 += d;
    s2 += d * (load(x + i) - mean);
  }
  float t1 = sum_lanes(s1), t2 = sum_lanes(s2);
  for (; i < count; ++i) {
    t1 += dy[i];
    t2 += dy[i] * (x[i] - mean);
  }
  return {t1, t2};
}

// out = a * (u - u_shift) + b * (v - v_shift) + c over a contiguous run; the forward pass uses it with
// a = 0. Subtracting before scaling keeps exact cancellations exact (a one-pixel plane has dx = 0).
void affine(float* out, const float* u, const float* v, std::int64_t count, float a, float u_shift, float b,
            float v_shift, float c) {
  std::int64_t i = 0;
  for (; i + lanes <= count; i += lanes) {
    store(out + i, a * (load(u + i) - u_shift) + b * (load(v + i) - v_shift) + c);
  }
  for (; i < count; ++i) out[i] = a * (u[i] - u_shift) + b * (v[i] - v_shift) + c;
}

// s1[c] += v[c] - shift[c] and s2[c] += (v[c] - shift[c])^2 over a run of channels.
void add_shifted(float* s1, float* s2, const float* v, const float* shift, std::int64_t count) {
  std::int64_t i = 0;
  for (; i + lanes <= count; i += lanes) {
    const Vec d = load(v + i) - load(shift + i);
    store(s1 + i, load(s1 + i) + d);
    store(s2 + i, load(s2 + i) + d * d);
  }
  for (; i < count; ++i) {
    const float d = v[i] - shift[i];
    s1[i] += d;
    s2[i] += d * d;
  }
}

// s1[c] += dy[c] and s2[c] += dy[c] * (x[c] - mean[c]) over a run of channels.
void add_gradient(float* s1, float* s2, const float* dy, const float* x, const float* mean,
                  std::int64_t count) {
  std::int64_t i = 0;
  for (; i + lanes <= count; i += lanes) {
    const Vec d = load(dy + i);
    store(s1 + i, load(s1 + i) + d);
    store(s2 + i, load(s2 + i) + d * (load(x + i) - load(mean + i)));
  }
  for (; i < count; ++i) {
    s1[i] += dy[i];
    s2[i] += dy[i] * (x[i] - mean[i]);
  }
}

// The per-channel affine: out[c] = a[c] * (u[c] - u_shift[c]) + b[c] * (v[c] - v_shift[c]) + k[c].
struct ChannelAffine {
  const float *a, *u_shift, *b, *v_shift, *k;
};

void affine_channels(float* out, const float* u, const float* v, const ChannelAffine& f, std::int64_t count) {
  std::int64_t i = 0;
  for (; i + lanes <= count; i += lanes) {
    store(out + i, load(f.a + i) * (load(u + i) - load(f.u_shift + i)) +
                       load(f.b + i) * (load(v + i) - load(f.v_shift + i)) + load(f.k + i));
  }
  for (; i < count; ++i) out[i] = f.a[i] * (u[i] - f.u_shift[i]) + f.b[i] * (v[i] - f.v_shift[i]) + f.k[i];
}

// Double sums of a plane, from float block sums.
struct PlaneSums {
  double first = 0.0, second = 0.0;
};

// Sweeps the pixels of one NHWC task (image img, channels [c0, c0 + cn)), `sum(pixel_values, s1, s2)`
// accumulating per-channel float sums that move to double every `block` pixels; returns the double sums
// in d1[cn], d2[cn].
template <typename Sum>
void nhwc_sums(std::int64_t pixels, std::int64_t cn, float* s1, float* s2, double* d1, double* d2,
               Sum&& sum) {
  for (std::int64_t c = 0; c < cn; ++c) d1[c] = d2[c] = 0.0;
  for (std::int64_t p0 = 0; p0 < pixels; p0 += block) {
    std::memset(s1, 0, sizeof(float) * cn);
    std::memset(s2, 0, sizeof(float) * cn);
    for (std::int64_t px = p0; px < min_of(pixels, p0 + block); ++px) sum(px, s1, s2);
    for (std::int64_t c = 0; c < cn; ++c) d1[c] += s1[c], d2[c] += s2[c];
  }
}

// Adds the per-(image, channel) values in order of image into out[c] (or overwrites it).
void sum_over_images(const double* per_plane, std::int64_t batch, std::int64_t channels, float* out,
                     bool accumulate) {
  for (std::int64_t c = 0; c < channels; ++c) {
    double total = accumulate ? out[c] : 0.0;
    for (std::int64_t n = 0; n < batch; ++n) total += per_plane[n * channels + c];
    out[c] = static_cast<float>(total);
  }
}

}  // namespace

void instance_norm_forward(const NormParams& p, const float* x, const float* gamma, const float* beta,
                           float* y, float* mean, float* inv_std) {
  const std::int64_t pixels = static_cast<std::int64_t>(p.height) * p.width, channels = p.channels;
  auto finish = [&](std::int64_t plane, float shift, double s1, double s2, float& scale, float& offset) {
    const double mu_shifted = s1 / pixels;
    // Rounding can make the difference slightly negative; NaN must stay NaN.
    const double var = s2 / pixels - mu_shifted * mu_shifted;
    const double inv = 1.0 / std::sqrt((var < 0.0 ? 0.0 : var) + p.epsilon);
    const std::int64_t c = plane % channels;
    mean[plane] = static_cast<float>(shift + mu_shifted);
    inv_std[plane] = static_cast<float>(inv);
    scale = static_cast<float>((gamma ? gamma[c] : 1.0) * inv);
    offset = beta ? beta[c] : 0.0f;
  };
  if (p.layout == Layout::NCHW) {
    parallel_for(p.batch * channels, [&](std::int64_t plane) {
      const float* xs = x + plane * pixels;
      PlaneSums sums;
      for (std::int64_t p0 = 0; p0 < pixels; p0 += block) {
        const RunSums run = shifted_sums(xs + p0, min_of(block, pixels - p0), xs[0]);
        sums.first += run.first, sums.second += run.second;
      }
      float scale, offset;
      finish(plane, xs[0], sums.first, sums.second, scale, offset);
      // y = scale * (x - mean) + beta
      affine(y + plane * pixels, xs, xs, pixels, 0.0f, 0.0f, scale, mean[plane], offset);
    });
    return;
  }
  const std::int64_t blocks = (channels + channel_block - 1) / channel_block;
  parallel_for(p.batch * blocks, [&](std::int64_t task) {
    const std::int64_t img = task / blocks, c0 = (task % blocks) * channel_block;
    const std::int64_t cn = min_of(channel_block, channels - c0);
    const float* xs = x + img * pixels * channels + c0;
    float* scratch =
        static_cast<float*>(thread_scratch((sizeof(float) * 6 + sizeof(double) * 2) * channel_block));
    float *s1 = scratch, *s2 = s1 + channel_block, *shift = s2 + channel_block,
          *scale = shift + channel_block, *offset = scale + channel_block, *mu = offset + channel_block;
    double* d1 = reinterpret_cast<double*>(mu + channel_block);
    double* d2 = d1 + channel_block;
    std::memcpy(shift, xs, sizeof(float) * cn);
    nhwc_sums(pixels, cn, s1, s2, d1, d2,
              [&](std::int64_t px, float* a, float* b) { add_shifted(a, b, xs + px * channels, shift, cn); });
    for (std::int64_t c = 0; c < cn; ++c) {
      finish(img * channels + c0 + c, shift[c], d1[c], d2[c], scale[c], offset[c]);
      mu[c] = mean[img * channels + c0 + c];
      s1[c] = 0.0f;
    }
    const ChannelAffine f{s1, mu, scale, mu, offset};  // y = 0 * (x - mean) + scale * (x - mean) + beta
    for (std::int64_t px = 0; px < pixels; ++px) {
      const float* row = xs + px * channels;
      affine_channels(y + img * pixels * channels + c0 + px * channels, row, row, f, cn);
    }
  });
}

void instance_norm_backward(const NormParams& p, const float* dy, const float* x, const float* gamma,
                            const float* mean, const float* inv_std, float* dx, float* dgamma, float* dbeta,
                            bool accumulate) {
  const std::int64_t pixels = static_cast<std::int64_t>(p.height) * p.width, channels = p.channels;
  const std::int64_t planes = p.batch * channels;
  // Per-(image, channel) sums of dy * xhat and dy: the gamma and beta gradients of each plane.
  double* plane_dgamma = static_cast<double*>(std::malloc(sizeof(double) * 2 * planes));
  double* plane_dbeta = plane_dgamma + planes;
  // dx = a * (dy - mean(dy)) + b * (x - mean) with a = gamma * inv_std, b = -a * inv_std * mean(dy * xhat);
  // also records the plane's sums.
  auto coefficients = [&](std::int64_t plane, double sum_dy, double sum_dy_xm, float& a, float& b,
                          float& mean_dy) {
    const std::int64_t c = plane % channels;
    const double inv = inv_std[plane];
    const double sum_dy_xhat = sum_dy_xm * inv;
    const double scale = (gamma ? gamma[c] : 1.0) * inv;
    a = static_cast<float>(scale);
    b = static_cast<float>(-scale * inv * sum_dy_xhat / pixels);
    mean_dy = static_cast<float>(sum_dy / pixels);
    plane_dgamma[plane] = sum_dy_xhat;
    plane_dbeta[plane] = sum_dy;
  };
  if (p.layout == Layout::NCHW) {
    parallel_for(planes, [&](std::int64_t plane) {
      const float* xs = x + plane * pixels;
      const float* dys = dy + plane * pixels;
      PlaneSums sums;
      for (std::int64_t p0 = 0; p0 < pixels; p0 += block) {
        const RunSums run = gradient_sums(dys + p0, xs + p0, min_of(block, pixels - p0), mean[plane]);
        sums.first += run.first, sums.second += run.second;
      }
      float a, b, mean_dy;
      coefficients(plane, sums.first, sums.second, a, b, mean_dy);
      affine(dx + plane * pixels, dys, xs, pixels, a, mean_dy, b, mean[plane], 0.0f);
    });
  } else {
    const std::int64_t blocks = (channels + channel_block - 1) / channel_block;
    parallel_for(p.batch * blocks, [&](std::int64_t task) {
      const std::int64_t img = task / blocks, c0 = (task % blocks) * channel_block;
      const std::int64_t cn = min_of(channel_block, channels - c0);
      const std::int64_t base = img * pixels * channels + c0;
      float* scratch =
          static_cast<float*>(thread_scratch((sizeof(float) * 6 + sizeof(double) * 2) * channel_block));
      float *s1 = scratch, *s2 = s1 + channel_block, *a = s2 + channel_block, *b = a + channel_block,
            *mean_dy = b + channel_block, *mu = mean_dy + channel_block;
      double* d1 = reinterpret_cast<double*>(mu + channel_block);
      double* d2 = d1 + channel_block;
      std::memcpy(mu, mean + img * channels + c0, sizeof(float) * cn);
      nhwc_sums(pixels, cn, s1, s2, d1, d2, [&](std::int64_t px, float* u, float* v) {
        add_gradient(u, v, dy + base + px * channels, x + base + px * channels, mu, cn);
      });
      for (std::int64_t c = 0; c < cn; ++c) {
        coefficients(img * channels + c0 + c, d1[c], d2[c], a[c], b[c], mean_dy[c]);
        s1[c] = 0.0f;
      }
      const ChannelAffine f{a, mean_dy, b, mu, s1};
      for (std::int64_t px = 0; px < pixels; ++px) {
        const std::int64_t at = base + px * channels;
        affine_channels(dx + at, dy + at, x + at, f, cn);
      }
    });
  }
  sum_over_images(plane_dgamma, p.batch, channels, dgamma, accumulate);
  sum_over_images(plane_dbeta, p.batch, channels, dbeta, accumulate);
  std::free(plane_dgamma);
}

}  // namespace gradstate::cpu::GRADSTATE_ISA_NAMESPACE
