// Self-test of the Metal emulator, run on the kernels in selftest/*.metal. Correct kernels must give exact
// results under the schedules of seeds 0 to 3; every planted bug must be detected. Exits nonzero on failure.
//
//   selftest                  all checks
//   selftest --out-of-bounds  runs a kernel that reads one float past its input: a build with
//                             AddressSanitizer must stop with a report naming the .metal line (the run fails
//                             if it completes)
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "emulator.h"
#include "selftest_types.h"

namespace {

using msl_emulator::Bindings;
using msl_emulator::Dim3;
using msl_emulator::Options;
using msl_emulator::Report;

constexpr unsigned kSeeds[] = {0, 1, 2, 3};

int failures = 0;

void check(bool ok, const std::string& what) {
  std::printf("%s %s\n", ok ? "PASS" : "FAIL", what.c_str());
  if (!ok) ++failures;
}

void print(const Report& report) {
  for (const std::string& e : report.errors) std::printf("     error: %s\n", e.c_str());
  for (const std::string& w : report.warnings) std::printf("     warning: %s\n", w.c_str());
}

bool clean(const Report& report) { return report.errors.empty() && report.warnings.empty(); }

bool mentions(const std::vector<std::string>& messages, const std::string& text) {
  for (const std::string& m : messages) {
    if (m.find(text) != std::string::npos) return true;
  }
  return false;
}

Report run(const std::string& kernel, const Bindings& bindings, Dim3 groups, Dim3 threads, unsigned seed = 0,
           unsigned simd_width = 32) {
  Options options;
  options.seed = seed;
  options.simd_width = simd_width;
  return msl_emulator::dispatch_threadgroups(kernel, bindings, groups, threads, options);
}

template <class T>
void bind(Bindings& bindings, int index, std::vector<T>& data) {
  bindings.set_buffer(index, data.data(), data.size() * sizeof(T));
}

std::string seed_name(unsigned seed) { return " (seed " + std::to_string(seed) + ")"; }

// ---- Correct kernels -----------------------------------------------------------------------------------

void test_reduce_sum() {
  const unsigned count = 1000, threads = 256, groups = 4;
  std::vector<float> input(count);
  for (unsigned i = 0; i < count; ++i) input[i] = float(int(i % 7) - 3);
  ReduceParams params{count, 0.5f};
  std::vector<float> expected(groups, 0.0f);
  for (unsigned i = 0; i < count; ++i) expected[i / threads] += input[i] * params.scale;
  for (unsigned simd_width : {32u, 16u}) {
    for (unsigned seed : kSeeds) {
      std::vector<float> sums(groups, -1.0f);
      Bindings b;
      bind(b, 0, input);
      bind(b, 1, sums);
      b.set_buffer(2, &params, sizeof(params));
      b.set_threadgroup_memory_length(0, 128);
      const Report report = run("reduce_sum", b, {groups, 1, 1}, {threads, 1, 1}, seed, simd_width);
      print(report);
      check(clean(report) && sums == expected && report.threadgroup_memory_bytes == 128,
            "reduce_sum: exact partial sums, simd width " + std::to_string(simd_width) + seed_name(seed));
    }
  }
}

template <class T>
void test_reduce_max(const std::string& kernel) {
  const Dim3 groups{3, 2, 1}, threads{16, 8, 1};
  const unsigned width = groups.x * threads.x, height = groups.y * threads.y;
  std::vector<T> input(width * height);
  for (unsigned i = 0; i < input.size(); ++i) input[i] = T(int(i * 37 % 101) - 50);
  std::vector<T> expected(groups.x * groups.y, T(-1000));
  for (unsigned y = 0; y < height; ++y) {
    for (unsigned x = 0; x < width; ++x) {
      T& m = expected[(y / threads.y) * groups.x + x / threads.x];
      m = std::max(m, input[y * width + x]);
    }
  }
  for (unsigned seed : kSeeds) {
    std::vector<T> maxima(expected.size(), T(0));
    Bindings b;
    bind(b, 0, input);
    bind(b, 1, maxima);
    const Report report = run(kernel, b, groups, threads, seed);
    print(report);
    check(clean(report) && maxima == expected && report.threadgroup_memory_bytes == 32 * sizeof(T),
          kernel + ": exact maxima through a kernel-scope array" + seed_name(seed));
  }
}

void test_builtins() {
  const Dim3 groups{2, 3, 2}, threads{4, 2, 3};
  const unsigned width = 8, per_group = threads.x * threads.y * threads.z;
  const unsigned grid_x = groups.x * threads.x, grid_y = groups.y * threads.y, grid_z = groups.z * threads.z;
  for (unsigned seed : {0u, 3u}) {
    std::vector<BuiltinRecord> records(grid_x * grid_y * grid_z);
    Bindings b;
    bind(b, 0, records);
    const Report report = run("record_builtins", b, groups, threads, seed, width);
    print(report);
    bool ok = clean(report);
    for (unsigned z = 0; z < grid_z; ++z) {
      for (unsigned y = 0; y < grid_y; ++y) {
        for (unsigned x = 0; x < grid_x; ++x) {
          const BuiltinRecord& r = records[(z * grid_y + y) * grid_x + x];
          const unsigned local[3] = {x % threads.x, y % threads.y, z % threads.z};
          const unsigned group[3] = {x / threads.x, y / threads.y, z / threads.z};
          const unsigned index = (local[2] * threads.y + local[1]) * threads.x + local[0];
          const unsigned global[3] = {x, y, z}, size[3] = {threads.x, threads.y, threads.z},
                         count[3] = {groups.x, groups.y, groups.z};
          for (int k = 0; k < 3; ++k) {
            ok = ok && r.position_in_grid[k] == global[k] && r.position_in_threadgroup[k] == local[k] &&
                 r.threadgroup_position[k] == group[k] && r.threads_per_threadgroup[k] == size[k] &&
                 r.threadgroups_per_grid[k] == count[k];
          }
          ok = ok && r.grid_position_2d[0] == x && r.grid_position_2d[1] == y && r.grid_x == x &&
               r.index_in_threadgroup == index && r.index_in_simdgroup == index % width &&
               r.simdgroup_index == index / width && r.threads_per_simdgroup == width &&
               r.simdgroups_per_threadgroup == (per_group + width - 1) / width;
        }
      }
    }
    check(ok,
          "record_builtins: every builtin as uint, ushort2, ushort3, uint3, simd width 8" + seed_name(seed));
  }
}

struct alignas(16) Float4 {
  float v[4];
};
struct alignas(8) Half4 {
  _Float16 v[4];
};

void test_vector_math() {
  const unsigned n = 64;
  std::vector<Float4> input(n), output(n);
  std::vector<Half4> halves(n);
  std::vector<std::uint32_t> bits(n);
  for (unsigned i = 0; i < n; ++i) {
    input[i] = {{float(i), float(int(i % 5) - 2), float(i % 3) + 0.5f, i % 2 ? 1.0f : -1.0f}};
  }
  Bindings b;
  bind(b, 0, input);
  bind(b, 1, output);
  bind(b, 2, halves);
  bind(b, 3, bits);
  const Report report = run("vector_math", b, {2, 1, 1}, {32, 1, 1});
  print(report);
  bool ok = clean(report);
  const _Float16 one_two[2] = {_Float16(1.0f), _Float16(2.0f)};
  std::uint32_t one_two_bits;
  std::memcpy(&one_two_bits, one_two, 4);
  for (unsigned i = 0; i < n; ++i) {
    const float* x = input[i].v;
    float y[4] = {x[0] * 2.0f + 1.0f, x[1] * 2.0f, x[2] * 2.0f, x[3] * 2.0f - 1.0f};
    y[2] = y[0];
    y[3] = y[1];
    y[0] += 0.25f;
    y[1] += 0.25f;
    float z[4] = {y[3], y[2], y[1], x[0] + x[1] + x[2] + x[3]};
    for (float& c : z) c = std::fmin(std::fmax(c, -100.0f), 100.0f);
    z[0] = z[0] + (z[1] - z[0]) * 0.5f + std::fma(x[0], x[1], 1.0f);
    if (x[3] > 0.0f) z[1] = std::floor(z[1]) + std::ceil(x[2]);
    z[2] = std::sqrt(std::fabs(x[0])) + 0.5f + 1.0f + 0.0f;
    z[3] = std::fmax(std::fmin(z[3], 50.0f), 1.0f);
    std::uint32_t x_bits;
    std::memcpy(&x_bits, &x[0], 4);
    for (int k = 0; k < 4; ++k) ok = ok && output[i].v[k] == z[k] && halves[i].v[k] == _Float16(y[k]);
    ok = ok && bits[i] == (x_bits ^ one_two_bits);
  }
  check(ok, "vector_math: swizzles, conversions, half, as_type, math functions");
}

void test_simd_collectives() {
  const unsigned groups = 3, lanes = 32, n = groups * lanes;
  std::vector<int> input(n), output(n * 12);
  for (unsigned i = 0; i < n; ++i) input[i] = int(i * 7 % 11) - 5;
  for (unsigned seed : kSeeds) {
    std::vector<std::uint32_t> positives(1, 0);
    std::vector<std::int32_t> total(1, 0);
    Bindings b;
    bind(b, 0, input);
    bind(b, 1, output);
    bind(b, 2, positives);
    bind(b, 3, total);
    const Report report = run("simd_collectives", b, {groups, 1, 1}, {lanes, 1, 1}, seed);
    print(report);
    bool ok = clean(report);
    unsigned expected_positives = 0;
    int expected_total = 0;
    for (unsigned g = 0; g < groups; ++g) {
      const int* v = &input[g * lanes];
      int sum = 0, maximum = v[0], minimum = v[0];
      bool any_seven = false;
      for (unsigned l = 0; l < lanes; ++l) {
        sum += v[l];
        maximum = std::max(maximum, v[l]);
        minimum = std::min(minimum, v[l]);
        any_seven = any_seven || v[l] == 7;
        expected_positives += v[l] > 0;
      }
      expected_total += sum;
      int prefix = 0;
      for (unsigned l = 0; l < lanes; ++l) {
        const int* out = &output[(g * lanes + l) * 12];
        const int expected[12] = {sum,
                                  prefix,
                                  prefix + v[l],
                                  maximum,
                                  minimum,
                                  v[l ^ 1],
                                  l + 3 < lanes ? v[l + 3] : v[l],
                                  l >= 2 ? v[l - 2] : v[l],
                                  v[5],
                                  1,
                                  any_seven ? 1 : 0,
                                  v[31 - l]};
        ok = ok && std::equal(expected, expected + 12, out);
        prefix += v[l];
      }
    }
    ok = ok && positives[0] == expected_positives && total[0] == expected_total;
    check(ok,
          "simd_collectives: sums, prefixes, min/max, shuffles, broadcast, vote, atomics" + seed_name(seed));
  }
}

// Two host threads dispatching at once must not disturb each other.
void test_concurrent_dispatches() {
  const unsigned count = 512;
  std::vector<float> input(count, 1.0f);
  ReduceParams params{count, 1.0f};
  bool ok[2] = {false, false};
  auto work = [&](int which) {
    for (int repeat = 0; repeat < 20; ++repeat) {
      std::vector<float> sums(2, 0.0f);
      Bindings b;
      bind(b, 0, input);
      bind(b, 1, sums);
      b.set_buffer(2, &params, sizeof(params));
      b.set_threadgroup_memory_length(0, 128);
      const Report report = run("reduce_sum", b, {2, 1, 1}, {256, 1, 1}, unsigned(which + 1));
      ok[which] = clean(report) && sums[0] == 256.0f && sums[1] == 256.0f;
      if (!ok[which]) return;
    }
  };
  std::thread first(work, 0), second(work, 1);
  first.join();
  second.join();
  check(ok[0] && ok[1], "two host threads dispatch at the same time");
}

// ---- Planted bugs ------------------------------------------------------------------------------------

void test_missing_barrier() {
  const unsigned n = 256;
  std::vector<float> input(n);
  for (unsigned i = 0; i < n; ++i) input[i] = float(i);
  std::vector<std::vector<float>> outputs;
  bool poison_seen = false;
  for (unsigned seed : kSeeds) {
    std::vector<float> output(n, 0.0f);
    Bindings b;
    bind(b, 0, input);
    bind(b, 1, output);
    run("shift_without_barrier", b, {1, 1, 1}, {n, 1, 1}, seed);
    for (float v : output) poison_seen = poison_seen || std::isnan(v);
    outputs.push_back(output);
  }
  bool schedules_differ = false;
  for (const auto& output : outputs) {
    schedules_differ =
        schedules_differ || std::memcmp(output.data(), outputs[0].data(), n * sizeof(float)) != 0;
  }
  std::printf("     shift_without_barrier: poison (NaN) read: %s; results differ across seeds: %s\n",
              poison_seen ? "yes" : "no", schedules_differ ? "yes" : "no");
  check(poison_seen || schedules_differ, "missing barrier detected");

  // The same seed gives the same schedule.
  std::vector<float> again(n, 0.0f);
  Bindings b;
  bind(b, 0, input);
  bind(b, 1, again);
  run("shift_without_barrier", b, {1, 1, 1}, {n, 1, 1}, kSeeds[2]);
  check(std::memcmp(again.data(), outputs[2].data(), n * sizeof(float)) == 0, "a seed names one schedule");
}

void test_barrier_misuse() {
  std::vector<float> output(64, 0.0f);
  Bindings b;
  bind(b, 0, output);
  b.set_threadgroup_memory_length(0, 64 * sizeof(float));
  Report report = run("divergent_barrier", b, {2, 1, 1}, {64, 1, 1});
  print(report);
  check(mentions(report.errors, "planted_bugs.metal:25") &&
            mentions(report.errors, "returned without reaching it"),
        "divergent barrier reported with its .metal line");

  report = run("barriers_at_two_sites", b, {1, 1, 1}, {64, 1, 1}, 1);
  print(report);
  check(mentions(report.errors, "different threadgroup_barrier calls"),
        "barriers at two call sites reported");
}

void test_simd_misuse() {
  std::vector<float> output(32, 0.0f);
  Bindings b;
  bind(b, 0, output);
  Report report = run("divergent_simd_sum", b, {1, 1, 1}, {32, 1, 1});
  print(report);
  check(mentions(report.warnings, "different simd collectives") && output[0] == 16.0f && output[1] == 16.0f,
        "divergent simd collectives warned about; each half sums itself");

  report = run("shuffle_from_inactive_lane", b, {1, 1, 1}, {32, 1, 1});
  print(report);
  check(mentions(report.warnings, "inactive lane") && std::isnan(output[0]),
        "shuffle from an inactive lane gives poison and a warning");
}

void test_argument_contract() {
  std::vector<float> input(64, 1.0f), output(64, -1.0f);
  ReduceParams params{64, 2.0f};

  Bindings short_bytes;
  bind(short_bytes, 0, input);
  bind(short_bytes, 1, output);
  short_bytes.set_buffer(2, &params, sizeof(params) - 4);
  Report report = run("scale", short_bytes, {1, 1, 1}, {64, 1, 1});
  print(report);
  check(mentions(report.errors, "[[buffer(2)]]") && mentions(report.errors, "only 4 are bound") &&
            output[0] == -1.0f,
        "short setBytes reported, kernel not run");

  Bindings unbound;
  bind(unbound, 0, input);
  bind(unbound, 1, output);
  report = run("scale", unbound, {1, 1, 1}, {64, 1, 1});
  print(report);
  check(mentions(report.errors, "[[buffer(2)]]") && mentions(report.errors, "is not bound"),
        "unbound buffer reported");

  Bindings good = unbound;
  good.set_buffer(2, &params, sizeof(params));
  report = run("scale", good, {1, 1, 1}, {1025, 1, 1});
  print(report);
  check(mentions(report.errors, "more than 1024"), "more than 1024 threads per threadgroup reported");
  report = run("scale", good, {0, 1, 1}, {64, 1, 1});
  check(mentions(report.errors, "zero dimension"), "an empty grid reported");
  report = run("no_such_kernel", good, {1, 1, 1}, {64, 1, 1});
  check(mentions(report.errors, "no kernel named no_such_kernel"), "unknown kernel reported");

  std::vector<float> sums(1);
  Bindings reduce = good;
  bind(reduce, 1, sums);
  report = run("reduce_sum", reduce, {1, 1, 1}, {64, 1, 1});
  print(report);
  check(mentions(report.errors, "[[threadgroup(0)]]") &&
            mentions(report.errors, "no threadgroup memory length"),
        "missing threadgroup memory length reported");
  reduce.set_threadgroup_memory_length(0, 40);
  report = run("reduce_sum", reduce, {1, 1, 1}, {64, 1, 1});
  check(mentions(report.errors, "not a multiple of 16"),
        "threadgroup memory length not a multiple of 16 reported");
  reduce.set_threadgroup_memory_length(0, 32 * 1024 + 16);
  report = run("reduce_sum", reduce, {1, 1, 1}, {64, 1, 1});
  check(mentions(report.errors, "more than the 32 KiB"),
        "more than 32 KiB of dynamic threadgroup memory reported");

  Bindings big;
  bind(big, 0, output);
  big.set_threadgroup_memory_length(0, 16);
  report = run("too_much_threadgroup_memory", big, {2, 1, 1}, {64, 1, 1});
  print(report);
  check(mentions(report.errors, "more than the 32 KiB") && report.threadgroup_memory_bytes == 32 * 1024 + 16,
        "kernel-scope arrays count toward the 32 KiB");
}

void test_registry() {
  check(msl_emulator::has_kernel("reduce_max_float") && msl_emulator::has_kernel("reduce_max_int") &&
            !msl_emulator::has_kernel("reduce_max") && msl_emulator::kernel_names().size() == 14,
        "kernels registered by name, template instantiations by host_name");
}

// Reads one float past the end of an exactly sized heap buffer.
int run_out_of_bounds() {
  const unsigned n = 64;
  std::unique_ptr<float[]> input(new float[n]());
  std::vector<float> output(n);
  Bindings b;
  b.set_buffer(0, input.get(), n * sizeof(float));
  bind(b, 1, output);
  run("read_past_end", b, {1, 1, 1}, {n, 1, 1});
  std::printf("FAIL read_past_end ran to completion: build with -fsanitize=address to detect it\n");
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc > 1 && std::string(argv[1]) == "--out-of-bounds") return run_out_of_bounds();
  test_registry();
  test_reduce_sum();
  test_reduce_max<float>("reduce_max_float");
  test_reduce_max<int>("reduce_max_int");
  test_builtins();
  test_vector_math();
  test_simd_collectives();
  test_concurrent_dispatches();
  test_missing_barrier();
  test_barrier_misuse();
  test_simd_misuse();
  test_argument_contract();
  std::printf("%s: %d failed\n", failures ? "FAILED" : "OK", failures);
  return failures ? 1 : 0;
}
