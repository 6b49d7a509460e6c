// The vector type of the level being compiled: GRADSTATE_VECTOR_BYTES wide, written with the GCC/Clang
// vector extension so that one kernel source serves every level. Everything here lives in the level's
// namespace, so each level gets its own copy.
#pragma once

#include <cstdint>

#include "gradstate/core/integer_math.h"

#if GRADSTATE_VECTOR_BYTES >= 32 && defined(__x86_64__)
#include <immintrin.h>
#endif

namespace gradstate::cpu::GRADSTATE_ISA_NAMESPACE {

constexpr int lanes = GRADSTATE_VECTOR_BYTES / static_cast<int>(sizeof(float));

// Vector registers: 32 on AVX-512 and NEON, 16 on AVX2 (and at the scalar level).
constexpr int vector_registers = GRADSTATE_VECTOR_BYTES == 64 || GRADSTATE_VECTOR_BYTES == 16 ? 32 : 16;

// The floats of one cache line (64 bytes on every CPU the levels target).
constexpr std::int64_t line_floats = 64 / sizeof(float);

typedef float Vec __attribute__((vector_size(GRADSTATE_VECTOR_BYTES)));
typedef int VecIndex __attribute__((vector_size(GRADSTATE_VECTOR_BYTES)));

inline Vec load(const float* p) {
  Vec v;
  __builtin_memcpy(&v, p, sizeof v);
  return v;
}

inline void store(float* p, Vec v) { __builtin_memcpy(p, &v, sizeof v); }

// A store that bypasses the caches, for large outputs nothing reads soon: it saves reading each line before
// writing it. p must be aligned to the vector size; call stream_fence() once the streaming is done.
inline void stream(float* p, Vec v) {
#if GRADSTATE_VECTOR_BYTES == 64 && defined(__AVX512F__)
  _mm512_stream_ps(p, reinterpret_cast<__m512&>(v));
#elif GRADSTATE_VECTOR_BYTES == 32 && defined(__AVX__)
  _mm256_stream_ps(p, reinterpret_cast<__m256&>(v));
#else
  store(p, v);
#endif
}

// Outputs of at least this many floats (8 MiB) may be streamed: the caches could not hold them anyway.
// Smaller ones are left to the caches, where the next kernel finds them: streamed to memory, the 6.4 MB dx of
// a depthwise 3x3 stride-2 layer of 256 channels took 0.25 ms instead of 0.18 ms.
constexpr std::int64_t stream_floats = std::int64_t{2} << 20;

// Inputs of at most this many bytes in all are taken to be in the caches when a kernel starts (half of a 32
// MiB last-level cache), as when the kernel before wrote them or a benchmark runs again on the same data;
// the kernels that read them otherwise say what they gain and what they lose from memory.
constexpr std::int64_t cached_bytes = std::int64_t{16} << 20;

inline void stream_fence() {
#if GRADSTATE_VECTOR_BYTES >= 32 && defined(__x86_64__)
  _mm_sfence();
#endif
}

// Lane l holds p[l % 4]: 4 floats repeated across the vector, one broadcast load on AVX2 and AVX-512.
// (Written as a loop over the lanes, the compiler gathers the lanes one by one instead: on AVX-512, 16
// masked broadcasts, which made grp3x3_g32's dW 13x slower.)
inline Vec repeat4(const float* p) {
#if GRADSTATE_VECTOR_BYTES == 64 && defined(__AVX512F__)
  const __m512 v = _mm512_broadcast_f32x4(_mm_loadu_ps(p));
  return reinterpret_cast<const Vec&>(v);
#elif GRADSTATE_VECTOR_BYTES == 32 && defined(__AVX__)
  const __m256 v = _mm256_broadcast_ps(reinterpret_cast<const __m128*>(p));
  return reinterpret_cast<const Vec&>(v);
#else
  Vec v;
  for (int l = 0; l < lanes; ++l) v[l] = p[l % 4];
  return v;
#endif
}

inline bool aligned(const float* p) { return reinterpret_cast<unsigned long long>(p) % sizeof(Vec) == 0; }

// s - 0 is s for every s (s + 0 is not, for s = -0), so the compiler folds the subtraction away and
// only the broadcast remains.
inline Vec broadcast(float s) { return s - Vec{}; }

inline float sum_lanes(Vec v) {
  float sum = 0.0f;
  for (int i = 0; i < lanes; ++i) sum += v[i];
  return sum;
}

// Whether `rows` rows of `cols` floats, `stride` floats apart, are all finite: the sum of each times 0 is 0,
// not NaN.
inline bool all_finite(const float* v, std::int64_t rows, std::int64_t cols, std::int64_t stride) {
  Vec zeroed{};
  float rest = 0.0f;
  for (std::int64_t r = 0; r < rows; ++r) {
    const float* row = v + r * stride;
    std::int64_t i = 0;
    for (; i + lanes <= cols; i += lanes) zeroed += load(row + i) * 0.0f;
    for (; i < cols; ++i) rest += row[i] * 0.0f;
  }
  return rest + sum_lanes(zeroed) == 0.0f;
}

// The sum of count contiguous floats: whole vectors, their lanes, then the rest.
inline float sum_of(const float* p, std::int64_t count) {
  Vec total{};
  std::int64_t i = 0;
  for (; i + lanes <= count; i += lanes) total += load(p + i);
  float sum = sum_lanes(total);
  for (; i < count; ++i) sum += p[i];
  return sum;
}

// The shuffle mask in which lane l takes lane l - l % K + j: in groups of K lanes (K dividing the lanes),
// channel j of each lane's own group. With j known when the kernel is compiled, the compiler turns
// __builtin_shuffle by it into one shuffle instruction (within 128-bit lanes for K up to 4).
template <int K>
inline VecIndex group_mask(int j) {
  VecIndex mask;
  for (int l = 0; l < lanes; ++l) mask[l] = l - l % K + j;
  return mask;
}

template <typename T>
inline T min_of(T a, T b) {
  return b < a ? b : a;
}

template <typename T>
inline T max_of(T a, T b) {
  return a < b ? b : a;
}

// Asks for the cache lines of `floats` floats from `first` on, a share at each of `steps` calls of next():
// for a sweep along a row whose successor reads those lines first. A sweep that reads its pixels a vector
// of channels at a time, jumping between rows, leaves the hardware prefetchers behind, and the next sweep
// would wait on memory for every new line.
class LinesAhead {
 public:
  LinesAhead() = default;  // asks for nothing
  // first need not start a line: the last ask is for the last float, which may lie on a line of its own.
  LinesAhead(const float* first, std::int64_t floats, std::int64_t steps)
      : first_(first),
        last_(floats - 1),
        lines_(ceil_div(floats, line_floats) + 1),
        per_step_(ceil_div(lines_, max_of<std::int64_t>(steps, 1))) {}

  void next() {
    for (const std::int64_t end = min_of(asked_ + per_step_, lines_); asked_ < end; ++asked_)
      __builtin_prefetch(first_ + min_of(asked_ * line_floats, last_));
  }

 private:
  const float* first_ = nullptr;
  std::int64_t last_ = 0, lines_ = 0, per_step_ = 0, asked_ = 0;
};

}  // namespace gradstate::cpu::GRADSTATE_ISA_NAMESPACE
