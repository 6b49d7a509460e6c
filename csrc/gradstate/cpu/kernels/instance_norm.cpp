// Instance-normalization kernels of one ISA level (see kernels.h).
//
// Statistics are sums over each (image, channel) plane: vector float sums over blocks of at most `block`
// pixels, added up in double, so that precision does not degrade with the size of the plane. Values are
// shifted before they are summed — by the plane's first value in the forward pass, by the saved (float)
// mean in the backward pass — so that data far from zero keeps its precision; the small difference between
// the float mean and the exact one is carried as a correction. The backward pass sums dy, dy * (x - mean)
// and x - mean in one sweep, then writes dx = a * (dy - mean(dy)) + b * (x - mean) + k in a second sweep,
// while the plane is still in cache where it fits.
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
#include "gradstate/cpu/memory.h"
#include "gradstate/cpu/thread_pool.h"

namespace gradstate::cpu::GRADSTATE_ISA_NAMESPACE {
namespace {

constexpr std::int64_t block = 512;          // pixels summed in float before the sums move to double
constexpr std::int64_t channel_block = 256;  // channels of one NHWC task

// Up to three sums of a plane (or of one channel of an NHWC task).
struct Sums {
  double s[3] = {0.0, 0.0, 0.0};
};

// Forward sums of a contiguous run: sum(x - shift), sum((x - shift)^2).
void add_forward_run(Sums& sums, const float* x, std::int64_t count, float shift) {
  Vec v1 = {}, v2 = {};
  std::int64_t i = 0;
  for (; i + lanes <= count; i += lanes) {
    const Vec d = load(x + i) - shift;
    v1 += d;
    v2 += d * d;
  }
  float t1 = sum_lanes(v1), t2 = sum_lanes(v2);
  for (; i < count; ++i) {
    const float d = x[i] - shift;
    t1 += d;
    t2 += d * d;
  }
  sums.s[0] += t1, sums.s[1] += t2;
}

// Backward sums of a contiguous run: sum(dy), sum(dy * (x - mean)), sum(x - mean).
void add_backward_run(Sums& sums, const float* dy, const float* x, std::int64_t count, float mean) {
  Vec v1 = {}, v2 = {}, v3 = {};
  std::int64_t i = 0;
  for (; i + lanes <= count; i += lanes) {
    const Vec d = load(dy + i), t = load(x + i) - mean;
    v1 += d;
    v2 += d * t;
    v3 += t;
  }
  float t1 = sum_lanes(v1), t2 = sum_lanes(v2), t3 = sum_lanes(v3);
  for (; i < count; ++i) {
    const float t = x[i] - mean;
    t1 += dy[i];
    t2 += dy[i] * t;
    t3 += t;
  }
  sums.s[0] += t1, sums.s[1] += t2, sums.s[2] += t3;
}

// The same sums for one NHWC pixel, per channel, into float accumulators acc[sum][channel].
void add_forward_pixel(float* const* acc, const float* x, const float* shift, std::int64_t count) {
  std::int64_t i = 0;
  for (; i + lanes <= count; i += lanes) {
    const Vec d = load(x + i) - load(shift + i);
    store(acc[0] + i, load(acc[0] + i) + d);
    store(acc[1] + i, load(acc[1] + i) + d * d);
  }
  for (; i < count; ++i) {
    const float d = x[i] - shift[i];
    acc[0][i] += d;
    acc[1][i] += d * d;
  }
}

void add_backward_pixel(float* const* acc, const float* dy, const float* x, const float* mean,
                        std::int64_t count) {
  std::int64_t i = 0;
  for (; i + lanes <= count; i += lanes) {
    const Vec d = load(dy + i), t = load(x + i) - load(mean + i);
    store(acc[0] + i, load(acc[0] + i) + d);
    store(acc[1] + i, load(acc[1] + i) + d * t);
    store(acc[2] + i, load(acc[2] + i) + t);
  }
  for (; i < count; ++i) {
    const float t = x[i] - mean[i];
    acc[0][i] += dy[i];
    acc[1][i] += dy[i] * t;
    acc[2][i] += t;
  }
}

// Sweeps the pixels of one NHWC task, `add(pixel, acc)` adding into per-channel float accumulators that
// move to sums[channel] every `block` pixels. acc holds `count` floats per sum.
template <typename Add>
void sum_pixels(std::int64_t pixels, std::int64_t count, float* const* acc, Sums* sums, Add&& add) {
  for (std::int64_t p0 = 0; p0 < pixels; p0 += block) {
    for (int k = 0; k < 3; ++k) std::memset(acc[k], 0, sizeof(float) * count);
    for (std::int64_t px = p0; px < min_of(pixels, p0 + block); ++px) add(px, acc);
    for (std::int64_t c = 0; c < count; ++c)
      for (int k = 0; k < 3; ++k) sums[c].s[k] += acc[k][c];
  }
}

// out = a * (u - u_shift) + b * (v - v_shift) + k over a contiguous run. Subtracting before scaling keeps
// exact cancellations exact (a one-pixel plane has dx = 0).
struct Affine {
  float a, u_shift, b, v_shift, k;
};

// With Stream, the vector stores bypass the caches (see stream in vec.h), after scalar stores up to the first
// aligned element.
template <bool Stream>
void apply_run(float* out, const float* u, const float* v, std::int64_t count, const Affine& f) {
  std::int64_t i = 0;
  if (Stream) {
    for (; i < count && !aligned(out + i); ++i)
      out[i] = f.a * (u[i] - f.u_shift) + f.b * (v[i] - f.v_shift) + f.k;
  }
  for (; i + lanes <= count; i += lanes) {
    const Vec r = f.a * (load(u + i) - f.u_shift) + f.b * (load(v + i) - f.v_shift) + f.k;
    Stream ? stream(out + i, r) : store(out + i, r);
  }
  for (; i < count; ++i) out[i] = f.a * (u[i] - f.u_shift) + f.b * (v[i] - f.v_shift) + f.k;
}

// The per-channel form for one NHWC pixel: each field points at one value per channel.
struct ChannelAffine {
  const float *a, *u_shift, *b, *v_shift, *k;
};

void apply_pixel(float* out, const float* u, const float* v, const ChannelAffine& f, std::int64_t count) {
  std::int64_t i = 0;
  for (; i + lanes <= count; i += lanes) {
    store(out + i, load(f.a + i) * (load(u + i) - load(f.u_shift + i)) +
                       load(f.b + i) * (load(v + i) - load(f.v_shift + i)) + load(f.k + i));
  }
  for (; i < count; ++i) out[i] = f.a[i] * (u[i] - f.u_shift[i]) + f.b[i] * (v[i] - f.v_shift[i]) + f.k[i];
}

// Whether NCHW outputs of `values` floats are streamed past the caches: when they are large (measured faster
// there; in NHWC, streaming the short per-pixel runs measured slower).
bool nchw_streams(std::int64_t values) { return values >= stream_floats; }

// Scratch of one NHWC task: three accumulators and five coefficient arrays of channel_block floats, and
// channel_block Sums.
struct ChannelScratch {
  ChannelScratch() {
    float* f = static_cast<float*>(thread_scratch((sizeof(float) * 8 + sizeof(Sums)) * channel_block));
    for (int k = 0; k < 3; ++k) acc[k] = f + k * channel_block;
    for (int k = 0; k < 5; ++k) coef[k] = f + (3 + k) * channel_block;
    sums = reinterpret_cast<Sums*>(f + 8 * channel_block);
    for (std::int64_t c = 0; c < channel_block; ++c) sums[c] = Sums{};
  }
  ChannelAffine affine() const { return {coef[0], coef[1], coef[2], coef[3], coef[4]}; }

  float* acc[3];
  float* coef[5];
  Sums* sums;
};

// Runs task(img, c0, count) for every NHWC task.
template <typename Task>
void for_each_channel_block(const NormParams& p, Task&& task) {
  const std::int64_t blocks = (p.channels + channel_block - 1) / channel_block;
  parallel_for(p.batch * blocks, [&](std::int64_t t) {
    const std::int64_t c0 = (t % blocks) * channel_block;
    task(t / blocks, c0, min_of<std::int64_t>(channel_block, p.channels - c0));
  });
}

}  // namespace

void instance_norm_forward(const NormParams& p, const float* x, const float* gamma, const float* beta,
                           float* y, float* mean, float* inv_std) {
  const std::int64_t pixels = static_cast<std::int64_t>(p.height) * p.width, channels = p.channels;
  const bool streaming = nchw_streams(p.batch * channels * pixels);
  // Saves the plane's statistics from sums of (x - shift); returns y = scale * (x - mean) + beta as an
  // Affine of (x, x) with the float mean, corrected for its rounding.
  auto finish = [&](std::int64_t plane, float shift, const Sums& sums) {
    const double shifted_mean = sums.s[0] / pixels;
    // Rounding can make the difference slightly negative; NaN must stay NaN.
    const double var = sums.s[1] / pixels - shifted_mean * shifted_mean;
    const double inv = 1.0 / std::sqrt((var < 0.0 ? 0.0 : var) + p.epsilon);
    const double exact_mean = shift + shifted_mean;
    const std::int64_t c = plane % channels;
    mean[plane] = static_cast<float>(exact_mean);
    inv_std[plane] = static_cast<float>(inv);
    const double scale = (gamma ? gamma[c] : 1.0) * inv;
    const double offset = (beta ? beta[c] : 0.0) - scale * (exact_mean - mean[plane]);
    return Affine{0.0f, 0.0f, static_cast<float>(scale), mean[plane], static_cast<float>(offset)};
  };
  if (p.layout == Layout::NCHW) {
    parallel_for(p.batch * channels, [&](std::int64_t plane) {
      const float* xs = x + plane * pixels;
      Sums sums;
      for (std::int64_t p0 = 0; p0 < pixels; p0 += block)
        add_forward_run(sums, xs + p0, min_of(block, pixels - p0), xs[0]);
      const Affine f = finish(plane, xs[0], sums);
      streaming ? apply_run<true>(y + plane * pixels, xs, xs, pixels, f)
                : apply_run<false>(y + plane * pixels, xs, xs, pixels, f);
      stream_fence();
    });
    return;
  }
  for_each_channel_block(p, [&](std::int64_t img, std::int64_t c0, std::int64_t count) {
    const std::int64_t base = img * pixels * channels + c0;
    ChannelScratch s;
    float* shift = s.coef[0];
    std::memcpy(shift, x + base, sizeof(float) * count);
    sum_pixels(pixels, count, s.acc, s.sums, [&](std::int64_t px, float* const* acc) {
      add_forward_pixel(acc, x + base + px * channels, shift, count);
    });
    for (std::int64_t c = 0; c < count; ++c) {
      const Affine f = finish(img * channels + c0 + c, shift[c], s.sums[c]);
      s.coef[0][c] = f.a, s.coef[1][c] = f.u_shift, s.coef[2][c] = f.b, s.coef[3][c] = f.v_shift,
      s.coef[4][c] = f.k;
    }
    const ChannelAffine f = s.affine();
    for (std::int64_t px = 0; px < pixels; ++px) {
      const float* row = x + base + px * channels;
      apply_pixel(y + base + px * channels, row, row, f, count);
    }
  });
}

void instance_norm_backward(const NormParams& p, const float* dy, const float* x, const float* gamma,
                            const float* mean, const float* inv_std, float* dx, float* dgamma, float* dbeta,
                            bool accumulate) {
  const std::int64_t pixels = static_cast<std::int64_t>(p.height) * p.width, channels = p.channels;
  const std::int64_t planes = p.batch * channels;
  const bool streaming = nchw_streams(planes * pixels);
  // Per-(image, channel) gamma and beta gradients: sum(dy * xhat) and sum(dy).
  const Memory plane_dgamma_memory(sizeof(double) * 2 * planes);
  double* plane_dgamma = static_cast<double*>(plane_dgamma_memory.data());
  double* plane_dbeta = plane_dgamma + planes;
  // From the plane's sums of dy, dy * (x - m) and x - m (m the saved float mean, mu the exact mean
  // m + sum(x - m) / pixels): dx = a * (dy - mean(dy)) + b * (x - mu) with a = gamma * inv_std and
  // b = -a * inv_std * mean(dy * xhat), as an Affine of (dy, x) with m; also records the plane's gradients.
  auto finish = [&](std::int64_t plane, const Sums& sums) {
    const double inv = inv_std[plane], rounding = sums.s[2] / pixels;  // mu - m
    const double sum_dy_xhat = (sums.s[1] - rounding * sums.s[0]) * inv;
    const double a = (gamma ? gamma[plane % channels] : 1.0) * inv;
    const double b = -a * inv * sum_dy_xhat / pixels;
    plane_dgamma[plane] = sum_dy_xhat;
    plane_dbeta[plane] = sums.s[0];
    return Affine{static_cast<float>(a), static_cast<float>(sums.s[0] / pixels), static_cast<float>(b),
                  mean[plane], static_cast<float>(-b * rounding)};
  };
  if (p.layout == Layout::NCHW) {
    parallel_for(planes, [&](std::int64_t plane) {
      const float* xs = x + plane * pixels;
      const float* dys = dy + plane * pixels;
      Sums sums;
      for (std::int64_t p0 = 0; p0 < pixels; p0 += block) {
        add_backward_run(sums, dys + p0, xs + p0, min_of(block, pixels - p0), mean[plane]);
      }
      const Affine f = finish(plane, sums);
      streaming ? apply_run<true>(dx + plane * pixels, dys, xs, pixels, f)
                : apply_run<false>(dx + plane * pixels, dys, xs, pixels, f);
      stream_fence();
    });
  } else {
    for_each_channel_block(p, [&](std::int64_t img, std::int64_t c0, std::int64_t count) {
      const std::int64_t base = img * pixels * channels + c0;
      const float* m = mean + img * channels + c0;
      ChannelScratch s;
      sum_pixels(pixels, count, s.acc, s.sums, [&](std::int64_t px, float* const* acc) {
        add_backward_pixel(acc, dy + base + px * channels, x + base + px * channels, m, count);
      });
      for (std::int64_t c = 0; c < count; ++c) {
        const Affine f = finish(img * channels + c0 + c, s.sums[c]);
        s.coef[0][c] = f.a, s.coef[1][c] = f.u_shift, s.coef[2][c] = f.b, s.coef[3][c] = f.v_shift,
        s.coef[4][c] = f.k;
      }
      const ChannelAffine f = s.affine();
      for (std::int64_t px = 0; px < pixels; ++px) {
        const std::int64_t at = base + px * channels;
        apply_pixel(dx + at, dy + at, x + at, f, count);
      }
    });
  }
  // Fixed order over the images, in double.
  for (std::int64_t c = 0; c < channels; ++c) {
    double total_gamma = accumulate ? dgamma[c] : 0.0, total_beta = accumulate ? dbeta[c] : 0.0;
    for (std::int64_t n = 0; n < p.batch; ++n) {
      total_gamma += plane_dgamma[n * channels + c];
      total_beta += plane_dbeta[n * channels + c];
    }
    dgamma[c] = static_cast<float>(total_gamma);
    dbeta[c] = static_cast<float>(total_beta);
  }
}

}  // namespace gradstate::cpu::GRADSTATE_ISA_NAMESPACE
