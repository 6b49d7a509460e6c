#include "gradstate/metal/objc.h"

#include <stdexcept>

// The Objective-C runtime functions this layer uses (libobjc on Apple platforms, the mock runtime of the
// Linux test harness elsewhere). Declared here rather than through <objc/runtime.h> so that this file
// compiles everywhere.
extern "C" {
void* objc_getClass(const char* name);
void* sel_registerName(const char* name);
const char* sel_getName(void* sel);
void* object_getClass(void* object);
void* class_getMethodImplementation(void* cls, void* sel);
bool class_respondsToSelector(void* cls, void* sel);
}

namespace gradstate::metal::objc {

Sel selector(const char* name) { return sel_registerName(name); }

Id class_named(const char* name) {
  Id cls = objc_getClass(name);
  if (cls == nullptr) throw std::runtime_error(std::string("Objective-C class ") + name + " not found");
  return cls;
}

void* implementation(Id receiver, Sel sel) {
  if (receiver == nullptr) throw std::runtime_error("Objective-C message sent to nil");
  void* cls = object_getClass(receiver);
  if (!class_respondsToSelector(cls, sel)) {
    throw std::runtime_error(std::string("Objective-C object does not respond to ") + sel_getName(sel));
  }
  return class_getMethodImplementation(cls, sel);
}

bool responds(Id receiver, const char* selector_name) {
  return receiver != nullptr && class_respondsToSelector(object_getClass(receiver), selector(selector_name));
}

Object::~Object() {
  if (id_ != nullptr) send<void>(id_, "release");
}

Object retained(Id object) { return Object(send(object, "retain")); }

Object string(const std::string& text) {
  return Object(send(send(class_named("NSString"), "alloc"), "initWithUTF8String:", text.c_str()));
}

std::string to_string(Id ns_string) { return send<const char*>(ns_string, "UTF8String"); }

std::string describe(Id ns_error, const char* fallback) {
  if (ns_error == nullptr) return fallback;
  return to_string(send(ns_error, "localizedDescription"));
}

AutoreleasePool::AutoreleasePool() : pool_(send(send(class_named("NSAutoreleasePool"), "alloc"), "init")) {}

AutoreleasePool::~AutoreleasePool() { send<void>(pool_, "drain"); }

}  // namespace gradstate::metal::objc
