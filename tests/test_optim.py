"""Optimizers against float64 numpy formulas of MPS's rules, for every option and both kinds of parameter
set (a convolution's weights and bias, an instance normalization's gamma and beta); their state, errors and
a short training run."""

import gc

import gradstate as gs
import numpy as np
import pytest
from conftest import assert_close, f32

F32 = np.float32


# ---- float64 references ---------------------------------------------------------------------------------


def preprocess(g, w, clip, rescale, regularization, scale):
    """MPS's gradient preprocessing: clip, then rescale, then add the regularization gradient of w."""
    if clip is not None:
        g = np.clip(g, clip[0], clip[1])
    g = g * rescale
    if regularization == "l1":
        g = g + scale * np.sign(w)
    elif regularization == "l2":
        g = g + scale * w
    return g


class Reference:
    """One optimizer's rule in float64, with its vectors per parameter (keyed by index)."""

    def __init__(self, kind, options, common):
        self.kind, self.options, self.common = kind, options, common
        self.vectors = {}
        self.t = 0

    def vector(self, name, index, like):
        return self.vectors.setdefault((name, index), np.zeros(like.shape))

    def begin_step(self):
        self.t += 1

    def update(self, index, w, g):
        """The new value of w (float64) from the float32 values w and gradient g."""
        o = self.options
        lr = self.common.get("learning_rate", 1e-3)
        w, g = np.asarray(w, np.float64), np.asarray(g, np.float64)
        g = preprocess(
            g,
            w,
            self.common.get("gradient_clip"),
            self.common.get("gradient_rescale", 1.0),
            self.common.get("regularization"),
            self.common.get("regularization_scale", 0.0),
        )
        if self.kind == "sgd":
            mu = o.get("momentum_scale", 0.0)
            if mu == 0.0:
                return w - lr * g
            m = self.vector("momentum", index, w)
            if o.get("use_nesterov_momentum", False):
                m[...] = mu * m + g
                return w - lr * (g + mu * m)
            m[...] = mu * m + lr * g
            return w - m
        if self.kind == "rmsprop":
            decay, eps = o.get("decay", 0.9), o.get("epsilon", 1e-8)
            s = self.vector("sum_of_squares", index, w)
            s[...] = decay * s + (1 - decay) * g * g
            return w - lr * g / (np.sqrt(s) + eps)
        b1, b2, eps = o.get("beta1", 0.9), o.get("beta2", 0.999), o.get("epsilon", 1e-8)
        step = lr * np.sqrt(1 - b2**self.t) / (1 - b1**self.t)
        m, v = self.vector("momentum", index, w), self.vector("velocity", index, w)
        m[...] = b1 * m + (1 - b1) * g
        v[...] = b2 * v + (1 - b2) * g * g
        if o.get("amsgrad", False):
            v_max = self.vector("maximum_velocity", index, w)
            v_max[...] = np.maximum(v_max, v)
            v = v_max
        return w - step * m / (np.sqrt(v) + eps)


OPTIMIZERS = {
    "sgd": ("sgd", gs.optim.SGD, {}),
    "sgd_momentum": ("sgd", gs.optim.SGD, {"momentum_scale": 0.9}),
    "sgd_nesterov": ("sgd", gs.optim.SGD, {"momentum_scale": 0.8, "use_nesterov_momentum": True}),
    "rmsprop": ("rmsprop", gs.optim.RMSProp, {}),
    "rmsprop_options": ("rmsprop", gs.optim.RMSProp, {"decay": 0.5, "epsilon": 1e-3}),
    "adam": ("adam", gs.optim.Adam, {}),
    "adam_options": ("adam", gs.optim.Adam, {"beta1": 0.7, "beta2": 0.9, "epsilon": 1e-4}),
    # A small beta2 lets the velocity fall when the gradients shrink, so the maximum matters.
    "amsgrad": ("adam", gs.optim.Adam, {"beta2": 0.5, "amsgrad": True}),
}

COMMON = {
    "defaults": {},
    "learning_rate": {"learning_rate": 0.05},
    "clip": {"learning_rate": 0.05, "gradient_clip": (-0.5, 0.7)},
    "rescale": {"learning_rate": 0.05, "gradient_rescale": 0.25},
    "l1": {"learning_rate": 0.05, "regularization": "l1", "regularization_scale": 0.3},
    "l2": {"learning_rate": 0.05, "regularization": "l2", "regularization_scale": 0.3},
    "all": {
        "learning_rate": 0.05,
        "gradient_clip": (-0.3, 0.4),
        "gradient_rescale": 2.0,
        "regularization": "l2",
        "regularization_scale": 0.1,
    },
    "clip_l1": {
        "learning_rate": 0.05,
        "gradient_clip": (-1.0, 0.2),
        "gradient_rescale": 0.5,
        "regularization": "l1",
        "regularization_scale": 0.2,
    },
}

# Gradient scales of the successive steps: large and small, so that clipping, momentum and the AMSGrad
# maximum all matter.
SCALES = [1.0, 0.05, 2.0, 0.2, 1.5, 0.01]


# ---- layers whose gradients drive the steps ---------------------------------------------------------------


class ConvLayer:
    def __init__(self, rng, bias=True):
        self.rng = rng
        self.layer = gs.Convolution(
            f32(rng.standard_normal((4, 3, 3, 2))),
            bias=f32(rng.standard_normal(4)) if bias else None,
            padding="same",
        )
        self.grad = gs.ConvolutionGradient(self.layer, option=gs.GradientOption.WEIGHTS_AND_BIAS)

    def params(self):
        return [self.layer.weights] + ([self.layer.bias] if self.layer.has_bias else [])

    def gradients(self, scale, temporary=False):
        """A forward and backward pass; returns the state and copies of the gradients."""
        x = f32(self.rng.standard_normal((2, 5, 6, 2)))
        _, state = self.layer.forward(x, temporary_state=temporary)
        if temporary:
            state.read_count = 2
        dy = f32(scale * self.rng.standard_normal((2, 5, 6, 4)) / 8)
        self.grad.backward(dy, x, state)
        grads = [np.array(state.gradient_for_weights), np.array(state.gradient_for_biases)]
        return state, grads[: len(self.params())]


class NormLayer:
    def __init__(self, rng, affine=True):
        self.rng = rng
        c = 5
        if affine:
            self.layer = gs.InstanceNormalization(
                c, f32(rng.uniform(0.5, 1.5, c)), f32(rng.standard_normal(c))
            )
        else:
            self.layer = gs.InstanceNormalization(c)  # trained from gamma = 1, beta = 0
        self.grad = gs.InstanceNormalizationGradient(self.layer)

    def params(self):
        return [self.layer.gamma, self.layer.beta]

    def gradients(self, scale, temporary=False):
        x = f32(self.rng.standard_normal((3, 4, 4, 5)))
        _, state = self.layer.forward(x, temporary_state=temporary)
        if temporary:
            state.read_count = 2
        self.grad.backward(f32(scale * self.rng.standard_normal(x.shape)), x, state)
        return state, [np.array(state.gradient_for_gamma), np.array(state.gradient_for_beta)]


LAYERS = {
    "conv": lambda rng: ConvLayer(rng),
    "conv_no_bias": lambda rng: ConvLayer(rng, bias=False),
    "norm": lambda rng: NormLayer(rng),
    "norm_default_gamma_beta": lambda rng: NormLayer(rng, affine=False),
}

STATE_VECTORS = {
    "momentum": "momentum_vectors",
    "velocity": "velocity_vectors",
    "maximum_velocity": "maximum_velocity_vectors",
    "sum_of_squares": "sum_of_squares_vectors",
}


def assert_update(actual, before, expected, what=""):
    """actual (the float32 values after a step) is the float64 expected value, up to 1e-4 of the largest
    change and the rounding of each value to float32."""
    actual = np.asarray(actual, np.float64)
    change = float(np.abs(expected - before).max())
    bound = 1e-4 * change + np.finfo(F32).eps * np.maximum(np.abs(before), np.abs(expected))
    err = np.abs(actual - expected)
    worst = int(np.argmax(err - bound))
    assert (err <= bound).all(), (
        f"{what}: at flat index {worst} got {actual.flat[worst]!r}, expected {expected.flat[worst]!r} "
        f"(from {before.flat[worst]!r}; largest change {change:.3g})"
    )


def check_steps(opt, ref, layer, steps=SCALES, what=""):
    """Runs the steps through the optimizer and the reference and compares values and vectors."""
    for k, scale in enumerate(steps):
        state, grads = layer.gradients(scale)
        before = [np.array(p, np.float64) for p in layer.params()]
        opt.step(layer.layer, state)
        ref.begin_step()
        for i, (w, g, p) in enumerate(zip(before, grads, layer.params())):
            assert_update(p, w, ref.update(i, w, g), what=f"{what} step {k} param {i}")
        opt_state = opt.state(layer.layer)
        assert opt_state.time_step == k + 1
        for (name, i), vector in ref.vectors.items():
            assert_close(np.asarray(getattr(opt_state, STATE_VECTORS[name])[i]), vector, rtol=1e-5, what=name)


@pytest.mark.parametrize("layer_kind", sorted(LAYERS))
@pytest.mark.parametrize("common", sorted(COMMON))
@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
def test_against_reference(optimizer, common, layer_kind, rng):
    kind, cls, options = OPTIMIZERS[optimizer]
    opt = cls(**options, **COMMON[common])
    layer = LAYERS[layer_kind](rng)
    check_steps(opt, Reference(kind, options, COMMON[common]), layer)


class WideConvLayer(ConvLayer):
    """A convolution with more weights than one kernel task takes (16384 floats), so that a step is split
    across threads, with a partial last vector."""

    def __init__(self, rng):
        self.rng = rng
        self.layer = gs.Convolution(f32(rng.standard_normal((61, 3, 3, 67)) * 0.1), bias=np.zeros(61, F32))
        self.grad = gs.ConvolutionGradient(self.layer, option=gs.GradientOption.WEIGHTS_AND_BIAS)

    def gradients(self, scale, temporary=False):
        x = f32(self.rng.standard_normal((1, 4, 4, 67)))
        _, state = self.layer.forward(x)
        self.grad.backward(f32(scale * self.rng.standard_normal((1, 2, 2, 61)) / 8), x, state)
        return state, [np.array(state.gradient_for_weights), np.array(state.gradient_for_biases)]


@pytest.mark.parametrize("optimizer", ["sgd_nesterov", "rmsprop", "amsgrad"])
def test_parameter_set_larger_than_a_task(optimizer, rng):
    kind, cls, options = OPTIMIZERS[optimizer]
    common = COMMON["all"]
    check_steps(
        cls(**options, **common), Reference(kind, options, common), WideConvLayer(rng), steps=[1.0, 0.1, 2.0]
    )


@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
def test_vectors_held(optimizer):
    kind, cls, options = OPTIMIZERS[optimizer]
    opt = cls(**options)
    conv = gs.Convolution(np.ones((3, 1, 1, 2), F32), bias=np.zeros(3, F32))
    state = opt.state(conv)
    assert state.time_step == 0
    expected = {
        "sgd": {"momentum"} if options.get("momentum_scale") else set(),
        "rmsprop": {"sum_of_squares"},
        "adam": {"momentum", "velocity"} | ({"maximum_velocity"} if options.get("amsgrad") else set()),
    }[kind]
    for name, attribute in STATE_VECTORS.items():
        vectors = getattr(state, attribute)
        if name in expected:
            assert [v.shape for v in vectors] == [(3, 1, 1, 2), (3,)]
            assert not any(np.asarray(v).any() for v in vectors)
        else:
            assert vectors == []
    # The same state each time.
    assert opt.state(conv) is state


def test_time_step_counts_per_layer(rng):
    """Adam's t belongs to each parameter set: two layers stepped in turn each follow their own reference."""
    options, common = {"beta1": 0.5, "beta2": 0.8}, {"learning_rate": 0.1}
    opt = gs.optim.Adam(**options, **common)
    a, b = ConvLayer(rng), NormLayer(rng)
    ref_a, ref_b = Reference("adam", options, common), Reference("adam", options, common)
    check_steps(opt, ref_a, a, steps=[1.0, 0.5], what="a")
    check_steps(opt, ref_b, b, steps=[1.0], what="b")
    assert opt.state(a.layer).time_step == 2 and opt.state(b.layer).time_step == 1
    # A preset time step (a restored checkpoint) is where the count continues.
    opt.state(b.layer).time_step = 10
    ref_b.t = 10
    state, grads = b.gradients(1.0)
    before = [np.array(p, np.float64) for p in b.params()]
    opt.step(b.layer, state)
    ref_b.begin_step()
    for i, (w, g, p) in enumerate(zip(before, grads, b.params())):
        assert_update(p, w, ref_b.update(i, w, g), what=f"param {i}")
    assert opt.state(b.layer).time_step == 11


def test_momentum_preloaded(rng):
    """The state's vectors are writable views: a step starts from what is written into them."""
    options, common = {"momentum_scale": 0.9}, {"learning_rate": 0.1}
    opt = gs.optim.SGD(**options, **common)
    layer = ConvLayer(rng)
    ref = Reference("sgd", options, common)
    for i, buffer in enumerate(opt.state(layer.layer).momentum_vectors):
        start = rng.standard_normal(buffer.shape)
        np.asarray(buffer)[...] = start
        ref.vectors[("momentum", i)] = np.asarray(buffer, np.float64).copy()
    check_steps(opt, ref, layer, steps=[1.0, 0.5])


def test_learning_rate_schedule(rng):
    opt = gs.optim.SGD(0.5)
    assert opt.learning_rate == 0.5
    layer = ConvLayer(rng)
    state, grads = layer.gradients(1.0)
    opt.learning_rate = 0.125
    before = np.array(layer.layer.weights, np.float64)
    opt.step(layer.layer, state)
    assert_update(layer.layer.weights, before, before - 0.125 * grads[0])
    with pytest.raises(ValueError, match=r"^learning_rate: "):
        opt.learning_rate = -1.0
    assert opt.learning_rate == 0.125


def test_defaults_and_properties():
    sgd = gs.optim.SGD()
    assert sgd.learning_rate == pytest.approx(1e-3)
    assert sgd.momentum_scale == 0.0 and sgd.use_nesterov_momentum is False
    assert sgd.gradient_rescale == 1.0 and sgd.gradient_clip is None
    assert sgd.regularization is None and sgd.regularization_scale == 0.0
    rms = gs.optim.RMSProp()
    assert rms.decay == pytest.approx(0.9) and rms.epsilon == pytest.approx(1e-8)
    adam = gs.optim.Adam(
        2e-3, amsgrad=True, gradient_clip=[-1, 2], regularization="l1", regularization_scale=0.5
    )
    assert adam.beta1 == pytest.approx(0.9) and adam.beta2 == pytest.approx(0.999)
    assert adam.epsilon == pytest.approx(1e-8) and adam.amsgrad is True
    assert adam.learning_rate == pytest.approx(2e-3)
    assert adam.gradient_clip == (-1.0, 2.0) and adam.regularization == "l1"
    assert adam.regularization_scale == 0.5
    for opt in (sgd, rms, adam):
        assert isinstance(opt, gs.optim.Optimizer)
    # numpy scalars are numbers too.
    assert gs.optim.SGD(np.float32(0.25), momentum_scale=np.float64(0.5)).momentum_scale == 0.5


def test_one_rule_for_a_nan_gradient(rng):
    """NaN gradients make NaN values, as numpy's formulas would, through clipping too."""
    conv = gs.Convolution(np.ones((1, 1, 1, 1), F32), bias=np.zeros(1, F32))
    x = np.ones((1, 1, 1, 1), F32)
    _, state = conv.forward(x)
    gs.ConvolutionGradient(conv).backward(np.full((1, 1, 1, 1), np.nan, F32), x, state)
    gs.optim.Adam(gradient_clip=(-1, 1), amsgrad=True).step(conv, state)
    assert np.isnan(conv.weights).all() and np.isnan(conv.bias).all()


# ---- which state, which layer -----------------------------------------------------------------------------


def test_state_of_another_layer_is_refused():
    w = np.ones((2, 1, 1, 2), F32)
    conv, other = gs.Convolution(w), gs.Convolution(w)
    _, state = other.forward(np.ones((1, 2, 2, 2), F32))
    with pytest.raises(ValueError, match=r"^state: expected a state made by this layer"):
        gs.optim.SGD().step(conv, state)
    norm, other_norm = gs.InstanceNormalization(2), gs.InstanceNormalization(2)
    _, norm_state = other_norm.forward(np.ones((1, 2, 2, 2), F32))
    with pytest.raises(ValueError, match=r"^state: expected a state made by this layer"):
        gs.optim.SGD().step(norm, norm_state)


def test_wrong_types_are_refused():
    conv = gs.Convolution(np.ones((2, 1, 1, 2), F32))
    norm = gs.InstanceNormalization(2)
    x = np.ones((1, 2, 2, 2), F32)
    _, conv_state = conv.forward(x)
    _, norm_state = norm.forward(x)
    opt = gs.optim.Adam()
    with pytest.raises(TypeError, match=r"^state: expected a ConvolutionGradientState"):
        opt.step(conv, norm_state)
    with pytest.raises(TypeError, match=r"^state: expected an? InstanceNormalizationGradientState"):
        opt.step(norm, conv_state)
    with pytest.raises(TypeError, match=r"^layer: expected a Convolution or an InstanceNormalization"):
        opt.step(gs.ConvolutionGradient(conv), conv_state)
    with pytest.raises(TypeError, match=r"^layer: "):
        opt.state("conv")


def test_temporary_state_is_read_once_per_step(rng):
    """A step reads the gradient state as a gradient call does: a temporary state needs read_count 2."""
    layer = ConvLayer(rng)
    x = f32(rng.standard_normal((2, 5, 6, 2)))
    y, state = layer.layer.forward(x, temporary_state=True)
    layer.grad.backward(np.ones_like(y), x, state)
    assert state.read_count == 0
    with pytest.raises(ValueError, match=r"^state: "):
        gs.optim.SGD().step(layer.layer, state)
    state, _ = layer.gradients(1.0, temporary=True)
    assert state.read_count == 1
    gs.optim.SGD().step(layer.layer, state)
    assert state.read_count == 0


def test_failed_step_leaves_a_temporary_state_unread(rng):
    """A step that fails its checks (here the step count) reads nothing: the state can still be stepped."""
    layer = ConvLayer(rng)
    state, _ = layer.gradients(1.0, temporary=True)
    assert state.read_count == 1
    opt = gs.optim.Adam()
    opt.state(layer.layer).time_step = 2**62
    with pytest.raises(ValueError, match=r"^time_step: "):
        opt.step(layer.layer, state)
    assert state.read_count == 1
    opt.state(layer.layer).time_step = 0
    opt.step(layer.layer, state)
    assert state.read_count == 0 and opt.state(layer.layer).time_step == 1


def test_optimizer_does_not_keep_layers_alive(rng):
    opt = gs.optim.Adam(amsgrad=True)
    keep = ConvLayer(rng)
    state, _ = keep.gradients(1.0)
    opt.step(keep.layer, state)
    gc.collect()
    baseline = gs.live_native_bytes()
    layer = NormLayer(rng)
    norm_state, _ = layer.gradients(1.0)
    opt.step(layer.layer, norm_state)
    assert gs.live_native_bytes() > baseline
    del layer, norm_state
    gc.collect()
    # The state of a layer that is gone is dropped at the optimizer's next use.
    opt.step(keep.layer, state)
    assert gs.live_native_bytes() == baseline


# ---- argument errors --------------------------------------------------------------------------------------

ERRORS = [
    (gs.optim.SGD, {"learning_rate": -0.1}, ValueError, "learning_rate"),
    (gs.optim.SGD, {"learning_rate": float("inf")}, ValueError, "learning_rate"),
    (gs.optim.SGD, {"learning_rate": float("nan")}, ValueError, "learning_rate"),
    (gs.optim.SGD, {"learning_rate": "0.1"}, TypeError, "learning_rate"),
    (gs.optim.SGD, {"learning_rate": True}, TypeError, "learning_rate"),
    (gs.optim.SGD, {"learning_rate": None}, TypeError, "learning_rate"),
    (gs.optim.SGD, {"momentum_scale": -0.5}, ValueError, "momentum_scale"),
    (gs.optim.SGD, {"momentum_scale": [0.5]}, TypeError, "momentum_scale"),
    (gs.optim.SGD, {"use_nesterov_momentum": 1}, TypeError, "use_nesterov_momentum"),
    (gs.optim.SGD, {"use_nesterov_momentum": "yes"}, TypeError, "use_nesterov_momentum"),
    (gs.optim.SGD, {"gradient_rescale": float("nan")}, ValueError, "gradient_rescale"),
    (gs.optim.SGD, {"gradient_rescale": "2"}, TypeError, "gradient_rescale"),
    (gs.optim.SGD, {"gradient_clip": (1.0, -1.0)}, ValueError, "gradient_clip"),
    (gs.optim.SGD, {"gradient_clip": (float("nan"), 1.0)}, ValueError, "gradient_clip"),
    (gs.optim.SGD, {"gradient_clip": 1.0}, TypeError, "gradient_clip"),
    (gs.optim.SGD, {"gradient_clip": (1.0, 2.0, 3.0)}, TypeError, "gradient_clip"),
    (gs.optim.SGD, {"gradient_clip": ("a", 1.0)}, TypeError, "gradient_clip"),
    (gs.optim.SGD, {"regularization": "l3"}, ValueError, "regularization"),
    (gs.optim.SGD, {"regularization": "L1"}, ValueError, "regularization"),
    (gs.optim.SGD, {"regularization": 1}, TypeError, "regularization"),
    (gs.optim.SGD, {"regularization_scale": -1.0}, ValueError, "regularization_scale"),
    (gs.optim.RMSProp, {"decay": 1.5}, ValueError, "decay"),
    (gs.optim.RMSProp, {"decay": -0.1}, ValueError, "decay"),
    (gs.optim.RMSProp, {"epsilon": -1e-8}, ValueError, "epsilon"),
    (gs.optim.RMSProp, {"epsilon": "small"}, TypeError, "epsilon"),
    (gs.optim.Adam, {"beta1": 1.0}, ValueError, "beta1"),
    (gs.optim.Adam, {"beta1": -0.1}, ValueError, "beta1"),
    (gs.optim.Adam, {"beta2": 1.0}, ValueError, "beta2"),
    (gs.optim.Adam, {"beta2": float("nan")}, ValueError, "beta2"),
    (gs.optim.Adam, {"epsilon": float("inf")}, ValueError, "epsilon"),
    (gs.optim.Adam, {"amsgrad": "no"}, TypeError, "amsgrad"),
    (gs.optim.Adam, {"learning_rate": 1e40}, ValueError, "learning_rate"),
]


@pytest.mark.parametrize(
    "cls, kwargs, exception, argument",
    ERRORS,
    ids=[f"{c.__name__}-{next(iter(k))}-{i}" for i, (c, k, _, _) in enumerate(ERRORS)],
)
def test_argument_errors(cls, kwargs, exception, argument):
    with pytest.raises(exception, match=rf"^{argument}: expected .*, got "):
        cls(**kwargs)


def test_time_step_errors():
    state = gs.optim.Adam().state(gs.InstanceNormalization(2))
    with pytest.raises(ValueError, match=r"^time_step: expected .*, got -1"):
        state.time_step = -1
    assert state.time_step == 0


def test_options_are_keywords():
    with pytest.raises(TypeError):
        gs.optim.SGD(0.1, 0.9)  # momentum_scale is keyword-only


# ---- training ---------------------------------------------------------------------------------------------


def test_short_training_run_lowers_the_loss(rng):
    """Adam steps on conv -> instance norm -> ReLU -> conv head over a fixed batch lower a squared loss."""
    x = f32(rng.standard_normal((4, 6, 6, 1)))
    target = f32(rng.standard_normal((4, 1, 1, 3)))
    conv = gs.Convolution(f32(rng.standard_normal((4, 3, 3, 1)) * 0.5), bias=np.zeros(4, F32), padding="same")
    norm = gs.InstanceNormalization(4)
    head = gs.Convolution(f32(rng.standard_normal((3, 6, 6, 4)) * 0.1), bias=np.zeros(3, F32))
    conv_grad, norm_grad, head_grad = (
        gs.ConvolutionGradient(conv),
        gs.InstanceNormalizationGradient(norm),
        gs.ConvolutionGradient(head),
    )
    opt = gs.optim.Adam(0.05)
    losses = []
    for _ in range(15):
        a, conv_state = conv.forward(x)
        b, norm_state = norm.forward(a)
        r = np.maximum(b, 0)
        y, head_state = head.forward(r)
        losses.append(float(np.mean((y - target) ** 2)))
        dy = f32(2 * (y - target) / y.size)
        dr = head_grad.backward(dy, r, head_state)
        db = norm_grad.backward(f32(dr * (b > 0)), a, norm_state)
        conv_grad.backward(db, x, conv_state)
        for layer, state in ((conv, conv_state), (norm, norm_state), (head, head_state)):
            opt.step(layer, state)
    assert losses[-1] < 0.2 * losses[0], losses
    # gamma and beta of the layer made without them were trained.
    assert not np.array_equal(norm.gamma, np.ones(4, F32)) and norm.beta.any()
