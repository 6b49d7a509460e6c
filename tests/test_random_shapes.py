"""Convolutions of randomly drawn shapes against the float64 reference, in both layouts.

The hand-picked cases of test_convolution.py and test_kernel_paths.py aim at each path and tail one at a time;
these draw every parameter at once, from a fixed seed: dense, grouped and depthwise layers, rectangular
kernels, strides and dilations, and each side's padding drawn on its own, up to wider than the image (where a
kernel's interior columns are none and every output is a border one). Each case runs the forward pass, dx, dW
and db.
"""

import numpy as np
import pytest
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
