"""Layer parameters: the weights, bias, gamma and beta views, the parameter states
(ConvolutionWeightsAndBiasesState, NormalizationGammaAndBetaState) with export and reload, and micro-batches
summed with accumulate=True."""

import gc

import gradstate as gs
import gradstate.mps as mps
import numpy as np
import pytest
import reference as ref
from conftest import assert_close, f32

F32 = np.float32


def make_conv(rng, bias=True):
    w = f32(rng.standard_normal((4, 3, 3, 2)))
    b = f32(rng.standard_normal(4)) if bias else None
    return gs.Convolution(w, bias=b, padding=1), w, b


def test_mps_names():
    assert mps.MPSCNNConvolutionWeightsAndBiasesState is gs.ConvolutionWeightsAndBiasesState
    assert mps.MPSCNNNormalizationGammaAndBetaState is gs.NormalizationGammaAndBetaState
    assert mps.MPSNNOptimizerStochasticGradientDescent is gs.optim.SGD
    assert mps.MPSNNOptimizerRMSProp is gs.optim.RMSProp
    assert mps.MPSNNOptimizerAdam is gs.optim.Adam


# ---- views ------------------------------------------------------------------------------------------------


def test_convolution_parameter_views(rng):
    conv, w, b = make_conv(rng)
    assert conv.weights.dtype == F32 and conv.weights.shape == w.shape and conv.weights.flags.writeable
    np.testing.assert_array_equal(conv.weights, w)
    np.testing.assert_array_equal(conv.bias, b)
    # The layer copied its arguments, and each access views the same memory.
    assert not np.shares_memory(conv.weights, w)
    assert np.shares_memory(conv.weights, conv.weights)
    assert gs.Convolution(w).bias is None


def test_edited_weights_take_effect_on_the_next_forward(rng):
    conv, w, b = make_conv(rng)
    x = f32(rng.standard_normal((2, 5, 6, 2)))
    y_before, state = conv.forward(x)
    new_w, new_b = f32(rng.standard_normal(w.shape)), f32(rng.standard_normal(4))
    conv.weights[...] = new_w
    conv.bias[:] = new_b
    pads = (1, 1, 1, 1)
    y_after, _ = conv.forward(x)
    assert_close(y_after, ref.conv2d(x, new_w, new_b, 1, 1, 1, pads), what="y with edited weights")
    # The earlier output is unchanged, and dx uses the weights as they are now.
    assert_close(y_before, ref.conv2d(x, w, b, 1, 1, 1, pads), what="earlier y")
    dy = f32(rng.standard_normal(y_before.shape))
    dx = gs.ConvolutionGradient(conv).backward(dy, x, state)
    assert_close(dx, ref.conv2d_input_grad(dy, new_w, x.shape, 1, 1, 1, pads), what="dx")


def test_instance_norm_parameter_views(rng):
    norm = gs.InstanceNormalization(3)
    np.testing.assert_array_equal(norm.gamma, np.ones(3, F32))
    np.testing.assert_array_equal(norm.beta, np.zeros(3, F32))
    x = f32(rng.standard_normal((2, 4, 5, 3)))
    y_plain, state_plain = norm.forward(x)
    assert_close(y_plain, ref.instance_norm(x, None, None, 1e-5)[0], what="y without gamma and beta")
    gamma, beta = f32(rng.standard_normal(3)), f32(rng.standard_normal(3))
    norm.gamma[:] = gamma
    norm.beta[:] = beta
    y, state = norm.forward(x)
    assert_close(y, ref.instance_norm(x, gamma, beta, 1e-5)[0], what="y with edited gamma and beta")
    # Each state keeps the values its forward pass used.
    np.testing.assert_array_equal(np.asarray(state_plain.gamma), np.ones(3, F32))
    np.testing.assert_array_equal(np.asarray(state.gamma), gamma)
    np.testing.assert_array_equal(np.asarray(state.beta), beta)
    norm.gamma[:] = 0.0
    np.testing.assert_array_equal(np.asarray(state.gamma), gamma)


def test_parameter_view_outlives_the_layer(rng):
    gc.collect()
    baseline = gs.live_native_bytes()
    conv, w, _ = make_conv(rng)
    norm = gs.InstanceNormalization(3, gamma=np.full(3, 2.0, F32))
    weights, gamma = conv.weights, norm.gamma
    del conv, norm
    gc.collect()
    np.testing.assert_array_equal(weights, w)
    np.testing.assert_array_equal(gamma, np.full(3, 2.0, F32))
    weights[...] = 0.0  # still writable memory
    assert gs.live_native_bytes() == baseline + weights.nbytes + gamma.nbytes
    del weights, gamma
    gc.collect()
    assert gs.live_native_bytes() == baseline


# ---- export and reload ------------------------------------------------------------------------------------


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no_bias"])
def test_convolution_export_and_reload(bias, rng):
    conv, w, b = make_conv(rng, bias)
    saved = conv.export_weights_and_biases()
    assert isinstance(saved, gs.ConvolutionWeightsAndBiasesState)
    assert isinstance(saved.weights, gs.Buffer) and saved.weights.shape == w.shape
    np.testing.assert_array_equal(np.asarray(saved.weights), w)
    if bias:
        np.testing.assert_array_equal(np.asarray(saved.biases), b)
    else:
        assert saved.biases is None
    # A copy: training the layer leaves the export as it was.
    view = conv.weights
    view += 1.0
    np.testing.assert_array_equal(np.asarray(saved.weights), w)
    # Reloading writes into the layer's own buffers, so earlier views see the values.
    conv.reload_weights_and_biases(saved)
    np.testing.assert_array_equal(view, w)
    np.testing.assert_array_equal(conv.weights, w)
    assert not np.shares_memory(conv.weights, np.asarray(saved.weights))
    x = f32(rng.standard_normal((1, 4, 4, 2)))
    assert_close(conv.forward(x)[0], ref.conv2d(x, w, b, 1, 1, 1, (1, 1, 1, 1)), what="y after reload")


def test_convolution_state_from_arrays(rng):
    conv, _, _ = make_conv(rng)
    w, b = rng.standard_normal((4, 3, 3, 2)), rng.standard_normal(4)  # float64: converted
    state = gs.ConvolutionWeightsAndBiasesState(w, biases=b)
    w32 = f32(w)
    state_again = gs.ConvolutionWeightsAndBiasesState(w32)
    assert state_again.biases is None
    assert not np.shares_memory(np.asarray(state_again.weights), w32)  # copied
    conv.reload_weights_and_biases(state)
    np.testing.assert_array_equal(conv.weights, f32(w))
    np.testing.assert_array_equal(conv.bias, f32(b))


def test_instance_norm_export_and_reload(rng):
    norm = gs.InstanceNormalization(3)
    saved = norm.export_gamma_and_beta()
    assert isinstance(saved, gs.NormalizationGammaAndBetaState)
    np.testing.assert_array_equal(np.asarray(saved.gamma), np.ones(3, F32))
    np.testing.assert_array_equal(np.asarray(saved.beta), np.zeros(3, F32))
    gamma, beta = f32(rng.standard_normal(3)), f32(rng.standard_normal(3))
    norm.reload_gamma_and_beta(gs.NormalizationGammaAndBetaState(gamma, beta))
    np.testing.assert_array_equal(norm.gamma, gamma)
    np.testing.assert_array_equal(norm.beta, beta)
    x = f32(rng.standard_normal((2, 3, 3, 3)))
    assert_close(norm.forward(x)[0], ref.instance_norm(x, gamma, beta, 1e-5)[0], what="y after reload")
    norm.reload_gamma_and_beta(saved)
    np.testing.assert_array_equal(norm.gamma, np.ones(3, F32))


def test_optimizer_round_trip_through_export(rng):
    """Export, train, reload: the layer is back where it was."""
    conv, w, b = make_conv(rng)
    saved = conv.export_weights_and_biases()
    x = f32(rng.standard_normal((2, 5, 6, 2)))
    y, state = conv.forward(x)
    gs.ConvolutionGradient(conv).backward(np.ones_like(y), x, state)
    gs.optim.SGD(0.1).step(conv, state)
    assert not np.array_equal(conv.weights, w)
    conv.reload_weights_and_biases(saved)
    np.testing.assert_array_equal(conv.weights, w)
    np.testing.assert_array_equal(conv.bias, b)


STATE_ERRORS = [
    (
        "weights_3d",
        lambda: gs.ConvolutionWeightsAndBiasesState(np.ones((4, 3, 3), F32)),
        ValueError,
        "weights",
    ),
    (
        "weights_empty",
        lambda: gs.ConvolutionWeightsAndBiasesState(np.ones((0, 1, 1, 1), F32)),
        ValueError,
        "weights",
    ),
    (
        "weights_int",
        lambda: gs.ConvolutionWeightsAndBiasesState(np.ones((1, 1, 1, 1), np.int32)),
        TypeError,
        "weights",
    ),
    (
        "biases_length",
        lambda: gs.ConvolutionWeightsAndBiasesState(np.ones((4, 1, 1, 1), F32), np.ones(3, F32)),
        ValueError,
        "biases",
    ),
    (
        "gamma_2d",
        lambda: gs.NormalizationGammaAndBetaState(np.ones((2, 2), F32), np.ones(2, F32)),
        ValueError,
        "gamma",
    ),
    (
        "gamma_empty",
        lambda: gs.NormalizationGammaAndBetaState(np.ones(0, F32), np.ones(0, F32)),
        ValueError,
        "gamma",
    ),
    (
        "beta_length",
        lambda: gs.NormalizationGammaAndBetaState(np.ones(2, F32), np.ones(3, F32)),
        ValueError,
        "beta",
    ),
    ("beta_missing", lambda: gs.NormalizationGammaAndBetaState(np.ones(2, F32), None), TypeError, "beta"),
]


@pytest.mark.parametrize(
    "call, exception, argument", [c[1:] for c in STATE_ERRORS], ids=[c[0] for c in STATE_ERRORS]
)
def test_state_constructor_errors(call, exception, argument):
    with pytest.raises(exception, match=rf"^{argument}: expected .*, got "):
        call()


def test_reload_errors(rng):
    conv, w, b = make_conv(rng)
    no_bias = gs.Convolution(w)
    norm = gs.InstanceNormalization(3)
    with pytest.raises(
        ValueError, match=r"^state: expected weights of shape \(4, 3, 3, 2\).*got \(4, 3, 3, 1\)"
    ):
        conv.reload_weights_and_biases(gs.ConvolutionWeightsAndBiasesState(np.ones((4, 3, 3, 1), F32), b))
    with pytest.raises(ValueError, match=r"^state: expected biases .*got None"):
        conv.reload_weights_and_biases(gs.ConvolutionWeightsAndBiasesState(w))
    with pytest.raises(ValueError, match=r"^state: expected no biases"):
        no_bias.reload_weights_and_biases(conv.export_weights_and_biases())
    with pytest.raises(ValueError, match=r"^state: expected gamma and beta of shape \(3,\).*got \(2,\)"):
        norm.reload_gamma_and_beta(gs.NormalizationGammaAndBetaState(np.ones(2, F32), np.ones(2, F32)))
    with pytest.raises(TypeError, match=r"^state: expected a ConvolutionWeightsAndBiasesState, got"):
        conv.reload_weights_and_biases(norm.export_gamma_and_beta())
    with pytest.raises(TypeError, match=r"^state: expected a NormalizationGammaAndBetaState, got"):
        norm.reload_gamma_and_beta(w)
    # A refused reload changes nothing.
    np.testing.assert_array_equal(conv.weights, w)
    np.testing.assert_array_equal(conv.bias, b)


# ---- micro-batches ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
def test_convolution_micro_batches_sum_to_the_batch(layout, rng):
    """Two micro-batches through one state with accumulate=True give the gradients of the whole batch."""
    conv, _, _ = make_conv(rng)
    x = f32(rng.standard_normal((4, 5, 6, 2)))
    dy = f32(rng.standard_normal((4, 5, 6, 4)))
    if layout == "NCHW":
        x, dy = np.ascontiguousarray(x.transpose(0, 3, 1, 2)), np.ascontiguousarray(dy.transpose(0, 3, 1, 2))
    grad = gs.ConvolutionGradient(conv, option=gs.GradientOption.WEIGHTS_AND_BIAS)
    states = {}
    for name, part in (("whole", slice(0, 4)), ("first", slice(0, 2)), ("second", slice(2, 4))):
        _, states[name] = conv.forward(x[part], layout)
        grad.backward(dy[part], x[part], states[name])
    _, micro = conv.forward(x[:2], layout)
    grad.backward(dy[:2], x[:2], micro)
    grad.backward(dy[2:], x[2:], micro, accumulate=True)
    for name in ("gradient_for_weights", "gradient_for_biases"):
        first, second, whole = (
            np.asarray(getattr(states[k], name), np.float64) for k in ("first", "second", "whole")
        )
        assert_close(
            np.asarray(getattr(micro, name)), first + second, rtol=1e-6, what=f"{name}: first + second"
        )
        assert_close(np.asarray(getattr(micro, name)), whole, rtol=1e-5, what=f"{name}: whole batch")


@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
def test_instance_norm_accumulate_is_the_sum_of_two_backwards(layout, rng):
    """An instance-norm state holds the statistics of its own x: accumulate=True adds the gradients of
    another dy over that x, equal to the sum of the two backward passes made separately."""
    norm = gs.InstanceNormalization(3, f32(rng.standard_normal(3)), f32(rng.standard_normal(3)))
    shape = (2, 3, 4, 5) if layout == "NCHW" else (2, 4, 5, 3)
    x, dy1, dy2 = (f32(rng.standard_normal(shape)) for _ in range(3))
    grad = gs.InstanceNormalizationGradient(norm)
    sums = {}
    for dy in (dy1, dy2):
        _, state = norm.forward(x, layout)
        grad.backward(dy, x, state)
        for name in ("gradient_for_gamma", "gradient_for_beta"):
            sums[name] = sums.get(name, 0.0) + np.asarray(getattr(state, name), np.float64)
    _, state = norm.forward(x, layout)
    grad.backward(dy1, x, state)
    grad.backward(dy2, x, state, accumulate=True)
    for name, total in sums.items():
        assert_close(np.asarray(getattr(state, name)), total, rtol=1e-5, what=name)
