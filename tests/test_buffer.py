"""Buffers: zero-copy numpy views, lifetimes, and no leaks of native memory."""

import gc

import gradstate as gs
import numpy as np
import pytest
import reference as ref
from conftest import assert_close, f32

C_OUT, KH, KW, C_IN, G = 6, 3, 2, 4, 2


def make_conv(rng, groups=G):
    w = f32(rng.standard_normal((C_OUT, KH, KW, C_IN // groups)))
    b = f32(rng.standard_normal(C_OUT))
    x = f32(rng.standard_normal((2, 5, 6, C_IN)))
    conv = gs.Convolution(w, bias=b, groups=groups, padding="same")
    y, state = conv.forward(x)
    dy = f32(rng.standard_normal(y.shape))
    grad = gs.ConvolutionGradient(conv)
    grad.backward(dy, x, state)
    pads = ref.resolve_padding("same", 5, 6, KH, KW, 1, 1)
    dw_ref = ref.conv2d_weight_grad(dy, x, w.shape, 1, 1, groups, pads)
    return conv, grad, state, x, y, dy, dw_ref


def churn(rng, rounds=5):
    """Allocate and free native memory, so that a dangling view would see other data."""
    for _ in range(rounds):
        conv, grad, state, *_ = make_conv(rng)
        np.asarray(state.gradient_for_weights)[...] = 12345.0
        np.asarray(state.gradient_for_biases)[...] = -12345.0
    gc.collect()


def test_asarray_is_zero_copy_and_writable(rng):
    _, _, state, *_ = make_conv(rng)
    buf = state.gradient_for_weights
    a, b = np.asarray(buf), np.asarray(buf)
    assert a.shape == (C_OUT, KH, KW, C_IN // G) and a.dtype == np.float32
    assert a.flags.writeable
    assert np.shares_memory(a, b)
    a[1, 2, 0, 1] = 42.5
    assert b[1, 2, 0, 1] == 42.5
    assert np.asarray(state.gradient_for_weights)[1, 2, 0, 1] == 42.5


def test_state_property_returns_the_same_memory(rng):
    _, _, state, *_ = make_conv(rng)
    assert np.shares_memory(np.asarray(state.gradient_for_weights), np.asarray(state.gradient_for_weights))
    assert np.shares_memory(np.asarray(state.gradient_for_biases), np.asarray(state.gradient_for_biases))


def test_writes_through_the_view_reach_the_kernel(rng):
    # accumulate=True adds onto whatever the buffer holds, so values written via numpy must be seen.
    conv, grad, state, x, _, dy, dw_ref = make_conv(rng)
    np.asarray(state.gradient_for_weights)[...] = 1.0
    np.asarray(state.gradient_for_biases)[...] = -2.0
    grad.backward(dy, x, state, accumulate=True)
    assert_close(np.asarray(state.gradient_for_weights), dw_ref + 1.0, what="dW")
    assert_close(
        np.asarray(state.gradient_for_biases), dy.astype(np.float64).sum(axis=(0, 1, 2)) - 2.0, what="db"
    )


@pytest.mark.parametrize("groups", [1, G, C_IN])
def test_weight_gradient_view(rng, groups):
    o = C_OUT if groups != C_IN else C_IN
    w = f32(rng.standard_normal((o, KH, KW, C_IN // groups)))
    conv = gs.Convolution(w, groups=groups)
    x = f32(rng.standard_normal((1, 4, 4, C_IN)))
    y, state = conv.forward(x)
    gs.ConvolutionGradient(conv).backward(np.ones_like(y), x, state)
    buf = state.gradient_for_weights
    a = np.asarray(buf)
    assert a.shape == (o, KH, KW, C_IN // groups) == buf.shape
    assert a.dtype == np.float32 and a.flags.c_contiguous
    assert np.shares_memory(a, np.asarray(buf))
    assert buf.nbytes == a.nbytes == o * KH * KW * (C_IN // groups) * 4


def test_weight_gradient_outlives_its_state(rng):
    gc.collect()
    base = gs.live_native_bytes()
    conv, grad, state, x, y, dy, dw_ref = make_conv(rng)
    busy = gs.live_native_bytes()
    dw = np.asarray(state.gradient_for_weights)
    expected = dw.copy()
    assert_close(dw, dw_ref, what="dW")
    del state, conv, grad, x, y
    gc.collect()
    # The view alone keeps the buffer's memory allocated...
    assert base + dw.nbytes <= gs.live_native_bytes() < busy
    churn(rng)
    # ...and its contents intact.
    np.testing.assert_array_equal(dw, expected)
    dw[...] = 3.0
    assert (dw == 3.0).all()


def test_buffer_object_outlives_its_state(rng):
    _, _, state, *_ = make_conv(rng)
    buf = state.gradient_for_biases
    expected = np.asarray(buf).copy()
    del state
    gc.collect()
    churn(rng)
    np.testing.assert_array_equal(np.asarray(buf), expected)
    assert buf.shape == (C_OUT,)


def _base_chain(a):
    while a is not None:
        yield a
        a = getattr(a, "base", None)


@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
def test_outputs_are_buffer_memory_and_outlive_everything(rng, layout):
    w = f32(rng.standard_normal((3, 3, 3, 2)))
    x = f32(rng.standard_normal((2, 6, 5, 2) if layout == "NHWC" else (2, 2, 6, 5)))
    gc.collect()
    base = gs.live_native_bytes()
    conv = gs.Convolution(w, padding=1)
    y, state = conv.forward(x, layout=layout)
    dx = gs.ConvolutionGradient(conv).backward(np.ones_like(y), x, state)
    inorm = gs.InstanceNormalization(y.shape[-1] if layout == "NHWC" else y.shape[1])
    z, istate = inorm.forward(y, layout=layout)
    for out in (y, dx, z):
        assert any(isinstance(b, gs.Buffer) for b in _base_chain(out)), "output memory is not a gs.Buffer"
    expected = [a.copy() for a in (y, dx, z)]
    del conv, state, inorm, istate, x, w
    gc.collect()
    assert gs.live_native_bytes() - base >= y.nbytes + dx.nbytes + z.nbytes
    churn(rng)
    for a, e in zip((y, dx, z), expected):
        np.testing.assert_array_equal(a, e)


def test_instance_norm_state_buffers(rng):
    n, c = 3, 5
    x = f32(rng.standard_normal((n, 4, 3, c)))
    gamma = f32(rng.standard_normal(c))
    inorm = gs.InstanceNormalization(c, gamma=gamma, beta=f32(rng.standard_normal(c)))
    y, state = inorm.forward(x)
    gs.InstanceNormalizationGradient(inorm).backward(np.ones_like(y), x, state)
    shapes = {
        "gradient_for_gamma": (c,),
        "gradient_for_beta": (c,),
        "gamma": (c,),
        "beta": (c,),
        "mean": (n, c),
        "inv_std": (n, c),
    }
    for name, shape in shapes.items():
        buf = getattr(state, name)
        assert isinstance(buf, gs.Buffer), name
        a = np.asarray(buf)
        assert a.shape == shape == buf.shape, name
        assert a.dtype == np.float32, name
        assert np.shares_memory(a, np.asarray(buf)), name
    mean = np.asarray(state.mean)
    expected = mean.copy()
    del state, inorm, y
    gc.collect()
    churn(rng)
    np.testing.assert_array_equal(mean, expected)


def test_buffer_attributes(rng):
    _, _, state, *_ = make_conv(rng)
    for buf, shape in (
        (state.gradient_for_weights, (C_OUT, KH, KW, C_IN // G)),
        (state.gradient_for_biases, (C_OUT,)),
    ):
        assert isinstance(buf, gs.Buffer)
        assert isinstance(buf.nbytes, int) and buf.nbytes == 4 * int(np.prod(shape))
        assert buf.dtype == np.dtype(np.float32)
        assert isinstance(buf.shape, tuple) and buf.shape == shape
        assert isinstance(buf.device, gs.Device) and buf.device.type == gs.default_device().type


def test_live_native_bytes_counts_buffers(rng):
    gc.collect()
    base = gs.live_native_bytes()
    assert isinstance(base, int) and base >= 0
    made = make_conv(rng)
    state = made[2]
    held = state.gradient_for_weights.nbytes + state.gradient_for_biases.nbytes
    assert gs.live_native_bytes() - base >= held
    del made, state
    gc.collect()
    assert gs.live_native_bytes() == base


def _round(rng, layout, temporary, i):
    x = f32(rng.standard_normal((2, 5, 4, 3)))
    xl = x if layout == "NHWC" else np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    conv = gs.Convolution(f32(rng.standard_normal((4, 3, 3, 3))), bias=f32(rng.standard_normal(4)), padding=1)
    y, state = conv.forward(xl, layout=layout, temporary_state=temporary)
    option = (gs.GradientOption.ALL, gs.GradientOption.DATA, gs.GradientOption.WEIGHTS_AND_BIAS)[i % 3]
    dx = gs.ConvolutionGradient(conv, option=option).backward(
        np.ones_like(y), xl, state, accumulate=bool(i % 2)
    )
    np.asarray(state.gradient_for_weights).sum()
    inorm = gs.InstanceNormalization(4, gamma=f32(rng.standard_normal(4)))
    z, istate = inorm.forward(y, layout=layout, temporary_state=temporary)
    dz = gs.InstanceNormalizationGradient(inorm).backward(np.ones_like(z), y, istate)
    views = [np.asarray(b) for b in (istate.mean, istate.inv_std, istate.gamma, istate.gradient_for_gamma)]
    return y, dx, z, dz, views


def test_no_leak_over_many_rounds(rng):
    gc.collect()
    base = gs.live_native_bytes()
    peak = base
    for i in range(200):
        out = _round(rng, ("NHWC", "NCHW")[i % 2], i % 4 == 3, i)
        peak = max(peak, gs.live_native_bytes())
    assert peak > base, "live_native_bytes() did not see the rounds' buffers"
    # An error path must not leak either.
    with pytest.raises(ValueError):
        gs.Convolution(np.ones((2, 3, 3, 1), np.float32)).forward(np.ones((1, 4, 4, 2), np.float32))
    del out
    gc.collect()
    assert gs.live_native_bytes() == base
