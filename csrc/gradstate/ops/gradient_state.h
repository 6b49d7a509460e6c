// GradientState: what every gradient state shares (MPSNNGradientState / MPSState bookkeeping).
//
// read_count starts at 1 for a temporary state and at 0 for an ordinary one. Each gradient kernel that
// reads a temporary state decrements it; reading a temporary state whose count is 0 is an error, as MPS
// treats its contents as undefined then. Buffer reference counts are a separate matter.
#pragma once

#include <atomic>
#include <cstdint>

#include "gradstate/core/params.h"

namespace gradstate {

class GradientState {
 public:
  GradientState(bool temporary, Layout layout)
      : read_count_(temporary ? 1 : 0), temporary_(temporary), layout_(layout) {}
  virtual ~GradientState() = default;

  std::int64_t read_count() const { return read_count_.load(); }
  // ValueError naming read_count for a negative count or a temporary state that is already used up.
  void set_read_count(std::int64_t count);
  bool is_temporary() const { return temporary_; }
  // The activation layout of the forward pass that made the state.
  Layout layout() const { return layout_; }

  // Called by a gradient kernel just before it reads the state; ValueError naming state when a temporary
  // state has no reads left.
  void consume_read();

  // ValueError naming layout when a gradient call names a layout other than the state's.
  void check_layout(const Layout* requested) const;

 private:
  std::atomic<std::int64_t> read_count_;
  bool temporary_;
  Layout layout_;
};

}  // namespace gradstate
