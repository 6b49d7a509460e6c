"""Convolutions of randomly drawn shapes against the float64 reference, in both layouts.

The hand-picked cases of test_convolution.py and test_kernel_paths.py aim at each path and tail one at a time;
these draw every parameter at once, from a fixed seed: dense, grouped and depthwise layers, rectangular
kernels, strides and dilations, and each side's padding drawn on its own, up to wider than the image (where a
kernel's interior columns are none and every output is a border one). A second set draws layers of the sizes
at which the CPU chooses its kernels (rows up to 80 pixels, channel counts around the vector widths), half of
them with NaN and Inf in x, the weights or dy. Each case runs the forward pass, dx, dW and db.
"""

import numpy as np
import pytest
import reference as ref
from conftest import ConvCase, check_conv

SEED = 20261122
CASES = 200


def draw_geometry(rng):
    """(N, H, W, I, O, kernel, stride, dilation, groups, padding) with at least one output pixel."""
    while True:
        kind = rng.integers(4)
        if kind == 0:  # depthwise
            groups = int(rng.choice([1, 3, 16, 17, 37]))
            i = o = groups
        elif kind == 1:  # a few channels per group
            groups = int(rng.integers(2, 5))
            i, o = groups * int(rng.integers(1, 10)), groups * int(rng.integers(1, 10))
        else:
            groups, i, o = 1, int(rng.integers(1, 40)), int(rng.integers(1, 40))
        kh, kw, sh, sw = (int(v) for v in rng.integers(1, [8, 8, 4, 4]))
        dh, dw = (int(v) for v in rng.integers(1, 3, size=2))
        n, h, w = (int(v) for v in rng.integers(1, [4, 20, 20]))
        top, bottom, left, right = (int(v) for v in rng.integers(0, 12, size=4))
        out_h = (h + top + bottom - (kh - 1) * dh - 1) // sh + 1
        out_w = (w + left + right - (kw - 1) * dw - 1) // sw + 1
        if out_h >= 1 and out_w >= 1:
            return n, h, w, i, o, (kh, kw), (sh, sw), (dh, dw), groups, (top, bottom, left, right)


GEOMETRIES = [draw_geometry(r) for r in np.random.default_rng(SEED).spawn(CASES)]


@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
@pytest.mark.parametrize("geom", GEOMETRIES, ids=[f"case{k}" for k in range(CASES)])
def test_random_convolution(geom, layout, rng):
    check_conv(ConvCase(rng, *geom), layout)


# ---- layers of the sizes at which the CPU chooses its kernels, with NaN and Inf ---------------------------

PATH_SEED = 20261124
PATH_CASES = 300
# Around the vector widths (4, 8 and 16 floats) and their multiples, where tiles and tails change.
PATH_CHANNELS = [1, 3, 4, 5, 8, 15, 16, 17, 24, 31, 32, 33, 48, 63, 64, 65]
MAX_MACS = 3_000_000  # per pass, so that the float64 reference stays fast


def draw_path_geometry(rng):
    """(N, H, W, I, O, kernel, stride, dilation, groups, padding) of a dense 3x3 (Winograd), 1x1, first,
    depthwise or small-group layer, or any other, with rows up to 80 pixels (the planes of long rows) and
    channel counts around the vector widths; at most MAX_MACS multiply-adds."""
    while True:
        kind = rng.choice(["dense3x3", "pointwise", "first", "depthwise", "small_groups", "dense"])
        i, o = (int(v) for v in rng.choice(PATH_CHANNELS, size=2))
        groups, (kh, kw) = 1, (int(v) for v in rng.integers(1, 6, size=2))
        sh = sw = int(rng.choice([1, 1, 2, 3]))
        dh = dw = int(rng.choice([1, 1, 1, 2]))
        if kind == "dense3x3":
            kh = kw = 3
            sh = sw = min(sh, 2)
            dh = dw = 1
        elif kind == "pointwise":
            kh = kw = 1
            i, o = 2 * i + 1, 2 * o  # cheap enough to take wider, odd inputs to the GEMM tiles' tails
        elif kind == "first":
            i, kh, kw = int(rng.integers(1, 5)), int(rng.choice([3, 5, 7])), int(rng.choice([3, 5, 7]))
        elif kind == "depthwise":
            i = o = groups = int(rng.choice(PATH_CHANNELS))
            kh, kw = (3, 3) if rng.random() < 0.5 else (kh, kw)
        elif kind == "small_groups":
            groups = int(rng.integers(2, 9))
            i, o = groups * int(rng.integers(1, 9)), groups * int(rng.integers(1, 9))
        n = int(rng.choice([1, 1, 2, 3]))
        h, w = int(rng.integers(1, 25)), int(rng.integers(1, 81))
        top, bottom, left, right = (int(v) for v in rng.integers(0, [kh + 1, kh + 1, kw + 1, kw + 1]))
        out_h = (h + top + bottom - (kh - 1) * dh - 1) // sh + 1
        out_w = (w + left + right - (kw - 1) * dw - 1) // sw + 1
        macs = n * out_h * out_w * o * kh * kw * (i // groups)
        if out_h >= 1 and out_w >= 1 and macs <= MAX_MACS:
            return n, h, w, i, o, (kh, kw), (sh, sw), (dh, dw), groups, (top, bottom, left, right)


def place_nonfinite(rng, case):
    """NaN, Inf or -Inf at one to three entries of x, the weights or dy, most of them in a border row or
    column, where the padding's zeros multiply them; returns where, for the failure message."""
    placed = []
    for _ in range(int(rng.integers(1, 4))):
        name = str(rng.choice(["x", "w", "dy"]))
        a = getattr(case, name)
        index = [int(rng.integers(s)) for s in a.shape]
        if rng.random() < 0.7:
            axis = int(rng.integers(1, 3))
            index[axis] = int(rng.choice([0, a.shape[axis] - 1]))
        a[tuple(index)] = rng.choice([np.nan, np.inf, -np.inf])
        placed.append((name, tuple(index), float(a[tuple(index)])))
    case.y_ref = ref.conv2d(case.x, case.w, case.b, case.stride, case.dilation, case.groups, case.pads)
    return placed


PATH_GEOMETRIES = [draw_path_geometry(r) for r in np.random.default_rng(PATH_SEED).spawn(PATH_CASES)]


@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
@pytest.mark.parametrize("geom", PATH_GEOMETRIES, ids=[f"case{k}" for k in range(PATH_CASES)])
def test_random_layer_of_each_path_with_nan_and_inf(geom, layout, rng):
    """Half the cases hold NaN and Inf, which must land where the reference's formulas put them: a kernel
    that skips the padding's zeros, or a transform that mixes values, loses or spreads them."""
    case = ConvCase(rng, *geom)
    with np.errstate(invalid="ignore", over="ignore"):  # Inf - Inf and 0 x Inf in the reference
        placed = place_nonfinite(rng, case) if rng.random() < 0.5 else []
        try:
            check_conv(case, layout)
        except AssertionError as failure:
            raise AssertionError(f"{failure}; NaN and Inf placed at {placed}") from None
