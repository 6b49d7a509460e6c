#include "mock_metal.h"

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <stdexcept>
#include <unordered_map>
#include <utility>

namespace mock_metal {
namespace {

using Sel = const char*;  // interned selector names
using UInt = unsigned long;

struct Size {  // MTLSize
  UInt width, height, depth;
};

struct Class;

// Every mock object: the class its methods come from and a reference count (retain/release).
struct Object {
  Class* isa = nullptr;
  std::atomic<int> references{1};
  virtual ~Object() = default;
};

// A class is an object too: its own class (the metaclass) holds the class methods.
struct Class : Object {
  std::string name;
  std::unordered_map<Sel, void*> methods;
};

std::mutex state_mutex;  // everything below that more than one host thread could touch
std::vector<std::string> errors;
std::vector<DispatchRecord> dispatches;
std::map<std::string, std::size_t> live;
unsigned schedule_seed = 0;
Fault next_fault = Fault::none;

void report(const std::string& error) {
  std::lock_guard<std::mutex> lock(state_mutex);
  errors.push_back(error);
}

Sel intern(const char* name) {
  static std::mutex mutex;
  static auto* names = new std::set<std::string>;  // never destroyed: selectors outlive static destruction
  std::lock_guard<std::mutex> lock(mutex);
  return names->insert(name).first->c_str();
}

Class* class_object(const std::string& name) {
  static std::mutex mutex;
  static auto* classes = new std::map<std::string, Class*>;  // never freed, like real classes
  std::lock_guard<std::mutex> lock(mutex);
  Class*& found = (*classes)[name];
  if (found == nullptr) {
    found = new Class;
    found->name = name;
    found->isa = new Class;
    found->isa->name = name + " class";
  }
  return found;
}

template <class T>
T* make(const std::string& class_name) {
  T* object = new T;
  object->isa = class_object(class_name);
  std::lock_guard<std::mutex> lock(state_mutex);
  ++live[class_name];
  return object;
}

void release(Object* object) {
  if (object->references.fetch_sub(1) != 1) return;
  {
    std::lock_guard<std::mutex> lock(state_mutex);
    --live[object->isa->name];
  }
  delete object;
}

// Autorelease pools of this thread, innermost last.
thread_local std::vector<std::vector<Object*>> pools;

template <class T>
T* autoreleased(T* object) {
  if (pools.empty()) {
    report(object->isa->name + " autoreleased with no autorelease pool in place: it leaks");
  } else {
    pools.back().push_back(object);
  }
  return object;
}

// ---- Foundation ------------------------------------------------------------------------------------------

struct String : Object {
  std::string text;
};
struct Url : Object {
  std::string path;
};
struct Error : Object {
  String* description = nullptr;
  ~Error() override {
    if (description) release(description);
  }
};
struct Pool : Object {};
struct CompileOptions : Object {
  bool fast_math = true;  // Metal's default
};

String* new_string(const std::string& text) {
  String* s = make<String>("NSString");
  s->text = text;
  return s;
}

Error* new_error(const std::string& text) {
  Error* e = make<Error>("NSError");
  e->description = new_string(text);
  return e;
}

void set_error(void** out, const std::string& text) {
  if (out != nullptr) *out = autoreleased(new_error(text));
}

// ---- Metal -----------------------------------------------------------------------------------------------

struct Buffer : Object {
  void* contents = nullptr;  // exactly `length` bytes, so that AddressSanitizer sees any overrun
  std::size_t length = 0;
  ~Buffer() override { std::free(contents); }
};
struct Library : Object {
  std::set<std::string> kernels;
};
struct Function : Object {
  std::string kernel;
};
struct Pipeline : Object {
  std::string kernel;
};
struct Queue : Object {};

// What one encoded dispatch will read: the arguments as they were when it was encoded.
struct Binding {
  Buffer* buffer = nullptr;  // retained until the command buffer completes
  std::size_t offset = 0;
  std::vector<unsigned char> bytes;  // setBytes copies its data at once, as Metal does
};
struct Dispatch {
  std::string kernel;
  std::map<UInt, Binding> bindings;
  std::map<UInt, UInt> threadgroup_lengths;
  Size threadgroups, threads;
};

struct Encoder;
struct CommandBuffer : Object {
  enum Status : UInt { not_enqueued = 0, committed = 2, completed = 4, failed = 5 };
  Status status = not_enqueued;
  Encoder* open_encoder = nullptr;
  bool encoded = false;
  std::vector<Dispatch> work;
  Error* error = nullptr;
  ~CommandBuffer() override {
    for (Dispatch& d : work)
      for (auto& [index, binding] : d.bindings)
        if (binding.buffer) release(binding.buffer);
    if (error) release(error);
  }
};
struct Encoder : Object {
  CommandBuffer* owner = nullptr;
  Pipeline* pipeline = nullptr;
  bool ended = false;
  Fault fault = Fault::none;
  int set_bytes_calls = 0;
  int set_buffer_calls = 0;
  UInt first_buffer_index = 0;
  std::map<UInt, Binding> bindings;
  std::map<UInt, UInt> threadgroup_lengths;
};

void fail(CommandBuffer* cb, const std::string& error) {
  report(error);
  cb->status = CommandBuffer::failed;
  if (cb->error == nullptr) cb->error = new_error(error);
}

bool usable(Encoder* e, const char* call) {
  if (!e->ended) return true;
  fail(e->owner, std::string(call) + " on an encoder after endEncoding");
  return false;
}

void run(CommandBuffer* cb, const Dispatch& d, unsigned seed) {
  msl_emulator::Bindings bindings;
  for (const auto& [index, binding] : d.bindings) {
    if (binding.buffer != nullptr) {
      bindings.set_buffer(int(index), static_cast<char*>(binding.buffer->contents) + binding.offset,
                          binding.buffer->length - binding.offset);
    } else {
      bindings.set_buffer(int(index), const_cast<unsigned char*>(binding.bytes.data()), binding.bytes.size());
    }
  }
  for (const auto& [index, length] : d.threadgroup_lengths)
    bindings.set_threadgroup_memory_length(int(index), length);
  const msl_emulator::Dim3 groups{unsigned(d.threadgroups.width), unsigned(d.threadgroups.height),
                                  unsigned(d.threadgroups.depth)};
  const msl_emulator::Dim3 threads{unsigned(d.threads.width), unsigned(d.threads.height),
                                   unsigned(d.threads.depth)};
  const msl_emulator::Report result = msl_emulator::dispatch_threadgroups(d.kernel, bindings, groups, threads,
                                                                          msl_emulator::Options{seed, 32});
  {
    std::lock_guard<std::mutex> lock(state_mutex);
    dispatches.push_back(DispatchRecord{d.kernel, groups, threads, result.threadgroup_memory_bytes, seed});
  }
  for (const std::string& e : result.errors) fail(cb, d.kernel + ": " + e);
}

// ---- the methods, each with the exact C signature of its Objective-C method ------------------------------

void* retain(Object* self, Sel) {
  self->references.fetch_add(1);
  return self;
}
void release_method(Object* self, Sel) { release(self); }

void* alloc_string(Class*, Sel) { return make<String>("NSString"); }
void* init_with_utf8(String* self, Sel, const char* text) {
  self->text = text;
  return self;
}
const char* utf8_string(String* self, Sel) { return self->text.c_str(); }

void* alloc_pool(Class*, Sel) { return make<Pool>("NSAutoreleasePool"); }
void* init_pool(Pool* self, Sel) {
  pools.emplace_back();
  return self;
}
void drain(Pool* self, Sel) {
  if (pools.empty()) {
    report("NSAutoreleasePool drained with no pool in place");
  } else {
    for (Object* object : pools.back()) release(object);
    pools.pop_back();
  }
  release(self);
}

void* file_url(Class*, Sel, String* path) {
  Url* url = make<Url>("NSURL");
  url->path = path->text;
  return autoreleased(url);
}

void* localized_description(Error* self, Sel) { return self->description; }

void* alloc_compile_options(Class*, Sel) { return make<CompileOptions>("MTLCompileOptions"); }
void* init_object(Object* self, Sel) { return self; }
void set_fast_math(CompileOptions* self, Sel, bool enabled) { self->fast_math = enabled; }
void set_math_mode(CompileOptions* self, Sel, long mode) {
  self->fast_math = mode != 0;
}  // 0: MTLMathModeSafe

void* device_name(Object*, Sel) { return autoreleased(new_string("gradstate mock Metal device")); }
void* new_command_queue(Object*, Sel) { return make<Queue>("MTLCommandQueue"); }

Buffer* new_buffer_object(UInt length, UInt options) {
  if (options != 0) report("newBuffer: options " + std::to_string(options) + " are not shared storage");
  if (length == 0) return nullptr;  // Metal refuses empty buffers
  Buffer* b = make<Buffer>("MTLBuffer");
  b->contents = std::calloc(length, 1);
  b->length = length;
  return b;
}
void* new_buffer(Object*, Sel, UInt length, UInt options) { return new_buffer_object(length, options); }
void* new_buffer_with_bytes(Object*, Sel, const void* data, UInt length, UInt options) {
  Buffer* b = new_buffer_object(length, options);
  if (b != nullptr) std::memcpy(b->contents, data, length);
  return b;
}
void* contents(Buffer* self, Sel) { return self->contents; }
UInt buffer_length(Buffer* self, Sel) { return self->length; }

// The kernels a library can offer: those the emulator has, and, for a library compiled from source, only
// those whose definition the source text contains.
void* library_with_kernels(const std::string* source) {
  Library* library = make<Library>("MTLLibrary");
  for (const std::string& name : msl_emulator::kernel_names()) {
    if (source == nullptr || source->find("kernel void " + name + "(") != std::string::npos) {
      library->kernels.insert(name);
    }
  }
  return library;
}
void* new_library_with_url(Object*, Sel, Url* url, void** error) {
  if (!std::ifstream(url->path).good()) {
    set_error(error, "no metallib at " + url->path);
    return nullptr;
  }
  return library_with_kernels(nullptr);
}
void* new_library_with_source(Object*, Sel, String* source, CompileOptions* options, void** error) {
  if (options == nullptr || options->fast_math) {
    report("newLibraryWithSource: fast math left on: kernel results would differ from the CPU backend's");
  }
  if (source->text.find("#include \"") != std::string::npos) {
    set_error(error, "the embedded source still has an #include of a project header");
    return nullptr;
  }
  return library_with_kernels(&source->text);
}
void* new_function(Library* self, Sel, String* name) {
  if (!self->kernels.count(name->text)) return nullptr;  // Metal returns nil for unknown names
  Function* f = make<Function>("MTLFunction");
  f->kernel = name->text;
  return f;
}
void* new_pipeline(Object*, Sel, Function* function, void** error) {
  if (function == nullptr) {
    set_error(error, "nil function");
    return nullptr;
  }
  Pipeline* p = make<Pipeline>("MTLComputePipelineState");
  p->kernel = function->kernel;
  return p;
}
UInt max_threads(Pipeline*, Sel) { return 1024; }
UInt execution_width(Pipeline*, Sel) { return 32; }

void* command_buffer(Queue*, Sel) { return autoreleased(make<CommandBuffer>("MTLCommandBuffer")); }

void* compute_encoder(CommandBuffer* self, Sel) {
  if (self->open_encoder != nullptr) fail(self, "computeCommandEncoder while another encoder is open");
  if (self->status != CommandBuffer::not_enqueued && self->status != CommandBuffer::failed) {
    fail(self, "computeCommandEncoder after commit");
  }
  Encoder* e = make<Encoder>("MTLComputeCommandEncoder");
  e->owner = self;
  {
    std::lock_guard<std::mutex> lock(state_mutex);
    e->fault = std::exchange(next_fault, Fault::none);
  }
  self->open_encoder = e;
  return autoreleased(e);
}

void set_pipeline(Encoder* self, Sel, Pipeline* pipeline) {
  if (usable(self, "setComputePipelineState:")) self->pipeline = pipeline;
}

void set_buffer(Encoder* self, Sel, Buffer* buffer, UInt offset, UInt index) {
  if (!usable(self, "setBuffer:offset:atIndex:")) return;
  if (self->fault == Fault::swap_first_buffer_indices && self->set_buffer_calls < 2) {
    if (self->set_buffer_calls == 0) {
      self->first_buffer_index = index;
      index = index + 1;
    } else {
      index = self->first_buffer_index;
    }
  }
  ++self->set_buffer_calls;
  if (buffer == nullptr) return fail(self->owner, "setBuffer: nil buffer at index " + std::to_string(index));
  if (index > 30) return fail(self->owner, "setBuffer: index " + std::to_string(index) + " > 30");
  if (offset > buffer->length) return fail(self->owner, "setBuffer: offset beyond the buffer's length");
  Binding& binding = self->bindings[index];
  if (binding.buffer) release(binding.buffer);
  retain(buffer, nullptr);
  binding = Binding{buffer, offset, {}};
}

void set_bytes(Encoder* self, Sel, const void* data, UInt length, UInt index) {
  if (!usable(self, "setBytes:length:atIndex:")) return;
  const bool first = self->set_bytes_calls++ == 0;
  if (first && self->fault == Fault::drop_first_set_bytes) return;
  if (first && self->fault == Fault::shorten_first_set_bytes) length -= 4;
  if (length > 4096) return fail(self->owner, "setBytes: " + std::to_string(length) + " bytes > 4 KiB");
  if (index > 30) return fail(self->owner, "setBytes: index " + std::to_string(index) + " > 30");
  Binding& binding = self->bindings[index];
  if (binding.buffer) release(binding.buffer);
  const auto* bytes = static_cast<const unsigned char*>(data);
  binding = Binding{nullptr, 0, std::vector<unsigned char>(bytes, bytes + length)};
}

void set_threadgroup_length(Encoder* self, Sel, UInt length, UInt index) {
  if (!usable(self, "setThreadgroupMemoryLength:atIndex:")) return;
  if (length % 16 != 0)
    fail(self->owner, "setThreadgroupMemoryLength: " + std::to_string(length) + " not a multiple of 16");
  self->threadgroup_lengths[index] = length;
}

void dispatch_threadgroups(Encoder* self, Sel, Size threadgroups, Size threads) {
  if (!usable(self, "dispatchThreadgroups:threadsPerThreadgroup:")) return;
  if (self->pipeline == nullptr) return fail(self->owner, "dispatchThreadgroups without a pipeline state");
  const UInt total = threads.width * threads.height * threads.depth;
  if (total == 0 || total > max_threads(self->pipeline, nullptr)) {
    return fail(self->owner, self->pipeline->kernel + ": " + std::to_string(total) +
                                 " threads per threadgroup, outside 1..maxTotalThreadsPerThreadgroup");
  }
  Dispatch d{self->pipeline->kernel, self->bindings, self->threadgroup_lengths, threadgroups, threads};
  for (auto& [index, binding] : d.bindings)
    if (binding.buffer) retain(binding.buffer, nullptr);
  self->owner->work.push_back(std::move(d));
}

void end_encoding(Encoder* self, Sel) {
  if (self->ended) return fail(self->owner, "endEncoding twice");
  self->ended = true;
  self->owner->open_encoder = nullptr;
  for (auto& [index, binding] : self->bindings)
    if (binding.buffer) release(binding.buffer);
  self->bindings.clear();
}

void commit(CommandBuffer* self, Sel) {
  if (self->open_encoder != nullptr) fail(self, "commit with an encoder still open (missing endEncoding)");
  if (self->status == CommandBuffer::not_enqueued) self->status = CommandBuffer::committed;
}

// The GPU runs the work now, so a host that reads results before waiting sees stale memory.
void wait_until_completed(CommandBuffer* self, Sel) {
  if (self->status == CommandBuffer::not_enqueued) return fail(self, "waitUntilCompleted before commit");
  if (self->status != CommandBuffer::committed) return;
  unsigned seed;
  {
    std::lock_guard<std::mutex> lock(state_mutex);
    seed = schedule_seed;
  }
  for (const Dispatch& d : self->work) {
    if (self->status == CommandBuffer::failed) break;
    run(self, d, seed);
  }
  if (self->status != CommandBuffer::failed) self->status = CommandBuffer::completed;
}
UInt status(CommandBuffer* self, Sel) { return self->status; }
void* command_buffer_error(CommandBuffer* self, Sel) { return self->error; }

template <class F>
void method(const std::string& class_name, const char* selector, F* implementation) {
  class_object(class_name)->methods[intern(selector)] = reinterpret_cast<void*>(implementation);
}
template <class F>
void class_method(const std::string& class_name, const char* selector, F* implementation) {
  class_object(class_name)->isa->methods[intern(selector)] = reinterpret_cast<void*>(implementation);
}

// Every class answers retain and release; the rest is exactly the API the host code uses.
void install() {
  for (const char* name : {"NSString", "NSURL", "NSError", "NSAutoreleasePool", "MTLCompileOptions",
                           "MTLDevice", "MTLCommandQueue", "MTLBuffer", "MTLLibrary", "MTLFunction",
                           "MTLComputePipelineState", "MTLCommandBuffer", "MTLComputeCommandEncoder"}) {
    method(name, "retain", &retain);
    method(name, "release", &release_method);
  }
  class_method("NSString", "alloc", &alloc_string);
  method("NSString", "initWithUTF8String:", &init_with_utf8);
  method("NSString", "UTF8String", &utf8_string);
  class_method("NSAutoreleasePool", "alloc", &alloc_pool);
  method("NSAutoreleasePool", "init", &init_pool);
  method("NSAutoreleasePool", "drain", &drain);
  class_method("NSURL", "fileURLWithPath:", &file_url);
  method("NSError", "localizedDescription", &localized_description);
  class_method("MTLCompileOptions", "alloc", &alloc_compile_options);
  method("MTLCompileOptions", "init", &init_object);
  method("MTLCompileOptions", "setFastMathEnabled:", &set_fast_math);
  method("MTLCompileOptions", "setMathMode:", &set_math_mode);
  method("MTLDevice", "name", &device_name);
  method("MTLDevice", "newCommandQueue", &new_command_queue);
  method("MTLDevice", "newBufferWithLength:options:", &new_buffer);
  method("MTLDevice", "newBufferWithBytes:length:options:", &new_buffer_with_bytes);
  method("MTLDevice", "newLibraryWithURL:error:", &new_library_with_url);
  method("MTLDevice", "newLibraryWithSource:options:error:", &new_library_with_source);
  method("MTLDevice", "newComputePipelineStateWithFunction:error:", &new_pipeline);
  method("MTLBuffer", "contents", &contents);
  method("MTLBuffer", "length", &buffer_length);
  method("MTLLibrary", "newFunctionWithName:", &new_function);
  method("MTLComputePipelineState", "maxTotalThreadsPerThreadgroup", &max_threads);
  method("MTLComputePipelineState", "threadExecutionWidth", &execution_width);
  method("MTLCommandQueue", "commandBuffer", &command_buffer);
  method("MTLCommandBuffer", "computeCommandEncoder", &compute_encoder);
  method("MTLCommandBuffer", "commit", &commit);
  method("MTLCommandBuffer", "waitUntilCompleted", &wait_until_completed);
  method("MTLCommandBuffer", "status", &status);
  method("MTLCommandBuffer", "error", &command_buffer_error);
  method("MTLComputeCommandEncoder", "setComputePipelineState:", &set_pipeline);
  method("MTLComputeCommandEncoder", "setBuffer:offset:atIndex:", &set_buffer);
  method("MTLComputeCommandEncoder", "setBytes:length:atIndex:", &set_bytes);
  method("MTLComputeCommandEncoder", "setThreadgroupMemoryLength:atIndex:", &set_threadgroup_length);
  method("MTLComputeCommandEncoder", "dispatchThreadgroups:threadsPerThreadgroup:", &dispatch_threadgroups);
  method("MTLComputeCommandEncoder", "endEncoding", &end_encoding);
}

void install_once() {
  static std::once_flag once;
  std::call_once(once, install);
}

}  // namespace

void set_schedule_seed(unsigned seed) {
  std::lock_guard<std::mutex> lock(state_mutex);
  schedule_seed = seed;
}

std::vector<DispatchRecord> take_dispatches() {
  std::lock_guard<std::mutex> lock(state_mutex);
  return std::exchange(dispatches, {});
}

std::vector<std::string> take_errors() {
  std::lock_guard<std::mutex> lock(state_mutex);
  return std::exchange(errors, {});
}

std::size_t live_objects(const std::string& class_name) {
  std::lock_guard<std::mutex> lock(state_mutex);
  return live[class_name];
}

void inject_fault(Fault fault) {
  std::lock_guard<std::mutex> lock(state_mutex);
  next_fault = fault;
}

}  // namespace mock_metal

// ---- the Objective-C runtime and Metal entry points the host code links against ---------------------------

extern "C" {

void* sel_registerName(const char* name) { return const_cast<char*>(mock_metal::intern(name)); }

const char* sel_getName(void* sel) { return static_cast<const char*>(sel); }

void* objc_getClass(const char* name) {
  mock_metal::install_once();
  return mock_metal::class_object(name);
}

void* object_getClass(void* object) { return static_cast<mock_metal::Object*>(object)->isa; }

bool class_respondsToSelector(void* cls, void* sel) {
  mock_metal::install_once();
  const auto& methods = static_cast<mock_metal::Class*>(cls)->methods;
  return methods.count(static_cast<const char*>(sel)) != 0;
}

void* class_getMethodImplementation(void* cls, void* sel) {
  return static_cast<mock_metal::Class*>(cls)->methods.at(static_cast<const char*>(sel));
}

void* MTLCreateSystemDefaultDevice() {
  mock_metal::install_once();
  static mock_metal::Object* device = mock_metal::make<mock_metal::Object>("MTLDevice");
  return device;
}

}  // extern "C"
