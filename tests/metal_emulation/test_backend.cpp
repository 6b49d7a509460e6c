// The Metal backend end to end on Linux: every op runs through its host launcher, the Objective-C layer and
// the mock device, whose dispatches execute the real .metal kernels in the emulator, and is compared with the
// CPU backend. Each case runs under the in-order schedule and three shuffled ones. Then planted launcher
// bugs (a dropped or short setBytes, swapped buffer indices) must each be noticed, every kernel must have
// been seen with one threadgroup and with many, and no Metal object may be left alive.
//
// Usage: test_backend                        every case under four schedules, coverage and leak checks
//        test_backend --quick                one case per op, one schedule (to check library loading)
//        test_backend --fault NAME --op OP   one op with a planted launcher bug: exits nonzero when noticed
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "gradstate/core/backend.h"
#include "mock_metal.h"

namespace {

using gradstate::Backend;
using gradstate::Buffer;
using gradstate::ConvParams;
using gradstate::DeviceKind;
using gradstate::DType;
using gradstate::Layout;
using gradstate::NormParams;
using BufferPtr = std::shared_ptr<Buffer>;

int failures = 0;
int checks = 0;

void expect(bool ok, const std::string& what) {
  ++checks;
  if (ok) return;
  ++failures;
  std::printf("FAIL %s\n", what.c_str());
}

std::mt19937 rng(2024);

BufferPtr random_buffer(gradstate::Shape shape, DeviceKind device, float offset = 0.0f) {
  BufferPtr b = Buffer::allocate(DType::float32, std::move(shape), device);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  for (std::int64_t i = 0; i < b->size(); ++i) b->f32()[i] = offset + dist(rng);
  return b;
}

BufferPtr copy_of(const Buffer& source, DeviceKind device) {
  BufferPtr b = Buffer::allocate(DType::float32, source.shape(), device);
  std::memcpy(b->data(), source.data(), source.nbytes());
  return b;
}

// |metal - cpu| <= 1e-4 * max|cpu|: float32 sums in another order, relative to the output's scale.
bool close(const Buffer& metal, const Buffer& cpu, double* worst) {
  double scale = 1e-30, error = 0;
  for (std::int64_t i = 0; i < cpu.size(); ++i) {
    scale = std::max(scale, std::fabs(double(cpu.f32()[i])));
    const double d = std::fabs(double(metal.f32()[i]) - double(cpu.f32()[i]));
    error = std::isnan(d) ? INFINITY : std::max(error, d);
  }
  *worst = std::max(*worst, error / scale);
  return error <= 1e-4 * scale;
}

double worst_error = 0;

void compare(const Buffer& metal, const Buffer& cpu, const std::string& what) {
  expect(close(metal, cpu, &worst_error), what + ": Metal differs from the CPU backend");
}

// Runs `op`, which throws or compares; the mock's complaints count as failures.
void run_checked(const std::string& what, const std::function<void()>& op) {
  try {
    op();
  } catch (const std::exception& e) {
    expect(false, what + ": " + e.what());
  }
  for (const std::string& error : mock_metal::take_errors()) expect(false, what + ": mock Metal: " + error);
}

// ---- convolution -----------------------------------------------------------------------------------------

struct ConvCase {
  int batch, in_c, out_c, in_h, in_w, kernel_h, kernel_w, stride, dilation, pad_top, pad_left, pad_bottom,
      pad_right, groups;
  Layout layout;
};

ConvParams params_of(const ConvCase& c) {
  ConvParams p{};
  p.batch = c.batch;
  p.in_h = c.in_h;
  p.in_w = c.in_w;
  p.in_c = c.in_c;
  p.out_c = c.out_c;
  p.kernel_h = c.kernel_h;
  p.kernel_w = c.kernel_w;
  p.stride_y = p.stride_x = c.stride;
  p.dilation_y = p.dilation_x = c.dilation;
  p.pad_top = c.pad_top;
  p.pad_left = c.pad_left;
  p.out_h = (c.in_h + c.pad_top + c.pad_bottom - c.dilation * (c.kernel_h - 1) - 1) / c.stride + 1;
  p.out_w = (c.in_w + c.pad_left + c.pad_right - c.dilation * (c.kernel_w - 1) - 1) / c.stride + 1;
  p.groups = c.groups;
  p.layout = c.layout;
  return p;
}

gradstate::Shape activation(const ConvParams& p, int h, int w, int c) {
  if (p.layout == Layout::NHWC) return {p.batch, h, w, c};
  return {p.batch, c, h, w};
}

std::string describe(const ConvCase& c) {
  char text[200];
  std::snprintf(text, sizeof text, "conv b%d %dx%d %d->%d k%dx%d s%d d%d pad(%d,%d,%d,%d) g%d %s", c.batch,
                c.in_h, c.in_w, c.in_c, c.out_c, c.kernel_h, c.kernel_w, c.stride, c.dilation, c.pad_top,
                c.pad_left, c.pad_bottom, c.pad_right, c.groups, c.layout == Layout::NHWC ? "NHWC" : "NCHW");
  return text;
}

// Inputs alternate between host memory (staged by the launcher) and Metal memory, outputs likewise, so both
// ways of binding a buffer are exercised.
void check_convolution(const ConvCase& c, Backend& metal, Backend& cpu, bool host_inputs) {
  const ConvParams p = params_of(c);
  const DeviceKind in_device = host_inputs ? DeviceKind::cpu : DeviceKind::metal;
  const std::string name = describe(c);
  BufferPtr x = random_buffer(activation(p, p.in_h, p.in_w, p.in_c), in_device);
  BufferPtr w = random_buffer({p.out_c, p.kernel_h, p.kernel_w, p.in_c / p.groups}, in_device);
  BufferPtr bias = random_buffer({p.out_c}, in_device);
  BufferPtr dy = random_buffer(activation(p, p.out_h, p.out_w, p.out_c), in_device);
  const DeviceKind out_device = host_inputs ? DeviceKind::metal : DeviceKind::cpu;

  for (const bool with_bias : {true, false}) {
    BufferPtr y_cpu = Buffer::allocate(DType::float32, dy->shape());
    BufferPtr y_metal = Buffer::allocate(DType::float32, dy->shape(), out_device);
    cpu.convolution_forward(p, *x, *w, with_bias ? bias.get() : nullptr, *y_cpu);
    run_checked(name + " forward", [&] {
      metal.convolution_forward(p, *x, *w, with_bias ? bias.get() : nullptr, *y_metal);
      compare(*y_metal, *y_cpu, name + (with_bias ? " forward" : " forward without bias"));
    });
  }

  BufferPtr dx_cpu = Buffer::allocate(DType::float32, x->shape());
  BufferPtr dx_metal = Buffer::allocate(DType::float32, x->shape(), out_device);
  cpu.convolution_data_gradient(p, *dy, *w, *dx_cpu);
  run_checked(name + " dx", [&] {
    metal.convolution_data_gradient(p, *dy, *w, *dx_metal);
    compare(*dx_metal, *dx_cpu, name + " dx");
  });

  // Overwrite, then accumulate onto what is there.
  BufferPtr dw_cpu = random_buffer(w->shape(), DeviceKind::cpu);
  BufferPtr db_cpu = random_buffer({p.out_c}, DeviceKind::cpu);
  BufferPtr dw_metal = copy_of(*dw_cpu, out_device);
  BufferPtr db_metal = copy_of(*db_cpu, out_device);
  for (const bool accumulate : {false, true}) {
    cpu.convolution_weights_gradient(p, *dy, *x, *dw_cpu, *db_cpu, accumulate);
    const std::string what = name + (accumulate ? " dW accumulate" : " dW");
    run_checked(what, [&] {
      metal.convolution_weights_gradient(p, *dy, *x, *dw_metal, *db_metal, accumulate);
      compare(*dw_metal, *dw_cpu, what);
      compare(*db_metal, *db_cpu, what + " (db)");
    });
  }
}

// Shapes chosen for the kernels' edges: one threadgroup, sizes that are not multiples of any tile, every
// padding form, strides, dilations, groups and depthwise, both layouts, batch 1 and several, and reductions
// long enough to be split.
const std::vector<ConvCase> conv_cases = {
    {1, 2, 3, 3, 3, 3, 3, 1, 1, 1, 1, 1, 1, 1, Layout::NHWC},
    {2, 3, 5, 7, 5, 3, 3, 2, 1, 1, 0, 1, 1, 1, Layout::NCHW},
    {1, 4, 6, 9, 8, 3, 3, 1, 2, 2, 2, 2, 2, 2, Layout::NHWC},
    {2, 8, 16, 6, 7, 3, 3, 1, 1, 1, 1, 1, 1, 8, Layout::NCHW},
    {1, 8, 8, 9, 10, 3, 3, 2, 1, 1, 1, 0, 0, 8, Layout::NHWC},
    {3, 16, 33, 17, 13, 3, 3, 1, 1, 1, 1, 1, 1, 1, Layout::NHWC},
    {1, 5, 7, 10, 11, 1, 1, 3, 1, 0, 0, 0, 0, 1, Layout::NCHW},
    {2, 3, 4, 5, 6, 2, 2, 2, 3, 3, 3, 3, 3, 1, Layout::NHWC},
    {2, 8, 8, 32, 32, 3, 3, 1, 1, 1, 1, 1, 1, 1, Layout::NHWC},
    {1, 3, 16, 23, 19, 7, 7, 2, 1, 3, 3, 3, 3, 1, Layout::NCHW},
    {2, 32, 64, 6, 6, 3, 3, 1, 1, 1, 1, 1, 1, 4, Layout::NCHW},
    {1, 4, 4, 5, 5, 3, 3, 1, 1, 1, 1, 1, 1, 4, Layout::NCHW},
    {2, 32, 32, 12, 12, 3, 3, 1, 1, 1, 1, 1, 1, 32, Layout::NHWC},
};

// ---- instance normalization ------------------------------------------------------------------------------

struct NormCase {
  int batch, channels, height, width;
  Layout layout;
  bool gamma, beta;
  float mean;  // a large mean tests that the statistics do not cancel catastrophically
};

std::string describe(const NormCase& c) {
  char text[160];
  std::snprintf(text, sizeof text, "norm b%d c%d %dx%d %s%s%s mean %g", c.batch, c.channels, c.height,
                c.width, c.layout == Layout::NHWC ? "NHWC" : "NCHW", c.gamma ? " gamma" : "",
                c.beta ? " beta" : "", double(c.mean));
  return text;
}

void check_instance_norm(const NormCase& c, Backend& metal, Backend& cpu, bool host_inputs) {
  NormParams p{c.batch, c.channels, c.height, c.width, c.layout, 1e-5f};
  const gradstate::Shape shape = c.layout == Layout::NHWC
                                     ? gradstate::Shape{c.batch, c.height, c.width, c.channels}
                                     : gradstate::Shape{c.batch, c.channels, c.height, c.width};
  const DeviceKind in_device = host_inputs ? DeviceKind::cpu : DeviceKind::metal;
  const DeviceKind out_device = host_inputs ? DeviceKind::metal : DeviceKind::cpu;
  const std::string name = describe(c);
  BufferPtr x = random_buffer(shape, in_device, c.mean);
  BufferPtr gamma = c.gamma ? random_buffer({c.channels}, in_device) : nullptr;
  BufferPtr beta = c.beta ? random_buffer({c.channels}, in_device) : nullptr;
  BufferPtr dy = random_buffer(shape, in_device);
  const gradstate::Shape stats{c.batch, c.channels};

  BufferPtr y_cpu = Buffer::allocate(DType::float32, shape),
            mean_cpu = Buffer::allocate(DType::float32, stats),
            inv_std_cpu = Buffer::allocate(DType::float32, stats);
  BufferPtr y_metal = Buffer::allocate(DType::float32, shape, out_device),
            mean_metal = Buffer::allocate(DType::float32, stats, out_device),
            inv_std_metal = Buffer::allocate(DType::float32, stats, out_device);
  cpu.instance_norm_forward(p, *x, gamma.get(), beta.get(), *y_cpu, *mean_cpu, *inv_std_cpu);
  run_checked(name + " forward", [&] {
    metal.instance_norm_forward(p, *x, gamma.get(), beta.get(), *y_metal, *mean_metal, *inv_std_metal);
    compare(*y_metal, *y_cpu, name + " forward");
    compare(*mean_metal, *mean_cpu, name + " mean");
    compare(*inv_std_metal, *inv_std_cpu, name + " inv_std");
  });

  BufferPtr dx_cpu = Buffer::allocate(DType::float32, shape);
  BufferPtr dx_metal = Buffer::allocate(DType::float32, shape, out_device);
  BufferPtr dgamma_cpu = random_buffer({c.channels}, DeviceKind::cpu);
  BufferPtr dbeta_cpu = random_buffer({c.channels}, DeviceKind::cpu);
  BufferPtr dgamma_metal = copy_of(*dgamma_cpu, out_device);
  BufferPtr dbeta_metal = copy_of(*dbeta_cpu, out_device);
  for (const bool accumulate : {false, true}) {
    // Both backends differentiate at the CPU's saved statistics, so that only the backward kernels differ.
    cpu.instance_norm_backward(p, *dy, *x, gamma.get(), *mean_cpu, *inv_std_cpu, *dx_cpu, *dgamma_cpu,
                               *dbeta_cpu, accumulate);
    const std::string what = name + (accumulate ? " backward accumulate" : " backward");
    run_checked(what, [&] {
      metal.instance_norm_backward(p, *dy, *x, gamma.get(), *mean_cpu, *inv_std_cpu, *dx_metal, *dgamma_metal,
                                   *dbeta_metal, accumulate);
      compare(*dx_metal, *dx_cpu, what + " dx");
      compare(*dgamma_metal, *dgamma_cpu, what + " dgamma");
      compare(*dbeta_metal, *dbeta_cpu, what + " dbeta");
    });
  }
}

const std::vector<NormCase> norm_cases = {
    {1, 1, 1, 1, Layout::NHWC, true, true, 0},        {1, 3, 1, 7, Layout::NCHW, false, false, 0},
    {2, 3, 16, 16, Layout::NHWC, true, false, 0},     {3, 2, 15, 17, Layout::NCHW, false, true, 0},
    {1, 2, 1, 257, Layout::NHWC, true, true, 0},      {2, 4, 33, 40, Layout::NCHW, true, true, 0},
    {2, 5, 9, 11, Layout::NHWC, true, true, 1000.0f}, {1, 64, 4, 5, Layout::NHWC, true, true, 0},
    {2, 300, 2, 3, Layout::NCHW, true, false, 0},
};

// ---- planted bugs ----------------------------------------------------------------------------------------

// Runs one op's check with a launcher bug planted in its first command buffer. A noticed bug is an error from
// the command buffer, a result that differs from the CPU's, or (with AddressSanitizer) a report of a kernel
// reading outside a buffer, which ends the process.
int check_fault(const std::string& fault_name, const std::string& op, Backend& metal, Backend& cpu) {
  using mock_metal::Fault;
  const std::map<std::string, Fault> faults = {
      {"drop_first_set_bytes", Fault::drop_first_set_bytes},
      {"shorten_first_set_bytes", Fault::shorten_first_set_bytes},
      {"swap_first_buffer_indices", Fault::swap_first_buffer_indices},
  };
  if (!faults.count(fault_name) || (op != "convolution" && op != "instance_norm")) {
    std::printf("unknown fault %s or op %s\n", fault_name.c_str(), op.c_str());
    return 2;
  }
  mock_metal::inject_fault(faults.at(fault_name));
  if (op == "convolution") {
    check_convolution(conv_cases[1], metal, cpu, true);
  } else {
    check_instance_norm(norm_cases[3], metal, cpu, true);
  }
  std::printf(failures > 0 ? "noticed: %s in %s\n" : "UNNOTICED: %s in %s\n", fault_name.c_str(), op.c_str());
  return failures > 0 ? 3 : 0;
}

// ---- coverage --------------------------------------------------------------------------------------------

struct Coverage {
  std::set<unsigned> seeds;
  int dispatches = 0, single_threadgroup = 0, many_threadgroups = 0;
  unsigned largest_threadgroup = 0;
  std::size_t most_threadgroup_memory = 0;
};

void record(std::map<std::string, Coverage>& coverage) {
  for (const mock_metal::DispatchRecord& d : mock_metal::take_dispatches()) {
    Coverage& c = coverage[d.kernel];
    c.seeds.insert(d.seed);
    ++c.dispatches;
    const unsigned groups = d.threadgroups.x * d.threadgroups.y * d.threadgroups.z;
    (groups == 1 ? c.single_threadgroup : c.many_threadgroups)++;
    c.largest_threadgroup =
        std::max(c.largest_threadgroup,
                 d.threads_per_threadgroup.x * d.threads_per_threadgroup.y * d.threads_per_threadgroup.z);
    c.most_threadgroup_memory = std::max(c.most_threadgroup_memory, d.threadgroup_memory_bytes);
  }
}

void check_coverage(const std::map<std::string, Coverage>& coverage, bool quick) {
  std::printf("%-40s %10s %8s %8s %9s %9s %s\n", "kernel", "dispatches", "one tg", "many tg", "max tg",
              "tg bytes", "schedules");
  for (const std::string& kernel : msl_emulator::kernel_names()) {
    const auto found = coverage.find(kernel);
    if (found == coverage.end()) {
      expect(quick, kernel + " never ran");
      continue;
    }
    const Coverage& c = found->second;
    std::printf("%-40s %10d %8d %8d %9u %9zu %zu\n", kernel.c_str(), c.dispatches, c.single_threadgroup,
                c.many_threadgroups, c.largest_threadgroup, c.most_threadgroup_memory, c.seeds.size());
    if (quick) continue;
    expect(c.seeds.size() >= 4 && c.seeds.count(0),
           kernel + ": fewer than the in-order and 3 shuffled schedules");
    expect(c.single_threadgroup > 0, kernel + ": never ran as a single threadgroup");
    expect(c.many_threadgroups > 0, kernel + ": never ran with several threadgroups");
  }
}

}  // namespace

int main(int argc, char** argv) {
  const std::vector<std::string> args(argv + 1, argv + argc);
  const bool quick = args.size() == 1 && args[0] == "--quick";
  Backend& metal = gradstate::metal_backend();
  Backend& cpu = gradstate::cpu_backend();
  expect(metal.available(),
         "the Metal backend is unavailable on the mock device: " + metal.unavailable_reason());
  if (!metal.available()) return 1;
  if (args.size() == 4 && args[0] == "--fault" && args[2] == "--op")
    return check_fault(args[1], args[3], metal, cpu);
  std::printf("device: %s\n", metal.device_name().c_str());

  std::map<std::string, Coverage> coverage;
  const std::vector<unsigned> seeds = quick ? std::vector<unsigned>{0} : std::vector<unsigned>{0, 1, 2, 3};
  for (const unsigned seed : seeds) {
    mock_metal::set_schedule_seed(seed);
    for (std::size_t i = 0; i < conv_cases.size(); ++i) {
      check_convolution(conv_cases[i], metal, cpu, (i + seed) % 2 == 0);
      if (quick) break;
    }
    for (std::size_t i = 0; i < norm_cases.size(); ++i) {
      check_instance_norm(norm_cases[i], metal, cpu, (i + seed) % 2 == 0);
      if (quick) break;
    }
    record(coverage);
  }
  check_coverage(coverage, quick);

  for (const char* kind : {"MTLBuffer", "MTLCommandBuffer", "MTLComputeCommandEncoder", "NSString", "NSURL",
                           "NSError", "NSAutoreleasePool", "MTLFunction"}) {
    expect(mock_metal::live_objects(kind) == 0,
           std::string(kind) + ": " + std::to_string(mock_metal::live_objects(kind)) + " left alive");
  }
  std::printf("largest relative difference from the CPU backend: %.3g\n", worst_error);
  std::printf("%d checks, %d failed\n", checks, failures);
  return failures == 0 ? 0 : 1;
}
