#include "gradstate/ops/gradient_state.h"

#include "gradstate/core/errors.h"
#include "gradstate/core/layout.h"

namespace gradstate {

void GradientState::set_read_count(std::int64_t count) {
  if (count < 0) throw ValueError(concat("read_count: expected a count of at least 0, got ", count));
  if (temporary_ && read_count_.load() == 0) {
    throw ValueError(
        concat("read_count: expected a temporary state with reads left, got one whose read_count is "
               "already 0 (its contents are undefined)"));
  }
  read_count_.store(count);
}

void GradientState::consume_read() {
  if (!temporary_) return;
  std::int64_t count = read_count_.load();
  do {
    if (count == 0) {
      throw ValueError(
          "state: expected a state with read_count > 0, got a temporary state whose read_count is 0 (each "
          "gradient call reads a temporary state once; raise read_count to read it again)");
    }
  } while (!read_count_.compare_exchange_weak(count, count - 1));
}

void GradientState::check_layout(const Layout* requested) const {
  if (requested != nullptr && *requested != layout_) {
    throw ValueError(concat("layout: expected '", layout_name(layout_),
                            "' (the layout of the forward pass that made state), got '",
                            layout_name(*requested), "'"));
  }
}

}  // namespace gradstate
