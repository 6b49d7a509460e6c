"""``python -m gradstate``: report the devices and check the gradients of a small network on the default one.

The checks need no second implementation. A convolution without bias is linear in its weights and in its
input, so for any dy the adjoint identities <dy, y> = <dW, W> = <dx, x> hold exactly, and db is the sum of
dy. The gamma and beta gradients of instance normalization are sums of dy * xhat and dy, with xhat the
output of a layer without gamma and beta; its dx is checked against a central finite difference of the
forward pass.
"""

import sys

import numpy as np

import gradstate as gs


def _dot(a, b):
    return float(np.sum(np.asarray(a, np.float64) * np.asarray(b, np.float64)))


def _relative_error(actual, expected):
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    return float(np.max(np.abs(actual - expected)) / max(np.max(np.abs(expected)), 1e-30))


# Exact identities leave only float32 rounding; finite differences of float32 passes carry about 1e-4.
EXACT, FINITE_DIFFERENCE = 1e-5, 1e-3


def _to_layout(x_nhwc, layout):
    return x_nhwc if layout == "NHWC" else np.ascontiguousarray(x_nhwc.transpose(0, 3, 1, 2))


def _per_channel_sum(a, layout):
    return np.asarray(a, np.float64).sum(axis=(0, 1, 2) if layout == "NHWC" else (0, 2, 3))


def _convolution_checks(rng, layout):
    """(name, relative error, tolerance) of each convolution check."""
    weights = rng.standard_normal((6, 3, 3, 2), dtype=np.float32)
    x = _to_layout(rng.standard_normal((2, 9, 7, 4), dtype=np.float32), layout)
    conv = gs.Convolution(weights, stride=2, groups=2, padding="same")
    y, state = conv.forward(x, layout)
    dy = rng.standard_normal(y.shape, dtype=np.float32)
    dx = gs.ConvolutionGradient(conv).backward(dy, x, state)
    return [
        (
            "conv  dW: <dW, W> = <dy, y>",
            _relative_error(_dot(state.gradient_for_weights, weights), _dot(dy, y)),
            EXACT,
        ),
        ("conv  dx: <dx, x> = <dy, y>", _relative_error(_dot(dx, x), _dot(dy, y)), EXACT),
        (
            "conv  db: sum of dy",
            _relative_error(state.gradient_for_biases, _per_channel_sum(dy, layout)),
            EXACT,
        ),
    ]


def _instance_norm_checks(rng, layout):
    """(name, relative error, tolerance) of each instance-normalization check."""
    channels = 5
    gamma = rng.uniform(0.5, 1.5, channels).astype(np.float32)
    beta = rng.standard_normal(channels, dtype=np.float32)
    x = _to_layout((3.0 + 2.0 * rng.standard_normal((2, 6, 5, channels))).astype(np.float32), layout)
    norm = gs.InstanceNormalization(channels, gamma, beta)
    y, state = norm.forward(x, layout)
    dy = rng.standard_normal(y.shape, dtype=np.float32)
    dx = gs.InstanceNormalizationGradient(norm).backward(dy, x, state)
    xhat, _ = gs.InstanceNormalization(channels).forward(x, layout)  # gamma 1 and beta 0 leave xhat
    # Central difference of <dy, y(x + h v)> in a random direction v.
    direction = rng.standard_normal(x.shape).astype(np.float32)
    step = 1e-2
    plus, _ = norm.forward(x + step * direction, layout)
    minus, _ = norm.forward(x - step * direction, layout)
    slope = (_dot(dy, plus) - _dot(dy, minus)) / (2 * step)
    return [
        (
            "norm  dgamma: sum of dy * xhat",
            _relative_error(state.gradient_for_gamma, _per_channel_sum(dy * xhat, layout)),
            EXACT,
        ),
        (
            "norm  dbeta: sum of dy",
            _relative_error(state.gradient_for_beta, _per_channel_sum(dy, layout)),
            EXACT,
        ),
        (
            "norm  dx: <dx, v> = finite difference",
            _relative_error(_dot(dx, direction), slope),
            FINITE_DIFFERENCE,
        ),
    ]


def main():
    print(f"gradstate {gs.__version__}")
    for device in gs.devices():
        status = "available" if device.available else f"unavailable: {device.unavailable_reason}"
        print(f"  device {device.type:<6} {status}")
    print(f"default device: {gs.default_device().type}")
    rng = np.random.default_rng(0)
    failures = 0
    for layout in ("NHWC", "NCHW"):
        for name, error, tolerance in _convolution_checks(rng, layout) + _instance_norm_checks(rng, layout):
            ok = error <= tolerance
            failures += not ok
            print(f"  {layout}  {name:<48} relative error {error:8.1e}  {'ok' if ok else 'FAILED'}")
    print("all gradient checks passed" if failures == 0 else f"{failures} gradient checks FAILED")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
