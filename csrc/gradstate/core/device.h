// The kinds of device a kernel can run on. Each has one backend (see backend.h).
#pragma once

namespace gradstate {

enum class DeviceKind { cpu, metal };

inline const char* device_kind_name(DeviceKind kind) { return kind == DeviceKind::cpu ? "cpu" : "metal"; }

}  // namespace gradstate
