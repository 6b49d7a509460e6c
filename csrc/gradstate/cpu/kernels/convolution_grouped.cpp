// Forward pass and data gradient of layers with small groups (fewer than 8 destination channels per group,
// not depthwise), NHWC: vectors across groups.
//
// A destination vector holds `lanes` consecutive destination channels, which belong to several groups;
// lane c reads source channels g(c) * k + j (j < k) of its own group. For each j one in-register shuffle of
// the source pixel's vector (two vectors when the groups' source channels span more than one) gives every
// lane its own source value, so a tap costs k shuffles and k FMAs per destination vector, and no lane is idle
// as in a GEMM per group of a few channels. The forward pass gathers input pixels (destination = output
// channels, k = input channels per group); the data gradient at strides above 1 gathers the output pixels
// whose taps read each input pixel (destination = input channels, k = output channels per group). Each task
// owns whole destination rows, so the sums run in a fixed order.
#include "gradstate/cpu/kernels/convolution_grouped.h"

#include <cstring>
#include <numeric>
#include <type_traits>
#include <vector>

#include "gradstate/cpu/kernels/conv_geometry.h"
#include "gradstate/cpu/kernels/vec.h"
#include "gradstate/cpu/memory.h"
#include "gradstate/cpu/thread_pool.h"

namespace gradstate::cpu::GRADSTATE_ISA_NAMESPACE {
namespace {

constexpr std::int64_t pixels_per_block = 4;  // destination pixels sharing each weight vector load
constexpr std::int64_t max_groups_channels = 8;

// The destination channels as blocks of lanes, and for each block and source channel j of the lanes' groups
// the shuffle that takes each lane's source value from the block's source vectors.
struct LanePlan {
  LanePlan(std::int64_t dst_channels, std::int64_t dst_per_group, std::int64_t src_channels,
           std::int64_t src_per_group)
      : dst_channels(dst_channels),
        src_channels(src_channels),
        k(src_per_group),
        blocks(ceil_div(dst_channels, lanes)),
        masks(sizeof(VecIndex) * blocks * k),
        bases(sizeof(std::int64_t) * blocks) {
    VecIndex* mask = static_cast<VecIndex*>(masks.data());
    std::int64_t* base = static_cast<std::int64_t*>(bases.data());
    for (std::int64_t b = 0; b < blocks; ++b) {
      base[b] = (b * lanes / dst_per_group) * src_per_group;
      for (std::int64_t j = 0; j < k; ++j) {
        for (int l = 0; l < lanes; ++l) {
          const std::int64_t c = min_of(b * lanes + l, dst_channels - 1);  // idle lanes repeat the last
          const std::int64_t offset = (c / dst_per_group) * src_per_group + j - base[b];
          if (offset >= 2 * lanes) fits = false;
          if (offset >= lanes) two_vectors = true;
          mask[b * k + j][l] = static_cast<int>(offset % (2 * lanes));
        }
      }
    }
    aligned_groups = dst_per_group == src_per_group && lanes % src_per_group == 0;
  }

  VecIndex mask(std::int64_t block, std::int64_t j) const {
    return static_cast<const VecIndex*>(masks.data())[block * k + j];
  }
  std::int64_t base(std::int64_t block) const {
    return static_cast<const std::int64_t*>(bases.data())[block];
  }

  std::int64_t dst_channels, src_channels, k, blocks;
  bool fits = true;          // every lane's sources lie within two vectors of its block's base
  bool two_vectors = false;  // some block needs the second vector
  // Groups of k source and k destination channels with k dividing the lanes: every block's mask j is
  // group_mask<k>(j), known when the kernel is compiled (measured 20% faster for groups of 4 than a mask
  // loaded from the plan).
  bool aligned_groups = false;
  Memory masks, bases;
};

// The source vectors of one block at one source pixel: loaded in place (`in_place`), or from a zero-padded
// copy where the vectors would run past the pixel's last channel (and so, for the last pixel, past the
// tensor).
struct SourceVectors {
  Vec low, high;
};

template <bool TwoVectors>
SourceVectors source_vectors(const LanePlan& plan, const float* pixel, std::int64_t base, bool in_place) {
  if (in_place) return {load(pixel + base), TwoVectors ? load(pixel + base + lanes) : Vec{}};
  float padded[2 * lanes] = {};
  std::memcpy(padded, pixel + base, sizeof(float) * (plan.src_channels - base));
  return {load(padded), load(padded + lanes)};
}

template <bool TwoVectors>
Vec lane_sources(const SourceVectors& v, VecIndex mask) {
  if constexpr (TwoVectors) {
    return __builtin_shuffle(v.low, v.high, mask);
  } else {
    return __builtin_shuffle(v.low, mask);
  }
}

// dst[pixel, c] = init[c] + sum over the listed taps t = tap_ids[i] and j < k of weights[t][j][c] *
// src(pixel, i)[g(c) * k + j] for `count` destination pixels dst_pixel_stride floats apart, where source(q,
// i) is the source pixel that destination pixel q reads at the i-th listed tap, or `zeros` (a pixel of zeros)
// for none. weights is laid out [block][tap][j][lanes], for all `taps` taps. The source pixels of a block of
// destination pixels are found once for all blocks of lanes; padding and the pixels past the row's end read
// zeros, so the inner loops have no branches.
template <bool TwoVectors, int AlignedK, typename Source>
void gather_row_with(const LanePlan& plan, std::int64_t taps, const std::int64_t* tap_ids,
                     std::int64_t tap_count, const float* weights, const float* init, const float* zeros,
                     std::int64_t count, float* dst, std::int64_t dst_pixel_stride, Source&& source) {
  constexpr std::int64_t span = TwoVectors ? 2 * lanes : lanes;
  for (std::int64_t q0 = 0; q0 < count; q0 += pixels_per_block) {
    const std::int64_t pixels = min_of(pixels_per_block, count - q0);
    const float* at[max_vector_taps][pixels_per_block];
    for (std::int64_t i = 0; i < tap_count; ++i)
      for (std::int64_t q = 0; q < pixels_per_block; ++q) {
        const float* pixel = q < pixels ? source(q0 + q, i) : nullptr;
        at[i][q] = pixel != nullptr ? pixel : zeros;
      }
    for (std::int64_t b = 0; b < plan.blocks; ++b) {
      const std::int64_t base = plan.base(b);
      const bool in_place = base + span <= plan.src_channels;
      Vec acc[pixels_per_block];
      Vec start{};
      if (init != nullptr) {
        for (int l = 0; l < lanes; ++l) start[l] = init[min_of(b * lanes + l, plan.dst_channels - 1)];
      }
      for (std::int64_t q = 0; q < pixels_per_block; ++q) acc[q] = start;
      for (std::int64_t i = 0; i < tap_count; ++i) {
        SourceVectors v[pixels_per_block];
        for (std::int64_t q = 0; q < pixels_per_block; ++q)
          v[q] = source_vectors<TwoVectors>(plan, at[i][q], base, in_place);
        const float* wt = weights + (b * taps + tap_ids[i]) * plan.k * lanes;
        for (std::int64_t j = 0; j < (AlignedK > 0 ? AlignedK : plan.k); ++j) {
          const Vec wv = load(wt + j * lanes);
          const VecIndex mask = AlignedK > 0 ? group_mask<AlignedK>(static_cast<int>(j)) : plan.mask(b, j);
          for (std::int64_t q = 0; q < pixels_per_block; ++q)
            acc[q] += lane_sources<TwoVectors>(v[q], mask) * wv;
        }
      }
      const std::int64_t c0 = b * lanes, valid = min_of<std::int64_t>(lanes, plan.dst_channels - c0);
      for (std::int64_t q = 0; q < pixels; ++q) {
        float* out = dst + (q0 + q) * dst_pixel_stride + c0;
        if (valid == lanes) {
          store(out, acc[q]);
        } else {
          for (std::int64_t l = 0; l < valid; ++l) out[l] = acc[q][l];
        }
      }
    }
  }
}

template <typename Source>
void gather_row(const LanePlan& plan, std::int64_t taps, const std::int64_t* tap_ids, std::int64_t tap_count,
                const float* weights, const float* init, const float* zeros, std::int64_t count, float* dst,
                std::int64_t dst_pixel_stride, Source&& source) {
  const auto run = [&](auto two_vectors, auto aligned_k) {
    gather_row_with<decltype(two_vectors)::value, decltype(aligned_k)::value>(
        plan, taps, tap_ids, tap_count, weights, init, zeros, count, dst, dst_pixel_stride, source);
  };
  if (plan.two_vectors) {
    run(std::true_type{}, std::integral_constant<int, 0>{});
  } else if (plan.aligned_groups && plan.k == 2) {
    run(std::false_type{}, std::integral_constant<int, 2>{});
  } else if (plan.aligned_groups && plan.k == 4) {
    run(std::false_type{}, std::integral_constant<int, 4>{});
  } else {
    run(std::false_type{}, std::integral_constant<int, 0>{});
  }
}

// 0, 1, ..., taps - 1: every tap, in order.
std::vector<std::int64_t> every_tap(std::int64_t taps) {
  std::vector<std::int64_t> ids(taps);
  std::iota(ids.begin(), ids.end(), std::int64_t{0});
  return ids;
}

// packed[block][tap][j][lane] = weight(c, tap, j) for destination channel c = block * lanes + lane, zero for
// idle lanes.
template <typename Weight>
void pack_lane_weights(const LanePlan& plan, std::int64_t taps, float* packed, Weight&& weight) {
  parallel_for(plan.blocks, [&](std::int64_t b) {
    for (std::int64_t t = 0; t < taps; ++t)
      for (std::int64_t j = 0; j < plan.k; ++j)
        for (int l = 0; l < lanes; ++l) {
          const std::int64_t c = b * lanes + l;
          packed[((b * taps + t) * plan.k + j) * lanes + l] = c < plan.dst_channels ? weight(c, t, j) : 0.0f;
        }
  });
}

LanePlan forward_plan(const ConvParams& p) {
  return LanePlan(p.out_c, p.out_c / p.groups, p.in_c, p.in_c / p.groups);
}

LanePlan data_gradient_plan(const ConvParams& p) {
  return LanePlan(p.in_c, p.in_c / p.groups, p.out_c, p.out_c / p.groups);
}

bool is_small_grouped(const ConvParams& p, std::int64_t dst_per_group) {
  return p.groups > 1 && dst_per_group < max_groups_channels &&
         static_cast<std::int64_t>(p.kernel_h) * p.kernel_w <= max_vector_taps &&
         !(p.groups == p.in_c && p.groups == p.out_c);
}

}  // namespace

bool grouped_forward_applies(const ConvParams& p) {
  return lanes > 1 && is_small_grouped(p, p.out_c / p.groups) && forward_plan(p).fits;
}

bool grouped_data_gradient_applies(const ConvParams& p) {
  return lanes > 1 && is_small_grouped(p, p.in_c / p.groups) && data_gradient_plan(p).fits;
}

void grouped_forward_nhwc(const ConvParams& p, const float* x, const float* w, const float* b, float* y) {
  const Geometry geo(p);
  const LanePlan plan = forward_plan(p);
  const std::int64_t taps = static_cast<std::int64_t>(p.kernel_h) * p.kernel_w, ig = geo.in_per_group;
  const Memory packed(sizeof(float) * plan.blocks * taps * plan.k * lanes);
  pack_lane_weights(plan, taps, packed.floats(), [&](std::int64_t c, std::int64_t t, std::int64_t j) {
    return w[(c * taps + t) * ig + j];
  });
  const Memory zeros(sizeof(float) * (p.in_c + 2 * lanes), true);
  const std::vector<std::int64_t> all_taps = every_tap(taps);
  parallel_for(static_cast<std::int64_t>(p.batch) * p.out_h, [&](std::int64_t row) {
    const std::int64_t n = row / p.out_h, oh = row % p.out_h;
    gather_row(plan, taps, all_taps.data(), taps, packed.floats(), b, zeros.floats(), p.out_w,
               y + geo.y_offset(n, oh, 0, 0), p.out_c, [&](std::int64_t ow, std::int64_t t) -> const float* {
                 const std::int64_t ih = geo.input_row(oh, t / p.kernel_w),
                                    iw = geo.input_col(ow, t % p.kernel_w);
                 return geo.row_inside(ih) && geo.col_inside(iw) ? x + geo.x_offset(n, ih, iw, 0) : nullptr;
               });
  });
}

void grouped_data_gradient_nhwc(const ConvParams& p, const float* dy, const float* w, float* dx) {
  const Geometry geo(p);
  const LanePlan plan = data_gradient_plan(p);
  const std::int64_t taps = static_cast<std::int64_t>(p.kernel_h) * p.kernel_w, ig = geo.in_per_group,
                     og = geo.out_per_group;
  const Memory packed(sizeof(float) * plan.blocks * taps * plan.k * lanes);
  pack_lane_weights(plan, taps, packed.floats(), [&](std::int64_t c, std::int64_t t, std::int64_t j) {
    return w[(((c / ig) * og + j) * taps + t) * ig + c % ig];
  });
  const Memory zeros(sizeof(float) * (p.out_c + 2 * lanes), true);
  // Away from the borders, the columns of a stride phase are read by the same taps (about (K / s)^2 of the
  // K^2), so each phase's columns gather over those taps only; each run of border columns gathers over every
  // tap, reading zeros for those that do not reach them.
  const std::vector<ColumnPhase> phases = column_phases(p);
  const std::vector<bool> border = border_columns(p, phases);
  const std::vector<std::int64_t> all_taps = every_tap(taps);
  const Readers rows(p.in_h, p.out_h, p.kernel_h, p.stride_y, p.pad_top, p.dilation_y);
  parallel_for(static_cast<std::int64_t>(p.batch) * p.in_h, [&](std::int64_t row) {
    const std::int64_t n = row / p.in_h, ih = row % p.in_h;
    const Readers::Pair* row_pairs = rows.of(ih);
    std::int64_t tap_ids[max_vector_taps], out_rows[max_vector_taps], col_offsets[max_vector_taps];
    for (const ColumnPhase& phase : phases) {
      if (phase.first == phase.end) continue;
      std::int64_t count = 0;
      for (std::int64_t r = 0; r < rows.counts[ih]; ++r)
        for (const ColumnPhase::Tap& tap : phase.taps) {
          tap_ids[count] = row_pairs[r].tap * p.kernel_w + tap.kw;
          out_rows[count] = row_pairs[r].out;
          col_offsets[count++] = phase.first + tap.offset;
        }
      gather_row(plan, taps, tap_ids, count, packed.floats(), nullptr, zeros.floats(),
                 phase.end - phase.first,
                 dx + geo.x_offset(n, ih, phase.residue + phase.first * p.stride_x, 0), p.stride_x * p.in_c,
                 [&](std::int64_t q, std::int64_t i) -> const float* {
                   return dy + geo.y_offset(n, out_rows[i], col_offsets[i] + q, 0);
                 });
    }
    for (std::int64_t iw = 0; iw < p.in_w;) {
      if (!border[iw]) {
        ++iw;
        continue;
      }
      std::int64_t end = iw + 1;
      while (end < p.in_w && border[end]) ++end;
      gather_row(plan, taps, all_taps.data(), taps, packed.floats(), nullptr, zeros.floats(), end - iw,
                 dx + geo.x_offset(n, ih, iw, 0), p.in_c,
                 [&](std::int64_t q, std::int64_t t) -> const float* {
                   const std::int64_t oh =
                       output_reading(ih, t / p.kernel_w, p.stride_y, p.pad_top, p.dilation_y, p.out_h);
                   const std::int64_t ow =
                       output_reading(iw + q, t % p.kernel_w, p.stride_x, p.pad_left, p.dilation_x, p.out_w);
                   return oh >= 0 && ow >= 0 ? dy + geo.y_offset(n, oh, ow, 0) : nullptr;
                 });
      iw = end;
    }
  });
}

}  // namespace gradstate::cpu::GRADSTATE_ISA_NAMESPACE
