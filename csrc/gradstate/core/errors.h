// Errors raised by the core. The bindings translate them to Python's ValueError, TypeError and MemoryError;
// an argument error's message starts with the name of the offending argument, then says what was expected
// and what was given ("x: expected 4 dimensions, got 3").
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace gradstate {

struct ValueError : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};

struct TypeError : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};

// Memory that cannot be had; Python's MemoryError, with the size asked for (and a buffer's shape).
struct MemoryError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Joins the streamable parts into one message.
template <typename... Parts>
std::string concat(Parts&&... parts) {
  std::ostringstream out;
  (out << ... << std::forward<Parts>(parts));
  return out.str();
}

}  // namespace gradstate
