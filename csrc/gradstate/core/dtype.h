// Element types a Buffer can hold. Gradients are float32 whatever the activations are, as in MPS.
#pragma once

#include <cstddef>

namespace gradstate {

enum class DType { float32 };

inline std::size_t itemsize(DType dtype) {
  switch (dtype) {
    case DType::float32:
      return 4;
  }
  return 0;
}

inline const char* dtype_name(DType dtype) {
  switch (dtype) {
    case DType::float32:
      return "float32";
  }
  return "?";
}

}  // namespace gradstate
