// The one layer between gradstate and the Objective-C runtime that Metal is built on.
//
// A message is sent by looking up the receiver's implementation of the selector and calling it with the
// method's exact C signature, so no Objective-C compiler and no Apple header is needed. Only six runtime
// functions are used (declared below); on Linux the test harness links a mock runtime that defines them,
// so this very code drives a mock Metal device there.
#pragma once

#include <string>
#include <utility>

namespace gradstate::metal::objc {

using Id = void*;
using Sel = void*;
using UInt = unsigned long;  // NSUInteger
using Int = long;            // NSInteger

// MTLSize, passed by value to dispatchThreadgroups:threadsPerThreadgroup:.
struct Size {
  UInt width, height, depth;
};

Sel selector(const char* name);
Id class_named(const char* name);

// The implementation of `selector` for `receiver`; throws std::runtime_error naming the selector when the
// receiver is nil or does not respond to it.
void* implementation(Id receiver, Sel selector);

// Whether `receiver` implements the method (for APIs that newer systems replace).
bool responds(Id receiver, const char* selector_name);

template <class Result = Id, class... Args>
Result send(Id receiver, const char* selector_name, Args... args) {
  const Sel sel = selector(selector_name);
  const auto method = reinterpret_cast<Result (*)(Id, Sel, Args...)>(implementation(receiver, sel));
  return method(receiver, sel, args...);
}

// An object this code owns (from alloc/new/copy, or retained), released when the handle goes.
class Object {
 public:
  Object() = default;
  explicit Object(Id owned) : id_(owned) {}
  Object(Object&& other) noexcept : id_(std::exchange(other.id_, nullptr)) {}
  Object& operator=(Object&& other) noexcept {
    std::swap(id_, other.id_);
    return *this;
  }
  Object(const Object&) = delete;
  Object& operator=(const Object&) = delete;
  ~Object();

  Id get() const { return id_; }
  explicit operator bool() const { return id_ != nullptr; }
  // Gives up ownership.
  Id release() { return std::exchange(id_, nullptr); }

 private:
  Id id_ = nullptr;
};

// Takes a reference to an object owned elsewhere (an autoreleased result).
Object retained(Id object);

// An NSString holding a copy of `text`.
Object string(const std::string& text);
std::string to_string(Id ns_string);
// The localizedDescription of an NSError, or `fallback` when error is nil.
std::string describe(Id ns_error, const char* fallback);

// Drains the objects autoreleased while it lives (command buffers, encoders): host threads that are not the
// main thread have no pool of their own.
class AutoreleasePool {
 public:
  AutoreleasePool();
  ~AutoreleasePool();
  AutoreleasePool(const AutoreleasePool&) = delete;
  AutoreleasePool& operator=(const AutoreleasePool&) = delete;

 private:
  Id pool_;
};

}  // namespace gradstate::metal::objc
