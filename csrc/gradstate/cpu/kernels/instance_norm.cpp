// Instance-normalization kernels of one ISA level (see kernels.h).
//
// Statistics are sums over each (image, channel) plane: vector float sums over blocks of at most `block`
// pixels, added up in double, so that precision does not degrade with the size of the plane. Values are
// shifted before they are summed — in the forward pass by the mean of a sample of the plane (see
// sample_means), in the backward pass by the saved (float) mean — so that data far from zero keeps its
// precision; the small difference between the float mean and the exact one is carried as a correction. The
// backward pass sums dy, dy * (x - mean) and x - mean in one sweep, then writes
// dx = a * (dy - mean(dy)) + b * (x - mean) + k in a second sweep, while the plane is still in cache where it
// fits.
//
// NCHW planes are contiguous, so one task handles one plane (or a few small ones). In NHWC the channels of a
// pixel are contiguous, so one task handles a block of channels of one image (or, where the threads share
// each image, of a run of its pixels), sweeping tiles of pixels with per-channel sums. The per-(image,
// channel) gamma and beta gradients are summed over the images in a fixed order at the end, so the result
// does not depend on the thread count. Planes of an infinite scale (gamma * inv_std), planes whose float sums
// overflow, and in the backward pass planes whose dy is not finite, are written again value by value (see
// PlaneValues).
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <type_traits>
#include <utility>

#include "gradstate/cpu/kernels/kernels.h"
#include "gradstate/cpu/kernels/vec.h"
#include "gradstate/cpu/memory.h"
#include "gradstate/cpu/thread_pool.h"

namespace gradstate::cpu::GRADSTATE_ISA_NAMESPACE {
namespace {

constexpr std::int64_t block = 512;  // pixels summed in float before the sums move to double

// Up to three sums of a plane (or of one channel of an NHWC task).
struct Sums {
  double s[3] = {0.0, 0.0, 0.0};
};

// Adds to sums the K sums of terms(u, v, shift) over a contiguous run of u and v, in float (vectors, then
// the tail), then in double. The terms are the forward pass's or the backward pass's (below), written once
// for vectors and floats, and shared with the NHWC sweeps.
template <int K, typename Terms>
void add_run(Sums& sums, const float* u, const float* v, std::int64_t count, float shift,
             const Terms& terms) {
  Vec acc[K] = {};
  std::int64_t i = 0;
  for (; i + lanes <= count; i += lanes) {
    Vec t[K];
    terms(load(u + i), load(v + i), shift, t);
    for (int k = 0; k < K; ++k) acc[k] += t[k];
  }
  float total[K];
  for (int k = 0; k < K; ++k) total[k] = sum_lanes(acc[k]);
  for (; i < count; ++i) {
    float t[K];
    terms(u[i], v[i], shift, t);
    for (int k = 0; k < K; ++k) total[k] += t[k];
  }
  for (int k = 0; k < K; ++k) sums.s[k] += total[k];
}

// The forward pass shifts each plane by the mean of a sample of its values, near the plane's mean for most
// data: the variance is the mean of (x - shift)^2, summed in float, less the squared mean of x - shift, and
// the farther the shift from the mean, the more those two cancel. (Shifted by its first value, a plane of
// 200 + N(0, 1) whose first value was 0 had its 1/std off by 1.4e-3 relative.) Where the shift still lies
// far, the sums are taken again (see far_from_mean). An NCHW plane's sample is its first shift_sample values,
// which its sums read first, and a plane is summed again on its own; samples spread over the plane made the
// forward pass of 16x256x32x32 10-15% slower. An NHWC image's sample is shift_sample pixels spread evenly
// over it, since a plane summed again there sweeps every image again (see instance_norm_forward); that sample
// cost 1-2% (16x256x32x32, 2x32x256x256, 2 threads).
constexpr std::int64_t shift_sample = 16;

// shift[c] = the mean of shift_sample values spread evenly over series c (all of them in shorter series), for
// `count` series of n values each, value i of series c at x[i * stride + c] (NCHW: the start of one plane,
// stride 1; NHWC: an image's channels, stride the channel count).
void sample_means(const float* x, std::int64_t n, std::int64_t stride, std::int64_t count, float* shift) {
  const std::int64_t taken = min_of(n, shift_sample);
  for (std::int64_t c = 0; c < count; ++c) shift[c] = 0.0f;
  for (std::int64_t j = 0; j < taken; ++j) {
    const float* values = x + j * n / taken * stride;
    for (std::int64_t c = 0; c < count; ++c) shift[c] += values[c];
  }
  for (std::int64_t c = 0; c < count; ++c) shift[c] /= static_cast<float>(taken);
}

// The forward pass's terms of (x, x) shifted: sum(x - shift), sum((x - shift)^2).
constexpr auto forward_terms = [](auto, auto x, auto shift, auto* t) {
  const auto d = x - shift;
  t[0] = d, t[1] = d * d;
};

// The backward pass's terms of (dy, x) shifted by the saved mean: sum(dy), sum(dy * (x - mean)),
// sum(x - mean).
constexpr auto backward_terms = [](auto dy, auto x, auto shift, auto* t) {
  const auto d = x - shift;
  t[0] = dy, t[1] = dy * d, t[2] = d;
};

// a * (u - u_shift) + b * (v - v_shift) + k, for floats or vectors. Subtracting before scaling keeps exact
// cancellations exact (a one-pixel plane has dx = 0).
template <typename T, typename C>
T affine(T u, T v, C a, C u_shift, C b, C v_shift, C k) {
  return a * (u - u_shift) + b * (v - v_shift) + k;
}

// The coefficients of one plane, applied over a contiguous run.
struct Affine {
  template <typename T>
  T operator()(T u, T v) const {
    return affine(u, v, a, u_shift, b, v_shift, k);
  }
  float a, u_shift, b, v_shift, k;
};

// With Stream, the vector stores bypass the caches (see stream in vec.h), after scalar stores up to the first
// aligned element.
template <bool Stream>
void apply_run(float* out, const float* u, const float* v, std::int64_t count, const Affine& f) {
  std::int64_t i = 0;
  if (Stream) {
    for (; i < count && !aligned(out + i); ++i) out[i] = f(u[i], v[i]);
  }
  for (; i + lanes <= count; i += lanes) {
    const Vec r = f(load(u + i), load(v + i));
    Stream ? stream(out + i, r) : store(out + i, r);
  }
  for (; i < count; ++i) out[i] = f(u[i], v[i]);
}

// Asks for the first next_plane_floats values (or all) of the planes after those of u and v, pixels values
// each, which this thread's next NCHW task reads first: a plane's second sweep reads it from L1, so nothing
// else asks for them in time. Medians of alternating runs, backward on 2 threads: 16x256x32x32 0.72-0.75 ->
// 0.66-0.70 ms, 8x64x128x128 and 16x64x64x64 7-8% faster; inputs 16 bytes past a line (as numpy allocates
// them), 16x256x32x32 on 1 thread: 1.65 -> 1.09 ms. On 1 thread with aligned planes of 4 KiB it lost 5%.
// Asking for only the first KiB of each plane was 1.6x slower there (the prefetchers no longer followed),
// and the forward pass, with one input, was slower with the asks (16x256x32x32, 2 threads: 0.47 -> 0.55 ms).
// The asks alternate between u and v line by line: all of u's lines, then v's (ask_for_lines in gemm.h,
// twice) made 8x64x128x128's backward 5% slower (1.71-1.81 -> 1.86-1.97 ms, alternating runs).
constexpr std::int64_t next_plane_floats = 4096;

void ask_for_next_plane(const float* u, const float* v, std::int64_t pixels) {
  const std::int64_t count = min_of(pixels, next_plane_floats);
  for (std::int64_t i = 0; i < count; i += line_floats) {
    __builtin_prefetch(u + pixels + i);
    __builtin_prefetch(v + pixels + i);
  }
}

// Whether outputs of `values` floats are streamed past the caches: when they are large (measured faster
// there, in both layouts).
bool streams(std::int64_t values) { return values >= stream_floats; }

// NCHW: f(plane) for every plane of `pixels` values, in tasks of planes of at least task_floats values in
// all, each task ending with one fence for its streamed stores. A fence after every plane of 1024 values
// waited for each plane's stores to drain (16x256x32x32 on 2 threads, medians of alternating processes:
// backward 0.597 -> 0.547 ms, forward 0.448 -> 0.412 ms in tasks of 8 planes).
constexpr std::int64_t task_floats = 8192;
template <typename F>
void for_each_plane(std::int64_t planes, std::int64_t pixels, const F& f) {
  const std::int64_t per_task = max_of<std::int64_t>(1, task_floats / max_of<std::int64_t>(pixels, 1));
  parallel_for(ceil_div(planes, per_task), [&](std::int64_t task) {
    for (std::int64_t plane = task * per_task; plane < min_of(planes, (task + 1) * per_task); ++plane)
      f(plane);
    stream_fence();
  });
}

// NHWC: one task handles one image's block of up to channel_block channels: it sums them over the image,
// then writes the output while the image is still in cache where it fits. Both sweeps go over tiles of
// pixels, and within a tile one group of channel vectors at a time, whose sums or coefficients stay in
// registers across the tile's pixels.
constexpr std::int64_t channel_block = 256;
constexpr int group = lanes >= 16 ? 4 : 2;  // vectors of channels held in registers at once (AVX-512 has 32)
constexpr std::int64_t tile_floats = 2048;  // values of each input in a tile of pixels

// `count` values of type T (a vector or, for the channels past the last whole vector, one float) side by
// side.
template <typename T, int Count>
struct Group {
  using Type = T;
  static constexpr int count = Count;
  static constexpr int width = static_cast<int>(sizeof(T) / sizeof(float));  // floats per value
  static T get(const float* p) {
    T v;
    __builtin_memcpy(&v, p, sizeof v);
    return v;
  }
  static void put(float* p, T v) { __builtin_memcpy(p, &v, sizeof v); }
};

// Calls f(c, Group<Vec, G>{}) for the one G in [1, Max] equal to `vectors`, if any.
template <int Max, typename F>
void vector_group_of(std::int64_t c, std::int64_t vectors, F& f) {
  if constexpr (Max > 0) {
    if (vectors == Max) return f(c, Group<Vec, Max>{});
    vector_group_of<Max - 1>(c, vectors, f);
  }
}

// Calls f(c, group) over `count` channels: groups of `group` vectors, then one group of the vectors left,
// then single floats. Channels that are at most one group of whole vectors thus take one call per pixel.
template <typename F>
void for_channel_groups(std::int64_t count, F&& f) {
  std::int64_t c = 0;
  for (; c + group * lanes <= count; c += group * lanes) f(c, Group<Vec, group>{});
  vector_group_of<group - 1>(c, (count - c) / lanes, f);
  for (c += (count - c) / lanes * lanes; c < count; ++c) f(c, Group<float, 1>{});
}

// A tile of an NHWC task: `rows` pixels of u and v (and out), `stride` floats apart, from the task's first
// channel; per-channel values (shifts, sums, coefficients) of the task are channel_block floats apart.
struct Tile {
  const float* u;
  const float* v;
  float* out;
  std::int64_t rows, stride;
  // Where the sweep asks for the lines of the next tile of u and v as it reads this one's, the floats from
  // one to the other; else 0.
  std::int64_t ahead;
};

// Asks for the lines of the next tile's u and v at the same place as u[at] and v[at] of this one.
inline void ask_ahead(const Tile& tile, std::int64_t at) {
  __builtin_prefetch(tile.u + tile.ahead + at);
  __builtin_prefetch(tile.v + tile.ahead + at);
}

// Adds to acc[k * channel_block + c + ...] the K sums terms(u, v, shift) of one group of channels over the
// tile.
template <int K, typename G, typename Terms>
void sum_group(std::int64_t c, G, const Tile& tile, const float* shift, float* acc, const Terms& terms) {
  using T = typename G::Type;
  T s[G::count], r[K][G::count];
  for (int g = 0; g < G::count; ++g) {
    s[g] = G::get(shift + c + g * G::width);
    for (int k = 0; k < K; ++k) r[k][g] = T{};
  }
  for (std::int64_t px = 0; px < tile.rows; ++px) {
    const std::int64_t at = px * tile.stride + c;
    for (int g = 0; g < G::count; ++g) {
      if (std::is_same_v<T, Vec> && tile.ahead != 0) ask_ahead(tile, at + g * G::width);
      T t[K];
      terms(G::get(tile.u + at + g * G::width), G::get(tile.v + at + g * G::width), s[g], t);
      for (int k = 0; k < K; ++k) r[k][g] += t[k];
    }
  }
  for (int k = 0; k < K; ++k) {
    for (int g = 0; g < G::count; ++g) {
      float* a = acc + k * channel_block + c + g * G::width;
      G::put(a, G::get(a) + r[k][g]);
    }
  }
}

// out = a * (u - u_shift) + b * (v - v_shift) + k for one group of channels over the tile, the five
// coefficients at coef[j * channel_block + c + ...] (see Affine). With Stream, whole vectors are streamed.
template <bool Stream, typename G>
void apply_group(std::int64_t c, G, const Tile& tile, const float* coef) {
  using T = typename G::Type;
  T f[5][G::count];
  for (int j = 0; j < 5; ++j)
    for (int g = 0; g < G::count; ++g) f[j][g] = G::get(coef + j * channel_block + c + g * G::width);
  for (std::int64_t px = 0; px < tile.rows; ++px) {
    const std::int64_t at = px * tile.stride + c;
    for (int g = 0; g < G::count; ++g) {
      const std::int64_t i = at + g * G::width;
      if (std::is_same_v<T, Vec> && tile.ahead != 0) ask_ahead(tile, i);
      const T r = affine(G::get(tile.u + i), G::get(tile.v + i), f[0][g], f[1][g], f[2][g], f[3][g], f[4][g]);
      if constexpr (Stream && std::is_same_v<T, Vec>) {
        stream(tile.out + i, r);
      } else {
        G::put(tile.out + i, r);
      }
    }
  }
}

// Calls f(tile) for the tiles of pixels [first, last) of an NHWC task whose first values are u, v and out.
// A tile holds tile_floats values of each input (at least one pixel), so that the sums or coefficients of a
// group of channels stay in registers across its pixels; with one pixel per tile they go to memory and back
// for every pixel, which made cached inputs 1.1-1.4x slower. But where a pixel's channels take more than one
// group, a tile is swept one group at a time, out of address order, which the hardware prefetchers do not
// follow: unless the inputs are cached (cached_bytes: such tiles were faster up to 16 MiB of inputs and
// slower from 24 MiB), such wide pixels take one pixel per tile (longer tiles were up to 2x slower from DRAM)
// but for pixels of at most two lines (AVX2's two groups of 32 channels: 2x32x256x256 backward, 2 threads,
// 3.3 -> 2.7 ms; with four lines, 8x64x128x128, 25% slower; measured on AVX2 only, though the rule also
// widens the tiles of NEON's and the scalar level's narrower groups). Tiles of several pixels at least four
// lines apart ask for the next tile's lines, which the prefetchers do not see coming either (4x128x64x64
// backward: 1.8 -> 1.3 ms; with pixels of two lines, 2x32x256x256, it was 5% slower).
template <typename F>
void for_each_tile(const float* u, const float* v, float* out, std::int64_t first, std::int64_t last,
                   std::int64_t stride, bool cached, F&& f) {
  const bool narrow = stride <= max_of<std::int64_t>(group * lanes, 2 * line_floats) && stride % lanes == 0;
  const std::int64_t rows = narrow || cached ? max_of(std::int64_t{1}, tile_floats / stride) : 1;
  const std::int64_t ahead = rows > 1 && stride >= 4 * line_floats ? rows * stride : 0;
  for (std::int64_t px = first; px < last; px += rows) {
    const std::int64_t at = px * stride;
    f(Tile{u + at, v + at, out + at, min_of(rows, last - px), stride, px + rows < last ? ahead : 0});
  }
}

// Scratch of one NHWC task: up to three float accumulators and five coefficient arrays of channel_block
// floats, and channel_block Sums.
struct ChannelScratch {
  ChannelScratch() {
    float* f = static_cast<float*>(thread_scratch((sizeof(float) * 8 + sizeof(Sums)) * channel_block));
    acc = f;
    coef = f + 3 * channel_block;
    sums = reinterpret_cast<Sums*>(f + 8 * channel_block);
    for (std::int64_t c = 0; c < channel_block; ++c) sums[c] = Sums{};
  }
  float* acc;
  float* coef;
  Sums* sums;
};

// One image's block of at most channel_block channels: its first values of u, v and out, its first channel
// and its count of channels.
struct ChannelBlock {
  const float* u;
  const float* v;
  float* out;
  std::int64_t first, count;
};

// acc[k * channel_block + c] = the K float sums of terms(u, v, shift) of the block's channel c over the
// pixels [p0, p1), at most `block` of them, `stride` floats apart. This and apply_pixels inline all they
// call: else a tile of one wide pixel calls a function for each group of channels, whose sums then go to
// memory and back (16x256x32x32's backward, 1 thread, 1.50 against 1.31 ms).
template <int K, typename Terms>
__attribute__((flatten)) void sum_pixels(const ChannelBlock& b, std::int64_t p0, std::int64_t p1,
                                         std::int64_t stride, bool cached, const float* shift,
                                         const Terms& terms, float* acc) {
  std::memset(acc, 0, sizeof(float) * K * channel_block);
  for_each_tile(b.u, b.v, b.out, p0, p1, stride, cached, [&](const Tile& tile) {
    for_channel_groups(b.count, [&](std::int64_t c, auto g) { sum_group<K>(c, g, tile, shift, acc, terms); });
  });
}

// Adds a block of pixels' float sums (as sum_pixels leaves them) to each channel's sums in double.
template <int K>
void add_pixel_sums(const float* acc, std::int64_t count, Sums* sums) {
  for (std::int64_t c = 0; c < count; ++c)
    for (int k = 0; k < K; ++k) sums[c].s[k] += acc[k * channel_block + c];
}

// coef[j * channel_block + c], j = 0..4: the Affine finish(plane, sums[c]) returns for each channel c of a
// block whose first channel's plane is plane0.
template <typename Finish>
void put_coefficients(const Finish& finish, std::int64_t plane0, std::int64_t count, const Sums* sums,
                      float* coef) {
  for (std::int64_t c = 0; c < count; ++c) {
    const Affine f = finish(plane0 + c, sums[c]);
    float* at = coef + c;
    at[0] = f.a, at[channel_block] = f.u_shift, at[2 * channel_block] = f.b,
    at[3 * channel_block] = f.v_shift, at[4 * channel_block] = f.k;
  }
}

// out over the pixels [p0, p1) with the coefficients at coef (see put_coefficients).
__attribute__((flatten)) void apply_pixels(const ChannelBlock& b, std::int64_t p0, std::int64_t p1,
                                           std::int64_t stride, bool cached, bool streaming,
                                           const float* coef) {
  for_each_tile(b.u, b.v, b.out, p0, p1, stride, cached, [&](const Tile& tile) {
    for_channel_groups(b.count, [&](std::int64_t c, auto g) {
      streaming ? apply_group<true>(c, g, tile, coef) : apply_group<false>(c, g, tile, coef);
    });
  });
  stream_fence();
}

// The inputs of the images the threads sweep at once that the caches hold from one sweep to the next. Where
// an image fits but one for each thread does not, the threads share each image's sweeps instead of taking
// an image each, so that the second sweep still finds the image in the caches: 8x64x128x128's backward (8
// MiB an image), 2 threads, 7-9% faster (median of call-by-call ratios). Where they fit, or one image does
// not, sharing was no faster: 4x128x64x64 (4 MiB) 5% slower, 2x32x256x256 (16 MiB) 10-14% slower.
constexpr std::int64_t held_bytes = std::int64_t{12} << 20;

// The two NHWC sweeps of every (image, channel block): the K per-channel sums of terms(u, v, shift), in
// float over `block` pixels at a time, then in double in the order of the blocks; then out = a * (u -
// u_shift) + b * (v - v_shift) + k with the coefficients finish(plane, sums) returns. shift_of(image) points
// at the image's per-channel shifts. The tasks are (image, channel block) pairs, or where the threads share
// each image (see held_bytes), each image's channel blocks and runs of its pixel blocks, both sweeps of one
// image before the next. Either way each channel's sums are added in the order of its pixel blocks, so the
// result does not depend on the thread count.
template <int K, typename Terms, typename Shift, typename Finish>
void nhwc_sweeps(const NormParams& p, const float* u, const float* v, const Terms& terms,
                 const Shift& shift_of, const Finish& finish, float* out) {
  const std::int64_t pixels = static_cast<std::int64_t>(p.height) * p.width, channels = p.channels;
  const std::int64_t blocks = ceil_div(channels, channel_block), pixel_blocks = ceil_div(pixels, block);
  // Whole vectors are aligned when the output and every pixel's channels are.
  const bool streaming = streams(p.batch * pixels * channels) && aligned(out) && channels % lanes == 0;
  // The forward pass's u and v are both x.
  const std::int64_t image_bytes = (u == v ? 1 : 2) * pixels * channels * std::int64_t{sizeof(float)};
  const bool cached = p.batch * image_bytes <= cached_bytes;
  const auto block_of = [&](std::int64_t img, std::int64_t b) {
    const std::int64_t c0 = b * channel_block, at = img * pixels * channels + c0;
    return ChannelBlock{u + at, v + at, out + at, c0, min_of(channel_block, channels - c0)};
  };
  const std::int64_t threads = num_threads();
  if (image_bytes > held_bytes || threads * image_bytes <= held_bytes) {
    parallel_for(p.batch * blocks, [&](std::int64_t t) {
      const std::int64_t img = t / blocks;
      const ChannelBlock b = block_of(img, t % blocks);
      ChannelScratch s;
      for (std::int64_t p0 = 0; p0 < pixels; p0 += block) {
        sum_pixels<K>(b, p0, min_of(pixels, p0 + block), channels, cached, shift_of(img) + b.first, terms,
                      s.acc);
        add_pixel_sums<K>(s.acc, b.count, s.sums);
      }
      put_coefficients(finish, img * channels + b.first, b.count, s.sums, s.coef);
      apply_pixels(b, 0, pixels, channels, cached, streaming, s.coef);
    });
    return;
  }
  // Each channel block's pixel blocks in `runs` runs, one per thread. The memory holds the float sums of
  // each (channel block, pixel block), then each channel block's coefficients.
  const std::int64_t runs = min_of(threads, pixel_blocks), run_tasks = blocks * runs;
  const std::int64_t acc_floats = K * channel_block, coef_floats = 5 * channel_block;
  const Memory memory(sizeof(float) * blocks * (pixel_blocks * acc_floats + coef_floats));
  float* block_acc = memory.floats();
  float* coef = block_acc + blocks * pixel_blocks * acc_floats;
  const auto run_pixels = [&](std::int64_t run) {
    return std::pair{run * pixel_blocks / runs * block,
                     min_of(pixels, (run + 1) * pixel_blocks / runs * block)};
  };
  for (std::int64_t img = 0; img < p.batch; ++img) {
    parallel_for(run_tasks, [&](std::int64_t t) {
      const std::int64_t b = t / runs;
      const ChannelBlock cb = block_of(img, b);
      const auto [first, last] = run_pixels(t % runs);
      for (std::int64_t p0 = first; p0 < last; p0 += block)
        sum_pixels<K>(cb, p0, min_of(last, p0 + block), channels, cached, shift_of(img) + cb.first, terms,
                      block_acc + (b * pixel_blocks + p0 / block) * acc_floats);
    });
    for (std::int64_t b = 0; b < blocks; ++b) {
      const ChannelBlock cb = block_of(img, b);
      Sums sums[channel_block];
      for (std::int64_t pb = 0; pb < pixel_blocks; ++pb)
        add_pixel_sums<K>(block_acc + (b * pixel_blocks + pb) * acc_floats, cb.count, sums);
      put_coefficients(finish, img * channels + cb.first, cb.count, sums, coef + b * coef_floats);
    }
    parallel_for(run_tasks, [&](std::int64_t t) {
      const std::int64_t b = t / runs;
      const auto [first, last] = run_pixels(t % runs);
      apply_pixels(block_of(img, b), first, last, channels, cached, streaming, coef + b * coef_floats);
    });
  }
}

// Where outputs are infinite, the sweeps' sums of terms scaled each on its own, and their rounding
// corrections (Inf x 0), can make NaN of what numpy's formulas give as ±Inf: in planes whose scale, gamma *
// inv_std, is infinite (an infinite gamma, or a plane of equal values with epsilon 0), and in the backward
// pass in planes whose dy is not finite. And the sweeps' float sums overflow where the reference's double
// ones do not: squares of values more than about 1.8e19 from the plane's mean, sums of values near the top
// of the float range, products of dy and x - mean past 3.4e38. Such planes are rare, so one thread writes
// them again, value by value, with the formulas of the reference, in double (and the forward pass their
// statistics too, where its sums were not finite). PlaneValues is one plane of an input x there: value i at
// first + i * stride, and centred(i) = x - the plane's exact mean.
struct PlaneValues {
  const float* x;
  std::int64_t first, stride;
  double mean;
  std::int64_t at(std::int64_t i) const { return first + i * stride; }
  double centred(std::int64_t i) const { return x[at(i)] - mean; }
};

// The plane's values, its exact mean summed from m (its saved mean, or 0) as m + mean(x - m).
PlaneValues plane_values(const NormParams& p, const float* x, float m, std::int64_t plane) {
  const std::int64_t pixels = static_cast<std::int64_t>(p.height) * p.width, channels = p.channels;
  PlaneValues v{x, plane * pixels, 1, m};
  if (p.layout == Layout::NHWC)
    v.first = plane / channels * pixels * channels + plane % channels, v.stride = channels;
  double rounding = 0.0;
  for (std::int64_t i = 0; i < pixels; ++i) rounding += v.centred(i);
  v.mean += rounding / static_cast<double>(pixels);
  return v;
}

// gamma[c] of a plane, or 1 without gamma: its scale is this times its inv_std.
double gamma_of(const NormParams& p, const float* gamma, std::int64_t plane) {
  return gamma ? gamma[plane % p.channels] : 1.0;
}

// The forward pass but for the planes written again (see PlaneValues).
void forward_sweeps(const NormParams& p, const float* x, const float* gamma, const float* beta, float* y,
                    float* mean, float* inv_std) {
  const std::int64_t pixels = static_cast<std::int64_t>(p.height) * p.width, channels = p.channels;
  const bool streaming = streams(p.batch * channels * pixels);
  // The mean and the variance of x - shift, from a plane's sums of x - shift and (x - shift)^2.
  struct Moments {
    double mean, variance;
  };
  auto moments_of = [&](const Sums& sums) {
    const double shifted_mean = sums.s[0] / pixels;
    return Moments{shifted_mean, sums.s[1] / pixels - shifted_mean * shifted_mean};
  };
  // Saves the plane's statistics from sums of (x - shift); returns y = scale * (x - mean) + beta as an
  // Affine of (x, x) with the float mean, corrected for its rounding.
  auto finish = [&](std::int64_t plane, float shift, const Sums& sums) {
    const Moments shifted = moments_of(sums);
    // Rounding can make the variance slightly negative; NaN must stay NaN.
    const double var = shifted.variance;
    const double inv = 1.0 / std::sqrt((var < 0.0 ? 0.0 : var) + p.epsilon);
    const double exact_mean = shift + shifted.mean;
    const std::int64_t c = plane % channels;
    mean[plane] = static_cast<float>(exact_mean);
    inv_std[plane] = static_cast<float>(inv);
    const double scale = gamma_of(p, gamma, plane) * inv;
    const double offset = (beta ? beta[c] : 0.0) - scale * (exact_mean - mean[plane]);
    return Affine{0.0f, 0.0f, static_cast<float>(scale), mean[plane], static_cast<float>(offset)};
  };
  // Whether the shift lay more than twice the plane's spread from its mean, so that its sums lost precision
  // (see shift_sample); they are then taken again, shifted by the mean they gave. The sample's mean lies that
  // far only from a few planes: the values it took were outliers, or lay along a pattern of the plane.
  auto far_from_mean = [&](const Sums& sums) {
    const Moments shifted = moments_of(sums);
    return shifted.mean * shifted.mean > 4.0 * shifted.variance;
  };
  if (p.layout == Layout::NCHW) {
    for_each_plane(p.batch * channels, pixels, [&](std::int64_t plane) {
      const float* xs = x + plane * pixels;
      const auto sums_of = [&](float shift) {
        Sums sums;
        for (std::int64_t p0 = 0; p0 < pixels; p0 += block)
          add_run<2>(sums, xs + p0, xs + p0, min_of(block, pixels - p0), shift, forward_terms);
        return sums;
      };
      float shift;
      sample_means(xs, min_of(pixels, shift_sample), 1, 1, &shift);
      Sums sums = sums_of(shift);
      if (far_from_mean(sums)) {
        shift = static_cast<float>(shift + moments_of(sums).mean);
        sums = sums_of(shift);
      }
      const Affine f = finish(plane, shift, sums);
      streaming ? apply_run<true>(y + plane * pixels, xs, xs, pixels, f)
                : apply_run<false>(y + plane * pixels, xs, xs, pixels, f);
    });
    return;
  }
  const Memory shift_memory(sizeof(float) * p.batch * channels);
  float* shifts = shift_memory.floats();  // [image][channel]
  parallel_for(p.batch, [&](std::int64_t img) {
    sample_means(x + img * pixels * channels, pixels, channels, channels, shifts + img * channels);
  });
  auto image_shifts = [&](std::int64_t img) { return shifts + img * channels; };
  // A plane's shift is read by the sums of its own task (or, where the threads share each image, before
  // finish is called), so finish may replace it for the sweeps over again.
  std::atomic<bool> again{false};
  auto nhwc_finish = [&](std::int64_t plane, const Sums& sums) {
    const Affine f = finish(plane, shifts[plane], sums);
    if (far_from_mean(sums)) {
      shifts[plane] = mean[plane];  // as finish saved it
      again.store(true);
    }
    return f;
  };
  nhwc_sweeps<2>(p, x, x, forward_terms, image_shifts, nhwc_finish, y);
  // The sweeps over again for every plane: those refined, and the others to the same values.
  if (again.load()) nhwc_sweeps<2>(p, x, x, forward_terms, image_shifts, nhwc_finish, y);
}

}  // namespace

void instance_norm_forward(const NormParams& p, const float* x, const float* gamma, const float* beta,
                           float* y, float* mean, float* inv_std) {
  forward_sweeps(p, x, gamma, beta, y, mean, inv_std);
  const std::int64_t pixels = static_cast<std::int64_t>(p.height) * p.width;
  for (std::int64_t plane = 0; plane < p.batch * p.channels; ++plane) {
    // Sums that overflowed (or met a NaN or Inf) leave a mean that is not finite or a 1/std that is not
    // positive.
    const bool statistics_again = !std::isfinite(mean[plane]) || !(inv_std[plane] > 0.0f);
    double scale = gamma_of(p, gamma, plane) * inv_std[plane];
    if (!statistics_again && !std::isinf(static_cast<float>(scale))) continue;
    const PlaneValues v = plane_values(p, x, statistics_again ? 0.0f : mean[plane], plane);
    if (statistics_again) {
      double variance = 0.0;
      for (std::int64_t i = 0; i < pixels; ++i) variance += v.centred(i) * v.centred(i);
      const double inv = 1.0 / std::sqrt(variance / static_cast<double>(pixels) + p.epsilon);
      mean[plane] = static_cast<float>(v.mean);
      inv_std[plane] = static_cast<float>(inv);
      scale = gamma_of(p, gamma, plane) * inv;
    }
    const double offset = beta ? beta[plane % p.channels] : 0.0;
    for (std::int64_t i = 0; i < pixels; ++i) y[v.at(i)] = static_cast<float>(scale * v.centred(i) + offset);
  }
}

void instance_norm_backward(const NormParams& p, const float* dy, const float* x, const float* gamma,
                            const float* mean, const float* inv_std, float* dx, float* dgamma, float* dbeta,
                            bool accumulate) {
  const std::int64_t pixels = static_cast<std::int64_t>(p.height) * p.width, channels = p.channels;
  const std::int64_t planes = p.batch * channels;
  const bool streaming = streams(planes * pixels);
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
    const double a = gamma_of(p, gamma, plane) * inv;
    const double b = -a * inv * sum_dy_xhat / pixels;
    plane_dgamma[plane] = sum_dy_xhat;
    plane_dbeta[plane] = sums.s[0];
    const float mean_dy = static_cast<float>(sums.s[0] / pixels);
    // In a plane of two pixels dy - mean(dy) lies along xhat, where 1 - xhat^2 = epsilon * inv_std^2: the
    // formula's two terms cancel but for epsilon's share, so dx = a * epsilon * inv_std^2 * (dy - mean(dy)),
    // as exact as inv_std. Through the formula, the rounding of the saved float inv_std alone costs a
    // relative error of up to 2^-23 * var / epsilon (1.2e-2 in planes of values 2 apart, epsilon 1e-5).
    // Planes whose values are not finite are written again below, with the formula.
    if (pixels == 2)
      return Affine{static_cast<float>(a * p.epsilon * inv * inv), mean_dy, 0.0f, mean[plane], 0.0f};
    return Affine{static_cast<float>(a), mean_dy, static_cast<float>(b), mean[plane],
                  static_cast<float>(-b * rounding)};
  };
  if (p.layout == Layout::NCHW) {
    for_each_plane(planes, pixels, [&](std::int64_t plane) {
      const float* xs = x + plane * pixels;
      const float* dys = dy + plane * pixels;
      Sums sums;
      for (std::int64_t p0 = 0; p0 < pixels; p0 += block)
        add_run<3>(sums, dys + p0, xs + p0, min_of(block, pixels - p0), mean[plane], backward_terms);
      const Affine f = finish(plane, sums);
      if (plane + 1 < planes) ask_for_next_plane(dys, xs, pixels);
      streaming ? apply_run<true>(dx + plane * pixels, dys, xs, pixels, f)
                : apply_run<false>(dx + plane * pixels, dys, xs, pixels, f);
    });
  } else {
    auto saved_mean = [&](std::int64_t img) { return mean + img * channels; };
    nhwc_sweeps<3>(p, dy, x, backward_terms, saved_mean, finish, dx);
  }
  // The planes written again (see PlaneValues): dx = a * (dy - mean(dy) - xhat * mean(dy * xhat)).
  for (std::int64_t plane = 0; plane < planes; ++plane) {
    const double a = gamma_of(p, gamma, plane) * inv_std[plane];
    if (!std::isinf(static_cast<float>(a)) && std::isfinite(plane_dbeta[plane]) &&
        std::isfinite(plane_dgamma[plane]))
      continue;
    const PlaneValues v = plane_values(p, x, mean[plane], plane);
    const double inv = inv_std[plane];
    double sum_dy = 0.0, sum_dy_xhat = 0.0;
    for (std::int64_t i = 0; i < pixels; ++i) {
      sum_dy += dy[v.at(i)];
      sum_dy_xhat += dy[v.at(i)] * (v.centred(i) * inv);
    }
    plane_dbeta[plane] = sum_dy;
    plane_dgamma[plane] = sum_dy_xhat;
    const double mean_dy = sum_dy / pixels, mean_dy_xhat = sum_dy_xhat / pixels;
    for (std::int64_t i = 0; i < pixels; ++i)
      dx[v.at(i)] = static_cast<float>(a * ((dy[v.at(i)] - mean_dy) - v.centred(i) * inv * mean_dy_xhat));
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
