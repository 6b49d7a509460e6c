"""Bad arguments raise ValueError/TypeError whose message is "<argument>: expected <...>, got <...>"."""

import os
import re
import subprocess
import sys

import gradstate as gs
import numpy as np
import pytest

F32 = np.float32
W = np.ones((4, 3, 3, 2), F32)  # O=4, 3x3, I=2
X = np.ones((2, 6, 5, 2), F32)  # y is (2, 4, 3, 4) with padding 0
DY = np.ones((2, 4, 3, 4), F32)
XN = np.ones((2, 4, 3, 5), F32)  # instance norm input, C=5


def conv_forward(**kw):
    conv = gs.Convolution(W)
    return conv.forward(X, **kw)


def conv_backward(dy=DY, x=X, state="own", **kw):
    conv = gs.Convolution(W)
    _, own = conv.forward(X)
    if state == "own":
        state = own
    return gs.ConvolutionGradient(conv).backward(dy, x, state, **kw)


def other_conv_state():
    return gs.Convolution(W).forward(X)[1]


def inorm_state():
    return gs.InstanceNormalization(5).forward(XN)[1]


def inorm_backward(dy=XN, x=XN, state="own", **kw):
    inorm = gs.InstanceNormalization(5)
    _, own = inorm.forward(XN)
    if state == "own":
        state = own
    return gs.InstanceNormalizationGradient(inorm).backward(dy, x, state, **kw)


def second_read_of_temporary_state():
    conv = gs.Convolution(W)
    _, state = conv.forward(X, temporary_state=True)
    grad = gs.ConvolutionGradient(conv)
    grad.backward(DY, X, state)
    grad.backward(DY, X, state)


def negative_read_count():
    _, state = gs.Convolution(W).forward(X)
    state.read_count = -1


# (id, call, exception, argument name, text that must appear in the message or None)
CASES = [
    # Convolution(...)
    ("weights_3d", lambda: gs.Convolution(np.ones((4, 3, 3), F32)), ValueError, "weights", None),
    ("weights_5d", lambda: gs.Convolution(np.ones((1, 4, 3, 3, 2), F32)), ValueError, "weights", None),
    ("weights_int", lambda: gs.Convolution(W.astype(np.int32)), TypeError, "weights", "int32"),
    ("weights_bool", lambda: gs.Convolution(W.astype(bool)), TypeError, "weights", None),
    ("weights_zero_o", lambda: gs.Convolution(np.ones((0, 3, 3, 2), F32)), ValueError, "weights", None),
    ("weights_zero_kw", lambda: gs.Convolution(np.ones((4, 3, 0, 2), F32)), ValueError, "weights", None),
    ("bias_length", lambda: gs.Convolution(W, bias=np.ones(5, F32)), ValueError, "bias", None),
    ("bias_2d", lambda: gs.Convolution(W, bias=np.ones((4, 1), F32)), ValueError, "bias", None),
    ("groups_zero", lambda: gs.Convolution(W, groups=0), ValueError, "groups", None),
    ("groups_negative", lambda: gs.Convolution(W, groups=-2), ValueError, "groups", "-2"),
    ("groups_not_dividing_o", lambda: gs.Convolution(W, groups=3), ValueError, "groups", None),
    ("stride_zero", lambda: gs.Convolution(W, stride=0), ValueError, "stride", None),
    ("stride_pair_zero", lambda: gs.Convolution(W, stride=(1, 0)), ValueError, "stride", None),
    ("stride_negative", lambda: gs.Convolution(W, stride=-3), ValueError, "stride", "-3"),
    ("stride_triple", lambda: gs.Convolution(W, stride=(1, 2, 3)), ValueError, "stride", None),
    ("stride_float", lambda: gs.Convolution(W, stride=1.5), TypeError, "stride", "1.5"),
    ("dilation_zero", lambda: gs.Convolution(W, dilation=0), ValueError, "dilation", None),
    ("dilation_pair_zero", lambda: gs.Convolution(W, dilation=(0, 1)), ValueError, "dilation", None),
    ("dilation_triple", lambda: gs.Convolution(W, dilation=(1, 1, 1)), ValueError, "dilation", None),
    ("padding_negative", lambda: gs.Convolution(W, padding=-1), ValueError, "padding", None),
    ("padding_pair_negative", lambda: gs.Convolution(W, padding=(1, -1)), ValueError, "padding", None),
    ("padding_quad_negative", lambda: gs.Convolution(W, padding=(0, 0, 0, -2)), ValueError, "padding", None),
    ("padding_string", lambda: gs.Convolution(W, padding="bogus"), ValueError, "padding", "bogus"),
    ("padding_triple", lambda: gs.Convolution(W, padding=(1, 2, 3)), ValueError, "padding", None),
    ("device_unknown", lambda: gs.Convolution(W, device="tpu9"), ValueError, "device", "tpu9"),
    # Convolution.forward
    ("fwd_x_3d", lambda: gs.Convolution(W).forward(X[0]), ValueError, "x", None),
    ("fwd_x_5d", lambda: gs.Convolution(W).forward(X[None]), ValueError, "x", None),
    ("fwd_x_channels", lambda: gs.Convolution(W).forward(np.ones((2, 6, 5, 13), F32)), ValueError, "x", "13"),
    (
        "fwd_x_channels_nchw",
        lambda: gs.Convolution(W).forward(np.ones((2, 13, 6, 5), F32), layout="NCHW"),
        ValueError,
        "x",
        "13",
    ),
    ("fwd_x_nhwc_as_nchw", lambda: conv_forward(layout="NCHW"), ValueError, "x", None),
    (
        "fwd_x_empty_batch",
        lambda: gs.Convolution(W).forward(np.ones((0, 6, 5, 2), F32)),
        ValueError,
        "x",
        None,
    ),
    (
        "fwd_x_empty_height",
        lambda: gs.Convolution(W).forward(np.ones((2, 0, 5, 2), F32)),
        ValueError,
        "x",
        None,
    ),
    (
        "fwd_kernel_too_big",
        lambda: gs.Convolution(W).forward(np.ones((1, 2, 5, 2), F32)),
        ValueError,
        "x",
        None,
    ),
    (
        "fwd_dilated_kernel_too_big",
        lambda: gs.Convolution(W, dilation=3).forward(np.ones((1, 6, 9, 2), F32)),
        ValueError,
        "x",
        None,
    ),
    ("fwd_x_int", lambda: gs.Convolution(W).forward(X.astype(np.int32)), TypeError, "x", "int32"),
    ("fwd_x_string", lambda: gs.Convolution(W).forward("abc"), TypeError, "x", None),
    ("fwd_layout", lambda: conv_forward(layout="NCWH"), ValueError, "layout", "NCWH"),
    # ConvolutionGradient.backward
    ("bwd_dy_shape", lambda: conv_backward(dy=np.ones((2, 4, 3, 5), F32)), ValueError, "dy", None),
    ("bwd_dy_3d", lambda: conv_backward(dy=DY[0]), ValueError, "dy", None),
    ("bwd_dy_int", lambda: conv_backward(dy=DY.astype(np.int64)), TypeError, "dy", "int64"),
    ("bwd_x_shape", lambda: conv_backward(x=np.ones((2, 7, 5, 2), F32)), ValueError, "x", None),
    ("bwd_x_int", lambda: conv_backward(x=X.astype(np.int32)), TypeError, "x", None),
    ("bwd_state_other_conv", lambda: conv_backward(state=other_conv_state()), ValueError, "state", None),
    ("bwd_state_inorm", lambda: conv_backward(state=inorm_state()), TypeError, "state", None),
    ("bwd_state_none", lambda: conv_backward(state=None), TypeError, "state", None),
    ("bwd_layout_mismatch", lambda: conv_backward(layout="NCHW"), ValueError, "layout", None),
    ("bwd_layout_unknown", lambda: conv_backward(layout="HWNC"), ValueError, "layout", "HWNC"),
    ("bwd_temporary_read_twice", second_read_of_temporary_state, ValueError, "state", None),
    ("read_count_negative", negative_read_count, ValueError, "read_count", None),
    # InstanceNormalization(...)
    ("num_channels_zero", lambda: gs.InstanceNormalization(0), ValueError, "num_channels", None),
    ("num_channels_negative", lambda: gs.InstanceNormalization(-7), ValueError, "num_channels", "-7"),
    ("gamma_length", lambda: gs.InstanceNormalization(5, gamma=np.ones(6, F32)), ValueError, "gamma", None),
    ("gamma_2d", lambda: gs.InstanceNormalization(5, gamma=np.ones((5, 1), F32)), ValueError, "gamma", None),
    ("beta_length", lambda: gs.InstanceNormalization(5, beta=np.ones(4, F32)), ValueError, "beta", None),
    ("epsilon_negative", lambda: gs.InstanceNormalization(5, epsilon=-0.25), ValueError, "epsilon", "-0.25"),
    ("epsilon_nan", lambda: gs.InstanceNormalization(5, epsilon=float("nan")), ValueError, "epsilon", None),
    # InstanceNormalization.forward / backward
    ("in_fwd_channels", lambda: gs.InstanceNormalization(5).forward(X), ValueError, "x", None),
    (
        "in_fwd_channels_nchw",
        lambda: gs.InstanceNormalization(5).forward(XN, layout="NCHW"),
        ValueError,
        "x",
        None,
    ),
    ("in_fwd_x_3d", lambda: gs.InstanceNormalization(5).forward(XN[0]), ValueError, "x", None),
    ("in_fwd_x_empty", lambda: gs.InstanceNormalization(5).forward(XN[:0]), ValueError, "x", None),
    ("in_fwd_x_int", lambda: gs.InstanceNormalization(5).forward(XN.astype(np.int16)), TypeError, "x", None),
    (
        "in_fwd_layout",
        lambda: gs.InstanceNormalization(5).forward(XN, layout="CHWN"),
        ValueError,
        "layout",
        None,
    ),
    ("in_bwd_dy_shape", lambda: inorm_backward(dy=XN[:, :3]), ValueError, "dy", None),
    ("in_bwd_dy_int", lambda: inorm_backward(dy=XN.astype(np.int32)), TypeError, "dy", None),
    ("in_bwd_x_shape", lambda: inorm_backward(x=XN[:1]), ValueError, "x", None),
    ("in_bwd_state_other", lambda: inorm_backward(state=inorm_state()), ValueError, "state", None),
    ("in_bwd_state_conv", lambda: inorm_backward(state=other_conv_state()), TypeError, "state", None),
    ("in_bwd_state_none", lambda: inorm_backward(state=None), TypeError, "state", None),
    ("in_bwd_layout_mismatch", lambda: inorm_backward(layout="NCHW"), ValueError, "layout", None),
    # Arguments whose Python type is checked by gradstate, not by the binding layer.
    ("grad_convolution_none", lambda: gs.ConvolutionGradient(None), TypeError, "convolution", "NoneType"),
    (
        "grad_option_int",
        lambda: gs.ConvolutionGradient(gs.Convolution(W), option=3),
        TypeError,
        "option",
        "3",
    ),
    (
        "grad_option_setter_int",
        lambda: setattr(gs.ConvolutionGradient(gs.Convolution(W)), "option", 1),
        TypeError,
        "option",
        "1 (int)",
    ),
    (
        "fwd_temporary_state_none",
        lambda: conv_forward(temporary_state=None),
        TypeError,
        "temporary_state",
        "None",
    ),
    (
        "fwd_temporary_state_int",
        lambda: conv_forward(temporary_state=1),
        TypeError,
        "temporary_state",
        "1 (int)",
    ),
    (
        "in_fwd_temporary_state_float",
        lambda: gs.InstanceNormalization(5).forward(XN, temporary_state=0.5),
        TypeError,
        "temporary_state",
        "0.5",
    ),
    ("bwd_accumulate_none", lambda: conv_backward(accumulate=None), TypeError, "accumulate", "None"),
    ("in_bwd_accumulate_int", lambda: inorm_backward(accumulate=2), TypeError, "accumulate", "2 (int)"),
    ("in_bwd_state_article", lambda: inorm_backward(state=None), TypeError, "state", "an InstanceNorm"),
    (
        "in_grad_layer_none",
        lambda: gs.InstanceNormalizationGradient(None),
        TypeError,
        "instance_normalization",
        "NoneType",
    ),
    ("in_epsilon_str", lambda: gs.InstanceNormalization(5, epsilon="1e-5"), TypeError, "epsilon", "str"),
    ("read_count_float", lambda: setattr(inorm_state(), "read_count", 1.5), TypeError, "read_count", "1.5"),
    (
        "sgd_learning_rate_huge",
        lambda: gs.optim.SGD(learning_rate=10**400),
        ValueError,
        "learning_rate",
        None,
    ),
]


@pytest.mark.parametrize(("call", "exc", "arg", "value"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_argument(call, exc, arg, value):
    with pytest.raises(exc, match=rf"^{re.escape(arg)}: ") as info:
        call()
    msg = str(info.value)
    assert "expected" in msg and "got" in msg, f"message lacks 'expected ..., got ...': {msg!r}"
    if value is not None:
        assert value in msg, f"{value!r} not in {msg!r}"


METAL_AVAILABLE = any(d.type == "metal" and d.available for d in gs.devices())


@pytest.mark.skipif(METAL_AVAILABLE, reason="a Metal device is available")
@pytest.mark.parametrize("make", [gs.Convolution, gs.InstanceNormalization], ids=["conv", "inorm"])
def test_unavailable_metal_device(make):
    arg = W if make is gs.Convolution else 5
    with pytest.raises(ValueError, match=r"^device: ") as info:
        make(arg, device="metal")
    assert "expected" in str(info.value) and "got" in str(info.value)


def test_exceptions_are_exact_types():
    # A TypeError must not also be a ValueError (and vice versa), so callers can tell them apart.
    with pytest.raises(TypeError) as info:
        gs.Convolution(W).forward("abc")
    assert not isinstance(info.value, ValueError)
    with pytest.raises(ValueError) as info:
        gs.Convolution(W, stride=0)
    assert not isinstance(info.value, TypeError)


def test_output_too_large_to_allocate_says_its_size_and_shape():
    # y would take 128 PiB: past the 2**56 bytes any buffer may take, so nothing is asked of the system.
    conv = gs.Convolution(W, padding=(2**25, 2**25))
    message = r"^cannot allocate 128\.0 PiB for a float32 buffer of shape \(2, 67108868, 67108867, 4\)$"
    with pytest.raises(MemoryError, match=message):
        conv.forward(X)


WORKING_MEMORY_SCRIPT = r"""
import re, resource, numpy as np, gradstate as gs
conv = gs.Convolution(np.ones((8, 3, 3, 8), np.float32), padding=1)
conv.forward(np.ones((2, 8, 64, 64), np.float32), "NCHW")  # the threads' first allocations, before the limit
x = np.ones((1, 8, 1024, 2048), np.float32)  # 64 MiB, as y; the kernel's NHWC copies of both take 128 MiB
mapped = int(re.search(r"VmSize:\s+(\d+) kB", open("/proc/self/status").read()).group(1)) * 1024
resource.setrlimit(resource.RLIMIT_AS, (mapped + (96 << 20), resource.RLIM_INFINITY))
try:
    conv.forward(x, "NCHW")
except MemoryError as e:
    print(e)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="limits the address space through /proc")
def test_working_memory_a_kernel_cannot_have_says_its_size():
    # In a process whose address space leaves room for y but not for the NCHW forward pass's NHWC copies.
    env = {**os.environ, "GRADSTATE_DEFAULT_DEVICE": "cpu"}
    command = [sys.executable, "-c", WORKING_MEMORY_SCRIPT]
    run = subprocess.run(command, capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stderr
    assert run.stdout == "cannot allocate 128.0 MiB of working memory for a kernel\n"


def test_kernel_that_just_fits_is_accepted():
    # The boundary of "kernel larger than the padded input": 3 + 2*1 == 5 fits a 5x5 kernel exactly.
    y, _ = gs.Convolution(np.ones((1, 5, 5, 2), F32), padding=1).forward(np.ones((1, 3, 3, 2), F32))
    assert y.shape == (1, 1, 1, 1)
    np.testing.assert_allclose(y, 18.0)


def test_failed_calls_leave_state_usable():
    conv = gs.Convolution(W)
    _, state = conv.forward(X)
    grad = gs.ConvolutionGradient(conv)
    with pytest.raises(ValueError):
        grad.backward(DY[:, :2], X, state)
    dx = grad.backward(DY, X, state)
    assert dx.shape == X.shape
    np.testing.assert_allclose(np.asarray(state.gradient_for_biases), np.full(4, 24.0))


NATIVE_CLASSES = [
    cls
    for module in (gs, gs.optim)
    for cls in (getattr(module, name) for name in module.__all__)
    if isinstance(cls, type) and not issubclass(cls, int)  # the enums are Python's IntEnum
]


@pytest.mark.parametrize("cls", NATIVE_CLASSES, ids=lambda cls: cls.__name__)
def test_new_alone_makes_no_object(cls):
    # Without the guard, cls.__new__(cls) returned an object whose C++ value was never made: reading it gave
    # garbage (Convolution's stride was two addresses) or crashed.
    name = cls.__name__
    message = rf"^{name}\.__new__\(\) alone makes no usable object: {name} objects are made by calling"
    with pytest.raises(TypeError, match=message):
        cls.__new__(cls)


def test_subclasses_are_made_by_calling_them_only():
    class Layer(gs.Convolution):
        pass

    class LayerWithoutBaseInit(gs.Convolution):
        def __init__(self):
            pass

    assert Layer(W).stride == (1, 1)
    with pytest.raises(TypeError, match=r"^Layer\.__new__\(\) alone makes no usable object"):
        Layer.__new__(Layer)
    with pytest.raises(TypeError, match=r"Convolution\.__init__\(\) must be called when overriding __init__"):
        LayerWithoutBaseInit()
