"""Public names, devices, layer and state properties, and read_count bookkeeping."""

import sys

import gradstate as gs
import gradstate.mps as mps
import numpy as np
import pytest
from conftest import EMULATED_METAL

F32 = np.float32
NAMES = [
    "__version__",
    "live_native_bytes",
    "Buffer",
    "Device",
    "devices",
    "default_device",
    "WeightsLayout",
    "GradientOption",
    "GradientState",
    "Convolution",
    "ConvolutionGradient",
    "ConvolutionGradientState",
    "InstanceNormalization",
    "InstanceNormalizationGradient",
    "InstanceNormalizationGradientState",
    "ConvolutionWeightsAndBiasesState",
    "NormalizationGammaAndBetaState",
    "optim",
]

MPS_NAMES = {
    "MPSCNNConvolution": "Convolution",
    "MPSCNNConvolutionGradient": "ConvolutionGradient",
    "MPSCNNConvolutionGradientState": "ConvolutionGradientState",
    "MPSCNNConvolutionGradientOption": "GradientOption",
    "MPSCNNConvolutionWeightsLayout": "WeightsLayout",
    "MPSCNNInstanceNormalization": "InstanceNormalization",
    "MPSCNNInstanceNormalizationGradient": "InstanceNormalizationGradient",
    "MPSCNNInstanceNormalizationGradientState": "InstanceNormalizationGradientState",
    "MPSCNNConvolutionWeightsAndBiasesState": "ConvolutionWeightsAndBiasesState",
    "MPSCNNNormalizationGammaAndBetaState": "NormalizationGammaAndBetaState",
    "MPSNNGradientState": "GradientState",
    "MPSState": "GradientState",
    "MTLBuffer": "Buffer",
    "MTLDevice": "Device",
    "MTLCreateSystemDefaultDevice": "default_device",
}


@pytest.mark.parametrize("name", NAMES)
def test_public_name_exists(name):
    assert hasattr(gs, name)


def test_version():
    assert isinstance(gs.__version__, str) and gs.__version__[:1].isdigit()


@pytest.mark.parametrize("mps_name", sorted(MPS_NAMES))
def test_mps_reexports(mps_name):
    assert getattr(mps, mps_name) is getattr(gs, MPS_NAMES[mps_name])


def test_enums():
    assert int(gs.GradientOption.DATA) == 1
    assert int(gs.GradientOption.WEIGHTS_AND_BIAS) == 2
    assert int(gs.GradientOption.ALL) == 3
    assert len({gs.GradientOption.DATA, gs.GradientOption.WEIGHTS_AND_BIAS, gs.GradientOption.ALL}) == 3
    assert gs.WeightsLayout.OHWI is not None


def test_state_classes_share_the_base():
    assert issubclass(gs.ConvolutionGradientState, gs.GradientState)
    assert issubclass(gs.InstanceNormalizationGradientState, gs.GradientState)


def test_devices():
    devs = gs.devices()
    assert isinstance(devs, list)
    by_type = {d.type: d for d in devs}
    assert set(by_type) == {"cpu", "metal"}
    for d in devs:
        assert isinstance(d, gs.Device)
        assert isinstance(d.name, str) and d.name
        assert isinstance(d.available, bool)
        assert isinstance(d.unavailable_reason, str)
    cpu, metal = by_type["cpu"], by_type["metal"]
    assert cpu.available and cpu.unavailable_reason == ""
    # Exactly the unavailable devices carry a reason.
    assert (metal.unavailable_reason == "") == metal.available
    if sys.platform != "darwin" and not EMULATED_METAL:
        assert metal.available is False


def test_devices_compare_by_type_and_unequal_to_anything_else():
    cpu, metal = sorted(gs.devices(), key=lambda d: d.type)
    assert cpu == next(d for d in gs.devices() if d.type == "cpu") and cpu != metal
    assert hash(cpu) == hash(next(d for d in gs.devices() if d.type == "cpu"))
    assert cpu != "cpu" and not (cpu == "cpu") and cpu != None  # noqa: E711
    assert "cpu" not in [cpu] and cpu in [None, "cpu", cpu]


def test_default_device():
    d = gs.default_device()
    assert isinstance(d, gs.Device) and d.available
    metal = next(m for m in gs.devices() if m.type == "metal")
    assert d.type == ("metal" if metal.available else "cpu")


def test_default_device_from_the_environment(monkeypatch):
    monkeypatch.setenv("GRADSTATE_DEFAULT_DEVICE", "cpu")
    assert gs.default_device().type == "cpu"
    assert gs.Convolution(np.ones((1, 1, 1, 1), F32)).device.type == "cpu"
    monkeypatch.setenv("GRADSTATE_DEFAULT_DEVICE", "gpu")
    with pytest.raises(ValueError, match=r"^GRADSTATE_DEFAULT_DEVICE: expected 'cpu' or 'metal', got 'gpu'$"):
        gs.default_device()
    monkeypatch.setenv("GRADSTATE_DEFAULT_DEVICE", "metal")
    metal = next(m for m in gs.devices() if m.type == "metal")
    if metal.available:
        assert gs.default_device().type == "metal"
    else:
        expected = r"^GRADSTATE_DEFAULT_DEVICE: expected an available device, got metal"
        with pytest.raises(ValueError, match=expected):
            gs.default_device()


@pytest.mark.parametrize("device", [None, "cpu", "cpu_object"])
def test_layers_run_on_the_chosen_device(device):
    dev = next(d for d in gs.devices() if d.type == "cpu") if device == "cpu_object" else device
    conv = gs.Convolution(np.ones((2, 1, 1, 3), F32), device=dev)
    inorm = gs.InstanceNormalization(3, device=dev)
    expected = gs.default_device().type if device is None else "cpu"
    assert conv.device.type == expected and inorm.device.type == expected
    y, _ = conv.forward(np.ones((1, 2, 2, 3), F32))
    np.testing.assert_array_equal(y, np.full((1, 2, 2, 2), 3.0))


def test_convolution_properties():
    w = np.zeros((6, 3, 5, 2), F32)
    conv = gs.Convolution(w, stride=(2, 1), dilation=3, groups=3, padding="same")
    assert conv.kernel_height == 3 and conv.kernel_width == 5
    assert conv.input_feature_channels == 6
    assert conv.output_feature_channels == 6
    assert conv.groups == 3
    assert tuple(conv.stride) == (2, 1)
    assert tuple(conv.dilation) == (3, 3)
    assert isinstance(conv.device, gs.Device)
    conv = gs.Convolution(np.zeros((4, 1, 1, 5), F32), stride=2, dilation=(1, 2))
    assert tuple(conv.stride) == (2, 2) and tuple(conv.dilation) == (1, 2)
    assert conv.input_feature_channels == 5 and conv.output_feature_channels == 4 and conv.groups == 1


def test_convolution_gradient_properties():
    conv = gs.Convolution(np.zeros((2, 3, 3, 1), F32))
    grad = gs.ConvolutionGradient(conv)
    assert grad.convolution is conv
    assert grad.option == gs.GradientOption.ALL
    grad = gs.ConvolutionGradient(conv, option=gs.GradientOption.DATA)
    assert grad.option == gs.GradientOption.DATA


def test_instance_norm_properties():
    inorm = gs.InstanceNormalization(7)
    assert inorm.num_channels == 7
    assert inorm.epsilon == pytest.approx(1e-5, rel=1e-6)
    assert isinstance(inorm.device, gs.Device)
    assert gs.InstanceNormalization(3, epsilon=0.25).epsilon == 0.25
    assert gs.InstanceNormalization(3, epsilon=0.0).epsilon == 0.0


@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
def test_convolution_state_properties(layout):
    n, h, w, c = 2, 7, 5, 3
    x = np.ones((n, h, w, c) if layout == "NHWC" else (n, c, h, w), F32)
    conv = gs.Convolution(np.ones((4, 3, 3, c), F32), stride=2)
    y, state = conv.forward(x, layout=layout)
    assert isinstance(state, gs.ConvolutionGradientState) and isinstance(state, gs.GradientState)
    assert state.convolution is conv
    assert state.source_width == w and state.source_height == h
    assert state.layout == layout
    assert state.gradient_for_weights_layout == gs.WeightsLayout.OHWI
    assert state.gradient_for_weights.shape == (4, 3, 3, c)
    assert state.gradient_for_biases.shape == (4,)
    # Gradient buffers start zeroed.
    assert (
        not np.asarray(state.gradient_for_weights).any() and not np.asarray(state.gradient_for_biases).any()
    )
    assert y.shape == ((n, 3, 2, 4) if layout == "NHWC" else (n, 4, 3, 2))
    # layout=None takes the state's layout; the same layout given explicitly is accepted.
    grad = gs.ConvolutionGradient(conv)
    assert grad.backward(np.ones_like(y), x, state).shape == x.shape
    assert grad.backward(np.ones_like(y), x, state, layout=layout).shape == x.shape


@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
def test_instance_norm_state_properties(layout):
    x = np.arange(2 * 3 * 4 * 5, dtype=F32).reshape(2, 3, 4, 5)
    inorm = gs.InstanceNormalization(3 if layout == "NCHW" else 5)
    y, state = inorm.forward(x, layout=layout)
    assert isinstance(state, gs.InstanceNormalizationGradientState) and isinstance(state, gs.GradientState)
    assert state.instance_normalization is inorm
    assert state.layout == layout
    c = inorm.num_channels
    # A layer made without gamma and beta holds ones and zeros, and the state copies of them.
    np.testing.assert_array_equal(np.asarray(state.gamma), np.ones(c, F32))
    np.testing.assert_array_equal(np.asarray(state.beta), np.zeros(c, F32))
    assert state.mean.shape == (2, c) and state.inv_std.shape == (2, c)
    assert state.gradient_for_gamma.shape == (c,) and state.gradient_for_beta.shape == (c,)
    assert not np.asarray(state.gradient_for_gamma).any()
    dx = gs.InstanceNormalizationGradient(inorm).backward(np.ones_like(y), x, state, layout=layout)
    assert dx.shape == x.shape
    np.testing.assert_allclose(np.asarray(state.gradient_for_beta), np.full(c, x.size / c))


def conv_and_state(temporary):
    conv = gs.Convolution(np.ones((2, 1, 1, 2), F32))
    x = np.ones((1, 2, 2, 2), F32)
    y, state = conv.forward(x, temporary_state=temporary)
    return gs.ConvolutionGradient(conv), np.ones_like(y), x, state


def test_reprs_name_the_class_and_what_describes_the_object():
    conv = gs.Convolution(np.ones((4, 3, 5, 2), np.float32), stride=(2, 1), padding="same", groups=1)
    inorm = gs.InstanceNormalization(2, epsilon=0.5)
    x = np.ones((1, 6, 7, 2), np.float32)
    _, conv_state = conv.forward(x, temporary_state=True)
    _, norm_state = inorm.forward(x)
    device = repr(conv.device.type)
    assert repr(conv) == (
        "Convolution(kernel_height=3, kernel_width=5, input_feature_channels=2, output_feature_channels=4, "
        f"groups=1, stride=(2, 1), dilation=(1, 1), padding='same', has_bias=False, device={device})"
    )
    assert repr(inorm) == f"InstanceNormalization(num_channels=2, epsilon=0.5, device={device})"
    expected = {
        gs.ConvolutionGradient(conv, option=gs.GradientOption.DATA): (
            "ConvolutionGradient(convolution=Convolution(",
            "option=GradientOption.DATA)",
        ),
        gs.InstanceNormalizationGradient(inorm): ("InstanceNormalizationGradient(instance_normalization=",),
        conv_state: (
            "ConvolutionGradientState(layout='NHWC', is_temporary=True, read_count=1, source_height=6",
        ),
        norm_state: ("InstanceNormalizationGradientState(layout='NHWC', is_temporary=False",),
        conv.export_weights_and_biases(): (
            "ConvolutionWeightsAndBiasesState(weights=Buffer(shape=(4, 3, 5, 2)",
            "biases=None)",
        ),
        inorm.export_gamma_and_beta(): ("NormalizationGammaAndBetaState(gamma=Buffer(shape=(2,)",),
        gs.optim.SGD(momentum_scale=0.5): (
            "SGD(learning_rate=0.001, momentum_scale=0.5,",
            "regularization=None",
        ),
        gs.optim.RMSProp(decay=0.5): ("RMSProp(learning_rate=0.001, decay=0.5,",),
        gs.optim.Adam(amsgrad=True, gradient_clip=(-1.0, 2.0)): (
            "Adam(",
            "amsgrad=True",
            "gradient_clip=(-1.0, 2.0)",
        ),
        gs.optim.Adam().state(conv): ("OptimizerState(time_step=0)",),
    }
    for obj, parts in expected.items():
        text = repr(obj)
        assert text.startswith(parts[0]) and all(p in text for p in parts[1:]), text


def test_ordinary_state_read_count():
    grad, dy, x, state = conv_and_state(False)
    assert state.read_count == 0 and state.is_temporary is False
    for _ in range(3):
        grad.backward(dy, x, state)
    assert state.read_count == 0


def test_temporary_state_read_count():
    grad, dy, x, state = conv_and_state(True)
    assert state.read_count == 1 and state.is_temporary is True
    grad.backward(dy, x, state)
    assert state.read_count == 0
    with pytest.raises(ValueError, match=r"^state: "):
        grad.backward(dy, x, state)
    # The results of the one allowed read stay readable.
    np.testing.assert_array_equal(np.asarray(state.gradient_for_biases), [4.0, 4.0])


def test_read_count_can_be_raised():
    grad, dy, x, state = conv_and_state(True)
    state.read_count = 3
    assert state.read_count == 3
    for expected in (2, 1, 0):
        grad.backward(dy, x, state)
        assert state.read_count == expected
    with pytest.raises(ValueError, match=r"^state: "):
        grad.backward(dy, x, state)


def test_read_count_rejects_negative_and_keeps_value():
    _, _, _, state = conv_and_state(True)
    with pytest.raises(ValueError, match=r"^read_count: "):
        state.read_count = -1
    assert state.read_count == 1


def test_instance_norm_temporary_state():
    inorm = gs.InstanceNormalization(2)
    x = np.arange(16, dtype=F32).reshape(2, 2, 2, 2)
    y, state = inorm.forward(x, temporary_state=True)
    assert state.is_temporary and state.read_count == 1
    grad = gs.InstanceNormalizationGradient(inorm)
    grad.backward(np.ones_like(y), x, state)
    assert state.read_count == 0
    with pytest.raises(ValueError, match=r"^state: "):
        grad.backward(np.ones_like(y), x, state)
    _, ordinary = inorm.forward(x)
    assert not ordinary.is_temporary and ordinary.read_count == 0


def test_command_line_gradient_check():
    # python -m gradstate, as the README gives it: reports the devices and passes every check.
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "gradstate"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "all gradient checks passed" in result.stdout
    assert "device cpu" in result.stdout
