"""Shared helpers for the gradstate tests.

The helpers are plain functions (imported with ``from conftest import ...``) as well as fixtures, so that
parametrized module-level code can use them too.
"""

import os
import subprocess
import sys

import gradstate as gs
import numpy as np
import pytest

# The tests import ``reference`` and ``conftest`` by name; make that work whatever pytest import mode is
# configured.
_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

import reference as ref  # noqa: E402 (needs the path above)

SEED = 20240531

# Below this the largest reference magnitude is treated as zero, so an all-zero reference demands an
# (almost) exactly zero result.
TINY = float(np.finfo(np.float32).tiny)


# A Metal backend built against the mock device of tests/metal_emulation (kernels emulated on the CPU): the
# whole suite runs on it, thousands of times slower than on a GPU.
EMULATED_METAL = any(d.type == "metal" and d.available and "mock" in d.name for d in gs.devices())


@pytest.fixture
def on_cpu(monkeypatch):
    """Makes the CPU the default device, for tests of the CPU backend itself (ISA levels, threads)."""
    monkeypatch.setenv("GRADSTATE_DEFAULT_DEVICE", "cpu")


def make_rng(offset=0):
    return np.random.default_rng(SEED + offset)


@pytest.fixture
def rng(request):
    # One stream per test, stable under reordering and -k selection.
    return np.random.default_rng([SEED, *request.node.nodeid.encode()])


@pytest.fixture
def torch():
    return pytest.importorskip("torch")


def to_nchw(a):
    """(N, H, W, C) -> C-contiguous (N, C, H, W)."""
    return np.ascontiguousarray(np.asarray(a).transpose(0, 3, 1, 2))


def to_nhwc(a):
    """(N, C, H, W) -> C-contiguous (N, H, W, C)."""
    return np.ascontiguousarray(np.asarray(a).transpose(0, 2, 3, 1))


def from_layout(a, layout):
    return to_nhwc(a) if layout == "NCHW" else np.asarray(a)


def in_layout(a, layout):
    return to_nchw(a) if layout == "NCHW" else np.ascontiguousarray(a)


def assert_close(actual, ref, rtol=1e-4, what=""):
    """The project's accuracy rule: max|actual - ref| <= rtol * max(max|ref|, TINY).

    NaN and +-Inf in the reference must appear at the same places in ``actual``; the rule applies to the
    finite entries.
    """
    actual = np.asarray(actual)
    ref = np.asarray(ref, np.float64)
    label = f"{what}: " if what else ""
    assert actual.shape == ref.shape, f"{label}shape {actual.shape} != reference {ref.shape}"
    a = actual.astype(np.float64)
    nan_a, nan_r = np.isnan(a), np.isnan(ref)
    assert np.array_equal(nan_a, nan_r), (
        f"{label}NaN at {np.argwhere(nan_a != nan_r)[:5].tolist()} differs from the reference"
    )
    inf_r = np.isinf(ref)
    assert np.array_equal(np.isinf(a), inf_r) and np.array_equal(a[inf_r], ref[inf_r]), (
        f"{label}Inf placement differs from the reference"
    )
    finite = np.isfinite(ref)
    if not finite.any():
        return
    scale = max(float(np.abs(ref[finite]).max()), TINY)
    err = np.abs(a[finite] - ref[finite])
    worst = float(err.max())
    if worst > rtol * scale:
        idx = np.argwhere(finite)[int(err.argmax())]
        raise AssertionError(
            f"{label}max abs error {worst:.3g} > {rtol:g} * {scale:.3g} (relative {worst / scale:.3g}); "
            f"worst at {tuple(idx.tolist())}: actual {a[tuple(idx)]!r}, reference {ref[tuple(idx)]!r}"
        )


def f32(a):
    """float32 C-contiguous copy; tests feed the package float32 data and the reference the same values."""
    return np.ascontiguousarray(a, dtype=np.float32)


def assert_same_bits(actual, expected, what=""):
    """The same shape, dtype and bit pattern everywhere (so -0.0 differs from 0.0 and NaN payloads count)."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    label = f"{what}: " if what else ""
    assert actual.dtype == expected.dtype == np.float32, f"{label}dtypes {actual.dtype}, {expected.dtype}"
    assert actual.shape == expected.shape, f"{label}shape {actual.shape} != {expected.shape}"
    differ = actual.view(np.uint32) != expected.view(np.uint32)
    if differ.any():
        idx = tuple(np.argwhere(differ)[0].tolist())
        raise AssertionError(
            f"{label}{int(differ.sum())} of {differ.size} values differ in their bits; first at {idx}: "
            f"{actual[idx]!r} != {expected[idx]!r}"
        )


# ---- convolution ------------------------------------------------------------------------------------------


class ConvCase:
    """One convolution problem, with float32 data and its float64 reference results."""

    def __init__(self, rng, n, h, w, i, o, k, stride=1, dilation=1, groups=1, padding=0, bias=True):
        kh, kw = (k, k) if isinstance(k, int) else k
        self.stride, self.dilation, self.groups, self.padding = stride, dilation, groups, padding
        self.x = f32(rng.standard_normal((n, h, w, i)))
        self.w = f32(rng.standard_normal((o, kh, kw, i // groups)))
        self.b = f32(rng.standard_normal(o)) if bias else None
        self.pads = ref.resolve_padding(padding, h, w, kh, kw, stride, dilation)
        self.y_ref = ref.conv2d(self.x, self.w, self.b, stride, dilation, groups, self.pads)
        self.dy = f32(rng.standard_normal(self.y_ref.shape))

    def conv(self, **kw):
        return gs.Convolution(
            self.w,
            bias=self.b,
            stride=self.stride,
            dilation=self.dilation,
            groups=self.groups,
            padding=self.padding,
            **kw,
        )

    def dx_ref(self, dy=None):
        dy = self.dy if dy is None else dy
        return ref.conv2d_input_grad(
            dy, self.w, self.x.shape, self.stride, self.dilation, self.groups, self.pads
        )

    def dw_ref(self, dy=None):
        dy = self.dy if dy is None else dy
        return ref.conv2d_weight_grad(
            dy, self.x, self.w.shape, self.stride, self.dilation, self.groups, self.pads
        )

    def db_ref(self, dy=None):
        return ref.conv2d_bias_grad(self.dy if dy is None else dy)


def run_conv(case, layout, option=gs.GradientOption.ALL):
    """Forward and backward through the package; returns NHWC y, dx and copies of dW, db."""
    conv = case.conv()
    x = in_layout(case.x, layout)
    y, state = conv.forward(x, layout=layout)
    assert isinstance(y, np.ndarray) and y.dtype == np.float32 and y.flags.c_contiguous
    assert y.shape == in_layout(case.y_ref, layout).shape
    dx = gs.ConvolutionGradient(conv, option=option).backward(in_layout(case.dy, layout), x, state)
    if dx is not None:
        assert isinstance(dx, np.ndarray) and dx.dtype == np.float32 and dx.flags.c_contiguous
        assert dx.shape == x.shape
        dx = from_layout(dx, layout)
    dw = np.array(state.gradient_for_weights, copy=True)
    db = np.array(state.gradient_for_biases, copy=True)
    return from_layout(y, layout), dx, dw, db


def check_second_backward(case, layout, rng, accumulate, dy2=None):
    """Two backward passes on one state, the second with dy2 (random unless given): dx is always new; dW and
    db are overwritten, or added to with accumulate=True."""
    conv = case.conv()
    x = in_layout(case.x, layout)
    _, state = conv.forward(x, layout=layout)
    grad = gs.ConvolutionGradient(conv)
    grad.backward(in_layout(case.dy, layout), x, state)
    if dy2 is None:
        dy2 = f32(rng.standard_normal(case.dy.shape))
    dx2 = grad.backward(in_layout(dy2, layout), x, state, accumulate=accumulate)
    first = (case.dw_ref(), case.db_ref()) if accumulate else (0.0, 0.0)
    assert_close(from_layout(dx2, layout), case.dx_ref(dy2), what="dx")
    assert_close(np.asarray(state.gradient_for_weights), first[0] + case.dw_ref(dy2), what="dW")
    assert_close(np.asarray(state.gradient_for_biases), first[1] + case.db_ref(dy2), what="db")


def check_conv(case, layout):
    y, dx, dw, db = run_conv(case, layout)
    assert_close(y, case.y_ref, what="y")
    assert_close(dx, case.dx_ref(), what="dx")
    assert_close(dw, case.dw_ref(), what="dW")
    assert_close(db, case.db_ref(), what="db")


# ---- instance normalization -------------------------------------------------------------------------------


def run_norm(x, gamma, beta, eps, dy, layout):
    """Forward and backward through the package; returns NHWC y, dx, and the state."""
    c = x.shape[-1]
    kwargs = {} if eps is None else {"epsilon": eps}
    inorm = gs.InstanceNormalization(c, gamma=gamma, beta=beta, **kwargs)
    xl = in_layout(x, layout)
    y, state = inorm.forward(xl, layout=layout)
    assert isinstance(y, np.ndarray) and y.dtype == np.float32 and y.flags.c_contiguous
    assert y.shape == xl.shape
    dx = gs.InstanceNormalizationGradient(inorm).backward(in_layout(dy, layout), xl, state)
    assert isinstance(dx, np.ndarray) and dx.dtype == np.float32 and dx.flags.c_contiguous
    assert dx.shape == xl.shape
    return from_layout(y, layout), from_layout(dx, layout), state


def check_norm(x, gamma, beta, eps, dy, layout):
    y, dx, state = run_norm(x, gamma, beta, eps, dy, layout)
    e = 1e-5 if eps is None else eps
    y_ref, mean_ref, inv_std_ref = ref.instance_norm(x, gamma, beta, e)
    dx_ref, dgamma_ref, dbeta_ref = ref.instance_norm_backward(dy, x, gamma, e)
    assert_close(y, y_ref, what="y")
    assert_close(dx, dx_ref, what="dx")
    assert_close(np.asarray(state.gradient_for_gamma), dgamma_ref, what="dgamma")
    assert_close(np.asarray(state.gradient_for_beta), dbeta_ref, what="dbeta")
    assert_close(np.asarray(state.mean), mean_ref, what="mean")
    assert_close(np.asarray(state.inv_std), inv_std_ref, what="inv_std")
    return state


# ---- child processes --------------------------------------------------------------------------------------


def child_env(**variables):
    """This process's environment without any GRADSTATE_* variable, plus ``variables``: the package reads
    its environment variables once per process, so tests that set them run in a child process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRADSTATE_")}
    env.update(variables)
    return env


def run_python(code, timeout=120, **variables):
    """Runs ``code`` in a fresh interpreter with ``child_env(**variables)``; returns its stdout, stripped,
    after checking that it exited cleanly."""
    proc = subprocess.run(
        [sys.executable, "-c", code],
        env=child_env(**variables),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, f"child exited with {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout.strip()


# Child code that makes one call and prints what it returned or the exception it raised, as one line.
CALL_AND_REPORT = """
import gradstate as gs
import numpy as np

def call():
    return {call}

try:
    result = call()
except Exception as e:
    print(f"{{type(e).__name__}}: {{e}}")
else:
    print(f"returned {{result!r}}")
"""


def call_in_child(call, **variables):
    """The line CALL_AND_REPORT prints for ``call`` (a Python expression) in a child process."""
    return run_python(CALL_AND_REPORT.format(call=call), **variables)
