#include "gradstate/metal/device.h"

#include <dlfcn.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <new>
#include <stdexcept>

#include "gradstate/metal/embedded_kernels.h"

extern "C" void* MTLCreateSystemDefaultDevice();

namespace gradstate::metal {
namespace {

using objc::send;
using objc::UInt;

constexpr UInt shared_storage = 0;  // MTLResourceStorageModeShared | MTLResourceCPUCacheModeDefaultCache
constexpr const char* library_file = "gradstate.metallib";
constexpr objc::Int math_mode_safe = 0;  // MTLMathModeSafe

void release_buffer(void* metal_buffer) { send<void>(metal_buffer, "release"); }

bool file_exists(const std::string& path) { return std::ifstream(path).good(); }

// The directory of the shared object this code is linked into: the metallib is installed beside it.
std::string own_directory() {
  Dl_info info{};
  if (dladdr(reinterpret_cast<void*>(&release_buffer), &info) == 0 || info.dli_fname == nullptr) return ".";
  const std::string path = info.dli_fname;
  const auto slash = path.rfind('/');
  return slash == std::string::npos ? "." : path.substr(0, slash);
}

// GRADSTATE_METALLIB when set (it must exist), else the metallib beside the module; empty when neither.
std::string metallib_path() {
  if (const char* configured = std::getenv("GRADSTATE_METALLIB")) {
    if (!file_exists(configured)) {
      throw std::runtime_error(std::string("GRADSTATE_METALLIB: expected an existing file, got ") +
                               configured);
    }
    return configured;
  }
  const std::string beside_module = own_directory() + "/" + library_file;
  return file_exists(beside_module) ? beside_module : std::string();
}

}  // namespace

Device* Device::system_default() {
  static Device* device = []() -> Device* {
    objc::Id found = MTLCreateSystemDefaultDevice();
    return found != nullptr ? new Device(objc::Object(found)) : nullptr;
  }();
  return device;
}

Device::Device(objc::Object device)
    : device_(std::move(device)), queue_(send(device_.get(), "newCommandQueue")) {
  if (!queue_) throw std::runtime_error("Metal: the device gave no command queue");
}

std::string Device::name() const {
  objc::AutoreleasePool pool;
  return objc::to_string(send(device_.get(), "name"));
}

DeviceMemory Device::allocate(std::size_t nbytes) {
  objc::Id buffer = send(
      device_.get(), "newBufferWithLength:options:", UInt{std::max<std::size_t>(nbytes, 16)}, shared_storage);
  if (buffer == nullptr) throw std::bad_alloc();
  return DeviceMemory{send<void*>(buffer, "contents"), buffer, &release_buffer};
}

objc::Object Device::copy_to_new_buffer(const void* data, std::size_t nbytes) {
  // Metal refuses empty buffers; an empty input is never read, so any 16 bytes stand in for it.
  static const unsigned char nothing[16] = {};
  if (nbytes == 0) data = nothing;
  objc::Object buffer(send(device_.get(), "newBufferWithBytes:length:options:", data,
                           UInt{std::max<std::size_t>(nbytes, 16)}, shared_storage));
  if (!buffer) throw std::bad_alloc();
  return buffer;
}

// The offline-compiled metallib when there is one; otherwise the kernels' sources embedded in this module,
// compiled now (a machine whose build had no Metal compiler).
void Device::load_library() {
  objc::AutoreleasePool pool;
  objc::Id error = nullptr;
  const std::string path = metallib_path();
  if (!path.empty()) {
    objc::Id url = send(objc::class_named("NSURL"), "fileURLWithPath:", objc::string(path).get());
    library_ = objc::Object(send(device_.get(), "newLibraryWithURL:error:", url, &error));
    if (!library_)
      throw std::runtime_error("Metal: cannot load " + path + ": " + objc::describe(error, "no reason"));
    return;
  }
  objc::Object options(send(send(objc::class_named("MTLCompileOptions"), "alloc"), "init"));
  // IEEE-safe floating point, so that the kernels' results match the CPU's: mathMode where the system has it
  // (macOS 15), fastMathEnabled before.
  if (objc::responds(options.get(), "setMathMode:")) {
    send<void>(options.get(), "setMathMode:", math_mode_safe);
  } else {
    send<void>(options.get(), "setFastMathEnabled:", false);
  }
  library_ = objc::Object(send(device_.get(), "newLibraryWithSource:options:error:",
                               objc::string(embedded_kernel_source()).get(), options.get(), &error));
  if (!library_) {
    throw std::runtime_error("Metal: cannot compile the embedded kernels: " +
                             objc::describe(error, "no reason"));
  }
}

objc::Id Device::pipeline(const std::string& name) {
  std::lock_guard<std::mutex> lock(mutex_);
  const auto cached = pipelines_.find(name);
  if (cached != pipelines_.end()) return cached->second.get();
  if (!library_) load_library();
  objc::AutoreleasePool pool;
  objc::Object function(send(library_.get(), "newFunctionWithName:", objc::string(name).get()));
  if (!function) throw std::runtime_error("Metal: the kernel library has no kernel " + name);
  objc::Id error = nullptr;
  objc::Object pipeline(
      send(device_.get(), "newComputePipelineStateWithFunction:error:", function.get(), &error));
  if (!pipeline)
    throw std::runtime_error("Metal: kernel " + name + ": " + objc::describe(error, "no pipeline"));
  return pipelines_.emplace(name, std::move(pipeline)).first->second.get();
}

}  // namespace gradstate::metal
