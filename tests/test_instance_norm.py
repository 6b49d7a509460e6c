"""Instance normalization forward and backward against the float64 reference, in both layouts."""

import gradstate as gs
import numpy as np
import pytest
import reference as ref
from conftest import assert_close, check_norm, f32, from_layout, in_layout, run_norm

LAYOUTS = ["NHWC", "NCHW"]


# (N, H, W, C, eps, offset): odd sizes, batch 1 and many, a large plane, a 1x1 plane, large means. In NHWC,
# 48 and 80 channels are a register group of channel vectors and single vectors at every vector width; 80
# takes more than one group, swept one group at a time over tiles of several pixels (small inputs are cached).
SHAPES = [
    (1, 7, 9, 3, None, 0.0),
    (4, 5, 3, 17, 1e-5, 0.0),
    (16, 3, 2, 5, 1e-3, 0.0),
    (2, 64, 64, 3, 1e-5, 0.0),
    (3, 1, 1, 4, 1e-3, 0.0),
    (2, 1, 7, 16, 1e-5, 0.0),
    (2, 64, 64, 4, 1e-5, 100.0),
    (3, 9, 11, 5, 1e-5, 100.0),
    (1, 4, 4, 2, 0.0, 0.0),
    (2, 9, 7, 48, 1e-5, 0.0),
    (3, 5, 6, 80, 1e-5, 10.0),
]

GAMMA_BETA = [(False, False), (True, False), (False, True), (True, True)]


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("gamma_beta", GAMMA_BETA, ids=["plain", "gamma", "beta", "gamma_beta"])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_against_reference(shape, gamma_beta, layout, rng):
    n, h, w, c, eps, offset = shape
    x = f32(offset + rng.standard_normal((n, h, w, c)) * rng.uniform(0.5, 2.0, c))
    gamma = f32(rng.standard_normal(c)) if gamma_beta[0] else None
    beta = f32(rng.standard_normal(c)) if gamma_beta[1] else None
    dy = f32(rng.standard_normal((n, h, w, c)))
    state = check_norm(x, gamma, beta, eps, dy, layout)
    # The layer always holds gamma and beta (ones and zeros when not given); the state has copies.
    np.testing.assert_array_equal(np.asarray(state.gamma), np.ones(c, np.float32) if gamma is None else gamma)
    np.testing.assert_array_equal(np.asarray(state.beta), np.zeros(c, np.float32) if beta is None else beta)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("shape", [(2, 30, 50, 5), (1, 23, 23, 257)], ids=str)
def test_mean_far_from_zero(shape, layout, rng):
    # The float32 mean saved by the forward pass is off by up to half a unit in the last place (3e-5 at
    # 1000); dgamma multiplies that error by sum(dy), which is large when dy has a mean of its own. Planes
    # span several summation blocks (512 pixels) and, in NHWC, several blocks of channels (256).
    x = f32(1000.0 + rng.standard_normal(shape))
    dy = f32(1.0 + rng.standard_normal(shape))
    check_norm(x, f32(rng.uniform(0.5, 1.5, shape[-1])), None, 1e-5, dy, layout)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("shape", [(1, 128, 128, 1), (2, 40, 30, 33), (1, 8, 2, 3)], ids=str)
def test_first_values_far_from_the_mean(shape, layout, rng):
    # The statistics sum x minus a shift in float (see instance_norm.cpp). Each plane's first pixel lies far
    # from its mean (0 among 200 + N(0, 1)): a shift near it would leave the sum of squares to cancel against
    # the squared mean, and the variance to lose precision (inv_std was off by 1.4e-3 relative on 128x128).
    # The last shape has planes of fewer values than the shift's sample.
    c = shape[-1]
    x = f32(200.0 + rng.standard_normal(shape))
    x[:, 0, 0, :] = 0.0
    dy = f32(rng.standard_normal(shape))
    check_norm(x, f32(rng.uniform(0.5, 1.5, c)), f32(rng.standard_normal(c)), 1e-5, dy, layout)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("shape", [(4, 257, 255, 9), (2, 96, 96, 128)], ids=str)
def test_large_output(shape, layout, rng):
    # Over 2**21 elements, outputs are written past the caches: in NCHW, where odd plane sizes (257 x 255)
    # make most planes start off a vector boundary; in NHWC, when the channels are whole vectors (128). The
    # NHWC backward pass's x and dy, over 16 MiB together, are not taken to be cached: tiles of one pixel.
    x = f32(rng.standard_normal(shape))
    dy = f32(rng.standard_normal(x.shape))
    c = shape[-1]
    check_norm(x, f32(rng.uniform(0.5, 1.5, c)), f32(rng.standard_normal(c)), 1e-5, dy, layout)


def test_one_pixel_plane_normalizes_to_beta(rng):
    # The variance is 0, so xhat is 0: y is beta and dx is 0, without NaN.
    x = f32(rng.standard_normal((3, 1, 1, 4)) * 10)
    beta = f32(rng.standard_normal(4))
    dy = f32(rng.standard_normal(x.shape))
    y, dx, state = run_norm(x, f32(rng.standard_normal(4)), beta, 1e-3, dy, "NHWC")
    assert_close(y, np.broadcast_to(beta, x.shape), what="y")
    assert_close(dx, np.zeros(x.shape), what="dx")
    assert_close(np.asarray(state.inv_std), np.full((3, 4), 1e-3**-0.5), what="inv_std")


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("shape", [(3, 2, 1, 17), (2, 1, 2, 40)], ids=str)
def test_planes_of_two_pixels(shape, layout, rng):
    # In a plane of two pixels dy - mean(dy) lies along xhat, and dx is what epsilon leaves of the formula's
    # two terms, about epsilon / var of their size: through the formula, the rounding of the saved float
    # inv_std alone made dx off by up to 1.4e-2 of the largest. Every plane's two values lie 1 to 4 apart, so
    # that no plane of nearly equal values has a dx that dwarfs the others'.
    c = shape[-1]
    spread = rng.uniform(0.5, 2.0, (shape[0], 1, 1, c)) * np.array([1.0, -1.0]).reshape(1, *shape[1:3], 1)
    x = f32(10.0 + spread)
    dy = f32(rng.standard_normal(shape))
    check_norm(x, f32(rng.standard_normal(c)), f32(rng.standard_normal(c)), 1e-5, dy, layout)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_state_gamma_beta_are_copies(layout, rng):
    c = 5
    x = f32(rng.standard_normal((2, 4, 3, c)))
    gamma, beta = f32(rng.standard_normal(c)), f32(rng.standard_normal(c))
    saved_gamma, saved_beta = gamma.copy(), beta.copy()
    inorm = gs.InstanceNormalization(c, gamma=gamma, beta=beta)
    _, state = inorm.forward(in_layout(x, layout), layout=layout)
    gamma[...] = 7.0
    beta[...] = -7.0
    np.testing.assert_array_equal(np.asarray(state.gamma), saved_gamma)
    np.testing.assert_array_equal(np.asarray(state.beta), saved_beta)
    assert not np.shares_memory(np.asarray(state.gamma), gamma)
    assert state.gamma.shape == (c,) and state.beta.shape == (c,)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_overwrite_and_accumulate(layout, rng):
    n, h, w, c = 2, 5, 4, 3
    x = f32(rng.standard_normal((n, h, w, c)))
    gamma = f32(rng.standard_normal(c))
    dy1, dy2 = f32(rng.standard_normal(x.shape)), f32(rng.standard_normal(x.shape))
    inorm = gs.InstanceNormalization(c, gamma=gamma)
    xl = in_layout(x, layout)
    _, state = inorm.forward(xl, layout=layout)
    grad = gs.InstanceNormalizationGradient(inorm)
    _, g1, b1 = ref.instance_norm_backward(dy1, x, gamma, 1e-5)
    dx2_ref, g2, b2 = ref.instance_norm_backward(dy2, x, gamma, 1e-5)

    grad.backward(in_layout(dy1, layout), xl, state)
    grad.backward(in_layout(dy2, layout), xl, state)
    assert_close(np.asarray(state.gradient_for_gamma), g2, what="dgamma after overwrite")
    assert_close(np.asarray(state.gradient_for_beta), b2, what="dbeta after overwrite")

    dx = grad.backward(in_layout(dy1, layout), xl, state, accumulate=True)
    assert_close(np.asarray(state.gradient_for_gamma), g1 + g2, what="accumulated dgamma")
    assert_close(np.asarray(state.gradient_for_beta), b1 + b2, what="accumulated dbeta")
    assert_close(from_layout(dx, layout), ref.instance_norm_backward(dy1, x, gamma, 1e-5)[0], what="dx")
    assert_close(from_layout(grad.backward(in_layout(dy2, layout), xl, state), layout), dx2_ref, what="dx")


def _norm_run(x, dy, gamma, layout="NHWC"):
    inorm = gs.InstanceNormalization(3, gamma=gamma)
    y, state = inorm.forward(x, layout=layout)
    dx = gs.InstanceNormalizationGradient(inorm).backward(dy, x, state)
    return [np.array(a) for a in (y, dx, state.gradient_for_gamma, state.gradient_for_beta)]


CONVERSIONS = {
    "float64": lambda x, dy, g: (x.astype(np.float64), dy.astype(np.float64), g.astype(np.float64)),
    "float16_gamma": lambda x, dy, g: (x, dy, g.astype(np.float16)),
    "fortran": lambda x, dy, g: (np.asfortranarray(x), np.asfortranarray(dy), g),
    "strided": lambda x, dy, g: (
        np.repeat(x, 2, axis=2)[:, :, ::2],
        np.repeat(dy, 2, axis=3)[..., ::2],
        np.repeat(g, 2)[::2],
    ),
    "list": lambda x, dy, g: (x.tolist(), dy.tolist(), g.tolist()),
}


@pytest.mark.parametrize("variant", sorted(CONVERSIONS))
def test_input_conversions_give_same_results(variant, rng):
    x = f32(rng.standard_normal((2, 5, 6, 3)))
    dy = f32(rng.standard_normal(x.shape))
    gamma = f32(rng.standard_normal(3)).astype(np.float16).astype(np.float32)
    converted = CONVERSIONS[variant](x, dy, gamma)
    expected = _norm_run(*(f32(a) for a in converted))
    for a, e, what in zip(_norm_run(*converted), expected, ("y", "dx", "dgamma", "dbeta")):
        np.testing.assert_array_equal(a, e, err_msg=what)


def test_nchw_transposed_view(rng):
    x = f32(rng.standard_normal((2, 5, 6, 3)))
    dy = f32(rng.standard_normal(x.shape))
    gamma = f32(rng.standard_normal(3))
    expected = _norm_run(x, dy, gamma)
    y, dx, dg, db = _norm_run(x.transpose(0, 3, 1, 2), dy.transpose(0, 3, 1, 2), gamma, "NCHW")
    assert_close(from_layout(y, "NCHW"), expected[0], what="y")
    assert_close(from_layout(dx, "NCHW"), expected[1], what="dx")
    assert_close(dg, expected[2], what="dgamma")
    assert_close(db, expected[3], what="dbeta")


def test_float16_input(rng):
    x = rng.standard_normal((2, 6, 5, 3)).astype(np.float16)
    dy = rng.standard_normal(x.shape).astype(np.float16)
    y, dx, state = run_norm(x, None, None, 1e-5, dy, "NHWC")
    assert_close(y, ref.instance_norm(x, None, None, 1e-5)[0], what="y")
    assert_close(dx, ref.instance_norm_backward(dy, x, None, 1e-5)[0], what="dx")


@pytest.mark.parametrize("layout", LAYOUTS)
def test_nan_and_inf_propagate(layout, rng):
    x = f32(rng.standard_normal((2, 4, 5, 3)))
    x[0, 1, 2, 1] = np.nan
    x[1, 3, 0, 2] = np.inf
    dy = f32(rng.standard_normal(x.shape))
    y, dx, state = run_norm(x, None, None, 1e-5, dy, layout)
    # A non-finite value poisons its whole (image, channel) plane and no other.
    bad = np.zeros(x.shape, bool)
    bad[0, :, :, 1] = True
    bad[1, :, :, 2] = True
    assert np.isnan(y[bad]).all() and np.isnan(dx[bad]).all()
    with np.errstate(invalid="ignore"):
        y_ref = ref.instance_norm(x, None, None, 1e-5)[0]
        dx_ref = ref.instance_norm_backward(dy, x, None, 1e-5)[0]
    assert_close(y[~bad], y_ref[~bad], what="y")
    assert_close(dx[~bad], dx_ref[~bad], what="dx")
    assert np.isnan(np.asarray(state.gradient_for_gamma)[1:]).all()
    assert np.isfinite(np.asarray(state.gradient_for_gamma)[0])
    assert_close(np.asarray(state.gradient_for_beta), dy.astype(np.float64).sum(axis=(0, 1, 2)), what="dbeta")


@pytest.mark.parametrize("layout", LAYOUTS)
def test_infinite_gamma_and_dy_give_the_infinities_of_the_formulas(layout, rng):
    # An infinite gamma scales y and dx to ±Inf (NaN where xhat or dx's bracket is 0), and an infinite dy
    # makes dgamma and dx ±Inf or NaN term by term, as numpy's formulas give. Corrections for rounding (Inf x
    # 0) and terms scaled each on its own (Inf - Inf) made NaN of many of them.
    x = f32(rng.standard_normal((2, 5, 4, 4)))
    dy = f32(rng.standard_normal(x.shape))
    gamma = f32([1.0, np.inf, -np.inf, 0.5])
    dy[0, 1, 2, 0] = np.inf
    dy[1, 3, 3, 0] = -np.inf
    dy[1, 0, 1, 3] = np.inf
    dy[1, 4, 2, 3] = np.inf
    y, dx, state = run_norm(x, gamma, None, 1e-5, dy, layout)
    with np.errstate(invalid="ignore"):
        y_ref = ref.instance_norm(x, gamma, None, 1e-5)[0]
        dx_ref, dgamma_ref, dbeta_ref = ref.instance_norm_backward(dy, x, gamma, 1e-5)
    assert_close(y, y_ref, what="y")
    assert_close(dx, dx_ref, what="dx")
    assert_close(np.asarray(state.gradient_for_gamma), dgamma_ref, what="dgamma")
    assert_close(np.asarray(state.gradient_for_beta), dbeta_ref, what="dbeta")
    assert np.isinf(y[..., 1:3]).mean() > 0.9 and np.isinf(dx[..., 1:3]).mean() > 0.9


def test_equal_values_with_epsilon_0(rng):
    # 1/std is infinite, so the plane is written again value by value (see instance_norm.cpp): y and dx are
    # 0 x Inf = NaN there, as in numpy, and the other planes are untouched. (The sweeps alone also gave NaN
    # there: this holds the rewrite to the same.)
    x = f32(rng.standard_normal((2, 3, 3, 2)))
    x[1, :, :, 0] = 2.5
    dy = f32(rng.standard_normal(x.shape))
    y, dx, _ = run_norm(x, None, None, 0.0, dy, "NHWC")
    with np.errstate(invalid="ignore", divide="ignore"):
        y_ref = ref.instance_norm(x, None, None, 0.0)[0]
        dx_ref = ref.instance_norm_backward(dy, x, None, 0.0)[0]
    assert_close(y, y_ref, what="y")
    assert_close(dx, dx_ref, what="dx")
    assert np.isnan(y[1, :, :, 0]).all() and np.isfinite(y[0]).all()


def test_values_whose_float_sums_overflow(rng):
    # Channel 0 spreads 1e20 about its mean, so its squares pass the float range (and dy * (x - mean), dy
    # being 1e19); channel 1 spreads over the whole float range, so its sums and its differences from the
    # mean pass it too. The float64 reference stays finite, and so do its outputs: the CPU takes such planes
    # again in double, Metal (Apple GPUs have no double) over x scaled by a power of two.
    x = np.empty((2, 23, 29, 3), np.float32)
    x[..., 0] = rng.standard_normal(x.shape[:3]) * 1e20
    x[..., 1] = rng.uniform(-3e38, 3e38, x.shape[:3])
    x[..., 2] = rng.standard_normal(x.shape[:3])
    dy = f32(rng.standard_normal(x.shape))
    dy[..., 0] *= 1e19
    gamma, beta = f32([1.5, -0.5, 2.0]), f32([0.25, 1.0, -1.0])
    for layout in LAYOUTS:
        state = check_norm(x, gamma, beta, 1e-5, dy, layout)
        assert np.isfinite(np.asarray(state.inv_std)).all()
