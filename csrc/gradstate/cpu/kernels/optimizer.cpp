// Optimizer kernels of one ISA level (see kernels.h): one elementwise sweep per update over the values, their
// gradient and the optimizer's vectors, a vector of lanes at a time (the last, partial one through
// zero-padded copies). Arrays longer than one chunk are split across the thread pool; every element is
// computed the same way wherever it runs, so the results do not depend on the thread count.
//
// The rules are MPS's (MPSNNOptimizers.h), in float:
//   g = clip(g, min, max) (when clipping), g *= gradient_rescale, g += scale * sign(w) (L1) or scale * w (L2)
//   SGD:      m = momentum * m + lr * g; w -= m              (no momentum vector: w -= lr * g)
//   Nesterov: m = momentum * m + g;      w -= lr * (g + momentum * m)
//   RMSProp:  s = decay * s + (1 - decay) * g^2; w -= lr * g / (sqrt(s) + epsilon)
//   Adam:     m = beta1 * m + (1 - beta1) * g; v = beta2 * v + (1 - beta2) * g^2;
//             w -= step_size * m / (sqrt(v) + epsilon), with v replaced by max(v_max, v) for AMSGrad.
//
// This file is compiled with -fno-math-errno (csrc/CMakeLists.txt): nothing reads errno, and without it the
// per-lane square roots become vector instructions.
#include <cstdint>

#include "gradstate/cpu/kernels/kernels.h"
#include "gradstate/cpu/kernels/vec.h"
#include "gradstate/cpu/thread_pool.h"

namespace gradstate::cpu::GRADSTATE_ISA_NAMESPACE {
namespace {

constexpr std::int64_t chunk = 1 << 14;  // floats per task

// What comparing two Vecs gives: all ones in the lanes where the comparison holds.
typedef std::int32_t Mask __attribute__((vector_size(GRADSTATE_VECTOR_BYTES)));

inline Vec select(Mask mask, Vec if_true, Vec if_false) {
  return reinterpret_cast<Vec>((mask & reinterpret_cast<Mask>(if_true)) |
                               (~mask & reinterpret_cast<Mask>(if_false)));
}

inline Vec square_root(Vec v) {
  Vec r;
  for (int i = 0; i < lanes; ++i) r[i] = __builtin_sqrtf(v[i]);
  return r;
}

// The first n lanes of p (the rest zero), or zeros for a vector the update does not use.
inline Vec get(const float* p, std::int64_t i, std::int64_t n) {
  if (p == nullptr) return Vec{};
  if (n == lanes) return load(p + i);
  Vec v{};
  __builtin_memcpy(&v, p + i, sizeof(float) * n);
  return v;
}

inline void put(float* p, std::int64_t i, std::int64_t n, Vec v) {
  if (p == nullptr) return;
  if (n == lanes) {
    store(p + i, v);
  } else {
    __builtin_memcpy(p + i, &v, sizeof(float) * n);
  }
}

// The gradient after clipping, rescaling and regularization. NaN gradients stay NaN (they fail both
// clipping comparisons).
struct Preprocess {
  explicit Preprocess(const OptimizerParams& p)
      : clip(p.apply_gradient_clipping != 0),
        regularization(p.regularization),
        clip_min(broadcast(p.gradient_clip_min)),
        clip_max(broadcast(p.gradient_clip_max)),
        rescale(broadcast(p.gradient_rescale)),
        scale(broadcast(p.regularization_scale)) {}

  Vec operator()(Vec g, Vec w) const {
    if (clip) {
      g = select(g < clip_min, clip_min, g);
      g = select(g > clip_max, clip_max, g);
    }
    g *= rescale;
    if (regularization == Regularization::l1) {
      const Vec one = broadcast(1.0f);
      // sign(w): 1, -1, or 0 for zeros (and NaN, which the update keeps as NaN anyway).
      g += scale * (select(w > Vec{}, one, Vec{}) - select(w < Vec{}, one, Vec{}));
    } else if (regularization == Regularization::l2) {
      g += scale * w;
    }
    return g;
  }

  bool clip;
  Regularization regularization;
  Vec clip_min, clip_max, rescale, scale;
};

// Runs update(g, w, a, b, c) over every vector of the arrays; a, b and c (the optimizer's vectors) may be
// null, and then read as zeros and not written.
template <typename Update>
void sweep(std::int64_t size, const float* gradient, float* values, float* a, float* b, float* c,
           const Update& update) {
  auto run = [&](std::int64_t task) {
    const std::int64_t end = min_of(size, (task + 1) * chunk);
    for (std::int64_t i = task * chunk; i < end; i += lanes) {
      const std::int64_t n = min_of<std::int64_t>(lanes, end - i);
      Vec w = get(values, i, n), va = get(a, i, n), vb = get(b, i, n), vc = get(c, i, n);
      update(get(gradient, i, n), w, va, vb, vc);
      put(values, i, n, w);
      put(a, i, n, va);
      put(b, i, n, vb);
      put(c, i, n, vc);
    }
  };
  const std::int64_t tasks = ceil_div(size, chunk);
  if (tasks == 1) {
    run(0);
  } else {
    parallel_for(tasks, run);
  }
}

}  // namespace

void sgd_update(const OptimizerParams& p, std::int64_t size, const float* gradient, float* values,
                float* momentum) {
  const Preprocess preprocess(p);
  const Vec lr = broadcast(p.learning_rate), mu = broadcast(p.momentum_scale);
  if (momentum == nullptr) {
    sweep(size, gradient, values, nullptr, nullptr, nullptr,
          [&](Vec g, Vec& w, Vec&, Vec&, Vec&) { w -= lr * preprocess(g, w); });
  } else if (p.use_nesterov_momentum) {
    sweep(size, gradient, values, momentum, nullptr, nullptr, [&](Vec g, Vec& w, Vec& m, Vec&, Vec&) {
      g = preprocess(g, w);
      m = mu * m + g;
      w -= lr * (g + mu * m);
    });
  } else {
    sweep(size, gradient, values, momentum, nullptr, nullptr, [&](Vec g, Vec& w, Vec& m, Vec&, Vec&) {
      m = mu * m + lr * preprocess(g, w);
      w -= m;
    });
  }
}

void rmsprop_update(const OptimizerParams& p, std::int64_t size, const float* gradient, float* values,
                    float* sum_of_squares) {
  const Preprocess preprocess(p);
  const Vec lr = broadcast(p.learning_rate), decay = broadcast(p.decay), keep = broadcast(p.one_minus_decay),
            epsilon = broadcast(p.epsilon);
  sweep(size, gradient, values, sum_of_squares, nullptr, nullptr, [&](Vec g, Vec& w, Vec& s, Vec&, Vec&) {
    g = preprocess(g, w);
    s = decay * s + keep * (g * g);
    w -= lr * g / (square_root(s) + epsilon);
  });
}

void adam_update(const OptimizerParams& p, std::int64_t size, const float* gradient, float* values,
                 float* momentum, float* velocity, float* maximum_velocity) {
  const Preprocess preprocess(p);
  const Vec beta1 = broadcast(p.beta1), keep1 = broadcast(p.one_minus_beta1), beta2 = broadcast(p.beta2),
            keep2 = broadcast(p.one_minus_beta2), step = broadcast(p.step_size),
            epsilon = broadcast(p.epsilon);
  if (maximum_velocity == nullptr) {
    sweep(size, gradient, values, momentum, velocity, nullptr, [&](Vec g, Vec& w, Vec& m, Vec& v, Vec&) {
      g = preprocess(g, w);
      m = beta1 * m + keep1 * g;
      v = beta2 * v + keep2 * (g * g);
      w -= step * m / (square_root(v) + epsilon);
    });
  } else {
    sweep(size, gradient, values, momentum, velocity, maximum_velocity,
          [&](Vec g, Vec& w, Vec& m, Vec& v, Vec& v_max) {
            g = preprocess(g, w);
            m = beta1 * m + keep1 * g;
            v = beta2 * v + keep2 * (g * g);
            // A NaN velocity replaces the maximum, so it propagates.
            v_max = select(v <= v_max, v_max, v);
            w -= step * m / (square_root(v_max) + epsilon);
          });
  }
}

}  // namespace gradstate::cpu::GRADSTATE_ISA_NAMESPACE
