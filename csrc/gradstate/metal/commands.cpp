#include "gradstate/metal/commands.h"

#include <algorithm>
#include <cstring>
#include <stdexcept>

namespace gradstate::metal {
namespace {

using objc::send;
using objc::UInt;

constexpr UInt status_error = 5;  // MTLCommandBufferStatusError

}  // namespace

Commands::Commands(Device& device)
    : device_(device),
      command_buffer_(send(device.queue(), "commandBuffer")),
      encoder_(send(command_buffer_, "computeCommandEncoder")) {
  if (encoder_ == nullptr) throw std::runtime_error("Metal: the command buffer gave no compute encoder");
}

Commands::~Commands() {
  // A command buffer abandoned by an exception is never committed, but its encoder must still be ended.
  if (!ran_) send<void>(encoder_, "endEncoding");
}

void Commands::set_kernel(const char* name) {
  pipeline_ = device_.pipeline(name);
  send<void>(encoder_, "setComputePipelineState:", pipeline_);
}

std::size_t Commands::max_threads_per_threadgroup() const {
  if (pipeline_ == nullptr) throw std::logic_error("max_threads_per_threadgroup before set_kernel");
  return send<UInt>(pipeline_, "maxTotalThreadsPerThreadgroup");
}

objc::Id Commands::resident_or_staged(const Buffer& buffer, Buffer* output) {
  if (buffer.native_handle() != nullptr) return buffer.native_handle();
  // One staging buffer per host array, however often it is bound, so that a later dispatch sees what an
  // earlier one wrote.
  for (Staged& staged : staged_) {
    if (staged.host_data == buffer.data()) {
      if (output != nullptr) staged.copy_back_to = output;
      return staged.metal_buffer.get();
    }
  }
  staged_.push_back(
      Staged{device_.copy_to_new_buffer(buffer.data(), buffer.nbytes()), buffer.data(), output});
  return staged_.back().metal_buffer.get();
}

void Commands::set_buffer(const Buffer& buffer, int index) {
  send<void>(encoder_, "setBuffer:offset:atIndex:", resident_or_staged(buffer, nullptr), UInt{0},
             UInt(index));
}

void Commands::set_output(Buffer& buffer, int index) {
  send<void>(encoder_, "setBuffer:offset:atIndex:", resident_or_staged(buffer, &buffer), UInt{0},
             UInt(index));
}

void Commands::set_bytes(const void* data, std::size_t size, int index) {
  send<void>(encoder_, "setBytes:length:atIndex:", data, UInt(size), UInt(index));
}

void Commands::set_threadgroup_memory(std::size_t bytes, int index) {
  send<void>(encoder_, "setThreadgroupMemoryLength:atIndex:", UInt((bytes + 15) / 16 * 16), UInt(index));
}

void Commands::dispatch_threadgroups(Size threadgroups, Size threads_per_threadgroup) {
  if (threadgroups.width == 0 || threadgroups.height == 0 || threadgroups.depth == 0) return;
  send<void>(encoder_, "dispatchThreadgroups:threadsPerThreadgroup:", threadgroups, threads_per_threadgroup);
}

void Commands::run() {
  ran_ = true;
  send<void>(encoder_, "endEncoding");
  send<void>(command_buffer_, "commit");
  send<void>(command_buffer_, "waitUntilCompleted");
  if (send<UInt>(command_buffer_, "status") == status_error) {
    throw std::runtime_error("Metal: " +
                             objc::describe(send(command_buffer_, "error"), "the command buffer failed"));
  }
  for (const Staged& staged : staged_) {
    if (staged.copy_back_to == nullptr) continue;
    std::memcpy(staged.copy_back_to->data(), send<void*>(staged.metal_buffer.get(), "contents"),
                staged.copy_back_to->nbytes());
  }
}

}  // namespace gradstate::metal
